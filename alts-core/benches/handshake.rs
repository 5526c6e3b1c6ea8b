//! Handshakes per second, client and server driven in one thread in memory:
//! full (warm chain cache and cold), PFS, and resumed.
//!
//! `cargo bench -p alts-core --bench handshake`

use std::sync::Arc;

use alts_core::cert::Category;
use alts_core::crypto::default_provider;
use alts_core::handshake::{
    ClientHandshake, ClientOptions, HandshakeConfig, ResumptionConfig, ServerHandshake,
};
use alts_core::policy::Policy;
use alts_core::resumption::{ResumptionKey, ResumptionKeys};
use alts_core::testing::{Delivery, NOW, TestPki, drive};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn configs(
    resume: bool,
) -> (
    Arc<HandshakeConfig>,
    Arc<HandshakeConfig>,
    Arc<alts_core::verify::Verifier>,
    Arc<alts_core::verify::Verifier>,
) {
    let pki = TestPki::new(b"bench");
    let c = pki.issue("frontend-prod", Category::Workload, "scheduler");
    let s = pki.issue("backend-prod", Category::Workload, "scheduler");
    let cv = pki.verifier(Policy::allow_all_for_tests());
    let sv = pki.verifier(Policy::allow_all_for_tests());
    let mut cc = HandshakeConfig::new(c.credentials, cv.clone(), default_provider());
    let mut sc = HandshakeConfig::new(s.credentials, sv.clone(), default_provider());
    if resume {
        let key = |b: u8| Arc::new(ResumptionKeys::new(ResumptionKey::new([b; 16], &[b; 32]), vec![]));
        cc.resumption = Some(ResumptionConfig::new(key(1)));
        sc.resumption = Some(ResumptionConfig::new(key(2)));
    }
    (Arc::new(cc), Arc::new(sc), cv, sv)
}

fn one(c: &Arc<HandshakeConfig>, s: &Arc<HandshakeConfig>) -> bool {
    let mut client = ClientHandshake::new(c.clone(), ClientOptions::default(), NOW).unwrap();
    let mut server = ServerHandshake::new(s.clone(), NOW);
    let (co, _) = drive(&mut client, &mut server, Delivery::Whole).unwrap();
    co.resumption.resumed()
}

fn bench(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));

    let (c, s, _, _) = configs(false);
    g.bench_function("full_warm_cache", |b| b.iter(|| one(&c, &s)));

    let (c, s, cv, sv) = configs(false);
    g.bench_function("full_cold_cache", |b| {
        b.iter(|| {
            cv.clear_cache();
            sv.clear_cache();
            one(&c, &s)
        })
    });

    let (c, s, _, _) = configs(false);
    let (mut c2, mut s2) = ((*c).clone(), (*s).clone());
    c2.pfs = true;
    s2.pfs = true;
    let (c2, s2) = (Arc::new(c2), Arc::new(s2));
    g.bench_function("full_pfs_warm_cache", |b| b.iter(|| one(&c2, &s2)));

    let (c, s, _, _) = configs(true);
    one(&c, &s);
    g.bench_function("resumed", |b| {
        b.iter(|| {
            // Every resumed handshake leaves a fresh ticket for the next one.
            assert!(one(&c, &s));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
