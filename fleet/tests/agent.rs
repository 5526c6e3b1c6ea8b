//! The credential agent against an in-test `alts.fleet.v1.Signer` served
//! over ALTS on loopback sockets: complete and loadable directories, a real
//! handshake between two workloads' directories, rotation picked up by a
//! reloading server, atomic swaps under concurrent readers, the principal
//! key kept out of workload directories, a signer outage, shared key rings,
//! refused signer answers, revocation-driven renewal and the `--once` exit
//! status.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alts_core::UnixTime;
use alts_core::cert::{
    self, Category, HandshakeCertInfo, HandshakeParams, PrincipalParams, RootKey, SigningKey,
};
use alts_core::crl::RevocationList;
use alts_core::crypto::{RingRandom, StaticKeyPair};
use alts_core::resumption::{RID_LEN, ResumptionKeys};
use alts_examples::EchoService;
use alts_examples::echo::echo_client::EchoClient;
use alts_examples::echo::echo_server::EchoServer;
use alts_examples::echo::{EchoReply, EchoRequest};
use alts_fleet::agent::{Agent, AgentConfig, WorkloadStatus};
use alts_fleet::pb;
use alts_fleet::pb::signer_server::{Signer, SignerServer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};
use tonic_alts::{
    AltsAcceptor, AltsConfig, AltsConnector, AltsIncoming, AltsRequestExt, CredentialFiles, file_names,
};

const FLEET_POLICY: &str = r#"
[[rule]]
issuer = "fleet-ca"
categories = ["machine"]
identities = ["*"]

[[rule]]
issuer = "agent-*"
categories = ["workload"]
identities = ["*"]
"#;

const SET: [&str; 6] = [
    file_names::HANDSHAKE_CERT,
    file_names::HANDSHAKE_KEY,
    file_names::ROOT,
    file_names::ISSUANCE_POLICY,
    file_names::CRL,
    file_names::KEY_RING,
];

/// Serializes the tests whose assertions depend on timing, so that the
/// busy readers of one do not delay the agent of another on a small machine.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn now() -> UnixTime {
    alts_examples::now()
}

// ---------------------------------------------------------------------------
// A throwaway fleet root that issues the signer's and the agents' own
// credentials the way `alts issue` does.

struct TestCa {
    root: Arc<SigningKey>,
    tmp: tempfile::TempDir,
    serial: u64,
}

impl TestCa {
    fn new() -> Self {
        init_tracing();
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = SigningKey::generate(&RingRandom::default()).expect("root key");
        std::fs::write(tmp.path().join("issuance-policy.toml"), FLEET_POLICY).expect("policy");
        Self {
            root: Arc::new(root),
            tmp,
            serial: 1,
        }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn policy_path(&self) -> PathBuf {
        self.path().join("issuance-policy.toml")
    }

    fn root_key(&self) -> RootKey {
        RootKey::from_signing_key("fleet-signer", &self.root)
    }

    /// `handshake.cert`, `handshake.key` and `root.pub` for `identity` (a
    /// machine issued by `fleet-ca`) in `dir/<name>`.
    fn issue_dir(&mut self, name: &str, identity: &str) -> PathBuf {
        let rng = RingRandom::default();
        let t = now();
        let validity = Some((t.plus(-60), t.plus(3600)));
        let pkey = SigningKey::generate(&rng).expect("key");
        let principal = cert::issue_principal(
            &self.root,
            &PrincipalParams {
                identity: identity.into(),
                category: Category::Machine,
                issuer: "fleet-ca".into(),
                validity,
                revocation_id: cert::revocation_id(2, self.serial).expect("rid"),
            },
            pkey.public_key(),
        )
        .expect("principal");
        let sk = StaticKeyPair::generate(&rng).expect("static key");
        let hs = cert::issue_handshake(
            &pkey,
            &principal,
            &HandshakeParams::with_defaults(
                *sk.public_key(),
                validity,
                cert::revocation_id(2, self.serial + 1).expect("rid"),
            ),
        )
        .expect("handshake");
        self.serial += 2;
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(file_names::HANDSHAKE_CERT), hs).expect("cert");
        std::fs::write(dir.join(file_names::HANDSHAKE_KEY), &sk.secret_bytes()[..]).expect("key");
        std::fs::set_permissions(
            dir.join(file_names::HANDSHAKE_KEY),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        std::fs::write(dir.join(file_names::ROOT), self.root_key().to_bytes()).expect("root");
        dir
    }
}

// ---------------------------------------------------------------------------
// The signer stub: the alts.fleet.v1.Signer protocol, signing with the test
// root, authorizing callers by their ALTS identity.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Evil {
    Honest,
    /// IssuePrincipal certifies another identity.
    WrongIdentity,
    /// IssuePrincipal signs with (and names) another root.
    WrongRoot,
    /// FetchCrl ignores `if_newer_than` and serves its first list.
    OldCrl,
    /// GetKeyRing returns a 31-byte secret.
    BadRing,
}

struct StubState {
    root: Arc<SigningKey>,
    root_pub: Vec<u8>,
    next_serial: AtomicU64,
    revoked: Mutex<BTreeSet<u64>>,
    crl: Mutex<(Vec<u8>, i64)>,
    first_crl: Vec<u8>,
    ring_secret: [u8; 32],
    ring_period: i64,
    down: AtomicBool,
    evil: Mutex<Evil>,
    principals_issued: AtomicUsize,
}

impl StubState {
    fn new(ca: &TestCa) -> Arc<Self> {
        let issued_at = now().plus(-10);
        let crl = RevocationList::build_signed([], &ca.root, issued_at).expect("crl");
        Arc::new(Self {
            root: ca.root.clone(),
            root_pub: ca.root_key().to_bytes(),
            next_serial: AtomicU64::new(1000),
            revoked: Mutex::new(BTreeSet::new()),
            crl: Mutex::new((crl.clone(), issued_at.0)),
            first_crl: crl,
            ring_secret: [7u8; 32],
            ring_period: 3600,
            down: AtomicBool::new(false),
            evil: Mutex::new(Evil::Honest),
            principals_issued: AtomicUsize::new(0),
        })
    }

    fn evil(&self) -> Evil {
        *self.evil.lock().expect("lock")
    }

    /// Revokes `id` and signs a new list (issued_at strictly increasing).
    fn revoke(&self, id: u64) -> i64 {
        let mut revoked = self.revoked.lock().expect("lock");
        revoked.insert(id);
        let mut crl = self.crl.lock().expect("lock");
        let issued_at = now().0.max(crl.1 + 1);
        let bytes = RevocationList::build_signed(revoked.iter().copied(), &self.root, UnixTime(issued_at))
            .expect("crl");
        *crl = (bytes, issued_at);
        issued_at
    }

    fn ring_key(&self, label: &[u8], identity: &str, cell: &str, epoch: i64) -> Vec<u8> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.ring_secret);
        let mut msg = label.to_vec();
        for part in [identity.as_bytes(), cell.as_bytes()] {
            msg.extend_from_slice(&(part.len() as u64).to_be_bytes());
            msg.extend_from_slice(part);
        }
        msg.extend_from_slice(&epoch.to_be_bytes());
        ring::hmac::sign(&key, &msg).as_ref().to_vec()
    }
}

#[derive(Clone)]
struct Stub(Arc<StubState>);

impl Stub {
    fn caller<T>(&self, req: &Request<T>) -> Result<String, Status> {
        if self.0.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("down"));
        }
        let peer = req
            .alts_peer()
            .ok_or_else(|| Status::unauthenticated("no ALTS peer"))?;
        if !peer.identity.starts_with("agent-") {
            return Err(Status::permission_denied("not an agent"));
        }
        Ok(peer.identity.clone())
    }
}

#[tonic::async_trait]
impl Signer for Stub {
    async fn issue_principal(
        &self,
        req: Request<pb::IssuePrincipalRequest>,
    ) -> Result<Response<pb::IssuePrincipalResponse>, Status> {
        let issuer = self.caller(&req)?;
        let r = req.into_inner();
        let category: Category = r
            .category
            .parse()
            .map_err(|_| Status::invalid_argument("category"))?;
        let pk: [u8; 32] = r
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("public_key"))?;
        let validity = r.validity_secs.clamp(60, 90 * 86_400) as i64;
        let t = now();
        let serial = self.0.next_serial.fetch_add(1, Ordering::SeqCst);
        let revocation_id = cert::revocation_id(category.revocation_byte(), serial).expect("rid");
        let evil = self.0.evil();
        let identity = if evil == Evil::WrongIdentity {
            "admin-prod".to_owned()
        } else {
            r.identity
        };
        let other_root;
        let (signing, root_pub) = if evil == Evil::WrongRoot {
            other_root = SigningKey::generate(&RingRandom::default()).expect("key");
            (
                &other_root,
                RootKey::from_signing_key("fleet-signer", &other_root).to_bytes(),
            )
        } else {
            (&*self.0.root, self.0.root_pub.clone())
        };
        let principal_cert = cert::issue_principal(
            signing,
            &PrincipalParams {
                identity,
                category,
                issuer,
                validity: Some((t, t.plus(validity))),
                revocation_id,
            },
            pk,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.0.principals_issued.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::IssuePrincipalResponse {
            principal_cert,
            root_key: root_pub,
            revocation_id,
        }))
    }

    async fn allocate_revocation_ids(
        &self,
        req: Request<pb::AllocateRevocationIdsRequest>,
    ) -> Result<Response<pb::AllocateRevocationIdsResponse>, Status> {
        self.caller(&req)?;
        let count = req.into_inner().count.clamp(1, 1000);
        let first = self.0.next_serial.fetch_add(u64::from(count), Ordering::SeqCst);
        Ok(Response::new(pb::AllocateRevocationIdsResponse { first, count }))
    }

    async fn revoke(&self, req: Request<pb::RevokeRequest>) -> Result<Response<pb::RevokeResponse>, Status> {
        self.caller(&req)?;
        match req.into_inner().target {
            Some(pb::revoke_request::Target::RevocationId(id)) => Ok(Response::new(pb::RevokeResponse {
                crl_issued_at: self.0.revoke(id),
            })),
            _ => Err(Status::invalid_argument("revocation_id only")),
        }
    }

    async fn fetch_crl(
        &self,
        req: Request<pb::FetchCrlRequest>,
    ) -> Result<Response<pb::FetchCrlResponse>, Status> {
        self.caller(&req)?;
        let since = req.into_inner().if_newer_than;
        if self.0.evil() == Evil::OldCrl {
            let info = alts_core::crl::RevocationListInfo::parse(&self.0.first_crl).expect("info");
            return Ok(Response::new(pb::FetchCrlResponse {
                signed_crl: self.0.first_crl.clone(),
                issued_at: info.issued_at.0,
            }));
        }
        let (bytes, issued_at) = self.0.crl.lock().expect("lock").clone();
        Ok(Response::new(pb::FetchCrlResponse {
            signed_crl: if issued_at > since { bytes } else { Vec::new() },
            issued_at,
        }))
    }

    async fn get_key_ring(
        &self,
        req: Request<pb::GetKeyRingRequest>,
    ) -> Result<Response<pb::GetKeyRingResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let period = self.0.ring_period;
        let epoch = now().0 / period;
        let keys = [epoch, epoch - 1]
            .iter()
            .map(|&e| {
                let mut secret = self.0.ring_key(b"key", &r.identity, &r.cell, e);
                if self.0.evil() == Evil::BadRing {
                    secret.truncate(31);
                }
                pb::ResumptionKeyEntry {
                    rid: self.0.ring_key(b"rid", &r.identity, &r.cell, e)[..RID_LEN].to_vec(),
                    secret,
                    created_at: e * period,
                }
            })
            .collect();
        Ok(Response::new(pb::GetKeyRingResponse {
            keys,
            next_rotation_at: (epoch + 1) * period,
        }))
    }
}

/// The stub served over ALTS as `alts-signer` on 127.0.0.1.
struct SignerHandle {
    addr: SocketAddr,
    state: Arc<StubState>,
    task: tokio::task::JoinHandle<()>,
    /// Revocation ID of the signer's own handshake certificate.
    handshake_revocation_id: u64,
}

impl Drop for SignerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_signer(ca: &mut TestCa, state: Arc<StubState>, addr: Option<SocketAddr>) -> SignerHandle {
    start_signer_as(ca, state, addr, "alts-signer").await
}

/// The stub served with credentials for `identity`.
async fn start_signer_as(
    ca: &mut TestCa,
    state: Arc<StubState>,
    addr: Option<SocketAddr>,
    identity: &str,
) -> SignerHandle {
    let dir = ca.issue_dir(&format!("signer-{}", ca.serial), identity);
    let handshake_revocation_id = published_info(&dir).revocation_id;
    let cfg = AltsConfig::from_files(CredentialFiles::from_dir(&dir).issuance_policy(ca.policy_path()))
        .expect("signer config");
    let listener = TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("bind");
    let incoming = AltsIncoming::new(listener, cfg, 64);
    let addr = incoming.local_addr();
    let router = Server::builder().add_service(SignerServer::new(Stub(state.clone())));
    let task = tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    SignerHandle {
        addr,
        state,
        task,
        handshake_revocation_id,
    }
}

impl SignerHandle {
    /// Stops accepting and answers Unavailable on open connections.
    async fn stop(self) -> (SocketAddr, Arc<StubState>) {
        self.state.down.store(true, Ordering::SeqCst);
        self.task.abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        (self.addr, self.state.clone())
    }
}

// ---------------------------------------------------------------------------
// Agents.

struct Wl<'a> {
    identity: &'a str,
    cell: &'a str,
    dir: PathBuf,
}

fn wl<'a>(ca: &TestCa, identity: &'a str, cell: &'a str, name: &str) -> Wl<'a> {
    Wl {
        identity,
        cell,
        dir: ca.path().join("run").join(name),
    }
}

fn am_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Writes an agent configuration (own identity `agent_identity`) and loads it.
fn agent_config(
    ca: &mut TestCa,
    agent_identity: &str,
    signer: SocketAddr,
    extra: &str,
    workloads: &[Wl<'_>],
) -> AgentConfig {
    let creds = ca.issue_dir(&format!("{agent_identity}-creds"), agent_identity);
    let state = ca.path().join(format!("{agent_identity}-state"));
    let mut text = format!(
        "state_dir = {state:?}\ncredentials = {creds:?}\nissuance_policy = {policy:?}\nretry_min = \"100ms\"\nretry_max = \"400ms\"\n{extra}\n[signer]\naddress = \"http://{signer}\"\nidentity = \"alts-signer\"\ntimeout = \"2s\"\n",
        policy = ca.policy_path(),
    );
    for w in workloads {
        text.push_str(&format!(
            "\n[[workload]]\nidentity = \"{}\"\ncategory = \"workload\"\ncell = \"{}\"\ndir = {:?}\nowner = \"nobody\"\ngroup = \"65534\"\nmode = \"0640\"\n",
            w.identity, w.cell, w.dir
        ));
    }
    let path = ca.path().join(format!("{agent_identity}.toml"));
    std::fs::write(&path, text).expect("write config");
    AgentConfig::from_file(&path).expect("agent config")
}

fn status_of(agent: &Agent, identity: &str, cell: &str) -> WorkloadStatus {
    agent
        .status()
        .into_iter()
        .find(|s| s.identity == identity && s.cell == cell)
        .expect("workload status")
}

fn published_info(dir: &Path) -> HandshakeCertInfo {
    HandshakeCertInfo::parse(&std::fs::read(dir.join(file_names::HANDSHAKE_CERT)).expect("read cert"))
        .expect("parse")
}

fn load(dir: &Path) -> AltsConfig {
    AltsConfig::from_files(CredentialFiles::from_dir(dir)).expect("load the workload directory")
}

/// An Echo server over ALTS with `config`; stops when dropped.
struct EchoHandle {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_echo(config: AltsConfig) -> EchoHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let incoming = AltsIncoming::new(listener, config, 64);
    let addr = incoming.local_addr();
    let router = Server::builder().add_service(EchoServer::new(EchoService));
    let task = tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    EchoHandle { addr, task }
}

async fn echo_client(addr: SocketAddr, connector: AltsConnector) -> EchoClient<tonic::transport::Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
        .expect("connect");
    EchoClient::new(channel)
}

async fn unary(c: &mut EchoClient<tonic::transport::Channel>, msg: &str) -> EchoReply {
    tokio::time::timeout(
        Duration::from_secs(5),
        c.unary(EchoRequest {
            message: msg.into(),
            payload: vec![],
        }),
    )
    .await
    .expect("unary in time")
    .expect("unary")
    .into_inner()
}

// ---------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_a_complete_loadable_dir_and_two_workloads_handshake() {
    let mut ca = TestCa::new();
    let stub = StubState::new(&ca);
    let signer = start_signer(&mut ca, stub, None).await;
    let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
    let frontend = wl(&ca, "frontend-prod", "cell-a", "frontend");
    let (gdir, fdir) = (greeter.dir.clone(), frontend.dir.clone());
    let cfg = agent_config(&mut ca, "agent-host-1", signer.addr, "", &[greeter, frontend]);
    let mut agent = Agent::new(cfg).await.expect("agent");
    agent.pass().await;
    assert!(agent.all_fresh(), "{:?}", agent.status());

    // The layout: ..data -> ..<timestamp>, every name -> ..data/<name>.
    let generation = std::fs::read_link(gdir.join("..data")).expect("..data");
    let generation = generation.to_str().expect("utf-8");
    assert!(generation.starts_with("..20"), "{generation}");
    let gen_dir = gdir.join(generation);
    for name in SET {
        assert_eq!(
            std::fs::read_link(gdir.join(name)).expect("top-level symlink"),
            Path::new("..data").join(name)
        );
        let m = std::fs::metadata(gen_dir.join(name)).expect(name);
        assert_eq!(m.mode() & 0o777, 0o640, "{name}");
        if am_root() {
            assert_eq!((m.uid(), m.gid()), (65534, 65534), "{name}: owner and group");
        }
    }
    assert_eq!(
        std::fs::read(gdir.join(file_names::HANDSHAKE_KEY))
            .expect("key")
            .len(),
        32
    );
    assert_eq!(std::fs::metadata(&gdir).expect("dir").mode() & 0o777, 0o751);
    let status = status_of(&agent, "greeter-prod", "cell-a");
    assert_eq!(status.generation.as_deref(), Some(generation));
    assert!(status.key_ring);

    // Both directories load as they are, and the two workloads talk.
    let server = serve_echo(load(&gdir)).await;
    let connector = AltsConnector::new(load(&fdir)).target_identity("greeter-prod");
    let mut client = echo_client(server.addr, connector.clone()).await;
    let reply = unary(&mut client, "hello").await;
    assert_eq!(reply.message, "hello");
    assert_eq!(reply.peer_identity, "frontend-prod");
    let peer = connector.last_peer().expect("server peer");
    assert_eq!(peer.identity, "greeter-prod");
    assert_eq!(peer.issuer.as_deref(), Some("agent-host-1"));
    assert_eq!(peer.handshake_revocation_id, status.handshake_revocation_id);
    assert_eq!(
        alts_core::cert::split_revocation_id(peer.handshake_revocation_id.expect("rid")).0,
        Category::Workload.revocation_byte()
    );

    // A second pass with nothing due publishes nothing new.
    agent.pass().await;
    assert_eq!(
        status_of(&agent, "greeter-prod", "cell-a").generation.as_deref(),
        Some(generation)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principal_key_stays_in_the_state_dir() {
    let mut ca = TestCa::new();
    let stub = StubState::new(&ca);
    let signer = start_signer(&mut ca, stub, None).await;
    let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
    let gdir = greeter.dir.clone();
    let cfg = agent_config(
        &mut ca,
        "agent-host-1",
        signer.addr,
        "handshake_lifetime = \"2s\"\nrenew_at = 0.3\n",
        &[greeter],
    );
    let state_dir = cfg.state_dir.clone();
    let mut agent = Agent::new(cfg).await.expect("agent");
    agent.pass().await;
    assert!(agent.all_fresh());
    // Rotate a few times so several generations were written.
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stop.cancel();
    });
    agent.run(token).await;

    assert_eq!(
        std::fs::metadata(&state_dir).expect("state").mode() & 0o777,
        0o700
    );
    let keys: Vec<PathBuf> = walk(&state_dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "principal.key"))
        .collect();
    assert_eq!(keys.len(), 1, "one principal key per workload");
    assert_eq!(std::fs::metadata(&keys[0]).expect("key").mode() & 0o777, 0o600);
    let pkcs8 = std::fs::read(&keys[0]).expect("read key");
    let key = SigningKey::from_pkcs8(&pkcs8).expect("pkcs8");
    // PKCS#8 v2 of Ed25519: the 32-byte seed follows a 16-byte prefix.
    let seed = &pkcs8[16..48];
    assert_eq!(
        published_info(&gdir).principal.public_key,
        key.public_key(),
        "the published chain uses this key"
    );
    let files = walk(&gdir);
    assert!(files.len() >= SET.len());
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        assert!(
            !contains(&bytes, seed),
            "{} holds the principal private key",
            f.display()
        );
        assert!(
            !contains(&bytes, &pkcs8),
            "{} holds the principal key file",
            f.display()
        );
        assert_ne!(f.file_name().and_then(|n| n.to_str()), Some("principal.key"));
    }
}

/// Every regular file below `dir` (symlinks not followed).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_served_by_a_reloading_server_and_old_connections_live_on() {
    let _timing = TIMING.lock().await;
    let mut ca = TestCa::new();
    let stub = StubState::new(&ca);
    let signer = start_signer(&mut ca, stub, None).await;
    let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
    let frontend = wl(&ca, "frontend-prod", "cell-a", "frontend");
    let (gdir, fdir) = (greeter.dir.clone(), frontend.dir.clone());
    let cfg = agent_config(
        &mut ca,
        "agent-host-1",
        signer.addr,
        "handshake_lifetime = \"6s\"\nrenew_at = 0.5\njitter = 0.1\n",
        &[greeter, frontend],
    );
    let mut agent = Agent::new(cfg).await.expect("agent");
    let before = std::time::SystemTime::now();
    agent.pass().await;
    let published_at = Instant::now();
    let first = published_info(&gdir);
    // Renewal is scheduled at 50% ± 10% of the 6 s lifetime: 2.4 s .. 3.6 s
    // after minting (which happened between `before` and now).
    let renew_at = status_of(&agent, "greeter-prod", "cell-a")
        .handshake_renew_at
        .expect("scheduled");
    let scheduled_in = renew_at.duration_since(before).expect("after minting");
    assert!(
        scheduled_in >= Duration::from_millis(2400)
            && scheduled_in
                <= Duration::from_millis(3600) + published_at.elapsed() + Duration::from_millis(500),
        "renewal scheduled {scheduled_in:?} after minting"
    );
    let token = CancellationToken::new();
    let agent_task = {
        let token = token.clone();
        tokio::spawn(async move { agent.run(token).await })
    };

    let server_cfg = load(&gdir);
    let _server_reloader = server_cfg
        .reloader()
        .expect("reloader")
        .spawn(Duration::from_millis(200));
    let client_cfg = load(&fdir);
    let _client_reloader = client_cfg
        .reloader()
        .expect("reloader")
        .spawn(Duration::from_millis(200));
    let server = serve_echo(server_cfg).await;
    let old_connector = AltsConnector::new(client_cfg.clone()).target_identity("greeter-prod");
    let mut old = echo_client(server.addr, old_connector.clone()).await;
    unary(&mut old, "before").await;
    assert_eq!(
        old_connector.last_peer().expect("peer").handshake_revocation_id,
        Some(first.revocation_id)
    );

    // The agent renews at 50% ± 10% of the 6 s lifetime: 2.4 s to 3.6 s.
    let deadline = Instant::now() + Duration::from_secs(8);
    let renewed = loop {
        let info = published_info(&gdir);
        if info.revocation_id != first.revocation_id {
            break info;
        }
        assert!(Instant::now() < deadline, "no renewal within 8 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let after = published_at.elapsed();
    // Not before the scheduled time, and before the 6 s certificate expires
    // (the slack above 3.6 s is for a loaded machine: CPU shared with builds).
    assert!(
        std::time::SystemTime::now() >= renew_at,
        "renewed before it was due"
    );
    assert!(
        after < Duration::from_millis(5800),
        "renewed after {after:?}; scheduled {scheduled_in:?} after minting"
    );
    println!("renewal scheduled {scheduled_in:?} after minting, seen {after:?} after publishing");
    assert_eq!(
        renewed.principal.public_key, first.principal.public_key,
        "same principal"
    );

    // New connections get the new certificate once the server reloaded
    // (full handshakes: a resumed session reports the certificate of the
    // handshake that issued its ticket).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let c = AltsConnector::new(client_cfg.clone().no_resumption()).target_identity("greeter-prod");
        let mut fresh = echo_client(server.addr, c.clone()).await;
        unary(&mut fresh, "after").await;
        let peer = c.last_peer().expect("peer");
        assert!(!peer.resumed());
        if peer.handshake_revocation_id == Some(renewed.revocation_id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not pick up the renewed certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection made before the rotation still works, on the old keys.
    let r = unary(&mut old, "still there").await;
    assert_eq!(r.message, "still there");
    assert_eq!(
        old_connector.last_peer().expect("peer").handshake_revocation_id,
        Some(first.revocation_id),
        "no reconnect"
    );
    token.cancel();
    agent_task.await.expect("agent task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_mixed_or_missing_set_during_20_rotations() {
    let _timing = TIMING.lock().await;
    let mut ca = TestCa::new();
    let stub = StubState::new(&ca);
    let signer = start_signer(&mut ca, stub, None).await;
    let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
    let gdir = greeter.dir.clone();
    let cfg = agent_config(
        &mut ca,
        "agent-host-1",
        signer.addr,
        "handshake_lifetime = \"1s\"\nrenew_at = 0.3\njitter = 0.05\nprincipal_validity = \"1h\"\n",
        &[greeter],
    );
    let mut agent = Agent::new(cfg).await.expect("agent");
    agent.pass().await;
    let token = CancellationToken::new();
    let agent_task = {
        let token = token.clone();
        tokio::spawn(async move { agent.run(token).await })
    };

    #[derive(Default, Debug)]
    struct Counts {
        loads: usize,
        missing: usize,
        mixed: usize,
        other: Vec<String>,
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Reader 1: resolves ..data once per load and reads the whole set below it.
    let snapshot_reader = {
        let (dir, stop) = (gdir.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = Counts::default();
            while !stop.load(Ordering::Relaxed) {
                let Ok(generation) = std::fs::read_link(dir.join("..data")) else {
                    c.missing += 1;
                    continue;
                };
                match CredentialFiles::from_dir(dir.join(generation)).load() {
                    Ok(_) => c.loads += 1,
                    Err(e) => classify(&mut c.missing, &mut c.mixed, &mut c.other, &e.to_string()),
                }
            }
            c
        })
    };
    // Reader 2: opens the top-level names, as CredentialFiles::from_dir(dir) does.
    let top_level_reader = {
        let (dir, stop) = (gdir.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = Counts::default();
            while !stop.load(Ordering::Relaxed) {
                match CredentialFiles::from_dir(&dir).load() {
                    Ok((creds, _)) => {
                        assert_eq!(creds.identity(), "greeter-prod");
                        c.loads += 1;
                    }
                    Err(e) => classify(&mut c.missing, &mut c.mixed, &mut c.other, &e.to_string()),
                }
            }
            c
        })
    };
    fn classify(missing: &mut usize, mixed: &mut usize, other: &mut Vec<String>, e: &str) {
        if e.contains("No such file") || e.contains("not found") {
            *missing += 1;
        } else if e.contains("does not match") || e.contains("mismatch") {
            *mixed += 1;
        } else {
            other.push(e.to_owned());
        }
    }

    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(25);
    while seen.len() < 21 {
        if let Ok(b) = std::fs::read(gdir.join(file_names::HANDSHAKE_CERT))
            && let Ok(info) = HandshakeCertInfo::parse(&b)
        {
            seen.insert(info.revocation_id);
        }
        assert!(
            Instant::now() < deadline,
            "only {} certificates in 25 s",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let snap = snapshot_reader.join().expect("reader 1");
    let top = top_level_reader.join().expect("reader 2");
    token.cancel();
    agent_task.await.expect("agent");
    println!(
        "rotations: {}; snapshot reader: {snap:?}; top-level reader: {top:?}",
        seen.len() - 1
    );
    assert!(
        snap.loads > 100 && top.loads > 100,
        "readers ran: {snap:?} {top:?}"
    );
    assert_eq!(
        (snap.missing, snap.mixed, snap.other.len()),
        (0, 0, 0),
        "snapshot reader: {snap:?}"
    );
    assert_eq!(top.missing, 0, "a top-level name was missing: {top:?}");
    assert!(top.other.is_empty(), "{top:?}");
    // A top-level reader that opens the certificate just before a swap and
    // the key just after gets two generations; the pair does not match and
    // loading refuses it (counted as `mixed`): it is never accepted.
    assert!(top.mixed * 20 <= top.loads, "mixed pairs are rare: {top:?}");
    // Old generations are removed: the current and the previous one remain.
    let generations = std::fs::read_dir(&gdir)
        .expect("dir")
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("..") && n != "..data" && e.file_type().is_ok_and(|t| t.is_dir())
        })
        .count();
    assert!(generations <= 2, "{generations} generations left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_outage_keeps_the_old_credentials_then_recovers() {
    let _timing = TIMING.lock().await;
    let mut ca = TestCa::new();
    let stub = StubState::new(&ca);
    let signer = start_signer(&mut ca, stub, None).await;
    let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
    let gdir = greeter.dir.clone();
    let cfg = agent_config(
        &mut ca,
        "agent-host-1",
        signer.addr,
        "handshake_lifetime = \"2s\"\nrenew_at = 0.3\njitter = 0.05\ncrl_refresh = \"300ms\"\nkey_ring_refresh = \"300ms\"\nrevocation_id_batch = 1\n",
        &[greeter],
    );
    let mut agent = Agent::new(cfg).await.expect("agent");
    agent.pass().await;
    assert!(agent.all_fresh());
    let generation = std::fs::read_link(gdir.join("..data")).expect("..data");
    let snapshot: Vec<Vec<u8>> = SET
        .iter()
        .map(|n| std::fs::read(gdir.join(n)).expect("read"))
        .collect();

    let (addr, state) = signer.stop().await;
    // Past the renewal point and past expiry, with the signer down.
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(3000)).await;
        stop.cancel();
    });
    agent.run(token).await;
    assert_eq!(
        std::fs::read_link(gdir.join("..data")).expect("..data"),
        generation,
        "nothing was swapped"
    );
    for (name, before) in SET.iter().zip(&snapshot) {
        assert_eq!(
            &std::fs::read(gdir.join(name)).expect("read"),
            before,
            "{name} changed"
        );
    }
    load(&gdir);
    let s = status_of(&agent, "greeter-prod", "cell-a");
    assert!(s.alarm && !s.fresh, "{s:?}");
    assert!(s.renew_failures >= 2, "{s:?}");

    // The signer comes back on the same address: the agent renews.
    state.down.store(false, Ordering::SeqCst);
    let _signer = start_signer(&mut ca, state, Some(addr)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.all_fresh() {
        assert!(Instant::now() < deadline, "no recovery: {:?}", agent.status());
        agent.pass().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(
        std::fs::read_link(gdir.join("..data")).expect("..data"),
        generation
    );
    assert_ne!(
        std::fs::read(gdir.join(file_names::HANDSHAKE_CERT)).expect("cert"),
        snapshot[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_write_identical_key_rings_and_replicas_resume_each_other() {
    let mut ca = TestCa::new();
    let stub = StubState::new(&ca);
    let signer = start_signer(&mut ca, stub, None).await;
    let one = wl(&ca, "greeter-prod", "cell-a", "host1-greeter");
    let other_cell = wl(&ca, "greeter-prod", "cell-b", "host1-greeter-b");
    let client = wl(&ca, "frontend-prod", "cell-a", "host1-frontend");
    let two = wl(&ca, "greeter-prod", "cell-a", "host2-greeter");
    let (d1, db, dc, d2) = (
        one.dir.clone(),
        other_cell.dir.clone(),
        client.dir.clone(),
        two.dir.clone(),
    );
    let cfg1 = agent_config(
        &mut ca,
        "agent-host-1",
        signer.addr,
        "",
        &[one, other_cell, client],
    );
    let cfg2 = agent_config(&mut ca, "agent-host-2", signer.addr, "", &[two]);
    assert_ne!(cfg1.state_dir, cfg2.state_dir);
    let mut a1 = Agent::new(cfg1).await.expect("agent 1");
    let mut a2 = Agent::new(cfg2).await.expect("agent 2");
    a1.pass().await;
    a2.pass().await;
    assert!(a1.all_fresh() && a2.all_fresh());
    let ring = |d: &Path| std::fs::read(d.join(file_names::KEY_RING)).expect("resumption.keys");
    assert_eq!(ring(&d1), ring(&d2), "same identity and cell: same ring");
    assert_ne!(ring(&d1), ring(&db), "another cell: another ring");
    assert_ne!(
        published_info(&d1).static_public_key,
        published_info(&d2).static_public_key,
        "each replica has its own certificate"
    );

    // A ticket from replica 1 resumes on replica 2.
    let serve = |cfg: AltsConfig| async move {
        let incoming = AltsAcceptor::new(cfg).bind("127.0.0.1:0").await.expect("bind");
        let addr = incoming.local_addr();
        let task = tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut incoming = incoming;
            while let Some(Ok(mut s)) = incoming.next().await {
                tokio::spawn(async move {
                    let mut sink = tokio::io::sink();
                    let _ = tokio::io::copy(&mut s, &mut sink).await;
                });
            }
        });
        (addr, task)
    };
    let (addr1, t1) = serve(load(&d1)).await;
    let (addr2, t2) = serve(load(&d2)).await;
    let client_cfg = load(&dc).resumption(ResumptionKeys::generate(&RingRandom::default()).expect("keys"));
    let connector = AltsConnector::new(client_cfg).target_identity("greeter-prod");
    let handshake = |addr: SocketAddr| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(addr).await.expect("tcp");
            let s = tokio::time::timeout(
                Duration::from_secs(5),
                connector.handshake(tcp, "greeter.internal:443"),
            )
            .await
            .expect("in time")
            .expect("handshake");
            s.peer().resumed()
        }
    };
    assert!(!handshake(addr1).await, "first contact: full handshake");
    assert!(handshake(addr2).await, "replica 2 resumes replica 1's ticket");
    t1.abort();
    t2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_signer_answers_are_refused_and_publish_nothing() {
    for (evil, what) in [
        (Evil::WrongIdentity, "another identity"),
        (Evil::WrongRoot, "root"),
    ] {
        let mut ca = TestCa::new();
        let state = StubState::new(&ca);
        *state.evil.lock().expect("lock") = evil;
        let signer = start_signer(&mut ca, state, None).await;
        let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
        let gdir = greeter.dir.clone();
        let cfg = agent_config(&mut ca, "agent-host-1", signer.addr, "", &[greeter]);
        let state_dir = cfg.state_dir.clone();
        let mut agent = Agent::new(cfg).await.expect("agent");
        agent.pass().await;
        let s = status_of(&agent, "greeter-prod", "cell-a");
        assert!(!s.fresh && s.principal_failures == 1, "{evil:?}: {s:?}");
        assert!(!gdir.exists(), "{evil:?}: nothing published");
        assert!(
            walk(&state_dir).iter().all(|p| !p.ends_with("principal.cert")),
            "{evil:?}: the {what} certificate was not stored"
        );
    }

    // A malformed key ring never replaces a good one.
    let mut ca = TestCa::new();
    let state = StubState::new(&ca);
    let signer = start_signer(&mut ca, state.clone(), None).await;
    let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
    let gdir = greeter.dir.clone();
    let cfg = agent_config(
        &mut ca,
        "agent-host-1",
        signer.addr,
        "key_ring_refresh = \"100ms\"\n",
        &[greeter],
    );
    let mut agent = Agent::new(cfg).await.expect("agent");
    agent.pass().await;
    let good = std::fs::read(gdir.join(file_names::KEY_RING)).expect("ring");
    *state.evil.lock().expect("lock") = Evil::BadRing;
    tokio::time::sleep(Duration::from_millis(150)).await;
    agent.pass().await;
    assert_eq!(
        std::fs::read(gdir.join(file_names::KEY_RING)).expect("ring"),
        good
    );
    assert!(agent.all_fresh());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_renews_at_once_and_an_older_list_never_replaces_a_newer_one() {
    let mut ca = TestCa::new();
    let state = StubState::new(&ca);
    let signer = start_signer(&mut ca, state.clone(), None).await;
    let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
    let gdir = greeter.dir.clone();
    let cfg = agent_config(
        &mut ca,
        "agent-host-1",
        signer.addr,
        "crl_refresh = \"100ms\"\n",
        &[greeter],
    );
    let mut agent = Agent::new(cfg).await.expect("agent");
    agent.pass().await;
    let first = published_info(&gdir);

    // Revoking the published handshake certificate: the next pass fetches
    // the list and mints a replacement (the 24 h certificate was not due).
    let issued_at = state.revoke(first.revocation_id);
    tokio::time::sleep(Duration::from_millis(150)).await;
    agent.pass().await;
    let second = published_info(&gdir);
    assert_ne!(second.revocation_id, first.revocation_id);
    let root = ca.root_key();
    let crl =
        RevocationList::from_signed_bytes(&std::fs::read(gdir.join(file_names::CRL)).expect("crl"), &root)
            .expect("verify");
    assert_eq!(crl.issued_at().0, issued_at);
    assert!(crl.is_revoked(first.revocation_id) && !crl.is_revoked(second.revocation_id));
    let server = load(&gdir);
    assert!(server.summary().contains(&format!("issued_at={issued_at}")));

    // A signer serving its first (older) list again: kept out.
    *state.evil.lock().expect("lock") = Evil::OldCrl;
    tokio::time::sleep(Duration::from_millis(150)).await;
    agent.pass().await;
    let crl =
        RevocationList::from_signed_bytes(&std::fs::read(gdir.join(file_names::CRL)).expect("crl"), &root)
            .expect("verify");
    assert_eq!(crl.issued_at().0, issued_at, "rollback refused");
    assert_eq!(published_info(&gdir).revocation_id, second.revocation_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_once_exits_zero_when_fresh_and_one_when_the_signer_is_down() {
    let mut ca = TestCa::new();
    let stub = StubState::new(&ca);
    let signer = start_signer(&mut ca, stub, None).await;
    let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
    let gdir = greeter.dir.clone();
    agent_config(&mut ca, "agent-host-1", signer.addr, "", &[greeter]);
    let config = ca.path().join("agent-host-1.toml");
    let run = |config: PathBuf| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_alts-agent"))
                .arg("--config")
                .arg(config)
                .arg("--once")
                .output()
                .expect("run alts-agent")
        })
    };
    let out = run(config.clone()).await.expect("join");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    load(&gdir);

    // Another host, signer down: not fresh, exit 1, nothing written.
    let down = wl(&ca, "greeter-prod", "cell-a", "greeter-2");
    let ddir = down.dir.clone();
    let (addr, _state) = signer.stop().await;
    agent_config(&mut ca, "agent-host-2", addr, "", &[down]);
    let out = run(ca.path().join("agent-host-2.toml")).await.expect("join");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ddir.exists());

    // A bad configuration: exit 2.
    std::fs::write(ca.path().join("bad.toml"), "state_dir = 1\n").expect("write");
    let out = run(ca.path().join("bad.toml")).await.expect("join");
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_or_revoked_signer_is_refused() {
    // A server under the fleet root, but not the configured signer identity.
    let mut ca = TestCa::new();
    let stub = StubState::new(&ca);
    let impostor = start_signer_as(&mut ca, stub, None, "greeter-prod").await;
    let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
    let gdir = greeter.dir.clone();
    let cfg = agent_config(&mut ca, "agent-host-1", impostor.addr, "", &[greeter]);
    let mut agent = Agent::new(cfg).await.expect("agent");
    agent.pass().await;
    assert!(!agent.all_fresh());
    assert!(!gdir.exists(), "nothing published from an impostor");
    assert_eq!(impostor.state.principals_issued.load(Ordering::SeqCst), 0);
    drop(agent);

    // The real signer, then revoked: the agent checks the signer against the
    // revocation list it keeps and stops using it at once.
    let mut ca = TestCa::new();
    let stub = StubState::new(&ca);
    let signer = start_signer(&mut ca, stub.clone(), None).await;
    let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
    let frontend = wl(&ca, "frontend-prod", "cell-a", "frontend");
    let fdir = frontend.dir.clone();
    let cfg = agent_config(
        &mut ca,
        "agent-host-1",
        signer.addr,
        "crl_refresh = \"100ms\"\n",
        &[greeter],
    );
    let mut agent = Agent::new(cfg).await.expect("agent");
    agent.pass().await;
    assert!(agent.all_fresh());
    stub.revoke(signer.handshake_revocation_id);
    tokio::time::sleep(Duration::from_millis(150)).await;
    agent.pass().await; // fetches the list that revokes the signer
    drop(agent);
    // Restarted with one more workload: the greeter stays as published, the
    // new workload gets nothing from the revoked signer.
    let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
    let cfg = agent_config(&mut ca, "agent-host-1", signer.addr, "", &[greeter, frontend]);
    let issued = stub.principals_issued.load(Ordering::SeqCst);
    let mut agent = Agent::new(cfg).await.expect("agent");
    agent.pass().await;
    assert!(status_of(&agent, "greeter-prod", "cell-a").fresh);
    assert!(!status_of(&agent, "frontend-prod", "cell-a").fresh);
    assert!(!fdir.exists());
    assert_eq!(stub.principals_issued.load(Ordering::SeqCst), issued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_state_dir_is_refused() {
    let mut ca = TestCa::new();
    let stub = StubState::new(&ca);
    let signer = start_signer(&mut ca, stub, None).await;
    let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
    let cfg = agent_config(&mut ca, "agent-host-1", signer.addr, "", &[greeter]);
    let _first = Agent::new(cfg.clone()).await.expect("agent");
    match Agent::new(cfg).await {
        Err(alts_fleet::agent::AgentError::StateLocked { .. }) => {}
        other => panic!("expected StateLocked, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_renewal_goes_on_during_an_outage_while_reserved_ids_last() {
    let _timing = TIMING.lock().await;
    let mut ca = TestCa::new();
    let stub = StubState::new(&ca);
    let signer = start_signer(&mut ca, stub, None).await;
    let greeter = wl(&ca, "greeter-prod", "cell-a", "greeter");
    let gdir = greeter.dir.clone();
    let cfg = agent_config(
        &mut ca,
        "agent-host-1",
        signer.addr,
        "handshake_lifetime = \"2s\"\nrenew_at = 0.3\njitter = 0.05\nrevocation_id_batch = 100\n",
        &[greeter],
    );
    let mut agent = Agent::new(cfg).await.expect("agent");
    agent.pass().await;
    let first = published_info(&gdir);
    let _ = signer.stop().await;
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stop.cancel();
    });
    agent.run(token).await;
    let now = published_info(&gdir);
    assert_ne!(
        now.revocation_id, first.revocation_id,
        "renewed without the signer"
    );
    assert_eq!(now.principal.revocation_id, first.principal.revocation_id);
    let (_, s1) = alts_core::cert::split_revocation_id(first.revocation_id);
    let (_, s2) = alts_core::cert::split_revocation_id(now.revocation_id);
    assert!(s2 > s1 && s2 < s1 + 100, "from the reserved range: {s1} -> {s2}");
    assert!(agent.all_fresh(), "{:?}", agent.status());
    load(&gdir);
}

/// The process-wide metrics recorder of this test binary (other tests record
/// into it too; assertions select the labels of their own workload).
fn snapshotter() -> &'static metrics_util::debugging::Snapshotter {
    static S: std::sync::OnceLock<metrics_util::debugging::Snapshotter> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("install the metrics recorder");
        snapshotter
    })
}

type Snap = Vec<(metrics_util::CompositeKey, metrics_util::debugging::DebugValue)>;

/// A snapshot (counters are drained by each one: counts since the last).
fn snap() -> Snap {
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| (k, v))
        .collect()
}

/// Values of the metrics named `name` with `labels` in `snap`.
fn metric(snap: &Snap, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    use metrics_util::debugging::DebugValue;
    snap.iter()
        .filter(|(k, _)| {
            let key = k.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(l, v)| key.labels().any(|x| x.key() == *l && x.value() == *v))
        })
        .map(|(_, v)| match v {
            DebugValue::Counter(n) => *n as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(h) => h.len() as f64,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_expiry_renewals_failures_and_the_alarm() {
    let _ = snap(); // drain counters recorded so far
    let mut ca = TestCa::new();
    let stub = StubState::new(&ca);
    let signer = start_signer(&mut ca, stub, None).await;
    let w = wl(&ca, "metrics-prod", "cell-m", "metrics");
    let cfg = agent_config(
        &mut ca,
        "agent-host-1",
        signer.addr,
        "handshake_lifetime = \"2s\"\nrenew_at = 0.3\njitter = 0.05\nrevocation_id_batch = 1\n",
        &[w],
    );
    let mut agent = Agent::new(cfg).await.expect("agent");
    agent.pass().await;
    let m = snap();
    let labels = [("identity", "metrics-prod"), ("cell", "cell-m")];
    let hs = [labels[0], labels[1], ("cert", "handshake")];
    let pr = [labels[0], labels[1], ("cert", "principal")];
    let mut renewals = metric(&m, "alts_agent_renewals_total", &hs).iter().sum::<f64>();
    assert_eq!(renewals, 1.0);
    assert_eq!(metric(&m, "alts_agent_renewals_total", &pr), vec![1.0]);
    let expiry = metric(&m, "alts_agent_seconds_to_expiry", &hs);
    assert!(
        expiry.len() == 1 && expiry[0] > 0.5 && expiry[0] <= 3.0,
        "{expiry:?}"
    );
    let principal_expiry = metric(&m, "alts_agent_seconds_to_expiry", &pr);
    assert!(principal_expiry[0] > 29.0 * 86_400.0, "{principal_expiry:?}");
    assert_eq!(metric(&m, "alts_agent_expiry_alarm", &labels), vec![0.0]);

    // Signer down: the mint fails (no reserved IDs left), then the alarm.
    let _ = signer.stop().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut failures, mut consecutive) = (0.0, 0.0);
    loop {
        agent.pass().await;
        let m = snap();
        let mint = [("op", "mint"), labels[0], labels[1]];
        failures += metric(&m, "alts_agent_failures_total", &mint).iter().sum::<f64>();
        renewals += metric(&m, "alts_agent_renewals_total", &hs).iter().sum::<f64>();
        // The debugging recorder resets gauges on each snapshot: keep the largest.
        consecutive = metric(&m, "alts_agent_consecutive_failures", &mint)
            .into_iter()
            .fold(consecutive, f64::max);
        if metric(&m, "alts_agent_expiry_alarm", &labels) == vec![1.0] && failures >= 1.0 {
            assert!(consecutive >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "no alarm: {:?}", agent.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(renewals, 1.0, "no renewal while the signer is down");
}
