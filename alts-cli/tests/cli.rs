//! End-to-end runs of the built `alts` binary in a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const PRODUCTION: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/policies/production.toml"
);
const TEST_CLUSTER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/policies/test-cluster.toml"
);

fn alts(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alts"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run alts")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn ok(dir: &Path, args: &[&str]) -> String {
    let o = alts(dir, args);
    assert_eq!(o.status.code(), Some(0), "{args:?}\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn fails(dir: &Path, args: &[&str], code: i32) -> String {
    let o = alts(dir, args);
    assert_eq!(o.status.code(), Some(code), "{args:?}\n{}", text(&o));
    let t = text(&o);
    assert!(!t.contains("panicked"), "{t}");
    t
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chain(d: &Path, out: &str, issuer: &str, identity: &str, category: &str) {
    ok(
        d,
        &[
            "issue",
            "principal",
            "--ca",
            "ca",
            "--issuer",
            issuer,
            "--identity",
            identity,
            "--category",
            category,
            "--out",
            out,
        ],
    );
    ok(d, &["issue", "handshake", "--principal", out, "--out", out]);
}

#[test]
fn full_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(
        d,
        &["ca", "init", "--out", "ca", "--name", "test-signing-service"],
    );
    assert_eq!(mode(&d.join("ca/ca.key")), 0o600);
    // A second init never clobbers the CA key.
    let t = fails(d, &["ca", "init", "--out", "ca"], 2);
    assert!(t.contains("already exists"), "{t}");

    chain(d, "alice", "corp-ca", "alice", "person");
    chain(d, "box", "corp-ca", "build-box-17", "machine");
    chain(d, "fe", "scheduler", "frontend-prod", "workload");
    for dir in ["alice", "box", "fe"] {
        assert_eq!(mode(&d.join(dir).join("principal.key")), 0o600);
        assert_eq!(mode(&d.join(dir).join("handshake.key")), 0o600);
        assert!(d.join(dir).join("root.pub").exists());
        let out = ok(
            d,
            &[
                "verify",
                "--root",
                "ca/root.pub",
                "--cert",
                &format!("{dir}/handshake.cert"),
                "--policy",
                PRODUCTION,
            ],
        );
        assert!(out.contains("OK: "), "{out}");
        assert!(out.contains("policy: allowed"), "{out}");
        // The library loader reads what the CLI wrote.
        let creds = alts_cli::files::load_local_credentials(&d.join(dir)).unwrap();
        assert!(out.contains(creds.identity()));
    }
    let out = ok(
        d,
        &[
            "verify",
            "--root",
            "ca/root.pub",
            "--cert",
            "alice/handshake.cert",
        ],
    );
    assert!(out.contains("OK: alice") && out.contains("category: person") && out.contains("issuer: corp-ca"));
    assert!(out.contains("policy: not checked"), "{out}");
    // Principal certificates verify on their own too.
    ok(
        d,
        &[
            "verify",
            "--root",
            "ca/root.pub",
            "--cert",
            "fe/principal.cert",
            "--policy",
            PRODUCTION,
        ],
    );

    // A person's handshake cert inherits the principal's revocation ID; 20 h validity.
    let hs: serde_json::Value =
        serde_json::from_str(&ok(d, &["inspect", "--json", "alice/handshake.cert"])).unwrap();
    assert_eq!(hs["kind"], "handshake_cert");
    assert_eq!(hs["revocation_id"], hs["principal"]["revocation_id"]);
    assert_eq!(hs["principal"]["category"], "person");
    let v = &hs["validity"];
    assert_eq!(
        v["not_after"].as_i64().unwrap() - v["not_before"].as_i64().unwrap(),
        20 * 3600
    );
    // A workload's gets its own ID in the workload range; 48 h validity.
    let hs: serde_json::Value =
        serde_json::from_str(&ok(d, &["inspect", "--json", "fe/handshake.cert"])).unwrap();
    assert_ne!(hs["revocation_id"], hs["principal"]["revocation_id"]);
    assert!(hs["revocation_id"].as_str().unwrap().starts_with("0x03"));
    let v = &hs["validity"];
    assert_eq!(
        v["not_after"].as_i64().unwrap() - v["not_before"].as_i64().unwrap(),
        48 * 3600
    );

    // inspect detects every kind.
    for (f, kind) in [
        ("ca/root.pub", "root key"),
        ("alice/principal.cert", "principal certificate"),
        ("alice/handshake.cert", "handshake certificate"),
        ("ca/ca.key", "Ed25519 private key"),
        ("alice/handshake.key", "X25519 private key"),
    ] {
        let out = ok(d, &["inspect", f]);
        assert!(out.contains(kind), "{f}: {out}");
    }

    // policy check.
    let out = ok(
        d,
        &[
            "policy",
            "check",
            "--policy",
            PRODUCTION,
            "--cert",
            "fe/handshake.cert",
        ],
    );
    assert!(out.contains("allowed"), "{out}");
    let out = ok(
        d,
        &[
            "policy",
            "check",
            "--policy",
            PRODUCTION,
            "--cert",
            "box/principal.cert",
        ],
    );
    assert!(out.contains("allowed"), "{out}");
}

#[test]
fn mallory_and_policy_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["ca", "init", "--out", "ca"]);
    chain(d, "mallory", "mallory", "network-admin", "person");
    chain(d, "netops", "netops-ca", "network-admin", "person");
    chain(d, "dev", "scheduler", "frontend-dev", "workload");
    let t = fails(
        d,
        &[
            "verify",
            "--root",
            "ca/root.pub",
            "--cert",
            "mallory/handshake.cert",
            "--policy",
            PRODUCTION,
        ],
        1,
    );
    assert!(t.contains("verification FAILED"), "{t}");
    assert!(
        t.contains("network-admin") && t.contains("mallory") && t.contains("reserved"),
        "{t}"
    );
    let t = fails(
        d,
        &[
            "policy",
            "check",
            "--policy",
            PRODUCTION,
            "--cert",
            "mallory/handshake.cert",
        ],
        1,
    );
    assert!(t.contains("denied"), "{t}");
    // The same identity issued by the allowed issuer passes.
    let out = ok(
        d,
        &[
            "verify",
            "--root",
            "ca/root.pub",
            "--cert",
            "netops/handshake.cert",
            "--policy",
            PRODUCTION,
        ],
    );
    assert!(out.contains("OK: network-admin"), "{out}");
    // Identity outside the scheduler's pattern; allowed by the lax policy.
    let t = fails(
        d,
        &[
            "verify",
            "--root",
            "ca/root.pub",
            "--cert",
            "dev/handshake.cert",
            "--policy",
            PRODUCTION,
        ],
        1,
    );
    assert!(t.contains("frontend-dev"), "{t}");
    ok(
        d,
        &[
            "verify",
            "--root",
            "ca/root.pub",
            "--cert",
            "dev/handshake.cert",
            "--policy",
            TEST_CLUSTER,
        ],
    );
    // Wrong root.
    ok(d, &["ca", "init", "--out", "other"]);
    let t = fails(
        d,
        &[
            "verify",
            "--root",
            "other/root.pub",
            "--cert",
            "netops/handshake.cert",
        ],
        1,
    );
    assert!(t.contains("different root key"), "{t}");
}

#[test]
fn revocation_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["ca", "init", "--out", "ca"]);
    ok(
        d,
        &[
            "issue",
            "principal",
            "--ca",
            "ca",
            "--issuer",
            "scheduler",
            "--identity",
            "db-prod",
            "--category",
            "workload",
            "--revocation-id",
            "0x0300000000001000",
            "--valid-for",
            "30days",
            "--out",
            "db",
        ],
    );
    ok(
        d,
        &[
            "issue",
            "handshake",
            "--principal",
            "db",
            "--revocation-id",
            "0x0300000000002000",
            "--out",
            "db",
        ],
    );
    ok(
        d,
        &[
            "issue",
            "handshake",
            "--principal",
            "db",
            "--revocation-id",
            "0x0300000000003000",
            "--out",
            "db2",
        ],
    );
    std::fs::write(
        d.join("ids.txt"),
        "# revoked\n0x0300000000002000\n\n12345  # a comment\n0x0100000000000000-0x01000000000fffff\n",
    )
    .unwrap();
    let out = ok(
        d,
        &[
            "crl",
            "build",
            "--root-key",
            "ca/ca.key",
            "--ids",
            "ids.txt",
            "--out",
            "crl.bin",
        ],
    );
    assert!(out.contains("1048578 revoked ids"), "{out}");
    let out = ok(d, &["inspect", "crl.bin"]);
    assert!(
        out.contains("revocation list") && out.contains("1048578"),
        "{out}"
    );
    // Revoked handshake cert refused; a sibling with another ID passes.
    let t = fails(
        d,
        &[
            "verify",
            "--root",
            "ca/root.pub",
            "--cert",
            "db/handshake.cert",
            "--crl",
            "crl.bin",
            "--policy",
            PRODUCTION,
        ],
        1,
    );
    assert!(
        t.contains("handshake certificate revoked") && t.contains("0x0300000000002000"),
        "{t}"
    );
    let out = ok(
        d,
        &[
            "verify",
            "--root",
            "ca/root.pub",
            "--cert",
            "db2/handshake.cert",
            "--crl",
            "crl.bin",
            "--policy",
            PRODUCTION,
        ],
    );
    assert!(out.contains("crl: not revoked"), "{out}");
    // crl check exit codes.
    let out = fails(
        d,
        &[
            "crl",
            "check",
            "--crl",
            "crl.bin",
            "--root",
            "ca/root.pub",
            "--id",
            "12345",
        ],
        1,
    );
    assert!(out.contains("revoked"));
    ok(
        d,
        &[
            "crl",
            "check",
            "--crl",
            "crl.bin",
            "--root",
            "ca/root.pub",
            "--id",
            "12346",
        ],
    );
    fails(
        d,
        &[
            "crl",
            "check",
            "--crl",
            "crl.bin",
            "--root",
            "ca/root.pub",
            "--id",
            "0x01000000000ffff0",
        ],
        1,
    );
    fails(
        d,
        &[
            "crl",
            "check",
            "--crl",
            "crl.bin",
            "--root",
            "ca/root.pub",
            "--id",
            "zz",
        ],
        2,
    );
    // Revoke the principal: every handshake cert under it is refused.
    std::fs::write(d.join("ids2.txt"), "0x0300000000001000\n").unwrap();
    ok(
        d,
        &[
            "crl",
            "build",
            "--root-key",
            "ca/ca.key",
            "--ids",
            "ids2.txt",
            "--out",
            "crl2.bin",
        ],
    );
    let t = fails(
        d,
        &[
            "verify",
            "--root",
            "ca/root.pub",
            "--cert",
            "db2/handshake.cert",
            "--crl",
            "crl2.bin",
        ],
        1,
    );
    assert!(t.contains("principal certificate revoked"), "{t}");
    // A CRL from another CA is refused.
    ok(d, &["ca", "init", "--out", "other"]);
    let t = fails(
        d,
        &[
            "crl",
            "check",
            "--crl",
            "crl.bin",
            "--root",
            "other/root.pub",
            "--id",
            "1",
        ],
        2,
    );
    assert!(t.contains("signature"), "{t}");
    // Bad IDs files.
    std::fs::write(d.join("bad.txt"), "1\nnot-a-number\n").unwrap();
    let t = fails(
        d,
        &[
            "crl",
            "build",
            "--root-key",
            "ca/ca.key",
            "--ids",
            "bad.txt",
            "--out",
            "x",
        ],
        2,
    );
    assert!(t.contains("bad.txt:2"), "{t}");
    std::fs::write(d.join("bad.txt"), "5-1\n").unwrap();
    fails(
        d,
        &[
            "crl",
            "build",
            "--root-key",
            "ca/ca.key",
            "--ids",
            "bad.txt",
            "--out",
            "x",
        ],
        2,
    );
    std::fs::write(d.join("bad.txt"), "0-0xffffffffffff\n").unwrap();
    fails(
        d,
        &[
            "crl",
            "build",
            "--root-key",
            "ca/ca.key",
            "--ids",
            "bad.txt",
            "--out",
            "x",
        ],
        2,
    );
}

#[test]
fn garbage_missing_files_and_wrong_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["ca", "init", "--out", "ca"]);
    chain(d, "a", "corp-ca", "alice", "person");
    std::fs::write(d.join("garbage"), b"\x00\xff garbage \x12\x34 not protobuf").unwrap();
    std::fs::write(d.join("empty"), b"").unwrap();
    for f in ["garbage", "empty"] {
        let t = fails(d, &["inspect", f], 2);
        assert!(t.contains("not an ALTS file"), "{t}");
        fails(d, &["verify", "--root", "ca/root.pub", "--cert", f], 2);
        fails(d, &["verify", "--root", f, "--cert", "a/handshake.cert"], 2);
        fails(
            d,
            &[
                "verify",
                "--root",
                "ca/root.pub",
                "--cert",
                "a/handshake.cert",
                "--crl",
                f,
            ],
            2,
        );
        // An empty policy is valid and denies everything (default deny).
        let code = if f == "empty" { 1 } else { 2 };
        fails(
            d,
            &[
                "verify",
                "--root",
                "ca/root.pub",
                "--cert",
                "a/handshake.cert",
                "--policy",
                f,
            ],
            code,
        );
        fails(
            d,
            &["crl", "build", "--root-key", f, "--ids", "empty", "--out", "x"],
            2,
        );
        fails(d, &["policy", "check", "--policy", PRODUCTION, "--cert", f], 2);
    }
    let t = fails(
        d,
        &["verify", "--root", "missing.pub", "--cert", "a/handshake.cert"],
        2,
    );
    assert!(t.contains("missing.pub") && t.contains("No such file"), "{t}");
    // Wrong key types.
    std::fs::copy(d.join("a/handshake.key"), d.join("ca2.key")).unwrap();
    let t = fails(
        d,
        &[
            "crl",
            "build",
            "--root-key",
            "ca2.key",
            "--ids",
            "empty",
            "--out",
            "x",
        ],
        2,
    );
    assert!(t.contains("wrong key type"), "{t}");
    std::fs::copy(d.join("a/principal.key"), d.join("a/handshake.key")).unwrap();
    let e = alts_cli::files::load_local_credentials(&d.join("a"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong key type"), "{e}");
    // Truncated certificate.
    let cert = std::fs::read(d.join("a/handshake.cert")).unwrap();
    std::fs::write(d.join("trunc.cert"), &cert[..cert.len() / 2]).unwrap();
    fails(d, &["verify", "--root", "ca/root.pub", "--cert", "trunc.cert"], 2);
    // Bad arguments.
    fails(
        d,
        &[
            "issue",
            "principal",
            "--ca",
            "ca",
            "--issuer",
            "x",
            "--identity",
            "y",
            "--category",
            "robot",
            "--out",
            "o",
        ],
        2,
    );
    fails(
        d,
        &[
            "issue",
            "handshake",
            "--principal",
            "a",
            "--valid-for",
            "soon",
            "--out",
            "o",
        ],
        2,
    );
    fails(d, &["issue", "handshake", "--principal", "nope", "--out", "o"], 2);
}

#[test]
fn identities_outside_the_grammar_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["ca", "init", "--out", "ca"]);
    for bad in [
        "network-admin\u{200b}",
        "Network-admin",
        "n\u{0435}twork-admin",
        ".x",
        "a b",
    ] {
        let t = fails(
            d,
            &[
                "issue",
                "principal",
                "--ca",
                "ca",
                "--issuer",
                "netops-ca",
                "--identity",
                bad,
                "--category",
                "person",
                "--out",
                "bad",
            ],
            2,
        );
        assert!(
            t.contains("--identity: identity outside the identity grammar"),
            "{t}"
        );
        assert!(!d.join("bad").exists(), "{bad:?}: nothing written");
    }
    for good in ["network-admin", "sa@p.iam", "frontend-prod"] {
        chain(d, good, "scheduler", good, "workload");
    }
}

#[test]
fn handshake_lifetime_above_seven_days_needs_an_explicit_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["ca", "init", "--out", "ca"]);
    chain(d, "fe", "scheduler", "frontend-prod", "workload");
    let issue = |valid_for: &'static str, flag: bool| {
        let mut args = vec![
            "issue",
            "handshake",
            "--principal",
            "fe",
            "--valid-for",
            valid_for,
            "--out",
            "long",
        ];
        if flag {
            args.push("--allow-long-lifetime");
        }
        args
    };
    let t = fails(d, &issue("8days", false), 2);
    assert!(t.contains("at most 7 days"), "{t}");
    ok(d, &issue("7days", false));
    ok(d, &issue("8days", true));
    // A verifier refuses the 8-day certificate.
    let t = fails(
        d,
        &["verify", "--root", "ca/root.pub", "--cert", "long/handshake.cert"],
        1,
    );
    assert!(t.contains("lifetime"), "{t}");
}

/// Principal certificates expire after 90 days by default; `--no-expiry`
/// is the explicit way to issue one that never does.
#[test]
fn principal_certificates_expire_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["ca", "init", "--out", "ca"]);
    let base = [
        "issue",
        "principal",
        "--ca",
        "ca",
        "--issuer",
        "scheduler",
        "--category",
        "workload",
    ];
    let default = ok(d, &[&base[..], &["--identity", "a-prod", "--out", "a"]].concat());
    assert!(!default.contains("expires: never"), "{default}");
    let forever = ok(
        d,
        &[&base[..], &["--identity", "b-prod", "--no-expiry", "--out", "b"]].concat(),
    );
    assert!(forever.contains("expires: never"), "{forever}");
    let both = fails(
        d,
        &[
            &base[..],
            &[
                "--identity",
                "c-prod",
                "--no-expiry",
                "--valid-for",
                "1day",
                "--out",
                "c",
            ],
        ]
        .concat(),
        2,
    );
    assert!(
        both.contains("--no-expiry") || both.contains("cannot be used"),
        "{both}"
    );
}

/// Output into a pipe that is already closed (`alts … | head -1` after
/// `head` exits) ends the command quietly instead of with a panic.
#[test]
fn closed_stdout_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["ca", "init", "--out", "ca"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_alts"))
        .current_dir(d)
        .args(["inspect", "ca/root.pub"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run alts");
    // Close the reading end before the command writes anything.
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("wait");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(!t.contains("panicked"), "{t}");
}
