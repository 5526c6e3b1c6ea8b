//! Resumption key rings shared by the replicas of one identity: a ticket
//! from one replica resumes on another, survives one rotation of the ring,
//! and after two falls back to a full handshake without an error.

mod common;

use std::path::Path;

use alts_core::crypto::RingRandom;
use alts_core::resumption::{RID_LEN, ResumptionKeys};
use common::*;
use tokio::net::TcpStream;
use tonic_alts::keyring::{KeyRing, KeyRingEntry};
use tonic_alts::{AltsAcceptor, AltsConfig, AltsConnector, file_names};

fn entry(n: u8) -> KeyRingEntry {
    KeyRingEntry {
        rid: vec![n; RID_LEN],
        secret: vec![n.wrapping_mul(7); 32],
        created_at: i64::from(n),
    }
}

fn write_ring(dir: &Path, keys: &[u8]) {
    let ring = KeyRing {
        keys: keys.iter().map(|&n| entry(n)).collect(),
    };
    std::fs::write(dir.join(file_names::KEY_RING), ring.to_toml().as_bytes()).expect("write ring");
}

/// One handshake to `addr` under the shared name; returns whether it resumed.
async fn handshake(connector: &AltsConnector, addr: std::net::SocketAddr) -> bool {
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let stream = bounded("handshake", connector.handshake(tcp, "greeter.internal:443"))
        .await
        .expect("handshake");
    println!("{addr}: {:?}", stream.peer().resumption);
    stream.peer().resumed()
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_sharing_a_ring_resume_each_others_tickets() {
    let mut fx = Fixture::new();
    let one = fx.issue_by("replica-1", "greeter-prod", "scheduler");
    let two = fx.issue_by("replica-2", "greeter-prod", "scheduler");
    let c = fx.issue("frontend-prod");
    for r in [&one, &two] {
        write_ring(&r.dir, &[1]);
    }
    let load = |dir: &Path| {
        AltsConfig::from_files(tonic_alts::CredentialFiles::from_dir(dir).accept_any_issuer()).expect("load")
    };
    let (cfg1, cfg2) = (load(&one.dir), load(&two.dir));
    assert!(
        cfg1.snapshot().resumption.is_some(),
        "a key ring turns resumption on"
    );
    let serve = |cfg: AltsConfig| async move {
        let incoming = AltsAcceptor::new(cfg).bind("127.0.0.1:0").await.expect("bind");
        let addr = incoming.local_addr();
        let task = tokio::spawn(async move {
            let mut incoming = incoming;
            use futures_util::StreamExt;
            // Keep each connection open until the client closes it.
            while let Some(Ok(mut s)) = incoming.next().await {
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut tokio::io::empty(), &mut s).await;
                    let mut sink = tokio::io::sink();
                    let _ = tokio::io::copy(&mut s, &mut sink).await;
                });
            }
        });
        (addr, task)
    };
    let (addr1, t1) = serve(cfg1.clone()).await;
    let (addr2, t2) = serve(cfg2.clone()).await;

    let client = fx
        .config(&c)
        .resumption(ResumptionKeys::generate(&RingRandom::default()).expect("keys"));
    let connector = AltsConnector::new(client).target_identity("greeter-prod");
    assert!(
        !handshake(&connector, addr1).await,
        "first contact is a full handshake"
    );
    assert!(
        handshake(&connector, addr2).await,
        "replica 2 resumes replica 1's ticket"
    );

    let rotate = |keys: &'static [u8]| {
        for (r, cfg) in [(&one, &cfg1), (&two, &cfg2)] {
            write_ring(&r.dir, keys);
            cfg.reloader().expect("reloader").reload().expect("reload ring");
        }
    };
    // The client now holds a ticket sealed under key 1. One rotation: the previous key is still accepted.
    rotate(&[2, 1]);
    assert!(
        handshake(&connector, addr1).await,
        "key-1 ticket resumes after one rotation"
    );
    assert!(
        handshake(&connector, addr2).await,
        "key-2 ticket resumes on the other replica"
    );

    // Two more rotations retire key 2 while the client holds a key-2 ticket:
    // the client falls back to a full handshake without an error, and
    // resumes again afterwards.
    rotate(&[3, 2]);
    rotate(&[4, 3]);
    assert!(!handshake(&connector, addr1).await, "retired key: full handshake");
    assert!(handshake(&connector, addr2).await, "and the new ticket resumes");

    // A torn ring file never replaces the good one.
    std::fs::write(two.dir.join(file_names::KEY_RING), "[[key]]\nrid = \"00").expect("write");
    cfg2.reloader()
        .expect("reloader")
        .reload()
        .expect_err("torn ring");
    assert!(
        handshake(&connector, addr2).await,
        "still resuming with the good ring"
    );
    t1.abort();
    t2.abort();
}
