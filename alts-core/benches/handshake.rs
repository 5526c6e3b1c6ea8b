//! Handshakes per second, client and server driven in one thread in memory:
//! full (warm chain cache and cold), PFS, and resumed.
//!
//! `cargo bench -p alts-core --bench handshake`

use std::sync::Arc;
use std::time::{Duration, Instant};

use alts_core::testing::BenchPair;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));

    let pair = BenchPair::new(false);
    g.bench_function("full_warm_cache", |b| b.iter(|| pair.handshake()));

    let pair = BenchPair::new(false);
    g.bench_function("full_cold_cache", |b| {
        b.iter(|| {
            pair.clear_caches();
            pair.handshake()
        })
    });

    let mut pair = BenchPair::new(false);
    let (mut c, mut s) = ((*pair.client).clone(), (*pair.server).clone());
    c.pfs = true;
    s.pfs = true;
    (pair.client, pair.server) = (Arc::new(c), Arc::new(s));
    g.bench_function("full_pfs_warm_cache", |b| b.iter(|| pair.handshake()));

    // Every resumed handshake leaves a fresh ticket for the next one. All run
    // at the same fixed time, so their tickets expire in the same minute, and
    // the server's default replay guard holds at most 62,500 (1/16 of its
    // 1,000,000) ticket IDs expiring in one minute, then refuses resumption:
    // a new pair (and its first, full handshake) every `RESUMED_PER_PAIR`
    // handshakes, outside the timed part.
    const RESUMED_PER_PAIR: u32 = 50_000;
    let mut pair = BenchPair::new(true);
    pair.handshake();
    let mut used = 0;
    g.bench_function("resumed", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                if used == RESUMED_PER_PAIR {
                    pair = BenchPair::new(true);
                    pair.handshake();
                    used = 0;
                }
                used += 1;
                let start = Instant::now();
                let resumed = pair.handshake();
                timed += start.elapsed();
                assert!(resumed);
            }
            timed
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
