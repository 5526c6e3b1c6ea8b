//! The async handshake driver: moves bytes between a socket and an
//! `alts-core` state machine, reading the clock once at the start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alts_core::UnixTime;
use alts_core::handshake::{
    ClientHandshake, ClientOptions, Handshake, HandshakeConfig, HandshakeOutcome, ServerHandshake,
};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::Instrument;

use crate::metrics::{self, InFlight};
use crate::{AltsError, AltsPeer, AltsStream};

/// The current time for certificate and ticket checks.
pub(crate) fn unix_now() -> UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Runs `hs` over `io`. Returns the outcome, bytes read past the handshake,
/// and (client) output still to send, which rides with the first records.
async fn drive<IO>(
    io: &mut IO,
    hs: &mut dyn Handshake,
    defer_last_write: bool,
    mut buf: BytesMut,
) -> Result<(HandshakeOutcome, BytesMut, Vec<u8>), AltsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    loop {
        hs.poll_output(&mut out);
        if hs.is_done() {
            break;
        }
        if !out.is_empty() {
            io.write_all(&out).await?;
            io.flush().await?;
            tracing::trace!(bytes = out.len(), "handshake bytes written");
            out.clear();
        }
        if buf.is_empty() {
            let n = io.read_buf(&mut buf).await?;
            tracing::trace!(bytes = n, "handshake bytes read");
            if n == 0 {
                return Err(AltsError::PeerClosed);
            }
        }
        let used = match hs.handle_input(&buf) {
            Ok(n) => n,
            Err(e) => {
                // Best effort: send the alert saying why, then fail.
                hs.poll_output(&mut out);
                if !out.is_empty() && io.write_all(&out).await.is_ok() {
                    let _ = io.flush().await;
                }
                return Err(e.into());
            }
        };
        buf.advance(used);
    }
    if !defer_last_write && !out.is_empty() {
        io.write_all(&out).await?;
        io.flush().await?;
        tracing::trace!(bytes = out.len(), "handshake bytes written");
        out.clear();
    }
    let outcome = hs.take_outcome().ok_or(AltsError::PeerClosed)?;
    Ok((outcome, buf, out))
}

fn into_stream<IO>(
    io: IO,
    outcome: &HandshakeOutcome,
    leftover: BytesMut,
    pending: Vec<u8>,
) -> Result<AltsStream<IO>, AltsError> {
    let (sealer, opener) = outcome.record_layer(outcome.record_config())?;
    let peer = Arc::new(AltsPeer::from_outcome(outcome));
    Ok(AltsStream::new(io, sealer, opener, leftover, pending, peer))
}

/// Runs the client handshake over `io` within `timeout`. ClientFinished is
/// sent before this returns, so the server's handshake completes even if the
/// application then waits for the server to speak first.
pub async fn client_handshake<IO>(
    io: IO,
    config: Arc<HandshakeConfig>,
    options: ClientOptions,
    timeout: Duration,
) -> Result<AltsStream<IO>, AltsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    client_handshake_inner(io, config, options, timeout, false).await
}

/// Like [`client_handshake`], but keeps ClientFinished buffered in the stream
/// so it leaves in the same write as the first records (or when the stream
/// is first flushed or shut down; a read does not send it). Only for callers
/// that write before they wait for the server, e.g. HTTP/2's connection
/// preface: it saves a packet and a server wake-up per connection.
pub(crate) async fn client_handshake_coalesced<IO>(
    io: IO,
    config: Arc<HandshakeConfig>,
    options: ClientOptions,
    timeout: Duration,
) -> Result<AltsStream<IO>, AltsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    client_handshake_inner(io, config, options, timeout, true).await
}

async fn client_handshake_inner<IO>(
    io: IO,
    config: Arc<HandshakeConfig>,
    options: ClientOptions,
    timeout: Duration,
    coalesce: bool,
) -> Result<AltsStream<IO>, AltsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    metrics::record_material(&config);
    let hs = ClientHandshake::new(config, options, unix_now())?;
    let mut stream = run(
        io,
        hs,
        "client",
        timeout,
        coalesce,
        BytesMut::with_capacity(READ_BUF),
    )
    .await?;
    if coalesce {
        stream.hold_pending_until_write();
    }
    Ok(stream)
}

/// Runs the server handshake over `io` within `timeout`.
pub async fn server_handshake<IO>(
    io: IO,
    config: Arc<HandshakeConfig>,
    timeout: Duration,
) -> Result<AltsStream<IO>, AltsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    server_handshake_after(io, BytesMut::with_capacity(READ_BUF), config, timeout).await
}

/// Like [`server_handshake`], with `first` holding bytes already read from
/// `io` (the start of the client's first message).
pub(crate) async fn server_handshake_after<IO>(
    io: IO,
    first: BytesMut,
    config: Arc<HandshakeConfig>,
    timeout: Duration,
) -> Result<AltsStream<IO>, AltsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    metrics::record_material(&config);
    run(
        io,
        ServerHandshake::new(config, unix_now()),
        "server",
        timeout,
        false,
        first,
    )
    .await
}

/// Initial read buffer of a handshake.
pub(crate) const READ_BUF: usize = 8 * 1024;

/// Drives `hs` over `io` within `timeout` in an `alts_handshake` span that
/// records the peer, whether it resumed, the outcome and the duration, and
/// updates the handshake metrics.
async fn run<IO, H>(
    mut io: IO,
    mut hs: H,
    side: &'static str,
    timeout: Duration,
    coalesce: bool,
    first: BytesMut,
) -> Result<AltsStream<IO>, AltsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: Handshake,
{
    let span = tracing::info_span!(
        "alts_handshake",
        side,
        peer = tracing::field::Empty,
        resumed = tracing::field::Empty
    );
    let start = Instant::now();
    let _in_flight = InFlight::start(side);
    let res = async {
        let (outcome, leftover, pending) =
            tokio::time::timeout(timeout, drive(&mut io, &mut hs, coalesce, first))
                .await
                .map_err(|_| AltsError::Timeout(timeout))??;
        finish_span(&outcome, start);
        into_stream(io, &outcome, leftover, pending)
    }
    .instrument(span.clone())
    .await;
    let elapsed = start.elapsed();
    metrics::record(side, res.as_ref().map(|s| s.peer().resumed()), elapsed);
    res.inspect_err(|e| {
        span.in_scope(|| {
            tracing::debug!(error = %e, kind = %e.kind(), elapsed_us = elapsed.as_micros() as u64, "handshake failed")
        })
    })
}

fn finish_span(o: &HandshakeOutcome, start: Instant) {
    let span = tracing::Span::current();
    span.record("peer", o.peer.identity.as_str());
    span.record("resumed", o.resumption.resumed());
    tracing::info!(
        record_protocol = o.record_protocol.name(),
        elapsed_us = start.elapsed().as_micros() as u64,
        "handshake complete"
    );
}
