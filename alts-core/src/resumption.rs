//! Session resumption: resumption keys named by RID (shared by every
//! instance of one identity, so a client can resume with another instance
//! after load balancing), sealed tickets, and the single-use stores that
//! make sure no resumption secret is ever used twice.
//!
//! Two kinds of ticket exist, named after who keeps them:
//! - **client-side** tickets are sealed by the *server* under its RID key and
//!   kept by the client, which presents one in `ClientInit` to resume with any
//!   server sharing that RID;
//! - **server-side** tickets are sealed by the *client* under its RID key and
//!   kept by the server, which presents one in `ServerInit` to a client that
//!   listed the RID in `accepted_rids`.
//!
//! A ticket holds the peer's verified identity summary and a resumption
//! secret `R`. Each side's copy of `R` leaves its store when used: the client
//! cache and the server store hand out an entry once; a server additionally
//! refuses a client-presented ticket it has seen before ([`ReplayGuard`]).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

use alts_proto::alts_v1::TicketContents;
use prost::Message;
use ring::aead;
use zeroize::Zeroizing;

use crate::UnixTime;
use crate::cert::Category;
use crate::crypto::{SecureRandom, sha256};
use crate::verify::VerifiedPeer;

/// Length of a resumption identifier.
pub const RID_LEN: usize = 16;
/// Length of a resumption secret `R`.
pub const SECRET_LEN: usize = 32;
/// Largest sealed ticket accepted (checked before any decryption).
pub const MAX_TICKET_LEN: usize = 4096;
const NONCE_LEN: usize = 12;
const TICKET_AAD: &[u8] = b"alts v1 ticket";

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
    /// Decryption failed: tampered, or sealed under another key.
    #[error("ticket does not authenticate under the RID's key")]
    Authentication,
    /// The decrypted contents are malformed.
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

    fn aad(&self) -> aead::Aad<[u8; RID_LEN + 14]> {
        let mut aad = [0u8; RID_LEN + 14];
        let (a, b) = aad.split_at_mut(RID_LEN);
        a.copy_from_slice(&self.rid);
        b.copy_from_slice(TICKET_AAD);
        aead::Aad::from(aad)
    }

    /// Seals ticket contents: `nonce(12) || ciphertext || tag(16)`.
    pub fn seal(&self, contents: &TicketContents, rng: &dyn SecureRandom) -> Result<Vec<u8>, TicketError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| TicketError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + contents.encoded_len() + 16);
        out.extend_from_slice(&nonce);
        let mut body = Zeroizing::new(contents.encode_to_vec());
        let tag = self
            .key
            .seal_in_place_separate_tag(aead::Nonce::assume_unique_for_key(nonce), self.aad(), &mut body)
            .map_err(|_| TicketError::Authentication)?;
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_ref());
        if out.len() > MAX_TICKET_LEN {
            return Err(TicketError::BadLength(out.len()));
        }
        Ok(out)
    }

    /// Opens a sealed ticket.
    pub fn open(&self, ticket: &[u8]) -> Result<TicketContents, TicketError> {
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
            .open_in_place(aead::Nonce::assume_unique_for_key(nonce), self.aad(), &mut buf)
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

    /// Seals a fresh ticket under the current key: `peer` as verified now,
    /// `local` (the sealer's identity) and the secret `R` it resumes with.
    pub(crate) fn seal_ticket(
        &self,
        peer: &VerifiedPeer,
        local: &str,
        secret: &ResumptionSecret,
        expires_at: UnixTime,
        record_protocol: &str,
        rng: &dyn SecureRandom,
    ) -> Result<alts_proto::alts_v1::ResumptionTicket, TicketError> {
        let key = self.current();
        let contents = ticket_contents(peer, local, secret, expires_at, record_protocol);
        Ok(alts_proto::alts_v1::ResumptionTicket {
            rid: key.rid().to_vec(),
            ticket: key.seal(&contents, rng)?,
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

/// Builds the plaintext of a ticket.
fn ticket_contents(
    peer: &VerifiedPeer,
    local_identity: &str,
    secret: &ResumptionSecret,
    expires_at: UnixTime,
    record_protocol: &str,
) -> TicketContents {
    TicketContents {
        version: 1,
        peer_identity: peer.identity.clone(),
        peer_category: category_code(peer.category),
        peer_issuer: peer.issuer.clone(),
        peer_principal_revocation_id: peer.principal_revocation_id,
        peer_handshake_revocation_id: peer.handshake_revocation_id,
        peer_not_after: peer.not_after.map_or(0, UnixTime::secs),
        local_identity: local_identity.to_owned(),
        resumption_secret: secret.0.to_vec(),
        expires_at: expires_at.secs(),
        record_protocol: record_protocol.to_owned(),
    }
}

fn category_code(c: Category) -> u32 {
    match c {
        Category::Person => 1,
        Category::Machine => 2,
        Category::Workload => 3,
    }
}

/// What an opened ticket says, checked for lifetime and owner.
pub(crate) struct OpenedTicket {
    pub(crate) peer: VerifiedPeer,
    pub(crate) secret: ResumptionSecret,
}

/// Checks decrypted contents: version, owner (`local_identity` must be the
/// identity of whoever now resumes with it), expiry, and the secret length.
pub(crate) fn check_contents(
    mut c: TicketContents,
    expected_owner: &str,
    now: UnixTime,
) -> Result<OpenedTicket, TicketError> {
    if c.version != 1 {
        return Err(TicketError::Malformed);
    }
    if c.local_identity != expected_owner {
        return Err(TicketError::WrongIdentity(std::mem::take(&mut c.local_identity)));
    }
    if now.secs() >= c.expires_at {
        return Err(TicketError::Expired);
    }
    let secret: [u8; SECRET_LEN] = c
        .resumption_secret
        .as_slice()
        .try_into()
        .map_err(|_| TicketError::Malformed)?;
    zeroize::Zeroize::zeroize(&mut c.resumption_secret);
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
            not_after: (c.peer_not_after != 0).then_some(UnixTime(c.peer_not_after)),
            static_public_key: [0u8; 32],
            handshake_ciphers: Vec::new(),
            record_protocols: vec![std::mem::take(&mut c.record_protocol)],
        },
        secret: ResumptionSecret(Zeroizing::new(secret)),
    })
}

/// Remembers client-presented tickets a server has accepted, so that each is
/// accepted once. Implementations shared by several servers of one RID give
/// cluster-wide single use; the in-memory one covers one process.
pub trait ReplayGuard: Send + Sync + fmt::Debug {
    /// Records `ticket_id` (valid until `expires_at`); returns `false` if it
    /// was seen before or cannot be recorded (fail closed).
    fn check_and_insert(&self, ticket_id: [u8; 32], expires_at: UnixTime, now: UnixTime) -> bool;
}

/// A bounded in-memory [`ReplayGuard`]. When full of unexpired entries it
/// refuses new tickets (the client falls back to a full handshake).
#[derive(Debug)]
pub struct InMemoryReplayGuard {
    capacity: usize,
    seen: Mutex<HashMap<[u8; 32], i64>>,
}

impl InMemoryReplayGuard {
    /// A guard remembering at most `capacity` tickets.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl ReplayGuard for InMemoryReplayGuard {
    fn check_and_insert(&self, ticket_id: [u8; 32], expires_at: UnixTime, now: UnixTime) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if seen.contains_key(&ticket_id) {
            return false;
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, exp| *exp > now.secs());
            if seen.len() >= self.capacity {
                return false;
            }
        }
        seen.insert(ticket_id, expires_at.secs());
        true
    }
}

/// The identifier a replay guard records for a ticket.
pub(crate) fn ticket_id(ticket: &[u8]) -> [u8; 32] {
    sha256(ticket)
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
}

/// A bounded cache of client-side tickets, keyed by a caller-chosen session
/// key (e.g. the target identity or authority). `take` removes the ticket:
/// each is offered once.
#[derive(Debug)]
pub struct ClientSessionCache {
    per_key: usize,
    max_keys: usize,
    map: Mutex<HashMap<String, VecDeque<ClientTicket>>>,
}

impl ClientSessionCache {
    /// A cache of at most `max_keys` keys with `per_key` tickets each. When
    /// either is 0 the cache keeps nothing (every connection runs a full
    /// handshake unless the server presents a ticket).
    pub fn new(max_keys: usize, per_key: usize) -> Self {
        Self {
            per_key,
            max_keys,
            map: Mutex::new(HashMap::new()),
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
    /// changed); the secrets inside are zeroized as they drop.
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
    /// The client as verified when the ticket was issued.
    pub peer: VerifiedPeer,
    /// When the ticket stops being useful.
    pub expires_at: UnixTime,
}

/// A bounded store of server-side tickets keyed by the client's RID. `take`
/// removes the ticket: each secret is used once.
#[derive(Debug)]
pub struct ServerTicketStore {
    per_rid: usize,
    max_rids: usize,
    map: Mutex<HashMap<Vec<u8>, VecDeque<StoredServerTicket>>>,
}

impl ServerTicketStore {
    /// A store of at most `max_rids` RIDs with `per_rid` tickets each. When
    /// either is 0 the store keeps nothing.
    pub fn new(max_rids: usize, per_rid: usize) -> Self {
        Self {
            per_rid,
            max_rids,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Stores a ticket under the client's RID.
    pub fn put(&self, rid: &[u8], ticket: StoredServerTicket) {
        if self.max_rids == 0 || self.per_rid == 0 {
            return;
        }
        let Ok(mut map) = self.map.lock() else { return };
        if !map.contains_key(rid) && map.len() >= self.max_rids {
            let Some(victim) = map.keys().next().cloned() else {
                return;
            };
            map.remove(&victim);
        }
        let q = map.entry(rid.to_vec()).or_default();
        while q.len() >= self.per_rid {
            q.pop_front();
        }
        q.push_back(ticket);
    }

    /// Removes and returns an unexpired ticket for one of `rids`.
    pub fn take(&self, rids: &[Vec<u8>], now: UnixTime) -> Option<(Vec<u8>, StoredServerTicket)> {
        let mut map = self.map.lock().ok()?;
        for rid in rids {
            if let Some(q) = map.get_mut(rid) {
                while let Some(t) = q.pop_back() {
                    if t.expires_at > now {
                        return Some((rid.clone(), t));
                    }
                }
            }
        }
        None
    }
}

impl ServerTicketStore {
    /// Number of tickets held, over all RIDs.
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

    /// Forgets every ticket.
    pub fn clear(&self) {
        if let Ok(mut m) = self.map.lock() {
            m.clear();
        }
    }
}

impl Default for ServerTicketStore {
    fn default() -> Self {
        Self::new(4096, 4)
    }
}
