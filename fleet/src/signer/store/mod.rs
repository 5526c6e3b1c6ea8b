//! The signer's state: revocation-ID counters, issuances, allocations,
//! revocations, the current signed revocation list and the resumption key
//! rings, behind the [`Storage`] trait with two backends:
//!
//! - [`RedbStore`]: an embedded, crash-safe [`redb`] file (one signer process
//!   at a time; redb locks the file).
//! - [`PostgresStore`]: a PostgreSQL database shared by several signer
//!   replicas.
//!
//! # Guarantees every backend gives
//! - A revocation serial is handed out at most once: the counter moves in the
//!   same committed transaction that records the issuance or the allocation,
//!   so a crash before the commit hands out nothing and a crash after it
//!   finds the counter already past the serial. A crash may skip serials;
//!   it never reuses one.
//! - The revocation list's `issued_at` is strictly increasing: each new list
//!   takes `max(now, previous + 1)` inside the transaction that records the
//!   revocation, and is built from the whole revocations table, so a
//!   revocation made through one replica is in the list every replica
//!   serves.
//! - A key ring of one `(identity, cell)` is created once and rotated once
//!   per period, inside a transaction, so every replica returns the same
//!   ring.

mod postgres;
mod redb_store;

use std::path::PathBuf;
use std::str::FromStr;

use alts_core::cert::Category;
use alts_core::resumption::RID_LEN;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use postgres::PostgresStore;
pub use redb_store::RedbStore;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The embedded database failed.
    #[error("redb: {0}")]
    Redb(String),
    /// The PostgreSQL database failed.
    #[error("postgres: {0}")]
    Postgres(String),
    /// The 56-bit revocation serial space is used up.
    #[error("revocation serials exhausted")]
    SerialsExhausted,
    /// Signing a certificate or a revocation list inside the transaction
    /// failed (nothing was committed).
    #[error("signing failed: {0}")]
    Sign(String),
    /// A stored record does not decode (the state was written by something
    /// else or damaged).
    #[error("corrupt state: {0}")]
    Corrupt(String),
    /// `--state` is not `redb:PATH`, a path, or a `postgres://` URL.
    #[error("invalid --state {0:?}: use redb:PATH or postgres://user@host/db")]
    BadLocation(String),
    /// A blocking task was cancelled or panicked.
    #[error("storage task failed: {0}")]
    Task(String),
}

/// Where the state lives (`--state`).
#[derive(Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// An embedded redb file.
    Redb(PathBuf),
    /// A PostgreSQL connection URL (may contain a password: never printed).
    Postgres(String),
}

impl FromStr for StateLocation {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Self::Postgres(s.to_owned()));
        }
        let path = s.strip_prefix("redb:").unwrap_or(s);
        if path.is_empty() || path.contains("://") {
            return Err(StoreError::BadLocation(redact(s)));
        }
        Ok(Self::Redb(PathBuf::from(path)))
    }
}

/// The part of a location that is safe to print (no user info).
fn redact(s: &str) -> String {
    match s.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}://{host}")
        }
        None => s.to_owned(),
    }
}

impl std::fmt::Debug for StateLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redb(p) => write!(f, "redb:{}", p.display()),
            Self::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// Opens the state at `location`, creating the tables on first use.
pub async fn open(location: &StateLocation) -> Result<std::sync::Arc<dyn Storage>, StoreError> {
    Ok(match location {
        StateLocation::Redb(path) => std::sync::Arc::new(RedbStore::open(path.clone()).await?),
        StateLocation::Postgres(url) => std::sync::Arc::new(PostgresStore::connect(url).await?),
    })
}

/// One issued principal certificate, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuanceRecord {
    /// The certificate's revocation ID (category byte ‖ serial).
    pub revocation_id: u64,
    /// The 56-bit serial taken from the counter.
    pub serial: u64,
    /// SHA-256 of the serialized certificate (hex).
    pub cert_sha256: String,
    /// The authenticated identity that asked for it (the certificate's issuer).
    pub caller: String,
    /// The certified identity.
    pub identity: String,
    /// The certified category.
    pub category: Category,
    /// Expiry (seconds since the Unix epoch).
    pub not_after: i64,
    /// When it was signed (seconds since the Unix epoch).
    pub issued_at: i64,
    /// Its audit-log line was written (fsynced). Issuances recorded but not
    /// yet audited (a crash in between) are audited at the next start.
    pub audited: bool,
}

/// What to record for a new issuance (the serial is allocated by the store).
#[derive(Clone, Debug)]
pub struct NewIssuance {
    /// The caller (issuer).
    pub caller: String,
    /// The certified identity.
    pub identity: String,
    /// The certified category.
    pub category: Category,
    /// Expiry.
    pub not_after: i64,
    /// Signing time.
    pub issued_at: i64,
}

/// Signs the certificate for a revocation ID, inside the transaction that
/// allocates the ID (an error aborts the transaction).
pub type SignCert = Box<dyn FnOnce(u64) -> Result<Vec<u8>, String> + Send>;

/// Signs a revocation list of the given IDs with the given `issued_at`,
/// inside the transaction that records the revocation.
pub type SignCrl = Box<dyn FnOnce(Vec<u64>, i64) -> Result<Vec<u8>, String> + Send>;

/// A revocation to record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRevocation {
    /// The revoked ID.
    pub revocation_id: u64,
    /// The admin who revoked it.
    pub caller: String,
    /// Why.
    pub reason: String,
    /// When.
    pub revoked_at: i64,
    /// SHA-256 of the certificate, when revoked by hash (hex).
    pub cert_sha256: Option<String>,
}

/// The signed revocation list currently in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlRecord {
    /// Its `issued_at`.
    pub issued_at: i64,
    /// The signed list (`alts.v1.RevocationList`).
    pub signed: Vec<u8>,
    /// Number of revoked IDs in it.
    pub count: u64,
}

/// The outcome of [`Storage::revoke`].
#[derive(Clone, Debug)]
pub struct RevokeOutcome {
    /// The list in force afterwards (contains the revoked ID).
    pub crl: CrlRecord,
    /// The ID was already revoked (no new list was published).
    pub already_revoked: bool,
}

/// One resumption key.
#[derive(Clone, Serialize, Deserialize)]
pub struct RingKey {
    /// The resumption identifier.
    #[serde(with = "hex_vec")]
    pub rid: Vec<u8>,
    /// The secret. In the state it is always sealed (see
    /// [`seal`](crate::signer::seal)); the store treats it as opaque bytes.
    #[serde(with = "hex_vec")]
    pub secret: Vec<u8>,
    /// When it became current.
    pub created_at: i64,
}

impl Drop for RingKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl std::fmt::Debug for RingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingKey")
            .field("rid", &hex::encode(&self.rid))
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl RingKey {
    /// A fresh key (16-byte RID, 32-byte secret, not yet sealed) from the
    /// OS random source, current from `now`.
    pub fn generate(now: i64) -> Result<Self, StoreError> {
        use alts_core::crypto::{RingRandom, SecureRandom};
        let rng = RingRandom::default();
        let mut rid = vec![0u8; RID_LEN];
        let mut secret = vec![0u8; 32];
        rng.fill(&mut rid)
            .and_then(|()| rng.fill(&mut secret))
            .map_err(|e| StoreError::Sign(e.to_string()))?;
        Ok(Self {
            rid,
            secret,
            created_at: now,
        })
    }
}

/// A resumption key ring: current key first, then the previous one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredRing {
    /// Current first.
    pub keys: Vec<RingKey>,
    /// When the ring rotates next.
    pub next_rotation_at: i64,
}

impl StoredRing {
    /// The JSON form kept in the store (holds secrets).
    pub(crate) fn to_json(&self) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        serde_json::to_vec(self)
            .map(Zeroizing::new)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    pub(crate) fn from_json(b: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(format!("key ring: {e}")))
    }

    /// The ring after a request at `now`: created with `fresh` when absent,
    /// rotated (fresh becomes current, the old current stays as previous)
    /// when its rotation time has come. The bool says whether it changed.
    pub(crate) fn advance(
        existing: Option<Self>,
        now: i64,
        rotation_secs: i64,
        mut fresh: RingKey,
    ) -> (Self, bool) {
        fresh.created_at = now;
        let rotation_secs = rotation_secs.max(1);
        match existing {
            None => (
                Self {
                    keys: vec![fresh],
                    next_rotation_at: now.saturating_add(rotation_secs),
                },
                true,
            ),
            Some(mut ring) if now >= ring.next_rotation_at || ring.keys.is_empty() => {
                ring.keys.truncate(1);
                ring.keys.insert(0, fresh);
                ring.next_rotation_at = now.saturating_add(rotation_secs);
                (ring, true)
            }
            Some(ring) => (ring, false),
        }
    }
}

/// The signer's state. Every method is one transaction.
#[tonic::async_trait]
pub trait Storage: Send + Sync {
    /// Which backend and where (no secrets).
    fn describe(&self) -> String;

    /// True when this process is the only writer (redb): every unaudited
    /// issuance found at start belongs to a crashed run of this process.
    fn exclusive(&self) -> bool;

    /// In one transaction: takes the next serial, builds the revocation ID
    /// from the category's byte, signs the certificate with `sign`, and
    /// records the issuance (not yet audited). Returns the record and the
    /// certificate.
    async fn issue(&self, new: NewIssuance, sign: SignCert) -> Result<(IssuanceRecord, Vec<u8>), StoreError>;

    /// Marks an issuance as audited. Returns false if it already was.
    async fn mark_audited(&self, revocation_id: u64) -> Result<bool, StoreError>;

    /// Issuances recorded but not audited, signed before `issued_before`.
    async fn unaudited(&self, issued_before: i64) -> Result<Vec<IssuanceRecord>, StoreError>;

    /// Every recorded issuance (for audits and tests), by revocation ID.
    async fn issuances(&self) -> Result<Vec<IssuanceRecord>, StoreError>;

    /// In one transaction: takes `count` consecutive serials and records the
    /// allocation. Returns the first.
    async fn allocate(&self, caller: &str, count: u32, now: i64) -> Result<u64, StoreError>;

    /// The revocation ID of the certificate with this SHA-256, if the signer
    /// issued it.
    async fn find_by_cert_sha256(&self, sha256: &[u8; 32]) -> Result<Option<u64>, StoreError>;

    /// In one transaction: records `revocation` (unless already revoked),
    /// and publishes a new list of every revoked ID signed by `sign` with
    /// `issued_at = max(now, previous + 1)`. Without a revocation, publishes
    /// only when no list exists yet.
    async fn revoke(
        &self,
        revocation: Option<NewRevocation>,
        now: i64,
        sign: SignCrl,
    ) -> Result<RevokeOutcome, StoreError>;

    /// The list in force, if one was published.
    async fn crl(&self) -> Result<Option<CrlRecord>, StoreError>;

    /// In one transaction: the ring of `(identity, cell)`, created or
    /// rotated (a fresh key becomes current once the rotation time has
    /// come; the old current stays as previous) with `fresh` as the new key.
    async fn key_ring(
        &self,
        identity: &str,
        cell: &str,
        now: i64,
        rotation_secs: i64,
        fresh: RingKey,
    ) -> Result<StoredRing, StoreError>;
}

/// `category byte ‖ serial` for a serial from the counter.
pub(crate) fn revocation_id_for(category: Category, serial: u64) -> Result<u64, StoreError> {
    alts_core::cert::revocation_id(category.revocation_byte(), serial)
        .map_err(|_| StoreError::SerialsExhausted)
}

/// The serials `[next, next + count)` if they fit in 56 bits; the new
/// counter value.
pub(crate) fn take_serials(next: u64, count: u64) -> Result<u64, StoreError> {
    let end = next.checked_add(count).ok_or(StoreError::SerialsExhausted)?;
    if count == 0 || next == 0 || end - 1 > alts_core::cert::MAX_REVOCATION_SERIAL {
        return Err(StoreError::SerialsExhausted);
    }
    Ok(end)
}

/// The `issued_at` of the next list: strictly after the previous one.
pub(crate) fn next_issued_at(previous: Option<i64>, now: i64) -> i64 {
    match previous {
        Some(p) if now <= p => p.saturating_add(1),
        _ => now,
    }
}

mod hex_vec {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Zeroizing::new(hex::encode(b)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        hex::decode(s.as_str()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            "redb:/x/s.redb".parse::<StateLocation>().unwrap(),
            StateLocation::Redb("/x/s.redb".into())
        );
        assert_eq!(
            "/x/s.redb".parse::<StateLocation>().unwrap(),
            StateLocation::Redb("/x/s.redb".into())
        );
        let pg = "postgres://u:secret@db:5432/alts"
            .parse::<StateLocation>()
            .unwrap();
        assert!(!format!("{pg:?}").contains("secret"));
        assert!("mysql://x".parse::<StateLocation>().is_err());
        assert!("redb:".parse::<StateLocation>().is_err());
    }

    #[test]
    fn serials_and_times() {
        assert_eq!(take_serials(1, 10).unwrap(), 11);
        assert!(take_serials(1, 0).is_err());
        assert!(take_serials(alts_core::cert::MAX_REVOCATION_SERIAL, 2).is_err());
        assert_eq!(
            take_serials(alts_core::cert::MAX_REVOCATION_SERIAL, 1).unwrap(),
            1 << 56
        );
        assert_eq!(next_issued_at(None, 5), 5);
        assert_eq!(next_issued_at(Some(5), 5), 6);
        assert_eq!(next_issued_at(Some(9), 5), 10);
        assert_eq!(next_issued_at(Some(4), 5), 5);
    }

    #[test]
    fn ring_rotation() {
        let k = |n: u8| RingKey {
            rid: vec![n; RID_LEN],
            secret: vec![n; 32],
            created_at: 0,
        };
        let (r, changed) = StoredRing::advance(None, 100, 10, k(1));
        assert!(changed);
        assert_eq!(r.next_rotation_at, 110);
        let (r, changed) = StoredRing::advance(Some(r), 105, 10, k(2));
        assert!(!changed);
        assert_eq!(r.keys.len(), 1);
        let (r, changed) = StoredRing::advance(Some(r), 110, 10, k(3));
        assert!(changed);
        assert_eq!(r.keys.iter().map(|k| k.rid[0]).collect::<Vec<_>>(), vec![3, 1]);
        let (r, _) = StoredRing::advance(Some(r), 200, 10, k(4));
        assert_eq!(r.keys.iter().map(|k| k.rid[0]).collect::<Vec<_>>(), vec![4, 3]);
        assert!(!format!("{r:?}").contains(&"04".repeat(32)));
    }
}
