//! alts-signer replicas sharing one PostgreSQL database, over real loopback
//! sockets. Needs `ALTS_TEST_POSTGRES_URL` (e.g. from
//! `fleet/scripts/start-postgres.sh`); without it each test prints a loud
//! `SKIP:` line and returns. Each test works in a schema of its own.

mod signer_util;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use alts_core::cert::{Category, split_revocation_id};
use alts_core::crl::RevocationList;
use alts_fleet::pb::{self, revoke_request::Target};
use alts_fleet::signer::store::{PostgresStore, StateLocation, Storage};
use signer_util::*;
use tonic::Code;

fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("ALTS_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            let line = format!("SKIP: ALTS_TEST_POSTGRES_URL not set: {test} did not run");
            println!("{line}");
            eprintln!("{line}");
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/signer-logs");
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("{test}.skip")), format!("{line}\n"));
            None
        }
    }
}

/// A fresh schema; returns the URL that uses it.
async fn fresh_schema(url: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to ALTS_TEST_POSTGRES_URL");
    tokio::spawn(conn);
    let mut rnd = [0u8; 6];
    alts_core::crypto::SecureRandom::fill(&alts_core::crypto::RingRandom::default(), &mut rnd).unwrap();
    let schema = format!("alts_test_{}", hex::encode(rnd));
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

fn issue_req(identity: &str) -> pb::IssuePrincipalRequest {
    pb::IssuePrincipalRequest {
        identity: identity.into(),
        category: "workload".into(),
        public_key: new_public_key(),
        validity_secs: 3600,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_signers_on_one_database() {
    let Some(url) = postgres_url("two_signers_on_one_database") else {
        return;
    };
    let url = fresh_schema(&url).await;
    let fleet = Fleet::new();
    let signer_creds = fleet.creds(SIGNER_IDENTITY, Category::Machine);
    let opts_a = fleet.options_with_state(&signer_creds, "a", StateLocation::Postgres(url.clone()));
    let opts_b = fleet.options_with_state(&signer_creds, "b", StateLocation::Postgres(url.clone()));
    // Both create the schema at once.
    let (a, b) = tokio::join!(Running::start(opts_a.clone()), Running::start(opts_b.clone()));
    let addrs = [a.addr, b.addr];

    // 500 issuances from 10 client tasks, alternating between the replicas,
    // while two more tasks take revocation-ID ranges.
    const TASKS: usize = 10;
    const PER_TASK: usize = 50;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let creds = fleet.creds(&format!("agent-{t}"), Category::Machine);
        let mut clients = Vec::new();
        for addr in addrs {
            clients.push(fleet.client(&creds, addr).await.unwrap());
        }
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..PER_TASK {
                let c = &mut clients[(t + i) % 2];
                let r = c
                    .issue_principal(issue_req(&format!("svc-{t}-{i}-prod")))
                    .await
                    .unwrap()
                    .into_inner();
                got.push((r.revocation_id, alts_core::crypto::sha256(&r.principal_cert)));
            }
            got
        }));
    }
    let mut alloc_tasks = Vec::new();
    for (t, addr) in addrs.iter().enumerate() {
        let creds = fleet.creds(&format!("agent-alloc-{t}"), Category::Machine);
        let mut c = fleet.client(&creds, *addr).await.unwrap();
        alloc_tasks.push(tokio::spawn(async move {
            let mut ranges = Vec::new();
            for _ in 0..20 {
                let r = c
                    .allocate_revocation_ids(pb::AllocateRevocationIdsRequest { count: 7 })
                    .await
                    .unwrap()
                    .into_inner();
                ranges.push((r.first, r.count));
            }
            ranges
        }));
    }
    let mut issued: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
    for t in tasks {
        for (id, sha) in t.await.unwrap() {
            assert!(
                issued.insert(id, sha).is_none(),
                "revocation ID {id:#x} issued twice"
            );
        }
    }
    assert_eq!(issued.len(), TASKS * PER_TASK);
    let mut serials: BTreeSet<u64> = issued.keys().map(|id| split_revocation_id(*id).1).collect();
    assert_eq!(serials.len(), TASKS * PER_TASK);
    for t in alloc_tasks {
        for (first, count) in t.await.unwrap() {
            for s in first..first + u64::from(count) {
                assert!(serials.insert(s), "serial {s} handed out twice");
            }
        }
    }

    // Every issuance is in one of the audit logs, with its certificate's hash.
    let mut audited: BTreeMap<String, String> = BTreeMap::new();
    let mut per_replica = [0usize; 2];
    for (i, opts) in [&opts_a, &opts_b].into_iter().enumerate() {
        for l in events(&audit_lines(&opts.audit_log), "issue") {
            per_replica[i] += 1;
            let id = l["revocation_id"].as_str().unwrap().to_owned();
            let sha = l["cert_sha256"].as_str().unwrap().to_owned();
            assert!(audited.insert(id, sha).is_none(), "audited twice");
        }
    }
    assert!(
        per_replica.iter().all(|n| *n > 0),
        "both replicas issued: {per_replica:?}"
    );
    for (id, sha) in &issued {
        assert_eq!(
            audited.get(&hex_id(*id)),
            Some(&hex::encode(sha)),
            "{id:#x} not audited"
        );
    }
    let store = PostgresStore::connect(&url).await.unwrap();
    let records = store.issuances().await.unwrap();
    assert_eq!(records.len(), issued.len());
    assert!(records.iter().all(|r| r.audited));

    // A revocation made on one replica is in the list the other serves, and
    // the other's own handshakes honour it.
    let admin = fleet.creds("security-admin", Category::Person);
    let doomed = fleet.creds("agent-doomed", Category::Machine);
    let mut on_b = fleet.client(&doomed, b.addr).await.unwrap();
    on_b.fetch_crl(pb::FetchCrlRequest::default()).await.unwrap();
    drop(on_b);
    let mut admin_a = fleet.client(&admin, a.addr).await.unwrap();
    let mut admin_b = fleet.client(&admin, b.addr).await.unwrap();
    let r = admin_a
        .revoke(pb::RevokeRequest {
            target: Some(Target::RevocationId(doomed.handshake_revocation_id)),
            reason: "decommissioned".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let from_b = admin_b
        .fetch_crl(pb::FetchCrlRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_b.issued_at, r.crl_issued_at);
    let crl = RevocationList::from_signed_bytes(&from_b.signed_crl, &fleet.root()).unwrap();
    assert!(crl.is_revoked(doomed.handshake_revocation_id));
    // B copies the list to its --crl-dir and reloads its ALTS config.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let on_disk = std::fs::read(opts_b.crl_dir.join("crl.bin")).unwrap();
        if RevocationList::from_signed_bytes(&on_disk, &fleet.root())
            .unwrap()
            .is_revoked(doomed.handshake_revocation_id)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica b never wrote the new list"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fleet.client(&doomed, b.addr).await.is_err(),
        "revoked agent got through replica b"
    );

    // Revocations through both replicas at once: every list is later than
    // the one before, and the final list has them all.
    let mut handles = Vec::new();
    for i in 0..20u64 {
        let mut c = if i % 2 == 0 {
            admin_a.clone()
        } else {
            admin_b.clone()
        };
        handles.push(tokio::spawn(async move {
            c.revoke(pb::RevokeRequest {
                target: Some(Target::RevocationId(0x0300_0000_0100_0000 + i)),
                reason: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .crl_issued_at
        }));
    }
    let mut times = BTreeSet::new();
    for h in handles {
        assert!(times.insert(h.await.unwrap()), "two lists with one issued_at");
    }
    assert!(times.iter().all(|t| *t > r.crl_issued_at));
    let last = admin_a
        .fetch_crl(pb::FetchCrlRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.issued_at, *times.iter().max().unwrap());
    let crl = RevocationList::from_signed_bytes(&last.signed_crl, &fleet.root()).unwrap();
    assert_eq!(crl.len(), 21);

    // One key ring for both replicas.
    let agent = fleet.creds("agent-ring", Category::Machine);
    let mut ka = fleet.client(&agent, a.addr).await.unwrap();
    let mut kb = fleet.client(&agent, b.addr).await.unwrap();
    let req = || pb::GetKeyRingRequest {
        identity: "greeter-prod".into(),
        cell: "cell-1".into(),
    };
    let (ra, rb) = tokio::join!(ka.get_key_ring(req()), kb.get_key_ring(req()));
    let (ra, rb) = (ra.unwrap().into_inner(), rb.unwrap().into_inner());
    assert_eq!(ra.keys[0].rid, rb.keys[0].rid);
    assert_eq!(ra.keys[0].secret, rb.keys[0].secret);
    let e = ka
        .get_key_ring(pb::GetKeyRingRequest {
            identity: "greeter-dev".into(),
            cell: "cell-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart_and_a_second_schema_init() {
    let Some(url) = postgres_url("state_survives_a_restart_and_a_second_schema_init") else {
        return;
    };
    let url = fresh_schema(&url).await;
    let fleet = Fleet::new();
    let signer_creds = fleet.creds(SIGNER_IDENTITY, Category::Machine);
    let opts = fleet.options_with_state(&signer_creds, "a", StateLocation::Postgres(url.clone()));
    let agent = fleet.creds("agent-a", Category::Machine);
    let s = Running::start(opts.clone()).await;
    let mut c = fleet.client(&agent, s.addr).await.unwrap();
    let first = c
        .issue_principal(issue_req("greeter-prod"))
        .await
        .unwrap()
        .into_inner();
    let crl1 = c
        .fetch_crl(pb::FetchCrlRequest::default())
        .await
        .unwrap()
        .into_inner();
    s.stop().await;
    let s = Running::start(opts).await;
    let mut c = fleet.client(&agent, s.addr).await.unwrap();
    let second = c
        .issue_principal(issue_req("greeter-prod"))
        .await
        .unwrap()
        .into_inner();
    assert!(split_revocation_id(second.revocation_id).1 > split_revocation_id(first.revocation_id).1);
    let crl2 = c
        .fetch_crl(pb::FetchCrlRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        crl1.issued_at, crl2.issued_at,
        "the list is not re-published at start"
    );
    s.stop().await;
}
