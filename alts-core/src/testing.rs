//! Test helpers (feature `test-util`): a throwaway PKI and an in-memory
//! driver that shuttles bytes between two handshakes in chosen chunk sizes.
//! Never use these in production: the PKI's keys come from a deterministic
//! generator.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use crate::UnixTime;
use crate::cert::{self, Category, HandshakeParams, LocalCredentials, PrincipalParams, RootKey, SigningKey};
use crate::crypto::{CryptoProvider, DeterministicRandom, SecureRandom, StaticKeyPair, X25519};
use crate::handshake::{Handshake, HandshakeError, HandshakeOutcome};
use crate::policy::IssuancePolicy;
use crate::verify::Verifier;

/// A fixed "now" for deterministic tests (2026-01-01T00:00:00Z).
pub const NOW: UnixTime = UnixTime(1_767_225_600);

/// Longest handshake-certificate lifetime [`TestPki::issue_with`] gives
/// (7 days, the default maximum of [`Verifier`]).
pub const MAX_TEST_HANDSHAKE_LIFETIME_SECS: i64 = crate::verify::DEFAULT_MAX_HANDSHAKE_CERT_LIFETIME_SECS;

/// A provider whose randomness depends only on `seed`.
pub fn deterministic_provider(seed: &[u8]) -> CryptoProvider {
    CryptoProvider {
        kx_groups: vec![&X25519],
        random: Arc::new(DeterministicRandom::new(seed)),
    }
}

/// Like [`deterministic_provider`], counting every request for random
/// bytes (key generation, nonces, ticket IDs) in the returned counter.
pub fn counting_provider(seed: &[u8]) -> (CryptoProvider, Arc<std::sync::atomic::AtomicUsize>) {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let provider = CryptoProvider {
        kx_groups: vec![&X25519],
        random: Arc::new(CountingRandom {
            inner: DeterministicRandom::new(seed),
            calls: calls.clone(),
        }),
    };
    (provider, calls)
}

#[derive(Debug)]
struct CountingRandom {
    inner: DeterministicRandom,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl SecureRandom for CountingRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), crate::crypto::CryptoError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.fill(dest)
    }
}

/// A throwaway signing service.
pub struct TestPki {
    /// The signing service's private root key.
    pub root_key: SigningKey,
    /// The public root key every party trusts.
    pub root: RootKey,
    /// The deterministic random source all keys come from.
    pub rng: Arc<dyn SecureRandom>,
    next_id: std::sync::atomic::AtomicU64,
}

/// What [`TestPki::issue`] makes.
#[derive(Clone)]
pub struct Issued {
    /// The handshake certificate with its static key, ready for a handshake.
    pub credentials: Arc<LocalCredentials>,
    /// The serialized principal certificate.
    pub principal_cert: Vec<u8>,
    /// The serialized handshake certificate.
    pub handshake_cert: Vec<u8>,
    /// Revocation ID of the principal certificate.
    pub principal_revocation_id: u64,
    /// Revocation ID of the handshake certificate.
    pub handshake_revocation_id: u64,
}

impl TestPki {
    /// A signing service whose keys (and every key it issues) depend only on
    /// `seed`.
    pub fn new(seed: &[u8]) -> Self {
        let rng: Arc<dyn SecureRandom> = Arc::new(DeterministicRandom::new(seed));
        let root_key = SigningKey::generate(rng.as_ref()).unwrap();
        let root = RootKey::from_public_key("test-signing-service", root_key.public_key());
        Self {
            root_key,
            root,
            rng,
            next_id: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Issues a principal + handshake chain for `identity`, valid for a day around [`NOW`].
    pub fn issue(&self, identity: &str, category: Category, issuer: &str) -> Issued {
        self.issue_with(
            identity,
            category,
            issuer,
            Some((NOW.plus(-3600), NOW.plus(86_400))),
        )
    }

    /// Issues a principal + handshake chain for `identity`. The principal
    /// certificate gets `validity` (`None`: no expiry). The handshake
    /// certificate gets `validity` cut to at most
    /// [`MAX_TEST_HANDSHAKE_LIFETIME_SECS`] from its start, so that default
    /// verifiers (which refuse handshake certificates living longer than 7
    /// days or never expiring) accept it; with `None` it is valid from one
    /// hour before to one day after the system clock's current time (the
    /// only place in this crate that reads a clock, for tests whose
    /// handshakes are checked against the real time). Revocation IDs are
    /// consecutive in the machine range.
    pub fn issue_with(
        &self,
        identity: &str,
        category: Category,
        issuer: &str,
        validity: Option<(UnixTime, UnixTime)>,
    ) -> Issued {
        let n = self.next_id.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        let principal_key = SigningKey::generate(self.rng.as_ref()).unwrap();
        let principal_cert = cert::issue_principal(
            &self.root_key,
            &PrincipalParams {
                identity: identity.to_owned(),
                category,
                issuer: issuer.to_owned(),
                validity,
                revocation_id: (2u64 << 56) | n,
            },
            principal_key.public_key(),
        )
        .unwrap();
        let handshake_validity = match validity {
            Some((nb, na)) => Some((nb, na.min(nb.plus(MAX_TEST_HANDSHAKE_LIFETIME_SECS)))),
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    .unwrap_or(NOW.secs());
                Some((UnixTime(now).plus(-3600), UnixTime(now).plus(86_400)))
            }
        };
        let static_key = StaticKeyPair::generate(self.rng.as_ref()).unwrap();
        let handshake_cert = cert::issue_handshake(
            &principal_key,
            &principal_cert,
            &HandshakeParams {
                static_public_key: *static_key.public_key(),
                handshake_ciphers: cert::DEFAULT_HANDSHAKE_CIPHERS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                record_protocols: cert::DEFAULT_RECORD_PROTOCOLS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                validity: handshake_validity,
                revocation_id: (2u64 << 56) | (n + 1),
            },
        )
        .unwrap();
        Issued {
            credentials: Arc::new(LocalCredentials::new(handshake_cert.clone(), static_key).unwrap()),
            principal_cert,
            handshake_cert,
            principal_revocation_id: (2u64 << 56) | n,
            handshake_revocation_id: (2u64 << 56) | (n + 1),
        }
    }

    /// A verifier trusting this PKI with `policy`.
    pub fn verifier(&self, policy: IssuancePolicy) -> Arc<Verifier> {
        Arc::new(Verifier::new(self.root.clone(), Arc::new(policy)))
    }
}

/// How [`drive`] moves bytes between the two sides.
#[derive(Clone, Copy, Debug)]
pub enum Delivery {
    /// Everything available at once.
    Whole,
    /// One byte per call.
    ByteAtATime,
    /// Chunks of this size.
    Chunks(usize),
}

/// Runs two handshakes against each other in memory (bounded: gives up after
/// 10,000 steps). Returns both outcomes, or the first error and which side.
pub fn drive(
    client: &mut dyn Handshake,
    server: &mut dyn Handshake,
    delivery: Delivery,
) -> Result<(HandshakeOutcome, HandshakeOutcome), (&'static str, HandshakeError)> {
    let mut to_server = Vec::new();
    let mut to_client = Vec::new();
    for _ in 0..10_000 {
        client.poll_output(&mut to_server);
        server.poll_output(&mut to_client);
        let mut progressed = feed("server", &mut to_server, server, delivery)?;
        progressed |= feed("client", &mut to_client, client, delivery)?;
        client.poll_output(&mut to_server);
        if client.is_done() && server.is_done() {
            let c = client.take_outcome().unwrap();
            let s = server.take_outcome().unwrap();
            return Ok((c, s));
        }
        if !progressed && to_server.is_empty() && to_client.is_empty() {
            panic!("handshake stalled");
        }
    }
    panic!("handshake did not finish in 10,000 steps")
}

fn feed(
    side: &'static str,
    input: &mut Vec<u8>,
    hs: &mut dyn Handshake,
    delivery: Delivery,
) -> Result<bool, (&'static str, HandshakeError)> {
    if input.is_empty() || hs.is_done() {
        return Ok(false);
    }
    let n = match delivery {
        Delivery::Whole => input.len(),
        Delivery::ByteAtATime => 1,
        Delivery::Chunks(c) => c.min(input.len()),
    };
    let used = hs.handle_input(&input[..n]).map_err(|e| (side, e))?;
    assert!(used <= n);
    if used < n && !hs.is_done() {
        panic!("{side} consumed {used} of {n} bytes without finishing");
    }
    input.drain(..used);
    Ok(used > 0)
}

/// A benchmark pair: client and server configurations for two workload
/// identities under one PKI (allow-all policy, default provider), with
/// resumption keys when `resume`, and both sides' verifiers (to clear their
/// caches for cold runs).
pub struct BenchPair {
    /// The client's configuration (`frontend-prod`).
    pub client: Arc<crate::handshake::HandshakeConfig>,
    /// The server's configuration (`backend-prod`).
    pub server: Arc<crate::handshake::HandshakeConfig>,
    /// The client's verifier.
    pub client_verifier: Arc<Verifier>,
    /// The server's verifier.
    pub server_verifier: Arc<Verifier>,
}

impl BenchPair {
    /// Both configurations; with resumption keys on both sides when `resume`.
    pub fn new(resume: bool) -> Self {
        use crate::handshake::{HandshakeConfig, ResumptionConfig};
        use crate::resumption::{ResumptionKey, ResumptionKeys};
        let pki = TestPki::new(b"bench");
        let c = pki.issue("frontend-prod", Category::Workload, "scheduler");
        let s = pki.issue("backend-prod", Category::Workload, "scheduler");
        let cv = pki.verifier(IssuancePolicy::allow_all_for_tests());
        let sv = pki.verifier(IssuancePolicy::allow_all_for_tests());
        let mut cc = HandshakeConfig::new(c.credentials, cv.clone(), crate::crypto::default_provider());
        let mut sc = HandshakeConfig::new(s.credentials, sv.clone(), crate::crypto::default_provider());
        if resume {
            let key = |b: u8| Arc::new(ResumptionKeys::new(ResumptionKey::new([b; 16], &[b; 32]), vec![]));
            cc.resumption = Some(ResumptionConfig::new(key(1)));
            sc.resumption = Some(ResumptionConfig::new(key(2)));
        }
        Self {
            client: Arc::new(cc),
            server: Arc::new(sc),
            client_verifier: cv,
            server_verifier: sv,
        }
    }

    /// Empties the chain caches and the static-DH caches of both sides, so
    /// the next handshake is a first contact.
    pub fn clear_caches(&self) {
        self.client_verifier.clear_cache();
        self.server_verifier.clear_cache();
        self.client.credentials.clear_static_dh_cache();
        self.server.credentials.clear_static_dh_cache();
    }

    /// Empties the chain caches and static-DH caches of both sides but keeps
    /// their verified principal certificates: the next handshake costs what
    /// a peer presenting a new handshake certificate under a known principal
    /// costs (one signature check and one static X25519 per side).
    pub fn clear_chain_caches(&self) {
        self.client_verifier.clear_chain_cache();
        self.server_verifier.clear_chain_cache();
        self.client.credentials.clear_static_dh_cache();
        self.server.credentials.clear_static_dh_cache();
    }

    /// Gives the server a fresh, empty replay guard. Every ticket of a
    /// benchmark run at the fixed [`NOW`] expires in the same replay-guard
    /// bucket, which holds a bounded number of tickets; a long resumed run
    /// calls this between batches so that it keeps resuming.
    pub fn reset_replay_guard(&mut self) {
        let mut server = (*self.server).clone();
        if let Some(r) = server.resumption.as_mut() {
            r.replay_guard = Arc::new(crate::resumption::InMemoryReplayGuard::new(1_000_000));
        }
        self.server = Arc::new(server);
    }

    /// One complete handshake in memory; returns whether it resumed.
    pub fn handshake(&self) -> bool {
        let mut client =
            crate::handshake::ClientHandshake::new(self.client.clone(), Default::default(), NOW).unwrap();
        let mut server = crate::handshake::ServerHandshake::new(self.server.clone(), NOW);
        let (co, _) = drive(&mut client, &mut server, Delivery::Whole).unwrap();
        co.resumption.resumed()
    }
}
