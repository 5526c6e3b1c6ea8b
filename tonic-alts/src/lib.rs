//! ALTS for tonic: run the ALTS handshake before HTTP/2 and hand the
//! authenticated peer identity to interceptors and handlers.
//!
//! See the README for a five-line setup per side.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod authz;
pub mod balance;
#[allow(deprecated)] // still names the issuance policy by its old name, `Policy`
mod config;
mod connect_info;
mod connector;
mod error;
mod handshake;
pub mod handshaker_client;
mod incoming;
mod peer;
mod stream;

pub use alts_core;
#[allow(deprecated)]
pub use authz::{
    AltsAuthzLayer, Authorizer, AuthzInterceptor, AuthzPolicy, RpcAuthzPolicy, authz_interceptor,
};
pub use balance::{BalancedChannel, balance_list};
pub use config::{AltsConfig, CredentialFiles, DEFAULT_HANDSHAKE_TIMEOUT};
pub use connect_info::{AltsConnectInfo, AltsRequestExt};
pub use connector::AltsConnector;
pub use error::AltsError;
pub use handshake::{client_handshake, server_handshake};
pub use handshaker_client::{
    DEFAULT_HANDSHAKER_SERVICE, HandshakerServiceClient, client_handshake_via_service,
    server_handshake_via_service,
};
pub use incoming::{AltsIncoming, DEFAULT_MAX_IN_FLIGHT};
pub use peer::AltsPeer;
pub use stream::AltsStream;
