//! Re-reading an RPC authorization policy file while serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::task::AbortOnDropHandle;

use super::policy::{AuthzPolicyError, AuthzPolicyFormat, RpcAuthzPolicy, read_policy_file};

/// Shortest poll interval; shorter requests are raised to this.
const MIN_POLL: Duration = Duration::from_millis(10);

/// What the poller remembers between reads.
#[derive(Default)]
struct Seen {
    /// The text last read (valid or not), to skip unchanged files.
    text: Option<String>,
    /// The last read error, to log a persisting error once.
    error: Option<AuthzPolicyError>,
}

pub(crate) struct Reloader {
    path: PathBuf,
    format: AuthzPolicyFormat,
    pub(crate) current: Arc<ArcSwap<RpcAuthzPolicy>>,
    seen: Mutex<Seen>,
}

impl Reloader {
    /// Loads the file once; fails if it is invalid.
    pub(crate) fn load(path: &Path, format: AuthzPolicyFormat) -> Result<Self, AuthzPolicyError> {
        let text = read_policy_file(path)?;
        let policy = RpcAuthzPolicy::from_file_format_text(path, &text, format)?;
        Ok(Self {
            path: path.to_owned(),
            format,
            current: Arc::new(ArcSwap::from_pointee(policy)),
            seen: Mutex::new(Seen {
                text: Some(text),
                error: None,
            }),
        })
    }

    /// Re-reads the file. `Ok(true)`: a changed, valid policy is now in
    /// force; `Ok(false)`: unchanged; `Err`: unreadable or invalid, the
    /// previous policy stays in force.
    pub(crate) fn poll(&self) -> Result<bool, AuthzPolicyError> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let text = match read_policy_file(&self.path) {
            Ok(t) => t,
            Err(e) => {
                if seen.error.as_ref() != Some(&e) {
                    tracing::error!(error = %e, "cannot re-read the RPC authorization policy; keeping the previous one");
                    seen.error = Some(e.clone());
                }
                // Read the file again once it is back, even if unchanged.
                seen.text = None;
                return Err(e);
            }
        };
        if seen.text.as_deref() == Some(text.as_str()) {
            return match &seen.error {
                Some(e) => Err(e.clone()),
                None => Ok(false),
            };
        }
        let parsed = RpcAuthzPolicy::from_file_format_text(&self.path, &text, self.format);
        seen.text = Some(text);
        match parsed {
            Ok(policy) => {
                self.current.store(Arc::new(policy));
                seen.error = None;
                tracing::info!(path = %self.path.display(), "RPC authorization policy reloaded");
                Ok(true)
            }
            Err(e) => {
                tracing::error!(error = %e, "invalid RPC authorization policy; keeping the previous one");
                seen.error = Some(e.clone());
                Err(e)
            }
        }
    }
}

/// Keeps a policy file under watch; dropping it stops the watching (the
/// authorizer keeps the policy last loaded).
#[must_use = "dropping the handle stops reloading"]
pub struct AuthzReloadHandle {
    reloader: Arc<Reloader>,
    _task: AbortOnDropHandle<()>,
}

impl AuthzReloadHandle {
    pub(crate) fn spawn(reloader: Arc<Reloader>, every: Duration) -> Self {
        let every = every.max(MIN_POLL);
        let r = reloader.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                // Errors are logged by `poll`.
                let _ = r.poll();
            }
        });
        Self {
            reloader,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<RpcAuthzPolicy> {
        self.reloader.current.load_full()
    }

    /// Re-reads the file now. `Ok(true)`: a changed, valid policy is now in
    /// force; `Ok(false)`: the file is unchanged; `Err`: it is unreadable or
    /// invalid and the previous policy stays in force.
    pub fn reload_now(&self) -> Result<bool, AuthzPolicyError> {
        self.reloader.poll()
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.reloader.path
    }
}

impl std::fmt::Debug for AuthzReloadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzReloadHandle")
            .field("path", &self.reloader.path)
            .field("format", &self.reloader.format)
            .finish_non_exhaustive()
    }
}
