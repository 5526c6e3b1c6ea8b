//! The AEAD side of the record protocols, on the build's provider library
//! (`ring` by default, `aws-lc-rs` with the feature of that name; see
//! [`crate::crypto::provider_name`]), byte-compatible with the ones stock gRPC
//! ships.
//!
//! - `ALTSRP_GCM_AES128_REKEY`: `key_data = K (32 B) ‖ M (12 B)`. For the
//!   counter `c`, the AES-128 key is `HMAC-SHA256(K, c[2..8] ‖ 0x01)[..16]`
//!   (recomputed only when those 6 bytes change) and the nonce is `c XOR M`.
//! - `ALTSRP_GCM_AES128`: one 16-byte AES-128 key, nonce = `c`.
//! - Integrity-only (GMAC) mode: the same keys and nonces, but the payload is
//!   passed as associated data with an empty plaintext, so it stays in clear
//!   and only the 16-byte tag is added.
//!
//! Key bytes we hold are in [`Zeroizing`] buffers. The expanded AES key
//! schedule inside `LessSafeKey` belongs to the provider library and is
//! dropped with the crypter: ring does not zeroize it and offers no hook to do
//! so; aws-lc-rs keeps it in an AWS-LC `EVP_AEAD_CTX`, which AWS-LC overwrites
//! with zeroes when it frees it (with its default allocator).

use std::fmt;

use zeroize::Zeroizing;

use super::RecordError;
use super::counter::COUNTER_LEN;
use crate::crypto::backend::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use crate::crypto::backend::hmac;

/// AES-128 key length.
pub(crate) const AES_KEY_LEN: usize = 16;
/// GCM tag length.
pub(crate) const TAG_LEN: usize = 16;
/// REKEY: length of the KDF key `K`.
const KDF_KEY_LEN: usize = 32;
/// REKEY: total key data (`K ‖ M`).
pub(crate) const REKEY_KEY_DATA_LEN: usize = KDF_KEY_LEN + COUNTER_LEN;
/// REKEY: where the 6-byte KDF counter sits in the record counter.
const KDF_COUNTER_START: usize = 2;
/// REKEY: length of the KDF counter.
const KDF_COUNTER_LEN: usize = 6;

/// Whether records are encrypted (GCM) or only authenticated (GMAC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// AES-128-GCM: payload encrypted and authenticated.
    Privacy,
    /// AES-128-GMAC: payload in clear, authenticated as associated data.
    IntegrityOnly,
}

fn aes_key(bytes: &[u8]) -> Result<LessSafeKey, RecordError> {
    UnboundKey::new(&AES_128_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| RecordError::KeySetup)
}

/// The key-selection part: which AES key and which nonce for a counter value.
enum KeySchedule {
    /// `ALTSRP_GCM_AES128_REKEY`.
    Rekey {
        kdf_key: Zeroizing<[u8; KDF_KEY_LEN]>,
        mask: Zeroizing<[u8; COUNTER_LEN]>,
        /// The KDF counter the cached key was derived for, and that key.
        cached: Option<([u8; KDF_COUNTER_LEN], LessSafeKey)>,
    },
    /// `ALTSRP_GCM_AES128`.
    Plain { key: LessSafeKey },
}

/// An AEAD for one direction of one record protocol.
pub(crate) struct Crypter {
    schedule: KeySchedule,
    mode: Mode,
}

impl fmt::Debug for Crypter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.schedule {
            KeySchedule::Rekey { .. } => "Rekey",
            KeySchedule::Plain { .. } => "Plain",
        };
        f.debug_struct("Crypter")
            .field("schedule", &kind)
            .field("mode", &self.mode)
            .field("keys", &"<redacted>")
            .finish()
    }
}

impl Crypter {
    /// A REKEY crypter from at least 44 bytes of key data (extra bytes are
    /// ignored).
    pub(crate) fn new_rekey(key_data: &[u8], mode: Mode) -> Result<Self, RecordError> {
        let bad_len = || RecordError::BadKeyLength {
            len: key_data.len(),
            need: REKEY_KEY_DATA_LEN,
        };
        let kdf = key_data.get(..KDF_KEY_LEN).ok_or_else(bad_len)?;
        let mask = key_data
            .get(KDF_KEY_LEN..REKEY_KEY_DATA_LEN)
            .ok_or_else(bad_len)?;
        let mut kdf_key = Zeroizing::new([0u8; KDF_KEY_LEN]);
        kdf_key.copy_from_slice(kdf);
        let mut mask_bytes = Zeroizing::new([0u8; COUNTER_LEN]);
        mask_bytes.copy_from_slice(mask);
        Ok(Self {
            schedule: KeySchedule::Rekey {
                kdf_key,
                mask: mask_bytes,
                cached: None,
            },
            mode,
        })
    }

    /// A plain AES-128-GCM crypter from at least 16 bytes of key data (extra
    /// bytes are ignored).
    pub(crate) fn new_plain(key_data: &[u8], mode: Mode) -> Result<Self, RecordError> {
        let key = key_data.get(..AES_KEY_LEN).ok_or(RecordError::BadKeyLength {
            len: key_data.len(),
            need: AES_KEY_LEN,
        })?;
        Ok(Self {
            schedule: KeySchedule::Plain { key: aes_key(key)? },
            mode,
        })
    }

    /// The AES key and nonce for counter value `counter`, rekeying if the KDF
    /// counter changed since the last call.
    fn key_and_nonce(&mut self, counter: &[u8; COUNTER_LEN]) -> Result<(&LessSafeKey, Nonce), RecordError> {
        match &mut self.schedule {
            KeySchedule::Plain { key } => Ok((key, Nonce::assume_unique_for_key(*counter))),
            KeySchedule::Rekey {
                kdf_key,
                mask,
                cached,
            } => {
                let mut kdf_counter = [0u8; KDF_COUNTER_LEN];
                for (dst, src) in kdf_counter.iter_mut().zip(counter.iter().skip(KDF_COUNTER_START)) {
                    *dst = *src;
                }
                let stale = match cached {
                    Some((c, _)) => *c != kdf_counter,
                    None => true,
                };
                if stale {
                    *cached = Some((kdf_counter, derive_rekey_key(kdf_key, &kdf_counter)?));
                }
                let mut nonce = [0u8; COUNTER_LEN];
                for ((n, c), m) in nonce.iter_mut().zip(counter.iter()).zip(mask.iter()) {
                    *n = c ^ m;
                }
                let key = match cached {
                    Some((_, key)) => key,
                    None => return Err(RecordError::KeySetup),
                };
                Ok((key, Nonce::assume_unique_for_key(nonce)))
            }
        }
    }

    /// Seals `payload` in place (encrypting it in privacy mode, leaving it
    /// as is in integrity-only mode) with `aad`, and returns the tag.
    pub(crate) fn seal(
        &mut self,
        counter: &[u8; COUNTER_LEN],
        aad: &[u8],
        payload: &mut [u8],
    ) -> Result<Tag, RecordError> {
        let mode = self.mode;
        let (key, nonce) = self.key_and_nonce(counter)?;
        match mode {
            Mode::Privacy => key.seal_in_place_separate_tag(nonce, Aad::from(aad), payload),
            Mode::IntegrityOnly => {
                if !aad.is_empty() {
                    return Err(RecordError::SealFailed);
                }
                key.seal_in_place_separate_tag(nonce, Aad::from(&*payload), &mut [])
            }
        }
        .map_err(|_| RecordError::SealFailed)
    }

    /// Opens `body` = `payload ‖ tag` in place with `aad`; on success the
    /// first `returned` bytes of `body` are the plaintext.
    pub(crate) fn open(
        &mut self,
        counter: &[u8; COUNTER_LEN],
        aad: &[u8],
        body: &mut [u8],
    ) -> Result<usize, RecordError> {
        let payload_len = body
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(RecordError::FrameTooSmall)?;
        let mode = self.mode;
        let (key, nonce) = self.key_and_nonce(counter)?;
        match mode {
            Mode::Privacy => key
                .open_in_place(nonce, Aad::from(aad), body)
                .map(|plain| plain.len())
                .map_err(|_| RecordError::Authentication),
            Mode::IntegrityOnly => {
                if !aad.is_empty() {
                    return Err(RecordError::Authentication);
                }
                let (payload, tag) = body.split_at_mut(payload_len);
                key.open_in_place(nonce, Aad::from(&*payload), tag)
                    .map(|_| payload_len)
                    .map_err(|_| RecordError::Authentication)
            }
        }
    }
}

/// `HMAC-SHA256(K, kdf_counter ‖ 0x01)[..16]`: the first block of
/// HKDF-Expand with `info = kdf_counter`.
fn derive_rekey_key(
    kdf_key: &[u8; KDF_KEY_LEN],
    kdf_counter: &[u8; KDF_COUNTER_LEN],
) -> Result<LessSafeKey, RecordError> {
    let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, kdf_key);
    let mut ctx = hmac::Context::with_key(&hmac_key);
    ctx.update(kdf_counter);
    ctx.update(&[0x01]);
    let tag = ctx.sign();
    let mut aes = Zeroizing::new([0u8; AES_KEY_LEN]);
    for (dst, src) in aes.iter_mut().zip(tag.as_ref()) {
        *dst = *src;
    }
    aes_key(aes.as_slice())
}
