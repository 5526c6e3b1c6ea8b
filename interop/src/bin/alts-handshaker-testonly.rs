//! INSECURE test-only `grpc.gcp.HandshakerService` using the null engine.
//!
//! Lets stock gRPC peers exchange records through our handshaker service
//! before the real ALTS engine exists. Identities are only *claimed*; the
//! key is derived from public nonces. Never use outside tests.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use alts_interop::callers::CallerPolicy;
use alts_interop::handshaker_service::{AltsHandshakerService, HandshakerConfig};
use alts_interop::listen::ListenAddr;
use alts_interop::null_engine::InsecureTestEngineFactory;
use alts_interop::targets::ClientTargets;
use clap::Parser;

/// INSECURE test-only ALTS handshaker service (null engine).
#[derive(Parser, Debug)]
struct Args {
    /// Where to listen: a loopback HOST:PORT or unix:PATH (plaintext gRPC).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Allow Unix socket callers running as this uid (repeatable; default:
    /// our own uid).
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Allow Unix socket callers with this primary gid (repeatable).
    #[arg(long = "allow-gid", value_name = "GID")]
    allow_gid: Vec<u32>,
    /// Allow a non-loopback TCP --listen.
    #[arg(long)]
    insecure_listen_any: bool,
    /// Targets TOML for client handshakes naming no server identity.
    #[arg(long, value_name = "FILE")]
    targets: Option<PathBuf>,
    /// Client handshakes naming no server identity accept any server.
    #[arg(long)]
    accept_any_server: bool,
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
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let listen: ListenAddr = match args.listen.parse() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("alts-handshaker-testonly: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let callers = if args.allow_uid.is_empty() && args.allow_gid.is_empty() {
        CallerPolicy::same_user()
    } else {
        CallerPolicy::allow(args.allow_uid.iter().copied(), args.allow_gid.iter().copied())
    }
    .allow_non_loopback_tcp(args.insecure_listen_any);
    let targets = match &args.targets {
        Some(p) => ClientTargets::from_file(p)?,
        None => ClientTargets::new(),
    }
    .accept_any_server(args.accept_any_server);
    let factory = Arc::new(InsecureTestEngineFactory::new(
        args.client_identity,
        args.server_identity,
    ));
    let config = HandshakerConfig {
        max_in_flight: args.max_in_flight,
        callers,
        client_targets: targets,
        handshake_timeout: Duration::from_secs(args.timeout_secs),
        ..HandshakerConfig::default()
    };
    let service = AltsHandshakerService::new(factory, config);
    let listener = match alts_interop::listen::bind_listen(&listen, args.insecure_listen_any).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("alts-handshaker-testonly: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    // A line on stdout that scripts can wait for.
    println!(
        "alts-handshaker-testonly: INSECURE test engine listening on {}",
        listener.describe()
    );
    alts_interop::serve_handshaker_on(listener, service, alts_interop::shutdown_signal()?).await?;
    Ok(ExitCode::SUCCESS)
}
