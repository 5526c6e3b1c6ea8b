//! Handshakes per second, client and server driven in one thread in memory:
//! full (warm chain cache, cold, and a new handshake certificate under a
//! known principal), PFS, and resumed.
//!
//! `cargo bench -p alts-core --bench handshake`

use std::sync::Arc;
use std::time::{Duration, Instant};

use alts_core::testing::BenchPair;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Resumed handshakes per fresh replay guard (below the guard's per-bucket
/// limit of 62,500 tickets expiring in the same minute).
const REPLAY_BATCH: u64 = 50_000;

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

    let pair = BenchPair::new(false);
    pair.handshake();
    g.bench_function("new_handshake_cert_known_principal", |b| {
        b.iter(|| {
            pair.clear_chain_caches();
            pair.handshake()
        })
    });

    let mut pair = BenchPair::new(false);
    let (mut c, mut s) = ((*pair.client).clone(), (*pair.server).clone());
    c.pfs = true;
    s.pfs = true;
    (pair.client, pair.server) = (Arc::new(c), Arc::new(s));
    g.bench_function("full_pfs_warm_cache", |b| b.iter(|| pair.handshake()));

    let mut pair = BenchPair::new(true);
    pair.handshake();
    g.bench_function("resumed", |b| {
        b.iter_custom(|iters| {
            // Every ticket expires at the same time (fixed clock), so the
            // replay guard's bucket for it fills up: a fresh guard for each
            // batch, outside the timed part.
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                pair.reset_replay_guard();
                let n = (iters - done).min(REPLAY_BATCH);
                let start = Instant::now();
                for _ in 0..n {
                    // Every resumed handshake leaves a fresh ticket for the next one.
                    assert!(pair.handshake());
                }
                total += start.elapsed();
                done += n;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
