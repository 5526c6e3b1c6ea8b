//! The client side: a tonic connector that dials TCP and runs the ALTS
//! handshake before HTTP/2 starts.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use alts_core::handshake::ClientOptions;
use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::handshake::client_handshake;
use crate::{AltsConfig, AltsError, AltsStream};

/// A `tower::Service<Uri>` for `Endpoint::connect_with_connector`: connects
/// over TCP to the URI's host and port (plain `http://` URIs), runs the
/// client handshake, and refuses the connection before HTTP/2 if the server
/// is not one of the target identities.
#[derive(Clone, Debug)]
pub struct AltsConnector {
    config: AltsConfig,
    targets: Vec<String>,
}

impl AltsConnector {
    /// A connector using `config`, accepting any server identity the policy allows.
    pub fn new(config: AltsConfig) -> Self {
        Self {
            config,
            targets: Vec::new(),
        }
    }

    /// Accepts `identity` as the server (call several times for a set).
    pub fn target_identity(mut self, identity: impl Into<String>) -> Self {
        self.targets.push(identity.into());
        self
    }

    /// Accepts any of `identities` as the server.
    pub fn target_identities(mut self, identities: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.targets.extend(identities.into_iter().map(Into::into));
        self
    }

    /// Dials `uri` and runs the handshake.
    pub async fn connect(&self, uri: Uri) -> Result<AltsStream<TcpStream>, AltsError> {
        let host = uri
            .host()
            .ok_or_else(|| AltsError::Config(format!("URI {uri} has no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let options = ClientOptions {
            target_identities: self.targets.clone(),
            session_key: Some(format!("{host}:{port}")),
        };
        client_handshake(
            tcp,
            self.config.snapshot(),
            options,
            self.config.handshake_timeout,
        )
        .await
    }
}

impl tower_service::Service<Uri> for AltsConnector {
    type Response = TokioIo<AltsStream<TcpStream>>;
    type Error = AltsError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, AltsError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await.map(TokioIo::new) })
    }
}
