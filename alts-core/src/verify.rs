//! Verification of a peer's handshake certificate: sizes,
//! decoding, root → principal → handshake signatures, validity windows (with
//! a clock-skew allowance), the revocation list for both certificates, then
//! the issuance policy. The result is a [`VerifiedPeer`] or a [`CertError`] naming the
//! exact failing check.
//!
//! Two bounded caches (FIFO eviction) skip repeated signature checks:
//! verified principal certificates by a digest of their encoding, and whole
//! verified chains by SHA-256 of the exact handshake-certificate bytes, so a
//! repeated handshake with the same peer certificate checks no signature at
//! all. Validity, revocation and issuance policy are checked on every call, cache hit
//! or not.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use prost::Message;

use crate::UnixTime;
pub use crate::cert::CertError;
use crate::cert::{
    Category, HANDSHAKE_CONTEXT, HandshakeCertInfo, PRINCIPAL_CONTEXT, ParsedHandshake, ParsedPrincipal,
    PrincipalCertInfo, RootKey, ValidityWindow, check_expiry, check_identity, verify_signature,
};
use crate::crl::RevocationList;
use crate::crypto::sha256;
use crate::policy::{IssuancePolicy, PolicyAllowed};

/// Default clock-skew allowance, in seconds.
pub const DEFAULT_CLOCK_SKEW_SECS: i64 = 300;
/// Default number of verified principal certificates kept in the cache.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;
/// Default longest accepted handshake-certificate lifetime
/// (`not_after - not_before`): 7 days.
pub const DEFAULT_MAX_HANDSHAKE_CERT_LIFETIME_SECS: i64 = 7 * 24 * 3600;

/// A peer whose handshake certificate passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPeer {
    /// The authenticated identity.
    pub identity: String,
    /// Its category.
    pub category: Category,
    /// Who requested its principal certificate.
    pub issuer: String,
    /// Revocation ID of the principal certificate.
    pub principal_revocation_id: u64,
    /// Revocation ID of the handshake certificate.
    pub handshake_revocation_id: u64,
    /// Key id of the root that signed the principal certificate
    /// ([`crate::cert::RootKey::key_id`]).
    pub root_key_id: [u8; 32],
    /// Earliest expiry of the two certificates; `None` = no expiry.
    pub not_after: Option<UnixTime>,
    /// The static X25519 public key to use in the handshake.
    pub static_public_key: [u8; 32],
    /// The peer's handshake ciphers, preferred first.
    pub handshake_ciphers: Vec<String>,
    /// The peer's record protocols, preferred first.
    pub record_protocols: Vec<String>,
}

/// A principal certificate that passed every check on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPrincipal {
    /// The decoded certificate.
    pub info: PrincipalCertInfo,
    /// Which issuance policy rule allowed it.
    pub allowed: PolicyAllowed,
}

struct Cache<V = PrincipalCertInfo> {
    map: HashMap<[u8; 32], V>,
    order: VecDeque<[u8; 32]>,
    capacity: usize,
}

impl<V: Clone> Cache<V> {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn get(&self, key: &[u8; 32]) -> Option<V> {
        self.map.get(key).cloned()
    }

    fn insert(&mut self, key: [u8; 32], info: V) {
        if self.capacity == 0 || self.map.contains_key(&key) {
            return;
        }
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.map.insert(key, info);
        self.order.push_back(key);
    }

    fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

/// Verifies peers' certificates against one root key, issuance policy and (optional)
/// revocation list. `Send + Sync`; share it behind an `Arc`.
pub struct Verifier {
    root: RootKey,
    root_id: [u8; 32],
    /// Further trusted roots (during a root rotation: the next or previous one).
    extra_roots: Vec<RootKey>,
    policy: Arc<IssuancePolicy>,
    crl: Option<Arc<RevocationList>>,
    skew: i64,
    max_handshake_lifetime: Option<i64>,
    identity_grammar: bool,
    cache: Mutex<Cache>,
    chains: Mutex<Cache<Arc<HandshakeCertInfo>>>,
}

impl Verifier {
    /// A verifier trusting `root` and enforcing the issuance policy `policy`, with no revocation
    /// list, a 300 s clock skew, a 1024-entry cache, handshake certificates
    /// limited to a lifetime of 7 days (refused without an expiry) and the
    /// identity grammar ([`crate::cert::check_identity`]).
    pub fn new(root: RootKey, policy: Arc<IssuancePolicy>) -> Self {
        Self {
            root_id: root.key_id(),
            root,
            extra_roots: Vec::new(),
            policy,
            crl: None,
            skew: DEFAULT_CLOCK_SKEW_SECS,
            max_handshake_lifetime: Some(DEFAULT_MAX_HANDSHAKE_CERT_LIFETIME_SECS),
            identity_grammar: true,
            cache: Mutex::new(Cache::new(DEFAULT_CACHE_CAPACITY)),
            chains: Mutex::new(Cache::new(DEFAULT_CACHE_CAPACITY)),
        }
    }

    /// Checks both certificates' revocation IDs against `crl`.
    pub fn with_crl(mut self, crl: Arc<RevocationList>) -> Self {
        self.crl = Some(crl);
        self
    }

    /// Replaces the issuance policy (the principal cache is kept: it only caches
    /// signature checks).
    pub fn with_policy(mut self, policy: Arc<IssuancePolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the clock-skew allowance in seconds (negative values count as 0).
    pub fn with_clock_skew(mut self, secs: i64) -> Self {
        self.skew = secs.max(0);
        self
    }

    /// Refuses handshake certificates whose lifetime (`not_after -
    /// not_before`) exceeds `secs` (default
    /// [`DEFAULT_MAX_HANDSHAKE_CERT_LIFETIME_SECS`], 7 days; negative values
    /// count as 0), and those without both bounds. Handshake certificates
    /// are meant to be short-lived: their rotation is what limits the damage
    /// of a stolen static key in the default (non-PFS) mode.
    pub fn with_max_handshake_cert_lifetime(mut self, secs: i64) -> Self {
        self.max_handshake_lifetime = Some(secs.max(0));
        self
    }

    /// INSECURE opt-out, restores the behaviour before lifetimes were
    /// checked: accepts handshake certificates of any lifetime, including
    /// ones that never expire.
    pub fn allow_unbounded_handshake_certs(mut self) -> Self {
        self.max_handshake_lifetime = None;
        self
    }

    /// The longest accepted handshake-certificate lifetime in seconds;
    /// `None` after [`Verifier::allow_unbounded_handshake_certs`].
    pub fn max_handshake_cert_lifetime(&self) -> Option<i64> {
        self.max_handshake_lifetime
    }

    /// INSECURE opt-out, restores the behaviour before the identity grammar:
    /// accepts peer identities outside [`crate::cert::check_identity`] (any
    /// UTF-8 up to [`crate::cert::MAX_NAME_LEN`] bytes, including control,
    /// bidirectional and look-alike characters).
    pub fn insecure_allow_any_identity(mut self) -> Self {
        self.identity_grammar = false;
        self
    }

    /// Sets the capacity of both caches (0 disables caching).
    pub fn with_cache_capacity(self, capacity: usize) -> Self {
        {
            let mut c = self.lock_cache();
            c.capacity = capacity;
            c.clear();
        }
        {
            let mut c = self.lock_chains();
            c.capacity = capacity;
            c.clear();
        }
        self
    }

    /// The trusted root key (the primary one of a trust bundle).
    pub fn root(&self) -> &RootKey {
        &self.root
    }

    /// Also trusts `root`: during a root rotation a trust bundle holds the
    /// old and the new root, so both generations of certificates verify.
    /// Removing a root later refuses its peers and their resumption tickets.
    pub fn with_additional_root(mut self, root: RootKey) -> Self {
        let id = root.key_id();
        if id != self.root_id && !self.extra_roots.iter().any(|r| r.key_id() == id) {
            self.extra_roots.push(root);
        }
        self
    }

    /// Every trusted root, the primary first.
    pub fn roots(&self) -> impl Iterator<Item = &RootKey> {
        std::iter::once(&self.root).chain(self.extra_roots.iter())
    }

    /// The trusted root with key id `id`.
    pub fn root_by_id(&self, id: &[u8; 32]) -> Option<&RootKey> {
        if *id == self.root_id {
            return Some(&self.root);
        }
        self.extra_roots.iter().find(|r| r.key_id() == *id)
    }

    /// Whether the root with key id `id` is trusted.
    pub fn trusts_root(&self, id: &[u8; 32]) -> bool {
        self.root_by_id(id).is_some()
    }

    /// The issuance policy.
    pub fn policy(&self) -> &Arc<IssuancePolicy> {
        &self.policy
    }

    /// The revocation list, if any.
    pub fn crl(&self) -> Option<&Arc<RevocationList>> {
        self.crl.as_ref()
    }

    /// Empties both caches.
    pub fn clear_cache(&self) {
        self.lock_cache().clear();
        self.lock_chains().clear();
    }

    /// Empties the chain cache only, keeping the verified principal
    /// certificates: the next handshake certificate is checked as a new one
    /// under a known principal (one signature check instead of two).
    pub fn clear_chain_cache(&self) {
        self.lock_chains().clear();
    }

    /// Number of cached verified chains.
    pub fn chain_cache_len(&self) -> usize {
        self.lock_chains().map.len()
    }

    fn lock_chains(&self) -> std::sync::MutexGuard<'_, Cache<Arc<HandshakeCertInfo>>> {
        self.chains.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of cached principal certificates.
    pub fn cache_len(&self) -> usize {
        self.lock_cache().map.len()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Root → principal: root key id and signature, using the cache.
    fn verify_principal_signature(&self, principal: &ParsedPrincipal) -> Result<(), CertError> {
        let key = sha256(&principal.message.encode_to_vec());
        if self.lock_cache().get(&key).as_ref() == Some(&principal.info) {
            return Ok(());
        }
        let Some(root) = self.root_by_id(&principal.info.root_key_id) else {
            return Err(CertError::WrongRoot);
        };
        if !verify_signature(
            root.public_key(),
            PRINCIPAL_CONTEXT,
            &principal.message.tbs,
            principal.message.signature_algorithm,
            &principal.message.signature,
        ) {
            return Err(CertError::BadSignature { level: "principal" });
        }
        self.lock_cache().insert(key, principal.info.clone());
        Ok(())
    }

    fn check_revoked(&self, level: &'static str, id: u64) -> Result<(), CertError> {
        match &self.crl {
            Some(crl) if crl.is_revoked(id) => Err(CertError::Revoked { level, id }),
            _ => Ok(()),
        }
    }

    /// Full check of a peer's serialized handshake certificate: sizes,
    /// canonical encoding, decoding, root → principal → handshake
    /// signatures, validity (± skew), the handshake certificate's lifetime,
    /// revocation of both certificates, the identity grammar, then issuance
    /// policy. Only certificates whose signatures verified enter the chain
    /// cache, keyed by the exact (canonical) bytes.
    pub fn verify_handshake_cert(&self, cert: &[u8], now: UnixTime) -> Result<VerifiedPeer, CertError> {
        let key = sha256(cert);
        let cached = self.lock_chains().get(&key);
        let info = match cached {
            Some(info) => info,
            None => {
                let info = Arc::new(self.verify_chain_signatures(cert)?);
                self.lock_chains().insert(key, info.clone());
                info
            }
        };
        let p = &info.principal;
        p.validity.check("principal", now, self.skew)?;
        info.validity.check("handshake", now, self.skew)?;
        self.check_lifetime(&info.validity)?;
        self.check_revoked("principal", p.revocation_id)?;
        self.check_revoked("handshake", info.revocation_id)?;
        self.check_identity(&p.identity)?;
        self.policy.check(&p.issuer, p.category, &p.identity)?;
        let not_after = match (p.validity.not_after, info.validity.not_after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(VerifiedPeer {
            identity: p.identity.clone(),
            category: p.category,
            issuer: p.issuer.clone(),
            principal_revocation_id: p.revocation_id,
            handshake_revocation_id: info.revocation_id,
            root_key_id: p.root_key_id,
            not_after,
            static_public_key: info.static_public_key,
            handshake_ciphers: info.handshake_ciphers.clone(),
            record_protocols: info.record_protocols.clone(),
        })
    }

    fn check_lifetime(&self, v: &ValidityWindow) -> Result<(), CertError> {
        let Some(max_secs) = self.max_handshake_lifetime else {
            return Ok(());
        };
        let lifetime_secs = match (v.not_before, v.not_after) {
            (Some(nb), Some(na)) => Some(na.secs().saturating_sub(nb.secs())),
            _ => None,
        };
        match lifetime_secs {
            Some(l) if l <= max_secs => Ok(()),
            _ => Err(CertError::LifetimeTooLong {
                lifetime_secs,
                max_secs,
            }),
        }
    }

    fn check_identity(&self, identity: &str) -> Result<(), CertError> {
        if self.identity_grammar {
            check_identity(identity)?;
        }
        Ok(())
    }

    /// Decodes a handshake certificate and checks root → principal →
    /// handshake signatures (no time, revocation or policy checks).
    fn verify_chain_signatures(&self, cert: &[u8]) -> Result<HandshakeCertInfo, CertError> {
        let hs = ParsedHandshake::parse(cert)?;
        self.verify_principal_signature(&hs.principal)?;
        if !verify_signature(
            &hs.principal.info.public_key,
            HANDSHAKE_CONTEXT,
            &hs.message.tbs,
            hs.message.signature_algorithm,
            &hs.message.signature,
        ) {
            return Err(CertError::BadSignature { level: "handshake" });
        }
        Ok(hs.info)
    }
    /// Full check of a serialized principal certificate on its own: root key
    /// id, signature, validity (± skew), revocation, issuance policy.
    pub fn verify_principal_cert(&self, cert: &[u8], now: UnixTime) -> Result<VerifiedPrincipal, CertError> {
        let p = ParsedPrincipal::parse(cert)?;
        self.verify_principal_signature(&p)?;
        let info = p.info;
        info.validity.check("principal", now, self.skew)?;
        self.check_revoked("principal", info.revocation_id)?;
        self.check_identity(&info.identity)?;
        let allowed = self.policy.check(&info.issuer, info.category, &info.identity)?;
        Ok(VerifiedPrincipal { info, allowed })
    }

    /// Re-checks an already verified peer (for resumption, no signatures):
    /// expiry (± skew), revocation of both IDs, and issuance policy.
    pub fn recheck(&self, peer: &VerifiedPeer, now: UnixTime) -> Result<(), CertError> {
        check_expiry("peer", peer.not_after, now, self.skew)?;
        self.check_revoked("principal", peer.principal_revocation_id)?;
        self.check_revoked("handshake", peer.handshake_revocation_id)?;
        self.check_identity(&peer.identity)?;
        self.policy.check(&peer.issuer, peer.category, &peer.identity)?;
        Ok(())
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("root", &self.root)
            .field("crl", &self.crl)
            .field("clock_skew", &self.skew)
            .field("max_handshake_cert_lifetime", &self.max_handshake_lifetime)
            .field("identity_grammar", &self.identity_grammar)
            .field("cached", &self.cache_len())
            .finish_non_exhaustive()
    }
}
