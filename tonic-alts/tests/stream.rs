//! `AltsStream` against byte-level mocks: tiny pipes (partial reads and
//! writes), a socket that takes a few bytes at a time and keeps returning
//! `Pending`, tampering, truncation and clean EOF.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use alts_core::handshake::{ClientHandshake, ClientOptions, HandshakeOutcome, ServerHandshake};
use alts_core::record::{Opener, Sealer};
use alts_core::testing::{Delivery, drive};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tonic_alts::{AltsPeer, AltsStream, client_handshake, server_handshake};

mod common;
use common::configs;

/// Both outcomes of an in-memory handshake.
fn outcomes() -> (HandshakeOutcome, HandshakeOutcome) {
    let (c, s) = configs();
    let mut client = ClientHandshake::new(c, ClientOptions::default(), common::now()).unwrap();
    let mut server = ServerHandshake::new(s, common::now());
    drive(&mut client, &mut server, Delivery::Whole).unwrap()
}

fn layers(o: &HandshakeOutcome) -> (Sealer, Opener) {
    o.record_layer(o.record_config()).unwrap()
}

/// A server-side `AltsStream` over one end of a pipe, plus the client's
/// sealer to forge traffic on the other end.
fn server_stream(io: DuplexStream) -> (AltsStream<DuplexStream>, Sealer, Opener) {
    let (c, s) = outcomes();
    let (sealer, opener) = layers(&s);
    let (csealer, copener) = layers(&c);
    let peer = Arc::new(AltsPeer::from_outcome(&s));
    (
        AltsStream::new(io, sealer, opener, BytesMut::new(), Vec::new(), peer),
        csealer,
        copener,
    )
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("timed out")
}

/// Handshake and a 512 KiB exchange in both directions through a 97-byte
/// pipe: every read and write is partial, and both sides write at once.
#[tokio::test]
async fn tiny_pipe_both_directions_at_once() {
    let (c, s) = configs();
    let (a, b) = tokio::io::duplex(97);
    let (client, server) = bounded(async {
        tokio::join!(
            client_handshake(a, c, ClientOptions::default(), Duration::from_secs(10)),
            server_handshake(b, s, Duration::from_secs(10)),
        )
    })
    .await;
    let (client, server) = (client.unwrap(), server.unwrap());
    assert_eq!(client.peer().identity, "backend-prod");
    assert_eq!(server.peer().identity, "frontend-prod");

    let up = pattern(512 * 1024, 1);
    let down = pattern(512 * 1024, 2);
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = tokio::io::split(server);
    let (got_down, got_up, (), ()) = bounded(async {
        tokio::join!(
            async {
                let mut v = Vec::new();
                cr.read_to_end(&mut v).await.unwrap();
                v
            },
            async {
                let mut v = Vec::new();
                sr.read_to_end(&mut v).await.unwrap();
                v
            },
            async {
                cw.write_all(&up).await.unwrap();
                cw.shutdown().await.unwrap();
            },
            async {
                sw.write_all(&down).await.unwrap();
                sw.shutdown().await.unwrap();
            },
        )
    })
    .await;
    assert!(got_up == up, "client→server data differs");
    assert!(got_down == down, "server→client data differs");
}

/// The client's first record rides in the same write as ClientFinished; the
/// server's handshake read takes both and must hand the record over.
#[tokio::test]
async fn early_data_after_client_finished_is_kept() {
    let (c, s) = configs();
    let (a, b) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(async move {
        let mut s = server_handshake(b, s, Duration::from_secs(10)).await.unwrap();
        let mut buf = vec![0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        buf
    });
    let mut client = client_handshake(a, c, ClientOptions::default(), Duration::from_secs(10))
        .await
        .unwrap();
    client.write_all(b"early").await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(bounded(server).await.unwrap(), b"early");
}

#[tokio::test]
async fn tampered_record_is_invalid_data_and_reads_stay_failed() {
    let (mut raw, io) = tokio::io::duplex(1 << 16);
    let (mut stream, mut forge, _) = server_stream(io);
    let mut wire = BytesMut::new();
    forge.seal(b"hello", &mut wire).unwrap();
    wire[10] ^= 1;
    raw.write_all(&wire).await.unwrap();
    let mut buf = [0u8; 16];
    let e = stream.read(&mut buf).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    // A good record afterwards does not revive the stream.
    let mut wire = BytesMut::new();
    forge.seal(b"again", &mut wire).unwrap();
    raw.write_all(&wire).await.unwrap();
    assert!(stream.read(&mut buf).await.is_err());
}

#[tokio::test]
async fn truncated_record_then_close_is_unexpected_eof() {
    let (mut raw, io) = tokio::io::duplex(1 << 16);
    let (mut stream, mut forge, _) = server_stream(io);
    let mut wire = BytesMut::new();
    forge.seal(b"hello world", &mut wire).unwrap();
    raw.write_all(&wire[..wire.len() - 3]).await.unwrap();
    drop(raw);
    let mut buf = [0u8; 32];
    let e = stream.read(&mut buf).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn clean_close_between_records_is_eof() {
    let (mut raw, io) = tokio::io::duplex(1 << 16);
    let (mut stream, mut forge, _) = server_stream(io);
    let mut wire = BytesMut::new();
    forge.seal(b"last words", &mut wire).unwrap();
    raw.write_all(&wire).await.unwrap();
    drop(raw);
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last words");
}

#[tokio::test]
async fn oversized_frame_header_is_refused_without_waiting_for_the_body() {
    let (mut raw, io) = tokio::io::duplex(1 << 16);
    let (mut stream, _, _) = server_stream(io);
    // length = 64 MiB, type 6: refused from the header alone.
    raw.write_all(&(64u32 << 20).to_le_bytes()).await.unwrap();
    raw.write_all(&6u32.to_le_bytes()).await.unwrap();
    let mut buf = [0u8; 8];
    let e = bounded(stream.read(&mut buf)).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
}

/// A socket that takes at most 7 bytes per write and returns `Pending`
/// (waking itself) on every other call.
struct Trickle {
    written: Vec<u8>,
    toggle: bool,
}

impl AsyncWrite for Trickle {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.toggle = !self.toggle;
        if self.toggle {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = buf.len().min(7);
        self.written.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Trickle {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn trickling_socket_gets_every_byte_in_order() {
    let (c, s) = outcomes();
    let (sealer, opener) = layers(&c);
    let (_, mut server_opener) = layers(&s);
    let peer = Arc::new(AltsPeer::from_outcome(&c));
    let mut stream = AltsStream::new(
        Trickle {
            written: Vec::new(),
            toggle: false,
        },
        sealer,
        opener,
        BytesMut::new(),
        Vec::new(),
        peer,
    );
    let data = pattern(300 * 1024, 9);
    bounded(async {
        stream.write_all(&data).await.unwrap();
        stream.flush().await.unwrap();
    })
    .await;
    let mut wire = BytesMut::from(&stream.get_ref().written[..]);
    let mut got = Vec::new();
    while let Some(p) = server_opener.open(&mut wire).unwrap() {
        got.extend_from_slice(&p);
    }
    assert!(wire.is_empty());
    assert!(got == data);
}

/// A zero-byte write from the socket is an error, not a busy loop.
#[tokio::test]
async fn socket_accepting_nothing_is_write_zero() {
    struct Zero;
    impl AsyncWrite for Zero {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(0))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
    impl AsyncRead for Zero {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
    let (c, _) = outcomes();
    let (sealer, opener) = layers(&c);
    let peer = Arc::new(AltsPeer::from_outcome(&c));
    let mut stream = AltsStream::new(Zero, sealer, opener, BytesMut::new(), Vec::new(), peer);
    let e = bounded(async {
        stream.write_all(b"x").await?;
        stream.flush().await
    })
    .await
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WriteZero);
}
