//! The client side: a tonic connector that dials TCP and runs the ALTS
//! handshake before HTTP/2 starts.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use alts_core::handshake::ClientOptions;
use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::handshake::client_handshake_coalesced;
use crate::handshaker_client::HandshakerServiceClient;
use crate::{AltsConfig, AltsError, AltsStream};

/// A `tower::Service<Uri>` for `Endpoint::connect_with_connector`: connects
/// over TCP to the URI's host and port (plain `http://` URIs), runs the
/// client handshake, and refuses the connection before HTTP/2 if the server
/// is not one of the target identities.
#[derive(Clone, Debug)]
pub struct AltsConnector {
    mode: Mode,
    targets: Vec<String>,
}

/// Where the handshake runs.
#[derive(Clone, Debug)]
enum Mode {
    /// In process, with these settings.
    Native(AltsConfig),
    /// Through a `grpc.gcp.HandshakerService`.
    Service(HandshakerServiceClient),
}

impl AltsConnector {
    /// A connector using `config`, accepting any server identity the policy allows.
    pub fn new(config: AltsConfig) -> Self {
        Self {
            mode: Mode::Native(config),
            targets: Vec::new(),
        }
    }

    /// A connector that runs the handshake through the
    /// `grpc.gcp.HandshakerService` at `addr` instead of in process (e.g.
    /// [`DEFAULT_HANDSHAKER_SERVICE`](crate::DEFAULT_HANDSHAKER_SERVICE) on
    /// Google Cloud, or our `alts-handshaker`). The service holds the
    /// credentials and checks the target identities.
    pub fn via_handshaker_service(addr: impl Into<String>) -> Self {
        Self::with_handshaker_client(HandshakerServiceClient::new(addr))
    }

    /// Like [`AltsConnector::via_handshaker_service`] with a configured client.
    pub fn with_handshaker_client(client: HandshakerServiceClient) -> Self {
        Self {
            mode: Mode::Service(client),
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
        match &self.mode {
            Mode::Native(config) => {
                let options = ClientOptions {
                    target_identities: self.targets.clone(),
                    session_key: Some(format!("{host}:{port}")),
                };
                // hyper writes the HTTP/2 preface at once: ClientFinished rides with it.
                client_handshake_coalesced(tcp, config.snapshot(), options, config.handshake_timeout).await
            }
            Mode::Service(client) => {
                client
                    .client_handshake(tcp, &self.targets, &format!("{host}:{port}"))
                    .await
            }
        }
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
