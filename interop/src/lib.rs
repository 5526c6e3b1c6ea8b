//! Interoperability with stock gRPC ALTS stacks.
//!
//! - [`handshaker_service`]: `grpc.gcp.HandshakerService` over a sans-IO
//!   [`HandshakeEngine`](handshaker_service::HandshakeEngine), so unmodified
//!   Go/Python/C++/Java gRPC apps can run our handshake.
//! - [`engine`]: the real engine (`alts-core` handshakes) for the service.
//! - [`callers`]: which local processes may call the service.
//! - [`listen`]: where it listens (Unix socket by default, loopback TCP).
//! - [`targets`]: server identities for client handshakes that name none.
//! - `null_engine` (feature `insecure-test-engine` only): an INSECURE
//!   engine used to test the plumbing with stock gRPC.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod callers;
pub mod engine;
pub mod handshaker_service;
pub mod listen;
#[cfg(feature = "insecure-test-engine")]
pub mod null_engine;
pub mod targets;

use std::net::SocketAddr;

fn server_for(service: &handshaker_service::AltsHandshakerService) -> tonic::transport::Server {
    tonic::transport::Server::builder().max_concurrent_streams(service.config().max_concurrent_streams)
}

/// Serves `service` on the TCP `listener` until `shutdown` resolves (at most
/// [`HandshakerConfig::max_concurrent_streams`](handshaker_service::HandshakerConfig::max_concurrent_streams)
/// streams per connection). Callers are checked by the service's
/// [`CallerPolicy`](callers::CallerPolicy): only loopback ones unless
/// non-loopback TCP is allowed.
pub async fn serve_handshaker(
    listener: tokio::net::TcpListener,
    service: handshaker_service::AltsHandshakerService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    server_for(&service)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
}

/// Serves `service` on a Unix socket `listener` until `shutdown` resolves;
/// each caller is checked by `SO_PEERCRED` against the service's
/// [`CallerPolicy`](callers::CallerPolicy).
pub async fn serve_handshaker_unix(
    listener: tokio::net::UnixListener,
    service: handshaker_service::AltsHandshakerService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    server_for(&service)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await
}

/// Serves `service` on a listener from [`listen::bind_listen`] until
/// `shutdown` resolves; a Unix socket file is removed afterwards.
pub async fn serve_handshaker_on(
    listener: listen::HandshakerListener,
    service: handshaker_service::AltsHandshakerService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    match listener {
        listen::HandshakerListener::Tcp(l) => serve_handshaker(l, service, shutdown).await,
        listen::HandshakerListener::Unix(u) => {
            let _guard = u.guard;
            serve_handshaker_unix(u.listener, service, shutdown).await
        }
    }
}

/// Binds `addr` for [`serve_handshaker`] (no address check: see
/// [`listen::bind_listen`] for the checked bind the programs use).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// The message of a program refusing to start without an issuance policy.
pub const POLICY_REQUIRED: &str = "refusing to start without --policy: without an issuance policy any \
     issuer under the root could issue any identity (e.g. a certificate for \"network-admin\" \
     from an issuer not allowed to issue it would be accepted). Pass --policy FILE, or \
     --accept-any-issuer to accept every issuer under the root (not for production)";

/// Credential files from the programs' common flags (`--creds`, `--root`,
/// `--policy`, `--crl`, `--accept-any-issuer`). Without `--policy` the
/// result is an error ([`POLICY_REQUIRED`]) unless `accept_any_issuer` is
/// set, which accepts any issuer under the root and logs a warning.
pub fn checked_credential_files(
    creds: impl AsRef<std::path::Path>,
    root: impl AsRef<std::path::Path>,
    policy: Option<&std::path::Path>,
    crl: Option<&std::path::Path>,
    accept_any_issuer: bool,
) -> Result<tonic_alts::CredentialFiles, &'static str> {
    if policy.is_none() && !accept_any_issuer {
        return Err(POLICY_REQUIRED);
    }
    #[allow(deprecated)]
    Ok(credential_files(creds, root, policy, crl))
}

/// Credential files from the programs' common flags (`--creds`, `--root`,
/// `--policy`, `--crl`). Without `--policy` any issuer under the root is
/// accepted, with a warning.
#[deprecated(
    note = "fails open without a policy; use checked_credential_files, which requires a policy \
            unless accept_any_issuer is explicit"
)]
pub fn credential_files(
    creds: impl AsRef<std::path::Path>,
    root: impl AsRef<std::path::Path>,
    policy: Option<&std::path::Path>,
    crl: Option<&std::path::Path>,
) -> tonic_alts::CredentialFiles {
    let mut files = tonic_alts::CredentialFiles::new(creds.as_ref(), root.as_ref());
    match policy {
        Some(p) => files = files.issuance_policy(p),
        None => {
            tracing::warn!(
                "INSECURE: no --policy given: accepting any issuer under the root for any identity \
                 (a certificate for a privileged identity from an issuer not allowed to issue it \
                 is accepted)"
            );
            files = files.accept_any_issuer();
        }
    }
    if let Some(c) = crl {
        files = files.crl(c);
    }
    files
}

/// Resolves on Ctrl-C or SIGTERM: the shutdown of the handshaker programs.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
}
