//! Revocation lists.
//!
//! Raw mode (first byte even): the rest of the input goes to
//! `RevocationList::from_signed_bytes` (test root) and
//! `RevocationListInfo::parse`.
//!
//! Signed mode (first byte odd): fuzzer edits are applied to the
//! to-be-signed bytes of a genuine list (singles and dense ranges, so both
//! array, bitmap and run containers appear), which are then re-signed with
//! the root key, so the roaring deserializer and the count check are reached.
//! A list that loads must agree with `RevocationListInfo::parse` and report
//! exactly `count` IDs, in ascending order.
#![no_main]

use std::sync::OnceLock;

use alts_core::UnixTime;
use alts_core::crl::{RevocationList, RevocationListBuilder, RevocationListInfo};
use alts_fuzz::arbitrary::Unstructured;
use alts_fuzz::{apply_edits, sign, world};
use alts_proto::alts_v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

const CRL_CONTEXT: &[u8] = b"alts.v1.RevocationListTbs\0";

fn genuine_tbs() -> &'static [u8] {
    static G: OnceLock<Vec<u8>> = OnceLock::new();
    G.get_or_init(|| {
        let mut b = RevocationListBuilder::new();
        for id in [1, 2, 70_000, 1 << 33, u64::MAX] {
            b.insert(id);
        }
        b.insert_range(100..=5000);
        b.insert_range((2 << 56)..=(2 << 56) + 300);
        for i in 0..20 {
            b.insert(9_000_000 + 3 * i);
        }
        let signed = b.sign(&world().pki.root_key, UnixTime(1_700_000_000)).unwrap();
        pb::RevocationList::decode(&signed[..]).unwrap().tbs
    })
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    let root = &world().pki.root;
    if mode % 2 == 0 {
        let _ = RevocationListInfo::parse(rest);
        let _ = RevocationList::from_signed_bytes(rest, root);
        return;
    }
    let mut tbs = genuine_tbs().to_vec();
    apply_edits(&mut Unstructured::new(rest), &mut tbs);
    let signed = pb::RevocationList {
        signature: sign(&world().pki.root_key, CRL_CONTEXT, &tbs),
        tbs,
        signature_algorithm: pb::SignatureAlgorithm::Ed25519 as i32,
    }
    .encode_to_vec();
    let info = RevocationListInfo::parse(&signed);
    if let Ok(crl) = RevocationList::from_signed_bytes(&signed, root) {
        let info = info.expect("a list that loads has a parsable header");
        assert_eq!(info.count, crl.len());
        assert_eq!(info.issued_at, crl.issued_at());
        assert_eq!(info.root_key_id, root.key_id());
        let mut n = 0u64;
        let mut prev = None;
        for id in crl.iter().take(100_000) {
            assert!(prev < Some(id), "ids not ascending");
            assert!(crl.is_revoked(id));
            prev = Some(id);
            n += 1;
        }
        assert!(n == crl.len() || n == 100_000);
    }
});
