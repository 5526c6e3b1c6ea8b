//! The resumption key ring file (`resumption.keys` in a credential
//! directory): the keys every replica of one identity in one cell shares,
//! current key first, so that a ticket issued by one replica resumes on
//! another.
//!
//! ```toml
//! # Written by the credential agent; current key first.
//! [[key]]
//! rid = "6b1f..."            # hex, the resumption identifier
//! secret = "9c0d..."         # hex, 32 bytes
//! created_at = 1764758400    # seconds since the Unix epoch
//!
//! [[key]]                    # the previous key, still accepted
//! rid = "..."
//! secret = "..."
//! created_at = 1764672000
//! ```
//!
//! The file holds secrets: the agent writes it with mode 0600 (or 0640 for
//! a workload group), atomically.

use alts_core::resumption::{RID_LEN, ResumptionKey, ResumptionKeys};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// Keys kept in a ring at most.
pub const MAX_RING_KEYS: usize = 16;
/// Largest key ring file accepted.
pub const MAX_RING_FILE: usize = 64 * 1024;

/// Why a key ring does not load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// The file does not parse.
    #[error("key ring: {0}")]
    Parse(String),
    /// The ring has no key.
    #[error("key ring has no key")]
    Empty,
    /// Too many keys or too large.
    #[error("key ring too large (at most {MAX_RING_KEYS} keys, {MAX_RING_FILE} bytes)")]
    TooLarge,
    /// A RID or secret has the wrong length or is not hex.
    #[error("key {index}: {what}")]
    BadKey {
        /// 0-based position in the ring.
        index: usize,
        /// What is wrong.
        what: &'static str,
    },
}

/// One key of a ring.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRingEntry {
    /// The resumption identifier (RID).
    #[serde(with = "hex_bytes")]
    pub rid: Vec<u8>,
    /// The 32-byte secret.
    #[serde(with = "hex_bytes")]
    pub secret: Vec<u8>,
    /// When the key became current.
    pub created_at: i64,
}

impl Drop for KeyRingEntry {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl std::fmt::Debug for KeyRingEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRingEntry")
            .field("rid", &hex_string(&self.rid))
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A resumption key ring: current key first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRing {
    /// The keys, current first.
    #[serde(default, rename = "key")]
    pub keys: Vec<KeyRingEntry>,
}

impl KeyRing {
    /// Parses the TOML form.
    pub fn from_toml(text: &str) -> Result<Self, KeyRingError> {
        if text.len() > MAX_RING_FILE {
            return Err(KeyRingError::TooLarge);
        }
        let ring: Self = toml::from_str(text).map_err(|e| KeyRingError::Parse(e.message().to_owned()))?;
        ring.check()?;
        Ok(ring)
    }

    /// The TOML form (holds secrets: write it with restrictive permissions).
    pub fn to_toml(&self) -> Zeroizing<String> {
        Zeroizing::new(toml::to_string(self).unwrap_or_default())
    }

    fn check(&self) -> Result<(), KeyRingError> {
        if self.keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        if self.keys.len() > MAX_RING_KEYS {
            return Err(KeyRingError::TooLarge);
        }
        for (index, k) in self.keys.iter().enumerate() {
            if k.rid.len() != RID_LEN {
                return Err(KeyRingError::BadKey {
                    index,
                    what: "rid has the wrong length",
                });
            }
            if k.secret.len() != 32 {
                return Err(KeyRingError::BadKey {
                    index,
                    what: "secret is not 32 bytes",
                });
            }
        }
        Ok(())
    }

    /// The keys for the handshake: the first seals, all open.
    pub fn to_keys(&self) -> Result<ResumptionKeys, KeyRingError> {
        self.check()?;
        let key = |k: &KeyRingEntry| {
            let mut rid = [0u8; RID_LEN];
            rid.copy_from_slice(&k.rid);
            let mut secret = Zeroizing::new([0u8; 32]);
            secret.copy_from_slice(&k.secret);
            ResumptionKey::new(rid, &secret)
        };
        let mut keys = self.keys.iter().map(key);
        let current = keys.next().ok_or(KeyRingError::Empty)?;
        Ok(ResumptionKeys::new(current, keys.collect()))
    }
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Zeroizing::new(super::hex_string(b)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        if s.len() % 2 != 0 || s.len() > 256 {
            return Err(serde::de::Error::custom("not a hex string of whole bytes"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("not hex"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> KeyRingEntry {
        KeyRingEntry {
            rid: vec![n; RID_LEN],
            secret: vec![n; 32],
            created_at: i64::from(n),
        }
    }

    #[test]
    fn round_trip_and_order() {
        let ring = KeyRing {
            keys: vec![entry(2), entry(1)],
        };
        let text = ring.to_toml();
        let back = KeyRing::from_toml(&text).unwrap();
        assert_eq!(back.keys.len(), 2);
        let keys = back.to_keys().unwrap();
        assert_eq!(keys.current().rid(), &[2u8; RID_LEN]);
        assert!(keys.find(&[1u8; RID_LEN]).is_some());
        assert!(!format!("{back:?}").contains(&"02".repeat(32)), "secret in Debug");
    }

    #[test]
    fn bad_rings_are_refused() {
        assert!(matches!(KeyRing::from_toml(""), Err(KeyRingError::Empty)));
        assert!(matches!(
            KeyRing::from_toml("[[key]]\nrid = \"zz\"\n"),
            Err(KeyRingError::Parse(_))
        ));
        let mut short = entry(1);
        short.secret.truncate(31);
        let text = KeyRing { keys: vec![short] }.to_toml();
        assert!(matches!(
            KeyRing::from_toml(&text),
            Err(KeyRingError::BadKey { index: 0, .. })
        ));
        assert!(matches!(
            KeyRing::from_toml(&"#".repeat(MAX_RING_FILE + 1)),
            Err(KeyRingError::TooLarge)
        ));
    }
}
