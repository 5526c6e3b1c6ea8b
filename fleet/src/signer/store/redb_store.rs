//! The embedded backend: one redb file, written with immediate durability
//! (every commit is fsynced before it returns). redb locks the file, so one
//! signer process owns it.
//!
//! Tables (values are JSON unless noted):
//! - `meta`: `&str → u64`: `next_serial` (the next free revocation serial,
//!   starting at 1) and `crl_issued_at`.
//! - `issuances`: revocation ID → [`IssuanceRecord`].
//! - `unaudited`: revocation ID → `()`, issuances whose audit line is not
//!   confirmed yet.
//! - `issuance_by_cert_sha256`: SHA-256 (32 bytes) → revocation ID.
//! - `allocations`: first serial → `{count, caller, allocated_at}`.
//! - `revocations`: revocation ID → [`NewRevocation`].
//! - `crl`: `"signed"` → the signed list (raw bytes), `"count"` → its size
//!   as 8 big-endian bytes.
//! - `key_rings`: `(identity, cell)` → [`StoredRing`] (holds secrets).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    CrlRecord, IssuanceRecord, NewIssuance, NewRevocation, RevokeOutcome, RingKey, SignCert, SignCrl,
    Storage, StoreError, StoredRing, next_issued_at, revocation_id_for, take_serials,
};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ISSUANCES: TableDefinition<u64, &[u8]> = TableDefinition::new("issuances");
const UNAUDITED: TableDefinition<u64, ()> = TableDefinition::new("unaudited");
const BY_SHA: TableDefinition<&[u8], u64> = TableDefinition::new("issuance_by_cert_sha256");
const ALLOCATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("allocations");
const REVOCATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("revocations");
const CRL: TableDefinition<&str, &[u8]> = TableDefinition::new("crl");
const KEY_RINGS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("key_rings");

const NEXT_SERIAL: &str = "next_serial";
const CRL_ISSUED_AT: &str = "crl_issued_at";

/// The embedded redb backend.
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
}

fn e(err: impl std::fmt::Display) -> StoreError {
    StoreError::Redb(err.to_string())
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|err| StoreError::Corrupt(err.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|err| StoreError::Corrupt(format!("{what}: {err}")))
}

impl RedbStore {
    /// Opens (or creates) the file and its tables. A file left by a crashed
    /// process is repaired by redb on open.
    pub async fn open(path: PathBuf) -> Result<Self, StoreError> {
        let p = path.clone();
        let db = tokio::task::spawn_blocking(move || -> Result<Database, StoreError> {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(e)?;
            }
            let db =
                Database::create(&p).map_err(|err| StoreError::Redb(format!("{}: {err}", p.display())))?;
            let tx = db.begin_write().map_err(e)?;
            {
                let mut meta = tx.open_table(META).map_err(e)?;
                if meta.get(NEXT_SERIAL).map_err(e)?.is_none() {
                    meta.insert(NEXT_SERIAL, 1).map_err(e)?;
                }
                tx.open_table(ISSUANCES).map_err(e)?;
                tx.open_table(UNAUDITED).map_err(e)?;
                tx.open_table(BY_SHA).map_err(e)?;
                tx.open_table(ALLOCATIONS).map_err(e)?;
                tx.open_table(REVOCATIONS).map_err(e)?;
                tx.open_table(CRL).map_err(e)?;
                tx.open_table(KEY_RINGS).map_err(e)?;
            }
            tx.commit().map_err(e)?;
            Ok(db)
        })
        .await
        .map_err(|err| StoreError::Task(err.to_string()))??;
        Ok(Self {
            db: Arc::new(db),
            path,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|err| StoreError::Task(err.to_string()))?
    }
}

#[tonic::async_trait]
impl Storage for RedbStore {
    fn describe(&self) -> String {
        format!("redb:{}", self.path.display())
    }

    fn exclusive(&self) -> bool {
        true
    }

    async fn issue(&self, new: NewIssuance, sign: SignCert) -> Result<(IssuanceRecord, Vec<u8>), StoreError> {
        self.run(move |db| {
            let tx = db.begin_write().map_err(e)?;
            let out = {
                let mut meta = tx.open_table(META).map_err(e)?;
                let serial = meta.get(NEXT_SERIAL).map_err(e)?.map_or(1, |v| v.value());
                let next = take_serials(serial, 1)?;
                meta.insert(NEXT_SERIAL, next).map_err(e)?;
                let revocation_id = revocation_id_for(new.category, serial)?;
                let cert = sign(revocation_id).map_err(StoreError::Sign)?;
                let sha = alts_core::crypto::sha256(&cert);
                let record = IssuanceRecord {
                    revocation_id,
                    serial,
                    cert_sha256: hex::encode(sha),
                    caller: new.caller,
                    identity: new.identity,
                    category: new.category,
                    not_after: new.not_after,
                    issued_at: new.issued_at,
                    audited: false,
                };
                tx.open_table(ISSUANCES)
                    .map_err(e)?
                    .insert(revocation_id, json(&record)?.as_slice())
                    .map_err(e)?;
                tx.open_table(UNAUDITED)
                    .map_err(e)?
                    .insert(revocation_id, ())
                    .map_err(e)?;
                tx.open_table(BY_SHA)
                    .map_err(e)?
                    .insert(sha.as_slice(), revocation_id)
                    .map_err(e)?;
                (record, cert)
            };
            tx.commit().map_err(e)?;
            Ok(out)
        })
        .await
    }

    async fn mark_audited(&self, revocation_id: u64) -> Result<bool, StoreError> {
        self.run(move |db| {
            let tx = db.begin_write().map_err(e)?;
            let was = {
                let was = tx
                    .open_table(UNAUDITED)
                    .map_err(e)?
                    .remove(revocation_id)
                    .map_err(e)?
                    .is_some();
                if was {
                    let mut t = tx.open_table(ISSUANCES).map_err(e)?;
                    let rec = t.get(revocation_id).map_err(e)?.map(|v| v.value().to_vec());
                    if let Some(bytes) = rec {
                        let mut r: IssuanceRecord = parse("issuance", &bytes)?;
                        r.audited = true;
                        t.insert(revocation_id, json(&r)?.as_slice()).map_err(e)?;
                    }
                }
                was
            };
            tx.commit().map_err(e)?;
            Ok(was)
        })
        .await
    }

    async fn unaudited(&self, issued_before: i64) -> Result<Vec<IssuanceRecord>, StoreError> {
        self.run(move |db| {
            let tx = db.begin_read().map_err(e)?;
            let pending = tx.open_table(UNAUDITED).map_err(e)?;
            let issuances = tx.open_table(ISSUANCES).map_err(e)?;
            let mut out = Vec::new();
            for row in pending.iter().map_err(e)? {
                let (id, _) = row.map_err(e)?;
                let id = id.value();
                if let Some(v) = issuances.get(id).map_err(e)? {
                    let r: IssuanceRecord = parse("issuance", v.value())?;
                    if r.issued_at < issued_before {
                        out.push(r);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn issuances(&self) -> Result<Vec<IssuanceRecord>, StoreError> {
        self.run(move |db| {
            let tx = db.begin_read().map_err(e)?;
            let t = tx.open_table(ISSUANCES).map_err(e)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(e)? {
                let (_, v) = row.map_err(e)?;
                out.push(parse("issuance", v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn allocate(&self, caller: &str, count: u32, now: i64) -> Result<u64, StoreError> {
        let caller = caller.to_owned();
        self.run(move |db| {
            let tx = db.begin_write().map_err(e)?;
            let first = {
                let mut meta = tx.open_table(META).map_err(e)?;
                let first = meta.get(NEXT_SERIAL).map_err(e)?.map_or(1, |v| v.value());
                let next = take_serials(first, u64::from(count))?;
                meta.insert(NEXT_SERIAL, next).map_err(e)?;
                let rec = serde_json::json!({"count": count, "caller": caller, "allocated_at": now});
                tx.open_table(ALLOCATIONS)
                    .map_err(e)?
                    .insert(first, json(&rec)?.as_slice())
                    .map_err(e)?;
                first
            };
            tx.commit().map_err(e)?;
            Ok(first)
        })
        .await
    }

    async fn find_by_cert_sha256(&self, sha256: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        let sha = *sha256;
        self.run(move |db| {
            let tx = db.begin_read().map_err(e)?;
            let t = tx.open_table(BY_SHA).map_err(e)?;
            Ok(t.get(sha.as_slice()).map_err(e)?.map(|v| v.value()))
        })
        .await
    }

    async fn revoke(
        &self,
        revocation: Option<NewRevocation>,
        now: i64,
        sign: SignCrl,
    ) -> Result<RevokeOutcome, StoreError> {
        self.run(move |db| {
            let tx = db.begin_write().map_err(e)?;
            let out = {
                let mut meta = tx.open_table(META).map_err(e)?;
                let previous = meta.get(CRL_ISSUED_AT).map_err(e)?.map(|v| v.value() as i64);
                let mut crl_table = tx.open_table(CRL).map_err(e)?;
                let mut revocations = tx.open_table(REVOCATIONS).map_err(e)?;
                let already = match &revocation {
                    Some(r) => revocations.get(r.revocation_id).map_err(e)?.is_some(),
                    None => previous.is_some(),
                };
                if already {
                    let signed = crl_table.get("signed").map_err(e)?.map(|v| v.value().to_vec());
                    let count = crl_table.get("count").map_err(e)?.map(|v| be_u64(v.value()));
                    if let (Some(issued_at), Some(signed)) = (previous, signed) {
                        return Ok(RevokeOutcome {
                            crl: CrlRecord {
                                issued_at,
                                signed,
                                count: count.unwrap_or(0),
                            },
                            already_revoked: revocation.is_some(),
                        });
                    }
                }
                if let Some(r) = &revocation {
                    revocations
                        .insert(r.revocation_id, json(r)?.as_slice())
                        .map_err(e)?;
                }
                let mut ids = Vec::new();
                for row in revocations.iter().map_err(e)? {
                    ids.push(row.map_err(e)?.0.value());
                }
                let count = ids.len() as u64;
                let issued_at = next_issued_at(previous, now);
                let signed = sign(ids, issued_at).map_err(StoreError::Sign)?;
                crl_table.insert("signed", signed.as_slice()).map_err(e)?;
                crl_table
                    .insert("count", count.to_be_bytes().as_slice())
                    .map_err(e)?;
                meta.insert(CRL_ISSUED_AT, issued_at as u64).map_err(e)?;
                RevokeOutcome {
                    crl: CrlRecord {
                        issued_at,
                        signed,
                        count,
                    },
                    already_revoked: false,
                }
            };
            tx.commit().map_err(e)?;
            Ok(out)
        })
        .await
    }

    async fn crl(&self) -> Result<Option<CrlRecord>, StoreError> {
        self.run(move |db| {
            let tx = db.begin_read().map_err(e)?;
            let meta = tx.open_table(META).map_err(e)?;
            let t = tx.open_table(CRL).map_err(e)?;
            let issued_at = meta.get(CRL_ISSUED_AT).map_err(e)?.map(|v| v.value() as i64);
            let signed = t.get("signed").map_err(e)?.map(|v| v.value().to_vec());
            let count = t.get("count").map_err(e)?.map(|v| be_u64(v.value()));
            Ok(match (issued_at, signed) {
                (Some(issued_at), Some(signed)) => Some(CrlRecord {
                    issued_at,
                    signed,
                    count: count.unwrap_or(0),
                }),
                _ => None,
            })
        })
        .await
    }

    async fn key_ring(
        &self,
        identity: &str,
        cell: &str,
        now: i64,
        rotation_secs: i64,
        fresh: RingKey,
    ) -> Result<StoredRing, StoreError> {
        let (identity, cell) = (identity.to_owned(), cell.to_owned());
        self.run(move |db| {
            let tx = db.begin_write().map_err(e)?;
            let ring = {
                let mut t = tx.open_table(KEY_RINGS).map_err(e)?;
                let existing = match t.get((identity.as_str(), cell.as_str())).map_err(e)? {
                    Some(v) => Some(StoredRing::from_json(v.value())?),
                    None => None,
                };
                let (ring, changed) = StoredRing::advance(existing, now, rotation_secs, fresh);
                if changed {
                    t.insert((identity.as_str(), cell.as_str()), ring.to_json()?.as_slice())
                        .map_err(e)?;
                }
                ring
            };
            tx.commit().map_err(e)?;
            Ok(ring)
        })
        .await
    }
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    if b.len() == 8 {
        a.copy_from_slice(b);
    }
    u64::from_be_bytes(a)
}
