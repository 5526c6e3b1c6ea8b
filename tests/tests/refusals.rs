//! Refusals over real TCP: per-RPC authorization (TOML policy, closure,
//! interceptor), target-identity mismatch, revoked and policy-refused
//! clients. The server keeps serving others each time.

mod common;

use alts_examples::echo::StreamRequest;
use common::*;
use tonic::Code;
use tonic::service::Interceptor;
use tonic_alts::{AltsAuthzLayer, AltsConfig, AltsConnector, Authorizer, AuthzInterceptor, RpcAuthzPolicy};

const PROD_ONLY: &str = r#"
default = "deny"

[[rule]]
methods = ["/alts.examples.echo.Echo/*"]
allow = ["*-prod"]
deny = ["*-dev"]
"#;

/// Asserts `r` is the generic denial and its message reveals none of
/// `secrets` (identities, methods, patterns: they go to the server log only).
fn assert_denied<T: std::fmt::Debug>(r: Result<T, tonic::Status>, secrets: &[&str]) {
    let status = r.expect_err("call should be denied");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "unauthorized RPC");
    for w in secrets {
        assert!(
            !status.message().contains(w),
            "{:?} reveals {w:?}",
            status.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn toml_policy_denies_dev_and_allows_prod() {
    let mut fx = Fixture::new();
    let (s, prod, dev) = (
        fx.issue("echo-prod"),
        fx.issue("frontend-prod"),
        fx.issue("frontend-dev"),
    );
    let policy = RpcAuthzPolicy::from_toml_str(PROD_ONLY).expect("policy");
    let server = serve(
        fx.config(&s),
        ServerOpts::layer(AltsAuthzLayer::from_policy(policy)),
    )
    .await;

    let mut dev_client = connect(server.addr, &fx.config(&dev)).await;
    assert_denied(
        unary(&mut dev_client, "let me in").await,
        &["frontend-dev", "*-dev", "/alts.examples.echo.Echo/Unary"],
    );
    let streamed = dev_client
        .server_stream(StreamRequest {
            count: 1,
            payload_size: 1,
        })
        .await;
    assert_denied(
        streamed,
        &["frontend-dev", "/alts.examples.echo.Echo/ServerStream"],
    );

    let mut prod_client = connect(server.addr, &fx.config(&prod)).await;
    assert_eq!(
        unary(&mut prod_client, "hi")
            .await
            .expect("prod allowed")
            .peer_identity,
        "frontend-prod"
    );
    // The denied client's connection stays usable (and still denied).
    assert_denied(unary(&mut dev_client, "again").await, &["frontend-dev"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn closure_authorizer_decides_per_method() {
    let mut fx = Fixture::new();
    let (s, prod, dev) = (
        fx.issue("echo-prod"),
        fx.issue("frontend-prod"),
        fx.issue("frontend-dev"),
    );
    let authz = Authorizer::from_fn(|peer, method| {
        if method.ends_with("/Unary") && peer.identity.ends_with("-dev") {
            Err(format!("{} may not call {method}", peer.identity))
        } else {
            Ok(())
        }
    });
    let server = serve(fx.config(&s), ServerOpts::layer(AltsAuthzLayer::new(authz))).await;
    let mut dev_client = connect(server.addr, &fx.config(&dev)).await;
    assert_denied(
        unary(&mut dev_client, "x").await,
        &["frontend-dev may not call /alts.examples.echo.Echo/Unary"],
    );
    let mut s = dev_client
        .server_stream(StreamRequest {
            count: 2,
            payload_size: 3,
        })
        .await
        .expect("streaming allowed for dev")
        .into_inner();
    assert_eq!(
        s.message().await.expect("item").expect("some").peer_identity,
        "frontend-dev"
    );
    assert_serving(server.addr, &fx.config(&prod), "frontend-prod").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn interceptor_denies_dev() {
    let mut fx = Fixture::new();
    let (s, prod, dev) = (
        fx.issue("echo-prod"),
        fx.issue("frontend-prod"),
        fx.issue("frontend-dev"),
    );
    // Interceptors do not see the method: a service-wide rule.
    let policy =
        RpcAuthzPolicy::from_toml_str("[[rule]]\nmethods = [\"*\"]\nallow = [\"*\"]\ndeny = [\"*-dev\"]\n")
            .expect("policy");
    let intercept = AuthzInterceptor::new(Authorizer::from_policy(policy)).expect("service-wide policy");
    let server = serve(
        fx.config(&s),
        ServerOpts::interceptor(move |r| intercept.clone().call(r)),
    )
    .await;
    let mut dev_client = connect(server.addr, &fx.config(&dev)).await;
    assert_denied(unary(&mut dev_client, "x").await, &["frontend-dev", "*-dev"]);
    assert_serving(server.addr, &fx.config(&prod), "frontend-prod").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn target_identity_mismatch_fails_before_http2() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let (authz, seen) = recording_authorizer();
    let server = serve(fx.config(&s), ServerOpts::layer(AltsAuthzLayer::new(authz))).await;
    let config = fx.config(&c);

    let connector = AltsConnector::new(config.clone()).target_identity("payments-prod");
    let err = bounded("mismatch", try_connect(server.addr, connector))
        .await
        .expect_err("must not connect");
    let msg = chain(&err);
    assert!(
        msg.contains("payments-prod"),
        "error does not name the target: {msg}"
    );
    assert!(
        seen.lock().expect("lock").is_empty(),
        "no RPC may reach the server"
    );

    // The right target connects; the server kept serving.
    let connector = AltsConnector::new(config.clone()).target_identities(["payments-prod", "echo-prod"]);
    let mut ok = try_connect(server.addr, connector).await.expect("right target");
    assert_eq!(
        unary(&mut ok, "x").await.expect("unary").peer_identity,
        "frontend-prod"
    );
    assert_serving(server.addr, &config, "frontend-prod").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_peers_refused_at_handshake() {
    let mut fx = Fixture::new();
    let s = fx.issue("echo-prod");
    let good = fx.issue("frontend-prod");
    let stolen_key = fx.issue("stolen-prod");
    let stolen_principal = fx.issue("fired-prod");
    let crl = fx
        .pki
        .write_crl(
            "server.crl",
            &[
                stolen_key.handshake_revocation_id,
                stolen_principal.principal_revocation_id,
            ],
        )
        .expect("crl");
    let config = AltsConfig::from_files(fx.files(&s).crl(crl)).expect("server config");
    let server = serve_plain(config).await;

    for revoked in [&stolen_key, &stolen_principal] {
        let err = bounded(
            "revoked",
            try_connect(
                server.addr,
                AltsConnector::new(fx.config(revoked)).accept_any_server(),
            ),
        )
        .await
        .expect_err("revoked client must not connect");
        let msg = chain(&err);
        // The server's alert tells the client the kind of refusal only (the
        // detail is in the server's log).
        assert!(
            msg.contains("peer refused the handshake: peer certificate not accepted (alert code 3)")
                && !msg.contains("revoked"),
            "{}: {msg}",
            revoked.identity
        );
        assert_serving(server.addr, &fx.config(&good), "frontend-prod").await;
    }

    // The other way round: a client whose CRL revokes the server refuses it.
    let crl = fx
        .pki
        .write_crl("client.crl", &[s.handshake_revocation_id])
        .expect("crl");
    let wary = AltsConfig::from_files(fx.files(&good).crl(crl)).expect("client config");
    let err = bounded(
        "revoked server",
        try_connect(server.addr, AltsConnector::new(wary).accept_any_server()),
    )
    .await
    .expect_err("client must refuse a revoked server");
    assert!(chain(&err).contains("revoked"), "{}", chain(&err));
    assert_serving(server.addr, &fx.config(&good), "frontend-prod").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_refused_client_refused_at_handshake() {
    let mut fx = Fixture::new();
    let s = fx.issue("echo-prod");
    let good = fx.issue("frontend-prod");
    // A `*-prod` identity from an issuer the server's policy does not trust.
    let rogue = fx.issue_by("rogue", "frontend-prod", "mallory");
    let policy = fx.write(
        "server-policy.toml",
        "version = 1\n\n[[rule]]\nissuer = \"scheduler\"\ncategories = [\"workload\"]\nidentities = [\"*-prod\"]\n",
    );
    let config = AltsConfig::from_files(fx.files(&s).issuance_policy(policy)).expect("server config");
    let server = serve_plain(config).await;

    let err = bounded(
        "rogue",
        try_connect(
            server.addr,
            AltsConnector::new(fx.config(&rogue)).accept_any_server(),
        ),
    )
    .await
    .expect_err("client from an untrusted issuer must not connect");
    let msg = chain(&err);
    assert!(
        msg.contains("peer refused the handshake: peer certificate not accepted (alert code 3)")
            && !msg.contains("policy")
            && !msg.contains("mallory"),
        "{msg}"
    );
    assert_serving(server.addr, &fx.config(&good), "frontend-prod").await;
}
