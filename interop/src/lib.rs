//! Interoperability with stock gRPC ALTS stacks.
//!
//! - [`handshaker_service`]: `grpc.gcp.HandshakerService` over a sans-IO
//!   [`HandshakeEngine`](handshaker_service::HandshakeEngine), so unmodified
//!   Go/Python/C++/Java gRPC apps can run our handshake.
//! - [`engine`]: the real engine (`alts-core` handshakes) for the service.
//! - `null_engine` (feature `insecure-test-engine` only): an INSECURE
//!   engine used to test the plumbing with stock gRPC.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod engine;
pub mod handshaker_service;
#[cfg(feature = "insecure-test-engine")]
pub mod null_engine;

use std::net::SocketAddr;

/// Serves `service` on `listener` until `shutdown` resolves.
pub async fn serve_handshaker(
    listener: tokio::net::TcpListener,
    service: handshaker_service::AltsHandshakerService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
}

/// Binds `addr` for [`serve_handshaker`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Credential files from the programs' common flags (`--creds`, `--root`,
/// `--policy`, `--crl`). Without `--policy` any issuer under the root is
/// accepted, with a warning.
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
            tracing::warn!("no --policy given: accepting any issuer under the root");
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
