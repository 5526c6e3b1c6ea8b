//! `alts-handshaker`: a `grpc.gcp.HandshakerService` running our ALTS
//! handshake, so unmodified stock gRPC apps (Go, C++/Python, Java) can use
//! our ALTS. Point them at this service (see interop/README.md).
//!
//! Fails closed: it refuses to start without `--policy` (unless
//! `--accept-any-issuer`), on a non-loopback TCP address (unless
//! `--insecure-listen-any`), and with a uid/gid allow-list on TCP (TCP
//! callers carry no credentials). By default it listens on the Unix socket
//! `/run/alts/handshaker.sock` and serves only callers running as its own
//! uid; client handshakes naming no server identity are refused unless a
//! `--targets` entry names one or `--accept-any-server` is given.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use alts_interop::callers::{CallerPolicy, current_uid};
use alts_interop::engine::AltsEngineFactory;
use alts_interop::handshaker_service::{AltsHandshakerService, HandshakerConfig};
use alts_interop::listen::{DEFAULT_LISTEN, HandshakerListener, ListenAddr};
use alts_interop::targets::ClientTargets;
use clap::Parser;
use tonic_alts::AltsConfig;
use tracing::warn;

const TRUST_MODEL: &str = "\
Trust model: a caller of this service runs ALTS handshakes as the workload
whose credentials it holds and receives the session keys, so only that
workload's own processes may call it.
  * unix:PATH (default unix:/run/alts/handshaker.sock): each caller is
    identified by the kernel (SO_PEERCRED) and must run with a uid from
    --allow-uid or a primary gid from --allow-gid (supplementary groups are
    not seen). Without either flag only the handshaker's own uid is allowed.
    The socket file gets mode 0660.
  * HOST:PORT (loopback only, e.g. 127.0.0.1:8080, what stock grpcio dials
    as metadata.google.internal.:8080): TCP carries no caller identity, so
    EVERY process on the machine can use the service (the trust model of
    Google's metadata handshaker, which relies on a single-tenant VM);
    --allow-uid/--allow-gid are refused there. Non-loopback addresses are
    refused unless --insecure-listen-any.
Exit status 2: refused to start (configuration); 1: runtime error.";

/// ALTS handshaker service for stock gRPC stacks (plaintext gRPC: serve it
/// on a Unix socket, or on loopback TCP only).
#[derive(Parser, Debug)]
#[command(name = "alts-handshaker", after_help = TRUST_MODEL)]
struct Args {
    /// Where to listen: unix:PATH (callers checked by uid/gid) or a loopback
    /// HOST:PORT (stock grpcio dials metadata.google.internal.:8080; every
    /// local process can call it).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: String,
    /// Allow Unix socket callers running as this uid (repeatable). Without
    /// --allow-uid and --allow-gid: only the handshaker's own uid.
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Allow Unix socket callers whose primary (effective) gid is this
    /// (repeatable; supplementary groups are not seen).
    #[arg(long = "allow-gid", value_name = "GID")]
    allow_gid: Vec<u32>,
    /// INSECURE: allow a non-loopback TCP --listen (0.0.0.0, a host's IP):
    /// any host reaching the port can run handshakes as this workload.
    #[arg(long)]
    insecure_listen_any: bool,
    /// Directory with handshake.cert and handshake.key (`alts issue handshake`).
    /// Without --creds and --root: the credential directory the agent
    /// maintains, `$ALTS_CREDENTIALS_DIR` (default /run/alts/credentials),
    /// with its root.pub, issuance-policy.toml, crl.bin and resumption.keys.
    #[arg(long, requires = "root")]
    creds: Option<PathBuf>,
    /// The signing service's root.pub.
    #[arg(long, requires = "creds")]
    root: Option<PathBuf>,
    /// A further trusted root public key (repeatable): during a root
    /// rotation, the bundle of old and new roots. Deleting the file ends its
    /// trust at the next reload.
    #[arg(long = "additional-root", value_name = "FILE")]
    additional_root: Vec<PathBuf>,
    /// Issuance policy TOML (which issuers may issue which identities).
    /// Required unless --accept-any-issuer.
    #[arg(long, conflicts_with = "accept_any_issuer")]
    policy: Option<PathBuf>,
    /// INSECURE: run without --policy, accepting any issuer under the root
    /// for any identity (e.g. a "network-admin" certificate from an issuer
    /// not allowed to issue it).
    #[arg(long)]
    accept_any_issuer: bool,
    /// Signed revocation list.
    #[arg(long)]
    crl: Option<PathBuf>,
    /// Targets TOML mapping a client's target_name to the server identities
    /// accepted when it sends no target_service_accounts
    /// (`[targets] "ledger.internal:50051" = ["ledger-prod"]`).
    #[arg(long, value_name = "FILE")]
    targets: Option<PathBuf>,
    /// INSECURE: a client handshake naming no server identity and not in
    /// --targets accepts any server the policy allows (stock behaviour).
    #[arg(long)]
    accept_any_server: bool,
    /// Maximum handshakes (client and server) holding a slot at once
    /// (excess callers wait).
    #[arg(long, default_value_t = 128)]
    max_in_flight: usize,
    /// Maximum client handshakes holding a slot at once [default: 3/4 of
    /// --max-in-flight].
    #[arg(long)]
    max_client_handshakes: Option<usize>,
    /// Maximum server handshakes holding a slot at once (a server handshake
    /// takes its slot when its peer's first bytes arrive) [default: 3/4 of
    /// --max-in-flight].
    #[arg(long)]
    max_server_handshakes: Option<usize>,
    /// Maximum callers waiting for a slot; beyond it RESOURCE_EXHAUSTED at once.
    #[arg(long, default_value_t = 256)]
    max_waiters: usize,
    /// HTTP/2 max concurrent streams per connection.
    #[arg(long, default_value_t = 1024)]
    max_concurrent_streams: u32,
    /// Per-handshake deadline in seconds.
    #[arg(long, default_value_t = 20)]
    timeout_secs: u64,
    /// Deprecated and ignored: the credential files are watched (inotify,
    /// with a polling fallback every 500 ms), so changes apply within a second.
    #[arg(long, default_value_t = 30, hide = true)]
    reload_secs: u64,
}

/// Refuses to start: message on stderr, exit status 2.
fn refuse(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("alts-handshaker: {msg}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();

    // Everything that can refuse the configuration, before any file is read
    // or socket bound.
    let files = match (&args.creds, &args.root) {
        (Some(creds), Some(root)) => match alts_interop::checked_credential_files(
            creds,
            root,
            args.policy.as_deref(),
            args.crl.as_deref(),
            args.accept_any_issuer,
        ) {
            Ok(f) => f,
            Err(msg) => return refuse(msg),
        },
        // No credential flags: the agent's directory (its issuance policy is
        // required there unless --policy or --accept-any-issuer).
        _ => {
            let mut f = tonic_alts::CredentialFiles::from_env();
            if let Some(p) = &args.policy {
                f = f.issuance_policy(p);
            }
            if let Some(c) = &args.crl {
                f = f.crl(c);
            }
            if args.accept_any_issuer {
                f = f.accept_any_issuer();
            }
            f
        }
    };
    let listen: ListenAddr = match args.listen.parse() {
        Ok(l) => l,
        Err(e) => return refuse(e),
    };
    let allow_list_given = !args.allow_uid.is_empty() || !args.allow_gid.is_empty();
    if matches!(listen, ListenAddr::Tcp(_)) && allow_list_given {
        return refuse(
            "--allow-uid/--allow-gid need --listen unix:PATH: TCP callers carry no uid/gid, \
             so the allow-list could not be applied",
        );
    }
    let callers = if allow_list_given {
        CallerPolicy::allow(args.allow_uid.iter().copied(), args.allow_gid.iter().copied())
    } else {
        CallerPolicy::same_user()
    }
    .allow_non_loopback_tcp(args.insecure_listen_any);
    let targets = match &args.targets {
        Some(p) => match ClientTargets::from_file(p) {
            Ok(t) => t,
            Err(e) => return refuse(format!("--targets: {e}")),
        },
        None => ClientTargets::new(),
    }
    .accept_any_server(args.accept_any_server);
    if args.accept_any_issuer {
        warn!(
            "INSECURE: --accept-any-issuer: peers from any issuer under the root are accepted for any identity"
        );
    }
    if args.accept_any_server {
        warn!(
            "INSECURE: --accept-any-server: client handshakes that name no server identity (and have no \
             --targets entry) accept any server the policy allows"
        );
    }

    let files = args
        .additional_root
        .iter()
        .fold(files, |f, r| f.additional_root(r));
    let config = match AltsConfig::from_files(files) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("alts-handshaker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let identity = config.snapshot().credentials.identity().to_owned();
    // Watch the files (inotify, with a polling fallback): a rotated
    // certificate, CRL or key ring is in effect within a second.
    if args.reload_secs != 30 {
        warn!("--reload-secs is deprecated and ignored: credential files are watched");
    }
    let _reloader = match config.reloader() {
        Ok(r) => r.watch(),
        Err(e) => {
            eprintln!("alts-handshaker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let per_kind = |v: Option<usize>| v.unwrap_or((args.max_in_flight * 3 / 4).max(1));
    let factory = Arc::new(AltsEngineFactory::new(config));
    let service = AltsHandshakerService::new(
        factory,
        HandshakerConfig {
            max_in_flight: args.max_in_flight,
            max_client_handshakes: per_kind(args.max_client_handshakes),
            max_server_handshakes: per_kind(args.max_server_handshakes),
            max_waiters: args.max_waiters,
            max_concurrent_streams: args.max_concurrent_streams,
            callers: callers.clone(),
            client_targets: targets,
            handshake_timeout: Duration::from_secs(args.timeout_secs),
            ..HandshakerConfig::default()
        },
    );
    let listener = match alts_interop::listen::bind_listen(&listen, args.insecure_listen_any).await {
        Ok(l) => l,
        Err(e) => return refuse(e),
    };
    match &listener {
        HandshakerListener::Tcp(_) if args.insecure_listen_any => warn!(
            listen = %listener.describe(),
            "INSECURE: --insecure-listen-any: every host that can reach this port can run handshakes as \
             {identity:?} and receive session keys"
        ),
        HandshakerListener::Tcp(_) => warn!(
            listen = %listener.describe(),
            "listening on loopback TCP: peer credentials are not available over TCP, so EVERY local \
             process can run handshakes as {identity:?} and receive session keys (the trust model of \
             Google's metadata handshaker, which relies on a single-tenant VM); listen on unix:PATH \
             to restrict callers by uid/gid"
        ),
        HandshakerListener::Unix(_) => tracing::info!(
            uids = ?callers.uids().collect::<Vec<_>>(),
            gids = ?callers.gids().collect::<Vec<_>>(),
            own_uid = current_uid(),
            "unix socket callers allowed"
        ),
    }
    let shutdown = match alts_interop::shutdown_signal() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("alts-handshaker: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A line on stdout that scripts can wait for.
    println!(
        "alts-handshaker: identity {identity:?} listening on {}",
        listener.describe()
    );
    if let Err(e) = alts_interop::serve_handshaker_on(listener, service, shutdown).await {
        eprintln!("alts-handshaker: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
