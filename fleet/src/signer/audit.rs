//! The audit log: one JSON object per line, appended with a single `write`
//! and fsynced before the call that caused it goes on.
//!
//! Every line has `time` (seconds since the Unix epoch), `time_rfc3339` and
//! `event`:
//! - `issue`: `caller`, `identity`, `category`, `revocation_id` (0x-hex),
//!   `serial`, `not_after`, `cert_sha256` (hex). Written after the issuance
//!   is recorded in the state and before the certificate is returned; with
//!   `"recovered": true` when written at start for an issuance recorded by a
//!   run that stopped before auditing it (that certificate was never
//!   returned to anyone).
//! - `allocate`: `caller`, `first_serial`, `count`.
//! - `revoke`: `caller`, `target` (`revocation_id` or `cert_sha256`),
//!   `revocation_id`, `reason` (written before the revocation is recorded),
//!   then `crl_published`: `issued_at`, `count`, or `revoke_failed`:
//!   `error`.
//! - `refused`: `caller`, `method`, `reason` (the detailed reason the caller
//!   is not told).
//!
//! Lines never contain key material. Each signer replica writes its own
//! file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

/// The audit log could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// An append-only JSON-lines file.
#[derive(Clone, Debug)]
pub struct AuditLog {
    file: Arc<Mutex<File>>,
    path: PathBuf,
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn rfc3339(t: i64) -> String {
    u64::try_from(t)
        .ok()
        .filter(|&s| s < 253_402_300_800)
        .map(|s| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
                .to_string()
        })
        .unwrap_or_default()
}

impl AuditLog {
    /// Opens `path` for appending (created with mode 0640). A last line cut
    /// short by a power loss is closed with a newline so later lines parse.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let err = |source| AuditError {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1)).map_err(err)?;
            file.read_exact(&mut last).map_err(err)?;
            if last[0] != b'\n' {
                tracing::warn!(path = %path.display(), "audit log ends in a torn line; closing it");
                file.write_all(b"\n").map_err(err)?;
                file.sync_data().map_err(err)?;
            }
        }
        Ok(Self {
            file: Arc::new(Mutex::new(file)),
            path: path.to_owned(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `{"time", "time_rfc3339", "event", ...fields}` and fsyncs.
    pub async fn append(&self, event: &str, fields: Value) -> Result<(), AuditError> {
        let now = unix_now();
        let mut obj = Map::new();
        obj.insert("time".into(), now.into());
        obj.insert("time_rfc3339".into(), rfc3339(now).into());
        obj.insert("event".into(), event.into());
        if let Value::Object(m) = fields {
            obj.extend(m);
        }
        let mut line = Value::Object(obj).to_string().into_bytes();
        line.push(b'\n');
        let file = self.file.clone();
        let path = self.path.clone();
        let err = move |source| AuditError {
            path: path.display().to_string(),
            source,
        };
        tokio::task::spawn_blocking(move || {
            let mut f = file
                .lock()
                .map_err(|_| std::io::Error::other("audit log lock poisoned"))?;
            f.write_all(&line)?;
            f.sync_data()
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(err)
    }
}
