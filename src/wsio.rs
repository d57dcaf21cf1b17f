//! WebSocket framing (RFC 6455) on the server side of an upgraded
//! connection, built for many mostly idle connections and for fan-out.
//!
//! tungstenite (which still parses frame headers here, derives the
//! handshake key and drives every client) keeps a read buffer and a write
//! buffer per connection for the connection's whole life, and writes each
//! frame with its own system call. Here neither buffer exists while a
//! connection is idle: reads go through a scratch buffer on the stack and
//! only an incomplete frame is kept on the heap; outgoing frames are
//! queued into one buffer that is written in a single call and freed once
//! written. A connection waiting for input therefore holds no buffer at
//! all, and a burst of frames to one client (an ack and its message, a
//! commit carrying several messages of a room) costs one write.

use std::future::poll_fn;
use std::io::{self, Cursor};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// Bytes read from the socket per call. It lives on the stack during the
/// call only, so its size costs an idle connection nothing.
const SCRATCH: usize = 4096;

/// Close codes this layer decides by itself.
pub const PROTOCOL_ERROR: u16 = 1002;
pub const INVALID_DATA: u16 = 1007;
pub const TOO_BIG: u16 = 1009;

/// Whether a close frame may carry `code` (RFC 6455 7.4 and the IANA
/// registry). 1005, 1006 and 1015 only stand for a missing code, a
/// connection lost without a close frame and a failed TLS handshake, so
/// they never travel in a frame; 1004 and 1016-2999 are reserved for the
/// protocol, 3000-4999 belong to libraries and applications.
pub fn close_code_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A complete message from the client.
#[derive(Debug, PartialEq)]
pub enum Msg {
    Text(String),
    /// Not part of confab's protocol (the `/ws` route refuses it), but
    /// kept whole so that the framing can be tested by echoing it.
    Binary(Vec<u8>),
    /// Already answered: the pong is queued (sent with the next flush).
    Ping,
    Pong,
    /// The client's close frame, with its code when it gave one (always a
    /// valid one: see `close_code_valid`). Nothing is read after it.
    Close(Option<u16>),
}

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A violation of RFC 6455 (unmasked frame, reserved bits or opcode,
    /// fragmented or oversized control frame…): close with 1002.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A frame or message over the configured limit: close with 1009.
    #[error("frame too big")]
    TooBig,
    /// A text message that is not UTF-8: close with 1007.
    #[error("text is not UTF-8")]
    BadUtf8,
    /// A close frame whose reason is not UTF-8: close with 1007.
    #[error("close reason is not UTF-8")]
    BadCloseReason,
}

impl WsError {
    /// The close code that answers this error, if the connection is still
    /// worth a close frame.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            WsError::Io(_) => None,
            WsError::Protocol(_) => Some(PROTOCOL_ERROR),
            WsError::TooBig => Some(TOO_BIG),
            WsError::BadUtf8 | WsError::BadCloseReason => Some(INVALID_DATA),
        }
    }
}

/// A fragmented message being put together.
struct Partial {
    text: bool,
    data: Vec<u8>,
}

pub struct WsConn<S> {
    io: S,
    /// Received bytes not yet parsed (an incomplete frame); empty and
    /// unallocated between frames.
    rbuf: Vec<u8>,
    /// Boxed: rare, and inline it would cost every connection its size.
    partial: Option<Box<Partial>>,
    /// Frames queued for the client; `wbuf[wpos..]` is still unwritten.
    wbuf: Vec<u8>,
    wpos: usize,
    max_message: usize,
    eof: bool,
    /// The client's close frame has been read (well formed or not): the
    /// client sends nothing after it, so nothing more is read and the
    /// closing handshake must not wait for another.
    peer_closed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsConn<S> {
    /// `leftover`: bytes the HTTP layer read past the upgrade request.
    pub fn new(io: S, leftover: &[u8], max_message: usize) -> WsConn<S> {
        WsConn {
            io,
            rbuf: leftover.to_vec(),
            partial: None,
            wbuf: Vec::new(),
            wpos: 0,
            max_message,
            eof: false,
            peer_closed: false,
        }
    }

    /// The next message; `None` once the client has closed the TCP
    /// connection or after its close frame. Cancel-safe: bytes read are
    /// kept until parsed.
    pub async fn next(&mut self) -> Option<Result<Msg, WsError>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Msg, WsError>>> {
        loop {
            if self.peer_closed {
                return Poll::Ready(None);
            }
            match self.parse() {
                Ok(Some(msg)) => return Poll::Ready(Some(Ok(msg))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            if self.eof {
                return Poll::Ready(None);
            }
            let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH];
            let mut buf = ReadBuf::uninit(&mut scratch);
            if let Err(e) = ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf)) {
                return Poll::Ready(Some(Err(e.into())));
            }
            if buf.filled().is_empty() {
                self.eof = true;
                if self.rbuf.is_empty() && self.partial.is_none() {
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(WsError::Io(io::ErrorKind::UnexpectedEof.into()))));
            }
            self.rbuf.extend_from_slice(buf.filled());
        }
    }

    /// Takes one frame off `rbuf` if it is all there; a complete message
    /// when that frame ends one.
    fn parse(&mut self) -> Result<Option<Msg>, WsError> {
        loop {
            let mut cur = Cursor::new(&self.rbuf[..]);
            let Some((head, len)) =
                FrameHeader::parse(&mut cur).map_err(|_| WsError::Protocol("bad frame header"))?
            else {
                return Ok(None);
            };
            let head_len = cur.position() as usize;
            if head.rsv1 || head.rsv2 || head.rsv3 {
                return Err(WsError::Protocol("reserved bits set"));
            }
            let Some(mask) = head.mask else {
                return Err(WsError::Protocol("client frames must be masked"));
            };
            let control = matches!(head.opcode, OpCode::Control(_));
            if control && (!head.is_final || len > 125) {
                return Err(WsError::Protocol("bad control frame"));
            }
            // Refused before its payload arrives: nothing past the limit
            // is ever buffered.
            let so_far = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
            if !control && len.saturating_add(so_far) > self.max_message as u64 {
                return Err(WsError::TooBig);
            }
            let len = len as usize;
            if self.rbuf.len() < head_len + len {
                return Ok(None);
            }
            let mut payload = self.rbuf[head_len..head_len + len].to_vec();
            if self.rbuf.len() == head_len + len {
                self.rbuf = Vec::new();
            } else {
                self.rbuf.drain(..head_len + len);
            }
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
            let done = match head.opcode {
                OpCode::Control(Control::Ping) => {
                    self.queue(0xA, &payload);
                    return Ok(Some(Msg::Ping));
                }
                OpCode::Control(Control::Pong) => return Ok(Some(Msg::Pong)),
                OpCode::Control(Control::Close) => {
                    self.peer_closed = true;
                    return close_frame(&payload).map(|code| Some(Msg::Close(code)));
                }
                OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                    return Err(WsError::Protocol("reserved opcode"));
                }
                OpCode::Data(Data::Text | Data::Binary) => {
                    if self.partial.is_some() {
                        return Err(WsError::Protocol("new message inside a fragmented one"));
                    }
                    let p = Partial {
                        text: head.opcode == OpCode::Data(Data::Text),
                        data: payload,
                    };
                    if !head.is_final {
                        self.partial = Some(Box::new(p));
                        continue;
                    }
                    p
                }
                OpCode::Data(Data::Continue) => {
                    let Some(mut p) = self.partial.take() else {
                        return Err(WsError::Protocol("continuation without a message"));
                    };
                    p.data.extend_from_slice(&payload);
                    if !head.is_final {
                        self.partial = Some(p);
                        continue;
                    }
                    *p
                }
            };
            return if done.text {
                String::from_utf8(done.data)
                    .map(|s| Some(Msg::Text(s)))
                    .map_err(|_| WsError::BadUtf8)
            } else {
                Ok(Some(Msg::Binary(done.data)))
            };
        }
    }

    /// Queues one unfragmented frame (servers do not mask).
    fn queue(&mut self, opcode: u8, payload: &[u8]) {
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        self.wbuf.reserve(payload.len() + 10);
        self.wbuf.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            self.wbuf.push(len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            self.wbuf.push(126);
            self.wbuf.extend_from_slice(&short.to_be_bytes());
        } else {
            self.wbuf.push(127);
            self.wbuf.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.wbuf.extend_from_slice(payload);
    }

    pub fn queue_text(&mut self, text: &str) {
        self.queue(0x1, text.as_bytes());
    }

    pub fn queue_binary(&mut self, data: &[u8]) {
        self.queue(0x2, data);
    }

    pub fn queue_ping(&mut self) {
        self.queue(0x9, &[]);
    }

    /// A close frame; the reason is cut to the 123 bytes a close frame
    /// can carry, at a character boundary. A code that may not travel in
    /// a frame (`close_code_valid`) gives a close frame without code or
    /// reason, which is what 1005 ("no code") means.
    pub fn queue_close(&mut self, code: u16, reason: &str) {
        if !close_code_valid(code) {
            self.queue(0x8, &[]);
            return;
        }
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut payload = Vec::with_capacity(2 + cut);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..cut]);
        self.queue(0x8, &payload);
    }

    /// Whether the client's close frame has been read.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Bytes queued and not yet written.
    pub fn unwritten(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Writes everything queued. Cancel-safe: what is left stays queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        // Freed, not kept: most connections are idle most of the time.
        self.wbuf = Vec::new();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }

    /// The server's side of the closing handshake: queues a close frame
    /// and, unless the client's close has already been read, writes it and
    /// waits for the client's answering close; the caller bounds the wait.
    /// Closing the socket with client frames still unread in the kernel
    /// makes it send a reset, and the client may then never read the close
    /// frame and its code (a flooding client usually has frames left
    /// unread here). Once the client's close is in, whether it came first
    /// or answers this one, the server ends the TCP connection first, as
    /// RFC 6455 5.5.1 asks: the caller drops the connection on return.
    pub async fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        self.queue_close(code, reason);
        if self.peer_closed {
            return self.shutdown().await;
        }
        self.flush().await?;
        for _ in 0..100_000 {
            match self.next().await {
                Some(Ok(Msg::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            }
        }
        Ok(())
    }

    /// Ends the TCP connection's sending side once everything is written.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.flush().await?;
        self.io.shutdown().await
    }
}

/// The code of a close frame's payload, checked: a payload of one byte or
/// with a code no endpoint may send is a protocol error (1002), a reason
/// that is not UTF-8 is invalid data (1007).
fn close_frame(payload: &[u8]) -> Result<Option<u16>, WsError> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(WsError::Protocol("close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    if !close_code_valid(code) {
        return Err(WsError::Protocol("invalid close code"));
    }
    if std::str::from_utf8(reason).is_err() {
        return Err(WsError::BadCloseReason);
    }
    Ok(Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    /// A client frame: masked, as RFC 6455 requires.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![first];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    #[tokio::test]
    async fn reads_whole_fragmented_and_split_messages() {
        let (mut client, server) = duplex(64);
        let mut ws = WsConn::new(server, &[], 1 << 16);
        let mut bytes = client_frame(0x81, b"hello");
        bytes.extend(client_frame(0x01, b"frag"));
        bytes.extend(client_frame(0x89, b"p"));
        bytes.extend(client_frame(0x80, b"mented"));
        let long = "x".repeat(300);
        bytes.extend(client_frame(0x81, long.as_bytes()));
        // Written in small pieces: frames arrive split across reads.
        let writer = tokio::spawn(async move {
            for chunk in bytes.chunks(7) {
                client.write_all(chunk).await.expect("write");
            }
            client
        });
        assert_eq!(
            ws.next().await.expect("msg").expect("ok"),
            Msg::Text("hello".into())
        );
        // A ping between fragments is answered and reported.
        assert_eq!(ws.next().await.expect("msg").expect("ok"), Msg::Ping);
        assert_eq!(
            ws.next().await.expect("msg").expect("ok"),
            Msg::Text("fragmented".into())
        );
        assert_eq!(ws.next().await.expect("msg").expect("ok"), Msg::Text(long));
        let mut client = writer.await.expect("writer");
        ws.flush().await.expect("flush");
        let mut pong = [0u8; 3];
        client.read_exact(&mut pong).await.expect("pong");
        assert_eq!(pong, [0x8A, 1, b'p']);
        drop(client);
        assert!(ws.next().await.is_none());
    }

    #[tokio::test]
    async fn refuses_what_the_protocol_forbids() {
        async fn first_error(bytes: Vec<u8>, max: usize) -> WsError {
            let (mut client, server) = duplex(1 << 16);
            let mut ws = WsConn::new(server, &[], max);
            client.write_all(&bytes).await.expect("write");
            match ws.next().await {
                Some(Err(e)) => e,
                other => panic!("expected an error, got {other:?}"),
            }
        }
        // Unmasked.
        let e = first_error(vec![0x81, 0x01, b'a'], 100).await;
        assert_eq!(e.close_code(), Some(PROTOCOL_ERROR));
        // Reserved bit.
        let e = first_error(client_frame(0xC1, b"a"), 100).await;
        assert_eq!(e.close_code(), Some(PROTOCOL_ERROR));
        // Reserved opcode.
        let e = first_error(client_frame(0x83, b"a"), 100).await;
        assert_eq!(e.close_code(), Some(PROTOCOL_ERROR));
        // Fragmented ping.
        let e = first_error(client_frame(0x09, b"a"), 100).await;
        assert_eq!(e.close_code(), Some(PROTOCOL_ERROR));
        // Continuation with nothing to continue.
        let e = first_error(client_frame(0x80, b"a"), 100).await;
        assert_eq!(e.close_code(), Some(PROTOCOL_ERROR));
        // Over the limit: refused on the header alone.
        let e = first_error(client_frame(0x81, &[b'a'; 200])[..10].to_vec(), 100).await;
        assert_eq!(e.close_code(), Some(TOO_BIG));
        // A fragmented message over the limit in total.
        let mut two = client_frame(0x01, &[b'a'; 60]);
        two.extend(client_frame(0x80, &[b'a'; 60]));
        assert_eq!(first_error(two, 100).await.close_code(), Some(TOO_BIG));
        // Not UTF-8.
        let e = first_error(client_frame(0x81, &[0xff, 0xfe]), 100).await;
        assert_eq!(e.close_code(), Some(INVALID_DATA));
    }

    /// A close frame's code must be one an endpoint may send and its
    /// reason UTF-8; nothing after a close frame is read.
    #[tokio::test]
    async fn close_frames_are_checked() {
        async fn read_close(payload: &[u8]) -> (Option<Result<Msg, WsError>>, bool) {
            let (mut client, server) = duplex(1 << 10);
            let mut ws = WsConn::new(server, &[], 100);
            let mut bytes = client_frame(0x88, payload);
            // Sent after the close: never read.
            bytes.extend(client_frame(0x81, b"late"));
            client.write_all(&bytes).await.expect("write");
            let first = ws.next().await;
            let after = ws.next().await.is_none();
            (first, ws.peer_closed() && after)
        }
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let (msg, closed) = read_close(&code.to_be_bytes()).await;
            match msg {
                Some(Err(e)) => assert_eq!(e.close_code(), Some(PROTOCOL_ERROR), "code {code}"),
                other => panic!("code {code}: {other:?}"),
            }
            assert!(closed, "code {code}");
        }
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 4999,
        ] {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice("au revoir é".as_bytes());
            let (msg, closed) = read_close(&payload).await;
            assert_eq!(
                msg.expect("a close").expect("valid"),
                Msg::Close(Some(code))
            );
            assert!(closed);
        }
        let (msg, closed) = read_close(&[]).await;
        assert_eq!(msg.expect("a close").expect("valid"), Msg::Close(None));
        assert!(closed);
        // One byte: half a code.
        let (msg, closed) = read_close(&[0x03]).await;
        match msg {
            Some(Err(e)) => assert_eq!(e.close_code(), Some(PROTOCOL_ERROR)),
            other => panic!("one byte: {other:?}"),
        }
        assert!(closed);
        // A reason that is not UTF-8.
        let (msg, closed) = read_close(&[0x03, 0xe8, b'o', 0xff, b'k']).await;
        match msg {
            Some(Err(e)) => assert_eq!(e.close_code(), Some(INVALID_DATA)),
            other => panic!("bad reason: {other:?}"),
        }
        assert!(closed);
    }

    /// Once the client's close is in, closing writes the answer and ends
    /// the connection without waiting for a close that will not come.
    #[tokio::test]
    async fn closing_after_the_clients_close_does_not_wait() {
        let (mut client, server) = duplex(1 << 10);
        let mut ws = WsConn::new(server, &[], 100);
        client
            .write_all(&client_frame(0x88, &[0x03]))
            .await
            .expect("write");
        let e = match ws.next().await {
            Some(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        };
        let code = e.close_code().expect("a code");
        // The client never writes again: a wait for its close would last
        // until the timeout.
        tokio::time::timeout(Duration::from_secs(10), ws.close(code, &e.to_string()))
            .await
            .expect("no wait for a second close")
            .expect("written");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read to the end");
        assert_eq!(got[..4], [0x88, got[1], 0x03, 0xea]);
        assert_eq!(usize::from(got[1]) + 2, got.len());
    }

    /// Codes that stand for no code or no close frame never go on the
    /// wire: the close frame goes out without a code.
    #[tokio::test]
    async fn reserved_codes_are_never_sent() {
        for code in [1005u16, 1006, 1015, 0, 5000] {
            let (mut client, server) = duplex(1 << 10);
            let mut ws = WsConn::new(server, &[], 100);
            ws.queue_close(code, "why");
            ws.flush().await.expect("flush");
            let mut frame = [0u8; 2];
            client.read_exact(&mut frame).await.expect("read");
            assert_eq!(frame, [0x88, 0], "code {code}");
        }
    }

    #[tokio::test]
    async fn queued_frames_go_out_in_one_buffer_that_is_then_freed() {
        let (mut client, server) = duplex(1 << 20);
        let mut ws = WsConn::new(server, &[], 100);
        ws.queue_text("a");
        let long = "b".repeat(70_000);
        ws.queue_text(&long);
        ws.queue_close(4009, &"é".repeat(100));
        ws.flush().await.expect("flush");
        assert_eq!(ws.wbuf.capacity(), 0);
        let mut head = [0u8; 3];
        client.read_exact(&mut head).await.expect("read");
        assert_eq!(head, [0x81, 1, b'a']);
        let mut head = [0u8; 10];
        client.read_exact(&mut head).await.expect("read");
        assert_eq!(head[..2], [0x81, 127]);
        assert_eq!(u64::from_be_bytes(head[2..].try_into().expect("8")), 70_000);
        let mut body = vec![0u8; 70_000];
        client.read_exact(&mut body).await.expect("read");
        let mut close = [0u8; 2];
        client.read_exact(&mut close).await.expect("read");
        // 2 bytes of code and 122 of reason: 123 would split an "é".
        assert_eq!(close, [0x88, 124]);
    }
}
