//! The verifier's principal-certificate cache: a handshake certificate under
//! a principal certificate verified before costs one signature check, while
//! expiry, revocation and policy are still checked on every call, and
//! different principal-certificate bytes are verified afresh.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use alts_core::UnixTime;
use alts_core::cert::{
    Category, HandshakeParams, PrincipalParams, RootKey, SigningKey, issue_handshake, issue_principal,
};
use alts_core::crl::RevocationList;
use alts_core::crypto::{DeterministicRandom, StaticKeyPair};
use alts_core::policy::IssuancePolicy;
use alts_core::verify::{CertError, Verifier};
use alts_proto::alts_v1 as pb;
use prost::Message;

const NOW: UnixTime = UnixTime(1_800_000_000);
const PRINCIPAL_ID: u64 = 3 << 56 | 1;

struct Pki {
    rng: DeterministicRandom,
    root_key: SigningKey,
    root: RootKey,
}

fn pki() -> Pki {
    let rng = DeterministicRandom::new(b"principal cache");
    let root_key = SigningKey::generate(&rng).unwrap();
    let root = RootKey::from_public_key("root", root_key.public_key());
    Pki { rng, root_key, root }
}

impl Pki {
    /// A principal certificate for `identity` with `validity`, and its key.
    fn principal(&self, identity: &str, validity: (UnixTime, UnixTime)) -> (SigningKey, Vec<u8>) {
        let key = SigningKey::generate(&self.rng).unwrap();
        let cert = issue_principal(
            &self.root_key,
            &PrincipalParams {
                identity: identity.to_owned(),
                category: Category::Workload,
                issuer: "scheduler".to_owned(),
                validity: Some(validity),
                revocation_id: PRINCIPAL_ID,
            },
            key.public_key(),
        )
        .unwrap();
        (key, cert)
    }

    /// A fresh handshake certificate (new static key) under a principal.
    fn handshake(&self, key: &SigningKey, principal: &[u8], serial: u64) -> Vec<u8> {
        let static_key = StaticKeyPair::generate(&self.rng).unwrap();
        let params = HandshakeParams::with_defaults(
            *static_key.public_key(),
            Some((NOW.plus(-60), NOW.plus(3600))),
            3 << 56 | (100 + serial),
        );
        issue_handshake(key, principal, &params).unwrap()
    }

    fn verifier(&self) -> Verifier {
        Verifier::new(self.root.clone(), Arc::new(IssuancePolicy::allow_all_for_tests()))
    }
}

fn valid() -> (UnixTime, UnixTime) {
    (NOW.plus(-3600), NOW.plus(86_400))
}

#[test]
fn new_handshake_cert_under_a_known_principal_reuses_the_principal_check() {
    let pki = pki();
    let (key, principal) = pki.principal("backend-prod", valid());
    let v = pki.verifier();
    for serial in 0..3 {
        let hs = pki.handshake(&key, &principal, serial);
        assert_eq!(
            v.verify_handshake_cert(&hs, NOW).unwrap().identity,
            "backend-prod"
        );
        assert_eq!(v.cache_len(), 1, "one principal certificate");
        assert_eq!(v.chain_cache_len(), serial as usize + 1);
    }
    v.clear_cache();
    assert_eq!((v.cache_len(), v.chain_cache_len()), (0, 0));
}

#[test]
fn revoked_principal_is_refused_even_when_cached() {
    let pki = pki();
    let (key, principal) = pki.principal("backend-prod", valid());
    let crl = RevocationList::build_signed([PRINCIPAL_ID], &pki.root_key, NOW).unwrap();
    let crl = Arc::new(RevocationList::from_signed_bytes(&crl, &pki.root).unwrap());
    // The same verifier state (cache) with and without the list: a
    // principal cached as signature-valid by one call is still refused.
    let v = pki.verifier().with_crl(crl);
    for serial in 0..2 {
        let hs = pki.handshake(&key, &principal, serial);
        assert!(
            matches!(
                v.verify_handshake_cert(&hs, NOW),
                Err(CertError::Revoked {
                    level: "principal",
                    ..
                })
            ),
            "serial {serial}"
        );
        assert_eq!(v.cache_len(), 1, "the signature check is cached, not the verdict");
    }
}

#[test]
fn expired_principal_is_refused_even_when_cached() {
    let pki = pki();
    let (key, principal) = pki.principal("backend-prod", (NOW.plus(-86_400), NOW.plus(600)));
    let v = pki.verifier();
    let first = pki.handshake(&key, &principal, 0);
    assert!(v.verify_handshake_cert(&first, NOW).is_ok());
    assert_eq!(v.cache_len(), 1);
    // Later, past the principal's expiry (and the skew): a new handshake
    // certificate under the cached principal is refused.
    let later = NOW.plus(600 + 301);
    let second = pki.handshake(&key, &principal, 1);
    assert!(matches!(
        v.verify_handshake_cert(&second, later),
        Err(CertError::Expired {
            level: "principal",
            ..
        })
    ));
    assert!(matches!(
        v.verify_principal_cert(&principal, later),
        Err(CertError::Expired {
            level: "principal",
            ..
        })
    ));
}

#[test]
fn other_principal_bytes_with_the_same_identity_are_verified_afresh() {
    let pki = pki();
    let (key, principal) = pki.principal("backend-prod", valid());
    let v = pki.verifier();
    v.verify_handshake_cert(&pki.handshake(&key, &principal, 0), NOW)
        .unwrap();
    // A second principal certificate for the same identity: new entry.
    let (key2, principal2) = pki.principal("backend-prod", valid());
    v.verify_handshake_cert(&pki.handshake(&key2, &principal2, 1), NOW)
        .unwrap();
    assert_eq!(v.cache_len(), 2);
    // The cached principal's contents with another signature: refused,
    // although its identity, key and validity are those of a cached entry.
    let mut forged = pb::PrincipalCert::decode(principal.as_slice()).unwrap();
    forged.signature[0] ^= 1;
    let forged = forged.encode_to_vec();
    let err = v.verify_principal_cert(&forged, NOW).unwrap_err();
    assert!(
        matches!(err, CertError::BadSignature { level: "principal" }),
        "{err:?}"
    );
    assert_eq!(v.cache_len(), 2);
}

#[test]
fn cache_size_zero_verifies_every_time_and_keeps_nothing() {
    let pki = pki();
    let (key, principal) = pki.principal("backend-prod", valid());
    let v = pki.verifier().with_cache_capacity(0);
    for serial in 0..2 {
        let hs = pki.handshake(&key, &principal, serial);
        v.verify_handshake_cert(&hs, NOW).unwrap();
        v.verify_handshake_cert(&hs, NOW).unwrap();
    }
    assert_eq!((v.cache_len(), v.chain_cache_len()), (0, 0));
}
