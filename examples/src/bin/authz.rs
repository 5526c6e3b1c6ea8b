//! Per-RPC authorization by ALTS identity: a production server that refuses
//! every `*-dev` identity, in three forms (TOML rules, a closure, an
//! interceptor). Runs a self-contained check on loopback.
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
    AltsAuthzLayer, AltsConfig, AltsConnector, AltsIncoming, Authorizer, AuthzPolicy, authz_interceptor,
};

const RULES: &str = r#"
default = "deny"
[[rule]]
methods = ["/alts.examples.echo.Echo/*"]
deny = ["*-dev"]
allow = ["*-prod"]
categories = ["workload"]
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut pki = Pki::new(tmp.path())?;
    let server = pki.issue("server", "echo-prod", Category::Workload, "scheduler", 3600)?;
    let prod = pki.issue("prod", "frontend-prod", Category::Workload, "scheduler", 3600)?;
    let dev = pki.issue("dev", "frontend-dev", Category::Workload, "scheduler", 3600)?;

    // 1. Rules from TOML, as a tower layer.
    let layer = AltsAuthzLayer::from_policy(AuthzPolicy::from_toml(RULES)?);
    // 2. The same decision as a closure: `AltsAuthzLayer::new(Authorizer::from_fn(...))`.
    let _closure = Authorizer::from_fn(|peer, _method| {
        if peer.identity.ends_with("-dev") {
            Err("dev identities may not call production".into())
        } else {
            Ok(())
        }
    });
    // 3. Or per service, as an interceptor.
    let _intercepted = EchoServer::with_interceptor(EchoService, authz_interceptor(_closure.clone()));

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
