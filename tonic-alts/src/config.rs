//! ALTS settings for clients and servers: [`AltsConfig`], loaded from
//! [`CredentialFiles`] and kept fresh by an [`AltsReloader`].
//!
//! An `AltsConfig` has two parts:
//! - **settings** (record protocols, PFS, timeouts, resumption, the client
//!   check...), changed only by its consuming setters. A setter gives the
//!   returned config its own copy: clones made before are not affected.
//! - **material** (our handshake certificate and key, the trusted root, the
//!   issuance policy, the revocation list), shared by every clone and
//!   replaced as a whole by an [`AltsReloader`]. New connections use the
//!   material of the moment; established connections keep their keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use alts_core::cert::{LocalCredentials, RootKey};
use alts_core::crl::RevocationList;
use alts_core::crypto::{StaticKeyPair, X25519_LEN, default_provider};
use alts_core::handshake::{ClientPredicate, HandshakeConfig, ResumptionConfig};
use alts_core::policy::IssuancePolicy;
use alts_core::record::{RecordProtocol, SecurityLevel};
use alts_core::resumption::{ClientSessionCache, ResumptionKeys};

use crate::keyring::KeyRing;
use alts_core::verify::{VerifiedPeer, Verifier};
use arc_swap::{ArcSwap, ArcSwapOption};
use tokio_util::task::AbortOnDropHandle;
use zeroize::Zeroizing;

use crate::AltsError;
use crate::error::{ConfigError, FileError};

/// The environment variable naming the credential directory for
/// [`AltsConfig::from_env`] (set by the credential agent's manifests).
pub const CREDENTIALS_DIR_ENV: &str = "ALTS_CREDENTIALS_DIR";

/// The credential directory [`AltsConfig::from_env`] uses when
/// `ALTS_CREDENTIALS_DIR` is not set.
pub const DEFAULT_CREDENTIALS_DIR: &str = "/run/alts/credentials";

/// Default limit for a handshake to finish.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// File names in a credential directory (see [`CredentialFiles::from_dir`]).
pub mod file_names {
    /// Our handshake certificate.
    pub const HANDSHAKE_CERT: &str = "handshake.cert";
    /// The X25519 private key of the handshake certificate (32 raw bytes).
    pub const HANDSHAKE_KEY: &str = "handshake.key";
    /// The signing service's root public key.
    pub const ROOT: &str = "root.pub";
    /// The issuance policy (TOML), used when present.
    pub const ISSUANCE_POLICY: &str = "issuance-policy.toml";
    /// The signed revocation list, used when present.
    pub const CRL: &str = "crl.bin";
    /// The resumption key ring shared by the replicas of an identity
    /// (see [`keyring`](crate::keyring)), used when present.
    pub const KEY_RING: &str = "resumption.keys";
}

/// Where credentials live on disk, in the layout the `alts` command writes:
/// `handshake.cert`, `handshake.key` and `root.pub` in one directory.
///
/// Loading fails closed: without an issuance policy (who may issue which
/// identities) it refuses to load unless
/// [`accept_any_issuer`](CredentialFiles::accept_any_issuer) says otherwise.
///
/// ```no_run
/// use tonic_alts::{AltsConfig, CredentialFiles};
///
/// # fn main() -> Result<(), tonic_alts::AltsError> {
/// let files = CredentialFiles::from_dir("creds/server").issuance_policy("policy.toml");
/// let config = AltsConfig::from_files(files)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CredentialFiles {
    creds_dir: PathBuf,
    root: PathBuf,
    policy: Option<PathBuf>,
    crl: Option<PathBuf>,
    key_ring: Option<PathBuf>,
    extra_roots: Vec<PathBuf>,
    accept_any_issuer: bool,
    /// `from_dir`: also use the optional files of the directory if present.
    whole_dir: bool,
    chain_cache: Option<usize>,
    static_dh_cache: Option<usize>,
    crl_max_age: Option<Duration>,
    enforce_crl_max_age: bool,
    max_handshake_cert_lifetime: Option<Duration>,
    unbounded_handshake_certs: bool,
    any_identity: bool,
}

impl CredentialFiles {
    /// Credentials (`handshake.cert`, `handshake.key`) in `creds_dir`,
    /// trusting the root public key in the file `root`.
    pub fn new(creds_dir: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Self {
            creds_dir: creds_dir.into(),
            root: root.into(),
            policy: None,
            crl: None,
            key_ring: None,
            extra_roots: Vec::new(),
            accept_any_issuer: false,
            whole_dir: false,
            chain_cache: None,
            static_dh_cache: None,
            crl_max_age: None,
            enforce_crl_max_age: false,
            max_handshake_cert_lifetime: None,
            unbounded_handshake_certs: false,
            any_identity: false,
        }
    }

    /// Everything from one directory: `handshake.cert`, `handshake.key` and
    /// `root.pub` (as `alts issue handshake` writes them), plus
    /// `issuance-policy.toml`, `crl.bin` and `resumption.keys` when present. Files given with
    /// [`issuance_policy`](Self::issuance_policy) or [`crl`](Self::crl) take
    /// precedence.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let root = dir.join(file_names::ROOT);
        Self {
            whole_dir: true,
            ..Self::new(dir, root)
        }
    }

    /// [`from_dir`](Self::from_dir) of the directory the environment names:
    /// `$ALTS_CREDENTIALS_DIR`, else `/run/alts/credentials`.
    pub fn from_env() -> Self {
        let dir = std::env::var_os(CREDENTIALS_DIR_ENV)
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_CREDENTIALS_DIR), PathBuf::from);
        Self::from_dir(dir)
    }

    /// Without an issuance policy, accepts chains from any issuer under the
    /// root (validity and revocation are still checked). This turns off the
    /// check that stops a user from obtaining a certificate for an identity
    /// they do not own: only for setups that authorize every RPC by identity
    /// and trust every principal the root signed.
    pub fn accept_any_issuer(mut self) -> Self {
        self.accept_any_issuer = true;
        self
    }

    /// The issuance policy file (TOML): which issuers may issue which
    /// identities and categories.
    pub fn issuance_policy(mut self, path: impl Into<PathBuf>) -> Self {
        self.policy = Some(path.into());
        self
    }

    /// Adds an issuance policy file.
    #[deprecated(note = "renamed to issuance_policy")]
    pub fn policy(self, path: impl Into<PathBuf>) -> Self {
        self.issuance_policy(path)
    }

    /// Adds a signed revocation list file.
    pub fn crl(mut self, path: impl Into<PathBuf>) -> Self {
        self.crl = Some(path.into());
        self
    }

    /// The revocation list should be younger than `max_age` (its
    /// `issued_at`): an older one is logged (once per loaded list) and shows
    /// in the `alts_crl_age_seconds` metric. Handshakes go on unless
    /// [`enforce_crl_max_age`](Self::enforce_crl_max_age) is set.
    pub fn crl_max_age(mut self, max_age: Duration) -> Self {
        self.crl_max_age = Some(max_age);
        self
    }

    /// Fails closed when the revocation list is older than
    /// [`crl_max_age`](Self::crl_max_age), or missing: every new handshake is
    /// refused with [`ConfigError::CrlTooOld`] until a fresh list is loaded.
    pub fn enforce_crl_max_age(mut self) -> Self {
        self.enforce_crl_max_age = true;
        self
    }

    /// Also trusts the root public key in `path` (repeatable): during a root
    /// rotation, a trust bundle of the old and the new root lets both
    /// generations of certificates interoperate. Deleting that file (and
    /// reloading) ends the trust: the old root's peers and their resumption
    /// tickets are refused. A file that exists but does not parse fails the
    /// load (the old material stays).
    pub fn additional_root(mut self, path: impl Into<PathBuf>) -> Self {
        self.extra_roots.push(path.into());
        self
    }

    /// A resumption key ring file (see [`keyring`](crate::keyring)): turns
    /// on session resumption with the ring's keys, shared with every replica
    /// of this identity, and picks up rotations on reload.
    pub fn resumption_key_ring(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_ring = Some(path.into());
        self
    }

    /// Longest handshake-certificate lifetime accepted from peers (default 7
    /// days; certificates without expiry are refused).
    pub fn max_handshake_cert_lifetime(mut self, max: Duration) -> Self {
        self.max_handshake_cert_lifetime = Some(max);
        self
    }

    /// INSECURE: accepts peer handshake certificates of any lifetime,
    /// including ones that never expire.
    pub fn allow_unbounded_handshake_certs(mut self) -> Self {
        self.unbounded_handshake_certs = true;
        self
    }

    /// INSECURE: accepts peer identities outside the identity grammar
    /// (lower-case ASCII letters and digits, then `._@:-`, at most 128
    /// bytes), including control, bidirectional and look-alike characters.
    pub fn insecure_allow_any_identity(mut self) -> Self {
        self.any_identity = true;
        self
    }

    /// Entries in each of the verifier's caches (verified principal
    /// certificates, verified chains); 0 disables them. Default 1024.
    pub fn chain_cache_size(mut self, entries: usize) -> Self {
        self.chain_cache = Some(entries);
        self
    }

    /// Peers whose static-static key agreement result is kept; 0 disables
    /// the cache. Default 4096.
    pub fn static_dh_cache_size(mut self, entries: usize) -> Self {
        self.static_dh_cache = Some(entries);
        self
    }

    /// The credential directory.
    pub fn creds_dir(&self) -> &Path {
        &self.creds_dir
    }

    /// The root public key file.
    pub fn root_path(&self) -> &Path {
        &self.root
    }

    /// The issuance policy file in use, if any (with [`from_dir`](Self::from_dir),
    /// the directory's `issuance-policy.toml` when it exists).
    pub fn issuance_policy_path(&self) -> Option<PathBuf> {
        self.policy
            .clone()
            .or_else(|| self.optional(file_names::ISSUANCE_POLICY))
    }

    /// The revocation list file in use, if any.
    pub fn crl_path(&self) -> Option<PathBuf> {
        self.crl.clone().or_else(|| self.optional(file_names::CRL))
    }

    /// The key ring file in use, if any.
    pub fn key_ring_path(&self) -> Option<PathBuf> {
        self.key_ring
            .clone()
            .or_else(|| self.optional(file_names::KEY_RING))
    }

    /// This set with the credential directory's `..data` link (the layout
    /// the credential agent and Kubernetes secret volumes write: each
    /// generation in its own directory, swapped by renaming one symlink)
    /// resolved once, so one load reads every file from one generation.
    fn resolved(&self) -> std::borrow::Cow<'_, Self> {
        let data = self.creds_dir.join("..data");
        let Ok(generation) = std::fs::canonicalize(&data) else {
            return std::borrow::Cow::Borrowed(self);
        };
        let rebase = |p: &Path| match p.parent() {
            Some(parent) if parent == self.creds_dir => p
                .file_name()
                .map_or_else(|| p.to_path_buf(), |f| generation.join(f)),
            _ => p.to_path_buf(),
        };
        let mut r = self.clone();
        r.root = rebase(&self.root);
        r.policy = self.policy.as_deref().map(rebase);
        r.crl = self.crl.as_deref().map(rebase);
        r.key_ring = self.key_ring.as_deref().map(rebase);
        r.extra_roots = self.extra_roots.iter().map(|p| rebase(p)).collect();
        r.creds_dir = generation;
        std::borrow::Cow::Owned(r)
    }

    fn optional(&self, name: &str) -> Option<PathBuf> {
        let p = self.creds_dir.join(name);
        (self.whole_dir && p.exists()).then_some(p)
    }

    fn paths(&self) -> Vec<PathBuf> {
        let mut v = vec![
            self.creds_dir.join(file_names::HANDSHAKE_CERT),
            self.creds_dir.join(file_names::HANDSHAKE_KEY),
            self.root.clone(),
        ];
        if self.whole_dir {
            // Watch the optional files even while absent: their arrival counts.
            v.push(self.creds_dir.join(file_names::ISSUANCE_POLICY));
            v.push(self.creds_dir.join(file_names::CRL));
            v.push(self.creds_dir.join(file_names::KEY_RING));
        }
        v.extend(self.policy.clone());
        v.extend(self.crl.clone());
        v.extend(self.key_ring.clone());
        v.extend(self.extra_roots.iter().cloned());
        v
    }

    /// Reads and checks every file.
    pub fn load(&self) -> Result<(Arc<LocalCredentials>, Arc<Verifier>), AltsError> {
        self.resolved().load_inner()
    }

    fn load_inner(&self) -> Result<(Arc<LocalCredentials>, Arc<Verifier>), AltsError> {
        let cert_path = self.creds_dir.join(file_names::HANDSHAKE_CERT);
        let key_path = self.creds_dir.join(file_names::HANDSHAKE_KEY);
        let cert = read(&cert_path)?;
        let key = Zeroizing::new(read(&key_path)?);
        let key: [u8; X25519_LEN] = key.as_slice().try_into().map_err(|_| {
            AltsError::file(
                &key_path,
                FileError::KeyLength {
                    expected: X25519_LEN,
                    found: key.len(),
                },
            )
        })?;
        let mut creds = LocalCredentials::new(cert, StaticKeyPair::from_secret_bytes(key))
            .map_err(|e| AltsError::file(&cert_path, FileError::Credentials(e)))?;
        if let Some(n) = self.static_dh_cache {
            creds = creds.with_static_dh_cache_capacity(n);
        }
        let root = RootKey::from_bytes(&read(&self.root)?)
            .map_err(|e| AltsError::file(&self.root, FileError::Credentials(e)))?;
        let policy = match self.issuance_policy_path() {
            Some(p) => {
                let bytes = read(&p)?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| AltsError::file(&p, FileError::Parse("not UTF-8".into())))?;
                IssuancePolicy::from_toml(&text)
                    .map_err(|e| AltsError::file(&p, FileError::IssuancePolicy(e)))?
            }
            None if self.accept_any_issuer => IssuancePolicy::accept_any_issuer(),
            None => return Err(ConfigError::NoIssuancePolicy.into()),
        };
        let mut verifier = Verifier::new(root.clone(), Arc::new(policy));
        for path in &self.extra_roots {
            // A removed file ends the trust in that root (the end of a rotation).
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(AltsError::file(path, FileError::Read(e))),
            };
            let extra =
                RootKey::from_bytes(&bytes).map_err(|e| AltsError::file(path, FileError::Credentials(e)))?;
            verifier = verifier.with_additional_root(extra);
        }
        if let Some(p) = self.crl_path() {
            let bytes = read(&p)?;
            // Signed by any trusted root (the old or the new one during a rotation).
            let crl = verifier
                .roots()
                .map(|r| RevocationList::from_signed_bytes(&bytes, r))
                .reduce(|first, next| first.or(next))
                .unwrap_or_else(|| RevocationList::from_signed_bytes(&bytes, &root))
                .map_err(|e| AltsError::file(&p, FileError::Crl(e)))?;
            verifier = verifier.with_crl(Arc::new(crl));
        }
        if let Some(n) = self.chain_cache {
            verifier = verifier.with_cache_capacity(n);
        }
        if let Some(max) = self.max_handshake_cert_lifetime {
            verifier =
                verifier.with_max_handshake_cert_lifetime(i64::try_from(max.as_secs()).unwrap_or(i64::MAX));
        }
        if self.unbounded_handshake_certs {
            verifier = verifier.allow_unbounded_handshake_certs();
        }
        if self.any_identity {
            verifier = verifier.insecure_allow_any_identity();
        }
        Ok((Arc::new(creds), Arc::new(verifier)))
    }

    /// Reads the key ring, if one is configured.
    fn load_key_ring(&self) -> Result<Option<Arc<ResumptionKeys>>, AltsError> {
        let Some(p) = self.key_ring_path() else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(read(&p)?);
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| AltsError::file(&p, FileError::Parse("not UTF-8".into())))?;
        let ring = KeyRing::from_toml(text)
            .and_then(|r| r.to_keys())
            .map_err(|e| AltsError::file(&p, FileError::Parse(e.to_string())))?;
        Ok(Some(Arc::new(ring)))
    }

    fn load_material(&self) -> Result<Material, AltsError> {
        let files = self.resolved();
        let (credentials, verifier) = files.load_inner()?;
        let mut m = Material::new(credentials, verifier);
        m.key_ring = files.load_key_ring()?;
        Ok(m)
    }

    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.paths()
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }
}

fn read(p: &Path) -> Result<Vec<u8>, AltsError> {
    std::fs::read(p).map_err(|e| AltsError::file(p, FileError::Read(e)))
}

/// What an [`AltsReloader`] replaces: our credentials and the verifier.
struct Material {
    credentials: Arc<LocalCredentials>,
    verifier: Arc<Verifier>,
    /// Resumption keys from a key ring file (replacing the settings' keys).
    key_ring: Option<Arc<ResumptionKeys>>,
    /// The stale-CRL warning was logged for this material.
    crl_stale_warned: AtomicBool,
    /// The expiring-certificate warning was logged for this material.
    expiry_warned: AtomicBool,
    /// The no-expiry warning was logged for this material.
    no_expiry_warned: AtomicBool,
}

impl Material {
    fn new(credentials: Arc<LocalCredentials>, verifier: Arc<Verifier>) -> Self {
        Self {
            credentials,
            verifier,
            key_ring: None,
            crl_stale_warned: AtomicBool::new(false),
            expiry_warned: AtomicBool::new(false),
            no_expiry_warned: AtomicBool::new(false),
        }
    }

    fn crl_issued_at(&self) -> Option<i64> {
        self.verifier.crl().map(|c| c.issued_at().0)
    }

    /// Logs once per material: our handshake certificate within 20% of its
    /// lifetime of expiry (or expired), and a principal certificate without
    /// expiry.
    fn warn_expiry(&self, now: i64) {
        let info = self.credentials.info();
        if info.principal.validity.not_after.is_none() && !self.no_expiry_warned.swap(true, Ordering::Relaxed)
        {
            metrics::counter!(crate::metrics::MATERIAL_WARNINGS_TOTAL, "warning" => "principal_without_expiry")
                .increment(1);
            tracing::warn!(
                identity = %info.principal.identity,
                "our principal certificate has no expiry: it stays valid until revoked"
            );
        }
        let v = info.validity;
        if let (Some(nb), Some(na)) = (v.not_before, v.not_after) {
            let lifetime = na.0.saturating_sub(nb.0);
            let left = na.0.saturating_sub(now);
            if left.saturating_mul(5) < lifetime && !self.expiry_warned.swap(true, Ordering::Relaxed) {
                metrics::counter!(crate::metrics::MATERIAL_WARNINGS_TOTAL, "warning" => "cert_expiring")
                    .increment(1);
                tracing::warn!(
                    identity = %info.principal.identity,
                    seconds_left = left,
                    "our handshake certificate is within 20% of its lifetime of expiry: is rotation running?"
                );
            }
        }
    }
}

/// A snapshot assembled from one settings version and one material version.
struct Assembled {
    settings: Arc<HandshakeConfig>,
    material: Arc<Material>,
    config: Arc<HandshakeConfig>,
}

/// ALTS settings for many connections, client or server; cheap to clone.
///
/// Build it from files, then adjust with consuming setters, as with tonic's
/// `ClientTlsConfig`:
///
/// ```no_run
/// use std::time::Duration;
/// use tonic_alts::alts_core::record::RecordProtocol;
/// use tonic_alts::{AltsConfig, CredentialFiles};
///
/// # fn main() -> Result<(), tonic_alts::AltsError> {
/// let config = AltsConfig::from_files(
///     CredentialFiles::from_dir("creds/server").issuance_policy("policy.toml"),
/// )?
/// .handshake_timeout(Duration::from_secs(5))
/// .record_protocols([RecordProtocol::GcmAes128Rekey])
/// .pfs(true);
/// # Ok(()) }
/// ```
///
/// Defaults: record protocols `ALTSRP_GCM_AES128_REKEY`, `ALTSRP_GCM_AES128`
/// (integrity-only `ALTSRP_GMAC_AES128_REKEY` only between peers that share
/// a [`boundary`](Self::boundary)); no forward secrecy (ALTS relies on
/// short-lived handshake certificates instead; turn it on with
/// [`pfs`](Self::pfs)); no resumption; a 10 s handshake timeout.
#[derive(Clone)]
pub struct AltsConfig {
    settings: Arc<ArcSwap<HandshakeConfig>>,
    material: Arc<ArcSwap<Material>>,
    files: Option<Arc<CredentialFiles>>,
    assembled: Arc<ArcSwapOption<Assembled>>,
    pub(crate) handshake_timeout: Duration,
}

impl AltsConfig {
    /// Settings from an assembled [`HandshakeConfig`] (credentials, verifier
    /// and every protocol setting), for callers that build those themselves.
    pub fn new(config: HandshakeConfig) -> Self {
        let material = Material::new(config.credentials.clone(), config.verifier.clone());
        Self {
            settings: Arc::new(ArcSwap::from_pointee(config)),
            material: Arc::new(ArcSwap::from_pointee(material)),
            files: None,
            assembled: Arc::new(ArcSwapOption::empty()),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Settings loaded from files (see [`CredentialFiles`]), with the default
    /// crypto provider and protocol defaults. An [`AltsReloader`] from
    /// [`reloader`](Self::reloader) re-reads them.
    pub fn from_files(files: CredentialFiles) -> Result<Self, AltsError> {
        let material = files.load_material()?;
        if files.crl_path().is_none() {
            tracing::warn!(
                creds = %files.creds_dir.display(),
                "no revocation list configured: revoked peers are accepted until their certificates expire"
            );
        }
        let mut settings = HandshakeConfig::new(
            material.credentials.clone(),
            material.verifier.clone(),
            default_provider(),
        );
        if let Some(keys) = &material.key_ring {
            settings.resumption = Some(ResumptionConfig::new(keys.clone()));
        }
        let mut cfg = Self::new(settings);
        cfg.material = Arc::new(ArcSwap::from_pointee(material));
        cfg.files = Some(Arc::new(files));
        Ok(cfg)
    }

    /// Settings from the credential directory the environment names:
    /// `$ALTS_CREDENTIALS_DIR`, else `/run/alts/credentials`, in the layout
    /// the credential agent writes ([`CredentialFiles::from_dir`]: handshake
    /// certificate and key, `root.pub`, `issuance-policy.toml`, `crl.bin`,
    /// `resumption.keys`). The same code then runs unchanged wherever the
    /// agent provides credentials. Fails closed without an issuance policy.
    pub fn from_env() -> Result<Self, AltsError> {
        Self::from_files(CredentialFiles::from_env())
    }

    /// Gives this config its own copy of the settings, changed by `f`.
    fn edit(mut self, f: impl FnOnce(&mut HandshakeConfig)) -> Self {
        let mut next = HandshakeConfig::clone(&self.settings.load());
        f(&mut next);
        self.settings = Arc::new(ArcSwap::from_pointee(next));
        self.assembled = Arc::new(ArcSwapOption::empty());
        self
    }

    /// The limit for a handshake to finish (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets the handshake timeout.
    #[deprecated(note = "renamed to handshake_timeout")]
    pub fn with_handshake_timeout(self, timeout: Duration) -> Self {
        self.handshake_timeout(timeout)
    }

    /// Record protocols in preference order. A client offers them; a server
    /// picks its first one the client offered.
    pub fn record_protocols(self, protocols: impl IntoIterator<Item = RecordProtocol>) -> Self {
        let protocols: Vec<_> = protocols.into_iter().collect();
        self.edit(|c| c.record_protocols = protocols)
    }

    /// Forward secrecy: mix ephemeral X25519 keys into every full handshake
    /// (a client offers them, a server answers with its own). Costs one key
    /// generation and one key agreement per side.
    pub fn pfs(self, on: bool) -> Self {
        self.edit(|c| c.pfs = on)
    }

    /// Refuse peers that do not use ephemeral keys.
    pub fn require_pfs(self, on: bool) -> Self {
        self.edit(|c| c.require_pfs = on)
    }

    /// The variant resistant to key-compromise impersonation (a client uses
    /// it, a server requires it).
    pub fn kci_resistant(self, on: bool) -> Self {
        self.edit(|c| c.kci_resistant = on)
    }

    /// Largest record frame we accept, advertised to the peer and enforced
    /// on every received frame (at least 4 KiB; default 1 MiB).
    pub fn max_frame_size(self, bytes: u32) -> Self {
        self.edit(|c| c.max_frame_size = bytes)
    }

    /// A boundary label (e.g. a cell or cluster name). Integrity-only
    /// records (`ALTSRP_GMAC_AES128_REKEY`, when listed in
    /// [`record_protocols`](Self::record_protocols)) are used only when both
    /// peers set the same label; otherwise authenticated encryption is
    /// negotiated automatically. The label is bound into the handshake.
    pub fn boundary(self, label: impl Into<String>) -> Self {
        let label = label.into();
        self.edit(|c| c.boundary = Some(label))
    }

    /// The weakest record protection accepted (default: integrity only,
    /// within a shared boundary). `SecurityLevel::IntegrityAndPrivacy` never
    /// negotiates integrity-only records.
    pub fn min_security_level(self, level: SecurityLevel) -> Self {
        self.edit(|c| c.min_security_level = level)
    }

    /// INSECURE: allows integrity-only records without a shared boundary
    /// (both peers must set this).
    pub fn insecure_allow_integrity_only_without_boundary(self, on: bool) -> Self {
        self.edit(|c| c.insecure_allow_integrity_only_without_boundary = on)
    }

    /// Turns on session resumption with `keys` (in-memory ticket stores,
    /// 2-hour tickets). Replicas of one identity that share keys resume each
    /// other's tickets.
    ///
    /// ```
    /// use tonic_alts::alts_core::crypto::RingRandom;
    /// use tonic_alts::alts_core::resumption::ResumptionKeys;
    ///
    /// # fn f(config: tonic_alts::AltsConfig) -> Result<(), Box<dyn std::error::Error>> {
    /// let config = config.resumption(ResumptionKeys::generate(&RingRandom::default())?);
    /// # Ok(()) }
    /// ```
    pub fn resumption(self, keys: ResumptionKeys) -> Self {
        self.resumption_config(ResumptionConfig::new(Arc::new(keys)))
    }

    /// Turns on session resumption with full control of its stores.
    pub fn resumption_config(self, resumption: ResumptionConfig) -> Self {
        self.edit(|c| c.resumption = Some(resumption))
    }

    /// Turns session resumption off.
    pub fn no_resumption(self) -> Self {
        self.edit(|c| c.resumption = None)
    }

    /// Client: server names whose tickets are kept (up to `per_name` each);
    /// 0 disables the client's ticket cache. Applies when resumption is on.
    pub fn session_cache_size(self, names: usize, per_name: usize) -> Self {
        self.edit(|c| {
            if let Some(r) = &mut c.resumption {
                r.client_cache = Arc::new(ClientSessionCache::new(names, per_name));
            }
        })
    }

    /// Server: an extra check on each verified client, after the chain,
    /// revocation and issuance policy passed. An `Err` refuses the
    /// handshake; the reason is logged locally, never sent to the client.
    pub fn client_check(
        self,
        check: impl Fn(&VerifiedPeer) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        let check: ClientPredicate = Arc::new(check);
        self.edit(|c| c.client_predicate = Some(check))
    }

    /// Empties the handshake caches: verified chains, static key agreement
    /// results and (client) stored session tickets.
    pub fn clear_caches(&self) {
        let m = self.material.load();
        m.verifier.clear_cache();
        m.credentials.clear_static_dh_cache();
        if let Some(r) = &self.settings.load().resumption {
            r.client_cache.clear();
        }
    }

    /// Changes settings for new connections of this config **and every
    /// clone sharing its settings**.
    #[deprecated(note = "use the consuming setters (pfs, record_protocols, resumption, ...)")]
    pub fn update(&self, f: impl FnOnce(&mut HandshakeConfig)) {
        let mut next = HandshakeConfig::clone(&self.snapshot());
        f(&mut next);
        self.material.store(Arc::new(Material::new(
            next.credentials.clone(),
            next.verifier.clone(),
        )));
        self.settings.store(Arc::new(next));
    }

    /// Builder-style edit of the underlying [`HandshakeConfig`].
    #[deprecated(note = "use the consuming setters (pfs, record_protocols, resumption, ...)")]
    pub fn with(self, f: impl FnOnce(&mut HandshakeConfig)) -> Self {
        let this = self.edit(|_| {});
        #[allow(deprecated)]
        this.update(f);
        this
    }

    /// The settings a new connection uses now.
    pub fn snapshot(&self) -> Arc<HandshakeConfig> {
        let settings = self.settings.load();
        let material = self.material.load();
        if let Some(a) = &*self.assembled.load()
            && Arc::ptr_eq(&a.settings, &settings)
            && Arc::ptr_eq(&a.material, &material)
        {
            return a.config.clone();
        }
        let mut config = HandshakeConfig::clone(&settings);
        config.credentials = material.credentials.clone();
        config.verifier = material.verifier.clone();
        // A reloaded key ring replaces the keys; the ticket stores and the
        // replay guard stay.
        if let (Some(keys), Some(r)) = (&material.key_ring, &mut config.resumption) {
            r.keys = keys.clone();
        }
        let config = Arc::new(config);
        self.assembled.store(Some(Arc::new(Assembled {
            settings: Arc::clone(&settings),
            material: Arc::clone(&material),
            config: config.clone(),
        })));
        config
    }

    /// Before each handshake: warns (once per loaded material, and through
    /// metrics) about our certificate nearing expiry, a principal
    /// certificate without expiry and a stale revocation list, and fails
    /// closed on a stale list when that is enforced.
    pub(crate) fn check_material(&self) -> Result<(), AltsError> {
        let material = self.material.load();
        let now = crate::handshake::unix_now().0;
        material.warn_expiry(now);
        let Some(files) = &self.files else { return Ok(()) };
        let Some(max) = files.crl_max_age else {
            return Ok(());
        };
        let age = material
            .crl_issued_at()
            .map_or(u64::MAX, |t| u64::try_from(now.saturating_sub(t)).unwrap_or(0));
        if age <= max.as_secs() {
            return Ok(());
        }
        if !material.crl_stale_warned.swap(true, Ordering::Relaxed) {
            metrics::counter!(crate::metrics::MATERIAL_WARNINGS_TOTAL, "warning" => "crl_stale").increment(1);
            tracing::warn!(
                age_secs = age,
                max_secs = max.as_secs(),
                enforced = files.enforce_crl_max_age,
                "ALTS revocation list is older than its maximum age"
            );
        }
        if files.enforce_crl_max_age {
            return Err(ConfigError::CrlTooOld {
                age_secs: age,
                max_secs: max.as_secs(),
            }
            .into());
        }
        Ok(())
    }

    /// One line describing what this config uses now: identity, certificate
    /// expiry, issuance policy, revocation list, record protocols, PFS and
    /// resumption. Log it at startup.
    pub fn summary(&self) -> String {
        let material = self.material.load();
        let settings = self.settings.load();
        let expiry = crate::metrics::own_expiry(&material.credentials);
        let policy = match &self.files {
            Some(f) => match f.issuance_policy_path() {
                Some(p) => p.display().to_string(),
                None if f.accept_any_issuer => "NONE (accepting any issuer)".to_owned(),
                None => "none".to_owned(),
            },
            None => "in code".to_owned(),
        };
        let crl = match material.crl_issued_at() {
            Some(t) => format!("issued_at={t}"),
            None => "NONE (revocation not checked)".to_owned(),
        };
        let protocols: Vec<&str> = settings.record_protocols.iter().map(|p| p.name()).collect();
        format!(
            "identity={} cert_not_after={} issuance_policy={policy} crl={crl} record_protocols={} pfs={} resumption={}",
            material.credentials.identity(),
            expiry.map_or_else(|| "never".to_owned(), |t| t.to_string()),
            protocols.join(","),
            settings.pfs,
            settings.resumption.is_some(),
        )
    }

    /// Our identity (from the current handshake certificate).
    pub fn local_identity(&self) -> String {
        self.material.load().credentials.identity().to_owned()
    }

    /// A handle that re-reads the credential files into this config and all
    /// its clones, keeping every setting. Fails if the config was not loaded
    /// from files.
    pub fn reloader(&self) -> Result<AltsReloader, AltsError> {
        let files = self.files.clone().ok_or(ConfigError::NotFromFiles)?;
        Ok(AltsReloader {
            files,
            material: self.material.clone(),
        })
    }

    /// Re-reads credentials, root, issuance policy and CRL from their files.
    #[deprecated(note = "use AltsConfig::reloader()")]
    pub fn reload(&self) -> Result<(), AltsError> {
        self.reloader()?.reload()
    }

    /// Polls the files every `every` and reloads when one changes.
    #[deprecated(note = "use AltsConfig::reloader() and AltsReloader::spawn")]
    pub fn spawn_reloader(&self, every: Duration) -> Result<tokio::task::JoinHandle<()>, AltsError> {
        let reloader = self.reloader()?;
        Ok(tokio::spawn(async move { reloader.run(every).await }))
    }
}

impl std::fmt::Debug for AltsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AltsConfig")
            .field("summary", &self.summary())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Re-reads an [`AltsConfig`]'s credential files (certificate, key, root,
/// issuance policy, revocation list) and swaps them in for new connections.
/// Settings made with the config's setters are kept. A file that fails to
/// load never replaces good material: the old set stays in force.
#[derive(Clone)]
pub struct AltsReloader {
    files: Arc<CredentialFiles>,
    material: Arc<ArcSwap<Material>>,
}

impl AltsReloader {
    /// Reloads now. On error the current material stays in force. A
    /// revocation list older than the one in use is refused
    /// ([`FileError::CrlRollback`]): an attacker who can replace files must
    /// not bring back a list from before a revocation. Concurrent reloads
    /// are safe: the newest list wins.
    pub fn reload(&self) -> Result<(), AltsError> {
        let next = Arc::new(self.files.load_material()?);
        let offered = next.crl_issued_at();
        let mut refused = None;
        self.material.rcu(|current| {
            refused = match (current.crl_issued_at(), offered) {
                (Some(loaded), Some(offered)) if offered < loaded => {
                    Some(FileError::CrlRollback { loaded, offered })
                }
                (Some(_), None) => Some(FileError::CrlMissing),
                _ => None,
            };
            if refused.is_some() {
                current.clone()
            } else {
                next.clone()
            }
        });
        if let Some(reason) = refused {
            let path = self
                .files
                .crl_path()
                .unwrap_or_else(|| self.files.creds_dir.clone());
            return Err(AltsError::file(path, reason));
        }
        tracing::info!("ALTS credentials reloaded");
        Ok(())
    }

    /// Polls the files every `every` and reloads when one changes (a
    /// mounted secret rotating). The task stops when the handle is dropped.
    pub fn spawn(self, every: Duration) -> AbortOnDropHandle<()> {
        AbortOnDropHandle::new(tokio::spawn(async move { self.run(every).await }))
    }

    /// Watches the files' directories (inotify through the `notify` crate,
    /// which sees atomic renames and symlink swaps) and reloads shortly
    /// after a change, with a polling fallback every 500 ms: a change is in
    /// effect for new connections within a second. A file that fails to
    /// load (half-written, invalid) is logged and counted
    /// (`alts_reload_failures_total`) and the old material stays. The task
    /// stops when the handle is dropped.
    pub fn watch(self) -> AbortOnDropHandle<()> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let watcher = self.start_watcher(tx);
        AbortOnDropHandle::new(tokio::spawn(async move {
            let _watcher = watcher;
            let mut last = self.files.stamp();
            let mut poll = tokio::time::interval(WATCH_POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = poll.tick() => {}
                    Some(()) = rx.recv() => {
                        // Let a burst of events (a whole set being written) settle.
                        tokio::time::sleep(WATCH_SETTLE).await;
                    }
                }
                self.reload_if_changed(&mut last);
            }
        }))
    }

    /// A `notify` watcher on every directory holding a watched file; `None`
    /// (polling only) where inotify is unavailable.
    fn start_watcher(&self, tx: tokio::sync::mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = tx.try_send(());
            }
        })
        .inspect_err(|e| tracing::debug!(error = %e, "no file watcher; polling only"))
        .ok()?;
        let mut dirs: Vec<PathBuf> = self
            .files
            .paths()
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            if let Err(e) = watcher.watch(&d, notify::RecursiveMode::NonRecursive) {
                tracing::debug!(dir = %d.display(), error = %e, "cannot watch; polling it");
            }
        }
        Some(watcher)
    }

    fn reload_failed(&self, e: &AltsError) {
        metrics::counter!(crate::metrics::RELOAD_FAILURES_TOTAL).increment(1);
        tracing::warn!(error = %e, "ALTS credential reload failed; keeping the old ones");
    }

    async fn run(self, every: Duration) {
        let mut last = self.files.stamp();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reload_if_changed(&mut last);
        }
    }

    /// Reloads when a file changed since `last` (and then remembers the new
    /// state); a failed reload is logged and counted, and tried again at the
    /// next change or check.
    fn reload_if_changed(&self, last: &mut Vec<Option<(SystemTime, u64)>>) {
        let now = self.files.stamp();
        if now == *last {
            return;
        }
        match self.reload() {
            Ok(()) => *last = now,
            Err(e) => self.reload_failed(&e),
        }
    }
}

/// Polling fallback of [`AltsReloader::watch`].
const WATCH_POLL: Duration = Duration::from_millis(500);
/// Pause after a file event before reloading.
const WATCH_SETTLE: Duration = Duration::from_millis(50);

impl std::fmt::Debug for AltsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AltsReloader")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}
