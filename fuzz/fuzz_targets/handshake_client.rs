//! Arbitrary bytes into a fresh `ClientHandshake` (every variant, after its
//! ClientInit), in fuzzer-chosen chunks. Asserts the `Handshake` contract
//! (see `alts_fuzz::feed`) and that no input completes the handshake.
#![no_main]

use alts_core::handshake::{ClientHandshake, ClientOptions, Handshake};
use alts_fuzz::{NOW, Variant, client_config, feed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [v, chunk, input @ ..] = data else { return };
    let config = client_config(Variant::from_byte(*v));
    let mut client = ClientHandshake::new(config, ClientOptions::default(), NOW).unwrap();
    let mut ci = Vec::new();
    client.poll_output(&mut ci);
    let _ = feed(&mut client, input, usize::from(*chunk));
    // Completing needs a ServerFinished MAC keyed from our static DH.
    assert!(!client.is_done(), "client completed on fuzzer input");
});
