//! The local admin socket (`<data_dir>/confab.sock`, mode 0600) and the
//! operations behind it.
//!
//! redb lets one process open the store. While a server runs, the CLI
//! (and later the console) talks to it through this socket, so changes go
//! through the running hub and take effect at once (a deleted user's
//! sockets close). When no server runs, the CLI opens the store itself and
//! runs the very same [`execute`]. One request per line, one JSON answer
//! per line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::app::{Actor, App, AppError};
use crate::domain::{Id, Password, Role, RoomName, Topic, Username, Visibility};
use crate::store::{MuteRecord, UserRecord};

/// What the operator can ask for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    UserAdd {
        username: String,
        password: String,
        role: Role,
    },
    UserList,
    UserShow {
        username: String,
    },
    UserPasswd {
        username: String,
        password: String,
    },
    UserRole {
        username: String,
        role: Role,
    },
    UserDelete {
        username: String,
    },
    UserFriends {
        username: String,
    },
    RoomCreate {
        name: String,
        private: bool,
        topic: Option<String>,
    },
    RoomList,
    RoomShow {
        room: String,
    },
    RoomDelete {
        room: String,
    },
    /// A room's messages, newest last, as the room's history pages them
    /// (deleted ones included, blanked), so the operator can pick one.
    RoomMessages {
        /// A room name or id.
        room: String,
        /// Only messages before this seq.
        before: Option<u64>,
        /// 1 to 200; 50 when absent.
        limit: Option<u64>,
    },
    RoomAddMember {
        room: String,
        username: String,
    },
    UploadList {
        username: Option<String>,
    },
    UploadDelete {
        id: String,
    },
    UploadGc {
        grace_secs: Option<u64>,
    },
    /// Everything the console shows, in one answer (see `console`).
    /// `events_after` is the last event seq the caller has seen.
    Snapshot {
        events_after: u64,
    },
    Kick {
        username: String,
        reason: Option<String>,
    },
    Ban {
        username: String,
        reason: Option<String>,
        /// None: until unbanned.
        duration_secs: Option<u64>,
    },
    Unban {
        username: String,
    },
    /// Every ban in force.
    Bans,
    /// Every mute in force.
    Mutes,
    Mute {
        username: String,
        /// A room name or id; None mutes everywhere.
        room: Option<String>,
        reason: Option<String>,
        duration_secs: Option<u64>,
    },
    Unmute {
        username: String,
        room: Option<String>,
    },
    DeleteMessage {
        id: String,
        reason: Option<String>,
    },
    Announce {
        text: String,
        /// A room name or id; None announces to everyone.
        room: Option<String>,
    },
    Audit {
        /// Only entries at or after this time (ms since the epoch).
        since: Option<i64>,
        limit: Option<usize>,
    },
    /// A consistent copy of the store (absolute paths: the server writes
    /// them).
    Backup {
        path: PathBuf,
        with_uploads: Option<PathBuf>,
    },
    Export {
        room: String,
    },
    /// Changes a room's own retention. Each field: absent leaves it as
    /// it is, `null` makes it follow the server's setting, `0` means no
    /// limit.
    RoomRetention {
        room: String,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        max_age_secs: Option<Option<u64>>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        keep_last: Option<Option<u64>>,
    },
    /// A bot account, a member of `rooms` (names or ids).
    BotAdd {
        name: String,
        #[serde(default)]
        rooms: Vec<String>,
    },
    BotList,
    /// A new API token, shown once. `rooms`: none means any room;
    /// `scopes`: comma-separated actions (read,send,react,join,dm).
    BotTokenAdd {
        name: String,
        #[serde(default)]
        rooms: Option<Vec<String>>,
        #[serde(default)]
        scopes: Option<String>,
    },
    BotTokenRevoke {
        id: String,
    },
    BotRemove {
        name: String,
    },
    /// An incoming webhook for the room; its URL is shown once.
    HookAdd {
        room: String,
        #[serde(default)]
        name: Option<String>,
    },
    HookList {
        #[serde(default)]
        room: Option<String>,
    },
    HookRemove {
        id: String,
    },
    /// Outgoing webhooks: add one (its secret is in the answer, and
    /// nowhere else ever).
    WebhookAdd {
        url: String,
        events: Vec<String>,
        /// A room name or id: only its events.
        room: Option<String>,
    },
    WebhookList,
    WebhookRemove {
        id: String,
    },
    WebhookRotate {
        id: String,
    },
    WebhookEnable {
        id: String,
        enabled: bool,
    },
    WebhookDeliveries {
        id: String,
        limit: Option<usize>,
    },
    WebhookReplay {
        id: String,
        /// A seq, an RFC 3339 time or a duration ago (`1h`).
        since: String,
    },
}

/// A field that is there, even as `null`, is `Some`; only an absent one
/// (serde's `default`) is `None`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// What only the running server knows about itself, for `Status`.
#[derive(Debug, Clone)]
pub struct Listening {
    /// The address the listener is bound to (the configured port may be 0).
    pub addr: SocketAddr,
    pub url: String,
}

/// The error half of an answer, as it crosses the socket.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AdminError {
    pub code: String,
    pub message: String,
}

impl From<&AppError> for AdminError {
    fn from(e: &AppError) -> Self {
        AdminError {
            code: e.code().as_str().to_string(),
            message: e.client_message(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Ok(Value),
    Error(AdminError),
}

/// Runs one operator request against the app, in the server or in the
/// CLI's own process alike.
pub async fn execute(app: &Arc<App>, req: Request) -> Result<Value, AppError> {
    execute_at(app, req, None).await
}

/// [`execute`] in the running server, which knows where it listens.
async fn execute_at(
    app: &Arc<App>,
    req: Request,
    listening: Option<&Listening>,
) -> Result<Value, AppError> {
    let audited = audited(&req);
    let value = run(app, req, listening).await?;
    // Moderation actions write their own entries, in their own commit;
    // the operator's administrative changes are logged here.
    if let Some((action, target)) = audited {
        app.audit(&Actor::Operator, action, &target, None, Value::Null)
            .await?;
    }
    Ok(value)
}

/// The audit action and target of an administrative request, if it changes
/// anything.
fn audited(req: &Request) -> Option<(&'static str, String)> {
    Some(match req {
        Request::UserAdd { username, role, .. } => ("user_add", format!("{username} ({role})")),
        Request::UserPasswd { username, .. } => ("user_passwd", username.clone()),
        Request::UserRole { username, role } => ("user_role", format!("{username} → {role}")),
        Request::UserDelete { username } => ("user_delete", username.clone()),
        Request::RoomCreate { name, .. } => ("room_create", name.clone()),
        Request::RoomDelete { room } => ("room_delete", room.clone()),
        Request::RoomAddMember { room, username } => {
            ("room_add_member", format!("{username} → {room}"))
        }
        Request::UploadDelete { id } => ("upload_delete", id.clone()),
        Request::UploadGc { .. } => ("upload_gc", "uploads".into()),
        Request::Backup { path, .. } => ("backup", path.display().to_string()),
        Request::RoomRetention { room, .. } => ("room_retention", room.clone()),
        Request::BotAdd { name, .. } => ("bot_add", name.clone()),
        Request::BotTokenAdd { name, .. } => ("bot_token_add", name.clone()),
        Request::BotTokenRevoke { id } => ("bot_token_revoke", id.clone()),
        Request::BotRemove { name } => ("bot_remove", name.clone()),
        Request::HookAdd { room, .. } => ("hook_add", room.clone()),
        Request::HookRemove { id } => ("hook_remove", id.clone()),
        _ => return None,
    })
}

/// A time in ms, or `null` for "until lifted" (stored as `i64::MAX`).
fn until_json(until: i64) -> Value {
    if until == i64::MAX {
        Value::Null
    } else {
        json!(until)
    }
}

/// The user's ban in force, or `null`.
fn ban_json(u: &UserRecord, now: i64) -> Value {
    match u.banned_until {
        Some(until) if u.banned_at(now) => json!({
            "until": until_json(until),
            "reason": u.ban_reason,
        }),
        _ => Value::Null,
    }
}

/// A mute for the operator; a room deleted since shows as its id, never
/// as "everywhere".
fn mute_json(room_id: Option<Id>, room: Option<&crate::domain::Room>, m: &MuteRecord) -> Value {
    json!({
        "room": room.map(|r| r.name.clone()).or(room_id.map(|id| id.to_string())),
        "room_id": room_id,
        "until": until_json(m.until),
        "reason": m.reason,
        "by": m.by,
    })
}

/// Every mute in force, by user, each with its room's name.
fn mutes_by_user(app: &App, now: i64) -> Result<HashMap<Id, Vec<Value>>, AppError> {
    let rx = app.store.read()?;
    let mut rooms: HashMap<Id, Option<crate::domain::Room>> = HashMap::new();
    let mut out: HashMap<Id, Vec<Value>> = HashMap::new();
    for (user, room_id, rec) in rx.mutes(now)? {
        let room = match room_id {
            Some(id) => {
                if let std::collections::hash_map::Entry::Vacant(e) = rooms.entry(id) {
                    e.insert(rx.room(id)?);
                }
                rooms.get(&id).and_then(Option::as_ref)
            }
            None => None,
        };
        out.entry(user)
            .or_default()
            .push(mute_json(room_id, room, &rec));
    }
    Ok(out)
}

async fn run(
    app: &Arc<App>,
    req: Request,
    listening: Option<&Listening>,
) -> Result<Value, AppError> {
    let op = Actor::Operator;
    Ok(match req {
        Request::Status => json!({
            "connections": app.hub.session_count(),
            "online_users": app.hub.online_users().len(),
            "users": app.store.read()?.user_count()?,
            "data_dir": app.config.server.data_dir,
            "pid": std::process::id(),
            "listen": listening.map(|l| l.addr),
            "url": listening.map(|l| l.url.clone()),
        }),
        Request::UserAdd {
            username,
            password,
            role,
        } => {
            let user = app
                .create_user(
                    Username::parse(&username)?,
                    Password::parse(&password)?,
                    role,
                )
                .await?;
            json!({ "user": user })
        }
        Request::UserList => {
            let now = crate::domain::now_ms();
            let mut mutes = mutes_by_user(app, now)?;
            let users: Vec<Value> = app
                .users()?
                .into_iter()
                .map(|u| {
                    json!({
                        "id": u.id,
                        "username": u.username,
                        "role": u.role,
                        "created_at": u.created_at,
                        "online": app.hub.is_online(u.id),
                        "banned": ban_json(&u, now),
                        "mutes": mutes.remove(&u.id).unwrap_or_default(),
                    })
                })
                .collect();
            json!({ "users": users })
        }
        Request::UserShow { username } => {
            let now = crate::domain::now_ms();
            let u = app.user_by_name(&username)?;
            let rooms: Vec<String> = app.rooms_of(u.id)?.into_iter().map(|r| r.name).collect();
            let rx = app.store.read()?;
            let mut mutes = Vec::new();
            for (room_id, rec) in rx.mutes_of(u.id, now)? {
                let room = room_id.map(|id| rx.room(id)).transpose()?.flatten();
                mutes.push(mute_json(room_id, room.as_ref(), &rec));
            }
            json!({
                "user": u.public(),
                "created_at": u.created_at,
                "online": app.hub.is_online(u.id),
                "rooms": rooms,
                "banned": ban_json(&u, now),
                "mutes": mutes,
            })
        }
        Request::Bans => {
            let now = crate::domain::now_ms();
            let bans: Vec<Value> = app
                .users()?
                .into_iter()
                .filter(|u| u.banned_at(now))
                .map(|u| {
                    let mut ban = ban_json(&u, now);
                    ban["username"] = json!(u.username);
                    ban["id"] = json!(u.id);
                    ban
                })
                .collect();
            json!({ "bans": bans })
        }
        Request::Mutes => {
            let now = crate::domain::now_ms();
            let mutes = mutes_by_user(app, now)?;
            let rx = app.store.read()?;
            let mut out = Vec::new();
            for (id, list) in mutes {
                let Some(u) = rx.user(id)? else { continue };
                for mut m in list {
                    m["username"] = json!(u.username);
                    m["user_id"] = json!(u.id);
                    out.push(m);
                }
            }
            // Stable for the operator's eye: by user, then the mute
            // everywhere before room mutes.
            out.sort_by(|a, b| {
                let key = |v: &Value| {
                    (
                        v["username"].as_str().unwrap_or_default().to_string(),
                        v["room"].as_str().map(str::to_string),
                    )
                };
                key(a).cmp(&key(b))
            });
            json!({ "mutes": out })
        }
        Request::UserPasswd { username, password } => {
            app.set_password(&username, Password::parse(&password)?)
                .await?;
            json!({ "password_changed": app.user_by_name(&username)?.public() })
        }
        Request::UserRole { username, role } => {
            json!({ "user": app.set_role(&username, role).await? })
        }
        Request::UserDelete { username } => {
            json!({ "user": app.delete_user(&username).await? })
        }
        Request::UserFriends { username } => {
            let u = app.user_by_name(&username)?;
            json!({ "user": u.public(), "friends": app.friends(u.id)?.friends })
        }
        Request::RoomCreate {
            name,
            private,
            topic,
        } => {
            let vis = if private {
                Visibility::Private
            } else {
                Visibility::Public
            };
            let topic = topic
                .as_deref()
                .map(|t| Topic::parse(t, app.config.limits.max_topic_chars))
                .transpose()?;
            let room = app
                .create_room(&op, RoomName::parse(&name)?, vis, topic)
                .await?;
            json!({ "room": room })
        }
        Request::RoomList => {
            let online = app.hub.room_online_counts();
            let rx = app.store.read()?;
            let mut rooms = Vec::new();
            for r in app.list_rooms(&op)? {
                rooms.push(json!({
                    "room": r,
                    "members": rx.member_ids(r.id)?.len(),
                    "online": online.get(&r.id).copied().unwrap_or(0),
                    "last_seq": rx.last_seq(r.id)?,
                }));
            }
            json!({ "rooms": rooms })
        }
        Request::RoomShow { room } => {
            let r = app.find_room(&room)?;
            let (room, members) = app.room_details(&op, r.id)?;
            let rx = app.store.read()?;
            let cfg = &app.config.store;
            json!({
                "room": room,
                "members": members,
                "last_seq": rx.last_seq(room.id)?,
                // The room's own settings (`null`: the server's), and the
                // server's, so the effective policy can be told.
                "retention": rx.retention(room.id)?,
                "retention_default": crate::store::Retention {
                    max_age_secs: Some(cfg.retention_days * 86_400),
                    keep_last: Some(cfg.retention_keep_last),
                },
            })
        }
        Request::RoomDelete { room } => {
            let r = app.find_room(&room)?;
            json!({ "room": app.delete_room(&op, r.id).await? })
        }
        Request::RoomMessages {
            room,
            before,
            limit,
        } => {
            let r = app.find_room(&room)?;
            let page = crate::app::page(before, None, limit)?;
            let (messages, has_more) = app.history(&op, r.id, page)?;
            json!({ "room": r, "messages": messages, "has_more": has_more })
        }
        Request::RoomAddMember { room, username } => {
            let r = app.find_room(&room)?;
            let added = app.add_member(&op, r.id, &username).await?;
            json!({ "added": added })
        }
        Request::UploadList { username } => {
            let rx = app.store.read()?;
            let mut uploads = Vec::new();
            for u in app.uploads(username.as_deref())? {
                let uploader = rx.user(u.uploader)?.map(|r| r.username);
                uploads.push(json!({
                    "upload": u.attachment(),
                    "uploader": uploader,
                    "created_at": u.created_at,
                    "messages": u.refs,
                }));
            }
            let mut answer = json!({ "uploads": uploads });
            // One user's: what they use of their quota.
            if let Some(name) = username.as_deref() {
                let user = app.user_by_name(name)?;
                answer["used_bytes"] = json!(rx.uploaded_bytes(user.id)?);
                answer["quota_bytes"] = json!(app.config.uploads.quota_bytes_per_user);
            }
            answer
        }
        Request::UploadDelete { id } => {
            json!({ "upload": app.delete_upload(&id).await?.attachment() })
        }
        Request::Snapshot { events_after } => snapshot(app, events_after)?,
        Request::Kick { username, reason } => {
            let n = app.kick(&op, &username, reason.clone()).await?;
            json!({ "kicked": username, "reason": reason, "connections_closed": n })
        }
        Request::Ban {
            username,
            reason,
            duration_secs,
        } => {
            let user = app.ban(&op, &username, reason, duration_secs).await?;
            let rec = app.user_by_name(&user.username)?;
            json!({
                "user": user,
                "banned": rec.username,
                "until": until_json(rec.banned_until.unwrap_or(i64::MAX)),
                "reason": rec.ban_reason,
            })
        }
        Request::Unban { username } => {
            let user = app.unban(&op, &username).await?;
            json!({ "unbanned": user.username, "user": user })
        }
        Request::Mute {
            username,
            room,
            reason,
            duration_secs,
        } => {
            let (room, rec) = app
                .mute(&op, &username, room.as_deref(), reason, duration_secs)
                .await?;
            json!({
                "muted": app.user_by_name(&username)?.username,
                "room": room.map(|r| r.name),
                "until": until_json(rec.until),
                "reason": rec.reason,
            })
        }
        Request::Unmute { username, room } => {
            let room = app.unmute(&op, &username, room.as_deref()).await?;
            json!({
                "unmuted": app.user_by_name(&username)?.username,
                "room": room.map(|r| r.name),
            })
        }
        Request::DeleteMessage { id, reason } => {
            let id = crate::domain::Id::parse("message", &id)
                .map_err(|_| AppError::NotFound("message"))?;
            json!({ "message": app.moderate_delete(&op, id, reason).await? })
        }
        Request::Announce { text, room } => {
            let (text, room) = app.announce(&op, &text, room.as_deref()).await?;
            json!({ "announced": text, "room": room.map(|r| r.name) })
        }
        Request::Audit { since, limit } => json!({ "entries": app.audit_log(since, limit)? }),
        Request::Backup { path, with_uploads } => app.backup(path, with_uploads).await?,
        Request::Export { room } => app.export(&room)?,
        Request::RoomRetention {
            room,
            max_age_secs,
            keep_last,
        } => {
            let id = app.find_room(&room)?.id;
            let current = app.store.read()?.retention(id)?;
            let r = crate::store::Retention {
                max_age_secs: max_age_secs.unwrap_or(current.max_age_secs),
                keep_last: keep_last.unwrap_or(current.keep_last),
            };
            json!({ "room": app.set_retention(&room, r).await?, "retention": r })
        }
        Request::BotAdd { name, rooms } => {
            let name = crate::domain::Username::parse(&name)?;
            json!({ "bot": app.create_bot(name, &rooms).await? })
        }
        Request::BotList => json!({ "bots": app.bots()? }),
        Request::BotTokenAdd {
            name,
            rooms,
            scopes,
        } => {
            let actions = match scopes.as_deref() {
                Some(list) => crate::app::bots::parse_actions(list)?,
                None => crate::app::bots::DEFAULT_ACTIONS.to_vec(),
            };
            let (token, info) = app.add_bot_token(&name, rooms.as_deref(), actions).await?;
            json!({ "token": token, "info": info })
        }
        Request::BotTokenRevoke { id } => {
            app.revoke_bot_token(&id).await?;
            json!({ "revoked": id })
        }
        Request::BotRemove { name } => json!({ "bot": app.remove_bot(&name).await? }),
        Request::HookAdd { room, name } => {
            let mut hook = app.add_hook(&room, name.as_deref()).await?;
            // The running server knows its own address: the URL is then
            // whole, ready to paste.
            if let (Some(l), Some(path)) = (listening, hook.url.as_mut()) {
                *path = format!("{}{path}", l.url.trim_end_matches('/'));
            }
            json!({ "hook": hook })
        }
        Request::HookList { room } => json!({ "hooks": app.hooks(room.as_deref())? }),
        Request::HookRemove { id } => {
            app.remove_hook(&id).await?;
            json!({ "removed": id })
        }
        Request::WebhookAdd { url, events, room } => {
            let (view, secret) = app.webhook_add(&op, &url, &events, room.as_deref()).await?;
            App::webhook_with_secret(&view, &secret)
        }
        Request::WebhookList => json!({ "webhooks": app.webhook_list()? }),
        Request::WebhookRemove { id } => {
            app.webhook_remove(&op, &id).await?;
            json!({ "removed": id })
        }
        Request::WebhookRotate { id } => {
            let (view, secret) = app.webhook_rotate(&op, &id).await?;
            App::webhook_with_secret(&view, &secret)
        }
        Request::WebhookEnable { id, enabled } => {
            json!({ "webhook": app.webhook_set_enabled(&op, &id, enabled).await? })
        }
        Request::WebhookDeliveries { id, limit } => {
            json!({ "deliveries": app.webhook_deliveries(&id, limit.unwrap_or(50))? })
        }
        Request::WebhookReplay { id, since } => {
            json!({ "queued": app.webhook_replay(&op, &id, &since).await? })
        }
        Request::UploadGc { grace_secs } => {
            let grace = grace_secs.unwrap_or(app.config.uploads.gc_grace_secs);
            let (removed, swept) = app.gc_uploads(grace).await?;
            let ids: Vec<String> = removed.into_iter().map(|u| u.id).collect();
            json!({ "removed": ids, "orphan_files": swept })
        }
    })
}

/// Everything the console shows, in one answer.
fn snapshot(app: &Arc<App>, events_after: u64) -> Result<Value, AppError> {
    let m = &app.metrics;
    let rx = app.store.read()?;
    let online = app.hub.room_online_counts();
    let mut rooms = Vec::new();
    for r in rx.rooms()? {
        let (rate, last) = m.room_activity(r.id);
        rooms.push(json!({
            "id": r.id,
            "name": r.name,
            "kind": r.kind,
            "visibility": r.visibility,
            "members": rx.member_ids(r.id)?.len(),
            "online": online.get(&r.id).copied().unwrap_or(0),
            "msgs_per_sec": rate,
            "last_activity": last,
        }));
    }
    let users: Vec<Value> = app
        .hub
        .online_users()
        .into_iter()
        .map(|o| {
            json!({
                "id": o.user.id,
                "username": o.user.username,
                "role": o.user.role,
                "connections": o.connections,
                "rooms": o.rooms,
                "since": o.since,
                "addr": o.addr.map(|a| a.to_string()),
            })
        })
        .collect();
    let samples = m.samples();
    let recent = |f: fn(&crate::metrics::Sample) -> f64| {
        let last: Vec<f64> = samples.iter().rev().take(5).map(f).collect();
        if last.is_empty() {
            0.0
        } else {
            last.iter().sum::<f64>() / last.len() as f64
        }
    };
    let hooks = app.webhook_list()?;
    let audit: Vec<Value> = app
        .audit_log(None, Some(20))?
        .into_iter()
        .map(|e| {
            json!({"seq": e.seq, "at": e.at, "actor": e.actor, "action": e.action, "target": e.target, "reason": e.reason})
        })
        .collect();
    Ok(json!({
        "server": {
            "uptime_secs": m.uptime_secs(),
            "connections": app.hub.session_count(),
            "online_users": users.len(),
            "rooms": rooms.len(),
            "users": rx.user_count()?,
            "messages_per_sec": recent(|s| s.messages),
            "deliveries_per_sec": recent(|s| s.deliveries),
            "memory_bytes": crate::metrics::resident_memory().unwrap_or(0),
            "webhooks": hooks.len(),
            "webhooks_disabled": hooks.iter().filter(|h| !h.enabled).count(),
            "webhooks_pending": hooks.iter().map(|h| h.pending).sum::<u64>(),
        },
        "rooms": rooms,
        "users": users,
        "throughput": samples,
        "events": m.events_after(events_after),
        "audit": audit,
    }))
}

/// Binds the socket, replacing a stale file left by a crashed server. The
/// store's lock has already proven that no other server uses this data
/// directory.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    // Created 0600 by the process's umask (`perms::private_umask`), inside
    // the 0700 data directory: there is no moment at which another user
    // could connect before the mode is right.
    crate::perms::private_umask();
    UnixListener::bind(path)
}

/// Serves operator connections until the task is aborted, then removes the
/// socket file.
pub async fn serve(app: Arc<App>, listener: UnixListener, listening: Listening) {
    let path: Option<PathBuf> = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let _cleanup = RemoveOnDrop(path);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // The socket lives in the private data directory, but a check of
        // who connects does not depend on how that directory was made.
        #[cfg(unix)]
        if !crate::perms::peer_is_trusted(&stream) {
            tracing::warn!("admin socket: refused a connection from another user");
            continue;
        }
        let app = app.clone();
        let listening = listening.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_one(app, stream, &listening).await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

async fn serve_one(
    app: Arc<App>,
    stream: UnixStream,
    listening: &Listening,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Some(line) = lines.next_line().await? {
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(req) => match execute_at(&app, req, Some(listening)).await {
                Ok(v) => Answer::Ok(v),
                Err(e) => Answer::Error((&e).into()),
            },
            Err(e) => Answer::Error(AdminError {
                code: "bad_request".into(),
                message: format!("bad admin request: {e}"),
            }),
        };
        let mut out = serde_json::to_vec(&answer).unwrap_or_default();
        out.push(b'\n');
        w.write_all(&out).await?;
    }
    Ok(())
}

/// The operator's side of the socket.
pub struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    w: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    /// Connects to a running server, or returns `None` when none listens.
    pub async fn connect(path: &Path) -> Option<Client> {
        let stream = UnixStream::connect(path).await.ok()?;
        let (r, w) = stream.into_split();
        Some(Client {
            lines: BufReader::new(r).lines(),
            w,
        })
    }

    pub async fn call(&mut self, req: &Request) -> Result<Value, AdminError> {
        let io = |e: std::io::Error| AdminError {
            code: "internal".into(),
            message: format!("admin socket: {e}"),
        };
        let mut line = serde_json::to_vec(req).map_err(|e| AdminError {
            code: "internal".into(),
            message: e.to_string(),
        })?;
        line.push(b'\n');
        self.w.write_all(&line).await.map_err(io)?;
        let answer = self
            .lines
            .next_line()
            .await
            .map_err(io)?
            .ok_or_else(|| AdminError {
                code: "internal".into(),
                message: "the server closed the admin socket".into(),
            })?;
        match serde_json::from_str::<Answer>(&answer) {
            Ok(Answer::Ok(v)) => Ok(v),
            Ok(Answer::Error(e)) => Err(e),
            Err(e) => Err(AdminError {
                code: "internal".into(),
                message: format!("bad answer from server: {e}"),
            }),
        }
    }
}
