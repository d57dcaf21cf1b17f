//! Push notifications: the VAPID key, subscriptions, preferences, who is
//! active, and the delivery task that sends what the store queued.
//!
//! Delivery in a cluster: every node runs the task, and a queue entry is
//! sent by the node whose `Claim` command the log grants first (one node
//! holds an entry at a time, for a lease; an entry whose holder died is
//! claimed again when the lease ends). The log's single order is what
//! makes the push go out once, with no leader election of our own.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{App, AppError, Result};
use crate::domain::{Id, RoomKind, User, now_ms};
use crate::outbound::{Outbound, OutboundError};
use crate::store::push::{
    Dnd, NotifyLevel, PushCommand, PushPending, PushReason, PushSubscription, RATE_WINDOW_MS,
    RoomNotify, Secret, UserNotify,
};
use crate::store::{Command, StoreError};
use crate::webpush::{self, Vapid};

/// How long a node holds a claimed entry before another may take it: well
/// past a delivery round (the outbound timeout).
const LEASE_MS: i64 = 60_000;
/// Payloads are padded to a multiple of this, so their length says little
/// about what they hold.
const PAD_TO: usize = 1024;
/// Deliveries in flight on one node at once.
const CONCURRENT: usize = 16;

/// The node's push machinery, kept on the app.
pub struct Notifier {
    vapid: RwLock<Option<Arc<Vapid>>>,
    pub(super) wake: Arc<tokio::sync::Notify>,
    /// Other nodes' users with an active connection, by node, from their
    /// heartbeats.
    remote: Mutex<HashMap<String, HashMap<Id, usize>>>,
    outbound: Option<Outbound>,
    node: String,
    inflight: InFlight,
}

impl Notifier {
    pub(super) fn new(config: &crate::config::Config, wake: Arc<tokio::sync::Notify>) -> Notifier {
        let outbound = match Outbound::from_config(config) {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::error!(error = %e, "outbound HTTP unavailable: no pushes will be sent");
                None
            }
        };
        Notifier {
            vapid: RwLock::new(None),
            wake,
            remote: Mutex::default(),
            outbound,
            node: if config.cluster.enabled() {
                config.cluster.node()
            } else {
                "local".into()
            },
            inflight: Default::default(),
        }
    }
}

/// `POST /api/push/subscriptions`: a browser's `PushSubscription.toJSON()`.
#[derive(Debug, Deserialize)]
pub struct SubscribeBody {
    pub endpoint: String,
    pub keys: SubscribeKeys,
    /// Browsers send it (always null for Web Push today); ignored.
    #[serde(default, rename = "expirationTime")]
    pub _expiration_time: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct SubscribeKeys {
    pub p256dh: String,
    pub auth: String,
}

/// A subscription as its owner sees it (the keys stay with the server).
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    pub id: Id,
    pub endpoint: String,
    pub created_at: i64,
}

impl From<PushSubscription> for SubscriptionView {
    fn from(s: PushSubscription) -> Self {
        SubscriptionView {
            id: s.id,
            endpoint: s.endpoint,
            created_at: s.created_at,
        }
    }
}

/// `PUT /api/me/notifications`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserNotifyBody {
    /// null: no do-not-disturb window.
    pub dnd: Option<Dnd>,
}

/// `PUT /api/rooms/{id}/notifications`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomNotifyBody {
    /// null or left out: the default for the room's kind.
    #[serde(default)]
    pub level: Option<NotifyLevel>,
    #[serde(default)]
    pub muted: bool,
}

fn unavailable(e: impl std::fmt::Display) -> AppError {
    AppError::Internal(e.to_string())
}

impl App {
    fn push_enabled(&self) -> Result<()> {
        if self.config.push.enabled {
            Ok(())
        } else {
            Err(AppError::NotFound("push notifications"))
        }
    }

    /// Loads the VAPID key, making it first if the store has none. In a
    /// cluster the first node's key is everyone's: the command keeps a
    /// key already stored.
    pub async fn push_init(&self) -> Result<()> {
        let mut stored = self.store.read()?.vapid_key()?;
        if stored.is_none() {
            let fresh = Vapid::generate().map_err(unavailable)?;
            self.store
                .run::<bool>(Command::Push(PushCommand::SetVapidKey {
                    pkcs8: Secret(webpush::b64(&fresh)),
                }))
                .await?;
            stored = self.store.read()?.vapid_key()?;
        }
        let der = stored
            .as_deref()
            .and_then(webpush::unb64)
            .ok_or_else(|| unavailable("the stored VAPID key is unreadable"))?;
        let vapid = Vapid::from_pkcs8(&der).map_err(unavailable)?;
        *self
            .notifier
            .vapid
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(vapid));
        Ok(())
    }

    fn vapid(&self) -> Result<Arc<Vapid>> {
        self.notifier
            .vapid
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| AppError::Internal("the VAPID key is not loaded".into()))
    }

    /// `GET /api/push/vapid`.
    pub fn vapid_public_key(&self) -> Result<String> {
        self.push_enabled()?;
        Ok(self.vapid()?.public_b64())
    }

    pub async fn push_subscribe(
        &self,
        user: &User,
        body: SubscribeBody,
    ) -> Result<SubscriptionView> {
        self.push_enabled()?;
        let bad = |m: &str| AppError::BadRequest(m.into());
        if body.endpoint.len() > 2048 {
            return Err(bad("endpoint: at most 2048 bytes"));
        }
        let p256dh =
            webpush::unb64(&body.keys.p256dh).ok_or_else(|| bad("keys.p256dh: not base64url"))?;
        let auth =
            webpush::unb64(&body.keys.auth).ok_or_else(|| bad("keys.auth: not base64url"))?;
        webpush::check_subscription_keys(&p256dh, &auth)
            .map_err(|e| AppError::BadRequest(e.to_string()))?;
        let outbound = self
            .notifier
            .outbound
            .as_ref()
            .ok_or_else(|| unavailable("outbound HTTP is unavailable"))?;
        // A URL that is malformed or points somewhere refused is refused
        // now. One whose name does not resolve at this moment is taken:
        // every send vets it again, and a push service briefly out of
        // reach is no reason to lose the subscription.
        match outbound.vet(&body.endpoint, true).await {
            Err(e @ (OutboundError::BadUrl(_) | OutboundError::Refused(_))) => {
                return Err(AppError::BadRequest(format!("endpoint: {e}")));
            }
            Err(e) => tracing::info!(error = %e, "push endpoint not reachable now; kept"),
            Ok(_) => {}
        }
        let sub = PushSubscription {
            id: Id::new(),
            user: user.id,
            endpoint: body.endpoint,
            p256dh: webpush::b64(&p256dh),
            auth: webpush::b64(&auth),
            created_at: now_ms(),
        };
        self.store
            .run::<()>(Command::Push(PushCommand::Subscribe {
                sub: sub.clone(),
                max: self.config.push.max_subscriptions,
            }))
            .await?;
        Ok(sub.into())
    }

    pub async fn push_unsubscribe(
        &self,
        user: &User,
        id: Option<Id>,
        endpoint: Option<String>,
    ) -> Result<()> {
        if id.is_none() && endpoint.is_none() {
            return Err(AppError::BadRequest("give id or endpoint".into()));
        }
        self.store
            .run::<()>(Command::Push(PushCommand::Unsubscribe {
                user: user.id,
                id,
                endpoint,
            }))
            .await?;
        Ok(())
    }

    pub fn push_subscriptions(&self, user: &User) -> Result<Vec<SubscriptionView>> {
        Ok(self
            .store
            .read()?
            .push_subscriptions(user.id)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// `GET /api/me/notifications`: the user's settings and every room
    /// where they chose something.
    pub fn notify_settings(&self, user: &User) -> Result<serde_json::Value> {
        let rx = self.store.read()?;
        let prefs = rx.user_notify(user.id)?;
        let mut rooms = Vec::new();
        for (room, p) in rx.room_notifies(user.id)? {
            if let Some(r) = rx.room(room)? {
                rooms.push(room_json(room, &p, r.kind));
            }
        }
        Ok(json!({ "dnd": prefs.dnd, "rooms": rooms }))
    }

    pub async fn set_notify_settings(&self, user: &User, body: UserNotifyBody) -> Result<()> {
        if let Some(d) = &body.dnd {
            if d.start_min >= 1440 || d.end_min >= 1440 {
                return Err(AppError::BadRequest(
                    "dnd: start_min and end_min are minutes of the day, 0 to 1439".into(),
                ));
            }
            if d.utc_offset_min.abs() > 14 * 60 {
                return Err(AppError::BadRequest(
                    "dnd: utc_offset_min must be within ±840".into(),
                ));
            }
        }
        self.store
            .run::<()>(Command::Push(PushCommand::SetUserNotify {
                user: user.id,
                prefs: UserNotify { dnd: body.dnd },
            }))
            .await?;
        Ok(())
    }

    /// A room's settings for the user (the defaults if they chose none).
    pub fn room_notify(&self, user: &User, room: Id) -> Result<serde_json::Value> {
        let rx = self.store.read()?;
        let r = rx.room(room)?.ok_or(AppError::NotFound("room"))?;
        if rx.member(room, user.id)?.is_none() {
            return Err(AppError::NotFound("room"));
        }
        Ok(room_json(room, &rx.room_notify(user.id, room)?, r.kind))
    }

    pub async fn set_room_notify(
        &self,
        user: &User,
        room: Id,
        body: RoomNotifyBody,
    ) -> Result<serde_json::Value> {
        let prefs = RoomNotify {
            level: body.level,
            muted: body.muted,
        };
        self.store
            .run::<()>(Command::Push(PushCommand::SetRoomNotify {
                user: user.id,
                room,
                prefs,
            }))
            .await
            .map_err(|e| match e {
                // Not a member: the room is not theirs to see.
                StoreError::Forbidden(_) => AppError::NotFound("room"),
                e => e.into(),
            })?;
        self.room_notify(user, room)
    }

    /// Another node's heartbeat: who is active there (`None`: it is gone).
    pub fn remote_active(&self, node: &str, active: Option<Vec<(Id, usize)>>) {
        let mut remote = self
            .notifier
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match active {
            Some(list) => {
                remote.insert(node.to_string(), list.into_iter().collect());
            }
            None => {
                remote.remove(node);
            }
        }
    }

    /// Whether the user has an active connection on any node.
    pub fn active_anywhere(&self, user: Id) -> bool {
        self.hub.active_here(user) > 0
            || self
                .notifier
                .remote
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .any(|m| m.get(&user).is_some_and(|n| *n > 0))
    }
}

fn room_json(room: Id, p: &RoomNotify, kind: RoomKind) -> serde_json::Value {
    json!({
        "room": room,
        "level": p.level_in(kind),
        "default": p.level.is_none(),
        "muted": p.muted,
    })
}

/// Runs the delivery task until `stop`: it wakes when an entry falls due
/// or a new one is queued.
pub fn spawn_delivery(app: Arc<App>, stop: tokio::sync::watch::Receiver<bool>) {
    if !app.config.push.enabled || app.notifier.outbound.is_none() {
        return;
    }
    let wake = app.notifier.wake.clone();
    run_due(app, "push", CONCURRENT, 10, wake, stop, scan);
}

/// The (owner, room) pairs whose send is under way, so a background
/// sender never starts a second one for the same pair.
#[derive(Default)]
pub(super) struct InFlight(Mutex<HashSet<(Id, Id)>>);

pub(super) enum Start {
    /// That pair is being sent already.
    Busy,
    /// Every slot is taken: stop scanning for now.
    Full,
    Go(tokio::sync::OwnedSemaphorePermit),
}

impl InFlight {
    /// Marks `key` as under way and takes a slot for it, or says why not
    /// (and then leaves no mark).
    pub(super) fn start(&self, slots: &Arc<tokio::sync::Semaphore>, key: (Id, Id)) -> Start {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert(key) {
            return Start::Busy;
        }
        match slots.clone().try_acquire_owned() {
            Ok(permit) => Start::Go(permit),
            Err(_) => {
                set.remove(&key);
                Start::Full
            }
        }
    }

    pub(super) fn finish(&self, key: (Id, Id)) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
}

/// The loop of a background sender (pushes, webhook deliveries): `scan`
/// starts what is due, up to `concurrency` at once, and says when the
/// next thing is; the loop sleeps until then (at least `min_wait_ms`, at
/// most 5 s), or until `wake` is notified of new work, until `stop`.
pub(super) fn run_due<F>(
    app: Arc<App>,
    what: &'static str,
    concurrency: usize,
    min_wait_ms: i64,
    wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    scan: F,
) where
    F: Fn(
            &Arc<App>,
            &Arc<tokio::sync::Semaphore>,
            &tokio::sync::watch::Receiver<bool>,
        ) -> Result<i64>
        + Send
        + 'static,
{
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
        loop {
            let next = match scan(&app, &slots, &stop) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, what, "reading the queue failed");
                    now_ms() + 1000
                }
            };
            let wait = Duration::from_millis((next - now_ms()).clamp(min_wait_ms, 5000) as u64);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    });
}

/// Starts the entries that are due; returns when the next one is.
fn scan(
    app: &Arc<App>,
    slots: &Arc<tokio::sync::Semaphore>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<i64> {
    let now = now_ms();
    let window = app.config.push.coalesce_ms as i64;
    let mut next = now + 5000;
    for p in app.store.read()?.push_queue(512)? {
        let fire = if p.attempt == 0 && p.only.is_none() {
            p.due + window
        } else {
            p.due
        };
        // Each user's pushes have one preferred node, so that normally one
        // claim is made per push; the others step in only after a grace
        // period (a preferred node that died, or one not yet seen).
        let fire = if preferred(app, p.user) {
            fire
        } else {
            fire + FALLBACK_MS
        };
        let fire = match &p.claim {
            Some(c) if c.until > now && c.node != app.notifier.node => fire.max(c.until),
            _ => fire,
        };
        if fire > now {
            next = next.min(fire);
            continue;
        }
        let key = (p.user, p.room);
        let permit = match app.notifier.inflight.start(slots, key) {
            super::push::Start::Busy => continue,
            super::push::Start::Full => {
                next = now + 50;
                break;
            }
            super::push::Start::Go(permit) => permit,
        };
        let (app, mut stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                r = deliver(&app, p) => if let Err(e) = r {
                    tracing::warn!(error = %e, "push: delivery failed");
                },
                _ = stop.wait_for(|s| *s) => {}
            }
            app.notifier.inflight.finish(key);
            drop(permit);
            app.notifier.wake.notify_one();
        });
    }
    Ok(next)
}

/// How long a node that is not a user's preferred one waits before it
/// claims that user's pushes itself.
const FALLBACK_MS: i64 = 10_000;

/// Whether this node is the one that normally sends `user`'s pushes: the
/// live nodes (this one and those heard from), sorted, picked by the id.
pub(super) fn preferred(app: &App, user: Id) -> bool {
    let n = &app.notifier;
    let remote = n.remote.lock().unwrap_or_else(|e| e.into_inner());
    if remote.is_empty() {
        return true;
    }
    let mut nodes: Vec<&str> = remote.keys().map(String::as_str).collect();
    nodes.push(n.node.as_str());
    nodes.sort_unstable();
    nodes.dedup();
    nodes[(user.0 % nodes.len() as u128) as usize] == n.node
}

/// What became of one subscription's push.
enum Sent {
    Ok,
    Gone,
    /// Worth another try, not before this many ms.
    Later(i64),
    Failed,
}

async fn deliver(app: &Arc<App>, queued: PushPending) -> Result<()> {
    let n = &app.notifier;
    let (user, room) = (queued.user, queued.room);
    let granted = app
        .store
        .run::<bool>(Command::Push(PushCommand::Claim {
            user,
            room,
            node: n.node.clone(),
            lease_ms: LEASE_MS,
        }))
        .await?;
    if !granted {
        return Ok(());
    }
    let settle = |seen: u32, gone: Vec<Id>, retry: Option<(i64, Vec<Id>)>, sent: bool, drop| {
        Command::Push(PushCommand::Settle {
            user,
            room,
            node: n.node.clone(),
            seen,
            gone,
            retry,
            sent,
            drop,
        })
    };
    let rx = app.store.read()?;
    // The entry as the claim left it: messages may have joined it.
    let Some(p) = rx.push_pending(user, room)? else {
        return Ok(());
    };
    let now = now_ms();
    let wanted = (|| -> Result<bool> {
        let Some(r) = rx.room(room)? else {
            return Ok(false);
        };
        let Some(member) = rx.member(room, user)? else {
            return Ok(false);
        };
        if rx.user(user)?.is_none() || rx.blocks(user, p.sender)? {
            return Ok(false);
        }
        if !rx.room_notify(user, room)?.wants(r.kind, p.reason) {
            return Ok(false);
        }
        // Read on some device since: nothing left to tell.
        if member.last_read >= p.last_seq {
            return Ok(false);
        }
        if rx.user_notify(user)?.dnd.is_some_and(|d| d.active_at(now)) {
            return Ok(false);
        }
        Ok(!app.active_anywhere(user))
    })()?;
    if !wanted {
        app.metrics.push("dropped");
        app.store
            .run::<()>(settle(p.count, vec![], None, false, true))
            .await?;
        return Ok(());
    }
    let mut subs = rx.push_subscriptions(user)?;
    if let Some(only) = &p.only {
        subs.retain(|s| only.contains(&s.id));
    }
    if subs.is_empty() {
        app.store
            .run::<()>(settle(p.count, vec![], None, false, true))
            .await?;
        return Ok(());
    }
    let rate = rx.push_rate(user)?;
    if rate.count >= app.config.push.max_per_minute && now - rate.window_start < RATE_WINDOW_MS {
        let ids = subs.iter().map(|s| s.id).collect();
        let at = rate.window_start + RATE_WINDOW_MS;
        app.store
            .run::<()>(settle(p.count, vec![], Some((at, ids)), false, false))
            .await?;
        return Ok(());
    }
    let payload = payload(app, &rx, &p)?;
    drop(rx);
    let vapid = app.vapid()?;
    let outbound = n
        .outbound
        .clone()
        .ok_or_else(|| unavailable("outbound HTTP is unavailable"))?;
    let urgent = matches!(
        p.reason,
        PushReason::Dm | PushReason::Mention | PushReason::Thread
    );
    let results = futures_util::future::join_all(
        subs.iter()
            .map(|s| send_one(app, &outbound, &vapid, s, payload.as_deref(), urgent, room)),
    )
    .await;
    let mut gone = Vec::new();
    let mut again = Vec::new();
    let mut delay: i64 = 0;
    let mut sent = false;
    for (s, r) in subs.iter().zip(results) {
        match r {
            Sent::Ok => {
                app.metrics.push("sent");
                sent = true;
            }
            Sent::Gone => {
                app.metrics.push("gone");
                gone.push(s.id);
            }
            Sent::Later(ms) => {
                app.metrics.push("retry");
                again.push(s.id);
                delay = delay.max(ms);
            }
            Sent::Failed => app.metrics.push("failed"),
        }
    }
    let cfg = &app.config.push;
    let retry = if !again.is_empty() && p.attempt + 1 < cfg.max_attempts {
        let backoff = (cfg.retry_base_ms as i64).saturating_mul(1 << p.attempt.min(16));
        Some((now_ms() + delay.max(backoff), again))
    } else {
        if !again.is_empty() {
            tracing::warn!(%user, "push: given up after {} attempts", p.attempt + 1);
        }
        None
    };
    app.store
        .run::<()>(settle(p.count, gone, retry, sent, false))
        .await?;
    Ok(())
}

/// The JSON a push carries, or none at all with `push.content = "none"`.
fn payload(app: &App, rx: &crate::store::Rx, p: &PushPending) -> Result<Option<Vec<u8>>> {
    if app.config.push.content == "none" {
        return Ok(None);
    }
    let room = rx.room(p.room)?.ok_or(AppError::NotFound("room"))?;
    let sender = rx.user(p.sender)?.map(|u| u.public());
    let msg = rx.message(p.last_message)?;
    let preview = match &msg {
        Some(m) if !m.deleted => {
            let max = app.config.push.preview_chars;
            let mut t: String = m.text.chars().take(max).collect();
            if m.text.chars().count() > max {
                t.push('…');
            }
            t
        }
        _ => String::new(),
    };
    let name = match (&room.kind, &sender) {
        (RoomKind::Dm, Some(s)) => s.username.clone(),
        _ => room.name.clone(),
    };
    let body = json!({
        "room": { "id": room.id, "name": name, "kind": room.kind },
        "sender": sender,
        "count": p.count,
        "reason": p.reason,
        "seq": p.last_seq,
        "message_id": p.last_message,
        "preview": preview,
    });
    Ok(Some(serde_json::to_vec(&body).unwrap_or_default()))
}

async fn send_one(
    app: &App,
    outbound: &Outbound,
    vapid: &Vapid,
    sub: &PushSubscription,
    payload: Option<&[u8]>,
    urgent: bool,
    room: Id,
) -> Sent {
    let target = match crate::outbound::Target::parse(&sub.endpoint) {
        Ok(t) => t,
        Err(_) => return Sent::Gone,
    };
    let exp = (now_ms() / 1000) as u64 + 12 * 3600;
    let Ok(authorization) = vapid.authorization(&target.origin(), &app.config.push.contact, exp)
    else {
        return Sent::Failed;
    };
    let mut headers = vec![
        ("authorization", authorization),
        ("ttl", app.config.push.ttl_secs.to_string()),
        (
            "urgency",
            if urgent { "high" } else { "normal" }.to_string(),
        ),
        // A newer push about the same room replaces one not yet delivered.
        ("topic", room.to_string()),
    ];
    let body = match payload {
        Some(plain) => {
            let padded = plain.len().div_ceil(PAD_TO).max(1) * PAD_TO;
            let padded = padded.min(webpush::MAX_PLAINTEXT);
            let (Some(ua), Some(auth)) = (webpush::unb64(&sub.p256dh), webpush::unb64(&sub.auth))
            else {
                return Sent::Gone;
            };
            match webpush::encrypt(&ua, &auth, plain, padded) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "push: cannot encrypt for a subscription");
                    return Sent::Gone;
                }
            }
        }
        None => Vec::new(),
    };
    if payload.is_some() {
        headers.push(("content-encoding", "aes128gcm".into()));
        headers.push(("content-type", "application/octet-stream".into()));
    }
    let resp = outbound
        .send(
            hyper::Method::POST,
            &sub.endpoint,
            true,
            headers,
            Bytes::from(body),
        )
        .await;
    let base = app.config.push.retry_base_ms as i64;
    match resp {
        Ok(r) if (200..300).contains(&r.status) => Sent::Ok,
        Ok(r) if r.status == 404 || r.status == 410 => Sent::Gone,
        Ok(r) if r.status == 429 || r.status >= 500 => {
            let after = r
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .map(|s| s.clamp(0, 3600) * 1000)
                .unwrap_or(base);
            Sent::Later(after)
        }
        Ok(r) => {
            tracing::warn!(status = r.status, "push: the push service refused a push");
            Sent::Failed
        }
        // A URL that no longer passes the address rules (its name now
        // resolves somewhere private) is not a push service to keep.
        Err(e @ (OutboundError::Refused(_) | OutboundError::BadUrl(_))) => {
            tracing::warn!(error = %e, "push: endpoint refused; subscription removed");
            Sent::Gone
        }
        Err(e) => {
            tracing::debug!(error = %e, "push: will retry");
            Sent::Later(base)
        }
    }
}
