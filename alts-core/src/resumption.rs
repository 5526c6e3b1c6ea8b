//! Session resumption: resumption keys named by RID (shared by every
//! instance of one identity, so a client can resume with another instance
//! after load balancing), sealed tickets, and the single-use stores that
//! make sure no resumption secret is ever used twice.
//!
//! Two kinds of ticket exist ([`TicketKind`]), named after who keeps them:
//! - **client-side** tickets are sealed by the *server* under its RID key and
//!   kept by the client, which presents one in `ClientInit` to resume with any
//!   server sharing that RID;
//! - **server-side** tickets are sealed by the *client* under its RID key and
//!   kept by the server ([`ServerTicketStore`], filed under the client's
//!   verified identity and RID), which presents one in `ServerInit` to a
//!   client whose verified certificate names that identity and that listed
//!   the RID in `accepted_rids`.
//!
//! The kind is part of the AEAD associated data, so a ticket of one kind
//! never opens as the other. A ticket holds the peer's verified identity
//! summary, a resumption secret `R`, and the trust it rests on
//! ([`ChainTrust`]: the root key that verified the peer's chain and when the
//! last full handshake did so). Resumption is refused (the handshake falls
//! back to a full one) once the root key changed or the chain verification
//! is older than the maximum chain age; a ticket never outlives the peer
//! certificate's expiry.
//!
//! Each side's copy of `R` leaves its store when used: the client cache hands
//! out an entry once; the server store lends one out ([`TicketLease`]) and
//! forgets it only when the handshake that presented it completes; a server
//! additionally refuses a client-presented ticket it has accepted before
//! ([`ReplayGuard`], keyed by the ticket's random ID).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::crypto::backend::aead;
use alts_proto::alts_v1::TicketContents;
use prost::Message;
use zeroize::{Zeroize, Zeroizing};

use crate::UnixTime;
use crate::cert::{Category, CertError};
use crate::crypto::{SecureRandom, sha256};
use crate::verify::{VerifiedPeer, Verifier};

/// Length of a resumption identifier.
pub const RID_LEN: usize = 16;
/// Length of a resumption secret `R`.
pub const SECRET_LEN: usize = 32;
/// Largest sealed ticket accepted (checked before any decryption).
pub const MAX_TICKET_LEN: usize = 4096;
/// The ticket format version sealed and accepted. Version 1 tickets (sealed
/// before the ticket kind and the chain trust were recorded) do not
/// authenticate under the version 2 associated data and are refused: the
/// handshake falls back to a full one.
pub const TICKET_VERSION: u32 = 2;
/// Length of the random ID inside every ticket.
pub const TICKET_ID_LEN: usize = 16;
/// Default maximum age of the full handshake a resumption rests on: 24 hours.
pub const DEFAULT_MAX_CHAIN_AGE_SECS: i64 = 24 * 3600;
/// Width of one [`InMemoryReplayGuard`] bucket, in seconds of ticket expiry.
pub const REPLAY_BUCKET_SECS: i64 = 60;
/// A server does not present a stored ticket this close to its expiry, so a
/// client whose clock runs up to this much ahead does not find it expired.
pub const PRESENT_MARGIN_SECS: i64 = 60;
const NONCE_LEN: usize = 12;
const TICKET_AAD_V1: &[u8] = b"alts v1 ticket";
const TICKET_AAD: &[u8] = b"alts v2 ticket";
/// Length of the current format's associated data (`rid || label || kind`).
const AAD_LEN: usize = RID_LEN + TICKET_AAD.len() + 1;
const REPLAY_ID_LABEL: &[u8] = b"alts v2 ticket id";

/// Why a ticket could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// No key with this RID is held.
    #[error("no resumption key for this RID")]
    UnknownRid,
    /// The ticket is longer than [`MAX_TICKET_LEN`] or too short to be one.
    #[error("ticket has a bad length ({0} bytes)")]
    BadLength(usize),
    /// Decryption failed: tampered, sealed under another key, of the other
    /// [`TicketKind`], or of an older format version.
    #[error("ticket does not authenticate under the RID's key")]
    Authentication,
    /// The decrypted contents are malformed (or of another format version).
    #[error("ticket contents are malformed")]
    Malformed,
    /// The ticket's lifetime is over.
    #[error("ticket expired")]
    Expired,
    /// The ticket was already used.
    #[error("ticket was already used (replay)")]
    Replayed,
    /// The ticket was sealed for another identity.
    #[error("ticket belongs to identity {0:?}, not ours")]
    WrongIdentity(String),
    /// The random source failed.
    #[error("random source failed")]
    Random,
    /// The peer's chain was verified under a root key we no longer trust.
    #[error("ticket rests on a root key we no longer trust")]
    RootChanged,
    /// The full handshake the ticket rests on is older than the maximum
    /// chain age.
    #[error("the chain verification behind the ticket is too old (verified at {verified_at})")]
    ChainTooOld {
        /// When the peer's chain was verified, seconds since the epoch.
        verified_at: i64,
    },
    /// The peer recorded in the ticket no longer passes the checks a full
    /// handshake would run (expiry, revocation, issuance policy).
    #[error("peer in the ticket is no longer accepted: {0}")]
    PeerNotAccepted(CertError),
}

/// Which kind of ticket: who sealed it and who presents it. Part of the
/// associated data, so a ticket of one kind never opens as the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TicketKind {
    /// Sealed by a server, kept by the client and presented in `ClientInit`.
    ClientTicket,
    /// Sealed by a client, kept by the server and presented in `ServerInit`.
    ServerTicket,
}

impl TicketKind {
    fn aad_byte(self) -> u8 {
        match self {
            Self::ClientTicket => 1,
            Self::ServerTicket => 2,
        }
    }
}

/// The trust a resumable session rests on: the root key that verified the
/// peer's certificate chain and when the last full handshake verified it.
/// Resumed handshakes carry it forward unchanged, so a chain of resumptions
/// never extends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainTrust {
    /// SHA-256 of the root key that verified the chain ([`crate::cert::RootKey::key_id`]).
    pub root_key_id: [u8; 32],
    /// When the full handshake verified the chain.
    pub verified_at: UnixTime,
}

impl ChainTrust {
    /// The trust of `peer`'s chain, verified at `now` (a full handshake):
    /// the root that signed it.
    pub fn of_peer(peer: &VerifiedPeer, now: UnixTime) -> Self {
        Self {
            root_key_id: peer.root_key_id,
            verified_at: now,
        }
    }

    /// The trust of a chain `verifier` verified at `now` under its primary
    /// root (see [`ChainTrust::of_peer`] for the root that actually signed).
    pub fn verified_now(verifier: &Verifier, now: UnixTime) -> Self {
        Self {
            root_key_id: verifier.root().key_id(),
            verified_at: now,
        }
    }

    /// The last moment a resumption may rest on this trust.
    pub fn deadline(&self, max_chain_age_secs: i64) -> UnixTime {
        self.verified_at.plus(max_chain_age_secs.max(0))
    }

    /// Checks that a resumption may still rest on this trust: the chain was
    /// verified under the root `verifier` trusts now, less than
    /// `max_chain_age_secs` ago.
    pub fn check(
        &self,
        verifier: &Verifier,
        max_chain_age_secs: i64,
        now: UnixTime,
    ) -> Result<(), TicketError> {
        if !verifier.trusts_root(&self.root_key_id) {
            return Err(TicketError::RootChanged);
        }
        if now >= self.deadline(max_chain_age_secs) {
            return Err(TicketError::ChainTooOld {
                verified_at: self.verified_at.secs(),
            });
        }
        Ok(())
    }
}

/// A symmetric resumption key, named by its RID. Shared by all workloads of
/// one identity in one cell. The key is zeroized on drop and never printed.
pub struct ResumptionKey {
    rid: [u8; RID_LEN],
    key: aead::LessSafeKey,
}

impl ResumptionKey {
    /// A key from its RID and 32 secret bytes (AES-256-GCM).
    pub fn new(rid: [u8; RID_LEN], secret: &[u8; 32]) -> Self {
        // AES-256 with a 32-byte key cannot fail to construct.
        let unbound = match aead::UnboundKey::new(&aead::AES_256_GCM, secret) {
            Ok(k) => k,
            Err(_) => unreachable_key(),
        };
        Self {
            rid,
            key: aead::LessSafeKey::new(unbound),
        }
    }

    /// A fresh random RID and key.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, TicketError> {
        let mut rid = [0u8; RID_LEN];
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill(&mut rid).map_err(|_| TicketError::Random)?;
        rng.fill(secret.as_mut()).map_err(|_| TicketError::Random)?;
        Ok(Self::new(rid, &secret))
    }

    /// The key's name.
    pub fn rid(&self) -> &[u8; RID_LEN] {
        &self.rid
    }

    /// Associated data of the current format: `rid || "alts v2 ticket" || kind`.
    fn aad(&self, kind: TicketKind) -> [u8; AAD_LEN] {
        let mut aad = [0u8; AAD_LEN];
        let (rid, rest) = aad.split_at_mut(RID_LEN);
        rid.copy_from_slice(&self.rid);
        let (label, last) = rest.split_at_mut(TICKET_AAD.len());
        label.copy_from_slice(TICKET_AAD);
        last.fill(kind.aad_byte());
        aad
    }

    /// Associated data of format version 1: `rid || "alts v1 ticket"`.
    fn aad_v1(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(RID_LEN + TICKET_AAD_V1.len());
        aad.extend_from_slice(&self.rid);
        aad.extend_from_slice(TICKET_AAD_V1);
        aad
    }

    /// Seals ticket contents of `kind`: `nonce(12) || ciphertext || tag(16)`,
    /// associated data `rid || "alts v2 ticket" || kind`.
    pub fn seal_as(
        &self,
        kind: TicketKind,
        contents: &TicketContents,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, TicketError> {
        self.seal_with(&self.aad(kind), contents, rng)
    }

    /// Opens a sealed ticket of `kind`; a ticket of the other kind, of
    /// format version 1 or under another key does not authenticate.
    pub fn open_as(&self, kind: TicketKind, ticket: &[u8]) -> Result<TicketContents, TicketError> {
        self.open_with(&self.aad(kind), ticket)
    }

    /// Seals ticket contents with the version 1 associated data (no kind).
    #[deprecated(
        note = "the handshake only accepts tickets sealed with their kind; use `ResumptionKey::seal_as`"
    )]
    pub fn seal(&self, contents: &TicketContents, rng: &dyn SecureRandom) -> Result<Vec<u8>, TicketError> {
        self.seal_with(&self.aad_v1(), contents, rng)
    }

    /// Opens a ticket sealed with the version 1 associated data (no kind).
    #[deprecated(
        note = "the handshake only accepts tickets sealed with their kind; use `ResumptionKey::open_as`"
    )]
    pub fn open(&self, ticket: &[u8]) -> Result<TicketContents, TicketError> {
        self.open_with(&self.aad_v1(), ticket)
    }

    fn seal_with(
        &self,
        aad: &[u8],
        contents: &TicketContents,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, TicketError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| TicketError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + contents.encoded_len() + 16);
        out.extend_from_slice(&nonce);
        let mut body = Zeroizing::new(contents.encode_to_vec());
        let tag = self
            .key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                &mut body,
            )
            .map_err(|_| TicketError::Authentication)?;
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_ref());
        if out.len() > MAX_TICKET_LEN {
            return Err(TicketError::BadLength(out.len()));
        }
        Ok(out)
    }

    fn open_with(&self, aad: &[u8], ticket: &[u8]) -> Result<TicketContents, TicketError> {
        if ticket.len() > MAX_TICKET_LEN || ticket.len() < NONCE_LEN + 16 {
            return Err(TicketError::BadLength(ticket.len()));
        }
        let (nonce, sealed) = ticket.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| TicketError::BadLength(ticket.len()))?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| TicketError::Authentication)?;
        TicketContents::decode(&plain[..]).map_err(|_| TicketError::Malformed)
    }
}

#[cold]
fn unreachable_key() -> ! {
    // ring only refuses AES keys of the wrong length; ours is fixed at 32.
    #[allow(clippy::panic)]
    {
        panic!("AES-256 key of 32 bytes refused")
    }
}

impl fmt::Debug for ResumptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumptionKey")
            .field("rid", &crate::crypto::Hex(&self.rid))
            .finish_non_exhaustive()
    }
}

/// The resumption keys a party holds: the current one seals, all of them open
/// (so a key rotation does not invalidate tickets sealed just before it).
#[derive(Debug)]
pub struct ResumptionKeys {
    keys: Vec<ResumptionKey>,
}

/// What goes into a ticket a handshake issues.
pub(crate) struct TicketParams<'a> {
    pub(crate) kind: TicketKind,
    /// The peer as verified (or as resumed).
    pub(crate) peer: &'a VerifiedPeer,
    /// The sealer's own identity.
    pub(crate) local: &'a str,
    pub(crate) secret: &'a ResumptionSecret,
    pub(crate) trust: &'a ChainTrust,
    pub(crate) expires_at: UnixTime,
    pub(crate) record_protocol: &'a str,
}

impl ResumptionKeys {
    /// The current key first, then older ones still accepted.
    pub fn new(current: ResumptionKey, previous: Vec<ResumptionKey>) -> Self {
        let mut keys = vec![current];
        keys.extend(previous);
        Self { keys }
    }

    /// One fresh random key (RID and secret) from `rng`, with no previous
    /// keys: enough for a single process. Replicas of one identity that must
    /// resume each other's tickets share keys instead.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, TicketError> {
        Ok(Self::new(ResumptionKey::generate(rng)?, Vec::new()))
    }

    /// The key that seals new tickets.
    pub fn current(&self) -> &ResumptionKey {
        // `keys` always holds `current` (see `new`).
        match self.keys.first() {
            Some(k) => k,
            None => unreachable_key(),
        }
    }

    /// Finds a key by RID.
    pub fn find(&self, rid: &[u8]) -> Option<&ResumptionKey> {
        self.keys.iter().find(|k| k.rid[..] == *rid)
    }

    /// Seals a fresh ticket under the current key, with the random ID and
    /// AEAD nonce in `random` (drawn by the handshake with its other random
    /// bytes). The contents are encoded straight into the output buffer and
    /// sealed in place: one allocation, no copies of the peer's strings or
    /// of the secret.
    pub(crate) fn seal_ticket(
        &self,
        p: &TicketParams<'_>,
        random: &TicketRandom,
    ) -> Result<alts_proto::alts_v1::ResumptionTicket, TicketError> {
        let key = self.current();
        let body_len = contents_len(p);
        let mut out = Vec::with_capacity(NONCE_LEN + body_len + aead::AES_256_GCM.tag_len());
        out.extend_from_slice(&random.nonce);
        encode_contents(p, &random.id, &mut out);
        let sealed = match out.get_mut(NONCE_LEN..) {
            Some(body) => key
                .key
                .seal_in_place_separate_tag(
                    aead::Nonce::assume_unique_for_key(random.nonce),
                    aead::Aad::from(&key.aad(p.kind)),
                    body,
                )
                .map_err(|_| TicketError::Authentication),
            None => Err(TicketError::Malformed),
        };
        let tag = match sealed {
            Ok(tag) => tag,
            Err(e) => {
                // The buffer still holds the plaintext secret.
                out.zeroize();
                return Err(e);
            }
        };
        out.extend_from_slice(tag.as_ref());
        if out.len() > MAX_TICKET_LEN {
            return Err(TicketError::BadLength(out.len()));
        }
        Ok(alts_proto::alts_v1::ResumptionTicket {
            rid: key.rid().to_vec(),
            ticket: out,
        })
    }

    /// All RIDs held.
    pub fn rids(&self) -> impl Iterator<Item = &[u8; RID_LEN]> {
        self.keys.iter().map(|k| &k.rid)
    }
}

/// A resumption secret `R`: zeroized on drop, never printed.
#[derive(Clone)]
pub struct ResumptionSecret(pub(crate) Zeroizing<[u8; SECRET_LEN]>);

impl ResumptionSecret {
    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl fmt::Debug for ResumptionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumptionSecret(..)")
    }
}

/// The random bytes one sealed ticket needs: its random ID and the AEAD
/// nonce. Public values (the nonce is sent in the clear, the ID only inside
/// the sealed ticket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TicketRandom {
    /// The ticket's random ID (replay detection).
    pub(crate) id: [u8; TICKET_ID_LEN],
    /// The AES-GCM nonce.
    pub(crate) nonce: [u8; NONCE_LEN],
}

/// Bytes of random input one sealed ticket needs ([`TicketRandom`]).
pub(crate) const TICKET_RANDOM_LEN: usize = TICKET_ID_LEN + NONCE_LEN;

impl TicketRandom {
    /// Splits `bytes` into the ID and the nonce.
    pub(crate) fn from_bytes(bytes: &[u8; TICKET_RANDOM_LEN]) -> Self {
        let mut id = [0u8; TICKET_ID_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        let (a, b) = bytes.split_at(TICKET_ID_LEN);
        id.copy_from_slice(a);
        nonce.copy_from_slice(b);
        Self { id, nonce }
    }
}

/// Protobuf wire types used by [`TicketContents`].
const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;

fn varint_len(v: u64) -> usize {
    // 7 bits per byte, at least one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One field of the ticket plaintext, in the encoding prost gives
/// [`TicketContents`] (proto3: fields equal to their default are omitted).
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

impl Field<'_> {
    fn is_default(&self) -> bool {
        match self {
            Self::Varint(v) | Self::Fixed64(v) => *v == 0,
            Self::Bytes(b) => b.is_empty(),
        }
    }

    fn len(&self, tag: u64) -> usize {
        if self.is_default() {
            return 0;
        }
        varint_len(tag << 3)
            + match self {
                Self::Varint(v) => varint_len(*v),
                Self::Fixed64(_) => 8,
                Self::Bytes(b) => varint_len(b.len() as u64) + b.len(),
            }
    }

    fn put(&self, tag: u64, out: &mut Vec<u8>) {
        if self.is_default() {
            return;
        }
        match self {
            Self::Varint(v) => {
                put_varint(tag << 3 | WIRE_VARINT, out);
                put_varint(*v, out);
            }
            Self::Fixed64(v) => {
                put_varint(tag << 3 | WIRE_FIXED64, out);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Self::Bytes(b) => {
                put_varint(tag << 3 | WIRE_LEN, out);
                put_varint(b.len() as u64, out);
                out.extend_from_slice(b);
            }
        }
    }
}

/// The fields of a ticket's plaintext ([`TicketContents`]) in tag order,
/// borrowed from the handshake's state.
fn contents_fields<'a>(p: &TicketParams<'a>, id: &'a [u8; TICKET_ID_LEN]) -> [Field<'a>; 14] {
    let peer = p.peer;
    // int64 fields are encoded as the two's complement u64, as prost does.
    [
        Field::Varint(u64::from(TICKET_VERSION)),
        Field::Bytes(peer.identity.as_bytes()),
        Field::Varint(u64::from(category_code(peer.category))),
        Field::Bytes(peer.issuer.as_bytes()),
        Field::Fixed64(peer.principal_revocation_id),
        Field::Fixed64(peer.handshake_revocation_id),
        Field::Varint(peer.not_after.map_or(0, UnixTime::secs) as u64),
        Field::Bytes(p.local.as_bytes()),
        Field::Bytes(p.secret.0.as_slice()),
        Field::Varint(p.expires_at.secs() as u64),
        Field::Bytes(p.record_protocol.as_bytes()),
        Field::Bytes(&p.trust.root_key_id),
        Field::Varint(p.trust.verified_at.secs() as u64),
        Field::Bytes(id),
    ]
}

/// Length of the encoded ticket plaintext.
fn contents_len(p: &TicketParams<'_>) -> usize {
    let id = [0xffu8; TICKET_ID_LEN];
    (1u64..)
        .zip(contents_fields(p, &id).iter())
        .map(|(tag, f)| f.len(tag))
        .sum()
}

/// Appends the ticket plaintext to `out`: the same bytes as encoding the
/// equivalent [`TicketContents`] with prost, without building it.
fn encode_contents(p: &TicketParams<'_>, id: &[u8; TICKET_ID_LEN], out: &mut Vec<u8>) {
    for (tag, f) in (1u64..).zip(contents_fields(p, id).iter()) {
        f.put(tag, out);
    }
}

/// Builds the plaintext of a ticket as a message (the caller zeroizes its
/// secret). The handshake encodes the same fields directly
/// ([`encode_contents`]); this is the reference it is tested against.
#[cfg(test)]
fn ticket_contents(p: &TicketParams<'_>, id: [u8; TICKET_ID_LEN]) -> TicketContents {
    let peer = p.peer;
    TicketContents {
        version: TICKET_VERSION,
        peer_identity: peer.identity.clone(),
        peer_category: category_code(peer.category),
        peer_issuer: peer.issuer.clone(),
        peer_principal_revocation_id: peer.principal_revocation_id,
        peer_handshake_revocation_id: peer.handshake_revocation_id,
        peer_not_after: peer.not_after.map_or(0, UnixTime::secs),
        local_identity: p.local.to_owned(),
        resumption_secret: p.secret.0.to_vec(),
        expires_at: p.expires_at.secs(),
        record_protocol: p.record_protocol.to_owned(),
        root_key_id: p.trust.root_key_id.to_vec(),
        chain_verified_at: p.trust.verified_at.secs(),
        ticket_id: id.to_vec(),
    }
}

fn category_code(c: Category) -> u32 {
    match c {
        Category::Person => 1,
        Category::Machine => 2,
        Category::Workload => 3,
    }
}

/// What an opened ticket says, checked for version, lifetime and owner.
pub(crate) struct OpenedTicket {
    pub(crate) peer: VerifiedPeer,
    pub(crate) secret: ResumptionSecret,
    pub(crate) trust: ChainTrust,
    pub(crate) id: [u8; TICKET_ID_LEN],
    pub(crate) expires_at: UnixTime,
}

impl OpenedTicket {
    /// What a [`ReplayGuard`] records for this ticket: derived from its
    /// random ID only, so it does not change when the key that sealed the
    /// ticket moves from current to previous.
    pub(crate) fn replay_id(&self) -> [u8; 32] {
        let mut input = [0u8; REPLAY_ID_LABEL.len() + TICKET_ID_LEN];
        let (label, id) = input.split_at_mut(REPLAY_ID_LABEL.len());
        label.copy_from_slice(REPLAY_ID_LABEL);
        id.copy_from_slice(&self.id);
        sha256(&input)
    }
}

/// Checks decrypted contents: version, owner (`local_identity` must be the
/// identity of whoever now resumes with it), expiry, and the field lengths.
/// The secret is zeroized whatever the outcome.
pub(crate) fn check_contents(
    mut c: TicketContents,
    expected_owner: &str,
    now: UnixTime,
) -> Result<OpenedTicket, TicketError> {
    let raw_secret = Zeroizing::new(std::mem::take(&mut c.resumption_secret));
    if c.version != TICKET_VERSION {
        return Err(TicketError::Malformed);
    }
    if c.local_identity != expected_owner {
        return Err(TicketError::WrongIdentity(std::mem::take(&mut c.local_identity)));
    }
    if now.secs() >= c.expires_at {
        return Err(TicketError::Expired);
    }
    let secret: [u8; SECRET_LEN] = raw_secret
        .as_slice()
        .try_into()
        .map_err(|_| TicketError::Malformed)?;
    let secret = ResumptionSecret(Zeroizing::new(secret));
    let root_key_id: [u8; 32] = c
        .root_key_id
        .as_slice()
        .try_into()
        .map_err(|_| TicketError::Malformed)?;
    let id: [u8; TICKET_ID_LEN] = c
        .ticket_id
        .as_slice()
        .try_into()
        .map_err(|_| TicketError::Malformed)?;
    let category = match c.peer_category {
        1 => Category::Person,
        2 => Category::Machine,
        3 => Category::Workload,
        _ => return Err(TicketError::Malformed),
    };
    Ok(OpenedTicket {
        peer: VerifiedPeer {
            identity: std::mem::take(&mut c.peer_identity),
            category,
            issuer: std::mem::take(&mut c.peer_issuer),
            principal_revocation_id: c.peer_principal_revocation_id,
            handshake_revocation_id: c.peer_handshake_revocation_id,
            root_key_id,
            not_after: (c.peer_not_after != 0).then_some(UnixTime(c.peer_not_after)),
            static_public_key: [0u8; 32],
            handshake_ciphers: Vec::new(),
            record_protocols: vec![std::mem::take(&mut c.record_protocol)],
        },
        secret,
        trust: ChainTrust {
            root_key_id,
            verified_at: UnixTime(c.chain_verified_at),
        },
        id,
        expires_at: UnixTime(c.expires_at),
    })
}

/// Remembers client-presented tickets a server has accepted, so that each is
/// accepted once. Implementations shared by several servers of one RID give
/// cluster-wide single use; the in-memory one covers one process.
pub trait ReplayGuard: Send + Sync + fmt::Debug {
    /// Records `ticket_id` (valid until `expires_at`); returns `false` if it
    /// was seen before or cannot be recorded (fail closed).
    ///
    /// The handshake passes an ID derived from the random ID sealed inside
    /// the ticket (not from the key or the sealed bytes, so a key rotation
    /// does not change it) and the ticket's own expiry: an entry needs to
    /// live no longer than that, since an expired ticket is refused anyway.
    fn check_and_insert(&self, ticket_id: [u8; 32], expires_at: UnixTime, now: UnixTime) -> bool;
}

/// A bounded in-memory [`ReplayGuard`], bucketed by ticket expiry.
///
/// Entries are filed in buckets of [`REPLAY_BUCKET_SECS`] by the ticket's own
/// expiry (a ticket always lands in the same bucket, so a lookup touches one
/// bucket) and a bucket is dropped whole once every ticket in it has expired.
/// Two bounds keep memory fixed without letting a flood refuse everyone:
/// - a bucket holds at most `per_bucket` entries; once full, new tickets
///   expiring in that same bucket are refused (those clients run a full
///   handshake), while tickets of every other bucket are still accepted;
/// - the guard holds at most `max_entries` entries; when full it drops its
///   oldest bucket (the tickets closest to expiry) and from then on refuses
///   every ticket expiring within that dropped bucket or earlier (it can no
///   longer tell whether they were used). Freshly issued tickets expire last,
///   so they keep resuming.
///
/// Every operation is a constant number of map operations under one lock,
/// plus the amortized cost of dropping buckets.
#[derive(Debug)]
pub struct InMemoryReplayGuard {
    max_entries: usize,
    per_bucket: usize,
    state: Mutex<GuardState>,
}

#[derive(Debug, Default)]
struct GuardState {
    /// Bucket index (expiry / REPLAY_BUCKET_SECS) → ticket IDs.
    buckets: BTreeMap<i64, HashSet<[u8; 32]>>,
    len: usize,
    /// Tickets expiring before this (seconds) are refused: their bucket was
    /// dropped to make room while they could still be valid.
    floor: i64,
}

impl GuardState {
    fn drop_first(&mut self) -> Option<i64> {
        let (bucket, ids) = self.buckets.pop_first()?;
        self.len = self.len.saturating_sub(ids.len());
        Some(bucket)
    }
}

impl InMemoryReplayGuard {
    /// A guard remembering at most `capacity` tickets, at most a sixteenth
    /// of them (and at least one) per bucket. A capacity of 0 refuses every
    /// client-presented ticket (single use cannot be checked).
    pub fn new(capacity: usize) -> Self {
        Self::with_limits(capacity, (capacity / 16).max(1))
    }

    /// A guard remembering at most `max_entries` tickets, at most
    /// `per_bucket` of them expiring within the same [`REPLAY_BUCKET_SECS`].
    pub fn with_limits(max_entries: usize, per_bucket: usize) -> Self {
        Self {
            max_entries,
            per_bucket: per_bucket.min(max_entries).max(1),
            state: Mutex::new(GuardState::default()),
        }
    }

    /// Number of tickets remembered.
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.len).unwrap_or(0)
    }

    /// True when no ticket is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of buckets held.
    pub fn bucket_count(&self) -> usize {
        self.state.lock().map(|s| s.buckets.len()).unwrap_or(0)
    }

    /// Forgets every ticket that has expired by `now`.
    pub fn purge_expired(&self, now: UnixTime) {
        if let Ok(mut s) = self.state.lock() {
            Self::purge(&mut s, now);
        }
    }

    fn purge(s: &mut GuardState, now: UnixTime) {
        // Bucket b holds expiries in [b * W, (b + 1) * W): all expired once
        // (b + 1) * W <= now.
        while let Some((&b, _)) = s.buckets.first_key_value() {
            if b.saturating_add(1).saturating_mul(REPLAY_BUCKET_SECS) > now.secs() {
                break;
            }
            s.drop_first();
        }
    }
}

impl ReplayGuard for InMemoryReplayGuard {
    fn check_and_insert(&self, ticket_id: [u8; 32], expires_at: UnixTime, now: UnixTime) -> bool {
        if expires_at <= now || self.max_entries == 0 {
            return false;
        }
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        Self::purge(&mut s, now);
        if expires_at.secs() < s.floor {
            return false;
        }
        let bucket = expires_at.secs().div_euclid(REPLAY_BUCKET_SECS);
        if let Some(ids) = s.buckets.get(&bucket)
            && (ids.contains(&ticket_id) || ids.len() >= self.per_bucket)
        {
            return false;
        }
        while s.len >= self.max_entries {
            let Some(dropped) = s.drop_first() else { break };
            s.floor = s
                .floor
                .max(dropped.saturating_add(1).saturating_mul(REPLAY_BUCKET_SECS));
            if dropped >= bucket {
                // This ticket's own bucket went: it falls under the floor.
                return false;
            }
        }
        if s.buckets.entry(bucket).or_default().insert(ticket_id) {
            s.len += 1;
        }
        true
    }
}

/// A ticket the client keeps: the server-sealed ticket, the secret inside it,
/// and the server identity it was issued with.
#[derive(Clone, Debug)]
pub struct ClientTicket {
    /// RID of the server key that sealed the ticket.
    pub rid: Vec<u8>,
    /// The sealed ticket.
    pub ticket: Vec<u8>,
    /// The resumption secret inside it.
    pub secret: ResumptionSecret,
    /// The server as verified when the ticket was issued.
    pub peer: VerifiedPeer,
    /// When the ticket stops being useful.
    pub expires_at: UnixTime,
    /// The client's trust in the server's chain (root key, last full
    /// handshake); the client offers the ticket only while it still holds.
    pub trust: ChainTrust,
}

/// Most session keys for which server-side tickets can be suspended at once.
const MAX_SUSPENDED: usize = 4096;

/// A bounded cache of client-side tickets, keyed by a caller-chosen session
/// key (e.g. the target identity or authority). `take` removes the ticket:
/// each is offered once.
///
/// It also remembers, per session key, until when the client lists no RIDs
/// (asks for no server-side ticket): set after a server presented a ticket
/// this client could not use, so later connections do not meet it again.
#[derive(Debug)]
pub struct ClientSessionCache {
    per_key: usize,
    max_keys: usize,
    map: Mutex<HashMap<String, VecDeque<ClientTicket>>>,
    suspended: Mutex<HashMap<String, UnixTime>>,
}

impl ClientSessionCache {
    /// A cache of at most `max_keys` keys with `per_key` tickets each. When
    /// either is 0 the cache keeps no ticket (every connection runs a full
    /// handshake unless the server presents a ticket).
    pub fn new(max_keys: usize, per_key: usize) -> Self {
        Self {
            per_key,
            max_keys,
            map: Mutex::new(HashMap::new()),
            suspended: Mutex::new(HashMap::new()),
        }
    }

    /// Stores a ticket (the oldest one for the key goes when full).
    pub fn put(&self, key: &str, ticket: ClientTicket) {
        if self.max_keys == 0 || self.per_key == 0 {
            return;
        }
        let Ok(mut map) = self.map.lock() else { return };
        if !map.contains_key(key) && map.len() >= self.max_keys {
            let Some(victim) = map.keys().next().cloned() else {
                return;
            };
            map.remove(&victim);
        }
        let q = map.entry(key.to_owned()).or_default();
        while q.len() >= self.per_key {
            q.pop_front();
        }
        q.push_back(ticket);
    }

    /// Removes and returns the newest unexpired ticket for `key`.
    pub fn take(&self, key: &str, now: UnixTime) -> Option<ClientTicket> {
        let mut map = self.map.lock().ok()?;
        let q = map.get_mut(key)?;
        while let Some(t) = q.pop_back() {
            if t.expires_at > now {
                return Some(t);
            }
        }
        None
    }

    /// Forgets every ticket held for `key`.
    pub fn forget(&self, key: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(key);
        }
    }

    /// Lists no RIDs (asks for no server-side ticket) in connections under
    /// `key` until `until`. Kept even when the cache keeps no tickets; at
    /// most 4096 keys are suspended at once (expired marks go first, then the
    /// one ending soonest).
    pub fn suspend_server_tickets(&self, key: &str, until: UnixTime) {
        let Ok(mut m) = self.suspended.lock() else { return };
        if !m.contains_key(key) && m.len() >= MAX_SUSPENDED {
            let soonest = m.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
            if let Some(k) = soonest {
                m.remove(&k);
            }
        }
        let e = m.entry(key.to_owned()).or_insert(until);
        *e = (*e).max(until);
    }

    /// True while connections under `key` ask for no server-side ticket.
    pub fn server_tickets_suspended(&self, key: &str, now: UnixTime) -> bool {
        let Ok(mut m) = self.suspended.lock() else {
            return true;
        };
        match m.get(key) {
            Some(until) if *until > now => true,
            Some(_) => {
                m.remove(key);
                false
            }
            None => false,
        }
    }

    /// Number of tickets held for `key` (see [`ClientSessionCache::total_len`]
    /// for all keys).
    pub fn len(&self, key: &str) -> usize {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.get(key).map(VecDeque::len))
            .unwrap_or(0)
    }

    /// Number of tickets held, over all keys.
    pub fn total_len(&self) -> usize {
        self.map
            .lock()
            .map(|m| m.values().map(VecDeque::len).sum())
            .unwrap_or(0)
    }

    /// True when no ticket is held.
    pub fn is_empty(&self) -> bool {
        self.total_len() == 0
    }

    /// Forgets every ticket (e.g. after the server's identity or keys
    /// changed); the secrets inside are zeroized as they drop. Suspensions of
    /// server-side tickets stay.
    pub fn clear(&self) {
        if let Ok(mut m) = self.map.lock() {
            m.clear();
        }
    }
}

impl Default for ClientSessionCache {
    fn default() -> Self {
        Self::new(1024, 4)
    }
}

/// A server-side ticket as the server keeps it.
#[derive(Clone, Debug)]
pub struct StoredServerTicket {
    /// The sealed ticket (opaque to the server).
    pub ticket: Vec<u8>,
    /// The resumption secret.
    pub secret: ResumptionSecret,
    /// The client as verified when the ticket was issued: the store files
    /// the ticket under this identity.
    pub peer: VerifiedPeer,
    /// When the ticket stops being useful.
    pub expires_at: UnixTime,
    /// The server's trust in the client's chain (root key, last full
    /// handshake); the server presents the ticket only while it still holds.
    pub trust: ChainTrust,
}

struct StoreEntry {
    rid: [u8; RID_LEN],
    /// Insertion order (restored entries keep theirs).
    seq: u64,
    ticket: StoredServerTicket,
}

#[derive(Default)]
struct StoreState {
    /// Depositing (verified) identity → its tickets, oldest first.
    by_identity: HashMap<String, VecDeque<StoreEntry>>,
    len: usize,
    next_seq: u64,
}

/// Default bound on all tickets a [`ServerTicketStore`] holds.
pub const DEFAULT_STORE_MAX_TICKETS: usize = 16 * 1024;
/// Default bound on the tickets one client identity has in a [`ServerTicketStore`].
pub const DEFAULT_STORE_PER_IDENTITY: usize = 1024;

/// A bounded store of server-side tickets, filed under the depositing
/// client's verified identity and the RID the ticket was sealed under.
///
/// A ticket is presented only to a client whose verified certificate names
/// the identity it was filed under, and only for a RID that client listed:
/// a client of another identity can neither receive another identity's
/// tickets nor plant one for it. [`ServerTicketStore::lease`] lends a ticket
/// out; it returns to the store unless the handshake that presented it
/// completes ([`TicketLease::commit`]). Each identity holds at most
/// `per_identity` tickets (its oldest goes first); the store holds at most
/// `max_tickets` (the oldest ticket of the identity holding the most goes
/// first).
pub struct ServerTicketStore {
    max_tickets: usize,
    per_identity: usize,
    state: Mutex<StoreState>,
}

impl ServerTicketStore {
    /// A store of at most `max_rids * per_rid` tickets, `per_rid` per client
    /// identity.
    #[deprecated(note = "tickets are filed by client identity and RID; use `ServerTicketStore::with_limits`")]
    pub fn new(max_rids: usize, per_rid: usize) -> Self {
        Self::with_limits(max_rids.saturating_mul(per_rid), per_rid)
    }

    /// A store of at most `max_tickets` tickets, at most `per_identity` of
    /// them deposited by one client identity. When either is 0 the store
    /// keeps nothing.
    pub fn with_limits(max_tickets: usize, per_identity: usize) -> Self {
        Self {
            max_tickets,
            per_identity,
            state: Mutex::new(StoreState::default()),
        }
    }

    /// Stores a ticket the client `ticket.peer` deposited under `rid`.
    /// Tickets whose RID is not [`RID_LEN`] bytes are not kept.
    pub fn put(&self, rid: &[u8], ticket: StoredServerTicket) {
        let Ok(rid) = <[u8; RID_LEN]>::try_from(rid) else {
            return;
        };
        let Ok(mut s) = self.state.lock() else { return };
        let seq = s.next_seq;
        s.next_seq = s.next_seq.wrapping_add(1);
        self.insert(&mut s, StoreEntry { rid, seq, ticket });
    }

    /// Inserts `entry` in order of `seq`, then enforces both bounds.
    fn insert(&self, s: &mut StoreState, entry: StoreEntry) {
        if self.max_tickets == 0 || self.per_identity == 0 {
            return;
        }
        let q = s
            .by_identity
            .entry(entry.ticket.peer.identity.clone())
            .or_default();
        let at = q.partition_point(|e| e.seq < entry.seq);
        q.insert(at, entry);
        let mut removed = 0;
        while q.len() > self.per_identity {
            q.pop_front();
            removed += 1;
        }
        s.len = s.len.saturating_add(1).saturating_sub(removed);
        while s.len > self.max_tickets {
            let Some(largest) = s
                .by_identity
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            let Some(q) = s.by_identity.get_mut(&largest) else {
                break;
            };
            q.pop_front();
            if q.is_empty() {
                s.by_identity.remove(&largest);
            }
            s.len = s.len.saturating_sub(1);
        }
    }

    /// Lends out the newest ticket filed under `identity` for one of `rids`
    /// that is not within [`PRESENT_MARGIN_SECS`] of expiry (expired tickets
    /// met on the way are dropped). `identity` must be the client's verified
    /// identity. The ticket returns to the store when the lease drops
    /// without [`TicketLease::commit`].
    pub fn lease(self: &Arc<Self>, identity: &str, rids: &[Vec<u8>], now: UnixTime) -> Option<TicketLease> {
        let mut s = self.state.lock().ok()?;
        let q = s.by_identity.get_mut(identity)?;
        let mut found = None;
        let mut expired = 0;
        let mut i = q.len();
        while i > 0 {
            i -= 1;
            let Some(e) = q.get(i) else { break };
            if e.ticket.expires_at <= now {
                q.remove(i);
                expired += 1;
                continue;
            }
            if e.ticket.expires_at <= now.plus(PRESENT_MARGIN_SECS) {
                continue;
            }
            if rids.iter().any(|r| r[..] == e.rid[..]) {
                found = q.remove(i);
                break;
            }
        }
        if q.is_empty() {
            s.by_identity.remove(identity);
        }
        s.len = s.len.saturating_sub(expired + usize::from(found.is_some()));
        let entry = found?;
        Some(TicketLease {
            store: Arc::clone(self),
            rid: entry.rid,
            seq: entry.seq,
            ticket: entry.ticket,
            committed: false,
        })
    }

    /// Removes and returns an unexpired ticket for one of `rids`, whoever
    /// deposited it.
    #[deprecated(
        note = "hands out any identity's ticket; use `ServerTicketStore::lease` with the client's verified identity"
    )]
    pub fn take(&self, rids: &[Vec<u8>], now: UnixTime) -> Option<(Vec<u8>, StoredServerTicket)> {
        let mut s = self.state.lock().ok()?;
        let mut best: Option<(String, usize, u64)> = None;
        for (id, q) in &s.by_identity {
            for (i, e) in q.iter().enumerate() {
                let newer = best.as_ref().is_none_or(|b| e.seq > b.2);
                if newer && e.ticket.expires_at > now && rids.iter().any(|r| r[..] == e.rid[..]) {
                    best = Some((id.clone(), i, e.seq));
                }
            }
        }
        let (id, i, _) = best?;
        let q = s.by_identity.get_mut(&id)?;
        let e = q.remove(i)?;
        if q.is_empty() {
            s.by_identity.remove(&id);
        }
        s.len = s.len.saturating_sub(1);
        Some((e.rid.to_vec(), e.ticket))
    }

    /// Number of tickets held, over all identities.
    pub fn total_len(&self) -> usize {
        self.state.lock().map(|s| s.len).unwrap_or(0)
    }

    /// Number of tickets filed under `identity`.
    pub fn identity_len(&self, identity: &str) -> usize {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.by_identity.get(identity).map(VecDeque::len))
            .unwrap_or(0)
    }

    /// True when no ticket is held.
    pub fn is_empty(&self) -> bool {
        self.total_len() == 0
    }

    /// Forgets every ticket.
    pub fn clear(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.by_identity.clear();
            s.len = 0;
        }
    }
}

impl fmt::Debug for ServerTicketStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTicketStore")
            .field("max_tickets", &self.max_tickets)
            .field("per_identity", &self.per_identity)
            .field("len", &self.total_len())
            .finish_non_exhaustive()
    }
}

impl Default for ServerTicketStore {
    fn default() -> Self {
        Self::with_limits(DEFAULT_STORE_MAX_TICKETS, DEFAULT_STORE_PER_IDENTITY)
    }
}

/// A server-side ticket lent out by [`ServerTicketStore::lease`] while a
/// handshake presents it. Dropped without [`TicketLease::commit`] (the
/// handshake failed or the connection died before a valid ClientFinished),
/// it goes back to the store in its old place, so a peer that cannot finish
/// the handshake cannot use up another client's tickets.
pub struct TicketLease {
    store: Arc<ServerTicketStore>,
    rid: [u8; RID_LEN],
    seq: u64,
    ticket: StoredServerTicket,
    committed: bool,
}

impl TicketLease {
    /// The RID the ticket was sealed under.
    pub fn rid(&self) -> &[u8; RID_LEN] {
        &self.rid
    }

    /// The ticket.
    pub fn ticket(&self) -> &StoredServerTicket {
        &self.ticket
    }

    /// Keeps the ticket out of the store for good: it was used (a valid
    /// ClientFinished arrived) or can no longer be used. Its secret is
    /// zeroized.
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for TicketLease {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Ok(mut s) = self.store.state.lock() {
            let entry = StoreEntry {
                rid: self.rid,
                seq: self.seq,
                ticket: self.ticket.clone(),
            };
            self.store.insert(&mut s, entry);
        }
    }
}

impl fmt::Debug for TicketLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketLease")
            .field("rid", &crate::crypto::Hex(&self.rid))
            .field("identity", &self.ticket.peer.identity)
            .field("committed", &self.committed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn peer(not_after: Option<UnixTime>, revocation_ids: (u64, u64)) -> VerifiedPeer {
        VerifiedPeer {
            identity: "backend-prod".to_owned(),
            category: Category::Workload,
            issuer: "scheduler".to_owned(),
            principal_revocation_id: revocation_ids.0,
            handshake_revocation_id: revocation_ids.1,
            root_key_id: [7u8; 32],
            not_after,
            static_public_key: [0u8; 32],
            handshake_ciphers: Vec::new(),
            record_protocols: Vec::new(),
        }
    }

    /// The direct encoding gives exactly prost's bytes, including omitted
    /// zero fields, negative times and long varints.
    #[test]
    fn direct_ticket_encoding_matches_prost() {
        let secret = ResumptionSecret(Zeroizing::new([9u8; SECRET_LEN]));
        let cases = [
            (
                Some(UnixTime(1_767_225_600)),
                (2u64 << 56 | 5, 2u64 << 56 | 6),
                1_767_232_800,
                1_767_225_600,
                "ALTSRP_GCM_AES128_REKEY",
                "frontend-prod",
            ),
            (None, (0, 0), 0, 0, "", ""),
            (Some(UnixTime(-5)), (u64::MAX, 1), -1, i64::MIN, "x", "a"),
            (
                Some(UnixTime(i64::MAX)),
                (1, u64::MAX),
                i64::MAX,
                127,
                "ALTSRP_GCM_AES128",
                "b",
            ),
        ];
        for (not_after, ids, expires, verified, record_protocol, local) in cases {
            let peer = peer(not_after, ids);
            let trust = ChainTrust {
                root_key_id: [3u8; 32],
                verified_at: UnixTime(verified),
            };
            for kind in [TicketKind::ClientTicket, TicketKind::ServerTicket] {
                let p = TicketParams {
                    kind,
                    peer: &peer,
                    local,
                    secret: &secret,
                    trust: &trust,
                    expires_at: UnixTime(expires),
                    record_protocol,
                };
                let id = [0x80u8; TICKET_ID_LEN];
                let want = ticket_contents(&p, id).encode_to_vec();
                let mut got = Vec::new();
                encode_contents(&p, &id, &mut got);
                assert_eq!(got, want);
                assert_eq!(contents_len(&p), want.len());
            }
        }
    }

    #[test]
    fn sealed_ticket_opens_as_its_kind_only() {
        let keys = ResumptionKeys::new(ResumptionKey::new([1u8; RID_LEN], &[2u8; 32]), Vec::new());
        let secret = ResumptionSecret(Zeroizing::new([9u8; SECRET_LEN]));
        let peer = peer(Some(UnixTime(2_000_000_000)), (1, 2));
        let trust = ChainTrust {
            root_key_id: [7u8; 32],
            verified_at: UnixTime(1_767_225_600),
        };
        let p = TicketParams {
            kind: TicketKind::ServerTicket,
            peer: &peer,
            local: "frontend-prod",
            secret: &secret,
            trust: &trust,
            expires_at: UnixTime(1_767_232_800),
            record_protocol: "ALTSRP_GCM_AES128_REKEY",
        };
        let random = TicketRandom::from_bytes(&[5u8; TICKET_RANDOM_LEN]);
        let t = keys.seal_ticket(&p, &random).unwrap();
        assert_eq!(t.rid, [1u8; RID_LEN]);
        assert_eq!(t.ticket[..NONCE_LEN], random.nonce);
        let key = keys.find(&t.rid).unwrap();
        let opened = key.open_as(TicketKind::ServerTicket, &t.ticket).unwrap();
        assert_eq!(opened, ticket_contents(&p, random.id));
        assert_eq!(
            key.open_as(TicketKind::ClientTicket, &t.ticket),
            Err(TicketError::Authentication)
        );
    }
}
