//! The programs fail closed, over real sockets (Unix socket in a temp dir,
//! loopback TCP):
//! - without `--policy` they refuse to start unless `--accept-any-issuer`;
//!   with the policy the handshaker refuses the whitepaper's Mallory chain (a
//!   `network-admin` principal certificate issued by `mallory`, an issuer
//!   not allowed to issue it) and serves honest clients;
//! - a client handshake must name its server: the handshaker refuses a
//!   `client_start` without `target_service_accounts` unless its `--targets`
//!   map names the server for the `target_name`, or `--accept-any-server`;
//!   `alts-interop-client` refuses to run without `--target`.

mod support;

use std::path::{Path, PathBuf};

use support::*;
use tonic::Code;

const HANDSHAKER: &str = env!("CARGO_BIN_EXE_alts-handshaker");
const SERVER: &str = env!("CARGO_BIN_EXE_alts-interop-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_alts-interop-client");

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Starts `alts-handshaker` on a Unix socket in the PKI's temp dir.
fn handshaker(pki: &Pki, creds: &Path, extra: &[&str]) -> (Program, PathBuf) {
    let sock = pki
        .dir
        .path()
        .join(format!("hs-{}.sock", extra.len() + rand_suffix()));
    let listen = format!("unix:{}", sock.display());
    let (creds, root) = (s(creds), s(&pki.root()));
    let mut args = vec![
        "--listen",
        &listen,
        "--creds",
        &creds,
        "--root",
        &root,
        "--timeout-secs",
        "10",
    ];
    args.extend_from_slice(extra);
    (start(HANDSHAKER, &args, "listening on"), sock)
}

fn rand_suffix() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(100);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Runs a client (in process, `client_creds`) against the handshaker at
/// `sock` acting as the server.
async fn client_against(pki: &Pki, sock: &Path, client_creds: &Path) -> Ended {
    let mut peer = client_engine(&pki.factory(client_creds, true), &["ledger-prod"]);
    let mut stream = HsStream::open(unix_channel(sock).await).await;
    drive(&mut stream, None, peer.as_mut()).await
}

fn assert_served(e: &Ended, who: &str) {
    assert_eq!(e.last_code(), Code::Ok, "{who}: {:?}", e.last().status);
    let result = e.last().result.as_ref().expect("result");
    assert_eq!(
        result.peer_identity.as_ref().unwrap().identity_oneof,
        sa(who).identity_oneof
    );
    assert_eq!(result.key_data.len(), 44);
    assert_eq!(Some(result.key_data.clone()), e.peer_key);
}

#[tokio::test]
async fn handshaker_with_policy_refuses_mallory_and_serves_honest_clients() {
    let pki = Pki::new();
    let server = pki.issue("ledger", "ledger-prod", "scheduler");
    let policy = s(&pki.policy());
    let (_p, sock) = handshaker(&pki, &server, &["--policy", &policy]);

    // Mallory: a principal certificate for network-admin issued by mallory.
    let mallory = pki.issue("mallory-admin", "network-admin", "mallory");
    let e = client_against(&pki, &sock, &mallory).await;
    assert_eq!(e.last_code(), Code::PermissionDenied, "{:?}", e.last().status);
    let details = &e.last().status.as_ref().unwrap().details;
    assert!(details.contains("network-admin"), "{details}");
    assert_eq!(e.key_bytes_received(), 0, "no key bytes for a refused handshake");
    assert!(e.responses.iter().all(|r| r.result.is_none()));

    // Honest peers: network-admin from netops-ca, and mallory's own identity.
    let admin = pki.issue("admin", "network-admin", "netops-ca");
    assert_served(&client_against(&pki, &sock, &admin).await, "network-admin");
    let batch = pki.issue("batch", "mallory-batch", "mallory");
    assert_served(&client_against(&pki, &sock, &batch).await, "mallory-batch");
}

#[tokio::test]
async fn accept_any_issuer_is_explicit_and_would_accept_mallory() {
    let pki = Pki::new();
    let server = pki.issue("ledger", "ledger-prod", "scheduler");
    let (p, sock) = handshaker(&pki, &server, &["--accept-any-issuer"]);
    assert!(p.stderr_contains("INSECURE: --accept-any-issuer"));
    // Documented danger: without a policy Mallory's chain is accepted.
    let mallory = pki.issue("mallory-admin", "network-admin", "mallory");
    assert_served(&client_against(&pki, &sock, &mallory).await, "network-admin");
}

#[test]
fn programs_refuse_to_start_without_policy() {
    let pki = Pki::new();
    let creds = s(&pki.issue("ledger", "ledger-prod", "scheduler"));
    let root = s(&pki.root());
    let sock = format!("unix:{}", pki.dir.path().join("never.sock").display());
    let runs: [(&str, Vec<&str>); 3] = [
        (
            HANDSHAKER,
            vec!["--listen", &sock, "--creds", &creds, "--root", &root],
        ),
        (
            SERVER,
            vec!["--listen", "127.0.0.1:0", "--creds", &creds, "--root", &root],
        ),
        (
            CLIENT,
            vec![
                "--server",
                "127.0.0.1:9",
                "--creds",
                &creds,
                "--root",
                &root,
                "--target",
                "x",
            ],
        ),
    ];
    for (bin, args) in runs {
        let (status, out) = run_to_exit(bin, &args);
        assert_eq!(status.code(), Some(2), "{bin}: {out}");
        assert!(out.contains("refusing to start without --policy"), "{bin}: {out}");
        assert!(out.contains("--accept-any-issuer"), "{bin}: {out}");
    }
    assert!(!pki.dir.path().join("never.sock").exists(), "nothing was bound");
}

fn write_targets(pki: &Pki, name: &str, text: &str) -> String {
    let p = pki.path(name);
    std::fs::write(&p, text).unwrap();
    s(&p)
}

/// The handshaker (client side, identity billing-prod) against an
/// in-process ledger-prod server; the stock client sends no targets.
async fn stock_client_naming_no_server(pki: &Pki, extra: &[&str], target_name: &str) -> Ended {
    let billing = pki.issue(&format!("billing-{}", rand_suffix()), "billing-prod", "scheduler");
    let ledger = pki.issue(&format!("ledger-{}", rand_suffix()), "ledger-prod", "scheduler");
    let policy = s(&pki.policy());
    let mut args = vec!["--policy", policy.as_str()];
    args.extend_from_slice(extra);
    let (_p, sock) = handshaker(pki, &billing, &args);
    let mut server = server_engine(&pki.factory(&ledger, true));
    let mut stream = HsStream::open(unix_channel(&sock).await).await;
    let e = drive(&mut stream, Some(client_start(&[], target_name)), server.as_mut()).await;
    if e.last_code() != Code::Ok {
        // A refusal ends the stream with OK after the in-band status.
        assert!(stream.next_message().await.expect("OK end").is_none());
    }
    e
}

#[tokio::test]
async fn client_handshake_naming_no_server_is_refused_without_a_targets_entry() {
    let pki = Pki::new();
    let e = stock_client_naming_no_server(&pki, &[], "ledger.internal:50051").await;
    assert_eq!(e.last_code(), Code::PermissionDenied);
    let details = &e.last().status.as_ref().unwrap().details;
    assert!(
        details.contains(r#"target_name "ledger.internal:50051" names no target identities"#),
        "{details}"
    );
    assert!(
        e.last().out_frames.is_empty(),
        "refused before any handshake message"
    );
    assert_eq!(e.key_bytes_received(), 0);

    // A map entry for another target does not help.
    let other = write_targets(&pki, "t0.toml", "[targets]\n\"other:1\" = [\"ledger-prod\"]\n");
    let e = stock_client_naming_no_server(&pki, &["--targets", &other], "ledger.internal:50051").await;
    assert_eq!(e.last_code(), Code::PermissionDenied);
}

#[tokio::test]
async fn targets_map_names_the_server_and_refuses_an_impersonator() {
    let pki = Pki::new();
    let good = write_targets(
        &pki,
        "t1.toml",
        "version = 1\n[targets]\n\"ledger.internal:50051\" = [\"ledger-prod\"]\n",
    );
    let e = stock_client_naming_no_server(&pki, &["--targets", &good], "ledger.internal:50051").await;
    assert_served(&e, "ledger-prod");

    // The map says ledger-canary: a ledger-prod server answering for that
    // target is not accepted.
    let other = write_targets(
        &pki,
        "t2.toml",
        "[targets]\n\"ledger.internal:50051\" = [\"ledger-canary\"]\n",
    );
    let e = stock_client_naming_no_server(&pki, &["--targets", &other], "ledger.internal:50051").await;
    assert_eq!(e.last_code(), Code::PermissionDenied);
    let details = &e.last().status.as_ref().unwrap().details;
    assert!(details.contains("not one of the target identities"), "{details}");
    assert_eq!(e.key_bytes_received(), 0);
}

#[tokio::test]
async fn accept_any_server_is_explicit() {
    let pki = Pki::new();
    let e = stock_client_naming_no_server(&pki, &["--accept-any-server"], "ledger.internal:50051").await;
    assert_served(&e, "ledger-prod");
}

#[test]
fn bad_targets_file_refuses_to_start() {
    let pki = Pki::new();
    let creds = s(&pki.issue("ledger", "ledger-prod", "scheduler"));
    let (root, policy) = (s(&pki.root()), s(&pki.policy()));
    let bad = write_targets(&pki, "bad.toml", "[targets]\n\"a:1\" = []\n");
    let sock = format!("unix:{}", pki.dir.path().join("never.sock").display());
    let (status, out) = run_to_exit(
        HANDSHAKER,
        &[
            "--listen",
            &sock,
            "--creds",
            &creds,
            "--root",
            &root,
            "--policy",
            &policy,
            "--targets",
            &bad,
        ],
    );
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("--targets"), "{out}");
}

#[test]
fn interop_client_names_its_server_and_server_applies_the_policy() {
    let pki = Pki::new();
    let (root, policy) = (s(&pki.root()), s(&pki.policy()));
    let ledger = s(&pki.issue("ledger", "ledger-prod", "scheduler"));
    let srv = start(
        SERVER,
        &[
            "--listen",
            "127.0.0.1:0",
            "--creds",
            &ledger,
            "--root",
            &root,
            "--policy",
            &policy,
        ],
        "listening on",
    );
    // "alts-interop-server: listening on 127.0.0.1:PORT (native, ...)"
    let addr = srv
        .ready_line
        .split_whitespace()
        .nth(3)
        .expect("address")
        .to_owned();
    let client = |creds: &str, extra: &[&str]| {
        let mut args = vec![
            "--server",
            &addr,
            "--creds",
            creds,
            "--root",
            &root,
            "--policy",
            &policy,
            "--method",
            "health",
            "--timeout-secs",
            "5",
        ];
        args.extend_from_slice(extra);
        run_to_exit(CLIENT, &args)
    };
    let admin = s(&pki.issue("admin", "network-admin", "netops-ca"));

    // No --target: refused before connecting.
    let (status, out) = client(&admin, &[]);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("refusing to run without --target"), "{out}");

    // Honest client naming the server: served.
    let (status, out) = client(&admin, &["--target", "ledger-prod"]);
    assert!(status.success(), "{out}");
    assert!(out.contains(r#"handshake ok peer="ledger-prod""#), "{out}");

    // Naming another identity: the server is not accepted.
    let (status, out) = client(&admin, &["--target", "ledger-canary"]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("not one of the target identities"), "{out}");

    // Mallory's network-admin chain: refused by the server's policy.
    let mallory = s(&pki.issue("mallory-admin", "network-admin", "mallory"));
    let (status, out) = client(&mallory, &["--target", "ledger-prod"]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("peer certificate not accepted (alert code 3)"),
        "{out}"
    );
    assert!(!out.contains("handshake ok"), "{out}");

    // --accept-any-server is the explicit opt-out.
    let (status, out) = client(&admin, &["--accept-any-server"]);
    assert!(status.success(), "{out}\nSERVER:\n{}", srv.stderr_text());
}

/// Without credential flags, `alts-handshaker` uses the directory the
/// credential agent maintains (`$ALTS_CREDENTIALS_DIR`): it refuses to start
/// while that directory has no issuance policy, and serves once it has one.
#[test]
fn handshaker_without_credential_flags_uses_the_agents_directory() {
    let pki = Pki::new();
    let dir = pki.issue("ledger", "ledger-prod", "scheduler");
    std::fs::copy(pki.root(), dir.join("root.pub")).unwrap();
    let sock = pki.dir.path().join("env.sock");
    let listen = format!("unix:{}", sock.display());
    let command = || {
        let mut c = std::process::Command::new(HANDSHAKER);
        c.args(["--listen", &listen])
            .env("ALTS_CREDENTIALS_DIR", &dir)
            .stdin(std::process::Stdio::null());
        c
    };
    let out = command().output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("no issuance policy"), "{text}");

    std::fs::copy(pki.policy(), dir.join("issuance-policy.toml")).unwrap();
    let mut child = command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !sock.exists() && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let serving = sock.exists() && child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(serving, "alts-handshaker did not start from ALTS_CREDENTIALS_DIR");
}
