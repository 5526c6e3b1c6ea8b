//! alts-signer over real loopback sockets: ALTS in front of every call,
//! authorization by the caller's authenticated identity, revocation, key
//! rings, and a SIGKILL of the real binary in the middle of issuing.

mod signer_util;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alts_core::UnixTime;
use alts_core::cert::{Category, PrincipalCertInfo, split_revocation_id};
use alts_core::crl::RevocationList;
use alts_core::policy::IssuancePolicy;
use alts_core::verify::Verifier;
use alts_fleet::pb::{self, revoke_request::Target};
use alts_fleet::signer::store::{RedbStore, Storage};
use signer_util::*;
use tonic::Code;

fn issue_req(identity: &str, category: &str, validity_secs: u64) -> pb::IssuePrincipalRequest {
    pb::IssuePrincipalRequest {
        identity: identity.into(),
        category: category.into(),
        public_key: new_public_key(),
        validity_secs,
    }
}

struct Setup {
    fleet: Fleet,
    signer: Running,
    opts: alts_fleet::signer::SignerOptions,
}

async fn setup() -> Setup {
    let fleet = Fleet::new();
    let signer_creds = fleet.creds(SIGNER_IDENTITY, Category::Machine);
    let opts = fleet.options(&signer_creds, "signer");
    let signer = Running::start(opts.clone()).await;
    Setup { fleet, signer, opts }
}

#[tokio::test]
async fn authorized_agent_gets_a_principal_whose_issuer_is_its_own_identity() {
    let s = setup().await;
    let agent = s.fleet.creds("agent-a", Category::Machine);
    let mut c = s.fleet.client(&agent, s.signer.addr).await.unwrap();
    // Ask for ten years: the signer caps at 90 days.
    let req = issue_req("greeter-prod", "workload", 10 * 365 * 86400);
    let public_key = req.public_key.clone();
    let before = now();
    let r = c.issue_principal(req).await.unwrap().into_inner();

    let info = PrincipalCertInfo::parse(&r.principal_cert).unwrap();
    assert_eq!(info.identity, "greeter-prod");
    assert_eq!(info.category, Category::Workload);
    assert_eq!(info.issuer, "agent-a", "issuer is the authenticated caller");
    assert_eq!(info.public_key.as_slice(), public_key.as_slice());
    assert_eq!(info.revocation_id, r.revocation_id);
    assert_eq!(
        split_revocation_id(r.revocation_id).0,
        Category::Workload.revocation_byte()
    );
    let not_after = info.validity.not_after.unwrap().secs();
    assert!(
        not_after >= before + 90 * 86400 && not_after <= now() + 90 * 86400,
        "capped at 90 days"
    );
    assert_eq!(r.root_key, std::fs::read(&s.fleet.root_pub).unwrap());

    // The fleet's verifiers accept it (signature, root, issuance policy).
    let policy = IssuancePolicy::from_toml(ISSUANCE_POLICY).unwrap();
    let verifier = Verifier::new(s.fleet.root(), Arc::new(policy));
    verifier
        .verify_principal_cert(&r.principal_cert, UnixTime(now()))
        .expect("the fleet accepts the certificate");

    // Audited with the certificate's hash.
    let lines = audit_lines(&s.opts.audit_log);
    let issued = events(&lines, "issue");
    assert_eq!(issued.len(), 1);
    let l = issued[0];
    assert_eq!(l["caller"], "agent-a");
    assert_eq!(l["identity"], "greeter-prod");
    assert_eq!(l["category"], "workload");
    assert_eq!(l["revocation_id"], hex_id(r.revocation_id));
    assert_eq!(l["not_after"], not_after);
    assert_eq!(
        l["cert_sha256"],
        hex::encode(alts_core::crypto::sha256(&r.principal_cert))
    );
    assert!(l["time"].as_i64().unwrap() >= before);
    s.signer.stop().await;
}

#[tokio::test]
async fn mallory_asking_for_network_admin_is_refused_and_logged() {
    let s = setup().await;
    let mallory = s.fleet.creds("agent-mallory", Category::Machine);
    let mut c = s.fleet.client(&mallory, s.signer.addr).await.unwrap();
    // Her signer-policy rule is over-broad; the issuance policy dry-run stops her.
    let e = c
        .issue_principal(issue_req("network-admin", "workload", 3600))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.message(),
        "permission denied",
        "generic message, no reason leaked"
    );
    let lines = audit_lines(&s.opts.audit_log);
    assert!(events(&lines, "issue").is_empty(), "nothing issued");
    let refused = events(&lines, "refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["caller"], "agent-mallory");
    assert_eq!(refused[0]["method"], "IssuePrincipal");
    let reason = refused[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("issuance policy") && reason.contains("reserved"),
        "{reason}"
    );
    // What she may have, she gets.
    c.issue_principal(issue_req("mallory-tools", "workload", 3600))
        .await
        .unwrap();
    s.signer.stop().await;
}

#[tokio::test]
async fn signer_policy_and_input_checks() {
    let s = setup().await;
    let agent = s.fleet.creds("agent-a", Category::Machine);
    let mut c = s.fleet.client(&agent, s.signer.addr).await.unwrap();
    for (identity, category) in [("greeter-dev", "workload"), ("greeter-prod", "person")] {
        let e = c
            .issue_principal(issue_req(identity, category, 0))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{identity} {category}");
    }
    // A caller the signer policy does not name at all.
    let stranger = s.fleet.creds("batch-runner", Category::Machine);
    let mut sc = s.fleet.client(&stranger, s.signer.addr).await.unwrap();
    let e = sc
        .issue_principal(issue_req("greeter-prod", "workload", 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = sc
        .allocate_revocation_ids(pb::AllocateRevocationIdsRequest { count: 10 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    let bad = [
        pb::IssuePrincipalRequest {
            public_key: vec![1; 31],
            ..issue_req("greeter-prod", "workload", 0)
        },
        pb::IssuePrincipalRequest {
            public_key: vec![0; 32],
            ..issue_req("greeter-prod", "workload", 0)
        },
        issue_req("greeter-prod", "root", 0),
        issue_req("", "workload", 0),
        issue_req("greeter prod", "workload", 0),
        issue_req("greeter\n-prod", "workload", 0),
        issue_req(&"x".repeat(300), "workload", 0),
    ];
    for req in bad {
        let e = c.issue_principal(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    for count in [0, alts_fleet::signer::DEFAULT_MAX_ALLOCATION + 1] {
        let e = c
            .allocate_revocation_ids(pb::AllocateRevocationIdsRequest { count })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    // An oversized message is refused before any handler runs.
    let e = c
        .issue_principal(issue_req(&"x".repeat(32 * 1024), "workload", 0))
        .await
        .unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    assert_ne!(e.code(), Code::PermissionDenied);
    // Still serving after all that.
    c.issue_principal(issue_req("greeter-prod", "workload", 60))
        .await
        .unwrap();
    let lines = audit_lines(&s.opts.audit_log);
    assert_eq!(events(&lines, "refused").len(), 4);
    assert_eq!(events(&lines, "issue").len(), 1);
    s.signer.stop().await;
}

#[tokio::test]
async fn unauthenticated_callers_cannot_call_at_all() {
    let s = setup().await;
    // Plain h2c gRPC: the ALTS handshake fails, no RPC reaches the service.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", s.signer.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut c = pb::signer_client::SignerClient::new(plain);
    let e = c
        .fetch_crl(pb::FetchCrlRequest::default())
        .await
        .expect_err("h2c must not reach the signer");
    assert_ne!(e.code(), Code::Ok);
    let e = c
        .issue_principal(issue_req("greeter-prod", "workload", 0))
        .await
        .expect_err("h2c must not reach the signer");
    assert_ne!(e.code(), Code::PermissionDenied, "refused before any handler ran");

    // ALTS credentials under another root: refused at the handshake.
    let other = Fleet::new();
    let outsider = other.creds("agent-a", Category::Machine);
    std::fs::copy(&s.fleet.root_pub, outsider.dir.join("root.pub")).unwrap();
    assert!(s.fleet.client(&outsider, s.signer.addr).await.is_err());

    let lines = audit_lines(&s.opts.audit_log);
    assert!(lines.is_empty(), "no handler ran: {lines:?}");
    s.signer.stop().await;
}

#[tokio::test]
async fn a_revoked_agent_is_refused_at_the_handshake() {
    let s = setup().await;
    let admin = s.fleet.creds("security-admin", Category::Person);
    let doomed = s.fleet.creds("agent-doomed", Category::Machine);
    let agent = s.fleet.creds("agent-a", Category::Machine);

    let mut d = s.fleet.client(&doomed, s.signer.addr).await.unwrap();
    d.issue_principal(issue_req("doomed-prod", "workload", 60))
        .await
        .unwrap();
    drop(d);

    let mut a = s.fleet.client(&admin, s.signer.addr).await.unwrap();
    a.revoke(pb::RevokeRequest {
        target: Some(Target::RevocationId(doomed.principal_revocation_id)),
        reason: "host compromised".into(),
    })
    .await
    .unwrap();

    // The signer's own ALTS config now uses the new list: a new connection
    // from the revoked agent fails at the handshake.
    let e = s.fleet.client(&doomed, s.signer.addr).await;
    assert!(e.is_err(), "revoked agent connected");
    // Others are unaffected.
    let mut c = s.fleet.client(&agent, s.signer.addr).await.unwrap();
    c.issue_principal(issue_req("greeter-prod", "workload", 60))
        .await
        .unwrap();
    let crl = RevocationList::from_signed_bytes(
        &std::fs::read(s.opts.crl_dir.join("crl.bin")).unwrap(),
        &s.fleet.root(),
    )
    .unwrap();
    assert!(crl.is_revoked(doomed.principal_revocation_id));
    s.signer.stop().await;
}

#[tokio::test]
async fn a_caller_not_on_the_admin_list_cannot_revoke() {
    let s = setup().await;
    let agent = s.fleet.creds("agent-a", Category::Machine);
    let mut c = s.fleet.client(&agent, s.signer.addr).await.unwrap();
    let before = c
        .fetch_crl(pb::FetchCrlRequest::default())
        .await
        .unwrap()
        .into_inner();
    for target in [
        Target::RevocationId(agent.principal_revocation_id),
        Target::CertificateSha256(vec![7; 32]),
    ] {
        let e = c
            .revoke(pb::RevokeRequest {
                target: Some(target),
                reason: "mine".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(e.message(), "permission denied");
    }
    let after = c
        .fetch_crl(pb::FetchCrlRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.issued_at, after.issued_at, "no new list");
    let crl = RevocationList::from_signed_bytes(&after.signed_crl, &s.fleet.root()).unwrap();
    assert!(crl.is_empty());
    let lines = audit_lines(&s.opts.audit_log);
    assert!(events(&lines, "revoke").is_empty());
    let refused = events(&lines, "refused");
    assert_eq!(refused.len(), 2);
    assert!(refused[0]["reason"].as_str().unwrap().contains("admin"));
    s.signer.stop().await;

    // No --admin at all: even the would-be admin is refused.
    let fleet = Fleet::new();
    let signer_creds = fleet.creds(SIGNER_IDENTITY, Category::Machine);
    let mut opts = fleet.options(&signer_creds, "signer");
    opts.admins.clear();
    let signer = Running::start(opts).await;
    let admin = fleet.creds("security-admin", Category::Person);
    let mut a = fleet.client(&admin, signer.addr).await.unwrap();
    let e = a
        .revoke(pb::RevokeRequest {
            target: Some(Target::RevocationId(5)),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    signer.stop().await;
}

#[tokio::test]
async fn an_admin_revokes_and_the_next_crl_has_it_with_a_larger_issued_at() {
    let s = setup().await;
    let admin = s.fleet.creds("security-admin", Category::Person);
    let agent = s.fleet.creds("agent-a", Category::Machine);
    let mut c = s.fleet.client(&agent, s.signer.addr).await.unwrap();
    let issued = c
        .issue_principal(issue_req("greeter-prod", "workload", 3600))
        .await
        .unwrap()
        .into_inner();
    let first = c
        .fetch_crl(pb::FetchCrlRequest::default())
        .await
        .unwrap()
        .into_inner();

    let mut a = s.fleet.client(&admin, s.signer.addr).await.unwrap();
    // By revocation ID, twice in the same second: issued_at still increases.
    let r1 = a
        .revoke(pb::RevokeRequest {
            target: Some(Target::RevocationId(0x0300_0000_0000_beef)),
            reason: "lost laptop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let sha = alts_core::crypto::sha256(&issued.principal_cert).to_vec();
    let r2 = a
        .revoke(pb::RevokeRequest {
            target: Some(Target::CertificateSha256(sha.clone())),
            reason: "key leaked".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r1.crl_issued_at > first.issued_at);
    assert!(r2.crl_issued_at > r1.crl_issued_at);

    let latest = c
        .fetch_crl(pb::FetchCrlRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(latest.issued_at, r2.crl_issued_at);
    let crl = RevocationList::from_signed_bytes(&latest.signed_crl, &s.fleet.root()).unwrap();
    assert_eq!(crl.issued_at().secs(), latest.issued_at);
    assert!(crl.is_revoked(0x0300_0000_0000_beef));
    assert!(
        crl.is_revoked(issued.revocation_id),
        "revoked by certificate hash"
    );
    assert_eq!(crl.len(), 2);
    assert_eq!(
        std::fs::read(s.opts.crl_dir.join("crl.bin")).unwrap(),
        latest.signed_crl
    );

    // if_newer_than: nothing when current.
    let same = c
        .fetch_crl(pb::FetchCrlRequest {
            if_newer_than: latest.issued_at,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(same.signed_crl.is_empty());
    assert_eq!(same.issued_at, latest.issued_at);

    // Revoking again publishes nothing new; an unknown hash is NOT_FOUND.
    let again = a
        .revoke(pb::RevokeRequest {
            target: Some(Target::RevocationId(0x0300_0000_0000_beef)),
            reason: "again".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.crl_issued_at, latest.issued_at);
    let e = a
        .revoke(pb::RevokeRequest {
            target: Some(Target::CertificateSha256(vec![9; 32])),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = a
        .revoke(pb::RevokeRequest {
            target: Some(Target::CertificateSha256(vec![9; 31])),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let lines = audit_lines(&s.opts.audit_log);
    let revokes = events(&lines, "revoke");
    assert_eq!(revokes.len(), 3);
    assert_eq!(revokes[0]["caller"], "security-admin");
    assert_eq!(revokes[0]["target"], "revocation_id");
    assert_eq!(revokes[0]["reason"], "lost laptop");
    assert_eq!(revokes[1]["target"], "cert_sha256");
    assert_eq!(revokes[1]["revocation_id"], hex_id(issued.revocation_id));
    assert_eq!(events(&lines, "crl_published").len(), 3);

    // The state survives a restart: same list, and the next one is later.
    s.signer.stop().await;
    let signer = Running::start(s.opts.clone()).await;
    let mut a = s.fleet.client(&admin, signer.addr).await.unwrap();
    let after = a
        .fetch_crl(pb::FetchCrlRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.issued_at, latest.issued_at);
    let r3 = a
        .revoke(pb::RevokeRequest {
            target: Some(Target::RevocationId(42)),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r3.crl_issued_at > latest.issued_at);
    signer.stop().await;

    // A state older than the published list (here: a fresh one) is refused.
    let alts_fleet::signer::store::StateLocation::Redb(state) = &s.opts.state else {
        unreachable!()
    };
    std::fs::remove_file(state).unwrap();
    let e = Running::try_start(s.opts.clone())
        .await
        .err()
        .expect("stale state refused");
    assert!(e.to_string().contains("older than what was"), "{e}");
}

#[tokio::test]
async fn allocated_ranges_and_issued_ids_never_overlap() {
    let s = setup().await;
    let agent = s.fleet.creds("agent-a", Category::Machine);
    let mut c = s.fleet.client(&agent, s.signer.addr).await.unwrap();
    let mut used: BTreeSet<u64> = BTreeSet::new();
    for i in 0..20u32 {
        if i % 2 == 0 {
            let r = c
                .allocate_revocation_ids(pb::AllocateRevocationIdsRequest { count: 1 + i * 10 })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.count, 1 + i * 10);
            for serial in r.first..r.first + u64::from(r.count) {
                assert!(used.insert(serial), "serial {serial} handed out twice");
            }
        } else {
            let r = c
                .issue_principal(issue_req("greeter-prod", "workload", 60))
                .await
                .unwrap()
                .into_inner();
            assert!(used.insert(split_revocation_id(r.revocation_id).1));
        }
    }
    let lines = audit_lines(&s.opts.audit_log);
    assert_eq!(events(&lines, "allocate").len(), 10);
    s.signer.stop().await;
}

#[tokio::test]
async fn key_rings_are_shared_rotated_and_authorized() {
    let fleet = Fleet::new();
    let signer_creds = fleet.creds(SIGNER_IDENTITY, Category::Machine);
    let mut opts = fleet.options(&signer_creds, "signer");
    opts.key_ring_rotation = Duration::from_secs(2);
    let signer = Running::start(opts.clone()).await;
    let a = fleet.creds("agent-a", Category::Machine);
    let b = fleet.creds("agent-b", Category::Machine);
    let mut ca = fleet.client(&a, signer.addr).await.unwrap();
    let mut cb = fleet.client(&b, signer.addr).await.unwrap();
    let req = |identity: &str, cell: &str| pb::GetKeyRingRequest {
        identity: identity.into(),
        cell: cell.into(),
    };
    let r1 = ca
        .get_key_ring(req("greeter-prod", "us-east1-b"))
        .await
        .unwrap()
        .into_inner();
    let r2 = cb
        .get_key_ring(req("greeter-prod", "us-east1-b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r1.keys.len(), 1);
    assert_eq!(r1.keys[0].rid, r2.keys[0].rid, "one ring per identity and cell");
    assert_eq!(r1.keys[0].secret, r2.keys[0].secret);
    assert_eq!(r1.keys[0].secret.len(), 32);
    assert_eq!(r1.next_rotation_at, r2.next_rotation_at);
    // The state holds the secret sealed, never in the clear.
    let alts_fleet::signer::store::StateLocation::Redb(state) = &opts.state else {
        unreachable!()
    };
    let raw = std::fs::read(state).unwrap();
    let secret = &r1.keys[0].secret;
    assert!(!raw.windows(secret.len()).any(|w| w == secret.as_slice()));
    let secret_hex = hex::encode(secret).into_bytes();
    assert!(!raw.windows(secret_hex.len()).any(|w| w == secret_hex.as_slice()));
    assert!(
        raw.windows(32)
            .any(|w| w == hex::encode(&r1.keys[0].rid).as_bytes()),
        "ring is in this file"
    );
    let other_cell = ca
        .get_key_ring(req("greeter-prod", "europe-west4-a"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other_cell.keys[0].rid, r1.keys[0].rid);

    // Usable as a tonic-alts key ring.
    let ring = tonic_alts::keyring::KeyRing {
        keys: r1
            .keys
            .iter()
            .map(|k| tonic_alts::keyring::KeyRingEntry {
                rid: k.rid.clone(),
                secret: k.secret.clone(),
                created_at: k.created_at,
            })
            .collect(),
    };
    tonic_alts::keyring::KeyRing::from_toml(&ring.to_toml())
        .unwrap()
        .to_keys()
        .unwrap();

    // Rotation: the new key is current, the old one stays as previous.
    tokio::time::sleep(Duration::from_millis(
        u64::try_from((r1.next_rotation_at - now()).max(0) * 1000 + 1100).unwrap(),
    ))
    .await;
    let r3 = cb
        .get_key_ring(req("greeter-prod", "us-east1-b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r3.keys.len(), 2);
    assert_eq!(r3.keys[1].rid, r1.keys[0].rid);
    assert_ne!(r3.keys[0].rid, r1.keys[0].rid);
    assert!(r3.next_rotation_at > r1.next_rotation_at);

    // Only for identities the caller may request.
    let e = ca
        .get_key_ring(req("greeter-dev", "us-east1-b"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = ca.get_key_ring(req("greeter-prod", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    signer.stop().await;
}

#[tokio::test]
async fn fails_closed_without_a_signer_policy_and_refuses_bad_keys() {
    let fleet = Fleet::new();
    let signer_creds = fleet.creds(SIGNER_IDENTITY, Category::Machine);
    let mut opts = fleet.options(&signer_creds, "signer");
    opts.signer_policy = None;
    let signer = Running::start(opts.clone()).await;
    let agent = fleet.creds("agent-a", Category::Machine);
    let mut c = fleet.client(&agent, signer.addr).await.unwrap();
    let e = c
        .issue_principal(issue_req("greeter-prod", "workload", 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .allocate_revocation_ids(pb::AllocateRevocationIdsRequest { count: 1 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .get_key_ring(pb::GetKeyRingRequest {
            identity: "greeter-prod".into(),
            cell: "c".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    signer.stop().await;

    // The loud opt-out: any authenticated caller, still bounded by the
    // issuance policy.
    opts.dangerously_allow_any_caller = true;
    let signer = Running::start(opts.clone()).await;
    let mut c = fleet.client(&agent, signer.addr).await.unwrap();
    c.issue_principal(issue_req("greeter-dev", "workload", 0))
        .await
        .unwrap();
    let e = c
        .issue_principal(issue_req("network-admin", "workload", 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    signer.stop().await;

    // The root key must be private, and must be the root the fleet trusts.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fleet.ca_key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = Running::try_start(opts.clone())
        .await
        .err()
        .expect("loose ca.key refused");
    assert!(e.to_string().contains("0640"), "{e}");
    std::fs::set_permissions(&fleet.ca_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let other = Fleet::new();
    let mut wrong = opts.clone();
    wrong.ca_key = other.ca_key.clone();
    let e = Running::try_start(wrong)
        .await
        .err()
        .expect("foreign ca.key refused");
    assert!(e.to_string().contains("public half"), "{e}");
}

/// Starts the real binary; returns the child and its address.
fn spawn_binary(
    opts: &alts_fleet::signer::SignerOptions,
    log: &std::path::Path,
) -> (std::process::Child, String) {
    let state = match &opts.state {
        alts_fleet::signer::store::StateLocation::Redb(p) => format!("redb:{}", p.display()),
        alts_fleet::signer::store::StateLocation::Postgres(u) => u.clone(),
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_alts-signer"));
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--creds")
        .arg(&opts.creds_dir)
        .arg("--issuance-policy")
        .arg(&opts.issuance_policy)
        .arg("--ca-key")
        .arg(&opts.ca_key)
        .arg("--signer-policy")
        .arg(opts.signer_policy.as_ref().unwrap())
        .arg("--state")
        .arg(state)
        .arg("--audit-log")
        .arg(&opts.audit_log)
        .arg("--crl-dir")
        .arg(&opts.crl_dir)
        .arg("--admin")
        .arg("security-admin")
        .stdout(std::process::Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        );
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
        panic!(
            "signer did not start; log: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    });
    let addr = line
        .strip_prefix("alts-signer listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, addr)
}

/// Opens the redb state of a stopped signer.
async fn recorded(
    opts: &alts_fleet::signer::SignerOptions,
) -> Vec<alts_fleet::signer::store::IssuanceRecord> {
    let alts_fleet::signer::store::StateLocation::Redb(p) = &opts.state else {
        unreachable!()
    };
    let store = RedbStore::open(p.clone()).await.unwrap();
    store.issuances().await.unwrap()
}

/// Issues from `tasks` concurrent clients until stopped; returns the IDs
/// received.
fn issue_loop(
    fleet: &Fleet,
    creds: &Creds,
    addr: std::net::SocketAddr,
    tasks: usize,
    done: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Vec<u64>>> {
    (0..tasks)
        .map(|t| {
            let cfg = fleet.client_config(creds);
            let done = done.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let connector = tonic_alts::AltsConnector::new(cfg).target_identity(SIGNER_IDENTITY);
                let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect_with_connector(connector)
                    .await
                else {
                    return got;
                };
                let mut c = pb::signer_client::SignerClient::new(ch);
                for i in 0..100_000 {
                    match c
                        .issue_principal(issue_req(&format!("svc{t}-{i}-prod"), "workload", 3600))
                        .await
                    {
                        Ok(r) => {
                            got.push(r.into_inner().revocation_id);
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => break,
                    }
                }
                got
            })
        })
        .collect()
}

fn check_audit_covers(lines: &[serde_json::Value], records: &[alts_fleet::signer::store::IssuanceRecord]) {
    let mut by_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut plain_ids = BTreeSet::new();
    for l in events(lines, "issue") {
        let id = l["revocation_id"].as_str().unwrap().to_owned();
        if l.get("recovered").is_none() {
            assert!(plain_ids.insert(id.clone()), "revocation ID {id} audited twice");
        }
        by_id
            .entry(id)
            .or_default()
            .insert(l["cert_sha256"].as_str().unwrap().to_owned());
    }
    for shas in by_id.values() {
        assert_eq!(shas.len(), 1, "one ID, two certificates: {shas:?}");
    }
    for r in records {
        let shas = by_id.get(&hex_id(r.revocation_id)).unwrap_or_else(|| {
            panic!(
                "committed issuance {:#x} missing from the audit log",
                r.revocation_id
            )
        });
        assert!(shas.contains(&r.cert_sha256));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_issuance_loses_nothing_and_reuses_no_id() {
    let fleet = Fleet::new();
    let signer_creds = fleet.creds(SIGNER_IDENTITY, Category::Machine);
    let opts = fleet.options(&signer_creds, "signer");
    let log = fleet.dir.path().join("signer.log");
    let agent = fleet.creds("agent-a", Category::Machine);

    let (mut child, addr) = spawn_binary(&opts, &log);
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let tasks = issue_loop(&fleet, &agent, addr, 4, done.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::SeqCst) < 40 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "too slow; log: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL, with issuances in flight
    child.wait().unwrap();
    let mut received = Vec::new();
    for t in tasks {
        received.extend(
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(received.len() >= 40);

    // Every certificate a client got is recorded; the audit log parses and
    // covers every audited issuance.
    let records = recorded(&opts).await;
    let ids: BTreeSet<u64> = records.iter().map(|r| r.revocation_id).collect();
    let serials: BTreeSet<u64> = records.iter().map(|r| r.serial).collect();
    assert_eq!(serials.len(), records.len(), "serial reused");
    for id in &received {
        assert!(ids.contains(id), "a returned certificate {id:#x} is not recorded");
    }
    let lines = audit_lines(&opts.audit_log);
    let audited: Vec<_> = records.iter().filter(|r| r.audited).cloned().collect();
    check_audit_covers(&lines, &audited);
    let max_before = serials.iter().max().copied().unwrap();
    eprintln!(
        "killed: {} certificates returned, {} issuances recorded, {} not yet audited, highest serial {max_before}",
        received.len(),
        records.len(),
        records.len() - audited.len()
    );

    // Restart on the same file: serials continue, nothing is reused, and
    // issuances the crash left unaudited are audited now.
    let (mut child, addr) = spawn_binary(&opts, &log);
    let mut c = fleet.client(&agent, addr.parse().unwrap()).await.unwrap();
    let mut after = Vec::new();
    for i in 0..10 {
        let r = c
            .issue_principal(issue_req(&format!("after-{i}-prod"), "workload", 60))
            .await
            .unwrap()
            .into_inner();
        after.push(split_revocation_id(r.revocation_id).1);
    }
    drop(c);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        after.iter().all(|s| *s > max_before),
        "serials went backwards: {after:?} <= {max_before}"
    );
    let records = recorded(&opts).await;
    let serials: BTreeSet<u64> = records.iter().map(|r| r.serial).collect();
    assert_eq!(serials.len(), records.len());
    assert_eq!(records.len(), ids.len() + 10);
    let lines = audit_lines(&opts.audit_log);
    check_audit_covers(&lines, &records);
    assert!(
        records.iter().all(|r| r.audited),
        "every issuance audited after the restart"
    );
}

#[tokio::test]
async fn policies_reload_when_their_files_change() {
    let s = setup().await;
    let runner = s.fleet.creds("batch-runner", Category::Machine);
    let mut c = s.fleet.client(&runner, s.signer.addr).await.unwrap();
    let e = c
        .issue_principal(issue_req("batch-prod", "workload", 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // A broken file changes nothing; a valid one takes effect.
    std::fs::write(&s.fleet.signer_policy, "[[allow]]\ncaller = 'a*b'\n").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut agent = s
        .fleet
        .client(&s.fleet.creds("agent-a", Category::Machine), s.signer.addr)
        .await
        .unwrap();
    agent
        .issue_principal(issue_req("greeter-prod", "workload", 0))
        .await
        .unwrap();
    std::fs::write(
        &s.fleet.signer_policy,
        format!("{SIGNER_POLICY}\n[[allow]]\ncaller = \"batch-runner\"\nidentities = [\"batch-prod\"]\ncategories = [\"workload\"]\n"),
    )
    .unwrap();
    // The issuance policy must also let batch-runner issue.
    std::fs::write(
        &s.fleet.issuance_policy,
        format!("{ISSUANCE_POLICY}\n[[rule]]\nissuer = \"batch-runner\"\ncategories = [\"workload\"]\nidentities = [\"batch-prod\"]\n"),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match c.issue_principal(issue_req("batch-prod", "workload", 0)).await {
            Ok(r) => {
                let info = PrincipalCertInfo::parse(&r.into_inner().principal_cert).unwrap();
                assert_eq!(info.issuer, "batch-runner");
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::PermissionDenied);
                assert!(tokio::time::Instant::now() < deadline, "policies never reloaded");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    s.signer.stop().await;
}
