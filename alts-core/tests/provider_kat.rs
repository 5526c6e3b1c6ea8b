//! Known answers for the crypto provider: the default build (`ring` +
//! `x25519-dalek`) and the `aws-lc-rs` build put the same bytes on the wire.
//!
//! Everything here is deterministic: keys and nonces come from
//! `DeterministicRandom`, certificates are issued with fixed validity and
//! signed with Ed25519 (deterministic signatures), handshakes run at the fixed
//! time `NOW`. The test issues certificates, runs a full, a PFS and a resumed
//! handshake between a client and a server, seals records with every record
//! protocol (crossing a REKEY key change), and hashes every byte produced with
//! SHA-256 (computed with `ring` directly, not through the provider under
//! test). Both builds must give the same hash:
//!
//! `cargo test -p alts-core --test provider_kat` and
//! `cargo test -p alts-core --features aws-lc-rs --test provider_kat`.

use std::sync::Arc;

use alts_core::cert::Category;
use alts_core::crypto::{
    CryptoError, DeterministicRandom, KxGroup, StaticKeyPair, X25519, X25519_LEN, provider_name,
};
use alts_core::handshake::{
    ClientHandshake, ClientOptions, Handshake, HandshakeConfig, HandshakeOutcome, ResumptionConfig,
    ServerHandshake,
};
use alts_core::policy::IssuancePolicy;
use alts_core::record::{RecordConfig, RecordProtocol, Side, new_record_layer};
use alts_core::resumption::{ResumptionKey, ResumptionKeys};
use alts_core::testing::{NOW, TestPki, deterministic_provider};
use bytes::BytesMut;

/// SHA-256 over everything [`Transcript`] saw, produced by the default
/// (`ring`) build; the `aws-lc-rs` build must reproduce it.
const EXPECTED: &str = "a9844aa3c8d5308ab02bdfabe0cb3355d9bc0109f817e19970eb2e913b9510e8";

/// Every byte produced, labelled, hashed with `ring` (independent of the
/// provider under test).
struct Transcript(ring::digest::Context);

impl Transcript {
    fn new() -> Self {
        Self(ring::digest::Context::new(&ring::digest::SHA256))
    }

    /// Adds `label`, the length of `bytes` and `bytes`.
    fn add(&mut self, label: &str, bytes: &[u8]) {
        self.0.update(label.as_bytes());
        self.0.update(&(bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    fn finish(self) -> String {
        hex::encode(self.0.finish())
    }
}

/// Runs one handshake in memory at `NOW`, adding every byte each side sends
/// to `t`, and returns both outcomes.
fn handshake(
    c: &Arc<HandshakeConfig>,
    s: &Arc<HandshakeConfig>,
    name: &str,
    t: &mut Transcript,
) -> (HandshakeOutcome, HandshakeOutcome) {
    let mut client = ClientHandshake::new(c.clone(), ClientOptions::default(), NOW).unwrap();
    let mut server = ServerHandshake::new(s.clone(), NOW);
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        for (side, hs, queue) in [
            ("client", &mut client as &mut dyn Handshake, &mut to_server),
            ("server", &mut server as &mut dyn Handshake, &mut to_client),
        ] {
            let start = queue.len();
            hs.poll_output(queue);
            if queue.len() > start {
                t.add(&format!("{name} {side} sends"), &queue[start..]);
            }
        }
        for (hs, queue) in [
            (&mut server as &mut dyn Handshake, &mut to_server),
            (&mut client as &mut dyn Handshake, &mut to_client),
        ] {
            if !queue.is_empty() && !hs.is_done() {
                let used = hs.handle_input(queue).unwrap();
                queue.drain(..used);
            }
        }
        if client.is_done() && server.is_done() {
            let start = to_server.len();
            client.poll_output(&mut to_server);
            if to_server.len() > start {
                t.add(&format!("{name} client sends"), &to_server[start..]);
            }
            let (co, so) = (client.take_outcome().unwrap(), server.take_outcome().unwrap());
            assert_eq!(
                &co.key_data[..],
                &so.key_data[..],
                "{name}: both sides derive the same keys"
            );
            return (co, so);
        }
    }
    panic!("{name}: handshake did not finish");
}

/// Seals `messages` from `from` to the other side with `protocol` over
/// `key_data`, starting at record number `seq`; adds the frames to `t` and
/// checks they open on the other side.
fn records(
    protocol: RecordProtocol,
    key_data: &[u8],
    from: Side,
    seq: u64,
    messages: &[&[u8]],
    name: &str,
    t: &mut Transcript,
) {
    let config = RecordConfig::default();
    let (mut sealer, _) = new_record_layer(protocol, key_data, from, config).unwrap();
    let (_, mut opener) = new_record_layer(protocol, key_data, from.peer(), config).unwrap();
    sealer.set_sequence_for_testing(seq).unwrap();
    opener.set_sequence_for_testing(seq).unwrap();
    for (i, msg) in messages.iter().enumerate() {
        let mut wire = BytesMut::new();
        sealer.seal(msg, &mut wire).unwrap();
        t.add(&format!("{name} {from:?} record {i}"), &wire);
        let mut got = Vec::new();
        while let Some(plain) = opener.open(&mut wire).unwrap() {
            got.extend_from_slice(&plain);
        }
        assert!(wire.is_empty(), "{name}: every frame opened");
        assert_eq!(&got[..], *msg, "{name}: record {i} round-trips");
    }
}

/// Records of the negotiated protocol both ways, then every record protocol
/// over the same key material.
fn all_records(o: &HandshakeOutcome, name: &str, t: &mut Transcript) {
    let big = vec![0x5a; 10_000];
    let messages: [&[u8]; 3] = [b"ping", b"", &big];
    for from in [Side::Client, Side::Server] {
        records(o.record_protocol, &o.key_data, from, 0, &messages, name, t);
    }
    for protocol in RecordProtocol::ALL {
        let name = format!("{name} {}", protocol.name());
        // Record 65,535 and 65,536 of the REKEY protocols use different AES keys.
        let seq = match protocol {
            RecordProtocol::GcmAes128 => 1 << 32,
            _ => 65_535,
        };
        records(
            protocol,
            &o.key_data,
            Side::Server,
            seq,
            &[b"before", b"after"],
            &name,
            t,
        );
        records(protocol, &o.key_data, Side::Client, 0, &messages, &name, t);
    }
}

fn resuming(mut c: HandshakeConfig, rid_seed: u8) -> HandshakeConfig {
    let keys = Arc::new(ResumptionKeys::new(
        ResumptionKey::new([rid_seed; 16], &[rid_seed; 32]),
        vec![],
    ));
    c.resumption = Some(ResumptionConfig::new(keys));
    c
}

#[test]
fn both_providers_put_the_same_bytes_on_the_wire() {
    let mut t = Transcript::new();
    let pki = TestPki::new(b"provider known answers");
    t.add("root key", &pki.root_key.public_key());
    let client = pki.issue("frontend-prod", Category::Workload, "scheduler");
    let server = pki.issue("backend-prod", Category::Workload, "scheduler");
    for (who, issued) in [("client", &client), ("server", &server)] {
        t.add(&format!("{who} principal cert"), &issued.principal_cert);
        t.add(&format!("{who} handshake cert"), &issued.handshake_cert);
        t.add(
            &format!("{who} static key"),
            issued.credentials.key_pair().public_key(),
        );
    }
    let config = |issued: &alts_core::testing::Issued, seed: &[u8]| {
        HandshakeConfig::new(
            issued.credentials.clone(),
            pki.verifier(IssuancePolicy::allow_all_for_tests()),
            deterministic_provider(seed),
        )
    };

    // Full handshake, with resumption keys so that it also issues tickets.
    let c = Arc::new(resuming(config(&client, b"client"), 1));
    let s = Arc::new(resuming(config(&server, b"server"), 2));
    let (co, so) = handshake(&c, &s, "full", &mut t);
    assert!(!co.resumption.resumed() && !co.pfs);
    all_records(&co, "full", &mut t);

    // Resumed from the ticket the full handshake left.
    let (co, so2) = handshake(&c, &s, "resumed", &mut t);
    assert!(co.resumption.resumed(), "{:?}", co.resumption);
    assert_eq!(co.resumption, so2.resumption);
    all_records(&co, "resumed", &mut t);
    drop(so);

    // PFS: ephemeral X25519 on both sides.
    let mut c = config(&client, b"pfs client");
    let mut s = config(&server, b"pfs server");
    c.pfs = true;
    s.pfs = true;
    let (co, so) = handshake(&Arc::new(c), &Arc::new(s), "pfs", &mut t);
    assert!(co.pfs && so.pfs);
    all_records(&co, "pfs", &mut t);

    assert_eq!(
        t.finish(),
        EXPECTED,
        "wire bytes under provider {}",
        provider_name()
    );
}

/// A low-order peer point gives an all-zero X25519 result, refused for
/// static and ephemeral keys alike; a wrong length is refused too.
#[test]
fn low_order_points_are_refused() {
    let rng = DeterministicRandom::new(b"low order");
    let ours = StaticKeyPair::generate(&rng).unwrap();
    let mut order_8 = [0u8; X25519_LEN];
    hex::decode_to_slice(
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        &mut order_8,
    )
    .unwrap();
    let mut one = [0u8; X25519_LEN];
    one[0] = 1;
    for point in [[0u8; X25519_LEN], one, order_8] {
        assert_eq!(ours.agree(&point).unwrap_err(), CryptoError::NonContributory);
        let ephemeral = X25519.start(&rng).unwrap();
        assert_eq!(
            ephemeral.complete(&point).unwrap_err(),
            CryptoError::NonContributory
        );
    }
    assert_eq!(
        ours.agree(&[9u8; 31]).unwrap_err(),
        CryptoError::BadPublicKeyLength(31, X25519_LEN)
    );
    // An ordinary point still agrees, and symmetrically.
    let theirs = StaticKeyPair::generate(&rng).unwrap();
    assert_eq!(
        ours.agree(theirs.public_key()).unwrap().secret_bytes(),
        theirs.agree(ours.public_key()).unwrap().secret_bytes()
    );
    assert_eq!(
        StaticKeyPair::from_secret_bytes(*ours.secret_bytes()).public_key(),
        ours.public_key()
    );
}

/// The RFC 7748 section 6.1 X25519 test vector.
#[test]
fn x25519_rfc7748_vector() {
    let key = |h: &str| {
        let mut b = [0u8; X25519_LEN];
        hex::decode_to_slice(h, &mut b).unwrap();
        b
    };
    let alice = StaticKeyPair::from_secret_bytes(key(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    ));
    let bob = StaticKeyPair::from_secret_bytes(key(
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
    ));
    assert_eq!(
        hex::encode(alice.public_key()),
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    );
    assert_eq!(
        hex::encode(bob.public_key()),
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    );
    let shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
    assert_eq!(
        hex::encode(alice.agree(bob.public_key()).unwrap().secret_bytes()),
        shared
    );
    assert_eq!(
        hex::encode(bob.agree(alice.public_key()).unwrap().secret_bytes()),
        shared
    );
}

#[test]
fn provider_name_matches_the_build() {
    let expected = if cfg!(feature = "aws-lc-rs") {
        "aws-lc-rs"
    } else {
        "ring"
    };
    assert_eq!(provider_name(), expected);
}
