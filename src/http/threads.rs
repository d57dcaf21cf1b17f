//! The thread endpoints (docs/protocol.md, "Replies and threads"):
//! `GET /api/messages/{id}/thread`, `PUT`/`DELETE
//! /api/messages/{id}/follow`, `POST /api/messages/{id}/thread/read`,
//! `GET /api/me/threads`.

use super::*;

#[derive(Deserialize)]
struct SeqBody {
    seq: u64,
}

fn message_id(s: &str) -> Result<Id> {
    Id::parse("message", s).map_err(|_| AppError::NotFound("message"))
}

fn number(req: &Request, k: &str) -> Result<Option<u64>> {
    req.query
        .get(k)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| AppError::BadRequest(format!("{k}: must be a number")))
        })
        .transpose()
}

/// Whether the router should hand this path here.
pub(super) fn owns(segs: &[&str]) -> bool {
    matches!(
        segs,
        ["api", "messages", _, "thread"]
            | ["api", "messages", _, "thread", "read"]
            | ["api", "messages", _, "follow"]
            | ["api", "me", "threads"]
    )
}

pub(super) async fn route(
    app: &Arc<App>,
    req: &Request,
    segs: &[&str],
    body: Vec<u8>,
) -> Result<Response> {
    let user = authed(app, req)?;
    match (&req.method, segs) {
        (&Method::GET, ["api", "messages", id, "thread"]) => {
            let page = app.thread(
                &Actor::User(user),
                message_id(id)?,
                number(req, "after")?,
                number(req, "limit")?,
            )?;
            ok(json!(page))
        }
        (&Method::POST, ["api", "messages", id, "thread", "read"]) => {
            let input: SeqBody = parse(&body)?;
            app.mark_thread_read(&user, message_id(id)?, input.seq)
                .await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::PUT, ["api", "messages", id, "follow"]) => {
            app.follow_thread(&user, message_id(id)?, true).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::DELETE, ["api", "messages", id, "follow"]) => {
            app.follow_thread(&user, message_id(id)?, false).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::GET, ["api", "me", "threads"]) => {
            ok(json!({ "threads": app.followed_threads(&user)? }))
        }
        _ => Err(AppError::NotFound("route")),
    }
}
