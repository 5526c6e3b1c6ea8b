//! Misbehaving raw TCP clients: silent, stalled halfway through ClientInit,
//! filling the in-flight handshake slots, or sending garbage. Each is dropped
//! and the server keeps serving good clients.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use alts_core::handshake::{ClientHandshake, ClientOptions, Handshake};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HS_TIMEOUT: Duration = Duration::from_millis(300);

/// Waits until the server closes `tcp` (EOF or reset); returns how long that
/// took. Any bytes the server sends first are ignored.
async fn wait_closed(mut tcp: TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + within).into(), tcp.read(&mut buf)).await {
            Err(_) => panic!("server did not close the connection within {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// Opens a raw TCP connection and sends `bytes` (the server may already have
/// closed it: write errors are ignored).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let _ = tcp.write_all(bytes).await;
    tcp
}

/// The first bytes a real client sends: its framed ClientInit.
fn client_init(fx: &mut Fixture) -> Vec<u8> {
    let c = fx.issue("probe-prod");
    let mut hs = ClientHandshake::new(
        fx.config(&c).snapshot(),
        ClientOptions::default(),
        alts_examples::now(),
    )
    .expect("client handshake");
    let mut out = Vec::new();
    hs.poll_output(&mut out);
    assert!(out.len() > 8, "no ClientInit produced");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_stalled_clients_time_out_while_good_clients_connect() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let init = client_init(&mut fx);
    let server = serve_plain(fx.config(&s).handshake_timeout(HS_TIMEOUT)).await;

    let silent = raw(server.addr, &[]).await;
    let half = raw(server.addr, &init[..init.len() / 2]).await;
    let opened = Instant::now();
    let silent = tokio::spawn(wait_closed(silent, WAIT));
    let half = tokio::spawn(wait_closed(half, WAIT));

    // A good client is served meanwhile, long before the timeout fires.
    assert_serving(server.addr, &fx.config(&c), "frontend-prod").await;
    let good_done = opened.elapsed();

    for (what, task) in [("silent", silent), ("half ClientInit", half)] {
        let closed_after = task.await.expect("task");
        assert!(
            closed_after >= HS_TIMEOUT - Duration::from_millis(50),
            "{what} closed early: {closed_after:?}"
        );
        assert!(
            closed_after < Duration::from_secs(3),
            "{what} closed late: {closed_after:?}"
        );
        assert!(
            good_done < closed_after,
            "good client ({good_done:?}) waited for {what} ({closed_after:?})"
        );
    }
    assert_serving(server.addr, &fx.config(&c), "frontend-prod").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn full_in_flight_slots_free_up_after_the_timeout() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let opts = ServerOpts {
        max_in_flight: 2,
        ..ServerOpts::default()
    };
    let server = serve(fx.config(&s).handshake_timeout(HS_TIMEOUT), opts).await;

    // Two silent clients take both slots...
    let hogs = [raw(server.addr, &[]).await, raw(server.addr, &[]).await];
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...so a good client waits for a slot, but not forever.
    let start = Instant::now();
    bounded(
        "good client behind full slots",
        assert_serving(server.addr, &fx.config(&c), "frontend-prod"),
    )
    .await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    for h in hogs {
        wait_closed(h, Duration::from_secs(3)).await;
    }
    // Slots are free again: several clients at once get through promptly.
    let config = fx.config(&c);
    let start = Instant::now();
    futures_util::future::join_all((0..4).map(|_| assert_serving(server.addr, &config, "frontend-prod")))
        .await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
}

/// Deterministic pseudo-random bytes (xorshift; not for crypto).
fn noise(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_instead_of_a_handshake_is_dropped() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    // Default (10 s) handshake timeout: garbage must be refused on sight,
    // not by the timer.
    let server = serve_plain(fx.config(&s)).await;
    let config = fx.config(&c);
    let mut established = connect(server.addr, &config).await;

    let mut random = noise(64 * 1024, 0x9e37_79b9_7f4a_7c15);
    random[0] |= 0x80; // a length prefix far over the cap, as almost any random bytes
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS frame
    let huge_len = [0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4];
    let mut framed_junk = vec![0, 0, 0, 64];
    framed_junk.extend_from_slice(&[0xff; 64]); // a well-framed, undecodable message
    let cases: [(&str, &[u8]); 4] = [
        ("random bytes", &random),
        ("HTTP/2 preface", &h2),
        ("huge length", &huge_len),
        ("junk", &framed_junk),
    ];

    for (what, bytes) in cases {
        let tcp = raw(server.addr, bytes).await;
        let after = wait_closed(tcp, Duration::from_secs(3)).await;
        assert!(after < Duration::from_secs(2), "{what}: closed after {after:?}");
        assert_serving(server.addr, &config, "frontend-prod").await;
    }
    // A connection made before the garbage still works.
    assert_eq!(unary(&mut established, "ok").await.expect("unary").message, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_gives_up_on_a_silent_server() {
    let mut fx = Fixture::new();
    let c = fx.issue("frontend-prod");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Accepts and never answers.
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let connector =
        tonic_alts::AltsConnector::new(fx.config(&c).handshake_timeout(HS_TIMEOUT)).accept_any_server();
    let start = Instant::now();
    let err = bounded("silent server", try_connect(addr, connector))
        .await
        .expect_err("must time out");
    let msg = chain(&err);
    assert!(msg.contains("timed out"), "{msg}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    hold.abort();
}
