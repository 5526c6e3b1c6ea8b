//! Handshakes per second, client and server driven in one thread in memory:
//! full (warm chain cache and cold), PFS, and resumed.
//!
//! `cargo bench -p alts-core --bench handshake`

use std::sync::Arc;

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

    let pair = BenchPair::new(true);
    pair.handshake();
    g.bench_function("resumed", |b| {
        b.iter(|| {
            // Every resumed handshake leaves a fresh ticket for the next one.
            assert!(pair.handshake());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
