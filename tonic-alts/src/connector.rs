//! The client side: a tonic connector that opens a connection with an inner
//! connector (TCP by default) and runs the ALTS handshake before HTTP/2.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use alts_core::handshake::ClientOptions;
use arc_swap::ArcSwapOption;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::transport::Endpoint;

use crate::error::ConfigError;
use crate::handshake::{client_handshake, client_handshake_coalesced};
#[cfg(feature = "handshaker-service")]
use crate::handshaker_client::HandshakerServiceClient;
use crate::{AltsConfig, AltsError, AltsPeer, AltsStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type PeerHook = Arc<dyn Fn(&AltsPeer) + Send + Sync>;

/// A `tower::Service<Uri>` for `Endpoint::connect_with_connector`: opens a
/// connection with an inner connector (`C`, a hyper [`HttpConnector`] by
/// default, or any `Service<Uri>` such as a Unix-socket dialer), runs the
/// client handshake over it, and refuses the connection before HTTP/2
/// unless the server proves one of the target identities. A connector must
/// name its server ([`target_identity`](Self::target_identity)) or say
/// explicitly that any server will do ([`accept_any_server`](Self::accept_any_server)).
///
/// Dial `http://` URIs: ALTS replaces TLS, and an `https://` URI is refused
/// with [`ConfigError::HttpsUri`] (with a tonic TLS feature enabled, tonic
/// would otherwise try to run TLS inside ALTS).
///
/// ```no_run
/// use tonic::transport::Endpoint;
/// use tonic_alts::{AltsConfig, AltsConnector, CredentialFiles};
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let config = AltsConfig::from_files(
///     CredentialFiles::from_dir("creds/client").issuance_policy("policy.toml"),
/// )?;
/// let endpoint = Endpoint::from_static("http://10.0.0.7:50051").tcp_nodelay(true);
/// // Copies the endpoint's TCP settings (nodelay, keepalive, connect timeout).
/// let connector = AltsConnector::for_endpoint(&endpoint, config).target_identity("greeter-prod");
/// let channel = endpoint.connect_with_connector(connector).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AltsConnector<C = HttpConnector> {
    inner: C,
    alts: ClientSide,
}

/// Everything but the inner connector.
#[derive(Clone)]
struct ClientSide {
    mode: Mode,
    targets: Vec<String>,
    accept_any: bool,
    on_connect: Option<PeerHook>,
    last_peer: Arc<ArcSwapOption<AltsPeer>>,
}

/// Where the handshake runs.
#[derive(Clone, Debug)]
enum Mode {
    /// In process, with these settings.
    Native(AltsConfig),
    /// Through a `grpc.gcp.HandshakerService`.
    #[cfg(feature = "handshaker-service")]
    Service(HandshakerServiceClient),
}

/// A TCP connector with `TCP_NODELAY` (the handshake is one small write each way).
fn default_http() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http
}

impl AltsConnector<HttpConnector> {
    /// A connector over TCP using `config`.
    pub fn new(config: AltsConfig) -> Self {
        Self::with_connector(default_http(), config)
    }

    /// A connector over TCP with the TCP settings of `endpoint`
    /// (`tcp_nodelay`, `tcp_keepalive` and its interval and retries,
    /// `connect_timeout`). tonic applies those settings only to its own
    /// connector, so a custom connector must copy them; `local_address` has
    /// no getter in tonic: set it on an [`HttpConnector`] and use
    /// [`with_connector`](AltsConnector::with_connector).
    pub fn for_endpoint(endpoint: &Endpoint, config: AltsConfig) -> Self {
        Self::with_connector(Self::http_connector_for(endpoint), config)
    }

    /// The [`HttpConnector`] tonic would build for `endpoint`.
    pub fn http_connector_for(endpoint: &Endpoint) -> HttpConnector {
        let mut http = HttpConnector::new();
        http.set_nodelay(endpoint.get_tcp_nodelay());
        http.set_keepalive(endpoint.get_tcp_keepalive());
        http.set_keepalive_interval(endpoint.get_tcp_keepalive_interval());
        http.set_keepalive_retries(endpoint.get_tcp_keepalive_retries());
        http.set_connect_timeout(endpoint.get_connect_timeout());
        http
    }

    /// A connector that runs the handshake through the
    /// `grpc.gcp.HandshakerService` at `addr` instead of in process (e.g.
    /// Google's on Google Cloud, or `alts-handshaker`). The service holds the
    /// credentials; this connector still checks the peer it reports against
    /// the target identities.
    #[cfg(feature = "handshaker-service")]
    pub fn via_handshaker_service(addr: impl Into<String>) -> Self {
        Self::with_handshaker_client(HandshakerServiceClient::new(addr))
    }

    /// Runs the handshake through the handshaker service stock gRPC would
    /// use here: `$GCE_METADATA_HOST` when set, else Google's metadata
    /// server (`metadata.google.internal.:8080`).
    #[cfg(feature = "handshaker-service")]
    pub fn via_default_handshaker_service() -> Self {
        Self::with_handshaker_client(HandshakerServiceClient::from_env())
    }

    /// Like [`AltsConnector::via_handshaker_service`] with a configured client.
    #[cfg(feature = "handshaker-service")]
    pub fn with_handshaker_client(client: HandshakerServiceClient) -> Self {
        Self::new_with(default_http(), Mode::Service(client))
    }

    /// Dials `uri` over TCP and runs the handshake.
    pub async fn connect(&self, uri: Uri) -> Result<AltsStream<TcpStream>, AltsError> {
        let authority = check_uri(&uri)?;
        let mut inner = self.inner.clone();
        let tcp = tower_service::Service::call(&mut inner, uri)
            .await
            .map_err(|e| AltsError::Io(std::io::Error::other(e)))?;
        self.alts.handshake(tcp.into_inner(), &authority, true).await
    }
}

impl<C> AltsConnector<C> {
    /// A connector opening connections with `inner` (any `Service<Uri>`
    /// returning a hyper I/O type: an [`HttpConnector`] with your settings,
    /// a Unix-socket dialer, a proxy tunnel...), then running the handshake
    /// with `config`.
    pub fn with_connector(inner: C, config: AltsConfig) -> Self {
        Self::new_with(inner, Mode::Native(config))
    }

    fn new_with(inner: C, mode: Mode) -> Self {
        Self {
            inner,
            alts: ClientSide {
                mode,
                targets: Vec::new(),
                accept_any: false,
                on_connect: None,
                last_peer: Arc::new(ArcSwapOption::empty()),
            },
        }
    }

    /// Replaces the inner connector, keeping the ALTS settings.
    pub fn inner_connector<D>(self, inner: D) -> AltsConnector<D> {
        AltsConnector {
            inner,
            alts: self.alts,
        }
    }

    /// Accepts `identity` as the server (call several times for a set).
    pub fn target_identity(mut self, identity: impl Into<String>) -> Self {
        self.alts.targets.push(identity.into());
        self
    }

    /// Accepts any of `identities` as the server.
    pub fn target_identities(mut self, identities: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.alts.targets.extend(identities.into_iter().map(Into::into));
        self
    }

    /// Accepts any server identity the issuance policy allows, instead of
    /// naming the server with [`target_identity`](Self::target_identity).
    /// Without targets and without this call, connecting fails with
    /// [`ConfigError::NoTargetIdentity`]: a client that does not name its
    /// server accepts any workload under the root as that server.
    pub fn accept_any_server(mut self) -> Self {
        self.alts.accept_any = true;
        self
    }

    /// Calls `hook` with the authenticated server of each new connection,
    /// e.g. to log or count which backend and identity a channel reached.
    pub fn on_connect(mut self, hook: impl Fn(&AltsPeer) + Send + Sync + 'static) -> Self {
        self.alts.on_connect = Some(Arc::new(hook));
        self
    }

    /// The server of the most recent connection this connector (or a clone
    /// of it) made. A tonic `Channel` keeps one connection at a time, so for
    /// a channel built with this connector this is the peer its RPCs use.
    pub fn last_peer(&self) -> Option<Arc<AltsPeer>> {
        self.alts.last_peer.load_full()
    }

    /// Runs the client handshake over an already open connection `io`:
    /// the transport-agnostic core of the connector. `authority` names the
    /// server (`host:port`); it keys the session-ticket cache. The last
    /// handshake message is sent before this returns, so the server's
    /// handshake completes even if the application waits for it to speak
    /// first.
    pub async fn handshake<IO>(&self, io: IO, authority: &str) -> Result<AltsStream<IO>, AltsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.alts.handshake(io, authority, false).await
    }
}

impl ClientSide {
    /// `coalesce`: keep the last handshake message buffered until the first
    /// write (for HTTP/2, whose client speaks first: it saves a packet).
    async fn handshake<IO>(
        &self,
        io: IO,
        authority: &str,
        coalesce: bool,
    ) -> Result<AltsStream<IO>, AltsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        if self.targets.is_empty() && !self.accept_any {
            return Err(ConfigError::NoTargetIdentity.into());
        }
        let mut stream = match &self.mode {
            Mode::Native(config) => {
                config.check_material()?;
                let options = ClientOptions {
                    target_identities: self.targets.clone(),
                    session_key: Some(authority.to_owned()),
                };
                let (cfg, timeout) = (config.snapshot(), config.handshake_timeout);
                if coalesce {
                    client_handshake_coalesced(io, cfg, options, timeout).await?
                } else {
                    client_handshake(io, cfg, options, timeout).await?
                }
            }
            #[cfg(feature = "handshaker-service")]
            Mode::Service(client) => {
                let stream = client.client_handshake(io, &self.targets, authority).await?;
                // Do not rely on the service alone to have checked the targets.
                let got = &stream.peer().identity;
                if !self.targets.is_empty() && !self.targets.iter().any(|t| t == got) {
                    return Err(AltsError::TargetMismatch { got: got.clone() });
                }
                stream
            }
        };
        if !self.targets.is_empty() {
            let mut peer = AltsPeer::clone(stream.peer());
            peer.matched_target = Some(peer.identity.clone());
            stream.set_peer(Arc::new(peer));
        }
        let peer = stream.peer().clone();
        if let Some(hook) = &self.on_connect {
            hook(&peer);
        }
        self.last_peer.store(Some(peer));
        Ok(stream)
    }
}

/// Refuses `https://` and host-less URIs; returns the authority.
fn check_uri(uri: &Uri) -> Result<String, AltsError> {
    if uri.scheme_str() == Some("https") {
        return Err(ConfigError::HttpsUri(uri.to_string()).into());
    }
    let authority = uri
        .authority()
        .ok_or_else(|| ConfigError::NoHost(uri.to_string()))?;
    Ok(authority.as_str().to_owned())
}

impl<C> std::fmt::Debug for AltsConnector<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AltsConnector")
            .field("mode", &self.alts.mode)
            .field("targets", &self.alts.targets)
            .finish_non_exhaustive()
    }
}

impl<C> tower_service::Service<Uri> for AltsConnector<C>
where
    C: tower_service::Service<Uri> + Clone + Send + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = TokioIo<AltsStream<TokioIo<C::Response>>>;
    type Error = AltsError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, AltsError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| AltsError::Io(std::io::Error::other(e.into())))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let authority = check_uri(&uri);
        // Clone-and-swap so the inner service we polled ready is the one called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let alts = self.alts.clone();
        Box::pin(async move {
            let authority = authority?;
            let io = inner
                .call(uri)
                .await
                .map_err(|e| AltsError::Io(std::io::Error::other(e.into())))?;
            // hyper writes the HTTP/2 preface at once: ClientFinished rides with it.
            alts.handshake(TokioIo::new(io), &authority, true)
                .await
                .map(TokioIo::new)
        })
    }
}
