//! End to end with stock grpcio (C-core): a stock ALTS client and a stock
//! ALTS server, both delegating their handshake to OUR handshaker service
//! (`alts-handshaker-testonly`, INSECURE null engine) inside the fake-GCE
//! network namespace of `interop/scripts/netns-run.sh`. Records are really
//! encrypted by grpcio with the key_data our service returned.
//!
//! Skipped loudly (a `SKIP:` line on stdout and stderr) when namespaces are
//! not permitted; fails if the venv cannot be set up.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const SKIP_CODE: i32 = 77;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn skip(why: &str) {
    println!("SKIP: stock_null_engine: {why}");
    eprintln!("SKIP: stock_null_engine: {why}");
    summary(&format!("SKIP: stock_null_engine: {why}\n"));
}

/// Leaves what happened where `.ci/run` prints it (test output is captured).
fn summary(text: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/interop-logs/stock-null-engine");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("summary.txt"), text);
}

#[test]
fn stock_grpcio_client_and_server_through_our_handshaker_service() {
    let root = root();
    let netns = root.join("interop/scripts/netns-run.sh");

    // 1. Namespaces available? (Checked first: no venv needed to skip.)
    let probe = Command::new(&netns)
        .arg("true")
        .output()
        .expect("run netns-run.sh");
    if probe.status.code() == Some(SKIP_CODE) {
        skip(String::from_utf8_lossy(&probe.stdout).trim());
        return;
    }
    assert!(probe.status.success(), "netns-run.sh probe failed: {probe:?}");

    // 2. Stock grpcio venv + generated stubs.
    let t = Instant::now();
    let setup = Command::new(root.join("interop/python/setup_venv.sh"))
        .output()
        .expect("run setup_venv.sh");
    assert!(
        setup.status.success(),
        "setup_venv.sh failed (needs PyPI access the first time):\n{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let python = String::from_utf8_lossy(&setup.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    println!("venv ready in {:.1}s: {python}", t.elapsed().as_secs_f64());

    // 3. The scenario, inside the fake-GCE namespace.
    let logs = root.join("target/interop-logs/stock-null-engine");
    let out = Command::new(&netns)
        .arg(root.join("interop/scripts/stock-null-e2e.sh"))
        .arg(env!("CARGO_BIN_EXE_alts-handshaker-testonly"))
        .arg(&python)
        .arg(&logs)
        .env("RUST_LOG", "alts_interop=debug")
        .output()
        .expect("run stock-null-e2e.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    summary(&stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    if out.status.code() == Some(SKIP_CODE) {
        skip(stdout.trim());
        return;
    }
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
