//! Credentials, verification, policy and revocation: end-to-end checks of
//! every failing path.

use std::sync::Arc;

use alts_core::UnixTime;
use alts_core::cert::{
    Category, HandshakeCertInfo, HandshakeParams, LocalCredentials, MAX_CERT_LEN, PrincipalParams, RootKey,
    SigningKey, issue_handshake, issue_principal, revocation_id,
};
use alts_core::crl::{CrlError, RevocationList};
use alts_core::crypto::{DeterministicRandom, StaticKeyPair};
use alts_core::policy::{IssuancePolicy, PolicyDenied};
use alts_core::verify::{CertError, VerifiedPeer, Verifier};
use alts_proto::alts_v1 as pb;
use prost::Message;

const NOW: UnixTime = UnixTime(1_800_000_000);
const PRODUCTION: &str = include_str!("../../examples/policies/production.toml");
const TEST_CLUSTER: &str = include_str!("../../examples/policies/test-cluster.toml");

struct Pki {
    rng: DeterministicRandom,
    root_key: SigningKey,
    root: RootKey,
}

struct Chain {
    principal_key: SigningKey,
    principal_cert: Vec<u8>,
    static_key: StaticKeyPair,
    handshake_cert: Vec<u8>,
}

fn pki(seed: &[u8]) -> Pki {
    let rng = DeterministicRandom::new(seed);
    let root_key = SigningKey::generate(&rng).unwrap();
    let root = RootKey::from_public_key("test-root", root_key.public_key());
    Pki { rng, root_key, root }
}

fn window(from: i64, to: i64) -> Option<(UnixTime, UnixTime)> {
    Some((NOW.plus(from), NOW.plus(to)))
}

impl Pki {
    fn principal(
        &self,
        identity: &str,
        category: Category,
        issuer: &str,
        validity: Option<(UnixTime, UnixTime)>,
        rid: u64,
    ) -> (SigningKey, Vec<u8>) {
        let key = SigningKey::generate(&self.rng).unwrap();
        let params = PrincipalParams {
            identity: identity.into(),
            category,
            issuer: issuer.into(),
            validity,
            revocation_id: rid,
        };
        let cert = issue_principal(&self.root_key, &params, key.public_key()).unwrap();
        (key, cert)
    }

    fn handshake(
        &self,
        key: &SigningKey,
        cert: &[u8],
        validity: Option<(UnixTime, UnixTime)>,
        rid: u64,
    ) -> (StaticKeyPair, Vec<u8>) {
        let sk = StaticKeyPair::generate(&self.rng).unwrap();
        let hs = issue_handshake(
            key,
            cert,
            &HandshakeParams::with_defaults(*sk.public_key(), validity, rid),
        )
        .unwrap();
        (sk, hs)
    }

    fn chain_with(
        &self,
        identity: &str,
        category: Category,
        issuer: &str,
        pv: Option<(UnixTime, UnixTime)>,
        hv: Option<(UnixTime, UnixTime)>,
    ) -> Chain {
        let rid = revocation_id(category.revocation_byte(), 1).unwrap();
        let (principal_key, principal_cert) = self.principal(identity, category, issuer, pv, rid);
        let (static_key, handshake_cert) = self.handshake(&principal_key, &principal_cert, hv, rid + 1);
        Chain {
            principal_key,
            principal_cert,
            static_key,
            handshake_cert,
        }
    }

    fn chain(&self, identity: &str, category: Category, issuer: &str) -> Chain {
        self.chain_with(identity, category, issuer, None, window(-60, 20 * 3600))
    }

    fn verifier(&self, policy: &str) -> Verifier {
        Verifier::new(
            self.root.clone(),
            Arc::new(IssuancePolicy::from_toml(policy).unwrap()),
        )
    }
}

/// Signs `context || tbs` directly with ring (to craft certificates the API refuses to make).
fn raw_sign(key: &SigningKey, context: &[u8], tbs: &[u8]) -> Vec<u8> {
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.pkcs8_bytes()).unwrap();
    let mut msg = context.to_vec();
    msg.extend_from_slice(tbs);
    pair.sign(&msg).as_ref().to_vec()
}

fn signed_principal(key: &SigningKey, tbs: &pb::PrincipalCertTbs) -> pb::PrincipalCert {
    let tbs = tbs.encode_to_vec();
    pb::PrincipalCert {
        signature: raw_sign(key, b"alts.v1.PrincipalCertTbs\0", &tbs),
        tbs,
        signature_algorithm: pb::SignatureAlgorithm::Ed25519 as i32,
    }
}

fn signed_handshake(key: &SigningKey, tbs: &pb::HandshakeCertTbs) -> Vec<u8> {
    let tbs = tbs.encode_to_vec();
    pb::HandshakeCert {
        signature: raw_sign(key, b"alts.v1.HandshakeCertTbs\0", &tbs),
        tbs,
        signature_algorithm: pb::SignatureAlgorithm::Ed25519 as i32,
    }
    .encode_to_vec()
}

fn decode_hs_tbs(cert: &[u8]) -> pb::HandshakeCertTbs {
    pb::HandshakeCertTbs::decode(pb::HandshakeCert::decode(cert).unwrap().tbs.as_slice()).unwrap()
}

fn principal_tbs(cert: &pb::PrincipalCert) -> pb::PrincipalCertTbs {
    pb::PrincipalCertTbs::decode(cert.tbs.as_slice()).unwrap()
}

#[test]
fn valid_chains_verify() {
    let pki = pki(b"ok");
    let v = pki.verifier(PRODUCTION);
    for (id, cat, issuer) in [
        ("alice", Category::Person, "corp-ca"),
        ("build-box-17", Category::Machine, "corp-ca"),
        ("frontend-prod", Category::Workload, "scheduler"),
        ("network-admin", Category::Person, "netops-ca"),
    ] {
        let c = pki.chain(id, cat, issuer);
        let peer: VerifiedPeer = v.verify_handshake_cert(&c.handshake_cert, NOW).unwrap();
        assert_eq!(peer.identity, id);
        assert_eq!(peer.category, cat);
        assert_eq!(peer.issuer, issuer);
        assert_eq!(peer.static_public_key, *c.static_key.public_key());
        assert_eq!(peer.not_after, Some(NOW.plus(20 * 3600)));
        assert_eq!(
            peer.principal_revocation_id,
            revocation_id(cat.revocation_byte(), 1).unwrap()
        );
        assert_eq!(peer.handshake_revocation_id, peer.principal_revocation_id + 1);
        assert_eq!(peer.handshake_ciphers, ["ALTS_HS_X25519_HKDF_SHA256"]);
        assert_eq!(
            peer.record_protocols.first().map(String::as_str),
            Some("ALTSRP_GCM_AES128_REKEY")
        );
        v.recheck(&peer, NOW).unwrap();
        let vp = v.verify_principal_cert(&c.principal_cert, NOW).unwrap();
        assert_eq!(vp.info.identity, id);
    }
    // Both certificates without expiry: refused by default (handshake
    // certificates must expire); with the explicit opt-out, not_after None.
    let c = pki.chain_with("db-prod", Category::Workload, "scheduler", None, None);
    assert_eq!(
        v.verify_handshake_cert(&c.handshake_cert, NOW),
        Err(CertError::LifetimeTooLong {
            lifetime_secs: None,
            max_secs: 7 * 24 * 3600
        })
    );
    let unbounded = pki.verifier(PRODUCTION).allow_unbounded_handshake_certs();
    assert_eq!(
        unbounded
            .verify_handshake_cert(&c.handshake_cert, NOW)
            .unwrap()
            .not_after,
        None
    );
    // The principal expires first.
    let c = pki.chain_with(
        "db-prod",
        Category::Workload,
        "scheduler",
        window(-10, 100),
        window(-10, 1000),
    );
    assert_eq!(
        v.verify_handshake_cert(&c.handshake_cert, NOW).unwrap().not_after,
        Some(NOW.plus(100))
    );
}

#[test]
fn wrong_root_refused() {
    let pki1 = pki(b"one");
    let pki2 = pki(b"two");
    let c = pki1.chain("alice", Category::Person, "corp-ca");
    let v = pki2.verifier(PRODUCTION);
    assert_eq!(
        v.verify_handshake_cert(&c.handshake_cert, NOW),
        Err(CertError::WrongRoot)
    );
    assert_eq!(
        v.verify_principal_cert(&c.principal_cert, NOW),
        Err(CertError::WrongRoot)
    );
}

#[test]
fn signer_other_than_expected_root_refused() {
    // A principal cert that claims our root's key id but is signed by another key.
    let pki = pki(b"signer");
    let other = SigningKey::generate(&pki.rng).unwrap();
    let good = pki.chain("alice", Category::Person, "corp-ca");
    let hs_tbs = decode_hs_tbs(&good.handshake_cert);
    let ptbs = principal_tbs(hs_tbs.principal.as_ref().unwrap());
    let forged_principal = signed_principal(&other, &ptbs);
    let forged = signed_handshake(
        &good.principal_key,
        &pb::HandshakeCertTbs {
            principal: Some(forged_principal),
            ..hs_tbs
        },
    );
    let v = pki.verifier(PRODUCTION);
    assert_eq!(
        v.verify_handshake_cert(&forged, NOW),
        Err(CertError::BadSignature { level: "principal" })
    );
}

#[test]
fn broken_signature_at_each_level() {
    let pki = pki(b"sig");
    let c = pki.chain("alice", Category::Person, "corp-ca");
    let v = pki.verifier(PRODUCTION);

    // Principal level: flip a signature bit, re-embed, re-sign the handshake cert.
    let hs_tbs = decode_hs_tbs(&c.handshake_cert);
    let mut p = hs_tbs.principal.clone().unwrap();
    p.signature[0] ^= 1;
    let bad = signed_handshake(
        &c.principal_key,
        &pb::HandshakeCertTbs {
            principal: Some(p),
            ..hs_tbs.clone()
        },
    );
    assert_eq!(
        v.verify_handshake_cert(&bad, NOW),
        Err(CertError::BadSignature { level: "principal" })
    );

    // Principal level: tampered contents (identity changed) under the original signature.
    let mut p = hs_tbs.principal.clone().unwrap();
    let mut ptbs = principal_tbs(&p);
    ptbs.identity = "network-admin".into();
    p.tbs = ptbs.encode_to_vec();
    let bad = signed_handshake(
        &c.principal_key,
        &pb::HandshakeCertTbs {
            principal: Some(p),
            ..hs_tbs.clone()
        },
    );
    assert_eq!(
        v.verify_handshake_cert(&bad, NOW),
        Err(CertError::BadSignature { level: "principal" })
    );

    // Handshake level: flipped signature bit.
    let mut outer = pb::HandshakeCert::decode(c.handshake_cert.as_slice()).unwrap();
    outer.signature[10] ^= 0x80;
    assert_eq!(
        v.verify_handshake_cert(&outer.encode_to_vec(), NOW),
        Err(CertError::BadSignature { level: "handshake" })
    );

    // Handshake level: signed by a key other than the principal's.
    let other = SigningKey::generate(&pki.rng).unwrap();
    let bad = signed_handshake(&other, &hs_tbs);
    assert_eq!(
        v.verify_handshake_cert(&bad, NOW),
        Err(CertError::BadSignature { level: "handshake" })
    );

    // Handshake level: wrong signature length and algorithm.
    let mut outer = pb::HandshakeCert::decode(c.handshake_cert.as_slice()).unwrap();
    outer.signature.truncate(63);
    assert_eq!(
        v.verify_handshake_cert(&outer.encode_to_vec(), NOW),
        Err(CertError::BadSignature { level: "handshake" })
    );
    let mut outer = pb::HandshakeCert::decode(c.handshake_cert.as_slice()).unwrap();
    outer.signature_algorithm = 0;
    assert_eq!(
        v.verify_handshake_cert(&outer.encode_to_vec(), NOW),
        Err(CertError::BadSignature { level: "handshake" })
    );

    // A principal signature cannot be replayed as a handshake signature
    // (domain separation): sign the handshake tbs with the principal key under
    // the principal-certificate context.
    let tbs = hs_tbs.encode_to_vec();
    let bad = pb::HandshakeCert {
        signature: raw_sign(&c.principal_key, b"alts.v1.PrincipalCertTbs\0", &tbs),
        tbs,
        signature_algorithm: 1,
    }
    .encode_to_vec();
    assert_eq!(
        v.verify_handshake_cert(&bad, NOW),
        Err(CertError::BadSignature { level: "handshake" })
    );
}

#[test]
fn validity_at_each_level_with_skew() {
    let pki = pki(b"time");
    let v = pki.verifier(PRODUCTION);
    // Principal valid [NOW-1000, NOW+100], handshake valid well around it.
    let c = pki.chain_with(
        "alice",
        Category::Person,
        "corp-ca",
        window(-1000, 100),
        window(-5000, 5000),
    );
    assert!(
        v.verify_handshake_cert(&c.handshake_cert, NOW.plus(400)).is_ok(),
        "within 300 s skew"
    );
    assert_eq!(
        v.verify_handshake_cert(&c.handshake_cert, NOW.plus(401)),
        Err(CertError::Expired {
            level: "principal",
            not_after: NOW.plus(100).secs()
        })
    );
    assert!(
        v.verify_handshake_cert(&c.handshake_cert, NOW.plus(-1300))
            .is_ok()
    );
    assert_eq!(
        v.verify_handshake_cert(&c.handshake_cert, NOW.plus(-1301)),
        Err(CertError::NotYetValid {
            level: "principal",
            not_before: NOW.plus(-1000).secs()
        })
    );
    let strict = pki.verifier(PRODUCTION).with_clock_skew(0);
    assert!(
        strict
            .verify_handshake_cert(&c.handshake_cert, NOW.plus(100))
            .is_ok()
    );
    assert!(matches!(
        strict.verify_handshake_cert(&c.handshake_cert, NOW.plus(101)),
        Err(CertError::Expired {
            level: "principal",
            ..
        })
    ));
    assert!(matches!(
        strict.verify_principal_cert(&c.principal_cert, NOW.plus(-1001)),
        Err(CertError::NotYetValid {
            level: "principal",
            ..
        })
    ));

    // Handshake valid [NOW+10, NOW+20], principal open-ended.
    let c = pki.chain_with("alice", Category::Person, "corp-ca", None, window(10, 20));
    let strict = pki.verifier(PRODUCTION).with_clock_skew(0);
    assert!(matches!(
        strict.verify_handshake_cert(&c.handshake_cert, NOW),
        Err(CertError::NotYetValid {
            level: "handshake",
            ..
        })
    ));
    assert!(
        strict
            .verify_handshake_cert(&c.handshake_cert, NOW.plus(15))
            .is_ok()
    );
    assert!(matches!(
        strict.verify_handshake_cert(&c.handshake_cert, NOW.plus(21)),
        Err(CertError::Expired {
            level: "handshake",
            ..
        })
    ));
    assert!(
        v.verify_handshake_cert(&c.handshake_cert, NOW).is_ok(),
        "skew covers 10 s early"
    );
    assert!(v.verify_handshake_cert(&c.handshake_cert, NOW.plus(320)).is_ok());
    assert!(matches!(
        v.verify_handshake_cert(&c.handshake_cert, NOW.plus(321)),
        Err(CertError::Expired {
            level: "handshake",
            ..
        })
    ));
}

#[test]
fn revoked_principal_and_handshake() {
    let pki = pki(b"crl");
    let c = pki.chain("alice", Category::Person, "corp-ca");
    let prid = revocation_id(1, 1).unwrap();
    let crl_of = |ids: Vec<u64>| {
        let bytes = RevocationList::build_signed(ids, &pki.root_key, NOW).unwrap();
        Arc::new(RevocationList::from_signed_bytes(&bytes, &pki.root).unwrap())
    };
    let v = pki.verifier(PRODUCTION).with_crl(crl_of(vec![prid]));
    assert_eq!(
        v.verify_handshake_cert(&c.handshake_cert, NOW),
        Err(CertError::Revoked {
            level: "principal",
            id: prid
        })
    );
    assert!(matches!(
        v.verify_principal_cert(&c.principal_cert, NOW),
        Err(CertError::Revoked {
            level: "principal",
            ..
        })
    ));
    let v = pki.verifier(PRODUCTION).with_crl(crl_of(vec![prid + 1, 5, 6]));
    assert_eq!(
        v.verify_handshake_cert(&c.handshake_cert, NOW),
        Err(CertError::Revoked {
            level: "handshake",
            id: prid + 1
        })
    );
    let v = pki.verifier(PRODUCTION).with_crl(crl_of(vec![prid + 2]));
    assert!(v.verify_handshake_cert(&c.handshake_cert, NOW).is_ok());
}

#[test]
fn policy_refusals() {
    let pki = pki(b"policy");
    let v = pki.verifier(PRODUCTION);
    // Mallory got a principal certificate for `network-admin` signed (the
    // signing service records Mallory as issuer): the policy refuses it.
    let mallory = pki.chain("network-admin", Category::Person, "mallory");
    let err = v.verify_handshake_cert(&mallory.handshake_cert, NOW).unwrap_err();
    assert!(
        matches!(err, CertError::Policy(PolicyDenied::Reserved { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("mallory"), "{err}");
    // Same identity by the allowed issuer passes.
    let netops = pki.chain("network-admin", Category::Person, "netops-ca");
    assert!(v.verify_handshake_cert(&netops.handshake_cert, NOW).is_ok());
    // Even an otherwise trusted issuer may not issue the reserved identity.
    let corp = pki.chain("network-admin", Category::Person, "corp-ca");
    assert!(matches!(
        v.verify_handshake_cert(&corp.handshake_cert, NOW),
        Err(CertError::Policy(PolicyDenied::Reserved { .. }))
    ));
    // Wrong category.
    let c = pki.chain("alice-prod", Category::Workload, "corp-ca");
    assert_eq!(
        v.verify_handshake_cert(&c.handshake_cert, NOW),
        Err(CertError::Policy(PolicyDenied::CategoryNotAllowed {
            issuer: "corp-ca".into(),
            category: Category::Workload
        }))
    );
    let c = pki.chain("frontend-prod", Category::Person, "scheduler");
    assert!(matches!(
        v.verify_handshake_cert(&c.handshake_cert, NOW),
        Err(CertError::Policy(PolicyDenied::CategoryNotAllowed { .. }))
    ));
    // Identity outside the pattern.
    let c = pki.chain("frontend-dev", Category::Workload, "scheduler");
    assert!(matches!(
        v.verify_handshake_cert(&c.handshake_cert, NOW),
        Err(CertError::Policy(PolicyDenied::IdentityNotAllowed { .. }))
    ));
    // Unknown issuer.
    let c = pki.chain("alice", Category::Person, "some-other-ca");
    assert_eq!(
        v.verify_handshake_cert(&c.handshake_cert, NOW),
        Err(CertError::Policy(PolicyDenied::UnknownIssuer {
            issuer: "some-other-ca".into()
        }))
    );
    // The lax test-cluster policy lets most things through but still keeps
    // production identities and network-admin reserved.
    let lax = pki.verifier(TEST_CLUSTER);
    assert!(
        lax.verify_handshake_cert(&pki.chain("x", Category::Workload, "anyone").handshake_cert, NOW)
            .is_ok()
    );
    assert!(lax.verify_handshake_cert(&mallory.handshake_cert, NOW).is_err());
    assert!(
        lax.verify_handshake_cert(
            &pki.chain("db-prod", Category::Workload, "dev-scheduler")
                .handshake_cert,
            NOW
        )
        .is_err()
    );
    // Default deny.
    let empty = pki.verifier("");
    assert!(matches!(
        empty.verify_handshake_cert(&netops.handshake_cert, NOW),
        Err(CertError::Policy(PolicyDenied::UnknownIssuer { .. }))
    ));
}

#[test]
fn cache_hit_still_checks_expiry_revocation_and_policy() {
    let pki = pki(b"cache");
    let c = pki.chain_with(
        "alice",
        Category::Person,
        "corp-ca",
        window(-10, 3600),
        window(-10, 3600),
    );
    let v = pki.verifier(PRODUCTION);
    let peer = v.verify_handshake_cert(&c.handshake_cert, NOW).unwrap();
    assert_eq!(v.cache_len(), 1);
    assert_eq!(v.chain_cache_len(), 1);
    // The same handshake cert again: a whole-chain hit, same answer.
    assert_eq!(v.verify_handshake_cert(&c.handshake_cert, NOW).unwrap(), peer);
    assert_eq!(v.chain_cache_len(), 1);
    // Second handshake with a new handshake cert of the same principal: principal hit.
    let (_, hs2) = pki.handshake(&c.principal_key, &c.principal_cert, window(-10, 3600), 77);
    v.verify_handshake_cert(&hs2, NOW).unwrap();
    assert_eq!(v.cache_len(), 1);
    assert_eq!(v.chain_cache_len(), 2);
    // Hit, but expired.
    assert!(matches!(
        v.verify_handshake_cert(&c.handshake_cert, NOW.plus(7200)),
        Err(CertError::Expired {
            level: "principal",
            ..
        })
    ));
    // Hit, but now revoked.
    let crl = RevocationList::build_signed([peer.principal_revocation_id], &pki.root_key, NOW).unwrap();
    let v = v.with_crl(Arc::new(
        RevocationList::from_signed_bytes(&crl, &pki.root).unwrap(),
    ));
    assert_eq!(v.cache_len(), 1);
    assert!(matches!(
        v.verify_handshake_cert(&c.handshake_cert, NOW),
        Err(CertError::Revoked {
            level: "principal",
            ..
        })
    ));
    assert!(matches!(
        v.recheck(&peer, NOW),
        Err(CertError::Revoked {
            level: "principal",
            ..
        })
    ));
    // Hit, but the policy changed.
    let v = pki.verifier(PRODUCTION);
    v.verify_handshake_cert(&c.handshake_cert, NOW).unwrap();
    let v = v.with_policy(Arc::new(
        IssuancePolicy::from_toml(TEST_CLUSTER.replace("\"*\"", "\"nobody\"").as_str()).unwrap(),
    ));
    assert_eq!(v.cache_len(), 1);
    assert!(matches!(
        v.verify_handshake_cert(&c.handshake_cert, NOW),
        Err(CertError::Policy(_))
    ));
    assert!(matches!(v.recheck(&peer, NOW), Err(CertError::Policy(_))));
    // A hit never lets a broken handshake signature through.
    let mut outer = pb::HandshakeCert::decode(hs2.as_slice()).unwrap();
    outer.signature[0] ^= 1;
    let v = pki.verifier(PRODUCTION);
    v.verify_handshake_cert(&hs2, NOW).unwrap();
    assert_eq!(
        v.verify_handshake_cert(&outer.encode_to_vec(), NOW),
        Err(CertError::BadSignature { level: "handshake" })
    );
    v.clear_cache();
    assert_eq!(v.cache_len(), 0);
}

#[test]
fn verifier_cache_of_capacity_zero_keeps_nothing() {
    let pki = pki(b"no cache");
    let c = pki.chain_with(
        "alice",
        Category::Person,
        "corp-ca",
        window(-10, 3600),
        window(-10, 3600),
    );
    let v = pki.verifier(PRODUCTION).with_cache_capacity(0);
    let peer = v.verify_handshake_cert(&c.handshake_cert, NOW).unwrap();
    assert_eq!(v.verify_handshake_cert(&c.handshake_cert, NOW).unwrap(), peer);
    assert_eq!((v.cache_len(), v.chain_cache_len()), (0, 0));
    v.verify_principal_cert(&c.principal_cert, NOW).unwrap();
    assert_eq!(v.cache_len(), 0);
    // A full cache shrunk to 0 is emptied.
    let v = pki.verifier(PRODUCTION);
    v.verify_handshake_cert(&c.handshake_cert, NOW).unwrap();
    assert_eq!((v.cache_len(), v.chain_cache_len()), (1, 1));
    let v = v.with_cache_capacity(0);
    assert_eq!((v.cache_len(), v.chain_cache_len()), (0, 0));
    v.verify_handshake_cert(&c.handshake_cert, NOW).unwrap();
    assert_eq!((v.cache_len(), v.chain_cache_len()), (0, 0));
}

#[test]
fn recheck_expiry() {
    let pki = pki(b"recheck");
    let c = pki.chain_with("alice", Category::Person, "corp-ca", None, window(-10, 100));
    let v = pki.verifier(PRODUCTION).with_clock_skew(0);
    let peer = v.verify_handshake_cert(&c.handshake_cert, NOW).unwrap();
    v.recheck(&peer, NOW.plus(100)).unwrap();
    assert!(matches!(
        v.recheck(&peer, NOW.plus(101)),
        Err(CertError::Expired { .. })
    ));
}

#[test]
fn truncated_and_garbage_input() {
    let pki = pki(b"garbage");
    let c = pki.chain("alice", Category::Person, "corp-ca");
    let v = pki.verifier(PRODUCTION);
    for n in 0..c.handshake_cert.len() {
        assert!(
            v.verify_handshake_cert(&c.handshake_cert[..n], NOW).is_err(),
            "prefix {n}"
        );
        let _ = HandshakeCertInfo::parse(&c.handshake_cert[..n]);
    }
    for n in 0..c.principal_cert.len() {
        assert!(
            v.verify_principal_cert(&c.principal_cert[..n], NOW).is_err(),
            "prefix {n}"
        );
    }
    // Every single-byte corruption is refused (or, if it lands in an ignored
    // spot, still yields the same peer).
    let good = v.verify_handshake_cert(&c.handshake_cert, NOW).unwrap();
    for i in 0..c.handshake_cert.len() {
        let mut b = c.handshake_cert.clone();
        b[i] ^= 0x55;
        if let Ok(peer) = v.verify_handshake_cert(&b, NOW) {
            assert_eq!(peer, good, "byte {i}");
        }
    }
    assert!(matches!(
        v.verify_handshake_cert(b"garbage garbage garbage", NOW),
        Err(CertError::Malformed { .. })
    ));
    assert!(v.verify_handshake_cert(&[0xff; 100], NOW).is_err());
    // A principal cert is not a handshake cert and vice versa.
    assert!(v.verify_handshake_cert(&c.principal_cert, NOW).is_err());
    assert!(v.verify_principal_cert(&c.handshake_cert, NOW).is_err());
    assert!(RootKey::from_bytes(&c.principal_cert).is_err());
    assert!(RootKey::from_bytes(b"\x08\x01\x12\x03abc").is_err());
    assert_eq!(RootKey::from_bytes(&pki.root.to_bytes()).unwrap(), pki.root);
    assert!(SigningKey::from_pkcs8(b"not a key").is_err());
    assert!(SigningKey::from_pkcs8(&[7u8; 32]).is_err());
}

#[test]
fn oversized_inputs_and_fields() {
    let pki = pki(b"big");
    let v = pki.verifier(TEST_CLUSTER);
    let big = vec![0u8; MAX_CERT_LEN + 1];
    assert!(matches!(
        v.verify_handshake_cert(&big, NOW),
        Err(CertError::TooLarge { len, .. }) if len == MAX_CERT_LEN + 1
    ));
    assert!(matches!(
        RootKey::from_bytes(&big),
        Err(CertError::TooLarge { .. })
    ));
    assert!(matches!(
        SigningKey::from_pkcs8(&big),
        Err(CertError::TooLarge { .. })
    ));

    // Issuing refuses oversized or empty fields.
    let key = SigningKey::generate(&pki.rng).unwrap();
    let mut params = PrincipalParams {
        identity: "x".repeat(257),
        category: Category::Person,
        issuer: "ca".into(),
        validity: None,
        revocation_id: 1,
    };
    assert!(matches!(
        issue_principal(&pki.root_key, &params, key.public_key()),
        Err(CertError::TooLarge { what: "identity", .. })
    ));
    params.identity = String::new();
    assert!(issue_principal(&pki.root_key, &params, key.public_key()).is_err());
    params.identity = "ok".into();
    params.validity = window(10, 10);
    assert!(matches!(
        issue_principal(&pki.root_key, &params, key.public_key()),
        Err(CertError::InvalidParams { .. })
    ));

    // A correctly signed principal with an oversized identity is refused at verification.
    let c = pki.chain("alice", Category::Person, "corp-ca");
    let hs_tbs = decode_hs_tbs(&c.handshake_cert);
    let mut ptbs = principal_tbs(hs_tbs.principal.as_ref().unwrap());
    ptbs.identity = "a".repeat(1000);
    let p = signed_principal(&pki.root_key, &ptbs);
    let bad = signed_handshake(
        &c.principal_key,
        &pb::HandshakeCertTbs {
            principal: Some(p),
            ..hs_tbs.clone()
        },
    );
    assert!(matches!(
        v.verify_handshake_cert(&bad, NOW),
        Err(CertError::TooLarge { what: "identity", .. })
    ));

    // Too many / too long / empty protocol names.
    let too_many = pb::HandshakeCertTbs {
        handshake_ciphers: vec!["C".into(); 17],
        ..hs_tbs.clone()
    };
    assert!(matches!(
        v.verify_handshake_cert(&signed_handshake(&c.principal_key, &too_many), NOW),
        Err(CertError::TooLarge {
            what: "handshake ciphers",
            ..
        })
    ));
    let too_long = pb::HandshakeCertTbs {
        record_protocols: vec!["R".repeat(65)],
        ..hs_tbs.clone()
    };
    assert!(matches!(
        v.verify_handshake_cert(&signed_handshake(&c.principal_key, &too_long), NOW),
        Err(CertError::TooLarge {
            what: "record protocols",
            ..
        })
    ));
    let empty = pb::HandshakeCertTbs {
        record_protocols: vec![],
        ..hs_tbs.clone()
    };
    assert!(matches!(
        v.verify_handshake_cert(&signed_handshake(&c.principal_key, &empty), NOW),
        Err(CertError::Malformed { .. })
    ));
    let bad_key = pb::HandshakeCertTbs {
        static_public_key: vec![1; 31],
        ..hs_tbs.clone()
    };
    assert!(matches!(
        v.verify_handshake_cert(&signed_handshake(&c.principal_key, &bad_key), NOW),
        Err(CertError::Malformed { .. })
    ));
    let version = pb::HandshakeCertTbs { version: 2, ..hs_tbs };
    assert!(matches!(
        v.verify_handshake_cert(&signed_handshake(&c.principal_key, &version), NOW),
        Err(CertError::UnsupportedVersion { version: 2, .. })
    ));
    // Issuing with an oversized cipher list is refused too.
    let mut params = HandshakeParams::with_defaults([9; 32], None, 1);
    params.handshake_ciphers = vec!["C".into(); 17];
    assert!(issue_handshake(&c.principal_key, &c.principal_cert, &params).is_err());
}

#[test]
fn local_credentials_and_key_mismatch() {
    let pki = pki(b"local");
    let c = pki.chain("alice", Category::Person, "corp-ca");
    let creds = LocalCredentials::new(c.handshake_cert.clone(), c.static_key.clone()).unwrap();
    assert_eq!(creds.identity(), "alice");
    assert_eq!(creds.category(), Category::Person);
    assert_eq!(creds.issuer(), "corp-ca");
    assert_eq!(creds.cert_bytes(), c.handshake_cert.as_slice());
    assert_eq!(creds.key_pair().public_key(), c.static_key.public_key());
    assert_eq!(creds.handshake_ciphers(), ["ALTS_HS_X25519_HKDF_SHA256"]);
    assert_eq!(creds.record_protocols().len(), 3);
    let secret_hex = hex::encode(*c.static_key.secret_bytes());
    assert!(!format!("{creds:?}").contains(&secret_hex));
    let other = StaticKeyPair::generate(&pki.rng).unwrap();
    assert!(matches!(
        LocalCredentials::new(c.handshake_cert.clone(), other),
        Err(CertError::KeyMismatch { .. })
    ));
    assert!(LocalCredentials::new(b"junk".to_vec(), c.static_key.clone()).is_err());
    // issue_handshake refuses a principal key that does not match the cert.
    let wrong = SigningKey::generate(&pki.rng).unwrap();
    assert!(matches!(
        issue_handshake(
            &wrong,
            &c.principal_cert,
            &HandshakeParams::with_defaults([1; 32], None, 1)
        ),
        Err(CertError::KeyMismatch { .. })
    ));
    // Secrets never appear in Debug output.
    let seed_hex = hex::encode(&c.principal_key.pkcs8_bytes()[16..48]);
    assert!(!format!("{:?}", c.principal_key).contains(&seed_hex));
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Verifier>();
    assert_send_sync::<LocalCredentials>();
}

#[test]
fn crl_signature_and_garbage() {
    let pki1 = pki(b"crl1");
    let pki2 = pki(b"crl2");
    let bytes = RevocationList::build_signed([1, 2, 3, 1 << 60], &pki1.root_key, NOW).unwrap();
    let crl = RevocationList::from_signed_bytes(&bytes, &pki1.root).unwrap();
    assert_eq!(crl.len(), 4);
    assert!(crl.is_revoked(1 << 60) && !crl.is_revoked(4));
    assert_eq!(crl.issued_at(), NOW);
    assert_eq!(
        RevocationList::from_signed_bytes(&bytes, &pki2.root),
        Err(CrlError::BadSignature)
    );
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        let _ = RevocationList::from_signed_bytes(&b, &pki1.root);
    }
    for n in 0..bytes.len() {
        assert!(RevocationList::from_signed_bytes(&bytes[..n], &pki1.root).is_err());
    }
    assert!(RevocationList::from_signed_bytes(b"garbage", &pki1.root).is_err());
    let empty = RevocationList::build_signed([], &pki1.root_key, NOW).unwrap();
    assert!(
        RevocationList::from_signed_bytes(&empty, &pki1.root)
            .unwrap()
            .is_empty()
    );
    // A handshake certificate is not a revocation list.
    let c = pki1.chain("alice", Category::Person, "corp-ca");
    assert!(RevocationList::from_signed_bytes(&c.handshake_cert, &pki1.root).is_err());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let pki = pki(b"prop");
            let v = pki.verifier(TEST_CLUSTER);
            let _ = v.verify_handshake_cert(&bytes, NOW);
            let _ = v.verify_principal_cert(&bytes, NOW);
            let _ = RootKey::from_bytes(&bytes);
            let _ = RevocationList::from_signed_bytes(&bytes, &pki.root);
            let _ = SigningKey::from_pkcs8(&bytes);
            let _ = HandshakeCertInfo::parse(&bytes);
        }
    }
}
