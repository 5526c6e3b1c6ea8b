//! Resumption security, in memory and deterministic: the server-side ticket
//! store (filed by verified identity and RID, leased), resumption bound to
//! trust (root key, chain age, certificate expiry, revocation, policy, the
//! server's client check), ticket kinds, and the replay guard.
//!
//! Each test shows the attack refused and an honest peer still served.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alts_core::UnixTime;
use alts_core::cert::{Category, CertError};
use alts_core::crl::RevocationList;
use alts_core::handshake::{
    AlertCode, ClientHandshake, ClientOptions, Handshake, HandshakeConfig, HandshakeError, HandshakeOutcome,
    Resumption, ResumptionConfig, ServerHandshake,
};
use alts_core::policy::IssuancePolicy;
use alts_core::resumption::{
    ChainTrust, ClientTicket, InMemoryReplayGuard, REPLAY_BUCKET_SECS, ReplayGuard, ResumptionKey,
    ResumptionKeys, ServerTicketStore, StoredServerTicket, TicketError, TicketKind,
};
use alts_core::testing::{Delivery, Issued, NOW, TestPki, deterministic_provider, drive};
use alts_core::verify::Verifier;
use alts_proto::Message;
use alts_proto::alts_v1::{
    ClientFinished, HandshakeMessage, ResumptionMode, ServerInit, TicketContents, handshake_message::Msg,
};
use bytes::BytesMut;

const VICTIM: &str = "frontend-prod";
const SERVER: &str = "backend-prod";

struct World {
    pki: TestPki,
    client: Issued,
    server: Issued,
}

fn world() -> World {
    let pki = TestPki::new(b"resumption tests");
    let client = pki.issue(VICTIM, Category::Workload, "scheduler");
    let server = pki.issue(SERVER, Category::Workload, "scheduler");
    World { pki, client, server }
}

fn config(w: &World, who: &Issued, seed: &[u8]) -> HandshakeConfig {
    HandshakeConfig::new(
        who.credentials.clone(),
        w.pki.verifier(IssuancePolicy::allow_all_for_tests()),
        deterministic_provider(seed),
    )
}

fn rkeys(seed: u8) -> Arc<ResumptionKeys> {
    Arc::new(ResumptionKeys::new(
        ResumptionKey::new([seed; 16], &[seed; 32]),
        vec![],
    ))
}

/// `who` with resumption under `keys` (fresh in-memory stores).
fn resuming(w: &World, who: &Issued, seed: &[u8], keys: &Arc<ResumptionKeys>) -> HandshakeConfig {
    let mut c = config(w, who, seed);
    c.resumption = Some(ResumptionConfig::new(keys.clone()));
    c
}

/// The same party with a fresh (empty) client ticket cache: another instance
/// of the identity sharing its RID key, so it can only resume from a
/// server-side ticket.
fn fresh_instance(c: &HandshakeConfig) -> HandshakeConfig {
    let mut c = c.clone();
    c.resumption.as_mut().unwrap().client_cache = Default::default();
    c
}

fn store(s: &HandshakeConfig) -> Arc<ServerTicketStore> {
    s.resumption.as_ref().unwrap().server_store.clone()
}

type Outcomes = Result<(HandshakeOutcome, HandshakeOutcome), (&'static str, HandshakeError)>;

fn run_at(c: &HandshakeConfig, s: &HandshakeConfig, now: UnixTime) -> Outcomes {
    let mut client = ClientHandshake::new(Arc::new(c.clone()), ClientOptions::default(), now).unwrap();
    let mut server = ServerHandshake::new(Arc::new(s.clone()), now);
    drive(&mut client, &mut server, Delivery::Whole)
}

fn run(c: &HandshakeConfig, s: &HandshakeConfig) -> Outcomes {
    run_at(c, s, NOW)
}

fn ok(r: Outcomes) -> (HandshakeOutcome, HandshakeOutcome) {
    match r {
        Ok(o) => o,
        Err(e) => panic!("handshake failed: {e:?}"),
    }
}

/// Records sealed by each side open on the other, both ways.
fn assert_records_interoperate(c: &HandshakeOutcome, s: &HandshakeOutcome) {
    assert_eq!(&c.key_data[..], &s.key_data[..]);
    let (mut cs, mut co) = c.record_layer(c.record_config()).unwrap();
    let (mut ss, mut so) = s.record_layer(s.record_config()).unwrap();
    for (msg, sealer, opener) in [(&b"ping"[..], &mut cs, &mut so), (&b"pong"[..], &mut ss, &mut co)] {
        let mut wire = BytesMut::new();
        sealer.seal(msg, &mut wire).unwrap();
        assert_eq!(&opener.open(&mut wire).unwrap().unwrap()[..], msg);
    }
}

fn assert_resumed(r: Outcomes, mode: Resumption) -> (HandshakeOutcome, HandshakeOutcome) {
    let (co, so) = ok(r);
    assert_eq!(co.resumption, mode, "client");
    assert_eq!(so.resumption, mode, "server");
    assert_records_interoperate(&co, &so);
    (co, so)
}

fn reframe(m: Msg) -> Vec<u8> {
    let body = HandshakeMessage { msg: Some(m) }.encode_to_vec();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn unframe(b: &[u8]) -> Msg {
    let len = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
    HandshakeMessage::decode(&b[4..4 + len]).unwrap().msg.unwrap()
}

/// The ClientInit `c` would send, decoded.
fn client_init_of(c: &HandshakeConfig) -> alts_proto::alts_v1::ClientInit {
    let mut client = ClientHandshake::new(Arc::new(c.clone()), ClientOptions::default(), NOW).unwrap();
    let mut ci = Vec::new();
    client.poll_output(&mut ci);
    let Msg::ClientInit(ci) = unframe(&ci) else {
        panic!()
    };
    ci
}

/// Feeds one ClientInit to a fresh server; returns the server (still
/// waiting for ClientFinished) and its ServerInit.
fn server_answer(s: &HandshakeConfig, ci: alts_proto::alts_v1::ClientInit) -> (ServerHandshake, ServerInit) {
    let mut server = ServerHandshake::new(Arc::new(s.clone()), NOW);
    server.handle_input(&reframe(Msg::ClientInit(ci))).unwrap();
    let mut flight = Vec::new();
    server.poll_output(&mut flight);
    let Msg::ServerInit(si) = unframe(&flight) else {
        panic!()
    };
    (server, si)
}

// ---- 4. the server-side ticket store ----

/// Mallory (a valid identity of her own) names the victim's RID with a key
/// of her own and deposits tickets under it, after the victim did. Filed
/// under her identity, they are never presented to the victim, whose own
/// ticket still resumes.
#[test]
fn poisoned_deposit_under_the_victims_rid_never_reaches_the_victim() {
    let w = world();
    let victim_keys = rkeys(1);
    let victim = resuming(&w, &w.client, b"v1", &victim_keys);
    let s = resuming(&w, &w.server, b"s", &rkeys(2));
    ok(run(&victim, &s));
    assert_eq!(store(&s).identity_len(VICTIM), 1);

    let mallory = w.pki.issue("mallory-prod", Category::Workload, "scheduler");
    let poison = Arc::new(ResumptionKeys::new(
        ResumptionKey::new([1; 16], &[0x66; 32]),
        vec![],
    ));
    let m = resuming(&w, &mallory, b"m", &poison);
    for _ in 0..3 {
        ok(run(&m, &s));
    }
    let mallorys = store(&s).identity_len("mallory-prod");
    assert!(mallorys >= 1);
    assert_eq!(store(&s).identity_len(VICTIM), 1);

    // Another victim instance (same RID key, no client ticket) resumes from
    // its own ticket: had it received one of Mallory's, it could not open it.
    let (co, _) = assert_resumed(run(&fresh_instance(&victim), &s), Resumption::ServerTicket);
    assert_eq!(co.peer.identity, SERVER);
    assert_eq!(store(&s).identity_len("mallory-prod"), mallorys);
}

/// Clients that are not the victim list the victim's RID: another identity
/// (valid chain), an unauthenticated one (chain under another root, named
/// like the victim), and one replaying the victim's public certificate
/// without its keys. None gets or uses up the victim's ticket.
#[test]
fn other_identities_and_unauthenticated_clients_cannot_drain_the_victims_tickets() {
    let w = world();
    let victim_keys = rkeys(1);
    let victim = resuming(&w, &w.client, b"v1", &victim_keys);
    let s = resuming(&w, &w.server, b"s", &rkeys(2));
    ok(run(&victim, &s));
    assert_eq!(store(&s).identity_len(VICTIM), 1);

    // Another identity listing the victim's RID: a full handshake.
    let mallory = w.pki.issue("mallory-prod", Category::Workload, "scheduler");
    let m = resuming(&w, &mallory, b"m", &victim_keys);
    let (co, so) = ok(run(&m, &s));
    assert_eq!(co.resumption, Resumption::NotAttempted);
    assert_eq!(so.resumption, Resumption::NotAttempted);
    assert_eq!(store(&s).identity_len(VICTIM), 1);

    // Unauthenticated: a chain from another root, claiming the victim's name.
    let other = TestPki::new(b"another signing service");
    let stranger = other.issue(VICTIM, Category::Workload, "scheduler");
    let x = resuming(&w, &stranger, b"x", &victim_keys);
    let err = run(&x, &s).unwrap_err();
    assert!(
        matches!(err, ("server", HandshakeError::PeerCert(CertError::WrongRoot))),
        "{err:?}"
    );
    assert_eq!(store(&s).identity_len(VICTIM), 1);

    // The victim's certificate replayed (it is public), without the static
    // key or the RID key: the server presents the sealed ticket, but the peer
    // cannot finish, and the ticket returns to the store either way.
    for finish_with_garbage in [false, true] {
        let mut ci = client_init_of(&fresh_instance(&m));
        ci.resumption = None;
        ci.handshake_cert = w.client.handshake_cert.clone();
        ci.accepted_rids = vec![vec![1; 16]];
        let (mut server, si) = server_answer(&s, ci);
        assert_eq!(si.resumed, ResumptionMode::ServerTicket as i32);
        assert_eq!(store(&s).identity_len(VICTIM), 0, "leased while presented");
        if finish_with_garbage {
            let cf = reframe(Msg::ClientFinished(ClientFinished {
                mac: vec![0; 32],
                new_ticket: None,
            }));
            assert_eq!(
                server.handle_input(&cf).unwrap_err(),
                HandshakeError::BadFinished("ClientFinished")
            );
        }
        drop(server);
        assert_eq!(store(&s).identity_len(VICTIM), 1, "returned");
    }

    // The victim still resumes.
    assert_resumed(run(&fresh_instance(&victim), &s), Resumption::ServerTicket);
}

/// A handshake that dies after ServerInit puts the presented ticket back; a
/// completed one uses it up (the next resumption presents another ticket).
#[test]
fn leased_ticket_returns_when_the_handshake_dies() {
    let w = world();
    let victim_keys = rkeys(1);
    let victim = resuming(&w, &w.client, b"v1", &victim_keys);
    let s = resuming(&w, &w.server, b"s", &rkeys(2));
    ok(run(&victim, &s));

    // An honest instance starts resuming; the connection dies after ServerInit.
    let v2 = fresh_instance(&victim);
    let mut client = ClientHandshake::new(Arc::new(v2.clone()), ClientOptions::default(), NOW).unwrap();
    let mut server = ServerHandshake::new(Arc::new(s.clone()), NOW);
    let mut buf = Vec::new();
    client.poll_output(&mut buf);
    server.handle_input(&buf).unwrap();
    buf.clear();
    server.poll_output(&mut buf);
    let Msg::ServerInit(si) = unframe(&buf) else {
        panic!()
    };
    assert_eq!(si.resumed, ResumptionMode::ServerTicket as i32);
    let presented = si.resumption.unwrap().ticket;
    assert_eq!(store(&s).identity_len(VICTIM), 0);
    drop((client, server));
    assert_eq!(store(&s).identity_len(VICTIM), 1);

    // The next connection resumes from that same ticket, and uses it up.
    let mut client = ClientHandshake::new(Arc::new(v2.clone()), ClientOptions::default(), NOW).unwrap();
    let mut server = ServerHandshake::new(Arc::new(s.clone()), NOW);
    let mut flight = Vec::new();
    client.poll_output(&mut flight);
    server.handle_input(&flight).unwrap();
    flight.clear();
    server.poll_output(&mut flight);
    let Msg::ServerInit(si) = unframe(&flight) else {
        panic!()
    };
    assert_eq!(si.resumption.unwrap().ticket, presented);
    client.handle_input(&flight).unwrap();
    let mut cf = Vec::new();
    client.poll_output(&mut cf);
    server.handle_input(&cf).unwrap();
    let (co, so) = (client.take_outcome().unwrap(), server.take_outcome().unwrap());
    assert_eq!(co.resumption, Resumption::ServerTicket);
    assert_eq!(so.resumption, Resumption::ServerTicket);
    assert_records_interoperate(&co, &so);
    // Only the fresh ticket from the resumed handshake is left.
    assert_eq!(store(&s).identity_len(VICTIM), 1);
    let (server, si) = server_answer(&s, client_init_of(&fresh_instance(&victim)));
    assert_ne!(
        si.resumption.unwrap().ticket,
        presented,
        "a used ticket came back"
    );
    drop(server);
}

/// One identity depositing many tickets keeps at most its quota and does not
/// push out other identities' tickets.
#[test]
fn per_identity_cap_keeps_a_flooding_identity_from_evicting_others() {
    let w = world();
    let mut s = resuming(&w, &w.server, b"s", &rkeys(2));
    s.resumption.as_mut().unwrap().server_store = Arc::new(ServerTicketStore::with_limits(5, 2));
    let victim = resuming(&w, &w.client, b"v1", &rkeys(1));
    ok(run(&victim, &s));

    let mallory = w.pki.issue("mallory-prod", Category::Workload, "scheduler");
    for i in 0..6 {
        // A new RID and cache each time: every connection is a full
        // handshake depositing one more ticket.
        let m = resuming(&w, &mallory, &[b'm', i], &rkeys(10 + i));
        ok(run(&m, &s));
    }
    assert_eq!(store(&s).identity_len("mallory-prod"), 2);
    assert_eq!(store(&s).identity_len(VICTIM), 1);

    // Overall cap: more identities push out the largest identity's oldest.
    for name in ["a-prod", "b-prod", "c-prod"] {
        let who = w.pki.issue(name, Category::Workload, "scheduler");
        let c = resuming(&w, &who, name.as_bytes(), &rkeys(9));
        ok(run(&c, &s));
    }
    assert_eq!(store(&s).total_len(), 5);
    assert_eq!(store(&s).identity_len("mallory-prod"), 1);
    assert_eq!(store(&s).identity_len(VICTIM), 1);

    assert_resumed(run(&fresh_instance(&victim), &s), Resumption::ServerTicket);
}

/// The server presents a server-side ticket the client cannot open (its RID
/// key was replaced under the same name). That one handshake fails with a
/// distinct error; the client then asks for no server-side ticket under that
/// session key, so the next connection runs a full handshake and the ones
/// after it resume again, without any further failure.
#[test]
fn unopenable_server_ticket_fails_once_then_full_handshake() {
    let w = world();
    let victim = resuming(&w, &w.client, b"v1", &rkeys(1));
    let s = resuming(&w, &w.server, b"s", &rkeys(2));
    ok(run(&victim, &s));

    let replaced = Arc::new(ResumptionKeys::new(ResumptionKey::new([1; 16], &[9; 32]), vec![]));
    let c = resuming(&w, &w.client, b"v2", &replaced);

    // Driven by hand to see both sides: the client refuses, the server reads
    // the alert.
    let mut client = ClientHandshake::new(Arc::new(c.clone()), ClientOptions::default(), NOW).unwrap();
    let mut server = ServerHandshake::new(Arc::new(s.clone()), NOW);
    let mut buf = Vec::new();
    client.poll_output(&mut buf);
    server.handle_input(&buf).unwrap();
    buf.clear();
    server.poll_output(&mut buf);
    assert_eq!(
        client.handle_input(&buf).unwrap_err(),
        HandshakeError::UnusableServerTicket(TicketError::Authentication)
    );
    buf.clear();
    client.poll_output(&mut buf);
    assert!(matches!(
        server.handle_input(&buf).unwrap_err(),
        HandshakeError::PeerRefused {
            code: AlertCode::VerificationFailed,
            ..
        }
    ));
    drop(server);
    // The ticket went back to the server (a peer's refusal is not trusted).
    assert_eq!(store(&s).identity_len(VICTIM), 1);

    // Next connection: no RIDs listed, a full handshake.
    assert!(client_init_of(&c).accepted_rids.is_empty());
    let (co, so) = ok(run(&c, &s));
    assert_eq!(
        (co.resumption, so.resumption),
        (Resumption::NotAttempted, Resumption::NotAttempted)
    );
    // And from then on resumption works, with no failure.
    for _ in 0..4 {
        assert_resumed(run(&c, &s), Resumption::ClientTicket);
    }
    // Once the suspension is over the client lists its RIDs again.
    let later = NOW.plus(2 * 3600);
    let mut client = ClientHandshake::new(Arc::new(c.clone()), ClientOptions::default(), later).unwrap();
    let mut ci = Vec::new();
    client.poll_output(&mut ci);
    let Msg::ClientInit(ci) = unframe(&ci) else {
        panic!()
    };
    assert_eq!(ci.accepted_rids, vec![vec![1u8; 16]]);
}

// ---- 5. resumption bound to trust ----

/// A server-side ticket and a client-side ticket are sealed with their kind
/// in the associated data: a peer holding one kind cannot present it as the
/// other, even with the secret inside it.
#[test]
fn ticket_kinds_cannot_be_swapped() {
    let w = world();
    // Both parties act as client and as server, each with one RID key.
    let p_keys = rkeys(1);
    let s_keys = rkeys(2);
    let p_client = resuming(&w, &w.client, b"pc", &p_keys);
    let p_server = resuming(&w, &w.client, b"ps", &p_keys);
    let s_client = resuming(&w, &w.server, b"sc", &s_keys);
    let s_server = resuming(&w, &w.server, b"ss", &s_keys);

    // P connects to S: S stores a server-side ticket P sealed (and knows R_s).
    ok(run(&p_client, &s_server));
    let server_side = store(&s_server).lease(VICTIM, &[vec![1; 16]], NOW).unwrap();
    let stolen = server_side.ticket().clone();
    server_side.commit();

    // S connects to P presenting that server-side ticket as a client-side
    // one: P refuses it and runs a full handshake.
    let forged = ClientTicket {
        rid: vec![1; 16],
        ticket: stolen.ticket.clone(),
        secret: stolen.secret.clone(),
        peer: stolen.peer.clone(),
        expires_at: stolen.expires_at,
        trust: stolen.trust,
    };
    let cache = s_client.resumption.as_ref().unwrap().client_cache.clone();
    cache.put("", forged);
    let (_, po) = ok(run(&s_client, &p_server));
    assert!(
        matches!(po.resumption, Resumption::Refused(ref r) if r.contains("authenticate")),
        "{:?}",
        po.resumption
    );
    // Honest: S now holds a genuine client-side ticket from P, which resumes.
    assert_resumed(run(&s_client, &p_server), Resumption::ClientTicket);

    // S holds a client-side ticket P sealed (and its R_c); it presents it as
    // a server-side ticket to P connecting as a client: P refuses it.
    let genuine = cache.take("", NOW).unwrap();
    store(&s_server).clear();
    store(&s_server).put(
        &genuine.rid,
        StoredServerTicket {
            ticket: genuine.ticket,
            secret: genuine.secret,
            peer: p_server_summary(&w),
            expires_at: genuine.expires_at,
            trust: genuine.trust,
        },
    );
    let p2 = fresh_instance(&p_client);
    let err = run(&p2, &s_server).unwrap_err();
    assert_eq!(
        err,
        (
            "client",
            HandshakeError::UnusableServerTicket(TicketError::Authentication)
        )
    );
    // Honest: that client's next connection is a full handshake, which
    // deposits a genuine server-side ticket; another instance resumes from it.
    let (co, _) = ok(run(&p2, &s_server));
    assert_eq!(co.resumption, Resumption::NotAttempted);
    assert_resumed(
        run(&fresh_instance(&p_client), &s_server),
        Resumption::ServerTicket,
    );
}

/// P (frontend-prod) as S's server saw it: the verified summary S files
/// tickets under.
fn p_server_summary(w: &World) -> alts_core::verify::VerifiedPeer {
    w.pki
        .verifier(IssuancePolicy::allow_all_for_tests())
        .verify_handshake_cert(&w.client.handshake_cert, NOW)
        .unwrap()
}

/// Tickets of the old format (version 1: no kind in the associated data)
/// are refused and the handshake falls back to a full one.
#[test]
#[allow(deprecated)] // Seals a version 1 ticket on purpose.
fn version_1_tickets_fall_back_to_a_full_handshake() {
    let w = world();
    let c = resuming(&w, &w.client, b"c", &rkeys(1));
    let s = resuming(&w, &w.server, b"s", &rkeys(2));
    ok(run(&c, &s));
    let cache = c.resumption.as_ref().unwrap().client_cache.clone();
    let mut t = cache.take("", NOW).unwrap();
    let key = ResumptionKey::new([2; 16], &[2; 32]);
    // TicketContents zeroizes on drop, so no struct-update syntax.
    let mut contents = TicketContents::default();
    contents.version = 1;
    contents.peer_identity = VICTIM.into();
    contents.peer_category = 3;
    contents.peer_issuer = "scheduler".into();
    contents.local_identity = SERVER.into();
    contents.resumption_secret = t.secret.as_bytes().to_vec();
    contents.expires_at = NOW.plus(3600).secs();
    contents.record_protocol = "ALTSRP_GCM_AES128_REKEY".into();
    t.ticket = key
        .seal(&contents, &alts_core::crypto::DeterministicRandom::new(b"v1"))
        .unwrap();
    cache.put("", t);
    let (co, so) = ok(run(&c, &s));
    assert!(
        matches!(so.resumption, Resumption::Refused(_)),
        "{:?}",
        so.resumption
    );
    assert!(matches!(co.resumption, Resumption::Refused(_)));
    assert_records_interoperate(&co, &so);
    // The full handshake issued version 2 tickets, which resume.
    assert_resumed(run(&c, &s), Resumption::ClientTicket);
}

/// Both parties move to a new root key. Tickets resting on the old root are
/// refused (a full handshake runs instead) on both sides; the tickets of
/// that full handshake resume.
#[test]
fn root_change_refuses_resumption_and_falls_back() {
    let w = world();
    let new_pki = TestPki::new(b"the new signing service");
    let c = resuming(&w, &w.client, b"c", &rkeys(1));
    let s = resuming(&w, &w.server, b"s", &rkeys(2));
    ok(run(&c, &s));

    // The server trusts the new root (the client already holds a
    // certificate from it), still presenting its old-root certificate to a
    // client that trusts the old root: the client offers its ticket, the
    // server refuses it for its root.
    let client_new_cert = new_pki.issue(VICTIM, Category::Workload, "scheduler");
    let mut c2 = c.clone();
    c2.credentials = client_new_cert.credentials.clone();
    let mut s2 = s.clone();
    s2.verifier = new_pki.verifier(IssuancePolicy::allow_all_for_tests());
    let (co, so) = ok(run(&c2, &s2));
    assert!(
        matches!(so.resumption, Resumption::Refused(ref r) if r.contains("root")),
        "{:?}",
        so.resumption
    );
    assert!(matches!(co.resumption, Resumption::Refused(_)));
    assert_records_interoperate(&co, &so);
    // Honest: the new tickets resume.
    assert_resumed(run(&c2, &s2), Resumption::ClientTicket);

    // The client moves to the new root too (and the server to a new-root
    // certificate): its cached ticket rests on the old root, so it is not
    // offered; a full handshake runs.
    let server_new_cert = new_pki.issue(SERVER, Category::Workload, "scheduler");
    let mut c3 = c2.clone();
    c3.verifier = new_pki.verifier(IssuancePolicy::allow_all_for_tests());
    let mut s3 = s2.clone();
    s3.credentials = server_new_cert.credentials.clone();
    assert!(client_init_of(&c3).resumption.is_none());
    // The server still holds server-side tickets the client sealed while it
    // trusted the old root: the server cannot tell, presents one, and the
    // client refuses it. That one connection fails; the next is a full
    // handshake, whose tickets resume.
    let err = run(&c3, &s3).unwrap_err();
    assert_eq!(
        err,
        (
            "client",
            HandshakeError::UnusableServerTicket(TicketError::RootChanged)
        )
    );
    let (co, so) = ok(run(&c3, &s3));
    assert_eq!(
        (co.resumption, so.resumption),
        (Resumption::NotAttempted, Resumption::NotAttempted)
    );
    assert_resumed(run(&c3, &s3), Resumption::ClientTicket);

    // A server-side ticket resting (in the server's view) on the old root:
    // the server does not present it.
    store(&s).clear();
    ok(run(&fresh_instance(&c), &s)); // deposits under the old root
    let (co, so) = ok(run(&fresh_instance(&c2), &s2));
    assert!(
        matches!(so.resumption, Resumption::Refused(ref r) if r.contains("root")),
        "{:?}",
        so.resumption
    );
    assert_eq!(co.resumption, Resumption::NotAttempted);
}

/// Resumptions rest on the last full handshake for at most
/// `max_chain_age_secs`: each resumed handshake carries the original
/// verification time forward, so a chain of resumptions cannot extend it.
#[test]
fn chain_age_limits_resumption() {
    let w = world();
    // Certificates valid long enough that only the chain age matters.
    let long = Some((NOW.plus(-3600), NOW.plus(30 * 86_400)));
    let client = w.pki.issue_with(VICTIM, Category::Workload, "scheduler", long);
    let server = w.pki.issue_with(SERVER, Category::Workload, "scheduler", long);
    let with_age = |c: &mut HandshakeConfig| {
        let r = c.resumption.as_mut().unwrap();
        r.ticket_lifetime_secs = 2 * 3600;
        r.max_chain_age_secs = 3 * 3600;
    };
    let mut c = resuming(&w, &client, b"c", &rkeys(1));
    let mut s = resuming(&w, &server, b"s", &rkeys(2));
    with_age(&mut c);
    with_age(&mut s);
    ok(run_at(&c, &s, NOW));
    // Fresh tickets every time, but all resting on the handshake at NOW.
    for t in [5400, 9000, 10_700] {
        assert_resumed(run_at(&c, &s, NOW.plus(t)), Resumption::ClientTicket);
    }
    // The last ticket was cut at NOW + 3 h: after that, a full handshake.
    let (co, so) = ok(run_at(&c, &s, NOW.plus(3 * 3600 + 1)));
    assert_eq!(
        co.resumption,
        Resumption::NotAttempted,
        "the client does not offer it"
    );
    assert_eq!(so.resumption, Resumption::NotAttempted);
    // ...whose tickets resume again.
    assert_resumed(run_at(&c, &s, NOW.plus(3 * 3600 + 60)), Resumption::ClientTicket);

    // A server whose limit was lowered after the ticket was issued refuses it.
    ok(run_at(&c, &s, NOW.plus(4 * 3600)));
    let mut strict = s.clone();
    strict.resumption.as_mut().unwrap().max_chain_age_secs = 600;
    let (_, so) = ok(run_at(&c, &strict, NOW.plus(4 * 3600 + 601)));
    assert!(
        matches!(so.resumption, Resumption::Refused(ref r) if r.contains("too old")),
        "{:?}",
        so.resumption
    );

    // Server-side tickets obey the same limit (the server does not present
    // one resting on a chain verification older than its maximum age).
    store(&s).clear();
    ok(run_at(&fresh_instance(&c), &s, NOW.plus(5 * 3600)));
    let (co, so) = ok(run_at(&fresh_instance(&c), &strict, NOW.plus(5 * 3600 + 601)));
    assert!(
        matches!(so.resumption, Resumption::Refused(ref r) if r.contains("too old")),
        "{:?}",
        so.resumption
    );
    assert_eq!(co.resumption, Resumption::NotAttempted);
}

/// A ticket never outlives the peer certificate it was issued for: past the
/// certificate's expiry the resumption is refused and the full handshake
/// then fails on the expired certificate. A peer with a valid certificate
/// still resumes at the same moment.
#[test]
fn certificate_expiry_ends_resumption() {
    let w = world();
    let short = w.pki.issue_with(
        VICTIM,
        Category::Workload,
        "scheduler",
        Some((NOW.plus(-3600), NOW.plus(1800))),
    );
    let honest = w.pki.issue("storage-prod", Category::Workload, "scheduler");
    let s = resuming(&w, &w.server, b"s", &rkeys(2));
    let c = resuming(&w, &short, b"c", &rkeys(1));
    let h = resuming(&w, &honest, b"h", &rkeys(3));
    ok(run(&c, &s));
    ok(run(&h, &s));
    // Before expiry: resumes (and the new tickets are cut at the expiry too).
    assert_resumed(run_at(&c, &s, NOW.plus(1700)), Resumption::ClientTicket);
    // Just past expiry, still within the verifier's clock skew: the full
    // handshake accepts the certificate, but no ticket outlives it.
    let (_, so) = ok(run_at(&c, &s, NOW.plus(1801)));
    assert!(
        matches!(so.resumption, Resumption::Refused(ref r) if r.contains("expired")),
        "{:?}",
        so.resumption
    );
    let (co, so) = ok(run_at(&fresh_instance(&c), &s, NOW.plus(1801)));
    assert_eq!(
        (co.resumption, so.resumption),
        (Resumption::NotAttempted, Resumption::NotAttempted)
    );
    // Past expiry (beyond the verifier's clock skew): the ticket is refused
    // by its cut expiry and the full handshake fails on the certificate.
    let err = run_at(&c, &s, NOW.plus(1800 + 301)).unwrap_err();
    assert!(
        matches!(
            err,
            ("server", HandshakeError::PeerCert(CertError::Expired { .. }))
        ),
        "{err:?}"
    );
    // The server-side ticket is not presented either.
    let err = run_at(&fresh_instance(&c), &s, NOW.plus(1800 + 301)).unwrap_err();
    assert!(
        matches!(
            err,
            ("server", HandshakeError::PeerCert(CertError::Expired { .. }))
        ),
        "{err:?}"
    );
    assert_resumed(run_at(&h, &s, NOW.plus(1800 + 301)), Resumption::ClientTicket);
    assert_resumed(
        run_at(&fresh_instance(&h), &s, NOW.plus(1800 + 302)),
        Resumption::ServerTicket,
    );
}

/// A server, a victim client and an honest client, both clients having
/// completed a full handshake: each holds a client-side ticket and has
/// deposited a server-side ticket.
struct Resumable {
    w: World,
    s: HandshakeConfig,
    victim: HandshakeConfig,
    honest: HandshakeConfig,
}

fn resumable() -> Resumable {
    let w = world();
    let s = resuming(&w, &w.server, b"s", &rkeys(2));
    // The victim's chain comes from the "ci-bot" issuer.
    let v = w.pki.issue(VICTIM, Category::Workload, "ci-bot");
    let h = w.pki.issue("storage-prod", Category::Workload, "scheduler");
    let victim = resuming(&w, &v, b"v", &rkeys(1));
    let honest = resuming(&w, &h, b"h", &rkeys(3));
    for c in [&victim, &honest] {
        // A client-side ticket in its cache and a server-side one deposited
        // (a fresh instance's handshake deposits one more).
        ok(run(c, &s));
        ok(run(&fresh_instance(c), &s));
    }
    Resumable { w, s, victim, honest }
}

impl Resumable {
    /// After the server's configuration changed to `s2`: the victim's
    /// resumption, client-side and server-side, is refused and the full
    /// handshake fails with `expect`; the honest client resumes both ways.
    fn assert_victim_refused(&self, s2: &HandshakeConfig, expect: impl Fn(&HandshakeError) -> bool) {
        let err = run(&self.victim, s2).unwrap_err();
        assert!(err.0 == "server" && expect(&err.1), "client ticket: {err:?}");
        let err = run(&fresh_instance(&self.victim), s2).unwrap_err();
        assert!(err.0 == "server" && expect(&err.1), "server ticket: {err:?}");
        assert_resumed(run(&self.honest, s2), Resumption::ClientTicket);
        assert_resumed(run(&fresh_instance(&self.honest), s2), Resumption::ServerTicket);
    }
}

/// The victim's certificate is revoked after its tickets were issued.
#[test]
fn revocation_after_issue_refuses_resumption() {
    let r = resumable();
    let victim_cert = r.victim.credentials.info().revocation_id;
    let crl = RevocationList::build_signed([victim_cert], &r.w.pki.root_key, NOW).unwrap();
    let crl = Arc::new(RevocationList::from_signed_bytes(&crl, &r.w.pki.root).unwrap());
    let mut s2 = r.s.clone();
    s2.verifier = Arc::new(
        Verifier::new(
            r.w.pki.root.clone(),
            Arc::new(IssuancePolicy::allow_all_for_tests()),
        )
        .with_crl(crl),
    );
    r.assert_victim_refused(&s2, |e| {
        matches!(e, HandshakeError::PeerCert(CertError::Revoked { .. }))
    });
}

/// The issuance policy is reloaded to refuse the victim's issuer.
#[test]
fn policy_reload_refuses_resumption() {
    let r = resumable();
    let policy = IssuancePolicy::from_toml(
        r#"
        [[rule]]
        issuer = "scheduler"
        categories = ["workload"]
        identities = ["*-prod"]
        "#,
    )
    .unwrap();
    let mut s2 = r.s.clone();
    s2.verifier = r.w.pki.verifier(policy);
    r.assert_victim_refused(&s2, |e| {
        matches!(e, HandshakeError::PeerCert(CertError::Policy(_)))
    });
}

/// The server's client check changes to refuse the victim.
#[test]
fn client_check_change_refuses_resumption() {
    let r = resumable();
    let mut s2 = r.s.clone();
    s2.client_predicate = Some(Arc::new(|p| {
        if p.identity == VICTIM {
            Err("frontend is decommissioned".into())
        } else {
            Ok(())
        }
    }));
    r.assert_victim_refused(&s2, |e| matches!(e, HandshakeError::ClientRefused { .. }));
}

/// The victim rotated its handshake certificate, then the old one was
/// revoked. Tickets issued while it used the old certificate are refused
/// (the recorded revocation IDs are rechecked); the full handshake with the
/// current certificate succeeds.
#[test]
fn tickets_of_a_revoked_older_certificate_fall_back() {
    let r = resumable();
    let old_cert = r.victim.credentials.info().revocation_id;
    let rotated = r.w.pki.issue(VICTIM, Category::Workload, "ci-bot");
    let mut victim = r.victim.clone();
    victim.credentials = rotated.credentials.clone();
    let crl = RevocationList::build_signed([old_cert], &r.w.pki.root_key, NOW).unwrap();
    let crl = Arc::new(RevocationList::from_signed_bytes(&crl, &r.w.pki.root).unwrap());
    let mut s2 = r.s.clone();
    s2.verifier = Arc::new(
        Verifier::new(
            r.w.pki.root.clone(),
            Arc::new(IssuancePolicy::allow_all_for_tests()),
        )
        .with_crl(crl),
    );
    // The server-side ticket first (a full handshake deposits a new one).
    for c in [fresh_instance(&victim), victim.clone()] {
        let (co, so) = ok(run(&c, &s2));
        assert!(
            matches!(so.resumption, Resumption::Refused(ref m) if m.contains("revoked")),
            "{:?}",
            so.resumption
        );
        assert_ne!(co.resumption, Resumption::ServerTicket);
        assert_eq!(so.peer.handshake_revocation_id, rotated.handshake_revocation_id);
        assert_records_interoperate(&co, &so);
    }
    assert_resumed(run(&victim, &s2), Resumption::ClientTicket);
}

/// The server's certificate is revoked after the client got its tickets: the
/// client does not offer its client-side ticket (the full handshake fails on
/// the revocation) and refuses a server-side ticket naming that server (that
/// connection fails with a distinct error; the next one is a full handshake,
/// which fails on the revocation).
#[test]
fn server_revoked_after_issue_client_refuses_to_resume() {
    let w = world();
    let c = resuming(&w, &w.client, b"c", &rkeys(1));
    let s = resuming(&w, &w.server, b"s", &rkeys(2));
    ok(run(&c, &s));
    ok(run(&fresh_instance(&c), &s));
    let crl = RevocationList::build_signed([w.server.handshake_revocation_id], &w.pki.root_key, NOW).unwrap();
    let crl = Arc::new(RevocationList::from_signed_bytes(&crl, &w.pki.root).unwrap());
    let mut c2 = c.clone();
    c2.verifier = Arc::new(
        Verifier::new(
            w.pki.root.clone(),
            Arc::new(IssuancePolicy::allow_all_for_tests()),
        )
        .with_crl(crl),
    );
    // The cached client-side ticket is not offered.
    assert!(client_init_of(&c2).resumption.is_none());
    let err = run(&c2, &s).unwrap_err();
    assert!(
        matches!(
            err,
            (
                "client",
                HandshakeError::UnusableServerTicket(TicketError::PeerNotAccepted(CertError::Revoked { .. }))
            )
        ),
        "{err:?}"
    );
    let err = run(&c2, &s).unwrap_err();
    assert!(
        matches!(
            err,
            ("client", HandshakeError::PeerCert(CertError::Revoked { .. }))
        ),
        "{err:?}"
    );
    // Honest: the same client with the unrevoked server still resumes.
    assert_resumed(run(&fresh_instance(&c), &s), Resumption::ServerTicket);
}

// ---- 6. replay guard ----

fn id(n: u64) -> [u8; 32] {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id
}

/// 200,000 distinct tickets pushed through a guard of 100,000 entries: it
/// stays within its bounds, quickly, and an honest fresh ticket is still
/// accepted (as a whole handshake, too).
#[test]
fn replay_guard_flood_cannot_disable_resumption() {
    let guard = Arc::new(InMemoryReplayGuard::new(100_000));
    let start = Instant::now();
    // Tickets expiring over the next two hours, as a flood of resumptions
    // with valid tickets would present them...
    for n in 0..100_000u64 {
        guard.check_and_insert(id(n), NOW.plus(1 + (n % 7100) as i64), NOW);
    }
    // ...and as many again, all expiring in one minute.
    for n in 100_000..200_000u64 {
        guard.check_and_insert(id(n), NOW.plus(7000), NOW);
    }
    assert!(start.elapsed() < Duration::from_secs(30), "{:?}", start.elapsed());
    assert!(guard.len() <= 100_000, "{}", guard.len());
    assert!(guard.bucket_count() <= (7200 / REPLAY_BUCKET_SECS + 2) as usize);

    // A fresh ticket (expiring last) is accepted once.
    assert!(guard.check_and_insert(id(u64::MAX), NOW.plus(7200), NOW));
    assert!(!guard.check_and_insert(id(u64::MAX), NOW.plus(7200), NOW));

    // Through a handshake: the server's guard is the flooded one.
    let w = world();
    let c = resuming(&w, &w.client, b"c", &rkeys(1));
    let mut s = resuming(&w, &w.server, b"s", &rkeys(2));
    s.resumption.as_mut().unwrap().replay_guard = guard.clone();
    ok(run(&c, &s));
    assert_resumed(run(&c, &s), Resumption::ClientTicket);
    assert!(guard.len() <= 100_000);
}

/// When full, the guard drops its oldest bucket and refuses tickets expiring
/// in it from then on (it no longer knows whether they were used) rather
/// than forgetting them; a full bucket refuses only tickets of its own
/// minute.
#[test]
fn replay_guard_never_forgets_an_unexpired_ticket_silently() {
    let guard = InMemoryReplayGuard::with_limits(4, 2);
    assert!(guard.check_and_insert(id(1), NOW.plus(60), NOW));
    assert!(guard.check_and_insert(id(2), NOW.plus(60), NOW));
    // That minute is full; other minutes are not.
    assert!(!guard.check_and_insert(id(3), NOW.plus(61), NOW));
    assert!(guard.check_and_insert(id(4), NOW.plus(600), NOW));
    assert!(guard.check_and_insert(id(5), NOW.plus(900), NOW));
    // Full: the oldest minute goes; its tickets are now refused, used or not.
    assert!(guard.check_and_insert(id(6), NOW.plus(1200), NOW));
    assert_eq!(guard.len(), 3);
    assert!(!guard.check_and_insert(id(1), NOW.plus(60), NOW));
    assert!(!guard.check_and_insert(id(7), NOW.plus(60), NOW));
    // Later tickets are still checked one by one.
    assert!(!guard.check_and_insert(id(4), NOW.plus(600), NOW));
    assert!(guard.check_and_insert(id(8), NOW.plus(1500), NOW));
}

/// A ticket replayed after the server's key rotation (the key that sealed it
/// is now a previous key) is still refused; an unused ticket sealed before
/// the rotation still resumes.
#[test]
fn replay_after_key_rotation_is_refused() {
    let w = world();
    let c = resuming(&w, &w.client, b"c", &rkeys(1));
    let old = ResumptionKey::new([2; 16], &[2; 32]);
    let s = resuming(&w, &w.server, b"s", &Arc::new(ResumptionKeys::new(old, vec![])));
    ok(run(&c, &s));
    ok(run(&c, &s)); // Resumes; the client now holds a fresh ticket.
    let cache = c.resumption.as_ref().unwrap().client_cache.clone();
    let unused = cache.take("", NOW).unwrap();
    cache.put("", unused.clone());
    assert_resumed(run(&c, &s), Resumption::ClientTicket);
    let used = unused;

    // Rotation: a new current key, the old one kept to open tickets.
    let mut rotated = s.clone();
    rotated.resumption.as_mut().unwrap().keys = Arc::new(ResumptionKeys::new(
        ResumptionKey::new([4; 16], &[4; 32]),
        vec![ResumptionKey::new([2; 16], &[2; 32])],
    ));
    cache.clear();
    cache.put("", used);
    let (co, so) = ok(run(&c, &rotated));
    assert!(
        matches!(so.resumption, Resumption::Refused(ref r) if r.contains("replay")),
        "{:?}",
        so.resumption
    );
    assert!(matches!(co.resumption, Resumption::Refused(_)));

    // Honest: a ticket sealed under the old key and never used resumes.
    cache.clear();
    ok(run(&c, &s));
    assert_resumed(run(&c, &rotated), Resumption::ClientTicket);
}

/// Entries live until the ticket's own expiry, then are forgotten; an
/// expired ticket is never recorded.
#[test]
fn replay_guard_forgets_expired_entries() {
    let guard = InMemoryReplayGuard::new(1000);
    assert!(guard.check_and_insert(id(1), NOW.plus(30), NOW));
    assert!(guard.check_and_insert(id(2), NOW.plus(3600), NOW));
    assert!(!guard.check_and_insert(id(1), NOW.plus(30), NOW.plus(10)));
    assert_eq!(guard.len(), 2);
    // The first ticket's minute is over: forgotten; the second is kept.
    guard.purge_expired(NOW.plus(120));
    assert_eq!((guard.len(), guard.bucket_count()), (1, 1));
    assert!(!guard.check_and_insert(id(2), NOW.plus(3600), NOW.plus(120)));
    // Expired tickets are refused, not recorded.
    assert!(!guard.check_and_insert(id(3), NOW.plus(100), NOW.plus(120)));
    assert_eq!(guard.len(), 1);
    guard.purge_expired(NOW.plus(3700));
    assert!(guard.is_empty());
    assert_eq!(guard.bucket_count(), 0);
}

/// The chain trust check on its own: another root, or too old, is refused.
#[test]
fn chain_trust_checks_root_and_age() {
    let w = world();
    let v = w.pki.verifier(IssuancePolicy::allow_all_for_tests());
    let t = ChainTrust::verified_now(&v, NOW);
    assert_eq!(t.check(&v, 60, NOW.plus(59)), Ok(()));
    assert_eq!(
        t.check(&v, 60, NOW.plus(60)),
        Err(TicketError::ChainTooOld {
            verified_at: NOW.secs()
        })
    );
    let other = TestPki::new(b"other").verifier(IssuancePolicy::allow_all_for_tests());
    assert_eq!(t.check(&other, 60, NOW), Err(TicketError::RootChanged));
    // Each kind opens only as itself.
    let key = ResumptionKey::new([5; 16], &[5; 32]);
    let rng = alts_core::crypto::DeterministicRandom::new(b"k");
    let sealed = key
        .seal_as(TicketKind::ServerTicket, &TicketContents::default(), &rng)
        .unwrap();
    assert!(key.open_as(TicketKind::ServerTicket, &sealed).is_ok());
    assert_eq!(
        key.open_as(TicketKind::ClientTicket, &sealed),
        Err(TicketError::Authentication)
    );
}
