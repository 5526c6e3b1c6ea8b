//! Shared, reloadable ALTS settings.
//!
//! An [`AltsConfig`] holds the current [`HandshakeConfig`] behind an
//! `ArcSwap`: every new connection takes a snapshot, so swapping in reloaded
//! credentials, policy or CRL affects new connections only; established ones
//! keep the keys they negotiated.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alts_core::cert::{LocalCredentials, RootKey};
use alts_core::crl::RevocationList;
use alts_core::crypto::{StaticKeyPair, X25519_LEN, default_provider};
use alts_core::handshake::HandshakeConfig;
use alts_core::policy::Policy;
use alts_core::verify::Verifier;
use arc_swap::ArcSwap;
use zeroize::Zeroizing;

use crate::AltsError;

/// Default limit for a handshake to finish.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where credentials live on disk (the layout the `alts` command writes).
#[derive(Clone, Debug)]
pub struct CredentialFiles {
    /// Directory with `handshake.cert` and `handshake.key`.
    pub creds_dir: PathBuf,
    /// The signing service's `root.pub`.
    pub root: PathBuf,
    /// Policy TOML (who may issue which identities). Loading fails without
    /// one unless [`CredentialFiles::accept_any_issuer`] opted out.
    pub policy: Option<PathBuf>,
    /// Signed revocation list.
    pub crl: Option<PathBuf>,
    /// Without a policy file, accept any issuer (fail-closed by default).
    pub accept_any_issuer: bool,
}

impl CredentialFiles {
    /// Credentials in `creds_dir`, trusting `root`.
    pub fn new(creds_dir: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Self {
            creds_dir: creds_dir.into(),
            root: root.into(),
            policy: None,
            crl: None,
            accept_any_issuer: false,
        }
    }

    /// Without a policy file, accepts chains from any issuer under the root
    /// (validity and revocation still checked). This turns off the check that
    /// stops a user from getting a certificate for an identity they do not
    /// own (ALTS-NOTES §3): only for setups that authorize every RPC by
    /// identity and trust every principal the root signed.
    pub fn accept_any_issuer(mut self) -> Self {
        self.accept_any_issuer = true;
        self
    }

    /// Adds a policy file.
    pub fn policy(mut self, path: impl Into<PathBuf>) -> Self {
        self.policy = Some(path.into());
        self
    }

    /// Adds a revocation list file.
    pub fn crl(mut self, path: impl Into<PathBuf>) -> Self {
        self.crl = Some(path.into());
        self
    }

    fn paths(&self) -> Vec<PathBuf> {
        let mut v = vec![
            self.creds_dir.join("handshake.cert"),
            self.creds_dir.join("handshake.key"),
            self.root.clone(),
        ];
        v.extend(self.policy.clone());
        v.extend(self.crl.clone());
        v
    }

    /// Reads and checks every file.
    pub fn load(&self) -> Result<(Arc<LocalCredentials>, Arc<Verifier>), AltsError> {
        let cert = read(&self.creds_dir.join("handshake.cert"))?;
        let key = Zeroizing::new(read(&self.creds_dir.join("handshake.key"))?);
        let key: [u8; X25519_LEN] = key.as_slice().try_into().map_err(|_| {
            AltsError::Config(format!(
                "{}: expected {X25519_LEN} raw bytes of X25519 private key, found {}",
                self.creds_dir.join("handshake.key").display(),
                key.len()
            ))
        })?;
        let creds = LocalCredentials::new(cert, StaticKeyPair::from_secret_bytes(key))
            .map_err(|e| AltsError::Config(format!("{}: {e}", self.creds_dir.display())))?;
        let root = RootKey::from_bytes(&read(&self.root)?)
            .map_err(|e| AltsError::Config(format!("{}: {e}", self.root.display())))?;
        let policy = match &self.policy {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| file_err(p, e))?;
                Policy::from_toml(&text).map_err(|e| AltsError::Config(format!("{}: {e}", p.display())))?
            }
            None if self.accept_any_issuer => Policy::accept_any_issuer(),
            None => {
                return Err(AltsError::Config(
                    "no policy file given: pass one (see examples/policies) or opt out explicitly \
                     with CredentialFiles::accept_any_issuer()"
                        .into(),
                ));
            }
        };
        let mut verifier = Verifier::new(root.clone(), Arc::new(policy));
        if let Some(p) = &self.crl {
            let crl = RevocationList::from_signed_bytes(&read(p)?, &root)
                .map_err(|e| AltsError::Config(format!("{}: {e}", p.display())))?;
            verifier = verifier.with_crl(Arc::new(crl));
        }
        Ok((Arc::new(creds), Arc::new(verifier)))
    }

    fn stamp(&self) -> Vec<Option<SystemTime>> {
        self.paths()
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }
}

fn file_err(p: &Path, e: std::io::Error) -> AltsError {
    AltsError::Config(format!("{}: {e}", p.display()))
}

fn read(p: &Path) -> Result<Vec<u8>, AltsError> {
    std::fs::read(p).map_err(|e| file_err(p, e))
}

/// Shared handshake settings for many connections; cheap to clone.
#[derive(Clone)]
pub struct AltsConfig {
    current: Arc<ArcSwap<HandshakeConfig>>,
    files: Option<Arc<CredentialFiles>>,
    pub(crate) handshake_timeout: Duration,
}

impl AltsConfig {
    /// Settings from an assembled [`HandshakeConfig`].
    pub fn new(config: HandshakeConfig) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(config)),
            files: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Settings loaded from files (see [`CredentialFiles`]), with the default
    /// crypto provider and protocol defaults. [`AltsConfig::reload`] re-reads them.
    pub fn from_files(files: CredentialFiles) -> Result<Self, AltsError> {
        let (creds, verifier) = files.load()?;
        let mut cfg = Self::new(HandshakeConfig::new(creds, verifier, default_provider()));
        cfg.files = Some(Arc::new(files));
        Ok(cfg)
    }

    /// Sets the handshake timeout.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Changes settings for new connections (record protocols, PFS, resumption...).
    pub fn update(&self, f: impl FnOnce(&mut HandshakeConfig)) {
        let mut next = HandshakeConfig::clone(&self.current.load());
        f(&mut next);
        self.current.store(Arc::new(next));
    }

    /// Builder-style [`AltsConfig::update`].
    pub fn with(self, f: impl FnOnce(&mut HandshakeConfig)) -> Self {
        self.update(f);
        self
    }

    /// The settings a new connection uses now.
    pub fn snapshot(&self) -> Arc<HandshakeConfig> {
        self.current.load_full()
    }

    /// Re-reads credentials, root, policy and CRL from their files. On any
    /// error the current settings stay in force.
    pub fn reload(&self) -> Result<(), AltsError> {
        let files = self
            .files
            .as_ref()
            .ok_or_else(|| AltsError::Config("not loaded from files".into()))?;
        let (creds, verifier) = files.load()?;
        self.update(|c| {
            c.credentials = creds;
            c.verifier = verifier;
        });
        tracing::info!("ALTS credentials reloaded");
        Ok(())
    }

    /// Polls the files every `every` and reloads when one changes (mounted
    /// secrets rotating). The task ends when the returned handle is dropped
    /// or aborted.
    pub fn spawn_reloader(&self, every: Duration) -> Result<tokio::task::JoinHandle<()>, AltsError> {
        let files = self
            .files
            .clone()
            .ok_or_else(|| AltsError::Config("not loaded from files".into()))?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            let mut last = files.stamp();
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let now = files.stamp();
                if now != last {
                    match this.reload() {
                        Ok(()) => last = now,
                        Err(e) => {
                            tracing::warn!(error = %e, "ALTS credential reload failed; keeping the old ones")
                        }
                    }
                }
            }
        }))
    }
}

impl std::fmt::Debug for AltsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AltsConfig")
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}
