//! confab's namespace (`/`): a Socket.IO connection is a hub session like
//! a `/ws` connection. Each client event is the `/ws` frame of the same
//! type (`ws::handle_frame`, so the two cannot disagree), answered by the
//! acknowledgement `{ok: true, data}` or `{ok: false, error: {code,
//! message}}`; each server frame is emitted as the event of its type.
//!
//! The event names of the Node.js servers confab replaces (`joinRoom`,
//! `leaveRoom`, `message`, `typing`, `initialSetup`) are aliases of
//! confab's frames; a connection that used one reads `message`, `join`
//! and `left` in their shape from then on (docs/socketio.md).
//!
//! Connection state recovery (`socketio.recovery`): every event ends with
//! an offset that names
//! the last message delivered (`<dialect><created_at>.<room>.<seq>`).
//! A client that reconnects with its `pid` and that offset is sent what it
//! missed from the store's history, so recovery needs no memory of the
//! old connection and works after a restart.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;

use super::engine::{ConnInfo, End};
use super::socket::{ConnectError, Emit, Leave, Namespace, Service};
use crate::app::{Actor, App, AppError, page};
use crate::domain::{Id, Message, User};
use crate::hub::{Frame, Hub, SessionControl, SessionId, Wake};
use crate::protocol::{ClientFrame, ErrorCode, error_frame, frame};
use crate::ws::{Answer, Bucket, Ctx, Pending};

pub struct Chat {
    app: Arc<App>,
}

impl Chat {
    pub fn new(app: Arc<App>) -> Chat {
        Chat { app }
    }
}

/// Events a client may have waiting for their turn; more is a flood.
const MAX_QUEUED: usize = 64;
/// Messages recovered per room at most; a client that missed more is
/// told it was not recovered and reads the history itself.
const MAX_RECOVERED: u64 = 200;

fn refused(e: &AppError) -> ConnectError {
    ConnectError {
        message: e.client_message(),
        data: Some(json!({ "code": e.code().as_str(), "message": e.client_message() })),
    }
}

/// `pid`: the Socket.IO id and a check tying it to its user, so a pid is
/// recovered only by the user it was given to.
fn pid_for(user: Id, sid: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(user.to_string().as_bytes());
    h.update(b"/");
    h.update(sid.as_bytes());
    let digest = h.finalize();
    let check: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{sid}.{check}")
}

fn sid_of(user: Id, pid: &str) -> Option<String> {
    let (sid, _) = pid.split_once('.')?;
    (pid_for(user, sid) == pid).then(|| sid.to_string())
}

/// Where a client's view stopped: the time of the last message it was
/// given and, when it was given one, that message's room and seq.
#[derive(Debug, PartialEq)]
struct Offset {
    legacy: bool,
    at: i64,
    last: Option<(Id, u64)>,
}

impl Offset {
    fn parse(s: &str) -> Option<Offset> {
        let legacy = match s.as_bytes().first()? {
            b'L' => true,
            b'C' => false,
            _ => return None,
        };
        let mut parts = s[1..].split('.');
        let at = parts.next()?.parse().ok()?;
        let last = match (parts.next(), parts.next()) {
            (Some(room), Some(seq)) => Some((Id::parse("room", room).ok()?, seq.parse().ok()?)),
            (None, None) => None,
            _ => return None,
        };
        Some(Offset { legacy, at, last })
    }

    fn render(&self) -> String {
        let d = if self.legacy { 'L' } else { 'C' };
        match self.last {
            Some((room, seq)) => format!("{d}{}.{room}.{seq}", self.at),
            None => format!("{d}{}", self.at),
        }
    }
}

/// The messages a client that stopped at `offset` has not seen, oldest
/// first, or `None` when there are more than recovery replays.
fn missed(app: &App, user: &User, offset: &Offset) -> Result<Option<Vec<Message>>, AppError> {
    let actor = Actor::User(user.clone());
    let mut out = Vec::new();
    for room in app.rooms_of(user.id)? {
        match offset.last {
            // The room of the last message: exactly what came after it.
            Some((r, seq)) if r == room.id => {
                let (msgs, more) =
                    app.history(&actor, room.id, page(None, Some(seq), Some(MAX_RECOVERED))?)?;
                if more {
                    return Ok(None);
                }
                out.extend(msgs);
            }
            // Other rooms: what was sent from that time on.
            _ => {
                let (msgs, more) =
                    app.history(&actor, room.id, page(None, None, Some(MAX_RECOVERED))?)?;
                let after: Vec<Message> = msgs
                    .into_iter()
                    .filter(|m| m.created_at >= offset.at && !m.deleted)
                    .collect();
                if more && after.len() as u64 == MAX_RECOVERED {
                    return Ok(None);
                }
                out.extend(after);
            }
        }
    }
    out.sort_by_key(|a| (a.created_at, a.room.0, a.seq));
    Ok(Some(out))
}

impl Service for Chat {
    fn connect(
        &self,
        nsp: &str,
        auth: Value,
        conn: &ConnInfo,
        out: &mut Emit<'_>,
    ) -> Result<Box<dyn Namespace>, ConnectError> {
        let app = &self.app;
        if nsp != "/" {
            return Err(ConnectError {
                message: "Invalid namespace".into(),
                data: None,
            });
        }
        let Some(token) = auth.get("token").and_then(Value::as_str) else {
            return Err(refused(&AppError::Unauthorized(
                "auth.token is required".into(),
            )));
        };
        let (user, verified) = app.authenticate_token(token).map_err(|e| refused(&e))?;
        if app.hub.sessions_of(user.id) >= app.config.limits.max_connections_per_user {
            app.metrics.reject("connection_limit");
            return Err(refused(&AppError::RateLimited(
                "too many connections for this account".into(),
            )));
        }
        let connected = app
            .hub
            .connect(user.clone(), conn.addr, Some(verified.token), || {
                app.ties(user.id)
            })
            .map_err(|e| {
                tracing::error!(error = %e, "cannot load rooms and friends for a new connection");
                refused(&AppError::Internal("internal error".into()))
            })?;
        let registered = Registered {
            hub: app.hub.clone(),
            session: connected.session,
        };
        // As on `/ws`: the session is known to the hub before the token is
        // checked again, so a revocation cannot slip between the two.
        app.authenticate_token(token).map_err(|e| refused(&e))?;

        // Recovery: the same id, and what was missed, before the CONNECT
        // answer (the order Node's server keeps).
        let recovery = app.config.socketio.recovery;
        let recovering = match (
            auth.get("pid").and_then(Value::as_str),
            auth.get("offset").and_then(Value::as_str),
        ) {
            (Some(pid), Some(offset)) if recovery => {
                sid_of(user.id, pid).zip(Offset::parse(offset))
            }
            _ => None,
        };
        let mut recovered = None;
        if let Some((sid, offset)) = recovering {
            match missed(app, &user, &offset) {
                Ok(Some(msgs)) => recovered = Some((sid, offset, msgs)),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "socket.io recovery failed"),
            }
        }
        let mut ns = ChatNsp {
            ctx: Ctx {
                app: app.clone(),
                user: user.clone(),
                ctl: connected.ctl.clone(),
                scopes: app.scopes_of(token).map_err(|e| refused(&e))?.map(Box::new),
            },
            ctl: connected.ctl,
            _registered: registered,
            bucket: Bucket::new(
                app.config.limits.frames_per_sec,
                app.config.limits.frames_burst,
            ),
            queue: VecDeque::new(),
            inflight: None,
            offset: Offset {
                legacy: false,
                at: crate::domain::now_ms(),
                last: None,
            },
            recovery,
        };
        let sid = match recovered {
            Some((sid, offset, msgs)) => {
                ns.offset = offset;
                for m in msgs {
                    let f = frame("message", None, &json!({ "message": m }));
                    ns.emit_frame(&f, out);
                }
                sid
            }
            None => super::engine::new_id(),
        };
        let answer = if recovery {
            json!({ "sid": sid, "pid": pid_for(user.id, &sid) })
        } else {
            json!({ "sid": sid })
        };
        out.connected(&answer.to_string());
        match crate::ws::hello(app, &user, connected.session, None) {
            Ok(frames) => {
                for f in frames {
                    ns.emit_frame(&f, out);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot build the authenticated event");
                return Err(refused(&AppError::Internal("internal error".into())));
            }
        }
        Ok(Box::new(ns))
    }
}

/// Leaves the hub however the namespace ends.
struct Registered {
    hub: Arc<Hub>,
    session: SessionId,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.hub.disconnect(self.session);
    }
}

/// A client event waiting for its turn.
struct Incoming {
    kind: String,
    data: Value,
    ack: Option<u64>,
}

struct ChatNsp {
    ctx: Ctx,
    ctl: Arc<SessionControl>,
    _registered: Registered,
    bucket: Bucket,
    queue: VecDeque<Incoming>,
    /// The answer being worked out, and the ack it goes to.
    inflight: Option<(Pending, Option<u64>)>,
    offset: Offset,
    /// `socketio.recovery`: events end with the offset.
    recovery: bool,
}

/// A server frame's type and its `data`, as serialized by
/// `protocol::frame` (`{"type":…,"data":…,"ts":…}`); read without
/// building a tree, since every delivery of a fan-out goes through here.
fn split_frame(f: &str) -> Option<(&str, &str)> {
    #[derive(Deserialize)]
    struct Parts<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    let p: Parts<'_> = serde_json::from_str(f).ok()?;
    Some((p.kind, p.data.get()))
}

/// The fields of a `message` event that make its offset.
#[derive(Deserialize)]
struct MessageKey {
    message: MessageKeyInner,
}

#[derive(Deserialize)]
struct MessageKeyInner {
    room: Id,
    seq: u64,
    created_at: i64,
}

/// The JSON string of `s`.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

impl ChatNsp {
    /// Emits one server frame as the event of its type, in the dialect the
    /// connection speaks; with recovery on, with the offset after it (on
    /// every event, so a client that saw no message yet still has one to
    /// come back with).
    fn emit_frame(&mut self, f: &Frame, out: &mut Emit<'_>) {
        let Some((kind, data)) = split_frame(f) else {
            return;
        };
        let mut offset = String::new();
        if self.recovery {
            if kind == "message"
                && let Ok(k) = serde_json::from_str::<MessageKey>(data)
            {
                self.offset.at = k.message.created_at;
                self.offset.last = Some((k.message.room, k.message.seq));
            }
            offset = format!(",{}", quoted(&self.offset.render()));
        }
        if self.offset.legacy
            && let Some((name, legacy)) = legacy_event(kind, data)
        {
            out.event(&format!(r#"["{name}",{legacy}{offset}]"#), Vec::new());
            if name == "message" {
                return;
            }
        }
        out.event(&format!(r#"[{},{data}{offset}]"#, quoted(kind)), Vec::new());
    }

    /// Emits what the answer to a client event says: its ack, or (with
    /// none asked for) an `error` event when it failed.
    fn emit_answer(&mut self, f: Option<Frame>, ack: Option<u64>, out: &mut Emit<'_>) {
        let Some(f) = f else {
            if let Some(id) = ack {
                out.ack(id, r#"[{"ok":true,"data":{}}]"#, Vec::new());
            }
            return;
        };
        let Some((kind, data)) = split_frame(&f) else {
            return;
        };
        match (ack, kind) {
            (Some(id), "error") => out.ack(
                id,
                &format!(r#"[{{"ok":false,"error":{data}}}]"#),
                Vec::new(),
            ),
            (Some(id), _) => out.ack(id, &format!(r#"[{{"ok":true,"data":{data}}}]"#), Vec::new()),
            (None, "error") => {
                let f = frame(
                    "error",
                    None,
                    &serde_json::from_str::<Value>(data).unwrap_or_default(),
                );
                self.emit_frame(&f, out);
            }
            // `pong` is an event of its own in the contract, asked for with
            // an ack or not.
            (None, "pong") => self.emit_frame(&f, out),
            (None, _) => {}
        }
    }

    fn refuse(&mut self, ack: Option<u64>, code: ErrorCode, message: &str, out: &mut Emit<'_>) {
        self.emit_answer(Some(error_frame(None, code, message)), ack, out);
    }

    /// Starts on the next waiting event; answers what needs no store.
    fn start_next(&mut self, out: &mut Emit<'_>) {
        while self.inflight.is_none() {
            let Some(inc) = self.queue.pop_front() else {
                return;
            };
            let (kind, data) = match alias(&inc.kind, inc.data) {
                Ok(Translated::Frame(kind, data)) => {
                    if kind != inc.kind {
                        self.offset.legacy = true;
                    }
                    (kind, data)
                }
                Ok(Translated::Setup) => {
                    self.offset.legacy = true;
                    let r = self
                        .ctx
                        .app
                        .rooms_of(self.ctx.user.id)
                        .map(|rooms| json!({ "user": self.ctx.user, "rooms": rooms }));
                    let f = match r {
                        Ok(d) => frame("ack", None, &d),
                        Err(e) => error_frame(None, e.code(), &e.client_message()),
                    };
                    self.emit_answer(Some(f), inc.ack, out);
                    continue;
                }
                Err(e) => {
                    self.refuse(inc.ack, ErrorCode::BadRequest, &e, out);
                    continue;
                }
            };
            let data = match data {
                Value::Null => Value::Object(Default::default()),
                v @ Value::Object(_) => v,
                _ => {
                    self.refuse(
                        inc.ack,
                        ErrorCode::BadRequest,
                        "data: must be an object",
                        out,
                    );
                    continue;
                }
            };
            // `/ws` answers errors always and successes only when asked
            // (an id); the id is ours, the ack the client's.
            let f = ClientFrame {
                kind: kind.to_string(),
                id: Some("sio".into()),
                data,
            };
            match crate::ws::handle_frame(&self.ctx, f) {
                Answer::Now(f) => self.emit_answer(f, inc.ack, out),
                Answer::Later(fut) => self.inflight = Some((fut, inc.ack)),
            }
        }
    }
}

enum Translated {
    Frame(&'static str, Value),
    /// `initialSetup`.
    Setup,
}

/// A room given as `"id"`, `{roomId}` or `{room}`.
fn room_arg(data: &Value) -> Result<String, String> {
    match data {
        Value::String(s) => Ok(s.clone()),
        Value::Object(o) => o
            .get("roomId")
            .or_else(|| o.get("room"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| "data: roomId is required".to_string()),
        _ => Err("data: roomId is required".to_string()),
    }
}

/// confab's frame for a client event, its aliases included. A `sender` or
/// `username` in an alias's payload is dropped: the sender is always the
/// signed-in user.
fn alias(kind: &str, data: Value) -> Result<Translated, String> {
    Ok(match kind {
        "joinRoom" => Translated::Frame("join_room", json!({ "room": room_arg(&data)? })),
        "leaveRoom" => Translated::Frame("leave_room", json!({ "room": room_arg(&data)? })),
        "typing" => Translated::Frame("typing_start", json!({ "room": room_arg(&data)? })),
        "stopTyping" => Translated::Frame("typing_stop", json!({ "room": room_arg(&data)? })),
        "message" => {
            let room = room_arg(&data)?;
            let text = data
                .get("message")
                .or_else(|| data.get("text"))
                .and_then(Value::as_str)
                .ok_or("data: message is required")?;
            let mut body = json!({ "room": room, "text": text });
            if let Some(id) = data.get("client_msg_id") {
                body["client_msg_id"] = id.clone();
            }
            Translated::Frame("send_message", body)
        }
        "initialSetup" => Translated::Setup,
        // Every other event is confab's frame of that name.
        other => match KINDS.iter().find(|k| **k == other) {
            Some(kind) => Translated::Frame(kind, data),
            None => return Err(format!("type: unknown event {other:?}")),
        },
    })
}

/// confab's client frame types (docs/protocol.md), which are also the
/// event names.
const KINDS: &[&str] = &[
    "ping",
    "auth",
    "join_room",
    "leave_room",
    "create_room",
    "send_message",
    "edit_message",
    "delete_message",
    "typing_start",
    "typing_stop",
    "history",
    "mark_read",
    "presence",
    "friend_request",
    "friend_accept",
    "friend_decline",
    "friend_remove",
    "block_user",
    "unblock_user",
];

/// The replaced servers' name and shape for a server event, where they
/// had one.
fn legacy_event(kind: &str, data: &str) -> Option<(&'static str, String)> {
    let v: Value = serde_json::from_str(data).ok()?;
    match kind {
        "message" => {
            let m = &v["message"];
            let name = m["sender"]["username"].clone();
            Some((
                "message",
                json!({
                    "id": m["id"],
                    "roomId": m["room"],
                    "seq": m["seq"],
                    "message": m["text"],
                    "username": name,
                    "sender": name,
                    "userId": m["sender"]["id"],
                    "timestamp": m["created_at"],
                    "attachments": m["attachments"],
                })
                .to_string(),
            ))
        }
        "member_joined" | "member_left" => Some((
            if kind == "member_joined" {
                "join"
            } else {
                "left"
            },
            json!({
                "roomId": v["room"],
                "username": v["user"]["username"],
                "userId": v["user"]["id"],
            })
            .to_string(),
        )),
        _ => None,
    }
}

impl Namespace for ChatNsp {
    fn on_event(
        &mut self,
        mut args: Vec<Value>,
        binaries: Vec<Vec<u8>>,
        ack: Option<u64>,
        out: &mut Emit<'_>,
    ) -> Result<(), End> {
        self.ctl.seen();
        let metrics = &self.ctx.app.metrics;
        metrics.frames_in.inc();
        if !self.bucket.take() {
            metrics.reject("rate_limited");
            if self.bucket.refused > self.ctx.app.config.limits.frames_burst.max(10) {
                metrics.reject("flooding");
                return Err(End("flooding"));
            }
            self.refuse(ack, ErrorCode::RateLimited, "slow down", out);
            return Ok(());
        }
        if !binaries.is_empty() {
            self.refuse(
                ack,
                ErrorCode::BadRequest,
                "binary attachments are not part of confab's protocol",
                out,
            );
            return Ok(());
        }
        if self.queue.len() >= MAX_QUEUED {
            return Err(End("flooding"));
        }
        let data = if args.len() > 1 {
            args.swap_remove(1)
        } else {
            Value::Null
        };
        let kind = match args.swap_remove(0) {
            Value::String(s) => s,
            _ => return Ok(()),
        };
        self.queue.push_back(Incoming { kind, data, ack });
        self.start_next(out);
        Ok(())
    }

    fn poll(&mut self, cx: &mut Context<'_>, out: &mut Emit<'_>) -> Poll<Leave> {
        while let Poll::Ready(wake) = self.ctl.poll_next(cx) {
            match wake {
                Wake::Close(req) => {
                    if let Some(f) = req.last_frame {
                        self.emit_frame(&f, out);
                    }
                    return Poll::Ready(Leave::Connection("closed by the server"));
                }
                Wake::Out(o) => {
                    let metrics = self.ctx.app.metrics.clone();
                    for f in &o.frames {
                        self.emit_frame(f, out);
                        metrics.bytes_out.inc_by(f.len() as u64);
                    }
                    if let Some(since) = o.since {
                        metrics
                            .delivery_seconds
                            .observe(since.elapsed().as_secs_f64());
                    }
                    // The engine's own heartbeat ends a connection whose
                    // client is gone; the hub's is answered for it.
                    if o.ping {
                        self.ctl.seen();
                    }
                }
            }
        }
        loop {
            if let Some((fut, ack)) = &mut self.inflight {
                let ack = *ack;
                match fut.as_mut().poll(cx) {
                    Poll::Ready(f) => {
                        self.inflight = None;
                        self.emit_answer(f, ack, out);
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            self.start_next(out);
            if self.inflight.is_none() {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_read_back_what_they_say() {
        let room = Id::new();
        for o in [
            Offset {
                legacy: false,
                at: 1_700_000_000_000,
                last: None,
            },
            Offset {
                legacy: true,
                at: 5,
                last: Some((room, 42)),
            },
        ] {
            assert_eq!(Offset::parse(&o.render()), Some(o));
        }
        for bad in ["", "X1", "C", "Cabc", "C1.nope.2", "C1.x"] {
            assert_eq!(Offset::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_pid_is_its_users_alone() {
        let (a, b) = (Id::new(), Id::new());
        let pid = pid_for(a, "abc");
        assert_eq!(sid_of(a, &pid).as_deref(), Some("abc"));
        assert_eq!(sid_of(b, &pid), None);
        assert_eq!(sid_of(a, "abc.0000"), None);
    }

    #[test]
    fn frames_split_into_type_and_data() {
        let f = frame("typing", None, &json!({"room": "r", "typing": true}));
        assert_eq!(
            split_frame(&f),
            Some(("typing", r#"{"room":"r","typing":true}"#))
        );
    }

    #[test]
    fn aliases_never_carry_a_sender() {
        let Ok(Translated::Frame(kind, data)) = alias(
            "message",
            json!({"roomId": "r1", "message": "hi", "sender": "mallory", "username": "x"}),
        ) else {
            panic!("message is an alias");
        };
        assert_eq!(kind, "send_message");
        assert_eq!(data, json!({"room": "r1", "text": "hi"}));
        assert!(alias("joinRoom", json!("r1")).is_ok());
        assert!(alias("nope", json!({})).is_err());
    }
}
