//! What a bot token may reach. Both edges ask here before they act on a
//! request signed with a bot's token: each REST route and each WebSocket
//! frame is mapped to the action it needs and the room it is about, and
//! `App::check_scope` decides. Anything not mapped (friends, blocks,
//! moderation, room creation, passwords, push, invites) is refused, so a
//! route added later is closed to bots until it is mapped here.

use serde_json::Value;
use warp::http::Method;

use crate::app::{App, AppError};
use crate::domain::Id;
use crate::protocol::ClientFrame;
use crate::store::integrations::{BotAction, Scopes};

type Result<T, E = AppError> = std::result::Result<T, E>;

fn refused() -> AppError {
    AppError::Forbidden("a bot token cannot do this".into())
}

fn room(s: &str) -> Result<Id> {
    Id::parse("room", s).map_err(|_| AppError::NotFound("room"))
}

fn message_room(app: &App, s: &str) -> Result<Id> {
    let id = Id::parse("message_id", s).map_err(|_| AppError::NotFound("message"))?;
    app.room_of_message(id)
}

/// A search reaches every room its caller is in unless it names one; a
/// token limited to some rooms must name one of them.
fn search_room(scopes: &Scopes, room_param: Option<&str>) -> Result<Option<Id>> {
    match room_param.filter(|r| !r.is_empty()) {
        Some(r) => Ok(Some(room(r)?)),
        None if scopes.rooms.is_some() => Err(AppError::Forbidden(
            "room: this token may search only the rooms of its scopes; name one".into(),
        )),
        None => Ok(None),
    }
}

/// A REST request, by method and path segments.
pub fn http(
    app: &App,
    scopes: &Scopes,
    method: &Method,
    segs: &[&str],
    query: &std::collections::HashMap<String, String>,
) -> Result<()> {
    use BotAction::*;
    let (action, room_id) = match (method, segs) {
        (&Method::GET, ["api", "me"] | ["api", "me", "unread"] | ["api", "users", ..]) => {
            (Read, None)
        }
        (&Method::GET, ["api", "rooms"]) => (Read, None),
        (
            &Method::GET,
            ["api", "rooms", id] | ["api", "rooms", id, "messages" | "read" | "pins"],
        ) => (Read, Some(room(id)?)),
        (&Method::GET, ["api", "search"]) => (
            Read,
            search_room(scopes, query.get("room").map(String::as_str))?,
        ),
        (&Method::GET, ["api", "messages", id, "thread"]) => (Read, Some(message_room(app, id)?)),
        (&Method::POST, ["api", "rooms", id, "messages"]) => (Send, Some(room(id)?)),
        (&Method::DELETE, ["api", "messages", id]) => (Send, Some(message_room(app, id)?)),
        (&Method::POST | &Method::DELETE, ["api", "messages", id, "pin"]) => {
            (Send, Some(message_room(app, id)?))
        }
        (&Method::POST, ["api", "dm", _, "messages"]) => (Dm, None),
        (&Method::POST, ["api", "invites", code, "accept"]) => {
            (Join, Some(app.room_of_invite(code)?))
        }
        _ => return Err(refused()),
    };
    App::check_scope(scopes, action, room_id)
}

/// A WebSocket (or Socket.IO) frame.
pub fn frame(app: &App, scopes: &Scopes, f: &ClientFrame) -> Result<()> {
    use BotAction::*;
    let data: Value = f.data().unwrap_or(Value::Null);
    let field = |k: &str| data.get(k).and_then(Value::as_str);
    let in_room = || -> Result<Id> { room(field("room").unwrap_or_default()) };
    let of_message = || message_room(app, field("message_id").unwrap_or_default());
    let (action, room_id) = match f.kind.as_str() {
        "ping" | "auth" | "presence_state" => return Ok(()),
        "join_room" | "leave_room" => (Join, Some(in_room()?)),
        "send_message" => match field("to") {
            Some(_) => (Dm, None),
            None => (Send, Some(in_room()?)),
        },
        "edit_message" | "delete_message" => (Send, Some(of_message()?)),
        "typing_start" | "typing_stop" => (Send, Some(in_room()?)),
        "react" | "unreact" => (React, Some(of_message()?)),
        "history" | "mark_read" | "presence" => (Read, Some(in_room()?)),
        "search" => (Read, search_room(scopes, field("room"))?),
        _ => return Err(refused()),
    };
    App::check_scope(scopes, action, room_id)
}
