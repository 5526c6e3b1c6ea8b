//! The cryptographic provider: every primitive the protocol uses, behind one
//! struct (the shape of rustls's `CryptoProvider`).
//!
//! Which library supplies the primitives is chosen at build time
//! ([`provider_name`]):
//!
//! - by default, `ring` for randomness, AES-GCM, HMAC, HKDF, SHA-256 and
//!   Ed25519, and `x25519-dalek` for X25519 (ring has no static X25519 keys);
//! - with the cargo feature `aws-lc-rs`, `aws-lc-rs` (AWS-LC) for all of them,
//!   X25519 included.
//!
//! Both builds have the same public API and produce the same bytes on the
//! wire. Key agreement is a list of named groups so that new ones (a
//! post-quantum hybrid) negotiate like the ciphers.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// The modules of the library that supplies the primitives: `ring`, or
/// `aws-lc-rs` with the feature of that name. Both expose the same API for
/// what this crate uses (`aead`, `digest`, `hkdf`, `hmac`, `rand`,
/// `signature`), so the protocol code exists once.
pub(crate) mod backend {
    #[cfg(feature = "aws-lc-rs")]
    pub(crate) use aws_lc_rs::{aead, digest, hkdf, hmac, rand, signature};
    #[cfg(not(feature = "aws-lc-rs"))]
    pub(crate) use ring::{aead, digest, hkdf, hmac, rand, signature};

    /// The name [`super::provider_name`] returns.
    #[cfg(feature = "aws-lc-rs")]
    pub(crate) const NAME: &str = "aws-lc-rs";
    /// The name [`super::provider_name`] returns.
    #[cfg(not(feature = "aws-lc-rs"))]
    pub(crate) const NAME: &str = "ring";
}

/// The library that supplies this build's primitives: `"ring"` (with
/// `x25519-dalek` for X25519) by default, `"aws-lc-rs"` with the cargo
/// feature `aws-lc-rs`.
pub fn provider_name() -> &'static str {
    backend::NAME
}

/// The provider could not produce random bytes or a key exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The random source failed.
    #[error("random source failed")]
    Random,
    /// A peer public key had the wrong length.
    #[error("peer public key has length {0}, expected {1}")]
    BadPublicKeyLength(usize, usize),
    /// The shared secret was all zeroes (a low-order peer point).
    #[error("key agreement produced a non-contributory (all-zero) secret")]
    NonContributory,
    /// A key could not be parsed.
    #[error("malformed key material")]
    BadKey,
}

/// A source of cryptographically secure random bytes.
pub trait SecureRandom: Send + Sync + fmt::Debug {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError>;
}

/// The OS random source, through the build's provider library
/// ([`provider_name`]): `ring`'s `SystemRandom` by default, `aws-lc-rs`'s
/// with the feature `aws-lc-rs`. (The name dates from when `ring` was the
/// only provider.)
#[derive(Debug)]
pub struct RingRandom(backend::rand::SystemRandom);

impl Default for RingRandom {
    fn default() -> Self {
        Self(backend::rand::SystemRandom::new())
    }
}

impl SecureRandom for RingRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        backend::rand::SecureRandom::fill(&self.0, dest).map_err(|_| CryptoError::Random)
    }
}

/// A shared secret from a key agreement; zeroized on drop, never printed.
pub struct SharedSecret(Zeroizing<Vec<u8>>);

impl SharedSecret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes.
    pub fn secret_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

/// A named key-agreement group (e.g. X25519, later an X25519+ML-KEM hybrid).
pub trait KxGroup: Send + Sync + fmt::Debug {
    /// The group's name as negotiated in the handshake.
    fn name(&self) -> &'static str;
    /// Starts an ephemeral key exchange.
    fn start(&self, rng: &dyn SecureRandom) -> Result<Box<dyn ActiveKeyExchange>, CryptoError>;
}

/// One side of an ephemeral key exchange in progress.
pub trait ActiveKeyExchange: Send + Sync {
    /// Our public share to send to the peer.
    fn public_key(&self) -> &[u8];
    /// Completes the exchange with the peer's share.
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, CryptoError>;
}

/// X25519 length of public keys and secrets.
pub const X25519_LEN: usize = 32;

/// Ephemeral X25519 (`x25519-dalek`, or `aws-lc-rs` with that feature).
#[derive(Debug)]
pub struct X25519;

struct X25519Active {
    key: StaticKeyPair,
}

impl KxGroup for X25519 {
    fn name(&self) -> &'static str {
        "X25519"
    }

    fn start(&self, rng: &dyn SecureRandom) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        Ok(Box::new(X25519Active {
            key: StaticKeyPair::generate(rng)?,
        }))
    }
}

impl ActiveKeyExchange for X25519Active {
    fn public_key(&self) -> &[u8] {
        self.key.public_key()
    }

    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, CryptoError> {
        self.key.agree(peer)
    }
}

/// The peer's public key as exactly 32 bytes.
fn x25519_peer(peer: &[u8]) -> Result<[u8; X25519_LEN], CryptoError> {
    peer.try_into()
        .map_err(|_| CryptoError::BadPublicKeyLength(peer.len(), X25519_LEN))
}

/// X25519 on `x25519-dalek` (the default build).
#[cfg(not(feature = "aws-lc-rs"))]
mod x25519_impl {
    use super::{CryptoError, SharedSecret, X25519_LEN, Zeroizing, x25519_peer};

    /// A private scalar (zeroized on drop by `x25519-dalek`).
    #[derive(Clone)]
    pub(super) struct Secret(x25519_dalek::StaticSecret);

    impl Secret {
        /// The key for these private bytes, and its public key.
        pub(super) fn from_bytes(bytes: [u8; X25519_LEN]) -> Result<(Self, [u8; X25519_LEN]), CryptoError> {
            let secret = x25519_dalek::StaticSecret::from(bytes);
            let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
            Ok((Self(secret), public))
        }

        pub(super) fn to_bytes(&self) -> Zeroizing<[u8; X25519_LEN]> {
            Zeroizing::new(self.0.to_bytes())
        }

        /// X25519 with `peer`; refuses an all-zero result.
        pub(super) fn agree(&self, peer: &[u8]) -> Result<SharedSecret, CryptoError> {
            let peer = x25519_peer(peer)?;
            let shared = self.0.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
            if !shared.was_contributory() {
                return Err(CryptoError::NonContributory);
            }
            Ok(SharedSecret::new(shared.as_bytes().to_vec()))
        }
    }
}

/// X25519 on `aws-lc-rs` (feature `aws-lc-rs`).
#[cfg(feature = "aws-lc-rs")]
mod x25519_impl {
    use std::sync::Arc;

    use aws_lc_rs::agreement;
    use subtle::ConstantTimeEq;

    use super::{CryptoError, SharedSecret, X25519_LEN, Zeroizing, x25519_peer};

    /// A private scalar: AWS-LC's key (shared by clones), and its 32 bytes in
    /// a zeroized buffer beside it for `secret_bytes()` (AWS-LC keeps its own
    /// copy, freed with the key).
    #[derive(Clone)]
    pub(super) struct Secret {
        bytes: Zeroizing<[u8; X25519_LEN]>,
        key: Arc<agreement::PrivateKey>,
    }

    impl Secret {
        /// The key for these private bytes, and its public key. AWS-LC
        /// accepts every 32-byte X25519 private key; it fails here only if it
        /// cannot allocate.
        pub(super) fn from_bytes(bytes: [u8; X25519_LEN]) -> Result<(Self, [u8; X25519_LEN]), CryptoError> {
            let bytes = Zeroizing::new(bytes);
            let key = agreement::PrivateKey::from_private_key(&agreement::X25519, bytes.as_ref())
                .map_err(|_| CryptoError::BadKey)?;
            let public = key.compute_public_key().map_err(|_| CryptoError::BadKey)?;
            let public: [u8; X25519_LEN] = public.as_ref().try_into().map_err(|_| CryptoError::BadKey)?;
            Ok((
                Self {
                    bytes,
                    key: Arc::new(key),
                },
                public,
            ))
        }

        pub(super) fn to_bytes(&self) -> Zeroizing<[u8; X25519_LEN]> {
            self.bytes.clone()
        }

        /// X25519 with `peer`; refuses an all-zero result (AWS-LC fails the
        /// agreement for it, and the result is checked again here).
        pub(super) fn agree(&self, peer: &[u8]) -> Result<SharedSecret, CryptoError> {
            let peer = x25519_peer(peer)?;
            let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
            let shared = agreement::agree(&self.key, peer, CryptoError::NonContributory, |s| {
                Ok(Zeroizing::new(s.to_vec()))
            })?;
            if bool::from(shared.as_slice().ct_eq(&[0u8; X25519_LEN])) {
                return Err(CryptoError::NonContributory);
            }
            Ok(SharedSecret(shared))
        }
    }
}

/// A static X25519 key pair, as certified by a handshake certificate.
/// The private half is zeroized on drop and never printed.
#[derive(Clone)]
pub struct StaticKeyPair {
    secret: x25519_impl::Secret,
    public: [u8; X25519_LEN],
}

impl StaticKeyPair {
    /// Generates a fresh key pair from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; X25519_LEN]);
        rng.fill(bytes.as_mut())?;
        Self::try_from_secret_bytes(*bytes)
    }

    /// Builds a key pair from its 32 private bytes.
    pub fn from_secret_bytes(bytes: [u8; X25519_LEN]) -> Self {
        match Self::try_from_secret_bytes(bytes) {
            Ok(kp) => kp,
            // Every 32-byte string is an X25519 private key (clamped when
            // used): x25519-dalek cannot fail here, and AWS-LC only when it
            // cannot allocate.
            Err(_) => unreachable!("X25519 accepts every 32-byte private key"),
        }
    }

    fn try_from_secret_bytes(bytes: [u8; X25519_LEN]) -> Result<Self, CryptoError> {
        let (secret, public) = x25519_impl::Secret::from_bytes(bytes)?;
        Ok(Self { secret, public })
    }

    /// The 32 private bytes (for storing in a 0600 file); zeroized on drop.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; X25519_LEN]> {
        self.secret.to_bytes()
    }

    /// The public key.
    pub fn public_key(&self) -> &[u8; X25519_LEN] {
        &self.public
    }

    /// X25519 with a peer's static or ephemeral public key.
    pub fn agree(&self, peer: &[u8]) -> Result<SharedSecret, CryptoError> {
        self.secret.agree(peer)
    }
}

impl fmt::Debug for StaticKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeyPair")
            .field("public", &Hex(&self.public))
            .finish_non_exhaustive()
    }
}

/// Results of static-static X25519 with peers' certified keys, for one
/// static key pair. The result for a given peer key never changes, so a
/// repeated full handshake with the same peer certificate needs no scalar
/// multiplication. Bounded (oldest evicted; capacity 0 keeps nothing);
/// values zeroized when dropped.
/// It holds nothing an attacker with our static private key could not
/// compute, and lives no longer than that key's credentials.
pub(crate) struct StaticDhCache {
    capacity: usize,
    inner: std::sync::Mutex<DhEntries>,
}

type DhEntries = (
    std::collections::HashMap<[u8; X25519_LEN], Zeroizing<[u8; X25519_LEN]>>,
    std::collections::VecDeque<[u8; X25519_LEN]>,
);

impl StaticDhCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: std::sync::Mutex::new(Default::default()),
        }
    }

    /// X25519 of `key` with `peer`, cached by `peer`.
    pub(crate) fn agree(
        &self,
        key: &StaticKeyPair,
        peer: &[u8; X25519_LEN],
    ) -> Result<SharedSecret, CryptoError> {
        if self.capacity == 0 {
            return key.agree(peer);
        }
        if let Ok(guard) = self.inner.lock()
            && let Some(v) = guard.0.get(peer)
        {
            return Ok(SharedSecret::new(v.to_vec()));
        }
        let shared = key.agree(peer)?;
        if let (Ok(mut guard), Ok(bytes)) = (
            self.inner.lock(),
            <[u8; X25519_LEN]>::try_from(shared.secret_bytes()),
        ) {
            let (map, order) = &mut *guard;
            while map.len() >= self.capacity {
                match order.pop_front() {
                    Some(old) => {
                        map.remove(&old);
                    }
                    None => break,
                }
            }
            if map.insert(*peer, Zeroizing::new(bytes)).is_none() {
                order.push_back(*peer);
            }
        }
        Ok(shared)
    }

    /// Forgets every cached result.
    pub(crate) fn clear(&self) {
        if let Ok(mut g) = self.inner.lock() {
            g.0.clear();
            g.1.clear();
        }
    }

    /// Number of cached peers.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().map(|g| g.0.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_dh_cache_bounds_and_zero_capacity() {
        let rng = DeterministicRandom::new(b"dh cache");
        let ours = StaticKeyPair::generate(&rng).unwrap();
        let peers: Vec<[u8; 32]> = (0..3)
            .map(|_| *StaticKeyPair::generate(&rng).unwrap().public_key())
            .collect();
        let two = StaticDhCache::new(2);
        let off = StaticDhCache::new(0);
        for p in &peers {
            let fresh = ours.agree(p).unwrap();
            for cache in [&two, &off] {
                for _ in 0..2 {
                    let got = cache.agree(&ours, p).unwrap();
                    assert_eq!(got.secret_bytes(), fresh.secret_bytes());
                }
            }
        }
        assert_eq!(two.len(), 2);
        assert_eq!(off.len(), 0);
        two.clear();
        assert_eq!(two.len(), 0);
    }
}

/// Prints bytes as lowercase hex (for public values only).
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Every primitive the protocol needs that is chosen at run time (key
/// agreement groups and the random source). Cheap to clone.
///
/// The fixed primitives (AES-128-GCM, HMAC, HKDF, SHA-256, Ed25519) and the
/// X25519 implementation come from the library chosen at build time:
/// `ring` (+ `x25519-dalek`) by default, `aws-lc-rs` with the cargo feature
/// `aws-lc-rs`; [`provider_name`] says which.
#[derive(Clone, Debug)]
pub struct CryptoProvider {
    /// Ephemeral key-agreement groups, in preference order.
    pub kx_groups: Vec<&'static dyn KxGroup>,
    /// The random source.
    pub random: Arc<dyn SecureRandom>,
}

impl CryptoProvider {
    /// Finds a key-agreement group by name.
    pub fn kx_group(&self, name: &str) -> Option<&'static dyn KxGroup> {
        self.kx_groups.iter().copied().find(|g| g.name() == name)
    }
}

/// The default provider: X25519 and OS randomness ([`RingRandom`]) from
/// this build's provider library ([`provider_name`]): `ring` +
/// `x25519-dalek` by default, `aws-lc-rs` with the feature of that name.
pub fn default_provider() -> CryptoProvider {
    CryptoProvider {
        kx_groups: vec![&X25519],
        random: Arc::new(RingRandom::default()),
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = backend::digest::digest(&backend::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A deterministic random source for tests: HMAC-SHA256 in counter mode over a
/// seed. Never use it outside tests: only built with the `test-util`
/// feature (and in this crate's own tests), so a production build cannot
/// pick it up by mistake.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug)]
pub struct DeterministicRandom {
    key: backend::hmac::Key,
    counter: std::sync::atomic::AtomicU64,
}

#[cfg(any(test, feature = "test-util"))]
impl DeterministicRandom {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: &[u8]) -> Self {
        Self {
            key: backend::hmac::Key::new(backend::hmac::HMAC_SHA256, seed),
            counter: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

#[cfg(any(test, feature = "test-util"))]
impl SecureRandom for DeterministicRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        for chunk in dest.chunks_mut(32) {
            let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tag = backend::hmac::sign(&self.key, &n.to_be_bytes());
            let src = tag.as_ref().get(..chunk.len()).ok_or(CryptoError::Random)?;
            chunk.copy_from_slice(src);
        }
        Ok(())
    }
}
