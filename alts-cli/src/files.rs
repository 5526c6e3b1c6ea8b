//! Loading and storing ALTS credential files, with size caps and clear
//! errors that name the file.
//!
//! Directory layout written by the `alts` command:
//! - CA directory: [`CA_KEY`] (Ed25519 PKCS#8, mode 0600), [`ROOT_PUB`]
//!   (serialized `alts.v1.RootKey`).
//! - Principal directory: [`PRINCIPAL_CERT`], [`PRINCIPAL_KEY`] (Ed25519
//!   PKCS#8, 0600), [`ROOT_PUB`].
//! - Handshake (workload) directory: [`HANDSHAKE_CERT`], [`HANDSHAKE_KEY`]
//!   (32 raw X25519 private-key bytes, 0600), [`ROOT_PUB`].
//!
//! [`load_local_credentials`] turns a handshake directory into
//! [`LocalCredentials`]; [`load_root`], [`load_policy`] and [`load_crl`] load
//! what a verifier needs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use alts_core::cert::{
    CertError, LocalCredentials, MAX_CERT_LEN, MAX_PKCS8_LEN, MAX_ROOT_KEY_LEN, RootKey, SigningKey,
};
use alts_core::crl::{CrlError, MAX_CRL_LEN, RevocationList};
use alts_core::crypto::StaticKeyPair;
use alts_core::policy::{IssuancePolicy, MAX_POLICY_LEN, PolicyError};
use zeroize::Zeroizing;

/// The CA's private signing key.
pub const CA_KEY: &str = "ca.key";
/// The root public key (trust anchor).
pub const ROOT_PUB: &str = "root.pub";
/// A principal certificate.
pub const PRINCIPAL_CERT: &str = "principal.cert";
/// A principal's private key.
pub const PRINCIPAL_KEY: &str = "principal.key";
/// A handshake certificate.
pub const HANDSHAKE_CERT: &str = "handshake.cert";
/// A handshake certificate's static X25519 private key.
pub const HANDSHAKE_KEY: &str = "handshake.key";

/// A file could not be read, written or understood.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file exceeds the size cap for its kind.
    #[error("{}: file too large ({len} bytes, at most {max} expected)", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The cap.
        max: usize,
    },
    /// A certificate, root key or private key is invalid.
    #[error("{}: {source}", path.display())]
    Cert {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CertError,
    },
    /// A revocation list is invalid.
    #[error("{}: {source}", path.display())]
    Crl {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CrlError,
    },
    /// A policy is invalid.
    #[error("{}: {source}", path.display())]
    Policy {
        /// The file.
        path: PathBuf,
        /// Why.
        source: PolicyError,
    },
    /// The file is not what was expected (e.g. the wrong kind of key).
    #[error("{}: {what}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The file already exists and will not be overwritten.
    #[error("{}: already exists; refusing to overwrite it", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads at most `max` bytes from `path`; larger files are refused before
/// reading them whole.
pub fn read_capped(path: &Path, max: usize) -> Result<Vec<u8>, FileError> {
    let file = File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if meta.is_dir() {
        return Err(FileError::Invalid {
            path: path.to_owned(),
            what: "is a directory, expected a file".into(),
        });
    }
    let too_large = |len| FileError::TooLarge {
        path: path.to_owned(),
        len,
        max,
    };
    if meta.len() > max as u64 {
        return Err(too_large(meta.len()));
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(max).min(max));
    file.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    if buf.len() > max {
        return Err(too_large(buf.len() as u64));
    }
    Ok(buf)
}

/// Like [`read_capped`] for secrets: the buffer is zeroized on drop.
pub fn read_secret(path: &Path, max: usize) -> Result<Zeroizing<Vec<u8>>, FileError> {
    read_capped(path, max).map(Zeroizing::new)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32, create_new: bool) -> Result<(), FileError> {
    if create_new && fs::symlink_metadata(path).is_ok() {
        return Err(FileError::Exists {
            path: path.to_owned(),
        });
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| FileError::Invalid {
        path: path.to_owned(),
        what: "not a file name".into(),
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        if create_new {
            // Fails if the target appeared meanwhile.
            fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    FileError::Exists {
                        path: path.to_owned(),
                    }
                } else {
                    io_err(path)(e)
                }
            })?;
            fs::remove_file(&tmp).map_err(io_err(&tmp))
        } else {
            fs::rename(&tmp, path).map_err(io_err(path))
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes a secret file with mode 0600 (atomically, replacing any old file).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomic(path, bytes, 0o600, false)
}

/// Writes a secret file with mode 0600, refusing to overwrite an existing one.
pub fn write_private_new(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomic(path, bytes, 0o600, true)
}

/// Writes a public file with mode 0644 (atomically, replacing any old file).
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomic(path, bytes, 0o644, false)
}

/// Creates a directory (and parents) with mode 0700 if it does not exist.
pub fn create_dir(path: &Path) -> Result<(), FileError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err(path))
}

fn cert_err(path: &Path) -> impl FnOnce(CertError) -> FileError + '_ {
    move |source| FileError::Cert {
        path: path.to_owned(),
        source,
    }
}

/// Loads a serialized `alts.v1.RootKey` (e.g. `root.pub`).
pub fn load_root(path: &Path) -> Result<RootKey, FileError> {
    let bytes = read_capped(path, MAX_ROOT_KEY_LEN)?;
    RootKey::from_bytes(&bytes).map_err(|e| match e {
        CertError::Malformed { .. } | CertError::UnsupportedAlgorithm { .. } => FileError::Invalid {
            path: path.to_owned(),
            what: format!("not a root public key ({e})"),
        },
        other => cert_err(path)(other),
    })
}

/// Loads a TOML policy (see `alts_core::policy`).
pub fn load_policy(path: &Path) -> Result<IssuancePolicy, FileError> {
    let bytes = read_capped(path, MAX_POLICY_LEN)?;
    let text = String::from_utf8(bytes).map_err(|_| FileError::Invalid {
        path: path.to_owned(),
        what: "policy is not UTF-8 text".into(),
    })?;
    IssuancePolicy::from_toml(&text).map_err(|source| FileError::Policy {
        path: path.to_owned(),
        source,
    })
}

/// Loads a signed revocation list, checking it against `root`.
pub fn load_crl(path: &Path, root: &RootKey) -> Result<RevocationList, FileError> {
    let bytes = read_capped(path, MAX_CRL_LEN)?;
    RevocationList::from_signed_bytes(&bytes, root).map_err(|source| FileError::Crl {
        path: path.to_owned(),
        source,
    })
}

/// Loads a serialized certificate (size-capped; not parsed).
pub fn load_cert_bytes(path: &Path) -> Result<Vec<u8>, FileError> {
    read_capped(path, MAX_CERT_LEN)
}

/// Loads an Ed25519 PKCS#8 private key (`ca.key`, `principal.key`).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, FileError> {
    let bytes = read_secret(path, MAX_PKCS8_LEN)?;
    SigningKey::from_pkcs8(&bytes).map_err(|e| {
        let what = if bytes.len() == 32 {
            "wrong key type: this looks like a raw 32-byte X25519 key (handshake.key); expected an Ed25519 PKCS#8 key (ca.key or principal.key)".to_owned()
        } else {
            format!("wrong key type or garbage: expected an Ed25519 PKCS#8 private key ({e})")
        };
        FileError::Invalid {
            path: path.to_owned(),
            what,
        }
    })
}

/// Loads a 32-byte raw X25519 private key (`handshake.key`).
pub fn load_static_key(path: &Path) -> Result<StaticKeyPair, FileError> {
    let bytes = read_secret(path, MAX_PKCS8_LEN)?;
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        let what = if SigningKey::from_pkcs8(&bytes).is_ok() {
            "wrong key type: this is an Ed25519 PKCS#8 key; expected 32 raw X25519 private-key bytes (handshake.key)"
                .to_owned()
        } else {
            format!("expected 32 raw X25519 private-key bytes, found {} bytes", bytes.len())
        };
        FileError::Invalid {
            path: path.to_owned(),
            what,
        }
    })?;
    let arr = Zeroizing::new(arr);
    Ok(StaticKeyPair::from_secret_bytes(*arr))
}

/// Loads a CA directory: its signing key and root public key, checking that
/// they match.
pub fn load_ca(dir: &Path) -> Result<(SigningKey, RootKey), FileError> {
    let key = load_signing_key(&dir.join(CA_KEY))?;
    let root_path = dir.join(ROOT_PUB);
    let root = load_root(&root_path)?;
    if root.public_key() != &key.public_key() {
        return Err(FileError::Invalid {
            path: root_path,
            what: format!("does not match {}", dir.join(CA_KEY).display()),
        });
    }
    Ok((key, root))
}

/// Loads a principal directory: key, certificate bytes and root key.
pub fn load_principal(dir: &Path) -> Result<(SigningKey, Vec<u8>, RootKey), FileError> {
    let key = load_signing_key(&dir.join(PRINCIPAL_KEY))?;
    let cert_path = dir.join(PRINCIPAL_CERT);
    let cert = load_cert_bytes(&cert_path)?;
    let info = alts_core::cert::PrincipalCertInfo::parse(&cert).map_err(cert_err(&cert_path))?;
    if info.public_key != key.public_key() {
        return Err(FileError::Invalid {
            path: cert_path,
            what: format!("does not match {}", dir.join(PRINCIPAL_KEY).display()),
        });
    }
    let root = load_root(&dir.join(ROOT_PUB))?;
    Ok((key, cert, root))
}

/// Loads a handshake directory (`handshake.cert` + `handshake.key`) as our
/// own credentials. Signatures are not checked here.
pub fn load_local_credentials(dir: &Path) -> Result<LocalCredentials, FileError> {
    let cert_path = dir.join(HANDSHAKE_CERT);
    let cert = load_cert_bytes(&cert_path)?;
    let key = load_static_key(&dir.join(HANDSHAKE_KEY))?;
    LocalCredentials::new(cert, key).map_err(cert_err(&cert_path))
}
