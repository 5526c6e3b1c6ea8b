//! Per-RPC authorization over real loopback sockets: generic denials (TOML
//! and gRFC A43 JSON policies), asynchronous authorizers choosing their
//! status, `require_identity`, health-check exemptions, the fail-closed
//! interceptor, and policy reloading. Every refusal is shown next to an
//! honest peer that is still served.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use alts_examples::EchoService;
use alts_examples::echo::echo_client::EchoClient;
use alts_examples::echo::echo_server::EchoServer;
use common::*;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_alts::authz::{AuthorizeRpc, RpcInfo, authorize_fn, require_identity};
use tonic_alts::{
    AltsAuthzLayer, AltsConfig, AltsConnector, AltsIncoming, Authorizer, AuthzInterceptor, RpcAuthzPolicy,
};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const ECHO_UNARY: &str = "/alts.examples.echo.Echo/Unary";

/// Asserts `r` is the generic denial, revealing none of `secrets`.
fn assert_generic_denial<T: std::fmt::Debug>(r: Result<T, tonic::Status>, secrets: &[&str]) {
    let status = r.expect_err("call should be denied");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "unauthorized RPC", "{status:?}");
    assert!(status.details().is_empty(), "{status:?}");
    for s in secrets {
        assert!(
            !status.message().contains(s),
            "{:?} reveals {s:?}",
            status.message()
        );
        assert!(
            !format!("{:?}", status.metadata()).contains(s),
            "{:?} reveals {s:?}",
            status.metadata()
        );
    }
}

const PROD_ONLY_TOML: &str = r#"
[[rule]]
methods = ["/alts.examples.echo.Echo/*"]
deny = ["*-dev"]
allow = ["*-prod"]
"#;

const PROD_ONLY_A43: &str = r#"{
  "name": "prod-only",
  "deny_rules": [{ "name": "no-dev", "source": { "principals": ["*-dev"] } }],
  "allow_rules": [{
    "name": "prod",
    "source": { "principals": ["*-prod"] },
    "request": { "paths": ["/alts.examples.echo.Echo/*"] }
  }]
}"#;

#[tokio::test(flavor = "multi_thread")]
async fn toml_and_a43_files_deny_generically_and_serve_prod() {
    let mut fx = Fixture::new();
    let (s, prod, dev) = (
        fx.issue("echo-prod"),
        fx.issue("frontend-prod"),
        fx.issue("frontend-dev"),
    );
    let files = [
        fx.write("authz.toml", PROD_ONLY_TOML),
        fx.write("authz.json", PROD_ONLY_A43),
    ];
    for file in files {
        let policy = RpcAuthzPolicy::from_file(&file).expect("policy");
        let server = serve(
            fx.config(&s),
            ServerOpts::layer(AltsAuthzLayer::from_policy(policy)),
        )
        .await;
        let mut dev_client = connect(server.addr, &fx.config(&dev)).await;
        assert_generic_denial(
            unary(&mut dev_client, "let me in").await,
            &["frontend-dev", "*-dev", "Echo", "Unary", "no-dev", "rule"],
        );
        assert_serving(server.addr, &fx.config(&prod), "frontend-prod").await;
        // The denied client's connection stays usable (and still denied).
        assert_generic_denial(unary(&mut dev_client, "again").await, &["frontend-dev"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a43_header_rules_over_sockets() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let policy = RpcAuthzPolicy::from_json_str(
        r#"{"name": "tenants", "allow_rules": [{"name": "acme",
            "source": {"principals": ["frontend-prod"]},
            "request": {"headers": [{"key": "x-tenant", "values": ["acme", "acme-*"]}]}}]}"#,
    )
    .expect("policy");
    let server = serve(
        fx.config(&s),
        ServerOpts::layer(AltsAuthzLayer::from_policy(policy)),
    )
    .await;
    let mut client = connect(server.addr, &fx.config(&c)).await;
    let call = |tenant: Option<&'static str>| {
        let mut req = tonic::Request::new(alts_examples::echo::EchoRequest {
            message: "x".into(),
            payload: vec![],
        });
        if let Some(t) = tenant {
            req.metadata_mut().insert("x-tenant", t.parse().expect("ascii"));
        }
        req
    };
    assert!(client.unary(call(Some("acme-eu"))).await.is_ok());
    assert_generic_denial(client.unary(call(Some("evil"))).await, &["x-tenant", "evil"]);
    assert_generic_denial(client.unary(call(None)).await, &["x-tenant"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn async_authorizer_chooses_its_status() {
    let mut fx = Fixture::new();
    let (s, prod, dev, batch) = (
        fx.issue("echo-prod"),
        fx.issue("frontend-prod"),
        fx.issue("frontend-dev"),
        fx.issue("batch-prod"),
    );
    #[derive(Clone)]
    struct Lookup;
    impl AuthorizeRpc for Lookup {
        type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tonic::Status>> + Send>>;
        fn authorize(&self, rpc: &RpcInfo<'_>) -> Self::Future {
            let identity = rpc.peer.identity.clone();
            let method = rpc.method.to_owned();
            let from_loopback = rpc.remote_addr().is_some_and(|a| a.ip().is_loopback());
            Box::pin(async move {
                // Stands in for a call to a database.
                tokio::time::sleep(Duration::from_millis(5)).await;
                if !from_loopback || method != ECHO_UNARY {
                    return Err(tonic::Status::permission_denied("unauthorized RPC"));
                }
                match identity.as_str() {
                    "frontend-prod" => Ok(()),
                    "batch-prod" => Err(tonic::Status::resource_exhausted("quota exceeded")),
                    _ => Err(tonic::Status::unauthenticated("unknown caller")),
                }
            })
        }
    }
    let server = serve(
        fx.config(&s),
        ServerOpts::layer(AltsAuthzLayer::async_authorizer(Lookup)),
    )
    .await;
    let mut dev_client = connect(server.addr, &fx.config(&dev)).await;
    let status = unary(&mut dev_client, "x").await.expect_err("dev refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "unknown caller");
    let mut batch_client = connect(server.addr, &fx.config(&batch)).await;
    let status = unary(&mut batch_client, "x").await.expect_err("quota");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_serving(server.addr, &fx.config(&prod), "frontend-prod").await;

    // A closure form; an `OK` "refusal" still refuses (generically).
    let authz = authorize_fn(|rpc: &RpcInfo<'_>| {
        let ok = rpc.peer.identity == "frontend-prod";
        async move {
            if ok {
                Ok(())
            } else {
                Err(tonic::Status::ok("looks fine"))
            }
        }
    });
    let server = serve(
        fx.config(&s),
        ServerOpts::layer(AltsAuthzLayer::async_authorizer(authz)),
    )
    .await;
    let mut dev_client = connect(server.addr, &fx.config(&dev)).await;
    assert_generic_denial(unary(&mut dev_client, "x").await, &["looks fine"]);
    assert_serving(server.addr, &fx.config(&prod), "frontend-prod").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn require_identity_allows_listed_identities_only() {
    let mut fx = Fixture::new();
    let (s, greeter, oncall, other) = (
        fx.issue("echo-prod"),
        fx.issue("greeter-prod"),
        fx.issue("oncall-alice"),
        fx.issue("greeter-dev"),
    );
    let authz = require_identity(["greeter-prod", "oncall-*"]).expect("patterns");
    // As a layer ...
    let server = serve(
        fx.config(&s),
        ServerOpts::layer(AltsAuthzLayer::new(authz.clone())),
    )
    .await;
    let mut refused = connect(server.addr, &fx.config(&other)).await;
    assert_generic_denial(unary(&mut refused, "x").await, &["greeter-dev"]);
    assert_serving(server.addr, &fx.config(&greeter), "greeter-prod").await;
    assert_serving(server.addr, &fx.config(&oncall), "oncall-alice").await;
    // ... and as an interceptor.
    let interceptor = AuthzInterceptor::new(authz).expect("service-wide");
    let server = serve(
        fx.config(&s),
        ServerOpts::interceptor(move |r| interceptor.clone().call(r)),
    )
    .await;
    let mut refused = connect(server.addr, &fx.config(&other)).await;
    assert_generic_denial(unary(&mut refused, "x").await, &["greeter-dev"]);
    assert_serving(server.addr, &fx.config(&greeter), "greeter-prod").await;
}

#[tokio::test(flavor = "multi_thread")]
#[allow(deprecated)]
async fn interceptor_with_method_scoped_policy_fails_closed() {
    let mut fx = Fixture::new();
    let (s, prod, dev) = (
        fx.issue("echo-prod"),
        fx.issue("frontend-prod"),
        fx.issue("frontend-dev"),
    );
    // A deny rule for one method and "allow" otherwise: an interceptor, which
    // cannot see the method, would never apply the deny rule.
    let scoped = "default = \"allow\"\n[[rule]]\nmethods = [\"/alts.examples.echo.Echo/Unary\"]\ndeny = [\"*-dev\"]\nallow = [\"*\"]\n";
    let policy = || RpcAuthzPolicy::from_toml_str(scoped).expect("policy");
    assert!(AuthzInterceptor::new(Authorizer::from_policy(policy())).is_err());

    let legacy = tonic_alts::authz_interceptor(Authorizer::from_policy(policy()));
    let server = serve(fx.config(&s), ServerOpts::interceptor(move |r| legacy.clone()(r))).await;
    for who in [&dev, &prod] {
        let mut c = connect(server.addr, &fx.config(who)).await;
        assert_generic_denial(unary(&mut c, "x").await, &[&who.identity]);
    }

    // The same policy in the layer, which sees the method, serves prod.
    let server = serve(
        fx.config(&s),
        ServerOpts::layer(AltsAuthzLayer::from_policy(policy())),
    )
    .await;
    let mut c = connect(server.addr, &fx.config(&dev)).await;
    assert_generic_denial(unary(&mut c, "x").await, &["frontend-dev"]);
    assert_serving(server.addr, &fx.config(&prod), "frontend-prod").await;
}

/// A server with the health service and Echo behind `layer`, over ALTS
/// (`config`) or plain TCP (`None`); stops when dropped.
struct HealthServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_with_health(config: Option<AltsConfig>, layer: AltsAuthzLayer) -> HealthServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let router = Server::builder()
        .layer(layer)
        .add_service(health)
        .add_service(EchoServer::new(EchoService));
    let task = tokio::spawn(async move {
        let r = match config {
            Some(c) => {
                router
                    .serve_with_incoming(AltsIncoming::new(listener, c, 64))
                    .await
            }
            None => {
                router
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await
            }
        };
        if let Err(e) = r {
            panic!("server failed: {e}");
        }
    });
    HealthServer { addr, task }
}

async fn channel(addr: SocketAddr, alts: Option<&AltsConfig>) -> Channel {
    let e = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(WAIT);
    match alts {
        Some(c) => {
            e.connect_with_connector(AltsConnector::new(c.clone()).accept_any_server())
                .await
        }
        None => e.connect().await,
    }
    .expect("connect")
}

async fn health_check(ch: &Channel) -> Result<(), tonic::Status> {
    HealthClient::new(ch.clone())
        .check(HealthCheckRequest { service: "".into() })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_pass_only_when_exempted() {
    let mut fx = Fixture::new();
    let (s, prod, dev) = (
        fx.issue("echo-prod"),
        fx.issue("frontend-prod"),
        fx.issue("frontend-dev"),
    );
    let authz = || require_identity(["frontend-prod"]).expect("patterns");

    // Default: the health service is authorized like any other.
    let strict = AltsAuthzLayer::new(authz());
    let alts = serve_with_health(Some(fx.config(&s)), strict.clone()).await;
    let dev_ch = channel(alts.addr, Some(&fx.config(&dev))).await;
    assert_generic_denial(health_check(&dev_ch).await, &["frontend-dev"]);
    let prod_ch = channel(alts.addr, Some(&fx.config(&prod))).await;
    health_check(&prod_ch).await.expect("prod may check health");
    let plain = serve_with_health(None, strict).await;
    let no_peer = channel(plain.addr, None).await;
    assert_generic_denial(health_check(&no_peer).await, &[]);

    // Exempted: Check passes for anyone (even without ALTS); the rest is
    // still authorized.
    let lenient = AltsAuthzLayer::new(authz())
        .allow_unauthenticated(["/grpc.health.v1.Health/Check"])
        .expect("method pattern");
    let alts = serve_with_health(Some(fx.config(&s)), lenient.clone()).await;
    let dev_ch = channel(alts.addr, Some(&fx.config(&dev))).await;
    health_check(&dev_ch).await.expect("exempt");
    assert_generic_denial(
        unary(&mut EchoClient::new(dev_ch.clone()), "x").await,
        &["frontend-dev"],
    );
    let prod_ch = channel(alts.addr, Some(&fx.config(&prod))).await;
    assert_eq!(
        unary(&mut EchoClient::new(prod_ch), "x")
            .await
            .expect("prod served")
            .peer_identity,
        "frontend-prod"
    );
    let plain = serve_with_health(None, lenient).await;
    let no_peer = channel(plain.addr, None).await;
    health_check(&no_peer).await.expect("exempt without a peer");
    assert_generic_denial(unary(&mut EchoClient::new(no_peer), "x").await, &[]);

    // Exemptions are validated method patterns.
    assert!(
        AltsAuthzLayer::new(authz())
            .allow_unauthenticated(["grpc.health.v1.Health/Check"])
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reloaded_policy_denies_next_rpc_and_invalid_files_keep_the_old() {
    let mut fx = Fixture::new();
    let (s, prod, dev) = (
        fx.issue("echo-prod"),
        fx.issue("frontend-prod"),
        fx.issue("frontend-dev"),
    );
    let allow_all = "[[rule]]\nmethods = [\"*\"]\nallow = [\"frontend-*\"]\n";
    let path = fx.write("authz.toml", allow_all);
    let every = Duration::from_millis(50);
    let (authz, _handle) = Authorizer::from_file_reloading(&path, every).expect("policy");
    let server = serve(fx.config(&s), ServerOpts::layer(AltsAuthzLayer::new(authz))).await;
    let mut dev_client = connect(server.addr, &fx.config(&dev)).await;
    let mut prod_client = connect(server.addr, &fx.config(&prod)).await;
    unary(&mut dev_client, "x").await.expect("dev allowed at first");

    // Deny dev: its next RPC on the same connection is refused within a few
    // poll intervals (generously bounded for a loaded machine).
    fx.write("authz.toml", PROD_ONLY_TOML);
    let started = tokio::time::Instant::now();
    loop {
        match unary(&mut dev_client, "x").await {
            Err(status) => {
                assert_generic_denial(Err::<(), _>(status), &["frontend-dev"]);
                break;
            }
            Ok(_) => {
                assert!(started.elapsed() < WAIT, "policy change not picked up");
                tokio::time::sleep(every / 5).await;
            }
        }
    }
    unary(&mut prod_client, "x").await.expect("prod still served");

    // An invalid file is refused; the previous policy stays in force.
    fx.write(
        "authz.toml",
        "[[rule]]\nmethods = [\"*\"]\nallow = [\"*-dev*\"]\n",
    );
    tokio::time::sleep(every * 6).await;
    assert_generic_denial(unary(&mut dev_client, "x").await, &["frontend-dev"]);
    unary(&mut prod_client, "x").await.expect("prod still served");
    assert_serving(server.addr, &fx.config(&prod), "frontend-prod").await;
}
