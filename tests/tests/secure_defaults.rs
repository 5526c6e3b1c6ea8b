//! Secure defaults of the tonic layer, each shown refusing the attack while
//! honest peers keep working: clients must name their server, idle and
//! flooding connections cannot starve handshakes, revocation lists cannot
//! be rolled back and can be required fresh.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use alts_examples::now;
use common::*;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tonic::transport::Server;
use tonic_alts::{AltsAcceptor, AltsConfig, AltsConnector, AltsError, AltsErrorKind, ConfigError, FileError};

/// A client that names no server is a configuration error unless it says
/// explicitly that any server will do.
#[tokio::test(flavor = "multi_thread")]
async fn client_must_name_its_server() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let server = serve_plain(fx.config(&s)).await;
    let err = try_connect(server.addr, AltsConnector::new(fx.config(&c)))
        .await
        .expect_err("no target must not connect");
    let alts = AltsError::find(&err).expect("an ALTS error");
    assert!(
        matches!(alts, AltsError::InvalidConfig(ConfigError::NoTargetIdentity)),
        "{alts}"
    );
    try_connect(
        server.addr,
        AltsConnector::new(fx.config(&c)).target_identity("echo-prod"),
    )
    .await
    .expect("named server");
    try_connect(server.addr, AltsConnector::new(fx.config(&c)).accept_any_server())
        .await
        .expect("explicit opt-out");
}

/// Opens a TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// Whether the server closed `tcp` within `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(within, tcp.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn serve_with(acceptor: AltsAcceptor) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let incoming = acceptor.bind("127.0.0.1:0").await.expect("bind");
    let addr = incoming.local_addr();
    let task = tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(alts_examples::echo::echo_server::EchoServer::new(
                alts_examples::EchoService,
            ))
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, task)
}

/// A connection that sends nothing is closed after the first-bytes timeout
/// and holds no handshake slot meanwhile; a source over its cap is closed
/// at once; other sources are served throughout.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_hold_no_slot_and_sources_are_capped() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let acceptor = AltsAcceptor::new(fx.config(&s))
        .max_in_flight(1)
        .max_per_source(4)
        .first_bytes_timeout(Duration::from_millis(500));
    let (addr, task) = serve_with(acceptor).await;

    // Four idle connections from 127.0.0.2 (its cap) ...
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect_from([127, 0, 0, 2], addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ... a fifth is closed at once ...
    let mut fifth = connect_from([127, 0, 0, 2], addr).await.expect("connect");
    assert!(
        closed_within(&mut fifth, Duration::from_millis(300)).await,
        "over-cap connection kept"
    );
    // ... while a client from another address is served with the only slot free.
    let connector = AltsConnector::new(fx.config(&c)).target_identity("echo-prod");
    bounded(
        "handshake beside idle connections",
        connector.connect(format!("http://{addr}").parse().unwrap()),
    )
    .await
    .expect("honest client served");
    // The idle ones are closed after the first-bytes timeout, not the handshake timeout.
    let start = Instant::now();
    for tcp in &mut idle {
        assert!(
            closed_within(tcp, Duration::from_secs(3)).await,
            "idle connection kept open"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    task.abort();
}

/// A sustained slowloris: idle connections opened continuously from one
/// address for the run, while honest clients from another address keep
/// completing handshakes with a p99 under one second.
#[tokio::test(flavor = "multi_thread")]
async fn slowloris_does_not_starve_honest_clients() {
    let secs: u64 = std::env::var("ALTS_SLOWLORIS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let acceptor = AltsAcceptor::new(fx.config(&s)).max_in_flight(8);
    let (addr, task) = serve_with(acceptor).await;
    let deadline = Instant::now() + Duration::from_secs(secs);

    // Attacker: 100 idle connections a second from 127.0.0.2, each kept
    // open (up to 1,000 at a time) and never written to.
    let attacker = tokio::spawn(async move {
        let mut held = std::collections::VecDeque::new();
        let mut opened = 0u64;
        while Instant::now() < deadline {
            if let Ok(tcp) = connect_from([127, 0, 0, 2], addr).await {
                held.push_back(tcp);
                opened += 1;
            }
            if held.len() > 1000 {
                held.pop_front();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        opened
    });

    // Honest clients from 127.0.0.1: a fresh connection and handshake each time.
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_local_address(Some([127, 0, 0, 1].into()));
    let config = fx.config(&c);
    let mut times = Vec::new();
    while Instant::now() < deadline {
        let connector =
            AltsConnector::with_connector(http.clone(), config.clone()).target_identity("echo-prod");
        let start = Instant::now();
        let mut client = try_connect(addr, connector).await.expect("honest client refused");
        unary(&mut client, "x").await.expect("unary");
        times.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened = attacker.await.expect("attacker");
    times.sort();
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    println!(
        "slowloris: {opened} idle connections, {} honest connections, p99 {p99:?}",
        times.len()
    );
    assert!(
        opened > 50 * secs,
        "the attack did not run ({opened} connections)"
    );
    assert!(
        times.len() as u64 > 10 * secs,
        "too few honest connections: {}",
        times.len()
    );
    assert!(p99 < Duration::from_secs(1), "honest p99 {p99:?}");
    task.abort();
}

/// An older revocation list (a rollback), or none at all, never replaces
/// the one in use; a newer one does, and revokes at once.
#[tokio::test(flavor = "multi_thread")]
async fn revocation_list_cannot_be_rolled_back() {
    let mut fx = Fixture::new();
    let (s, c, victim) = (
        fx.issue("echo-prod"),
        fx.issue("frontend-prod"),
        fx.issue("rogue-prod"),
    );
    let t = now();
    let crl_path = fx.pki.write_crl_at("server.crl", &[], t.plus(-60)).expect("crl");
    let config = AltsConfig::from_files(fx.files(&s).crl(&crl_path)).expect("load");
    let reloader = config.reloader().expect("reloader");
    let server = serve_plain(config.clone()).await;

    // Newer list revoking the rogue: accepted, and the rogue is refused.
    fx.pki
        .write_crl_at("server.crl", &[victim.handshake_revocation_id], t)
        .expect("crl");
    reloader.reload().expect("newer list loads");
    let rogue = AltsConnector::new(fx.config(&victim)).target_identity("echo-prod");
    try_connect(server.addr, rogue.clone())
        .await
        .expect_err("revoked");

    // The attacker restores the older list: refused, the rogue stays out.
    fx.pki.write_crl_at("server.crl", &[], t.plus(-60)).expect("crl");
    let err = reloader.reload().expect_err("rollback must be refused");
    assert!(
        matches!(
            &err,
            AltsError::File {
                reason: FileError::CrlRollback { .. },
                ..
            }
        ),
        "{err}"
    );
    try_connect(server.addr, rogue).await.expect_err("still revoked");
    assert_serving(server.addr, &fx.config(&c), "frontend-prod").await;
    assert!(
        config.summary().contains(&format!("crl=issued_at={}", t.0)),
        "{}",
        config.summary()
    );
}

/// A maximum CRL age alarms by default and, when enforced, fails closed
/// until a fresh list arrives.
#[tokio::test(flavor = "multi_thread")]
async fn stale_revocation_list_fails_closed_when_enforced() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let t = now();
    let crl = fx.pki.write_crl_at("old.crl", &[], t.plus(-7200)).expect("crl");
    let hour = Duration::from_secs(3600);

    // Alarm only: still serving.
    let alarm = AltsConfig::from_files(fx.files(&s).crl(&crl).crl_max_age(hour)).expect("load");
    let server = serve_plain(alarm).await;
    assert_serving(server.addr, &fx.config(&c), "frontend-prod").await;

    // Enforced: refused, with a clear error on the side that enforces it.
    let enforced =
        AltsConfig::from_files(fx.files(&c).crl(&crl).crl_max_age(hour).enforce_crl_max_age()).expect("load");
    let connector = AltsConnector::new(enforced.clone()).target_identity("echo-prod");
    let err = try_connect(server.addr, connector.clone())
        .await
        .expect_err("stale CRL");
    let alts = AltsError::find(&err).expect("an ALTS error");
    assert_eq!(alts.kind(), AltsErrorKind::Config);
    assert!(
        matches!(alts, AltsError::InvalidConfig(ConfigError::CrlTooOld { .. })),
        "{alts}"
    );

    // A fresh list restores service.
    std::fs::copy(fx.pki.write_crl_at("new.crl", &[], t).expect("crl"), &crl).expect("copy");
    enforced.reloader().expect("reloader").reload().expect("reload");
    try_connect(server.addr, connector).await.expect("fresh CRL");

    // No CRL at all is visible in the summary.
    assert!(fx.config(&c).summary().contains("crl=NONE"));
}
