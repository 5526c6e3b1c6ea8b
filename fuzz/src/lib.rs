//! Shared fixtures for the fuzz targets: a deterministic PKI built once,
//! per-execution handshake configurations (fresh RNG, verifier and stores so
//! every execution is reproducible from its input alone), a chunked feeder
//! that checks the `Handshake` contract, and fuzzer-driven byte edits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};

use alts_core::cert::{Category, SigningKey};
use alts_core::crypto::DeterministicRandom;
use alts_core::handshake::{Handshake, HandshakeConfig, HandshakeError, ResumptionConfig};
use alts_core::policy::IssuancePolicy;
use alts_core::resumption::{
    ClientSessionCache, InMemoryReplayGuard, ResumptionKey, ResumptionKeys, ServerTicketStore,
};
use alts_core::testing::{Issued, TestPki, deterministic_provider};
use alts_core::verify::Verifier;
use libfuzzer_sys::arbitrary::Unstructured;

pub use alts_core::testing::NOW;
pub use libfuzzer_sys::arbitrary;

/// The PKI and credentials shared by all executions.
pub struct World {
    /// Root signing key and root.
    pub pki: TestPki,
    /// The client's chain (`frontend-prod`).
    pub client: Issued,
    /// The server's chain (`backend-prod`).
    pub server: Issued,
    /// A principal key we hold, for re-signing fuzzed certificates.
    pub principal_key: SigningKey,
    /// Client RID keys (seal server-presented tickets).
    pub client_keys: Arc<ResumptionKeys>,
    /// Server RID keys (seal client-presented tickets).
    pub server_keys: Arc<ResumptionKeys>,
}

/// The world, built once per process.
pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let pki = TestPki::new(b"alts fuzz pki");
        let client = pki.issue("frontend-prod", Category::Workload, "scheduler");
        let server = pki.issue("backend-prod", Category::Workload, "scheduler");
        let rng = DeterministicRandom::new(b"alts fuzz keys");
        let principal_key = SigningKey::generate(&rng).unwrap();
        let client_keys = Arc::new(ResumptionKeys::new(
            ResumptionKey::new([0xc1; 16], &[0x11; 32]),
            vec![],
        ));
        let server_keys = Arc::new(ResumptionKeys::new(
            ResumptionKey::new([0x5e; 16], &[0x22; 32]),
            vec![],
        ));
        World {
            pki,
            client,
            server,
            principal_key,
            client_keys,
            server_keys,
        }
    })
}

/// Handshake option sets the targets exercise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Defaults: static-static, no resumption.
    Plain,
    /// Ephemeral keys mixed in.
    Pfs,
    /// KCI-resistant variant (implies ephemeral keys).
    Kci,
    /// Resumption enabled on both sides (tickets issued in Finished).
    Resumption,
}

impl Variant {
    /// All variants.
    pub const ALL: [Variant; 4] = [Variant::Plain, Variant::Pfs, Variant::Kci, Variant::Resumption];

    /// Picks one from a fuzzer byte.
    pub fn from_byte(b: u8) -> Self {
        Self::ALL[usize::from(b) % Self::ALL.len()]
    }
}

fn config(who: &Issued, keys: &Arc<ResumptionKeys>, variant: Variant, seed: &[u8]) -> Arc<HandshakeConfig> {
    let w = world();
    let verifier = Arc::new(Verifier::new(
        w.pki.root.clone(),
        Arc::new(IssuancePolicy::allow_all_for_tests()),
    ));
    let mut c = HandshakeConfig::new(who.credentials.clone(), verifier, deterministic_provider(seed));
    match variant {
        Variant::Plain => {}
        Variant::Pfs => c.pfs = true,
        Variant::Kci => c.kci_resistant = true,
        Variant::Resumption => {
            c.resumption = Some(ResumptionConfig {
                ticket_lifetime_secs: 7200,
                replay_guard: Arc::new(InMemoryReplayGuard::new(64)),
                client_cache: Arc::new(ClientSessionCache::new(4, 4)),
                server_store: Arc::new(ServerTicketStore::with_limits(16, 4)),
                ..ResumptionConfig::new(keys.clone())
            })
        }
    }
    Arc::new(c)
}

/// A fresh client configuration (deterministic randomness from seed `c`).
pub fn client_config(variant: Variant) -> Arc<HandshakeConfig> {
    let w = world();
    config(&w.client, &w.client_keys, variant, b"c")
}

/// A fresh server configuration (deterministic randomness from seed `s`).
pub fn server_config(variant: Variant) -> Arc<HandshakeConfig> {
    let w = world();
    config(&w.server, &w.server_keys, variant, b"s")
}

/// Feeds `input` to `hs` in chunks of `chunk` bytes (0: all at once),
/// checking the `Handshake` contract on every call:
/// - `handle_input` never claims more bytes than it was given;
/// - it leaves bytes unconsumed only once the handshake is done;
/// - after an error it keeps failing (fused).
///
/// Returns the bytes consumed and the first error, if any.
pub fn feed(hs: &mut dyn Handshake, input: &[u8], chunk: usize) -> (usize, Option<HandshakeError>) {
    let step = if chunk == 0 { input.len().max(1) } else { chunk };
    let mut consumed = 0;
    for piece in input.chunks(step) {
        match hs.handle_input(piece) {
            Ok(used) => {
                assert!(used <= piece.len(), "consumed {used} of {} bytes", piece.len());
                consumed += used;
                if used < piece.len() {
                    assert!(
                        hs.is_done(),
                        "left {} bytes without finishing",
                        piece.len() - used
                    );
                }
                if hs.is_done() {
                    assert_eq!(
                        hs.handle_input(piece).ok(),
                        Some(0),
                        "done handshake took more input"
                    );
                    return (consumed, None);
                }
            }
            Err(e) => {
                assert!(!hs.is_done(), "failed handshake reports done");
                assert!(
                    hs.handle_input(b"\0\0\0\0").is_err(),
                    "handshake not fused after {e}"
                );
                return (consumed, Some(e));
            }
        }
    }
    (consumed, None)
}

/// Applies up to 8 fuzzer-chosen edits to `buf`: xor, set, add-delta,
/// insert, delete, truncate, append. Returns whether any edit ran.
pub fn apply_edits(u: &mut Unstructured<'_>, buf: &mut Vec<u8>) -> bool {
    let n: u8 = u.int_in_range(0..=8).unwrap_or(0);
    for _ in 0..n {
        let op: u8 = u.int_in_range(0..=6).unwrap_or(0);
        let pos = if buf.is_empty() {
            0
        } else {
            u.int_in_range(0..=buf.len() - 1).unwrap_or(0)
        };
        match op {
            0 if !buf.is_empty() => buf[pos] ^= u.int_in_range(1..=255).unwrap_or(1),
            1 if !buf.is_empty() => buf[pos] = u.arbitrary().unwrap_or(0),
            2 if !buf.is_empty() => {
                let d: i8 = u.arbitrary().unwrap_or(1);
                buf[pos] = buf[pos].wrapping_add_signed(d);
            }
            3 => {
                let k = u.int_in_range(1..=16).unwrap_or(1);
                let bytes = u.bytes(k).unwrap_or(&[0]).to_vec();
                let at = pos.min(buf.len());
                buf.splice(at..at, bytes);
            }
            4 if !buf.is_empty() => {
                let k: usize = u.int_in_range(1..=64).unwrap_or(1);
                let end = (pos + k).min(buf.len());
                buf.drain(pos..end);
            }
            5 => buf.truncate(pos),
            _ => {
                let k = u.int_in_range(1..=16).unwrap_or(1);
                buf.extend_from_slice(u.bytes(k).unwrap_or(&[0]));
            }
        }
    }
    n > 0
}

/// Signs `context || tbs` with `key` (Ed25519 through ring), as the
/// signing service does; for re-signing fuzzed to-be-signed bytes.
pub fn sign(key: &SigningKey, context: &[u8], tbs: &[u8]) -> Vec<u8> {
    let kp = ring::signature::Ed25519KeyPair::from_pkcs8(key.pkcs8_bytes()).unwrap();
    let mut msg = context.to_vec();
    msg.extend_from_slice(tbs);
    kp.sign(&msg).as_ref().to_vec()
}
