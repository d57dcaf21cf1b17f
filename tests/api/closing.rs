//! The closing handshake as RFC 6455 7.4 words it, spoken with crafted
//! frames over a raw TCP connection (a WebSocket library would refuse to
//! send most of them).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{TestApp, WAIT};

/// Far longer than `WAIT`: a server that waits for a second close frame
/// keeps the connection open past the test's deadline.
const GRACE_MS: u64 = 30_000;

async fn spawn() -> TestApp {
    TestApp::spawn_with(|c| c.ws.close_grace_ms = GRACE_MS).await
}

/// A WebSocket on `/ws` upgraded by hand; signed in with `token` if given
/// (the server then sends `authenticated` first).
async fn open(t: &TestApp, token: Option<&str>) -> TcpStream {
    let addr = t.running.as_ref().expect("running").addr;
    let mut tcp = TcpStream::connect(addr).await.expect("connects");
    let query = token.map(|t| format!("?token={t}")).unwrap_or_default();
    let request = format!(
        "GET /ws{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("request");
    // Byte by byte, so that no frame is read with the response's head.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tokio::time::timeout(WAIT, tcp.read_u8())
            .await
            .expect("response in time")
            .expect("response");
        head.push(b);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// A masked client frame with FIN set.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

/// Reads server frames up to the close frame; its payload.
async fn close_payload(tcp: &mut TcpStream) -> Vec<u8> {
    tokio::time::timeout(WAIT, async {
        loop {
            let mut head = [0u8; 2];
            tcp.read_exact(&mut head).await.expect("a frame");
            let len = match head[1] & 0x7f {
                126 => u64::from(tcp.read_u16().await.expect("length")),
                127 => tcp.read_u64().await.expect("length"),
                n => u64::from(n),
            };
            let mut payload = vec![0u8; usize::try_from(len).expect("fits")];
            tcp.read_exact(&mut payload).await.expect("payload");
            if head[0] & 0x0f == 0x8 {
                return payload;
            }
        }
    })
    .await
    .expect("a close frame in time")
}

/// Sends a close frame with `payload`; the code of the server's close,
/// once the server has also ended the TCP connection, well within `WAIT`
/// and so long before the grace period.
async fn answer_to_close(t: &TestApp, token: Option<&str>, payload: &[u8]) -> Option<u16> {
    let mut tcp = open(t, token).await;
    tcp.write_all(&frame(0x8, payload))
        .await
        .expect("close sent");
    let answer = close_payload(&mut tcp).await;
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .expect("the server ends the connection without waiting for a second close")
        .expect("a clean end");
    assert!(rest.is_empty(), "nothing after the close frame: {rest:?}");
    match answer[..] {
        [] => None,
        [hi, lo, ..] => Some(u16::from_be_bytes([hi, lo])),
        [_] => panic!("a one-byte close payload"),
    }
}

/// Codes no endpoint may send are a protocol error (1002), before and
/// after authentication; 1005 and 1006 in particular never go back on
/// the wire. Valid codes are echoed.
#[tokio::test]
async fn invalid_close_codes_are_answered_with_1002() {
    let t = spawn().await;
    let (token, _) = t.register("alice").await;
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let answer = answer_to_close(&t, Some(&token), &code.to_be_bytes()).await;
        assert_eq!(answer, Some(1002), "code {code}");
    }
    let answer = answer_to_close(&t, None, &1005u16.to_be_bytes()).await;
    assert_eq!(answer, Some(1002), "before authentication");
    for code in [1000u16, 1001, 1003, 1012, 3000, 4999] {
        let answer = answer_to_close(&t, Some(&token), &code.to_be_bytes()).await;
        assert_eq!(answer, Some(code), "code {code}");
    }
    assert_eq!(answer_to_close(&t, Some(&token), &[]).await, Some(1000));
}

#[tokio::test]
async fn a_close_reason_that_is_not_utf8_is_answered_with_1007() {
    let t = spawn().await;
    let (token, _) = t.register("alice").await;
    let payload = [0x03, 0xe8, b'b', 0xff, b'e'];
    assert_eq!(
        answer_to_close(&t, Some(&token), &payload).await,
        Some(1007)
    );
    assert_eq!(answer_to_close(&t, None, &payload).await, Some(1007));
    // Valid UTF-8 passes, and the code is echoed.
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice("à bientôt".as_bytes());
    assert_eq!(
        answer_to_close(&t, Some(&token), &payload).await,
        Some(1000)
    );
}

/// A close frame with half a code is a protocol error, and it was still
/// the client's close: the server answers and ends the connection at once
/// instead of waiting the grace period for another.
#[tokio::test]
async fn a_one_byte_close_gets_1002_and_the_connection_ends_at_once() {
    let t = spawn().await;
    let (token, _) = t.register("alice").await;
    assert_eq!(answer_to_close(&t, Some(&token), &[0x03]).await, Some(1002));
    assert_eq!(answer_to_close(&t, None, &[0x03]).await, Some(1002));
}
