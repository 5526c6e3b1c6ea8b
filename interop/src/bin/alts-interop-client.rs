//! `alts-interop-client`: calls an ALTS gRPC server for cross-stack interop
//! tests and prints one line per call (with the server identity the ALTS
//! handshake authenticated). Exits 0 only if every call succeeds.
//!
//! Handshakes run in process (tonic-alts) unless `--handshaker ADDR` sends
//! them to a `grpc.gcp.HandshakerService`.
//!
//! Fails closed (exit status 2): it refuses to run without a server
//! identity (`--target`/`--expect-identity`) unless `--accept-any-server`,
//! and in process without `--policy` unless `--accept-any-issuer`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alts_proto::grpc_health_v1::HealthCheckRequest;
use alts_proto::grpc_health_v1::health_check_response::ServingStatus;
use alts_proto::grpc_health_v1::health_client::HealthClient;
use alts_proto::grpc_testing::test_service_client::TestServiceClient;
use alts_proto::grpc_testing::{Empty, Payload, SimpleRequest};
use clap::Parser;
use tonic::transport::{Channel, Endpoint};
use tonic_alts::{AltsConfig, AltsConnector, AltsPeer, HandshakerServiceClient};

/// ALTS interop client (health + grpc.testing subset).
#[derive(Parser, Debug)]
#[command(name = "alts-interop-client")]
struct Args {
    /// Server address `HOST:PORT`.
    #[arg(long)]
    server: String,
    /// Directory with handshake.cert and handshake.key (native mode).
    #[arg(long, required_unless_present = "handshaker")]
    creds: Option<PathBuf>,
    /// The signing service's root.pub (native mode).
    #[arg(long, required_unless_present = "handshaker")]
    root: Option<PathBuf>,
    /// Issuance policy TOML (native mode; required there unless
    /// --accept-any-issuer).
    #[arg(long, conflicts_with = "accept_any_issuer")]
    policy: Option<PathBuf>,
    /// INSECURE (native mode): run without --policy, accepting any issuer
    /// under the root for any identity.
    #[arg(long)]
    accept_any_issuer: bool,
    /// Signed revocation list (native mode).
    #[arg(long)]
    crl: Option<PathBuf>,
    /// Accept only this server identity (repeatable; checked in the
    /// handshake). Required unless --accept-any-server.
    #[arg(long, visible_alias = "target")]
    expect_identity: Vec<String>,
    /// INSECURE: with no --target, accept any server identity the policy allows.
    #[arg(long, conflicts_with = "expect_identity")]
    accept_any_server: bool,
    /// Run handshakes through this grpc.gcp.HandshakerService.
    #[arg(long)]
    handshaker: Option<String>,
    /// Method: health, empty, unary or all.
    #[arg(long, default_value = "all")]
    method: String,
    /// Calls per method.
    #[arg(long, default_value_t = 1)]
    rpcs: u32,
    /// Response size for unary calls.
    #[arg(long, default_value_t = 1024)]
    response_size: i32,
    /// Per-call and handshake deadline in seconds.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
}

/// Records the peer of the last connection the connector made.
type LastPeer = Arc<Mutex<Option<Arc<AltsPeer>>>>;

async fn channel(args: &Args, last: LastPeer) -> Result<Channel, Box<dyn std::error::Error>> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let connector = match &args.handshaker {
        Some(hs) => AltsConnector::with_handshaker_client(
            HandshakerServiceClient::new(hs.clone()).with_timeout(timeout),
        ),
        None => {
            let (Some(creds), Some(root)) = (&args.creds, &args.root) else {
                return Err("--creds and --root are required without --handshaker".into());
            };
            let files = alts_interop::checked_credential_files(
                creds,
                root,
                args.policy.as_deref(),
                args.crl.as_deref(),
                args.accept_any_issuer,
            )?;
            AltsConnector::new(AltsConfig::from_files(files)?.handshake_timeout(timeout))
        }
    }
    .target_identities(args.expect_identity.clone());
    let connector = if args.accept_any_server {
        connector.accept_any_server()
    } else {
        connector
    };
    let recording = tower::service_fn(move |uri: http::Uri| {
        let connector = connector.clone();
        let last = last.clone();
        async move {
            let stream = connector.connect(uri).await?;
            let p = stream.peer().clone();
            println!(
                "alts-interop-client: handshake ok peer={:?} category={} issuer={:?} local={:?} record_protocol={}",
                p.identity,
                p.category.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
                p.issuer.as_deref().unwrap_or("unknown"),
                p.local_identity,
                p.record_protocol.name()
            );
            if let Ok(mut l) = last.lock() {
                *l = Some(p);
            }
            Ok::<_, tonic_alts::AltsError>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Ok(Endpoint::from_shared(format!("http://{}", args.server))?
        .timeout(timeout)
        .connect_timeout(timeout)
        .connect_with_connector(recording)
        .await?)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    if args.expect_identity.is_empty() && !args.accept_any_server {
        eprintln!(
            "alts-interop-client: refusing to run without --target (--expect-identity): any server \
             the policy allows could answer. Name the server identity, or pass --accept-any-server"
        );
        return ExitCode::from(2);
    }
    if args.handshaker.is_none() && args.policy.is_none() && !args.accept_any_issuer {
        eprintln!("alts-interop-client: {}", alts_interop::POLICY_REQUIRED);
        return ExitCode::from(2);
    }
    if args.accept_any_server {
        tracing::warn!("INSECURE: --accept-any-server: any server identity the policy allows is accepted");
    }
    let methods: Vec<&str> = match args.method.as_str() {
        "all" => vec!["health", "empty", "unary"],
        m @ ("health" | "empty" | "unary") => vec![m],
        other => {
            eprintln!("alts-interop-client: unknown --method {other:?} (health, empty, unary, all)");
            return ExitCode::from(2);
        }
    };
    let total = methods.len() as u32 * args.rpcs;
    let last: LastPeer = Arc::default();
    let ch = match channel(&args, last.clone()).await {
        Ok(c) => c,
        Err(e) => {
            println!("alts-interop-client: connect FAIL: {e}");
            if let Some(src) = std::error::Error::source(e.as_ref()) {
                println!("alts-interop-client:   caused by: {src}");
            }
            println!("alts-interop-client: 0 succeeded, {total} failed");
            return ExitCode::FAILURE;
        }
    };
    let mut health = HealthClient::new(ch.clone());
    let mut test = TestServiceClient::new(ch);
    let (mut ok_n, mut fail_n) = (0u32, 0u32);
    for m in methods {
        for i in 0..args.rpcs {
            let res: Result<(bool, String, tonic::metadata::MetadataMap), tonic::Status> = match m {
                "health" => health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|r| {
                        let md = r.metadata().clone();
                        let ok = r.get_ref().status == ServingStatus::Serving as i32;
                        (ok, format!("status={}", r.get_ref().status), md)
                    }),
                "empty" => test
                    .empty_call(Empty {})
                    .await
                    .map(|r| (true, "empty".to_owned(), r.metadata().clone())),
                _ => test
                    .unary_call(SimpleRequest {
                        response_size: args.response_size,
                        payload: Some(Payload { body: vec![1; 64] }),
                    })
                    .await
                    .map(|r| {
                        let got = r.get_ref().payload.as_ref().map_or(0, |p| p.body.len());
                        let ok = i32::try_from(got).ok() == Some(args.response_size);
                        (ok, format!("payload={got}B"), r.metadata().clone())
                    }),
            };
            let peer = last
                .lock()
                .ok()
                .and_then(|l| l.as_ref().map(|p| p.identity.clone()))
                .unwrap_or_else(|| "<none>".to_owned());
            match res {
                Ok((ok, detail, md)) => {
                    let reported = md
                        .get("x-alts-server-identity")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("<not reported>");
                    println!(
                        "alts-interop-client: {m}#{i} {} {detail} server_identity={peer:?} server_reports={reported:?}",
                        if ok { "OK" } else { "FAIL" }
                    );
                    if ok {
                        ok_n += 1;
                    } else {
                        fail_n += 1;
                    }
                }
                Err(s) => {
                    println!(
                        "alts-interop-client: {m}#{i} FAIL {:?}: {}",
                        s.code(),
                        s.message()
                    );
                    fail_n += 1;
                }
            }
        }
    }
    println!("alts-interop-client: {ok_n} succeeded, {fail_n} failed");
    if fail_n == 0 && ok_n == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
