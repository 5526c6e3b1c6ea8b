//! Connection info for tonic handlers, in the shape of `TlsConnectInfo`.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;

use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::{AltsPeer, AltsStream};

/// What tonic puts into every request's extensions for an ALTS connection:
/// the authenticated peer, the addresses (for TCP) and the inner
/// transport's own connection info.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AltsConnectInfo {
    /// Our address (TCP only).
    pub local_addr: Option<SocketAddr>,
    /// The client's address (TCP only).
    pub remote_addr: Option<SocketAddr>,
    /// The authenticated peer.
    pub peer: Arc<AltsPeer>,
    transport: Arc<dyn Any + Send + Sync>,
}

impl AltsConnectInfo {
    /// The inner transport's connection info, e.g. tonic's `TcpConnectInfo`
    /// for TCP or `UdsConnectInfo` for a Unix socket (with the peer's
    /// credentials).
    pub fn transport<T: Any>(&self) -> Option<&T> {
        self.transport.downcast_ref()
    }
}

/// Any transport tonic can serve (`TcpStream`, `UnixStream`, a user's own
/// type implementing `Connected`) keeps its connection info under ALTS.
impl<T> Connected for AltsStream<T>
where
    T: Connected,
{
    type ConnectInfo = AltsConnectInfo;

    fn connect_info(&self) -> AltsConnectInfo {
        let inner = self.get_ref().connect_info();
        let tcp = (&inner as &dyn Any).downcast_ref::<TcpConnectInfo>();
        AltsConnectInfo {
            local_addr: tcp.and_then(TcpConnectInfo::local_addr),
            remote_addr: tcp.and_then(TcpConnectInfo::remote_addr),
            peer: self.peer().clone(),
            transport: Arc::new(inner),
        }
    }
}

/// Reads ALTS connection facts from a request.
pub trait AltsRequestExt {
    /// The authenticated peer of the connection this request came on.
    fn alts_peer(&self) -> Option<Arc<AltsPeer>>;
    /// The connection info.
    fn alts_connect_info(&self) -> Option<&AltsConnectInfo>;
    /// The client's address, with or without the authorization layer
    /// (tonic's own `Request::remote_addr()` only sees it when
    /// [`AltsAuthzLayer`](crate::AltsAuthzLayer) is installed, because tonic
    /// looks for a `TcpConnectInfo` there).
    fn alts_remote_addr(&self) -> Option<SocketAddr> {
        self.alts_connect_info().and_then(|i| i.remote_addr)
    }
}

impl<T> AltsRequestExt for tonic::Request<T> {
    fn alts_peer(&self) -> Option<Arc<AltsPeer>> {
        peer_of(self.extensions())
    }

    fn alts_connect_info(&self) -> Option<&AltsConnectInfo> {
        self.extensions().get::<AltsConnectInfo>()
    }
}

impl<B> AltsRequestExt for http::Request<B> {
    fn alts_peer(&self) -> Option<Arc<AltsPeer>> {
        peer_of(self.extensions())
    }

    fn alts_connect_info(&self) -> Option<&AltsConnectInfo> {
        self.extensions().get::<AltsConnectInfo>()
    }
}

fn peer_of(ext: &http::Extensions) -> Option<Arc<AltsPeer>> {
    ext.get::<AltsConnectInfo>()
        .map(|i| i.peer.clone())
        .or_else(|| ext.get::<Arc<AltsPeer>>().cloned())
}

/// Adds a `TcpConnectInfo` (so `Request::remote_addr()` works) and the
/// `Arc<AltsPeer>` next to the `AltsConnectInfo` tonic inserted.
pub(crate) fn enrich(ext: &mut http::Extensions) {
    if let Some(info) = ext.get::<AltsConnectInfo>().cloned() {
        if ext.get::<TcpConnectInfo>().is_none() {
            ext.insert(TcpConnectInfo {
                local_addr: info.local_addr,
                remote_addr: info.remote_addr,
            });
        }
        ext.insert(info.peer);
    }
}
