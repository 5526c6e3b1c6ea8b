//! Shared by the handshaker security tests: credential files, the programs
//! run as child processes, `DoHandshake` streams over TCP or a Unix socket,
//! and in-process engines playing the peer.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use alts_core::UnixTime;
use alts_core::cert::{self, Category, HandshakeParams, PrincipalParams, RootKey, SigningKey};
use alts_core::crypto::{StaticKeyPair, default_provider};
use alts_interop::engine::AltsEngineFactory;
use alts_interop::handshaker_service::{ClientStart, EngineFactory, HandshakeEngine};
use alts_proto::grpc_gcp::handshaker_req::ReqOneof;
use alts_proto::grpc_gcp::handshaker_service_client::HandshakerServiceClient;
use alts_proto::grpc_gcp::identity::IdentityOneof;
use alts_proto::grpc_gcp::rpc_protocol_versions::Version;
use alts_proto::grpc_gcp::{
    HandshakerReq, HandshakerResp, Identity, NextHandshakeMessageReq, RpcProtocolVersions,
    ServerHandshakeParameters, StartClientHandshakeReq, StartServerHandshakeReq,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

/// Bound on every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(20);
pub const REKEY: &str = "ALTSRP_GCM_AES128_REKEY";

// ---------------------------------------------------------------- credentials

/// A root key and the credential files issued under it, in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    root_key: SigningKey,
    now: UnixTime,
}

/// The issuance policy of the Mallory tests: `network-admin` is reserved to
/// `netops-ca`; `mallory` may issue only `mallory-*`; `scheduler` issues
/// `*-prod` workloads.
pub const MALLORY_POLICY: &str = r#"version = 1

[[rule]]
issuer = "mallory"
categories = ["workload"]
identities = ["mallory-*"]

[[rule]]
issuer = "netops-ca"
categories = ["workload"]
identities = ["network-admin"]

[[rule]]
issuer = "scheduler"
categories = ["workload"]
identities = ["*-prod"]

[[reserved]]
identities = ["network-admin"]
issuers = ["netops-ca"]
"#;

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let provider = default_provider();
        let root_key = SigningKey::generate(provider.random.as_ref()).unwrap();
        let root = RootKey::from_signing_key("test-signing-service", &root_key);
        std::fs::write(dir.path().join("root.pub"), root.to_bytes()).unwrap();
        std::fs::write(dir.path().join("policy.toml"), MALLORY_POLICY).unwrap();
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        Self {
            dir,
            root_key,
            now: UnixTime(secs as i64),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> PathBuf {
        self.path("root.pub")
    }

    pub fn policy(&self) -> PathBuf {
        self.path("policy.toml")
    }

    /// Writes `<dir>/handshake.cert` and `handshake.key` for `identity`
    /// (workload) issued by `issuer`; returns the directory.
    pub fn issue(&self, name: &str, identity: &str, issuer: &str) -> PathBuf {
        let provider = default_provider();
        let rng = provider.random.as_ref();
        let validity = Some((self.now.plus(-3600), self.now.plus(86_400)));
        let principal_key = SigningKey::generate(rng).unwrap();
        let principal_cert = cert::issue_principal(
            &self.root_key,
            &PrincipalParams {
                identity: identity.to_owned(),
                category: Category::Workload,
                issuer: issuer.to_owned(),
                validity,
                revocation_id: cert::random_revocation_id(Category::Workload, rng).unwrap(),
            },
            principal_key.public_key(),
        )
        .unwrap();
        let static_key = StaticKeyPair::generate(rng).unwrap();
        let handshake_cert = cert::issue_handshake(
            &principal_key,
            &principal_cert,
            &HandshakeParams::with_defaults(
                *static_key.public_key(),
                validity,
                cert::random_revocation_id(Category::Workload, rng).unwrap(),
            ),
        )
        .unwrap();
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("handshake.cert"), handshake_cert).unwrap();
        std::fs::write(dir.join("handshake.key"), *static_key.secret_bytes()).unwrap();
        dir
    }

    /// An in-process engine factory for `creds`, verifying peers with the
    /// Mallory policy (or any issuer).
    pub fn factory(&self, creds: &Path, with_policy: bool) -> AltsEngineFactory {
        let files = tonic_alts::CredentialFiles::new(creds, self.root());
        let files = if with_policy {
            files.issuance_policy(self.policy())
        } else {
            files.accept_any_issuer()
        };
        AltsEngineFactory::new(tonic_alts::AltsConfig::from_files(files).unwrap())
    }
}

// ------------------------------------------------------------------- programs

/// A program started by a test; killed when dropped.
pub struct Program {
    pub child: Child,
    /// The stdout line announcing it listens.
    pub ready_line: String,
    stderr: std_mpsc::Receiver<String>,
    seen: std::sync::Mutex<String>,
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Program {
    /// Waits (bounded) until its stderr contains `pat`; `false` if it does not.
    pub fn stderr_contains(&self, pat: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut seen = self.seen.lock().unwrap();
        loop {
            if seen.contains(pat) {
                return true;
            }
            match self.stderr.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) if std::time::Instant::now() < deadline => {}
                Err(_) => return false,
            }
        }
    }

    /// Its stderr so far.
    pub fn stderr_text(&self) -> String {
        let mut seen = self.seen.lock().unwrap();
        for line in self.stderr.try_iter() {
            seen.push_str(&line);
            seen.push('\n');
        }
        seen.clone()
    }
}

fn lines(r: impl std::io::Read + Send + 'static) -> std_mpsc::Receiver<String> {
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        // Keeps reading after the receiver is gone, so the program never
        // writes to a closed pipe.
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Starts `bin args` and waits (bounded) for a stdout line containing
/// `ready`; panics with its output if it exits or times out first.
pub fn start(bin: &str, args: &[&str], ready: &str) -> Program {
    let mut child = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match out.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains(ready) => {
                return Program {
                    child,
                    ready_line: line,
                    stderr: err,
                    seen: Default::default(),
                };
            }
            Ok(_) | Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                let stderr: Vec<String> = err.try_iter().collect();
                panic!("{bin} {args:?} exited before {ready:?}:\n{}", stderr.join("\n"));
            }
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{bin} {args:?}: no {ready:?} within {WAIT:?}");
        }
    }
}

/// Runs `bin args` to completion (bounded); returns status and stderr+stdout.
pub fn run_to_exit(bin: &str, args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{bin} {args:?} still running after {WAIT:?} (it must refuse to start)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(50));
    let text: Vec<String> = err.try_iter().chain(out.try_iter()).collect();
    (status, text.join("\n"))
}

// ------------------------------------------------------------------- streams

/// A channel to a handshaker service on a Unix socket (a tonic endpoint with
/// a Unix-socket dialer; the URI is a placeholder).
pub async fn unix_channel(path: &Path) -> Channel {
    let path = path.to_owned();
    let dial = tower::service_fn(move |_: http::Uri| {
        let path = path.clone();
        async move {
            let s = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
        }
    });
    tokio::time::timeout(
        WAIT,
        Endpoint::from_static("http://handshaker.invalid").connect_with_connector(dial),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

/// A channel to a handshaker service on TCP.
pub async fn tcp_channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// One `DoHandshake` stream.
pub struct HsStream {
    pub tx: mpsc::Sender<HandshakerReq>,
    pub rx: Streaming<HandshakerResp>,
}

impl HsStream {
    /// Opens a stream; `Err` is the status the service ended the call with
    /// before any response (e.g. PERMISSION_DENIED for a refused caller).
    pub async fn try_open(channel: Channel) -> Result<Self, Status> {
        let mut client = HandshakerServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(8);
        let rx = tokio::time::timeout(WAIT, client.do_handshake(ReceiverStream::new(rx)))
            .await
            .expect("DoHandshake answered in time")?
            .into_inner();
        Ok(Self { tx, rx })
    }

    pub async fn open(channel: Channel) -> Self {
        Self::try_open(channel).await.expect("DoHandshake opened")
    }

    pub async fn send(&self, req: ReqOneof) {
        self.tx
            .send(HandshakerReq { req_oneof: Some(req) })
            .await
            .unwrap();
    }

    /// The next message, or the status the stream ended with.
    pub async fn next_message(&mut self) -> Result<Option<HandshakerResp>, Status> {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("response in time")
    }

    pub async fn recv(&mut self) -> HandshakerResp {
        self.next_message().await.expect("status").expect("a response")
    }

    pub async fn call(&mut self, req: ReqOneof) -> HandshakerResp {
        self.send(req).await;
        self.recv().await
    }
}

pub fn v21() -> Option<RpcProtocolVersions> {
    Some(RpcProtocolVersions {
        max_rpc_version: Some(Version { major: 2, minor: 1 }),
        min_rpc_version: Some(Version { major: 2, minor: 1 }),
    })
}

pub fn sa(s: &str) -> Identity {
    Identity {
        identity_oneof: Some(IdentityOneof::ServiceAccount(s.into())),
        attributes: Default::default(),
    }
}

/// A stock client's `client_start`.
pub fn client_start(targets: &[&str], target_name: &str) -> ReqOneof {
    ReqOneof::ClientStart(StartClientHandshakeReq {
        handshake_security_protocol: 2,
        application_protocols: vec!["grpc".into()],
        record_protocols: vec![REKEY.into()],
        target_identities: targets.iter().map(|t| sa(t)).collect(),
        target_name: target_name.into(),
        rpc_versions: v21(),
        max_frame_size: 1 << 20,
        ..Default::default()
    })
}

/// A stock server's `server_start`.
pub fn server_start(in_bytes: &[u8]) -> ReqOneof {
    ReqOneof::ServerStart(StartServerHandshakeReq {
        application_protocols: vec!["grpc".into()],
        handshake_parameters: [(
            2,
            ServerHandshakeParameters {
                record_protocols: vec![REKEY.into()],
                local_identities: vec![],
            },
        )]
        .into_iter()
        .collect(),
        in_bytes: in_bytes.to_vec(),
        rpc_versions: v21(),
        max_frame_size: 1 << 20,
        ..Default::default()
    })
}

pub fn next(b: &[u8]) -> ReqOneof {
    ReqOneof::Next(NextHandshakeMessageReq { in_bytes: b.to_vec() })
}

pub fn status_code(r: &HandshakerResp) -> u32 {
    r.status.as_ref().expect("every response carries a status").code
}

/// The in-process engine's client start (what a stock client would send).
pub fn engine_client_start(targets: &[&str], target_name: &str) -> ClientStart {
    ClientStart {
        record_protocols: vec![REKEY.into()],
        target_identities: targets.iter().map(|s| (*s).to_owned()).collect(),
        target_name: target_name.into(),
        rpc_versions: Some(((2, 1), (2, 1))),
        max_frame_size: 1 << 20,
        application_protocols: vec!["grpc".into()],
    }
}

/// How a handshake through the service ended.
#[derive(Debug)]
pub struct Ended {
    /// Every response the service sent.
    pub responses: Vec<HandshakerResp>,
    /// The in-process peer's error, if it refused.
    pub peer_error: Option<String>,
    /// The in-process peer's key, if it completed.
    pub peer_key: Option<Vec<u8>>,
}

impl Ended {
    pub fn last(&self) -> &HandshakerResp {
        self.responses.last().expect("a response")
    }
    pub fn last_code(&self) -> Code {
        Code::from(status_code(self.last()) as i32)
    }
    /// Key bytes the service handed out on this stream (must be none when refused).
    pub fn key_bytes_received(&self) -> usize {
        self.responses
            .iter()
            .filter_map(|r| r.result.as_ref())
            .map(|r| r.key_data.len())
            .sum()
    }
    pub fn service_key(&self) -> Option<Vec<u8>> {
        self.last().result.as_ref().map(|r| r.key_data.clone())
    }
}

/// Drives `stream` (starting with `first`, built from the peer's first
/// output when `first` is None: a server handshake) against the in-process
/// `peer` engine until the service answers with a result or a failure.
pub async fn drive(stream: &mut HsStream, first: Option<ReqOneof>, peer: &mut dyn HandshakeEngine) -> Ended {
    let mut responses = Vec::new();
    let mut req = match first {
        Some(r) => r,
        None => {
            let mut out = Vec::new();
            peer.poll_output(&mut out);
            server_start(&out)
        }
    };
    let mut peer_key = None;
    for _ in 0..10 {
        let resp = stream.call(req).await;
        let done = resp.result.is_some() || status_code(&resp) != 0;
        let frames = resp.out_frames.clone();
        responses.push(resp);
        if !frames.is_empty()
            && let Err(e) = peer.handle_input(&frames)
        {
            return Ended {
                responses,
                peer_error: Some(e.to_string()),
                peer_key,
            };
        }
        if peer_key.is_none() {
            peer_key = peer.take_outcome().map(|o| o.key_data.to_vec());
        }
        if done {
            return Ended {
                responses,
                peer_error: None,
                peer_key,
            };
        }
        let mut out = Vec::new();
        peer.poll_output(&mut out);
        req = next(&out);
    }
    panic!("handshake made no progress");
}

/// The in-process client engine of `factory` for `targets`.
pub fn client_engine(factory: &AltsEngineFactory, targets: &[&str]) -> Box<dyn HandshakeEngine> {
    factory
        .client(&engine_client_start(targets, "test.invalid:443"))
        .unwrap()
}

/// The in-process server engine of `factory`.
pub fn server_engine(factory: &AltsEngineFactory) -> Box<dyn HandshakeEngine> {
    factory
        .server(&alts_interop::handshaker_service::ServerStart {
            record_protocols: vec![REKEY.into()],
            rpc_versions: Some(((2, 1), (2, 1))),
            max_frame_size: 1 << 20,
            application_protocols: vec!["grpc".into()],
        })
        .unwrap()
}
