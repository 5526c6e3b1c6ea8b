//! The PostgreSQL backend, for several signer replicas serving one fleet.
//!
//! Schema (created on first connect, under an advisory lock so replicas
//! starting together do not race; 64-bit revocation IDs and serials are
//! stored bit-for-bit in `BIGINT`):
//!
//! ```sql
//! CREATE TABLE alts_signer_counters (name TEXT PRIMARY KEY, next BIGINT NOT NULL);
//! -- one row: ('revocation_serial', next free serial, starting at 1)
//! CREATE TABLE alts_signer_issuances (
//!     revocation_id BIGINT PRIMARY KEY, serial BIGINT NOT NULL UNIQUE,
//!     cert_sha256 BYTEA NOT NULL UNIQUE, caller TEXT NOT NULL, identity TEXT NOT NULL,
//!     category TEXT NOT NULL, not_after BIGINT NOT NULL, issued_at BIGINT NOT NULL,
//!     audited BOOLEAN NOT NULL DEFAULT FALSE);
//! CREATE TABLE alts_signer_allocations (
//!     first_serial BIGINT PRIMARY KEY, count BIGINT NOT NULL, caller TEXT NOT NULL,
//!     allocated_at BIGINT NOT NULL);
//! CREATE TABLE alts_signer_revocations (
//!     revocation_id BIGINT PRIMARY KEY, caller TEXT NOT NULL, reason TEXT NOT NULL,
//!     revoked_at BIGINT NOT NULL, cert_sha256 BYTEA);
//! CREATE TABLE alts_signer_crl (
//!     id SMALLINT PRIMARY KEY CHECK (id = 1), issued_at BIGINT NOT NULL,
//!     signed BYTEA NOT NULL, count BIGINT NOT NULL);
//! -- one row; issued_at 0 until the first list is published
//! CREATE TABLE alts_signer_key_rings (
//!     identity TEXT NOT NULL, cell TEXT NOT NULL, ring BYTEA NOT NULL,
//!     PRIMARY KEY (identity, cell));
//! ```
//!
//! Serials come from `UPDATE alts_signer_counters SET next = next + n ...
//! RETURNING`, inside the transaction that records the issuance or the
//! allocation: the row lock serializes replicas, and a rolled-back
//! transaction gives its serials back only because nobody saw them. The
//! revocation list row is locked (`FOR UPDATE`) while a revocation is
//! recorded and the new list signed, so `issued_at` increases across
//! replicas.
//!
//! The connection does not use TLS: run the database on the same host or a
//! trusted network link. A URL asking for `sslmode=require` fails to connect.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::{
    CrlRecord, IssuanceRecord, NewIssuance, NewRevocation, RevokeOutcome, RingKey, SignCert, SignCrl,
    Storage, StoreError, StoredRing, next_issued_at, revocation_id_for, take_serials,
};

const SCHEMA: &str = "
BEGIN;
SELECT pg_advisory_xact_lock(7140220331);
CREATE TABLE IF NOT EXISTS alts_signer_counters (name TEXT PRIMARY KEY, next BIGINT NOT NULL);
INSERT INTO alts_signer_counters (name, next) VALUES ('revocation_serial', 1) ON CONFLICT (name) DO NOTHING;
CREATE TABLE IF NOT EXISTS alts_signer_issuances (
    revocation_id BIGINT PRIMARY KEY, serial BIGINT NOT NULL UNIQUE,
    cert_sha256 BYTEA NOT NULL UNIQUE, caller TEXT NOT NULL, identity TEXT NOT NULL,
    category TEXT NOT NULL, not_after BIGINT NOT NULL, issued_at BIGINT NOT NULL,
    audited BOOLEAN NOT NULL DEFAULT FALSE);
CREATE INDEX IF NOT EXISTS alts_signer_issuances_unaudited
    ON alts_signer_issuances (issued_at) WHERE NOT audited;
CREATE TABLE IF NOT EXISTS alts_signer_allocations (
    first_serial BIGINT PRIMARY KEY, count BIGINT NOT NULL, caller TEXT NOT NULL,
    allocated_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS alts_signer_revocations (
    revocation_id BIGINT PRIMARY KEY, caller TEXT NOT NULL, reason TEXT NOT NULL,
    revoked_at BIGINT NOT NULL, cert_sha256 BYTEA);
CREATE TABLE IF NOT EXISTS alts_signer_crl (
    id SMALLINT PRIMARY KEY CHECK (id = 1), issued_at BIGINT NOT NULL,
    signed BYTEA NOT NULL, count BIGINT NOT NULL);
INSERT INTO alts_signer_crl (id, issued_at, signed, count) VALUES (1, 0, ''::bytea, 0)
    ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS alts_signer_key_rings (
    identity TEXT NOT NULL, cell TEXT NOT NULL, ring BYTEA NOT NULL,
    PRIMARY KEY (identity, cell));
COMMIT;
";

/// The PostgreSQL backend (a connection pool).
pub struct PostgresStore {
    pool: Pool,
    describe: String,
}

fn e(err: impl std::fmt::Display) -> StoreError {
    StoreError::Postgres(err.to_string())
}

/// Errors from tokio-postgres with the server's message when there is one.
fn pg(err: tokio_postgres::Error) -> StoreError {
    match err.as_db_error() {
        Some(db) => StoreError::Postgres(format!("{}: {}", db.code().code(), db.message())),
        None => StoreError::Postgres(err.to_string()),
    }
}

// Revocation IDs and serials are u64; BIGINT holds their bits.
fn to_db(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn from_db(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

fn record(row: &tokio_postgres::Row) -> Result<IssuanceRecord, StoreError> {
    let category: String = row.try_get("category").map_err(pg)?;
    let sha: Vec<u8> = row.try_get("cert_sha256").map_err(pg)?;
    Ok(IssuanceRecord {
        revocation_id: from_db(row.try_get("revocation_id").map_err(pg)?),
        serial: from_db(row.try_get("serial").map_err(pg)?),
        cert_sha256: hex::encode(sha),
        caller: row.try_get("caller").map_err(pg)?,
        identity: row.try_get("identity").map_err(pg)?,
        category: category
            .parse()
            .map_err(|err: alts_core::cert::UnknownCategory| StoreError::Corrupt(err.to_string()))?,
        not_after: row.try_get("not_after").map_err(pg)?,
        issued_at: row.try_get("issued_at").map_err(pg)?,
        audited: row.try_get("audited").map_err(pg)?,
    })
}

impl PostgresStore {
    /// Connects (a pool of up to 16 connections) and creates the schema if
    /// missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|_| StoreError::BadLocation(super::redact(url)))?;
        let describe = format!(
            "postgres (hosts {:?}, database {:?})",
            config.get_hosts(),
            config.get_dbname().unwrap_or_default()
        );
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(16).build().map_err(e)?;
        let client = pool.get().await.map_err(e)?;
        client.batch_execute(SCHEMA).await.map_err(pg)?;
        drop(client);
        Ok(Self { pool, describe })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(e)
    }
}

#[tonic::async_trait]
impl Storage for PostgresStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn exclusive(&self) -> bool {
        false
    }

    async fn issue(&self, new: NewIssuance, sign: SignCert) -> Result<(IssuanceRecord, Vec<u8>), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let row = tx
            .query_one(
                "UPDATE alts_signer_counters SET next = next + 1 WHERE name = 'revocation_serial' \
                 RETURNING next - 1",
                &[],
            )
            .await
            .map_err(pg)?;
        let serial = from_db(row.try_get(0).map_err(pg)?);
        take_serials(serial, 1)?;
        let revocation_id = revocation_id_for(new.category, serial)?;
        let cert = sign(revocation_id).map_err(StoreError::Sign)?;
        let sha = alts_core::crypto::sha256(&cert);
        tx.execute(
            "INSERT INTO alts_signer_issuances (revocation_id, serial, cert_sha256, caller, identity, \
             category, not_after, issued_at, audited) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, FALSE)",
            &[
                &to_db(revocation_id),
                &to_db(serial),
                &sha.as_slice(),
                &new.caller,
                &new.identity,
                &new.category.as_str(),
                &new.not_after,
                &new.issued_at,
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok((
            IssuanceRecord {
                revocation_id,
                serial,
                cert_sha256: hex::encode(sha),
                caller: new.caller,
                identity: new.identity,
                category: new.category,
                not_after: new.not_after,
                issued_at: new.issued_at,
                audited: false,
            },
            cert,
        ))
    }

    async fn mark_audited(&self, revocation_id: u64) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE alts_signer_issuances SET audited = TRUE WHERE revocation_id = $1 AND NOT audited",
                &[&to_db(revocation_id)],
            )
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn unaudited(&self, issued_before: i64) -> Result<Vec<IssuanceRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM alts_signer_issuances WHERE NOT audited AND issued_at < $1 \
                 ORDER BY revocation_id",
                &[&issued_before],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(record).collect()
    }

    async fn issuances(&self) -> Result<Vec<IssuanceRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT * FROM alts_signer_issuances ORDER BY revocation_id", &[])
            .await
            .map_err(pg)?;
        rows.iter().map(record).collect()
    }

    async fn allocate(&self, caller: &str, count: u32, now: i64) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let n = i64::from(count);
        let row = tx
            .query_one(
                "UPDATE alts_signer_counters SET next = next + $1 WHERE name = 'revocation_serial' \
                 RETURNING next - $1",
                &[&n],
            )
            .await
            .map_err(pg)?;
        let first = from_db(row.try_get(0).map_err(pg)?);
        take_serials(first, u64::from(count))?;
        tx.execute(
            "INSERT INTO alts_signer_allocations (first_serial, count, caller, allocated_at) \
             VALUES ($1, $2, $3, $4)",
            &[&to_db(first), &n, &caller, &now],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(first)
    }

    async fn find_by_cert_sha256(&self, sha256: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT revocation_id FROM alts_signer_issuances WHERE cert_sha256 = $1",
                &[&sha256.as_slice()],
            )
            .await
            .map_err(pg)?;
        row.map(|r| r.try_get::<_, i64>(0).map(from_db).map_err(pg))
            .transpose()
    }

    async fn revoke(
        &self,
        revocation: Option<NewRevocation>,
        now: i64,
        sign: SignCrl,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let row = tx
            .query_one(
                "SELECT issued_at, signed, count FROM alts_signer_crl WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg)?;
        let previous: i64 = row.try_get(0).map_err(pg)?;
        let previous = (previous != 0).then_some(previous);
        let current = previous.map(|issued_at| -> Result<CrlRecord, StoreError> {
            Ok(CrlRecord {
                issued_at,
                signed: row.try_get(1).map_err(pg)?,
                count: from_db(row.try_get(2).map_err(pg)?),
            })
        });
        let inserted = match &revocation {
            Some(r) => {
                tx.execute(
                    "INSERT INTO alts_signer_revocations (revocation_id, caller, reason, revoked_at, cert_sha256) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (revocation_id) DO NOTHING",
                    &[
                        &to_db(r.revocation_id),
                        &r.caller,
                        &r.reason,
                        &r.revoked_at,
                        &r.cert_sha256.as_ref().and_then(|h| hex::decode(h).ok()),
                    ],
                )
                .await
                .map_err(pg)?
                    > 0
            }
            None => false,
        };
        if !inserted && let Some(current) = current {
            tx.rollback().await.map_err(pg)?;
            return Ok(RevokeOutcome {
                crl: current?,
                already_revoked: revocation.is_some(),
            });
        }
        let ids: Vec<u64> = tx
            .query("SELECT revocation_id FROM alts_signer_revocations", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.try_get::<_, i64>(0).map(from_db).map_err(pg))
            .collect::<Result<_, _>>()?;
        let count = ids.len() as u64;
        let issued_at = next_issued_at(previous, now);
        let signed = sign(ids, issued_at).map_err(StoreError::Sign)?;
        tx.execute(
            "UPDATE alts_signer_crl SET issued_at = $1, signed = $2, count = $3 WHERE id = 1",
            &[&issued_at, &signed, &to_db(count)],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(RevokeOutcome {
            crl: CrlRecord {
                issued_at,
                signed,
                count,
            },
            already_revoked: false,
        })
    }

    async fn crl(&self) -> Result<Option<CrlRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT issued_at, signed, count FROM alts_signer_crl WHERE id = 1",
                &[],
            )
            .await
            .map_err(pg)?;
        let issued_at: i64 = row.try_get(0).map_err(pg)?;
        if issued_at == 0 {
            return Ok(None);
        }
        Ok(Some(CrlRecord {
            issued_at,
            signed: row.try_get(1).map_err(pg)?,
            count: from_db(row.try_get(2).map_err(pg)?),
        }))
    }

    async fn key_ring(
        &self,
        identity: &str,
        cell: &str,
        now: i64,
        rotation_secs: i64,
        fresh: RingKey,
    ) -> Result<StoredRing, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Create the row if absent (a concurrent creator wins, then both lock it).
        let (created, _) = StoredRing::advance(None, now, rotation_secs, fresh.clone());
        let created_json = created.to_json()?;
        let inserted = tx
            .execute(
                "INSERT INTO alts_signer_key_rings (identity, cell, ring) VALUES ($1, $2, $3) \
                 ON CONFLICT (identity, cell) DO NOTHING",
                &[&identity, &cell, &created_json.as_slice()],
            )
            .await
            .map_err(pg)?
            > 0;
        if inserted {
            tx.commit().await.map_err(pg)?;
            return Ok(created);
        }
        let row = tx
            .query_one(
                "SELECT ring FROM alts_signer_key_rings WHERE identity = $1 AND cell = $2 FOR UPDATE",
                &[&identity, &cell],
            )
            .await
            .map_err(pg)?;
        let bytes = zeroize::Zeroizing::new(row.try_get::<_, Vec<u8>>(0).map_err(pg)?);
        let existing = StoredRing::from_json(&bytes)?;
        let (ring, changed) = StoredRing::advance(Some(existing), now, rotation_secs, fresh);
        if changed {
            tx.execute(
                "UPDATE alts_signer_key_rings SET ring = $3 WHERE identity = $1 AND cell = $2",
                &[&identity, &cell, &ring.to_json()?.as_slice()],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(ring)
    }
}
