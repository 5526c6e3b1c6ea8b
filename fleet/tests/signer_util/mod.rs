//! Shared by the signer tests: a throwaway fleet (root key written as
//! `alts ca init` does, credentials as `alts issue principal` +
//! `alts issue handshake` do), policies, and clients over ALTS.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alts_core::UnixTime;
use alts_core::cert::{self, Category, HandshakeParams, PrincipalParams, RootKey, SigningKey};
use alts_core::crypto::{RingRandom, SecureRandom, StaticKeyPair};
use alts_fleet::pb::signer_client::SignerClient;
use alts_fleet::signer::store::StateLocation;
use alts_fleet::signer::{SignerError, SignerOptions};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tonic_alts::{AltsConfig, AltsConnector, CredentialFiles};

/// The fleet's issuance policy: `bootstrap` (the offline `alts issue`)
/// issues anything; agents issue workloads; `network-admin` is reserved for
/// `netops-ca`.
pub const ISSUANCE_POLICY: &str = r#"
[[rule]]
issuer = "bootstrap"
categories = ["person", "machine", "workload"]
identities = ["*"]

[[rule]]
issuer = "agent-*"
categories = ["workload"]
identities = ["*"]

[[reserved]]
identities = ["network-admin"]
issuers = ["netops-ca"]
"#;

/// The signer policy: agents get `*-prod` workloads; `agent-mallory` has a
/// (deliberately) over-broad rule, so only the issuance policy dry-run
/// stands between it and `network-admin`.
pub const SIGNER_POLICY: &str = r#"
[[allow]]
caller = "agent-*"
identities = ["*-prod"]
categories = ["workload"]

[[allow]]
caller = "agent-mallory"
identities = ["*"]
categories = ["workload"]
"#;

pub const SIGNER_IDENTITY: &str = "alts-signer";

pub struct Fleet {
    pub dir: tempfile::TempDir,
    root_key: SigningKey,
    pub ca_key: PathBuf,
    pub root_pub: PathBuf,
    pub issuance_policy: PathBuf,
    pub signer_policy: PathBuf,
    serial: std::sync::atomic::AtomicU64,
}

/// A credential directory (handshake.cert, handshake.key, root.pub).
#[derive(Clone, Debug)]
pub struct Creds {
    pub dir: PathBuf,
    pub identity: String,
    pub principal_revocation_id: u64,
    pub handshake_revocation_id: u64,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn write_private(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

impl Fleet {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rng = RingRandom::default();
        let root_key = SigningKey::generate(&rng).unwrap();
        let ca = dir.path().join("ca");
        std::fs::create_dir_all(&ca).unwrap();
        let ca_key = ca.join("ca.key");
        write_private(&ca_key, root_key.pkcs8_bytes());
        let root_pub = ca.join("root.pub");
        std::fs::write(
            &root_pub,
            RootKey::from_signing_key("test-fleet", &root_key).to_bytes(),
        )
        .unwrap();
        let issuance_policy = dir.path().join("issuance-policy.toml");
        std::fs::write(&issuance_policy, ISSUANCE_POLICY).unwrap();
        let signer_policy = dir.path().join("signer-policy.toml");
        std::fs::write(&signer_policy, SIGNER_POLICY).unwrap();
        Self {
            dir,
            root_key,
            ca_key,
            root_pub,
            issuance_policy,
            signer_policy,
            // Offline bootstrap IDs live far above the signer's counter.
            serial: std::sync::atomic::AtomicU64::new(1 << 48),
        }
    }

    pub fn root(&self) -> RootKey {
        RootKey::from_signing_key("test-fleet", &self.root_key)
    }

    /// What `alts issue principal --issuer bootstrap` + `alts issue handshake` write.
    pub fn creds(&self, identity: &str, category: Category) -> Creds {
        let rng = RingRandom::default();
        let now = UnixTime(now());
        let validity = Some((now.plus(-60), now.plus(48 * 3600)));
        let s = self.serial.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        let principal_revocation_id = cert::revocation_id(category.revocation_byte(), s).unwrap();
        let handshake_revocation_id = cert::revocation_id(category.revocation_byte(), s + 1).unwrap();
        let principal_key = SigningKey::generate(&rng).unwrap();
        let principal = cert::issue_principal(
            &self.root_key,
            &PrincipalParams {
                identity: identity.into(),
                category,
                issuer: "bootstrap".into(),
                validity,
                revocation_id: principal_revocation_id,
            },
            principal_key.public_key(),
        )
        .unwrap();
        let static_key = StaticKeyPair::generate(&rng as &dyn SecureRandom).unwrap();
        let hs = cert::issue_handshake(
            &principal_key,
            &principal,
            &HandshakeParams::with_defaults(*static_key.public_key(), validity, handshake_revocation_id),
        )
        .unwrap();
        let dir = self.dir.path().join("creds").join(identity);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("handshake.cert"), hs).unwrap();
        write_private(&dir.join("handshake.key"), &static_key.secret_bytes()[..]);
        std::fs::copy(&self.root_pub, dir.join("root.pub")).unwrap();
        Creds {
            dir,
            identity: identity.into(),
            principal_revocation_id,
            handshake_revocation_id,
        }
    }

    /// Signer options with a redb state and files under `dir/<tag>`.
    pub fn options(&self, signer: &Creds, tag: &str) -> SignerOptions {
        let state = StateLocation::Redb(self.dir.path().join(tag).join("state.redb"));
        self.options_with_state(signer, tag, state)
    }

    pub fn options_with_state(&self, signer: &Creds, tag: &str, state: StateLocation) -> SignerOptions {
        let base = self.dir.path().join(tag);
        let mut o = SignerOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            &signer.dir,
            &self.issuance_policy,
            &self.ca_key,
            state,
            base.join("audit.jsonl"),
            base.join("crl"),
        );
        o.signer_policy = Some(self.signer_policy.clone());
        o.admins = vec!["security-admin".into()];
        o.sync_interval = Duration::from_millis(200);
        o
    }

    /// An ALTS client config for `creds`, verifying with the fleet's policy.
    pub fn client_config(&self, creds: &Creds) -> AltsConfig {
        AltsConfig::from_files(CredentialFiles::from_dir(&creds.dir).issuance_policy(&self.issuance_policy))
            .unwrap()
    }

    /// A connected Signer client over ALTS as `creds`.
    pub async fn client(
        &self,
        creds: &Creds,
        addr: SocketAddr,
    ) -> Result<SignerClient<Channel>, tonic::transport::Error> {
        let connector = AltsConnector::new(self.client_config(creds)).target_identity(SIGNER_IDENTITY);
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(10))
            .connect_with_connector(connector)
            .await?;
        Ok(SignerClient::new(channel).max_decoding_message_size(64 << 20))
    }
}

/// An in-process signer on a loopback port.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), SignerError>>,
}

impl Running {
    pub async fn start(opts: SignerOptions) -> Self {
        Self::try_start(opts).await.expect("signer starts")
    }

    pub async fn try_start(opts: SignerOptions) -> Result<Self, SignerError> {
        let bound = alts_fleet::signer::bind(opts).await?;
        let addr = bound.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async move {
            let _ = rx.await;
        }));
        Ok(Self {
            addr,
            stop: Some(tx),
            task,
        })
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

/// A fresh principal public key (the private half stays "on the host").
pub fn new_public_key() -> Vec<u8> {
    SigningKey::generate(&RingRandom::default())
        .unwrap()
        .public_key()
        .to_vec()
}

/// Every line of an audit log, parsed; panics on a line that does not parse.
pub fn audit_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {}: {e}: {l:?}", i + 1)))
        .collect()
}

pub fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == event).collect()
}

pub fn hex_id(id: u64) -> String {
    format!("{id:#018x}")
}
