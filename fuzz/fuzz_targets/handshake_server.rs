//! Arbitrary bytes into a fresh `ServerHandshake` (every variant), in
//! fuzzer-chosen chunks. Asserts the `Handshake` contract (see
//! `alts_fuzz::feed`) and that no input completes the handshake.
#![no_main]

use alts_core::handshake::{Handshake, ServerHandshake};
use alts_fuzz::{NOW, Variant, feed, server_config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [v, chunk, input @ ..] = data else { return };
    let mut server = ServerHandshake::new(server_config(Variant::from_byte(*v)), NOW);
    let _ = feed(&mut server, input, usize::from(*chunk));
    // Completing needs a ClientFinished MAC over our fresh nonce's transcript.
    assert!(!server.is_done(), "server completed on fuzzer input");
    let mut out = Vec::new();
    server.poll_output(&mut out);
});
