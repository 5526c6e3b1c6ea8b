//! The agent's private state directory (mode 0700):
//!
//! ```text
//! state_dir/
//!   lock                      held (flock) while an agent runs
//!   revocation-ids.toml       the reserved serial range: next unused, end
//!   crl.bin                   the newest verified revocation list
//!   workloads/<name>/principal.key    Ed25519 PKCS#8, 0600 (never leaves the host)
//!   workloads/<name>/principal.cert   its principal certificate
//! ```
//!
//! `<name>` is the identity (characters other than `A-Za-z0-9._-` replaced
//! by `_`) followed by the first 8 bytes of SHA-256 over identity, cell and
//! directory, in hex.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use alts_core::cert::{MAX_CERT_LEN, MAX_PKCS8_LEN, MAX_REVOCATION_SERIAL, PrincipalCertInfo, SigningKey};
use alts_core::crypto::sha256;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::AgentError;
use super::config::WorkloadConfig;
use super::layout::{self, LayoutError};

/// Principal key file name in a workload's state directory.
pub const PRINCIPAL_KEY: &str = "principal.key";
/// Principal certificate file name in a workload's state directory.
pub const PRINCIPAL_CERT: &str = "principal.cert";
const REVOCATION_IDS: &str = "revocation-ids.toml";
const CRL: &str = "crl.bin";

/// The state directory, locked for this process.
pub(crate) struct StateDir {
    root: PathBuf,
    _lock: Flock<File>,
}

fn read_capped(path: &Path, max: usize) -> Result<Option<Vec<u8>>, AgentError> {
    use std::io::Read;
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LayoutError::Io {
                op: "open",
                path: path.to_owned(),
                source,
            }
            .into());
        }
    };
    let mut buf = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|source| LayoutError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        })?;
    if buf.len() > max {
        return Err(AgentError::State {
            path: path.to_owned(),
            what: "file too large".into(),
        });
    }
    Ok(Some(buf))
}

/// A principal key and its certificate.
pub(crate) struct StoredPrincipal {
    pub(crate) key: SigningKey,
    pub(crate) cert: Vec<u8>,
    pub(crate) info: PrincipalCertInfo,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdRange {
    next: u64,
    end: u64,
}

impl StateDir {
    /// Creates (0700) and locks the state directory; fails when another
    /// agent holds it.
    pub(crate) fn open(root: &Path) -> Result<Self, AgentError> {
        layout::private_dir(root)?;
        layout::private_dir(&root.join("workloads"))?;
        let lock_path = root.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|source| LayoutError::Io {
                op: "open",
                path: lock_path.clone(),
                source,
            })?;
        let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|_| AgentError::StateLocked {
            path: root.to_owned(),
        })?;
        Ok(Self {
            root: root.to_owned(),
            _lock: lock,
        })
    }

    /// The state directory of one workload.
    pub(crate) fn workload_dir(&self, w: &WorkloadConfig) -> PathBuf {
        let readable: String = w
            .identity
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut h = Vec::new();
        for part in [
            w.identity.as_bytes(),
            w.cell.as_bytes(),
            w.dir.as_os_str().as_encoded_bytes(),
        ] {
            h.extend_from_slice(&(part.len() as u64).to_be_bytes());
            h.extend_from_slice(part);
        }
        let digest = sha256(&h);
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        self.root.join("workloads").join(format!("{readable}-{hex}"))
    }

    /// Loads a workload's principal, if a consistent one is stored.
    pub(crate) fn load_principal(&self, w: &WorkloadConfig) -> Result<Option<StoredPrincipal>, AgentError> {
        let dir = self.workload_dir(w);
        let key_path = dir.join(PRINCIPAL_KEY);
        let Some(key) = read_capped(&key_path, MAX_PKCS8_LEN)?.map(Zeroizing::new) else {
            return Ok(None);
        };
        let Some(cert) = read_capped(&dir.join(PRINCIPAL_CERT), MAX_CERT_LEN)? else {
            return Ok(None);
        };
        let Ok(key) = SigningKey::from_pkcs8(&key) else {
            tracing::warn!(path = %key_path.display(), "stored principal key does not parse; a new one will be made");
            return Ok(None);
        };
        let info = match PrincipalCertInfo::parse(&cert) {
            Ok(i)
                if i.public_key == key.public_key()
                    && i.identity == w.identity
                    && i.category == w.category =>
            {
                i
            }
            _ => {
                tracing::warn!(path = %dir.display(), "stored principal certificate does not match its key or workload; a new one will be requested");
                return Ok(None);
            }
        };
        Ok(Some(StoredPrincipal { key, cert, info }))
    }

    /// Stores a workload's principal key (0600) and certificate.
    pub(crate) fn store_principal(&self, w: &WorkloadConfig, p: &StoredPrincipal) -> Result<(), AgentError> {
        let dir = self.workload_dir(w);
        layout::private_dir(&dir)?;
        layout::replace_private_file(&dir.join(PRINCIPAL_KEY), p.key.pkcs8_bytes())?;
        layout::replace_private_file(&dir.join(PRINCIPAL_CERT), &p.cert)?;
        Ok(())
    }

    /// Takes the next reserved revocation serial, if the range has one. The
    /// range is persisted before the serial is returned, so a serial is
    /// never used twice, even across a crash.
    pub(crate) fn take_serial(&self) -> Result<Option<u64>, AgentError> {
        let Some(mut r) = self.load_range()? else {
            return Ok(None);
        };
        if r.next >= r.end || r.next > MAX_REVOCATION_SERIAL {
            return Ok(None);
        }
        let serial = r.next;
        r.next += 1;
        self.store_range(&r)?;
        Ok(Some(serial))
    }

    /// Replaces the reserved range with `[first, first + count)`.
    pub(crate) fn store_new_range(&self, first: u64, count: u32) -> Result<(), AgentError> {
        let end = first.saturating_add(u64::from(count));
        self.store_range(&IdRange { next: first, end })
    }

    fn load_range(&self) -> Result<Option<IdRange>, AgentError> {
        let path = self.root.join(REVOCATION_IDS);
        let Some(bytes) = read_capped(&path, 4096)? else {
            return Ok(None);
        };
        let parsed = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| toml::from_str::<IdRange>(t).ok());
        match parsed {
            Some(r) => Ok(Some(r)),
            None => Err(AgentError::State {
                path,
                what: "not a revocation-ID range (next, end)".into(),
            }),
        }
    }

    fn store_range(&self, r: &IdRange) -> Result<(), AgentError> {
        let text = toml::to_string(r).map_err(|e| AgentError::State {
            path: self.root.join(REVOCATION_IDS),
            what: e.to_string(),
        })?;
        layout::replace_private_file(&self.root.join(REVOCATION_IDS), text.as_bytes())?;
        Ok(())
    }

    /// The stored revocation list bytes (verified again by the caller).
    pub(crate) fn load_crl(&self) -> Result<Option<Vec<u8>>, AgentError> {
        read_capped(&self.root.join(CRL), alts_core::crl::MAX_CRL_LEN)
    }

    /// Path of the stored revocation list.
    pub(crate) fn crl_path(&self) -> PathBuf {
        self.root.join(CRL)
    }

    /// Stores the newest revocation list.
    pub(crate) fn store_crl(&self, bytes: &[u8]) -> Result<(), AgentError> {
        layout::replace_private_file(&self.root.join(CRL), bytes)?;
        Ok(())
    }
}
