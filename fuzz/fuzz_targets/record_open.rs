//! Record layer: arbitrary bytes in arbitrary chunks into `Opener::open`
//! (every protocol, both sides, small `max_recv_frame`), and a seal → open
//! round trip with optional single-byte tampering.
#![no_main]

use alts_core::record::{FRAME_OVERHEAD, Opener, RecordConfig, RecordProtocol, Side, new_record_layer};
use alts_fuzz::arbitrary::Unstructured;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// Opens everything complete in `buf`; returns the payloads and the first
/// error. Checks the payload bound and that errors fuse the opener.
fn drain(opener: &mut Opener, buf: &mut BytesMut, max_recv: usize, out: &mut Vec<u8>) -> bool {
    loop {
        match opener.open(buf) {
            Ok(Some(p)) => {
                assert!(
                    p.len() + 20 <= max_recv,
                    "payload {} over limit {max_recv}",
                    p.len()
                );
                out.extend_from_slice(&p);
            }
            Ok(None) => return true,
            Err(e) => {
                assert!(opener.open(buf).is_err(), "opener not fused after {e}");
                return false;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let protocol = RecordProtocol::ALL[u.int_in_range(0..=2).unwrap_or(0)];
    let side = if u.arbitrary().unwrap_or(false) {
        Side::Client
    } else {
        Side::Server
    };
    let round_trip: bool = u.arbitrary().unwrap_or(false);
    let mut key = [0x5au8; 64];
    if round_trip {
        let _ = u.fill_buffer(&mut key[..protocol.key_data_len()]);
    }

    if !round_trip {
        let max_recv = u.int_in_range(20..=300).unwrap_or(20);
        let config = RecordConfig {
            max_recv_frame: max_recv,
            ..RecordConfig::default()
        };
        let (_, mut opener) = new_record_layer(protocol, &key, side, config).unwrap();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        while !u.is_empty() {
            let n = u.int_in_range(0..=64).unwrap_or(0);
            buf.extend_from_slice(u.bytes(n.min(u.len())).unwrap_or(&[]));
            if !drain(&mut opener, &mut buf, max_recv, &mut out) {
                return;
            }
        }
        return;
    }

    // Round trip: `side` seals, the peer opens.
    let send = u.int_in_range(FRAME_OVERHEAD + 1..=300).unwrap_or(25);
    let max_recv = u.int_in_range((send - 4).max(20)..=send + 64).unwrap_or(send);
    let seal_cfg = RecordConfig {
        max_recv_frame: max_recv,
        send_frame_size: send,
    };
    let open_cfg = RecordConfig {
        max_recv_frame: max_recv,
        ..RecordConfig::default()
    };
    let (mut sealer, _) = new_record_layer(protocol, &key, side, seal_cfg).unwrap();
    let (_, mut opener) = new_record_layer(protocol, &key, side.peer(), open_cfg).unwrap();
    let mut wire = BytesMut::new();
    let mut expected = Vec::new();
    for _ in 0..u.int_in_range(0..=8).unwrap_or(0) {
        let n = u.int_in_range(0..=600).unwrap_or(0);
        let msg = u.bytes(n.min(u.len())).unwrap_or(&[]);
        sealer.seal(msg, &mut wire).unwrap();
        expected.extend_from_slice(msg);
    }
    // Frame starts, from the untampered wire.
    let mut starts = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        starts.push(at);
        let len = u32::from_le_bytes(wire[at..at + 4].try_into().unwrap()) as usize;
        assert!(len + 4 <= send, "sealed frame of {} bytes over {send}", len + 4);
        at += 4 + len;
    }
    assert_eq!(at, wire.len());
    let tamper = if !wire.is_empty() && u.arbitrary().unwrap_or(false) {
        let pos = u.int_in_range(0..=wire.len() - 1).unwrap_or(0);
        wire[pos] ^= u.int_in_range(1..=255).unwrap_or(1);
        Some(pos)
    } else {
        None
    };
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut wire = &wire[..];
    let mut ok = true;
    while ok && !wire.is_empty() {
        let n = u.int_in_range(1..=512).unwrap_or(512).min(wire.len());
        buf.extend_from_slice(&wire[..n]);
        wire = &wire[n..];
        ok = drain(&mut opener, &mut buf, max_recv, &mut got);
    }
    assert!(expected.starts_with(&got), "opened bytes that were never sealed");
    match tamper {
        None => {
            assert!(ok, "an untampered record failed");
            assert_eq!(got, expected);
            assert!(buf.is_empty());
        }
        Some(pos) if got.len() == expected.len() => {
            // Only the unauthenticated high bytes of the type field may change
            // undetected (as stock gRPC, which checks the low byte only).
            let start = starts.iter().rev().find(|&&s| s <= pos).unwrap();
            assert!(
                (5..8).contains(&(pos - start)),
                "tampered byte {pos} (frame at {start}) went unnoticed"
            );
        }
        Some(_) => {}
    }
});
