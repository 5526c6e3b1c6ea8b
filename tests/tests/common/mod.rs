//! Helpers shared by the integration tests: a throwaway PKI, an Echo server
//! over ALTS on an ephemeral loopback port, and channels to it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alts_core::cert::Category;
use alts_examples::echo::echo_client::EchoClient;
use alts_examples::echo::echo_server::EchoServer;
use alts_examples::echo::{EchoReply, EchoRequest};
use alts_examples::{EchoService, IssuedDir, Pki};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Status};
use tonic_alts::{
    AltsAuthzLayer, AltsConfig, AltsConnector, AltsIncoming, AltsPeer, Authorizer, CredentialFiles,
};

/// Message size limit on both sides (the default 4 MiB is too small for the
/// large-message tests).
pub const MAX_MSG: usize = 64 << 20;

/// Bound on any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A throwaway CA and its temp dir.
pub struct Fixture {
    pub pki: Pki,
    pub tmp: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        init_tracing();
        let tmp = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(tmp.path()).expect("pki");
        Self { pki, tmp }
    }

    /// Issues a workload identity (by the scheduler) into `dir/<identity>`.
    pub fn issue(&mut self, identity: &str) -> IssuedDir {
        self.issue_by(identity, identity, "scheduler")
    }

    /// Issues `identity` into `dir/<name>` with the given issuer.
    pub fn issue_by(&mut self, name: &str, identity: &str, issuer: &str) -> IssuedDir {
        self.pki
            .issue(name, identity, Category::Workload, issuer, 3600)
            .expect("issue")
    }

    /// Credential files of `issued`.
    pub fn files(&self, issued: &IssuedDir) -> CredentialFiles {
        self.pki.files(issued)
    }

    /// A config loaded from `issued`'s files.
    pub fn config(&self, issued: &IssuedDir) -> AltsConfig {
        AltsConfig::from_files(self.files(issued)).expect("load config")
    }

    /// Writes `text` to a file in the temp dir and returns its path.
    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

/// A tonic interceptor usable in [`ServerOpts`].
pub type Intercept = Arc<dyn Fn(Request<()>) -> Result<Request<()>, Status> + Send + Sync>;

/// How to build a test server.
pub struct ServerOpts {
    pub layer: AltsAuthzLayer,
    pub interceptor: Option<Intercept>,
    pub max_in_flight: usize,
}

impl Default for ServerOpts {
    fn default() -> Self {
        Self {
            layer: AltsAuthzLayer::peer_info_only(),
            interceptor: None,
            max_in_flight: 64,
        }
    }
}

impl ServerOpts {
    pub fn layer(layer: AltsAuthzLayer) -> Self {
        Self {
            layer,
            ..Self::default()
        }
    }

    pub fn interceptor(
        f: impl Fn(Request<()>) -> Result<Request<()>, Status> + Send + Sync + 'static,
    ) -> Self {
        Self {
            interceptor: Some(Arc::new(f)),
            ..Self::default()
        }
    }
}

/// An Echo server over ALTS on 127.0.0.1; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an Echo server with `config` and `opts`.
pub async fn serve(config: AltsConfig, opts: ServerOpts) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let incoming = AltsIncoming::new(listener, config, opts.max_in_flight);
    let addr = incoming.local_addr();
    let intercept = opts.interceptor.unwrap_or_else(|| Arc::new(Ok));
    let echo = EchoServer::new(EchoService)
        .max_decoding_message_size(MAX_MSG)
        .max_encoding_message_size(MAX_MSG);
    let echo = tonic::service::interceptor::InterceptedService::new(echo, move |r| intercept(r));
    let router = Server::builder().layer(opts.layer).add_service(echo);
    let task = tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming(incoming).await {
            panic!("server failed: {e}");
        }
    });
    TestServer { addr, task }
}

/// Starts an Echo server with `config`, exposing peer info only.
pub async fn serve_plain(config: AltsConfig) -> TestServer {
    serve(config, ServerOpts::default()).await
}

/// The Echo client type.
pub type Client = EchoClient<Channel>;

/// Connects one channel (one HTTP/2 connection) to `addr` over ALTS.
pub async fn try_connect(
    addr: SocketAddr,
    connector: AltsConnector,
) -> Result<Client, tonic::transport::Error> {
    try_connect_with(addr, connector, |e| e).await
}

/// Like [`try_connect`], with a customized endpoint.
pub async fn try_connect_with(
    addr: SocketAddr,
    connector: AltsConnector,
    endpoint: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Client, tonic::transport::Error> {
    let e = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(WAIT);
    let channel = endpoint(e).connect_with_connector(connector).await?;
    Ok(EchoClient::new(channel)
        .max_decoding_message_size(MAX_MSG)
        .max_encoding_message_size(MAX_MSG))
}

/// Connects and panics on failure.
pub async fn connect(addr: SocketAddr, config: &AltsConfig) -> Client {
    match try_connect(addr, AltsConnector::new(config.clone()).accept_any_server()).await {
        Ok(c) => c,
        Err(e) => panic!("connect to {addr}: {}", chain(&e)),
    }
}

/// One unary call.
pub async fn unary(client: &mut Client, message: &str) -> Result<EchoReply, Status> {
    let req = EchoRequest {
        message: message.into(),
        payload: vec![],
    };
    client.unary(req).await.map(|r| r.into_inner())
}

/// Connects with `config` and checks a unary call answers with `identity`.
pub async fn assert_serving(addr: SocketAddr, config: &AltsConfig, identity: &str) {
    let mut c = connect(addr, config).await;
    let r = unary(&mut c, "still there?").await.expect("unary");
    assert_eq!(r.message, "still there?");
    assert_eq!(r.peer_identity, identity);
}

/// An error with all its sources, for assertions on messages.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// An authorizer that lets everything through and records every peer it
/// sees, in order.
pub fn recording_authorizer() -> (Authorizer, Arc<Mutex<Vec<AltsPeer>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let a = Authorizer::from_fn(move |peer, _method| {
        s.lock().expect("lock").push(peer.clone());
        Ok(())
    });
    (a, seen)
}

/// Runs `f` under the test-wide time bound.
pub async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: took longer than {WAIT:?}"),
    }
}
