//! Record layer throughput: seal + open through our `Sealer`/`Opener` versus
//! raw `ring` AES-128-GCM seal + open of the same sizes, in the same run.
//! Ours runs on the build's provider library (`ring` by default, `aws-lc-rs`
//! with `--features aws-lc-rs`); the raw baseline is always `ring`.
//!
//! `cargo bench -p alts-core --bench record` (add `-- --quick` for a fast pass).

use std::hint::black_box;

use alts_core::record::{FRAME_OVERHEAD, RecordConfig, RecordProtocol, Side, new_record_layer};
use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

const SIZES: [usize; 2] = [4 * 1024, 16 * 1024];

fn raw_ring(c: &mut Criterion) {
    let mut group = c.benchmark_group("record_seal_open");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));

        // Raw ring: seal in place, then open in place, unique nonce per record.
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[0x42; 16]).unwrap());
        let mut buf = vec![0x17u8; size];
        let mut seq: u64 = 0;
        group.bench_with_input(BenchmarkId::new("ring_aes128gcm", size), &size, |b, _| {
            b.iter(|| {
                seq += 1;
                let mut n = [0u8; 12];
                n[..8].copy_from_slice(&seq.to_le_bytes());
                let tag = key
                    .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::empty(), &mut buf)
                    .unwrap();
                let plain = key
                    .open_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::empty(),
                        tag,
                        &mut buf,
                        0..,
                    )
                    .unwrap();
                black_box(plain.len());
            })
        });

        // Ours, one frame per payload (send_frame_size = payload + 24).
        for (label, protocol, frame) in [
            (
                "alts_gcm_rekey",
                RecordProtocol::GcmAes128Rekey,
                size + FRAME_OVERHEAD,
            ),
            ("alts_gcm_rekey_4k_frames", RecordProtocol::GcmAes128Rekey, 4096),
            (
                "alts_gmac_rekey",
                RecordProtocol::GmacAes128Rekey,
                size + FRAME_OVERHEAD,
            ),
        ] {
            let cfg = RecordConfig {
                send_frame_size: frame,
                ..RecordConfig::default()
            };
            let (mut sealer, _) = new_record_layer(protocol, &[0x42; 44], Side::Client, cfg).unwrap();
            let (_, mut opener) = new_record_layer(protocol, &[0x42; 44], Side::Server, cfg).unwrap();
            let plaintext = vec![0x17u8; size];
            let frames = size.div_ceil(frame - FRAME_OVERHEAD);
            let mut wire = BytesMut::with_capacity(size + frames * FRAME_OVERHEAD);
            group.bench_with_input(BenchmarkId::new(label, size), &size, |b, _| {
                b.iter(|| {
                    wire.clear();
                    sealer.seal(black_box(&plaintext), &mut wire).unwrap();
                    let mut total = 0;
                    while let Some(payload) = opener.open(&mut wire).unwrap() {
                        total += payload.len();
                    }
                    black_box(total);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, raw_ring);
criterion_main!(benches);
