//! ALTS handshake metrics exported to Prometheus.
//!
//! tonic-alts records through the `metrics` facade; this example installs
//! `metrics-exporter-prometheus`, serves `/metrics` on `--listen`, runs an
//! ALTS server and a few clients on loopback (successful, resumed and
//! refused handshakes), prints the `alts_*` series and exits 0 if they are
//! there. With `--serve` it keeps serving `/metrics` afterwards.
//!
//! ```text
//! cargo run -p alts-examples --bin metrics -- --listen 127.0.0.1:9464 --serve
//! curl -s 127.0.0.1:9464/metrics | grep alts_
//! ```

use std::net::SocketAddr;

use alts_core::cert::Category;
use alts_core::crypto::RingRandom;
use alts_core::resumption::ResumptionKeys;
use alts_examples::echo::echo_server::EchoServer;
use alts_examples::{EchoService, Pki};
use clap::Parser;
use metrics_exporter_prometheus::PrometheusBuilder;
use tonic::transport::{Endpoint, Server};
use tonic_alts::{AltsAcceptor, AltsConfig, AltsConnector};

#[derive(Parser)]
struct Args {
    /// Where to serve /metrics.
    #[arg(long, default_value = "127.0.0.1:9464")]
    listen: SocketAddr,
    /// Keep serving /metrics after the run.
    #[arg(long)]
    serve: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (recorder, exporter) = PrometheusBuilder::new().with_http_listener(args.listen).build()?;
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    tokio::spawn(exporter);

    let tmp = tempfile::tempdir()?;
    let mut pki = Pki::new(tmp.path())?;
    let server = pki.issue("server", "greeter-prod", Category::Workload, "scheduler", 3600)?;
    let client = pki.issue("client", "frontend-prod", Category::Workload, "scheduler", 3600)?;
    let resumption = || ResumptionKeys::generate(&RingRandom::default());

    let server_config = AltsConfig::from_files(pki.files(&server))?.resumption(resumption()?);
    let incoming = AltsAcceptor::new(server_config).bind("127.0.0.1:0").await?;
    let uri = format!("http://{}", incoming.local_addr());
    tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(incoming),
    );

    let client_config = AltsConfig::from_files(pki.files(&client))?.resumption(resumption()?);
    let good = AltsConnector::new(client_config.clone()).target_identity("greeter-prod");
    for _ in 0..5 {
        Endpoint::from_shared(uri.clone())?
            .connect_with_connector(good.clone())
            .await?;
    }
    let wrong = AltsConnector::new(client_config).target_identity("payments-prod");
    let refused = Endpoint::from_shared(uri.clone())?
        .connect_with_connector(wrong)
        .await;
    anyhow::ensure!(refused.is_err(), "a wrong target must be refused");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let text = metrics.render();
    let alts: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("alts_") && !l.contains("_bucket"))
        .collect();
    println!("{}", alts.join("\n"));
    for name in [
        "alts_handshakes_total",
        "alts_handshake_duration_seconds",
        "alts_handshakes_in_flight",
        "alts_handshake_refusals_total",
        "alts_local_cert_expiry_seconds",
    ] {
        anyhow::ensure!(text.contains(name), "metric {name} missing");
    }
    anyhow::ensure!(
        text.contains(r#"alts_handshakes_total{side="client",outcome="ok",resumed="true"}"#),
        "no resumed handshake recorded"
    );
    if args.serve {
        println!("serving /metrics on {} (Ctrl-C to stop)", args.listen);
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}
