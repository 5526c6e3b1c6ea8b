//! The `alts` credentials command.
#![forbid(unsafe_code)]

fn main() {}
