//! Where the handshaker service listens: a Unix domain socket (the default,
//! callers authorized by `SO_PEERCRED`) or loopback TCP (what stock grpcio
//! dials: `metadata.google.internal.:8080`).
//!
//! Address syntax (`--listen`):
//! - `unix:PATH` or `unix://ABSOLUTE_PATH` (as in gRPC targets), e.g.
//!   `unix:/run/alts/handshaker.sock` ([`DEFAULT_LISTEN`]);
//! - `HOST:PORT` or `IP:PORT` (`[v6]:PORT`), e.g. `127.0.0.1:8080`.
//!
//! Binding a Unix socket ([`bind_unix`]) creates the parent directory if it
//! is missing (mode 0755), replaces a stale socket file (connecting to it
//! is refused: nobody accepts on it), refuses a path that exists and is not a socket (or is a socket
//! another process serves), and sets the socket file's mode to
//! [`SOCKET_MODE`] (0660: owner and group may connect). The file mode is
//! defence in depth; each caller is still checked against the allow-list.
//!
//! Binding TCP ([`bind_listen`]) refuses any address that is not loopback
//! (`0.0.0.0`, `::`, a public or private IP, a host name resolving to one)
//! unless `insecure_listen_any` is set: the service is plaintext gRPC and
//! hands out session keys.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio::net::{TcpListener, UnixListener};

/// The default `--listen` of `alts-handshaker`.
pub const DEFAULT_LISTEN: &str = "unix:/run/alts/handshaker.sock";

/// Mode of the socket file created by [`bind_unix`].
pub const SOCKET_MODE: u32 = 0o660;

/// A parsed `--listen` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A Unix domain socket path.
    Unix(PathBuf),
    /// A TCP `host:port` (IP or host name), resolved when binding.
    Tcp(String),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Tcp(a) => f.write_str(a),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = ListenError;

    fn from_str(s: &str) -> Result<Self, ListenError> {
        let bad = |why: &str| ListenError(format!("invalid listen address {s:?}: {why}"));
        if let Some(rest) = s.strip_prefix("unix:") {
            let path = match rest.strip_prefix("//") {
                Some(abs) if abs.starts_with('/') => abs,
                Some(_) => return Err(bad("unix:// must be followed by an absolute path")),
                None => rest,
            };
            if path.is_empty() {
                return Err(bad("empty socket path"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if s.parse::<SocketAddr>().is_ok() {
            return Ok(ListenAddr::Tcp(s.to_owned()));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(bad("expected unix:PATH or HOST:PORT"));
        };
        if host.is_empty() || host.contains(['/', '[', ']']) || port.parse::<u16>().is_err() {
            return Err(bad("expected unix:PATH or HOST:PORT"));
        }
        Ok(ListenAddr::Tcp(s.to_owned()))
    }
}

/// Why the service cannot listen where asked (the message is for the operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenError(pub String);

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ListenError {}

/// `Ok` if every address is loopback, or `insecure_listen_any` is set;
/// otherwise the refusal naming the first non-loopback address.
pub fn check_tcp_bind(addrs: &[SocketAddr], insecure_listen_any: bool) -> Result<(), ListenError> {
    if addrs.is_empty() {
        return Err(ListenError(
            "the listen address resolved to no address".to_owned(),
        ));
    }
    if insecure_listen_any {
        return Ok(());
    }
    match addrs.iter().find(|a| !a.ip().to_canonical().is_loopback()) {
        None => Ok(()),
        Some(a) => Err(ListenError(format!(
            "refusing to listen on {a}: not a loopback address. The handshaker service is \
             plaintext gRPC and hands out session keys to whoever calls it; listen on \
             unix:PATH (callers checked by uid/gid) or a loopback address such as \
             127.0.0.1:8080, or pass --insecure-listen-any to expose it to other hosts"
        ))),
    }
}

/// Removes the socket file when dropped, if it is still the one we bound.
#[derive(Debug)]
pub struct SocketFileGuard {
    path: PathBuf,
    ino: Option<(u64, u64)>,
}

impl SocketFileGuard {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFileGuard {
    fn drop(&mut self) {
        let current = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current.is_some() && current == self.ino {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A bound Unix socket listener and the guard removing its file.
#[derive(Debug)]
pub struct UnixSocketListener {
    /// The listener.
    pub listener: UnixListener,
    /// Removes the socket file when dropped.
    pub guard: SocketFileGuard,
}

/// Binds a Unix domain socket at `path` (see the module docs). Must be
/// called within a tokio runtime.
pub fn bind_unix(path: &Path) -> Result<UnixSocketListener, ListenError> {
    let err = |what: &str, e: std::io::Error| ListenError(format!("{what} {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| err("cannot create the directory of", e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(ListenError(format!(
                        "{} is in use: another process accepts connections on it",
                        path.display()
                    )));
                }
                // Nobody accepts on it: a stale socket file.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(|e| err("cannot remove the stale socket", e))?;
                }
                Err(e) => return Err(err("cannot tell whether a process serves the existing socket", e)),
            }
        }
        Ok(_) => {
            return Err(ListenError(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("cannot inspect", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| err("cannot bind", e))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| err("cannot inspect", e))?;
    let guard = SocketFileGuard {
        path: path.to_owned(),
        ino: Some((meta.dev(), meta.ino())),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| err("cannot set the mode of", e))?;
    Ok(UnixSocketListener { listener, guard })
}

/// A bound listener of the handshaker service.
#[derive(Debug)]
pub enum HandshakerListener {
    /// Loopback (or, opted in, any) TCP.
    Tcp(TcpListener),
    /// A Unix domain socket.
    Unix(UnixSocketListener),
}

impl HandshakerListener {
    /// Where it listens, for logs (`unix:/path` or `ip:port`).
    pub fn describe(&self) -> String {
        match self {
            HandshakerListener::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("tcp (address unknown: {e})"), |a| a.to_string()),
            HandshakerListener::Unix(u) => format!("unix:{}", u.guard.path().display()),
        }
    }
}

/// Binds `addr`: a Unix socket ([`bind_unix`]) or TCP after
/// [`check_tcp_bind`] (a host name is resolved and every address it
/// resolves to must be loopback; the first one is bound).
pub async fn bind_listen(
    addr: &ListenAddr,
    insecure_listen_any: bool,
) -> Result<HandshakerListener, ListenError> {
    match addr {
        ListenAddr::Unix(p) => bind_unix(p).map(HandshakerListener::Unix),
        ListenAddr::Tcp(hostport) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(hostport.as_str())
                .await
                .map_err(|e| ListenError(format!("cannot resolve {hostport:?}: {e}")))?
                .collect();
            check_tcp_bind(&addrs, insecure_listen_any)?;
            let l = TcpListener::bind(addrs[0])
                .await
                .map_err(|e| ListenError(format!("cannot bind {}: {e}", addrs[0])))?;
            Ok(HandshakerListener::Tcp(l))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let u = |p: &str| ListenAddr::Unix(PathBuf::from(p));
        assert_eq!(
            "unix:/run/a.sock".parse::<ListenAddr>().unwrap(),
            u("/run/a.sock")
        );
        assert_eq!(
            "unix:///run/a.sock".parse::<ListenAddr>().unwrap(),
            u("/run/a.sock")
        );
        assert_eq!("unix:rel.sock".parse::<ListenAddr>().unwrap(), u("rel.sock"));
        assert_eq!(
            DEFAULT_LISTEN.parse::<ListenAddr>().unwrap(),
            u("/run/alts/handshaker.sock")
        );
        for tcp in ["127.0.0.1:8080", "[::1]:8080", "localhost:8080", "0.0.0.0:8080"] {
            assert_eq!(tcp.parse::<ListenAddr>().unwrap(), ListenAddr::Tcp(tcp.into()));
        }
        for bad in ["unix:", "unix://rel", "8080", "host:port", ":8080", "127.0.0.1"] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_loopback_without_opt_in() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.3:8080",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(check_tcp_bind(&[a(ok)], false).is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0:8080", "[::]:8080", "10.0.0.1:8080", "8.8.8.8:8080"] {
            let e = check_tcp_bind(&[a(bad)], false).unwrap_err();
            assert!(e.0.contains("not a loopback address"), "{e}");
            assert!(e.0.contains("--insecure-listen-any"), "{e}");
            assert!(check_tcp_bind(&[a(bad)], true).is_ok(), "{bad} with the opt-in");
        }
        // A name resolving to loopback and a public address is refused.
        assert!(check_tcp_bind(&[a("127.0.0.1:1"), a("192.0.2.1:1")], false).is_err());
        assert!(check_tcp_bind(&[], true).is_err());
    }
}
