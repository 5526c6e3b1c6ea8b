//! End to end with stock grpcio (C-core): a stock ALTS client and a stock
//! ALTS server, both delegating their handshake to OUR handshaker service
//! (`alts-handshaker-testonly`, INSECURE null engine) inside the fake-GCE
//! network namespace of `interop/scripts/netns-run.sh`. Records are really
//! encrypted by grpcio with the key_data our service returned.
//!
//! Skipped loudly (a `SKIP:` line on stdout and stderr) when namespaces are
//! not permitted; fails if the venv cannot be set up.

use std::process::Command;

mod common;

use common::StockTest;

#[test]
fn stock_grpcio_client_and_server_through_our_handshaker_service() {
    let Some(test) = StockTest::prepare("stock_null_engine", "stock-null-engine") else {
        return;
    };
    let root = common::root();

    // 3. The scenario, inside the fake-GCE namespace.
    let logs = test.logs.clone();
    let out = Command::new(&test.netns)
        .arg(root.join("interop/scripts/stock-null-e2e.sh"))
        .arg(env!("CARGO_BIN_EXE_alts-handshaker-testonly"))
        .arg(&test.python)
        .arg(&logs)
        .env("RUST_LOG", "alts_interop=debug")
        .output()
        .expect("run stock-null-e2e.sh");
    let Some(stdout) = test.report(&out) else { return };
    let handshaker_log = std::fs::read_to_string(logs.join("handshaker.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "stock e2e failed ({:?}); handshaker log in {}:\n{handshaker_log}",
        out.status,
        logs.display()
    );
    for case in [
        "E2E PASS: stock-client-to-stock-server-via-our-handshaker",
        "E2E PASS: stock-client-no-target-accounts",
        "E2E PASS: stock-client-wrong-target-account-refused",
        "E2E PASS: stock-client-unmapped-target-refused",
        "E2E PASS: stock-server-sees-client-identity",
    ] {
        assert!(stdout.contains(case), "missing {case:?}");
    }
    assert!(!stdout.contains("E2E FAIL"));
    // Our service saw both sides and handed out 44-byte keys.
    assert!(handshaker_log.contains("recv client_start"));
    assert!(handshaker_log.contains("recv server_start"));
    assert!(handshaker_log.contains("key_len=44"));
    assert!(
        stdout.contains("is not one of the target identities"),
        "refusal details reach the stock caller"
    );
}
