//! A plain loop over one handshake kind, for profilers (`perf record`,
//! `valgrind --tool=callgrind`), without criterion's own work in the
//! profile.
//!
//! `cargo bench -p alts-core --features test-util --bench handshake_profile -- <row> <count>`
//! with `<row>` one of `full_warm_cache`, `full_cold_cache`,
//! `full_pfs_warm_cache`, `new_handshake_cert`, `resumed`.

use std::sync::Arc;

use alts_core::testing::BenchPair;

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let row = args.get(1).map_or("full_warm_cache", String::as_str);
    let count: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1000);
    match row {
        "full_warm_cache" => {
            let pair = BenchPair::new(false);
            for _ in 0..count {
                pair.handshake();
            }
        }
        "full_cold_cache" => {
            let pair = BenchPair::new(false);
            for _ in 0..count {
                pair.clear_caches();
                pair.handshake();
            }
        }
        "new_handshake_cert" => {
            let pair = BenchPair::new(false);
            pair.handshake();
            for _ in 0..count {
                pair.clear_chain_caches();
                pair.handshake();
            }
        }
        "full_pfs_warm_cache" => {
            let mut pair = BenchPair::new(false);
            let (mut c, mut s) = ((*pair.client).clone(), (*pair.server).clone());
            c.pfs = true;
            s.pfs = true;
            (pair.client, pair.server) = (Arc::new(c), Arc::new(s));
            for _ in 0..count {
                pair.handshake();
            }
        }
        "resumed" => {
            let mut pair = BenchPair::new(true);
            pair.handshake();
            for i in 0..count {
                if i % 50_000 == 0 {
                    pair.reset_replay_guard();
                }
                assert!(pair.handshake());
            }
        }
        other => panic!("unknown row {other}"),
    }
}
