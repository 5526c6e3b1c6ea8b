//! The revocation list: a set of revoked 64-bit revocation IDs (8-bit
//! category ‖ 56-bit identifier), signed by the signing-service root key. A
//! certificate is invalid once expired or listed here; since many production
//! certificates carry no expiry, the list is the source of truth.
//!
//! File format: `alts.v1.RevocationList` whose `tbs` is a serialized
//! `alts.v1.RevocationListTbs` (version 1, `encoding` 1) holding the IDs as a
//! [`roaring::RoaringTreemap`] in its portable serialization (run containers
//! enabled, so the dense ranges that IDs are handed out in compress to a few
//! bytes). The Ed25519 signature covers `b"alts.v1.RevocationListTbs\0" || tbs`
//! (see [`crate::cert`]).
//!
//! Loading checks, in order: total size ([`MAX_CRL_LEN`]), signature, root key
//! id, version and encoding, compressed size ([`MAX_CRL_IDS_LEN`]), then
//! deserializes and checks the stored count.

use std::fmt;
use std::ops::RangeInclusive;

use alts_proto::alts_v1 as pb;
use prost::Message;
use roaring::{RoaringBitmap, RoaringTreemap};

use crate::UnixTime;
use crate::cert::{CRL_CONTEXT, RootKey, SigningKey, verify_signature};

/// Maximum size of the compressed ID set.
pub const MAX_CRL_IDS_LEN: usize = 64 * 1024 * 1024;
/// Maximum size of a whole revocation-list file.
pub const MAX_CRL_LEN: usize = MAX_CRL_IDS_LEN + 4096;
/// The format version written and accepted.
pub const CRL_VERSION: u32 = 1;
/// `encoding` value: roaring 64-bit treemap, portable serialization.
pub const ENCODING_ROARING_TREEMAP: u32 = 1;

/// A revocation list could not be built or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrlError {
    /// The file or the compressed ID set exceeds its cap.
    #[error("revocation list {what} too large: {len} > {max}")]
    TooLarge {
        /// `"file"` or `"id set"`.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The bytes are not a revocation list.
    #[error("malformed revocation list: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with the given root key.
    #[error("bad revocation list signature")]
    BadSignature,
    /// The list names another root key.
    #[error("revocation list was signed by a different root key")]
    WrongRoot,
    /// Unsupported version.
    #[error("unsupported revocation list version {0}")]
    UnsupportedVersion(u32),
    /// Unsupported ID encoding.
    #[error("unsupported revocation list encoding {0}")]
    UnsupportedEncoding(u32),
    /// The stored count does not match the decoded set.
    #[error("revocation list count mismatch: header says {header}, set has {actual}")]
    CountMismatch {
        /// The `count` field.
        header: u64,
        /// The decoded set's size.
        actual: u64,
    },
}

/// Collects revoked IDs, then signs a revocation list.
#[derive(Clone, Default)]
pub struct RevocationListBuilder {
    set: RoaringTreemap,
}

impl RevocationListBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one ID.
    pub fn insert(&mut self, id: u64) {
        self.set.insert(id);
    }

    /// Adds an inclusive range of IDs (cheap even for long ranges).
    pub fn insert_range(&mut self, range: RangeInclusive<u64>) {
        self.set.insert_range(range);
    }

    /// Number of distinct IDs so far.
    pub fn len(&self) -> u64 {
        self.set.len()
    }

    /// Whether no ID was added.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Serializes, signs and returns the `alts.v1.RevocationList` bytes.
    pub fn sign(&self, root: &SigningKey, issued_at: UnixTime) -> Result<Vec<u8>, CrlError> {
        // Run-length encode dense ranges.
        let optimized = RoaringTreemap::from_bitmaps(self.set.bitmaps().map(|(k, b)| {
            let mut b: RoaringBitmap = b.clone();
            b.optimize();
            (k, b)
        }));
        let size = optimized.serialized_size();
        if size > MAX_CRL_IDS_LEN {
            return Err(CrlError::TooLarge {
                what: "id set",
                len: size,
                max: MAX_CRL_IDS_LEN,
            });
        }
        let mut ids = Vec::with_capacity(size);
        optimized
            .serialize_into(&mut ids)
            .map_err(|_| CrlError::Malformed("serialization failed"))?;
        let tbs = pb::RevocationListTbs {
            version: CRL_VERSION,
            issued_at: issued_at.secs(),
            encoding: ENCODING_ROARING_TREEMAP,
            ids,
            root_key_id: RootKey::from_signing_key("", root).key_id().to_vec(),
            count: optimized.len(),
        }
        .encode_to_vec();
        let signature = root.sign(CRL_CONTEXT, &tbs);
        Ok(pb::RevocationList {
            tbs,
            signature_algorithm: pb::SignatureAlgorithm::Ed25519 as i32,
            signature,
        }
        .encode_to_vec())
    }
}

impl fmt::Debug for RevocationListBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationListBuilder")
            .field("len", &self.set.len())
            .finish()
    }
}

/// A verified, loaded revocation list.
#[derive(Clone, PartialEq)]
pub struct RevocationList {
    set: RoaringTreemap,
    issued_at: UnixTime,
}

impl RevocationList {
    /// Builds and signs a list of `ids` (duplicates are fine).
    pub fn build_signed(
        ids: impl IntoIterator<Item = u64>,
        root: &SigningKey,
        issued_at: UnixTime,
    ) -> Result<Vec<u8>, CrlError> {
        let mut b = RevocationListBuilder::new();
        for id in ids {
            b.insert(id);
        }
        b.sign(root, issued_at)
    }

    /// Loads a signed list, checking size caps, the signature and the root
    /// key id before deserializing the IDs.
    pub fn from_signed_bytes(bytes: &[u8], root: &RootKey) -> Result<Self, CrlError> {
        if bytes.len() > MAX_CRL_LEN {
            return Err(CrlError::TooLarge {
                what: "file",
                len: bytes.len(),
                max: MAX_CRL_LEN,
            });
        }
        let outer =
            pb::RevocationList::decode(bytes).map_err(|_| CrlError::Malformed("not a revocation list"))?;
        if !verify_signature(
            root.public_key(),
            CRL_CONTEXT,
            &outer.tbs,
            outer.signature_algorithm,
            &outer.signature,
        ) {
            return Err(CrlError::BadSignature);
        }
        let tbs = pb::RevocationListTbs::decode(outer.tbs.as_slice())
            .map_err(|_| CrlError::Malformed("contents"))?;
        if tbs.root_key_id.as_slice() != root.key_id().as_slice() {
            return Err(CrlError::WrongRoot);
        }
        if tbs.version != CRL_VERSION {
            return Err(CrlError::UnsupportedVersion(tbs.version));
        }
        if tbs.encoding != ENCODING_ROARING_TREEMAP {
            return Err(CrlError::UnsupportedEncoding(tbs.encoding));
        }
        let set = decode_ids(&tbs.ids)?;
        if set.len() != tbs.count {
            return Err(CrlError::CountMismatch {
                header: tbs.count,
                actual: set.len(),
            });
        }
        Ok(Self {
            set,
            issued_at: UnixTime(tbs.issued_at),
        })
    }

    /// An unsigned in-memory list (for tests and for callers that verified
    /// the source some other way).
    pub fn from_ids(ids: impl IntoIterator<Item = u64>, issued_at: UnixTime) -> Self {
        Self {
            set: ids.into_iter().collect(),
            issued_at,
        }
    }

    /// Whether `id` is revoked.
    pub fn is_revoked(&self, id: u64) -> bool {
        self.set.contains(id)
    }

    /// Number of revoked IDs.
    pub fn len(&self) -> u64 {
        self.set.len()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// When the list was issued.
    pub fn issued_at(&self) -> UnixTime {
        self.issued_at
    }

    /// The revoked IDs, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.set.iter()
    }
}

/// The header of a revocation list, decoded WITHOUT checking its signature
/// and without decompressing the IDs (for display).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationListInfo {
    /// When it was issued.
    pub issued_at: UnixTime,
    /// The stored number of IDs.
    pub count: u64,
    /// SHA-256 of the root key that signed it.
    pub root_key_id: [u8; 32],
    /// Size of the compressed ID set in bytes.
    pub ids_len: usize,
}

impl RevocationListInfo {
    /// Decodes the header of a serialized `alts.v1.RevocationList`.
    pub fn parse(bytes: &[u8]) -> Result<Self, CrlError> {
        if bytes.len() > MAX_CRL_LEN {
            return Err(CrlError::TooLarge {
                what: "file",
                len: bytes.len(),
                max: MAX_CRL_LEN,
            });
        }
        let outer =
            pb::RevocationList::decode(bytes).map_err(|_| CrlError::Malformed("not a revocation list"))?;
        let tbs = pb::RevocationListTbs::decode(outer.tbs.as_slice())
            .map_err(|_| CrlError::Malformed("contents"))?;
        if tbs.version != CRL_VERSION {
            return Err(CrlError::UnsupportedVersion(tbs.version));
        }
        if tbs.encoding != ENCODING_ROARING_TREEMAP {
            return Err(CrlError::UnsupportedEncoding(tbs.encoding));
        }
        let root_key_id = tbs
            .root_key_id
            .as_slice()
            .try_into()
            .map_err(|_| CrlError::Malformed("root key id"))?;
        Ok(Self {
            issued_at: UnixTime(tbs.issued_at),
            count: tbs.count,
            root_key_id,
            ids_len: tbs.ids.len(),
        })
    }
}

fn decode_ids(ids: &[u8]) -> Result<RoaringTreemap, CrlError> {
    if ids.len() > MAX_CRL_IDS_LEN {
        return Err(CrlError::TooLarge {
            what: "id set",
            len: ids.len(),
            max: MAX_CRL_IDS_LEN,
        });
    }
    let mut reader = ids;
    let set = RoaringTreemap::deserialize_from(&mut reader).map_err(|_| CrlError::Malformed("id set"))?;
    if !reader.is_empty() {
        return Err(CrlError::Malformed("trailing bytes after id set"));
    }
    Ok(set)
}

impl fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationList")
            .field("len", &self.set.len())
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DeterministicRandom;

    #[test]
    fn round_trip_and_ranges() {
        let rng = DeterministicRandom::new(b"crl");
        let key = SigningKey::generate(&rng).unwrap();
        let root = RootKey::from_signing_key("r", &key);
        let mut b = RevocationListBuilder::new();
        b.insert_range(1000..=1_000_000);
        b.insert(u64::MAX);
        let bytes = b.sign(&key, UnixTime(5)).unwrap();
        assert!(bytes.len() < 1000, "dense range should compress: {}", bytes.len());
        let crl = RevocationList::from_signed_bytes(&bytes, &root).unwrap();
        assert!(crl.is_revoked(1000) && crl.is_revoked(1_000_000) && crl.is_revoked(u64::MAX));
        assert!(!crl.is_revoked(999) && !crl.is_revoked(1_000_001));
        assert_eq!(crl.len(), 999_002);
        assert_eq!(crl.issued_at(), UnixTime(5));
    }

    #[test]
    fn garbage_ids_rejected() {
        assert!(decode_ids(&[0xff; 64]).is_err());
        assert!(decode_ids(&[]).is_err());
    }
}
