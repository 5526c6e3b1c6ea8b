//! The tonic-alts demo: a throwaway CA, a real ALTS-protected tonic server on
//! loopback, and clients that show what ALTS allows and refuses.
//!
//! `cargo run --release -p alts-examples --bin demo`

use std::time::{Duration, Instant};

use alts_core::cert::Category;
use alts_core::crypto::RingRandom;
use alts_core::resumption::ResumptionKeys;
use alts_examples::echo::EchoRequest;
use alts_examples::echo::echo_client::EchoClient;
use alts_examples::echo::echo_server::EchoServer;
use alts_examples::{EchoService, Pki};
use tokio::io::AsyncWriteExt;
use tonic::transport::{Endpoint, Server};
use tonic_alts::{
    AltsAcceptor, AltsAuthzLayer, AltsConfig, AltsConnector, AltsError, AltsErrorKind, RpcAuthzPolicy,
};

const AUTHZ: &str = r#"
# Production: no *-dev identity may call anything.
default = "deny"
[[rule]]
methods = ["*"]
deny = ["*-dev"]
allow = ["*"]
"#;

const POLICY: &str = r#"
# The workload scheduler may issue workload certificates for any identity.
[[rule]]
issuer = "scheduler"
categories = ["workload"]
identities = ["*"]
"#;

struct Report {
    ok: bool,
}

impl Report {
    fn check(&mut self, what: &str, pass: bool, detail: impl std::fmt::Display) {
        println!("  [{}] {what}: {detail}", if pass { "ok" } else { "FAIL" });
        self.ok &= pass;
    }
}

fn resumption() -> anyhow::Result<ResumptionKeys> {
    Ok(ResumptionKeys::generate(&RingRandom::default())?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .init();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    let tmp = tempfile::tempdir()?;
    let mut pki = Pki::new(tmp.path())?;
    let day = 86_400;
    let server_id = pki.issue("server", "greeter-prod", Category::Workload, "scheduler", day)?;
    let prod = pki.issue(
        "frontend-prod",
        "frontend-prod",
        Category::Workload,
        "scheduler",
        day,
    )?;
    let dev = pki.issue(
        "frontend-dev",
        "frontend-dev",
        Category::Workload,
        "scheduler",
        day,
    )?;
    let revoked = pki.issue("revoked", "batch-prod", Category::Workload, "scheduler", day)?;
    let crl = pki.write_crl("crl.bin", &[revoked.handshake_revocation_id])?;
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, POLICY)?;
    println!(
        "tonic-alts demo: throwaway CA and credentials in {}",
        tmp.path().display()
    );

    // Server: ALTS on loopback, CRL + policy at the handshake, per-RPC authz.
    let server_cfg = AltsConfig::from_files(pki.files(&server_id).issuance_policy(&policy).crl(&crl))?
        .resumption(resumption()?);
    let incoming = AltsAcceptor::new(server_cfg).bind("127.0.0.1:0").await?;
    let addr = incoming.local_addr();
    let authz = AltsAuthzLayer::from_policy(RpcAuthzPolicy::from_toml_str(AUTHZ)?);
    tokio::spawn(
        Server::builder()
            .layer(authz)
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(incoming),
    );
    println!("server greeter-prod listening on {addr}\n");
    let uri = format!("http://{addr}");

    let client_cfg = |who: &alts_examples::IssuedDir| -> anyhow::Result<AltsConfig> {
        Ok(AltsConfig::from_files(pki.files(who).issuance_policy(&policy))?)
    };
    let mut report = Report { ok: true };

    // 1. A production client: RPCs succeed and the server sees its identity.
    let connector = AltsConnector::new(client_cfg(&prod)?).target_identity("greeter-prod");
    let channel = Endpoint::from_shared(uri.clone())?
        .connect_with_connector(connector)
        .await?;
    let reply = EchoClient::new(channel)
        .unary(EchoRequest {
            message: "hello".into(),
            payload: vec![],
        })
        .await;
    match reply {
        Ok(r) => report.check(
            "prod client",
            r.get_ref().peer_identity == "frontend-prod",
            format!("RPC ok, server saw {:?}", r.get_ref().peer_identity),
        ),
        Err(e) => report.check("prod client", false, e),
    }

    // 2. A *-dev client: the handshake succeeds, the authz layer denies the RPC.
    let connector = AltsConnector::new(client_cfg(&dev)?).target_identity("greeter-prod");
    let channel = Endpoint::from_shared(uri.clone())?
        .connect_with_connector(connector)
        .await?;
    match EchoClient::new(channel)
        .unary(EchoRequest {
            message: "hi".into(),
            payload: vec![],
        })
        .await
    {
        Err(s) if s.code() == tonic::Code::PermissionDenied => {
            report.check("dev client", true, format!("denied: {}", s.message()))
        }
        other => report.check(
            "dev client",
            false,
            format!("expected PERMISSION_DENIED, got {other:?}"),
        ),
    }

    // 3. A revoked client: the server refuses the handshake (and tells the
    // client only that it was refused, not why).
    let connector = AltsConnector::new(client_cfg(&revoked)?).target_identity("greeter-prod");
    let res = Endpoint::from_shared(uri.clone())?
        .connect_with_connector(connector)
        .await;
    expect_refusal(&mut report, "revoked client", res, AltsErrorKind::RefusedByPeer);

    // 4. A client expecting another server identity refuses before HTTP/2.
    let connector = AltsConnector::new(client_cfg(&prod)?).target_identity("payments-prod");
    let res = Endpoint::from_shared(uri.clone())?
        .connect_with_connector(connector)
        .await;
    expect_refusal(&mut report, "wrong target", res, AltsErrorKind::PeerNotAuthorized);

    // 5. Resumption: the second connection skips certificates and static DH.
    let cfg = client_cfg(&prod)?.resumption(resumption()?);
    let connector = AltsConnector::new(cfg.clone()).target_identity("greeter-prod");
    let rounds = 50u32;
    let (mut full, mut resumed) = (Duration::ZERO, Duration::ZERO);
    let (mut n_resumed, mut n_full) = (0u32, 0u32);
    for _ in 0..rounds {
        // Full: clear the ticket by using a fresh config without tickets.
        let fresh = AltsConnector::new(client_cfg(&prod)?).target_identity("greeter-prod");
        let t = Instant::now();
        fresh.connect(uri.parse()?).await?.shutdown().await?;
        full += t.elapsed();
        n_full += 1;
        let t = Instant::now();
        let mut s = connector.connect(uri.parse()?).await?;
        s.shutdown().await?;
        resumed += t.elapsed();
        n_resumed += u32::from(s.peer().resumed());
    }
    let (f, r) = (full / n_full, resumed / rounds);
    report.check(
        "resumption",
        n_resumed + 1 >= rounds,
        format!(
            "{n_resumed}/{rounds} resumed; full handshake {f:?}, resumed {r:?} ({:.1}x faster)",
            f.as_secs_f64() / r.as_secs_f64()
        ),
    );

    print_metrics(&metrics);
    println!();
    if report.ok {
        println!("demo: every expectation held");
        Ok(())
    } else {
        println!("demo: some expectations FAILED");
        std::process::exit(1)
    }
}

/// Checks that a connection was refused with the expected kind of error.
fn expect_refusal<T>(
    report: &mut Report,
    what: &str,
    res: Result<T, tonic::transport::Error>,
    want: AltsErrorKind,
) {
    match res {
        Ok(_) => report.check(what, false, "connected, expected a refusal"),
        Err(e) => match AltsError::find(&e) {
            Some(alts) => report.check(
                what,
                alts.kind() == want,
                format!("refused ({}): {alts}", alts.kind()),
            ),
            None => report.check(what, false, format!("not an ALTS refusal: {e}")),
        },
    }
}

/// Prints the handshake counters recorded during the run.
fn print_metrics(handle: &metrics_exporter_prometheus::PrometheusHandle) {
    println!("\nmetrics (Prometheus format; see examples/src/bin/metrics.rs):");
    for line in handle.render().lines() {
        if line.starts_with("alts_handshakes_total") || line.starts_with("alts_handshake_refusals_total") {
            println!("  {line}");
        }
    }
}
