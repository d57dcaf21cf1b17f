//! Engine.IO protocol 4: sessions over HTTP long-polling and WebSocket,
//! the upgrade from one to the other, and the heartbeat.
//!
//! One task per session owns everything about it: its transport, the
//! packets waiting for a poll, the heartbeat timer and the handler above
//! (Socket.IO, or the compliance harness's echo). HTTP requests of a
//! polling session reach that task as commands over a small channel; a
//! session on WebSocket alone has no channel and is in no table, so an idle
//! one costs its task, its socket and its handler's state.

use std::collections::{HashMap, VecDeque};
use std::future::pending;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

use crate::wsio::{Msg, WsConn};

/// A WebSocket over an upgraded HTTP connection.
pub type WebSocket = WsConn<hyper_util::rt::TokioIo<warp::hyper::upgrade::Upgraded>>;

/// The negotiated values every session is told in its handshake.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Node's `maxHttpBufferSize`: the largest POST body and WebSocket
    /// message accepted.
    pub max_payload: usize,
    /// Packets a polling session keeps for a client that does not poll;
    /// past it the session ends.
    pub max_buffered: usize,
    /// The pause after a write that must arrive apart from what follows
    /// (`Out::flush`).
    pub flush_gap: Duration,
}

/// A message packet's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Text(String),
    Binary(Vec<u8>),
}

/// Engine.IO packets the server sends.
#[derive(Debug)]
enum Packet {
    Ping,
    Pong(String),
    Message(Data),
    /// Not a packet: what comes before it is written out before what
    /// comes after it is queued.
    Flush,
}

impl Packet {
    /// The packet as text inside a polling payload.
    fn encode_polling(&self, out: &mut String) {
        match self {
            Packet::Ping => out.push('2'),
            Packet::Pong(d) => {
                out.push('3');
                out.push_str(d);
            }
            Packet::Message(Data::Text(t)) => {
                out.push('4');
                out.push_str(t);
            }
            Packet::Flush => {}
            Packet::Message(Data::Binary(b)) => {
                out.push('b');
                base64::engine::general_purpose::STANDARD.encode_string(b, out);
            }
        }
    }

    fn queue_ws(&self, ws: &mut WebSocket) {
        match self {
            Packet::Message(Data::Binary(b)) => ws.queue_binary(b),
            Packet::Message(Data::Text(t)) => {
                let mut s = String::with_capacity(t.len() + 1);
                s.push('4');
                s.push_str(t);
                ws.queue_text(&s);
            }
            other => {
                let mut s = String::new();
                other.encode_polling(&mut s);
                ws.queue_text(&s);
            }
        }
    }
}

/// What a handler gives the engine to send: message packets, in order.
#[derive(Default)]
pub struct Out {
    packets: VecDeque<Packet>,
}

impl Out {
    pub fn text(&mut self, t: String) {
        self.packets.push_back(Packet::Message(Data::Text(t)));
    }

    pub fn binary(&mut self, b: Vec<u8>) {
        self.packets.push_back(Packet::Message(Data::Binary(b)));
    }

    /// What is queued so far leaves in a write of its own. A client that
    /// reads each answer before it listens for the next (the compliance
    /// suite does) needs a Socket.IO handshake apart from what follows.
    pub fn flush(&mut self) {
        self.packets.push_back(Packet::Flush);
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
}

/// The session must end (why, for the log).
#[derive(Debug)]
pub struct End(pub &'static str);

/// What runs above the engine: it is given each message the client sends
/// and is polled for what to send.
pub trait Handler: Send + 'static {
    fn on_message(&mut self, data: Data, out: &mut Out) -> Result<(), End>;
    /// Queues what is ready into `out` and returns `Pending`, or asks for
    /// the session to end (after `out` is sent).
    fn poll_out(&mut self, cx: &mut Context<'_>, out: &mut Out) -> Poll<End>;
}

/// Who opened a session, for the handler.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub addr: Option<SocketAddr>,
}

/// Makes a session's handler.
pub type Factory = Box<dyn Fn(&ConnInfo) -> Box<dyn Handler> + Send + Sync>;

/// Work to wait for before a text packet is handled (the handler itself
/// runs synchronously): e.g. making the account of a token in CONNECT.
pub type Prepare = Box<
    dyn Fn(&str) -> Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>> + Send + Sync,
>;

/// Something the session holds for its life (a slot in the connection
/// limits).
pub type Keep = Box<dyn std::any::Any + Send>;

/// An answer to an HTTP request of a polling session.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    fn ok(body: String) -> Reply {
        Reply { status: 200, body }
    }

    pub fn bad(why: &str) -> Reply {
        Reply {
            status: 400,
            body: format!(r#"{{"code":3,"message":"{why}"}}"#),
        }
    }
}

enum Cmd {
    Get(oneshot::Sender<Reply>),
    Post(Vec<u8>, oneshot::Sender<Reply>),
    Probe(Box<WebSocket>),
    End,
}

pub struct Engine {
    cfg: EngineConfig,
    polling: Mutex<HashMap<Arc<str>, mpsc::Sender<Cmd>>>,
    factory: Factory,
    prepare: Option<Prepare>,
}

impl Engine {
    pub fn new(cfg: EngineConfig, factory: Factory) -> Arc<Engine> {
        Arc::new(Engine {
            cfg,
            polling: Mutex::default(),
            factory,
            prepare: None,
        })
    }

    /// `new`, with work each text packet waits for first.
    pub fn with_prepare(cfg: EngineConfig, factory: Factory, prepare: Prepare) -> Arc<Engine> {
        Arc::new(Engine {
            cfg,
            polling: Mutex::default(),
            factory,
            prepare: Some(prepare),
        })
    }

    async fn prepare(&self, text: &str) {
        if let Some(fut) = self.prepare.as_ref().and_then(|p| p(text)) {
            fut.await;
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, mpsc::Sender<Cmd>>> {
        self.polling.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions on long-polling (or upgrading from it).
    pub fn polling_sessions(&self) -> usize {
        self.table().len()
    }

    fn handshake(&self, sid: &str, upgrades: bool) -> String {
        format!(
            r#"0{{"sid":"{sid}","upgrades":{},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            if upgrades { r#"["websocket"]"# } else { "[]" },
            self.cfg.ping_interval.as_millis(),
            self.cfg.ping_timeout.as_millis(),
            self.cfg.max_payload
        )
    }

    /// A new polling session: its task starts, and the handshake answers
    /// the request.
    pub fn open_polling(self: &Arc<Self>, info: ConnInfo, keep: Keep) -> Reply {
        let sid: Arc<str> = new_id().into();
        let (tx, rx) = mpsc::channel(4);
        self.table().insert(sid.clone(), tx);
        let handler = (self.factory)(&info);
        let task = Task::new(
            self.clone(),
            sid.clone(),
            handler,
            Transport::polling(),
            Some(rx),
        );
        tokio::spawn(task.run(keep));
        Reply::ok(self.handshake(&sid, true))
    }

    fn sender(&self, sid: &str) -> Option<mpsc::Sender<Cmd>> {
        self.table().get(sid).cloned()
    }

    /// A long-poll: waits for packets (or the heartbeat's ping).
    pub async fn get(&self, sid: &str) -> Reply {
        let Some(tx) = self.sender(sid) else {
            return Reply::bad("Session ID unknown");
        };
        let (reply, rx) = oneshot::channel();
        if tx.send(Cmd::Get(reply)).await.is_err() {
            return Reply::bad("Session ID unknown");
        }
        rx.await
            .unwrap_or_else(|_| Reply::bad("Session ID unknown"))
    }

    /// Packets sent by POST; answered `ok` once handled.
    pub async fn post(&self, sid: &str, body: Vec<u8>) -> Reply {
        let Some(tx) = self.sender(sid) else {
            return Reply::bad("Session ID unknown");
        };
        if self.prepare.is_some()
            && let Ok(text) = std::str::from_utf8(&body)
        {
            for part in text.split('\x1e') {
                self.prepare(part).await;
            }
        }
        let (reply, rx) = oneshot::channel();
        if tx.send(Cmd::Post(body, reply)).await.is_err() {
            return Reply::bad("Session ID unknown");
        }
        rx.await
            .unwrap_or_else(|_| Reply::bad("Session ID unknown"))
    }

    /// Ends a polling session (a request it could not be given).
    pub async fn end(&self, sid: &str) {
        if let Some(tx) = self.sender(sid) {
            let _ = tx.send(Cmd::End).await;
        }
    }

    /// A WebSocket: a session of its own, or (with `sid`) the upgrade of a
    /// polling session.
    pub async fn websocket(
        self: &Arc<Self>,
        sid: Option<String>,
        mut ws: WebSocket,
        info: ConnInfo,
        keep: Keep,
    ) {
        match sid {
            Some(sid) => {
                let Some(tx) = self.sender(&sid) else {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(1000, "")).await;
                    return;
                };
                // The session holds the socket from now on; `keep` (this
                // connection's slot) goes with it.
                if tx.send(Cmd::Probe(Box::new(ws))).await.is_err() {
                    return;
                }
                drop(keep);
            }
            None => {
                let sid: Arc<str> = new_id().into();
                ws.queue_text(&self.handshake(&sid, false));
                let handler = (self.factory)(&info);
                let task = Task::new(
                    self.clone(),
                    sid,
                    handler,
                    Transport::Ws(Box::new(ws)),
                    None,
                );
                task.run(keep).await
            }
        }
    }
}

/// 20 random characters of base64url: a session id, a Socket.IO id.
pub fn new_id() -> String {
    let mut raw = [0u8; 15];
    // The OS's random source failing is no reason to refuse a client; a
    // clock-derived id is still unique enough for a session.
    if getrandom::fill(&mut raw).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        raw[..15].copy_from_slice(&t.to_le_bytes()[..15]);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

enum Transport {
    Polling {
        get: Option<oneshot::Sender<Reply>>,
        /// While upgrading, a poll is ended with a noop at this time,
        /// unless the upgrade completes first.
        noop_at: Option<Instant>,
    },
    Ws(Box<WebSocket>),
}

impl Transport {
    fn polling() -> Transport {
        Transport::Polling {
            get: None,
            noop_at: None,
        }
    }
}

/// How a session ended, which decides what a pending poll is told.
enum Ending {
    /// The client sent a close packet.
    ByClient,
    Other(&'static str),
}

struct Task {
    engine: Arc<Engine>,
    sid: Arc<str>,
    handler: Box<dyn Handler>,
    transport: Transport,
    cmds: Option<mpsc::Receiver<Cmd>>,
    probe: Option<Box<WebSocket>>,
    upgrading: bool,
    out: Out,
    beat: Pin<Box<Sleep>>,
    /// When the next ping is due, or the pong by which the client is
    /// gone: kept as planned (not as the timer happened to fire), so a
    /// request that comes after it finds the session ended.
    beat_at: Instant,
    awaiting_pong: bool,
}

/// The next message of a socket that may not be there.
async fn next_of(ws: Option<&mut WebSocket>) -> Option<Result<Msg, crate::wsio::WsError>> {
    match ws {
        Some(ws) => ws.next().await,
        None => pending().await,
    }
}

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => pending().await,
    }
}

async fn poll_closed(get: Option<&mut oneshot::Sender<Reply>>) {
    match get {
        Some(g) => g.closed().await,
        None => pending().await,
    }
}

async fn recv(cmds: Option<&mut mpsc::Receiver<Cmd>>) -> Option<Cmd> {
    match cmds {
        Some(c) => c.recv().await,
        None => pending().await,
    }
}

impl Task {
    fn new(
        engine: Arc<Engine>,
        sid: Arc<str>,
        handler: Box<dyn Handler>,
        transport: Transport,
        cmds: Option<mpsc::Receiver<Cmd>>,
    ) -> Task {
        let first = Instant::now() + engine.cfg.ping_interval;
        Task {
            engine,
            sid,
            handler,
            transport,
            cmds,
            probe: None,
            upgrading: false,
            out: Out::default(),
            beat: Box::pin(tokio::time::sleep_until(first)),
            beat_at: first,
            awaiting_pong: false,
        }
    }

    async fn run(mut self, keep: Keep) {
        let ending = self.serve().await;
        tracing::debug!(sid = %self.sid, why = match &ending { Ending::ByClient => "client", Ending::Other(w) => w }, "engine.io session ended");
        drop(keep);
        if let (Ending::ByClient, Transport::Polling { get: None, .. }, Some(cmds)) =
            (&ending, &self.transport, &mut self.cmds)
        {
            // A poll the client sent along with its close (on another
            // connection, so it may arrive just after) ends with a noop
            // rather than an error.
            if let Ok(Some(Cmd::Get(r))) =
                tokio::time::timeout(Duration::from_millis(50), cmds.recv()).await
            {
                let _ = r.send(Reply::ok("6".into()));
            }
        }
        if self.cmds.is_some() {
            self.engine.table().remove(&self.sid);
        }
        // Requests that raced the end learn the session is gone.
        if let Some(cmds) = &mut self.cmds {
            cmds.close();
            while let Ok(cmd) = cmds.try_recv() {
                match cmd {
                    Cmd::Get(r) | Cmd::Post(_, r) => {
                        let _ = r.send(Reply::bad("Session ID unknown"));
                    }
                    Cmd::Probe(_) | Cmd::End => {}
                }
            }
        }
        match &mut self.transport {
            Transport::Polling { get, .. } => {
                if let Some(g) = get.take() {
                    let body = match ending {
                        Ending::ByClient => "6",
                        Ending::Other(_) => "1",
                    };
                    let _ = g.send(Reply::ok(body.into()));
                }
            }
            Transport::Ws(ws) => {
                let grace = self.engine.cfg.ping_timeout.min(Duration::from_secs(5));
                let _ = tokio::time::timeout(grace, ws.close(1000, "")).await;
            }
        }
    }

    /// Runs the session until it ends.
    async fn serve(&mut self) -> Ending {
        let write_timeout = self.engine.cfg.ping_interval + self.engine.cfg.ping_timeout;
        let mut ending: Option<Ending> = None;
        loop {
            // Send what is waiting.
            match &mut self.transport {
                Transport::Ws(ws) => loop {
                    let mut more = false;
                    while let Some(p) = self.out.packets.pop_front() {
                        if let Packet::Flush = p {
                            more = !self.out.packets.is_empty();
                            break;
                        }
                        p.queue_ws(ws);
                    }
                    if ws.unwritten() > 0 {
                        match tokio::time::timeout(write_timeout, ws.flush()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return Ending::Other("write failed"),
                            Err(_) => return Ending::Other("write timed out"),
                        }
                    }
                    if !more {
                        break;
                    }
                    // Apart means apart: the client is given a moment to
                    // read what it was sent (Node's engine writes the next
                    // packet only once the previous write has drained).
                    tokio::time::sleep(self.engine.cfg.flush_gap).await;
                },
                Transport::Polling { get, .. } => {
                    if !self.upgrading && !self.out.packets.is_empty() {
                        if let Some(g) = get.take() {
                            let mut body = String::new();
                            for p in self.out.packets.drain(..) {
                                if let Packet::Flush = p {
                                    continue;
                                }
                                if !body.is_empty() {
                                    body.push('\x1e');
                                }
                                p.encode_polling(&mut body);
                            }
                            if g.send(Reply::ok(body)).is_err() {
                                return Ending::Other("poll aborted");
                            }
                        } else if self.out.len() > self.engine.cfg.max_buffered {
                            return Ending::Other("client does not poll");
                        }
                    }
                }
            }
            if let Some(e) = ending {
                return e;
            }
            let handler = &mut self.handler;
            let out = &mut self.out;
            let (ws, get, noop_at) = match &mut self.transport {
                Transport::Ws(ws) => (Some(&mut **ws), None, None),
                Transport::Polling { get, noop_at } => (None, get.as_mut(), *noop_at),
            };
            enum Ev {
                Handler(End),
                Beat,
                Cmd(Option<Cmd>),
                Ws(Option<Result<Msg, crate::wsio::WsError>>),
                Probe(Option<Result<Msg, crate::wsio::WsError>>),
                PollGone,
                Noop,
            }
            let ev = tokio::select! {
                biased;
                end = std::future::poll_fn(|cx| {
                    let before = out.len();
                    match handler.poll_out(cx, out) {
                        Poll::Ready(e) => Poll::Ready(Some(e)),
                        Poll::Pending if out.len() > before => Poll::Ready(None),
                        Poll::Pending => Poll::Pending,
                    }
                }) => match end {
                    Some(e) => Ev::Handler(e),
                    None => continue,
                },
                _ = self.beat.as_mut() => Ev::Beat,
                m = next_of(ws) => Ev::Ws(m),
                // The probe before the polls: a client that sent "2probe"
                // and "5" and then polls must find the upgrade done (and
                // its poll refused), which a poll handled first, held,
                // then answered with a noop would not show it. The
                // frames reach the socket before a new HTTP request is
                // parsed, so they are read first when both are ready.
                m = next_of(self.probe.as_deref_mut()) => Ev::Probe(m),
                c = recv(self.cmds.as_mut()) => Ev::Cmd(c),
                _ = poll_closed(get) => Ev::PollGone,
                _ = until(noop_at) => Ev::Noop,
            };
            match ev {
                Ev::Handler(End(why)) => ending = Some(Ending::Other(why)),
                Ev::Beat => {
                    if self.awaiting_pong {
                        return Ending::Other("ping timeout");
                    }
                    self.awaiting_pong = true;
                    self.out.packets.push_back(Packet::Ping);
                    self.beat_at += self.engine.cfg.ping_timeout;
                    self.beat.as_mut().reset(self.beat_at);
                }
                Ev::Ws(m) => {
                    let msg = match m {
                        None => return Ending::Other("transport closed"),
                        Some(Err(_)) => return Ending::Other("transport error"),
                        Some(Ok(m)) => m,
                    };
                    match msg {
                        Msg::Text(t) => {
                            self.engine.clone().prepare(&t).await;
                            if let Err(e) = self.on_text(&t) {
                                return e;
                            }
                        }
                        Msg::Binary(b) => {
                            if let Err(End(why)) =
                                self.handler.on_message(Data::Binary(b), &mut self.out)
                            {
                                ending = Some(Ending::Other(why));
                            }
                        }
                        Msg::Ping | Msg::Pong => {}
                        Msg::Close(_) => return Ending::Other("transport closed"),
                    }
                }
                Ev::Cmd(None) => return Ending::Other("closed"),
                Ev::Cmd(Some(_)) if self.awaiting_pong && Instant::now() >= self.beat_at => {
                    return Ending::Other("ping timeout");
                }
                Ev::Cmd(Some(cmd)) => {
                    if let Err(e) = self.on_cmd(cmd) {
                        ending = Some(e);
                    }
                }
                Ev::Probe(m) => self.on_probe(m),
                Ev::PollGone => return Ending::Other("poll aborted"),
                Ev::Noop => {
                    if let Transport::Polling { get, noop_at } = &mut self.transport {
                        *noop_at = None;
                        if let Some(g) = get.take() {
                            let _ = g.send(Reply::ok("6".into()));
                        }
                    }
                }
            }
        }
    }

    /// One text packet from the client, on either transport.
    fn on_text(&mut self, t: &str) -> Result<(), Ending> {
        let mut chars = t.chars();
        let kind = chars.next();
        let rest = chars.as_str();
        match kind {
            Some('1') => Err(Ending::ByClient),
            Some('2') => {
                self.out.packets.push_back(Packet::Pong(rest.to_string()));
                Ok(())
            }
            Some('3') => {
                if self.awaiting_pong {
                    self.awaiting_pong = false;
                    self.beat_at = Instant::now() + self.engine.cfg.ping_interval;
                    self.beat.as_mut().reset(self.beat_at);
                }
                Ok(())
            }
            Some('4') => self
                .handler
                .on_message(Data::Text(rest.to_string()), &mut self.out)
                .map_err(|End(why)| Ending::Other(why)),
            Some('6') => Ok(()),
            _ => Err(Ending::Other("invalid packet")),
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) -> Result<(), Ending> {
        let Transport::Polling { get, noop_at } = &mut self.transport else {
            // Upgraded: the channel is gone, nothing arrives here.
            return Ok(());
        };
        match cmd {
            Cmd::End => Err(Ending::Other("request refused")),
            Cmd::Get(reply) => {
                if let Some(first) = get.take() {
                    // Two polls at once: the client is confused or
                    // hostile; both end, and so does the session.
                    let _ = first.send(Reply::ok("1".into()));
                    let _ = reply.send(Reply::bad("overlapping poll"));
                    *noop_at = None;
                    return Err(Ending::Other("overlapping poll"));
                }
                if self.upgrading {
                    *noop_at = Some(Instant::now() + Duration::from_millis(100));
                }
                *get = Some(reply);
                Ok(())
            }
            Cmd::Post(body, reply) => {
                if body.len() > self.engine.cfg.max_payload {
                    let _ = reply.send(Reply {
                        status: 413,
                        body: String::new(),
                    });
                    return Err(Ending::Other("payload too large"));
                }
                let Ok(text) = String::from_utf8(body) else {
                    let _ = reply.send(Reply::bad("payload is not UTF-8"));
                    return Err(Ending::Other("invalid payload"));
                };
                for part in text.split('\x1e') {
                    let r = if let Some(b64) = part.strip_prefix('b') {
                        match base64::engine::general_purpose::STANDARD.decode(b64) {
                            Ok(b) => self
                                .handler
                                .on_message(Data::Binary(b), &mut self.out)
                                .map_err(|End(why)| Ending::Other(why)),
                            Err(_) => Err(Ending::Other("invalid packet")),
                        }
                    } else {
                        self.on_text(part)
                    };
                    match r {
                        Ok(()) => {}
                        Err(Ending::ByClient) => {
                            let _ = reply.send(Reply::ok("ok".into()));
                            return Err(Ending::ByClient);
                        }
                        Err(e) => {
                            let _ = reply.send(Reply::bad("invalid packet"));
                            return Err(e);
                        }
                    }
                }
                let _ = reply.send(Reply::ok("ok".into()));
                Ok(())
            }
            Cmd::Probe(ws) => {
                if self.probe.is_some() {
                    // One upgrade at a time; the newcomer is turned away.
                    drop(ws);
                    return Ok(());
                }
                self.probe = Some(ws);
                Ok(())
            }
        }
    }

    /// A frame on the WebSocket that is being probed for the upgrade.
    fn on_probe(&mut self, m: Option<Result<Msg, crate::wsio::WsError>>) {
        let text = match m {
            Some(Ok(Msg::Text(t))) => t,
            Some(Ok(Msg::Ping | Msg::Pong)) => return,
            _ => {
                self.probe = None;
                self.upgrading = false;
                return;
            }
        };
        match text.as_str() {
            "2probe" => {
                if let Some(p) = &mut self.probe {
                    p.queue_text("3probe");
                }
                self.upgrading = true;
                if let Transport::Polling { get, .. } = &mut self.transport
                    && let Some(g) = get.take()
                {
                    let _ = g.send(Reply::ok("6".into()));
                }
            }
            "5" if self.upgrading => {
                let Some(ws) = self.probe.take() else { return };
                self.upgrading = false;
                if let Transport::Polling { get: Some(g), .. } = &mut self.transport {
                    let g = std::mem::replace(g, oneshot::channel().0);
                    let _ = g.send(Reply::bad("upgraded"));
                }
                self.transport = Transport::Ws(ws);
                // From now on the session is the socket's alone: polls with
                // its id are refused.
                self.engine.table().remove(&self.sid);
                if let Some(mut cmds) = self.cmds.take() {
                    cmds.close();
                    while let Ok(cmd) = cmds.try_recv() {
                        if let Cmd::Get(r) | Cmd::Post(_, r) = cmd {
                            let _ = r.send(Reply::bad("upgraded"));
                        }
                    }
                }
            }
            _ => {
                self.probe = None;
                self.upgrading = false;
            }
        }
        if let Some(p) = &mut self.probe
            && p.unwritten() > 0
        {
            // "3probe" is a few bytes on a fresh socket: a write that
            // cannot go at once is a dead probe.
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            if !matches!(p.poll_flush(&mut cx), Poll::Ready(Ok(()))) {
                self.probe = None;
                self.upgrading = false;
            }
        }
    }
}
