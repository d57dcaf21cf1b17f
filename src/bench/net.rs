//! The generator's side of the wire: a minimal HTTP/1.1 client for the
//! few JSON calls a run needs, and WebSocket connections bound to a chosen
//! loopback source address. Only loopback targets are accepted anywhere.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A connection to the server: confab's `/ws`, or Socket.IO's
/// `/socket.io/` (`--socketio`) seen through the same frames (see
/// [`Ws::next`] and [`Ws::send`]), so the scenarios are written once.
pub struct Ws {
    inner: WebSocketStream<TcpStream>,
    sio: bool,
}

/// Speak Socket.IO (`--socketio`, set once per worker process).
pub static SOCKETIO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

type WsResult<T> = Result<T, tokio_tungstenite::tungstenite::Error>;

/// Socket.IO ack ids for the frame ids the scenarios use (`j`, `c`,
/// `s<seq>`), and back.
fn ack_id(id: &str) -> Option<u64> {
    match id {
        "j" => Some(1),
        "c" => Some(2),
        _ => id.strip_prefix('s')?.parse::<u64>().ok().map(|n| n + 10),
    }
}

fn frame_id(ack: u64) -> String {
    match ack {
        1 => "j".into(),
        2 => "c".into(),
        n => format!("s{}", n.saturating_sub(10)),
    }
}

impl Ws {
    /// The next message, as a `/ws` frame. Socket.IO: pings are answered
    /// here, `42["type",data,…]` becomes `{"type":…,"args":[…]}` (which
    /// the scenarios read like an event) and an ack
    /// `43<id>[{"ok":…,"data"|"error":…}]` becomes an `ack` or `error`
    /// frame with its id.
    pub async fn next(&mut self) -> Option<WsResult<Message>> {
        use futures_util::{SinkExt, StreamExt};
        if !self.sio {
            return self.inner.next().await;
        }
        loop {
            let msg = match self.inner.next().await? {
                Ok(Message::Text(t)) => t,
                other => return Some(other),
            };
            let t = msg.as_str();
            if t == "2" {
                if let Err(e) = self.inner.send(Message::text("3")).await {
                    return Some(Err(e));
                }
                continue;
            }
            if let Some(ev) = t.strip_prefix("42[\"") {
                let Some(end) = ev.find('"') else { continue };
                return Some(Ok(Message::text(format!(
                    r#"{{"type":"{}","args":{}}}"#,
                    &ev[..end],
                    &t[2..]
                ))));
            }
            if let Some(rest) = t.strip_prefix("43") {
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                let Ok(id) = rest[..digits].parse::<u64>() else {
                    continue;
                };
                let Ok(Value::Array(mut args)) = serde_json::from_str::<Value>(&rest[digits..])
                else {
                    continue;
                };
                let a = args.pop().unwrap_or_default();
                let f = if a["ok"] == Value::Bool(true) {
                    serde_json::json!({"type": "ack", "id": frame_id(id), "data": a["data"]})
                } else {
                    serde_json::json!({"type": "error", "id": frame_id(id), "data": a["error"]})
                };
                return Some(Ok(Message::text(f.to_string())));
            }
            if let Some(e) = t.strip_prefix("44") {
                return Some(Ok(Message::text(format!(
                    r#"{{"type":"error","data":{{"code":"refused","message":{}}}}}"#,
                    serde_json::to_string(e).unwrap_or_default()
                ))));
            }
            if t.starts_with("41") || t == "1" {
                return None;
            }
        }
    }

    /// Sends a `/ws` frame (`{"type","id","data"}`); over Socket.IO as
    /// the event of that type, with the frame's id as its ack id.
    pub async fn send(&mut self, m: Message) -> WsResult<()> {
        use futures_util::SinkExt;
        if !self.sio {
            return self.inner.send(m).await;
        }
        let Message::Text(t) = &m else {
            return self.inner.send(m).await;
        };
        let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
        let kind = v["type"].as_str().unwrap_or("");
        let ack = v["id"].as_str().and_then(ack_id);
        let packet = format!(
            "42{}{}",
            ack.map(|a| a.to_string()).unwrap_or_default(),
            serde_json::json!([kind, v["data"]])
        );
        self.inner.send(Message::text(packet)).await
    }

    pub async fn close(
        &mut self,
        msg: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>,
    ) -> WsResult<()> {
        self.inner.close(msg).await
    }
}

const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A response larger than this is not one the benchmark asked for.
const MAX_RESPONSE: usize = 8 << 20;

/// `http://127.0.0.1:8080` (a trailing path is ignored) → the address.
/// Anything that does not resolve to loopback is refused: the generator
/// must never send load off this machine.
pub fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| format!("{url:?}: only http:// or ws:// URLs (no TLS) are supported"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addrs: Vec<SocketAddr> = hostport
        .to_socket_addrs()
        .map_err(|e| format!("{url:?}: {e}"))?
        .collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{url:?}: resolves to no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{url:?} resolves to {}, which is not a loopback address; the benchmark only targets this machine",
            addr.ip()
        ));
    }
    Ok(addr)
}

/// Source addresses to spread client sockets over: one source address has
/// about 28,000 ephemeral ports, so large runs need several. 127.0.0.2,
/// 127.0.0.3, … when the server is on IPv4 loopback; none (the kernel's
/// choice) otherwise.
pub fn source_addrs(server: SocketAddr, count: usize) -> Vec<IpAddr> {
    if !server.is_ipv4() || count == 0 {
        return Vec::new();
    }
    (0..count.min(250))
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
        .collect()
}

/// Names the machine limit behind a connection error, when it is one.
pub fn classify_io(e: &std::io::Error, source: Option<IpAddr>) -> String {
    match (e.kind(), e.raw_os_error()) {
        (_, Some(24)) => format!(
            "the generator's open-file limit (RLIMIT_NOFILE {}): {e}",
            nofile_limit(None).map_or("?".into(), |n| n.to_string())
        ),
        (ErrorKind::AddrNotAvailable, _) | (_, Some(99)) => format!(
            "ephemeral ports of source address {} are exhausted: {e}",
            source.map_or("(default)".into(), |ip| ip.to_string())
        ),
        (ErrorKind::AddrInUse, _) => format!(
            "ephemeral ports of source address {} are exhausted: {e}",
            source.map_or("(default)".into(), |ip| ip.to_string())
        ),
        _ => e.to_string(),
    }
}

/// The soft open-file limit of a process (this one when `pid` is None),
/// from /proc: no libc needed.
pub fn nofile_limit(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/limits"),
        None => "/proc/self/limits".into(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// VmRSS of a process in bytes.
/// CPU time (user + system, all threads) a process has used, in µs,
/// from `/proc/{pid}/stat` (clock ticks of 1/100 s on Linux).
pub fn cpu_us(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are
    // counted from after its closing one (state is field 3).
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system; no memory is shared.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some((utime + stime) * 1_000_000 / hz)
}

pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn tcp(
    server: SocketAddr,
    source: Option<IpAddr>,
    recv_buffer: Option<u32>,
) -> Result<TcpStream, String> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| classify_io(&e, source))?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| classify_io(&e, source))?;
    }
    if let Some(size) = recv_buffer {
        socket
            .set_recv_buffer_size(size)
            .map_err(|e| classify_io(&e, source))?;
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(server))
        .await
        .map_err(|_| format!("connecting to {server} timed out (listen backlog full?)"))?
        .map_err(|e| classify_io(&e, source))?;
    // Frames are small and latency is what is measured.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One JSON request on its own connection. Returns the status and the
/// parsed body (`Null` when empty or not JSON).
pub async fn http_json(
    server: SocketAddr,
    source: Option<IpAddr>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let work = async {
        let mut stream = tcp(server, source, None).await?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\nAccept: application/json\r\n"
        );
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if body.is_some() {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                payload.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(&payload);
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("{method} {path}: {e}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_RESPONSE {
                return Err(format!("{method} {path}: response too large"));
            }
        }
        parse_response(&buf).map_err(|e| format!("{method} {path}: {e}"))
    };
    tokio::time::timeout(HTTP_TIMEOUT, work)
        .await
        .map_err(|_| format!("{method} {path}: no answer within {HTTP_TIMEOUT:?}"))?
}

fn parse_response(buf: &[u8]) -> Result<(u16, Value), String> {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("truncated response")?;
    let head = std::str::from_utf8(&buf[..split]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let raw = &buf[split + 4..];
    let body = if chunked { dechunk(raw)? } else { raw.to_vec() };
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    Ok((status, value))
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    // Each round consumes one chunk, so the count of rounds is bounded by
    // the length of the input.
    for _ in 0..=raw.len() {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_text = std::str::from_utf8(&raw[..eol]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
    Err("bad chunked body".into())
}

/// Small buffers: the generator holds many thousands of idle connections
/// on one core and must not be the one that runs out of memory.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
}

/// Opens `/ws?token=…` from `source`.
/// `recv_buffer` sets the socket's receive buffer (SO_RCVBUF): a small
/// one makes a client that stops reading look like a stalled phone on a
/// bad network, whose backlog ends up in the server rather than in the
/// loopback's generous kernel buffers.
pub async fn connect_ws(
    server: SocketAddr,
    source: Option<IpAddr>,
    token: &str,
    recv_buffer: Option<u32>,
) -> Result<Ws, String> {
    let stream = tcp(server, source, recv_buffer).await?;
    let sio = SOCKETIO.load(std::sync::atomic::Ordering::Relaxed);
    let url = if sio {
        format!("ws://{server}/socket.io/?EIO=4&transport=websocket")
    } else {
        format!("ws://{server}/ws?token={token}")
    };
    let handshake =
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(ws_config()));
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Err(_) => Err("WebSocket handshake timed out".into()),
        Ok(Ok((inner, _))) if !sio => Ok(Ws { inner, sio }),
        Ok(Ok((mut inner, _))) => {
            use futures_util::{SinkExt, StreamExt};
            // Engine.IO's open packet, then the Socket.IO CONNECT with
            // the token; the server's events follow as on `/ws`.
            match tokio::time::timeout(CONNECT_TIMEOUT, inner.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.starts_with('0') => {}
                _ => return Err("no Engine.IO handshake".into()),
            }
            let connect = format!("40{}", serde_json::json!({ "token": token }));
            inner
                .send(Message::text(connect))
                .await
                .map_err(|e| format!("Socket.IO CONNECT: {e}"))?;
            Ok(Ws { inner, sio })
        }
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(format!(
                "the server refused the WebSocket with {}: {}",
                resp.status(),
                body.trim()
            ))
        }
        Ok(Err(tokio_tungstenite::tungstenite::Error::Io(e))) => Err(classify_io(&e, source)),
        Ok(Err(e)) => Err(format!("WebSocket handshake: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls() {
        assert!(parse_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_url("http://127.0.0.9:1/x").is_ok());
        assert!(parse_url("http://localhost:80").is_ok());
        assert!(parse_url("http://10.0.0.1:80").is_err());
        assert!(parse_url("https://127.0.0.1:80").is_err());
        assert!(parse_url("http://192.168.1.1:80").is_err());
    }

    #[test]
    fn responses_plain_and_chunked() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 8\r\n\r\n{\"a\":1} ";
        assert_eq!(parse_response(plain).unwrap().0, 201);
        assert_eq!(parse_response(plain).unwrap().1["a"], 1);
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:2}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap().1["a"], 2);
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }

    #[test]
    fn sources_spread_over_loopback() {
        let s = source_addrs("127.0.0.1:1".parse().unwrap(), 3);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].to_string(), "127.0.0.2");
        assert!(source_addrs("[::1]:1".parse().unwrap(), 3).is_empty());
    }
}
