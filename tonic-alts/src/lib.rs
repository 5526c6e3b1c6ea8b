//! ALTS for tonic: run the ALTS handshake before HTTP/2 and hand the
//! authenticated peer identity to interceptors and handlers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use alts_core;
