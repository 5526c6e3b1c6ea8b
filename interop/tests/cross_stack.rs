//! Cross-stack ALTS interop with stock grpcio (C-core), real credentials:
//! stock client → native tonic-alts server, native client → stock server,
//! stock ↔ stock through our `alts-handshaker`, tonic-alts in handshaker-
//! service mode, and refusals (wrong target account, revoked peer,
//! policy-refused peer). Runs `interop/scripts/cross-stack.sh` inside the
//! fake-GCE namespace of `interop/scripts/netns-run.sh`.
//!
//! Skipped loudly (a `SKIP:` line on stdout and stderr) when namespaces are
//! not permitted; fails if the venv cannot be set up.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use alts_core::UnixTime;
use alts_core::cert::{self, Category, HandshakeParams, PrincipalParams, RootKey, SigningKey};
use alts_core::crl::RevocationList;
use alts_core::crypto::{SecureRandom, StaticKeyPair, default_provider};

mod common;

use common::StockTest;

/// Writes `dir/handshake.cert` and `dir/handshake.key` for `identity`;
/// returns the principal revocation id.
fn issue(
    dir: &Path,
    root_key: &SigningKey,
    rng: &dyn SecureRandom,
    identity: &str,
    issuer: &str,
    now: UnixTime,
) -> u64 {
    let validity = Some((now.plus(-3600), now.plus(86_400)));
    let principal_key = SigningKey::generate(rng).unwrap();
    let principal_id = cert::random_revocation_id(Category::Workload, rng).unwrap();
    let principal_cert = cert::issue_principal(
        root_key,
        &PrincipalParams {
            identity: identity.to_owned(),
            category: Category::Workload,
            issuer: issuer.to_owned(),
            validity,
            revocation_id: principal_id,
        },
        principal_key.public_key(),
    )
    .unwrap();
    let static_key = StaticKeyPair::generate(rng).unwrap();
    let handshake_cert = cert::issue_handshake(
        &principal_key,
        &principal_cert,
        &HandshakeParams::with_defaults(
            *static_key.public_key(),
            validity,
            cert::random_revocation_id(Category::Workload, rng).unwrap(),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("handshake.cert"), handshake_cert).unwrap();
    std::fs::write(dir.join("handshake.key"), *static_key.secret_bytes()).unwrap();
    principal_id
}

/// Root, policy, CRL and five identities (see cross-stack.sh).
fn make_credentials(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let provider = default_provider();
    let rng = provider.random.as_ref();
    let now = UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    );
    let root_key = SigningKey::generate(rng).unwrap();
    let root = RootKey::from_signing_key("interop-signing-service", &root_key);
    std::fs::write(dir.join("root.pub"), root.to_bytes()).unwrap();
    for id in ["stock-a", "native-server", "native-client"] {
        issue(&dir.join(id), &root_key, rng, id, "interop-ca", now);
    }
    let revoked = issue(
        &dir.join("stock-revoked"),
        &root_key,
        rng,
        "stock-revoked",
        "interop-ca",
        now,
    );
    issue(
        &dir.join("stock-rogue"),
        &root_key,
        rng,
        "stock-rogue",
        "rogue-ca",
        now,
    );
    let crl = RevocationList::build_signed([revoked], &root_key, now).unwrap();
    std::fs::write(dir.join("crl.bin"), crl).unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        "version = 1\n\n[[rule]]\nissuer = \"interop-ca\"\ncategories = [\"workload\"]\nidentities = [\"*\"]\n",
    )
    .unwrap();
}

const CASES: [&str; 14] = [
    "stock-client-to-native-server",
    "native-client-to-stock-server",
    "stock-to-stock-via-alts-handshaker",
    "tonic-via-handshaker-service-to-native-server",
    "stock-client-to-tonic-server-via-handshaker-service",
    "refused-wrong-target-service-account",
    "stock-client-target-from-handshaker-map",
    "refused-stock-client-without-target",
    "refused-revoked-stock-peer-by-native-server",
    "refused-revoked-stock-peer-by-stock-server",
    "refused-policy-stock-peer-by-native-server",
    "refused-policy-stock-peer-by-stock-server",
    "native-server-still-serving",
    "stock-server-still-serving",
];

#[test]
fn cross_stack_with_stock_grpcio() {
    let Some(test) = StockTest::prepare("cross_stack", "cross-stack") else {
        return;
    };
    let root = common::root();

    // 3. Real credentials (alts-core API), then the scenario.
    let base = test.logs.clone();
    let creds = base.join("creds");
    make_credentials(&creds);
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_alts-handshaker")).parent().unwrap();
    let t = Instant::now();
    let out = Command::new(&test.netns)
        .arg(root.join("interop/scripts/cross-stack.sh"))
        .arg(bin_dir)
        .arg(&test.python)
        .arg(&creds)
        .arg(base.join("logs"))
        .output()
        .expect("run cross-stack.sh");
    println!("cross-stack scenario took {:.1}s", t.elapsed().as_secs_f64());
    let Some(stdout) = test.report(&out) else { return };
    for case in CASES {
        assert!(
            stdout.contains(&format!("CROSS-STACK PASS: {case}\n")),
            "case {case} did not pass; logs in {}",
            base.join("logs").display()
        );
    }
    assert!(!stdout.contains("CROSS-STACK FAIL"));
    assert!(out.status.success(), "cross-stack.sh failed: {:?}", out.status);
    assert!(stdout.contains(&format!("CROSS-STACK: {} passed, 0 failed", CASES.len())));
}
