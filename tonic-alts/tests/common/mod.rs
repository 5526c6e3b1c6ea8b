//! Shared set-up of the tonic-alts tests.

use std::sync::Arc;

use alts_core::cert::Category;
use alts_core::handshake::HandshakeConfig;
use alts_core::policy::IssuancePolicy;
use alts_core::testing::{TestPki, deterministic_provider};

/// Client and server handshake configurations under one throwaway PKI.
pub fn configs() -> (Arc<HandshakeConfig>, Arc<HandshakeConfig>) {
    let pki = TestPki::new(b"stream tests");
    // No expiry: the async driver checks against the real clock.
    let c = pki.issue_with("frontend-prod", Category::Workload, "scheduler", None);
    let s = pki.issue_with("backend-prod", Category::Workload, "scheduler", None);
    let cfg = |i: &alts_core::testing::Issued, seed: &[u8]| {
        Arc::new(HandshakeConfig::new(
            i.credentials.clone(),
            pki.verifier(IssuancePolicy::allow_all_for_tests()),
            deterministic_provider(seed),
        ))
    };
    (cfg(&c, b"c"), cfg(&s, b"s"))
}
