//! Sans-IO ALTS (Application Layer Transport Security).
//!
//! Nothing in this crate performs I/O, reads a clock or touches an OS random
//! source on its own: bytes go in, bytes come out, and time and randomness are
//! injected (see [`crypto::CryptoProvider`] and [`UnixTime`]).
//!
//! - [`record`]: the ALTS record protocol, byte-compatible with stock gRPC.
//! - [`cert`], [`policy`], [`crl`], [`verify`]: credentials and their checks.
//! - [`handshake`]: client and server handshake state machines, with
//!   [`resumption`].
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod cert;
pub mod crl;
pub mod crypto;
pub mod handshake;
pub mod policy;
pub mod record;
pub mod resumption;
pub mod verify;

#[cfg(feature = "test-util")]
pub mod testing;

mod time;
pub use time::UnixTime;
