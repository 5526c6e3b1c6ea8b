//! Who may call the handshaker service.
//!
//! A caller of `DoHandshake` runs handshakes **as the workload** whose
//! credentials the service holds and receives the session keys, so the
//! service decides per call whether the calling process is allowed, before
//! any handshake work:
//!
//! - **Unix domain socket** callers are identified by the kernel
//!   (`SO_PEERCRED`: the caller's effective uid and gid and its pid when it
//!   connected) and must match the [`CallerPolicy`] allow-list: a listed uid,
//!   or a listed gid. `SO_PEERCRED` reports the caller's *effective (primary)
//!   gid only*; supplementary groups are not seen, so a gid entry admits
//!   processes running with that gid as their primary group. A Unix socket
//!   caller whose credentials cannot be read is refused.
//! - **TCP** callers carry no process identity: any process that can reach
//!   the port is a caller. A loopback TCP listener therefore trusts **every
//!   process on the machine** (the trust model of Google's metadata-server
//!   handshaker, which relies on a single-tenant VM). The uid/gid allow-list
//!   cannot apply to them; callers from a non-loopback address are refused
//!   unless [`CallerPolicy::allow_non_loopback_tcp`] is set.
//! - Any other transport (no connection information) is refused unless
//!   [`CallerPolicy::allow_any`] is used.
//!
//! The default policy ([`CallerPolicy::same_user`]) admits Unix socket
//! callers running as the service's own effective uid, and loopback TCP
//! callers.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::transport::server::{TcpConnectInfo, UdsConnectInfo};

/// Kernel-reported credentials of a Unix domain socket peer (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Effective user id of the caller when it connected.
    pub uid: u32,
    /// Effective (primary) group id of the caller when it connected.
    pub gid: u32,
    /// Process id of the caller, when the platform reports it.
    pub pid: Option<i32>,
}

/// The calling process of one `DoHandshake` call, as far as the transport
/// tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A Unix domain socket peer; `None` if its credentials could not be read.
    Unix(Option<PeerCred>),
    /// A TCP peer; `None` if its address could not be read.
    Tcp(Option<SocketAddr>),
    /// A transport without connection information (e.g. an in-memory stream).
    Unknown,
}

impl Caller {
    /// The caller of a request served by `tonic::transport::Server` over a
    /// `UnixStream` or `TcpStream` (from the connection info tonic puts in
    /// the request extensions).
    pub fn from_extensions(ext: &http::Extensions) -> Self {
        if let Some(uds) = ext.get::<UdsConnectInfo>() {
            return Caller::Unix(uds.peer_cred.map(|c| PeerCred {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            }));
        }
        if let Some(tcp) = ext.get::<TcpConnectInfo>() {
            return Caller::Tcp(tcp.remote_addr());
        }
        Caller::Unknown
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Unix(Some(c)) => {
                write!(f, "unix socket peer uid={} gid={}", c.uid, c.gid)?;
                match c.pid {
                    Some(pid) => write!(f, " pid={pid}"),
                    None => Ok(()),
                }
            }
            Caller::Unix(None) => f.write_str("unix socket peer with unknown credentials"),
            Caller::Tcp(Some(a)) => write!(f, "tcp peer {a}"),
            Caller::Tcp(None) => f.write_str("tcp peer with unknown address"),
            Caller::Unknown => f.write_str("caller on a transport without connection information"),
        }
    }
}

/// The service's effective user id.
pub fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The service's effective group id.
pub fn current_gid() -> u32 {
    rustix::process::getegid().as_raw()
}

/// Which callers may run handshakes (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerPolicy {
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
    non_loopback_tcp: bool,
    any: bool,
}

impl Default for CallerPolicy {
    /// [`CallerPolicy::same_user`].
    fn default() -> Self {
        Self::same_user()
    }
}

impl CallerPolicy {
    /// Unix socket callers running as this process's effective uid; loopback
    /// TCP callers.
    pub fn same_user() -> Self {
        Self::allow([current_uid()], [])
    }

    /// Unix socket callers whose uid is in `uids` or whose (primary) gid is
    /// in `gids`; loopback TCP callers. Empty lists admit no Unix caller.
    pub fn allow(uids: impl IntoIterator<Item = u32>, gids: impl IntoIterator<Item = u32>) -> Self {
        Self {
            uids: uids.into_iter().collect(),
            gids: gids.into_iter().collect(),
            non_loopback_tcp: false,
            any: false,
        }
    }

    /// Every caller, on any transport, with no check. For services reachable
    /// only by trusted code (e.g. an in-memory transport in tests).
    pub fn allow_any() -> Self {
        Self {
            any: true,
            ..Self::allow([], [])
        }
    }

    /// Also admits TCP callers from non-loopback addresses (and TCP callers
    /// whose address is unknown): any host that reaches the port can then
    /// run handshakes as the workload.
    pub fn allow_non_loopback_tcp(mut self, allow: bool) -> Self {
        self.non_loopback_tcp = allow;
        self
    }

    /// The allowed uids.
    pub fn uids(&self) -> impl Iterator<Item = u32> + '_ {
        self.uids.iter().copied()
    }

    /// The allowed gids.
    pub fn gids(&self) -> impl Iterator<Item = u32> + '_ {
        self.gids.iter().copied()
    }

    /// `Ok` if `caller` may run handshakes, else why not.
    pub fn check(&self, caller: &Caller) -> Result<(), String> {
        if self.any {
            return Ok(());
        }
        match caller {
            Caller::Unix(Some(c)) => {
                if self.uids.contains(&c.uid) || self.gids.contains(&c.gid) {
                    Ok(())
                } else {
                    Err(format!(
                        "uid {} / gid {} is not on the allow-list (uids {:?}, gids {:?})",
                        c.uid, c.gid, self.uids, self.gids
                    ))
                }
            }
            Caller::Unix(None) => Err("the caller's credentials (SO_PEERCRED) are unavailable".to_owned()),
            Caller::Tcp(Some(a)) if a.ip().to_canonical().is_loopback() => Ok(()),
            Caller::Tcp(_) if self.non_loopback_tcp => Ok(()),
            Caller::Tcp(Some(a)) => Err(format!("TCP caller {a} is not on the loopback interface")),
            Caller::Tcp(None) => Err("the TCP caller's address is unavailable".to_owned()),
            Caller::Unknown => Err("the caller cannot be identified on this transport".to_owned()),
        }
    }
}

/// Logs at most one line per interval, counting the suppressed ones (for
/// refusals a hostile local process could trigger in a loop).
#[derive(Debug)]
pub struct RateLimitedLog {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed since the last line)` if a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(uid: u32, gid: u32) -> Caller {
        Caller::Unix(Some(PeerCred {
            uid,
            gid,
            pid: Some(1),
        }))
    }

    #[test]
    fn allow_list() {
        let p = CallerPolicy::allow([1000], [50]);
        assert!(p.check(&unix(1000, 1)).is_ok());
        assert!(p.check(&unix(7, 50)).is_ok());
        assert!(
            p.check(&unix(7, 8))
                .unwrap_err()
                .contains("not on the allow-list")
        );
        assert!(p.check(&Caller::Unix(None)).is_err());
        assert!(p.check(&Caller::Unknown).is_err());
        assert!(CallerPolicy::allow([], []).check(&unix(0, 0)).is_err());
        assert!(CallerPolicy::allow_any().check(&Caller::Unknown).is_ok());
        let me = CallerPolicy::default();
        assert!(me.check(&unix(current_uid(), u32::MAX)).is_ok());
    }

    #[test]
    fn tcp_loopback_only_unless_opted_in() {
        let p = CallerPolicy::allow([], []);
        for ok in ["127.0.0.1:1", "127.0.0.3:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            assert!(p.check(&Caller::Tcp(Some(ok.parse().unwrap()))).is_ok(), "{ok}");
        }
        let remote = Caller::Tcp(Some("10.1.2.3:5".parse().unwrap()));
        assert!(p.check(&remote).unwrap_err().contains("not on the loopback"));
        assert!(p.check(&Caller::Tcp(None)).is_err());
        let p = p.allow_non_loopback_tcp(true);
        assert!(p.check(&remote).is_ok());
        assert!(
            p.check(&unix(0, 0)).is_err(),
            "the opt-in does not widen Unix callers"
        );
    }

    #[test]
    fn rate_limited_log() {
        let l = RateLimitedLog::new(Duration::from_secs(3600));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        let l = RateLimitedLog::new(Duration::ZERO);
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
    }
}
