//! Who may call the handshaker service, over real sockets: a Unix socket in
//! a temp dir (callers checked by SO_PEERCRED uid/gid) and loopback TCP.
//! The test process is the caller; the allow-list is set to exclude or
//! include its own uid/gid. A refused caller's DoHandshake fails with
//! PERMISSION_DENIED before any response, so it never gets key bytes.

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use alts_interop::callers::{CallerPolicy, current_gid, current_uid};
use alts_interop::handshaker_service::{AltsHandshakerService, HandshakerConfig};
use alts_interop::null_engine::InsecureTestEngineFactory;
use support::*;
use tonic::Code;

const NOBODY: u32 = 65534;
const HANDSHAKER: &str = env!("CARGO_BIN_EXE_alts-handshaker");

/// The null-engine service with `callers`, on a Unix socket at `path`.
fn serve_unix(path: &Path, callers: CallerPolicy) -> AltsHandshakerService {
    let factory = Arc::new(InsecureTestEngineFactory::new("client@t", "server@t"));
    let service = AltsHandshakerService::new(
        factory,
        HandshakerConfig {
            callers,
            ..HandshakerConfig::default()
        },
    );
    let bound = alts_interop::listen::bind_unix(path).unwrap();
    let s = service.clone();
    tokio::spawn(async move {
        let _guard = bound.guard;
        alts_interop::serve_handshaker_unix(bound.listener, s, std::future::pending()).await
    });
    service
}

/// A complete client + server handshake through the service at `path`;
/// returns the key both sides got.
async fn full_handshake(path: &Path) -> Vec<u8> {
    let mut c = HsStream::open(unix_channel(path).await).await;
    let r = c.call(client_start(&["server@t"], "server.test:1")).await;
    assert_eq!(status_code(&r), 0);
    let mut s = HsStream::open(unix_channel(path).await).await;
    let r2 = s.call(server_start(&r.out_frames)).await;
    let skey = r2.result.expect("server result").key_data;
    let r3 = c.call(next(&r2.out_frames)).await;
    let ckey = r3.result.expect("client result").key_data;
    assert_eq!(ckey, skey);
    assert_eq!(ckey.len(), 44);
    ckey
}

/// A caller not on the list is refused before any response.
async fn assert_refused(path: &Path) {
    let Err(err) = HsStream::try_open(unix_channel(path).await).await else {
        panic!("refused caller must not get a DoHandshake stream");
    };
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not on the allow-list"), "{err:?}");
    // The refusal is per call: a second attempt is refused the same way.
    let Err(err) = HsStream::try_open(unix_channel(path).await).await else {
        panic!("refused again");
    };
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn unix_caller_uid_not_on_allow_list_is_refused_and_allowed_uid_served() {
    assert_ne!(
        current_uid(),
        NOBODY,
        "run the tests as a uid other than {NOBODY}"
    );
    let dir = tempfile::tempdir().unwrap();
    let denied = dir.path().join("denied.sock");
    serve_unix(&denied, CallerPolicy::allow([NOBODY], []));
    assert_refused(&denied).await;

    let allowed = dir.path().join("allowed.sock");
    serve_unix(&allowed, CallerPolicy::allow([NOBODY, current_uid()], []));
    full_handshake(&allowed).await;
}

#[tokio::test]
async fn unix_caller_gid_allow_list() {
    assert_ne!(
        current_gid(),
        NOBODY,
        "run the tests as a gid other than {NOBODY}"
    );
    let dir = tempfile::tempdir().unwrap();
    let denied = dir.path().join("denied.sock");
    // Our gid is not listed, and our uid is not either.
    serve_unix(&denied, CallerPolicy::allow([], [NOBODY]));
    assert_refused(&denied).await;

    let allowed = dir.path().join("allowed.sock");
    serve_unix(&allowed, CallerPolicy::allow([], [current_gid()]));
    full_handshake(&allowed).await;
}

#[tokio::test]
async fn default_policy_serves_own_uid_over_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hs.sock");
    serve_unix(&path, HandshakerConfig::default().callers);
    full_handshake(&path).await;
}

#[tokio::test]
async fn refused_caller_mid_protocol_gets_no_key_bytes() {
    // Even a caller that sends a complete client_start and server messages
    // on the refused stream gets nothing but the PERMISSION_DENIED status.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hs.sock");
    serve_unix(&path, CallerPolicy::allow([NOBODY], [NOBODY]));
    let channel = unix_channel(&path).await;
    let mut client = alts_proto::grpc_gcp::handshaker_service_client::HandshakerServiceClient::new(channel);
    let reqs = tokio_stream::iter(vec![
        alts_proto::grpc_gcp::HandshakerReq {
            req_oneof: Some(client_start(&["server@t"], "server.test:1")),
        },
        alts_proto::grpc_gcp::HandshakerReq {
            req_oneof: Some(next(&[0u8; 64])),
        },
    ]);
    let Err(err) = tokio::time::timeout(WAIT, client.do_handshake(reqs))
        .await
        .unwrap()
    else {
        panic!("refused caller must not get a response stream");
    };
    assert_eq!(err.code(), Code::PermissionDenied);
}

// ------------------------------------------------------- the real binary

fn creds_args(pki: &Pki, creds: &Path) -> Vec<String> {
    vec![
        "--creds".into(),
        creds.display().to_string(),
        "--root".into(),
        pki.root().display().to_string(),
        "--policy".into(),
        pki.policy().display().to_string(),
        "--timeout-secs".into(),
        "10".into(),
    ]
}

fn args<'a>(base: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect()
}

#[tokio::test]
async fn binary_unix_socket_allow_list_and_socket_file() {
    let pki = Pki::new();
    let creds = pki.issue("ledger", "ledger-prod", "scheduler");
    let base = creds_args(&pki, &creds);
    // A missing parent directory is created.
    let sock = pki.dir.path().join("run/alts/hs.sock");
    let listen = format!("unix:{}", sock.display());

    // Only uid 65534 allowed: we (another uid) are refused.
    let nobody = NOBODY.to_string();
    let p = start(
        HANDSHAKER,
        &args(&base, &["--listen", &listen, "--allow-uid", &nobody]),
        "listening on",
    );
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket file mode");
    assert_refused(&sock).await;
    assert!(
        p.stderr_contains("DoHandshake caller refused"),
        "the refusal is logged"
    );
    drop(p);

    // Default allow-list: our own uid. A real client handshake starts and a
    // server handshake with a peer completes (keys handed out).
    let p = start(HANDSHAKER, &args(&base, &["--listen", &listen]), "listening on");
    assert!(
        p.ready_line.contains(&format!("unix:{}", sock.display())),
        "{}",
        p.ready_line
    );
    let client = pki.issue("client", "billing-prod", "scheduler");
    let mut peer = client_engine(&pki.factory(&client, true), &["ledger-prod"]);
    let mut s = HsStream::open(unix_channel(&sock).await).await;
    let ended = drive(&mut s, None, peer.as_mut()).await;
    assert_eq!(ended.last_code(), Code::Ok, "{:?}", ended.last().status);
    let key = ended.service_key().expect("the allowed caller gets its result");
    assert_eq!(key.len(), 44);
    assert_eq!(Some(key), ended.peer_key, "both sides derived the same key");
    drop(p);

    // --allow-gid with our gid: allowed.
    let gid = current_gid().to_string();
    let p = start(
        HANDSHAKER,
        &args(&base, &["--listen", &listen, "--allow-gid", &gid]),
        "listening on",
    );
    let mut c = HsStream::open(unix_channel(&sock).await).await;
    let r = c.call(client_start(&["ledger-prod"], "ledger:1")).await;
    assert_eq!(status_code(&r), 0);
    assert!(!r.out_frames.is_empty());
    drop(p);
}

#[test]
fn binary_refuses_unsafe_socket_paths() {
    let pki = Pki::new();
    let creds = pki.issue("ledger", "ledger-prod", "scheduler");
    let base = creds_args(&pki, &creds);
    // A regular file where the socket should go is never replaced.
    let file = pki.dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let listen = format!("unix:{}", file.display());
    let (status, out) = run_to_exit(HANDSHAKER, &args(&base, &["--listen", &listen]));
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("exists and is not a socket"), "{out}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    // A live socket (someone accepts on it) is not taken over.
    let live = pki.dir.path().join("live.sock");
    let _other = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let listen = format!("unix:{}", live.display());
    let (status, out) = run_to_exit(HANDSHAKER, &args(&base, &["--listen", &listen]));
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("is in use"), "{out}");

    // A stale socket file (nobody accepts) is replaced.
    let stale = pki.dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let listen = format!("unix:{}", stale.display());
    let p = start(HANDSHAKER, &args(&base, &["--listen", &listen]), "listening on");
    drop(p);
}

#[test]
fn binary_refuses_non_loopback_tcp_and_allow_list_on_tcp() {
    let pki = Pki::new();
    let creds = pki.issue("ledger", "ledger-prod", "scheduler");
    let base = creds_args(&pki, &creds);
    // Refused before binding anything.
    for addr in ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080"] {
        let (status, out) = run_to_exit(HANDSHAKER, &args(&base, &["--listen", addr]));
        assert_eq!(status.code(), Some(2), "{addr}: {out}");
        assert!(out.contains("not a loopback address"), "{addr}: {out}");
        assert!(out.contains("--insecure-listen-any"), "{addr}: {out}");
    }
    let (status, out) = run_to_exit(
        HANDSHAKER,
        &args(&base, &["--listen", "127.0.0.1:0", "--allow-uid", "0"]),
    );
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("--allow-uid/--allow-gid need --listen unix:PATH"),
        "{out}"
    );
}

#[tokio::test]
async fn binary_loopback_tcp_still_works_with_a_warning() {
    let pki = Pki::new();
    let creds = pki.issue("ledger", "ledger-prod", "scheduler");
    let base = creds_args(&pki, &creds);
    let p = start(
        HANDSHAKER,
        &args(&base, &["--listen", "127.0.0.1:0"]),
        "listening on",
    );
    let addr = p.ready_line.rsplit(' ').next().unwrap().to_owned();
    assert!(
        p.stderr_contains("EVERY local process can run handshakes"),
        "the TCP trust model is announced"
    );
    let mut c = HsStream::open(tcp_channel(&addr).await).await;
    let r = c.call(client_start(&["ledger-prod"], "ledger:1")).await;
    assert_eq!(status_code(&r), 0);
    assert!(!r.out_frames.is_empty());
}

#[test]
fn binary_insecure_listen_any_is_accepted_and_warned() {
    // The same check as 0.0.0.0 (`listen::check_tcp_bind`, unit-tested with
    // `0.0.0.0`/`::` and the opt-in) is passed with the flag; tests only bind
    // loopback, so the flag is shown starting the program on 127.0.0.1.
    assert!(alts_interop::listen::check_tcp_bind(&["0.0.0.0:8080".parse().unwrap()], true).is_ok());
    let pki = Pki::new();
    let creds = pki.issue("ledger", "ledger-prod", "scheduler");
    let base = creds_args(&pki, &creds);
    let p = start(
        HANDSHAKER,
        &args(&base, &["--listen", "127.0.0.1:0", "--insecure-listen-any"]),
        "listening on",
    );
    assert!(p.stderr_contains("INSECURE: --insecure-listen-any"));
}
