//! Configured limits are enforced: the receive frame cap, integrity-only
//! records only inside a shared boundary and above the minimum security
//! level, the certificates' own cipher and record-protocol lists, the
//! handshake-certificate lifetime, canonical certificate encodings, the
//! identity grammar, and the server verifying the client chain before it
//! generates or agrees any key. Each attack is refused and honest peers are
//! still served. In memory, no sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use alts_core::UnixTime;
use alts_core::cert::{
    self, Category, CertError, HandshakeParams, LocalCredentials, MAX_IDENTITY_LEN, SigningKey,
    check_identity,
};
use alts_core::crl::RevocationList;
use alts_core::crypto::{CryptoProvider, StaticKeyPair};
use alts_core::handshake::{
    ClientHandshake, ClientOptions, Handshake, HandshakeConfig, HandshakeError, HandshakeOutcome,
    MIN_RECV_FRAME_SIZE, ServerHandshake,
};
use alts_core::policy::IssuancePolicy;
use alts_core::record::{
    FRAME_OVERHEAD, RecordConfig, RecordError, RecordProtocol, SecurityLevel, new_record_layer,
};
use alts_core::testing::{Delivery, NOW, TestPki, deterministic_provider, drive};
use alts_core::verify::Verifier;
use alts_proto::Message;
use alts_proto::alts_v1::{self as pb, HandshakeMessage, handshake_message::Msg};
use bytes::BytesMut;

const GCM_REKEY: RecordProtocol = RecordProtocol::GcmAes128Rekey;
const GCM: RecordProtocol = RecordProtocol::GcmAes128;
const GMAC: RecordProtocol = RecordProtocol::GmacAes128Rekey;
const DAY: i64 = 24 * 3600;

fn pki() -> TestPki {
    TestPki::new(b"limits tests")
}

/// What [`chain`] puts in a credential.
struct Spec<'a> {
    identity: &'a str,
    handshake_validity: Option<(UnixTime, UnixTime)>,
    record_protocols: &'a [&'a str],
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Self {
            identity: "frontend-prod",
            handshake_validity: Some((NOW.plus(-3600), NOW.plus(DAY))),
            record_protocols: cert::DEFAULT_RECORD_PROTOCOLS,
        }
    }
}

/// Signs `context || tbs` with ring directly, to make certificates the API
/// refuses to issue (identities outside the grammar).
fn raw_sign(key: &SigningKey, context: &[u8], tbs: &[u8]) -> Vec<u8> {
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.pkcs8_bytes()).unwrap();
    let mut msg = context.to_vec();
    msg.extend_from_slice(tbs);
    pair.sign(&msg).as_ref().to_vec()
}

/// A principal (crafted, so any identity) and handshake certificate as `spec` says.
fn chain(pki: &TestPki, spec: &Spec<'_>) -> Arc<LocalCredentials> {
    let principal_key = SigningKey::generate(pki.rng.as_ref()).unwrap();
    let tbs = pb::PrincipalCertTbs {
        version: 1,
        identity: spec.identity.to_owned(),
        category: pb::Category::Workload as i32,
        issuer: "scheduler".into(),
        validity: None,
        revocation_id: 3 << 56 | 1,
        key_algorithm: pb::SignatureAlgorithm::Ed25519 as i32,
        public_key: principal_key.public_key().to_vec(),
        root_key_id: pki.root.key_id().to_vec(),
    }
    .encode_to_vec();
    let principal = pb::PrincipalCert {
        signature: raw_sign(&pki.root_key, b"alts.v1.PrincipalCertTbs\0", &tbs),
        tbs,
        signature_algorithm: pb::SignatureAlgorithm::Ed25519 as i32,
    }
    .encode_to_vec();
    let static_key = StaticKeyPair::generate(pki.rng.as_ref()).unwrap();
    let mut params =
        HandshakeParams::with_defaults(*static_key.public_key(), spec.handshake_validity, 3 << 56 | 2);
    params.record_protocols = spec.record_protocols.iter().map(|s| s.to_string()).collect();
    let hs = cert::issue_handshake(&principal_key, &principal, &params).unwrap();
    Arc::new(LocalCredentials::new(hs, static_key).unwrap())
}

fn verifier(pki: &TestPki) -> Arc<Verifier> {
    pki.verifier(IssuancePolicy::allow_all_for_tests())
}

fn config_for(pki: &TestPki, creds: Arc<LocalCredentials>, seed: &[u8]) -> HandshakeConfig {
    HandshakeConfig::new(creds, verifier(pki), deterministic_provider(seed))
}

/// Client (`frontend-prod`) and server (`backend-prod`) default configurations.
fn configs(pki: &TestPki) -> (HandshakeConfig, HandshakeConfig) {
    let c = pki.issue("frontend-prod", Category::Workload, "scheduler");
    let s = pki.issue("backend-prod", Category::Workload, "scheduler");
    (
        config_for(pki, c.credentials, b"c"),
        config_for(pki, s.credentials, b"s"),
    )
}

type Failure = (&'static str, HandshakeError);

fn run(c: HandshakeConfig, s: HandshakeConfig) -> Result<(HandshakeOutcome, HandshakeOutcome), Failure> {
    let mut client = ClientHandshake::new(Arc::new(c), ClientOptions::default(), NOW).unwrap();
    let mut server = ServerHandshake::new(Arc::new(s), NOW);
    drive(&mut client, &mut server, Delivery::Whole)
}

fn reframe(m: Msg) -> Vec<u8> {
    let body = HandshakeMessage { msg: Some(m) }.encode_to_vec();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn unframe(b: &[u8]) -> Msg {
    HandshakeMessage::decode(&b[4..]).unwrap().msg.unwrap()
}

fn split_frames(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while !b.is_empty() {
        let len = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
        v.push(b[..4 + len].to_vec());
        b = &b[4 + len..];
    }
    v
}

/// A handshake through a man in the middle that may rewrite each message:
/// `hook(i, message)` for 0 = ClientInit, 1 = ServerInit, 2 = ServerFinished,
/// 3 = ClientFinished. Returns both outcomes or the first failure.
fn through_mitm(
    c: HandshakeConfig,
    s: HandshakeConfig,
    mut hook: impl FnMut(usize, Msg) -> Msg,
) -> Result<(HandshakeOutcome, HandshakeOutcome), Failure> {
    let mut client = ClientHandshake::new(Arc::new(c), ClientOptions::default(), NOW).unwrap();
    let mut server = ServerHandshake::new(Arc::new(s), NOW);
    let mut ci = Vec::new();
    client.poll_output(&mut ci);
    let ci = reframe(hook(0, unframe(&ci)));
    server.handle_input(&ci).map_err(|e| ("server", e))?;
    let mut flight = Vec::new();
    server.poll_output(&mut flight);
    let frames = split_frames(&flight);
    let mut to_client = reframe(hook(1, unframe(&frames[0])));
    to_client.extend(reframe(hook(2, unframe(&frames[1]))));
    client.handle_input(&to_client).map_err(|e| ("client", e))?;
    let mut cf = Vec::new();
    client.poll_output(&mut cf);
    let cf = reframe(hook(3, unframe(&cf)));
    server.handle_input(&cf).map_err(|e| ("server", e))?;
    Ok((client.take_outcome().unwrap(), server.take_outcome().unwrap()))
}

fn no_edit(_: usize, m: Msg) -> Msg {
    m
}

// ---- receive frame size ----

/// Seals one record of exactly `frame` bytes on the wire with `key_data`.
fn frame_of(o: &HandshakeOutcome, frame: usize) -> BytesMut {
    let cfg = RecordConfig {
        send_frame_size: frame,
        ..RecordConfig::default()
    };
    let (mut sealer, _) = new_record_layer(o.record_protocol, &o.key_data, o.side, cfg).unwrap();
    let mut wire = BytesMut::new();
    sealer
        .seal(&vec![7u8; frame - FRAME_OVERHEAD], &mut wire)
        .unwrap();
    assert_eq!(wire.len(), frame);
    wire
}

#[test]
fn frame_larger_than_the_configured_max_is_refused_and_equal_passes() {
    let pki = pki();
    let (c, mut s) = configs(&pki);
    s.max_frame_size = 8192;
    let (co, so) = run(c, s).unwrap();
    assert_eq!((co.max_frame_size, so.max_frame_size), (8192, 8192));
    assert_eq!(so.local_max_frame_size, 8192);
    assert_eq!(so.record_config().max_recv_frame, 8192 - 4);

    // The honest client sends frames of the negotiated size: they pass,
    // including one of exactly the advertised size.
    let (mut sealer, _) = co.record_layer(co.record_config()).unwrap();
    let mut wire = BytesMut::new();
    sealer.seal(&vec![1u8; 20_000], &mut wire).unwrap();
    let (_, mut opener) = so.record_layer(so.record_config()).unwrap();
    let mut got = 0;
    while let Some(r) = opener.open(&mut wire).unwrap() {
        got += r.len();
    }
    assert_eq!(got, 20_000);
    let (_, mut opener) = so.record_layer(so.record_config()).unwrap();
    let mut equal = frame_of(&co, 8192);
    assert_eq!(
        opener.open(&mut equal).unwrap().unwrap().len(),
        8192 - FRAME_OVERHEAD
    );

    // A peer that ignores the advertised size: refused from the header, one
    // byte over is enough (the receive cap used to be 1 MiB whatever was
    // configured).
    for frame in [8193, 64 * 1024, 1 << 20] {
        let (_, mut opener) = so.record_layer(so.record_config()).unwrap();
        let mut big = frame_of(&co, frame);
        assert_eq!(
            opener.open(&mut big),
            Err(RecordError::FrameTooLarge {
                len: frame - 4,
                limit: 8192 - 4
            }),
            "{frame}"
        );
    }
}

#[test]
fn configured_frame_sizes_below_four_kib_still_accept_four_kib() {
    let pki = pki();
    for configured in [0, 100, MIN_RECV_FRAME_SIZE - 1] {
        let (c, mut s) = configs(&pki);
        s.max_frame_size = configured;
        let (co, so) = run(c, s).unwrap();
        assert_eq!(
            so.record_config().max_recv_frame,
            MIN_RECV_FRAME_SIZE as usize - 4
        );
        // The client sends 4 KiB frames (the smallest it ever sends): they pass.
        assert_eq!(co.record_config().send_frame_size, 4096);
        let (_, mut opener) = so.record_layer(so.record_config()).unwrap();
        assert!(opener.open(&mut frame_of(&co, 4096)).unwrap().is_some());
        let (_, mut opener) = so.record_layer(so.record_config()).unwrap();
        assert!(matches!(
            opener.open(&mut frame_of(&co, 4097)),
            Err(RecordError::FrameTooLarge { .. })
        ));
    }
}

// ---- integrity-only records, boundaries and the minimum security level ----

#[test]
fn integrity_only_is_not_offered_by_default() {
    let pki = pki();
    let (c, s) = configs(&pki);
    assert!(!c.record_protocols.contains(&GMAC));
    assert_eq!(c.min_security_level, SecurityLevel::IntegrityOnly);
    assert_eq!(c.boundary, None);
    // A client that asks for integrity-only with a default server: refused.
    let mut only_gmac = c.clone();
    only_gmac.record_protocols = vec![GMAC];
    only_gmac.boundary = Some("cell-a".into());
    let err = run(only_gmac, s.clone()).unwrap_err();
    assert!(
        matches!(err, ("server", HandshakeError::NoCommonRecordProtocol { .. })),
        "{err:?}"
    );
    let (co, _) = run(c, s).unwrap();
    assert_eq!(co.record_protocol, GCM_REKEY);
}

/// Client prefers integrity-only, the server supports it after GCM.
fn gmac_pair(
    pki: &TestPki,
    client_boundary: Option<&str>,
    server_boundary: Option<&str>,
) -> (HandshakeConfig, HandshakeConfig) {
    let (mut c, mut s) = configs(pki);
    c.record_protocols = vec![GMAC, GCM_REKEY];
    s.record_protocols = vec![GCM_REKEY, GMAC];
    c.boundary = client_boundary.map(str::to_owned);
    s.boundary = server_boundary.map(str::to_owned);
    (c, s)
}

#[test]
fn integrity_only_needs_both_sides_in_the_same_boundary() {
    let pki = pki();
    for (cb, sb, want) in [
        (None, None, GCM_REKEY),
        (Some("cell-a"), None, GCM_REKEY),
        (None, Some("cell-a"), GCM_REKEY),
        (Some("cell-a"), Some("cell-b"), GCM_REKEY),
        (Some("cell-a"), Some("cell-a"), GMAC),
    ] {
        let (c, s) = gmac_pair(&pki, cb, sb);
        let (co, so) = run(c, s).unwrap();
        assert_eq!(
            (co.record_protocol, so.record_protocol),
            (want, want),
            "{cb:?} {sb:?}"
        );
        assert_eq!(&co.key_data[..], &so.key_data[..]);
    }
    // Integrity-only alone without a shared boundary: nothing in common.
    let (mut c, s) = gmac_pair(&pki, Some("cell-a"), Some("cell-b"));
    c.record_protocols = vec![GMAC];
    let err = run(c, s).unwrap_err();
    assert!(
        matches!(err, ("server", HandshakeError::NoCommonRecordProtocol { .. })),
        "{err:?}"
    );
}

#[test]
fn server_minimum_privacy_never_chooses_integrity_only() {
    let pki = pki();
    let (c, mut s) = gmac_pair(&pki, Some("cell-a"), Some("cell-a"));
    s.min_security_level = SecurityLevel::IntegrityAndPrivacy;
    let (co, _) = run(c.clone(), s.clone()).unwrap();
    assert_eq!(co.record_protocol, GCM_REKEY);
    let mut only_gmac = c;
    only_gmac.record_protocols = vec![GMAC];
    let err = run(only_gmac, s).unwrap_err();
    assert!(
        matches!(err, ("server", HandshakeError::NoCommonRecordProtocol { .. })),
        "{err:?}"
    );
    // A client with a minimum of privacy does not even offer it.
    let (mut c, s) = gmac_pair(&pki, Some("cell-a"), Some("cell-a"));
    c.min_security_level = SecurityLevel::IntegrityAndPrivacy;
    let (co, _) = through_mitm(c, s, |i, m| {
        if let Msg::ClientInit(ci) = &m {
            assert_eq!(ci.record_protocols, ["ALTSRP_GCM_AES128_REKEY"], "{i}");
        }
        m
    })
    .unwrap();
    assert_eq!(co.record_protocol, GCM_REKEY);
}

#[test]
fn integrity_only_without_boundary_only_with_the_insecure_opt_in_on_both_sides() {
    let pki = pki();
    let (mut c, mut s) = gmac_pair(&pki, None, None);
    c.insecure_allow_integrity_only_without_boundary = true;
    let (co, _) = run(c.clone(), s.clone()).unwrap();
    assert_eq!(co.record_protocol, GCM_REKEY, "server not opted in");
    s.insecure_allow_integrity_only_without_boundary = true;
    let (co, so) = run(c, s).unwrap();
    assert_eq!((co.record_protocol, so.record_protocol), (GMAC, GMAC));
}

#[test]
fn invalid_boundary_labels_are_refused_locally() {
    let pki = pki();
    for bad in ["", "Cell-A", "cell a", "cell-a\u{200b}"] {
        let (mut c, mut s) = configs(&pki);
        c.boundary = Some(bad.into());
        assert!(matches!(
            ClientHandshake::new(Arc::new(c), ClientOptions::default(), NOW),
            Err(HandshakeError::InvalidConfig("boundary label"))
        ));
        s.boundary = Some(bad.into());
        let (c, _) = configs(&pki);
        let err = run(c, s).unwrap_err();
        assert!(
            matches!(err, ("server", HandshakeError::InvalidConfig(_))),
            "{err:?}"
        );
    }
}

#[test]
fn mitm_reordering_the_offer_to_integrity_only_fails_the_finished_mac() {
    let pki = pki();
    let (mut c, s) = gmac_pair(&pki, Some("cell-a"), Some("cell-a"));
    c.record_protocols = vec![GCM_REKEY, GMAC];
    let (co, _) = through_mitm(c.clone(), s.clone(), no_edit).unwrap();
    assert_eq!(co.record_protocol, GCM_REKEY);
    let mut chosen = None;
    let err = through_mitm(c, s, |_, m| match m {
        Msg::ClientInit(mut ci) => {
            ci.record_protocols.reverse();
            Msg::ClientInit(ci)
        }
        Msg::ServerInit(si) => {
            chosen = Some(si.record_protocol.clone());
            Msg::ServerInit(si)
        }
        m => m,
    })
    .unwrap_err();
    assert_eq!(chosen.as_deref(), Some("ALTSRP_GMAC_AES128_REKEY"));
    assert_eq!(err, ("client", HandshakeError::BadFinished("ServerFinished")));
}

#[test]
fn mitm_editing_the_boundary_is_refused() {
    let pki = pki();
    // Honest: different boundaries, so encryption.
    let (c, s) = gmac_pair(&pki, Some("cell-a"), Some("cell-b"));
    let (co, _) = through_mitm(c.clone(), s.clone(), no_edit).unwrap();
    assert_eq!(co.record_protocol, GCM_REKEY);

    // The client's boundary rewritten to the server's: the server chooses
    // integrity-only; the client sees the server's real boundary and refuses.
    let to_b = |_: usize, m: Msg| match m {
        Msg::ClientInit(mut ci) => {
            ci.boundary = "cell-b".into();
            Msg::ClientInit(ci)
        }
        m => m,
    };
    let err = through_mitm(c.clone(), s.clone(), to_b).unwrap_err();
    assert!(
        matches!(
            err,
            (
                "client",
                HandshakeError::NotAllowed {
                    what: "record protocol",
                    reason: "integrity-only outside a shared boundary",
                    ..
                }
            )
        ),
        "{err:?}"
    );

    // ...and the server's boundary rewritten back too: the transcript
    // differs, ServerFinished does not verify.
    let both = |i: usize, m: Msg| match m {
        Msg::ServerInit(mut si) => {
            si.boundary = "cell-a".into();
            Msg::ServerInit(si)
        }
        m => to_b(i, m),
    };
    let err = through_mitm(c.clone(), s.clone(), both).unwrap_err();
    assert_eq!(err, ("client", HandshakeError::BadFinished("ServerFinished")));

    // A boundary added where the client has none: the client does not offer
    // integrity-only without one, so the server cannot choose it, and the
    // edited transcript fails.
    let (c, s) = gmac_pair(&pki, None, Some("cell-b"));
    let err = through_mitm(c, s, to_b).unwrap_err();
    assert_eq!(err, ("client", HandshakeError::BadFinished("ServerFinished")));
}

// ---- the certificates' own lists ----

#[test]
fn certificate_record_protocol_lists_restrict_negotiation() {
    let pki = pki();
    let client_gcm_only = chain(
        &pki,
        &Spec {
            record_protocols: &["ALTSRP_GCM_AES128"],
            ..Spec::default()
        },
    );
    let server_rekey_only = chain(
        &pki,
        &Spec {
            identity: "backend-prod",
            record_protocols: &["ALTSRP_GCM_AES128_REKEY"],
            ..Spec::default()
        },
    );
    let (c, s) = configs(&pki);

    // The server's own certificate: the client prefers plain GCM, the
    // server's certificate does not list it.
    let mut c_gcm_first = c.clone();
    c_gcm_first.record_protocols = vec![GCM, GCM_REKEY];
    let mut s_rekey = config_for(&pki, server_rekey_only.clone(), b"s");
    s_rekey.record_protocols = vec![GCM, GCM_REKEY];
    let (co, so) = run(c_gcm_first.clone(), s_rekey.clone()).unwrap();
    assert_eq!((co.record_protocol, so.record_protocol), (GCM_REKEY, GCM_REKEY));
    // Without the certificate restriction both sides would pick plain GCM.
    let (co, _) = run(c_gcm_first.clone(), s.clone()).unwrap();
    assert_eq!(co.record_protocol, GCM);

    // The client's own certificate limits its offer.
    let mut c_limited = config_for(&pki, client_gcm_only.clone(), b"c");
    c_limited.record_protocols = vec![GCM_REKEY, GCM];
    let (co, _) = through_mitm(c_limited.clone(), s.clone(), |_, m| {
        if let Msg::ClientInit(ci) = &m {
            assert_eq!(ci.record_protocols, ["ALTSRP_GCM_AES128"]);
        }
        m
    })
    .unwrap();
    assert_eq!(co.record_protocol, GCM);

    // The server checks the client's certificate: a man in the middle adds
    // a protocol the client's certificate does not list; the server does not
    // choose it (and the edited transcript fails anyway).
    let mut chosen = None;
    let err = through_mitm(c_limited.clone(), s.clone(), |_, m| match m {
        Msg::ClientInit(mut ci) => {
            ci.record_protocols.insert(0, "ALTSRP_GCM_AES128_REKEY".into());
            Msg::ClientInit(ci)
        }
        Msg::ServerInit(si) => {
            chosen = Some(si.record_protocol.clone());
            Msg::ServerInit(si)
        }
        m => m,
    })
    .unwrap_err();
    assert_eq!(chosen.as_deref(), Some("ALTSRP_GCM_AES128"));
    assert_eq!(err, ("client", HandshakeError::BadFinished("ServerFinished")));

    // The client checks the server's certificate: a choice outside it is
    // refused before any MAC.
    let err = through_mitm(c_gcm_first, s_rekey, |_, m| match m {
        Msg::ServerInit(mut si) => {
            si.record_protocol = "ALTSRP_GCM_AES128".into();
            Msg::ServerInit(si)
        }
        m => m,
    })
    .unwrap_err();
    assert_eq!(
        err,
        (
            "client",
            HandshakeError::NotAllowed {
                what: "record protocol",
                chosen: "ALTSRP_GCM_AES128".into(),
                reason: "not in the peer's certificate",
            }
        )
    );

    // No protocol in all four lists: refused.
    let err = run(c_limited, config_for(&pki, server_rekey_only, b"s")).unwrap_err();
    assert!(
        matches!(err, ("server", HandshakeError::NoCommonRecordProtocol { .. })),
        "{err:?}"
    );
}

#[test]
fn certificate_without_integrity_only_never_negotiates_it() {
    let pki = pki();
    let server_no_gmac = chain(
        &pki,
        &Spec {
            identity: "backend-prod",
            record_protocols: &["ALTSRP_GCM_AES128_REKEY"],
            ..Spec::default()
        },
    );
    let (c, _) = gmac_pair(&pki, Some("cell-a"), Some("cell-a"));
    let mut s = config_for(&pki, server_no_gmac, b"s");
    s.record_protocols = vec![GCM_REKEY, GMAC];
    s.boundary = Some("cell-a".into());
    let (co, _) = run(c, s).unwrap();
    assert_eq!(co.record_protocol, GCM_REKEY);
}

// ---- handshake certificate lifetime ----

fn lifetime_chain(
    pki: &TestPki,
    identity: &str,
    validity: Option<(UnixTime, UnixTime)>,
) -> Arc<LocalCredentials> {
    chain(
        pki,
        &Spec {
            identity,
            handshake_validity: validity,
            ..Spec::default()
        },
    )
}

#[test]
fn handshake_certificates_longer_than_seven_days_or_without_expiry_are_refused() {
    let pki = pki();
    let v = Verifier::new(pki.root.clone(), Arc::new(IssuancePolicy::allow_all_for_tests()));
    assert_eq!(v.max_handshake_cert_lifetime(), Some(7 * DAY));
    let start = NOW.plus(-3600);
    let seven_days = lifetime_chain(&pki, "a", Some((start, start.plus(7 * DAY))));
    let eight_days = lifetime_chain(&pki, "b", Some((start, start.plus(8 * DAY))));
    let forever = lifetime_chain(&pki, "c", None);
    assert!(v.verify_handshake_cert(seven_days.cert_bytes(), NOW).is_ok());
    assert_eq!(
        v.verify_handshake_cert(eight_days.cert_bytes(), NOW),
        Err(CertError::LifetimeTooLong {
            lifetime_secs: Some(8 * DAY),
            max_secs: 7 * DAY
        })
    );
    assert_eq!(
        v.verify_handshake_cert(forever.cert_bytes(), NOW),
        Err(CertError::LifetimeTooLong {
            lifetime_secs: None,
            max_secs: 7 * DAY
        })
    );
    // Configurable, and an explicit opt-out.
    let v9 = Verifier::new(pki.root.clone(), Arc::new(IssuancePolicy::allow_all_for_tests()))
        .with_max_handshake_cert_lifetime(9 * DAY);
    assert!(v9.verify_handshake_cert(eight_days.cert_bytes(), NOW).is_ok());
    assert!(v9.verify_handshake_cert(forever.cert_bytes(), NOW).is_err());
    let v1 = Verifier::new(pki.root.clone(), Arc::new(IssuancePolicy::allow_all_for_tests()))
        .with_max_handshake_cert_lifetime(DAY);
    assert!(v1.verify_handshake_cert(seven_days.cert_bytes(), NOW).is_err());
    let unbounded = Verifier::new(pki.root.clone(), Arc::new(IssuancePolicy::allow_all_for_tests()))
        .allow_unbounded_handshake_certs();
    assert_eq!(unbounded.max_handshake_cert_lifetime(), None);
    assert!(unbounded.verify_handshake_cert(forever.cert_bytes(), NOW).is_ok());
    assert!(
        unbounded
            .verify_handshake_cert(eight_days.cert_bytes(), NOW)
            .is_ok()
    );

    // In a handshake: a server presenting a never-expiring certificate is
    // refused by the client; the seven-day one is served.
    let (c, _) = configs(&pki);
    let s_forever = config_for(&pki, lifetime_chain(&pki, "backend-prod", None), b"s");
    let err = run(c.clone(), s_forever.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            (
                "client",
                HandshakeError::PeerCert(CertError::LifetimeTooLong { .. })
            )
        ),
        "{err:?}"
    );
    let mut c_unbounded = c.clone();
    c_unbounded.verifier = Arc::new(unbounded);
    run(c_unbounded, s_forever).unwrap();
    let s_week = config_for(
        &pki,
        lifetime_chain(&pki, "backend-prod", Some((start, start.plus(7 * DAY)))),
        b"s",
    );
    run(c, s_week).unwrap();
}

// ---- canonical certificate encoding ----

/// The handshake certificate re-encoded with an unknown field appended.
fn with_unknown_field(cert: &[u8]) -> Vec<u8> {
    let mut v = cert.to_vec();
    v.extend_from_slice(&[0x78, 0x01]); // field 15, varint 1
    v
}

/// The handshake certificate with its `signature_algorithm` varint padded
/// to two bytes (same value).
fn with_padded_varint(cert: &[u8]) -> Vec<u8> {
    let m = pb::HandshakeCert::decode(cert).unwrap();
    let mut v = Vec::new();
    prost::encoding::bytes::encode(1, &m.tbs, &mut v);
    v.extend_from_slice(&[0x10, 0x80 | m.signature_algorithm as u8, 0x00]);
    prost::encoding::bytes::encode(3, &m.signature, &mut v);
    assert_eq!(pb::HandshakeCert::decode(&v[..]).unwrap(), m);
    v
}

#[test]
fn re_encoded_certificates_are_refused_and_leave_the_chain_cache_alone() {
    let pki = pki();
    let issued = pki.issue("frontend-prod", Category::Workload, "scheduler");
    let v = Verifier::new(pki.root.clone(), Arc::new(IssuancePolicy::allow_all_for_tests()))
        .with_cache_capacity(2);
    v.verify_handshake_cert(&issued.handshake_cert, NOW).unwrap();
    assert_eq!(v.chain_cache_len(), 1);
    for copy in [
        with_unknown_field(&issued.handshake_cert),
        with_padded_varint(&issued.handshake_cert),
    ] {
        assert_ne!(copy, issued.handshake_cert);
        assert!(matches!(
            v.verify_handshake_cert(&copy, NOW),
            Err(CertError::Malformed {
                what: "handshake certificate: non-canonical encoding"
            })
        ));
        assert_eq!(v.chain_cache_len(), 1, "nothing inserted, nothing evicted");
    }
    // The principal certificate on its own too.
    let mut p = issued.principal_cert.clone();
    p.extend_from_slice(&[0x78, 0x01]);
    assert!(matches!(
        v.verify_principal_cert(&p, NOW),
        Err(CertError::Malformed { .. })
    ));
    // The honest certificate still verifies (a cache hit).
    v.verify_handshake_cert(&issued.handshake_cert, NOW).unwrap();
    assert_eq!(v.chain_cache_len(), 1);

    // In a handshake: a man in the middle re-encoding the client's
    // certificate is refused by the server.
    let (c, s) = configs(&pki);
    let err = through_mitm(c, s, |_, m| match m {
        Msg::ClientInit(mut ci) => {
            ci.handshake_cert = with_unknown_field(&ci.handshake_cert);
            Msg::ClientInit(ci)
        }
        m => m,
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            ("server", HandshakeError::PeerCert(CertError::Malformed { .. }))
        ),
        "{err:?}"
    );
}

// ---- the server verifies the client before any key generation ----

/// Counts every request for random bytes (key generation and nonces).
fn counting_provider() -> (CryptoProvider, Arc<AtomicUsize>) {
    alts_core::testing::counting_provider(b"counting")
}

#[test]
fn server_verifies_the_client_chain_before_generating_or_agreeing_keys() {
    let pki = pki();
    let other = TestPki::new(b"another root");
    let stranger = other.issue("frontend-prod", Category::Workload, "scheduler");
    let revoked = pki.issue("revoked-prod", Category::Workload, "scheduler");
    let crl = RevocationList::build_signed([revoked.principal_revocation_id], &pki.root_key, NOW).unwrap();
    let crl = Arc::new(RevocationList::from_signed_bytes(&crl, &pki.root).unwrap());
    let (honest, s) = configs(&pki);
    let server_verifier = Arc::new(
        Verifier::new(pki.root.clone(), Arc::new(IssuancePolicy::allow_all_for_tests())).with_crl(crl),
    );
    for (name, creds, refused) in [
        ("other root", stranger.credentials, true),
        ("revoked", revoked.credentials, true),
        ("honest", honest.credentials.clone(), false),
    ] {
        let mut c = honest.clone();
        c.credentials = creds;
        c.pfs = true; // the server would generate an ephemeral key for it
        let mut s = s.clone();
        s.verifier = server_verifier.clone();
        let (provider, calls) = counting_provider();
        s.provider = provider;
        let result = run(c, s);
        if refused {
            assert!(
                matches!(result, Err(("server", HandshakeError::PeerCert(_)))),
                "{name}: {result:?}"
            );
            assert_eq!(
                calls.load(Ordering::SeqCst),
                0,
                "{name}: no key generation, no nonce"
            );
        } else {
            let (co, so) = result.unwrap();
            assert!(co.pfs && so.pfs);
            assert_eq!(
                calls.load(Ordering::SeqCst),
                1,
                "one draw for the ephemeral key, the nonce and the ticket"
            );
        }
    }
}

// ---- identity grammar ----

const GOOD_IDENTITIES: &[&str] = &[
    "frontend-prod",
    "sa@p.iam",
    "network-admin",
    "echo-prod",
    "oncall-alice",
    "build-box-17",
    "spiffe:cell-a:db_1",
    "0",
];

const BAD_IDENTITIES: &[&str] = &[
    "network-admin\u{200b}", // zero-width space
    "network-admin\u{202e}", // right-to-left override
    "n\u{0435}twork-admin",  // Cyrillic small ie, a look-alike of "e"
    "Network-admin",
    "network admin",
    "network-admin\n",
    "network-admin\u{0}",
    "-network-admin",
    ".hidden",
    "a/b",
    "a*",
];

#[test]
fn identity_grammar_at_issuance() {
    let pki = pki();
    let key = SigningKey::generate(pki.rng.as_ref()).unwrap();
    let params = |identity: &str| cert::PrincipalParams {
        identity: identity.to_owned(),
        category: Category::Workload,
        issuer: "scheduler".into(),
        validity: None,
        revocation_id: 1,
    };
    for id in GOOD_IDENTITIES {
        check_identity(id).unwrap();
        cert::issue_principal(&pki.root_key, &params(id), key.public_key()).unwrap();
    }
    let longest = "a".repeat(MAX_IDENTITY_LEN);
    cert::issue_principal(&pki.root_key, &params(&longest), key.public_key()).unwrap();
    assert!(matches!(
        cert::issue_principal(
            &pki.root_key,
            &params(&"a".repeat(MAX_IDENTITY_LEN + 1)),
            key.public_key()
        ),
        Err(CertError::TooLarge { what: "identity", .. })
    ));
    assert!(matches!(
        cert::issue_principal(&pki.root_key, &params(""), key.public_key()),
        Err(CertError::Malformed { what: "identity" })
    ));
    for id in BAD_IDENTITIES {
        let err = cert::issue_principal(&pki.root_key, &params(id), key.public_key()).unwrap_err();
        assert!(
            matches!(err, CertError::InvalidIdentity { .. }),
            "{id:?}: {err:?}"
        );
        // The refusal does not repeat the identity (it may hold control characters).
        assert!(!err.to_string().contains(id), "{id:?}");
    }
}

#[test]
fn identity_grammar_at_verification() {
    let pki = pki();
    let v = Verifier::new(pki.root.clone(), Arc::new(IssuancePolicy::allow_all_for_tests()));
    let lax = Verifier::new(pki.root.clone(), Arc::new(IssuancePolicy::allow_all_for_tests()))
        .insecure_allow_any_identity();
    for id in GOOD_IDENTITIES {
        let c = chain(
            &pki,
            &Spec {
                identity: id,
                ..Spec::default()
            },
        );
        assert_eq!(
            v.verify_handshake_cert(c.cert_bytes(), NOW).unwrap().identity,
            *id
        );
    }
    for id in BAD_IDENTITIES {
        let c = chain(
            &pki,
            &Spec {
                identity: id,
                ..Spec::default()
            },
        );
        assert!(
            matches!(
                v.verify_handshake_cert(c.cert_bytes(), NOW),
                Err(CertError::InvalidIdentity { .. })
            ),
            "{id:?}"
        );
        // Only the loudly named opt-out lets it through.
        assert_eq!(
            lax.verify_handshake_cert(c.cert_bytes(), NOW).unwrap().identity,
            *id
        );
    }

    // In a handshake: `network-admin` followed by a zero-width space is
    // refused by the server; the real `network-admin` is served.
    let (c, s) = configs(&pki);
    for (id, ok) in [("network-admin\u{200b}", false), ("network-admin", true)] {
        let mut c = c.clone();
        c.credentials = chain(
            &pki,
            &Spec {
                identity: id,
                ..Spec::default()
            },
        );
        let result = run(c, s.clone());
        if ok {
            assert_eq!(result.unwrap().1.peer.identity, "network-admin");
        } else {
            assert!(
                matches!(
                    result,
                    Err((
                        "server",
                        HandshakeError::PeerCert(CertError::InvalidIdentity { .. })
                    ))
                ),
                "{result:?}"
            );
        }
    }
}
