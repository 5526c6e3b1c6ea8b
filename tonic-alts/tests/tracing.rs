//! Handshake tracing. In its own test binary: tracing's per-callsite interest
//! cache is process-wide, so a thread-scoped subscriber can miss events when
//! other tests hit the same callsites concurrently.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use alts_core::handshake::ClientOptions;
use tonic_alts::{client_handshake, server_handshake};

mod common;
use common::configs;

/// A `MakeWriter` collecting everything logged.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

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

/// Each handshake logs one span with the side, peer identity, outcome and
/// duration; a refused one logs the reason.
#[tokio::test(flavor = "current_thread")]
async fn handshakes_are_traced_with_peer_outcome_and_duration() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (c, s) = configs();
    let (a, b) = tokio::io::duplex(1 << 16);
    let (client, server) = tokio::join!(
        client_handshake(a, c.clone(), ClientOptions::default(), Duration::from_secs(10)),
        server_handshake(b, s.clone(), Duration::from_secs(10)),
    );
    client.unwrap();
    server.unwrap();
    let (a, b) = tokio::io::duplex(1 << 16);
    let wrong = ClientOptions {
        target_identities: vec!["payments-prod".into()],
        session_key: None,
    };
    let (client, _) = tokio::join!(
        client_handshake(a, c, wrong, Duration::from_secs(10)),
        server_handshake(b, s, Duration::from_secs(10)),
    );
    assert!(client.is_err());
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains(r#"alts_handshake{side="client" peer="backend-prod" resumed=false}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"alts_handshake{side="server" peer="frontend-prod" resumed=false}"#),
        "{text}"
    );
    assert!(
        text.contains("handshake complete") && text.contains("elapsed_us="),
        "{text}"
    );
    assert!(
        text.contains("handshake failed") && text.contains("payments-prod"),
        "{text}"
    );
}
