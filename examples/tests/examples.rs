//! The self-checking examples run to completion.

use std::process::Command;

/// The Prometheus example exports every ALTS metric (it exits non-zero if
/// one is missing).
#[test]
fn metrics_example_exports_alts_metrics() {
    let out = Command::new(env!("CARGO_BIN_EXE_metrics"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run the metrics example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "metrics example failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("alts_handshakes_total{"), "{stdout}");
    assert!(stdout.contains(r#"reason="peer_not_authorized""#), "{stdout}");
}
