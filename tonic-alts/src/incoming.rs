//! The server side: [`AltsAcceptor`] runs the server handshake over any
//! connection; [`AltsIncoming`] does it for a whole stream of connections
//! (a TCP listener, tonic's `TcpIncoming`, a Unix listener, your own
//! stream), concurrently and off the accept loop, with a bound on in-flight
//! handshakes and a timeout.

use std::any::Any;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::handshake::{READ_BUF, server_handshake_after};
#[cfg(feature = "handshaker-service")]
use crate::handshaker_client::HandshakerServiceClient;
use crate::metrics::{CONNECTIONS_SHED_TOTAL, RefusalLog};
use crate::{AltsConfig, AltsError, AltsStream};

/// Where server handshakes run.
#[derive(Clone, Debug)]
enum Mode {
    Native(AltsConfig),
    #[cfg(feature = "handshaker-service")]
    Service(HandshakerServiceClient),
}

/// Default bound on handshakes running at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;

/// Default listen backlog of [`AltsAcceptor::bind`].
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Runs server handshakes: the transport-agnostic server side.
///
/// [`accept`](AltsAcceptor::accept) turns one connection into an
/// [`AltsStream`]; [`bind`](AltsAcceptor::bind) and
/// [`incoming`](AltsAcceptor::incoming) make an [`AltsIncoming`] for tonic's
/// `serve_with_incoming`.
///
/// ```no_run
/// use tonic_alts::{AltsAcceptor, AltsConfig, CredentialFiles};
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let config = AltsConfig::from_files(
///     CredentialFiles::from_dir("creds/server").issuance_policy("policy.toml"),
/// )?;
/// // TCP with tonic's socket settings:
/// let tcp = tonic::transport::server::TcpIncoming::bind("0.0.0.0:50051".parse()?)?
///     .with_nodelay(Some(true));
/// let incoming = AltsAcceptor::new(config.clone()).max_in_flight(256).incoming(tcp);
/// // ... or a Unix socket:
/// let uds = tokio::net::UnixListener::bind("/run/greeter.sock")?;
/// let incoming_uds =
///     AltsAcceptor::new(config).incoming(tokio_stream::wrappers::UnixListenerStream::new(uds));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AltsAcceptor {
    mode: Mode,
    max_in_flight: usize,
    max_pending: usize,
    max_per_source: usize,
    first_bytes_timeout: Duration,
    backlog: u32,
    refusals: Arc<RefusalLog>,
}

/// Default time a new connection has to send its first handshake bytes.
pub const DEFAULT_FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(2);

/// Default cap on connections from one source address that are waiting for
/// or running a handshake.
pub const DEFAULT_MAX_PER_SOURCE: usize = 64;

/// Default cap on accepted connections waiting for or running a handshake.
pub const DEFAULT_MAX_PENDING: usize = 4 * DEFAULT_MAX_IN_FLIGHT;

/// Default interval between two `warn` summaries of refused handshakes.
const REFUSAL_SUMMARY_EVERY: Duration = Duration::from_secs(10);

impl AltsAcceptor {
    /// Runs handshakes in process with `config`.
    pub fn new(config: AltsConfig) -> Self {
        Self {
            mode: Mode::Native(config),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_pending: DEFAULT_MAX_PENDING,
            max_per_source: DEFAULT_MAX_PER_SOURCE,
            first_bytes_timeout: DEFAULT_FIRST_BYTES_TIMEOUT,
            backlog: DEFAULT_BACKLOG,
            refusals: Arc::new(RefusalLog::new(REFUSAL_SUMMARY_EVERY)),
        }
    }

    /// Runs each handshake through the `grpc.gcp.HandshakerService` that
    /// `service` talks to.
    #[cfg(feature = "handshaker-service")]
    pub fn via_handshaker_service(service: HandshakerServiceClient) -> Self {
        Self {
            mode: Mode::Service(service),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_pending: DEFAULT_MAX_PENDING,
            max_per_source: DEFAULT_MAX_PER_SOURCE,
            first_bytes_timeout: DEFAULT_FIRST_BYTES_TIMEOUT,
            backlog: DEFAULT_BACKLOG,
            refusals: Arc::new(RefusalLog::new(REFUSAL_SUMMARY_EVERY)),
        }
    }

    /// Runs each handshake through the handshaker service stock gRPC would
    /// use here (`$GCE_METADATA_HOST`, else Google's metadata server).
    #[cfg(feature = "handshaker-service")]
    pub fn via_default_handshaker_service() -> Self {
        Self::via_handshaker_service(HandshakerServiceClient::from_env())
    }

    /// Handshakes running at once (default 512). A connection takes a slot
    /// only once its first bytes arrived, so idle connections do not hold
    /// one.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Accepted connections waiting for their first bytes or a slot, or
    /// running a handshake (default 2048). When reached, [`AltsIncoming`]
    /// stops taking connections until one is done.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }

    /// Connections from one source IP address waiting for or running a
    /// handshake (default 64); more are closed at once. Keeps one noisy or
    /// hostile host from taking every slot.
    pub fn max_per_source(mut self, n: usize) -> Self {
        self.max_per_source = n.max(1);
        self
    }

    /// Time a new connection has to send its first bytes (default 2 s)
    /// before it is dropped. The handshake timeout counts from then.
    pub fn first_bytes_timeout(mut self, timeout: Duration) -> Self {
        self.first_bytes_timeout = timeout;
        self
    }

    /// Refused handshakes are logged one by one at `debug`, and summarized
    /// at `warn` at most once per `interval` (default 10 s), so a port scan
    /// cannot flood the log.
    pub fn refusal_summary_interval(mut self, interval: Duration) -> Self {
        self.refusals = Arc::new(RefusalLog::new(interval));
        self
    }

    /// The listen backlog [`bind`](Self::bind) asks for (default 1024).
    pub fn backlog(mut self, n: u32) -> Self {
        self.backlog = n;
        self
    }

    /// Runs the server handshake over `io`: waits up to the first-bytes
    /// timeout for the client to speak, then runs the handshake within the
    /// handshake timeout.
    pub async fn accept<IO>(&self, mut io: IO) -> Result<AltsStream<IO>, AltsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let first = self.first_bytes(&mut io).await?;
        self.handshake_after(io, first).await
    }

    /// Waits for the client's first bytes (native mode; a handshaker service
    /// reads them itself).
    async fn first_bytes<IO>(&self, io: &mut IO) -> Result<BytesMut, AltsError>
    where
        IO: AsyncRead + Unpin,
    {
        let mut first = BytesMut::with_capacity(READ_BUF);
        if !matches!(self.mode, Mode::Native(_)) {
            return Ok(first);
        }
        match tokio::time::timeout(self.first_bytes_timeout, io.read_buf(&mut first)).await {
            Err(_) => Err(AltsError::Timeout(self.first_bytes_timeout)),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(0)) => Err(AltsError::PeerClosed),
            Ok(Ok(n)) => {
                tracing::trace!(bytes = n, "first handshake bytes read");
                Ok(first)
            }
        }
    }

    async fn handshake_after<IO>(&self, io: IO, first: BytesMut) -> Result<AltsStream<IO>, AltsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match &self.mode {
            Mode::Native(config) => {
                config.check_material()?;
                server_handshake_after(io, first, config.snapshot(), config.handshake_timeout).await
            }
            #[cfg(feature = "handshaker-service")]
            Mode::Service(client) => client.server_handshake(io).await,
        }
    }

    /// Binds a TCP listener on `addr` (with `SO_REUSEADDR` and the
    /// configured backlog; `TCP_NODELAY` on every connection) and serves
    /// ALTS on it.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> std::io::Result<AltsIncoming<TcpStream>> {
        let mut last = None;
        for addr in tokio::net::lookup_host(addr).await? {
            match listen(addr, self.backlog) {
                Ok(l) => return Ok(self.listener(l)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("address resolved to nothing")))
    }

    /// Serves ALTS on an existing TCP listener (`TCP_NODELAY` on every
    /// connection).
    pub fn listener(self, listener: TcpListener) -> AltsIncoming<TcpStream> {
        let local_addr = listener.local_addr().ok();
        let stream = TcpListenerStream::new(listener).map(|r| {
            r.inspect(|tcp| {
                let _ = tcp.set_nodelay(true);
            })
        });
        let mut incoming = self.incoming(stream);
        incoming.local_addr = local_addr;
        incoming
    }

    /// Serves ALTS on any stream of connections: tonic's `TcpIncoming` (with
    /// its nodelay and keepalive settings), a `UnixListenerStream`, or your
    /// own. Failed handshakes are logged and dropped; errors of the stream
    /// itself (e.g. out of file descriptors) are logged and skipped after a
    /// short pause.
    pub fn incoming<S, IO, E>(self, connections: S) -> AltsIncoming<IO>
    where
        S: Stream<Item = Result<IO, E>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(self.max_in_flight.min(self.max_pending));
        let task = tokio::spawn(accept_loop(Box::pin(connections), self, tx));
        AltsIncoming {
            rx,
            local_addr: None,
            _task: AbortOnDropHandle::new(task),
        }
    }
}

fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// A stream of authenticated connections for `serve_with_incoming`.
///
/// A background task takes connections and runs each handshake in its own
/// task; failed handshakes (garbage, refused identities, timeouts) are logged
/// and dropped without affecting other connections. When `max_in_flight`
/// handshakes are running, the task stops taking connections until one
/// finishes. Dropping the `AltsIncoming` stops the task.
#[derive(Debug)]
pub struct AltsIncoming<IO = TcpStream> {
    rx: mpsc::Receiver<AltsStream<IO>>,
    local_addr: Option<SocketAddr>,
    _task: AbortOnDropHandle<()>,
}

impl AltsIncoming<TcpStream> {
    /// Binds `addr` and serves ALTS on it.
    pub async fn bind(addr: impl ToSocketAddrs, config: AltsConfig) -> std::io::Result<Self> {
        AltsAcceptor::new(config).bind(addr).await
    }

    /// Serves ALTS on an existing listener.
    pub fn new(listener: TcpListener, config: AltsConfig, max_in_flight: usize) -> Self {
        AltsAcceptor::new(config)
            .max_in_flight(max_in_flight)
            .listener(listener)
    }

    /// Serves ALTS on `listener`, running each server handshake through the
    /// `grpc.gcp.HandshakerService` that `service` talks to.
    #[cfg(feature = "handshaker-service")]
    pub fn with_handshaker_service(
        listener: TcpListener,
        service: HandshakerServiceClient,
        max_in_flight: usize,
    ) -> Self {
        AltsAcceptor::via_handshaker_service(service)
            .max_in_flight(max_in_flight)
            .listener(listener)
    }
}

impl<IO> AltsIncoming<IO> {
    /// The address being served (`0.0.0.0:0` when not a TCP listener made
    /// by this crate).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

/// The client's address for logs, when the transport has one.
fn remote_of<IO: Connected>(io: &IO) -> Option<SocketAddr> {
    let info = io.connect_info();
    (&info as &dyn Any)
        .downcast_ref::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
}

/// Counts connections per source address; the count drops with the guard.
struct SourceGuard {
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl SourceGuard {
    fn try_new(sources: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut map = sources.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            sources: sources.clone(),
            ip,
        })
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut map = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

async fn accept_loop<S, IO, E>(
    mut connections: Pin<Box<S>>,
    acceptor: AltsAcceptor,
    tx: mpsc::Sender<AltsStream<IO>>,
) where
    S: Stream<Item = Result<IO, E>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let pending = Arc::new(Semaphore::new(acceptor.max_pending));
    let active = Arc::new(Semaphore::new(acceptor.max_in_flight));
    let sources = Arc::new(Mutex::new(HashMap::new()));
    let acceptor = Arc::new(acceptor);
    let mut handshakes = JoinSet::new();
    loop {
        let Ok(permit) = pending.clone().acquire_owned().await else {
            return;
        };
        let next = tokio::select! {
            n = connections.next() => n,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => { drop(permit); continue; }
        };
        let mut io = match next {
            None => return,
            Some(Ok(io)) => io,
            Some(Err(e)) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let remote = remote_of(&io);
        let source = match remote {
            Some(addr) => match SourceGuard::try_new(&sources, addr.ip(), acceptor.max_per_source) {
                Some(g) => Some(g),
                None => {
                    metrics::counter!(CONNECTIONS_SHED_TOTAL, "reason" => "per_source_limit").increment(1);
                    tracing::debug!(%addr, "too many handshakes from this address; connection closed");
                    continue;
                }
            },
            None => None,
        };
        let tx = tx.clone();
        let acceptor = acceptor.clone();
        let active = active.clone();
        handshakes.spawn(async move {
            let (_pending, _source) = (permit, source);
            let res = async {
                // Idle connections wait here without a handshake slot.
                let first = acceptor.first_bytes(&mut io).await?;
                let _slot = active.acquire_owned().await.map_err(|_| AltsError::PeerClosed)?;
                acceptor.handshake_after(io, first).await
            }
            .await;
            match res {
                Ok(stream) => {
                    let _ = tx.send(stream).await;
                }
                Err(e) => acceptor.refusals.refused(remote, &e),
            }
        });
        while handshakes.try_join_next().is_some() {}
    }
}

impl<IO> Stream for AltsIncoming<IO> {
    type Item = Result<AltsStream<IO>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|s| s.map(Ok))
    }
}
