//! `alts-agent`: keeps the ALTS credential directories of this host's
//! workloads fresh (see the `alts_fleet::agent` module).
//!
//! ```text
//! alts-agent --config /etc/alts/agent.toml          # run until SIGTERM / Ctrl-C
//! alts-agent --config /etc/alts/agent.toml --once   # one pass (init containers)
//! alts-agent --config /etc/alts/agent.toml --metrics-listen 127.0.0.1:9464
//! ```
//!
//! Exit status: 0 when running ended by a signal, or with `--once` when every
//! workload is fresh; 1 when some workload is not fresh after `--once`; 2 when
//! the agent cannot start (configuration, own credentials, state directory).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use alts_fleet::agent::{Agent, AgentConfig};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// The ALTS credential agent.
#[derive(Parser, Debug)]
#[command(
    name = "alts-agent",
    version,
    about = "Keeps the ALTS credential directories of this host's workloads fresh."
)]
struct Cli {
    /// The agent's configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Run one pass and exit: 0 if every workload is fresh, 1 otherwise.
    #[arg(long)]
    once: bool,
    /// Serve the `alts_agent_*` metrics for Prometheus at
    /// `http://ADDR/metrics` (e.g. `127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("alts-agent: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    if let Some(addr) = cli.metrics_listen
        && let Err(e) = metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
    {
        eprintln!("alts-agent: metrics listener on {addr}: {e}");
        return ExitCode::from(2);
    }
    let config = match AgentConfig::from_file(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("alts-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let mut agent = match Agent::new(config).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("alts-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.once {
        agent.pass().await;
        let mut all = true;
        for s in agent.status() {
            all &= s.fresh;
            eprintln!(
                "alts-agent: {}@{} {}: {}",
                s.identity,
                s.cell,
                s.dir.display(),
                if s.fresh { "fresh" } else { "NOT fresh" }
            );
        }
        return if all { ExitCode::SUCCESS } else { ExitCode::from(1) };
    }
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping");
        signal.cancel();
    });
    agent.run(shutdown).await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
