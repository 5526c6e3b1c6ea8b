//! Handshake state machines against each other, in memory and deterministic.

use std::sync::Arc;

use alts_core::UnixTime;
use alts_core::cert::{Category, CertError};
use alts_core::crl::RevocationList;
use alts_core::handshake::{
    AlertCode, ClientHandshake, ClientOptions, Handshake, HandshakeConfig, HandshakeError, HandshakeOutcome,
    Resumption, ResumptionConfig, ServerHandshake,
};
use alts_core::policy::IssuancePolicy;
use alts_core::record::RecordProtocol;
use alts_core::resumption::{ResumptionKey, ResumptionKeys};
use alts_core::testing::{Delivery, Issued, NOW, TestPki, deterministic_provider, drive};
use alts_core::verify::Verifier;
use alts_proto::Message;
use alts_proto::alts_v1::{HandshakeMessage, handshake_message::Msg};
use bytes::BytesMut;

struct World {
    pki: TestPki,
    client: Issued,
    server: Issued,
}

fn world() -> World {
    let pki = TestPki::new(b"handshake tests");
    let client = pki.issue("frontend-prod", Category::Workload, "scheduler");
    let server = pki.issue("backend-prod", Category::Workload, "scheduler");
    World { pki, client, server }
}

fn config(w: &World, who: &Issued, seed: &[u8]) -> HandshakeConfig {
    HandshakeConfig::new(
        who.credentials.clone(),
        w.pki.verifier(IssuancePolicy::allow_all_for_tests()),
        deterministic_provider(seed),
    )
}

fn run(
    c: HandshakeConfig,
    s: HandshakeConfig,
    opts: ClientOptions,
    d: Delivery,
) -> Result<(HandshakeOutcome, HandshakeOutcome), (&'static str, HandshakeError)> {
    let mut client = ClientHandshake::new(Arc::new(c), opts, NOW).unwrap();
    let mut server = ServerHandshake::new(Arc::new(s), NOW);
    drive(&mut client, &mut server, d)
}

/// Records sealed by each side open on the other, both ways.
fn assert_records_interoperate(c: &HandshakeOutcome, s: &HandshakeOutcome) {
    assert_eq!(c.record_protocol, s.record_protocol);
    assert_eq!(&c.key_data[..], &s.key_data[..]);
    let (mut cs, mut co) = c.record_layer(c.record_config()).unwrap();
    let (mut ss, mut so) = s.record_layer(s.record_config()).unwrap();
    for (msg, sealer, opener) in [(&b"ping"[..], &mut cs, &mut so), (&b"pong"[..], &mut ss, &mut co)] {
        let mut wire = BytesMut::new();
        sealer.seal(msg, &mut wire).unwrap();
        let got = opener.open(&mut wire).unwrap().unwrap();
        assert_eq!(&got[..], msg);
    }
}

#[test]
fn full_handshake_in_every_chunking() {
    let w = world();
    for d in [Delivery::Whole, Delivery::ByteAtATime, Delivery::Chunks(7)] {
        let (c, s) = run(
            config(&w, &w.client, b"c"),
            config(&w, &w.server, b"s"),
            ClientOptions::default(),
            d,
        )
        .unwrap();
        assert_eq!(c.peer.identity, "backend-prod");
        assert_eq!(s.peer.identity, "frontend-prod");
        assert_eq!(c.local_identity, "frontend-prod");
        assert_eq!(c.record_protocol, RecordProtocol::GcmAes128Rekey);
        assert_eq!(c.key_data.len(), 44);
        assert_eq!(c.resumption, Resumption::NotAttempted);
        assert!(!c.pfs && !s.pfs);
        assert_eq!(c.max_frame_size, s.max_frame_size);
        assert_eq!(c.rpc_version, s.rpc_version);
        assert_records_interoperate(&c, &s);
    }
}

#[test]
fn same_keys_and_seeds_give_same_secrets_only_with_same_nonces() {
    let w = world();
    let (a, _) = run(
        config(&w, &w.client, b"c1"),
        config(&w, &w.server, b"s"),
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap();
    let (b, _) = run(
        config(&w, &w.client, b"c2"),
        config(&w, &w.server, b"s"),
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap();
    assert_ne!(
        &a.key_data[..],
        &b.key_data[..],
        "fresh nonces must give fresh keys"
    );
}

#[test]
fn record_protocol_is_the_first_of_the_clients_list_the_server_supports() {
    let w = world();
    let mut c = config(&w, &w.client, b"c");
    c.record_protocols = vec![RecordProtocol::GmacAes128Rekey, RecordProtocol::GcmAes128Rekey];
    let mut s = config(&w, &w.server, b"s");
    s.record_protocols = vec![RecordProtocol::GcmAes128Rekey, RecordProtocol::GcmAes128];
    let (co, so) = run(c.clone(), s.clone(), ClientOptions::default(), Delivery::Whole).unwrap();
    assert_eq!(co.record_protocol, RecordProtocol::GcmAes128Rekey);
    assert_records_interoperate(&co, &so);

    s.record_protocols = vec![RecordProtocol::GcmAes128];
    let err = run(c, s, ClientOptions::default(), Delivery::Whole).unwrap_err();
    assert!(
        matches!(err, ("server", HandshakeError::NoCommonRecordProtocol { .. })),
        "{err:?}"
    );
}

#[test]
fn gmac_integrity_only_negotiates() {
    let w = world();
    let mut c = config(&w, &w.client, b"c");
    c.record_protocols = vec![RecordProtocol::GmacAes128Rekey];
    c.boundary = Some("cell-a".into());
    let mut s = config(&w, &w.server, b"s");
    s.record_protocols.push(RecordProtocol::GmacAes128Rekey);
    s.boundary = Some("cell-a".into());
    let (co, so) = run(c, s, ClientOptions::default(), Delivery::Whole).unwrap();
    assert_eq!(co.record_protocol, RecordProtocol::GmacAes128Rekey);
    assert_records_interoperate(&co, &so);
}

#[test]
fn rpc_versions_must_overlap() {
    let w = world();
    let mut c = config(&w, &w.client, b"c");
    c.rpc_versions.max.major = 1;
    c.rpc_versions.min.major = 1;
    let err = run(
        c,
        config(&w, &w.server, b"s"),
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap_err();
    assert!(
        matches!(err, ("server", HandshakeError::NoCommonRpcVersion)),
        "{err:?}"
    );
}

#[test]
fn pfs_mixes_ephemeral_keys() {
    let w = world();
    let mut c = config(&w, &w.client, b"c");
    c.pfs = true;
    let (co, so) = run(
        c,
        config(&w, &w.server, b"s"),
        ClientOptions::default(),
        Delivery::ByteAtATime,
    )
    .unwrap();
    assert!(co.pfs && so.pfs);
    assert_records_interoperate(&co, &so);

    // A server that requires PFS refuses a client that does not offer it.
    let mut s = config(&w, &w.server, b"s");
    s.require_pfs = true;
    let err = run(
        config(&w, &w.client, b"c"),
        s,
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap_err();
    assert!(matches!(err, ("server", HandshakeError::PfsRequired)), "{err:?}");
}

#[test]
fn kci_resistant_variant() {
    let w = world();
    let mut c = config(&w, &w.client, b"c");
    c.kci_resistant = true;
    let mut s = config(&w, &w.server, b"s");
    s.kci_resistant = true;
    let (co, so) = run(c, s.clone(), ClientOptions::default(), Delivery::Chunks(3)).unwrap();
    assert!(co.kci_resistant && so.kci_resistant && co.pfs);
    assert_records_interoperate(&co, &so);
    // A server requiring the variant refuses a plain client.
    let err = run(
        config(&w, &w.client, b"c"),
        s,
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap_err();
    assert!(matches!(err, ("server", HandshakeError::KciRequired)), "{err:?}");
}

#[test]
fn target_identity_mismatch_is_refused_by_the_client() {
    let w = world();
    let opts = ClientOptions {
        target_identities: vec!["payments-prod".into()],
        session_key: None,
    };
    let err = run(
        config(&w, &w.client, b"c"),
        config(&w, &w.server, b"s"),
        opts,
        Delivery::Whole,
    )
    .unwrap_err();
    assert!(
        matches!(err, ("client", HandshakeError::TargetIdentityMismatch { .. })),
        "{err:?}"
    );
    let ok = ClientOptions {
        target_identities: vec!["x".into(), "backend-prod".into()],
        session_key: None,
    };
    run(
        config(&w, &w.client, b"c"),
        config(&w, &w.server, b"s"),
        ok,
        Delivery::Whole,
    )
    .unwrap();
}

#[test]
fn server_predicate_refuses_dev_clients() {
    let w = world();
    let dev = w.pki.issue("frontend-dev", Category::Workload, "scheduler");
    let mut s = config(&w, &w.server, b"s");
    s.client_predicate = Some(Arc::new(|p| {
        if p.identity.ends_with("-dev") {
            Err("dev identities may not call production".into())
        } else {
            Ok(())
        }
    }));
    let err = run(
        config(&w, &dev, b"c"),
        s,
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap_err();
    assert!(
        matches!(err, ("server", HandshakeError::ClientRefused { .. })),
        "{err:?}"
    );
}

#[test]
fn wrong_root_is_refused_both_ways() {
    let w = world();
    let other = TestPki::new(b"another signing service");
    let stranger = other.issue("backend-prod", Category::Workload, "scheduler");
    // Client faces a server whose chain comes from another root.
    let err = run(
        config(&w, &w.client, b"c"),
        config(&w, &stranger, b"s"),
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap_err();
    assert!(matches!(err, ("client", HandshakeError::PeerCert(_))), "{err:?}");
    // Server faces such a client.
    let err = run(
        config(&w, &stranger, b"c"),
        config(&w, &w.server, b"s"),
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap_err();
    assert!(matches!(err, ("server", HandshakeError::PeerCert(_))), "{err:?}");
}

#[test]
fn revoked_and_expired_and_policy_refused_clients() {
    let w = world();
    // Revoked handshake certificate.
    let crl = RevocationList::build_signed([w.client.handshake_revocation_id], &w.pki.root_key, NOW).unwrap();
    let crl = Arc::new(RevocationList::from_signed_bytes(&crl, &w.pki.root).unwrap());
    let mut s = config(&w, &w.server, b"s");
    s.verifier = Arc::new(
        Verifier::new(
            w.pki.root.clone(),
            Arc::new(IssuancePolicy::allow_all_for_tests()),
        )
        .with_crl(crl),
    );
    let err = run(
        config(&w, &w.client, b"c"),
        s,
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ("server", HandshakeError::PeerCert(CertError::Revoked { .. }))
        ),
        "{err:?}"
    );

    // Expired.
    let old = w.pki.issue_with(
        "frontend-prod",
        Category::Workload,
        "scheduler",
        Some((UnixTime(0), UnixTime(1000))),
    );
    let err = run(
        config(&w, &old, b"c"),
        config(&w, &w.server, b"s"),
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ("server", HandshakeError::PeerCert(CertError::Expired { .. }))
        ),
        "{err:?}"
    );

    // Policy: mallory may not issue network-admin.
    let policy = IssuancePolicy::from_toml(
        r#"
        [[rule]]
        issuer = "scheduler"
        categories = ["workload"]
        identities = ["*-prod"]
        "#,
    )
    .unwrap();
    let mallory = w.pki.issue("network-admin", Category::Person, "mallory");
    let mut s = config(&w, &w.server, b"s");
    s.verifier = w.pki.verifier(policy);
    let err = run(
        config(&w, &mallory, b"c"),
        s.clone(),
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap_err();
    assert!(
        matches!(err, ("server", HandshakeError::PeerCert(CertError::Policy(_)))),
        "{err:?}"
    );
    run(
        config(&w, &w.client, b"c"),
        s,
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap();
}

// ---- resumption ----

fn rkeys(seed: u8) -> Arc<ResumptionKeys> {
    Arc::new(ResumptionKeys::new(
        ResumptionKey::new([seed; 16], &[seed; 32]),
        vec![],
    ))
}

#[test]
fn client_side_ticket_resumes_with_another_server_instance_once() {
    let w = world();
    let mut c = config(&w, &w.client, b"c");
    c.resumption = Some(ResumptionConfig::new(rkeys(1)));
    let server_keys = rkeys(2);
    let mut s1 = config(&w, &w.server, b"s1");
    s1.resumption = Some(ResumptionConfig::new(server_keys.clone()));
    // A second instance of the same identity sharing the RID key (and a replay guard).
    let mut s2 = config(&w, &w.server, b"s2");
    let mut r2 = ResumptionConfig::new(server_keys);
    r2.replay_guard = s1.resumption.as_ref().unwrap().replay_guard.clone();
    s2.resumption = Some(r2);

    let (c1, _) = run(c.clone(), s1.clone(), ClientOptions::default(), Delivery::Whole).unwrap();
    assert_eq!(c1.resumption, Resumption::NotAttempted);
    let cache = c.resumption.as_ref().unwrap().client_cache.clone();
    assert_eq!(cache.len(""), 1);
    let stolen = cache.take("", NOW).unwrap();
    cache.put("", stolen.clone());

    let (c2, s2o) = run(
        c.clone(),
        s2.clone(),
        ClientOptions::default(),
        Delivery::ByteAtATime,
    )
    .unwrap();
    assert_eq!(c2.resumption, Resumption::ClientTicket);
    assert_eq!(s2o.resumption, Resumption::ClientTicket);
    assert_eq!(s2o.peer.identity, "frontend-prod");
    assert_eq!(c2.peer.identity, "backend-prod");
    assert_records_interoperate(&c2, &s2o);
    assert_ne!(&c1.key_data[..], &c2.key_data[..]);

    // Replaying the same ticket: refused, and the connection falls back to a full handshake.
    let _fresh = cache.take("", NOW);
    cache.put("", stolen);
    let (c3, s3) = run(c.clone(), s1.clone(), ClientOptions::default(), Delivery::Whole).unwrap();
    assert!(
        matches!(s3.resumption, Resumption::Refused(ref r) if r.contains("replay")),
        "{:?}",
        s3.resumption
    );
    assert!(matches!(c3.resumption, Resumption::Refused(_)));
    assert_records_interoperate(&c3, &s3);
}

#[test]
fn ticket_for_unknown_rid_or_other_identity_falls_back() {
    let w = world();
    let mut c = config(&w, &w.client, b"c");
    c.resumption = Some(ResumptionConfig::new(rkeys(1)));
    let mut s = config(&w, &w.server, b"s");
    s.resumption = Some(ResumptionConfig::new(rkeys(2)));
    run(c.clone(), s, ClientOptions::default(), Delivery::Whole).unwrap();

    // A server with another RID key cannot open it.
    let mut other_rid = config(&w, &w.server, b"s");
    other_rid.resumption = Some(ResumptionConfig::new(rkeys(3)));
    let (_, so) = run(c.clone(), other_rid, ClientOptions::default(), Delivery::Whole).unwrap();
    assert!(
        matches!(so.resumption, Resumption::Refused(ref r) if r.contains("RID")),
        "{:?}",
        so.resumption
    );

    // A server of another identity holding the same RID key refuses a ticket sealed for backend-prod.
    run(
        c.clone(),
        {
            let mut s = config(&w, &w.server, b"s");
            s.resumption = Some(ResumptionConfig::new(rkeys(2)));
            s
        },
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap();
    let imposter = w.pki.issue("storage-prod", Category::Workload, "scheduler");
    let mut s_other = config(&w, &imposter, b"s");
    s_other.resumption = Some(ResumptionConfig::new(rkeys(2)));
    let (_, so) = run(c, s_other, ClientOptions::default(), Delivery::Whole).unwrap();
    assert!(
        matches!(so.resumption, Resumption::Refused(ref r) if r.contains("identity")),
        "{:?}",
        so.resumption
    );
}

#[test]
fn server_side_ticket_resumes() {
    let w = world();
    let client_keys = rkeys(1);
    let mut c = config(&w, &w.client, b"c");
    c.resumption = Some(ResumptionConfig::new(client_keys.clone()));
    let mut s = config(&w, &w.server, b"s");
    s.resumption = Some(ResumptionConfig::new(rkeys(2)));
    run(c, s.clone(), ClientOptions::default(), Delivery::Whole).unwrap();

    // Another client instance of the same identity (same RID key, empty ticket cache).
    let mut c2 = config(&w, &w.client, b"c2");
    c2.resumption = Some(ResumptionConfig::new(client_keys));
    let (co, so) = run(
        c2.clone(),
        s.clone(),
        ClientOptions::default(),
        Delivery::Chunks(5),
    )
    .unwrap();
    assert_eq!(co.resumption, Resumption::ServerTicket);
    assert_eq!(so.resumption, Resumption::ServerTicket);
    assert_eq!(co.peer.identity, "backend-prod");
    assert_records_interoperate(&co, &so);

    // Each stored ticket is used once: the resumed handshake stored a fresh one (R'),
    // so one more resumption works, with new keys.
    let mut c3 = c2.clone();
    c3.resumption.as_mut().unwrap().client_cache = Default::default();
    let (co3, _) = run(c3, s, ClientOptions::default(), Delivery::Whole).unwrap();
    assert_eq!(co3.resumption, Resumption::ServerTicket);
    assert_ne!(&co.key_data[..], &co3.key_data[..]);
}

// ---- tampering: a man in the middle edits messages ----

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

/// Runs a handshake with `edit` applied to the message at position `which`
/// (0 = ClientInit, 1 = ServerInit, 2 = ServerFinished, 3 = ClientFinished).
fn tampered(
    w: &World,
    which: usize,
    edit: impl FnOnce(Msg) -> Vec<u8>,
) -> Result<(), (&'static str, HandshakeError)> {
    tampered_with(
        config(w, &w.client, b"c"),
        config(w, &w.server, b"s"),
        which,
        edit,
    )
    .map(|_| ())
}

/// [`tampered`] with the given configurations; returns both outcomes.
fn tampered_with(
    c: HandshakeConfig,
    s: HandshakeConfig,
    which: usize,
    edit: impl FnOnce(Msg) -> Vec<u8>,
) -> Result<(HandshakeOutcome, HandshakeOutcome), (&'static str, HandshakeError)> {
    let mut client = ClientHandshake::new(Arc::new(c), ClientOptions::default(), NOW).unwrap();
    let mut server = ServerHandshake::new(Arc::new(s), NOW);
    let mut edit = Some(edit);
    let mut apply = |idx: usize, frame: Vec<u8>| -> Vec<u8> {
        if idx == which {
            (edit.take().unwrap())(unframe(&frame))
        } else {
            frame
        }
    };
    let mut ci = Vec::new();
    client.poll_output(&mut ci);
    let ci = apply(0, ci);
    server.handle_input(&ci).map_err(|e| ("server", e))?;
    let mut flight = Vec::new();
    server.poll_output(&mut flight);
    let frames = split_frames(&flight);
    let mut to_client = apply(1, frames[0].clone());
    to_client.extend(apply(2, frames[1].clone()));
    client.handle_input(&to_client).map_err(|e| ("client", e))?;
    let mut cf = Vec::new();
    client.poll_output(&mut cf);
    let cf = apply(3, cf);
    server.handle_input(&cf).map_err(|e| ("server", e))?;
    assert!(client.is_done() && server.is_done());
    Ok((client.take_outcome().unwrap(), server.take_outcome().unwrap()))
}

#[test]
fn untampered_manual_run_succeeds() {
    tampered(&world(), 99, |_| unreachable!()).unwrap();
}

#[test]
fn every_tamper_is_refused() {
    let w = world();
    let other_server = w.pki.issue("backend-prod", Category::Workload, "scheduler");
    let other_client = w.pki.issue("frontend-prod", Category::Workload, "scheduler");
    type Edit = Box<dyn FnOnce(Msg) -> Vec<u8>>;
    let cases: Vec<(&str, usize, Edit, &str)> = vec![
        (
            "client nonce changed",
            0,
            Box::new(|m| {
                let Msg::ClientInit(mut ci) = m else { panic!() };
                ci.nonce[0] ^= 1;
                reframe(Msg::ClientInit(ci))
            }),
            "ServerFinished",
        ),
        (
            "client cipher list reordered",
            0,
            Box::new(|m| {
                let Msg::ClientInit(mut ci) = m else { panic!() };
                ci.record_protocols.reverse();
                reframe(Msg::ClientInit(ci))
            }),
            "ServerFinished",
        ),
        (
            "record protocol downgraded to one the client does not offer",
            1,
            Box::new(|m| {
                let Msg::ServerInit(mut si) = m else { panic!() };
                si.record_protocol = "ALTSRP_GMAC_AES128_REKEY".into();
                reframe(Msg::ServerInit(si))
            }),
            "did not offer",
        ),
        (
            "record protocol downgraded within the client's offer",
            1,
            Box::new(|m| {
                let Msg::ServerInit(mut si) = m else { panic!() };
                si.record_protocol = "ALTSRP_GCM_AES128".into();
                reframe(Msg::ServerInit(si))
            }),
            "ServerFinished",
        ),
        (
            "server nonce changed",
            1,
            Box::new(|m| {
                let Msg::ServerInit(mut si) = m else { panic!() };
                si.nonce[5] ^= 0x80;
                reframe(Msg::ServerInit(si))
            }),
            "ServerFinished",
        ),
        (
            "server cert swapped",
            1,
            Box::new(move |m| {
                let Msg::ServerInit(mut si) = m else { panic!() };
                si.handshake_cert = other_server.handshake_cert.clone();
                reframe(Msg::ServerInit(si))
            }),
            "ServerFinished",
        ),
        (
            "server cert corrupted",
            1,
            Box::new(|m| {
                let Msg::ServerInit(mut si) = m else { panic!() };
                let n = si.handshake_cert.len();
                si.handshake_cert[n - 3] ^= 1;
                reframe(Msg::ServerInit(si))
            }),
            "peer certificate",
        ),
        (
            "ServerFinished bit flip",
            2,
            Box::new(|m| {
                let Msg::ServerFinished(mut sf) = m else { panic!() };
                sf.mac[31] ^= 1;
                reframe(Msg::ServerFinished(sf))
            }),
            "ServerFinished",
        ),
        (
            "ClientFinished bit flip",
            3,
            Box::new(|m| {
                let Msg::ClientFinished(mut cf) = m else { panic!() };
                cf.mac[0] ^= 0x40;
                reframe(Msg::ClientFinished(cf))
            }),
            "ClientFinished",
        ),
        (
            "ServerFinished sent first",
            1,
            Box::new(|_| reframe(Msg::ServerFinished(Default::default()))),
            "expected ServerInit",
        ),
        (
            "truncated ClientInit",
            0,
            Box::new(|m| {
                let mut f = reframe(m);
                f.truncate(f.len() - 10);
                let l = (f.len() - 4) as u32;
                f[..4].copy_from_slice(&l.to_be_bytes());
                f
            }),
            "malformed",
        ),
        (
            "oversized length",
            0,
            Box::new(|_| u32::MAX.to_be_bytes().to_vec()),
            "exceeds the limit",
        ),
        (
            "empty message",
            0,
            Box::new(|_| 0u32.to_be_bytes().to_vec()),
            "malformed",
        ),
        (
            "client cert swapped",
            0,
            Box::new(move |m| {
                let Msg::ClientInit(mut ci) = m else { panic!() };
                ci.handshake_cert = other_client.handshake_cert.clone();
                reframe(Msg::ClientInit(ci))
            }),
            "ServerFinished",
        ),
        (
            "ephemeral share injected",
            0,
            Box::new(|m| {
                let Msg::ClientInit(mut ci) = m else { panic!() };
                ci.ephemeral_share = vec![9; 32];
                reframe(Msg::ClientInit(ci))
            }),
            "unsolicited ephemeral share",
        ),
        (
            "rpc versions widened",
            0,
            Box::new(|m| {
                let Msg::ClientInit(mut ci) = m else { panic!() };
                ci.rpc_versions.as_mut().unwrap().min.as_mut().unwrap().minor = 0;
                reframe(Msg::ClientInit(ci))
            }),
            "ServerFinished",
        ),
        (
            "server cipher replaced",
            1,
            Box::new(|m| {
                let Msg::ServerInit(mut si) = m else { panic!() };
                si.handshake_cipher = "ALTS_HS_NULL".into();
                reframe(Msg::ServerInit(si))
            }),
            "did not offer",
        ),
        (
            "server frame size changed",
            1,
            Box::new(|m| {
                let Msg::ServerInit(mut si) = m else { panic!() };
                si.max_frame_size = 4096;
                reframe(Msg::ServerInit(si))
            }),
            "ServerFinished",
        ),
        (
            "resumption claimed without a ticket",
            1,
            Box::new(|m| {
                let Msg::ServerInit(mut si) = m else { panic!() };
                si.resumed = 1;
                reframe(Msg::ServerInit(si))
            }),
            "resumed without a ticket",
        ),
        (
            "ticket injected into ServerFinished",
            2,
            Box::new(|m| {
                let Msg::ServerFinished(mut sf) = m else { panic!() };
                sf.new_ticket = Some(alts_proto::alts_v1::ResumptionTicket {
                    rid: vec![1; 16],
                    ticket: vec![2; 64],
                });
                reframe(Msg::ServerFinished(sf))
            }),
            "ServerFinished",
        ),
        (
            "ticket injected into ClientFinished",
            3,
            Box::new(|m| {
                let Msg::ClientFinished(mut cf) = m else { panic!() };
                cf.new_ticket = Some(alts_proto::alts_v1::ResumptionTicket {
                    rid: vec![1; 16],
                    ticket: vec![2; 64],
                });
                reframe(Msg::ClientFinished(cf))
            }),
            "ClientFinished",
        ),
        (
            "ClientInit replayed as ClientFinished",
            3,
            Box::new(|_| reframe(Msg::ClientInit(Default::default()))),
            "expected ClientFinished",
        ),
    ];
    for (name, which, edit, expect) in cases {
        let err = tampered(&w, which, edit).expect_err(name);
        let text = err.1.to_string();
        assert!(
            text.contains(expect),
            "{name}: got {err:?}, expected an error mentioning {expect:?}"
        );
    }
}

/// Asserts that the untampered handshake with `c`/`s` succeeds and that the
/// one with `edit` applied to message `which` fails on `side` with `want`.
fn refused_only_when_tampered(
    name: &str,
    c: &HandshakeConfig,
    s: &HandshakeConfig,
    which: usize,
    edit: impl FnOnce(Msg) -> Msg,
    want: (&'static str, HandshakeError),
) {
    let (co, so) = tampered_with(c.clone(), s.clone(), 99, |_| unreachable!())
        .unwrap_or_else(|e| panic!("{name}: untampered handshake failed: {e:?}"));
    assert_records_interoperate(&co, &so);
    let err = tampered_with(c.clone(), s.clone(), which, |m| reframe(edit(m))).expect_err(name);
    assert_eq!(err, want, "{name}");
}

const SF_MAC: (&str, HandshakeError) = ("client", HandshakeError::BadFinished("ServerFinished"));

#[test]
fn mitm_stripping_ephemeral_shares_is_refused() {
    let w = world();
    let mut c = config(&w, &w.client, b"c");
    c.pfs = true;
    let s = config(&w, &w.server, b"s");
    let strip_ci = |m| {
        let Msg::ClientInit(mut ci) = m else { panic!() };
        ci.ephemeral_share.clear();
        Msg::ClientInit(ci)
    };
    let strip_si = |m| {
        let Msg::ServerInit(mut si) = m else { panic!() };
        assert!(!si.ephemeral_share.is_empty());
        si.ephemeral_share.clear();
        Msg::ServerInit(si)
    };
    refused_only_when_tampered("share stripped from ClientInit", &c, &s, 0, strip_ci, SF_MAC);
    refused_only_when_tampered("share stripped from ServerInit", &c, &s, 1, strip_si, SF_MAC);
    // A server that requires PFS refuses the stripped ClientInit itself; a
    // client that requires it refuses the stripped ServerInit itself.
    let mut s_req = s.clone();
    s_req.require_pfs = true;
    refused_only_when_tampered(
        "share stripped from ClientInit, server requires PFS",
        &c,
        &s_req,
        0,
        strip_ci,
        ("server", HandshakeError::PfsRequired),
    );
    let mut c_req = c.clone();
    c_req.require_pfs = true;
    refused_only_when_tampered(
        "share stripped from ServerInit, client requires PFS",
        &c_req,
        &s,
        1,
        strip_si,
        ("client", HandshakeError::PfsRequired),
    );
    // KCI-resistant mode: both shares are required by both sides.
    let mut c_kci = c.clone();
    c_kci.kci_resistant = true;
    refused_only_when_tampered(
        "share stripped from a KCI ClientInit",
        &c_kci,
        &s,
        0,
        strip_ci,
        ("server", HandshakeError::KciRequired),
    );
    refused_only_when_tampered(
        "share stripped from a KCI ServerInit",
        &c_kci,
        &s,
        1,
        strip_si,
        ("client", HandshakeError::KciRequired),
    );
}

#[test]
fn mitm_flipping_kci_and_pfs_flags_is_refused() {
    let w = world();
    let plain = config(&w, &w.client, b"c");
    let mut pfs = plain.clone();
    pfs.pfs = true;
    let mut kci = plain.clone();
    kci.kci_resistant = true;
    let s = config(&w, &w.server, b"s");
    let flip_kci = |m| {
        let Msg::ClientInit(mut ci) = m else { panic!() };
        ci.kci_resistant = !ci.kci_resistant;
        Msg::ClientInit(ci)
    };
    let flip_pfs = |m| {
        let Msg::ClientInit(mut ci) = m else { panic!() };
        ci.pfs = !ci.pfs;
        Msg::ClientInit(ci)
    };
    // KCI turned off: the server runs the weaker variant, the MACs differ.
    refused_only_when_tampered("kci_resistant cleared", &kci, &s, 0, flip_kci, SF_MAC);
    // KCI turned on for a PFS client: the server mixes in es/se, the client does not.
    refused_only_when_tampered("kci_resistant set (PFS client)", &pfs, &s, 0, flip_kci, SF_MAC);
    // KCI turned on without a share: the server cannot run it.
    refused_only_when_tampered(
        "kci_resistant set (no share)",
        &plain,
        &s,
        0,
        flip_kci,
        ("server", HandshakeError::KciRequired),
    );
    // KCI turned off towards a server that requires it.
    let mut s_kci = s.clone();
    s_kci.kci_resistant = true;
    refused_only_when_tampered(
        "kci_resistant cleared, server requires KCI",
        &kci,
        &s_kci,
        0,
        flip_kci,
        ("server", HandshakeError::KciRequired),
    );
    refused_only_when_tampered("pfs cleared", &pfs, &s, 0, flip_pfs, SF_MAC);
    refused_only_when_tampered("pfs set", &plain, &s, 0, flip_pfs, SF_MAC);
}

#[test]
fn mitm_editing_accepted_rids_is_refused() {
    let w = world();
    let client_keys = rkeys(1);
    let mut c = config(&w, &w.client, b"c");
    c.resumption = Some(ResumptionConfig::new(client_keys.clone()));
    let mut s = config(&w, &w.server, b"s");
    s.resumption = Some(ResumptionConfig::new(rkeys(2)));
    let fresh_client = || {
        // Another instance of the client identity: same RID key, no cached
        // client-side ticket, so only server-side resumption can happen.
        let mut c2 = config(&w, &w.client, b"c2");
        c2.resumption = Some(ResumptionConfig::new(client_keys.clone()));
        c2
    };
    let strip = |m| {
        let Msg::ClientInit(mut ci) = m else { panic!() };
        assert_eq!(ci.accepted_rids, vec![vec![1u8; 16]]);
        ci.accepted_rids.clear();
        Msg::ClientInit(ci)
    };
    let replace = |m| {
        let Msg::ClientInit(mut ci) = m else { panic!() };
        ci.accepted_rids = vec![vec![9u8; 16]];
        Msg::ClientInit(ci)
    };
    for (name, edit) in [
        ("accepted_rids stripped", &strip as &dyn Fn(Msg) -> Msg),
        ("accepted_rids replaced", &replace),
    ] {
        // A full handshake stores a server-side ticket under the client's RID.
        run(c.clone(), s.clone(), ClientOptions::default(), Delivery::Whole).unwrap();
        let err = tampered_with(fresh_client(), s.clone(), 0, |m| reframe(edit(m))).unwrap_err();
        assert_eq!(err, SF_MAC, "{name}");
    }
    // Untampered, the stored ticket resumes.
    run(c.clone(), s.clone(), ClientOptions::default(), Delivery::Whole).unwrap();
    let (co, so) = tampered_with(fresh_client(), s, 99, |_| unreachable!()).unwrap();
    assert_eq!(co.resumption, Resumption::ServerTicket);
    assert_records_interoperate(&co, &so);
}

#[test]
fn mitm_editing_the_client_ticket_is_refused() {
    let w = world();
    let mut c = config(&w, &w.client, b"c");
    c.resumption = Some(ResumptionConfig::new(rkeys(1)));
    let mut s = config(&w, &w.server, b"s");
    s.resumption = Some(ResumptionConfig::new(rkeys(2)));
    let flip = |m| {
        let Msg::ClientInit(mut ci) = m else { panic!() };
        let t = ci.resumption.as_mut().expect("a ticket is offered");
        let n = t.ticket.len();
        t.ticket[n / 2] ^= 1;
        Msg::ClientInit(ci)
    };
    let remove = |m| {
        let Msg::ClientInit(mut ci) = m else { panic!() };
        assert!(ci.resumption.take().is_some());
        Msg::ClientInit(ci)
    };
    let rid = |m| {
        let Msg::ClientInit(mut ci) = m else { panic!() };
        let t = ci.resumption.as_mut().expect("a ticket is offered");
        assert_eq!(t.rid, vec![2u8; 16], "sealed under the server's key");
        t.rid = vec![3u8; 16];
        Msg::ClientInit(ci)
    };
    for (name, edit) in [
        ("ticket byte flipped", &flip as &dyn Fn(Msg) -> Msg),
        ("ticket removed", &remove),
        ("ticket RID changed", &rid),
    ] {
        // A full handshake leaves a client-side ticket in the client's cache.
        run(c.clone(), s.clone(), ClientOptions::default(), Delivery::Whole).unwrap();
        let err = tampered_with(c.clone(), s.clone(), 0, |m| reframe(edit(m))).unwrap_err();
        assert_eq!(err, SF_MAC, "{name}");
    }
    run(c.clone(), s.clone(), ClientOptions::default(), Delivery::Whole).unwrap();
    let (co, so) = tampered_with(c, s, 99, |_| unreachable!()).unwrap();
    assert_eq!(co.resumption, Resumption::ClientTicket);
    assert_records_interoperate(&co, &so);
}

#[test]
fn mitm_changing_the_application_protocol_is_refused() {
    let w = world();
    let mut c = config(&w, &w.client, b"c");
    c.application_protocols = vec!["grpc".into(), "grpc-exp".into()];
    let mut s = config(&w, &w.server, b"s");
    s.application_protocols = vec!["grpc".into(), "grpc-exp".into()];
    let to = |name: &'static str| {
        move |m| {
            let Msg::ServerInit(mut si) = m else { panic!() };
            assert_eq!(si.application_protocol, "grpc");
            si.application_protocol = name.into();
            Msg::ServerInit(si)
        }
    };
    // Another protocol the client offered: the transcript differs.
    refused_only_when_tampered("application protocol changed", &c, &s, 1, to("grpc-exp"), SF_MAC);
    // One the client never offered: refused before any MAC.
    refused_only_when_tampered(
        "application protocol not offered",
        &c,
        &s,
        1,
        to("h2"),
        (
            "client",
            HandshakeError::NotOffered {
                what: "application protocol",
                chosen: "h2".into(),
            },
        ),
    );
}

#[test]
fn refused_side_sends_an_alert_the_other_side_reports() {
    let w = world();
    let crl = RevocationList::build_signed([w.client.principal_revocation_id], &w.pki.root_key, NOW).unwrap();
    let crl = Arc::new(RevocationList::from_signed_bytes(&crl, &w.pki.root).unwrap());
    let mut s = config(&w, &w.server, b"s");
    s.verifier = Arc::new(
        Verifier::new(
            w.pki.root.clone(),
            Arc::new(IssuancePolicy::allow_all_for_tests()),
        )
        .with_crl(crl),
    );
    let mut client = ClientHandshake::new(
        Arc::new(config(&w, &w.client, b"c")),
        ClientOptions::default(),
        NOW,
    )
    .unwrap();
    let mut server = ServerHandshake::new(Arc::new(s), NOW);
    let mut ci = Vec::new();
    client.poll_output(&mut ci);
    let err = server.handle_input(&ci).unwrap_err();
    assert!(matches!(err, HandshakeError::PeerCert(CertError::Revoked { .. })));
    // Fused: the same error again, and no second alert.
    assert_eq!(server.handle_input(b"more").unwrap_err(), err);
    let mut alert = Vec::new();
    server.poll_output(&mut alert);
    assert!(!alert.is_empty());
    // The client learns the code and its generic text, not that it was revoked.
    match client.handle_input(&alert).unwrap_err() {
        HandshakeError::PeerRefused { code, message } => {
            assert_eq!(code, AlertCode::CertificateNotAccepted);
            assert_eq!(message, "peer certificate not accepted");
        }
        other => panic!("expected an alert, got {other:?}"),
    }
    // The client does not answer an alert with an alert.
    let mut out = Vec::new();
    client.poll_output(&mut out);
    assert!(out.is_empty());

    // A client refusing the server (wrong target) alerts the server.
    let opts = ClientOptions {
        target_identities: vec!["payments-prod".into()],
        session_key: None,
    };
    let mut client = ClientHandshake::new(Arc::new(config(&w, &w.client, b"c")), opts, NOW).unwrap();
    let mut server = ServerHandshake::new(Arc::new(config(&w, &w.server, b"s")), NOW);
    let mut buf = Vec::new();
    client.poll_output(&mut buf);
    server.handle_input(&buf).unwrap();
    buf.clear();
    server.poll_output(&mut buf);
    assert!(matches!(
        client.handle_input(&buf),
        Err(HandshakeError::TargetIdentityMismatch { .. })
    ));
    buf.clear();
    client.poll_output(&mut buf);
    assert_eq!(
        server.handle_input(&buf),
        Err(HandshakeError::PeerRefused {
            code: AlertCode::NotAuthorized,
            message: "peer not authorized".into()
        })
    );
}

/// What one side sent when it refused the handshake, and what each side saw.
struct Refusal {
    /// `"client"` or `"server"`: who refused.
    refuser: &'static str,
    /// The refusing side's own (detailed) error.
    local: HandshakeError,
    /// Every byte the refusing side wrote after its error: the alert.
    alert: Vec<u8>,
    /// What the other side reports on reading the alert.
    remote: HandshakeError,
}

/// Runs a handshake that must be refused, one whole flight at a time.
fn refusal(c: HandshakeConfig, s: HandshakeConfig, opts: ClientOptions) -> Refusal {
    let mut client = ClientHandshake::new(Arc::new(c), opts, NOW).unwrap();
    let mut server = ServerHandshake::new(Arc::new(s), NOW);
    let mut flight = Vec::new();
    client.poll_output(&mut flight);
    for step in 0..8 {
        let (refuser, from, to): (_, &mut dyn Handshake, &mut dyn Handshake) = if step % 2 == 0 {
            ("server", &mut server, &mut client)
        } else {
            ("client", &mut client, &mut server)
        };
        if let Err(local) = from.handle_input(&flight) {
            let mut alert = Vec::new();
            from.poll_output(&mut alert);
            let remote = to.handle_input(&alert).unwrap_err();
            return Refusal {
                refuser,
                local,
                alert,
                remote,
            };
        }
        flight.clear();
        from.poll_output(&mut flight);
    }
    panic!("the handshake was not refused")
}

#[test]
fn alerts_carry_a_code_and_no_detail() {
    let w = world();
    let crl_revoking = |id: u64| {
        let crl = RevocationList::build_signed([id], &w.pki.root_key, NOW).unwrap();
        Arc::new(RevocationList::from_signed_bytes(&crl, &w.pki.root).unwrap())
    };
    let policy = || {
        IssuancePolicy::from_toml(
            r#"
            [[rule]]
            issuer = "scheduler"
            categories = ["workload"]
            identities = ["*-prod"]
            "#,
        )
        .unwrap()
    };
    let other = TestPki::new(b"another signing service");
    let stranger = other.issue("stranger-prod", Category::Workload, "scheduler");
    let mallory = w.pki.issue("network-admin", Category::Person, "mallory");
    let dev = w.pki.issue("frontend-dev", Category::Workload, "scheduler");
    let targets = |t: &[&str]| ClientOptions {
        target_identities: t.iter().map(|s| s.to_string()).collect(),
        session_key: None,
    };

    // (case, client config, server config, client options, who refuses,
    //  expected code, strings that must not reach the peer)
    type Case<'a> = (
        &'a str,
        HandshakeConfig,
        HandshakeConfig,
        ClientOptions,
        &'a str,
        AlertCode,
        Vec<String>,
    );
    let mut cases: Vec<Case<'_>> = Vec::new();

    cases.push((
        "bad certificate chain",
        config(&w, &stranger, b"c"),
        config(&w, &w.server, b"s"),
        ClientOptions::default(),
        "server",
        AlertCode::CertificateNotAccepted,
        vec!["root".into(), "signature".into(), "stranger-prod".into()],
    ));

    let mut s = config(&w, &w.server, b"s");
    s.verifier = Arc::new(
        Verifier::new(
            w.pki.root.clone(),
            Arc::new(IssuancePolicy::allow_all_for_tests()),
        )
        .with_crl(crl_revoking(w.client.handshake_revocation_id)),
    );
    cases.push((
        "revoked",
        config(&w, &w.client, b"c"),
        s,
        ClientOptions::default(),
        "server",
        AlertCode::CertificateNotAccepted,
        vec![
            "revoked".into(),
            format!("{:x}", w.client.handshake_revocation_id),
            format!("{:#018x}", w.client.handshake_revocation_id),
        ],
    ));

    let mut s = config(&w, &w.server, b"s");
    s.verifier = w.pki.verifier(policy());
    cases.push((
        "policy refused",
        config(&w, &mallory, b"c"),
        s,
        ClientOptions::default(),
        "server",
        AlertCode::CertificateNotAccepted,
        vec![
            "policy".into(),
            "network-admin".into(),
            "mallory".into(),
            "*-prod".into(),
            "person".into(),
            "scheduler".into(),
        ],
    ));

    cases.push((
        "target mismatch",
        config(&w, &w.client, b"c"),
        config(&w, &w.server, b"s"),
        targets(&["payments-prod", "ledger-prod"]),
        "client",
        AlertCode::NotAuthorized,
        vec!["payments-prod".into(), "ledger-prod".into(), "target".into()],
    ));

    let mut s = config(&w, &w.server, b"s");
    s.client_predicate = Some(Arc::new(|p| {
        if p.identity.ends_with("-dev") {
            Err("dev identities may not call production".into())
        } else {
            Ok(())
        }
    }));
    cases.push((
        "client refused by the predicate",
        config(&w, &dev, b"c"),
        s,
        ClientOptions::default(),
        "server",
        AlertCode::NotAuthorized,
        vec![
            "frontend-dev".into(),
            "dev identities".into(),
            "production".into(),
        ],
    ));

    let mut c = config(&w, &w.client, b"c");
    c.record_protocols = vec![RecordProtocol::GmacAes128Rekey];
    let mut s = config(&w, &w.server, b"s");
    s.record_protocols = vec![RecordProtocol::GcmAes128Rekey];
    cases.push((
        "no common record protocol",
        c,
        s,
        ClientOptions::default(),
        "server",
        AlertCode::NoCommonParameters,
        vec!["ALTSRP".into(), "GMAC".into(), "record protocol".into()],
    ));

    for (name, c, s, opts, refuser, code, secret) in cases {
        let r = refusal(c, s, opts);
        assert_eq!(r.refuser, refuser, "{name}: {:?}", r.local);
        assert_eq!(r.local.alert_code(), code, "{name}: {:?}", r.local);
        assert_eq!(r.local.code(), code.as_u32(), "{name}");

        // The alert on the wire: one framed message, the code and the code's
        // generic text only.
        let (len, body) = r.alert.split_at(4);
        assert_eq!(
            u32::from_be_bytes(len.try_into().unwrap()) as usize,
            body.len(),
            "{name}"
        );
        let Some(Msg::Alert(a)) = HandshakeMessage::decode(body).unwrap().msg else {
            panic!("{name}: not an alert")
        };
        assert_eq!(a.code, code.as_u32(), "{name}");
        assert_eq!(a.message, code.to_string(), "{name}");
        let wire = String::from_utf8_lossy(&r.alert).to_lowercase();
        let everyone = [
            "frontend-prod",
            "backend-prod",
            "scheduler",
            "workload",
            "ALTS_HS",
            "ALTSRP",
        ];
        for s in secret.iter().map(String::as_str).chain(everyone) {
            assert!(
                !wire.contains(&s.to_lowercase()),
                "{name}: the alert reveals {s:?}: {wire:?}"
            );
        }
        // The refusing side keeps the detail.
        let detail = r.local.to_string();
        assert_ne!(
            detail,
            code.to_string(),
            "{name}: the local error lost its detail"
        );

        // The other side learns the code and the generic text.
        assert_eq!(
            r.remote,
            HandshakeError::PeerRefused {
                code,
                message: code.to_string()
            },
            "{name}"
        );
        assert_eq!(r.remote.alert_code(), code, "{name}");
        assert_eq!(
            r.remote.to_string(),
            format!(
                "peer refused the handshake: {code} (alert code {})",
                code.as_u32()
            ),
            "{name}"
        );
    }
}

#[test]
fn received_alert_text_is_sanitized() {
    let w = world();
    let mut client = ClientHandshake::new(
        Arc::new(config(&w, &w.client, b"c")),
        ClientOptions::default(),
        NOW,
    )
    .unwrap();
    let mut ci = Vec::new();
    client.poll_output(&mut ci);
    let text = format!("bad\u{1b}[2J\r\nforged log line\u{202e}{}", "x".repeat(1000));
    let body = HandshakeMessage {
        msg: Some(Msg::Alert(alts_proto::alts_v1::Alert {
            code: 42,
            message: text,
        })),
    }
    .encode_to_vec();
    let mut framed = (body.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    match client.handle_input(&framed).unwrap_err() {
        HandshakeError::PeerRefused { code, message } => {
            assert_eq!(code, AlertCode::Other(42));
            assert_eq!(code.as_u32(), 42);
            assert!(message.starts_with("bad[2Jforged log line"), "{message:?}");
            assert!(!message.chars().any(char::is_control), "{message:?}");
            assert!(!message.contains('\u{202e}'));
            assert!(message.len() <= 256, "{}", message.len());
        }
        other => panic!("expected PeerRefused, got {other:?}"),
    }
}

mod no_panic {
    use super::*;
    use proptest::prelude::*;

    fn flight() -> (World, ClientHandshake, Vec<u8>, Vec<u8>) {
        let w = world();
        let mut client = ClientHandshake::new(
            Arc::new(config(&w, &w.client, b"c")),
            ClientOptions::default(),
            NOW,
        )
        .unwrap();
        let mut server = ServerHandshake::new(Arc::new(config(&w, &w.server, b"s")), NOW);
        let mut ci = Vec::new();
        client.poll_output(&mut ci);
        server.handle_input(&ci).unwrap();
        let mut sf = Vec::new();
        server.poll_output(&mut sf);
        (w, client, ci, sf)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes never panic either side and never over-consume.
        #[test]
        fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let w = world();
            let mut server = ServerHandshake::new(Arc::new(config(&w, &w.server, b"s")), NOW);
            if let Ok(n) = server.handle_input(&input) { prop_assert!(n <= input.len()); }
            let mut client = ClientHandshake::new(Arc::new(config(&w, &w.client, b"c")), ClientOptions::default(), NOW).unwrap();
            if let Ok(n) = client.handle_input(&input) { prop_assert!(n <= input.len()); }
        }

        /// A single-byte change to a real flight never panics; in the server's
        /// flight (ServerInit + ServerFinished) it never lets the client finish.
        #[test]
        fn mutated_flights(pos in any::<prop::sample::Index>(), xor in 1u8..=255, to_server in any::<bool>()) {
            let (w, mut client, mut ci, mut sf) = flight();
            if to_server {
                let i = pos.index(ci.len());
                ci[i] ^= xor;
                let mut server = ServerHandshake::new(Arc::new(config(&w, &w.server, b"s")), NOW);
                // Flipping a bit of ClientInit may still parse (e.g. inside a nonce); the
                // server cannot tell, but the client's ServerFinished check will (tested above).
                let _ = server.handle_input(&ci);
            } else {
                let i = pos.index(sf.len());
                sf[i] ^= xor;
                let res = client.handle_input(&sf);
                prop_assert!(!client.is_done(), "a modified server flight was accepted: {res:?}");
            }
        }
    }
}

/// Known answer for a whole handshake with fixed keys, nonces and clock: the
/// bytes on the wire and the record key material. Any change to message
/// layout, field numbers, labels or the key schedule changes these.
#[test]
fn full_handshake_wire_known_answer() {
    let w = world();
    let got = wire_known_answer(config(&w, &w.client, b"c"), config(&w, &w.server, b"s"));
    assert_eq!(
        (got.0, got.1.as_str(), got.2.as_str()),
        WIRE_KAT,
        "the handshake wire format or key schedule changed: {got:?}"
    );
    // The record-protocol list from before integrity-only needed a boundary
    // gives the very bytes it gave then: an empty boundary is not encoded.
    let legacy = |who: &Issued, seed: &[u8]| {
        let mut c = config(&w, who, seed);
        c.record_protocols = RecordProtocol::ALL.to_vec();
        c.insecure_allow_integrity_only_without_boundary = true;
        c
    };
    let got = wire_known_answer(legacy(&w.client, b"c"), legacy(&w.server, b"s"));
    assert_eq!(
        (got.0, got.1.as_str(), got.2.as_str()),
        LEGACY_LIST_WIRE_KAT,
        "the handshake wire format or key schedule changed: {got:?}"
    );
}

fn wire_known_answer(c: HandshakeConfig, s: HandshakeConfig) -> (usize, String, String) {
    let mut client = ClientHandshake::new(Arc::new(c), ClientOptions::default(), NOW).unwrap();
    let mut server = ServerHandshake::new(Arc::new(s), NOW);
    let mut wire = Vec::new();
    let mut ci = Vec::new();
    client.poll_output(&mut ci);
    server.handle_input(&ci).unwrap();
    let mut flight = Vec::new();
    server.poll_output(&mut flight);
    client.handle_input(&flight).unwrap();
    let mut cf = Vec::new();
    client.poll_output(&mut cf);
    server.handle_input(&cf).unwrap();
    wire.extend_from_slice(&ci);
    wire.extend_from_slice(&flight);
    wire.extend_from_slice(&cf);
    let c = client.take_outcome().unwrap();
    let s = server.take_outcome().unwrap();
    assert_eq!(&c.key_data[..], &s.key_data[..]);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    (
        wire.len(),
        hex(&alts_core::crypto::sha256(&wire)),
        hex(&c.key_data),
    )
}

/// The default configuration (no integrity-only protocol offered).
const WIRE_KAT: (usize, &str, &str) = (
    1192,
    "37c254487d5582ae6ac8bb11eefbe9f5825c4fd6152b36573add2656f7ad722b",
    "1f5914127056dc892f4559eb1804f42718fd5f6db6c791d550d104887a3cd740e873f1f8999d320425d5b7e1",
);

/// The earlier default list (`ALTSRP_GMAC_AES128_REKEY` offered last): the
/// same bytes as before boundaries existed.
const LEGACY_LIST_WIRE_KAT: (usize, &str, &str) = (
    1218,
    "177bdd397d031859546a0a82bc2b10d8c1be02de849daef89ce748db870c60b4",
    "734c1372192f9a378b327928756dbb12ba02c64ef0519c00e2e9f948fdd0de99c462b54ed703e9eca7eabe46",
);

#[test]
fn static_dh_is_cached_per_peer_and_matches_a_fresh_computation() {
    let w = world();
    let peer = *w.server.credentials.key_pair().public_key();
    let fresh = w.client.credentials.key_pair().agree(&peer).unwrap();
    assert_eq!(w.client.credentials.static_dh_cache_len(), 0);
    let (a, _) = run(
        config(&w, &w.client, b"c1"),
        config(&w, &w.server, b"s"),
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap();
    let (b, _) = run(
        config(&w, &w.client, b"c2"),
        config(&w, &w.server, b"s"),
        ClientOptions::default(),
        Delivery::Whole,
    )
    .unwrap();
    assert_eq!(w.client.credentials.static_dh_cache_len(), 1);
    assert_eq!(w.server.credentials.static_dh_cache_len(), 1);
    assert_eq!(
        w.client.credentials.static_agree(&peer).unwrap().secret_bytes(),
        fresh.secret_bytes()
    );
    assert_ne!(
        &a.key_data[..],
        &b.key_data[..],
        "cached DH, fresh nonces: fresh keys"
    );
    // A low-order peer key is refused and not cached.
    assert!(w.client.credentials.static_agree(&[0u8; 32]).is_err());
    assert_eq!(w.client.credentials.static_dh_cache_len(), 1);
}

#[test]
fn static_dh_cache_of_capacity_zero_keeps_nothing() {
    let w = world();
    let no_cache = |who: &Issued| Arc::new((*who.credentials).clone().with_static_dh_cache_capacity(0));
    let mut c = config(&w, &w.client, b"c");
    c.credentials = no_cache(&w.client);
    let mut s = config(&w, &w.server, b"s");
    s.credentials = no_cache(&w.server);
    for _ in 0..2 {
        let (co, so) = run(c.clone(), s.clone(), ClientOptions::default(), Delivery::Whole).unwrap();
        assert_records_interoperate(&co, &so);
    }
    assert_eq!(c.credentials.static_dh_cache_len(), 0);
    assert_eq!(s.credentials.static_dh_cache_len(), 0);
    // A small capacity evicts the oldest peer.
    let one = (*w.client.credentials).clone().with_static_dh_cache_capacity(1);
    for _ in 0..2 {
        let other = w.pki.issue("other-prod", Category::Workload, "scheduler");
        one.static_agree(other.credentials.key_pair().public_key())
            .unwrap();
        assert_eq!(one.static_dh_cache_len(), 1);
    }
}

#[test]
fn session_caches_of_capacity_zero_keep_nothing() {
    use alts_core::resumption::{ClientSessionCache, ServerTicketStore};
    let w = world();
    for (max, per) in [(0, 4), (4, 0), (0, 0)] {
        let mut c = config(&w, &w.client, b"c");
        let mut rc = ResumptionConfig::new(rkeys(1));
        rc.client_cache = Arc::new(ClientSessionCache::new(max, per));
        c.resumption = Some(rc);
        let mut s = config(&w, &w.server, b"s");
        let mut rs = ResumptionConfig::new(rkeys(2));
        rs.server_store = Arc::new(ServerTicketStore::with_limits(max, per));
        s.resumption = Some(rs);
        for _ in 0..2 {
            let (co, so) = run(c.clone(), s.clone(), ClientOptions::default(), Delivery::Whole).unwrap();
            assert_eq!(co.resumption, Resumption::NotAttempted, "({max}, {per})");
            assert_eq!(so.resumption, Resumption::NotAttempted, "({max}, {per})");
        }
        let cache = &c.resumption.as_ref().unwrap().client_cache;
        assert!(cache.is_empty() && cache.total_len() == 0 && cache.len("") == 0);
        assert!(s.resumption.as_ref().unwrap().server_store.is_empty());
    }

    // The default caches fill, count and clear.
    let mut c = config(&w, &w.client, b"c");
    c.resumption = Some(ResumptionConfig::new(rkeys(1)));
    let mut s = config(&w, &w.server, b"s");
    s.resumption = Some(ResumptionConfig::new(rkeys(2)));
    run(c.clone(), s.clone(), ClientOptions::default(), Delivery::Whole).unwrap();
    let cache = c.resumption.as_ref().unwrap().client_cache.clone();
    let store = s.resumption.as_ref().unwrap().server_store.clone();
    assert_eq!((cache.total_len(), cache.len("")), (1, 1));
    assert_eq!(store.total_len(), 1);
    cache.clear();
    store.clear();
    assert!(cache.is_empty() && store.is_empty());
    let (co, _) = run(c, s, ClientOptions::default(), Delivery::Whole).unwrap();
    assert_eq!(co.resumption, Resumption::NotAttempted);
}
