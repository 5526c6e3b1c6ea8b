//! Files the signer reads and writes: the root signing key (checked to be
//! private to its owner), and the revocation list (replaced atomically).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use alts_core::cert::{MAX_PKCS8_LEN, SigningKey};
use zeroize::Zeroizing;

/// The revocation list's file name in `--crl-dir`.
pub const CRL_FILE: &str = "crl.bin";

/// A signer file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The root key file can be read or written by others.
    #[error("{path}: mode {mode:04o} lets other users read the root signing key; chmod 600 it")]
    KeyPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The root key file is not a regular file, too large or not an Ed25519
    /// PKCS#8 key.
    #[error("{path}: {what}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads the root signing key (`ca.key` as `alts ca init` writes it). Refuses
/// a file whose mode grants any access to group or others (checked on the
/// opened file, so a rename in between cannot swap it).
pub fn load_ca_key(path: &Path) -> Result<SigningKey, FileError> {
    let mut file = File::open(path).map_err(io(path))?;
    let meta = file.metadata().map_err(io(path))?;
    if !meta.is_file() {
        return Err(FileError::BadKey {
            path: path.to_owned(),
            what: "not a regular file".into(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(FileError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > MAX_PKCS8_LEN as u64 {
        return Err(FileError::BadKey {
            path: path.to_owned(),
            what: format!("larger than {MAX_PKCS8_LEN} bytes"),
        });
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PKCS8_LEN));
    (&mut file)
        .take(MAX_PKCS8_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(io(path))?;
    SigningKey::from_pkcs8(&buf).map_err(|e| FileError::BadKey {
        path: path.to_owned(),
        what: e.to_string(),
    })
}

/// Replaces `dir/name` with `bytes`: writes a temporary file in `dir`,
/// fsyncs it, renames it over the target and fsyncs the directory. Readers
/// see the old file or the new one, never a mix.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), FileError> {
    let target = dir.join(name);
    let mut rnd = [0u8; 8];
    alts_core::crypto::SecureRandom::fill(&alts_core::crypto::RingRandom::default(), &mut rnd)
        .map_err(|e| io(&target)(std::io::Error::other(e.to_string())))?;
    let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), hex::encode(rnd)));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_mode_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(&alts_core::crypto::RingRandom::default()).unwrap();
        let p = dir.path().join("ca.key");
        std::fs::write(&p, key.pkcs8_bytes()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_ca_key(&p),
            Err(FileError::KeyPermissions { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_ca_key(&p).unwrap().public_key(), key.public_key());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load_ca_key(&p).is_ok());
        std::fs::write(dir.path().join("junk"), b"junk").unwrap();
        std::fs::set_permissions(dir.path().join("junk"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            load_ca_key(&dir.path().join("junk")),
            Err(FileError::BadKey { .. })
        ));
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "crl.bin", b"one").unwrap();
        write_atomic(dir.path(), "crl.bin", b"two").unwrap();
        assert_eq!(std::fs::read(dir.path().join("crl.bin")).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
