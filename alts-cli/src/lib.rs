//! Library side of the `alts` command: reusable helpers to load and store
//! ALTS credential files (see [`files`]), so that servers, clients and tests
//! read credentials exactly as the CLI writes them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod files;
