//! WebSocket connections: the upgrade filter and one task per connection.
//!
//! The task is a single loop over three sources (no separate reader and
//! writer tasks, which would double an idle connection's cost). It reads client
//! frames one at a time: a frame that needs the store runs as the one
//! "in-flight" future while the loop keeps delivering fan-out and
//! heartbeats, and the next frame is read once it is answered.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use warp::Filter;
use warp::http::{HeaderMap, StatusCode, header};
use warp::hyper::upgrade::OnUpgrade;
use warp::reply::Response;
use warp::ws::Ws;

use crate::app::{Actor, App, AppError, Target, page};
use crate::domain::{Id, User, Username};
use crate::edge::{CreateRoomBody, MessageBody, error_response, validate_new_room};
use crate::hub::{CloseRequest, Frame, SessionId, Wake};
use crate::limits::ConnSlot;
use crate::protocol::{ClientFrame, ErrorCode, close, error_frame, frame};
use crate::wsio::{Msg, WsConn, WsError};

mod threads;

/// A WebSocket over the upgraded HTTP connection.
type WebSocket = WsConn<hyper_util::rt::TokioIo<warp::hyper::upgrade::Upgraded>>;

pub fn route(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    // `warp::ws()` checks the handshake headers (and answers what is not a
    // WebSocket request as before), but its `Ws` hands the connection to
    // tungstenite, whose buffers cost every idle connection; the upgrade
    // is finished here instead (framing in `wsio`), from a copy of hyper's
    // upgrade handle taken before `warp::ws()` claims it.
    warp::path("ws")
        .and(warp::path::end())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ws())
        .and(warp::header::headers_cloned())
        .and(
            warp::query::query::<std::collections::HashMap<String, String>>()
                .or(warp::any().map(Default::default))
                .unify(),
        )
        .and(crate::edge::peer())
        .and(warp::ext::optional::<Arc<ConnSlot>>())
        .map(
            move |on_upgrade: Option<OnUpgrade>,
                  _: Ws,
                  headers: HeaderMap,
                  query: std::collections::HashMap<String, String>,
                  addr: Option<SocketAddr>,
                  accepted: Option<Arc<ConnSlot>>| {
                if !origin_allowed(&app, &headers) {
                    let mut r = error_response(&AppError::Forbidden("origin not allowed".into()));
                    *r.status_mut() = StatusCode::FORBIDDEN;
                    return r;
                }
                let ip =
                    crate::limits::client_ip(addr, &headers, &app.config.server.trusted_proxies);
                let slot = match hold(&app, accepted, addr, ip) {
                    Ok(slot) => slot,
                    Err(why) => {
                        app.metrics.reject("connection_limit");
                        return error_response(&AppError::RateLimited(why.into()));
                    }
                };
                let (Some(on_upgrade), Some(accept)) = (on_upgrade, accept_key(&headers)) else {
                    return error_response(&AppError::BadRequest("not a WebSocket upgrade".into()));
                };
                tokio::spawn(connection(Box::new(Opening {
                    app: app.clone(),
                    on_upgrade,
                    token: query.get("token").cloned(),
                    peer: ip.map(|ip| SocketAddr::new(ip, addr.map(|a| a.port()).unwrap_or(0))),
                    slot,
                })));
                let mut r = Response::default();
                *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let h = r.headers_mut();
                h.insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("upgrade"),
                );
                h.insert(
                    header::UPGRADE,
                    header::HeaderValue::from_static("websocket"),
                );
                h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
                r
            },
        )
}

/// What an upgraded connection holds against the connection limits: the
/// slot its connection took at accept and, behind a trusted proxy (whose
/// connections count toward the total only), one for the forwarded
/// client's address.
pub(crate) struct Held {
    _accepted: Option<Arc<ConnSlot>>,
    _forwarded: Option<ConnSlot>,
}

pub(crate) fn hold(
    app: &App,
    accepted: Option<Arc<ConnSlot>>,
    addr: Option<SocketAddr>,
    ip: Option<std::net::IpAddr>,
) -> Result<Held, &'static str> {
    let connections = &app.limits.connections;
    let Some(accepted) = accepted else {
        // Served without the accept loop: the upgrade takes the only slot.
        return Ok(Held {
            _accepted: None,
            _forwarded: Some(connections.open(ip)?),
        });
    };
    let proxied = addr.is_some_and(|a| app.config.server.trusted_proxies.contains(&a.ip()));
    let forwarded = match ip {
        Some(ip) if proxied => Some(connections.open_address(ip)?),
        _ => None,
    };
    Ok(Held {
        _accepted: Some(accepted),
        _forwarded: forwarded,
    })
}

/// `Sec-WebSocket-Accept` for the request's key (already checked present
/// by `warp::ws()`).
fn accept_key(headers: &HeaderMap) -> Option<header::HeaderValue> {
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    header::HeaderValue::from_str(&accept).ok()
}

/// A browser's Origin must be this server's own or a configured one;
/// requests without Origin (native clients) pass.
pub(crate) fn origin_allowed(app: &App, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let bare = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    (!host.is_empty() && bare.eq_ignore_ascii_case(host))
        || app
            .config
            .server
            .cors_origins
            .iter()
            .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Why the loop ended.
enum Exit {
    Close(CloseRequest),
    /// The client sent a close frame (with this code): answer it and
    /// finish.
    PeerClosed(Option<u16>),
    Gone,
}

fn close_req(code: u16, reason: &str) -> CloseRequest {
    CloseRequest {
        code,
        reason: reason.into(),
        last_frame: None,
    }
}

/// Sends the close `req` asks for and finishes the closing handshake
/// (`WsConn::close`) within the grace period.
async fn send_close(ws: &mut WebSocket, req: CloseRequest, grace: Duration) {
    let _ = tokio::time::timeout(grace, async {
        if let Some(f) = req.last_frame {
            ws.queue_text(&f);
        }
        // A long kick reason is cut to what a close frame holds; the full
        // reason travels in the `kicked` frame.
        ws.close(req.code, &req.reason).await
    })
    .await;
}

/// The close that answers a framing error.
fn close_for(e: &WsError, metrics: &crate::metrics::Metrics) -> Exit {
    match e.close_code() {
        Some(close::TOO_BIG) => {
            metrics.reject("too_big");
            Exit::Close(close_req(close::TOO_BIG, "frame too big"))
        }
        Some(code) => Exit::Close(close_req(code, &e.to_string())),
        None => Exit::Gone,
    }
}

/// What a connection starts from, in one box: an async fn's arguments
/// stay in its task for the connection's whole life, even once used up.
struct Opening {
    app: Arc<App>,
    on_upgrade: OnUpgrade,
    token: Option<String>,
    peer: Option<SocketAddr>,
    slot: Held,
}

/// A connection's task. It is allocated once, at the size of its largest
/// state, for the connection's whole life, so the rare large states
/// (the upgrade, signing in, the closing handshake) run boxed and are
/// freed once done: an idle connection keeps the socket, [`Live`] and the
/// wait for its next event, little else.
async fn connection(start: Box<Opening>) {
    let grace = Duration::from_millis(start.app.config.ws.close_grace_ms);
    // No socket: the upgrade itself failed.
    let Some(mut conn) = Box::pin(open(start)).await else {
        return;
    };
    let conn = &mut *conn;
    let exit = match &mut conn.live {
        Ok(live) => run(&mut conn.ws, live).await,
        Err(exit) => std::mem::replace(exit, Exit::Gone),
    };
    // Out of the hub and the limits before the closing handshake.
    conn.live = Err(Exit::Gone);
    Box::pin(finish(&mut conn.ws, exit, grace)).await;
}

/// An upgraded connection, on the heap (the task keeps a pointer): the
/// signed-in state, or how to close a refused one.
struct Conn {
    ws: WebSocket,
    live: Result<Live, Exit>,
}

/// What a signed-in connection holds for its whole life. `_slot` is held
/// from the accept on and given back however the connection ends, just
/// before the closing handshake, which may wait up to the grace period for
/// a client that never answers: such a client's slot is free at once.
struct Live {
    ctx: Ctx,
    bucket: Bucket,
    /// Leaves the hub however the task ends, a panic included, so no
    /// session outlives its connection.
    _registered: Registered,
    _slot: Held,
}

/// The upgraded socket and the signed-in connection, or how to close it
/// (its slot and hub session already let go); `None` if the upgrade failed.
async fn open(start: Box<Opening>) -> Option<Box<Conn>> {
    let Opening {
        app,
        on_upgrade,
        token,
        peer,
        slot,
    } = *start;
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            return None;
        }
    };
    // hyper replays bytes it read past the request itself.
    let mut ws = WsConn::new(
        hyper_util::rt::TokioIo::new(upgraded),
        &[],
        app.config.limits.max_frame_bytes,
    );
    let live = sign_in(&app, &mut ws, token, peer, slot).await;
    Some(Box::new(Conn { ws, live }))
}

/// Authenticates, registers the session with the hub and sends the
/// greeting.
async fn sign_in(
    app: &Arc<App>,
    ws: &mut WebSocket,
    token: Option<String>,
    addr: Option<SocketAddr>,
    slot: Held,
) -> Result<Live, Exit> {
    let (user, token, token_id, auth_id) = authenticate(app, ws, token).await?;
    if app.hub.sessions_of(user.id) >= app.config.limits.max_connections_per_user {
        app.metrics.reject("connection_limit");
        return Err(Exit::Close(close_req(
            close::POLICY,
            "too many connections for this account",
        )));
    }
    // The session names its token from the start: a revocation the hub
    // applies from now on finds it; one applied before could not, but its
    // commit came first, so the check below sees it.
    let connected = app
        .hub
        .connect(user.clone(), addr, Some(token_id), || app.ties(user.id))
        .map_err(|e| {
            tracing::error!(error = %e, "cannot load rooms and friends for a new connection");
            Exit::Close(close_req(1011, "internal error"))
        })?;
    let registered = Registered {
        hub: app.hub.clone(),
        session: connected.session,
    };
    app.authenticate_token(&token)
        .map_err(|e| Exit::Close(refusal(&e)))?;
    let scopes = app
        .scopes_of(&token)
        .map_err(|e| Exit::Close(refusal(&e)))?;
    let frames = hello(app, &user, connected.session, auth_id).map_err(|e| {
        tracing::error!(error = %e, "cannot build the authenticated frame");
        Exit::Close(close_req(1011, "internal error"))
    })?;
    for f in frames {
        ws.queue_text(&f);
    }
    flush(ws, &connected.ctl, send_timeout(app)).await?;
    let limits = &app.config.limits;
    Ok(Live {
        bucket: Bucket::new(limits.frames_per_sec, limits.frames_burst),
        ctx: Ctx {
            app: app.clone(),
            user,
            ctl: connected.ctl,
            scopes: scopes.map(Box::new),
        },
        _registered: registered,
        _slot: slot,
    })
}

/// How long a write may wait on a client that does not read.
fn send_timeout(app: &App) -> Duration {
    Duration::from_millis(app.config.ws.heartbeat_timeout_ms.max(1000))
}

/// Ends the socket the way the exit calls for.
async fn finish(ws: &mut WebSocket, exit: Exit, grace: Duration) {
    match exit {
        Exit::Close(req) => send_close(ws, req, grace).await,
        // The answer to the client's close echoes its code (`wsio` lets
        // through only codes a close frame may carry).
        Exit::PeerClosed(code) => send_close(ws, close_req(code.unwrap_or(1000), ""), grace).await,
        Exit::Gone => {}
    }
}

struct Registered {
    hub: Arc<crate::hub::Hub>,
    session: SessionId,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.hub.disconnect(self.session);
    }
}

/// How a refused sign-in ends: a banned account is told so and closed
/// with 4003; anything else wrong with the token is 4001.
fn refusal(e: &AppError) -> CloseRequest {
    let (code, reason) = match e {
        AppError::Banned { .. } => (close::KICKED, "banned"),
        _ => (close::UNAUTHORIZED, "unauthorized"),
    };
    CloseRequest {
        code,
        reason: reason.into(),
        last_frame: Some(refusal_frame(None, e)),
    }
}

/// The `error` that refuses a sign-in; a ban's carries the ban itself, so
/// the client can say until when and why instead of offering a reconnect.
fn refusal_frame(id: Option<&str>, e: &AppError) -> Frame {
    match e {
        AppError::Banned { message, ban } => frame(
            "error",
            id,
            &json!({"code": e.code().as_str(), "message": message, "ban": ban}),
        ),
        _ => error_frame(id, e.code(), &e.client_message()),
    }
}

/// Authenticates by `?token=` or by a first `auth` frame within the
/// configured time.
async fn authenticate(
    app: &Arc<App>,
    ws: &mut WebSocket,
    token: Option<String>,
) -> Result<(User, String, u128, Option<String>), Exit> {
    if let Some(token) = token {
        app.admit(&token).await;
        return match app.authenticate_token(&token) {
            Ok((u, v)) => Ok((u, token, v.token, None)),
            Err(e) => Err(Exit::Close(refusal(&e))),
        };
    }
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(app.config.ws.auth_timeout_ms);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        let msg = match next {
            Err(_) => {
                return Err(Exit::Close(close_req(
                    close::UNAUTHORIZED,
                    "no auth in time",
                )));
            }
            Ok(None) => return Err(Exit::Gone),
            Ok(Some(Err(e))) => return Err(close_for(&e, &app.metrics)),
            Ok(Some(Ok(m))) => m,
        };
        let reply = match msg {
            Msg::Close(code) => return Err(Exit::PeerClosed(code)),
            Msg::Ping | Msg::Pong => None,
            Msg::Binary(_) => Some(error_frame(
                None,
                ErrorCode::BadRequest,
                "frames must be UTF-8 JSON text",
            )),
            Msg::Text(text) => Some(match ClientFrame::parse(&text) {
                Ok(f) if f.kind == "auth" => {
                    #[derive(Deserialize)]
                    struct AuthData {
                        token: String,
                    }
                    match f.data::<AuthData>() {
                        Ok(d) => {
                            app.admit(&d.token).await;
                            match app.authenticate_token(&d.token) {
                                Ok((user, v)) => return Ok((user, d.token, v.token, f.id)),
                                Err(e) => {
                                    let mut req = refusal(&e);
                                    req.last_frame = Some(refusal_frame(f.id.as_deref(), &e));
                                    return Err(Exit::Close(req));
                                }
                            }
                        }
                        Err(e) => error_frame(f.id.as_deref(), ErrorCode::BadRequest, &e),
                    }
                }
                Ok(f) => error_frame(
                    f.id.as_deref(),
                    ErrorCode::Unauthorized,
                    "authenticate first with an auth frame",
                ),
                Err(e) => error_frame(e.id.as_deref(), ErrorCode::BadRequest, &e.message),
            }),
        };
        if let Some(reply) = reply {
            ws.queue_text(&reply);
        }
        // A pong to a ping is queued too.
        if ws.unwritten() > 0
            && tokio::time::timeout_at(deadline, ws.flush())
                .await
                .map(|r| r.is_err())
                .unwrap_or(true)
        {
            return Err(Exit::Gone);
        }
    }
}

pub(crate) type Pending = Pin<Box<dyn Future<Output = Option<Frame>> + Send>>;

/// A frame's answer: ready now, or after the store has done its part.
pub(crate) enum Answer {
    Now(Option<Frame>),
    Later(Pending),
}

/// Per-connection token bucket against floods. Refusals are counted over a
/// window: a client that keeps pushing past its allowance is flooding,
/// even if a frame slips through now and then.
pub(crate) struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
    pub(crate) refused: u32,
    window_start: Instant,
}

const FLOOD_WINDOW: Duration = Duration::from_secs(10);

impl Bucket {
    pub(crate) fn new(rate: u32, burst: u32) -> Bucket {
        let now = Instant::now();
        Bucket {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: now,
            refused: 0,
            window_start: now,
        }
    }

    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if now.duration_since(self.window_start) > FLOOD_WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.refused += 1;
            false
        }
    }
}

/// What the loop waits for next.
enum Event {
    Wake(Wake),
    Answer(Option<Frame>),
    Incoming(Option<Result<Msg, WsError>>),
}

/// Polls the three sources in order: the hub's requests (a close, fan-out)
/// first, then the frame in flight, then the socket, read only once that
/// frame is answered. Polled by hand rather than through `select!`, which
/// would keep a future per source in every idle connection's task.
fn poll_event(
    cx: &mut std::task::Context<'_>,
    ws: &mut WebSocket,
    ctl: &crate::hub::SessionControl,
    inflight: &mut Option<Pending>,
) -> std::task::Poll<Event> {
    use std::task::Poll;
    if let Poll::Ready(w) = ctl.poll_next(cx) {
        return Poll::Ready(Event::Wake(w));
    }
    if let Some(fut) = inflight {
        return match fut.as_mut().poll(cx) {
            Poll::Ready(a) => {
                *inflight = None;
                Poll::Ready(Event::Answer(a))
            }
            Poll::Pending => Poll::Pending,
        };
    }
    ws.poll_next(cx).map(Event::Incoming)
}

async fn run(ws: &mut WebSocket, live: &mut Live) -> Exit {
    let mut inflight: Option<Pending> = None;
    // Each turn queues what is ready, then writes it all at once.
    loop {
        let event =
            std::future::poll_fn(|cx| poll_event(cx, ws, &live.ctx.ctl, &mut inflight)).await;
        let app = &live.ctx.app;
        let metrics = &app.metrics;
        match event {
            Event::Wake(Wake::Close(req)) => return Exit::Close(req),
            // Everything queued goes out in one write.
            Event::Wake(Wake::Out(out)) => {
                let mut bytes = 0;
                for f in &out.frames {
                    ws.queue_text(f);
                    bytes += f.len();
                }
                if out.ping {
                    ws.queue_ping();
                }
                if let Some(since) = out.since {
                    metrics
                        .delivery_seconds
                        .observe(since.elapsed().as_secs_f64());
                }
                metrics.bytes_out.inc_by(bytes as u64);
            }
            Event::Answer(answer) => {
                if let Some(f) = answer {
                    ws.queue_text(&f);
                }
            }
            Event::Incoming(incoming) => {
                live.ctx.ctl.seen();
                let msg = match incoming {
                    None => return Exit::Gone,
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return close_for(&e, metrics),
                };
                let text = match msg {
                    Msg::Close(code) => return Exit::PeerClosed(code),
                    // A ping's pong is already queued.
                    Msg::Ping | Msg::Pong => None,
                    Msg::Text(t) => Some(Ok(t)),
                    Msg::Binary(data) => Some(Err(data.len())),
                };
                if let Some(text) = text {
                    metrics.frames_in.inc();
                    metrics
                        .bytes_in
                        .inc_by(text.as_ref().map_or_else(|n| *n, String::len) as u64);
                    let limits = &app.config.limits;
                    if !live.bucket.take() {
                        metrics.reject("rate_limited");
                        if live.bucket.refused > limits.frames_burst.max(10) {
                            metrics.reject("flooding");
                            return Exit::Close(close_req(close::POLICY, "flooding"));
                        }
                        let id = text
                            .as_ref()
                            .ok()
                            .and_then(|t| ClientFrame::parse(t).ok())
                            .and_then(|f| f.id);
                        ws.queue_text(&error_frame(
                            id.as_deref(),
                            ErrorCode::RateLimited,
                            "slow down",
                        ));
                    } else {
                        match text {
                            Ok(t) => match handle(&live.ctx, &t) {
                                Answer::Now(Some(f)) => ws.queue_text(&f),
                                Answer::Now(None) => {}
                                Answer::Later(fut) => inflight = Some(fut),
                            },
                            Err(_) => ws.queue_text(&error_frame(
                                None,
                                ErrorCode::BadRequest,
                                "frames must be UTF-8 JSON text",
                            )),
                        }
                    }
                }
            }
        }
        if ws.unwritten() > 0
            && let Err(exit) = flush(ws, &live.ctx.ctl, send_timeout(&live.ctx.app)).await
        {
            return exit;
        }
    }
}

/// Writes what is queued, giving way to a close request (a full queue, a
/// kick) and to a peer that stopped reading.
async fn flush(
    ws: &mut WebSocket,
    ctl: &crate::hub::SessionControl,
    timeout: Duration,
) -> Result<(), Exit> {
    // A socket with room takes it all at once, with no timer or close
    // request to watch: the common case, set up for nothing.
    match std::future::poll_fn(|cx| std::task::Poll::Ready(ws.poll_flush(cx))).await {
        std::task::Poll::Ready(Ok(())) => return Ok(()),
        std::task::Poll::Ready(Err(_)) => return Err(Exit::Gone),
        std::task::Poll::Pending => {}
    }
    // A full socket: boxed, because its timer would otherwise be part of
    // every connection's task, idle or not, for the connection's life.
    Box::pin(async {
        tokio::select! {
            biased;
            req = ctl.closed() => Err(Exit::Close(req)),
            r = tokio::time::timeout(timeout, ws.flush()) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Exit::Gone),
                Err(_) => Err(Exit::Close(close_req(close::TOO_SLOW, "too slow"))),
            },
        }
    })
    .await
}

/// `ack` for an `auth` frame (when it had an id), then `authenticated`.
pub(crate) fn hello(
    app: &App,
    user: &User,
    session: SessionId,
    auth_id: Option<String>,
) -> Result<Vec<Frame>, AppError> {
    /// Serialized straight from the lists: a `serde_json::Value` tree of
    /// them would be built and dropped on every connect.
    #[derive(serde::Serialize)]
    struct Authenticated<'a> {
        user: &'a User,
        session_id: String,
        rooms: Vec<crate::domain::Room>,
        online_users: Vec<User>,
        friends: Vec<&'a User>,
        friend_requests: &'a [User],
        /// Unread counts for every room in `rooms`.
        unread: Vec<crate::store::Unread>,
        mutes: Vec<crate::domain::MuteInfo>,
    }
    let mut out = Vec::new();
    if let Some(id) = auth_id {
        out.push(frame("ack", Some(&id), &json!({ "user": user })));
    }
    let rooms = app.rooms_of(user.id)?;
    // Requests that arrived while the user was away are delivered here.
    let lists = app.friends(user.id)?;
    out.push(frame(
        "authenticated",
        None,
        &Authenticated {
            user,
            session_id: session.to_string(),
            rooms,
            online_users: app.hub.visible_to(user.id),
            friends: lists.friends.iter().map(|f| &f.user).collect(),
            friend_requests: &lists.incoming,
            unread: app.unread(user.id)?,
            mutes: app.own_mutes(user.id)?,
        },
    ));
    Ok(out)
}

pub(crate) struct Ctx {
    pub(crate) app: Arc<App>,
    pub(crate) user: User,
    pub(crate) ctl: Arc<crate::hub::SessionControl>,
    /// A bot token's scopes: each frame is checked against them
    /// (src/gate.rs). `None` for people.
    pub(crate) scopes: Option<Box<crate::store::integrations::Scopes>>,
}

#[derive(Deserialize)]
struct RoomRef {
    room: String,
}

#[derive(Deserialize)]
struct SendData {
    room: Option<String>,
    to: Option<String>,
    #[serde(flatten)]
    body: MessageBody,
}

#[derive(Deserialize)]
struct EditData {
    message_id: String,
    text: String,
}

#[derive(Deserialize)]
struct MessageRef {
    message_id: String,
}

#[derive(Deserialize)]
struct HistoryData {
    room: String,
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<u64>,
}

#[derive(Deserialize)]
struct ToData {
    to: String,
}

#[derive(Deserialize)]
struct FromData {
    from: String,
}

#[derive(Deserialize)]
struct UsernameData {
    username: String,
}

#[derive(Deserialize)]
struct MarkReadData {
    room: String,
    seq: u64,
}

fn room_id(s: &str) -> Result<Id, AppError> {
    Id::parse("room", s).map_err(|_| AppError::NotFound("room"))
}

fn message_id(s: &str) -> Result<Id, AppError> {
    Id::parse("message_id", s).map_err(|_| AppError::NotFound("message"))
}

/// Turns a result into the frame that answers it: `ack` with data when the
/// client gave an id, an `error` in any case when it failed.
fn answer(id: Option<&str>, r: Result<serde_json::Value, AppError>) -> Option<Frame> {
    match r {
        Ok(data) => id.map(|id| frame("ack", Some(id), &data)),
        Err(e) => Some(error_frame(id, e.code(), &e.client_message())),
    }
}

fn handle(ctx: &Ctx, text: &str) -> Answer {
    match ClientFrame::parse(text) {
        Ok(f) => handle_frame(ctx, f),
        Err(e) => Answer::Now(Some(error_frame(
            e.id.as_deref(),
            ErrorCode::BadRequest,
            &e.message,
        ))),
    }
}

/// A client frame's effect and answer, whatever carried it (`/ws`, or a
/// Socket.IO event).
pub(crate) fn handle_frame(ctx: &Ctx, f: ClientFrame) -> Answer {
    let id = f.id.clone();
    macro_rules! data {
        ($t:ty) => {
            match f.data::<$t>() {
                Ok(d) => d,
                Err(e) => {
                    return Answer::Now(Some(error_frame(
                        id.as_deref(),
                        ErrorCode::BadRequest,
                        &format!("data: {e}"),
                    )));
                }
            }
        };
    }
    macro_rules! later {
        ($body:expr) => {{
            let fut = $body;
            Answer::Later(Box::pin(async move {
                let r: Result<serde_json::Value, AppError> = fut.await;
                answer(id.as_deref(), r)
            }))
        }};
    }
    let app = ctx.app.clone();
    let user = ctx.user.clone();
    if let Some(scopes) = &ctx.scopes
        && let Err(e) = crate::gate::frame(&app, scopes, &f)
    {
        return Answer::Now(answer(id.as_deref(), Err(e)));
    }
    match f.kind.as_str() {
        "ping" => Answer::Now(Some(frame("pong", id.as_deref(), &json!({})))),
        "auth" => {
            // Already signed in: a repeated auth must still carry a valid
            // token for this same user.
            #[derive(Deserialize)]
            struct AuthData {
                token: String,
            }
            let d = data!(AuthData);
            later!(async move {
                app.admit(&d.token).await;
                let u = app.authenticate(&d.token)?;
                if u.id == user.id {
                    Ok(json!({ "user": u }))
                } else {
                    Err(AppError::Forbidden(
                        "this connection is signed in as another user".into(),
                    ))
                }
            })
        }
        "join_room" => {
            let d = data!(RoomRef);
            later!(async move {
                let (room, last_seq) = app.join_room(&user, room_id(&d.room)?).await?;
                Ok(json!({ "room": room, "last_seq": last_seq }))
            })
        }
        "leave_room" => {
            let d = data!(RoomRef);
            later!(async move {
                app.leave_room(&user, room_id(&d.room)?).await?;
                Ok(json!({}))
            })
        }
        "create_room" => {
            let d = data!(CreateRoomBody);
            later!(async move {
                let (name, vis, topic) = validate_new_room(&app, &d)?;
                let room = app
                    .create_room(&Actor::User(user), name, vis, topic)
                    .await?;
                Ok(json!({ "room": room }))
            })
        }
        "send_message" => {
            let d = data!(SendData);
            later!(async move {
                let target = match (d.room, d.to) {
                    (Some(room), None) => Target::Room(room_id(&room)?),
                    (None, Some(to)) => Target::User(Username::parse(&to)?),
                    _ => {
                        return Err(AppError::BadRequest(
                            "data: give exactly one of room or to".into(),
                        ));
                    }
                };
                let message = app.send_message(&user, d.body.into_input(target)?).await?;
                Ok(json!({ "message": message }))
            })
        }
        "edit_message" => {
            let d = data!(EditData);
            later!(async move {
                let message = app
                    .edit_message(&user, message_id(&d.message_id)?, &d.text)
                    .await?;
                Ok(json!({ "message": message }))
            })
        }
        "delete_message" => {
            let d = data!(MessageRef);
            later!(async move {
                app.moderate_delete(&Actor::User(user), message_id(&d.message_id)?, None)
                    .await?;
                Ok(json!({}))
            })
        }
        kind @ ("typing_start" | "typing_stop") => {
            let d = data!(RoomRef);
            let on = kind == "typing_start";
            let r = room_id(&d.room).and_then(|room| {
                app.typing(room, &user, on)?;
                Ok(json!({}))
            });
            Answer::Now(answer(id.as_deref(), r))
        }
        "history" => {
            let d = data!(HistoryData);
            let r = (|| {
                let page = page(d.before, d.after, d.limit)?;
                let (messages, has_more) =
                    app.history(&Actor::User(user), room_id(&d.room)?, page)?;
                Ok(json!({ "messages": messages, "has_more": has_more }))
            })();
            Answer::Now(answer(id.as_deref(), r))
        }
        "mark_read" => {
            let d = data!(MarkReadData);
            later!(async move {
                app.mark_read(&user, room_id(&d.room)?, d.seq).await?;
                Ok(json!({}))
            })
        }
        "presence" => {
            let d = data!(RoomRef);
            let r = room_id(&d.room)
                .and_then(|room| app.presence(&Actor::User(user), room))
                .map(|users| json!({ "users": users }));
            Answer::Now(answer(id.as_deref(), r))
        }
        "friend_request" => {
            let d = data!(ToData);
            later!(async move {
                app.friend_request(&user, &Username::parse(&d.to)?).await?;
                Ok(json!({}))
            })
        }
        "friend_accept" => {
            let d = data!(FromData);
            later!(async move {
                app.friend_accept(&user, &Username::parse(&d.from)?).await?;
                Ok(json!({}))
            })
        }
        "friend_decline" => {
            let d = data!(FromData);
            later!(async move {
                app.friend_decline(&user, &Username::parse(&d.from)?)
                    .await?;
                Ok(json!({}))
            })
        }
        "friend_remove" => {
            let d = data!(UsernameData);
            later!(async move {
                app.friend_remove(&user, &Username::parse(&d.username)?)
                    .await?;
                Ok(json!({}))
            })
        }
        "block_user" => {
            let d = data!(UsernameData);
            later!(async move {
                app.block(&user, &Username::parse(&d.username)?).await?;
                Ok(json!({}))
            })
        }
        "unblock_user" => {
            let d = data!(UsernameData);
            later!(async move {
                app.unblock(&user, &Username::parse(&d.username)?).await?;
                Ok(json!({}))
            })
        }
        "presence_state" => {
            #[derive(Deserialize)]
            struct StateData {
                active: bool,
            }
            let d = data!(StateData);
            if ctx.ctl.set_active(d.active) {
                app.hub.local_presence.notify_one();
            }
            Answer::Now(answer(id.as_deref(), Ok(json!({}))))
        }
        "search" => {
            let d = data!(crate::app::SearchInput);
            later!(async move { Ok(json!(app.search(&user, d).await?)) })
        }
        kind @ ("react" | "unreact") => {
            #[derive(Deserialize)]
            struct ReactData {
                message_id: String,
                emoji: String,
            }
            let d = data!(ReactData);
            let on = kind == "react";
            later!(async move {
                let message = message_id(&d.message_id)?;
                if on {
                    app.react(&user, message, &d.emoji).await?;
                } else {
                    app.unreact(&user, message, &d.emoji).await?;
                }
                Ok(json!({}))
            })
        }
        kind @ ("pin" | "unpin") => {
            let d = data!(MessageRef);
            let on = kind == "pin";
            later!(async move {
                app.set_pinned(&Actor::User(user), message_id(&d.message_id)?, on)
                    .await?;
                Ok(json!({}))
            })
        }
        "pins" => {
            let d = data!(RoomRef);
            let r = room_id(&d.room)
                .and_then(|room| app.pins(&Actor::User(user), room))
                .map(|(messages, pins)| json!({ "messages": messages, "pins": pins }));
            Answer::Now(answer(id.as_deref(), r))
        }
        other => match threads::handle(ctx, &f) {
            Some(a) => a,
            None => Answer::Now(Some(error_frame(
                id.as_deref(),
                ErrorCode::BadRequest,
                &format!("type: unknown frame type {other:?}"),
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn returns, without calling it.
    fn future_size<A, F: Future>(_: impl Fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A connection's task is allocated once for the connection's whole
    /// life at the size of its largest state, idle or not: the rare, large
    /// states (the upgrade, signing in with an external token's key-set
    /// fetch, the timed wait on a full socket, the closing handshake) are
    /// boxed while they run so that every idle connection does not pay for
    /// them, and the socket and session live in one box beside it.
    #[test]
    fn a_connection_task_stays_small() {
        let size = future_size(connection);
        // 7.3 KiB before any of this; 1.5 KiB with the key-set fetch
        // boxed; 240 bytes with the task split (debug build).
        assert!(size <= 512, "the connection future is {size} bytes");
        let conn = std::mem::size_of::<Conn>();
        assert!(conn <= 384, "a connection's state is {conn} bytes");
    }

    /// A panic inside a connection's task still takes its session out of
    /// the hub, so the user does not linger online and others are told.
    #[tokio::test]
    async fn a_panicking_connection_leaves_the_hub() {
        let hub = crate::hub::Hub::new(8, Duration::from_secs(6), Default::default());
        let user = User {
            id: crate::domain::Id::new(),
            username: "crash".into(),
            role: crate::domain::Role::User,
            avatar_url: None,
            bot: false,
        };
        let conn = hub
            .connect(user.clone(), None, None, || {
                Ok::<_, AppError>(crate::hub::Ties::default())
            })
            .unwrap();
        assert!(hub.is_online(user.id));
        let task_hub = hub.clone();
        let session = conn.session;
        let joined = tokio::spawn(async move {
            let _registered = Registered {
                hub: task_hub,
                session,
            };
            panic!("a bug in one connection");
        })
        .await;
        assert!(joined.unwrap_err().is_panic());
        assert!(!hub.is_online(user.id));
        assert_eq!(hub.session_count(), 0);
    }
}
