//! INSECURE test-only `grpc.gcp.HandshakerService` using the null engine.
//!
//! Lets stock gRPC peers exchange records through our handshaker service
//! before the real ALTS engine exists. Identities are only *claimed*; the
//! key is derived from public nonces. Never use outside tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alts_interop::handshaker_service::{AltsHandshakerService, HandshakerConfig};
use alts_interop::null_engine::InsecureTestEngineFactory;
use clap::Parser;

/// INSECURE test-only ALTS handshaker service (null engine).
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (plaintext gRPC).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Identity claimed by client-side handshakes.
    #[arg(long, default_value = "null-client@insecure.test")]
    client_identity: String,
    /// Identity claimed by server-side handshakes.
    #[arg(long, default_value = "null-server@insecure.test")]
    server_identity: String,
    /// Maximum handshakes holding a slot at once.
    #[arg(long, default_value_t = 128)]
    max_in_flight: usize,
    /// Per-handshake deadline in seconds.
    #[arg(long, default_value_t = 20)]
    timeout_secs: u64,
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
    let factory = Arc::new(InsecureTestEngineFactory::new(
        args.client_identity,
        args.server_identity,
    ));
    let config = HandshakerConfig {
        max_in_flight: args.max_in_flight,
        handshake_timeout: Duration::from_secs(args.timeout_secs),
        ..HandshakerConfig::default()
    };
    let service = AltsHandshakerService::new(factory, config);
    let listener = alts_interop::bind(args.listen).await?;
    // A line on stdout that scripts can wait for.
    println!(
        "alts-handshaker-testonly: INSECURE test engine listening on {}",
        listener.local_addr()?
    );
    alts_interop::serve_handshaker(listener, service, alts_interop::shutdown_signal()?).await?;
    Ok(())
}
