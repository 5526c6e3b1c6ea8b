//! The credential agent (`alts-agent`): keeps the ALTS credential directory
//! of each workload on a host fresh.
//!
//! For each configured workload the agent
//! - generates the principal's Ed25519 key locally and keeps it (0600) in
//!   its private state directory, never in the workload directory;
//! - obtains the principal certificate from the signer (`IssuePrincipal`),
//!   checks it (the agent's trusted root, identity, category, key, the
//!   fleet's issuance policy, the revocation list) and renews it before it
//!   expires;
//! - mints short-lived handshake certificates locally with the principal
//!   key, each with its own revocation ID from a range reserved with
//!   `AllocateRevocationIds`, and renews them at `renew_at` ± `jitter` of
//!   their lifetime (and at once when the revocation list names them);
//! - keeps `crl.bin` fresh (`FetchCrl`; only a list newer than the one held
//!   replaces it), writes `root.pub` and `issuance-policy.toml`, and
//!   maintains `resumption.keys` from `GetKeyRing(identity, cell)`;
//! - publishes each complete set atomically ([`layout`]).
//!
//! Nothing is published that the agent's own check refuses, and a failure
//! never removes a published set: the old credentials stay until a good new
//! set replaces them. Failed calls are retried with exponential backoff.
//!
//! # Metrics (`metrics` facade)
//! - `alts_agent_seconds_to_expiry{identity, cell, cert}` (gauge; `cert` is
//!   `handshake` or `principal`),
//! - `alts_agent_expiry_alarm{identity, cell}` (gauge, 1 while a credential
//!   has less than 20% of its lifetime left),
//! - `alts_agent_renewals_total{identity, cell, cert}` (counter),
//! - `alts_agent_publishes_total{identity, cell}` (counter),
//! - `alts_agent_failures_total{op, identity, cell}` (counter; `op` is
//!   `IssuePrincipal`, `mint` (including `AllocateRevocationIds`),
//!   `GetKeyRing`, `publish`, or, without workload labels, `FetchCrl` and
//!   `policy`),
//! - `alts_agent_consecutive_failures{op, identity, cell}` (gauge),
//! - `alts_agent_crl_issued_at_seconds` (gauge).
//!
//! An expiry alarm and an operation that failed three times in a row are
//! each logged once (at warn), and their end once (at info).

pub mod config;
pub mod layout;
mod signer;
mod state;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alts_core::UnixTime;
use alts_core::cert::{
    CertError, HandshakeCertInfo, HandshakeParams, LocalCredentials, PrincipalCertInfo, RootKey, SigningKey,
    issue_handshake, revocation_id,
};
use alts_core::crl::{CrlError, RevocationList};
use alts_core::crypto::{RingRandom, SecureRandom, StaticKeyPair, sha256};
use alts_core::policy::{IssuancePolicy, MAX_POLICY_LEN};
use alts_core::verify::Verifier;
use nix::unistd::{Gid, Group, Uid, User};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tonic_alts::keyring::{KeyRing, KeyRingEntry};
use tonic_alts::{AltsConfig, AltsReloader, CredentialFiles, file_names};
use zeroize::{Zeroize, Zeroizing};

pub use config::{AgentConfig, ConfigError, Lifetimes, SignerConfig, WorkloadConfig};
pub use layout::LayoutError;

use crate::pb;
use config::ALARM_FRACTION;
use layout::{Ownership, SetFile};
use signer::SignerClient;
use state::{StateDir, StoredPrincipal};

/// Consecutive failures of one operation after which it is logged at warn.
pub const FAILURES_BEFORE_WARNING: u32 = 3;
/// How often the agent re-reads its own credential directory.
pub const OWN_CREDENTIALS_RELOAD: Duration = Duration::from_secs(30);

/// Why the agent could not start or an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A filesystem step failed or was refused.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The agent's own credentials do not load.
    #[error("agent credentials: {0}")]
    OwnCredentials(#[source] tonic_alts::AltsError),
    /// The fleet's issuance policy does not load.
    #[error("issuance policy {}: {what}", path.display())]
    Policy {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        what: String,
    },
    /// The signer address is not a valid URI.
    #[error("signer address: {0}")]
    SignerAddress(String),
    /// A signer call failed.
    #[error("signer {op}: {code:?}: {message}")]
    Signer {
        /// The call.
        op: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message (truncated).
        message: String,
    },
    /// A signer answer was refused by the agent's checks.
    #[error("signer {op}: refused answer: {what}")]
    BadResponse {
        /// The call.
        op: &'static str,
        /// What is wrong.
        what: String,
    },
    /// Minting or checking a certificate failed.
    #[error("{what}: {source}")]
    Cert {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: CertError,
    },
    /// A revocation list failed to verify.
    #[error("revocation list: {0}")]
    Crl(#[from] CrlError),
    /// A configured owner or group does not exist.
    #[error("unknown {kind} {name:?}")]
    UnknownAccount {
        /// `user` or `group`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A state file is invalid.
    #[error("state {}: {what}", path.display())]
    State {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Another agent holds the state directory.
    #[error("state directory {} is held by another agent", path.display())]
    StateLocked {
        /// The directory.
        path: std::path::PathBuf,
    },
    /// No verified revocation list yet (nothing is published without one).
    #[error("no verified revocation list yet")]
    NoCrl,
}

fn cert_err(what: &'static str) -> impl FnOnce(CertError) -> AgentError {
    move |source| AgentError::Cert { what, source }
}

fn bad(op: &'static str, what: impl Into<String>) -> AgentError {
    AgentError::BadResponse {
        op,
        what: what.into(),
    }
}

fn secs(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Far enough in the future for any schedule (about 34,800 years).
const FAR_FUTURE: Duration = Duration::from_secs(1 << 40);

/// The time `s` Unix seconds (clamped to the epoch and to [`FAR_FUTURE`]).
fn at(s: f64) -> SystemTime {
    let d = Duration::try_from_secs_f64(s.max(0.0))
        .unwrap_or(Duration::ZERO)
        .min(FAR_FUTURE);
    UNIX_EPOCH + d
}

/// Now plus `d` (saturating).
fn later(d: Duration) -> SystemTime {
    let now = SystemTime::now();
    now.checked_add(d.min(FAR_FUTURE)).unwrap_or(now)
}

fn unix_now() -> UnixTime {
    UnixTime(secs(SystemTime::now()).floor() as i64)
}

/// A uniform number in `[-1, 1]`.
fn unit(rng: &RingRandom) -> f64 {
    let mut b = [0u8; 8];
    if rng.fill(&mut b).is_err() {
        return 0.0;
    }
    (u64::from_be_bytes(b) as f64 / u64::MAX as f64) * 2.0 - 1.0
}

/// Retry and schedule state of one periodic or retried operation.
#[derive(Debug)]
struct Task {
    op: &'static str,
    /// Metric labels: `op`, and `identity` and `cell` for a workload's task.
    labels: Vec<(&'static str, String)>,
    due: SystemTime,
    failures: u32,
}

impl Task {
    fn new(op: &'static str) -> Self {
        Self {
            op,
            labels: vec![("op", op.to_owned())],
            due: UNIX_EPOCH,
            failures: 0,
        }
    }

    fn for_workload(op: &'static str, w: &WorkloadConfig) -> Self {
        let mut t = Self::new(op);
        t.labels.push(("identity", w.identity.clone()));
        t.labels.push(("cell", w.cell.clone()));
        t
    }

    fn is_due(&self, now: SystemTime) -> bool {
        self.due <= now
    }

    fn succeeded(&mut self, next: SystemTime, who: &str) {
        if self.failures >= FAILURES_BEFORE_WARNING {
            tracing::info!(op = self.op, who, "recovered after {} failures", self.failures);
        }
        self.failures = 0;
        self.due = next;
        metrics::gauge!("alts_agent_consecutive_failures", &self.labels).set(0.0);
    }

    fn failed(&mut self, err: &AgentError, lt: &Lifetimes, rng: &RingRandom, who: &str) {
        self.failures = self.failures.saturating_add(1);
        metrics::counter!("alts_agent_failures_total", &self.labels).increment(1);
        metrics::gauge!("alts_agent_consecutive_failures", &self.labels).set(f64::from(self.failures));
        if self.failures == FAILURES_BEFORE_WARNING {
            tracing::warn!(op = self.op, who, error = %err, "keeps failing ({} times in a row); retrying with backoff, current credentials stay", self.failures);
        } else {
            tracing::debug!(op = self.op, who, error = %err, failures = self.failures, "failed; will retry");
        }
        let exp = self.failures.saturating_sub(1).min(20);
        let base = lt.retry_min.saturating_mul(1u32 << exp).min(lt.retry_max);
        let delay = base.mul_f64(0.75 + 0.25 * unit(rng));
        self.due = later(delay);
    }
}

/// The verified revocation list in use.
struct Crl {
    bytes: Vec<u8>,
    list: Arc<RevocationList>,
}

/// A handshake certificate and its key, minted by the agent or found in the
/// workload directory.
struct Handshake {
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
    info: HandshakeCertInfo,
    due: SystemTime,
}

struct Principal {
    stored: StoredPrincipal,
    due: SystemTime,
}

struct Workload {
    cfg: WorkloadConfig,
    own: Ownership,
    who: String,
    principal: Option<Principal>,
    handshake: Option<Handshake>,
    ring: Option<Zeroizing<String>>,
    ring_task: Task,
    principal_task: Task,
    renew_task: Task,
    publish_task: Task,
    published: Option<[u8; 32]>,
    generation: Option<String>,
    alarm: bool,
}

/// What the agent reports about one workload.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct WorkloadStatus {
    /// The identity.
    pub identity: String,
    /// The cell.
    pub cell: String,
    /// The credential directory.
    pub dir: std::path::PathBuf,
    /// The published generation (`..<timestamp>`).
    pub generation: Option<String>,
    /// The published handshake certificate's revocation ID.
    pub handshake_revocation_id: Option<u64>,
    /// The published handshake certificate's expiry.
    pub handshake_not_after: Option<i64>,
    /// When the handshake certificate is due for renewal.
    pub handshake_renew_at: Option<SystemTime>,
    /// The principal certificate's expiry.
    pub principal_not_after: Option<i64>,
    /// A key ring is published.
    pub key_ring: bool,
    /// Everything is published, current, and out of the expiry alarm.
    pub fresh: bool,
    /// A credential has less than 20% of its lifetime left (or none is published).
    pub alarm: bool,
    /// Consecutive failures of handshake certificate renewal (minting,
    /// including reserving revocation IDs).
    pub renew_failures: u32,
    /// Consecutive failures of principal certificate renewal.
    pub principal_failures: u32,
}

/// The credential agent. Build it with [`Agent::new`], then call
/// [`Agent::run`] (or [`Agent::pass`] for one round).
pub struct Agent {
    cfg: AgentConfig,
    signer: SignerClient,
    _own_reload_task: AbortOnDropHandle<()>,
    state: StateDir,
    root: RootKey,
    root_bytes: Vec<u8>,
    policy_bytes: Vec<u8>,
    policy: Arc<IssuancePolicy>,
    crl: Option<Crl>,
    crl_task: Task,
    workloads: Vec<Workload>,
    rng: RingRandom,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("state_dir", &self.cfg.state_dir)
            .field("workloads", &self.workloads.len())
            .finish_non_exhaustive()
    }
}

fn resolve_user(name: &str) -> Result<Uid, AgentError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Uid::from_raw(n));
    }
    match User::from_name(name) {
        Ok(Some(u)) => Ok(u.uid),
        _ => Err(AgentError::UnknownAccount {
            kind: "user",
            name: name.to_owned(),
        }),
    }
}

fn resolve_group(name: &str) -> Result<Gid, AgentError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        _ => Err(AgentError::UnknownAccount {
            kind: "group",
            name: name.to_owned(),
        }),
    }
}

fn read_file(path: &std::path::Path, max: usize) -> Result<Vec<u8>, AgentError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|source| LayoutError::Io {
        op: "open",
        path: path.to_owned(),
        source,
    })?;
    let mut buf = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|source| LayoutError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        })?;
    if buf.len() > max {
        return Err(AgentError::State {
            path: path.to_owned(),
            what: "file too large".into(),
        });
    }
    Ok(buf)
}

fn load_policy(path: &std::path::Path) -> Result<(Vec<u8>, IssuancePolicy), AgentError> {
    let bytes = read_file(path, MAX_POLICY_LEN)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| AgentError::Policy {
        path: path.to_owned(),
        what: "not UTF-8".into(),
    })?;
    let policy = IssuancePolicy::from_toml(text).map_err(|e| AgentError::Policy {
        path: path.to_owned(),
        what: e.to_string(),
    })?;
    Ok((bytes, policy))
}

/// Renewal time of a certificate valid from `from` to `not_after` (Unix
/// seconds): `renew_at` ± `jitter` of the way.
fn renewal(from: f64, not_after: f64, lt: &Lifetimes, rng: &RingRandom) -> SystemTime {
    let frac = lt.renew_at + lt.jitter * unit(rng);
    at(from + (not_after - from).max(0.0) * frac)
}

/// Shared inputs of one pass.
struct Ctx<'a> {
    cfg: &'a AgentConfig,
    signer: &'a SignerClient,
    state: &'a StateDir,
    root: &'a RootKey,
    root_bytes: &'a [u8],
    policy_bytes: &'a [u8],
    policy: &'a Arc<IssuancePolicy>,
    crl: Option<&'a Crl>,
    rng: &'a RingRandom,
}

impl Ctx<'_> {
    fn verifier(&self) -> Verifier {
        let v = Verifier::new(self.root.clone(), self.policy.clone());
        match self.crl {
            Some(c) => v.with_crl(c.list.clone()),
            None => v,
        }
    }

    fn revoked(&self, id: u64) -> bool {
        self.crl.is_some_and(|c| c.list.is_revoked(id))
    }
}

impl Agent {
    /// Starts an agent: locks the state directory, loads the agent's own
    /// credentials, the fleet policy, the stored revocation list, and what
    /// each workload directory and the state hold. Does not contact the
    /// signer (the connection is made on first use). Needs a tokio runtime.
    pub async fn new(cfg: AgentConfig) -> Result<Self, AgentError> {
        let state = StateDir::open(&cfg.state_dir)?;
        let root_path = cfg.credentials.join(file_names::ROOT);
        let root_bytes = read_file(&root_path, alts_core::cert::MAX_ROOT_KEY_LEN)?;
        let root = RootKey::from_bytes(&root_bytes).map_err(cert_err("agent root.pub"))?;
        let (policy_bytes, policy) = load_policy(&cfg.issuance_policy)?;
        let policy = Arc::new(policy);
        let rng = RingRandom::default();

        let mut crl = None;
        if let Some(bytes) = state.load_crl()? {
            match RevocationList::from_signed_bytes(&bytes, &root) {
                Ok(list) => {
                    crl = Some(Crl {
                        bytes,
                        list: Arc::new(list),
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stored revocation list does not verify; fetching a new one")
                }
            }
        }

        let (signer, own_reloader) = own_client(&cfg, &state, crl.is_some())?;

        let mut workloads = Vec::with_capacity(cfg.workloads.len());
        for w in &cfg.workloads {
            let own = Ownership {
                uid: w.owner.as_deref().map(resolve_user).transpose()?,
                gid: w.group.as_deref().map(resolve_group).transpose()?,
                file_mode: w.mode,
            };
            let principal = state.load_principal(w)?.map(|stored| {
                let (from, to) = principal_window(&stored.info, &cfg.lifetimes);
                let due = renewal(from, to, &cfg.lifetimes, &rng);
                Principal { stored, due }
            });
            let mut wl = Workload {
                cfg: w.clone(),
                own,
                who: format!("{}@{}", w.identity, w.cell),
                principal,
                handshake: None,
                ring: None,
                ring_task: Task::for_workload("GetKeyRing", w),
                principal_task: Task::for_workload("IssuePrincipal", w),
                renew_task: Task::for_workload("mint", w),
                publish_task: Task::for_workload("publish", w),
                published: None,
                generation: None,
                alarm: false,
            };
            wl.adopt_published(&root, &policy, &cfg.lifetimes, &rng, &mut crl);
            workloads.push(wl);
        }
        Ok(Self {
            cfg,
            signer,
            _own_reload_task: own_reloader.spawn(OWN_CREDENTIALS_RELOAD),
            state,
            root,
            root_bytes,
            policy_bytes,
            policy,
            crl,
            crl_task: Task::new("FetchCrl"),
            workloads,
            rng,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// Runs passes until `shutdown` is cancelled, sleeping until the next
    /// operation is due.
    pub async fn run(&mut self, shutdown: CancellationToken) {
        loop {
            let next = self.pass().await;
            let wait = next
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_millis(20), Duration::from_secs(30));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round: re-reads the issuance policy, fetches the revocation list
    /// and key rings when due, renews what is due, publishes changed sets
    /// and updates the metrics. Returns when the next operation is due.
    pub async fn pass(&mut self) -> SystemTime {
        let now = SystemTime::now();
        self.refresh_policy();
        if self.crl_task.is_due(now) {
            match self.refresh_crl().await {
                Ok(()) => self
                    .crl_task
                    .succeeded(later(self.cfg.lifetimes.crl_refresh), "agent"),
                Err(e) => self.crl_task.failed(&e, &self.cfg.lifetimes, &self.rng, "agent"),
            }
        }
        let ctx = Ctx {
            cfg: &self.cfg,
            signer: &self.signer,
            state: &self.state,
            root: &self.root,
            root_bytes: &self.root_bytes,
            policy_bytes: &self.policy_bytes,
            policy: &self.policy,
            crl: self.crl.as_ref(),
            rng: &self.rng,
        };
        let mut next = self.crl_task.due;
        for w in &mut self.workloads {
            w.service(&ctx).await;
            next = next.min(w.next_due());
        }
        next
    }

    /// Whether every workload is [fresh](WorkloadStatus::fresh).
    pub fn all_fresh(&self) -> bool {
        self.status().iter().all(|s| s.fresh)
    }

    /// The state of every workload.
    pub fn status(&self) -> Vec<WorkloadStatus> {
        let now = secs(SystemTime::now());
        self.workloads
            .iter()
            .map(|w| {
                let hs = w.handshake.as_ref();
                let revoked = hs.zip(self.crl.as_ref()).is_some_and(|(h, c)| {
                    c.list.is_revoked(h.info.revocation_id)
                        || c.list.is_revoked(h.info.principal.revocation_id)
                });
                let published = w.published.is_some()
                    && w.published == w.fingerprint(&self.root_bytes, &self.policy_bytes, self.crl.as_ref());
                WorkloadStatus {
                    identity: w.cfg.identity.clone(),
                    cell: w.cfg.cell.clone(),
                    dir: w.cfg.dir.clone(),
                    generation: w.generation.clone(),
                    handshake_revocation_id: hs.map(|h| h.info.revocation_id),
                    handshake_not_after: hs.and_then(|h| h.info.validity.not_after.map(|t| t.0)),
                    handshake_renew_at: hs.map(|h| h.due),
                    principal_not_after: w
                        .principal
                        .as_ref()
                        .and_then(|p| p.stored.info.validity.not_after.map(|t| t.0)),
                    key_ring: w.ring.is_some(),
                    fresh: published && !w.in_alarm(now) && self.crl.is_some() && !revoked,
                    alarm: w.in_alarm(now),
                    renew_failures: w.renew_task.failures,
                    principal_failures: w.principal_task.failures,
                }
            })
            .collect()
    }

    fn refresh_policy(&mut self) {
        match load_policy(&self.cfg.issuance_policy) {
            Ok((bytes, policy)) => {
                if bytes != self.policy_bytes {
                    tracing::info!(path = %self.cfg.issuance_policy.display(), "issuance policy changed");
                    self.policy_bytes = bytes;
                    self.policy = Arc::new(policy);
                }
            }
            Err(e) => {
                metrics::counter!("alts_agent_failures_total", "op" => "policy").increment(1);
                tracing::warn!(error = %e, "issuance policy does not load; keeping the one in use");
            }
        }
    }

    async fn refresh_crl(&mut self) -> Result<(), AgentError> {
        const OP: &str = "FetchCrl";
        let held = self.crl.as_ref().map_or(0, |c| c.list.issued_at().0);
        let mut resp = self.signer.fetch_crl(held).await?;
        if resp.signed_crl.is_empty() {
            return if self.crl.is_some() {
                Ok(())
            } else {
                Err(bad(OP, "no revocation list"))
            };
        }
        let list = RevocationList::from_signed_bytes(&resp.signed_crl, &self.root)?;
        if list.issued_at().0 != resp.issued_at {
            return Err(bad(OP, "issued_at differs from the signed list's"));
        }
        if self.crl.is_some() && list.issued_at().0 <= held {
            tracing::warn!(
                offered = resp.issued_at,
                held,
                "signer offered a revocation list not newer than the one held; keeping it"
            );
            return Ok(());
        }
        let bytes = std::mem::take(&mut resp.signed_crl);
        self.state.store_crl(&bytes)?;
        // The agent checks the signer's certificate against this list too:
        // a new client (and connection) verifies the signer again now.
        match own_client(&self.cfg, &self.state, true) {
            Ok((signer, reloader)) => {
                self._own_reload_task = reloader.spawn(OWN_CREDENTIALS_RELOAD);
                self.signer = signer;
            }
            Err(e) => tracing::warn!(error = %e, "agent credentials do not load with the revocation list"),
        }
        metrics::gauge!("alts_agent_crl_issued_at_seconds").set(list.issued_at().0 as f64);
        tracing::info!(
            issued_at = list.issued_at().0,
            revoked = list.len(),
            "new revocation list"
        );
        self.crl = Some(Crl {
            bytes,
            list: Arc::new(list),
        });
        Ok(())
    }
}

/// The agent's own ALTS credentials and a signer client using them. The
/// signer's certificate is checked against the revocation list the agent
/// keeps (`with_crl`, when the state holds one), unless the credential
/// directory brings its own list.
fn own_client(
    cfg: &AgentConfig,
    state: &StateDir,
    with_crl: bool,
) -> Result<(SignerClient, AltsReloader), AgentError> {
    let mut files = CredentialFiles::from_dir(&cfg.credentials);
    if !cfg.credentials.join(file_names::ISSUANCE_POLICY).exists() {
        files = files.issuance_policy(&cfg.issuance_policy);
    }
    if with_crl && !cfg.credentials.join(file_names::CRL).exists() {
        files = files.crl(state.crl_path());
    }
    let own = AltsConfig::from_files(files).map_err(AgentError::OwnCredentials)?;
    let reloader = own.reloader().map_err(AgentError::OwnCredentials)?;
    tracing::info!(summary = %own.summary(), "agent credentials loaded");
    Ok((SignerClient::new(&cfg.signer, own)?, reloader))
}

/// `(from, not_after)` of a principal certificate in Unix seconds; an
/// open-ended one counts as valid for `principal_validity` from now.
fn principal_window(info: &PrincipalCertInfo, lt: &Lifetimes) -> (f64, f64) {
    let now = secs(SystemTime::now());
    let from = info.validity.not_before.map_or(now, |t| t.0 as f64);
    let to = info
        .validity
        .not_after
        .map_or(now + lt.principal_validity.as_secs_f64(), |t| t.0 as f64);
    (from, to)
}

fn handshake_window(info: &HandshakeCertInfo) -> Option<(f64, f64)> {
    let to = info.validity.not_after?.0 as f64;
    let from = info.validity.not_before.map_or(to, |t| t.0 as f64);
    Some((from, to))
}

/// Whether less than [`ALARM_FRACTION`] of `(from, to)` is left at `now`.
fn near_expiry(from: f64, to: f64, now: f64) -> bool {
    to - now < (to - from) * ALARM_FRACTION
}

impl Workload {
    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("identity", self.cfg.identity.clone()),
            ("cell", self.cfg.cell.clone()),
        ]
    }

    fn next_due(&self) -> SystemTime {
        let principal = self
            .principal
            .as_ref()
            .map_or(UNIX_EPOCH, |p| p.due)
            .max(self.principal_task.due);
        // Without a principal nothing can be minted before one is obtained.
        let handshake = match (&self.handshake, &self.principal) {
            (_, None) => principal,
            (None, Some(_)) => UNIX_EPOCH,
            (Some(h), Some(_)) => h.due,
        }
        .max(self.renew_task.due);
        let mut next = self.ring_task.due.min(principal).min(handshake);
        if self.publish_task.failures > 0 {
            next = next.min(self.publish_task.due);
        }
        next
    }

    fn in_alarm(&self, now: f64) -> bool {
        let hs = match self.handshake.as_ref().and_then(|h| handshake_window(&h.info)) {
            Some((from, to)) => near_expiry(from, to, now),
            None => true,
        };
        let principal = self
            .principal
            .as_ref()
            .is_some_and(|p| match p.stored.info.validity.not_after {
                Some(to) => near_expiry(
                    p.stored
                        .info
                        .validity
                        .not_before
                        .map_or(to.0 as f64, |t| t.0 as f64),
                    to.0 as f64,
                    now,
                ),
                None => false,
            });
        hs || principal
    }

    /// Takes over a set already published in the workload directory (after
    /// a restart) when it is consistent and belongs to this workload; a
    /// newer revocation list found there is adopted if it verifies.
    fn adopt_published(
        &mut self,
        root: &RootKey,
        policy: &Arc<IssuancePolicy>,
        lt: &Lifetimes,
        rng: &RingRandom,
        crl: &mut Option<Crl>,
    ) {
        let dir = &self.cfg.dir;
        let Some(generation) = layout::current_generation(dir) else {
            return;
        };
        let read = |name: &str, max: usize| layout::read_current(dir, &generation, name, max).ok().flatten();
        if let Some(bytes) = read(file_names::CRL, alts_core::crl::MAX_CRL_LEN)
            && let Ok(list) = RevocationList::from_signed_bytes(&bytes, root)
            && crl.as_ref().is_none_or(|c| c.list.issued_at() < list.issued_at())
        {
            *crl = Some(Crl {
                bytes,
                list: Arc::new(list),
            });
        }
        let (Some(cert), Some(key)) = (
            read(file_names::HANDSHAKE_CERT, alts_core::cert::MAX_CERT_LEN),
            read(file_names::HANDSHAKE_KEY, 64).map(Zeroizing::new),
        ) else {
            return;
        };
        let Ok(key_arr) = <[u8; 32]>::try_from(key.as_slice()) else {
            return;
        };
        let key_arr = Zeroizing::new(key_arr);
        let Ok(creds) = LocalCredentials::new(cert.clone(), StaticKeyPair::from_secret_bytes(*key_arr))
        else {
            tracing::warn!(dir = %dir.display(), "published certificate and key do not match; replacing them");
            return;
        };
        let info = creds.info().clone();
        if info.principal.identity != self.cfg.identity || info.principal.category != self.cfg.category {
            tracing::warn!(dir = %dir.display(), "published credentials are for another identity; replacing them");
            return;
        }
        // Kept only if a peer would accept it now (root, validity, policy, revocation).
        let mut verifier = Verifier::new(root.clone(), policy.clone());
        if let Some(c) = crl.as_ref() {
            verifier = verifier.with_crl(c.list.clone());
        }
        if let Err(e) = verifier.verify_handshake_cert(&cert, unix_now()) {
            tracing::warn!(dir = %dir.display(), error = %e, "published certificate does not verify; replacing it");
            return;
        }
        let Some((from, to)) = handshake_window(&info) else {
            return;
        };
        let due = renewal(from, to, lt, rng);
        self.ring = read(file_names::KEY_RING, tonic_alts::keyring::MAX_RING_FILE)
            .and_then(|b| String::from_utf8(b).ok())
            .map(Zeroizing::new)
            .filter(|t| KeyRing::from_toml(t).is_ok());
        self.handshake = Some(Handshake { cert, key, info, due });
        self.generation = Some(generation.clone());
        // Only a byte-identical set counts as published; anything else is rewritten.
        let found: Vec<(&str, Option<Vec<u8>>)> = [file_names::ROOT, file_names::ISSUANCE_POLICY]
            .iter()
            .map(|n| (*n, read(n, MAX_POLICY_LEN)))
            .collect();
        if let ([(_, Some(r)), (_, Some(p))], Some(c)) = (found.as_slice(), crl.as_ref()) {
            let on_disk_crl = read(file_names::CRL, alts_core::crl::MAX_CRL_LEN);
            if on_disk_crl.as_deref() == Some(c.bytes.as_slice()) {
                self.published = self.fingerprint(r, p, Some(c));
            }
        }
    }

    /// Digest of the set that would be published now.
    fn fingerprint(&self, root: &[u8], policy: &[u8], crl: Option<&Crl>) -> Option<[u8; 32]> {
        let hs = self.handshake.as_ref()?;
        let crl = crl?;
        let mut buf = Zeroizing::new(Vec::new());
        let ring: &[u8] = self.ring.as_ref().map_or(b"", |r| r.as_bytes());
        for part in [&hs.cert[..], &hs.key[..], root, policy, &crl.bytes[..], ring] {
            buf.extend_from_slice(&(part.len() as u64).to_be_bytes());
            buf.extend_from_slice(part);
        }
        Some(sha256(&buf))
    }

    async fn service(&mut self, ctx: &Ctx<'_>) {
        let now = SystemTime::now();
        let lt = &ctx.cfg.lifetimes;
        // Principal: missing, due, expired or revoked.
        let principal_needed = match &self.principal {
            None => true,
            Some(p) => p.due <= now || ctx.revoked(p.stored.info.revocation_id),
        };
        if principal_needed && self.principal_task.is_due(now) {
            match self.renew_principal(ctx).await {
                Ok(()) => {
                    self.principal_task.succeeded(UNIX_EPOCH, &self.who);
                    metrics::counter!("alts_agent_renewals_total", &self.labels_with("principal"))
                        .increment(1);
                    // Re-mint right away under the new principal.
                    if let Some(h) = &mut self.handshake {
                        h.due = now;
                    }
                }
                Err(e) => self.principal_task.failed(&e, lt, ctx.rng, &self.who),
            }
        }
        // Handshake certificate: missing, due, or revoked.
        let handshake_needed = match &self.handshake {
            None => true,
            Some(h) => {
                h.due <= now
                    || ctx.revoked(h.info.revocation_id)
                    || ctx.revoked(h.info.principal.revocation_id)
            }
        };
        if handshake_needed
            && self.renew_task.is_due(now)
            && let Some(p) = &self.principal
        {
            match mint(ctx, &self.cfg, &p.stored).await {
                Ok(h) => {
                    metrics::counter!("alts_agent_renewals_total", &self.labels_with("handshake"))
                        .increment(1);
                    self.handshake = Some(h);
                    self.renew_task.succeeded(UNIX_EPOCH, &self.who);
                }
                Err(e) => self.renew_task.failed(&e, lt, ctx.rng, &self.who),
            }
        }
        // Key ring.
        if self.ring_task.is_due(now) {
            match self.refresh_ring(ctx).await {
                Ok(next) => self.ring_task.succeeded(next, &self.who),
                Err(e) => self.ring_task.failed(&e, lt, ctx.rng, &self.who),
            }
        }
        // Publish when anything changed.
        let fp = self.fingerprint(ctx.root_bytes, ctx.policy_bytes, ctx.crl);
        if fp.is_some() && fp != self.published && self.publish_task.is_due(now) {
            match self.publish(ctx) {
                Ok(generation) => {
                    metrics::counter!("alts_agent_publishes_total", &self.labels()).increment(1);
                    self.published = fp;
                    self.generation = Some(generation);
                    self.publish_task.succeeded(UNIX_EPOCH, &self.who);
                }
                Err(e) => self.publish_task.failed(&e, lt, ctx.rng, &self.who),
            }
        }
        self.report();
    }

    fn labels_with(&self, cert: &'static str) -> [(&'static str, String); 3] {
        let [a, b] = self.labels();
        [a, b, ("cert", cert.to_owned())]
    }

    fn report(&mut self) {
        let now = secs(SystemTime::now());
        if let Some(h) = &self.handshake
            && let Some(to) = h.info.validity.not_after
        {
            metrics::gauge!("alts_agent_seconds_to_expiry", &self.labels_with("handshake"))
                .set(to.0 as f64 - now);
        }
        if let Some(p) = &self.principal
            && let Some(to) = p.stored.info.validity.not_after
        {
            metrics::gauge!("alts_agent_seconds_to_expiry", &self.labels_with("principal"))
                .set(to.0 as f64 - now);
        }
        let alarm = self.in_alarm(now);
        metrics::gauge!("alts_agent_expiry_alarm", &self.labels()).set(if alarm { 1.0 } else { 0.0 });
        if alarm && !self.alarm {
            tracing::warn!(
                workload = %self.who,
                not_after = ?self.handshake.as_ref().and_then(|h| h.info.validity.not_after).map(|t| t.0),
                "credentials have less than 20% of their lifetime left (or none are published); renewal keeps being retried"
            );
        } else if !alarm && self.alarm {
            tracing::info!(workload = %self.who, "credentials are fresh again");
        }
        self.alarm = alarm;
    }

    async fn renew_principal(&mut self, ctx: &Ctx<'_>) -> Result<(), AgentError> {
        const OP: &str = "IssuePrincipal";
        let key = SigningKey::generate(ctx.rng).map_err(cert_err("principal key generation"))?;
        let resp = ctx
            .signer
            .issue_principal(pb::IssuePrincipalRequest {
                identity: self.cfg.identity.clone(),
                category: self.cfg.category.as_str().to_owned(),
                public_key: key.public_key().to_vec(),
                validity_secs: ctx.cfg.lifetimes.principal_validity.as_secs(),
            })
            .await?;
        let root = RootKey::from_bytes(&resp.root_key).map_err(|e| bad(OP, format!("root key: {e}")))?;
        if &root != ctx.root {
            return Err(bad(OP, "the root key differs from the agent's trusted root.pub"));
        }
        let cert = resp.principal_cert;
        let info =
            PrincipalCertInfo::parse(&cert).map_err(|e| bad(OP, format!("principal certificate: {e}")))?;
        if info.identity != self.cfg.identity {
            return Err(bad(OP, "certificate for another identity"));
        }
        if info.category != self.cfg.category {
            return Err(bad(OP, "certificate for another category"));
        }
        if info.public_key != key.public_key() {
            return Err(bad(OP, "certificate for another key"));
        }
        if info.revocation_id != resp.revocation_id {
            return Err(bad(OP, "revocation_id differs from the certificate's"));
        }
        ctx.verifier()
            .verify_principal_cert(&cert, unix_now())
            .map_err(|e| bad(OP, format!("certificate does not verify: {e}")))?;
        let stored = StoredPrincipal { key, cert, info };
        ctx.state.store_principal(&self.cfg, &stored)?;
        let (from, to) = principal_window(&stored.info, &ctx.cfg.lifetimes);
        let due = renewal(from, to, &ctx.cfg.lifetimes, ctx.rng);
        tracing::info!(
            workload = %self.who,
            revocation_id = stored.info.revocation_id,
            not_after = ?stored.info.validity.not_after.map(|t| t.0),
            "new principal certificate"
        );
        self.principal = Some(Principal { stored, due });
        Ok(())
    }

    async fn refresh_ring(&mut self, ctx: &Ctx<'_>) -> Result<SystemTime, AgentError> {
        const OP: &str = "GetKeyRing";
        let mut resp = ctx
            .signer
            .get_key_ring(&self.cfg.identity, &self.cfg.cell)
            .await?;
        let ring = KeyRing {
            keys: resp
                .keys
                .iter()
                .map(|k| KeyRingEntry {
                    rid: k.rid.clone(),
                    secret: k.secret.clone(),
                    created_at: k.created_at,
                })
                .collect(),
        };
        for k in &mut resp.keys {
            k.secret.zeroize();
        }
        let text = ring.to_toml();
        drop(ring);
        KeyRing::from_toml(&text).map_err(|e| bad(OP, e.to_string()))?;
        if self.ring.as_ref().is_none_or(|r| r.as_str() != text.as_str()) {
            tracing::info!(workload = %self.who, "new resumption key ring");
            self.ring = Some(text);
        }
        let refresh = later(ctx.cfg.lifetimes.key_ring_refresh);
        // Fetch again just after the announced rotation when that comes first.
        let rotation = at(resp.next_rotation_at as f64 + 1.0);
        Ok(if resp.next_rotation_at > 0 && rotation > SystemTime::now() {
            refresh.min(rotation)
        } else {
            refresh
        })
    }

    fn publish(&self, ctx: &Ctx<'_>) -> Result<String, AgentError> {
        let hs = self.handshake.as_ref().ok_or(AgentError::NoCrl)?;
        let crl = ctx.crl.ok_or(AgentError::NoCrl)?;
        let mut files = vec![
            SetFile {
                name: file_names::HANDSHAKE_CERT,
                bytes: &hs.cert,
            },
            SetFile {
                name: file_names::HANDSHAKE_KEY,
                bytes: &hs.key,
            },
            SetFile {
                name: file_names::ROOT,
                bytes: ctx.root_bytes,
            },
            SetFile {
                name: file_names::ISSUANCE_POLICY,
                bytes: ctx.policy_bytes,
            },
            SetFile {
                name: file_names::CRL,
                bytes: &crl.bytes,
            },
        ];
        if let Some(r) = &self.ring {
            files.push(SetFile {
                name: file_names::KEY_RING,
                bytes: r.as_bytes(),
            });
        }
        let generation = layout::publish(&self.cfg.dir, &files, &self.own)?;
        tracing::info!(
            workload = %self.who,
            generation,
            revocation_id = hs.info.revocation_id,
            not_after = ?hs.info.validity.not_after.map(|t| t.0),
            "published credentials"
        );
        Ok(generation)
    }
}

/// Mints a handshake certificate under `p` with a reserved revocation ID
/// and checks it as a peer would before returning it.
async fn mint(ctx: &Ctx<'_>, w: &WorkloadConfig, p: &StoredPrincipal) -> Result<Handshake, AgentError> {
    const OP: &str = "AllocateRevocationIds";
    let serial = match ctx.state.take_serial()? {
        Some(s) => s,
        None => {
            let want = ctx.cfg.revocation_id_batch;
            let r = ctx.signer.allocate_revocation_ids(want).await?;
            if r.count == 0 || r.count > want {
                return Err(bad(OP, format!("range of {} serials for {want} asked", r.count)));
            }
            let last = r.first.checked_add(u64::from(r.count) - 1);
            if last.is_none_or(|l| l > alts_core::cert::MAX_REVOCATION_SERIAL) {
                return Err(bad(OP, "range beyond 56-bit serials"));
            }
            ctx.state.store_new_range(r.first, r.count)?;
            ctx.state.take_serial()?.ok_or_else(|| bad(OP, "empty range"))?
        }
    };
    let rid = revocation_id(w.category.revocation_byte(), serial).map_err(cert_err("revocation id"))?;
    let static_key = StaticKeyPair::generate(ctx.rng).map_err(|_| AgentError::Cert {
        what: "handshake key generation",
        source: CertError::Random,
    })?;
    let issued = secs(SystemTime::now());
    let nb = issued.floor() as i64;
    let mut na = (issued + ctx.cfg.lifetimes.handshake_lifetime.as_secs_f64()).ceil() as i64;
    if let Some(pna) = p.info.validity.not_after {
        na = na.min(pna.0);
    }
    if na <= nb {
        return Err(cert_err("handshake certificate")(CertError::Expired {
            level: "principal",
            not_after: na,
        }));
    }
    let params =
        HandshakeParams::with_defaults(*static_key.public_key(), Some((UnixTime(nb), UnixTime(na))), rid);
    let cert =
        issue_handshake(&p.key, &p.cert, &params).map_err(cert_err("minting the handshake certificate"))?;
    // Check it as a peer would: loadable with its key, chain, validity, revocation, policy.
    let creds =
        LocalCredentials::new(cert.clone(), static_key.clone()).map_err(cert_err("minted certificate"))?;
    ctx.verifier()
        .verify_handshake_cert(&cert, unix_now())
        .map_err(cert_err("minted certificate does not verify"))?;
    let info = creds.info().clone();
    // Renewal at renew_at ± jitter of the configured lifetime (or of the
    // shorter one left by the principal), counted from the minting instant.
    let life = (na as f64 - issued).min(ctx.cfg.lifetimes.handshake_lifetime.as_secs_f64());
    let frac = ctx.cfg.lifetimes.renew_at + ctx.cfg.lifetimes.jitter * unit(ctx.rng);
    let due = at(issued + life * frac).max(later(Duration::from_millis(100)));
    Ok(Handshake {
        cert,
        key: Zeroizing::new(static_key.secret_bytes().to_vec()),
        info,
        due,
    })
}
