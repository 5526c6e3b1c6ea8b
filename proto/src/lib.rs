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
