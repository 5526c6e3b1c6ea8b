//! The server hands a connection to tonic as soon as its last handshake
//! message is sent and verifies the client's ClientFinished inside the
//! stream: nothing the client sends is read before that check, a forged
//! ClientFinished refuses the connection, and a client that never sends one
//! is cut off at the handshake timeout. Over real sockets on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alts_core::handshake::{ClientHandshake, ClientOptions, Handshake};
use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic_alts::AltsConnector;

/// Copies one handshake frame (`u32` big-endian length, message) from `from`
/// to `to`, flipping the message's last byte when `flip`.
async fn frame<R, W>(from: &mut R, to: &mut W, flip: bool) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut len = [0u8; 4];
    from.read_exact(&mut len).await?;
    let mut msg = vec![0u8; u32::from_be_bytes(len) as usize];
    from.read_exact(&mut msg).await?;
    if flip && let Some(last) = msg.last_mut() {
        *last ^= 1;
    }
    to.write_all(&len).await?;
    to.write_all(&msg).await
}

/// A TCP proxy to `server` that, when `forge`, flips the last byte of the
/// client's second handshake message (ClientFinished: the end of its MAC).
async fn proxy(server: SocketAddr, forge: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(upstream) = TcpStream::connect(server).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = upstream.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let _ = async {
                    frame(&mut cr, &mut sw, false).await?; // ClientInit
                    frame(&mut cr, &mut sw, forge).await?; // ClientFinished
                    tokio::io::copy(&mut cr, &mut sw).await
                }
                .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_client_finished_is_refused_before_any_request_is_read() {
    let mut f = Fixture::new();
    let server_id = f.issue("backend-prod");
    let client_id = f.issue("frontend-prod");
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let server = serve(
        f.config(&server_id),
        ServerOpts::interceptor(move |r| {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(r)
        }),
    )
    .await;
    let client = f.config(&client_id);
    let connector = || AltsConnector::new(client.clone()).target_identity("backend-prod");

    // Honest peer through the same kind of proxy: served.
    let honest = proxy(server.addr, false).await;
    let mut c = bounded("connect", try_connect(honest, connector()))
        .await
        .expect("connect");
    let r = bounded("unary", unary(&mut c, "hi")).await.expect("honest call");
    assert_eq!(r.peer_identity, "frontend-prod");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Forged ClientFinished: the request riding behind it is never read.
    let forged = proxy(server.addr, true).await;
    let result = bounded("forged", async {
        let mut c = try_connect(forged, connector()).await?;
        unary(&mut c, "sneaky").await.map_err(Into::into)
    })
    .await;
    let _: Box<dyn std::error::Error> = match result {
        Ok(r) => panic!("forged ClientFinished was served: {r:?}"),
        Err(e) => e,
    };
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a request behind a forged ClientFinished reached the service"
    );

    // The server keeps serving.
    assert_serving(server.addr, &client, "frontend-prod").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_client_finished_is_cut_off_at_the_handshake_timeout() {
    let mut f = Fixture::new();
    let server_id = f.issue("backend-prod");
    let client_id = f.issue("frontend-prod");
    let server = serve_plain(f.config(&server_id).handshake_timeout(Duration::from_millis(300))).await;
    let client = f.config(&client_id);

    // A client that sends ClientInit, reads the server's answer and stops.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut hs = ClientHandshake::new(client.snapshot(), ClientOptions::default(), alts_examples::now())
        .expect("client handshake");
    let mut out = Vec::new();
    hs.poll_output(&mut out);
    tcp.write_all(&out).await.expect("ClientInit");
    let start = std::time::Instant::now();
    // The server may send its HTTP/2 preamble, then must close.
    let mut sink = Vec::new();
    bounded("server closes", tcp.read_to_end(&mut sink)).await.ok();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before the handshake timeout"
    );
    assert!(waited < Duration::from_secs(5), "still open after {waited:?}");

    // Honest clients are still served.
    assert_serving(server.addr, &client, "frontend-prod").await;
}
