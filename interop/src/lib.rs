//! Interoperability with stock gRPC ALTS stacks.
#![forbid(unsafe_code)]
