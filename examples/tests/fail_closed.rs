//! The example `server` and `client` fail closed (over loopback TCP):
//! without `--policy` they refuse to start unless `--accept-any-issuer`
//! (which would let the whitepaper's Mallory chain through: a
//! `network-admin` certificate issued by `mallory`), and the client refuses
//! to run without `--target` unless `--accept-any-server`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use alts_core::cert::Category;

const SERVER: &str = env!("CARGO_BIN_EXE_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_client");

const POLICY: &str = r#"version = 1
[[rule]]
issuer = "mallory"
categories = ["workload"]
identities = ["mallory-*"]
[[rule]]
issuer = "netops-ca"
categories = ["workload"]
identities = ["network-admin"]
[[rule]]
issuer = "scheduler"
categories = ["workload"]
identities = ["*-prod"]
[[reserved]]
identities = ["network-admin"]
issuers = ["netops-ca"]
"#;

/// A throwaway signing service (`alts_examples::Pki`) in a temp dir, with
/// the policy above next to its `root.pub`.
struct Pki {
    dir: tempfile::TempDir,
    pki: std::cell::RefCell<alts_examples::Pki>,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = alts_examples::Pki::new(dir.path()).unwrap();
        std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
        Self {
            dir,
            pki: std::cell::RefCell::new(pki),
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A credential directory for `identity` (a workload) issued by `issuer`.
    fn issue(&self, name: &str, identity: &str, issuer: &str) -> String {
        let issued = self
            .pki
            .borrow_mut()
            .issue(name, identity, Category::Workload, issuer, 86_400)
            .unwrap();
        issued.dir.display().to_string()
    }
}

/// Runs a program that must exit on its own within 20 s.
fn run(bin: &str, args: &[&str]) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{bin} {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A running example server; killed when dropped.
struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(pki: &Pki, creds: &str, extra: &[&str]) -> Server {
    let root = pki.file("root.pub");
    let mut args = vec!["--listen", "127.0.0.1:0", "--creds", creds, "--root", &root];
    args.extend_from_slice(extra);
    let mut child = Command::new(SERVER)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server announces its address");
    // "serving ALTS on 127.0.0.1:PORT"
    let addr = line.rsplit(' ').next().unwrap().to_owned();
    Server(child, format!("http://{addr}"))
}

fn client(pki: &Pki, server: &Server, creds: &str, extra: &[&str]) -> Output {
    let root = pki.file("root.pub");
    let mut args = vec!["--server", &server.1, "--creds", creds, "--root", &root];
    args.extend_from_slice(extra);
    run(CLIENT, &args)
}

#[test]
fn server_and_client_refuse_to_start_without_policy() {
    let pki = Pki::new();
    let creds = pki.issue("ledger", "ledger-prod", "scheduler");
    let root = pki.file("root.pub");
    let o = run(
        SERVER,
        &["--listen", "127.0.0.1:0", "--creds", &creds, "--root", &root],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("refusing to start without --policy"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("--accept-any-issuer"));

    let o = run(
        CLIENT,
        &[
            "--server",
            "http://127.0.0.1:9",
            "--creds",
            &creds,
            "--root",
            &root,
            "--target",
            "x",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("refusing to run without --policy"),
        "{}",
        text(&o)
    );

    let policy = pki.file("policy.toml");
    let o = run(
        CLIENT,
        &[
            "--server",
            "http://127.0.0.1:9",
            "--creds",
            &creds,
            "--root",
            &root,
            "--policy",
            &policy,
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("refusing to run without --target"),
        "{}",
        text(&o)
    );
}

#[test]
fn server_with_policy_refuses_mallory_and_serves_honest_clients() {
    let pki = Pki::new();
    let policy = pki.file("policy.toml");
    let server = serve(
        &pki,
        &pki.issue("ledger", "ledger-prod", "scheduler"),
        &["--policy", &policy],
    );
    let admin = pki.issue("admin", "network-admin", "netops-ca");
    let mallory = pki.issue("mallory-admin", "network-admin", "mallory");

    let o = client(
        &pki,
        &server,
        &admin,
        &["--policy", &policy, "--target", "ledger-prod"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(r#"server saw us as "network-admin""#),
        "{}",
        text(&o)
    );

    let o = client(
        &pki,
        &server,
        &mallory,
        &["--policy", &policy, "--target", "ledger-prod"],
    );
    assert!(!o.status.success(), "Mallory must be refused: {}", text(&o));
    assert!(!text(&o).contains("reply:"), "{}", text(&o));

    // The client names its server: another identity is not accepted.
    let o = client(
        &pki,
        &server,
        &admin,
        &["--policy", &policy, "--target", "ledger-canary"],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("reply:"), "{}", text(&o));

    // Explicit opt-out on the client side.
    let o = client(
        &pki,
        &server,
        &admin,
        &["--policy", &policy, "--accept-any-server"],
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn accept_any_issuer_is_explicit_and_would_accept_mallory() {
    let pki = Pki::new();
    let policy = pki.file("policy.toml");
    let server = serve(
        &pki,
        &pki.issue("ledger", "ledger-prod", "scheduler"),
        &["--accept-any-issuer"],
    );
    let mallory = pki.issue("mallory-admin", "network-admin", "mallory");
    let o = client(
        &pki,
        &server,
        &mallory,
        &["--policy", &policy, "--target", "ledger-prod"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(r#"server saw us as "network-admin""#),
        "{}",
        text(&o)
    );
}
