//! Outgoing webhooks in the store: the endpoints, the outbox of events and
//! the record of delivery attempts.
//!
//! Events are written by the apply of the change they describe
//! (`on_changes`, called once per applied command with the changes it
//! emitted), from the store's state alone, so every node of a cluster
//! holds the same outbox with the same event seqs. Each matching endpoint
//! gets a queue row keyed (webhook, room, seq): the smallest seq of a
//! (webhook, room) is its head, and only a head is ever sent, which is
//! what keeps a room's events in order for an endpoint. Sending is not
//! done here: a node claims a head through the log (`Claim`, one node at a
//! time, for a lease), sends, and records how it went (`Settle`).

use serde_json::{Value, json};

use super::push::{Claim, Secret};
use super::*;

/// An endpoint events are POSTed to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    pub id: Id,
    pub url: String,
    /// Dotted event names (`message.created`); `*` is every event.
    pub events: Vec<String>,
    /// Only this room's events (and none without a room).
    #[serde(default)]
    pub room: Option<Id>,
    /// `whsec_` + base64 of the key.
    pub secret: Secret,
    /// The secret before the last rotation, still signed with until
    /// `old_until` (ms).
    #[serde(default)]
    pub old_secret: Option<Secret>,
    #[serde(default)]
    pub old_until: i64,
    pub enabled: bool,
    pub created_at: i64,
    /// Why it was disabled, if it was.
    #[serde(default)]
    pub disabled_reason: Option<String>,
}

impl Webhook {
    /// Whether an event of `kind` in `room` goes to this endpoint.
    pub fn wants(&self, kind: &str, room: Option<Id>) -> bool {
        if let Some(only) = self.room
            && room != Some(only)
        {
            return false;
        }
        self.events.iter().any(|e| e == "*" || e == kind)
    }

    /// The secrets to sign with at `now`: the current one, and the one
    /// before a rotation for as long as it stays valid.
    pub fn signing_secrets(&self, now: i64) -> Vec<&str> {
        let mut out = vec![self.secret.0.as_str()];
        if let Some(old) = &self.old_secret
            && now < self.old_until
        {
            out.push(old.0.as_str());
        }
        out
    }
}

/// One event in the outbox. `seq` is its place in the store's single
/// order of events, the same on every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookEvent {
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: String,
    /// The time of the command that caused it (ms).
    pub at: i64,
    #[serde(default)]
    pub room: Option<Id>,
    pub data: Value,
}

/// A queued delivery's state; only a head's is ever more than fresh.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pending {
    /// Failed attempts so far.
    pub attempt: u32,
    /// Not before this time (ms).
    pub due: i64,
    /// When the first failed attempt of this event was (ms).
    #[serde(default)]
    pub first_failure: Option<i64>,
    #[serde(default)]
    pub claim: Option<Claim>,
}

impl Pending {
    /// A newly queued event, due at once (`now`: the command's time, from
    /// which a node that is not the endpoint's preferred one counts its
    /// wait).
    pub fn fresh(now: i64) -> Pending {
        Pending {
            due: now,
            ..Pending::default()
        }
    }
}

/// A queue row as the delivery task reads it.
#[derive(Debug, Clone)]
pub struct Head {
    pub webhook: Id,
    pub room: Id,
    pub seq: u64,
    pub pending: Pending,
}

/// One delivery attempt, as `confab webhook deliveries` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    #[serde(default)]
    pub n: u64,
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: i64,
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
    /// The start of the answer's body, or why there was no answer.
    pub answer: String,
    pub ms: u64,
    pub ok: bool,
}

/// How a delivery ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Settled {
    /// A 2xx: the event leaves the queue.
    Delivered,
    /// Try again at `due`.
    Retry { due: i64 },
    /// The retry window is over: the endpoint is disabled (its queue kept
    /// for when it is enabled again), with this audit entry.
    GiveUp { entry: AuditEntry },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WebhookCommand {
    Add(Webhook),
    Remove {
        id: Id,
    },
    /// Enabling again restarts the retries of what waits.
    SetEnabled {
        id: Id,
        enabled: bool,
        reason: Option<String>,
    },
    /// A new secret; the current one stays valid until `old_until`.
    Rotate {
        id: Id,
        secret: Secret,
        old_until: i64,
    },
    /// Granted (Flag true) if the row is its room's head for the endpoint,
    /// the endpoint is enabled and no other node holds the row.
    Claim {
        webhook: Id,
        room: Id,
        seq: u64,
        node: String,
        lease_ms: i64,
    },
    Settle {
        webhook: Id,
        room: Id,
        seq: u64,
        node: String,
        attempt: Attempt,
        settled: Settled,
    },
    /// Queues again every event in the outbox from `since_seq` or
    /// `since_at` (ms) on that the endpoint would have had; gives the count.
    Replay {
        id: Id,
        since_seq: Option<u64>,
        since_at: Option<i64>,
    },
}

/// Events the outbox keeps for replays (the oldest go first).
pub const EVENTS_KEEP: u64 = 100_000;
/// Attempts kept per endpoint.
pub const ATTEMPTS_KEEP: u64 = 200;
/// Bytes of an answer's body kept with an attempt.
pub const ANSWER_KEEP: usize = 256;
/// Where counting an endpoint's waiting events stops.
pub const BACKLOG_COUNT_MAX: u64 = 100_000;
const NEXT_EVENT: &str = "webhook_next_event";

/// The events a change stands for, as (dotted name, room, data). This is
/// the one mapping from the store's changes to webhook events: a new
/// feature's change gets its event names here.
pub fn events_of(change: &Change) -> Vec<(&'static str, Option<Id>, Value)> {
    let one = |kind, room: Id, data| vec![(kind, Some(room), data)];
    match change {
        Change::MessageCreated(m) => one("message.created", m.room, json!({ "message": m })),
        Change::MessageUpdated(m) => one("message.updated", m.room, json!({ "message": m })),
        Change::MessageDeleted { room, id, seq } => one(
            "message.deleted",
            *room,
            json!({ "room": room, "message_id": id, "seq": seq }),
        ),
        Change::MemberAdded { room, user } => one(
            "member.joined",
            room.id,
            json!({ "room": room, "user": user }),
        ),
        Change::MemberRemoved { room, user } => one(
            "member.left",
            room.id,
            json!({ "room": room, "user": user }),
        ),
        Change::RoomCreated { room, .. } => one("room.created", room.id, json!({ "room": room })),
        Change::RoomUpdated(room) => one("room.updated", room.id, json!({ "room": room })),
        Change::RoomDeleted { room, .. } => one("room.deleted", room.id, json!({ "room": room })),
        Change::UserRegistered(user) => vec![("user.registered", None, json!({ "user": user }))],
        Change::ReactionAdded {
            room,
            message,
            emoji,
            user,
            count,
            ..
        } => one(
            "reaction.added",
            *room,
            json!({ "room": room, "message_id": message, "emoji": emoji, "user": user, "count": count }),
        ),
        Change::ReactionRemoved {
            room,
            message,
            emoji,
            user,
            count,
            ..
        } => one(
            "reaction.removed",
            *room,
            json!({ "room": room, "message_id": message, "emoji": emoji, "user": user, "count": count }),
        ),
        Change::MessagePinned { message, by } => one(
            "message.pinned",
            message.room,
            json!({ "room": message.room, "message_id": message.id, "by": by, "message": message }),
        ),
        Change::MessageUnpinned { room, message, by } => one(
            "message.unpinned",
            *room,
            json!({ "room": room, "message_id": message, "by": by }),
        ),
        _ => Vec::new(),
    }
}

/// Every event name `events_of` can give, for checking what an endpoint
/// asks for.
pub const EVENT_NAMES: &[&str] = &[
    "message.created",
    "message.updated",
    "message.deleted",
    "member.joined",
    "member.left",
    "room.created",
    "room.updated",
    "room.deleted",
    "user.registered",
    "reaction.added",
    "reaction.removed",
    "message.pinned",
    "message.unpinned",
];

/// Writes the events of the changes emitted since `from` into the outbox,
/// queued for each enabled endpoint that wants them. Direct messages are
/// private between their people and go to no endpoint.
pub(super) fn on_changes(tx: &mut Tx, from: usize) -> Result<()> {
    if from >= tx.changes.len() {
        return Ok(());
    }
    let hooks = enabled_hooks(tx)?;
    if hooks.is_empty() {
        return Ok(());
    }
    let mut events = Vec::new();
    for c in &tx.changes[from..] {
        events.extend(events_of(c));
    }
    let mut queued = false;
    for (kind, room, data) in events {
        if let Some(r) = room {
            // A room deleted in this command is gone already: its
            // deletion's event carries the room itself.
            let dm = match tx.room(r)? {
                Some(room) => room.kind == RoomKind::Dm,
                None => data["room"]["kind"] == json!(RoomKind::Dm),
            };
            if dm {
                continue;
            }
        }
        let wanting: Vec<Id> = hooks
            .iter()
            .filter(|h| h.wants(kind, room))
            .map(|h| h.id)
            .collect();
        if wanting.is_empty() {
            continue;
        }
        let seq = next_event(tx)?;
        let ev = WebhookEvent {
            seq,
            kind: kind.to_string(),
            at: tx.now(),
            room,
            data,
        };
        tx.txn
            .open_table(WEBHOOK_EVENT_SEQ_TO_EVENT)?
            .insert(seq, encode(&ev).as_slice())?;
        let mut q = tx.txn.open_table(WEBHOOK_ROOM_SEQ_TO_PENDING)?;
        let fresh = encode(&Pending::fresh(tx.now()));
        for h in wanting {
            q.insert((h.0, room.map(|r| r.0).unwrap_or(0), seq), fresh.as_slice())?;
        }
        queued = true;
    }
    if queued {
        trim_events(tx)?;
        tx.emit(Change::WebhookQueued);
    }
    Ok(())
}

fn next_event(tx: &mut Tx) -> Result<u64> {
    let mut meta = tx.txn.open_table(META)?;
    let next = match meta.get(NEXT_EVENT)? {
        Some(v) => decode_u64(v.value())?,
        None => 1,
    };
    meta.insert(NEXT_EVENT, (next + 1).to_be_bytes().as_slice())?;
    Ok(next)
}

fn trim_events(tx: &mut Tx) -> Result<()> {
    let mut t = tx.txn.open_table(WEBHOOK_EVENT_SEQ_TO_EVENT)?;
    let Some(last) = t.last()?.map(|(k, _)| k.value()) else {
        return Ok(());
    };
    if last > EVENTS_KEEP {
        let cut = last - EVENTS_KEEP;
        // A few at a time: each write trims what the last one added.
        let old: Vec<u64> = t
            .range(..=cut)?
            .take(16)
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<std::result::Result<_, _>>()?;
        for k in old {
            t.remove(k)?;
        }
    }
    Ok(())
}

fn hooks_in(t: &impl ReadableTable<u128, &'static [u8]>) -> Result<Vec<Webhook>> {
    let mut out = Vec::new();
    for row in t.iter()? {
        let (_, v) = row?;
        out.push(decode("webhook_to_record", v.value())?);
    }
    Ok(out)
}

fn enabled_hooks(tx: &Tx) -> Result<Vec<Webhook>> {
    let t = tx.txn.open_table(WEBHOOK_TO_RECORD)?;
    if t.is_empty()? {
        return Ok(Vec::new());
    }
    Ok(hooks_in(&t)?.into_iter().filter(|h| h.enabled).collect())
}

fn hook(tx: &Tx, id: Id) -> Result<Webhook> {
    tx.txn
        .open_table(WEBHOOK_TO_RECORD)?
        .get(id.0)?
        .map(|v| decode("webhook_to_record", v.value()))
        .transpose()?
        .ok_or(StoreError::NotFound("webhook"))
}

fn put_hook(tx: &mut Tx, h: &Webhook) -> Result<()> {
    tx.txn
        .open_table(WEBHOOK_TO_RECORD)?
        .insert(h.id.0, encode(h).as_slice())?;
    Ok(())
}

/// A queue key: (endpoint, room, seq).
type QueueKey = (u128, u128, u64);

/// The keys of one endpoint's queue rows.
fn queue_of(tx: &Tx, webhook: Id) -> Result<Vec<QueueKey>> {
    let q = tx.txn.open_table(WEBHOOK_ROOM_SEQ_TO_PENDING)?;
    let mut out = Vec::new();
    for row in q.range((webhook.0, 0, 0)..=(webhook.0, u128::MAX, u64::MAX))? {
        out.push(row?.0.value());
    }
    Ok(out)
}

fn is_head(tx: &Tx, webhook: Id, room: Id, seq: u64) -> Result<Option<Pending>> {
    let q = tx.txn.open_table(WEBHOOK_ROOM_SEQ_TO_PENDING)?;
    let mut first = q.range((webhook.0, room.0, 0)..=(webhook.0, room.0, u64::MAX))?;
    match first.next() {
        Some(row) => {
            let (k, v) = row?;
            if k.value().2 != seq {
                return Ok(None);
            }
            Ok(Some(decode("webhook_room_seq_to_pending", v.value())?))
        }
        None => Ok(None),
    }
}

pub(super) fn apply(tx: &mut Tx, cmd: WebhookCommand) -> Result<Outcome> {
    use Outcome::*;
    Ok(match cmd {
        WebhookCommand::Add(h) => {
            if let Some(room) = h.room {
                tx.room(room)?.ok_or(StoreError::NotFound("room"))?;
            }
            put_hook(tx, &h)?;
            Done
        }
        WebhookCommand::Remove { id } => {
            hook(tx, id)?;
            tx.txn.open_table(WEBHOOK_TO_RECORD)?.remove(id.0)?;
            for k in queue_of(tx, id)? {
                tx.txn.open_table(WEBHOOK_ROOM_SEQ_TO_PENDING)?.remove(k)?;
            }
            let mut a = tx.txn.open_table(WEBHOOK_N_TO_ATTEMPT)?;
            let keys: Vec<(u128, u64)> = a
                .range((id.0, 0)..=(id.0, u64::MAX))?
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<std::result::Result<_, _>>()?;
            for k in keys {
                a.remove(k)?;
            }
            Done
        }
        WebhookCommand::SetEnabled {
            id,
            enabled,
            reason,
        } => {
            let mut h = hook(tx, id)?;
            let was = h.enabled;
            h.enabled = enabled;
            h.disabled_reason = if enabled { None } else { reason };
            put_hook(tx, &h)?;
            if enabled && !was {
                // What waited starts over, at once.
                let fresh = encode(&Pending::fresh(tx.now()));
                let keys = queue_of(tx, id)?;
                let mut q = tx.txn.open_table(WEBHOOK_ROOM_SEQ_TO_PENDING)?;
                for k in keys {
                    q.insert(k, fresh.as_slice())?;
                }
                drop(q);
                tx.emit(Change::WebhookQueued);
            }
            Done
        }
        WebhookCommand::Rotate {
            id,
            secret,
            old_until,
        } => {
            let mut h = hook(tx, id)?;
            h.old_secret = Some(std::mem::replace(&mut h.secret, secret));
            h.old_until = old_until;
            put_hook(tx, &h)?;
            Done
        }
        WebhookCommand::Claim {
            webhook,
            room,
            seq,
            node,
            lease_ms,
        } => {
            let Ok(h) = hook(tx, webhook) else {
                return Ok(Flag(false));
            };
            if !h.enabled {
                return Ok(Flag(false));
            }
            let Some(mut p) = is_head(tx, webhook, room, seq)? else {
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
            tx.txn
                .open_table(WEBHOOK_ROOM_SEQ_TO_PENDING)?
                .insert((webhook.0, room.0, seq), encode(&p).as_slice())?;
            Flag(true)
        }
        WebhookCommand::Settle {
            webhook,
            room,
            seq,
            node,
            attempt,
            settled,
        } => {
            let Ok(mut h) = hook(tx, webhook) else {
                return Ok(Done);
            };
            let Some(mut p) = is_head(tx, webhook, room, seq)? else {
                return Ok(Done);
            };
            if p.claim.as_ref().map(|c| c.node.as_str()) != Some(node.as_str()) {
                // Another node holds it now (this one's lease ran out).
                return Ok(Done);
            }
            record_attempt(tx, webhook, attempt)?;
            let key = (webhook.0, room.0, seq);
            match settled {
                Settled::Delivered => {
                    tx.txn
                        .open_table(WEBHOOK_ROOM_SEQ_TO_PENDING)?
                        .remove(key)?;
                    tx.emit(Change::WebhookQueued);
                }
                Settled::Retry { due } => {
                    p.claim = None;
                    p.attempt += 1;
                    p.due = due;
                    p.first_failure.get_or_insert(tx.now());
                    tx.txn
                        .open_table(WEBHOOK_ROOM_SEQ_TO_PENDING)?
                        .insert(key, encode(&p).as_slice())?;
                }
                Settled::GiveUp { entry } => {
                    p.claim = None;
                    p.attempt += 1;
                    tx.txn
                        .open_table(WEBHOOK_ROOM_SEQ_TO_PENDING)?
                        .insert(key, encode(&p).as_slice())?;
                    h.enabled = false;
                    h.disabled_reason = Some(entry.reason.clone().unwrap_or_default());
                    put_hook(tx, &h)?;
                    tx.audit(entry)?;
                }
            }
            Done
        }
        WebhookCommand::Replay {
            id,
            since_seq,
            since_at,
        } => {
            let h = hook(tx, id)?;
            let mut picked = Vec::new();
            {
                let t = tx.txn.open_table(WEBHOOK_EVENT_SEQ_TO_EVENT)?;
                for row in t.range(since_seq.unwrap_or(0)..)? {
                    let (_, v) = row?;
                    let ev: WebhookEvent = decode("webhook_event_seq_to_event", v.value())?;
                    if since_at.is_some_and(|at| ev.at < at) {
                        continue;
                    }
                    if h.wants(&ev.kind, ev.room) {
                        picked.push((ev.room.map(|r| r.0).unwrap_or(0), ev.seq));
                    }
                }
            }
            let mut q = tx.txn.open_table(WEBHOOK_ROOM_SEQ_TO_PENDING)?;
            let fresh = encode(&Pending::fresh(tx.now()));
            let mut n = 0;
            for (room, seq) in picked {
                if q.get((id.0, room, seq))?.is_none() {
                    q.insert((id.0, room, seq), fresh.as_slice())?;
                }
                n += 1;
            }
            drop(q);
            if n > 0 {
                tx.emit(Change::WebhookQueued);
            }
            Count(n)
        }
    })
}

fn record_attempt(tx: &mut Tx, webhook: Id, mut a: Attempt) -> Result<()> {
    let mut t = tx.txn.open_table(WEBHOOK_N_TO_ATTEMPT)?;
    let last = t
        .range((webhook.0, 0)..=(webhook.0, u64::MAX))?
        .next_back()
        .transpose()?
        .map(|(k, _)| k.value().1)
        .unwrap_or(0);
    a.n = last + 1;
    t.insert((webhook.0, a.n), encode(&a).as_slice())?;
    if a.n > ATTEMPTS_KEEP {
        t.remove((webhook.0, a.n - ATTEMPTS_KEEP))?;
    }
    Ok(())
}

impl Rx {
    pub fn webhooks(&self) -> Result<Vec<Webhook>> {
        hooks_in(&self.txn.open_table(WEBHOOK_TO_RECORD)?)
    }

    pub fn webhook(&self, id: Id) -> Result<Option<Webhook>> {
        self.txn
            .open_table(WEBHOOK_TO_RECORD)?
            .get(id.0)?
            .map(|v| decode("webhook_to_record", v.value()))
            .transpose()
    }

    /// The head of every (endpoint, room) queue, at most `limit`: a skip
    /// scan that reads one row per queue, however long each is.
    pub fn webhook_heads(&self, limit: usize) -> Result<Vec<Head>> {
        let q = self.txn.open_table(WEBHOOK_ROOM_SEQ_TO_PENDING)?;
        let mut out = Vec::new();
        let mut from = (0u128, 0u128, 0u64);
        while out.len() < limit {
            let Some(row) = q.range(from..)?.next() else {
                break;
            };
            let (k, v) = row?;
            let (w, r, seq) = k.value();
            out.push(Head {
                webhook: Id(w),
                room: Id(r),
                seq,
                pending: decode("webhook_room_seq_to_pending", v.value())?,
            });
            from = match r.checked_add(1) {
                Some(r) => (w, r, 0),
                None => match w.checked_add(1) {
                    Some(w) => (w, 0, 0),
                    None => break,
                },
            };
        }
        Ok(out)
    }

    /// How many events wait for an endpoint, counted up to
    /// `BACKLOG_COUNT_MAX` (the console asks every second).
    pub fn webhook_backlog(&self, id: Id) -> Result<u64> {
        let q = self.txn.open_table(WEBHOOK_ROOM_SEQ_TO_PENDING)?;
        let mut n = 0;
        let rows = q.range((id.0, 0, 0)..=(id.0, u128::MAX, u64::MAX))?;
        for row in rows.take(BACKLOG_COUNT_MAX as usize) {
            row?;
            n += 1;
        }
        Ok(n)
    }

    pub fn webhook_event(&self, seq: u64) -> Result<Option<WebhookEvent>> {
        self.txn
            .open_table(WEBHOOK_EVENT_SEQ_TO_EVENT)?
            .get(seq)?
            .map(|v| decode("webhook_event_seq_to_event", v.value()))
            .transpose()
    }

    /// The newest attempts for an endpoint, newest last.
    pub fn webhook_attempts(&self, id: Id, limit: usize) -> Result<Vec<Attempt>> {
        let t = self.txn.open_table(WEBHOOK_N_TO_ATTEMPT)?;
        let mut out = Vec::new();
        for row in t.range((id.0, 0)..=(id.0, u64::MAX))?.rev().take(limit) {
            let (_, v) = row?;
            out.push(decode("webhook_n_to_attempt", v.value())?);
        }
        out.reverse();
        Ok(out)
    }
}
