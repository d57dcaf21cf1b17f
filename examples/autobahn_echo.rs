//! An echo server over confab's WebSocket framing (`confab::wsio`, the
//! code behind `/ws`), for the Autobahn test suite run by
//! `.ci/autobahn.sh`. Not part of the product: it answers any upgrade
//! request, on any path, without authentication.
//!
//! ```text
//! cargo run --example autobahn_echo -- [ADDR] [MAX_MESSAGE_BYTES]
//! ```
//!
//! `ADDR` defaults to 127.0.0.1:9001 (port 0 picks a free one); the bound
//! address is printed as `listening on ADDR` once the socket is open.
//! `MAX_MESSAGE_BYTES` defaults to `/ws`'s own default limit
//! (`limits.max_frame_bytes`); the suite's chapter 9 needs 16 MiB.

use std::time::Duration;

use confab::wsio::{Msg, WsConn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest upgrade request read.
const MAX_REQUEST: usize = 16 * 1024;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let defaults = confab::config::Config::default();
    let max = match args.next() {
        Some(n) => n.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("MAX_MESSAGE_BYTES: not a number: {n:?}"),
            )
        })?,
        None => defaults.limits.max_frame_bytes,
    };
    let grace = Duration::from_millis(defaults.ws.close_grace_ms);
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = serve(stream, max, grace).await {
                eprintln!("connection: {e}");
            }
        });
    }
}

async fn serve(mut stream: TcpStream, max: usize, grace: Duration) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let Some((key, leftover)) = handshake(&mut stream).await? else {
        stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    let mut ws = WsConn::new(stream, &leftover, max);
    // The same ending as `/ws`: an answer to the client's close, or the
    // close code of a framing error, then the closing handshake within
    // the grace period.
    let (code, reason) = loop {
        match ws.next().await {
            None => return Ok(()),
            Some(Ok(Msg::Text(text))) => ws.queue_text(&text),
            Some(Ok(Msg::Binary(data))) => ws.queue_binary(&data),
            Some(Ok(Msg::Ping | Msg::Pong)) => {}
            Some(Ok(Msg::Close(code))) => break (code.unwrap_or(1000), String::new()),
            Some(Err(e)) => match e.close_code() {
                Some(code) => break (code, e.to_string()),
                None => return Ok(()),
            },
        }
        ws.flush().await?;
    };
    let _ = tokio::time::timeout(grace, ws.close(code, &reason)).await;
    Ok(())
}

/// Reads the upgrade request; its `Sec-WebSocket-Key` (`None` for a
/// request without one) and the bytes read past it.
async fn handshake(stream: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let key = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_string())
    });
    Ok(key.map(|k| (k, buf[end..].to_vec())))
}
