//! Push notifications in the store: the VAPID key, subscriptions,
//! notification preferences, and the queue of pushes waiting to go out.
//!
//! The queue is written by the apply of each message (`on_message`), from
//! the store's state alone, so every node of a cluster holds the same
//! queue. One entry per (recipient, room) collects the messages that
//! arrive before it is sent (a count), which is what coalesces a burst.
//! Sending is not done here: a node claims an entry through the log
//! (`Claim`, granted to one node at a time), sends, and records how it
//! went (`Settle`).

use super::*;

/// Secret bytes in a command, base64url: shown as `[redacted]` by Debug so
/// no log of a command prints them.
#[derive(Clone, Serialize, Deserialize)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A browser's push subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushSubscription {
    pub id: Id,
    pub user: Id,
    pub endpoint: String,
    /// The browser's P-256 public key and auth secret, base64url.
    pub p256dh: String,
    pub auth: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NotifyLevel {
    /// Every message.
    All,
    /// Mentions of the user (and every message of a DM).
    Mentions,
    Nothing,
}

/// A user's choices for one room. No level: the default, `all` in a DM
/// and `mentions` elsewhere.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomNotify {
    #[serde(default)]
    pub level: Option<NotifyLevel>,
    /// No pushes from this room, whatever the level; clients also show
    /// its unread state quietly.
    #[serde(default)]
    pub muted: bool,
}

impl RoomNotify {
    pub fn level_in(&self, kind: RoomKind) -> NotifyLevel {
        self.level.unwrap_or(match kind {
            RoomKind::Dm => NotifyLevel::All,
            _ => NotifyLevel::Mentions,
        })
    }

    /// Whether a message of `why` reaches the user's devices.
    pub fn wants(&self, kind: RoomKind, why: PushReason) -> bool {
        if self.muted {
            return false;
        }
        match self.level_in(kind) {
            NotifyLevel::All => true,
            NotifyLevel::Mentions => matches!(
                why,
                PushReason::Dm | PushReason::Mention | PushReason::Thread
            ),
            NotifyLevel::Nothing => false,
        }
    }
}

/// Do not disturb, daily: from `start_min` to `end_min` (minutes after
/// midnight, in the user's time, `utc_offset_min` from UTC). A window
/// whose end is before its start runs over midnight.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dnd {
    pub start_min: u16,
    pub end_min: u16,
    #[serde(default)]
    pub utc_offset_min: i16,
}

impl Dnd {
    pub fn active_at(&self, now_ms: i64) -> bool {
        let local = now_ms.div_euclid(60_000) + self.utc_offset_min as i64;
        let m = local.rem_euclid(1440) as u16;
        let (s, e) = (self.start_min, self.end_min);
        if s == e {
            false
        } else if s < e {
            s <= m && m < e
        } else {
            m >= s || m < e
        }
    }
}

/// A user's own notification settings, across rooms.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserNotify {
    #[serde(default)]
    pub dnd: Option<Dnd>,
}

/// Why a message is pushed to someone (the strongest reason wins when
/// several messages coalesce).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum PushReason {
    All,
    /// A reply in a thread the user follows.
    Thread,
    Mention,
    Dm,
}

/// A node's hold on a queue entry while it sends it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claim {
    pub node: String,
    pub until: i64,
}

/// A push waiting for its time: the messages of one room for one user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushPending {
    pub user: Id,
    pub room: Id,
    /// When the first message arrived, or when a retry is due (`attempt`
    /// above 0): the delivering node adds its coalescing window to the
    /// first.
    pub due: i64,
    pub count: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_message: Id,
    pub sender: Id,
    pub reason: PushReason,
    #[serde(default)]
    pub attempt: u32,
    /// After a partial failure: only these subscriptions still wait.
    #[serde(default)]
    pub only: Option<Vec<Id>>,
    #[serde(default)]
    pub claim: Option<Claim>,
}

/// How many pushes a user got in the current minute (the rate cap).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PushRate {
    pub window_start: i64,
    pub count: u32,
}

pub const RATE_WINDOW_MS: i64 = 60_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PushCommand {
    /// The server's VAPID key (PKCS#8): kept if one is already stored, so
    /// the first node to start decides it for the whole cluster.
    SetVapidKey {
        pkcs8: Secret,
    },
    /// Adds a subscription, or gives an existing endpoint to this user
    /// with the new keys; refused past `max` per user.
    Subscribe {
        sub: PushSubscription,
        max: usize,
    },
    Unsubscribe {
        user: Id,
        id: Option<Id>,
        endpoint: Option<String>,
    },
    SetUserNotify {
        user: Id,
        prefs: UserNotify,
    },
    SetRoomNotify {
        user: Id,
        room: Id,
        prefs: RoomNotify,
    },
    /// Granted (Flag true) if the entry exists and nobody holds it.
    Claim {
        user: Id,
        room: Id,
        node: String,
        lease_ms: i64,
    },
    /// How sending went. `seen`: the messages the push counted; more that
    /// came meanwhile stay queued. `gone`: subscriptions the push service
    /// no longer knows. `retry`: when, and to which subscriptions, to try
    /// again. `sent`: whether it counts against the rate cap.
    Settle {
        user: Id,
        room: Id,
        node: String,
        seen: u32,
        gone: Vec<Id>,
        retry: Option<(i64, Vec<Id>)>,
        sent: bool,
        /// Given up or found unwanted: the entry goes whatever came meanwhile.
        #[serde(default)]
        drop: bool,
    },
}

pub(super) fn apply(tx: &mut Tx, cmd: PushCommand) -> Result<Outcome> {
    use Outcome::*;
    Ok(match cmd {
        PushCommand::SetVapidKey { pkcs8 } => {
            let mut meta = tx.txn.open_table(META)?;
            if meta.get(VAPID_KEY)?.is_some() {
                Flag(false)
            } else {
                meta.insert(VAPID_KEY, pkcs8.0.as_bytes())?;
                Flag(true)
            }
        }
        PushCommand::Subscribe { sub, max } => {
            tx.user(sub.user)?.ok_or(StoreError::NotFound("user"))?;
            let by_endpoint = tx.txn.open_table(PUSH_ENDPOINT_TO_SUB)?;
            let existing = by_endpoint.get(sub.endpoint.as_str())?.map(|v| v.value());
            drop(by_endpoint);
            // The same browser subscribing again (or another account in
            // it): its old record goes, so an endpoint has one owner.
            if let Some(old) = existing {
                remove_sub(tx, Id(old))?;
            }
            if subscription_ids(&tx.txn.open_table(USER_SUB_TO_CREATED)?, sub.user)?.len() >= max {
                return Err(StoreError::Conflict(format!(
                    "at most {max} push subscriptions per user; remove one first"
                )));
            }
            tx.txn
                .open_table(PUSH_SUB_TO_RECORD)?
                .insert(sub.id.0, encode(&sub).as_slice())?;
            tx.txn
                .open_table(PUSH_ENDPOINT_TO_SUB)?
                .insert(sub.endpoint.as_str(), sub.id.0)?;
            tx.txn
                .open_table(USER_SUB_TO_CREATED)?
                .insert((sub.user.0, sub.id.0), sub.created_at)?;
            Done
        }
        PushCommand::Unsubscribe { user, id, endpoint } => {
            let target = match (id, endpoint) {
                (Some(id), _) => Some(id),
                (None, Some(e)) => tx
                    .txn
                    .open_table(PUSH_ENDPOINT_TO_SUB)?
                    .get(e.as_str())?
                    .map(|v| Id(v.value())),
                (None, None) => None,
            };
            let Some(target) = target else {
                return Err(StoreError::NotFound("push subscription"));
            };
            let found = sub_record(&tx.txn.open_table(PUSH_SUB_TO_RECORD)?, target)?;
            match found {
                Some(s) if s.user == user => {
                    remove_sub(tx, target)?;
                    Done
                }
                _ => return Err(StoreError::NotFound("push subscription")),
            }
        }
        PushCommand::SetUserNotify { user, prefs } => {
            tx.user(user)?.ok_or(StoreError::NotFound("user"))?;
            tx.txn
                .open_table(USER_TO_NOTIFY)?
                .insert(user.0, encode(&prefs).as_slice())?;
            Done
        }
        PushCommand::SetRoomNotify { user, room, prefs } => {
            let r = tx.room(room)?.ok_or(StoreError::NotFound("room"))?;
            if tx.member(room, user)?.is_none() {
                return Err(StoreError::Forbidden("not a member of this room".into()));
            }
            tx.txn
                .open_table(USER_ROOM_TO_NOTIFY)?
                .insert((user.0, room.0), encode(&prefs).as_slice())?;
            // The index `on_message` scans for "every message" in a room.
            let mut all = tx.txn.open_table(ROOM_USER_TO_NOTIFY_ALL)?;
            if r.kind != RoomKind::Dm && prefs.level == Some(NotifyLevel::All) {
                all.insert((room.0, user.0), ())?;
            } else {
                all.remove((room.0, user.0))?;
            }
            Done
        }
        PushCommand::Claim {
            user,
            room,
            node,
            lease_ms,
        } => {
            let Some(mut p) = pending(tx, user, room)? else {
                return Ok(Flag(false));
            };
            let now = tx.now();
            // A node's own earlier claim (before a restart) is no hold on it.
            if p.claim
                .as_ref()
                .is_some_and(|c| c.until > now && c.node != node)
            {
                return Ok(Flag(false));
            }
            p.claim = Some(Claim {
                node,
                until: now.saturating_add(lease_ms),
            });
            put_pending(tx, &p, None)?;
            Flag(true)
        }
        PushCommand::Settle {
            user,
            room,
            node,
            seen,
            gone,
            retry,
            sent,
            drop,
        } => {
            for id in gone {
                remove_sub(tx, id)?;
            }
            if sent {
                let now = tx.now();
                let mut rates = tx.txn.open_table(USER_TO_PUSH_RATE)?;
                let mut r: PushRate = match rates.get(user.0)? {
                    Some(v) => decode("user_to_push_rate", v.value())?,
                    None => PushRate::default(),
                };
                if now - r.window_start >= RATE_WINDOW_MS {
                    r = PushRate {
                        window_start: now,
                        count: 0,
                    };
                }
                r.count += 1;
                rates.insert(user.0, encode(&r).as_slice())?;
            }
            let Some(mut p) = pending(tx, user, room)? else {
                return Ok(Done);
            };
            if p.claim.as_ref().map(|c| c.node.as_str()) != Some(node.as_str()) {
                // Another node holds it now (this one's lease ran out).
                return Ok(Done);
            }
            let old_due = p.due;
            p.claim = None;
            if drop {
                remove_pending(tx, &p)?;
            } else if let Some((due, subs)) = retry {
                p.due = due;
                p.attempt += 1;
                p.only = Some(subs);
                put_pending(tx, &p, Some(old_due))?;
            } else if p.count > seen {
                // Messages that came while this push was out: a push of
                // their own, after a window of their own.
                p.count -= seen;
                p.due = tx.now();
                p.attempt = 0;
                p.only = None;
                put_pending(tx, &p, Some(old_due))?;
            } else {
                remove_pending(tx, &p)?;
            }
            Done
        }
    })
}

const VAPID_KEY: &str = "vapid_pkcs8";

fn sub_record(
    t: &impl ReadableTable<u128, &'static [u8]>,
    id: Id,
) -> Result<Option<PushSubscription>> {
    t.get(id.0)?
        .map(|v| decode("push_sub_to_record", v.value()))
        .transpose()
}

fn subscription_ids(t: &impl ReadableTable<(u128, u128), i64>, user: Id) -> Result<Vec<Id>> {
    let mut out = Vec::new();
    for row in t.range((user.0, 0)..=(user.0, u128::MAX))? {
        out.push(Id(row?.0.value().1));
    }
    Ok(out)
}

/// Whether `user` has any subscription: the first row answers, where a
/// message to a large room asks it of every member.
fn has_subscription(t: &impl ReadableTable<(u128, u128), i64>, user: Id) -> Result<bool> {
    Ok(t.range((user.0, 0)..=(user.0, u128::MAX))?.next().is_some())
}

fn remove_sub(tx: &mut Tx, id: Id) -> Result<()> {
    let Some(s) = tx
        .txn
        .open_table(PUSH_SUB_TO_RECORD)?
        .remove(id.0)?
        .map(|v| decode::<PushSubscription>("push_sub_to_record", v.value()))
    else {
        return Ok(());
    };
    let s = s?;
    tx.txn
        .open_table(PUSH_ENDPOINT_TO_SUB)?
        .remove(s.endpoint.as_str())?;
    tx.txn
        .open_table(USER_SUB_TO_CREATED)?
        .remove((s.user.0, s.id.0))?;
    Ok(())
}

fn pending(tx: &Tx, user: Id, room: Id) -> Result<Option<PushPending>> {
    tx.txn
        .open_table(USER_ROOM_TO_PUSH)?
        .get((user.0, room.0))?
        .map(|v| decode("user_room_to_push", v.value()))
        .transpose()
}

/// Writes the entry and its place in the due order (moving it from
/// `old_due` if that changed).
fn put_pending(tx: &mut Tx, p: &PushPending, old_due: Option<i64>) -> Result<()> {
    tx.txn
        .open_table(USER_ROOM_TO_PUSH)?
        .insert((p.user.0, p.room.0), encode(p).as_slice())?;
    let mut due = tx.txn.open_table(PUSH_DUE)?;
    if let Some(old) = old_due {
        due.remove((old, p.user.0, p.room.0))?;
    }
    due.insert((p.due, p.user.0, p.room.0), ())?;
    Ok(())
}

fn remove_pending(tx: &mut Tx, p: &PushPending) -> Result<()> {
    tx.txn
        .open_table(USER_ROOM_TO_PUSH)?
        .remove((p.user.0, p.room.0))?;
    tx.txn
        .open_table(PUSH_DUE)?
        .remove((p.due, p.user.0, p.room.0))?;
    Ok(())
}

/// Queues a push of `msg` for each member who should have one: the other
/// side of a DM, the mentioned, and those who want every message of the
/// room; never the sender, someone who blocks the sender, someone who is
/// not a member, or someone with no subscription.
pub(super) fn on_message(tx: &mut Tx, msg: &Message, room: &Room) -> Result<()> {
    let mut who: Vec<(Id, PushReason)> = Vec::new();
    if room.kind == RoomKind::Dm {
        for m in tx.member_ids(room.id)? {
            who.push((m, PushReason::Dm));
        }
    } else {
        for m in &msg.mentions {
            who.push((*m, PushReason::Mention));
        }
        // A reply kept to its thread reaches its followers
        // (`on_thread_reply`), not everyone who wants the room's messages.
        let all = tx.txn.open_table(ROOM_USER_TO_NOTIFY_ALL)?;
        for row in all.range((room.id.0, 0)..=(room.id.0, u128::MAX))? {
            let u = Id(row?.0.value().1);
            if !msg.mentions.contains(&u) && !msg.thread_only() {
                who.push((u, PushReason::All));
            }
        }
    }
    queue(tx, msg, room, who)
}

/// Queues pushes of a reply for the thread's `followers` that
/// `on_message` did not already queue it for (the mentioned, the other
/// side of a DM, those who want every message of the room when the reply
/// is also in the room).
pub(super) fn on_thread_reply(
    tx: &mut Tx,
    msg: &Message,
    room: &Room,
    followers: &[Id],
) -> Result<()> {
    if room.kind == RoomKind::Dm {
        return Ok(());
    }
    let mut who = Vec::new();
    {
        let all = tx.txn.open_table(ROOM_USER_TO_NOTIFY_ALL)?;
        for u in followers {
            if msg.mentions.contains(u)
                || (!msg.thread_only() && all.get((room.id.0, u.0))?.is_some())
            {
                continue;
            }
            who.push((*u, PushReason::Thread));
        }
    }
    queue(tx, msg, room, who)
}

/// Queues pushes for users an edit newly mentions, and only them.
pub(super) fn on_mentions_added(
    tx: &mut Tx,
    msg: &Message,
    room: &Room,
    added: &[Id],
) -> Result<()> {
    if room.kind == RoomKind::Dm {
        return Ok(());
    }
    let who = added.iter().map(|u| (*u, PushReason::Mention)).collect();
    queue(tx, msg, room, who)
}

fn queue(tx: &mut Tx, msg: &Message, room: &Room, who: Vec<(Id, PushReason)>) -> Result<()> {
    if who.is_empty() {
        return Ok(());
    }
    let mut queued = false;
    for (user, why) in who {
        if user == msg.sender.id {
            continue;
        }
        if !has_subscription(&tx.txn.open_table(USER_SUB_TO_CREATED)?, user)? {
            continue;
        }
        if tx.member(room.id, user)?.is_none() || tx.blocks(user, msg.sender.id)? {
            continue;
        }
        let prefs = room_notify_in(&tx.txn.open_table(USER_ROOM_TO_NOTIFY)?, user, room.id)?;
        if !prefs.wants(room.kind, why) {
            continue;
        }
        let p = match pending(tx, user, room.id)? {
            Some(mut p) => {
                p.count += 1;
                p.last_seq = msg.seq;
                p.last_message = msg.id;
                p.sender = msg.sender.id;
                p.reason = p.reason.max(why);
                tx.txn
                    .open_table(USER_ROOM_TO_PUSH)?
                    .insert((user.0, room.id.0), encode(&p).as_slice())?;
                continue;
            }
            None => PushPending {
                user,
                room: room.id,
                due: tx.now(),
                count: 1,
                first_seq: msg.seq,
                last_seq: msg.seq,
                last_message: msg.id,
                sender: msg.sender.id,
                reason: why,
                attempt: 0,
                only: None,
                claim: None,
            },
        };
        put_pending(tx, &p, None)?;
        queued = true;
    }
    if queued {
        tx.emit(Change::PushQueued);
    }
    Ok(())
}

/// Everything push keeps about a deleted account: its subscriptions
/// (endpoints are personal data), settings, queued pushes and rate.
pub(super) fn forget_user(tx: &mut Tx, user: Id) -> Result<()> {
    let subs = subscription_ids(&tx.txn.open_table(USER_SUB_TO_CREATED)?, user)?;
    for id in subs {
        remove_sub(tx, id)?;
    }
    tx.txn.open_table(USER_TO_NOTIFY)?.remove(user.0)?;
    tx.txn.open_table(USER_TO_PUSH_RATE)?.remove(user.0)?;
    let mut rooms = Vec::new();
    {
        let prefs = tx.txn.open_table(USER_ROOM_TO_NOTIFY)?;
        for row in prefs.range((user.0, 0)..=(user.0, u128::MAX))? {
            rooms.push(row?.0.value().1);
        }
    }
    for room in rooms {
        tx.txn
            .open_table(USER_ROOM_TO_NOTIFY)?
            .remove((user.0, room))?;
        tx.txn
            .open_table(ROOM_USER_TO_NOTIFY_ALL)?
            .remove((room, user.0))?;
    }
    let mut queued = Vec::new();
    {
        let q = tx.txn.open_table(USER_ROOM_TO_PUSH)?;
        for row in q.range((user.0, 0)..=(user.0, u128::MAX))? {
            let (_, v) = row?;
            queued.push(decode::<PushPending>("user_room_to_push", v.value())?);
        }
    }
    for p in queued {
        remove_pending(tx, &p)?;
    }
    Ok(())
}

fn room_notify_in(
    t: &impl ReadableTable<(u128, u128), &'static [u8]>,
    user: Id,
    room: Id,
) -> Result<RoomNotify> {
    Ok(t.get((user.0, room.0))?
        .map(|v| decode("user_room_to_notify", v.value()))
        .transpose()?
        .unwrap_or_default())
}

impl Rx {
    /// The stored VAPID key (PKCS#8, base64url), if one was made.
    pub fn vapid_key(&self) -> Result<Option<String>> {
        Ok(self
            .txn
            .open_table(META)?
            .get(VAPID_KEY)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }

    pub fn push_subscriptions(&self, user: Id) -> Result<Vec<PushSubscription>> {
        let recs = self.txn.open_table(PUSH_SUB_TO_RECORD)?;
        let mut out = Vec::new();
        for id in subscription_ids(&self.txn.open_table(USER_SUB_TO_CREATED)?, user)? {
            if let Some(s) = sub_record(&recs, id)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    pub fn user_notify(&self, user: Id) -> Result<UserNotify> {
        Ok(self
            .txn
            .open_table(USER_TO_NOTIFY)?
            .get(user.0)?
            .map(|v| decode("user_to_notify", v.value()))
            .transpose()?
            .unwrap_or_default())
    }

    pub fn room_notify(&self, user: Id, room: Id) -> Result<RoomNotify> {
        room_notify_in(&self.txn.open_table(USER_ROOM_TO_NOTIFY)?, user, room)
    }

    /// Every room where the user chose something.
    pub fn room_notifies(&self, user: Id) -> Result<Vec<(Id, RoomNotify)>> {
        let t = self.txn.open_table(USER_ROOM_TO_NOTIFY)?;
        let mut out = Vec::new();
        for row in t.range((user.0, 0)..=(user.0, u128::MAX))? {
            let (k, v) = row?;
            out.push((Id(k.value().1), decode("user_room_to_notify", v.value())?));
        }
        Ok(out)
    }

    /// Queue entries in due order, at most `limit`.
    pub fn push_queue(&self, limit: usize) -> Result<Vec<PushPending>> {
        let due = self.txn.open_table(PUSH_DUE)?;
        let recs = self.txn.open_table(USER_ROOM_TO_PUSH)?;
        let mut out = Vec::new();
        for row in due.iter()?.take(limit) {
            let (_, user, room) = row?.0.value();
            if let Some(v) = recs.get((user, room))? {
                out.push(decode("user_room_to_push", v.value())?);
            }
        }
        Ok(out)
    }

    pub fn push_pending(&self, user: Id, room: Id) -> Result<Option<PushPending>> {
        self.txn
            .open_table(USER_ROOM_TO_PUSH)?
            .get((user.0, room.0))?
            .map(|v| decode("user_room_to_push", v.value()))
            .transpose()
    }

    pub fn push_rate(&self, user: Id) -> Result<PushRate> {
        Ok(self
            .txn
            .open_table(USER_TO_PUSH_RATE)?
            .get(user.0)?
            .map(|v| decode("user_to_push_rate", v.value()))
            .transpose()?
            .unwrap_or_default())
    }

    pub fn blocks(&self, blocker: Id, blocked: Id) -> Result<bool> {
        Ok(self
            .txn
            .open_table(USER_BLOCKED_TO_SINCE)?
            .get((blocker.0, blocked.0))?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnd_windows_run_over_midnight_and_honour_the_offset() {
        let at = |h: i64, m: i64| (h * 60 + m) * 60_000;
        let night = Dnd {
            start_min: 22 * 60,
            end_min: 7 * 60,
            utc_offset_min: 0,
        };
        assert!(night.active_at(at(23, 0)));
        assert!(night.active_at(at(3, 0)));
        assert!(!night.active_at(at(7, 0)));
        assert!(!night.active_at(at(12, 0)));
        // 22:00 in UTC+2 is 20:00 UTC.
        let east = Dnd {
            utc_offset_min: 120,
            ..night
        };
        assert!(east.active_at(at(20, 30)));
        assert!(!east.active_at(at(19, 30)));
        let lunch = Dnd {
            start_min: 12 * 60,
            end_min: 13 * 60,
            utc_offset_min: -60,
        };
        assert!(lunch.active_at(at(13, 30)));
        assert!(!lunch.active_at(at(12, 30)));
    }

    #[test]
    fn levels_default_by_room_kind_and_mute_wins() {
        let d = RoomNotify::default();
        assert!(d.wants(RoomKind::Dm, PushReason::Dm));
        assert!(d.wants(RoomKind::Room, PushReason::Mention));
        assert!(!d.wants(RoomKind::Room, PushReason::All));
        let muted = RoomNotify {
            level: Some(NotifyLevel::All),
            muted: true,
        };
        assert!(!muted.wants(RoomKind::Dm, PushReason::Dm));
        let nothing = RoomNotify {
            level: Some(NotifyLevel::Nothing),
            muted: false,
        };
        assert!(!nothing.wants(RoomKind::Room, PushReason::Mention));
    }
}
