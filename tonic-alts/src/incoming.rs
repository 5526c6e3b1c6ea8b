//! The server side: accepts TCP connections and runs handshakes concurrently,
//! off the accept loop, with a bound on in-flight handshakes and a timeout.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::handshake::server_handshake;
use crate::{AltsConfig, AltsStream};

/// Default bound on handshakes running at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;

/// A stream of authenticated connections for `serve_with_incoming`.
///
/// A background task accepts connections and runs each handshake in its own
/// task; failed handshakes (garbage, refused identities, timeouts) are logged
/// and dropped without affecting other connections. When `max_in_flight`
/// handshakes are running, the task stops accepting until one finishes.
#[derive(Debug)]
pub struct AltsIncoming {
    rx: mpsc::Receiver<AltsStream<TcpStream>>,
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AltsIncoming {
    /// Binds `addr` and serves ALTS on it.
    pub async fn bind(addr: impl ToSocketAddrs, config: AltsConfig) -> std::io::Result<Self> {
        Ok(Self::new(
            TcpListener::bind(addr).await?,
            config,
            DEFAULT_MAX_IN_FLIGHT,
        ))
    }

    /// Serves ALTS on an existing listener.
    pub fn new(listener: TcpListener, config: AltsConfig, max_in_flight: usize) -> Self {
        let local_addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, rx) = mpsc::channel(max_in_flight.max(1));
        let task = tokio::spawn(accept_loop(listener, config, max_in_flight.max(1), tx));
        Self { rx, local_addr, task }
    }

    /// The address being served.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for AltsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: AltsConfig,
    max_in_flight: usize,
    tx: mpsc::Sender<AltsStream<TcpStream>>,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut handshakes = JoinSet::new();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => { drop(permit); continue; }
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let cfg = config.snapshot();
        let timeout = config.handshake_timeout;
        let tx = tx.clone();
        handshakes.spawn(async move {
            let _permit = permit;
            match server_handshake(tcp, cfg, timeout).await {
                Ok(stream) => {
                    let _ = tx.send(stream).await;
                }
                Err(e) => tracing::warn!(%remote, error = %e, "ALTS handshake refused"),
            }
        });
        while handshakes.try_join_next().is_some() {}
    }
}

impl Stream for AltsIncoming {
    type Item = Result<AltsStream<TcpStream>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|s| s.map(Ok))
    }
}
