//! Atomic credential directories in the Kubernetes layout.
//!
//! ```text
//! /run/alts/greeter/
//!   ..2026-01-05T10_00_00.123456789Z/   one generation: every file of one set
//!     handshake.cert handshake.key root.pub issuance-policy.toml crl.bin resumption.keys
//!   ..data -> ..2026-01-05T10_00_00.123456789Z
//!   handshake.cert -> ..data/handshake.cert
//!   handshake.key  -> ..data/handshake.key
//!   ...
//! ```
//!
//! A new set is written into a fresh generation directory (each file
//! created exclusively, never following symlinks, owner, group and mode set
//! on the open file, fsynced), the directory is fsynced, then a `..data_tmp`
//! symlink to it is renamed over `..data` (one atomic step) and the
//! workload directory is fsynced. Generations other than the current and the
//! previous one are then removed; the previous one stays so that a reader
//! that resolved `..data` just before the swap still finds its files.
//!
//! A reader that resolves `..data` once and reads every file below the
//! generation it points to always gets one complete set. A reader that opens
//! the top-level names one by one resolves `..data` at each open, so a swap
//! between two opens can give it files of two adjacent generations; a
//! certificate and a key from different generations do not match, and
//! `tonic-alts` refuses such a pair (its reloader keeps the old set and
//! retries at its next poll).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::unistd::{Gid, Uid};

/// Name of the symlink to the current generation.
pub const DATA_LINK: &str = "..data";
/// Name of the symlink renamed over [`DATA_LINK`].
pub const DATA_TMP_LINK: &str = "..data_tmp";

/// A filesystem step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// An OS call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A path is not what the agent created (a symlink, a file, writable by
    /// others, owned by someone else): the agent does not write there.
    #[error("{}: refusing to write: {what}", path.display())]
    Unsafe {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// A file name is not a plain name.
    #[error("{name:?} is not a plain file name")]
    BadName {
        /// The name.
        name: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LayoutError + 'a {
    move |source| LayoutError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Who owns the files and which mode they get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// File owner; `None` keeps the agent's.
    pub uid: Option<Uid>,
    /// File group; `None` keeps the agent's.
    pub gid: Option<Gid>,
    /// Mode of every file.
    pub file_mode: u32,
}

impl Ownership {
    /// Mode of the workload and generation directories: the agent may write,
    /// everyone may traverse (access is decided by each file's owner, group
    /// and mode), the group may list when the files are group-readable.
    pub fn dir_mode(&self) -> u32 {
        0o711 | if self.file_mode & 0o040 != 0 { 0o040 } else { 0 }
    }
}

/// One file of a set.
pub struct SetFile<'a> {
    /// Plain file name (no `/`, not starting with `.`).
    pub name: &'static str,
    /// Contents.
    pub bytes: &'a [u8],
}

/// Whether `name` is a generation directory name.
fn is_generation(name: &str) -> bool {
    name.starts_with("..") && name != DATA_LINK && name != DATA_TMP_LINK && name.len() > 2
}

/// Checks `dir` is a directory the agent may write into: not a symlink and
/// owned by the agent. Creates it (and missing parents, mode 0755) when
/// absent. Then sets its group and mode ([`Ownership::dir_mode`]).
fn prepare_dir(dir: &Path, own: &Ownership) -> Result<(), LayoutError> {
    match fs::symlink_metadata(dir) {
        Ok(m) => {
            if m.file_type().is_symlink() {
                return Err(LayoutError::Unsafe {
                    path: dir.to_owned(),
                    what: "is a symlink",
                });
            }
            if !m.is_dir() {
                return Err(LayoutError::Unsafe {
                    path: dir.to_owned(),
                    what: "is not a directory",
                });
            }
            if m.uid() != nix::unistd::geteuid().as_raw() {
                return Err(LayoutError::Unsafe {
                    path: dir.to_owned(),
                    what: "is owned by another user",
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(io_err("create", parent))?;
            }
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return prepare_dir(dir, own),
                Err(e) => return Err(io_err("create", dir)(e)),
            }
        }
        Err(e) => return Err(io_err("stat", dir)(e)),
    }
    let f = open_dir(dir)?;
    set_owner_mode(&f, dir, None, own.gid, own.dir_mode())?;
    Ok(())
}

fn open_dir(dir: &Path) -> Result<File, LayoutError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(dir)
        .map_err(io_err("open", dir))
}

fn chown_allowed() -> bool {
    nix::unistd::geteuid().is_root()
}

fn set_owner_mode(
    f: &File,
    path: &Path,
    uid: Option<Uid>,
    gid: Option<Gid>,
    mode: u32,
) -> Result<(), LayoutError> {
    if uid.is_some() || gid.is_some() {
        if chown_allowed() {
            std::os::unix::fs::fchown(f, uid.map(Uid::as_raw), gid.map(Gid::as_raw))
                .map_err(io_err("chown", path))?;
        } else {
            tracing::debug!(path = %path.display(), "not root: leaving owner and group as they are");
        }
    }
    f.set_permissions(Permissions::from_mode(mode))
        .map_err(io_err("chmod", path))
}

fn sync_dir(dir: &Path) -> Result<(), LayoutError> {
    open_dir(dir)?.sync_all().map_err(io_err("fsync", dir))
}

/// Writes `bytes` to a new file `path` (never following a symlink, failing
/// if anything exists there), with owner, group and mode, and fsyncs it.
pub fn write_new_file(
    path: &Path,
    bytes: &[u8],
    uid: Option<Uid>,
    gid: Option<Gid>,
    mode: u32,
) -> Result<(), LayoutError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("create", path))?;
    f.write_all(bytes).map_err(io_err("write", path))?;
    set_owner_mode(&f, path, uid, gid, mode)?;
    f.sync_all().map_err(io_err("fsync", path))
}

/// Replaces `path` atomically with a private file (mode 0600, the agent's
/// owner): a temporary file in the same directory, fsynced, renamed over
/// `path`, then the directory fsynced.
pub fn replace_private_file(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| LayoutError::BadName {
        name: path.display().to_string(),
    })?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &tmp)(e)),
    }
    write_new_file(&tmp, bytes, None, None, 0o600)?;
    fs::rename(&tmp, path).map_err(io_err("rename", path))?;
    sync_dir(dir)
}

/// Creates the private directory `dir` (mode 0700) if absent, and checks it
/// is a directory owned by the agent and closed to everyone else.
pub fn private_dir(dir: &Path) -> Result<(), LayoutError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create", dir))?;
    let m = fs::symlink_metadata(dir).map_err(io_err("stat", dir))?;
    if m.file_type().is_symlink() || !m.is_dir() {
        return Err(LayoutError::Unsafe {
            path: dir.to_owned(),
            what: "is not a directory",
        });
    }
    if m.uid() != nix::unistd::geteuid().as_raw() {
        return Err(LayoutError::Unsafe {
            path: dir.to_owned(),
            what: "is owned by another user",
        });
    }
    if m.mode() & 0o077 != 0 {
        open_dir(dir)?
            .set_permissions(Permissions::from_mode(0o700))
            .map_err(io_err("chmod", dir))?;
    }
    Ok(())
}

/// The generation `..data` points to, if any.
pub fn current_generation(dir: &Path) -> Option<String> {
    let target = fs::read_link(dir.join(DATA_LINK)).ok()?;
    let name = target.to_str()?;
    (is_generation(name) && !name.contains('/')).then(|| name.to_owned())
}

fn generation_name(dir: &Path) -> Result<String, LayoutError> {
    let stamp = humantime::format_rfc3339_nanos(SystemTime::now())
        .to_string()
        .replace(':', "_");
    for n in 0u32..1000 {
        let name = if n == 0 {
            format!("..{stamp}")
        } else {
            format!("..{stamp}-{n}")
        };
        if fs::symlink_metadata(dir.join(&name)).is_err() {
            return Ok(name);
        }
    }
    Err(LayoutError::Unsafe {
        path: dir.to_owned(),
        what: "no free generation name",
    })
}

/// Publishes `files` as the new complete set of `dir` (see the module
/// docs). Returns the new generation's name. On error the previous set
/// stays in place (a partly written generation is removed).
pub fn publish(dir: &Path, files: &[SetFile<'_>], own: &Ownership) -> Result<String, LayoutError> {
    for f in files {
        if f.name.is_empty() || f.name.starts_with('.') || f.name.contains('/') {
            return Err(LayoutError::BadName { name: f.name.into() });
        }
    }
    prepare_dir(dir, own)?;
    let previous = current_generation(dir);
    let gen_name = generation_name(dir)?;
    let gen_dir = dir.join(&gen_name);
    let written = (|| {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&gen_dir)
            .map_err(io_err("create", &gen_dir))?;
        for f in files {
            write_new_file(&gen_dir.join(f.name), f.bytes, own.uid, own.gid, own.file_mode)?;
        }
        let d = open_dir(&gen_dir)?;
        set_owner_mode(&d, &gen_dir, None, own.gid, own.dir_mode())?;
        d.sync_all().map_err(io_err("fsync", &gen_dir))?;
        // Swap: ..data_tmp -> gen, renamed over ..data.
        let tmp = dir.join(DATA_TMP_LINK);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &tmp)(e)),
        }
        std::os::unix::fs::symlink(&gen_name, &tmp).map_err(io_err("symlink", &tmp))?;
        fs::rename(&tmp, dir.join(DATA_LINK)).map_err(io_err("rename", &tmp))?;
        sync_dir(dir)
    })();
    if let Err(e) = written {
        if current_generation(dir).as_deref() != Some(gen_name.as_str()) {
            let _ = fs::remove_dir_all(&gen_dir);
        }
        return Err(e);
    }
    // Top-level names -> ..data/<name>.
    let mut changed = false;
    for f in files {
        let link = dir.join(f.name);
        let want = Path::new(DATA_LINK).join(f.name);
        if fs::read_link(&link).ok().as_deref() == Some(want.as_path()) {
            continue;
        }
        let tmp = dir.join(format!(".{}.tmp", f.name));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&want, &tmp).map_err(io_err("symlink", &tmp))?;
        fs::rename(&tmp, &link).map_err(io_err("rename", &link))?;
        changed = true;
    }
    if changed {
        sync_dir(dir)?;
    }
    remove_old_generations(dir, &gen_name, previous.as_deref());
    Ok(gen_name)
}

/// Removes every generation other than `keep` and `previous` (failures are
/// logged: an old generation left behind is harmless).
fn remove_old_generations(dir: &Path, keep: &str, previous: Option<&str>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_generation(name) || name == keep || Some(name) == previous {
            continue;
        }
        let path = e.path();
        // remove_dir_all does not follow symlinks; check the entry is a directory.
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                if let Err(err) = fs::remove_dir_all(&path) {
                    tracing::warn!(path = %path.display(), error = %err, "could not remove an old generation");
                }
            }
            _ => {}
        }
    }
}

/// Reads `name` from the current generation of `dir` (resolving `..data`
/// once), at most `max` bytes. `Ok(None)` when absent.
pub fn read_current(
    dir: &Path,
    generation: &str,
    name: &str,
    max: usize,
) -> Result<Option<Vec<u8>>, LayoutError> {
    use std::io::Read;
    let path = dir.join(generation).join(name);
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &path)(e)),
    };
    let mut buf = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(io_err("read", &path))?;
    if buf.len() > max {
        return Err(LayoutError::Unsafe {
            path,
            what: "file too large",
        });
    }
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Ownership {
        Ownership {
            uid: None,
            gid: None,
            file_mode: 0o640,
        }
    }

    fn set<'a>(cert: &'a [u8], key: &'a [u8]) -> Vec<SetFile<'a>> {
        vec![
            SetFile {
                name: "handshake.cert",
                bytes: cert,
            },
            SetFile {
                name: "handshake.key",
                bytes: key,
            },
        ]
    }

    #[test]
    fn publishes_swaps_and_prunes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("w");
        let g1 = publish(&dir, &set(b"c1", b"k1"), &own()).unwrap();
        assert_eq!(fs::read(dir.join("handshake.cert")).unwrap(), b"c1");
        assert_eq!(
            fs::read_link(dir.join("handshake.key")).unwrap(),
            Path::new("..data/handshake.key")
        );
        let m = fs::metadata(dir.join(&g1).join("handshake.key")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o640);
        let g2 = publish(&dir, &set(b"c2", b"k2"), &own()).unwrap();
        let g3 = publish(&dir, &set(b"c3", b"k3"), &own()).unwrap();
        assert_eq!(current_generation(&dir).as_deref(), Some(g3.as_str()));
        assert_eq!(fs::read(dir.join("handshake.key")).unwrap(), b"k3");
        assert!(!dir.join(&g1).exists(), "older generations are removed");
        assert!(dir.join(&g2).exists(), "the previous generation stays");
        assert_eq!(
            read_current(&dir, &g3, "handshake.cert", 10).unwrap().unwrap(),
            b"c3"
        );
    }

    #[test]
    fn refuses_a_symlinked_workload_dir_and_ignores_planted_links() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        fs::create_dir(&victim).unwrap();
        let dir = tmp.path().join("w");
        std::os::unix::fs::symlink(&victim, &dir).unwrap();
        assert!(matches!(
            publish(&dir, &set(b"c", b"k"), &own()),
            Err(LayoutError::Unsafe { .. })
        ));
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);

        // A planted ..data_tmp pointing elsewhere is replaced, never followed.
        let dir = tmp.path().join("w2");
        fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(DATA_TMP_LINK)).unwrap();
        publish(&dir, &set(b"c", b"k"), &own()).unwrap();
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
        assert_eq!(fs::read(dir.join("handshake.cert")).unwrap(), b"c");

        // A dir writable by others is refused.
        let dir = tmp.path().join("w3");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
        // Group/other-writable directories are fixed only when owned by us;
        // ownership is checked, the mode is then reset.
        publish(&dir, &set(b"c", b"k"), &own()).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o751);
    }

    #[test]
    fn refuses_a_workload_dir_owned_by_someone_else() {
        if !nix::unistd::geteuid().is_root() {
            return; // needs chown
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("w");
        fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        assert!(matches!(
            publish(&dir, &set(b"c", b"k"), &own()),
            Err(LayoutError::Unsafe { .. })
        ));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn replace_private_file_is_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("principal.key");
        replace_private_file(&p, b"one").unwrap();
        replace_private_file(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }
}
