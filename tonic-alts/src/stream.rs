//! `AltsStream`: the record layer over any tokio byte stream.
//!
//! Rules (after tokio-rustls): `poll_read` reads from the socket only when no
//! decrypted bytes are pending; `poll_write` seals into an internal buffer and
//! is `Pending` only when it accepted nothing (the buffer is over its high
//! water mark and the socket will not take more); a zero-byte socket write is
//! `WriteZero`; record errors are `InvalidData` and fuse the read side.
//!
//! Vectored writes (HTTP/2 hands a frame header and its payload as separate
//! slices) are sealed into shared records: one tag and one socket write for
//! the whole batch. An idle connection holds no buffer: when a read finds
//! no bytes and nothing waits to be written, both buffers are released.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use alts_core::record::{Opener, Sealer};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::AltsPeer;

/// Sealed bytes buffered before `poll_write` pushes back.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Plaintext sealed per `poll_write` call at most.
const MAX_WRITE_CHUNK: usize = 64 * 1024;
/// Read granularity from the socket under load.
const READ_CHUNK: usize = 64 * 1024;
/// First read buffer of a connection or after an idle period: small
/// messages are the common case, and a small allocation is cheap to get
/// and release. A larger frame reserves what it needs when its header
/// arrives; reads that keep filling the buffer grow it to `READ_CHUNK`.
const FIRST_READ: usize = 8 * 1024;

/// An authenticated, encrypted ALTS connection.
pub struct AltsStream<IO> {
    io: IO,
    sealer: Sealer,
    opener: Opener,
    /// Ciphertext read from `io`, not yet opened.
    rbuf: BytesMut,
    /// Opened plaintext not yet handed to the reader.
    plain: BytesMut,
    /// Sealed bytes (and, on a client, its ClientFinished) not yet written.
    wbuf: BytesMut,
    read_eof: bool,
    /// The buffered handshake bytes wait for the first write instead of
    /// leaving on the first read (HTTP/2 clients, which write first).
    hold_pending: bool,
    peer: Arc<AltsPeer>,
}

impl<IO> AltsStream<IO> {
    /// Wraps `io` after a completed handshake. `leftover` holds bytes the
    /// handshake read past its last message (the peer's first records);
    /// `pending_write` holds handshake bytes still to send (a client's
    /// ClientFinished, sent together with its first records).
    pub fn new(
        io: IO,
        sealer: Sealer,
        opener: Opener,
        leftover: BytesMut,
        pending_write: Vec<u8>,
        peer: Arc<AltsPeer>,
    ) -> Self {
        Self {
            io,
            sealer,
            opener,
            rbuf: leftover,
            plain: BytesMut::new(),
            wbuf: BytesMut::from(&pending_write[..]),
            read_eof: false,
            hold_pending: false,
            peer,
        }
    }

    /// Keeps the pending handshake bytes until the first write, flush or
    /// shutdown, so they share a packet with the first records: only for
    /// applications that write before they wait for the peer (HTTP/2
    /// clients), otherwise both sides wait.
    pub(crate) fn hold_pending_until_write(&mut self) {
        self.hold_pending = !self.wbuf.is_empty();
    }

    /// The authenticated peer.
    pub fn peer(&self) -> &Arc<AltsPeer> {
        &self.peer
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The inner stream, mutably (writing to it directly corrupts the
    /// record stream).
    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    pub(crate) fn set_peer(&mut self, peer: Arc<AltsPeer>) {
        self.peer = peer;
    }
}

impl<IO> AltsStream<IO> {
    /// Frees the read and write buffers if they hold nothing: an idle
    /// connection then costs no buffer memory; the next read or write
    /// allocates again.
    fn release_idle_buffers(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 0 {
            self.wbuf = BytesMut::new();
        }
    }
}

impl<IO: AsyncWrite + Unpin> AltsStream<IO> {
    /// Seals up to `MAX_WRITE_CHUNK` bytes of `bufs` into `wbuf` (whole
    /// slices; a first slice longer than the chunk is cut) and starts
    /// writing them. Pending only when the buffer is over its high-water
    /// mark and the socket takes nothing.
    fn poll_seal_and_write(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.hold_pending = false;
        if self.wbuf.len() >= WRITE_HIGH_WATER {
            match self.poll_flush_wbuf(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if self.wbuf.len() >= WRITE_HIGH_WATER => return Poll::Pending,
                _ => {}
            }
        }
        let (mut count, mut n) = (0, 0);
        for b in bufs {
            if n + b.len() > MAX_WRITE_CHUNK {
                break;
            }
            n += b.len();
            count += 1;
        }
        let sealed = if n == 0 {
            // The first non-empty slice alone exceeds the chunk: take part of it.
            match bufs.iter().find(|b| !b.is_empty()) {
                Some(first) => {
                    let part = &first[..first.len().min(MAX_WRITE_CHUNK)];
                    self.sealer.seal(part, &mut self.wbuf).map(|()| part.len())
                }
                None => return Poll::Ready(Ok(0)),
            }
        } else {
            self.sealer
                .seal_vectored(&bufs[..count], &mut self.wbuf)
                .map(|()| n)
        };
        let n = sealed.map_err(invalid)?;
        // Push what the socket takes now; the rest goes on the next write or flush.
        if let Poll::Ready(Err(e)) = self.poll_flush_wbuf(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush_wbuf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wbuf.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            tracing::trace!(bytes = n, "records written");
            self.wbuf.advance(n);
        }
        self.wbuf.clear();
        Poll::Ready(Ok(()))
    }
}

fn invalid(e: alts_core::record::RecordError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for AltsStream<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Pending handshake bytes (a client's ClientFinished) must reach the
        // peer even if the application only reads.
        if !this.wbuf.is_empty()
            && !this.hold_pending
            && let Poll::Ready(Err(e)) = this.poll_flush_wbuf(cx)
        {
            return Poll::Ready(Err(e));
        }
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain[..n]);
                this.plain.advance(n);
                if this.plain.is_empty() {
                    // Release our share of the read buffer so it can be reused in place.
                    this.plain = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(p) = this.opener.open(&mut this.rbuf).map_err(invalid)? {
                this.plain = p;
                continue;
            }
            if this.read_eof {
                return if this.rbuf.is_empty() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside an ALTS record",
                    )))
                };
            }
            if this.rbuf.capacity() == 0 {
                this.rbuf.reserve(FIRST_READ);
            } else if this.rbuf.capacity() - this.rbuf.len() < FIRST_READ / 4 {
                this.rbuf.reserve(READ_CHUNK);
            }
            match poll_read_buf(Pin::new(&mut this.io), cx, &mut this.rbuf) {
                Poll::Pending => {
                    this.release_idle_buffers();
                    return Poll::Pending;
                }
                Poll::Ready(n) => {
                    let n = n?;
                    tracing::trace!(bytes = n, "records read");
                    if n == 0 {
                        this.read_eof = true;
                    }
                }
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AltsStream<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_seal_and_write(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_seal_and_write(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.hold_pending = false;
        ready!(self.poll_flush_wbuf(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.hold_pending = false;
        ready!(self.poll_flush_wbuf(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO> std::fmt::Debug for AltsStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AltsStream")
            .field("peer", &self.peer.identity)
            .finish_non_exhaustive()
    }
}
