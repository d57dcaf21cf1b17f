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
