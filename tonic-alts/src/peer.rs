//! The authenticated peer of an ALTS connection.

use std::fmt;

use alts_core::UnixTime;
use alts_core::cert::Category;
use alts_core::handshake::{HandshakeOutcome, Resumption, RpcVersion, RpcVersions};
use alts_core::record::{RecordProtocol, SecurityLevel};

/// Who is on the other end of an ALTS connection, as established by the
/// handshake (GRPC-ALTS-FACTS §6 plus the whitepaper's richer identity).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AltsPeer {
    /// The peer's authenticated identity (stock gRPC: peer service account).
    pub identity: String,
    /// The peer's certificate category.
    pub category: Category,
    /// Who requested the peer's principal certificate.
    pub issuer: String,
    /// Revocation ID of the peer's principal certificate.
    pub principal_revocation_id: u64,
    /// Revocation ID of the peer's handshake certificate.
    pub handshake_revocation_id: u64,
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
}

impl AltsPeer {
    /// Builds the peer view of a completed handshake.
    pub fn from_outcome(o: &HandshakeOutcome) -> Self {
        Self {
            identity: o.peer.identity.clone(),
            category: o.peer.category,
            issuer: o.peer.issuer.clone(),
            principal_revocation_id: o.peer.principal_revocation_id,
            handshake_revocation_id: o.peer.handshake_revocation_id,
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
        }
    }

    /// True when the session resumed from a ticket.
    pub fn resumed(&self) -> bool {
        self.resumption.resumed()
    }
}

impl fmt::Display for AltsPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, issued by {})",
            self.identity, self.category, self.issuer
        )
    }
}
