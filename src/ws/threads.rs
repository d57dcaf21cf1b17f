//! The thread frames (docs/protocol.md, "Replies and threads"): `thread`,
//! `follow_thread`, `unfollow_thread`, `mark_thread_read`, `threads`.

use super::*;

#[derive(Deserialize)]
struct ThreadData {
    message_id: String,
    after: Option<u64>,
    limit: Option<u64>,
}

#[derive(Deserialize)]
struct ThreadReadData {
    message_id: String,
    seq: u64,
}

/// The answer to a thread frame; `None` for any other type.
pub(super) fn handle(ctx: &Ctx, f: &ClientFrame) -> Option<Answer> {
    let id = f.id.clone();
    let bad = |e: String| {
        Answer::Now(Some(error_frame(
            id.as_deref(),
            ErrorCode::BadRequest,
            &format!("data: {e}"),
        )))
    };
    let later = |fut: Pin<Box<dyn Future<Output = Result<serde_json::Value, AppError>> + Send>>| {
        let id = id.clone();
        Answer::Later(Box::pin(async move { answer(id.as_deref(), fut.await) }))
    };
    let app = ctx.app.clone();
    let user = ctx.user.clone();
    Some(match f.kind.as_str() {
        "thread" => {
            let d = match f.data::<ThreadData>() {
                Ok(d) => d,
                Err(e) => return Some(bad(e)),
            };
            let r = message_id(&d.message_id)
                .and_then(|m| app.thread(&Actor::User(user), m, d.after, d.limit))
                .map(|p| json!(p));
            Answer::Now(answer(id.as_deref(), r))
        }
        kind @ ("follow_thread" | "unfollow_thread") => {
            let d = match f.data::<MessageRef>() {
                Ok(d) => d,
                Err(e) => return Some(bad(e)),
            };
            let on = kind == "follow_thread";
            later(Box::pin(async move {
                app.follow_thread(&user, message_id(&d.message_id)?, on)
                    .await?;
                Ok(json!({}))
            }))
        }
        "mark_thread_read" => {
            let d = match f.data::<ThreadReadData>() {
                Ok(d) => d,
                Err(e) => return Some(bad(e)),
            };
            later(Box::pin(async move {
                app.mark_thread_read(&user, message_id(&d.message_id)?, d.seq)
                    .await?;
                Ok(json!({}))
            }))
        }
        "threads" => {
            let r = app.followed_threads(&user).map(|t| json!({ "threads": t }));
            Answer::Now(answer(id.as_deref(), r))
        }
        _ => return None,
    })
}
