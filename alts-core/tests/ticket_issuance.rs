//! What each handshake draws from the random source and which tickets it
//! seals: one random draw per side per handshake, and a server-side ticket
//! only where the server can use it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use alts_core::cert::Category;
use alts_core::crypto::CryptoProvider;
use alts_core::handshake::{
    ClientHandshake, ClientOptions, Handshake, HandshakeConfig, HandshakeOutcome, Resumption,
    ResumptionConfig, ServerHandshake,
};
use alts_core::policy::IssuancePolicy;
use alts_core::resumption::{ResumptionKey, ResumptionKeys};
use alts_core::testing::{Issued, NOW, TestPki};
use alts_proto::Message;
use alts_proto::alts_v1::{HandshakeMessage, handshake_message::Msg};

const CLIENT: &str = "frontend-prod";

fn counting(seed: &[u8]) -> (CryptoProvider, Arc<AtomicUsize>) {
    alts_core::testing::counting_provider(seed)
}

struct World {
    pki: TestPki,
    client: Issued,
    server: Issued,
}

fn world() -> World {
    let pki = TestPki::new(b"ticket issuance");
    let client = pki.issue(CLIENT, Category::Workload, "scheduler");
    let server = pki.issue("backend-prod", Category::Workload, "scheduler");
    World { pki, client, server }
}

fn config(w: &World, who: &Issued, provider: CryptoProvider, rid: Option<u8>) -> HandshakeConfig {
    let mut c = HandshakeConfig::new(
        who.credentials.clone(),
        w.pki.verifier(IssuancePolicy::allow_all_for_tests()),
        provider,
    );
    c.resumption = rid.map(|b| {
        ResumptionConfig::new(Arc::new(ResumptionKeys::new(
            ResumptionKey::new([b; 16], &[b; 32]),
            vec![],
        )))
    });
    c
}

/// One handshake stepped by hand; returns both outcomes and whether the
/// ClientFinished carried a (server-side) ticket.
fn handshake(c: &HandshakeConfig, s: &HandshakeConfig) -> (HandshakeOutcome, HandshakeOutcome, bool) {
    let mut client = ClientHandshake::new(Arc::new(c.clone()), ClientOptions::default(), NOW).unwrap();
    let mut server = ServerHandshake::new(Arc::new(s.clone()), NOW);
    let mut to_server = Vec::new();
    client.poll_output(&mut to_server);
    assert_eq!(server.handle_input(&to_server).unwrap(), to_server.len());
    let mut to_client = Vec::new();
    server.poll_output(&mut to_client);
    assert_eq!(client.handle_input(&to_client).unwrap(), to_client.len());
    let mut finished = Vec::new();
    client.poll_output(&mut finished);
    let Some(Msg::ClientFinished(cf)) = HandshakeMessage::decode(&finished[4..]).unwrap().msg else {
        panic!("expected ClientFinished");
    };
    assert_eq!(server.handle_input(&finished).unwrap(), finished.len());
    (
        client.take_outcome().unwrap(),
        server.take_outcome().unwrap(),
        cf.new_ticket.is_some(),
    )
}

#[test]
fn one_random_draw_per_side_per_handshake() {
    let w = world();
    for pfs in [false, true] {
        let (cp, client_calls) = counting(b"client");
        let (sp, server_calls) = counting(b"server");
        let mut c = config(&w, &w.client, cp, Some(1));
        let mut s = config(&w, &w.server, sp, Some(2));
        c.pfs = pfs;
        s.pfs = pfs;
        let mut modes = Vec::new();
        for n in 1..=3 {
            let (co, so, _) = handshake(&c, &s);
            assert_eq!(co.pfs, pfs);
            assert_eq!(so.resumption, co.resumption);
            modes.push(co.resumption);
            assert_eq!(client_calls.load(Ordering::SeqCst), n, "client, pfs {pfs}");
            assert_eq!(server_calls.load(Ordering::SeqCst), n, "server, pfs {pfs}");
        }
        assert_eq!(
            modes,
            [
                Resumption::NotAttempted,
                Resumption::ClientTicket,
                Resumption::ClientTicket
            ]
        );
    }
}

#[test]
fn server_side_tickets_only_where_the_server_can_use_them() {
    let w = world();
    let (cp, _) = counting(b"client");
    let (sp, _) = counting(b"server");
    let c = config(&w, &w.client, cp, Some(1));
    let s = config(&w, &w.server, sp, Some(2));
    let store = s.resumption.as_ref().unwrap().server_store.clone();
    let cache = c.resumption.as_ref().unwrap().client_cache.clone();

    // A full handshake with a resuming server: the server gets one.
    let (co, _, sealed) = handshake(&c, &s);
    assert_eq!(co.resumption, Resumption::NotAttempted);
    assert!(sealed);
    assert_eq!(store.identity_len(CLIENT), 1);

    // Resumed from the client-side ticket, with a fresh one in return: the
    // client resumes from that next time; no server-side ticket.
    for _ in 0..2 {
        let (co, _, sealed) = handshake(&c, &s);
        assert_eq!(co.resumption, Resumption::ClientTicket);
        assert!(!sealed);
        assert_eq!(store.identity_len(CLIENT), 1, "the full handshake's ticket stays");
        assert_eq!(cache.total_len(), 1);
    }

    // Another instance of the client (same RID key, empty cache) resumes
    // from the stored server-side ticket and leaves a fresh one.
    let mut other = c.clone();
    other.resumption.as_mut().unwrap().client_cache = Default::default();
    let (co, _, sealed) = handshake(&other, &s);
    assert_eq!(co.resumption, Resumption::ServerTicket);
    assert!(sealed);
    assert_eq!(store.identity_len(CLIENT), 1);

    // A server without resumption sends no ticket and keeps none: the
    // client seals none for it.
    let (sp, _) = counting(b"plain server");
    let plain = config(&w, &w.server, sp, None);
    let fresh = {
        let mut f = c.clone();
        f.resumption.as_mut().unwrap().client_cache = Default::default();
        f
    };
    let (co, _, sealed) = handshake(&fresh, &plain);
    assert_eq!(co.resumption, Resumption::NotAttempted);
    assert!(!sealed);
}
