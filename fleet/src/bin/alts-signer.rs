//! `alts-signer`: the fleet's signing service (see `alts_fleet::signer` and
//! the crate README). Prints `alts-signer listening on ADDR` on standard
//! output once it accepts connections; stops on SIGINT or SIGTERM.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use alts_fleet::signer::store::StateLocation;
use alts_fleet::signer::{self, SignerOptions};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "alts-signer",
    version,
    about = "The ALTS signing service: principal certificates, revocation-ID ranges, revocation lists and \
             resumption key rings, served over ALTS."
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// The signer's own ALTS credentials (handshake.cert, handshake.key, root.pub from `alts issue handshake`).
    #[arg(long)]
    creds: PathBuf,
    /// The fleet's issuance policy (TOML): verifies callers and is dry-run before every signature.
    #[arg(long)]
    issuance_policy: PathBuf,
    /// The root signing key (ca.key from `alts ca init`; mode 0600 or stricter).
    #[arg(long)]
    ca_key: PathBuf,
    /// Who may request what (TOML). Without it IssuePrincipal, AllocateRevocationIds and GetKeyRing are refused.
    #[arg(long)]
    signer_policy: Option<PathBuf>,
    /// Without --signer-policy, let EVERY authenticated caller request any credential the issuance policy accepts.
    #[arg(long)]
    dangerously_allow_any_caller: bool,
    /// State: redb:PATH (embedded, one signer) or postgres://user@host/db (shared by replicas).
    #[arg(long)]
    state: StateLocation,
    /// Audit log (JSON lines, fsynced per line).
    #[arg(long)]
    audit_log: PathBuf,
    /// Directory where crl.bin is written.
    #[arg(long)]
    crl_dir: PathBuf,
    /// An identity allowed to revoke (repeatable; none: every Revoke is refused).
    #[arg(long = "admin")]
    admins: Vec<String>,
    /// Longest principal certificate lifetime.
    #[arg(long, default_value = "90d")]
    max_principal_validity: humantime::Duration,
    /// Resumption key ring rotation period.
    #[arg(long, default_value = "24h")]
    key_ring_rotation: humantime::Duration,
    /// Largest revocation-ID range one AllocateRevocationIds returns.
    #[arg(long, default_value_t = signer::DEFAULT_MAX_ALLOCATION)]
    max_allocation: u32,
    /// How often a list published by another replica is copied to --crl-dir.
    #[arg(long, default_value = "10s")]
    sync_interval: humantime::Duration,
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("alts-signer stopping");
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let mut opts = SignerOptions::new(
        a.listen,
        a.creds,
        a.issuance_policy,
        a.ca_key,
        a.state,
        a.audit_log,
        a.crl_dir,
    );
    opts.signer_policy = a.signer_policy;
    opts.dangerously_allow_any_caller = a.dangerously_allow_any_caller;
    opts.admins = a.admins;
    opts.max_principal_validity = a.max_principal_validity.into();
    opts.key_ring_rotation = a.key_ring_rotation.into();
    opts.max_allocation = a.max_allocation;
    opts.sync_interval = a.sync_interval.into();
    let bound = match signer::bind(opts).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("alts-signer: {e}");
            return ExitCode::from(2);
        }
    };
    // A closed stdout must not stop the service (println! would panic).
    let _ = writeln!(
        std::io::stdout(),
        "alts-signer listening on {}",
        bound.local_addr()
    );
    match bound.serve(shutdown()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alts-signer: {e}");
            ExitCode::FAILURE
        }
    }
}
