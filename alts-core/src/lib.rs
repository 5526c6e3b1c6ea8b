//! Sans-IO ALTS (Application Layer Transport Security).
//!
//! ALTS authenticates both ends of a connection by **identity** (e.g.
//! `backend-prod`), not by host name, and encrypts the traffic. Every party
//! holds a chain of protobuf credentials: the signing service's root key
//! signs a *principal certificate* (identity, category, the issuer that
//! requested it), whose key signs short-lived *handshake certificates*
//! carrying a static X25519 key. An *issuance policy* says which issuers may
//! issue which identities, and a signed *revocation list* names revoked
//! certificates. The handshake takes one round trip before the client may
//! send; the record protocol is byte-compatible with the one stock gRPC
//! ships.
//!
//! Nothing in this crate performs I/O, reads a clock or touches an OS random
//! source on its own: bytes go in, bytes come out, and time and randomness are
//! injected (see [`crypto::CryptoProvider`] and [`UnixTime`]). The `tonic-alts`
//! crate runs it over TCP for tonic.
//!
//! - [`record`]: the ALTS record protocol, byte-compatible with stock gRPC.
//! - [`cert`], [`policy`], [`crl`], [`verify`]: credentials and their checks.
//! - [`handshake`]: client and server handshake state machines, with
//!   [`resumption`].
//!
//! # Example: credentials, a handshake and a record, in memory
//!
//! A throwaway signing service issues credentials for two workloads; a client
//! and a server handshake then run against each other by moving bytes
//! between two buffers (a real program moves them over a socket), and the
//! client sends the server one record.
//!
//! ```
//! # #![allow(deprecated)] // `Policy` may be a deprecated alias of the policy type.
//! use std::sync::Arc;
//!
//! use alts_core::UnixTime;
//! use alts_core::cert::{
//!     self, Category, HandshakeParams, LocalCredentials, PrincipalParams, RootKey, SigningKey,
//! };
//! use alts_core::crypto::{RingRandom, StaticKeyPair, default_provider};
//! use alts_core::handshake::{
//!     ClientHandshake, ClientOptions, Handshake, HandshakeConfig, ServerHandshake,
//! };
//! use alts_core::policy::Policy;
//! use alts_core::verify::Verifier;
//! use bytes::BytesMut;
//!
//! type Error = Box<dyn std::error::Error>;
//!
//! let rng = RingRandom::default();
//! let now = UnixTime(1_767_225_600); // The caller's clock, in seconds.
//!
//! // The signing service: every party trusts its public root key.
//! let root_key = SigningKey::generate(&rng)?;
//! let root = RootKey::from_signing_key("example-signing-service", &root_key);
//!
//! // A principal certificate (signed by the root key, requested by the
//! // "scheduler" issuer) and a handshake certificate (signed with the
//! // principal key, valid for 20 hours) carrying a fresh static X25519 key.
//! let credentials = |identity: &str| -> Result<Arc<LocalCredentials>, Error> {
//!     let principal_key = SigningKey::generate(&rng)?;
//!     let principal_cert = cert::issue_principal(
//!         &root_key,
//!         &PrincipalParams {
//!             identity: identity.to_owned(),
//!             category: Category::Workload,
//!             issuer: "scheduler".to_owned(),
//!             validity: None,
//!             revocation_id: cert::random_revocation_id(Category::Workload, &rng)?,
//!         },
//!         principal_key.public_key(),
//!     )?;
//!     let static_key = StaticKeyPair::generate(&rng)?;
//!     let handshake_cert = cert::issue_handshake(
//!         &principal_key,
//!         &principal_cert,
//!         &HandshakeParams::with_defaults(
//!             *static_key.public_key(),
//!             Some((now.plus(-60), now.plus(20 * 3600))),
//!             cert::random_revocation_id(Category::Workload, &rng)?,
//!         ),
//!     )?;
//!     Ok(Arc::new(LocalCredentials::new(handshake_cert, static_key)?))
//! };
//!
//! // Both sides trust the root and let "scheduler" issue `*-prod` workloads.
//! let policy = Policy::from_toml(
//!     r#"
//!     [[rule]]
//!     issuer = "scheduler"
//!     categories = ["workload"]
//!     identities = ["*-prod"]
//!     "#,
//! )?;
//! let verifier = Arc::new(Verifier::new(root, Arc::new(policy)));
//! let config = |identity: &str, verifier: Arc<Verifier>| -> Result<_, Error> {
//!     let config = HandshakeConfig::new(credentials(identity)?, verifier, default_provider());
//!     Ok(Arc::new(config))
//! };
//! let client_config = config("frontend-prod", verifier.clone())?;
//! let server_config = config("backend-prod", verifier)?;
//!
//! // The client only accepts `backend-prod`.
//! let options = ClientOptions {
//!     target_identities: vec!["backend-prod".to_owned()],
//!     ..ClientOptions::default()
//! };
//! let mut client = ClientHandshake::new(client_config, options, now)?;
//! let mut server = ServerHandshake::new(server_config, now);
//!
//! // Move bytes until both sides are done. `handle_input` returns how many
//! // bytes belonged to the handshake; anything after them is record data.
//! let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
//! while !(client.is_done() && server.is_done()) {
//!     client.poll_output(&mut to_server);
//!     let used = server.handle_input(&to_server)?;
//!     to_server.drain(..used);
//!     server.poll_output(&mut to_client);
//!     let used = client.handle_input(&to_client)?;
//!     to_client.drain(..used);
//! }
//! let client_done = client.take_outcome().ok_or("no client outcome")?;
//! let server_done = server.take_outcome().ok_or("no server outcome")?;
//! assert_eq!(client_done.peer.identity, "backend-prod");
//! assert_eq!(server_done.peer.identity, "frontend-prod");
//!
//! // Each side builds its record layer from its outcome.
//! let (mut client_sealer, _) = client_done.record_layer(client_done.record_config())?;
//! let (_, mut server_opener) = server_done.record_layer(server_done.record_config())?;
//! let mut wire = BytesMut::new();
//! client_sealer.seal(b"hello", &mut wire)?;
//! let record = server_opener.open(&mut wire)?.ok_or("incomplete record")?;
//! assert_eq!(&record[..], b"hello");
//! # Ok::<(), Error>(())
//! ```
//!
//! A refusal (an untrusted issuer, a revoked certificate, a server that is
//! not one of the client's targets...) is a
//! [`HandshakeError`](handshake::HandshakeError) on the refusing side, with
//! the detail, and an alert to the peer carrying only an
//! [`AlertCode`](handshake::AlertCode).
//!
//! # Example: the record layer alone
//!
//! Given the key material of a handshake (here a fixed stand-in), each side
//! seals its records and opens the peer's, in order. Input may arrive in any
//! chunking: [`Opener::open`](record::Opener::open) returns `None` until a
//! whole record is there. A replayed record fails authentication.
//!
//! ```
//! use alts_core::record::{RecordConfig, RecordError, RecordProtocol, Side, new_record_layer};
//! use bytes::BytesMut;
//!
//! let key_data = [7u8; 44]; // `HandshakeOutcome::key_data` in real use.
//! let protocol = RecordProtocol::GcmAes128Rekey;
//! let config = RecordConfig::default();
//! let (mut client_sealer, _) = new_record_layer(protocol, &key_data, Side::Client, config)?;
//! let (_, mut server_opener) = new_record_layer(protocol, &key_data, Side::Server, config)?;
//!
//! let mut wire = BytesMut::new();
//! client_sealer.seal(b"ping", &mut wire)?;
//! let copy = wire.clone();
//!
//! // The first 10 bytes arrive, then the rest.
//! let mut input = wire.split_to(10);
//! assert!(server_opener.open(&mut input)?.is_none());
//! input.extend_from_slice(&wire);
//! let record = server_opener.open(&mut input)?.ok_or("incomplete record")?;
//! assert_eq!(&record[..], b"ping");
//!
//! // The same bytes again: refused, and the opener stays failed.
//! let mut replay = copy;
//! assert_eq!(server_opener.open(&mut replay), Err(RecordError::Authentication));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Example: loading an issuance policy
//!
//! A policy says which issuers may issue which categories of certificates for
//! which identities; it is checked when a peer's certificate is verified
//! (see [`policy`] for the format).
//!
//! ```
//! # #![allow(deprecated)] // `Policy` may be a deprecated alias of the policy type.
//! use alts_core::cert::Category;
//! use alts_core::policy::Policy;
//!
//! let policy = Policy::from_toml(
//!     r#"
//!     version = 1
//!
//!     [[rule]]
//!     issuer = "scheduler"
//!     categories = ["workload"]
//!     identities = ["*-prod"]
//!
//!     [[rule]]
//!     issuer = "corp-ca"
//!     categories = ["person", "machine"]
//!     identities = ["*"]
//!
//!     [[reserved]]
//!     identities = ["network-admin"]
//!     issuers = ["netops-ca"]
//!     "#,
//! )?;
//! assert!(policy.check("scheduler", Category::Workload, "backend-prod").is_ok());
//! // The scheduler issues workloads only, and only `*-prod` ones.
//! assert!(policy.check("scheduler", Category::Person, "backend-prod").is_err());
//! assert!(policy.check("scheduler", Category::Workload, "backend-dev").is_err());
//! // Only the NetOps CA may issue the reserved `network-admin`.
//! assert!(policy.check("corp-ca", Category::Person, "network-admin").is_err());
//! // Unknown issuers are refused (default deny).
//! assert!(policy.check("mallory", Category::Person, "alice").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod cert;
pub mod crl;
pub mod crypto;
pub mod handshake;
pub mod policy;
pub mod record;
pub mod resumption;
pub mod verify;

#[cfg(feature = "test-util")]
pub mod testing;

mod time;
pub use time::UnixTime;
