//! `alts-interop-server`: an ALTS gRPC server for cross-stack interop tests.
//!
//! Serves `grpc.health.v1.Health/Check` (SERVING) and
//! `grpc.testing.TestService/{EmptyCall,UnaryCall}`, logs the authenticated
//! peer of every call on stdout and returns its own identity in the
//! `x-alts-server-identity` response header. Handshakes run in process
//! (tonic-alts) unless `--handshaker ADDR` sends them to a
//! `grpc.gcp.HandshakerService`.
//!
//! In process, it refuses to start without `--policy` unless
//! `--accept-any-issuer` is given (exit status 2). Through `--handshaker`,
//! the handshaker service applies its own policy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use alts_proto::grpc_health_v1::health_check_response::ServingStatus;
use alts_proto::grpc_health_v1::health_server::{Health, HealthServer};
use alts_proto::grpc_health_v1::{HealthCheckRequest, HealthCheckResponse};
use alts_proto::grpc_testing::test_service_server::{TestService, TestServiceServer};
use alts_proto::grpc_testing::{Empty, Payload, SimpleRequest, SimpleResponse};
use clap::Parser;
use tokio_stream::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tonic_alts::{AltsConfig, AltsIncoming, AltsRequestExt, HandshakerServiceClient};

const MAX_RESPONSE_SIZE: i32 = 4 << 20;

/// ALTS interop server (health + grpc.testing subset).
#[derive(Parser, Debug)]
#[command(name = "alts-interop-server")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50071")]
    listen: SocketAddr,
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
    /// Run handshakes through this grpc.gcp.HandshakerService
    /// (e.g. `127.0.0.1:8080` or `dns:///metadata.google.internal.:8080`).
    #[arg(long)]
    handshaker: Option<String>,
    /// Handshake timeout in seconds.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
}

#[derive(Clone)]
struct Svc {
    /// Our identity if known up front (native mode).
    name: Option<String>,
}

fn log_call<T>(method: &str, req: &Request<T>) -> Option<String> {
    match req.alts_peer() {
        Some(p) => {
            println!(
                "alts-interop-server: {method} from {} peer={:?} category={} issuer={:?} local={:?} \
                 record_protocol={} resumed={}",
                req.remote_addr()
                    .map_or_else(|| "?".to_owned(), |a| a.to_string()),
                p.identity,
                p.category.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
                p.issuer.as_deref().unwrap_or("unknown"),
                p.local_identity,
                p.record_protocol.name(),
                p.resumed()
            );
            Some(p.local_identity.clone())
        }
        None => {
            println!("alts-interop-server: {method} with NO ALTS peer");
            None
        }
    }
}

impl Svc {
    fn respond<T>(&self, local: Option<String>, body: T) -> Response<T> {
        let mut resp = Response::new(body);
        if let Some(v) = local
            .or_else(|| self.name.clone())
            .and_then(|l| MetadataValue::try_from(l.as_str()).ok())
        {
            resp.metadata_mut().insert("x-alts-server-identity", v);
        }
        resp
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Health for Svc {
    async fn check(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let local = log_call("Health/Check", &req);
        Ok(self.respond(
            local,
            HealthCheckResponse {
                status: ServingStatus::Serving as i32,
            },
        ))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, _req: Request<HealthCheckRequest>) -> Result<Response<WatchStream>, Status> {
        Err(Status::unimplemented("Health/Watch is not served"))
    }
}

#[tonic::async_trait]
impl TestService for Svc {
    async fn empty_call(&self, req: Request<Empty>) -> Result<Response<Empty>, Status> {
        let local = log_call("TestService/EmptyCall", &req);
        Ok(self.respond(local, Empty {}))
    }

    async fn unary_call(&self, req: Request<SimpleRequest>) -> Result<Response<SimpleResponse>, Status> {
        let local = log_call("TestService/UnaryCall", &req);
        let size = req.get_ref().response_size;
        if !(0..=MAX_RESPONSE_SIZE).contains(&size) {
            return Err(Status::invalid_argument(format!(
                "response_size {size} out of range"
            )));
        }
        let body = vec![0u8; usize::try_from(size).unwrap_or(0)];
        Ok(self.respond(
            local,
            SimpleResponse {
                payload: Some(Payload { body }),
            },
        ))
    }
}

#[tokio::main]
async fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let timeout = Duration::from_secs(args.timeout_secs);
    // Refuse a fail-open configuration before binding anything.
    let files = match (&args.handshaker, &args.creds, &args.root) {
        (Some(_), _, _) => None,
        (None, Some(creds), Some(root)) => match alts_interop::checked_credential_files(
            creds,
            root,
            args.policy.as_deref(),
            args.crl.as_deref(),
            args.accept_any_issuer,
        ) {
            Ok(f) => Some(f),
            Err(msg) => {
                eprintln!("alts-interop-server: {msg}");
                return Ok(std::process::ExitCode::from(2));
            }
        },
        (None, _, _) => return Err("--creds and --root are required without --handshaker".into()),
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let (incoming, name, mode, _reloader) = match &args.handshaker {
        Some(hs) => {
            let client = HandshakerServiceClient::new(hs.clone()).with_timeout(timeout);
            let incoming = AltsIncoming::with_handshaker_service(listener, client, 512);
            (incoming, None, format!("handshaker service {hs}"), None)
        }
        None => {
            let Some(files) = files else {
                return Err("--creds and --root are required without --handshaker".into());
            };
            let config = AltsConfig::from_files(files)?.handshake_timeout(timeout);
            let name = config.snapshot().credentials.identity().to_owned();
            let reloader = config.reloader()?.spawn(Duration::from_secs(30));
            let incoming = AltsIncoming::new(listener, config, 512);
            (
                incoming,
                Some(name.clone()),
                format!("native, identity {name:?}"),
                Some(reloader),
            )
        }
    };
    let svc = Svc { name };
    println!("alts-interop-server: listening on {addr} ({mode})");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    tonic::transport::Server::builder()
        .add_service(HealthServer::new(svc.clone()))
        .add_service(TestServiceServer::new(svc))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(std::process::ExitCode::SUCCESS)
}
