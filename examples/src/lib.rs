//! Shared code of the tonic-alts examples.
#![forbid(unsafe_code)]
