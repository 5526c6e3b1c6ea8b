//! RPCs over ALTS on real loopback TCP: every call shape, large messages,
//! concurrency, the identity and address seen by handlers, PFS and the
//! integrity-only record protocol.

mod common;

use std::sync::{Arc, Mutex};

use alts_core::record::{RecordProtocol, SecurityLevel};
use alts_examples::echo::{EchoRequest, StreamRequest};
use common::*;
use futures_util::StreamExt;
use tokio::sync::{Barrier, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic_alts::{AltsAuthzLayer, AltsRequestExt};

const MIB: usize = 1 << 20;

/// A payload whose bytes depend on `seed` and position, to catch reordering.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn req(message: &str, payload: Vec<u8>) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        payload,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unary_carries_identity() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let server = serve_plain(fx.config(&s)).await;
    let mut client = connect(server.addr, &fx.config(&c)).await;
    let r = client
        .unary(req("hello", payload(1000, 1)))
        .await
        .expect("unary")
        .into_inner();
    assert_eq!(r.message, "hello");
    assert_eq!(r.payload, payload(1000, 1));
    assert_eq!(r.peer_identity, "frontend-prod");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_messages_every_call_shape() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let server = serve_plain(fx.config(&s)).await;
    let mut client = connect(server.addr, &fx.config(&c)).await;

    // Unary: one 8 MiB message each way.
    let big = payload(8 * MIB, 7);
    let r = bounded("unary 8 MiB", client.unary(req("big", big.clone())))
        .await
        .expect("unary");
    assert!(r.into_inner().payload == big, "8 MiB unary payload corrupted");

    // Server streaming: 2 x 8 MiB down.
    let mut stream = client
        .server_stream(StreamRequest {
            count: 2,
            payload_size: (8 * MIB) as u32,
        })
        .await
        .expect("server_stream")
        .into_inner();
    let mut total = 0;
    bounded("server stream", async {
        while let Some(m) = stream.next().await {
            let m = m.expect("stream item");
            assert_eq!(m.peer_identity, "frontend-prod");
            assert!(m.payload.iter().all(|&b| b == 0xa5));
            total += m.payload.len();
        }
    })
    .await;
    assert_eq!(total, 16 * MIB);

    // Client streaming: one 8 MiB message and 8 x 1 MiB up.
    let up = std::iter::once(req("first", payload(8 * MIB, 1)))
        .chain((0..8).map(|i| req("more", payload(MIB, i))))
        .collect::<Vec<_>>();
    let r = bounded(
        "client stream",
        client.client_stream(futures_util::stream::iter(up)),
    )
    .await
    .expect("client_stream")
    .into_inner();
    assert_eq!(r.message, format!("9 messages, {} bytes", 16 * MIB));
    assert_eq!(r.peer_identity, "frontend-prod");

    // Bidi: 16 MiB each way, checked message by message.
    let sizes = [8 * MIB, 2 * MIB, 2 * MIB, 2 * MIB, 2 * MIB];
    let msgs = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| req(&i.to_string(), payload(n, i as u8)))
        .collect::<Vec<_>>();
    let mut replies = client
        .bidi(futures_util::stream::iter(msgs.clone()))
        .await
        .expect("bidi")
        .into_inner();
    let got = bounded("bidi", async {
        let mut got = Vec::new();
        while let Some(m) = replies.next().await {
            got.push(m.expect("bidi item"));
        }
        got
    })
    .await;
    assert_eq!(got.len(), msgs.len());
    for (g, m) in got.iter().zip(&msgs) {
        assert_eq!(g.message, m.message);
        assert!(g.payload == m.payload, "bidi payload {} corrupted", m.message);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_concurrent_streams_on_one_connection() {
    const N: usize = 100;
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let server = serve_plain(fx.config(&s)).await;
    let client = connect(server.addr, &fx.config(&c)).await;
    // Every stream exchanges one message, then waits until all N are open
    // at once, then exchanges a second one.
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let mut client = client.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let (tx, rx) = mpsc::channel(2);
            tx.send(req(&format!("{i}a"), payload(10_000, i as u8)))
                .await
                .expect("send");
            let mut replies = client
                .bidi(ReceiverStream::new(rx))
                .await
                .expect("bidi")
                .into_inner();
            let first = replies.next().await.expect("reply").expect("ok");
            assert_eq!(first.message, format!("{i}a"));
            barrier.wait().await;
            tx.send(req(&format!("{i}b"), payload(10_000, i as u8)))
                .await
                .expect("send");
            drop(tx);
            let second = replies.next().await.expect("reply").expect("ok");
            assert_eq!(second.message, format!("{i}b"));
            assert_eq!(second.payload, payload(10_000, i as u8));
            assert!(replies.next().await.is_none());
        });
    }
    bounded("100 streams", async {
        while let Some(r) = tasks.join_next().await {
            r.expect("stream task");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_connections_at_once() {
    const N: usize = 50;
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let (authz, seen) = recording_authorizer();
    let server = serve(fx.config(&s), ServerOpts::layer(AltsAuthzLayer::new(authz))).await;
    let config = fx.config(&c);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let config = config.clone();
        let addr = server.addr;
        tasks.spawn(async move {
            let mut client = connect(addr, &config).await;
            let r = unary(&mut client, &i.to_string()).await.expect("unary");
            assert_eq!(r.message, i.to_string());
            assert_eq!(r.peer_identity, "frontend-prod");
        });
    }
    bounded("50 connections", async {
        while let Some(r) = tasks.join_next().await {
            r.expect("connection task");
        }
    })
    .await;
    assert_eq!(seen.lock().expect("lock").len(), N);
}

#[tokio::test(flavor = "multi_thread")]
async fn handler_sees_peer_and_remote_addr() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let allow_all = AltsAuthzLayer::new(tonic_alts::Authorizer::from_fn(|_, _| Ok(())));
    for layer in [AltsAuthzLayer::peer_info_only(), allow_all] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        let mut opts = ServerOpts::interceptor(move |r| {
            let info = r.alts_connect_info().map(|i| (i.remote_addr, i.local_addr));
            rec.lock()
                .expect("lock")
                .push((r.remote_addr(), r.alts_peer(), info));
            Ok(r)
        });
        opts.layer = layer;
        let server = serve(fx.config(&s), opts).await;
        let mut client = connect(server.addr, &fx.config(&c)).await;
        unary(&mut client, "x").await.expect("unary");
        let seen = seen.lock().expect("lock");
        let (remote, peer, info) = seen.first().expect("one call").clone();
        let remote = remote.expect("remote_addr() works behind AltsAuthzLayer");
        assert!(remote.ip().is_loopback());
        assert_ne!(remote.port(), server.addr.port());
        let peer = peer.expect("alts_peer()");
        assert_eq!(peer.identity, "frontend-prod");
        assert_eq!(peer.local_identity, "echo-prod");
        assert_eq!(peer.issuer.as_deref(), Some("scheduler"));
        assert!(!peer.resumed());
        assert_eq!(peer.security_level, SecurityLevel::IntegrityAndPrivacy);
        let (info_remote, info_local) = info.expect("alts_connect_info()");
        assert_eq!(info_remote, Some(remote));
        assert_eq!(info_local, Some(server.addr));
    }
}

/// Runs one 1 MiB unary call with the given client and server settings and
/// returns the peer the server saw.
async fn one_call_with(
    client: impl FnOnce(tonic_alts::AltsConfig) -> tonic_alts::AltsConfig,
    server: impl FnOnce(tonic_alts::AltsConfig) -> tonic_alts::AltsConfig,
) -> tonic_alts::AltsPeer {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let (authz, seen) = recording_authorizer();
    let srv = serve(
        server(fx.config(&s)),
        ServerOpts::layer(AltsAuthzLayer::new(authz)),
    )
    .await;
    let mut cl = connect(srv.addr, &client(fx.config(&c))).await;
    let r = cl
        .unary(req("m", payload(MIB, 3)))
        .await
        .expect("unary")
        .into_inner();
    assert_eq!(r.payload, payload(MIB, 3));
    seen.lock().expect("lock").first().expect("seen").clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn pfs_end_to_end() {
    let peer = one_call_with(|c| c.pfs(true), |s| s.pfs(true)).await;
    assert!(peer.pfs, "server saw a non-PFS handshake: {peer:?}");
    let peer = one_call_with(|c| c.pfs(true), |s| s.require_pfs(true)).await;
    assert!(peer.pfs);
}

/// Integrity-only records only between peers of one boundary: both sides
/// offer `ALTSRP_GMAC_AES128_REKEY` (the client first) and name a boundary.
/// `AltsConfig` has no boundary setter yet, hence the generic `with`.
fn gmac_in(boundary: &'static str) -> impl FnOnce(tonic_alts::AltsConfig) -> tonic_alts::AltsConfig {
    move |c| {
        c.record_protocols([RecordProtocol::GmacAes128Rekey, RecordProtocol::GcmAes128Rekey])
            .boundary(boundary)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn integrity_only_record_protocol_end_to_end() {
    let peer = one_call_with(gmac_in("cell-a"), gmac_in("cell-a")).await;
    assert_eq!(peer.record_protocol, RecordProtocol::GmacAes128Rekey);
    assert_eq!(peer.security_level, SecurityLevel::IntegrityOnly);
    let peer = one_call_with(|c| c.record_protocols([RecordProtocol::GcmAes128]), |s| s).await;
    assert_eq!(peer.record_protocol, RecordProtocol::GcmAes128);
}

#[tokio::test(flavor = "multi_thread")]
async fn integrity_only_outside_a_shared_boundary_gets_encryption() {
    // Different boundaries: the server picks the next protocol, which encrypts.
    let peer = one_call_with(gmac_in("cell-a"), gmac_in("cell-b")).await;
    assert_eq!(peer.record_protocol, RecordProtocol::GcmAes128Rekey);
    assert_eq!(peer.security_level, SecurityLevel::IntegrityAndPrivacy);
    // A server with the default settings never chooses integrity-only.
    let peer = one_call_with(gmac_in("cell-a"), |s| s).await;
    assert_eq!(peer.record_protocol, RecordProtocol::GcmAes128Rekey);
    // A server requiring privacy never chooses it, even inside the boundary.
    let peer = one_call_with(gmac_in("cell-a"), |s| {
        gmac_in("cell-a")(s).min_security_level(SecurityLevel::IntegrityAndPrivacy)
    })
    .await;
    assert_eq!(peer.record_protocol, RecordProtocol::GcmAes128Rekey);
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_max_frame_size_end_to_end() {
    // The server accepts frames of at most 8 KiB; the client sends them that
    // big (and the server's record layer enforces it), 1 MiB messages pass.
    let peer = one_call_with(|c| c, |s| s.max_frame_size(8192)).await;
    assert_eq!(peer.identity, "frontend-prod");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_reader_backpressure() {
    // Large HTTP/2 windows let the server write far more than the socket
    // buffers hold, so the ALTS stream must push back and resume.
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let server = serve_plain(fx.config(&s)).await;
    let connector = tonic_alts::AltsConnector::new(fx.config(&c)).target_identity("echo-prod");
    let mut client = try_connect_with(server.addr, connector, |e| {
        e.initial_stream_window_size(32 << 20)
            .initial_connection_window_size(32 << 20)
    })
    .await
    .expect("connect");
    let mut stream = client
        .server_stream(StreamRequest {
            count: 3,
            payload_size: (8 * MIB) as u32,
        })
        .await
        .expect("server_stream")
        .into_inner();
    let mut total = 0;
    bounded("slow reader", async {
        while let Some(m) = stream.next().await {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            let m = m.expect("item");
            assert!(m.payload.iter().all(|&b| b == 0xa5));
            total += m.payload.len();
        }
    })
    .await;
    assert_eq!(total, 24 * MIB);
}

/// `balance_list` spreads RPCs over several ALTS backends, each of which must
/// prove one of the target identities.
#[tokio::test(flavor = "multi_thread")]
async fn balance_list_spreads_calls_over_alts_backends() {
    let mut fx = Fixture::new();
    let (a_id, b_id, c_id) = (
        fx.issue("backend-a-prod"),
        fx.issue("backend-b-prod"),
        fx.issue("frontend-prod"),
    );
    let (auth_a, seen_a) = recording_authorizer();
    let (auth_b, seen_b) = recording_authorizer();
    let a = serve(fx.config(&a_id), ServerOpts::layer(AltsAuthzLayer::new(auth_a))).await;
    let b = serve(fx.config(&b_id), ServerOpts::layer(AltsAuthzLayer::new(auth_b))).await;
    let endpoints = [a.addr, b.addr]
        .map(|addr| tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("uri"));
    let connector = tonic_alts::AltsConnector::new(fx.config(&c_id))
        .target_identities(["backend-a-prod", "backend-b-prod"]);
    let channel = tonic_alts::balance_list(endpoints, connector);
    let mut client = alts_examples::echo::echo_client::EchoClient::new(channel);
    for i in 0..40 {
        let r = bounded("balanced call", client.unary(req(&i.to_string(), vec![])))
            .await
            .expect("rpc");
        assert_eq!(r.get_ref().peer_identity, "frontend-prod");
    }
    let (na, nb) = (
        seen_a.lock().expect("lock").len(),
        seen_b.lock().expect("lock").len(),
    );
    assert_eq!(na + nb, 40);
    assert!(na > 0 && nb > 0, "calls went {na}/{nb}");
}
