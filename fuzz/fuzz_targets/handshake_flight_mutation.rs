//! Real handshake flights with fuzzer-driven byte edits.
//!
//! Per variant, a genuine ClientInit and the server's reply (ServerInit +
//! ServerFinished) are recorded once (both sides are deterministic). Then
//! either the server's flight is edited and fed to a fresh client, or the
//! ClientInit is edited, fed to a fresh server, and whatever that server
//! answers is fed to a fresh client. Asserts:
//! - the client never completes unless the handshake bytes it consumed are
//!   exactly the genuine server flight (edits past its end are record data);
//! - the client never completes against a server that saw an edited
//!   ClientInit (the transcript differs);
//! - with no effective edit, the handshake does complete (the harness is live);
//! - the `Handshake` contract of `alts_fuzz::feed` on both sides.
#![no_main]

use std::sync::OnceLock;

use alts_core::handshake::{ClientHandshake, ClientOptions, Handshake, ServerHandshake};
use alts_fuzz::arbitrary::Unstructured;
use alts_fuzz::{NOW, Variant, apply_edits, client_config, feed, server_config};
use libfuzzer_sys::fuzz_target;

struct Flight {
    client_init: Vec<u8>,
    server_flight: Vec<u8>,
}

fn new_client(v: Variant) -> (ClientHandshake, Vec<u8>) {
    let mut c = ClientHandshake::new(client_config(v), ClientOptions::default(), NOW).unwrap();
    let mut ci = Vec::new();
    c.poll_output(&mut ci);
    (c, ci)
}

fn flights() -> &'static [Flight] {
    static F: OnceLock<Vec<Flight>> = OnceLock::new();
    F.get_or_init(|| {
        Variant::ALL
            .iter()
            .map(|&v| {
                let (mut client, client_init) = new_client(v);
                let mut server = ServerHandshake::new(server_config(v), NOW);
                assert_eq!(server.handle_input(&client_init).unwrap(), client_init.len());
                let mut server_flight = Vec::new();
                server.poll_output(&mut server_flight);
                assert_eq!(client.handle_input(&server_flight).unwrap(), server_flight.len());
                assert!(client.is_done(), "{v:?}: genuine flight did not complete");
                Flight {
                    client_init,
                    server_flight,
                }
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let idx = u.int_in_range(0..=Variant::ALL.len() - 1).unwrap_or(0);
    let v = Variant::ALL[idx];
    let f = &flights()[idx];
    let edit_server_flight: bool = u.arbitrary().unwrap_or(true);
    let chunk = usize::from(u.arbitrary::<u8>().unwrap_or(0));

    if edit_server_flight {
        let mut flight = f.server_flight.clone();
        apply_edits(&mut u, &mut flight);
        let (mut client, ci) = new_client(v);
        assert_eq!(ci, f.client_init, "client is not deterministic");
        let (used, err) = feed(&mut client, &flight, chunk);
        if client.is_done() {
            assert_eq!(
                &flight[..used],
                &f.server_flight[..],
                "client completed on a modified server flight"
            );
        } else if flight.starts_with(&f.server_flight) {
            panic!("genuine server flight refused: {err:?}");
        }
    } else {
        let mut ci = f.client_init.clone();
        apply_edits(&mut u, &mut ci);
        let mut server = ServerHandshake::new(server_config(v), NOW);
        let _ = feed(&mut server, &ci, chunk);
        let mut reply = Vec::new();
        server.poll_output(&mut reply);
        let (mut client, _) = new_client(v);
        let (_, err) = feed(&mut client, &reply, chunk);
        if client.is_done() {
            assert!(
                ci.starts_with(&f.client_init),
                "client completed against a server that saw a modified ClientInit"
            );
        } else if ci == f.client_init {
            panic!("genuine ClientInit did not lead to completion: {err:?}");
        }
    }
});
