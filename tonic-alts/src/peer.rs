//! The authenticated peer of an ALTS connection.

use std::collections::BTreeMap;
use std::fmt;

use alts_core::UnixTime;
use alts_core::cert::Category;
use alts_core::handshake::{HandshakeOutcome, Resumption, RpcVersion, RpcVersions};
use alts_core::record::{RecordProtocol, SecurityLevel};

/// Who is on the other end of an ALTS connection, as established by the
/// handshake.
///
/// A native handshake fills every field. Through a handshaker service, the
/// fields the service did not report are `None` (Google's service reports
/// the identity and the negotiated parameters only); everything it sent is
/// in [`attributes`](AltsPeer::attributes).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AltsPeer {
    /// The peer's authenticated identity (stock gRPC: peer service account).
    pub identity: String,
    /// The peer's certificate category (`None`: not reported).
    pub category: Option<Category>,
    /// Who requested the peer's principal certificate (`None`: not reported).
    pub issuer: Option<String>,
    /// Revocation ID of the peer's principal certificate (`None`: not reported).
    pub principal_revocation_id: Option<u64>,
    /// Revocation ID of the peer's handshake certificate (`None`: not reported).
    pub handshake_revocation_id: Option<u64>,
    /// Earliest expiry of the peer's certificates (`None`: no expiry).
    pub not_after: Option<UnixTime>,
    /// Our own identity on this connection (stock gRPC: local service account).
    pub local_identity: String,
    /// The negotiated record protocol.
    pub record_protocol: RecordProtocol,
    /// Privacy and integrity, or integrity only.
    pub security_level: SecurityLevel,
    /// The negotiated application protocol (e.g. `grpc`).
    pub application_protocol: String,
    /// The negotiated RPC protocol version.
    pub rpc_version: RpcVersion,
    /// The peer's advertised RPC versions.
    pub peer_rpc_versions: RpcVersions,
    /// The handshake cipher.
    pub handshake_cipher: String,
    /// How the handshake resumed, if it did.
    pub resumption: Resumption,
    /// Ephemeral keys were used (forward secrecy).
    pub pfs: bool,
    /// The KCI-resistant variant ran.
    pub kci_resistant: bool,
    /// Client side: the target identity the server matched (`None` when the
    /// client accepted any server, and on the server side).
    pub matched_target: Option<String>,
    /// Raw peer attributes a handshaker service reported (empty for a
    /// native handshake).
    pub attributes: BTreeMap<String, String>,
}

impl AltsPeer {
    /// Builds the peer view of a completed handshake.
    pub fn from_outcome(o: &HandshakeOutcome) -> Self {
        Self {
            identity: o.peer.identity.clone(),
            category: Some(o.peer.category),
            issuer: Some(o.peer.issuer.clone()),
            principal_revocation_id: Some(o.peer.principal_revocation_id),
            handshake_revocation_id: Some(o.peer.handshake_revocation_id),
            not_after: o.peer.not_after,
            local_identity: o.local_identity.clone(),
            record_protocol: o.record_protocol,
            security_level: o.record_protocol.security_level(),
            application_protocol: o.application_protocol.clone(),
            rpc_version: o.rpc_version,
            peer_rpc_versions: o.peer_rpc_versions,
            handshake_cipher: o.handshake_cipher.clone(),
            resumption: o.resumption.clone(),
            pfs: o.pfs,
            kci_resistant: o.kci_resistant,
            matched_target: None,
            attributes: BTreeMap::new(),
        }
    }

    /// A peer for unit tests of handlers and authorizers: `identity`, a
    /// workload issued by `test-issuer`, with the default record protocol.
    /// Adjust the public fields as needed, then attach it to a request with
    /// [`AltsPeer::attach_to`].
    ///
    /// ```
    /// use tonic_alts::{AltsPeer, AltsRequestExt};
    ///
    /// let mut request = tonic::Request::new(());
    /// AltsPeer::for_testing("greeter-prod").attach_to(&mut request);
    /// assert_eq!(request.alts_peer().unwrap().identity, "greeter-prod");
    /// ```
    #[cfg(feature = "test-util")]
    pub fn for_testing(identity: impl Into<String>) -> Self {
        let record_protocol = RecordProtocol::GcmAes128Rekey;
        Self {
            identity: identity.into(),
            category: Some(Category::Workload),
            issuer: Some("test-issuer".to_owned()),
            principal_revocation_id: Some(1),
            handshake_revocation_id: Some(2),
            not_after: None,
            local_identity: "test-local".to_owned(),
            record_protocol,
            security_level: record_protocol.security_level(),
            application_protocol: "grpc".to_owned(),
            rpc_version: RpcVersion { major: 2, minor: 1 },
            peer_rpc_versions: RpcVersions::default(),
            handshake_cipher: alts_core::handshake::HS_X25519_HKDF_SHA256.to_owned(),
            resumption: Resumption::NotAttempted,
            pfs: false,
            kci_resistant: false,
            matched_target: None,
            attributes: BTreeMap::new(),
        }
    }

    /// Puts this peer into `request`'s extensions, where
    /// [`AltsRequestExt::alts_peer`](crate::AltsRequestExt::alts_peer) and the
    /// authorization layer find it (for tests of handlers).
    #[cfg(feature = "test-util")]
    pub fn attach_to<T>(self, request: &mut tonic::Request<T>) {
        request.extensions_mut().insert(std::sync::Arc::new(self));
    }

    /// True when the session resumed from a ticket.
    pub fn resumed(&self) -> bool {
        self.resumption.resumed()
    }
}

impl fmt::Display for AltsPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.identity)?;
        match (&self.category, &self.issuer) {
            (Some(c), Some(i)) => write!(f, " ({c}, issued by {i})"),
            (Some(c), None) => write!(f, " ({c})"),
            (None, Some(i)) => write!(f, " (issued by {i})"),
            (None, None) => Ok(()),
        }
    }
}
