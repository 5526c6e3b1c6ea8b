//! Per-RPC authorization by ALTS identity: a production server that refuses
//! every `*-dev` identity, in four forms (a TOML RPC authorization policy,
//! the same as gRFC A43 JSON, a closure, an interceptor). Runs a
//! self-contained check on loopback.
//!
//! ```text
//! cargo run -p alts-examples --bin authz
//! ```

use alts_core::cert::Category;
use alts_examples::echo::EchoRequest;
use alts_examples::echo::echo_client::EchoClient;
use alts_examples::echo::echo_server::EchoServer;
use alts_examples::{EchoService, Pki};
use tonic::transport::{Endpoint, Server};
use tonic_alts::{
    AltsAuthzLayer, AltsConfig, AltsConnector, AltsIncoming, Authorizer, AuthzInterceptor, RpcAuthzPolicy,
};

const RULES: &str = r#"
default = "deny"
[[rule]]
methods = ["/alts.examples.echo.Echo/*"]
deny = ["*-dev"]
allow = ["*-prod"]
categories = ["workload"]
"#;

/// The same decisions as `RULES`, as a gRFC A43 JSON policy (the format of
/// grpc-go's `authz` package), minus the category check A43 cannot express.
const A43: &str = r#"{
  "name": "echo-prod",
  "deny_rules": [{ "name": "no-dev", "source": { "principals": ["*-dev"] } }],
  "allow_rules": [{
    "name": "prod",
    "source": { "principals": ["*-prod"] },
    "request": { "paths": ["/alts.examples.echo.Echo/*"] }
  }]
}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut pki = Pki::new(tmp.path())?;
    let server = pki.issue("server", "echo-prod", Category::Workload, "scheduler", 3600)?;
    let prod = pki.issue("prod", "frontend-prod", Category::Workload, "scheduler", 3600)?;
    let dev = pki.issue("dev", "frontend-dev", Category::Workload, "scheduler", 3600)?;

    // 1. An RPC authorization policy from TOML, as a tower layer (which sees
    //    the method of every call). Denied calls get PERMISSION_DENIED
    //    "unauthorized RPC"; the reason goes to the server log.
    let layer = AltsAuthzLayer::from_policy(RpcAuthzPolicy::from_toml_str(RULES)?);
    // 2. The same as gRFC A43 JSON: `RpcAuthzPolicy::from_file("authz.json")`
    //    picks the format by extension.
    let _a43 = AltsAuthzLayer::from_policy(RpcAuthzPolicy::from_json_str(A43)?);
    // 3. The same decision as a closure that ignores the method.
    let closure = Authorizer::service_wide(|peer| {
        if peer.identity.ends_with("-dev") {
            Err("dev identities may not call production".into())
        } else {
            Ok(())
        }
    });
    // 4. Or per service, as an interceptor (interceptors do not see the
    //    method, so only service-wide authorizers are accepted).
    let _intercepted = EchoServer::with_interceptor(EchoService, AuthzInterceptor::new(closure)?);

    let incoming = AltsIncoming::bind("127.0.0.1:0", AltsConfig::from_files(pki.files(&server))?).await?;
    let uri = format!("http://{}", incoming.local_addr());
    tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(incoming),
    );

    for who in [&prod, &dev] {
        let connector =
            AltsConnector::new(AltsConfig::from_files(pki.files(who))?).target_identity("echo-prod");
        let channel = Endpoint::from_shared(uri.clone())?
            .connect_with_connector(connector)
            .await?;
        let res = EchoClient::new(channel)
            .unary(EchoRequest {
                message: "hi".into(),
                payload: vec![],
            })
            .await;
        match res {
            Ok(_) => println!("{}: allowed", who.identity),
            Err(s) => println!("{}: {:?}: {}", who.identity, s.code(), s.message()),
        }
    }
    Ok(())
}
