//! `alts-signer`: the fleet's signing service, itself served over ALTS.
//!
//! - `IssuePrincipal` signs principal certificates with the root key. The
//!   issuer recorded in the certificate is the caller's authenticated ALTS
//!   identity. The [signer policy](policy) says which callers may ask for
//!   which identities and categories, and the fleet's issuance policy is
//!   dry-run with the caller as issuer, so the signer never signs what
//!   verifiers would refuse.
//! - `AllocateRevocationIds` hands out revocation-serial ranges for the
//!   handshake certificates callers mint locally; serials are never handed
//!   out twice (see [`store`]).
//! - `Revoke` (admins only) records a revocation and publishes a new signed
//!   revocation list with a strictly larger `issued_at`, written atomically
//!   to `--crl-dir/crl.bin` (which the signer's own ALTS config also uses)
//!   and served by `FetchCrl`.
//! - `GetKeyRing` returns the resumption key ring of one identity in one
//!   cell, shared through the state by every signer replica.
//!
//! Every issuance, allocation, revocation and refusal is appended to the
//! [audit log](audit). Refusals return `PERMISSION_DENIED` with a generic
//! message; the reason is logged and audited.
//!
//! Start it with [`bind`] then [`BoundSigner::serve`], or [`serve`].

pub mod audit;
pub mod files;
pub mod policy;
pub mod seal;
mod service;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alts_core::cert::RootKey;
use alts_core::crl::CrlError;
use alts_core::policy::{IssuancePolicy, PolicyError};
use tonic_alts::{AltsAcceptor, AltsConfig, AltsError, AltsIncoming, CredentialFiles};

pub use service::SignerService;

use self::audit::{AuditError, AuditLog};
use self::files::FileError;
use self::policy::{SignerPolicy, SignerPolicyError};
use self::store::{StateLocation, StoreError};

/// Default cap on a principal certificate's lifetime.
pub const DEFAULT_MAX_PRINCIPAL_VALIDITY: Duration = Duration::from_secs(90 * 86_400);
/// Default key ring rotation period.
pub const DEFAULT_KEY_RING_ROTATION: Duration = Duration::from_secs(86_400);
/// Default largest revocation-ID range one `AllocateRevocationIds` returns.
pub const DEFAULT_MAX_ALLOCATION: u32 = 1 << 20;
/// Default interval of the background work: copying a list published by
/// another replica to `--crl-dir`, and auditing issuances a stopped task
/// left unaudited.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(10);
/// An unaudited issuance older than this is taken as abandoned by its task
/// (a crash) and audited by the background work.
pub const RECOVERY_GRACE_SECS: i64 = 60;

/// Everything the signer needs; the binary's flags map onto it one to one.
#[derive(Clone, Debug)]
pub struct SignerOptions {
    /// Address to listen on (`--listen`; port 0 picks one).
    pub listen: SocketAddr,
    /// The signer's own ALTS credentials (`--creds`): `handshake.cert`,
    /// `handshake.key`, `root.pub`, as `alts issue handshake` writes them.
    pub creds_dir: PathBuf,
    /// The fleet's issuance policy (`--issuance-policy`): used both to verify
    /// callers and to dry-run every certificate before signing it.
    pub issuance_policy: PathBuf,
    /// The root signing key (`--ca-key`), Ed25519 PKCS#8, mode 0600 or
    /// stricter.
    pub ca_key: PathBuf,
    /// Who may request what (`--signer-policy`). Without it, issuance,
    /// allocation and key ring calls are refused unless
    /// [`dangerously_allow_any_caller`](Self::dangerously_allow_any_caller).
    pub signer_policy: Option<PathBuf>,
    /// `--dangerously-allow-any-caller`: without a signer policy, let every
    /// authenticated caller request anything the issuance policy accepts.
    pub dangerously_allow_any_caller: bool,
    /// Where the state lives (`--state`).
    pub state: StateLocation,
    /// The audit log (`--audit-log`).
    pub audit_log: PathBuf,
    /// Where `crl.bin` is written (`--crl-dir`).
    pub crl_dir: PathBuf,
    /// Identities allowed to revoke (`--admin`, repeatable). Empty: every
    /// `Revoke` is refused.
    pub admins: Vec<String>,
    /// Cap on a principal certificate's lifetime (`--max-principal-validity`).
    pub max_principal_validity: Duration,
    /// Key ring rotation period (`--key-ring-rotation`).
    pub key_ring_rotation: Duration,
    /// Largest range one `AllocateRevocationIds` returns (`--max-allocation`).
    pub max_allocation: u32,
    /// Background work interval (`--sync-interval`).
    pub sync_interval: Duration,
}

impl SignerOptions {
    /// Options with the required settings and every default.
    pub fn new(
        listen: SocketAddr,
        creds_dir: impl Into<PathBuf>,
        issuance_policy: impl Into<PathBuf>,
        ca_key: impl Into<PathBuf>,
        state: StateLocation,
        audit_log: impl Into<PathBuf>,
        crl_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            listen,
            creds_dir: creds_dir.into(),
            issuance_policy: issuance_policy.into(),
            ca_key: ca_key.into(),
            signer_policy: None,
            dangerously_allow_any_caller: false,
            state,
            audit_log: audit_log.into(),
            crl_dir: crl_dir.into(),
            admins: Vec::new(),
            max_principal_validity: DEFAULT_MAX_PRINCIPAL_VALIDITY,
            key_ring_rotation: DEFAULT_KEY_RING_ROTATION,
            max_allocation: DEFAULT_MAX_ALLOCATION,
            sync_interval: DEFAULT_SYNC_INTERVAL,
        }
    }
}

/// The signer could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The root key or the revocation list file.
    #[error(transparent)]
    File(#[from] FileError),
    /// The signer policy.
    #[error(transparent)]
    SignerPolicy(#[from] SignerPolicyError),
    /// The issuance policy.
    #[error("{path}: {source}")]
    IssuancePolicy {
        /// The file.
        path: String,
        /// Why.
        source: PolicyError,
    },
    /// The state.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The signer's own ALTS credentials.
    #[error("ALTS: {0}")]
    Alts(#[from] AltsError),
    /// A revocation list from the state does not verify with the root.
    #[error("revocation list: {0}")]
    Crl(#[from] CrlError),
    /// Listening failed.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("serve: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A signer that is listening and ready to serve.
pub struct BoundSigner {
    local_addr: SocketAddr,
    incoming: AltsIncoming,
    service: SignerService,
    config: AltsConfig,
    sync_interval: Duration,
}

impl std::fmt::Debug for BoundSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundSigner")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

fn read_text(path: &Path, max: usize) -> Result<String, SignerError> {
    let meta = std::fs::metadata(path).map_err(|source| FileError::Io {
        path: path.to_owned(),
        source,
    })?;
    if meta.len() > max as u64 {
        return Err(SignerError::Config(format!(
            "{}: larger than {max} bytes",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(|source| {
        FileError::Io {
            path: path.to_owned(),
            source,
        }
        .into()
    })
}

/// Loads keys, policies and state, publishes the revocation list if none
/// exists yet, audits issuances a previous run left unaudited, and listens.
pub async fn bind(opts: SignerOptions) -> Result<BoundSigner, SignerError> {
    let ca_key = files::load_ca_key(&opts.ca_key)?;
    let root_path = opts.creds_dir.join(tonic_alts::file_names::ROOT);
    let root_bytes = std::fs::read(&root_path).map_err(|source| FileError::Io {
        path: root_path.clone(),
        source,
    })?;
    let root = RootKey::from_bytes(&root_bytes)
        .map_err(|e| SignerError::Config(format!("{}: {e}", root_path.display())))?;
    if root.public_key() != &ca_key.public_key() {
        return Err(SignerError::Config(format!(
            "{} is not the public half of {}: the signer would issue certificates its fleet does not trust",
            root_path.display(),
            opts.ca_key.display()
        )));
    }
    let policies = load_policies(&opts.issuance_policy, opts.signer_policy.as_deref())?;
    match &opts.signer_policy {
        Some(_) => {}
        None if opts.dangerously_allow_any_caller => tracing::warn!(
            "NO SIGNER POLICY and --dangerously-allow-any-caller: every authenticated caller may request \
             any credential the issuance policy accepts"
        ),
        None => tracing::warn!(
            "no --signer-policy: IssuePrincipal, AllocateRevocationIds and GetKeyRing are refused for everyone"
        ),
    }
    if opts.admins.is_empty() {
        tracing::warn!("no --admin: every Revoke is refused");
    }
    for a in &opts.admins {
        if !service::valid_name(a) {
            return Err(SignerError::Config(format!(
                "--admin {a:?} is not a valid identity"
            )));
        }
    }
    if opts.max_principal_validity.is_zero() || opts.key_ring_rotation.is_zero() || opts.max_allocation == 0 {
        return Err(SignerError::Config(
            "--max-principal-validity, --key-ring-rotation and --max-allocation must be positive".into(),
        ));
    }
    std::fs::create_dir_all(&opts.crl_dir).map_err(|source| FileError::Io {
        path: opts.crl_dir.clone(),
        source,
    })?;
    let store = store::open(&opts.state).await?;
    check_not_behind(&opts.crl_dir.join(files::CRL_FILE), &root, store.as_ref()).await?;
    let audit = AuditLog::open(&opts.audit_log)?;
    let service = SignerService::new(service::Settings {
        store,
        audit,
        sealer: seal::Sealer::new(&ca_key).map_err(|e| SignerError::Config(e.to_string()))?,
        ca_key: Arc::new(ca_key),
        root,
        root_bytes,
        policies: std::sync::RwLock::new(Arc::new(policies)),
        issuance_policy_path: opts.issuance_policy.clone(),
        signer_policy_path: opts.signer_policy.clone(),
        allow_any_caller: opts.dangerously_allow_any_caller,
        admins: opts.admins.iter().cloned().collect(),
        max_validity_secs: i64::try_from(opts.max_principal_validity.as_secs()).unwrap_or(i64::MAX),
        rotation_secs: i64::try_from(opts.key_ring_rotation.as_secs()).unwrap_or(i64::MAX),
        max_allocation: opts.max_allocation,
        crl_dir: opts.crl_dir.clone(),
        reloader: Arc::new(OnceLock::new()),
    });
    service.ensure_crl().await?;
    service.recover(true).await;

    let files = CredentialFiles::from_dir(&opts.creds_dir)
        .issuance_policy(&opts.issuance_policy)
        .crl(opts.crl_dir.join(files::CRL_FILE));
    let config = AltsConfig::from_files(files)?;
    service.set_reloader(config.reloader()?);
    let incoming = AltsAcceptor::new(config.clone())
        .bind(opts.listen)
        .await
        .map_err(|source| SignerError::Bind {
            addr: opts.listen,
            source,
        })?;
    let local_addr = incoming.local_addr();
    tracing::info!(
        addr = %local_addr,
        state = %service.describe_store(),
        audit_log = %opts.audit_log.display(),
        crl = %opts.crl_dir.join(files::CRL_FILE).display(),
        alts = %config.summary(),
        "alts-signer listening"
    );
    Ok(BoundSigner {
        local_addr,
        incoming,
        service,
        config,
        sync_interval: opts.sync_interval,
    })
}

/// The policies in force, with the files' modification stamps they were
/// read at.
pub(crate) struct LoadedPolicies {
    pub issuance: IssuancePolicy,
    pub signer: Option<SignerPolicy>,
    pub stamp: Vec<Option<(std::time::SystemTime, u64)>>,
}

pub(crate) fn policy_stamp(
    issuance: &Path,
    signer: Option<&Path>,
) -> Vec<Option<(std::time::SystemTime, u64)>> {
    std::iter::once(issuance)
        .chain(signer)
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Reads the issuance policy and the signer policy (if any).
pub(crate) fn load_policies(issuance: &Path, signer: Option<&Path>) -> Result<LoadedPolicies, SignerError> {
    let stamp = policy_stamp(issuance, signer);
    let issuance_policy = IssuancePolicy::from_toml(&read_text(issuance, alts_core::policy::MAX_POLICY_LEN)?)
        .map_err(|source| SignerError::IssuancePolicy {
            path: issuance.display().to_string(),
            source,
        })?;
    let signer_policy = signer.map(SignerPolicy::load).transpose()?;
    Ok(LoadedPolicies {
        issuance: issuance_policy,
        signer: signer_policy,
        stamp,
    })
}

/// Refuses a state that is behind the revocation list already published in
/// `--crl-dir` (a state restored from a backup, or a new one pointed at an
/// old directory): it would publish a list without revocations that were
/// made, and may hand out serials again.
async fn check_not_behind(
    crl_file: &Path,
    root: &RootKey,
    store: &dyn store::Storage,
) -> Result<(), SignerError> {
    let Ok(bytes) = std::fs::read(crl_file) else {
        return Ok(());
    };
    let Ok(published) = alts_core::crl::RevocationList::from_signed_bytes(&bytes, root) else {
        tracing::warn!(file = %crl_file.display(), "ignoring a revocation list that does not verify with this root");
        return Ok(());
    };
    let stored = store.crl().await?.map(|c| c.issued_at);
    if stored.is_none_or(|t| t < published.issued_at().secs()) {
        return Err(SignerError::Config(format!(
            "{} was issued at {} but the state's newest list is {}: the state is older than what was \
             published (restored from a backup?). Refusing to start; see the README (state) to recover",
            crl_file.display(),
            published.issued_at().secs(),
            stored.map_or_else(|| "missing".to_owned(), |t| t.to_string()),
        )));
    }
    Ok(())
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl BoundSigner {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes. Also runs the background work
    /// every sync interval (re-reading the issuance and signer policies when
    /// their files change, revocation list sync, audit recovery) and reloads
    /// the signer's own credential files when they change.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), SignerError> {
        let svc = self.service.clone();
        let every = self.sync_interval.max(Duration::from_millis(100));
        let _sync = AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                svc.reload_policies();
                svc.sync_crl().await;
                svc.recover(false).await;
            }
        }));
        let _reload = self.config.reloader()?.spawn(Duration::from_secs(10));
        tonic::transport::Server::builder()
            .concurrency_limit_per_connection(64)
            .timeout(Duration::from_secs(60))
            .add_service(self.service.into_server())
            .serve_with_incoming_shutdown(self.incoming, shutdown)
            .await?;
        Ok(())
    }
}

/// [`bind`] then [`BoundSigner::serve`].
pub async fn serve(
    opts: SignerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SignerError> {
    bind(opts).await?.serve(shutdown).await
}
