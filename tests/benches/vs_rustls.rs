//! ALTS handshakes versus rustls mutual-TLS handshakes, side by side in one
//! criterion run. Both are driven client + server in one thread over
//! in-memory buffers (no sockets, no tonic): each figure is *both* sides' work.
//!
//! `cargo bench -p alts-tests --bench vs_rustls -- --warm-up-time 1 --measurement-time 4`
//!
//! rustls uses its `ring` provider (no aws-lc-rs), TLS 1.3 only, a CA that
//! directly issues the server and client leaf certificates (made with rcgen),
//! and `WebPkiClientVerifier` requiring a client certificate. At the end of the
//! run the ratios (ALTS handshakes/s ÷ rustls handshakes/s, from criterion's
//! medians) are printed.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use alts_core::testing::BenchPair;
use criterion::{Criterion, Throughput, criterion_group};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SignatureAlgorithm,
};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, ServerConfig, ServerConnection};

// ---------------------------------------------------------------- ALTS side

// -------------------------------------------------------------- rustls side

const SERVER_NAME: &str = "backend.test";

/// A CA plus one server and one client leaf, all with `alg` keys.
struct Pki {
    ca: CertificateDer<'static>,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

fn make_pki(alg: &'static SignatureAlgorithm) -> Pki {
    let ca_key = KeyPair::generate_for(alg).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |san: &str, eku: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(vec![san.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, san);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    };
    Pki {
        server: leaf(SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf("frontend.test", ExtendedKeyUsagePurpose::ClientAuth),
        ca: ca.der().clone(),
    }
}

/// TLS 1.3 mutual-auth configs. `resume = false`: no session cache, no
/// tickets, client resumption disabled. `resume = true`: rustls defaults
/// (stateful server cache, in-memory client store) with one TLS 1.3 ticket
/// per handshake, like ALTS's one fresh ticket per handshake.
fn rustls_configs(pki: &Pki, resume: bool) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let roots = Arc::new(roots);

    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    let mut sc = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(vec![pki.server.0.clone()], pki.server.1.clone_key())
        .unwrap();
    let mut cc = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![pki.client.0.clone()], pki.client.1.clone_key())
        .unwrap();
    if resume {
        sc.send_tls13_tickets = 1;
    } else {
        sc.session_storage = Arc::new(NoServerSessionStorage {});
        sc.send_tls13_tickets = 0;
        cc.resumption = Resumption::disabled();
    }
    (Arc::new(cc), Arc::new(sc))
}

/// Moves everything `from` wants to write into `to`. Returns whether any byte moved.
fn shuttle(from: &mut rustls::Connection, to: &mut rustls::Connection, buf: &mut Vec<u8>) -> bool {
    let mut moved = false;
    while from.wants_write() {
        buf.clear();
        from.write_tls(buf).unwrap();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            moved |= to.read_tls(&mut rd).unwrap() > 0;
            to.process_new_packets().unwrap();
        }
    }
    moved
}

/// One rustls mutual-TLS handshake, including delivery of the server's
/// session ticket (if any) to the client. Returns the handshake kind.
fn rustls_one(cc: &Arc<ClientConfig>, sc: &Arc<ServerConfig>, buf: &mut Vec<u8>) -> HandshakeKind {
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    let mut client: rustls::Connection = ClientConnection::new(cc.clone(), name).unwrap().into();
    let mut server: rustls::Connection = ServerConnection::new(sc.clone()).unwrap().into();
    loop {
        let a = shuttle(&mut client, &mut server, buf);
        let b = shuttle(&mut server, &mut client, buf);
        if !client.is_handshaking()
            && !server.is_handshaking()
            && !client.wants_write()
            && !server.wants_write()
        {
            break;
        }
        assert!(a || b, "rustls handshake stalled");
    }
    assert!(
        server.peer_certificates().is_some(),
        "client was not authenticated"
    );
    client.handshake_kind().unwrap()
}

// ------------------------------------------------------------------ benches

fn bench(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("alts");
    g.throughput(Throughput::Elements(1));

    let pair = BenchPair::new(false);
    g.bench_function("full_warm", |b| b.iter(|| assert!(!pair.handshake())));

    let pair = BenchPair::new(false);
    g.bench_function("full_cold", |b| {
        b.iter(|| {
            pair.clear_caches();
            assert!(!pair.handshake())
        })
    });

    let pair = BenchPair::new(true);
    pair.handshake();
    g.bench_function("resumed", |b| b.iter(|| assert!(pair.handshake())));
    g.finish();

    let mut g = cr.benchmark_group("rustls_mtls");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(16 * 1024);
    for (suffix, alg) in [
        ("", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("_ed25519", &rcgen::PKCS_ED25519),
    ] {
        let pki = make_pki(alg);

        let (cc, sc) = rustls_configs(&pki, false);
        assert_eq!(rustls_one(&cc, &sc, &mut buf), HandshakeKind::Full);
        g.bench_function(format!("full{suffix}"), |b| {
            b.iter(|| assert_eq!(rustls_one(&cc, &sc, &mut buf), HandshakeKind::Full))
        });

        let (cc, sc) = rustls_configs(&pki, true);
        assert_eq!(rustls_one(&cc, &sc, &mut buf), HandshakeKind::Full);
        assert_eq!(rustls_one(&cc, &sc, &mut buf), HandshakeKind::Resumed);
        g.bench_function(format!("resumed{suffix}"), |b| {
            // Every resumed handshake leaves a fresh ticket for the next one.
            b.iter(|| assert_eq!(rustls_one(&cc, &sc, &mut buf), HandshakeKind::Resumed))
        });
    }
    g.finish();
}

// ------------------------------------------------------------------- ratios

/// criterion's output directory: `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else `<target>/criterion` next to this
/// executable (`<target>/release/deps/vs_rustls-…`).
fn criterion_dir() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(h));
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(t).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// Median ns per handshake of `group/name` if this run measured it.
fn median_ns(dir: &Path, group: &str, name: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(group).join(name).join("new").join("estimates.json");
    let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= since;
    if !fresh {
        return None;
    }
    let mut text = String::new();
    std::fs::File::open(&path).ok()?.read_to_string(&mut text).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn print_ratios(since: SystemTime) {
    let Some(dir) = criterion_dir() else { return };
    let get = |g: &str, n: &str| median_ns(&dir, g, n, since);
    let rows = [
        ("alts", "full_warm"),
        ("alts", "full_cold"),
        ("alts", "resumed"),
        ("rustls_mtls", "full"),
        ("rustls_mtls", "resumed"),
        ("rustls_mtls", "full_ed25519"),
        ("rustls_mtls", "resumed_ed25519"),
    ];
    let mut any = false;
    for (g, n) in rows {
        if let Some(ns) = get(g, n) {
            if !any {
                println!("\nmedians (µs per handshake, handshakes/s):");
                any = true;
            }
            println!("  {g}/{n:<16} {:>9.1} µs {:>10.0}/s", ns / 1e3, 1e9 / ns);
        }
    }
    let pairs = [
        ("full_warm", "full"),
        ("full_cold", "full"),
        ("resumed", "resumed"),
        ("full_warm", "full_ed25519"),
        ("full_cold", "full_ed25519"),
        ("resumed", "resumed_ed25519"),
    ];
    let mut header = false;
    for (a, r) in pairs {
        if let (Some(ta), Some(tr)) = (get("alts", a), get("rustls_mtls", r)) {
            if !header {
                println!("\nratios (ALTS handshakes/s ÷ rustls mTLS handshakes/s):");
                header = true;
            }
            println!("  alts/{a:<10} vs rustls_mtls/{r:<16} {:>6.2}x", tr / ta);
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    let since = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios(since);
}
