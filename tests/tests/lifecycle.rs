//! Credential rotation mid-run and session resumption over real sockets.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alts_core::crypto::RingRandom;
use alts_core::handshake::Resumption;
use alts_core::resumption::ResumptionKeys;
use alts_examples::IssuedDir;
use common::*;
use tonic_alts::{AltsAuthzLayer, AltsConfig, AltsConnector, AltsPeer};

/// Copies `from`'s handshake certificate and key over `to`'s (what a
/// secret-mount rotation does).
fn install(from: &IssuedDir, to: &IssuedDir) {
    for f in ["handshake.cert", "handshake.key"] {
        std::fs::copy(from.dir.join(f), to.dir.join(f)).expect("copy credential");
    }
}

/// Handshakes (no HTTP/2) with `addr` accepting only `target`; returns the
/// server as the client saw it.
async fn handshake_with(
    addr: SocketAddr,
    config: &AltsConfig,
    target: &str,
) -> Result<Arc<AltsPeer>, String> {
    let connector = AltsConnector::new(config.clone()).target_identity(target);
    let uri = format!("http://{addr}").parse().expect("uri");
    match bounded("handshake", connector.connect(uri)).await {
        Ok(stream) => Ok(stream.peer().clone()),
        Err(e) => Err(chain(&e)),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_rotates_credentials_for_new_connections_only() {
    let mut fx = Fixture::new();
    let s = fx.issue("echo-prod");
    let c = fx.issue("frontend-prod");
    let server_config = fx.config(&s);
    let server = serve_plain(server_config.clone()).await;
    let client_config = fx.config(&c);
    let mut before = connect(server.addr, &client_config).await;
    unary(&mut before, "before").await.expect("unary");

    // Same identity, new key and certificate.
    let same = fx.issue_by("echo-prod-v2", "echo-prod", "scheduler");
    install(&same, &s);
    server_config
        .reloader()
        .expect("reloader")
        .reload()
        .expect("reload");
    let seen = handshake_with(server.addr, &client_config, "echo-prod")
        .await
        .expect("same identity");
    assert_eq!(
        seen.handshake_revocation_id,
        Some(same.handshake_revocation_id),
        "old certificate still served"
    );

    // A new identity: clients now have to target it.
    let renamed = fx.issue("echo2-prod");
    install(&renamed, &s);
    server_config
        .reloader()
        .expect("reloader")
        .reload()
        .expect("reload");
    let seen = handshake_with(server.addr, &client_config, "echo2-prod")
        .await
        .expect("new identity");
    assert_eq!(seen.identity, "echo2-prod");
    let err = handshake_with(server.addr, &client_config, "echo-prod")
        .await
        .expect_err("old identity gone");
    assert!(err.contains("echo-prod"), "{err}");

    // The connection made before both rotations keeps working.
    assert_eq!(
        unary(&mut before, "after").await.expect("old connection").message,
        "after"
    );

    // A corrupt key fails the reload and keeps the current credentials.
    std::fs::write(s.dir.join("handshake.key"), b"oops").expect("write");
    let err = server_config
        .reloader()
        .expect("reloader")
        .reload()
        .expect_err("corrupt key must not load");
    assert!(err.to_string().contains("handshake.key"), "{err}");
    handshake_with(server.addr, &client_config, "echo2-prod")
        .await
        .expect("still the rotated identity");
    assert_eq!(
        unary(&mut before, "still").await.expect("old connection").message,
        "still"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reloader_picks_up_rotated_files() {
    let mut fx = Fixture::new();
    let s = fx.issue("echo-prod");
    let c = fx.issue("frontend-prod");
    let server_config = fx.config(&s);
    let _reloader = server_config
        .reloader()
        .expect("reloader")
        .spawn(Duration::from_millis(100));
    let server = serve_plain(server_config.clone()).await;
    let client_config = fx.config(&c);
    let mut before = connect(server.addr, &client_config).await;

    /// Polls until a handshake targeting `target` succeeds.
    async fn until_served_as(addr: SocketAddr, config: &AltsConfig, target: &str) -> Arc<AltsPeer> {
        let start = Instant::now();
        loop {
            match handshake_with(addr, config, target).await {
                Ok(peer) => return peer,
                Err(e) if start.elapsed() > Duration::from_secs(5) => panic!("never served as {target}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    let renamed = fx.issue("echo2-prod");
    install(&renamed, &s);
    until_served_as(server.addr, &client_config, "echo2-prod").await;

    // A corrupt file is ignored by the reloader (the old credentials stay)...
    std::fs::write(s.dir.join("handshake.cert"), b"not a certificate").expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    until_served_as(server.addr, &client_config, "echo2-prod").await;
    // ...and the next good rotation is picked up.
    let third = fx.issue("echo3-prod");
    install(&third, &s);
    let seen = until_served_as(server.addr, &client_config, "echo3-prod").await;
    assert_eq!(seen.handshake_revocation_id, Some(third.handshake_revocation_id));

    assert_eq!(
        unary(&mut before, "x")
            .await
            .expect("old connection")
            .peer_identity,
        "frontend-prod"
    );
}

fn with_resumption(config: AltsConfig) -> AltsConfig {
    config.resumption(ResumptionKeys::generate(&RingRandom::default()).expect("resumption key"))
}

#[tokio::test(flavor = "multi_thread")]
async fn second_connection_resumes() {
    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let (authz, seen) = recording_authorizer();
    let server = serve(
        with_resumption(fx.config(&s)),
        ServerOpts::layer(AltsAuthzLayer::new(authz)),
    )
    .await;
    let client_config = with_resumption(fx.config(&c));

    let mut client_side = Vec::new();
    for i in 0..3 {
        // A fresh channel each time: a new TCP connection and handshake.
        let mut ch = connect(server.addr, &client_config).await;
        let r = unary(&mut ch, &i.to_string()).await.expect("unary");
        assert_eq!(r.peer_identity, "frontend-prod");
        drop(ch);
        client_side.push(
            handshake_with(server.addr, &client_config, "echo-prod")
                .await
                .expect("handshake"),
        );
    }
    let seen = seen.lock().expect("lock");
    let modes = seen.iter().map(|p| p.resumption.clone()).collect::<Vec<_>>();
    assert_eq!(modes[0], Resumption::NotAttempted, "{modes:?}");
    assert!(
        modes[1..].iter().all(|m| *m == Resumption::ClientTicket),
        "{modes:?}"
    );
    assert!(
        seen.iter().all(|p| p.identity == "frontend-prod"),
        "resumed peer lost its identity"
    );
    assert!(
        client_side
            .iter()
            .all(|p| p.resumed() && p.identity == "echo-prod"),
        "{client_side:?}"
    );
}

/// Server-side tickets over real sockets: a client of another identity that
/// names the victim's RID (with a key of its own) deposits tickets and lists
/// that RID; none of its tickets reaches the victim and it gets none of the
/// victim's. Another victim instance (same RID key, empty ticket cache) then
/// resumes from the victim's own server-side ticket.
#[tokio::test(flavor = "multi_thread")]
async fn server_side_tickets_are_filed_by_verified_identity() {
    use alts_core::handshake::ResumptionConfig;
    use alts_core::resumption::ResumptionKey;

    let mut fx = Fixture::new();
    let (s, c, m) = (
        fx.issue("echo-prod"),
        fx.issue("frontend-prod"),
        fx.issue("mallory-prod"),
    );
    let (authz, seen) = recording_authorizer();
    let server = serve(
        with_resumption(fx.config(&s)),
        ServerOpts::layer(AltsAuthzLayer::new(authz)),
    )
    .await;
    let victim_keys = Arc::new(ResumptionKeys::generate(&RingRandom::default()).expect("resumption key"));
    // One victim instance: its own ticket cache, the shared RID key. Each
    // call is a new connection whose RPC completes the handshake on both
    // sides (so the server has filed the client's deposit).
    let call = |config: AltsConfig, what: &'static str| async move {
        let mut ch = connect(server.addr, &config).await;
        unary(&mut ch, what).await.expect(what);
    };
    call(
        fx.config(&c)
            .resumption_config(ResumptionConfig::new(victim_keys.clone())),
        "victim",
    )
    .await;

    // Mallory: the victim's RID, her own secret, a fresh ticket cache each
    // time so every connection lists the RID. Had she been given the
    // victim's ticket she could not open it and the call would fail.
    let rid = *victim_keys.current().rid();
    for _ in 0..3 {
        let mallory = fx
            .config(&m)
            .resumption(ResumptionKeys::new(ResumptionKey::new(rid, &[0x66; 32]), vec![]));
        call(mallory, "mallory").await;
    }

    // Another victim instance resumes from the victim's own ticket (had it
    // been given one of Mallory's, it could not open it).
    call(
        fx.config(&c)
            .resumption_config(ResumptionConfig::new(victim_keys.clone())),
        "victim instance",
    )
    .await;

    let seen = seen.lock().expect("lock");
    let modes = |who: &str| {
        seen.iter()
            .filter(|p| p.identity == who)
            .map(|p| p.resumption.clone())
            .collect::<Vec<_>>()
    };
    let victim = modes("frontend-prod");
    assert_eq!(
        victim,
        vec![Resumption::NotAttempted, Resumption::ServerTicket],
        "{victim:?}"
    );
    let mallory = modes("mallory-prod");
    assert_eq!(mallory.len(), 3);
    assert_eq!(mallory[0], Resumption::NotAttempted, "{mallory:?}");
}

/// Loading credentials without a policy fails closed unless the caller opts out.
#[test]
fn missing_policy_fails_closed() {
    let mut fx = Fixture::new();
    let s = fx.issue("backend-prod");
    let files = tonic_alts::CredentialFiles::new(&s.dir, fx.pki.root_path());
    let err = tonic_alts::AltsConfig::from_files(files.clone()).expect_err("no policy must not load");
    assert_eq!(err.kind(), tonic_alts::AltsErrorKind::Config);
    assert!(
        matches!(
            err,
            tonic_alts::AltsError::InvalidConfig(tonic_alts::ConfigError::NoIssuancePolicy)
        ),
        "{err}"
    );
    tonic_alts::AltsConfig::from_files(files.accept_any_issuer()).expect("explicit opt-out loads");
}

/// The file watcher puts a rotated certificate in effect for new
/// connections within a second, and ignores a half-written one.
#[tokio::test(flavor = "multi_thread")]
async fn watcher_applies_changes_within_a_second() {
    let mut fx = Fixture::new();
    let s = fx.issue("echo-prod");
    let c = fx.issue("frontend-prod");
    let server_config = fx.config(&s);
    let _watch = server_config.reloader().expect("reloader").watch();
    let server = serve_plain(server_config.clone()).await;
    let client_config = fx.config(&c);
    handshake_with(server.addr, &client_config, "echo-prod")
        .await
        .expect("before");

    // Half-written: a truncated certificate. Never served; the old one stays.
    let renamed = fx.issue("echo2-prod");
    let cert = std::fs::read(renamed.dir.join("handshake.cert")).expect("read");
    std::fs::write(s.dir.join("handshake.cert"), &cert[..cert.len() / 2]).expect("write");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    handshake_with(server.addr, &client_config, "echo-prod")
        .await
        .expect("old credentials kept");

    // The complete new set: in effect within a second.
    install(&renamed, &s);
    let start = Instant::now();
    loop {
        if handshake_with(server.addr, &client_config, "echo2-prod")
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "not in effect within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `AltsConfig::from_env` loads the directory `ALTS_CREDENTIALS_DIR` names
/// (checked in a child process: the environment is process-wide).
#[test]
fn from_env_reads_the_credentials_dir() {
    let mut fx = Fixture::new();
    let s = fx.issue("echo-prod");
    std::fs::write(
        s.dir.join(tonic_alts::file_names::ISSUANCE_POLICY),
        "[[rule]]\nissuer = \"scheduler\"\ncategories = [\"workload\"]\nidentities = [\"*\"]\n",
    )
    .expect("policy");
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "from_env_child", "--nocapture", "--test-threads=1"])
        .env(tonic_alts::CREDENTIALS_DIR_ENV, &s.dir)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("from_env identity=echo-prod"), "{stdout}");
    // A directory without an issuance policy fails closed.
    std::fs::remove_file(s.dir.join(tonic_alts::file_names::ISSUANCE_POLICY)).expect("rm");
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "from_env_child", "--nocapture", "--test-threads=1"])
        .env(tonic_alts::CREDENTIALS_DIR_ENV, &s.dir)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("from_env error: configuration: no issuance policy"),
        "{stdout}"
    );
}

/// Child of [`from_env_reads_the_credentials_dir`]; does nothing unless
/// `ALTS_CREDENTIALS_DIR` is set.
#[test]
fn from_env_child() {
    if std::env::var_os(tonic_alts::CREDENTIALS_DIR_ENV).is_none() {
        return;
    }
    match AltsConfig::from_env() {
        Ok(c) => println!("from_env identity={}", c.local_identity()),
        Err(e) => println!("from_env error: {e}"),
    }
}
