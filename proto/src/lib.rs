//! Protobuf messages for ALTS.
//!
//! - [`grpc_gcp`]: the `grpc.gcp` handshaker service used by stock gRPC
//!   (field numbers match the public grpc-proto definitions).
//! - [`alts_v1`]: this project's credentials and handshake messages.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// `grpc.gcp`: the handshaker service protocol and shared ALTS types.
#[allow(clippy::all, clippy::pedantic)]
pub mod grpc_gcp {
    tonic::include_proto!("grpc.gcp");
}

/// `alts.v1`: credentials and handshake messages of this implementation.
#[allow(clippy::all, clippy::pedantic)]
pub mod alts_v1 {
    tonic::include_proto!("alts.v1");
}

/// `grpc.testing`: the interop test service subset (EmptyCall, UnaryCall).
#[allow(clippy::all, clippy::pedantic)]
pub mod grpc_testing {
    tonic::include_proto!("grpc.testing");
}

/// `grpc.health.v1`: the standard gRPC health checking protocol.
#[allow(clippy::all, clippy::pedantic)]
pub mod grpc_health_v1 {
    tonic::include_proto!("grpc.health.v1");
}

pub use prost::Message;

/// Formats the length of a secret field instead of its bytes.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes redacted>", self.0)
    }
}

/// Prints every field except the resumption secret, which shows as its
/// length only.
impl std::fmt::Debug for alts_v1::TicketContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketContents")
            .field("version", &self.version)
            .field("peer_identity", &self.peer_identity)
            .field("peer_category", &self.peer_category)
            .field("peer_issuer", &self.peer_issuer)
            .field("peer_principal_revocation_id", &self.peer_principal_revocation_id)
            .field("peer_handshake_revocation_id", &self.peer_handshake_revocation_id)
            .field("peer_not_after", &self.peer_not_after)
            .field("local_identity", &self.local_identity)
            .field("resumption_secret", &Redacted(self.resumption_secret.len()))
            .field("expires_at", &self.expires_at)
            .field("record_protocol", &self.record_protocol)
            .finish()
    }
}

/// The resumption secret is zeroized when the contents are dropped,
/// whichever path drops them (sealed, opened, refused).
impl Drop for alts_v1::TicketContents {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.resumption_secret);
    }
}

/// Prints every field except the record key material, which shows as its
/// length only.
impl std::fmt::Debug for grpc_gcp::HandshakerResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakerResult")
            .field("application_protocol", &self.application_protocol)
            .field("record_protocol", &self.record_protocol)
            .field("key_data", &Redacted(self.key_data.len()))
            .field("peer_identity", &self.peer_identity)
            .field("local_identity", &self.local_identity)
            .field("keep_channel_open", &self.keep_channel_open)
            .field("peer_rpc_versions", &self.peer_rpc_versions)
            .field("max_frame_size", &self.max_frame_size)
            .finish()
    }
}
