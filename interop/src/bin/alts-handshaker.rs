//! `alts-handshaker`: a `grpc.gcp.HandshakerService` running our ALTS
//! handshake, so unmodified stock gRPC apps (Go, C++/Python, Java) can use
//! our ALTS. Point them at this service (see interop/README.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alts_interop::engine::AltsEngineFactory;
use alts_interop::handshaker_service::{AltsHandshakerService, HandshakerConfig};
use clap::Parser;
use tonic_alts::AltsConfig;

/// ALTS handshaker service for stock gRPC stacks (plaintext gRPC: listen on
/// a local address only).
#[derive(Parser, Debug)]
#[command(name = "alts-handshaker")]
struct Args {
    /// Address to listen on (stock gRPC dials metadata.google.internal.:8080).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory with handshake.cert and handshake.key (`alts issue handshake`).
    #[arg(long)]
    creds: PathBuf,
    /// The signing service's root.pub.
    #[arg(long)]
    root: PathBuf,
    /// Policy TOML (without one every valid chain under the root is accepted).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Signed revocation list.
    #[arg(long)]
    crl: Option<PathBuf>,
    /// Maximum handshakes holding a slot at once (excess callers wait).
    #[arg(long, default_value_t = 128)]
    max_in_flight: usize,
    /// Per-handshake deadline in seconds.
    #[arg(long, default_value_t = 20)]
    timeout_secs: u64,
    /// How often to check the credential files for changes, in seconds.
    #[arg(long, default_value_t = 30)]
    reload_secs: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let files = alts_interop::credential_files(
        &args.creds,
        &args.root,
        args.policy.as_deref(),
        args.crl.as_deref(),
    );
    let config = AltsConfig::from_files(files)?;
    let identity = config.snapshot().credentials.identity().to_owned();
    let _reloader = config
        .reloader()?
        .spawn(Duration::from_secs(args.reload_secs.max(1)));
    let factory = Arc::new(AltsEngineFactory::new(config));
    let service = AltsHandshakerService::new(
        factory,
        HandshakerConfig {
            max_in_flight: args.max_in_flight,
            handshake_timeout: Duration::from_secs(args.timeout_secs),
            ..HandshakerConfig::default()
        },
    );
    let listener = alts_interop::bind(args.listen).await?;
    // A line on stdout that scripts can wait for.
    println!(
        "alts-handshaker: identity {identity:?} listening on {}",
        listener.local_addr()?
    );
    alts_interop::serve_handshaker(listener, service, alts_interop::shutdown_signal()?).await?;
    Ok(())
}
