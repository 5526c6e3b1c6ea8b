//! Shared set-up of the tonic-alts tests.

use std::sync::Arc;

use alts_core::UnixTime;
use alts_core::cert::Category;
use alts_core::handshake::HandshakeConfig;
use alts_core::policy::IssuancePolicy;
use alts_core::testing::{TestPki, deterministic_provider};

/// The system clock: the async driver checks certificates against it, so the
/// in-memory handshakes of these tests use it too.
#[allow(dead_code)] // Not every test binary drives handshakes in memory.
pub fn now() -> UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    UnixTime(i64::try_from(secs).expect("clock in range"))
}

/// Client and server handshake configurations under one throwaway PKI, the
/// certificates valid from an hour before to a day after [`now`]
/// (handshake certificates must expire: verifiers refuse lifetimes above
/// 7 days).
pub fn configs() -> (Arc<HandshakeConfig>, Arc<HandshakeConfig>) {
    let pki = TestPki::new(b"stream tests");
    let now = now();
    let validity = Some((now.plus(-3600), now.plus(86_400)));
    let c = pki.issue_with("frontend-prod", Category::Workload, "scheduler", validity);
    let s = pki.issue_with("backend-prod", Category::Workload, "scheduler", validity);
    let cfg = |i: &alts_core::testing::Issued, seed: &[u8]| {
        Arc::new(HandshakeConfig::new(
            i.credentials.clone(),
            pki.verifier(IssuancePolicy::allow_all_for_tests()),
            deterministic_provider(seed),
        ))
    };
    (cfg(&c, b"c"), cfg(&s, b"s"))
}
