//! The REST side of invites and incoming webhooks (docs/protocol.md,
//! "Bots, incoming webhooks and invites").

use super::*;
use crate::protocol::ErrorCode;

#[derive(Deserialize, Default)]
struct NewInviteBody {
    expires_in_secs: Option<u64>,
    max_uses: Option<u32>,
}

/// The Slack-compatible subset of an incoming webhook's payload.
#[derive(Deserialize)]
struct HookPayload {
    text: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
struct HookForm {
    payload: String,
}

pub(super) async fn route(
    app: &Arc<App>,
    req: &Request,
    segs: &[&str],
    body: Vec<u8>,
) -> Result<Response> {
    match (&req.method, segs) {
        (&Method::POST, ["api", "rooms", id, "invites"]) => {
            let actor = Actor::User(authed(app, req)?);
            let input: NewInviteBody = if body.iter().all(u8::is_ascii_whitespace) {
                NewInviteBody::default()
            } else {
                parse(&body)?
            };
            let invite = app
                .create_invite(&actor, room_id(id)?, input.expires_in_secs, input.max_uses)
                .await?;
            created(json!({ "invite": invite }))
        }
        (&Method::GET, ["api", "rooms", id, "invites"]) => {
            let actor = Actor::User(authed(app, req)?);
            ok(json!({ "invites": app.invites(&actor, room_id(id)?)? }))
        }
        (&Method::DELETE, ["api", "rooms", id, "invites", code]) => {
            let actor = Actor::User(authed(app, req)?);
            app.revoke_invite(&actor, room_id(id)?, code).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::GET, ["api", "invites", code]) => {
            ok(json!({ "invite": app.preview_invite(code)? }))
        }
        (&Method::POST, ["api", "invites", code, "accept"]) => {
            let user = authed(app, req)?;
            let (room, last_seq) = app.accept_invite(&user, code).await?;
            ok(json!({ "room": room, "last_seq": last_seq }))
        }
        (&Method::POST, ["hooks", id, secret]) => Ok(hook(app, req, id, secret, &body).await),
        (_, ["api", "admin", ..]) => admin(app, req, segs, body).await,
        _ => Err(AppError::NotFound("route")),
    }
}

#[derive(Deserialize)]
struct NewBotBody {
    name: String,
    #[serde(default)]
    rooms: Vec<String>,
}

#[derive(Deserialize, Default)]
struct NewTokenBody {
    rooms: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct NewHookBody {
    room: String,
    name: Option<String>,
}

/// The admin API for bots and hooks: what `confab bot` and `confab room
/// hook` do, for an admin's token, audited under the admin's name.
async fn admin(app: &Arc<App>, req: &Request, segs: &[&str], body: Vec<u8>) -> Result<Response> {
    let user = authed(app, req)?;
    if user.role != crate::domain::Role::Admin {
        return Err(AppError::Forbidden(
            "only admins may manage bots and hooks".into(),
        ));
    }
    let actor = Actor::User(user);
    let audit = |action: &'static str, target: String| {
        let actor = actor.clone();
        async move { app.audit(&actor, action, &target, None, Value::Null).await }
    };
    match (&req.method, segs) {
        (&Method::GET, ["api", "admin", "bots"]) => ok(json!({ "bots": app.bots()? })),
        (&Method::POST, ["api", "admin", "bots"]) => {
            let input: NewBotBody = parse(&body)?;
            let bot = app
                .create_bot(Username::parse(&input.name)?, &input.rooms)
                .await?;
            audit("bot_add", bot.username.clone()).await?;
            created(json!({ "bot": bot }))
        }
        (&Method::DELETE, ["api", "admin", "bots", name]) => {
            let bot = app.remove_bot(name).await?;
            audit("bot_remove", bot.username).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["api", "admin", "bots", name, "tokens"]) => {
            let input: NewTokenBody = if body.iter().all(u8::is_ascii_whitespace) {
                NewTokenBody::default()
            } else {
                parse(&body)?
            };
            let actions = match input.scopes {
                Some(list) => crate::app::bots::parse_actions(&list.join(","))?,
                None => crate::app::bots::DEFAULT_ACTIONS.to_vec(),
            };
            let (token, info) = app
                .add_bot_token(name, input.rooms.as_deref(), actions)
                .await?;
            audit("bot_token_add", info.bot.clone()).await?;
            created(json!({ "token": token, "info": info }))
        }
        (&Method::DELETE, ["api", "admin", "bots", "tokens", id]) => {
            app.revoke_bot_token(id).await?;
            audit("bot_token_revoke", id.to_string()).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::GET, ["api", "admin", "hooks"]) => {
            let room = req.query.get("room").map(String::as_str);
            ok(json!({ "hooks": app.hooks(room)? }))
        }
        (&Method::POST, ["api", "admin", "hooks"]) => {
            let input: NewHookBody = parse(&body)?;
            let hook = app.add_hook(&input.room, input.name.as_deref()).await?;
            audit("hook_add", hook.room_name.clone()).await?;
            created(json!({ "hook": hook }))
        }
        (&Method::DELETE, ["api", "admin", "hooks", id]) => {
            app.remove_hook(id).await?;
            audit("hook_remove", id.to_string()).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Err(AppError::NotFound("route")),
    }
}

/// A hook answers like Slack's: `200 ok`, or a status with a short
/// plain-text reason, so the senders written for Slack understand it.
async fn hook(app: &Arc<App>, req: &Request, id: &str, secret: &str, body: &[u8]) -> Response {
    let payload = match hook_payload(req, body) {
        Ok(p) => p,
        Err(why) => return text(StatusCode::BAD_REQUEST, &format!("invalid_payload: {why}")),
    };
    let Some(message) = payload.text.filter(|t| !t.trim().is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "no_text: text is required");
    };
    match app
        .post_to_hook(id, secret, &message, payload.username.as_deref())
        .await
    {
        Ok(_) => text(StatusCode::OK, "ok"),
        Err(e) => {
            let code = e.code();
            let slack = match code {
                ErrorCode::NotFound => "no_service",
                ErrorCode::Forbidden => "action_prohibited",
                ErrorCode::RateLimited => "rate_limited",
                ErrorCode::BadRequest => "invalid_payload",
                ErrorCode::Unavailable => "unavailable",
                _ => "internal_error",
            };
            let status =
                StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(status, &format!("{slack}: {}", e.client_message()))
        }
    }
}

/// JSON, or a form with the JSON in `payload` (Slack's older form).
fn hook_payload(req: &Request, body: &[u8]) -> std::result::Result<HookPayload, String> {
    let form = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        let f: HookForm = serde_urlencoded::from_bytes(body).map_err(|e| e.to_string())?;
        serde_json::from_str(&f.payload).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }
}

fn text(status: StatusCode, body: &str) -> Response {
    let mut resp = Response::new(format!("{body}\n").into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
