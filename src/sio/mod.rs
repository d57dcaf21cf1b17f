//! Socket.IO: `/socket.io/` for clients built on `socket.io-client`.
//!
//! `engine` is Engine.IO 4 (long-polling, WebSocket, the upgrade, the
//! heartbeat); `packet` reads and writes Socket.IO 5 packets; `socket` is
//! the Socket.IO session above the engine (namespaces, CONNECT, events,
//! acks, binary attachments); `chat` is confab's namespace: a hub session
//! like a `/ws` connection, with confab's frames as events. This module
//! is the HTTP edge: the route, the same Origin check, connection limits
//! and CORS as the rest of the server.

pub mod chat;
pub mod engine;
pub mod packet;
pub mod socket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Buf;
use futures_util::StreamExt;
use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::hyper::upgrade::OnUpgrade;
use warp::reply::Response;

use crate::app::App;
use crate::limits::ConnSlot;
pub use engine::{ConnInfo, Engine, EngineConfig};

/// Who may open sessions, and what they hold while open.
#[derive(Clone)]
pub enum Gate {
    /// The server's own checks: Origin, connection limits, its CORS list.
    App(Arc<App>),
    /// Anyone, from any origin (the protocol compliance harness).
    Open,
}

/// The engine behind `/socket.io/` for this server.
pub fn engine_for(app: &Arc<App>) -> Arc<Engine> {
    let c = &app.config;
    let cfg = EngineConfig {
        ping_interval: std::time::Duration::from_millis(c.ws.heartbeat_interval_ms),
        ping_timeout: std::time::Duration::from_millis(c.ws.heartbeat_timeout_ms),
        max_payload: c.limits.max_frame_bytes,
        max_buffered: c.limits.outbound_queue.max(16),
        flush_gap: std::time::Duration::ZERO,
    };
    let service: Arc<dyn socket::Service> = Arc::new(chat::Chat::new(app.clone()));
    let connect_timeout = std::time::Duration::from_millis(c.ws.auth_timeout_ms);
    let admitting = app.clone();
    // A CONNECT's token of the operator's app gets its account first
    // (app::external), as on `/ws`.
    let prepare: engine::Prepare = Box::new(move |text: &str| {
        let token = connect_token(text)?;
        let app = admitting.clone();
        Some(Box::pin(async move { app.admit(&token).await }))
    });
    Engine::with_prepare(
        cfg,
        Box::new(move |info: &ConnInfo| {
            Box::new(socket::Socket::new(
                service.clone(),
                info.clone(),
                connect_timeout,
            ))
        }),
        prepare,
    )
}

/// The `auth.token` of an Engine.IO message carrying a Socket.IO CONNECT.
fn connect_token(text: &str) -> Option<String> {
    let rest = text.strip_prefix("40")?;
    let json = if rest.starts_with('/') {
        rest.split_once(',')?.1
    } else {
        rest
    };
    let auth: serde_json::Value = serde_json::from_str(json).ok()?;
    Some(auth.get("token")?.as_str()?.to_string())
}

/// `/<segment>/`: every Engine.IO request (handshake, polls, posts,
/// WebSocket upgrades).
pub fn route(
    segment: &'static str,
    engine: Arc<Engine>,
    gate: Gate,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path(segment)
        .and(warp::path::end())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(
            warp::query::query::<HashMap<String, String>>()
                .or(warp::any().map(HashMap::new))
                .unify(),
        )
        .and(crate::edge::peer())
        .and(warp::ext::optional::<Arc<ConnSlot>>())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::body::stream())
        .then(
            move |method: Method,
                  headers: HeaderMap,
                  query: HashMap<String, String>,
                  addr: Option<SocketAddr>,
                  accepted: Option<Arc<ConnSlot>>,
                  on_upgrade: Option<OnUpgrade>,
                  body| {
                let engine = engine.clone();
                let gate = gate.clone();
                async move {
                    let req = Req {
                        method,
                        headers,
                        query,
                        addr,
                        accepted,
                        on_upgrade,
                    };
                    let cors = cors(&gate, &req.headers);
                    let mut resp = serve(&engine, &gate, req, body).await;
                    if let Some(origin) = cors {
                        let h = resp.headers_mut();
                        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                        h.insert(header::VARY, HeaderValue::from_static("Origin"));
                        h.insert(
                            header::ACCESS_CONTROL_ALLOW_METHODS,
                            HeaderValue::from_static("GET, POST, OPTIONS"),
                        );
                        h.insert(
                            header::ACCESS_CONTROL_ALLOW_HEADERS,
                            HeaderValue::from_static("content-type"),
                        );
                    }
                    resp
                }
            },
        )
}

struct Req {
    method: Method,
    headers: HeaderMap,
    query: HashMap<String, String>,
    addr: Option<SocketAddr>,
    accepted: Option<Arc<ConnSlot>>,
    on_upgrade: Option<OnUpgrade>,
}

fn cors(gate: &Gate, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    match gate {
        Gate::Open => Some(HeaderValue::from_static("*")),
        Gate::App(app) => crate::ws::origin_allowed(app, headers).then(|| origin.clone()),
    }
}

fn reply(status: u16, body: String) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let ct = if status == 200 {
        "text/plain; charset=UTF-8"
    } else {
        "application/json"
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

fn bad(why: &str) -> Response {
    let r = engine::Reply::bad(why);
    reply(r.status, r.body)
}

async fn serve<S, B>(engine: &Arc<Engine>, gate: &Gate, req: Req, body: S) -> Response
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send,
{
    if req.method == Method::OPTIONS {
        let mut r = Response::default();
        *r.status_mut() = StatusCode::NO_CONTENT;
        return r;
    }
    if req.query.get("EIO").map(String::as_str) != Some("4") {
        return bad("Unsupported protocol version");
    }
    let transport = req.query.get("transport").map(String::as_str);
    let sid = req.query.get("sid").cloned();
    if let Gate::App(app) = gate
        && !crate::ws::origin_allowed(app, &req.headers)
    {
        let mut r = bad("Origin not allowed");
        *r.status_mut() = StatusCode::FORBIDDEN;
        return r;
    }
    let ip = match gate {
        Gate::App(app) => {
            crate::limits::client_ip(req.addr, &req.headers, &app.config.server.trusted_proxies)
        }
        Gate::Open => req.addr.map(|a| a.ip()),
    };
    let info = ConnInfo {
        addr: ip.map(|ip| SocketAddr::new(ip, req.addr.map(|a| a.port()).unwrap_or(0))),
    };
    match transport {
        Some("polling") => match (req.method, sid) {
            (Method::GET, None) => {
                let keep: engine::Keep = match gate {
                    Gate::App(app) => match app.limits.connections.open(ip) {
                        Ok(slot) => Box::new(slot),
                        Err(why) => {
                            app.metrics.reject("connection_limit");
                            return crate::edge::error_response(
                                &crate::app::AppError::RateLimited(why.into()),
                            );
                        }
                    },
                    Gate::Open => Box::new(()),
                };
                let r = engine.open_polling(info, keep);
                reply(r.status, r.body)
            }
            (Method::GET, Some(sid)) => {
                let r = engine.get(&sid).await;
                reply(r.status, r.body)
            }
            (Method::POST, Some(sid)) => {
                let max = engine.config().max_payload;
                match read_body(Box::pin(body), max).await {
                    Ok(bytes) => {
                        let r = engine.post(&sid, bytes).await;
                        reply(r.status, r.body)
                    }
                    Err(status) => {
                        // The session cannot go on without the packets
                        // it was sent: it ends, as Node's does.
                        engine.end(&sid).await;
                        reply(status, String::new())
                    }
                }
            }
            _ => bad("Bad handshake method"),
        },
        Some("websocket") => {
            let upgrade = req
                .headers
                .get(header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
            let key = req.headers.get(header::SEC_WEBSOCKET_KEY).map(|key| {
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
            });
            let (true, Some(accept), Some(on_upgrade)) = (upgrade, key, req.on_upgrade) else {
                return bad("Bad request");
            };
            let Ok(accept) = HeaderValue::from_str(&accept) else {
                return bad("Bad request");
            };
            // An unknown sid is still upgraded, then closed: what clients
            // (and the compliance suite) expect of a stale upgrade.
            let keep: engine::Keep = match gate {
                Gate::App(app) => match crate::ws::hold(app, req.accepted, req.addr, ip) {
                    Ok(held) => Box::new(held),
                    Err(why) => {
                        app.metrics.reject("connection_limit");
                        return crate::edge::error_response(&crate::app::AppError::RateLimited(
                            why.into(),
                        ));
                    }
                },
                Gate::Open => Box::new(req.accepted),
            };
            let engine = engine.clone();
            let max = engine.config().max_payload;
            tokio::spawn(async move {
                let upgraded = match on_upgrade.await {
                    Ok(u) => u,
                    Err(e) => {
                        tracing::debug!(error = %e, "socket.io upgrade failed");
                        return;
                    }
                };
                let ws = crate::wsio::WsConn::new(hyper_util::rt::TokioIo::new(upgraded), &[], max);
                engine.websocket(sid, ws, info, keep).await;
            });
            let mut r = Response::default();
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            r
        }
        _ => bad("Transport unknown"),
    }
}

/// The body, up to `max` bytes (413 past it).
async fn read_body<S, B>(mut body: S, max: usize) -> Result<Vec<u8>, u16>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| 400u16)?;
        if out.len() + chunk.remaining() > max {
            return Err(413);
        }
        while chunk.has_remaining() {
            let c = chunk.chunk();
            out.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}
