//! Health checks for probes that cannot speak ALTS.
//!
//! Kubernetes gRPC probes and most load-balancer health checks dial
//! plaintext (or TLS). Serving `grpc.health.v1.Health` on the ALTS port
//! would need them to authenticate, so serve it on a second, plaintext port
//! that exposes **only** the health service: [`PlaintextHealth`] refuses any
//! other service at construction, and binds loopback addresses only unless
//! [`any_address`](PlaintextHealth::any_address) is chosen (a pod-local port
//! reached by the kubelet at the pod's IP).
//!
//! The same `HealthServer` (it is `Clone`) can also be added to the ALTS
//! server; there, health checks are authorized like any RPC unless the
//! authorization layer is told to let them through.
//!
//! ```no_run
//! use tonic_alts::health::PlaintextHealth;
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let (reporter, health) = tonic_health::server::health_reporter();
//! reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
//! // Kubernetes: `grpc: { port: 8081 }` in the probe.
//! let probe_port = PlaintextHealth::new(health)?.any_address().bind("0.0.0.0:8081").await?;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::task::AbortOnDropHandle;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// The gRPC health service name.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Why a plaintext health port could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthPortError {
    /// The service given is not `grpc.health.v1.Health`.
    #[error("only {HEALTH_SERVICE} may be served without ALTS, not {0}")]
    NotHealthService(&'static str),
    /// The address is not a loopback address and `any_address` was not chosen.
    #[error(
        "{0} is not a loopback address; call PlaintextHealth::any_address() to serve health checks \
         on it without ALTS"
    )]
    NotLoopback(SocketAddr),
    /// Binding failed.
    #[error("bind: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves one `grpc.health.v1.Health` service, and nothing else, over
/// plaintext HTTP/2.
#[derive(Clone, Debug)]
pub struct PlaintextHealth<S> {
    service: S,
    any_address: bool,
}

impl<S> PlaintextHealth<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    /// The health service to expose (from `tonic_health::server::health_reporter`).
    pub fn new(service: S) -> Result<Self, HealthPortError> {
        if S::NAME != HEALTH_SERVICE {
            return Err(HealthPortError::NotHealthService(S::NAME));
        }
        Ok(Self {
            service,
            any_address: false,
        })
    }

    /// Allows binding addresses other than loopback (e.g. `0.0.0.0:8081`
    /// for a kubelet probe at the pod's IP). Only the health status is
    /// exposed there.
    pub fn any_address(mut self) -> Self {
        self.any_address = true;
        self
    }

    /// Binds `addr` and serves until the returned handle is dropped.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<HealthPort, HealthPortError> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        if !self.any_address && !local_addr.ip().is_loopback() {
            return Err(HealthPortError::NotLoopback(local_addr));
        }
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let router = Server::builder().add_service(self.service);
        let task = tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming(incoming).await {
                tracing::warn!(error = %e, "plaintext health port stopped");
            }
        });
        tracing::info!(%local_addr, "serving grpc.health.v1 without ALTS");
        Ok(HealthPort {
            local_addr,
            _task: AbortOnDropHandle::new(task),
        })
    }
}

/// A running plaintext health port; dropping it stops the server.
#[derive(Debug)]
pub struct HealthPort {
    local_addr: SocketAddr,
    _task: AbortOnDropHandle<()>,
}

impl HealthPort {
    /// The address being served.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}
