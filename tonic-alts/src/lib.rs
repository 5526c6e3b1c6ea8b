//! ALTS (Application Layer Transport Security) channel credentials for
//! [tonic]: mutual authentication by *identity* rather than host name, and
//! record encryption, set up before HTTP/2 starts.
//!
//! - Server: [`AltsIncoming`] (from [`AltsAcceptor`]) turns any stream of
//!   connections into authenticated ones for `Server::serve_with_incoming`.
//! - Client: [`AltsConnector`] for `Endpoint::connect_with_connector`; it
//!   refuses a server that does not prove one of the target identities.
//! - Both: [`AltsConfig`], loaded from [`CredentialFiles`] and kept fresh by
//!   an [`AltsReloader`].
//! - Handlers and interceptors read the authenticated [`AltsPeer`] with
//!   [`AltsRequestExt::alts_peer`]; [`AltsAuthzLayer`] authorizes every RPC by
//!   identity.
//! - Errors carry an [`AltsErrorKind`]; [`metrics`] lists what is measured.
//!
//! # Server and client
//!
//! ```no_run
//! use tonic::transport::{Endpoint, Server};
//! use tonic_alts::{AltsAcceptor, AltsAuthzLayer, AltsConfig, AltsConnector, CredentialFiles};
//!
//! # async fn run<S>(my_service: S) -> Result<(), Box<dyn std::error::Error>>
//! # where S: tower_service::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>, Error = std::convert::Infallible>
//! #     + tonic::server::NamedService + Clone + Send + Sync + 'static, S::Future: Send + 'static {
//! // Server: credentials from `alts issue handshake --out creds/server`.
//! let server = AltsConfig::from_files(
//!     CredentialFiles::from_dir("creds/server").issuance_policy("issuance-policy.toml"),
//! )?;
//! let incoming = AltsAcceptor::new(server).bind("0.0.0.0:50051").await?;
//! tokio::spawn(
//!     Server::builder()
//!         .layer(AltsAuthzLayer::peer_info_only())
//!         .add_service(my_service)
//!         .serve_with_incoming(incoming),
//! );
//!
//! // Client: fails before HTTP/2 unless the server proves it is greeter-prod.
//! let client = AltsConfig::from_files(
//!     CredentialFiles::from_dir("creds/client").issuance_policy("issuance-policy.toml"),
//! )?;
//! let channel = Endpoint::from_static("http://10.0.0.7:50051")
//!     .connect_with_connector(AltsConnector::new(client).target_identity("greeter-prod"))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Any transport
//!
//! The handshake itself needs only a byte stream: [`AltsAcceptor::accept`]
//! and [`AltsConnector::handshake`] run it over anything that implements
//! tokio's `AsyncRead + AsyncWrite` and return an [`AltsStream`] that knows
//! its peer. Here over an in-memory pipe:
//!
//! ```
//! # use std::sync::Arc;
//! # use alts_core::cert::Category;
//! # use alts_core::handshake::HandshakeConfig;
//! # use alts_core::policy::IssuancePolicy;
//! # use alts_core::testing::{TestPki, deterministic_provider};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tonic_alts::{AltsAcceptor, AltsConfig, AltsConnector};
//!
//! # fn configs() -> (AltsConfig, AltsConfig) {
//! #     let pki = TestPki::new(b"docs");
//! #     let cfg = |identity: &str| {
//! #         let issued = pki.issue_with(identity, Category::Workload, "scheduler", None);
//! #         let verifier = pki.verifier(IssuancePolicy::allow_all_for_tests());
//! #         AltsConfig::new(HandshakeConfig::new(issued.credentials, verifier, deterministic_provider(identity.as_bytes())))
//! #     };
//! #     (cfg("frontend-prod"), cfg("greeter-prod"))
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tonic_alts::AltsError> {
//! let (client_config, server_config) = configs();
//! let (client_io, server_io) = tokio::io::duplex(64 * 1024);
//! let acceptor = AltsAcceptor::new(server_config);
//! let connector = AltsConnector::new(client_config).target_identity("greeter-prod");
//! let (client, server) = tokio::join!(
//!     connector.handshake(client_io, "greeter.internal:443"),
//!     acceptor.accept(server_io),
//! );
//! let (mut client, mut server) = (client?, server?);
//! assert_eq!(client.peer().identity, "greeter-prod");
//! assert_eq!(server.peer().identity, "frontend-prod");
//!
//! client.write_all(b"ping").await?;
//! client.flush().await?;
//! let mut buf = [0u8; 4];
//! server.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"ping");
//! # Ok(()) }
//! ```
//!
//! # Cargo features
//!
//! - `handshaker-service` (default): handshaker-service mode
//!   ([`AltsConnector::via_handshaker_service`], [`AltsAcceptor::via_handshaker_service`]).
//! - `balance` (default): [`balance_list`], load balancing over several
//!   ALTS endpoints.
//! - `authz-json` (default): gRFC A43 JSON authorization policies (the TOML
//!   format is always available).
//! - `health` (default): [`health::PlaintextHealth`], a plaintext port that
//!   serves only `grpc.health.v1` for probes that cannot speak ALTS.
//! - `aws-lc-rs`: every primitive (Ed25519, X25519, AES-GCM, HMAC, HKDF,
//!   randomness) from aws-lc-rs instead of ring + x25519-dalek. Same wire
//!   bytes; faster public-key operations (first-contact handshakes) and
//!   integrity-only records, slightly slower on the many small operations of
//!   a warm handshake. Needs a C compiler.
//! - `test-util`: `AltsPeer::for_testing` for unit tests of handlers.
//!
//! [tonic]: https://docs.rs/tonic
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod authz;
#[cfg(feature = "balance")]
pub mod balance;
mod config;
mod connect_info;
mod connector;
mod error;
mod handshake;
#[cfg(feature = "handshaker-service")]
pub mod handshaker_client;
#[cfg(feature = "health")]
pub mod health;
mod incoming;
pub mod keyring;
pub mod metrics;
mod peer;
mod stream;

pub use alts_core;
#[allow(deprecated)]
pub use authz::{
    AltsAuthzLayer, Authorizer, AuthzInterceptor, AuthzPolicy, RpcAuthzPolicy, authz_interceptor,
};
#[cfg(feature = "balance")]
pub use balance::{BalancedChannel, balance_list};
pub use config::{
    AltsConfig, AltsReloader, CREDENTIALS_DIR_ENV, CredentialFiles, DEFAULT_CREDENTIALS_DIR,
    DEFAULT_HANDSHAKE_TIMEOUT, file_names,
};
pub use connect_info::{AltsConnectInfo, AltsRequestExt};
pub use connector::AltsConnector;
pub use error::{AltsError, AltsErrorKind, ConfigError, FileError};
pub use handshake::{client_handshake, server_handshake};
#[cfg(feature = "handshaker-service")]
pub use handshaker_client::{
    DEFAULT_HANDSHAKER_SERVICE, HANDSHAKER_ADDRESS_ENV, HandshakerServiceClient,
    client_handshake_via_service, default_handshaker_address, server_handshake_via_service,
};
pub use incoming::{
    AltsAcceptor, AltsIncoming, DEFAULT_BACKLOG, DEFAULT_FIRST_BYTES_TIMEOUT, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_PENDING, DEFAULT_MAX_PER_SOURCE,
};
pub use peer::AltsPeer;
pub use stream::AltsStream;
