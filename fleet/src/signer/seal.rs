//! Key ring secrets at rest: each resumption secret is sealed with
//! AES-256-GCM (ring) under a key derived from the root signing key with
//! HKDF-SHA256, so a reader of the state database alone learns no
//! resumption secret. The additional data binds a sealed secret to its
//! identity, cell and RID, so secrets cannot be moved between rings.
//!
//! Sealed form: 12-byte random nonce ‖ ciphertext ‖ 16-byte tag.
//!
//! Every replica holds the same root key, so all of them can open every
//! ring. With a new root key the old rings no longer open: remove them from
//! the state (they are recreated on the next request).

use alts_core::cert::SigningKey;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

const SALT: &[u8] = b"alts-signer key ring at rest v1";
const INFO: &[u8] = b"AES-256-GCM";

/// A key ring secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The sealing key could not be derived.
    #[error("deriving the key ring sealing key failed")]
    Key,
    /// The random source failed.
    #[error("random source failed")]
    Random,
    /// The sealed secret does not open with this root key (a different root
    /// key sealed it, or the state was altered).
    #[error("key ring secret does not open with this root key")]
    Open,
}

/// Seals and opens key ring secrets.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

fn aad(identity: &str, cell: &str, rid: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(identity.len() + cell.len() + rid.len() + 2);
    a.extend_from_slice(identity.as_bytes());
    a.push(0);
    a.extend_from_slice(cell.as_bytes());
    a.push(0);
    a.extend_from_slice(rid);
    a
}

impl Sealer {
    /// The sealer of `root`'s signer.
    pub fn new(root: &SigningKey) -> Result<Self, SealError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(root.pkcs8_bytes());
        let okm = prk.expand(&[INFO], &AES_256_GCM).map_err(|_| SealError::Key)?;
        Ok(Self {
            key: LessSafeKey::new(UnboundKey::from(okm)),
            rng: SystemRandom::new(),
        })
    }

    /// Seals `secret` for `(identity, cell, rid)`.
    pub fn seal(&self, identity: &str, cell: &str, rid: &[u8], secret: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + secret.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(secret);
        let body = out.get_mut(NONCE_LEN..).ok_or(SealError::Random)?;
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(identity, cell, rid)),
                body,
            )
            .map_err(|_| SealError::Random)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a sealed secret of `(identity, cell, rid)`.
    pub fn open(
        &self,
        identity: &str,
        cell: &str,
        rid: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (nonce, body) = sealed.split_at_checked(NONCE_LEN).ok_or(SealError::Open)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(identity, cell, rid)), buf.as_mut_slice())
            .map_err(|_| SealError::Open)?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_binding() {
        let rng = alts_core::crypto::RingRandom::default();
        let s = Sealer::new(&SigningKey::generate(&rng).unwrap()).unwrap();
        let sealed = s.seal("greeter-prod", "c1", b"rid", &[7; 32]).unwrap();
        assert_eq!(sealed.len(), 12 + 32 + 16);
        assert!(!sealed.windows(32).any(|w| w == [7; 32]));
        assert_eq!(
            &s.open("greeter-prod", "c1", b"rid", &sealed).unwrap()[..],
            &[7; 32]
        );
        assert!(s.open("greeter-prod", "c2", b"rid", &sealed).is_err());
        assert!(s.open("db-prod", "c1", b"rid", &sealed).is_err());
        assert!(s.open("greeter-prod", "c1", b"rie", &sealed).is_err());
        assert!(s.open("greeter-prod", "c1", b"rid", &sealed[..20]).is_err());
        let other = Sealer::new(&SigningKey::generate(&rng).unwrap()).unwrap();
        assert!(other.open("greeter-prod", "c1", b"rid", &sealed).is_err());
    }
}
