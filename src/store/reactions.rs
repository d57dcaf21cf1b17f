//! Reactions and pins: their tables, the rules decided when a command is
//! applied (who may react or pin, the limits), and how a message read for
//! someone gets its aggregated reactions and its pin flag.
//!
//! Neither touches the message's own record: a reaction is not an edit
//! (no journal revision, so the search index is not asked to look again),
//! and the message rows stay as small as they were.

use std::collections::HashMap;

use super::*;
use crate::domain::Reaction;

/// Distinct emoji on one message.
pub const MAX_REACTIONS_PER_MESSAGE: usize = 20;
/// Pinned messages in one room.
pub const MAX_PINS_PER_ROOM: usize = 50;
/// How many names a reaction lists (the first to react).
pub const REACTION_NAMES: usize = 3;

/// Who pinned a message and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinRecord {
    /// `None`: the operator.
    pub by: Option<Id>,
    pub at: i64,
}

/// A message's reaction rows, (emoji, user, when), in key order.
fn rows(
    t: &impl ReadableTable<(u128, &'static str, u128), i64>,
    message: Id,
) -> Result<Vec<(String, Id, i64)>> {
    let mut out = Vec::new();
    for row in t.range((message.0, "", 0u128)..)? {
        let (k, v) = row?;
        let (m, emoji, user) = k.value();
        if m != message.0 {
            break;
        }
        out.push((emoji.to_string(), Id(user), v.value()));
    }
    Ok(out)
}

/// Aggregates rows into what a reader sees: one entry per emoji, in the
/// order of each emoji's first reaction (ties by the emoji), each with its
/// first few names in the order they reacted.
fn aggregate<T: ReadableTable<u128, &'static [u8]>>(
    rows: Vec<(String, Id, i64)>,
    names: &mut SenderCache<'_, T>,
    viewer: Option<Id>,
) -> Result<Vec<Reaction>> {
    let mut groups: HashMap<String, Vec<(i64, Id)>> = HashMap::new();
    for (emoji, user, at) in rows {
        groups.entry(emoji).or_default().push((at, user));
    }
    let mut groups: Vec<(String, Vec<(i64, Id)>)> = groups.into_iter().collect();
    for (_, users) in &mut groups {
        users.sort();
    }
    groups.sort_by(|a, b| (a.1[0].0, &a.0).cmp(&(b.1[0].0, &b.0)));
    let mut out = Vec::with_capacity(groups.len());
    for (emoji, users) in groups {
        let mut shown = Vec::new();
        for (_, id) in users.iter().take(REACTION_NAMES) {
            shown.push(names.get(*id)?.username);
        }
        out.push(Reaction {
            emoji,
            count: users.len() as u32,
            me: viewer.is_some_and(|v| users.iter().any(|(_, u)| *u == v)),
            users: shown,
        });
    }
    Ok(out)
}

impl Rx {
    /// Fills in each message's reactions (with `me` for `viewer`) and its
    /// pin flag, from this snapshot. Deleted messages have neither.
    pub fn decorate(&self, msgs: &mut [Message], viewer: Option<Id>) -> Result<()> {
        let reactions = self.txn.open_table(MESSAGE_EMOJI_USER_TO_AT)?;
        let pins = self.txn.open_table(ROOM_MESSAGE_TO_PIN)?;
        let users = self.txn.open_table(USER_TO_RECORD)?;
        let mut names = SenderCache::new(&users);
        for m in msgs {
            m.reactions = aggregate(rows(&reactions, m.id)?, &mut names, viewer)?;
            m.pinned = pins.get((m.room.0, m.id.0))?.is_some();
        }
        Ok(())
    }

    /// A room's pinned messages with their pins, newest pin first.
    pub fn pins(&self, room: Id) -> Result<Vec<(Message, PinRecord)>> {
        let pins = self.txn.open_table(ROOM_MESSAGE_TO_PIN)?;
        let mut found = Vec::new();
        for row in pins.range((room.0, 0u128)..=(room.0, u128::MAX))? {
            let (k, v) = row?;
            let rec: PinRecord = decode("room_message_to_pin", v.value())?;
            found.push((Id(k.value().1), rec));
        }
        drop(pins);
        found.sort_by_key(|p| std::cmp::Reverse((p.1.at, p.0)));
        let mut out = Vec::with_capacity(found.len());
        for (id, rec) in found {
            if let Some(m) = self.message(id)? {
                out.push((m, rec));
            }
        }
        Ok(out)
    }
}

impl Tx {
    /// A message's reactions and pin flag as a broadcast carries them
    /// (`me` is always false there).
    pub fn decorate(&self, m: &mut Message) -> Result<()> {
        let users = self.txn.open_table(USER_TO_RECORD)?;
        let mut names = SenderCache::new(&users);
        let rows = rows(&self.txn.open_table(MESSAGE_EMOJI_USER_TO_AT)?, m.id)?;
        m.reactions = aggregate(rows, &mut names, None)?;
        m.pinned = self.pin(m.room, m.id)?.is_some();
        Ok(())
    }

    fn pin(&self, room: Id, message: Id) -> Result<Option<PinRecord>> {
        self.txn
            .open_table(ROOM_MESSAGE_TO_PIN)?
            .get((room.0, message.0))?
            .map(|v| decode("room_message_to_pin", v.value()))
            .transpose()
    }

    /// A deleted message keeps neither its reactions nor its pin; the
    /// unpinning is announced (the deletion itself says the rest).
    pub(super) fn strip_message(&mut self, m: &Message) -> Result<()> {
        self.forget_reactions(m.id)?;
        if self
            .txn
            .open_table(ROOM_MESSAGE_TO_PIN)?
            .remove((m.room.0, m.id.0))?
            .is_some()
        {
            self.emit(Change::MessageUnpinned {
                room: m.room,
                message: m.id,
                by: None,
            });
        }
        Ok(())
    }

    /// Removes the reactions and pins of messages whose rows are going
    /// (retention, a room's deletion): silently, like the messages.
    /// Called while their id index still names their rooms.
    pub(super) fn forget_reactions_and_pins(
        &mut self,
        ids: impl Iterator<Item = Id>,
    ) -> Result<()> {
        for id in ids {
            let room = self
                .txn
                .open_table(MESSAGE_TO_ROOM_SEQ)?
                .get(id.0)?
                .map(|v| v.value().0);
            if let Some(room) = room {
                self.txn
                    .open_table(ROOM_MESSAGE_TO_PIN)?
                    .remove((room, id.0))?;
            }
            self.forget_reactions(id)?;
        }
        Ok(())
    }

    fn forget_reactions(&mut self, message: Id) -> Result<()> {
        let mut t = self.txn.open_table(MESSAGE_EMOJI_USER_TO_AT)?;
        let keys: Vec<(String, u128)> = rows(&t, message)?
            .into_iter()
            .map(|(e, u, _)| (e, u.0))
            .collect();
        for (emoji, user) in keys {
            t.remove((message.0, emoji.as_str(), user))?;
        }
        Ok(())
    }
}

/// A message someone may act on: it exists and is not deleted.
fn live_message(tx: &Tx, message: Id) -> Result<Message> {
    match tx.message(message)? {
        Some(m) if !m.deleted => Ok(m),
        _ => Err(StoreError::NotFound("message")),
    }
}

/// `react`: the reactor must be able to post in the room now (a member,
/// not muted, and in a DM still allowed to write to the other side), and
/// must not be blocked by the message's sender. Reacting again with the
/// same emoji changes nothing.
pub(super) fn react(
    tx: &mut Tx,
    user: Id,
    message: Id,
    emoji: String,
    dm_policy: DmPolicy,
) -> Result<()> {
    let msg = live_message(tx, message)?;
    super::apply::may_post(tx, user, msg.room, dm_policy)?;
    if tx.blocks(msg.sender.id, user)? {
        return Err(StoreError::Forbidden(
            "you cannot react to this user's messages".into(),
        ));
    }
    let existing = rows(&tx.txn.open_table(MESSAGE_EMOJI_USER_TO_AT)?, message)?;
    if existing.iter().any(|(e, u, _)| *e == emoji && *u == user) {
        return Ok(());
    }
    let mut distinct: Vec<&str> = existing.iter().map(|(e, _, _)| e.as_str()).collect();
    distinct.dedup();
    if !distinct.contains(&emoji.as_str()) && distinct.len() >= MAX_REACTIONS_PER_MESSAGE {
        return Err(StoreError::Limit(format!(
            "a message has at most {MAX_REACTIONS_PER_MESSAGE} different reactions"
        )));
    }
    let count = existing.iter().filter(|(e, _, _)| *e == emoji).count() as u32 + 1;
    let reactor = tx.user(user)?.ok_or(StoreError::NotFound("user"))?.public();
    // Its time, made later than every reaction already on the message, so
    // two in the same millisecond still keep the order they came in.
    let latest = existing.iter().map(|(_, _, at)| *at).max();
    let stamp = latest.map_or(tx.now(), |l| tx.now().max(l.saturating_add(1)));
    tx.txn
        .open_table(MESSAGE_EMOJI_USER_TO_AT)?
        .insert((message.0, emoji.as_str(), user.0), stamp)?;
    let hidden_from = q::ids_of(&tx.txn.open_table(USER_BLOCKER_TO_SINCE)?, user)?;
    tx.emit(Change::ReactionAdded {
        room: msg.room,
        message,
        emoji,
        user: reactor,
        count,
        hidden_from,
    });
    Ok(())
}

/// `unreact`: anyone who can still see the room takes back their own
/// reaction, muted or not; taking back one that is not there changes
/// nothing.
pub(super) fn unreact(tx: &mut Tx, user: Id, message: Id, emoji: String) -> Result<()> {
    let msg = live_message(tx, message)?;
    if tx.member(msg.room, user)?.is_none() {
        return Err(StoreError::Forbidden("not a member of this room".into()));
    }
    let removed = tx
        .txn
        .open_table(MESSAGE_EMOJI_USER_TO_AT)?
        .remove((message.0, emoji.as_str(), user.0))?
        .is_some();
    if !removed {
        return Ok(());
    }
    let count = rows(&tx.txn.open_table(MESSAGE_EMOJI_USER_TO_AT)?, message)?
        .iter()
        .filter(|(e, _, _)| *e == emoji)
        .count() as u32;
    let reactor = tx.user(user)?.ok_or(StoreError::NotFound("user"))?.public();
    let hidden_from = q::ids_of(&tx.txn.open_table(USER_BLOCKER_TO_SINCE)?, user)?;
    tx.emit(Change::ReactionRemoved {
        room: msg.room,
        message,
        emoji,
        user: reactor,
        count,
        hidden_from,
    });
    Ok(())
}

/// Who may pin in a room, by their role when the command applies: the
/// operator, staff and the room's creator; in a direct message, its two
/// members (it has no creator, and staff do not see others' DMs).
fn may_pin(tx: &Tx, by: Option<Id>, room: &Room) -> Result<Option<User>> {
    let Some(by) = by else {
        return Ok(None);
    };
    let user = tx.user(by)?.ok_or(StoreError::NotFound("user"))?;
    let allowed = match room.kind {
        RoomKind::Dm => tx.member(room.id, by)?.is_some(),
        RoomKind::Room => user.role.is_staff() || room.owner == Some(by),
    };
    if !allowed {
        return Err(StoreError::Forbidden(
            "only the room's creator, a moderator or an admin may pin messages".into(),
        ));
    }
    Ok(Some(user.public()))
}

/// Pins a message; pinning it again changes nothing. `Flag(true)` when it
/// was pinned now.
pub(super) fn pin(
    tx: &mut Tx,
    by: Option<Id>,
    message: Id,
    entry: Option<AuditEntry>,
) -> Result<bool> {
    let mut msg = live_message(tx, message)?;
    let room = tx.room(msg.room)?.ok_or(StoreError::NotFound("room"))?;
    let pinner = may_pin(tx, by, &room)?;
    if tx.pin(room.id, message)?.is_some() {
        return Ok(false);
    }
    let count = tx
        .txn
        .open_table(ROOM_MESSAGE_TO_PIN)?
        .range((room.id.0, 0u128)..=(room.id.0, u128::MAX))?
        .count();
    if count >= MAX_PINS_PER_ROOM {
        return Err(StoreError::Limit(format!(
            "a room has at most {MAX_PINS_PER_ROOM} pinned messages; unpin one first"
        )));
    }
    let rec = PinRecord { by, at: tx.now() };
    tx.txn
        .open_table(ROOM_MESSAGE_TO_PIN)?
        .insert((room.id.0, message.0), encode(&rec).as_slice())?;
    if let Some(entry) = entry {
        tx.audit(entry)?;
    }
    tx.decorate(&mut msg)?;
    tx.emit(Change::MessagePinned {
        message: msg,
        by: pinner,
    });
    Ok(true)
}

/// Unpins a message; unpinning one that is not pinned changes nothing.
pub(super) fn unpin(
    tx: &mut Tx,
    by: Option<Id>,
    message: Id,
    entry: Option<AuditEntry>,
) -> Result<bool> {
    let msg = tx
        .message(message)?
        .ok_or(StoreError::NotFound("message"))?;
    let room = tx.room(msg.room)?.ok_or(StoreError::NotFound("room"))?;
    let pinner = may_pin(tx, by, &room)?;
    if tx.pin(room.id, message)?.is_none() {
        return Ok(false);
    }
    tx.txn
        .open_table(ROOM_MESSAGE_TO_PIN)?
        .remove((room.id.0, message.0))?;
    if let Some(entry) = entry {
        tx.audit(entry)?;
    }
    tx.emit(Change::MessageUnpinned {
        room: room.id,
        message,
        by: pinner,
    });
    Ok(true)
}
