//! Errors of the tokio/tonic layer.

use std::io;

use alts_core::handshake::HandshakeError;

/// Why an ALTS connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AltsError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The handshake was refused or failed.
    #[error("ALTS handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The peer closed the connection during the handshake.
    #[error("peer closed the connection during the ALTS handshake")]
    PeerClosed,
    /// The handshake did not finish in time.
    #[error("ALTS handshake timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The record layer could not be set up.
    #[error("record layer: {0}")]
    Record(#[from] alts_core::record::RecordError),
    /// A configuration file or value is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The handshaker service failed.
    #[error("handshaker service: {0}")]
    HandshakerService(String),
}

impl From<AltsError> for io::Error {
    fn from(e: AltsError) -> Self {
        match e {
            AltsError::Io(e) => e,
            AltsError::Timeout(_) => io::Error::new(io::ErrorKind::TimedOut, e),
            AltsError::PeerClosed => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            other => io::Error::new(io::ErrorKind::PermissionDenied, other),
        }
    }
}
