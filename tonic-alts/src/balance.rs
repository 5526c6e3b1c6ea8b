//! Client-side load balancing over several ALTS endpoints.
//!
//! tonic's `Channel::balance_list` only dials with its built-in HTTP
//! connector, so it cannot run the ALTS handshake. [`balance_list`] is the
//! ALTS counterpart: one lazily connected channel per endpoint, each through
//! the same [`AltsConnector`] (so every backend must prove a target
//! identity), balanced by power-of-two-choices on pending requests, behind a
//! cloneable buffer like tonic's `Channel`.

use std::future::Future;
use std::pin::Pin;

use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::util::BoxService;

use crate::AltsConnector;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ResponseFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

/// A cloneable, load-balanced ALTS channel; use it like a tonic `Channel`
/// (`MyClient::new(channel)`).
pub type BalancedChannel = Buffer<http::Request<Body>, ResponseFuture>;

/// Requests that may wait for a backend before callers see back-pressure.
const BUFFER: usize = 1024;

/// Balances RPCs over `endpoints`, each connected through `connector`.
/// Must be called inside a tokio runtime (the buffer runs a worker task).
pub fn balance_list(
    endpoints: impl IntoIterator<Item = Endpoint>,
    connector: AltsConnector,
) -> BalancedChannel {
    let channels: Vec<PendingRequests<Channel>> = endpoints
        .into_iter()
        .map(|e| {
            PendingRequests::new(
                e.connect_with_connector_lazy(connector.clone()),
                CompleteOnResponse::default(),
            )
        })
        .collect();
    let balance = Balance::new(ServiceList::new(channels));
    Buffer::new(BoxService::new(balance), BUFFER)
}
