//! The rustls side: mutual TLS 1.3 with ECDSA P-256 certificates from rcgen,
//! with either of rustls's providers (`ring`, `aws-lc-rs`), in memory and
//! through tonic over TCP.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, ServerConfig, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::Connected;

/// The name the server certificate carries.
pub const SERVER_NAME: &str = "backend.test";

/// One of rustls's crypto providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Ring,
    AwsLc,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Provider::Ring, Provider::AwsLc];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Ring => "ring",
            Provider::AwsLc => "aws-lc-rs",
        }
    }

    fn get(self) -> Arc<CryptoProvider> {
        Arc::new(match self {
            Provider::Ring => rustls::crypto::ring::default_provider(),
            Provider::AwsLc => rustls::crypto::aws_lc_rs::default_provider(),
        })
    }
}

type Leaf = (CertificateDer<'static>, PrivateKeyDer<'static>);

/// A CA that issues the server's and clients' leaf certificates directly
/// (the shortest realistic chain).
pub struct Pki {
    ca: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    server: Leaf,
}

impl Pki {
    pub fn new() -> anyhow::Result<Self> {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca_key = KeyPair::generate_for(alg)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "compare CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key)?.der().clone();
        let issuer = Issuer::new(ca_params, ca_key);
        let server = leaf(&issuer, SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth)?;
        Ok(Self { ca, issuer, server })
    }

    /// A new client certificate (a fresh identity).
    pub fn client(&self, n: usize) -> anyhow::Result<Leaf> {
        leaf(
            &self.issuer,
            &format!("client-{n}.test"),
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).expect("CA certificate");
        Arc::new(roots)
    }

    /// A server config requiring client certificates. With `resume`, rustls's
    /// defaults (stateful session cache, tickets after each handshake);
    /// without, no session storage and no tickets.
    pub fn server_config(&self, p: Provider, resume: bool) -> anyhow::Result<Arc<ServerConfig>> {
        server_config(self.roots(), &self.server, p, resume)
    }

    /// Writes the CA certificate and the server's certificate and key into
    /// `dir` (for [`server_config_from_files`]).
    pub fn write_server_files(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(dir.join("tls-ca.der"), &self.ca)?;
        std::fs::write(dir.join("tls-server.der"), &self.server.0)?;
        std::fs::write(dir.join("tls-server.key"), self.server.1.secret_der())?;
        Ok(())
    }

    /// A client config presenting `leaf`; with `resume`, rustls's default
    /// in-memory session store, else resumption disabled.
    pub fn client_config(&self, p: Provider, leaf: &Leaf, resume: bool) -> anyhow::Result<Arc<ClientConfig>> {
        let mut cc = ClientConfig::builder_with_provider(p.get())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots())
            .with_client_auth_cert(vec![leaf.0.clone()], leaf.1.clone_key())?;
        cc.alpn_protocols = vec![b"h2".to_vec()];
        if !resume {
            cc.resumption = Resumption::disabled();
        }
        Ok(Arc::new(cc))
    }
}

/// A server config (no resumption) from the files [`Pki::write_server_files`] wrote.
pub fn server_config_from_files(dir: &Path, p: Provider) -> anyhow::Result<Arc<ServerConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(std::fs::read(dir.join("tls-ca.der"))?))?;
    let cert = CertificateDer::from(std::fs::read(dir.join("tls-server.der"))?);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(std::fs::read(
        dir.join("tls-server.key"),
    )?));
    server_config(Arc::new(roots), &(cert, key), p, false)
}

fn server_config(
    roots: Arc<RootCertStore>,
    server: &Leaf,
    p: Provider,
    resume: bool,
) -> anyhow::Result<Arc<ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, p.get()).build()?;
    let mut sc = ServerConfig::builder_with_provider(p.get())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.0.clone()], server.1.clone_key())?;
    sc.alpn_protocols = vec![b"h2".to_vec()];
    if !resume {
        sc.session_storage = Arc::new(NoServerSessionStorage {});
        sc.send_tls13_tickets = 0;
    }
    Ok(Arc::new(sc))
}

fn leaf(issuer: &Issuer<'static, KeyPair>, san: &str, eku: ExtendedKeyUsagePurpose) -> anyhow::Result<Leaf> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(vec![san.to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, san);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    let cert = params.signed_by(&key, issuer)?;
    Ok((
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    ))
}

/// Moves everything `from` wants to write into `to`. Returns whether any byte moved.
fn shuttle(from: &mut rustls::Connection, to: &mut rustls::Connection, buf: &mut Vec<u8>) -> bool {
    let mut moved = false;
    while from.wants_write() {
        buf.clear();
        from.write_tls(buf).expect("write_tls to a Vec");
        let mut rd = &buf[..];
        while !rd.is_empty() {
            moved |= to.read_tls(&mut rd).expect("read_tls from a slice") > 0;
            to.process_new_packets().expect("rustls handshake");
        }
    }
    moved
}

/// One mutual-TLS handshake in memory, client and server in this thread,
/// including delivery of the server's session tickets (if any) to the
/// client. Returns the handshake kind.
pub fn handshake_in_memory(
    cc: &Arc<ClientConfig>,
    sc: &Arc<ServerConfig>,
    buf: &mut Vec<u8>,
) -> HandshakeKind {
    let name = ServerName::try_from(SERVER_NAME).expect("server name");
    let mut client: rustls::Connection = ClientConnection::new(cc.clone(), name).expect("client").into();
    let mut server: rustls::Connection = ServerConnection::new(sc.clone()).expect("server").into();
    loop {
        let a = shuttle(&mut client, &mut server, buf);
        let b = shuttle(&mut server, &mut client, buf);
        if !client.is_handshaking()
            && !server.is_handshaking()
            && !client.wants_write()
            && !server.wants_write()
        {
            break;
        }
        assert!(a || b, "rustls handshake stalled");
    }
    assert!(
        server.peer_certificates().is_some(),
        "client was not authenticated"
    );
    client.handshake_kind().expect("handshake kind")
}

/// A TLS stream tonic can serve (tonic implements `Connected` for
/// tokio-rustls only with its own TLS features).
pub struct ServerTls(pub tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for ServerTls {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for ServerTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerTls {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts TCP connections on `listener` and runs each TLS handshake in its
/// own task; finished connections come out of the returned stream.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<ServerTls>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok(ServerTls(tls))).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A tonic connector dialing `addr` with TLS under `config`; records each
/// connection's handshake kind in `kinds`.
#[derive(Clone)]
pub struct TlsConnector {
    pub addr: std::net::SocketAddr,
    pub config: Arc<ClientConfig>,
    pub kinds: Arc<Mutex<Vec<HandshakeKind>>>,
}

impl tower::Service<http::Uri> for TlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(this.config)
                .connect(name, tcp)
                .await?;
            if let Some(k) = tls.get_ref().1.handshake_kind() {
                this.kinds.lock().expect("kinds").push(k);
            }
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}
