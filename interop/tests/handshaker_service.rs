//! The `grpc.gcp.HandshakerService` protocol rules (one response per
//! request, exact `bytes_consumed`, the result then an OK end of stream,
//! in-band failure status, misuse refused) and its handshake slots
//! (per-kind quotas, no slot for a server still waiting for bytes, bounded
//! waiters, HTTP/2 stream limit), driven in process through a real tonic
//! client over loopback TCP, with the INSECURE null engine standing in for
//! the real handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alts_interop::handshaker_service::{AltsHandshakerService, HandshakerConfig};
use alts_interop::null_engine::InsecureTestEngineFactory;
use alts_proto::grpc_gcp::handshaker_req::ReqOneof;
use alts_proto::grpc_gcp::handshaker_service_client::HandshakerServiceClient;
use alts_proto::grpc_gcp::identity::IdentityOneof;
use alts_proto::grpc_gcp::rpc_protocol_versions::Version;
use alts_proto::grpc_gcp::{
    HandshakerReq, HandshakerResp, Identity, NextHandshakeMessageReq, RpcProtocolVersions,
    ServerHandshakeParameters, StartClientHandshakeReq, StartServerHandshakeReq,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const REKEY: &str = "ALTSRP_GCM_AES128_REKEY";

async fn start(config: HandshakerConfig) -> (SocketAddr, AltsHandshakerService) {
    let factory = Arc::new(InsecureTestEngineFactory::new("client@t", "server@t"));
    let service = AltsHandshakerService::new(factory, config);
    let listener = alts_interop::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(alts_interop::serve_handshaker(
        listener,
        service.clone(),
        std::future::pending(),
    ));
    (addr, service)
}

struct Stream {
    tx: mpsc::Sender<HandshakerReq>,
    rx: Streaming<HandshakerResp>,
}

impl Stream {
    async fn open(addr: SocketAddr) -> Self {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HandshakerServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(8);
        let rx = client
            .do_handshake(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx }
    }
    async fn send(&self, req: ReqOneof) {
        self.tx
            .send(HandshakerReq { req_oneof: Some(req) })
            .await
            .unwrap();
    }
    async fn recv(&mut self) -> HandshakerResp {
        self.rx.message().await.expect("status").expect("a response")
    }
    async fn call(&mut self, req: ReqOneof) -> HandshakerResp {
        self.send(req).await;
        self.recv().await
    }
    /// The stream must now end with status OK.
    async fn expect_ok_end(&mut self) {
        assert!(self.rx.message().await.expect("OK end").is_none());
    }
    async fn expect_status_end(&mut self, code: Code) {
        let err = self.rx.message().await.expect_err("non-OK end");
        assert_eq!(err.code(), code, "{err:?}");
    }
}

fn v21() -> Option<RpcProtocolVersions> {
    Some(RpcProtocolVersions {
        max_rpc_version: Some(Version { major: 2, minor: 1 }),
        min_rpc_version: Some(Version { major: 2, minor: 1 }),
    })
}

fn sa(s: &str) -> Identity {
    Identity {
        identity_oneof: Some(IdentityOneof::ServiceAccount(s.into())),
        attributes: Default::default(),
    }
}

fn client_start(targets: Vec<Identity>) -> ReqOneof {
    ReqOneof::ClientStart(StartClientHandshakeReq {
        handshake_security_protocol: 2,
        application_protocols: vec!["grpc".into()],
        record_protocols: vec![REKEY.into()],
        target_identities: targets,
        target_name: "127.0.0.1:50061".into(),
        rpc_versions: v21(),
        max_frame_size: 1 << 20,
        ..Default::default()
    })
}

fn server_start(in_bytes: &[u8]) -> ReqOneof {
    ReqOneof::ServerStart(StartServerHandshakeReq {
        application_protocols: vec!["grpc".into()],
        handshake_parameters: [(
            2,
            ServerHandshakeParameters {
                record_protocols: vec![REKEY.into()],
                local_identities: vec![],
            },
        )]
        .into_iter()
        .collect(),
        in_bytes: in_bytes.to_vec(),
        rpc_versions: v21(),
        max_frame_size: 1 << 20,
        ..Default::default()
    })
}

fn next(b: &[u8]) -> ReqOneof {
    ReqOneof::Next(NextHandshakeMessageReq { in_bytes: b.to_vec() })
}

fn status_code(r: &HandshakerResp) -> u32 {
    r.status.as_ref().expect("every response carries a status").code
}

#[tokio::test]
async fn split_input_early_data_and_ok_end() {
    let (addr, service) = start(HandshakerConfig::default()).await;
    let mut c = Stream::open(addr).await;
    let mut s = Stream::open(addr).await;

    // Client start: first message out; hostname targets map too.
    let hostname = Identity {
        identity_oneof: Some(IdentityOneof::Hostname("h.example".into())),
        attributes: Default::default(),
    };
    let r = c.call(client_start(vec![hostname, sa("server@t")])).await;
    assert_eq!(status_code(&r), 0);
    assert!(r.result.is_none());
    let m1 = r.out_frames;
    assert!(m1.len() > 10);

    // Server start with EMPTY in_bytes, then the message in two pieces, the
    // second followed by early record data.
    let r = s.call(server_start(&[])).await;
    assert_eq!((status_code(&r), r.bytes_consumed, r.out_frames.len()), (0, 0, 0));
    let r = s.call(next(&m1[..5])).await;
    assert_eq!((status_code(&r), r.bytes_consumed, r.out_frames.len()), (0, 5, 0));
    assert!(r.result.is_none());
    let mut rest = m1[5..].to_vec();
    rest.extend_from_slice(b"EARLY-RECORDS");
    let r = s.call(next(&rest)).await;
    assert_eq!(status_code(&r), 0);
    assert_eq!(
        r.bytes_consumed as usize,
        m1.len() - 5,
        "early data is not consumed"
    );
    let sres = r.result.expect("server result");
    let m2 = r.out_frames;
    assert!(!m2.is_empty(), "final out_frames ride with the result");
    s.expect_ok_end().await;

    // Client gets the server message plus early data in one read.
    let mut input = m2.clone();
    input.extend_from_slice(b"EARLY");
    let r = c.call(next(&input)).await;
    assert_eq!(status_code(&r), 0);
    assert_eq!(r.bytes_consumed as usize, m2.len());
    let cres = r.result.expect("client result");
    c.expect_ok_end().await;

    assert_eq!(cres.key_data.len(), 44);
    assert_eq!(cres.key_data, sres.key_data);
    assert_eq!(cres.record_protocol, REKEY);
    assert_eq!(cres.application_protocol, "grpc");
    assert_eq!(
        cres.peer_identity.as_ref().unwrap().identity_oneof,
        sa("server@t").identity_oneof
    );
    assert_eq!(
        cres.local_identity.as_ref().unwrap().identity_oneof,
        sa("client@t").identity_oneof
    );
    assert_eq!(
        sres.peer_identity.as_ref().unwrap().identity_oneof,
        sa("client@t").identity_oneof
    );
    assert_eq!(
        sres.local_identity.as_ref().unwrap().identity_oneof,
        sa("server@t").identity_oneof
    );
    assert_eq!(
        sres.peer_identity
            .unwrap()
            .attributes
            .get("insecure_test_engine")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(cres.peer_rpc_versions, v21());
    assert_eq!(cres.max_frame_size, 1 << 20);
    assert!(!cres.keep_channel_open);
    assert_eq!(service.free_slots(), HandshakerConfig::default().max_in_flight);
}

#[tokio::test]
async fn whole_first_message_in_server_start() {
    let (addr, _) = start(HandshakerConfig::default()).await;
    let mut c = Stream::open(addr).await;
    let m1 = c.call(client_start(vec![sa("server@t")])).await.out_frames;
    let mut s = Stream::open(addr).await;
    let r = s.call(server_start(&m1)).await;
    assert_eq!(r.bytes_consumed as usize, m1.len());
    assert!(r.result.is_some());
    s.expect_ok_end().await;
}

#[tokio::test]
async fn engine_failure_is_in_band_status_then_ok_end() {
    let (addr, _) = start(HandshakerConfig::default()).await;
    let mut c = Stream::open(addr).await;
    let m1 = c.call(client_start(vec![sa("someone-else")])).await.out_frames;
    let mut s = Stream::open(addr).await;
    let m2 = s.call(server_start(&m1)).await.out_frames;
    let r = c.call(next(&m2)).await;
    let st = r.status.expect("status");
    assert_eq!(st.code, Code::PermissionDenied as u32);
    assert!(
        st.details.contains("not one of the target identities"),
        "{}",
        st.details
    );
    assert!(r.result.is_none());
    c.expect_ok_end().await;
}

#[tokio::test]
async fn next_before_start_is_refused() {
    let (addr, _) = start(HandshakerConfig::default()).await;
    let mut s = Stream::open(addr).await;
    let r = s.call(next(b"hello")).await;
    assert_eq!(status_code(&r), Code::FailedPrecondition as u32);
    s.expect_status_end(Code::FailedPrecondition).await;
}

#[tokio::test]
async fn second_start_is_refused() {
    let (addr, _) = start(HandshakerConfig::default()).await;
    let mut s = Stream::open(addr).await;
    assert_eq!(status_code(&s.call(server_start(&[])).await), 0);
    let r = s.call(client_start(vec![])).await;
    assert_eq!(status_code(&r), Code::FailedPrecondition as u32);
    s.expect_status_end(Code::FailedPrecondition).await;
}

#[tokio::test]
async fn empty_request_and_bad_parameters_are_refused() {
    let (addr, _) = start(HandshakerConfig::default()).await;
    let mut s = Stream::open(addr).await;
    s.tx.send(HandshakerReq { req_oneof: None }).await.unwrap();
    assert_eq!(status_code(&s.recv().await), Code::InvalidArgument as u32);
    s.expect_status_end(Code::InvalidArgument).await;

    let mut s = Stream::open(addr).await;
    let ReqOneof::ClientStart(mut tls) = client_start(vec![]) else {
        unreachable!()
    };
    tls.handshake_security_protocol = 1;
    assert_eq!(
        status_code(&s.call(ReqOneof::ClientStart(tls)).await),
        Code::InvalidArgument as u32
    );
    s.expect_status_end(Code::InvalidArgument).await;

    let mut s = Stream::open(addr).await;
    let ReqOneof::ServerStart(mut no_alts) = server_start(&[]) else {
        unreachable!()
    };
    no_alts.handshake_parameters.clear();
    assert_eq!(
        status_code(&s.call(ReqOneof::ServerStart(no_alts)).await),
        Code::InvalidArgument as u32
    );
    s.expect_status_end(Code::InvalidArgument).await;
}

#[tokio::test]
async fn oversized_input_is_refused() {
    let config = HandshakerConfig {
        max_input_bytes: 16,
        ..HandshakerConfig::default()
    };
    let (addr, _) = start(config).await;
    let mut s = Stream::open(addr).await;
    let r = s.call(server_start(&[0u8; 17])).await;
    assert_eq!(status_code(&r), Code::ResourceExhausted as u32);
    s.expect_status_end(Code::ResourceExhausted).await;
}

#[tokio::test]
async fn idle_stream_hits_deadline_and_frees_its_slot() {
    let config = HandshakerConfig {
        max_in_flight: 1,
        handshake_timeout: Duration::from_millis(300),
        ..HandshakerConfig::default()
    };
    let (addr, service) = start(config).await;
    // Like a grpc-go server on a silent TCP connection (it holds no slot, and
    // still ends at its deadline).
    let mut idle = Stream::open(addr).await;
    let r = idle.recv().await;
    assert_eq!(status_code(&r), Code::DeadlineExceeded as u32);
    idle.expect_status_end(Code::DeadlineExceeded).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(service.free_slots(), 1);
    // The slot is usable again.
    let mut c = Stream::open(addr).await;
    assert!(
        !c.call(client_start(vec![sa("server@t")]))
            .await
            .out_frames
            .is_empty()
    );
}

#[tokio::test]
async fn excess_caller_waits_for_a_slot() {
    let config = HandshakerConfig {
        max_in_flight: 1,
        handshake_timeout: Duration::from_secs(5),
        ..HandshakerConfig::default()
    };
    let (addr, service) = start(config).await;
    let mut a = Stream::open(addr).await;
    assert_eq!(status_code(&a.call(client_start(vec![sa("server@t")])).await), 0);
    assert_eq!(service.free_slots(), 0);

    let mut b = Stream::open(addr).await;
    b.send(client_start(vec![sa("server@t")])).await;
    let waited = tokio::time::timeout(Duration::from_millis(300), b.recv()).await;
    assert!(
        waited.is_err(),
        "second caller must wait while the only slot is held"
    );

    drop(a); // caller goes away: its slot is released
    let r = tokio::time::timeout(Duration::from_secs(3), b.recv())
        .await
        .expect("slot handed over");
    assert_eq!(status_code(&r), 0);
    assert!(!r.out_frames.is_empty());
}

impl Stream {
    /// A stream on an existing channel (one HTTP/2 connection, many streams,
    /// like a stock gRPC process).
    async fn on(channel: Channel) -> Self {
        let mut client = HandshakerServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(8);
        let rx = client
            .do_handshake(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx }
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Completes the handshake of client stream `c` (first message `m1`) with a
/// server stream `s` that already sent an empty `server_start`.
async fn finish(c: &mut Stream, s: &mut Stream, m1: &[u8]) {
    let r = s.call(next(m1)).await;
    assert_eq!(status_code(&r), 0);
    let sres = r.result.expect("server result");
    let r = c.call(next(&r.out_frames)).await;
    let cres = r.result.expect("client result");
    assert_eq!(cres.key_data, sres.key_data);
    assert_eq!(cres.key_data.len(), 44);
}

#[tokio::test]
async fn empty_server_starts_hold_no_slot_and_do_not_block_client_handshakes() {
    let config = HandshakerConfig {
        max_in_flight: 2,
        max_client_handshakes: 1,
        max_server_handshakes: 1,
        handshake_timeout: Duration::from_secs(10),
        ..HandshakerConfig::default()
    };
    let (addr, service) = start(config).await;
    // Many servers waiting for their peers' first bytes (stock servers send
    // server_start as soon as a TCP connection is accepted).
    let mut idle = Vec::new();
    for _ in 0..5 {
        let mut s = Stream::open(addr).await;
        let r = tokio::time::timeout(Duration::from_secs(3), s.call(server_start(&[])))
            .await
            .expect("an empty server_start is answered at once");
        assert_eq!((status_code(&r), r.out_frames.len()), (0, 0));
        idle.push(s);
    }
    assert_eq!(service.free_server_slots(), 1, "empty server_starts hold no slot");
    assert_eq!(service.free_slots(), 2);

    // A client handshake still gets its slot at once and completes with one
    // of the waiting servers.
    let mut c = Stream::open(addr).await;
    let r = tokio::time::timeout(Duration::from_secs(3), c.call(client_start(vec![sa("server@t")])))
        .await
        .expect("client handshake not blocked");
    assert_eq!(status_code(&r), 0);
    assert_eq!(service.free_client_slots(), 0);
    finish(&mut c, &mut idle[0], &r.out_frames).await;
    drop(c);
    drop(idle);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(service.free_slots(), 2);
    assert_eq!(service.free_client_slots(), 1);
    assert_eq!(service.free_server_slots(), 1);
}

#[tokio::test]
async fn client_handshakes_cannot_take_the_server_quota() {
    let config = HandshakerConfig {
        max_in_flight: 4,
        max_client_handshakes: 1,
        max_server_handshakes: 1,
        handshake_timeout: Duration::from_secs(10),
        ..HandshakerConfig::default()
    };
    let (addr, service) = start(config).await;
    // A flood of client handshakes: one holds the client quota, one waits.
    let mut a = Stream::open(addr).await;
    let m1 = a.call(client_start(vec![sa("server@t")])).await.out_frames;
    let mut b = Stream::open(addr).await;
    b.send(client_start(vec![sa("server@t")])).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b.recv())
            .await
            .is_err()
    );
    assert_eq!(service.waiters(), 1);
    // A server handshake is served from its own quota.
    let mut s = Stream::open(addr).await;
    let r = tokio::time::timeout(Duration::from_secs(3), s.call(server_start(&m1)))
        .await
        .expect("server handshake not blocked by client handshakes");
    assert!(r.result.is_some());
    let r = a.call(next(&r.out_frames)).await;
    assert!(r.result.is_some());
    // a finished: b gets the client slot.
    let r = tokio::time::timeout(Duration::from_secs(3), b.recv())
        .await
        .expect("b served after a");
    assert_eq!(status_code(&r), 0);
}

#[tokio::test]
async fn waiters_beyond_the_bound_get_resource_exhausted_at_once() {
    let config = HandshakerConfig {
        max_in_flight: 8,
        max_client_handshakes: 1,
        max_waiters: 1,
        handshake_timeout: Duration::from_secs(10),
        ..HandshakerConfig::default()
    };
    let (addr, service) = start(config).await;
    let mut a = Stream::open(addr).await;
    assert_eq!(status_code(&a.call(client_start(vec![sa("server@t")])).await), 0);
    let mut b = Stream::open(addr).await;
    b.send(client_start(vec![sa("server@t")])).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b.recv())
            .await
            .is_err(),
        "b waits"
    );
    assert_eq!(service.waiters(), 1);

    // c finds the waiting room full: refused at once, not after the deadline.
    let mut c = Stream::open(addr).await;
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(2), c.call(client_start(vec![sa("server@t")])))
        .await
        .expect("refused at once");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(status_code(&r), Code::ResourceExhausted as u32);
    assert!(r.result.is_none() && r.out_frames.is_empty());
    c.expect_status_end(Code::ResourceExhausted).await;
    assert_eq!(service.waiters(), 1, "the refused caller does not count");

    // The honest waiter is served once a slot frees, and completes.
    drop(a);
    let r = tokio::time::timeout(Duration::from_secs(3), b.recv())
        .await
        .expect("b gets the slot");
    assert_eq!(status_code(&r), 0);
    let mut s = Stream::open(addr).await;
    assert_eq!(status_code(&s.call(server_start(&[])).await), 0);
    finish(&mut b, &mut s, &r.out_frames).await;
    assert_eq!(service.waiters(), 0);
}

#[tokio::test]
async fn http2_max_concurrent_streams_is_enforced() {
    let config = HandshakerConfig {
        max_concurrent_streams: 2,
        handshake_timeout: Duration::from_secs(10),
        ..HandshakerConfig::default()
    };
    let (addr, _) = start(config).await;
    let ch = channel(addr).await;
    let mut s1 = Stream::on(ch.clone()).await;
    assert_eq!(status_code(&s1.call(server_start(&[])).await), 0);
    let mut s2 = Stream::on(ch.clone()).await;
    assert_eq!(status_code(&s2.call(server_start(&[])).await), 0);
    // A third stream on the same connection waits for a free stream.
    let third = tokio::spawn(Stream::on(ch.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "third stream must wait (limit 2)");
    drop(s1);
    let mut s3 = tokio::time::timeout(Duration::from_secs(3), third)
        .await
        .expect("a stream freed")
        .unwrap();
    assert_eq!(status_code(&s3.call(server_start(&[])).await), 0);
    drop(s2);
}
