//! Revocation list: size and lookup time for 10 million revoked IDs.
//!
//! Data set (deterministic): revocation IDs are `category byte ‖ 56-bit serial`,
//! with serials handed out from a 2^32 space per category (3 categories).
//! 8 million IDs come in dense ranges (random starts, 1 000–20 000 IDs each,
//! as when a CA's whole range or a batch is revoked) and 2 million are random
//! single IDs scattered over the whole space.
//!
//! Run: `cargo bench -p alts-core --bench crl`. The file size, build and load
//! times are printed before the criterion results.

use std::hint::black_box;
use std::time::Instant;

use alts_core::UnixTime;
use alts_core::cert::{RootKey, SigningKey, revocation_id};
use alts_core::crl::{RevocationList, RevocationListBuilder};
use alts_core::crypto::DeterministicRandom;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const DENSE: u64 = 8_000_000;
const RANDOM: u64 = 2_000_000;
const SPACE: u64 = 1 << 32;
const LOOKUPS: usize = 4096;

/// splitmix64: cheap deterministic test data (not cryptographic).
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn id(&mut self) -> u64 {
        let cat = 1 + self.below(3) as u8;
        revocation_id(cat, self.below(SPACE)).unwrap()
    }
}

fn data() -> (RevocationListBuilder, Vec<u64>) {
    let mut m = Mix(42);
    let mut b = RevocationListBuilder::new();
    let mut samples = Vec::new();
    let mut dense = 0;
    while dense < DENSE {
        let start = m.id();
        let len = (1_000 + m.below(19_001)).min(DENSE - dense);
        b.insert_range(start..=start + len - 1);
        samples.push(start + m.below(len));
        dense += len;
    }
    for _ in 0..RANDOM {
        let id = m.id();
        b.insert(id);
        if samples.len() < 2 * LOOKUPS && m.below(2) == 0 {
            samples.push(id);
        }
    }
    (b, samples)
}

fn bench(c: &mut Criterion) {
    let rng = DeterministicRandom::new(b"crl bench");
    let key = SigningKey::generate(&rng).unwrap();
    let root = RootKey::from_signing_key("bench", &key);

    let t = Instant::now();
    let (builder, samples) = data();
    let bytes = builder.sign(&key, UnixTime(1_800_000_000)).unwrap();
    let build = t.elapsed();
    let t = Instant::now();
    let crl = RevocationList::from_signed_bytes(&bytes, &root).unwrap();
    let load = t.elapsed();
    println!(
        "crl: {} revoked ids ({} in dense ranges, {} random) -> signed file {} bytes ({:.2} MiB, {:.2} bytes/id); build+sign {:?}, load+verify {:?}",
        crl.len(),
        DENSE,
        RANDOM,
        bytes.len(),
        bytes.len() as f64 / (1024.0 * 1024.0),
        bytes.len() as f64 / crl.len() as f64,
        build,
        load
    );

    let hits: Vec<u64> = samples.iter().copied().take(LOOKUPS).collect();
    assert!(hits.iter().all(|&id| crl.is_revoked(id)));
    let mut m = Mix(7);
    // Misses: random IDs in the used space (overwhelmingly not revoked), and
    // IDs in a category with no revoked IDs at all.
    let mut misses: Vec<u64> = (0..LOOKUPS / 2)
        .map(|_| m.id())
        .filter(|&id| !crl.is_revoked(id))
        .collect();
    misses.extend((0..LOOKUPS / 2).map(|_| revocation_id(9, m.below(SPACE)).unwrap()));

    let mut g = c.benchmark_group("crl_lookup");
    g.throughput(Throughput::Elements(hits.len() as u64));
    g.bench_function("hit", |b| {
        b.iter(|| hits.iter().filter(|&&id| crl.is_revoked(black_box(id))).count())
    });
    g.throughput(Throughput::Elements(misses.len() as u64));
    g.bench_function("miss", |b| {
        b.iter(|| misses.iter().filter(|&&id| crl.is_revoked(black_box(id))).count())
    });
    g.finish();

    let mut g = c.benchmark_group("crl_load");
    g.sample_size(10);
    g.bench_function("from_signed_bytes_10M", |b| {
        b.iter(|| RevocationList::from_signed_bytes(black_box(&bytes), &root).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
