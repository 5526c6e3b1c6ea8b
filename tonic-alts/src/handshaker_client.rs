//! Handshaker-service mode: run the ALTS handshake through a
//! `grpc.gcp.HandshakerService` (Google's on GCP, or `alts-handshaker` from
//! this project) instead of in process, exactly as stock gRPC stacks do.
//!
//! The client sends `client_start`, writes each response's `out_frames` to
//! the peer and relays what it reads as `next { in_bytes }`; the server
//! reads the peer's first bytes and sends them in `server_start`. When a
//! response carries `result`, the bytes of that input past `bytes_consumed`
//! are the peer's first records and are kept for the record layer, which is
//! built from `result.key_data` and `result.record_protocol`.
//!
//! The [`AltsPeer`] comes from the result: `identity` = the peer's
//! `service_account` (or `hostname`); category, issuer, revocation IDs,
//! expiry and resumption from the attributes `alts-handshaker` sets.
//! Google's service sends none of these: they are then `None`, and
//! [`AltsPeer::attributes`] holds whatever attributes were sent.

use std::sync::Arc;
use std::time::Duration;

use alts_core::UnixTime;
use alts_core::cert::Category;
use alts_core::handshake::{Resumption, RpcVersion, RpcVersions};
use alts_core::record::{self, RecordConfig, RecordProtocol, Side};
use alts_proto::grpc_gcp::handshaker_req::ReqOneof;
use alts_proto::grpc_gcp::handshaker_service_client::HandshakerServiceClient as GrpcClient;
use alts_proto::grpc_gcp::identity::IdentityOneof;
use alts_proto::grpc_gcp::rpc_protocol_versions::Version;
use alts_proto::grpc_gcp::{
    HandshakeProtocol, HandshakerReq, HandshakerResp, HandshakerResult, Identity, NextHandshakeMessageReq,
    RpcProtocolVersions, ServerHandshakeParameters, StartClientHandshakeReq, StartServerHandshakeReq,
};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OnceCell, mpsc};
use tonic::transport::{Channel, Endpoint};

use crate::{AltsError, AltsPeer, AltsStream};

/// The handshaker service address stock gRPC uses on Google Cloud.
pub const DEFAULT_HANDSHAKER_SERVICE: &str = "dns:///metadata.google.internal.:8080";

/// The environment variable that overrides the handshaker service address,
/// as in grpc-java (used verbatim as the gRPC target, e.g. `127.0.0.1:8080`).
pub const HANDSHAKER_ADDRESS_ENV: &str = "GCE_METADATA_HOST";

/// The handshaker service address stock gRPC would use here:
/// `$GCE_METADATA_HOST` when set and non-empty, else
/// [`DEFAULT_HANDSHAKER_SERVICE`].
pub fn default_handshaker_address() -> String {
    handshaker_address_from(std::env::var(HANDSHAKER_ADDRESS_ENV).ok().as_deref())
}

fn handshaker_address_from(env: Option<&str>) -> String {
    match env.map(str::trim) {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => DEFAULT_HANDSHAKER_SERVICE.to_owned(),
    }
}

/// Largest read from the peer relayed in one request.
const READ_CHUNK: usize = 16 * 1024;
/// Cap on the handshake bytes relayed in one handshake.
const MAX_HANDSHAKE_INPUT: usize = 1 << 20;

/// Turns a gRPC target (`dns:///host:port`, `host:port`, `http://host:port`)
/// into the URI tonic dials.
pub fn dial_uri(target: &str) -> String {
    if target.starts_with("http://") || target.starts_with("https://") {
        return target.to_owned();
    }
    let rest = target
        .strip_prefix("dns:///")
        .or_else(|| target.strip_prefix("dns:"))
        .unwrap_or(target);
    format!("http://{rest}")
}

/// A client of a `grpc.gcp.HandshakerService`, cheap to clone; the channel
/// is created on first use and shared by every handshake.
#[derive(Clone)]
pub struct HandshakerServiceClient {
    target: Arc<str>,
    channel: Arc<OnceCell<Channel>>,
    record_protocols: Vec<String>,
    rpc_versions: RpcVersions,
    max_frame_size: u32,
    timeout: Duration,
}

impl std::fmt::Debug for HandshakerServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakerServiceClient")
            .field("target", &self.target)
            .field("record_protocols", &self.record_protocols)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HandshakerServiceClient {
    /// A client of the service at `target` (e.g. [`DEFAULT_HANDSHAKER_SERVICE`]
    /// or `127.0.0.1:8080`), offering `ALTSRP_GCM_AES128_REKEY`, RPC
    /// versions 2.1..2.1 and 1 MiB frames, like stock gRPC.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: Arc::from(target.into()),
            channel: Arc::new(OnceCell::new()),
            record_protocols: vec![RecordProtocol::GcmAes128Rekey.name().to_owned()],
            rpc_versions: RpcVersions::default(),
            max_frame_size: record::DEFAULT_MAX_RECV_FRAME as u32,
            timeout: crate::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// A client of the service at [`default_handshaker_address`]
    /// (`$GCE_METADATA_HOST`, or Google's metadata server address).
    pub fn from_env() -> Self {
        Self::new(default_handshaker_address())
    }

    /// Sets the handshake timeout (the whole exchange, service and peer).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the offered record protocols, preferred first.
    pub fn with_record_protocols(mut self, protocols: &[RecordProtocol]) -> Self {
        self.record_protocols = protocols.iter().map(|p| p.name().to_owned()).collect();
        self
    }

    /// The service target.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The handshake timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn client(&self) -> Result<GrpcClient<Channel>, AltsError> {
        let channel = self
            .channel
            .get_or_try_init(|| async {
                let uri = dial_uri(&self.target);
                Endpoint::from_shared(uri.clone())
                    .map(|e| e.connect_lazy())
                    .map_err(|e| {
                        AltsError::InvalidConfig(crate::ConfigError::HandshakerAddress {
                            address: uri.clone(),
                            reason: e.to_string(),
                        })
                    })
            })
            .await?;
        Ok(GrpcClient::new(channel.clone()))
    }

    fn rpc_versions(&self) -> RpcProtocolVersions {
        let v = |x: RpcVersion| Version {
            major: x.major,
            minor: x.minor,
        };
        RpcProtocolVersions {
            max_rpc_version: Some(v(self.rpc_versions.max)),
            min_rpc_version: Some(v(self.rpc_versions.min)),
        }
    }

    /// Client handshake over `io` through the service; `targets` are the
    /// acceptable server identities (empty = any), `target_name` the dial
    /// target (informational).
    pub async fn client_handshake<IO>(
        &self,
        io: IO,
        targets: &[String],
        target_name: &str,
    ) -> Result<AltsStream<IO>, AltsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = ReqOneof::ClientStart(StartClientHandshakeReq {
            handshake_security_protocol: HandshakeProtocol::Alts as i32,
            application_protocols: vec!["grpc".to_owned()],
            record_protocols: self.record_protocols.clone(),
            target_identities: targets
                .iter()
                .map(|t| Identity {
                    identity_oneof: Some(IdentityOneof::ServiceAccount(t.clone())),
                    attributes: Default::default(),
                })
                .collect(),
            local_identity: None,
            local_endpoint: None,
            remote_endpoint: None,
            target_name: target_name.to_owned(),
            rpc_versions: Some(self.rpc_versions()),
            max_frame_size: self.max_frame_size,
        });
        self.run(io, Side::Client, start, false).await
    }

    /// Server handshake over `io` through the service.
    pub async fn server_handshake<IO>(&self, io: IO) -> Result<AltsStream<IO>, AltsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = ReqOneof::ServerStart(StartServerHandshakeReq {
            application_protocols: vec!["grpc".to_owned()],
            handshake_parameters: [(
                HandshakeProtocol::Alts as i32,
                ServerHandshakeParameters {
                    record_protocols: self.record_protocols.clone(),
                    local_identities: Vec::new(),
                },
            )]
            .into_iter()
            .collect(),
            in_bytes: Vec::new(),
            local_endpoint: None,
            remote_endpoint: None,
            rpc_versions: Some(self.rpc_versions()),
            max_frame_size: self.max_frame_size,
        });
        self.run(io, Side::Server, start, true).await
    }

    async fn run<IO>(
        &self,
        io: IO,
        side: Side,
        start: ReqOneof,
        read_first: bool,
    ) -> Result<AltsStream<IO>, AltsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let timeout = self.timeout;
        let side_name = if side == Side::Client { "client" } else { "server" };
        let span =
            tracing::info_span!("alts_handshake_via_service", side = side_name, service = %self.target);
        let fut = async {
            let (io, mut result, leftover) = self.exchange(io, start, read_first).await?;
            let stream = into_stream(
                io,
                side,
                &result,
                leftover,
                self.rpc_versions,
                self.max_frame_size,
            );
            // The session keys stay only in the record layer.
            zeroize::Zeroize::zeroize(&mut result.key_data);
            let stream = stream?;
            tracing::info!(
                peer = %stream.peer().identity,
                local = %stream.peer().local_identity,
                record_protocol = stream.peer().record_protocol.name(),
                "handshake complete"
            );
            Ok(stream)
        };
        let started = std::time::Instant::now();
        let in_flight = crate::metrics::InFlight::start(side_name);
        let res = tracing::Instrument::instrument(tokio::time::timeout(timeout, fut), span.clone())
            .await
            .map_err(|_| AltsError::Timeout(timeout))
            .and_then(|r| r);
        drop(in_flight);
        crate::metrics::record(
            side_name,
            res.as_ref().map(|s| s.peer().resumed()),
            started.elapsed(),
        );
        if let Err(e) = &res {
            span.in_scope(|| tracing::debug!(error = %e, kind = %e.kind(), "handshake failed"));
        }
        res
    }

    /// Relays bytes between `io` and the service until a result arrives.
    async fn exchange<IO>(
        &self,
        mut io: IO,
        start: ReqOneof,
        read_first: bool,
    ) -> Result<(IO, HandshakerResult, BytesMut), AltsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let mut client = self.client().await?;
        let (tx, rx) = mpsc::channel::<HandshakerReq>(4);
        let mut start = Some(start);
        let mut total_in = 0usize;
        let mut buf = vec![0u8; READ_CHUNK];
        // The server's first request carries the peer's first bytes.
        let mut first_in = Vec::new();
        if read_first {
            let n = io.read(&mut buf).await?;
            if n == 0 {
                return Err(AltsError::PeerClosed);
            }
            first_in.extend_from_slice(buf.get(..n).unwrap_or_default());
            total_in = n;
            if let Some(ReqOneof::ServerStart(s)) = start.as_mut() {
                s.in_bytes = first_in.clone();
            }
        }
        send(&tx, start.take()).await?;
        let mut responses = client
            .do_handshake(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| service_err("DoHandshake", &s))?
            .into_inner();
        let mut last_in = first_in;
        loop {
            let resp: HandshakerResp = responses
                .message()
                .await
                .map_err(|s| service_err("DoHandshake", &s))?
                .ok_or_else(|| {
                    AltsError::HandshakerService("service ended the stream without a result".into())
                })?;
            if !resp.out_frames.is_empty() {
                io.write_all(&resp.out_frames).await?;
                io.flush().await?;
            }
            if let Some(st) = &resp.status
                && st.code != 0
            {
                return Err(AltsError::HandshakerService(format!(
                    "handshake refused (code {}): {}",
                    st.code, st.details
                )));
            }
            let consumed = usize::try_from(resp.bytes_consumed).unwrap_or(usize::MAX);
            if consumed > last_in.len() {
                return Err(AltsError::HandshakerService(format!(
                    "service consumed {consumed} of {} bytes",
                    last_in.len()
                )));
            }
            if let Some(result) = resp.result {
                let leftover = BytesMut::from(last_in.get(consumed..).unwrap_or_default());
                drop(tx);
                return Ok((io, result, leftover));
            }
            let n = io.read(&mut buf).await?;
            if n == 0 {
                return Err(AltsError::PeerClosed);
            }
            total_in = total_in.saturating_add(n);
            if total_in > MAX_HANDSHAKE_INPUT {
                return Err(AltsError::HandshakerService(format!(
                    "handshake input exceeds {MAX_HANDSHAKE_INPUT} bytes"
                )));
            }
            last_in = buf.get(..n).unwrap_or_default().to_vec();
            send(
                &tx,
                Some(ReqOneof::Next(NextHandshakeMessageReq {
                    in_bytes: last_in.clone(),
                })),
            )
            .await?;
        }
    }
}

async fn send(tx: &mpsc::Sender<HandshakerReq>, req: Option<ReqOneof>) -> Result<(), AltsError> {
    tx.send(HandshakerReq { req_oneof: req })
        .await
        .map_err(|_| AltsError::HandshakerService("service closed the request stream".into()))
}

fn service_err(what: &str, s: &tonic::Status) -> AltsError {
    AltsError::HandshakerService(format!("{what}: {:?}: {}", s.code(), s.message()))
}

fn identity_of(id: Option<&Identity>) -> (String, std::collections::HashMap<String, String>) {
    match id {
        Some(id) => {
            let name = match &id.identity_oneof {
                Some(IdentityOneof::ServiceAccount(s) | IdentityOneof::Hostname(s)) => s.clone(),
                None => String::new(),
            };
            (name, id.attributes.clone())
        }
        None => (String::new(), Default::default()),
    }
}

fn parse_id(s: Option<&String>) -> Option<u64> {
    s.and_then(|s| {
        s.strip_prefix("0x")
            .map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
    })
}

/// Builds the peer view of a service result (see the module docs).
pub fn peer_from_result(result: &HandshakerResult, ours: RpcVersions) -> Result<AltsPeer, AltsError> {
    let (identity, attrs) = identity_of(result.peer_identity.as_ref());
    if identity.is_empty() {
        return Err(AltsError::HandshakerService("result has no peer identity".into()));
    }
    let (local_identity, _) = identity_of(result.local_identity.as_ref());
    let record_protocol = RecordProtocol::from_name(&result.record_protocol).ok_or_else(|| {
        AltsError::HandshakerService(format!(
            "unsupported record protocol {:?}",
            result.record_protocol
        ))
    })?;
    let peer_rpc_versions = result
        .peer_rpc_versions
        .as_ref()
        .and_then(|v| {
            let max = v.max_rpc_version.as_ref()?;
            let min = v.min_rpc_version.as_ref()?;
            Some(RpcVersions {
                max: RpcVersion {
                    major: max.major,
                    minor: max.minor,
                },
                min: RpcVersion {
                    major: min.major,
                    minor: min.minor,
                },
            })
        })
        .ok_or_else(|| AltsError::HandshakerService("result has no peer_rpc_versions".into()))?;
    let rpc_version = ours.negotiate(&peer_rpc_versions).ok_or_else(|| {
        AltsError::HandshakerService(format!(
            "RPC protocol versions do not overlap (ours {ours:?}, peer {peer_rpc_versions:?})"
        ))
    })?;
    let flag = |k: &str| attrs.get(k).is_some_and(|v| v == "true");
    let resumption = match attrs.get("resumption").map(String::as_str) {
        Some("client_ticket") => Resumption::ClientTicket,
        Some("server_ticket") => Resumption::ServerTicket,
        Some(r) if r.starts_with("refused") => {
            Resumption::Refused(r.trim_start_matches("refused: ").to_owned())
        }
        _ if flag("resumed") => Resumption::ClientTicket,
        _ => Resumption::NotAttempted,
    };
    Ok(AltsPeer {
        identity,
        category: attrs.get("category").and_then(|c| c.parse::<Category>().ok()),
        issuer: attrs.get("issuer").cloned(),
        principal_revocation_id: parse_id(attrs.get("principal_revocation_id")),
        handshake_revocation_id: parse_id(attrs.get("handshake_revocation_id")),
        not_after: attrs.get("not_after").and_then(|t| t.parse().ok()).map(UnixTime),
        local_identity,
        record_protocol,
        security_level: record_protocol.security_level(),
        application_protocol: result.application_protocol.clone(),
        rpc_version,
        peer_rpc_versions,
        handshake_cipher: attrs
            .get("handshake_cipher")
            .cloned()
            .unwrap_or_else(|| "grpc.gcp handshaker service".to_owned()),
        resumption,
        pfs: flag("pfs"),
        kci_resistant: flag("kci_resistant"),
        matched_target: None,
        attributes: attrs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

fn into_stream<IO>(
    io: IO,
    side: Side,
    result: &HandshakerResult,
    leftover: BytesMut,
    ours: RpcVersions,
    max_frame_size: u32,
) -> Result<AltsStream<IO>, AltsError> {
    let peer = peer_from_result(result, ours)?;
    let want = peer.record_protocol.key_data_len();
    if result.key_data.len() < want {
        return Err(AltsError::HandshakerService(format!(
            "key_data has {} bytes, {} needs {want}",
            result.key_data.len(),
            peer.record_protocol.name()
        )));
    }
    let send = if result.max_frame_size == 0 {
        record::DEFAULT_SEND_FRAME
    } else {
        (result.max_frame_size as usize).clamp(record::DEFAULT_SEND_FRAME, record::DEFAULT_MAX_RECV_FRAME)
    };
    let key = zeroize::Zeroizing::new(result.key_data.clone());
    let (sealer, opener) = record::new_record_layer(
        peer.record_protocol,
        &key,
        side,
        RecordConfig {
            send_frame_size: send,
            // Enforce the largest frame we asked the service for.
            max_recv_frame: (max_frame_size as usize).max(record::DEFAULT_SEND_FRAME),
        },
    )?;
    Ok(AltsStream::new(
        io,
        sealer,
        opener,
        leftover,
        Vec::new(),
        Arc::new(peer),
    ))
}

/// Client handshake over `io` through the handshaker service at
/// `service_addr` (one-off channel; keep a [`HandshakerServiceClient`] to
/// share one).
pub async fn client_handshake_via_service<IO>(
    io: IO,
    service_addr: &str,
    targets: &[String],
    timeout: Duration,
) -> Result<AltsStream<IO>, AltsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    HandshakerServiceClient::new(service_addr)
        .with_timeout(timeout)
        .client_handshake(io, targets, "")
        .await
}

/// Server handshake over `io` through the handshaker service at `service_addr`.
pub async fn server_handshake_via_service<IO>(
    io: IO,
    service_addr: &str,
    timeout: Duration,
) -> Result<AltsStream<IO>, AltsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    HandshakerServiceClient::new(service_addr)
        .with_timeout(timeout)
        .server_handshake(io)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshaker_address_honours_gce_metadata_host() {
        assert_eq!(handshaker_address_from(None), DEFAULT_HANDSHAKER_SERVICE);
        assert_eq!(handshaker_address_from(Some("")), DEFAULT_HANDSHAKER_SERVICE);
        assert_eq!(handshaker_address_from(Some("127.0.0.1:8080")), "127.0.0.1:8080");
        assert_eq!(
            dial_uri(&handshaker_address_from(Some("localhost:9090"))),
            "http://localhost:9090"
        );
    }

    #[test]
    fn dial_uris() {
        assert_eq!(
            dial_uri(DEFAULT_HANDSHAKER_SERVICE),
            "http://metadata.google.internal.:8080"
        );
        assert_eq!(dial_uri("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(dial_uri("http://[::1]:8080"), "http://[::1]:8080");
    }

    #[test]
    fn peer_from_minimal_google_style_result() {
        let result = HandshakerResult {
            application_protocol: "grpc".into(),
            record_protocol: "ALTSRP_GCM_AES128_REKEY".into(),
            key_data: vec![0; 44],
            peer_identity: Some(Identity {
                identity_oneof: Some(IdentityOneof::ServiceAccount("sa@p.iam".into())),
                attributes: Default::default(),
            }),
            local_identity: None,
            keep_channel_open: false,
            peer_rpc_versions: Some(RpcProtocolVersions {
                max_rpc_version: Some(Version { major: 2, minor: 1 }),
                min_rpc_version: Some(Version { major: 2, minor: 1 }),
            }),
            max_frame_size: 0,
        };
        let p = peer_from_result(&result, RpcVersions::default()).unwrap();
        assert_eq!(p.identity, "sa@p.iam");
        assert_eq!(p.category, None);
        assert_eq!(p.issuer, None);
        assert_eq!(p.principal_revocation_id, None);
        assert!(!p.resumed());
    }
}
