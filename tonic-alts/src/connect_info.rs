//! Connection info for tonic handlers, in the shape of `TlsConnectInfo`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::{AltsPeer, AltsStream};

/// What tonic puts into every request's extensions for an ALTS connection.
#[derive(Clone, Debug)]
pub struct AltsConnectInfo {
    /// Our address.
    pub local_addr: Option<SocketAddr>,
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The authenticated peer.
    pub peer: Arc<AltsPeer>,
}

impl Connected for AltsStream<TcpStream> {
    type ConnectInfo = AltsConnectInfo;

    fn connect_info(&self) -> AltsConnectInfo {
        AltsConnectInfo {
            local_addr: self.get_ref().local_addr().ok(),
            remote_addr: self.get_ref().peer_addr().ok(),
            peer: self.peer().clone(),
        }
    }
}

/// Reads ALTS connection facts from a request.
pub trait AltsRequestExt {
    /// The authenticated peer of the connection this request came on.
    fn alts_peer(&self) -> Option<Arc<AltsPeer>>;
    /// The connection info.
    fn alts_connect_info(&self) -> Option<&AltsConnectInfo>;
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
