//! The fleet side of ALTS: credentials that run themselves.
//!
//! - [`pb`]: the `alts.fleet.v1.Signer` protocol.
//! - `alts-signer`: the signing service (principal certificates, revocation-ID
//!   ranges, revocation and the signed revocation list, resumption key rings),
//!   itself served over ALTS.
//! - `alts-agent`: the per-host credential agent that keeps each workload's
//!   credential directory fresh.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod signer;

/// `alts.fleet.v1`: the signing service protocol.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("alts.fleet.v1");
}

pub mod agent;
