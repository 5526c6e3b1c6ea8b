//! ALTS for tonic: run the ALTS handshake before HTTP/2 and hand the
//! authenticated peer identity to interceptors and handlers.
//!
//! See the README for a five-line setup per side.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod authz;
pub mod balance;
mod config;
mod connect_info;
mod connector;
mod error;
mod handshake;
pub mod handshaker_client;
#[cfg(feature = "health")]
pub mod health;
mod incoming;
pub mod metrics;
mod peer;
mod stream;

pub use alts_core;
pub use authz::{AltsAuthzLayer, Authorizer, AuthzPolicy, authz_interceptor};
pub use balance::{BalancedChannel, balance_list};
pub use config::{AltsConfig, AltsReloader, CredentialFiles, DEFAULT_HANDSHAKE_TIMEOUT, file_names};
pub use connect_info::{AltsConnectInfo, AltsRequestExt};
pub use connector::AltsConnector;
pub use error::{AltsError, AltsErrorKind, ConfigError, FileError};
pub use handshake::{client_handshake, server_handshake};
pub use handshaker_client::{
    DEFAULT_HANDSHAKER_SERVICE, HANDSHAKER_ADDRESS_ENV, HandshakerServiceClient,
    client_handshake_via_service, default_handshaker_address, server_handshake_via_service,
};
pub use incoming::{AltsAcceptor, AltsIncoming, DEFAULT_BACKLOG, DEFAULT_MAX_IN_FLIGHT};
pub use peer::AltsPeer;
pub use stream::AltsStream;
