//! ALTS credentials: the signing-service root key, principal certificates and
//! handshake certificates, all protobuf (`alts.v1`). The *issuer* recorded in
//! a principal certificate is whoever requested it (a CA, a scheduler), not
//! the signing service that signed it; the issuance policy
//! ([`crate::policy`]) decides which issuers may issue which categories for
//! which identities.
//!
//! Chain: [`RootKey`] → principal certificate (signed by the root key, holds an
//! Ed25519 public key) → handshake certificate (signed with the principal key,
//! embeds the principal certificate, carries the static X25519 key).
//!
//! # Signatures
//! Signed messages carry the exact serialized to-be-signed bytes in `tbs`.
//! Ed25519 signs `context || tbs`, where `context` is a fixed, NUL-terminated
//! label naming the message type (domain separation: a signature over one kind
//! of message can never be replayed as another kind):
//! - principal certificates: `b"alts.v1.PrincipalCertTbs\0"`,
//! - handshake certificates: `b"alts.v1.HandshakeCertTbs\0"`,
//! - revocation lists: `b"alts.v1.RevocationListTbs\0"`.
//!
//! Verifiers check the signature over the received bytes and only then decode
//! them; nothing is ever re-serialized to verify.
//!
//! # Limits
//! Every input is size-checked before it is decoded ([`MAX_CERT_LEN`],
//! [`MAX_ROOT_KEY_LEN`]) and every string and list is capped after decoding
//! ([`MAX_NAME_LEN`], [`MAX_PROTOCOLS`], [`MAX_PROTOCOL_NAME_LEN`]).
//!
//! # Revocation IDs
//! 64 bits: an 8-bit category byte followed by a 56-bit identifier
//! ([`revocation_id`], [`split_revocation_id`]). By convention the category
//! byte is [`Category::revocation_byte`] of the certificate's category; the
//! verifier does not enforce this (the CRL service owns the ranges).

use std::fmt;
use std::str::FromStr;

use crate::crypto::backend::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use alts_proto::alts_v1 as pb;
use prost::Message;
use zeroize::Zeroizing;

use crate::UnixTime;
use crate::crypto::{SecureRandom, StaticKeyPair, sha256};
use crate::policy::PolicyDenied;

/// Maximum size of a serialized principal or handshake certificate.
pub const MAX_CERT_LEN: usize = 16 * 1024;
/// Maximum size of a serialized [`RootKey`].
pub const MAX_ROOT_KEY_LEN: usize = 1024;
/// Maximum length in bytes of an identity, issuer or root-key name as
/// decoded (identities are further limited by [`check_identity`]).
pub const MAX_NAME_LEN: usize = 256;
/// Maximum length in bytes of an identity (see [`check_identity`]).
pub const MAX_IDENTITY_LEN: usize = 128;
/// Maximum number of entries in the handshake-cipher or record-protocol list.
pub const MAX_PROTOCOLS: usize = 16;
/// Maximum length in bytes of one handshake-cipher or record-protocol name.
pub const MAX_PROTOCOL_NAME_LEN: usize = 64;
/// Maximum size of a PKCS#8 private key document.
pub const MAX_PKCS8_LEN: usize = 1024;
/// Ed25519 public key length.
pub const ED25519_PUBLIC_KEY_LEN: usize = 32;
/// Ed25519 signature length.
pub const ED25519_SIGNATURE_LEN: usize = 64;
/// The only certificate format version this crate reads and writes.
pub const CERT_VERSION: u32 = 1;

/// Handshake ciphers put in new handshake certificates by default.
pub const DEFAULT_HANDSHAKE_CIPHERS: &[&str] = &["ALTS_HS_X25519_HKDF_SHA256"];
/// Record protocols put in new handshake certificates by default, preferred first.
pub const DEFAULT_RECORD_PROTOCOLS: &[&str] = &[
    "ALTSRP_GCM_AES128_REKEY",
    "ALTSRP_GCM_AES128",
    "ALTSRP_GMAC_AES128_REKEY",
];

pub(crate) const PRINCIPAL_CONTEXT: &[u8] = b"alts.v1.PrincipalCertTbs\0";
pub(crate) const HANDSHAKE_CONTEXT: &[u8] = b"alts.v1.HandshakeCertTbs\0";
pub(crate) const CRL_CONTEXT: &[u8] = b"alts.v1.RevocationListTbs\0";

/// A credential failed to parse, verify or pass a check. Each variant names
/// exactly one failing check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The bytes are not a well-formed message of the expected kind.
    #[error("malformed {what}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
    },
    /// An input or a field is longer than its cap.
    #[error("{what} too large: {len} > {max}")]
    TooLarge {
        /// The input or field.
        what: &'static str,
        /// Its length (bytes or entries).
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A message has a format version this crate does not support.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion {
        /// The message.
        what: &'static str,
        /// The version found.
        version: u32,
    },
    /// A key or signature uses an algorithm other than Ed25519.
    #[error("unsupported algorithm in {what}")]
    UnsupportedAlgorithm {
        /// Where the algorithm appeared.
        what: &'static str,
    },
    /// The principal certificate names a different root key than ours.
    #[error("principal certificate was signed by a different root key")]
    WrongRoot,
    /// A signature does not verify.
    #[error("bad {level} certificate signature")]
    BadSignature {
        /// `"principal"` or `"handshake"`.
        level: &'static str,
    },
    /// A certificate's validity window has not started yet (beyond the skew).
    #[error("{level} certificate not valid before {not_before}")]
    NotYetValid {
        /// `"principal"` or `"handshake"`.
        level: &'static str,
        /// Its `not_before`, seconds since the epoch.
        not_before: i64,
    },
    /// A certificate has expired (beyond the skew).
    #[error("{level} certificate expired at {not_after}")]
    Expired {
        /// `"principal"` or `"handshake"`.
        level: &'static str,
        /// Its `not_after`, seconds since the epoch.
        not_after: i64,
    },
    /// A certificate's revocation ID is in the revocation list.
    #[error("{level} certificate revoked (revocation id {id:#018x})")]
    Revoked {
        /// `"principal"` or `"handshake"`.
        level: &'static str,
        /// The revoked ID.
        id: u64,
    },
    /// The issuance policy refuses the (issuer, category, identity).
    #[error("policy: {0}")]
    Policy(#[from] PolicyDenied),
    /// A private key does not match the public key in a certificate.
    #[error("{what} does not match the certificate")]
    KeyMismatch {
        /// Which key.
        what: &'static str,
    },
    /// A private key could not be parsed (wrong type or garbage).
    #[error("bad {what}")]
    BadKey {
        /// Which key.
        what: &'static str,
    },
    /// An identity is outside the identity grammar (see [`check_identity`]).
    /// The identity itself is not repeated: it may hold control or
    /// invisible characters.
    #[error("identity outside the identity grammar: {reason}")]
    InvalidIdentity {
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A handshake certificate has no expiry, no start, or a lifetime longer
    /// than the verifier's maximum.
    #[error("handshake certificate lifetime {} exceeds the maximum of {max_secs} s", lifetime_text(*.lifetime_secs))]
    LifetimeTooLong {
        /// `not_after - not_before` in seconds; `None` when either bound is
        /// missing (unbounded).
        lifetime_secs: Option<i64>,
        /// The verifier's maximum, in seconds.
        max_secs: i64,
    },
    /// Issuance parameters are invalid.
    #[error("invalid parameter: {what}")]
    InvalidParams {
        /// What is wrong.
        what: &'static str,
    },
    /// A revocation-ID serial does not fit in 56 bits.
    #[error("revocation id serial {0:#x} does not fit in 56 bits")]
    RevocationIdOutOfRange(u64),
    /// The random source failed.
    #[error("random source failed")]
    Random,
    /// Signing failed.
    #[error("signing failed")]
    Signing,
}

/// The category of a principal: a person, a machine or a workload (run by a
/// scheduler).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// A person (handshake certificates valid about 20 h).
    Person,
    /// A machine.
    Machine,
    /// A workload (issued by a scheduler).
    Workload,
}

impl Category {
    /// All categories.
    pub const ALL: [Category; 3] = [Category::Person, Category::Machine, Category::Workload];

    /// The lowercase name (`person`, `machine`, `workload`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Person => "person",
            Category::Machine => "machine",
            Category::Workload => "workload",
        }
    }

    /// The conventional category byte of revocation IDs (1, 2, 3; the
    /// protobuf enum value).
    pub fn revocation_byte(self) -> u8 {
        match self {
            Category::Person => 1,
            Category::Machine => 2,
            Category::Workload => 3,
        }
    }

    pub(crate) fn to_proto(self) -> pb::Category {
        match self {
            Category::Person => pb::Category::Person,
            Category::Machine => pb::Category::Machine,
            Category::Workload => pb::Category::Workload,
        }
    }

    pub(crate) fn from_proto(v: i32) -> Option<Self> {
        match pb::Category::try_from(v).ok()? {
            pb::Category::Person => Some(Category::Person),
            pb::Category::Machine => Some(Category::Machine),
            pb::Category::Workload => Some(Category::Workload),
            pb::Category::Unspecified => None,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown category name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown category {0:?} (expected person, machine or workload)")]
pub struct UnknownCategory(pub String);

impl FromStr for Category {
    type Err = UnknownCategory;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "person" => Ok(Category::Person),
            "machine" => Ok(Category::Machine),
            "workload" => Ok(Category::Workload),
            other => Err(UnknownCategory(other.chars().take(MAX_NAME_LEN).collect())),
        }
    }
}

/// Largest 56-bit revocation serial.
pub const MAX_REVOCATION_SERIAL: u64 = (1 << 56) - 1;

/// Builds a revocation ID: `category_byte` in the top 8 bits, `serial`
/// (at most 56 bits) below.
pub fn revocation_id(category_byte: u8, serial: u64) -> Result<u64, CertError> {
    if serial > MAX_REVOCATION_SERIAL {
        return Err(CertError::RevocationIdOutOfRange(serial));
    }
    Ok((u64::from(category_byte) << 56) | serial)
}

/// Splits a revocation ID into its category byte and 56-bit serial.
pub fn split_revocation_id(id: u64) -> (u8, u64) {
    let [top, ..] = id.to_be_bytes();
    (top, id & MAX_REVOCATION_SERIAL)
}

/// A random revocation ID in `category`'s conventional range.
pub fn random_revocation_id(category: Category, rng: &dyn SecureRandom) -> Result<u64, CertError> {
    let mut b = [0u8; 8];
    rng.fill(&mut b).map_err(|_| CertError::Random)?;
    revocation_id(
        category.revocation_byte(),
        u64::from_be_bytes(b) & MAX_REVOCATION_SERIAL,
    )
}

/// An Ed25519 signing key (the root key or a principal key), kept as its
/// PKCS#8 document. The bytes are zeroized on drop and never printed.
pub struct SigningKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: Ed25519KeyPair,
}

// PKCS#8 v2 (RFC 8410 / RFC 5958) framing of an Ed25519 private key; the same
// fixed template ring's `generate_pkcs8` emits.
const PKCS8_V2_PREFIX: [u8; 16] = [
    0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const PKCS8_V2_MIDDLE: [u8; 5] = [0xa1, 0x23, 0x03, 0x21, 0x00];

/// Parses an unencrypted PKCS#8 Ed25519 private key with the provider
/// library. A v2 document in the layout [`SigningKey::generate`] writes
/// (ring's: the public key as a constructed `[1]` around a BIT STRING) is
/// taken apart here, and the provider builds the key pair from its seed,
/// checking the public key against it: AWS-LC's parser expects RFC 5958's
/// `[1] IMPLICIT` public key and refuses that layout, so both providers load
/// the same files this way. Any other document (v1 as written by `openssl
/// genpkey`, other layouts) goes to the provider's own parser.
fn ed25519_from_pkcs8(bytes: &[u8]) -> Option<Ed25519KeyPair> {
    let ring_v2 = bytes.strip_prefix(&PKCS8_V2_PREFIX[..]).and_then(|rest| {
        let (seed, rest) = rest.split_at_checked(32)?;
        let public = rest.strip_prefix(&PKCS8_V2_MIDDLE[..])?;
        (public.len() == ED25519_PUBLIC_KEY_LEN).then_some((seed, public))
    });
    match ring_v2 {
        Some((seed, public)) => Ed25519KeyPair::from_seed_and_public_key(seed, public).ok(),
        None => Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes).ok(),
    }
}

impl SigningKey {
    /// Generates a fresh key from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, CertError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill(seed.as_mut()).map_err(|_| CertError::Random)?;
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_ref()).map_err(|_| CertError::BadKey {
            what: "generated key",
        })?;
        let mut doc = Zeroizing::new(Vec::with_capacity(85));
        doc.extend_from_slice(&PKCS8_V2_PREFIX);
        doc.extend_from_slice(seed.as_ref());
        doc.extend_from_slice(&PKCS8_V2_MIDDLE);
        doc.extend_from_slice(pair.public_key().as_ref());
        Self::from_pkcs8(&doc)
    }

    /// Parses an unencrypted PKCS#8 Ed25519 private key (v2 with the public
    /// key, which is checked, or v1 as written by `openssl genpkey`).
    pub fn from_pkcs8(bytes: &[u8]) -> Result<Self, CertError> {
        if bytes.len() > MAX_PKCS8_LEN {
            return Err(CertError::TooLarge {
                what: "private key",
                len: bytes.len(),
                max: MAX_PKCS8_LEN,
            });
        }
        let pair = ed25519_from_pkcs8(bytes).ok_or(CertError::BadKey {
            what: "Ed25519 PKCS#8 private key",
        })?;
        Ok(Self {
            pkcs8: Zeroizing::new(bytes.to_vec()),
            pair,
        })
    }

    /// The PKCS#8 document (secret: store with mode 0600).
    pub fn pkcs8_bytes(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let pk = self.pair.public_key().as_ref();
        if pk.len() == out.len() {
            out.copy_from_slice(pk);
        }
        out
    }

    pub(crate) fn sign(&self, context: &[u8], tbs: &[u8]) -> Vec<u8> {
        let mut msg = Vec::with_capacity(context.len().saturating_add(tbs.len()));
        msg.extend_from_slice(context);
        msg.extend_from_slice(tbs);
        self.pair.sign(&msg).as_ref().to_vec()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &crate::crypto::Hex(&self.public_key()))
            .finish_non_exhaustive()
    }
}

/// Verifies an Ed25519 signature over `context || tbs`.
pub(crate) fn verify_signature(
    public_key: &[u8; 32],
    context: &[u8],
    tbs: &[u8],
    algorithm: i32,
    signature: &[u8],
) -> bool {
    if algorithm != pb::SignatureAlgorithm::Ed25519 as i32 || signature.len() != ED25519_SIGNATURE_LEN {
        return false;
    }
    let mut msg = Vec::with_capacity(context.len().saturating_add(tbs.len()));
    msg.extend_from_slice(context);
    msg.extend_from_slice(tbs);
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&msg, signature)
        .is_ok()
}

/// The signing service's verification key: the root of trust.
#[derive(Clone, PartialEq, Eq)]
pub struct RootKey {
    name: String,
    public_key: [u8; 32],
}

impl RootKey {
    /// Parses a serialized `alts.v1.RootKey`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CertError> {
        check_len("root key", bytes.len(), MAX_ROOT_KEY_LEN)?;
        let m = pb::RootKey::decode(bytes).map_err(|_| CertError::Malformed { what: "root key" })?;
        if m.algorithm != pb::SignatureAlgorithm::Ed25519 as i32 {
            return Err(CertError::UnsupportedAlgorithm { what: "root key" });
        }
        check_len("root key name", m.name.len(), MAX_NAME_LEN)?;
        let public_key = to_key(&m.public_key, "root public key")?;
        Ok(Self {
            name: m.name,
            public_key,
        })
    }

    /// Serializes as `alts.v1.RootKey`.
    pub fn to_bytes(&self) -> Vec<u8> {
        pb::RootKey {
            algorithm: pb::SignatureAlgorithm::Ed25519 as i32,
            public_key: self.public_key.to_vec(),
            name: self.name.clone(),
        }
        .encode_to_vec()
    }

    /// A root key from its name and Ed25519 public key. Names longer than
    /// [`MAX_NAME_LEN`] bytes are truncated (at a character boundary).
    pub fn from_public_key(name: &str, pk: [u8; 32]) -> Self {
        let mut end = name.len().min(MAX_NAME_LEN);
        while !name.is_char_boundary(end) {
            end = end.saturating_sub(1);
        }
        Self {
            name: name.get(..end).unwrap_or_default().to_owned(),
            public_key: pk,
        }
    }

    /// The root of a signing key.
    pub fn from_signing_key(name: &str, key: &SigningKey) -> Self {
        Self::from_public_key(name, key.public_key())
    }

    /// SHA-256 of the public key; principal certificates and revocation lists
    /// name their root by it.
    pub fn key_id(&self) -> [u8; 32] {
        sha256(&self.public_key)
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The signing service's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootKey")
            .field("name", &self.name)
            .field("public_key", &crate::crypto::Hex(&self.public_key))
            .finish()
    }
}

/// What to put in a new principal certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrincipalParams {
    /// The authenticated identity, e.g. `service-backend-prod`.
    pub identity: String,
    /// The principal's category.
    pub category: Category,
    /// Who requested the certificate (recorded; distinct from the signer).
    pub issuer: String,
    /// `(not_before, not_after)`; `None` = no expiry.
    pub validity: Option<(UnixTime, UnixTime)>,
    /// 8-bit category ‖ 56-bit identifier.
    pub revocation_id: u64,
}

/// What to put in a new handshake certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeParams {
    /// The static X25519 public key.
    pub static_public_key: [u8; 32],
    /// Supported handshake ciphers, preferred first.
    pub handshake_ciphers: Vec<String>,
    /// Supported record protocols, preferred first.
    pub record_protocols: Vec<String>,
    /// `(not_before, not_after)`; `None` = no expiry.
    pub validity: Option<(UnixTime, UnixTime)>,
    /// Its own revocation ID (inherited from the principal for people).
    pub revocation_id: u64,
}

impl HandshakeParams {
    /// Parameters with the default cipher and record-protocol lists.
    pub fn with_defaults(
        static_public_key: [u8; 32],
        validity: Option<(UnixTime, UnixTime)>,
        revocation_id: u64,
    ) -> Self {
        Self {
            static_public_key,
            handshake_ciphers: DEFAULT_HANDSHAKE_CIPHERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            record_protocols: DEFAULT_RECORD_PROTOCOLS.iter().map(|s| (*s).to_owned()).collect(),
            validity,
            revocation_id,
        }
    }
}

fn validity_to_proto(v: Option<(UnixTime, UnixTime)>) -> Result<Option<pb::Validity>, CertError> {
    match v {
        None => Ok(None),
        Some((nb, na)) => {
            if na <= nb {
                return Err(CertError::InvalidParams {
                    what: "validity: not_after must be after not_before",
                });
            }
            Ok(Some(pb::Validity {
                not_before: nb.secs(),
                not_after: na.secs(),
            }))
        }
    }
}

fn lifetime_text(lifetime: Option<i64>) -> String {
    match lifetime {
        Some(s) => format!("{s} s"),
        None => "unbounded".to_owned(),
    }
}

/// Checks an identity against the identity grammar, enforced when a
/// principal certificate is issued ([`issue_principal`]) and when a peer is
/// verified ([`crate::verify::Verifier`]):
///
/// ```text
/// identity = first *127rest
/// first    = %x61-7A / DIGIT                     ; a-z 0-9
/// rest     = first / "." / "_" / "@" / ":" / "-"
/// ```
///
/// That is 1 to [`MAX_IDENTITY_LEN`] (128) bytes of lowercase ASCII letters,
/// digits and `. _ @ : -`, starting with a letter or digit. Upper case,
/// spaces, control characters, bidirectional controls, zero-width and every
/// other non-ASCII character (look-alikes such as Cyrillic `а`) are refused,
/// so two identities that print alike are the same identity.
/// `frontend-prod`, `sa@p.iam`, `network-admin`, `spiffe:cell-a:db` pass;
/// `network-admin\u{200b}`, `Admin` and `-x` do not.
pub fn check_identity(identity: &str) -> Result<(), CertError> {
    let bytes = identity.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(CertError::Malformed { what: "identity" });
    };
    check_len("identity", bytes.len(), MAX_IDENTITY_LEN)?;
    let start = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !start(first) {
        return Err(CertError::InvalidIdentity {
            reason: "must start with a lowercase ASCII letter or a digit",
        });
    }
    if !bytes
        .iter()
        .all(|&b| start(b) || matches!(b, b'.' | b'_' | b'@' | b':' | b'-'))
    {
        return Err(CertError::InvalidIdentity {
            reason: "only lowercase ASCII letters, digits and . _ @ : - are allowed",
        });
    }
    Ok(())
}

fn check_name(what: &'static str, s: &str) -> Result<(), CertError> {
    if s.is_empty() {
        return Err(CertError::Malformed { what });
    }
    check_len(what, s.len(), MAX_NAME_LEN)
}

/// Issues a principal certificate for `principal_public_key`, signed by the
/// root key. Returns the serialized `alts.v1.PrincipalCert`. The identity
/// must follow the identity grammar ([`check_identity`]).
pub fn issue_principal(
    root: &SigningKey,
    params: &PrincipalParams,
    principal_public_key: [u8; 32],
) -> Result<Vec<u8>, CertError> {
    check_identity(&params.identity)?;
    check_name("issuer", &params.issuer)?;
    let tbs = pb::PrincipalCertTbs {
        version: CERT_VERSION,
        identity: params.identity.clone(),
        category: params.category.to_proto() as i32,
        issuer: params.issuer.clone(),
        validity: validity_to_proto(params.validity)?,
        revocation_id: params.revocation_id,
        key_algorithm: pb::SignatureAlgorithm::Ed25519 as i32,
        public_key: principal_public_key.to_vec(),
        root_key_id: sha256(&root.public_key()).to_vec(),
    }
    .encode_to_vec();
    let signature = root.sign(PRINCIPAL_CONTEXT, &tbs);
    let cert = pb::PrincipalCert {
        tbs,
        signature_algorithm: pb::SignatureAlgorithm::Ed25519 as i32,
        signature,
    }
    .encode_to_vec();
    check_len("principal certificate", cert.len(), MAX_CERT_LEN)?;
    Ok(cert)
}

/// Issues a handshake certificate signed with `principal_key`, embedding
/// `principal_cert` (serialized `alts.v1.PrincipalCert`). The principal key
/// must match the certificate's public key. Signatures of the principal
/// certificate are not checked here. Returns the serialized
/// `alts.v1.HandshakeCert`.
pub fn issue_handshake(
    principal_key: &SigningKey,
    principal_cert: &[u8],
    params: &HandshakeParams,
) -> Result<Vec<u8>, CertError> {
    let principal = ParsedPrincipal::parse(principal_cert)?;
    if principal.info.public_key != principal_key.public_key() {
        return Err(CertError::KeyMismatch {
            what: "principal key",
        });
    }
    check_protocols("handshake ciphers", &params.handshake_ciphers)?;
    check_protocols("record protocols", &params.record_protocols)?;
    let tbs = pb::HandshakeCertTbs {
        version: CERT_VERSION,
        principal: Some(principal.message),
        static_public_key: params.static_public_key.to_vec(),
        handshake_ciphers: params.handshake_ciphers.clone(),
        record_protocols: params.record_protocols.clone(),
        validity: validity_to_proto(params.validity)?,
        revocation_id: params.revocation_id,
    }
    .encode_to_vec();
    let signature = principal_key.sign(HANDSHAKE_CONTEXT, &tbs);
    let cert = pb::HandshakeCert {
        tbs,
        signature_algorithm: pb::SignatureAlgorithm::Ed25519 as i32,
        signature,
    }
    .encode_to_vec();
    check_len("handshake certificate", cert.len(), MAX_CERT_LEN)?;
    Ok(cert)
}

/// Only the canonical encoding of an outer certificate message is accepted
/// (decoding and re-encoding gives the same bytes: no unknown fields, no
/// padded varints or lengths, fields in order). Its signature covers only
/// the `tbs` bytes, so without this check one certificate would have many
/// accepted encodings, each a different key in the verifier's chain cache.
fn check_canonical<M: Message>(message: &M, bytes: &[u8], what: &'static str) -> Result<(), CertError> {
    if message.encoded_len() != bytes.len() || message.encode_to_vec() != bytes {
        return Err(CertError::Malformed { what });
    }
    Ok(())
}

pub(crate) fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), CertError> {
    if len > max {
        return Err(CertError::TooLarge { what, len, max });
    }
    Ok(())
}

fn check_protocols(what: &'static str, list: &[String]) -> Result<(), CertError> {
    if list.is_empty() {
        return Err(CertError::Malformed { what });
    }
    check_len(what, list.len(), MAX_PROTOCOLS)?;
    for p in list {
        if p.is_empty() {
            return Err(CertError::Malformed { what });
        }
        check_len(what, p.len(), MAX_PROTOCOL_NAME_LEN)?;
    }
    Ok(())
}

fn to_key(bytes: &[u8], what: &'static str) -> Result<[u8; 32], CertError> {
    bytes.try_into().map_err(|_| CertError::Malformed { what })
}

/// A validity window; `None` bounds are open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ValidityWindow {
    /// Not valid before this time.
    pub not_before: Option<UnixTime>,
    /// Not valid after this time.
    pub not_after: Option<UnixTime>,
}

impl ValidityWindow {
    fn from_proto(v: Option<&pb::Validity>) -> Self {
        let open = |s: i64| if s == 0 { None } else { Some(UnixTime(s)) };
        match v {
            None => Self::default(),
            Some(v) => Self {
                not_before: open(v.not_before),
                not_after: open(v.not_after),
            },
        }
    }

    /// Checks `now` against the window, allowing `skew` seconds either way.
    pub fn check(&self, level: &'static str, now: UnixTime, skew: i64) -> Result<(), CertError> {
        if let Some(nb) = self.not_before
            && now.plus(skew) < nb
        {
            return Err(CertError::NotYetValid {
                level,
                not_before: nb.secs(),
            });
        }
        check_expiry(level, self.not_after, now, skew)
    }
}

pub(crate) fn check_expiry(
    level: &'static str,
    not_after: Option<UnixTime>,
    now: UnixTime,
    skew: i64,
) -> Result<(), CertError> {
    if let Some(na) = not_after
        && now.plus(skew.saturating_neg()) > na
    {
        return Err(CertError::Expired {
            level,
            not_after: na.secs(),
        });
    }
    Ok(())
}

/// The decoded contents of a principal certificate (signature not checked by
/// [`PrincipalCertInfo::parse`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrincipalCertInfo {
    /// The identity.
    pub identity: String,
    /// The category.
    pub category: Category,
    /// Who requested it.
    pub issuer: String,
    /// The validity window.
    pub validity: ValidityWindow,
    /// Its revocation ID.
    pub revocation_id: u64,
    /// The Ed25519 key that signs handshake certificates.
    pub public_key: [u8; 32],
    /// SHA-256 of the root key that signed it.
    pub root_key_id: [u8; 32],
}

impl PrincipalCertInfo {
    /// Decodes a serialized principal certificate WITHOUT checking its
    /// signature (for display and policy dry-runs).
    pub fn parse(bytes: &[u8]) -> Result<Self, CertError> {
        ParsedPrincipal::parse(bytes).map(|p| p.info)
    }
}

/// A principal certificate, decoded but not verified.
pub(crate) struct ParsedPrincipal {
    pub(crate) message: pb::PrincipalCert,
    pub(crate) info: PrincipalCertInfo,
}

impl ParsedPrincipal {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, CertError> {
        check_len("principal certificate", bytes.len(), MAX_CERT_LEN)?;
        let message = pb::PrincipalCert::decode(bytes).map_err(|_| CertError::Malformed {
            what: "principal certificate",
        })?;
        check_canonical(&message, bytes, "principal certificate: non-canonical encoding")?;
        let info = Self::parse_tbs(&message)?;
        Ok(Self { message, info })
    }

    pub(crate) fn from_message(message: pb::PrincipalCert) -> Result<Self, CertError> {
        let info = Self::parse_tbs(&message)?;
        Ok(Self { message, info })
    }

    fn parse_tbs(message: &pb::PrincipalCert) -> Result<PrincipalCertInfo, CertError> {
        check_len("principal certificate", message.tbs.len(), MAX_CERT_LEN)?;
        let tbs = pb::PrincipalCertTbs::decode(message.tbs.as_slice()).map_err(|_| CertError::Malformed {
            what: "principal certificate contents",
        })?;
        if tbs.version != CERT_VERSION {
            return Err(CertError::UnsupportedVersion {
                what: "principal certificate",
                version: tbs.version,
            });
        }
        if tbs.key_algorithm != pb::SignatureAlgorithm::Ed25519 as i32 {
            return Err(CertError::UnsupportedAlgorithm {
                what: "principal public key",
            });
        }
        check_name("identity", &tbs.identity)?;
        check_name("issuer", &tbs.issuer)?;
        let category = Category::from_proto(tbs.category).ok_or(CertError::Malformed { what: "category" })?;
        Ok(PrincipalCertInfo {
            category,
            validity: ValidityWindow::from_proto(tbs.validity.as_ref()),
            revocation_id: tbs.revocation_id,
            public_key: to_key(&tbs.public_key, "principal public key")?,
            root_key_id: to_key(&tbs.root_key_id, "root key id")?,
            identity: tbs.identity,
            issuer: tbs.issuer,
        })
    }
}

/// The decoded contents of a handshake certificate (signatures not checked by
/// [`HandshakeCertInfo::parse`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeCertInfo {
    /// The embedded principal certificate.
    pub principal: PrincipalCertInfo,
    /// The static X25519 public key.
    pub static_public_key: [u8; 32],
    /// Supported handshake ciphers, preferred first.
    pub handshake_ciphers: Vec<String>,
    /// Supported record protocols, preferred first.
    pub record_protocols: Vec<String>,
    /// The validity window.
    pub validity: ValidityWindow,
    /// Its own revocation ID.
    pub revocation_id: u64,
}

impl HandshakeCertInfo {
    /// Decodes a serialized handshake certificate WITHOUT checking any
    /// signature (for display and policy dry-runs).
    pub fn parse(bytes: &[u8]) -> Result<Self, CertError> {
        ParsedHandshake::parse(bytes).map(|p| p.info)
    }
}

/// A handshake certificate, decoded but not verified.
pub(crate) struct ParsedHandshake {
    pub(crate) message: pb::HandshakeCert,
    pub(crate) principal: ParsedPrincipal,
    pub(crate) info: HandshakeCertInfo,
}

impl ParsedHandshake {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, CertError> {
        check_len("handshake certificate", bytes.len(), MAX_CERT_LEN)?;
        let message = pb::HandshakeCert::decode(bytes).map_err(|_| CertError::Malformed {
            what: "handshake certificate",
        })?;
        check_canonical(&message, bytes, "handshake certificate: non-canonical encoding")?;
        let tbs = pb::HandshakeCertTbs::decode(message.tbs.as_slice()).map_err(|_| CertError::Malformed {
            what: "handshake certificate contents",
        })?;
        if tbs.version != CERT_VERSION {
            return Err(CertError::UnsupportedVersion {
                what: "handshake certificate",
                version: tbs.version,
            });
        }
        let principal_msg = tbs.principal.ok_or(CertError::Malformed {
            what: "handshake certificate: missing principal certificate",
        })?;
        let principal = ParsedPrincipal::from_message(principal_msg)?;
        check_protocols("handshake ciphers", &tbs.handshake_ciphers)?;
        check_protocols("record protocols", &tbs.record_protocols)?;
        let info = HandshakeCertInfo {
            principal: principal.info.clone(),
            static_public_key: to_key(&tbs.static_public_key, "static public key")?,
            handshake_ciphers: tbs.handshake_ciphers,
            record_protocols: tbs.record_protocols,
            validity: ValidityWindow::from_proto(tbs.validity.as_ref()),
            revocation_id: tbs.revocation_id,
        };
        Ok(Self {
            message,
            principal,
            info,
        })
    }
}

/// Our own credentials: a handshake certificate and the matching static
/// X25519 private key. Cheap to clone; the key is never printed.
#[derive(Clone)]
pub struct LocalCredentials {
    cert: Vec<u8>,
    key: StaticKeyPair,
    info: HandshakeCertInfo,
    dh_cache: std::sync::Arc<crate::crypto::StaticDhCache>,
}

/// Default number of peers whose static-static X25519 result is kept per
/// credential (see [`LocalCredentials::with_static_dh_cache_capacity`]).
pub const DEFAULT_STATIC_DH_CACHE_CAPACITY: usize = 4096;

impl LocalCredentials {
    /// Checks that `static_key` matches the certificate's static public key.
    /// The certificate is decoded but its signatures are not verified (peers
    /// do that).
    pub fn new(handshake_cert: Vec<u8>, static_key: StaticKeyPair) -> Result<Self, CertError> {
        let info = HandshakeCertInfo::parse(&handshake_cert)?;
        if &info.static_public_key != static_key.public_key() {
            return Err(CertError::KeyMismatch {
                what: "static X25519 key",
            });
        }
        Ok(Self {
            cert: handshake_cert,
            key: static_key,
            info,
            dh_cache: std::sync::Arc::new(crate::crypto::StaticDhCache::new(
                DEFAULT_STATIC_DH_CACHE_CAPACITY,
            )),
        })
    }

    /// Keeps the static-static X25519 results of at most `capacity` peers
    /// (default [`DEFAULT_STATIC_DH_CACHE_CAPACITY`]; the oldest is evicted
    /// first); 0 disables the cache, so every full handshake computes the
    /// scalar multiplication. Starts from an empty cache that is no longer
    /// shared with clones made before this call.
    pub fn with_static_dh_cache_capacity(mut self, capacity: usize) -> Self {
        self.dh_cache = std::sync::Arc::new(crate::crypto::StaticDhCache::new(capacity));
        self
    }

    /// X25519 of our static key with a peer's *certified static* key. The
    /// result is cached per peer key (it never changes), so repeated full
    /// handshakes with the same peer certificate skip the scalar
    /// multiplication. Never pass ephemeral keys here; use
    /// [`LocalCredentials::key_pair`] for those.
    pub fn static_agree(
        &self,
        peer_static: &[u8; 32],
    ) -> Result<crate::crypto::SharedSecret, crate::crypto::CryptoError> {
        self.dh_cache.agree(&self.key, peer_static)
    }

    /// Forgets the cached static-static results (benchmarks of first
    /// contact; nothing else needs it).
    pub fn clear_static_dh_cache(&self) {
        self.dh_cache.clear();
    }

    /// Number of peers whose static-static result is cached.
    pub fn static_dh_cache_len(&self) -> usize {
        self.dh_cache.len()
    }

    /// The serialized handshake certificate (sent to peers).
    pub fn cert_bytes(&self) -> &[u8] {
        &self.cert
    }

    /// The static X25519 key pair.
    pub fn key_pair(&self) -> &StaticKeyPair {
        &self.key
    }

    /// Our identity.
    pub fn identity(&self) -> &str {
        &self.info.principal.identity
    }

    /// Our category.
    pub fn category(&self) -> Category {
        self.info.principal.category
    }

    /// Who requested our principal certificate.
    pub fn issuer(&self) -> &str {
        &self.info.principal.issuer
    }

    /// Our handshake ciphers, preferred first.
    pub fn handshake_ciphers(&self) -> &[String] {
        &self.info.handshake_ciphers
    }

    /// Our record protocols, preferred first.
    pub fn record_protocols(&self) -> &[String] {
        &self.info.record_protocols
    }

    /// Everything decoded from our certificate.
    pub fn info(&self) -> &HandshakeCertInfo {
        &self.info
    }
}

impl fmt::Debug for LocalCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCredentials")
            .field("identity", &self.identity())
            .field("category", &self.category())
            .field("issuer", &self.issuer())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DeterministicRandom;

    #[test]
    fn generated_pkcs8_round_trips_through_ring() {
        let rng = DeterministicRandom::new(b"k");
        let k = SigningKey::generate(&rng).unwrap();
        assert_eq!(k.pkcs8_bytes().len(), 85);
        // ring's strict v2 parser accepts our document (in both builds).
        ring::signature::Ed25519KeyPair::from_pkcs8(k.pkcs8_bytes()).unwrap();
        let k2 = SigningKey::from_pkcs8(k.pkcs8_bytes()).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        let seed_hex = hex::encode(&k.pkcs8_bytes()[16..48]);
        assert!(!format!("{k:?}").contains(&seed_hex));
        // A document whose public key does not match its seed is refused.
        let mut bad = k.pkcs8_bytes().to_vec();
        bad[84] ^= 1;
        assert!(SigningKey::from_pkcs8(&bad).is_err());
        // A PKCS#8 v1 document (no public key, as `openssl genpkey` writes).
        let mut v1 = vec![0x30, 0x2e, 0x02, 0x01, 0x00];
        v1.extend_from_slice(&k.pkcs8_bytes()[5..48]);
        assert_eq!(SigningKey::from_pkcs8(&v1).unwrap().public_key(), k.public_key());
    }

    #[test]
    fn revocation_ids() {
        let id = revocation_id(3, 42).unwrap();
        assert_eq!(split_revocation_id(id), (3, 42));
        assert!(revocation_id(1, 1 << 56).is_err());
        assert_eq!("workload".parse::<Category>().unwrap(), Category::Workload);
        assert!("root".parse::<Category>().is_err());
    }
}
