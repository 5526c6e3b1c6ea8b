//! Metrics through the [`metrics`](https://docs.rs/metrics) facade. Nothing
//! is exported unless the application installs a recorder (for example
//! `metrics-exporter-prometheus`); without one each update is a no-op.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `alts_handshakes_total` | counter | `side` (client, server), `outcome` (ok, refused), `resumed` (true, false) |
//! | `alts_handshake_duration_seconds` | histogram | `side`, `outcome` |
//! | `alts_handshakes_in_flight` | gauge | `side` |
//! | `alts_handshake_refusals_total` | counter | `side`, `reason` (an [`AltsErrorKind`] in snake case) |
//! | `alts_local_cert_expiry_seconds` | gauge | none: seconds until our handshake or principal certificate expires (whichever is first) |
//! | `alts_crl_age_seconds` | gauge | none: seconds since the loaded revocation list was issued |
//! | `alts_material_warnings_total` | counter | `warning` (`cert_expiring`, `principal_without_expiry`, `crl_stale`): logged once per loaded credential set |
//! | `alts_reload_failures_total` | counter | none: reloads refused (invalid, half-written or rolled-back files) |
//! | `alts_connections_shed_total` | counter | `reason` (`per_source_limit`): connections closed before a handshake |
//!
//! The two gauges without labels are updated on every handshake and reload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alts_core::cert::LocalCredentials;
use alts_core::handshake::HandshakeConfig;

use crate::{AltsError, AltsErrorKind};

/// Counter of completed and refused handshakes.
pub const HANDSHAKES_TOTAL: &str = "alts_handshakes_total";
/// Histogram of handshake durations, in seconds.
pub const HANDSHAKE_DURATION_SECONDS: &str = "alts_handshake_duration_seconds";
/// Gauge of handshakes running now.
pub const HANDSHAKES_IN_FLIGHT: &str = "alts_handshakes_in_flight";
/// Counter of refused handshakes by reason.
pub const HANDSHAKE_REFUSALS_TOTAL: &str = "alts_handshake_refusals_total";
/// Gauge: seconds until our own certificate expires.
pub const LOCAL_CERT_EXPIRY_SECONDS: &str = "alts_local_cert_expiry_seconds";
/// Gauge: age of the loaded revocation list, in seconds.
pub const CRL_AGE_SECONDS: &str = "alts_crl_age_seconds";
/// Counter of warnings about our own credentials and revocation list.
pub const MATERIAL_WARNINGS_TOTAL: &str = "alts_material_warnings_total";
/// Counter of refused reloads.
pub const RELOAD_FAILURES_TOTAL: &str = "alts_reload_failures_total";
/// Counter of connections closed before a handshake, by reason.
pub const CONNECTIONS_SHED_TOTAL: &str = "alts_connections_shed_total";

impl AltsErrorKind {
    /// The kind in snake case, as used in metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RefusedByPeer => "refused_by_peer",
            Self::PeerNotAuthorized => "peer_not_authorized",
            Self::CertificateInvalid => "certificate_invalid",
            Self::CertificateExpired => "certificate_expired",
            Self::CertificateRevoked => "certificate_revoked",
            Self::Policy => "policy",
            Self::Negotiation => "negotiation",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
            Self::Io => "io",
            Self::Config => "config",
            Self::HandshakerService => "handshaker_service",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for AltsErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts a handshake in flight from creation to drop.
pub(crate) struct InFlight(&'static str);

impl InFlight {
    pub(crate) fn start(side: &'static str) -> Self {
        metrics::gauge!(HANDSHAKES_IN_FLIGHT, "side" => side).increment(1.0);
        Self(side)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(HANDSHAKES_IN_FLIGHT, "side" => self.0).decrement(1.0);
    }
}

/// Records a finished handshake.
pub(crate) fn record(side: &'static str, result: Result<bool, &AltsError>, elapsed: Duration) {
    let (outcome, resumed) = match result {
        Ok(resumed) => ("ok", resumed),
        Err(e) => {
            metrics::counter!(HANDSHAKE_REFUSALS_TOTAL, "side" => side, "reason" => e.kind().as_str())
                .increment(1);
            ("refused", false)
        }
    };
    let resumed = if resumed { "true" } else { "false" };
    metrics::counter!(HANDSHAKES_TOTAL, "side" => side, "outcome" => outcome, "resumed" => resumed)
        .increment(1);
    metrics::histogram!(HANDSHAKE_DURATION_SECONDS, "side" => side, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// When our own credentials stop being usable: the earlier expiry of the
/// handshake and principal certificates (`None`: neither expires).
pub(crate) fn own_expiry(credentials: &LocalCredentials) -> Option<i64> {
    let info = credentials.info();
    [info.validity.not_after, info.principal.validity.not_after]
        .into_iter()
        .flatten()
        .map(|t| t.0)
        .min()
}

/// Updates the certificate-expiry and CRL-age gauges from `config`.
pub(crate) fn record_material(config: &HandshakeConfig) {
    let now = crate::handshake::unix_now().0;
    if let Some(t) = own_expiry(&config.credentials) {
        metrics::gauge!(LOCAL_CERT_EXPIRY_SECONDS).set((t - now) as f64);
    }
    if let Some(crl) = config.verifier.crl() {
        metrics::gauge!(CRL_AGE_SECONDS).set((now - crl.issued_at().0) as f64);
    }
}

/// Logs refused handshakes: each at `debug`, plus at most one `warn`
/// summary per interval (a port scan must not flood the log).
#[derive(Debug)]
pub(crate) struct RefusalLog {
    start: Instant,
    interval_ms: u64,
    /// Milliseconds since `start` of the last summary.
    last_warn_ms: AtomicU64,
    /// Refusals since the last summary.
    since: AtomicU64,
}

impl RefusalLog {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            start: Instant::now(),
            interval_ms: interval.as_millis().try_into().unwrap_or(u64::MAX),
            last_warn_ms: AtomicU64::new(0),
            since: AtomicU64::new(0),
        }
    }

    pub(crate) fn refused(&self, remote: Option<std::net::SocketAddr>, error: &AltsError) {
        tracing::debug!(?remote, kind = %error.kind(), error = %error, "ALTS handshake refused");
        self.since.fetch_add(1, Ordering::Relaxed);
        let now = self.start.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.interval_ms;
        if due
            && self
                .last_warn_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let count = self.since.swap(0, Ordering::Relaxed);
            tracing::warn!(
                refused = count,
                last_remote = ?remote,
                last_kind = %error.kind(),
                last_error = %error,
                "ALTS handshakes refused (details at debug level)"
            );
        }
    }
}
