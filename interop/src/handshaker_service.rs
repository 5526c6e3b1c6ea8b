//! `grpc.gcp.HandshakerService/DoHandshake` over a sans-IO [`HandshakeEngine`].
//!
//! Stock gRPC stacks (C-core/grpcio, grpc-go, grpc-java) delegate the ALTS
//! handshake to this service over one bidirectional `DoHandshake` stream per
//! connection and only relay bytes between it and the TCP peer: the client
//! sends `client_start`, the server `server_start` with the bytes read so
//! far, then each further read goes in a `next` request; the service answers
//! with `out_frames` to write, `bytes_consumed` and finally a `result` (or a
//! failure `status`). This module implements the service protocol;
//! the handshake itself comes from an [`EngineFactory`].
//!
//! Protocol rules implemented here:
//! - every request gets exactly one response (empty `out_frames` while the
//!   peer's message is incomplete);
//! - `bytes_consumed` counts the handshake bytes of *that request's* input;
//!   bytes after them (once the handshake is complete) are early record data
//!   the caller keeps;
//! - once the engine has an outcome, the response carries `result` (plus any
//!   final `out_frames`) and the response stream then ends with status OK
//!   (C-core never half-closes; it hangs if the stream stays open);
//! - an engine failure is answered with an in-band `status { code, details }`
//!   (plus any `out_frames`, e.g. alerts), then the stream ends with OK so
//!   the caller reports the in-band details;
//! - protocol misuse (`next` before a start, a second start, an empty
//!   request, a non-ALTS protocol) gets an in-band `status` and the stream
//!   then ends with the same non-OK gRPC status;
//! - callers: before any handshake work, the calling process is checked
//!   against [`HandshakerConfig::callers`] (a [`CallerPolicy`]: Unix socket
//!   callers by `SO_PEERCRED` uid/gid, TCP callers only from loopback); a
//!   refused caller's `DoHandshake` fails with `PERMISSION_DENIED` before
//!   any response (so never any key bytes) and the refusal is logged, at
//!   most one line per 10 s plus a count of the suppressed ones;
//! - targets: a `client_start` naming no `target_identities` gets the
//!   identities of [`HandshakerConfig::client_targets`] for its
//!   `target_name`, or is refused with an in-band `PERMISSION_DENIED` (see
//!   [`crate::targets`]);
//! - concurrency: a handshake takes a slot when it has work: at
//!   `client_start`, or at the first `server_start`/`next` carrying bytes
//!   (a server waiting for its peer's first bytes holds none). A slot is a
//!   permit of its kind ([`HandshakerConfig::max_client_handshakes`] or
//!   [`HandshakerConfig::max_server_handshakes`]) plus one of the overall
//!   [`HandshakerConfig::max_in_flight`], so neither kind can starve the
//!   other. Without a free slot, callers **wait** (FIFO), but only until
//!   their per-handshake deadline (then `RESOURCE_EXHAUSTED`), and at most
//!   [`HandshakerConfig::max_waiters`] wait at once: beyond that a caller
//!   gets `RESOURCE_EXHAUSTED` immediately;
//! - HTTP/2: the servers of [`crate::serve_handshaker`] and
//!   [`crate::serve_handshaker_on`] limit each connection to
//!   [`HandshakerConfig::max_concurrent_streams`] concurrent streams;
//! - every handshake has a deadline ([`HandshakerConfig::handshake_timeout`],
//!   default 20 s, counted from the start of the call). When it passes, an
//!   in-band `status` DEADLINE_EXCEEDED is sent and the stream ends with
//!   DEADLINE_EXCEEDED, freeing the slot (idle streams never hold a slot
//!   forever).

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alts_proto::grpc_gcp::handshaker_req::ReqOneof;
use alts_proto::grpc_gcp::handshaker_service_server::{HandshakerService, HandshakerServiceServer};
use alts_proto::grpc_gcp::identity::IdentityOneof;
use alts_proto::grpc_gcp::rpc_protocol_versions::Version;
use alts_proto::grpc_gcp::{
    HandshakeProtocol, HandshakerReq, HandshakerResp, HandshakerResult, HandshakerStatus, Identity,
    RpcProtocolVersions, StartClientHandshakeReq, StartServerHandshakeReq,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, warn};

use crate::callers::{Caller, CallerPolicy, RateLimitedLog};
use crate::targets::ClientTargets;

/// An RPC protocol version `(major, minor)`.
pub type RpcVersion = (u32, u32);

/// A sans-IO handshake, one per `DoHandshake` stream.
pub trait HandshakeEngine: Send + 'static {
    /// Feeds bytes received from the peer. Returns how many bytes belong to the handshake (the rest, once finished, is early record data).
    /// While a message is incomplete, consume (buffer) every byte.
    fn handle_input(&mut self, input: &[u8]) -> Result<usize, EngineError>;
    /// Moves bytes to send to the peer into `out`.
    fn poll_output(&mut self, out: &mut Vec<u8>);
    /// The result once the handshake is complete (taken once).
    fn take_outcome(&mut self) -> Option<EngineOutcome>;
}

/// The result of a completed handshake, as returned to the stock gRPC caller.
pub struct EngineOutcome {
    /// Negotiated application protocol (`"grpc"`).
    pub application_protocol: String,
    /// Negotiated record protocol, e.g. `ALTSRP_GCM_AES128_REKEY`.
    pub record_protocol: String,
    /// Record-layer key material (44 bytes for the REKEY protocol).
    pub key_data: zeroize::Zeroizing<Vec<u8>>,
    /// The authenticated peer identity (sent as `peer_identity.service_account`).
    pub peer_identity: String,
    /// Further peer identity attributes (category, issuer, ...).
    pub peer_attributes: BTreeMap<String, String>,
    /// Our own identity (sent as `local_identity.service_account`).
    pub local_identity: String,
    /// The peer's advertised RPC versions: `(max, min)`.
    pub peer_rpc_versions: (RpcVersion, RpcVersion),
    /// Maximum frame size for the record layer.
    pub max_frame_size: u32,
}

impl fmt::Debug for EngineOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineOutcome")
            .field("application_protocol", &self.application_protocol)
            .field("record_protocol", &self.record_protocol)
            .field(
                "key_data",
                &format_args!("<{} bytes redacted>", self.key_data.len()),
            )
            .field("peer_identity", &self.peer_identity)
            .field("peer_attributes", &self.peer_attributes)
            .field("local_identity", &self.local_identity)
            .field("peer_rpc_versions", &self.peer_rpc_versions)
            .field("max_frame_size", &self.max_frame_size)
            .finish()
    }
}

/// A handshake failure, reported in-band as `HandshakerStatus { code, details }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineError {
    /// gRPC status code.
    pub code: Code,
    /// Human-readable reason (reaches the stock gRPC caller).
    pub details: String,
}

impl EngineError {
    /// Creates an error.
    pub fn new(code: Code, details: impl Into<String>) -> Self {
        Self {
            code,
            details: details.into(),
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.details)
    }
}

impl std::error::Error for EngineError {}

/// Parameters of a client-side handshake (from `StartClientHandshakeReq`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStart {
    /// Offered record protocols, in preference order.
    pub record_protocols: Vec<String>,
    /// Acceptable server identities (`service_account` or `hostname` of
    /// each `target_identities` entry); empty = any.
    pub target_identities: Vec<String>,
    /// The dial target, e.g. `127.0.0.1:50061`.
    pub target_name: String,
    /// Our RPC versions `(max, min)`, if the caller sent them.
    pub rpc_versions: Option<(RpcVersion, RpcVersion)>,
    /// Caller's maximum frame size (0 = not sent).
    pub max_frame_size: u32,
    /// Offered application protocols (`["grpc"]`).
    pub application_protocols: Vec<String>,
}

/// Parameters of a server-side handshake (from `StartServerHandshakeReq`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStart {
    /// Accepted record protocols (from `handshake_parameters[ALTS]`).
    pub record_protocols: Vec<String>,
    /// Our RPC versions `(max, min)`, if the caller sent them.
    pub rpc_versions: Option<(RpcVersion, RpcVersion)>,
    /// Caller's maximum frame size (0 = not sent).
    pub max_frame_size: u32,
    /// Accepted application protocols (`["grpc"]`).
    pub application_protocols: Vec<String>,
}

/// Creates one [`HandshakeEngine`] per handshake.
pub trait EngineFactory: Send + Sync + 'static {
    /// A client-side engine; its first message should be ready in `poll_output`.
    fn client(&self, start: &ClientStart) -> Result<Box<dyn HandshakeEngine>, EngineError>;
    /// A server-side engine waiting for the client's first message.
    fn server(&self, start: &ServerStart) -> Result<Box<dyn HandshakeEngine>, EngineError>;
}

/// Limits and access rules of the handshaker service.
#[derive(Debug, Clone)]
pub struct HandshakerConfig {
    /// Handshakes holding a slot at once, client and server together;
    /// excess callers wait (see module docs). Default 128.
    pub max_in_flight: usize,
    /// Client handshakes holding a slot at once. Default 96.
    pub max_client_handshakes: usize,
    /// Server handshakes holding a slot at once (a server handshake takes
    /// its slot when the peer's first bytes arrive). Default 96.
    pub max_server_handshakes: usize,
    /// Callers waiting for a slot at once; further callers get
    /// `RESOURCE_EXHAUSTED` immediately. Default 256.
    pub max_waiters: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` of the service's server (per
    /// connection; stock gRPC multiplexes every handshake of a process over
    /// one connection). Default 1024.
    pub max_concurrent_streams: u32,
    /// Which processes may call the service. Default
    /// [`CallerPolicy::same_user`].
    pub callers: CallerPolicy,
    /// Server identities for client handshakes that name none. Default: no
    /// map, such handshakes are refused.
    pub client_targets: ClientTargets,
    /// Per-handshake deadline, counted from the start of the call (including
    /// any wait for a slot). Default 20 s.
    pub handshake_timeout: Duration,
    /// Cap on the total `in_bytes` one handshake may receive. Default 1 MiB.
    pub max_input_bytes: usize,
}

impl Default for HandshakerConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 128,
            max_client_handshakes: 96,
            max_server_handshakes: 96,
            max_waiters: 256,
            max_concurrent_streams: 1024,
            callers: CallerPolicy::default(),
            client_targets: ClientTargets::default(),
            handshake_timeout: Duration::from_secs(20),
            max_input_bytes: 1 << 20,
        }
    }
}

/// The `grpc.gcp.HandshakerService` implementation.
#[derive(Clone)]
pub struct AltsHandshakerService {
    factory: Arc<dyn EngineFactory>,
    config: Arc<HandshakerConfig>,
    slots: Arc<Semaphore>,
    client_slots: Arc<Semaphore>,
    server_slots: Arc<Semaphore>,
    waiters: Arc<AtomicUsize>,
    denied_log: Arc<RateLimitedLog>,
}

impl fmt::Debug for AltsHandshakerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AltsHandshakerService")
            .field("config", &self.config)
            .field("free_slots", &self.slots.available_permits())
            .field("free_client_slots", &self.client_slots.available_permits())
            .field("free_server_slots", &self.server_slots.available_permits())
            .field("waiters", &self.waiters())
            .finish_non_exhaustive()
    }
}

/// Which quota a handshake's slot comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Client,
    Server,
}

/// A held slot: a permit of its kind and one of the overall cap.
struct Slot {
    _kind: OwnedSemaphorePermit,
    _overall: OwnedSemaphorePermit,
}

/// Counts one waiter while alive.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AltsHandshakerService {
    /// Creates the service over `factory` with `config`.
    pub fn new(factory: Arc<dyn EngineFactory>, config: HandshakerConfig) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        let client_slots = Arc::new(Semaphore::new(config.max_client_handshakes.max(1)));
        let server_slots = Arc::new(Semaphore::new(config.max_server_handshakes.max(1)));
        Self {
            factory,
            config: Arc::new(config),
            slots,
            client_slots,
            server_slots,
            waiters: Arc::new(AtomicUsize::new(0)),
            denied_log: Arc::new(RateLimitedLog::new(Duration::from_secs(10))),
        }
    }

    /// The service's configuration.
    pub fn config(&self) -> &HandshakerConfig {
        &self.config
    }

    /// Client-handshake slots currently free (for tests and metrics).
    pub fn free_client_slots(&self) -> usize {
        self.client_slots.available_permits()
    }

    /// Server-handshake slots currently free (for tests and metrics).
    pub fn free_server_slots(&self) -> usize {
        self.server_slots.available_permits()
    }

    /// Callers currently waiting for a slot (for tests and metrics).
    pub fn waiters(&self) -> usize {
        self.waiters.load(Ordering::Acquire)
    }

    /// Wraps the service for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> HandshakerServiceServer<Self> {
        HandshakerServiceServer::new(self)
    }

    /// Slots of the overall cap ([`HandshakerConfig::max_in_flight`])
    /// currently free (for tests and metrics).
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }
}

/// The response stream type of `DoHandshake`.
pub type DoHandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakerResp, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl HandshakerService for AltsHandshakerService {
    type DoHandshakeStream = DoHandshakeStream;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakerReq>>,
    ) -> Result<Response<Self::DoHandshakeStream>, Status> {
        let deadline = Instant::now() + self.config.handshake_timeout;
        let caller = Caller::from_extensions(request.extensions());
        if let Err(why) = self.config.callers.check(&caller) {
            if let Some(suppressed) = self.denied_log.allow() {
                warn!(
                    %caller,
                    reason = %why,
                    suppressed_since_last_line = suppressed,
                    "DoHandshake caller refused"
                );
            }
            return Err(Status::permission_denied(format!(
                "caller not allowed to use this handshaker service: {why}"
            )));
        }
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        let span = tracing::info_span!("DoHandshake", %caller);
        let task = async move {
            let end = this.run(inbound, &tx, deadline).await;
            match end {
                End::Ok => debug!("DoHandshake stream ends OK"),
                End::CallerGone => debug!("DoHandshake caller went away"),
                End::Status(status) => {
                    debug!(code = ?status.code(), msg = status.message(), "DoHandshake stream ends");
                    let _ = tx.send(Err(status)).await;
                }
            }
        };
        tokio::spawn(task.instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// How a `DoHandshake` stream ends.
enum End {
    /// End with status OK.
    Ok,
    /// End with this non-OK gRPC status.
    Status(Status),
    /// The caller closed its side or went away; nothing more to send.
    CallerGone,
}

type Tx = mpsc::Sender<Result<HandshakerResp, Status>>;

/// Sends one response; `false` if the caller is gone.
async fn send(tx: &Tx, resp: HandshakerResp) -> bool {
    tx.send(Ok(resp)).await.is_ok()
}

fn status_resp(code: Code, details: &str, out_frames: Vec<u8>) -> HandshakerResp {
    HandshakerResp {
        out_frames,
        bytes_consumed: 0,
        result: None,
        status: Some(HandshakerStatus {
            code: code as u32,
            details: details.to_owned(),
        }),
    }
}

/// Sends an in-band status then ends the stream with the same gRPC status.
async fn misuse(tx: &Tx, code: Code, details: &str) -> End {
    warn!(?code, details, "DoHandshake protocol misuse");
    if !send(tx, status_resp(code, details, Vec::new())).await {
        return End::CallerGone;
    }
    End::Status(Status::new(code, details))
}

fn versions(v: Option<&RpcProtocolVersions>) -> Option<(RpcVersion, RpcVersion)> {
    let v = v?;
    let pair = |x: Option<&Version>| x.map_or((0, 0), |x| (x.major, x.minor));
    Some((pair(v.max_rpc_version.as_ref()), pair(v.min_rpc_version.as_ref())))
}

fn identity_string(id: &Identity) -> Option<String> {
    match id.identity_oneof.as_ref()? {
        IdentityOneof::ServiceAccount(s) | IdentityOneof::Hostname(s) => Some(s.clone()),
    }
}

fn client_start(req: &StartClientHandshakeReq) -> Result<ClientStart, (Code, String)> {
    if req.handshake_security_protocol != HandshakeProtocol::Alts as i32 {
        return Err((
            Code::InvalidArgument,
            format!(
                "unsupported handshake_security_protocol {} (only ALTS = 2)",
                req.handshake_security_protocol
            ),
        ));
    }
    Ok(ClientStart {
        record_protocols: req.record_protocols.clone(),
        target_identities: req.target_identities.iter().filter_map(identity_string).collect(),
        target_name: req.target_name.clone(),
        rpc_versions: versions(req.rpc_versions.as_ref()),
        max_frame_size: req.max_frame_size,
        application_protocols: req.application_protocols.clone(),
    })
}

fn server_start(req: &StartServerHandshakeReq) -> Result<ServerStart, (Code, String)> {
    let alts = HandshakeProtocol::Alts as i32;
    let Some(params) = req.handshake_parameters.get(&alts) else {
        return Err((
            Code::InvalidArgument,
            "server_start has no handshake_parameters for ALTS (2)".to_owned(),
        ));
    };
    Ok(ServerStart {
        record_protocols: params.record_protocols.clone(),
        rpc_versions: versions(req.rpc_versions.as_ref()),
        max_frame_size: req.max_frame_size,
        application_protocols: req.application_protocols.clone(),
    })
}

fn result_message(o: EngineOutcome) -> HandshakerResult {
    let ((max_major, max_minor), (min_major, min_minor)) = o.peer_rpc_versions;
    HandshakerResult {
        application_protocol: o.application_protocol,
        record_protocol: o.record_protocol,
        key_data: o.key_data.to_vec(),
        peer_identity: Some(Identity {
            identity_oneof: Some(IdentityOneof::ServiceAccount(o.peer_identity)),
            attributes: o.peer_attributes.into_iter().collect(),
        }),
        local_identity: Some(Identity {
            identity_oneof: Some(IdentityOneof::ServiceAccount(o.local_identity)),
            attributes: Default::default(),
        }),
        keep_channel_open: false,
        peer_rpc_versions: Some(RpcProtocolVersions {
            max_rpc_version: Some(Version {
                major: max_major,
                minor: max_minor,
            }),
            min_rpc_version: Some(Version {
                major: min_major,
                minor: min_minor,
            }),
        }),
        max_frame_size: o.max_frame_size,
    }
}

/// What one step of the engine produced.
enum Step {
    /// Send this response and keep going.
    Continue(HandshakerResp),
    /// Send this response (with `result` or `status`) and end the stream OK.
    Final(HandshakerResp),
}

/// C-core rejects a response without `status`, so every response has one.
fn ok_status() -> Option<HandshakerStatus> {
    Some(HandshakerStatus {
        code: Code::Ok as u32,
        details: String::new(),
    })
}

/// Feeds `input` (if any) to the engine and builds the response.
fn step(engine: &mut dyn HandshakeEngine, input: &[u8]) -> Step {
    let consumed = if input.is_empty() {
        Ok(0)
    } else {
        engine.handle_input(input)
    };
    let mut out = Vec::new();
    engine.poll_output(&mut out);
    let consumed = match consumed {
        Ok(n) => n,
        Err(e) => {
            info!(code = ?e.code, details = %e.details, out_frames = out.len(), "handshake failed");
            return Step::Final(status_resp(e.code, &e.details, out));
        }
    };
    if consumed > input.len() {
        let details = format!("engine consumed {consumed} of {} bytes", input.len());
        return Step::Final(status_resp(Code::Internal, &details, out));
    }
    // `consumed <= input.len()`, and the input length is bounded by
    // `max_input_bytes`, so this fits in u32 unless that cap is absurd.
    let bytes_consumed = u32::try_from(consumed).unwrap_or(u32::MAX);
    let outcome = engine.take_outcome();
    if outcome.is_none() && consumed < input.len() {
        let details = format!(
            "engine left {} input bytes unconsumed before completing",
            input.len() - consumed
        );
        return Step::Final(status_resp(Code::Internal, &details, out));
    }
    match outcome {
        Some(o) => {
            info!(
                peer = %o.peer_identity,
                local = %o.local_identity,
                record_protocol = %o.record_protocol,
                key_len = o.key_data.len(),
                bytes_consumed,
                early_data = input.len() - consumed,
                out_frames = out.len(),
                "handshake complete"
            );
            Step::Final(HandshakerResp {
                out_frames: out,
                bytes_consumed,
                result: Some(result_message(o)),
                status: ok_status(),
            })
        }
        None => Step::Continue(HandshakerResp {
            out_frames: out,
            bytes_consumed,
            result: None,
            status: ok_status(),
        }),
    }
}

impl AltsHandshakerService {
    /// Takes a slot of `kind` without waiting, if one is free.
    fn try_slot(&self, kind: Kind) -> Option<Slot> {
        let sem = match kind {
            Kind::Client => &self.client_slots,
            Kind::Server => &self.server_slots,
        };
        let k = sem.clone().try_acquire_owned().ok()?;
        let o = self.slots.clone().try_acquire_owned().ok()?;
        Some(Slot {
            _kind: k,
            _overall: o,
        })
    }

    /// Takes a slot of `kind`, waiting (as one of at most `max_waiters`)
    /// until `deadline`.
    async fn slot(&self, kind: Kind, deadline: Instant) -> Result<Slot, (Code, String)> {
        if let Some(s) = self.try_slot(kind) {
            return Ok(s);
        }
        let before = self.waiters.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(self.waiters.clone());
        if before >= self.config.max_waiters {
            return Err((
                Code::ResourceExhausted,
                format!(
                    "too many concurrent handshakes: no free slot and {} callers already waiting",
                    self.config.max_waiters
                ),
            ));
        }
        let sem = match kind {
            Kind::Client => self.client_slots.clone(),
            Kind::Server => self.server_slots.clone(),
        };
        let overall = self.slots.clone();
        let wait = async move {
            let k = sem.acquire_owned().await?;
            let o = overall.acquire_owned().await?;
            Ok::<_, tokio::sync::AcquireError>(Slot {
                _kind: k,
                _overall: o,
            })
        };
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_closed)) => Err((Code::Unavailable, "handshaker service shutting down".to_owned())),
            Err(_elapsed) => Err((
                Code::ResourceExhausted,
                "too many concurrent handshakes: no slot became free before the handshake deadline"
                    .to_owned(),
            )),
        }
    }

    /// Takes a slot into `held` unless one is held already; on failure the
    /// stream end to return.
    async fn hold_slot(
        &self,
        held: &mut Option<Slot>,
        kind: Kind,
        deadline: Instant,
        tx: &Tx,
    ) -> Option<End> {
        if held.is_some() {
            return None;
        }
        match self.slot(kind, deadline).await {
            Ok(s) => {
                *held = Some(s);
                None
            }
            Err((code, details)) => {
                warn!(?kind, %details, "no handshake slot");
                if !send(tx, status_resp(code, &details, Vec::new())).await {
                    return Some(End::CallerGone);
                }
                Some(End::Status(Status::new(code, details)))
            }
        }
    }

    async fn run(&self, mut inbound: Streaming<HandshakerReq>, tx: &Tx, deadline: Instant) -> End {
        let mut slot: Option<Slot> = None;
        let mut engine: Option<Box<dyn HandshakeEngine>> = None;
        let mut total_in: usize = 0;
        loop {
            let msg = match tokio::time::timeout_at(deadline, inbound.message()).await {
                Err(_elapsed) => {
                    let details = format!(
                        "handshake not complete within {:?} (deadline exceeded)",
                        self.config.handshake_timeout
                    );
                    info!(%details);
                    if !send(tx, status_resp(Code::DeadlineExceeded, &details, Vec::new())).await {
                        return End::CallerGone;
                    }
                    return End::Status(Status::deadline_exceeded(details));
                }
                Ok(Err(status)) => {
                    debug!(code = ?status.code(), msg = status.message(), "DoHandshake inbound error");
                    return End::CallerGone;
                }
                Ok(Ok(None)) => {
                    debug!(
                        started = engine.is_some(),
                        "DoHandshake caller half-closed before completion"
                    );
                    return End::Ok;
                }
                Ok(Ok(Some(m))) => m,
            };
            let input_len = match &msg.req_oneof {
                Some(ReqOneof::ServerStart(r)) => r.in_bytes.len(),
                Some(ReqOneof::Next(r)) => r.in_bytes.len(),
                _ => 0,
            };
            total_in = total_in.saturating_add(input_len);
            if total_in > self.config.max_input_bytes {
                let details = format!("handshake input exceeds {} bytes", self.config.max_input_bytes);
                return misuse(tx, Code::ResourceExhausted, &details).await;
            }
            let resp = match (msg.req_oneof, engine.as_mut()) {
                (None, _) => {
                    return misuse(tx, Code::InvalidArgument, "HandshakerReq with no request set").await;
                }
                (Some(ReqOneof::ClientStart(_) | ReqOneof::ServerStart(_)), Some(_)) => {
                    return misuse(
                        tx,
                        Code::FailedPrecondition,
                        "handshake already started on this stream",
                    )
                    .await;
                }
                (Some(ReqOneof::Next(_)), None) => {
                    return misuse(
                        tx,
                        Code::FailedPrecondition,
                        "next before client_start or server_start",
                    )
                    .await;
                }
                (Some(ReqOneof::ClientStart(req)), None) => {
                    debug!(
                        handshake_security_protocol = req.handshake_security_protocol,
                        application_protocols = ?req.application_protocols,
                        record_protocols = ?req.record_protocols,
                        target_identities = ?req.target_identities,
                        local_identity = ?req.local_identity,
                        local_endpoint = ?req.local_endpoint,
                        remote_endpoint = ?req.remote_endpoint,
                        target_name = %req.target_name,
                        rpc_versions = ?req.rpc_versions,
                        max_frame_size = req.max_frame_size,
                        "recv client_start"
                    );
                    let mut start = match client_start(&req) {
                        Ok(s) => s,
                        Err((code, details)) => return misuse(tx, code, &details).await,
                    };
                    match self
                        .config
                        .client_targets
                        .resolve(&start.target_identities, &start.target_name)
                    {
                        Ok(ids) => start.target_identities = ids,
                        Err(details) => {
                            info!(%details, "client handshake refused");
                            let resp = status_resp(Code::PermissionDenied, &details, Vec::new());
                            if !send(tx, resp).await {
                                return End::CallerGone;
                            }
                            return End::Ok;
                        }
                    }
                    if let Some(end) = self.hold_slot(&mut slot, Kind::Client, deadline, tx).await {
                        return end;
                    }
                    match self.factory.client(&start) {
                        Ok(e) => step(engine.insert(e).as_mut(), &[]),
                        Err(e) => Step::Final(status_resp(e.code, &e.details, Vec::new())),
                    }
                }
                (Some(ReqOneof::ServerStart(req)), None) => {
                    debug!(
                        application_protocols = ?req.application_protocols,
                        handshake_parameters = ?req.handshake_parameters,
                        in_bytes = req.in_bytes.len(),
                        local_endpoint = ?req.local_endpoint,
                        remote_endpoint = ?req.remote_endpoint,
                        rpc_versions = ?req.rpc_versions,
                        max_frame_size = req.max_frame_size,
                        "recv server_start"
                    );
                    let start = match server_start(&req) {
                        Ok(s) => s,
                        Err((code, details)) => return misuse(tx, code, &details).await,
                    };
                    if !req.in_bytes.is_empty()
                        && let Some(end) = self.hold_slot(&mut slot, Kind::Server, deadline, tx).await
                    {
                        return end;
                    }
                    match self.factory.server(&start) {
                        Ok(e) => step(engine.insert(e).as_mut(), &req.in_bytes),
                        Err(e) => Step::Final(status_resp(e.code, &e.details, Vec::new())),
                    }
                }
                (Some(ReqOneof::Next(next)), Some(e)) => {
                    debug!(in_bytes = next.in_bytes.len(), "recv next");
                    // Only a server handshake can be without a slot here.
                    if !next.in_bytes.is_empty()
                        && let Some(end) = self.hold_slot(&mut slot, Kind::Server, deadline, tx).await
                    {
                        return end;
                    }
                    step(e.as_mut(), &next.in_bytes)
                }
            };
            let (resp, last) = match resp {
                Step::Continue(r) => (r, false),
                Step::Final(r) => (r, true),
            };
            debug!(
                out_frames = resp.out_frames.len(),
                bytes_consumed = resp.bytes_consumed,
                result = resp.result.is_some(),
                status = ?resp.status.as_ref().map(|s| (s.code, s.details.as_str())),
                "send response"
            );
            if !send(tx, resp).await {
                return End::CallerGone;
            }
            if last {
                return End::Ok;
            }
        }
    }
}
