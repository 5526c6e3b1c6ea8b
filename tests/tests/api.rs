//! The user-facing API over real sockets: any transport on either side
//! (Unix sockets, tonic's `TcpIncoming`, a configured `HttpConnector`),
//! errors a user can act on, config clones and reloads, the client's view
//! of its server, and cache settings.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use alts_examples::EchoService;
use alts_examples::echo::EchoRequest;
use alts_examples::echo::echo_client::EchoClient;
use alts_examples::echo::echo_server::EchoServer;
use common::*;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::{TcpConnectInfo, TcpIncoming, UdsConnectInfo};
use tonic::transport::{Endpoint, Server, Uri};
use tonic::{Request, Status};
use tonic_alts::{
    AltsAcceptor, AltsConfig, AltsConnector, AltsError, AltsErrorKind, AltsRequestExt, ConfigError,
    CredentialFiles,
};

/// What a server-side interceptor saw of each call.
#[derive(Clone, Debug, Default)]
struct Seen {
    identity: Option<String>,
    alts_remote: Option<std::net::SocketAddr>,
    tonic_remote: Option<std::net::SocketAddr>,
    uds_uid: Option<u32>,
    tcp_info: bool,
}

type SeenLog = Arc<Mutex<Vec<Seen>>>;

fn recorder() -> (
    SeenLog,
    impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone,
) {
    let log: SeenLog = Arc::default();
    let l = log.clone();
    let f = move |req: Request<()>| {
        let info = req.alts_connect_info();
        l.lock().expect("lock").push(Seen {
            identity: req.alts_peer().map(|p| p.identity.clone()),
            alts_remote: req.alts_remote_addr(),
            tonic_remote: req.remote_addr(),
            uds_uid: info
                .and_then(|i| i.transport::<UdsConnectInfo>())
                .and_then(|u| u.peer_cred)
                .map(|c| c.uid()),
            tcp_info: info.and_then(|i| i.transport::<TcpConnectInfo>()).is_some(),
        });
        Ok(req)
    };
    (log, f)
}

fn echo_req() -> EchoRequest {
    EchoRequest {
        message: "hi".into(),
        payload: vec![],
    }
}

/// ALTS over a Unix socket on both sides: the server takes a
/// `UnixListenerStream`, the client a Unix-socket inner connector; the
/// handler sees the peer identity and the socket's peer credentials.
#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_on_both_sides() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let path = fx.tmp.path().join("echo.sock");
    let listener = UnixListener::bind(&path).expect("bind unix socket");
    let incoming = AltsAcceptor::new(fx.config(&s)).incoming(UnixListenerStream::new(listener));
    let (seen, intercept) = recorder();
    let svc = tonic::service::interceptor::InterceptedService::new(EchoServer::new(EchoService), intercept);
    let server = tokio::spawn(Server::builder().add_service(svc).serve_with_incoming(incoming));

    let dial = tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    });
    let connector = AltsConnector::with_connector(dial, fx.config(&c)).target_identity("echo-prod");
    let last = connector.clone();
    let channel = bounded(
        "connect over a Unix socket",
        Endpoint::from_static("http://echo.local").connect_with_connector(connector),
    )
    .await
    .expect("connect over a Unix socket");
    let reply = EchoClient::new(channel)
        .unary(echo_req())
        .await
        .expect("unary")
        .into_inner();
    assert_eq!(reply.peer_identity, "frontend-prod");
    assert_eq!(last.last_peer().expect("peer").identity, "echo-prod");

    let seen = seen.lock().expect("lock")[0].clone();
    assert_eq!(seen.identity.as_deref(), Some("frontend-prod"));
    assert_eq!(seen.uds_uid, Some(nix_uid()), "{seen:?}");
    assert_eq!(seen.alts_remote, None);
    server.abort();
}

fn nix_uid() -> u32 {
    // The uid of this process, as the kernel reports it for the socket peer.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .expect("uid")
}

/// tonic's `TcpIncoming` (with its socket settings) on the server and a
/// configured `HttpConnector` (local address, keepalive) on the client; the
/// handler gets the client's address without any layer.
#[tokio::test(flavor = "multi_thread")]
async fn tcp_incoming_and_configured_http_connector() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tcp = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(60)));
    let incoming = AltsAcceptor::new(fx.config(&s)).incoming(tcp);
    let (seen, intercept) = recorder();
    let svc = tonic::service::interceptor::InterceptedService::new(EchoServer::new(EchoService), intercept);
    let server = tokio::spawn(Server::builder().add_service(svc).serve_with_incoming(incoming));

    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_keepalive(Some(std::time::Duration::from_secs(30)));
    http.set_local_address(Some("127.0.0.1".parse().expect("ip")));
    let connector = AltsConnector::with_connector(http, fx.config(&c)).target_identity("echo-prod");
    let mut client = try_connect(addr, connector).await.expect("connect");
    assert_eq!(
        unary(&mut client, "x").await.expect("unary").peer_identity,
        "frontend-prod"
    );

    // The endpoint's own settings, copied into the default TCP connector.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .tcp_nodelay(true)
        .connect_timeout(WAIT);
    let connector = AltsConnector::for_endpoint(&endpoint, fx.config(&c)).target_identity("echo-prod");
    let channel = endpoint.connect_with_connector(connector).await.expect("connect");
    EchoClient::new(channel).unary(echo_req()).await.expect("unary");

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    for s in seen {
        let remote = s.alts_remote.expect("alts_remote_addr() without a layer");
        assert!(remote.ip().is_loopback());
        assert!(s.tcp_info);
        // tonic's own remote_addr() needs the authorization layer (documented).
        assert_eq!(s.tonic_remote, None);
    }
    server.abort();
}

/// An `https://` URI is refused with a clear, typed error that
/// `AltsError::find` digs out of tonic's error; `http://` works.
#[tokio::test(flavor = "multi_thread")]
async fn https_uri_is_a_clear_config_error() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let server = serve_plain(fx.config(&s)).await;
    let connector = AltsConnector::new(fx.config(&c)).target_identity("echo-prod");
    let err = Endpoint::from_shared(format!("https://{}", server.addr))
        .expect("uri")
        .connect_with_connector(connector.clone())
        .await
        .expect_err("https:// must be refused");
    let alts = AltsError::find(&err).unwrap_or_else(|| panic!("no AltsError in {}", chain(&err)));
    assert_eq!(alts.kind(), AltsErrorKind::Config);
    assert!(
        matches!(alts, AltsError::InvalidConfig(ConfigError::HttpsUri(_))),
        "{alts}"
    );
    assert!(alts.to_string().contains("http://"), "{alts}");
    try_connect(server.addr, connector).await.expect("http:// works");
}

/// Each refusal arrives with a kind the caller can act on.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_have_kinds() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let server = serve_plain(fx.config(&s)).await;

    let kind_of = |e: &tonic::transport::Error| AltsError::find(e).map(AltsError::kind);
    // The server is not the target.
    let wrong = AltsConnector::new(fx.config(&c)).target_identity("payments-prod");
    let err = try_connect(server.addr, wrong).await.expect_err("wrong target");
    assert_eq!(
        kind_of(&err),
        Some(AltsErrorKind::PeerNotAuthorized),
        "{}",
        chain(&err)
    );

    // A client from another CA: refused by the server, which tells the client.
    let mut other = Fixture::new();
    let stranger = other.issue("frontend-prod");
    let err = try_connect(
        server.addr,
        AltsConnector::new(other.config(&stranger)).accept_any_server(),
    )
    .await
    .expect_err("stranger");
    assert_eq!(
        kind_of(&err),
        Some(AltsErrorKind::RefusedByPeer),
        "{}",
        chain(&err)
    );
    // A server our revocation list names: refused by our client as revoked.
    let crl = fx
        .pki
        .write_crl("server.crl", &[s.handshake_revocation_id])
        .expect("crl");
    let careful = AltsConfig::from_files(fx.files(&c).crl(crl)).expect("load");
    let err = try_connect(server.addr, AltsConnector::new(careful).accept_any_server())
        .await
        .expect_err("revoked server");
    assert_eq!(
        kind_of(&err),
        Some(AltsErrorKind::CertificateRevoked),
        "{}",
        chain(&err)
    );

    // Nothing listening: an I/O error.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let err = try_connect(addr, AltsConnector::new(fx.config(&c)).accept_any_server())
        .await
        .expect_err("nothing listening");
    assert_eq!(kind_of(&err), Some(AltsErrorKind::Io), "{}", chain(&err));
    assert_serving(server.addr, &fx.config(&c), "frontend-prod").await;
}

/// A setter gives the new config its own settings (clones made before are
/// untouched); a reload replaces credentials in every clone and keeps each
/// clone's settings.
#[tokio::test(flavor = "multi_thread")]
async fn clones_are_independent_and_reload_keeps_settings() {
    let mut fx = Fixture::new();
    let s = fx.issue("echo-prod");
    let base = fx.config(&s);
    let pfs = base
        .clone()
        .pfs(true)
        .handshake_timeout(std::time::Duration::from_secs(3));
    assert!(!base.snapshot().pfs, "a clone's setter changed the original");
    assert!(pfs.snapshot().pfs);

    let renamed = fx.issue("echo2-prod");
    for f in ["handshake.cert", "handshake.key"] {
        std::fs::copy(renamed.dir.join(f), s.dir.join(f)).expect("copy");
    }
    base.reloader().expect("reloader").reload().expect("reload");
    assert_eq!(base.local_identity(), "echo2-prod");
    assert_eq!(pfs.local_identity(), "echo2-prod", "reload reaches every clone");
    assert!(pfs.snapshot().pfs, "reload dropped a setting");
    assert!(!base.snapshot().pfs);

    // A config not loaded from files has no reloader.
    let fixed = AltsConfig::new(alts_core::handshake::HandshakeConfig::clone(&base.snapshot()));
    let err = fixed.reloader().expect_err("no files");
    assert!(
        matches!(err, AltsError::InvalidConfig(ConfigError::NotFromFiles)),
        "{err}"
    );
}

/// `from_dir` uses the directory's root.pub and, when present, its
/// issuance policy: a policy that does not allow the client's issuer
/// refuses it.
#[tokio::test(flavor = "multi_thread")]
async fn from_dir_uses_the_directory_files() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let err = AltsConfig::from_files(CredentialFiles::from_dir(&s.dir)).expect_err("no policy: fail closed");
    assert!(
        matches!(err, AltsError::InvalidConfig(ConfigError::NoIssuancePolicy)),
        "{err}"
    );

    std::fs::write(
        s.dir.join(tonic_alts::file_names::ISSUANCE_POLICY),
        "[[rule]]\nissuer = \"corp-ca\"\ncategories = [\"workload\"]\nidentities = [\"*\"]\n",
    )
    .expect("write policy");
    let server = serve_plain(AltsConfig::from_files(CredentialFiles::from_dir(&s.dir)).expect("load")).await;
    let err = try_connect(server.addr, AltsConnector::new(fx.config(&c)).accept_any_server())
        .await
        .expect_err("scheduler is not an allowed issuer");
    assert_eq!(
        AltsError::find(&err).map(AltsError::kind),
        Some(AltsErrorKind::RefusedByPeer)
    );

    // A broken policy file names the file.
    std::fs::write(
        s.dir.join(tonic_alts::file_names::ISSUANCE_POLICY),
        "[[rule]]\nissuer = 3\n",
    )
    .expect("write");
    let err = AltsConfig::from_files(CredentialFiles::from_dir(&s.dir)).expect_err("bad policy");
    match &err {
        AltsError::File { path, .. } => assert!(path.ends_with("issuance-policy.toml"), "{err}"),
        other => panic!("expected a file error, got {other}"),
    }

    std::fs::write(
        s.dir.join(tonic_alts::file_names::ISSUANCE_POLICY),
        "[[rule]]\nissuer = \"scheduler\"\ncategories = [\"workload\"]\nidentities = [\"*-prod\"]\n",
    )
    .expect("write policy");
    let server = serve_plain(AltsConfig::from_files(CredentialFiles::from_dir(&s.dir)).expect("load")).await;
    assert_serving(server.addr, &fx.config(&c), "frontend-prod").await;
}

/// The client learns its server: the on-connect hook, the last peer and
/// which target matched.
#[tokio::test(flavor = "multi_thread")]
async fn client_sees_the_server_peer() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let server = serve_plain(fx.config(&s)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let connector = AltsConnector::new(fx.config(&c))
        .target_identities(["billing-prod", "echo-prod"])
        .on_connect(move |peer| {
            assert_eq!(peer.identity, "echo-prod");
            n.fetch_add(1, Ordering::SeqCst);
        });
    let mut client = try_connect(server.addr, connector.clone())
        .await
        .expect("connect");
    unary(&mut client, "x").await.expect("unary");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let peer = connector.last_peer().expect("last peer");
    assert_eq!(peer.matched_target.as_deref(), Some("echo-prod"));
    assert_eq!(peer.category, Some(alts_core::cert::Category::Workload));
    assert!(!peer.pfs);

    // Accepting any server: no matched target.
    let any = AltsConnector::new(fx.config(&c)).accept_any_server();
    try_connect(server.addr, any.clone()).await.expect("connect");
    assert_eq!(any.last_peer().expect("peer").matched_target, None);
}

/// Cache sizes: 0 disables the chain cache; clear_caches empties it.
#[tokio::test(flavor = "multi_thread")]
async fn cache_sizes_and_clearing() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let server = serve_plain(fx.config(&s)).await;

    let no_cache =
        AltsConfig::from_files(fx.files(&c).chain_cache_size(0).static_dh_cache_size(0)).expect("load");
    let cached = fx.config(&c);
    for config in [&no_cache, &cached] {
        for _ in 0..2 {
            try_connect(
                server.addr,
                AltsConnector::new(config.clone()).accept_any_server(),
            )
            .await
            .expect("connect");
        }
    }
    let len = |c: &AltsConfig| c.snapshot().verifier.chain_cache_len();
    let dh = |c: &AltsConfig| c.snapshot().credentials.static_dh_cache_len();
    assert_eq!((len(&no_cache), dh(&no_cache)), (0, 0));
    assert_eq!((len(&cached), dh(&cached)), (1, 1));
    cached.clear_caches();
    assert_eq!((len(&cached), dh(&cached)), (0, 0));
}

/// `bind` with a backlog serves like the default.
#[tokio::test(flavor = "multi_thread")]
async fn bind_with_backlog() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let incoming = AltsAcceptor::new(fx.config(&s))
        .backlog(16)
        .max_in_flight(8)
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = incoming.local_addr();
    let server = tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(incoming),
    );
    assert_serving(addr, &fx.config(&c), "frontend-prod").await;
    server.abort();
}

/// The credential agent's layout (a `..data` symlink to the current
/// generation, top-level links through it): a load reads one generation,
/// and swapping `..data` rotates every file at once.
#[tokio::test(flavor = "multi_thread")]
async fn data_symlink_layout_loads_one_generation() {
    let mut fx = Fixture::new();
    let one = fx.issue("echo-prod");
    let two = fx.issue("echo2-prod");
    let dir = fx.tmp.path().join("agent-layout");
    std::fs::create_dir_all(&dir).expect("dir");
    let names = ["handshake.cert", "handshake.key", "root.pub"];
    for (generation, src) in [("..gen1", &one), ("..gen2", &two)] {
        std::fs::create_dir_all(dir.join(generation)).expect("generation");
        for n in names {
            std::fs::copy(src.dir.join(n), dir.join(generation).join(n)).expect("copy");
        }
    }
    std::os::unix::fs::symlink("..gen1", dir.join("..data")).expect("..data");
    for n in names {
        std::os::unix::fs::symlink(format!("..data/{n}"), dir.join(n)).expect("link");
    }
    let config = AltsConfig::from_files(CredentialFiles::from_dir(&dir).accept_any_issuer()).expect("load");
    assert_eq!(config.local_identity(), "echo-prod");
    // Swap the generation the way the agent does: a new link renamed over `..data`.
    std::os::unix::fs::symlink("..gen2", dir.join("..data_tmp")).expect("tmp link");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
    config.reloader().expect("reloader").reload().expect("reload");
    assert_eq!(config.local_identity(), "echo2-prod");
}
