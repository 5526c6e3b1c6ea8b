//! Handshake metrics through the `metrics` facade. In its own test binary:
//! the recorder is process-wide.

mod common;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use tonic_alts::AltsConnector;

fn find<'a>(
    snapshot: &'a [(CompositeKey, DebugValue)],
    kind: MetricKind,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    snapshot.iter().find_map(|(key, value)| {
        let k = key.key();
        let matches = key.kind() == kind
            && k.name() == name
            && labels
                .iter()
                .all(|(l, v)| k.labels().any(|x| x.key() == *l && x.value() == *v));
        matches.then_some(value)
    })
}

/// The sum of a counter over all snapshots in `snap`.
fn counter(snap: &[(CompositeKey, DebugValue)], name: &str, labels: &[(&str, &str)]) -> u64 {
    (0..snap.len())
        .filter_map(|i| match find(&snap[i..=i], MetricKind::Counter, name, labels) {
            Some(DebugValue::Counter(n)) => Some(*n),
            _ => None,
        })
        .sum()
}

/// A gauge's value: the recorder swaps gauges to zero on each snapshot, so
/// the value is the sum over all snapshots in `snap` (increments and
/// decrements), or the largest value set (`max`).
fn gauge(snap: &[(CompositeKey, DebugValue)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = (0..snap.len())
        .filter_map(|i| match find(&snap[i..=i], MetricKind::Gauge, name, labels) {
            Some(DebugValue::Gauge(g)) => Some(g.into_inner()),
            _ => None,
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn gauge_max(snap: &[(CompositeKey, DebugValue)], name: &str) -> Option<f64> {
    (0..snap.len())
        .filter_map(|i| match find(&snap[i..=i], MetricKind::Gauge, name, &[]) {
            Some(DebugValue::Gauge(g)) => Some(g.into_inner()),
            _ => None,
        })
        .reduce(f64::max)
}

fn snapshot(s: &Snapshotter) -> Vec<(CompositeKey, DebugValue)> {
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| (k, v))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn handshakes_are_counted_by_side_outcome_and_reason() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("install recorder");

    let mut fx = Fixture::new();
    let (s, c) = (fx.issue("echo-prod"), fx.issue("frontend-prod"));
    let server = serve_plain(fx.config(&s)).await;
    for _ in 0..3 {
        connect(server.addr, &fx.config(&c)).await;
    }
    let wrong = AltsConnector::new(fx.config(&c)).target_identity("payments-prod");
    try_connect(server.addr, wrong).await.expect_err("wrong target");

    // The server learns of the client's refusal from its alert, a moment later.
    let server_refused = [("side", "server"), ("reason", "refused_by_peer")];
    let start = std::time::Instant::now();
    // Counters are drained by each snapshot: keep them all.
    let mut snap = Vec::new();
    loop {
        snap.extend(snapshot(&snapshotter));
        if counter(&snap, "alts_handshake_refusals_total", &server_refused) == 1 || start.elapsed() > WAIT {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ok = [("outcome", "ok"), ("resumed", "false")];
    for side in ["client", "server"] {
        assert_eq!(
            counter(&snap, "alts_handshakes_total", &[("side", side), ok[0], ok[1]]),
            3,
            "{side}"
        );
        assert_eq!(
            counter(
                &snap,
                "alts_handshakes_total",
                &[("side", side), ("outcome", "refused")]
            ),
            1,
            "{side}"
        );
    }
    assert_eq!(
        counter(&snap, "alts_handshake_refusals_total", &server_refused),
        1
    );
    assert_eq!(
        counter(
            &snap,
            "alts_handshake_refusals_total",
            &[("side", "client"), ("reason", "peer_not_authorized")]
        ),
        1
    );
    assert_eq!(
        gauge(&snap, "alts_handshakes_in_flight", &[("side", "client")]),
        Some(0.0)
    );
    assert_eq!(
        gauge(&snap, "alts_handshakes_in_flight", &[("side", "server")]),
        Some(0.0)
    );
    let expiry = gauge_max(&snap, "alts_local_cert_expiry_seconds").expect("expiry gauge");
    assert!(expiry > 3000.0 && expiry <= 3600.0, "{expiry}");
    assert!(
        snap.iter()
            .any(|(k, _)| k.kind() == MetricKind::Histogram
                && k.key().name() == "alts_handshake_duration_seconds"),
        "no duration histogram"
    );
}
