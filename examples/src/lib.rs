//! Shared code of the tonic-alts examples, demo and integration tests: the
//! `Echo` service and a throwaway PKI that writes credentials the way the
//! `alts` command does.
#![forbid(unsafe_code)]

// The README's Rust snippets compile as doctests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

use std::path::{Path, PathBuf};
use std::pin::Pin;

use alts_core::UnixTime;
use alts_core::cert::{self, Category, HandshakeParams, PrincipalParams, RootKey, SigningKey};
use alts_core::crl::RevocationList;
use alts_core::crypto::{RingRandom, SecureRandom, StaticKeyPair};
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tonic_alts::{AltsRequestExt, CredentialFiles};

/// The generated `Echo` service.
#[allow(missing_docs, clippy::all)]
pub mod echo {
    tonic::include_proto!("alts.examples.echo");
}

use echo::{EchoReply, EchoRequest, StreamRequest};

/// Echoes messages back, stamped with the caller's authenticated identity.
#[derive(Clone, Debug, Default)]
pub struct EchoService;

fn who<T>(req: &Request<T>) -> String {
    req.alts_peer().map(|p| p.identity.clone()).unwrap_or_default()
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

/// Largest payload a streaming request may ask for.
const MAX_STREAM_PAYLOAD: u32 = 64 << 20;

#[tonic::async_trait]
impl echo::echo_server::Echo for EchoService {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let peer_identity = who(&req);
        let r = req.into_inner();
        Ok(Response::new(EchoReply {
            message: r.message,
            payload: r.payload,
            peer_identity,
        }))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(&self, req: Request<StreamRequest>) -> Result<Response<ReplyStream>, Status> {
        let peer_identity = who(&req);
        let r = req.into_inner();
        if r.payload_size > MAX_STREAM_PAYLOAD || r.count > 10_000 {
            return Err(Status::invalid_argument("stream too large"));
        }
        let payload = vec![0xa5u8; r.payload_size as usize];
        let s = futures_util::stream::iter(0..r.count).map(move |i| {
            Ok(EchoReply {
                message: i.to_string(),
                payload: payload.clone(),
                peer_identity: peer_identity.clone(),
            })
        });
        Ok(Response::new(Box::pin(s)))
    }

    async fn client_stream(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let peer_identity = who(&req);
        let mut s = req.into_inner();
        let (mut n, mut bytes) = (0u64, 0u64);
        while let Some(m) = s.next().await {
            let m = m?;
            n += 1;
            bytes += m.payload.len() as u64;
        }
        Ok(Response::new(EchoReply {
            message: format!("{n} messages, {bytes} bytes"),
            payload: vec![],
            peer_identity,
        }))
    }

    type BidiStream = ReplyStream;

    async fn bidi(&self, req: Request<Streaming<EchoRequest>>) -> Result<Response<ReplyStream>, Status> {
        let peer_identity = who(&req);
        let s = req.into_inner().map(move |m| {
            m.map(|m| EchoReply {
                message: m.message,
                payload: m.payload,
                peer_identity: peer_identity.clone(),
            })
        });
        Ok(Response::new(Box::pin(s)))
    }
}

/// The current time.
pub fn now() -> UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UnixTime(secs as i64)
}

/// A throwaway signing service writing credential directories in the layout
/// of the `alts` command (`root.pub`; per identity `handshake.cert`,
/// `handshake.key`, `root.pub`).
pub struct Pki {
    dir: PathBuf,
    root_key: SigningKey,
    rng: RingRandom,
    next_serial: u64,
}

/// A credential directory made by [`Pki::issue`].
#[derive(Clone, Debug)]
pub struct IssuedDir {
    /// The directory.
    pub dir: PathBuf,
    /// The identity.
    pub identity: String,
    /// Revocation ID of the handshake certificate.
    pub handshake_revocation_id: u64,
    /// Revocation ID of the principal certificate.
    pub principal_revocation_id: u64,
}

impl Pki {
    /// A new signing service writing under `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let rng = RingRandom::default();
        let root_key = SigningKey::generate(&rng)?;
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("root.pub"),
            RootKey::from_public_key("demo-signing-service", root_key.public_key()).to_bytes(),
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            root_key,
            rng,
            next_serial: 1,
        })
    }

    /// Path of the root key file.
    pub fn root_path(&self) -> PathBuf {
        self.dir.join("root.pub")
    }

    /// The root key.
    pub fn root(&self) -> RootKey {
        RootKey::from_public_key("demo-signing-service", self.root_key.public_key())
    }

    /// Issues a principal and handshake certificate for `identity`, valid for
    /// `valid_secs` from now (the handshake certificate at most 7 days, the
    /// longest lifetime peers accept by default), into `dir/<name>`.
    pub fn issue(
        &mut self,
        name: &str,
        identity: &str,
        category: Category,
        issuer: &str,
        valid_secs: i64,
    ) -> anyhow::Result<IssuedDir> {
        let now = now();
        let validity = Some((now.plus(-60), now.plus(valid_secs)));
        // Handshake certificates are short-lived: peers refuse lifetimes
        // above 7 days by default.
        let handshake_validity = Some((
            now.plus(-60),
            now.plus(valid_secs.min(alts_core::verify::DEFAULT_MAX_HANDSHAKE_CERT_LIFETIME_SECS - 60)),
        ));
        let principal_key = SigningKey::generate(&self.rng)?;
        let principal_revocation_id = cert::revocation_id(category.revocation_byte(), self.next_serial)?;
        let handshake_revocation_id = cert::revocation_id(category.revocation_byte(), self.next_serial + 1)?;
        self.next_serial += 2;
        let principal = cert::issue_principal(
            &self.root_key,
            &PrincipalParams {
                identity: identity.into(),
                category,
                issuer: issuer.into(),
                validity,
                revocation_id: principal_revocation_id,
            },
            principal_key.public_key(),
        )?;
        let static_key = StaticKeyPair::generate(&self.rng as &dyn SecureRandom)?;
        let hs = cert::issue_handshake(
            &principal_key,
            &principal,
            &HandshakeParams {
                static_public_key: *static_key.public_key(),
                handshake_ciphers: cert::DEFAULT_HANDSHAKE_CIPHERS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                record_protocols: cert::DEFAULT_RECORD_PROTOCOLS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                validity: handshake_validity,
                revocation_id: handshake_revocation_id,
            },
        )?;
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("handshake.cert"), hs)?;
        write_private(&dir.join("handshake.key"), &static_key.secret_bytes()[..])?;
        std::fs::copy(self.root_path(), dir.join("root.pub"))?;
        Ok(IssuedDir {
            dir,
            identity: identity.into(),
            handshake_revocation_id,
            principal_revocation_id,
        })
    }

    /// Writes a signed revocation list of `ids` to `dir/<name>`.
    pub fn write_crl(&self, name: &str, ids: &[u64]) -> anyhow::Result<PathBuf> {
        self.write_crl_at(name, ids, now())
    }

    /// Writes a signed revocation list of `ids`, issued at `issued_at`, to
    /// `dir/<name>`.
    pub fn write_crl_at(&self, name: &str, ids: &[u64], issued_at: UnixTime) -> anyhow::Result<PathBuf> {
        let bytes = RevocationList::build_signed(ids.iter().copied(), &self.root_key, issued_at)?;
        let path = self.dir.join(name);
        std::fs::write(&path, bytes)?;
        Ok(path)
    }

    /// Credential files for `issued`, trusting this PKI and (unless a
    /// policy file is added) any issuer under it.
    pub fn files(&self, issued: &IssuedDir) -> CredentialFiles {
        CredentialFiles::new(&issued.dir, self.root_path()).accept_any_issuer()
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// A unit test of a handler that reads the caller's identity, without any
/// network: `AltsPeer::for_testing` (feature `test-util`) stands in for the
/// peer the handshake would have authenticated.
#[cfg(test)]
mod handler_tests {
    use super::echo::echo_server::Echo;
    use super::*;
    use tonic_alts::AltsPeer;

    #[tokio::test]
    async fn unary_reports_the_callers_identity() {
        let mut request = Request::new(EchoRequest {
            message: "hi".into(),
            payload: vec![],
        });
        AltsPeer::for_testing("frontend-prod").attach_to(&mut request);
        let reply = EchoService.unary(request).await.expect("unary").into_inner();
        assert_eq!(reply.peer_identity, "frontend-prod");
        assert_eq!(reply.message, "hi");
    }

    #[tokio::test]
    async fn without_a_peer_the_identity_is_empty() {
        let reply = EchoService
            .unary(Request::new(EchoRequest::default()))
            .await
            .expect("unary")
            .into_inner();
        assert_eq!(reply.peer_identity, "");
    }
}
