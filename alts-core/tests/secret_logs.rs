//! No secret reaches the logs. Captures everything logged at `trace` level
//! during full handshakes, a refused and an accepted resumption of each kind
//! and records both ways, plus the `Debug` form of every value that holds a
//! secret (outcomes, configurations, credentials, tickets, ticket contents,
//! record layers, a handshaker-service result), then searches the capture for
//! every secret the test knows: static private keys, record key material,
//! resumption secrets, resumption keys and ticket plaintext, raw, as hex
//! (both cases) and as a `Debug` list of numbers.
//!
//! In its own test binary: tracing's per-callsite interest cache is
//! process-wide, so a thread-scoped subscriber could miss events that other
//! tests hit concurrently.

use std::io;
use std::sync::{Arc, Mutex};

use alts_core::cert::Category;
use alts_core::crypto::sha256;
use alts_core::handshake::{
    ClientHandshake, ClientOptions, HandshakeConfig, HandshakeOutcome, Resumption, ResumptionConfig,
    ServerHandshake,
};
use alts_core::policy::IssuancePolicy;
use alts_core::resumption::{ResumptionKey, ResumptionKeys, TicketKind};
use alts_core::testing::{Delivery, NOW, TestPki, deterministic_provider, drive};
use alts_proto::Message;
use bytes::BytesMut;

/// A `MakeWriter` collecting everything logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Every secret seen so far, with a name for the failure message.
#[derive(Default)]
struct Secrets(Vec<(String, Vec<u8>)>);

impl Secrets {
    fn add(&mut self, name: impl Into<String>, bytes: &[u8]) {
        assert!(bytes.len() >= 16, "too short to search for without false hits");
        self.0.push((name.into(), bytes.to_vec()));
    }
}

fn key(rid: u8, label: &[u8]) -> (ResumptionKey, [u8; 32]) {
    let secret = sha256(label);
    (ResumptionKey::new([rid; 16], &secret), secret)
}

fn log_outcome(o: &HandshakeOutcome) {
    tracing::trace!(outcome = ?o, peer = ?o.peer, "handshake done");
    tracing::trace!("{o:#?} {:?} {:?}", o.record_config(), o.resumption);
}

/// Records both ways, with the record layers' `Debug` logged.
fn exchange(c: &HandshakeOutcome, s: &HandshakeOutcome) {
    assert_eq!(&c.key_data[..], &s.key_data[..]);
    let (mut cs, mut co) = c.record_layer(c.record_config()).unwrap();
    let (mut ss, mut so) = s.record_layer(s.record_config()).unwrap();
    for (msg, sealer, opener) in [(&b"ping"[..], &mut cs, &mut so), (&b"pong"[..], &mut ss, &mut co)] {
        let mut wire = BytesMut::new();
        sealer.seal(msg, &mut wire).unwrap();
        tracing::trace!(?sealer, bytes = wire.len(), "sealed");
        let got = opener.open(&mut wire).unwrap().unwrap();
        tracing::trace!(?opener, "opened");
        assert_eq!(&got[..], msg);
    }
}

fn handshake(c: &HandshakeConfig, s: &HandshakeConfig) -> (HandshakeOutcome, HandshakeOutcome) {
    let mut client = ClientHandshake::new(Arc::new(c.clone()), ClientOptions::default(), NOW).unwrap();
    let mut server = ServerHandshake::new(Arc::new(s.clone()), NOW);
    let (co, so) = drive(&mut client, &mut server, Delivery::Whole).unwrap();
    tracing::trace!(?client, ?server, "handshakes");
    log_outcome(&co);
    log_outcome(&so);
    exchange(&co, &so);
    (co, so)
}

#[test]
fn no_secret_reaches_the_logs() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut secrets = Secrets::default();

    let pki = TestPki::new(b"secret logs");
    let client = pki.issue("frontend-prod", Category::Workload, "scheduler");
    let server = pki.issue("backend-prod", Category::Workload, "scheduler");
    for (who, issued) in [("client", &client), ("server", &server)] {
        secrets.add(
            format!("{who} static private key"),
            &issued.credentials.key_pair().secret_bytes()[..],
        );
    }
    let (client_key, client_key_secret) = key(1, b"client resumption key");
    let (server_key, server_key_secret) = key(2, b"server resumption key");
    secrets.add("client resumption key", &client_key_secret);
    secrets.add("server resumption key", &server_key_secret);
    let server_keys = Arc::new(ResumptionKeys::new(server_key, vec![]));
    let client_keys = Arc::new(ResumptionKeys::new(client_key, vec![]));
    let verifier = pki.verifier(IssuancePolicy::allow_all_for_tests());
    let config = |issued: &alts_core::testing::Issued, keys: &Arc<ResumptionKeys>, seed: &[u8]| {
        let mut c = HandshakeConfig::new(
            issued.credentials.clone(),
            verifier.clone(),
            deterministic_provider(seed),
        );
        c.resumption = Some(ResumptionConfig::new(keys.clone()));
        c.pfs = true;
        c
    };
    let c = config(&client, &client_keys, b"c");
    let s = config(&server, &server_keys, b"s");
    tracing::trace!(client_config = ?c, server_config = ?s, "configs");
    tracing::trace!(?client.credentials, ?server_keys, ?client_keys, "credentials and keys");

    // A full handshake: each side stores a ticket for the other.
    let (co, _so) = handshake(&c, &s);
    assert_eq!(co.resumption, Resumption::NotAttempted);
    secrets.add("full handshake record key material", &co.key_data);

    let cache = c.resumption.as_ref().unwrap().client_cache.clone();
    let ticket = cache.take("", NOW).unwrap();
    tracing::trace!(?ticket, "client-side ticket");
    secrets.add("client-side ticket resumption secret", ticket.secret.as_bytes());
    let contents = server_keys
        .find(&ticket.rid)
        .unwrap()
        .open_as(TicketKind::ClientTicket, &ticket.ticket)
        .unwrap();
    tracing::trace!(?contents, "client-side ticket contents");
    secrets.add("client-side ticket plaintext", &contents.encode_to_vec());
    secrets.add("client-side ticket plaintext secret", &contents.resumption_secret);
    cache.put("", ticket.clone());

    let store = s.resumption.as_ref().unwrap().server_store.clone();
    let rid = client_keys.current().rid().to_vec();
    // Leased and dropped uncommitted: the ticket goes back to the store.
    let lease = store
        .lease("frontend-prod", std::slice::from_ref(&rid), NOW)
        .unwrap();
    let stored = lease.ticket();
    tracing::trace!(?stored, "server-side ticket");
    secrets.add("server-side ticket resumption secret", stored.secret.as_bytes());
    let contents = client_keys
        .find(&rid)
        .unwrap()
        .open_as(TicketKind::ServerTicket, &stored.ticket)
        .unwrap();
    tracing::trace!(?contents, "server-side ticket contents");
    secrets.add("server-side ticket plaintext", &contents.encode_to_vec());
    drop(lease);

    // Client-side resumption.
    let (co, so) = handshake(&c, &s);
    assert_eq!(
        (co.resumption.clone(), so.resumption.clone()),
        (Resumption::ClientTicket, Resumption::ClientTicket)
    );
    secrets.add("resumed (client ticket) record key material", &co.key_data);

    // The same ticket again: refused (replay), logged, full handshake.
    cache.clear();
    cache.put("", ticket);
    let (co, so) = handshake(&c, &s);
    assert!(
        matches!(so.resumption, Resumption::Refused(_)),
        "{:?}",
        so.resumption
    );
    secrets.add("fallback record key material", &co.key_data);

    // Server-side resumption, by another client instance of the same identity.
    let mut c2 = config(&client, &client_keys, b"c2");
    c2.resumption.as_mut().unwrap().client_cache = Default::default();
    let (co, so) = handshake(&c2, &s);
    assert_eq!(
        (co.resumption.clone(), so.resumption.clone()),
        (Resumption::ServerTicket, Resumption::ServerTicket)
    );
    secrets.add("resumed (server ticket) record key material", &co.key_data);

    // A handshaker-service result carrying key material.
    let result = alts_proto::grpc_gcp::HandshakerResult {
        key_data: co.key_data.to_vec(),
        record_protocol: co.record_protocol.name().into(),
        ..Default::default()
    };
    tracing::trace!(?result, "handshaker service result");

    drop(_guard);
    let captured = logs.0.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&captured);
    assert!(text.contains("resumption refused"), "the capture works: {text}");
    assert!(
        text.contains("TicketContents") && text.contains("bytes redacted"),
        "{text}"
    );
    assert!(text.contains("HandshakerResult"), "{text}");

    for (name, secret) in &secrets.0 {
        let probes = [secret.clone(), secret[..16].to_vec()];
        for probe in &probes {
            let hex = hex::encode(probe);
            let numbers = probe.iter().map(u8::to_string).collect::<Vec<_>>().join(", ");
            assert!(
                !captured.windows(probe.len()).any(|w| w == &probe[..]),
                "{name} found raw in the logs"
            );
            assert!(!text.contains(&hex), "{name} found as hex in the logs");
            assert!(
                !text.contains(&hex.to_uppercase()),
                "{name} found as upper-case hex in the logs"
            );
            assert!(
                !text.contains(&numbers),
                "{name} found as a Debug list in the logs"
            );
        }
    }
    assert!(secrets.0.len() >= 12, "{}", secrets.0.len());
}
