//! Errors of the tokio/tonic layer, with a [`kind`](AltsError::kind) to act on.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;

use alts_core::cert::CertError;
use alts_core::crl::CrlError;
use alts_core::handshake::HandshakeError;
use alts_core::policy::PolicyError;

/// Why an ALTS connection could not be set up, or a configuration loaded.
///
/// Match on [`AltsError::kind`] rather than on the variants: the kind is
/// stable across releases, the variants carry detail and may grow. Through a
/// tonic `Channel` the error arrives wrapped in `tonic::transport::Error` and
/// hyper's errors; [`AltsError::find`] digs it out.
///
/// ```
/// use tonic_alts::{AltsError, AltsErrorKind};
///
/// fn explain(err: &(dyn std::error::Error + 'static)) -> &'static str {
///     match AltsError::find(err).map(AltsError::kind) {
///         Some(AltsErrorKind::PeerNotAuthorized) => "the server is not who we expected",
///         Some(AltsErrorKind::CertificateExpired) => "a certificate expired: check rotation",
///         Some(AltsErrorKind::Timeout) => "the handshake timed out",
///         Some(_) => "ALTS refused the connection",
///         None => "not an ALTS error",
///     }
/// }
/// # let e = AltsError::Timeout(std::time::Duration::from_secs(1));
/// # assert_eq!(explain(&e), "the handshake timed out");
/// ```
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
    /// A configuration value is unusable (free text). Replaced by
    /// [`AltsError::File`] and [`AltsError::InvalidConfig`], which carry
    /// typed detail.
    #[deprecated(note = "produced no more; see AltsError::File and AltsError::InvalidConfig")]
    #[error("configuration: {0}")]
    Config(String),
    /// The handshaker service failed.
    #[error("handshaker service: {0}")]
    HandshakerService(String),
    /// A configuration file could not be used.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        reason: FileError,
    },
    /// A setting is unusable or missing.
    #[error("configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// The server's identity is none of the client's targets (checked by
    /// the client itself, e.g. after a handshaker service reported the peer).
    #[error("server identity {got:?} is not one of the target identities")]
    TargetMismatch {
        /// The identity the server proved.
        got: String,
    },
}

/// What is wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// It could not be read.
    #[error("cannot read: {0}")]
    Read(#[source] io::Error),
    /// A raw key file has the wrong length.
    #[error("expected {expected} raw key bytes, found {found}")]
    KeyLength {
        /// Expected length.
        expected: usize,
        /// Length found.
        found: usize,
    },
    /// A certificate, key or root key is unusable.
    #[error("{0}")]
    Credentials(#[source] CertError),
    /// The issuance policy does not load.
    #[error("issuance policy: {0}")]
    IssuancePolicy(#[source] PolicyError),
    /// The revocation list does not load or is not signed by the root.
    #[error("revocation list: {0}")]
    Crl(#[source] CrlError),
    /// The file does not parse.
    #[error("{0}")]
    Parse(String),
    /// A revocation list is in use but the files no longer name one:
    /// dropping it would accept revoked peers again.
    #[error("a revocation list is in use but none is configured now; keeping the old one")]
    CrlMissing,
    /// The revocation list is older than the one in use (a rollback).
    #[error("revocation list issued at {offered} is older than the one in use (issued at {loaded})")]
    CrlRollback {
        /// `issued_at` of the list in use (seconds since the Unix epoch).
        loaded: i64,
        /// `issued_at` of the refused list.
        offered: i64,
    },
}

/// A setting that is unusable or missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No issuance policy file was given and the fail-open mode was not
    /// chosen explicitly.
    #[error(
        "no issuance policy given: pass one (CredentialFiles::issuance_policy) or opt out explicitly \
         with CredentialFiles::accept_any_issuer()"
    )]
    NoIssuancePolicy,
    /// The operation needs a configuration loaded from files.
    #[error("this configuration was not loaded from files")]
    NotFromFiles,
    /// The URI uses `https://`. ALTS replaces TLS: dial `http://` URIs (a
    /// tonic TLS feature would otherwise try to run TLS over ALTS).
    #[error("URI {0} uses https://; ALTS connections use http:// URIs (ALTS replaces TLS)")]
    HttpsUri(String),
    /// The URI has no host.
    #[error("URI {0} has no host")]
    NoHost(String),
    /// The handshaker service address does not parse.
    #[error("handshaker service address {address:?}: {reason}")]
    HandshakerAddress {
        /// The address given.
        address: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The listen address or socket could not be set up.
    #[error("listener: {0}")]
    Listener(String),
    /// A client named no target identity and did not opt out explicitly.
    #[error(
        "no target identity: name the server with AltsConnector::target_identity, or accept any server \
         explicitly with AltsConnector::accept_any_server()"
    )]
    NoTargetIdentity,
    /// The revocation list in use is older than the configured maximum age
    /// and the maximum is enforced.
    #[error("revocation list is {age_secs} s old, more than the enforced maximum of {max_secs} s")]
    CrlTooOld {
        /// Age of the loaded list.
        age_secs: u64,
        /// The configured maximum.
        max_secs: u64,
    },
}

/// What kind of failure an [`AltsError`] is, for code that reacts to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AltsErrorKind {
    /// The peer refused the handshake (it sent an alert).
    RefusedByPeer,
    /// The peer authenticated but is not one we accept (target identities,
    /// server-side client check).
    PeerNotAuthorized,
    /// The peer's certificate chain is malformed, badly signed, or under a
    /// root we do not trust.
    CertificateInvalid,
    /// A certificate in the peer's chain expired or is not yet valid.
    CertificateExpired,
    /// A certificate in the peer's chain is revoked.
    CertificateRevoked,
    /// The issuance policy refuses the peer's chain (its issuer may not
    /// issue that identity or category).
    Policy,
    /// No handshake cipher, record protocol, application protocol or RPC
    /// version in common, or a required property (PFS) missing.
    Negotiation,
    /// The peer broke the protocol (malformed or unexpected messages, a bad
    /// Finished MAC, an unusable resumption).
    Protocol,
    /// The handshake did not finish in time.
    Timeout,
    /// The socket failed or the peer closed it.
    Io,
    /// A configuration file or value is unusable.
    Config,
    /// The handshaker service failed.
    HandshakerService,
    /// Our own credentials, the random source or the record layer failed.
    Internal,
}

impl AltsError {
    /// The kind of failure.
    pub fn kind(&self) -> AltsErrorKind {
        use AltsErrorKind as K;
        #[allow(deprecated)]
        match self {
            Self::Io(_) | Self::PeerClosed => K::Io,
            Self::Timeout(_) => K::Timeout,
            Self::Record(_) => K::Internal,
            Self::Config(_) | Self::File { .. } | Self::InvalidConfig(_) => K::Config,
            Self::HandshakerService(_) => K::HandshakerService,
            Self::TargetMismatch { .. } => K::PeerNotAuthorized,
            Self::Handshake(h) => handshake_kind(h),
        }
    }

    /// Finds the `AltsError` inside `err` or anywhere in its chain of
    /// sources, including inside `std::io::Error`s (which hide their inner
    /// error from `source()`). Use it on the `tonic::transport::Error` that
    /// `Endpoint::connect_with_connector` returns, or on a `tonic::Status`'s
    /// source.
    pub fn find<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a AltsError> {
        let mut cur = Some(err);
        let mut depth = 0;
        while let Some(e) = cur {
            if let Some(a) = e.downcast_ref::<AltsError>() {
                return Some(a);
            }
            if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref)
                && let Some(a) = Self::find(inner)
            {
                return Some(a);
            }
            depth += 1;
            if depth > 32 {
                return None;
            }
            cur = e.source();
        }
        None
    }

    pub(crate) fn file(path: impl Into<PathBuf>, reason: FileError) -> Self {
        Self::File {
            path: path.into(),
            reason,
        }
    }
}

fn handshake_kind(h: &HandshakeError) -> AltsErrorKind {
    use AltsErrorKind as K;
    #[allow(deprecated)]
    match h {
        HandshakeError::PeerCert(c) => cert_kind(c),
        HandshakeError::TargetIdentityMismatch { .. } | HandshakeError::ClientRefused { .. } => {
            K::PeerNotAuthorized
        }
        HandshakeError::NoCommonCipher { .. }
        | HandshakeError::NoCommonRecordProtocol { .. }
        | HandshakeError::NoCommonApplicationProtocol { .. }
        | HandshakeError::NoCommonRpcVersion
        | HandshakeError::NotOffered { .. }
        | HandshakeError::PfsRequired
        | HandshakeError::KciRequired => K::Negotiation,
        HandshakeError::PeerAlert(_) | HandshakeError::PeerRefused { .. } => K::RefusedByPeer,
        HandshakeError::LocalCredentials(_) | HandshakeError::Crypto(_) => K::Internal,
        _ => K::Protocol,
    }
}

fn cert_kind(c: &CertError) -> AltsErrorKind {
    use AltsErrorKind as K;
    match c {
        CertError::Expired { .. } | CertError::NotYetValid { .. } => K::CertificateExpired,
        CertError::Revoked { .. } => K::CertificateRevoked,
        CertError::Policy(_) => K::Policy,
        CertError::Random => K::Internal,
        _ => K::CertificateInvalid,
    }
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
