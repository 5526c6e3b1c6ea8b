//! Credentials parsing and verification.
//!
//! Raw mode (first byte even): the rest of the input goes to
//! `HandshakeCertInfo::parse`, `PrincipalCertInfo::parse`,
//! `RootKey::from_bytes` (which must round-trip through `to_bytes`) and
//! `Verifier::verify_handshake_cert` / `verify_principal_cert`.
//!
//! Signed mode (first byte odd): fuzzer edits are applied to the
//! to-be-signed bytes of a genuine principal and handshake certificate, which
//! are then re-signed with the real root and principal keys, so the checks
//! after the signatures (validity, revocation, policy, field caps) are
//! reached. A chain that verifies must also parse to the same contents, and
//! verifying twice (the second time from the chain cache) must agree.
#![no_main]

use std::sync::{Arc, OnceLock};

use alts_core::cert::Category;
use alts_core::cert::{
    self, HandshakeCertInfo, HandshakeParams, PrincipalCertInfo, PrincipalParams, RootKey,
};
use alts_core::crl::RevocationList;
use alts_core::policy::IssuancePolicy;
use alts_core::verify::Verifier;
use alts_fuzz::arbitrary::Unstructured;
use alts_fuzz::{NOW, apply_edits, sign, world};
use alts_proto::alts_v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

const PRINCIPAL_CONTEXT: &[u8] = b"alts.v1.PrincipalCertTbs\0";
const HANDSHAKE_CONTEXT: &[u8] = b"alts.v1.HandshakeCertTbs\0";
const REVOKED: [u64; 2] = [(2 << 56) | 7, (2 << 56) | 9];

struct Genuine {
    principal_tbs: Vec<u8>,
    handshake_tbs: pb::HandshakeCertTbs,
}

fn genuine() -> &'static Genuine {
    static G: OnceLock<Genuine> = OnceLock::new();
    G.get_or_init(|| {
        let w = world();
        let principal = cert::issue_principal(
            &w.pki.root_key,
            &PrincipalParams {
                identity: "backend-prod".into(),
                category: Category::Workload,
                issuer: "scheduler".into(),
                validity: Some((NOW.plus(-3600), NOW.plus(86_400))),
                revocation_id: (2 << 56) | 8,
            },
            w.principal_key.public_key(),
        )
        .unwrap();
        let hs = cert::issue_handshake(
            &w.principal_key,
            &principal,
            &HandshakeParams::with_defaults([9; 32], Some((NOW.plus(-60), NOW.plus(3600))), (2 << 56) | 9),
        )
        .unwrap();
        let principal_tbs = pb::PrincipalCert::decode(&principal[..]).unwrap().tbs;
        let hs_tbs = pb::HandshakeCert::decode(&hs[..]).unwrap().tbs;
        Genuine {
            principal_tbs,
            handshake_tbs: pb::HandshakeCertTbs::decode(&hs_tbs[..]).unwrap(),
        }
    })
}

fn verifier() -> Verifier {
    Verifier::new(world().pki.root.clone(), Arc::new(IssuancePolicy::allow_all_for_tests()))
        .with_crl(Arc::new(RevocationList::from_ids(REVOKED, NOW)))
}

fn check_all(bytes: &[u8]) {
    let _ = HandshakeCertInfo::parse(bytes);
    let _ = PrincipalCertInfo::parse(bytes);
    if let Ok(root) = RootKey::from_bytes(bytes) {
        assert_eq!(RootKey::from_bytes(&root.to_bytes()).unwrap(), root);
    }
    let v = verifier();
    let _ = v.verify_handshake_cert(bytes, NOW);
    let _ = v.verify_principal_cert(bytes, NOW);
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    if mode % 2 == 0 {
        check_all(rest);
        return;
    }
    let w = world();
    let g = genuine();
    let mut u = Unstructured::new(rest);
    let mut principal_tbs = g.principal_tbs.clone();
    apply_edits(&mut u, &mut principal_tbs);
    let principal = pb::PrincipalCert {
        signature: sign(&w.pki.root_key, PRINCIPAL_CONTEXT, &principal_tbs),
        tbs: principal_tbs,
        signature_algorithm: pb::SignatureAlgorithm::Ed25519 as i32,
    };
    let mut hs_tbs = pb::HandshakeCertTbs {
        principal: Some(principal.clone()),
        ..g.handshake_tbs.clone()
    }
    .encode_to_vec();
    apply_edits(&mut u, &mut hs_tbs);
    let cert = pb::HandshakeCert {
        signature: sign(&w.principal_key, HANDSHAKE_CONTEXT, &hs_tbs),
        tbs: hs_tbs,
        signature_algorithm: pb::SignatureAlgorithm::Ed25519 as i32,
    }
    .encode_to_vec();
    check_all(&principal.encode_to_vec());
    let v = verifier();
    let first = v.verify_handshake_cert(&cert, NOW);
    let second = v.verify_handshake_cert(&cert, NOW);
    assert_eq!(first, second, "chain cache changed the verdict");
    if let Ok(peer) = first {
        let info = HandshakeCertInfo::parse(&cert).expect("verified certificate does not parse");
        assert_eq!(peer.identity, info.principal.identity);
        assert_eq!(peer.static_public_key, info.static_public_key);
        assert_eq!(peer.handshake_revocation_id, info.revocation_id);
        assert!(!REVOKED.contains(&peer.principal_revocation_id));
        assert!(!REVOKED.contains(&peer.handshake_revocation_id));
        assert!(
            peer.not_after.is_none_or(|t| t.plus(300) >= NOW),
            "expired chain accepted"
        );
    }
});
