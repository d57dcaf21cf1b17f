//! HTTP: the warp filters, a small router, and the handlers. This is the
//! one place where errors become status codes and JSON error bodies.
//!
//! The REST API goes through one catch-all filter and a `match` on method
//! and path segments rather than a tree of warp filters: it compiles much
//! faster, and every route stays visible in one table below.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::Response;
use warp::{Buf, Filter};

use crate::app::{Actor, App, AppError, Target, page};
use crate::domain::{DmPolicy, Id, Password, RoomName, Topic, User, Username, Visibility};
use crate::edge::{CreateRoomBody, MessageBody, error_response, json_response, validate_new_room};

mod integrations;
mod threads;

type Result<T, E = AppError> = std::result::Result<T, E>;

/// All routes: the WebSocket upgrade at `/ws`, the streamed upload at
/// `POST /api/uploads`, everything else through the router.
pub fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let ws = crate::ws::route(app.clone());
    let socketio = crate::sio::route(
        "socket.io",
        crate::sio::engine_for(&app),
        crate::sio::Gate::App(app.clone()),
    );
    let app_for_uploads = app.clone();
    let with_app = warp::any().map(move || app.clone());
    let api = warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(
            warp::query::query::<HashMap<String, String>>()
                .or(warp::any().map(HashMap::new))
                .unify(),
        )
        .and(crate::edge::peer())
        .and(warp::body::stream())
        .and(with_app)
        .then(
            |method: Method,
             path: warp::path::FullPath,
             headers: HeaderMap,
             query: HashMap<String, String>,
             addr: Option<SocketAddr>,
             body,
             app: Arc<App>| async move {
                let req = Request {
                    method,
                    path: path.as_str().to_string(),
                    headers,
                    query,
                    addr,
                };
                let origin_ok = cors_allowed(&app, &req.headers);
                let mut resp = if req.method == Method::OPTIONS {
                    empty(StatusCode::NO_CONTENT)
                } else {
                    let limit = app.config.limits.max_body_bytes;
                    // A token of the operator's app may need its keys or
                    // its account first (app::external).
                    if let Some(token) = bearer(&req.headers) {
                        app.admit(token).await;
                    }
                    match read_body(body, limit, Pace::new(&app)).await {
                        Ok(bytes) => match dispatch(&app, &req, bytes).await {
                            Ok(resp) => resp,
                            Err(e) => error_response(&e),
                        },
                        Err(e) => error_response(&e),
                    }
                };
                security_headers(resp.headers_mut());
                if let Some(origin) = origin_ok {
                    cors_headers(resp.headers_mut(), origin);
                }
                resp
            },
        );
    ws.or(socketio)
        .unify()
        .or(uploads(app_for_uploads))
        .unify()
        .or(api)
        .unify()
}

/// `POST /api/uploads`: multipart, streamed, refused with 413 as soon as it
/// passes the limit.
fn uploads(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::post()
        .and(warp::path!("api" / "uploads"))
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(warp::any().map(move || app.clone()))
        .then(|headers: HeaderMap, body, app: Arc<App>| async move {
            let mut resp = match upload(&app, &headers, body).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            };
            security_headers(resp.headers_mut());
            if let Some(origin) = cors_allowed(&app, &headers) {
                cors_headers(resp.headers_mut(), origin);
            }
            resp
        })
}

async fn upload<S, B>(app: &Arc<App>, headers: &HeaderMap, body: S) -> Result<Response>
where
    S: futures_util::Stream<Item = std::result::Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send,
{
    let token =
        bearer(headers).ok_or_else(|| AppError::Unauthorized("missing bearer token".into()))?;
    if App::is_bot_token(token) {
        return Err(AppError::Forbidden("a bot token cannot do this".into()));
    }
    app.admit(token).await;
    let user = app.authenticate(token)?;
    // Bodies wait for a slot before they are read: each is held in memory
    // until it is stored.
    let _slot = app.file_slot().await?;
    // Images are held to `max_bytes` once their type is known; any other
    // file to `max_file_bytes`.
    let max = app
        .config
        .uploads
        .max_bytes
        .max(app.config.uploads.max_file_bytes);
    // Room for the multipart framing around the file.
    let envelope = max + 16 * 1024;
    let too_large = || AppError::TooLarge(format!("file: larger than {max} bytes"));
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > envelope
    {
        return Err(too_large());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        AppError::UnsupportedMediaType("expected multipart/form-data with a file field".into())
    })?;
    let stream = paced(body, Pace::new(app).for_bytes(envelope));
    let limits = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(envelope as u64)
            .per_field(max as u64),
    );
    let mut form = multer::Multipart::with_constraints(stream, boundary, limits);
    let multipart_error = |e: multer::Error| match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            too_large()
        }
        multer::Error::StreamReadFailed(e) => match e.downcast::<BodyError>() {
            Ok(e) => AppError::from(*e),
            Err(e) => AppError::BadRequest(format!("multipart: {e}")),
        },
        e => AppError::BadRequest(format!("multipart: {e}")),
    };
    let mut data = None;
    let mut name = None;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        if field.name() != Some("file") || data.is_some() {
            // Other fields are read and dropped, within the same limits.
            while field.chunk().await.map_err(multipart_error)?.is_some() {}
            continue;
        }
        name = field.file_name().map(str::to_string);
        let mut buf = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            if buf.len() + chunk.len() > max {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        data = Some(buf);
    }
    let data = data.ok_or_else(|| AppError::BadRequest("file: missing field".into()))?;
    if data.is_empty() {
        return Err(AppError::BadRequest("file: empty".into()));
    }
    let rec = app.upload_any(&user, name.as_deref(), data).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::to_value(rec.attachment()).unwrap_or_default(),
    ))
}

/// The stored bytes of an upload or its thumbnail, immutable and inert:
/// never sniffed, never run as a page.
async fn serve_upload(app: &App, req: &Request, id: &str, thumb: bool) -> Result<Response> {
    let rec = app.upload_record(id)?;
    if thumb && !rec.is_image() {
        return Err(AppError::NotFound("upload"));
    }
    let (hash, mime) = if thumb {
        (&rec.thumb, &rec.thumb_mime)
    } else {
        (&rec.file, &rec.mime)
    };
    // Only re-encoded images are shown inline; any other file is a
    // download under its own (sanitised) name.
    let disposition = if rec.is_image() {
        HeaderValue::from_static("inline")
    } else {
        let name = if rec.name.is_empty() {
            "file"
        } else {
            &rec.name
        };
        HeaderValue::from_str(&crate::files::content_disposition(name))
            .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
    };
    serve_stored(app, req, hash, mime, disposition, "upload").await
}

/// A link preview's image, re-encoded by confab: immutable and inert
/// like an upload. Only hashes recorded as preview images are served.
async fn serve_preview_image(app: &App, req: &Request, hash: &str) -> Result<Response> {
    let mime = app
        .store
        .read()?
        .preview_image(hash)?
        .ok_or(AppError::NotFound("preview image"))?;
    let inline = HeaderValue::from_static("inline");
    serve_stored(app, req, hash, &mime, inline, "preview image").await
}

/// A content-addressed file: its hash is its ETag and it never changes,
/// so it is cached for good; the sandbox CSP keeps it from running as a
/// page whatever it holds.
async fn serve_stored(
    app: &App,
    req: &Request,
    hash: &str,
    mime: &str,
    disposition: HeaderValue,
    what: &'static str,
) -> Result<Response> {
    let etag = format!("\"{hash}\"");
    let mut resp = if req
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        empty(StatusCode::NOT_MODIFIED)
    } else {
        let path = app.stored_file(hash).await?;
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|_| AppError::NotFound(what))?;
        let mut r = Response::new(bytes.into());
        if let Ok(v) = HeaderValue::from_str(mime) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(header::CONTENT_DISPOSITION, disposition);
    Ok(resp)
}

struct Request {
    method: Method,
    path: String,
    headers: HeaderMap,
    query: HashMap<String, String>,
    addr: Option<SocketAddr>,
}

/// How long a request body may take: a client that holds a request open
/// by sending its body slowly (or not at all) holds memory and a task.
#[derive(Clone, Copy)]
struct Pace {
    /// Longest wait for the next chunk.
    progress: Duration,
    /// Longest time for the whole body, from the first wait on.
    total: Duration,
}

/// The slowest steady upload that is never cut off by the total deadline:
/// a large file over a poor mobile link is slow but not stalled.
const MIN_UPLOAD_BYTES_PER_SEC: u64 = 8 * 1024;

impl Pace {
    /// A body of up to `bytes` may take longer than the deadline, as long
    /// as it comes at `MIN_UPLOAD_BYTES_PER_SEC` at least.
    fn for_bytes(self, bytes: usize) -> Pace {
        let steady = Duration::from_secs(bytes as u64 / MIN_UPLOAD_BYTES_PER_SEC);
        Pace {
            total: self.total.max(steady),
            ..self
        }
    }

    fn new(app: &App) -> Pace {
        let server = &app.config.server;
        Pace {
            progress: Duration::from_millis(server.body_timeout_ms),
            total: Duration::from_millis(server.body_deadline_ms),
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("body: no data for {} ms", .0.as_millis())]
    Stalled(Duration),
    #[error("body: not complete within {} ms", .0.as_millis())]
    Late(Duration),
    #[error("body: {0}")]
    Read(warp::Error),
}

impl From<BodyError> for AppError {
    fn from(e: BodyError) -> AppError {
        match e {
            BodyError::Stalled(_) | BodyError::Late(_) => AppError::Timeout(e.to_string()),
            BodyError::Read(_) => AppError::BadRequest(e.to_string()),
        }
    }
}

/// The body's chunks, ending with an error when the client stalls or
/// runs past the deadline.
fn paced<S, B>(
    body: S,
    pace: Pace,
) -> impl futures_util::Stream<Item = std::result::Result<bytes::Bytes, BodyError>>
where
    S: futures_util::Stream<Item = std::result::Result<B, warp::Error>>,
    B: Buf,
{
    let deadline = tokio::time::Instant::now() + pace.total;
    futures_util::stream::unfold(Some(Box::pin(body)), move |body| async move {
        let mut body = body?;
        let wait = (tokio::time::Instant::now() + pace.progress).min(deadline);
        let error = match tokio::time::timeout_at(wait, body.next()).await {
            Ok(None) => return None,
            Ok(Some(Ok(mut buf))) => {
                let bytes = buf.copy_to_bytes(buf.remaining());
                return Some((Ok(bytes), Some(body)));
            }
            Ok(Some(Err(e))) => BodyError::Read(e),
            Err(_) if wait == deadline => BodyError::Late(pace.total),
            Err(_) => BodyError::Stalled(pace.progress),
        };
        // Nothing more is read after an error.
        Some((Err(error), None))
    })
}

/// Reads the body up to `limit` bytes, at the given pace; past the limit
/// the request is refused without reading more.
async fn read_body<S, B>(body: S, limit: usize, pace: Pace) -> Result<Vec<u8>>
where
    S: futures_util::Stream<Item = std::result::Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(paced(body, pace));
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Err(AppError::TooLarge(format!(
                "body: larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The router. Method and path segments, one row per endpoint.
async fn dispatch(app: &Arc<App>, req: &Request, body: Vec<u8>) -> Result<Response> {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let m = &req.method;
    bot_gate(app, req, &segs)?;
    match (m, segs.as_slice()) {
        (&Method::GET, ["healthz"]) => ok(json!({"status": "ok"})),
        (&Method::GET, ["metrics"]) => metrics(app, req),
        (
            _,
            ["api", "push", ..]
            | ["api", "me", "notifications"]
            | ["api", "rooms", _, "notifications"],
        ) => push_api(app, req, &segs, body).await,
        (&Method::POST, ["api", "moderation", action]) => moderation(app, req, action, body).await,
        (&Method::GET, ["api", "moderation", "audit"]) => {
            staff(app, req)?;
            let num = |k: &str| req.query.get(k).and_then(|v| v.parse::<i64>().ok());
            let entries = app.audit_log(num("since"), num("limit").map(|n| n.max(0) as usize))?;
            ok(json!({ "entries": entries }))
        }
        (&Method::DELETE, ["api", "messages", id]) => {
            let actor = Actor::User(authed(app, req)?);
            let id = Id::parse("message", id).map_err(|_| AppError::NotFound("message"))?;
            app.moderate_delete(&actor, id, None).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["api", "auth", "register"]) => register(app, req, body).await,
        (&Method::POST, ["api", "auth", "login"]) => login(app, req, body).await,
        (&Method::POST, ["api", "auth", "logout"]) => {
            let token = bearer(&req.headers)
                .ok_or_else(|| AppError::Unauthorized("missing bearer token".into()))?;
            // An empty body is a plain logout.
            let input: LogoutBody = if body.iter().all(u8::is_ascii_whitespace) {
                LogoutBody::default()
            } else {
                parse(&body)?
            };
            app.logout(token, input.everywhere).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["api", "me", "password"]) => {
            let user = authed(app, req)?;
            let input: PasswordBody = parse(&body)?;
            let new = Password::parse(&input.new_password).map_err(|mut e| {
                e.field = "new_password";
                e
            })?;
            let token = app
                .change_password(&user, input.current_password, new, req_ip(app, req))
                .await?;
            ok(json!({ "token": token, "user": user }))
        }
        (&Method::GET, ["api", "me"]) => {
            let user = authed(app, req)?;
            let dm_policy = app.dm_policy(user.id)?;
            let mutes = app.own_mutes(user.id)?;
            ok(json!({ "user": user, "dm_policy": dm_policy, "mutes": mutes }))
        }
        (&Method::PATCH, ["api", "me"]) => {
            let user = authed(app, req)?;
            let input: PatchMeBody = parse(&body)?;
            let dm_policy = match input.dm_policy.as_deref() {
                Some(p) => app.set_dm_policy(&user, DmPolicy::parse(p)?).await?,
                None => app.dm_policy(user.id)?,
            };
            ok(json!({ "user": user, "dm_policy": dm_policy }))
        }
        (&Method::GET, ["api", "me", "unread"]) => {
            let user = authed(app, req)?;
            ok(json!({ "rooms": app.unread(user.id)? }))
        }
        (&Method::GET, ["api", "rooms", id, "read"]) => {
            let user = authed(app, req)?;
            ok(json!({ "seq": app.read_marker(&user, room_id(id)?)? }))
        }
        (&Method::POST, ["api", "me", "avatar"]) => {
            let user = authed(app, req)?;
            let input: AvatarBody = parse(&body)?;
            ok(json!({ "user": app.set_avatar(&user, Some(input.upload)).await? }))
        }
        (&Method::DELETE, ["api", "me", "avatar"]) => {
            let user = authed(app, req)?;
            ok(json!({ "user": app.set_avatar(&user, None).await? }))
        }
        (&Method::GET, ["api", "users", "online"]) => {
            let user = authed(app, req)?;
            ok(json!({ "users": app.online_users_for(user.id)? }))
        }
        (&Method::GET, ["api", "users", name]) => {
            authed(app, req)?;
            // A name that cannot exist is simply no such user. A user who
            // blocks the caller is still found: a 404 would reveal the block.
            let user = app
                .user_by_name(name)
                .map_err(|e| match e {
                    AppError::Invalid(_) => AppError::NotFound("user"),
                    e => e,
                })?
                .public();
            ok(json!({ "user": user }))
        }
        (&Method::GET, ["api", "friends"]) => {
            let user = authed(app, req)?;
            ok(json!(app.friends(user.id)?))
        }
        (&Method::POST, ["api", "friends", "requests"]) => {
            let user = authed(app, req)?;
            let input: UsernameBody = parse(&body)?;
            app.friend_request(&user, &Username::parse(&input.username)?)
                .await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["api", "friends", "requests", name, "accept"]) => {
            let user = authed(app, req)?;
            app.friend_accept(&user, &Username::parse(name)?).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::DELETE, ["api", "friends", name]) => {
            let user = authed(app, req)?;
            app.friend_remove(&user, &Username::parse(name)?).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::GET, ["api", "blocks"]) => {
            let user = authed(app, req)?;
            ok(json!({ "users": app.blocked(user.id)? }))
        }
        (&Method::POST, ["api", "blocks"]) => {
            let user = authed(app, req)?;
            let input: UsernameBody = parse(&body)?;
            app.block(&user, &Username::parse(&input.username)?).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::DELETE, ["api", "blocks", name]) => {
            let user = authed(app, req)?;
            app.unblock(&user, &Username::parse(name)?).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::GET, ["api", "rooms"]) => {
            let actor = Actor::User(authed(app, req)?);
            ok(json!({ "rooms": app.list_rooms(&actor)? }))
        }
        (&Method::POST, ["api", "rooms"]) => create_room(app, req, body).await,
        (&Method::GET, ["api", "rooms", id]) => {
            let actor = Actor::User(authed(app, req)?);
            let (room, members) = app.room_details(&actor, room_id(id)?)?;
            ok(json!({ "room": room, "members": members }))
        }
        (&Method::PATCH, ["api", "rooms", id]) => patch_room(app, req, id, body).await,
        (&Method::DELETE, ["api", "rooms", id]) => {
            let actor = Actor::User(authed(app, req)?);
            app.delete_room(&actor, room_id(id)?).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["api", "rooms", id, "members"]) => {
            let actor = Actor::User(authed(app, req)?);
            let input: UsernameBody = parse(&body)?;
            app.add_member(&actor, room_id(id)?, &input.username)
                .await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::GET, ["api", "rooms", id, "messages"]) => {
            let actor = Actor::User(authed(app, req)?);
            let q = |k: &str| -> Result<Option<u64>> {
                req.query
                    .get(k)
                    .filter(|v| !v.is_empty())
                    .map(|v| {
                        v.parse::<u64>()
                            .map_err(|_| AppError::BadRequest(format!("{k}: must be a number")))
                    })
                    .transpose()
            };
            let page = page(q("before")?, q("after")?, q("limit")?)?;
            let (messages, has_more) = app.history(&actor, room_id(id)?, page)?;
            ok(json!({ "messages": messages, "has_more": has_more }))
        }
        (&Method::POST, ["api", "rooms", id, "messages"]) => {
            let target = Target::Room(room_id(id)?);
            post_message(app, req, target, body).await
        }
        (&Method::GET, ["api", "search"]) => {
            let user = authed(app, req)?;
            let input = search_input(&req.query)?;
            ok(json!(app.search(&user, input).await?))
        }
        _ if threads::owns(&segs) => threads::route(app, req, &segs, body).await,
        (
            _,
            ["api", "messages", _, "reactions", ..]
            | ["api", "messages", _, "pin"]
            | ["api", "rooms", _, "pins"],
        ) => reactions_api(app, req, &segs, body).await,
        (&Method::GET, ["uploads", id]) => serve_upload(app, req, id, false).await,
        (&Method::GET, ["uploads", id, "thumb"]) => serve_upload(app, req, id, true).await,
        (&Method::GET, ["previews", hash]) => serve_preview_image(app, req, hash).await,
        (&Method::POST, ["api", "dm", username, "messages"]) => {
            let target = Target::User(Username::parse(username)?);
            post_message(app, req, target, body).await
        }
        (
            _,
            ["api", "rooms", _, "invites", ..]
            | ["api", "invites", ..]
            | ["hooks", ..]
            | ["api", "admin", "bots" | "hooks", ..],
        ) => integrations::route(app, req, &segs, body).await,
        // An invite link opens the web client, which reads the code from
        // the path.
        (&Method::GET | &Method::HEAD, ["invite", _]) if app.config.server.web_client => {
            crate::web::index(&req.headers)
        }
        // The built-in web client (src/web.rs). "/" splits into [""].
        (&Method::GET | &Method::HEAD, [""]) if app.config.server.web_client => {
            crate::web::index(&req.headers)
        }
        (&Method::GET | &Method::HEAD, ["sw.js"]) if app.config.server.web_client => {
            crate::web::service_worker(&req.headers)
        }
        (&Method::GET | &Method::HEAD, ["assets", name]) if app.config.server.web_client => {
            crate::web::asset(&req.headers, name)
        }
        (&Method::GET, ["api", "auth", "providers"]) => ok(json!({
            "local_passwords": app.config.auth.local_passwords,
            "oidc": app.oidc_providers().into_iter().map(|(name, label)| json!({
                "name": name,
                "label": label,
                "start_url": format!("/api/auth/oidc/{name}/start"),
            })).collect::<Vec<_>>(),
        })),
        (&Method::GET, ["api", "auth", "oidc", name, "start"]) => oidc_start(app, req, name).await,
        (&Method::GET, ["api", "auth", "oidc", name, "callback"]) => {
            Ok(oidc_callback(app, req, name).await)
        }
        (_, ["ws"]) => Err(AppError::BadRequest(
            "expected a WebSocket upgrade request".into(),
        )),
        (_, ["api", "admin", "webhooks", ..]) => webhooks_api(app, req, &segs, body).await,
        _ => Err(AppError::NotFound("route")),
    }
}

/// Prometheus text, for loopback callers or holders of the metrics token.
fn metrics(app: &App, req: &Request) -> Result<Response> {
    let token = &app.config.server.metrics_token;
    let by_token = !token.is_empty()
        && bearer(&req.headers).is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
    let local = token.is_empty() && req.addr.is_some_and(|a| a.ip().is_loopback());
    if !(by_token || local) {
        return Err(AppError::Forbidden(
            "metrics are served to loopback or with the metrics token".into(),
        ));
    }
    let mut resp = Response::new(app.metrics.render().into());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(resp)
}

/// Compares secrets without an early exit, so timing tells nothing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn staff(app: &App, req: &Request) -> Result<Actor> {
    let user = authed(app, req)?;
    if !user.role.is_staff() {
        return Err(AppError::Forbidden(
            "only moderators and admins may moderate".into(),
        ));
    }
    Ok(Actor::User(user))
}

#[derive(Deserialize)]
struct ModerationBody {
    username: Option<String>,
    reason: Option<String>,
    duration_secs: Option<u64>,
    room: Option<String>,
    text: Option<String>,
}

async fn moderation(
    app: &Arc<App>,
    req: &Request,
    action: &str,
    body: Vec<u8>,
) -> Result<Response> {
    let actor = staff(app, req)?;
    let b: ModerationBody = parse(&body)?;
    let username = || {
        b.username
            .clone()
            .ok_or_else(|| AppError::BadRequest("username: missing".into()))
    };
    match action {
        "kick" => {
            let n = app.kick(&actor, &username()?, b.reason.clone()).await?;
            ok(json!({ "connections_closed": n }))
        }
        "ban" => {
            let user = app
                .ban(&actor, &username()?, b.reason.clone(), b.duration_secs)
                .await?;
            ok(json!({ "user": user }))
        }
        "unban" => ok(json!({ "user": app.unban(&actor, &username()?).await? })),
        "mute" => {
            app.mute(
                &actor,
                &username()?,
                b.room.as_deref(),
                b.reason.clone(),
                b.duration_secs,
            )
            .await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        "unmute" => {
            app.unmute(&actor, &username()?, b.room.as_deref()).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        "announce" => {
            let text = b
                .text
                .as_deref()
                .ok_or_else(|| AppError::BadRequest("text: missing".into()))?;
            app.announce(&actor, text, b.room.as_deref()).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Err(AppError::NotFound("route")),
    }
}

fn ok(v: Value) -> Result<Response> {
    Ok(json_response(StatusCode::OK, &v))
}

fn created(v: Value) -> Result<Response> {
    Ok(json_response(StatusCode::CREATED, &v))
}

fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Vec::<u8>::new().into());
    *resp.status_mut() = status;
    resp
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// The request's Origin when the config allows it.
fn cors_allowed(app: &App, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let s = origin.to_str().ok()?;
    app.config
        .server
        .cors_origins
        .iter()
        .any(|o| o.trim_end_matches('/') == s)
        .then(|| origin.clone())
}

fn cors_headers(h: &mut HeaderMap, origin: HeaderValue) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PATCH, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
}

/// Parses a JSON body; the error names what is wrong.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    if body.is_empty() {
        return Err(AppError::BadRequest("body: expected a JSON object".into()));
    }
    serde_json::from_slice(body).map_err(|e| AppError::BadRequest(format!("body: {e}")))
}

/// `GET /api/search`'s parameters; the app validates each.
fn search_input(query: &HashMap<String, String>) -> Result<crate::app::SearchInput> {
    let get = |k: &str| query.get(k).filter(|v| !v.is_empty()).cloned();
    let limit = get("limit")
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| AppError::BadRequest("limit: must be a number".into()))
        })
        .transpose()?;
    Ok(crate::app::SearchInput {
        q: get("q").unwrap_or_default(),
        room: get("room"),
        from: get("from"),
        before: get("before").map(Value::String),
        after: get("after").map(Value::String),
        limit,
        cursor: get("cursor"),
    })
}

fn room_id(s: &str) -> Result<Id> {
    // An id that cannot exist is simply not found.
    Id::parse("room", s).map_err(|_| AppError::NotFound("room"))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn authed(app: &App, req: &Request) -> Result<User> {
    let token = bearer(&req.headers)
        .ok_or_else(|| AppError::Unauthorized("missing bearer token".into()))?;
    app.authenticate(token)
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
    /// An invite code: registers into its room (required when
    /// `auth.registration = "invite"`).
    #[serde(default)]
    invite: Option<String>,
}

/// A request signed with a bot's token reaches only what its scopes allow
/// (src/gate.rs); routes that need no sign-in are left alone.
fn bot_gate(app: &App, req: &Request, segs: &[&str]) -> Result<()> {
    let Some(token) = bearer(&req.headers).filter(|t| App::is_bot_token(t)) else {
        return Ok(());
    };
    let open = !matches!(segs.first(), Some(&"api"))
        || matches!(segs, ["api", "auth", "login" | "register"])
        || matches!((&req.method, segs), (&Method::GET, ["api", "invites", _]));
    if open {
        return Ok(());
    }
    let scopes = app
        .scopes_of(token)?
        .ok_or_else(|| AppError::Unauthorized("bad token".into()))?;
    crate::gate::http(app, &scopes, &req.method, segs, &req.query)
}

#[derive(Deserialize)]
struct UsernameBody {
    username: String,
}

#[derive(Deserialize, Default)]
struct LogoutBody {
    #[serde(default)]
    everywhere: bool,
}

#[derive(Deserialize)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

#[derive(Deserialize)]
struct PatchMeBody {
    dm_policy: Option<String>,
}

fn req_ip(app: &App, req: &Request) -> Option<std::net::IpAddr> {
    crate::limits::client_ip(req.addr, &req.headers, &app.config.server.trusted_proxies)
}

async fn register(app: &Arc<App>, req: &Request, body: Vec<u8>) -> Result<Response> {
    let c: Credentials = parse(&body)?;
    let username = Username::parse(&c.username)?;
    let password = Password::parse(&c.password)?;
    if let Some(code) = c.invite.as_deref().filter(|c| !c.is_empty()) {
        let (token, user, room) = app
            .register_with_invite(username, password, code, req_ip(app, req))
            .await?;
        return created(json!({ "token": token, "user": user, "room": room }));
    }
    let (token, user) = app.register(username, password, req_ip(app, req)).await?;
    created(json!({ "token": token, "user": user }))
}

async fn login(app: &Arc<App>, req: &Request, body: Vec<u8>) -> Result<Response> {
    let c: Credentials = parse(&body)?;
    let (token, user) = app.login(&c.username, c.password, req_ip(app, req)).await?;
    ok(json!({ "token": token, "user": user }))
}

async fn create_room(app: &Arc<App>, req: &Request, body: Vec<u8>) -> Result<Response> {
    let actor = Actor::User(authed(app, req)?);
    let input: CreateRoomBody = parse(&body)?;
    let (name, vis, topic) = validate_new_room(app, &input)?;
    let room = app.create_room(&actor, name, vis, topic).await?;
    created(json!({ "room": room }))
}

#[derive(Deserialize)]
struct AvatarBody {
    upload: String,
}

#[derive(Deserialize)]
struct PatchRoomBody {
    topic: Option<String>,
    visibility: Option<String>,
    name: Option<String>,
}

async fn patch_room(app: &Arc<App>, req: &Request, id: &str, body: Vec<u8>) -> Result<Response> {
    let actor = Actor::User(authed(app, req)?);
    let input: PatchRoomBody = parse(&body)?;
    let topic = input
        .topic
        .as_deref()
        .map(|t| Topic::parse(t, app.config.limits.max_topic_chars))
        .transpose()?;
    let vis = input
        .visibility
        .as_deref()
        .map(Visibility::parse)
        .transpose()?;
    let name = input.name.as_deref().map(RoomName::parse).transpose()?;
    let room = app
        .update_room(&actor, room_id(id)?, topic, vis, name)
        .await?;
    ok(json!({ "room": room }))
}

async fn post_message(
    app: &Arc<App>,
    req: &Request,
    target: Target,
    body: Vec<u8>,
) -> Result<Response> {
    let user = authed(app, req)?;
    let input: MessageBody = parse(&body)?;
    let message = app.send_message(&user, input.into_input(target)?).await?;
    created(json!({ "message": message }))
}

/// Push notifications and notification preferences (docs/protocol.md,
/// "Push notifications").
async fn push_api(app: &Arc<App>, req: &Request, segs: &[&str], body: Vec<u8>) -> Result<Response> {
    use crate::app::push::{RoomNotifyBody, SubscribeBody, UserNotifyBody};
    #[derive(Deserialize, Default)]
    struct Unsubscribe {
        id: Option<String>,
        endpoint: Option<String>,
    }
    let m = &req.method;
    if let (&Method::GET, ["api", "push", "vapid"]) = (m, segs) {
        // Public: a client needs it before it can subscribe.
        return ok(json!({ "public_key": app.vapid_public_key()? }));
    }
    let user = authed(app, req)?;
    match (m, segs) {
        (&Method::GET, ["api", "push", "subscriptions"]) => {
            ok(json!({ "subscriptions": app.push_subscriptions(&user)? }))
        }
        (&Method::POST, ["api", "push", "subscriptions"]) => {
            let input: SubscribeBody = parse(&body)?;
            let sub = app.push_subscribe(&user, input).await?;
            // `id` at the top is the contract's shape; `subscription` the
            // whole record for clients that show it.
            created(json!({ "id": sub.id, "subscription": sub }))
        }
        (&Method::DELETE, ["api", "push", "subscriptions", ..]) => {
            let mut input: Unsubscribe = if body.iter().all(u8::is_ascii_whitespace) {
                Unsubscribe::default()
            } else {
                parse(&body)?
            };
            if let Some(id) = segs.get(3) {
                input.id = Some(id.to_string());
            }
            if input.endpoint.is_none() {
                input.endpoint = req.query.get("endpoint").cloned();
            }
            let id = match input.id.as_deref() {
                Some(s) => {
                    Some(Id::parse("id", s).map_err(|_| AppError::NotFound("push subscription"))?)
                }
                None => None,
            };
            app.push_unsubscribe(&user, id, input.endpoint).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::GET, ["api", "me", "notifications"]) => ok(app.notify_settings(&user)?),
        (&Method::PUT, ["api", "me", "notifications"]) => {
            let input: UserNotifyBody = parse(&body)?;
            app.set_notify_settings(&user, input).await?;
            ok(app.notify_settings(&user)?)
        }
        (&Method::GET, ["api", "rooms", id, "notifications"]) => {
            let room = Id::parse("room", id).map_err(|_| AppError::NotFound("room"))?;
            ok(app.room_notify(&user, room)?)
        }
        (&Method::PUT, ["api", "rooms", id, "notifications"]) => {
            let room = Id::parse("room", id).map_err(|_| AppError::NotFound("room"))?;
            let input: RoomNotifyBody = parse(&body)?;
            ok(app.set_room_notify(&user, room, input).await?)
        }
        _ => Err(AppError::NotFound("route")),
    }
}

/// Reactions and pins (docs/protocol.md, "Reactions and pins"). An emoji
/// in a path is percent-encoded UTF-8.
async fn reactions_api(
    app: &Arc<App>,
    req: &Request,
    segs: &[&str],
    body: Vec<u8>,
) -> Result<Response> {
    #[derive(Deserialize)]
    struct EmojiBody {
        emoji: String,
    }
    let user = authed(app, req)?;
    let message = |id: &str| Id::parse("message", id).map_err(|_| AppError::NotFound("message"));
    let emoji = |raw: &str| -> Result<String> {
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| AppError::BadRequest("emoji: must be UTF-8".into()))
    };
    match (&req.method, segs) {
        (&Method::PUT, ["api", "messages", id, "reactions", e]) => {
            app.react(&user, message(id)?, &emoji(e)?).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["api", "messages", id, "reactions"]) => {
            let input: EmojiBody = parse(&body)?;
            app.react(&user, message(id)?, &input.emoji).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::DELETE, ["api", "messages", id, "reactions", e]) => {
            app.unreact(&user, message(id)?, &emoji(e)?).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST | &Method::DELETE, ["api", "messages", id, "pin"]) => {
            let on = req.method == Method::POST;
            app.set_pinned(&Actor::User(user), message(id)?, on).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::GET, ["api", "rooms", id, "pins"]) => {
            let (messages, pins) = app.pins(&Actor::User(user), room_id(id)?)?;
            ok(json!({ "messages": messages, "pins": pins }))
        }
        _ => Err(AppError::NotFound("route")),
    }
}

/// Outgoing webhooks, for admins (docs/protocol.md, "Webhooks").
async fn webhooks_api(
    app: &Arc<App>,
    req: &Request,
    segs: &[&str],
    body: Vec<u8>,
) -> Result<Response> {
    #[derive(Deserialize)]
    struct AddBody {
        url: String,
        events: Vec<String>,
        #[serde(default)]
        room: Option<String>,
    }
    #[derive(Deserialize)]
    struct ReplayBody {
        since: String,
    }
    let user = authed(app, req)?;
    if user.role != crate::domain::Role::Admin {
        return Err(AppError::Forbidden(
            "only admins may manage webhooks".into(),
        ));
    }
    let actor = Actor::User(user);
    match (&req.method, segs) {
        (&Method::GET, [_, _, _]) => ok(json!({ "webhooks": app.webhook_list()? })),
        (&Method::POST, [_, _, _]) => {
            let input: AddBody = parse(&body)?;
            let (view, secret) = app
                .webhook_add(&actor, &input.url, &input.events, input.room.as_deref())
                .await?;
            created(App::webhook_with_secret(&view, &secret))
        }
        (&Method::DELETE, [_, _, _, id]) => {
            app.webhook_remove(&actor, id).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, [_, _, _, id, "rotate"]) => {
            let (view, secret) = app.webhook_rotate(&actor, id).await?;
            ok(App::webhook_with_secret(&view, &secret))
        }
        (&Method::POST, [_, _, _, id, action @ ("enable" | "disable")]) => {
            let view = app
                .webhook_set_enabled(&actor, id, *action == "enable")
                .await?;
            ok(json!({ "webhook": view }))
        }
        (&Method::GET, [_, _, _, id, "deliveries"]) => {
            let limit = req.query.get("limit").and_then(|v| v.parse().ok());
            ok(json!({ "deliveries": app.webhook_deliveries(id, limit.unwrap_or(50))? }))
        }
        (&Method::POST, [_, _, _, id, "replay"]) => {
            let input: ReplayBody = parse(&body)?;
            ok(json!({ "queued": app.webhook_replay(&actor, id, &input.since).await? }))
        }
        _ => Err(AppError::NotFound("route")),
    }
}

/// `GET /api/auth/oidc/{name}/start`: to the provider, with the flow's
/// state in a signed cookie that only the callback path receives.
async fn oidc_start(app: &Arc<App>, req: &Request, name: &str) -> Result<Response> {
    let scheme = if app.config.server.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let host = req
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let own = format!("{scheme}://{host}/api/auth/oidc/{name}/callback");
    let (location, state) = app.oidc_start(name, own).await?;
    let mut resp = empty(StatusCode::FOUND);
    let secure = if scheme == "https" { "; Secure" } else { "" };
    let cookie = format!(
        "{}={state}; Path=/api/auth/oidc/; HttpOnly; SameSite=Lax; Max-Age=600{secure}",
        crate::app::oidc::STATE_COOKIE
    );
    if let (Ok(l), Ok(c)) = (
        HeaderValue::from_str(&location),
        HeaderValue::from_str(&cookie),
    ) {
        resp.headers_mut().insert(header::LOCATION, l);
        resp.headers_mut().insert(header::SET_COOKIE, c);
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    } else {
        Err(AppError::Internal("bad sign-in redirect".into()))
    }
}

/// `GET /api/auth/oidc/{name}/callback`: back to the web client either
/// way. The token travels in the URL's fragment, which browsers never send
/// to a server (so no access log holds it), and the client removes it from
/// the address bar and history at once.
async fn oidc_callback(app: &Arc<App>, req: &Request, name: &str) -> Response {
    let cookie = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == crate::app::oidc::STATE_COOKIE)
        .map(|(_, v)| v.to_string());
    let q = |k: &str| req.query.get(k).map(String::as_str).unwrap_or("");
    let fragment = if !q("error").is_empty() {
        format!(
            "oidc_error={}",
            crate::app::oidc::form_escape(&format!("the provider said: {}", q("error")))
        )
    } else {
        match app
            .oidc_callback(name, q("code"), q("state"), cookie.as_deref())
            .await
        {
            Ok((token, _)) => format!("oidc_token={token}"),
            Err(e) => format!(
                "oidc_error={}",
                crate::app::oidc::form_escape(&e.client_message())
            ),
        }
    };
    let mut resp = empty(StatusCode::FOUND);
    let clear = format!(
        "{}=; Path=/api/auth/oidc/; HttpOnly; SameSite=Lax; Max-Age=0",
        crate::app::oidc::STATE_COOKIE
    );
    if let (Ok(l), Ok(c)) = (
        HeaderValue::from_str(&format!("/#{fragment}")),
        HeaderValue::from_str(&clear),
    ) {
        resp.headers_mut().insert(header::LOCATION, l);
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
