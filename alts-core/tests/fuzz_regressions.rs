//! Regressions found by the fuzz targets in `fuzz/`.

use std::sync::Arc;

use alts_core::cert::Category;
use alts_core::handshake::{
    ClientHandshake, ClientOptions, Handshake, HandshakeConfig, HandshakeError, ServerHandshake,
};
use alts_core::policy::IssuancePolicy;
use alts_core::testing::{Issued, NOW, TestPki, deterministic_provider};

/// Splits a buffer of framed handshake messages into frames.
fn frames(mut buf: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        out.push(buf[..4 + len].to_vec());
        buf = &buf[4 + len..];
    }
    out
}

/// Re-frames `framed` (one `HandshakeMessage` whose oneof field is
/// length-delimited with a one-byte length) with `extra` appended inside the
/// inner message.
fn with_trailing_field(framed: &[u8], extra: &[u8]) -> Vec<u8> {
    let body = &framed[4..];
    let inner_len = body[1] as usize;
    assert!(inner_len + extra.len() < 0x80, "test needs a one-byte length");
    let mut new_body = vec![body[0], (inner_len + extra.len()) as u8];
    new_body.extend_from_slice(&body[2..]);
    new_body.extend_from_slice(extra);
    let mut out = (new_body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&new_body);
    out
}

struct Pair {
    client: ClientHandshake,
    server: ServerHandshake,
    server_flight: Vec<Vec<u8>>,
}

fn pair() -> Pair {
    let pki = TestPki::new(b"fuzz regressions");
    let c = pki.issue("frontend-prod", Category::Workload, "scheduler");
    let s = pki.issue("backend-prod", Category::Workload, "scheduler");
    let cfg = |who: &Issued, seed: &[u8]| {
        Arc::new(HandshakeConfig::new(
            who.credentials.clone(),
            pki.verifier(IssuancePolicy::allow_all_for_tests()),
            deterministic_provider(seed),
        ))
    };
    let mut client = ClientHandshake::new(cfg(&c, b"c"), ClientOptions::default(), NOW).unwrap();
    let mut server = ServerHandshake::new(cfg(&s, b"s"), NOW);
    let mut ci = Vec::new();
    client.poll_output(&mut ci);
    server.handle_input(&ci).unwrap();
    let mut flight = Vec::new();
    server.poll_output(&mut flight);
    let server_flight = frames(&flight);
    assert_eq!(server_flight.len(), 2, "ServerInit + ServerFinished");
    Pair {
        client,
        server,
        server_flight,
    }
}

/// An unknown field inside ServerFinished is not covered by its MAC; the
/// client used to accept it and complete on a modified server flight.
#[test]
fn client_refuses_server_finished_with_unknown_field() {
    let mut p = pair();
    let mut forged = p.server_flight[0].clone();
    // Field 15, varint 1.
    forged.extend_from_slice(&with_trailing_field(&p.server_flight[1], &[0x78, 0x01]));
    let res = p.client.handle_input(&forged);
    assert_eq!(res, Err(HandshakeError::Malformed("non-canonical encoding")));
    assert!(!p.client.is_done());
}

/// A padded (non-minimal) length varint inside ServerFinished is refused too.
#[test]
fn client_refuses_padded_varint_in_server_finished() {
    let mut p = pair();
    let sf = &p.server_flight[1];
    let body = &sf[4..];
    // Outer oneof length as the two-byte varint `len | 0x80, 0x00`.
    let mut new_body = vec![body[0], body[1] | 0x80, 0x00];
    new_body.extend_from_slice(&body[2..]);
    let mut forged = p.server_flight[0].clone();
    forged.extend_from_slice(&(new_body.len() as u32).to_be_bytes());
    forged.extend_from_slice(&new_body);
    let res = p.client.handle_input(&forged);
    assert_eq!(res, Err(HandshakeError::Malformed("non-canonical encoding")));
}

/// The same holds for ClientFinished on the server, and the genuine flight
/// still completes both sides.
#[test]
fn server_refuses_client_finished_with_unknown_field_and_genuine_completes() {
    let mut p = pair();
    let flight: Vec<u8> = p.server_flight.concat();
    assert_eq!(p.client.handle_input(&flight).unwrap(), flight.len());
    assert!(p.client.is_done());
    let mut cf = Vec::new();
    p.client.poll_output(&mut cf);
    let forged = with_trailing_field(&cf, &[0x78, 0x01]);
    let mut server2 = pair().server;
    assert_eq!(
        server2.handle_input(&forged),
        Err(HandshakeError::Malformed("non-canonical encoding"))
    );
    assert_eq!(p.server.handle_input(&cf).unwrap(), cf.len());
    assert!(p.server.is_done());
}
