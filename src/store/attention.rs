//! Mentions and unread counts. Nothing here is written per member per
//! message: a user's unread count in a room is counted on demand from
//! their read marker to the room's end, and their unread mentions from
//! the mention index, which has rows only for the users a message
//! mentions. Clients keep counts current between snapshots themselves
//! from `message` events (docs/protocol.md); the store sends a fresh
//! snapshot (`Change::Unread`) only where a client could not know: the
//! marker moved, or a deletion, an edit or retention changed what counts.

use super::*;
use crate::domain::mention;

/// A user's unread state in one room, as the protocol shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unread {
    pub room: Id,
    /// Messages by others, not deleted, after `last_read_seq`.
    pub unread: u64,
    /// Of those, the ones that mention the user.
    pub mentions: u64,
    /// The user's read marker.
    pub last_read_seq: u64,
    /// The room's last seq when this was counted: messages after it are
    /// the client's to count.
    pub last_seq: u64,
}

/// Only what counting needs from a stored message; the text is skipped.
#[derive(Deserialize)]
struct Counted {
    sender: Id,
    deleted: bool,
    #[serde(default)]
    reply_to: Option<Id>,
    #[serde(default)]
    also_in_room: bool,
}

/// Counting shared by read and write transactions.
pub(super) fn count(
    msgs: &impl ReadableTable<(u128, u64), &'static [u8]>,
    index: &impl ReadableTable<(u128, u128, u64), ()>,
    room: Id,
    user: Id,
    last_read_seq: u64,
    last_seq: u64,
) -> Result<Unread> {
    let mut unread = 0;
    let from = last_read_seq.saturating_add(1);
    for row in msgs.range((room.0, from)..=(room.0, u64::MAX))? {
        let (_, v) = row?;
        let m: Counted = decode("room_seq_to_message", v.value())?;
        // A reply kept to its thread counts in the thread (store/threads.rs).
        let thread_only = m.reply_to.is_some() && !m.also_in_room;
        if !m.deleted && m.sender != user && !thread_only {
            unread += 1;
        }
    }
    let mut mentions = 0;
    for row in index.range((user.0, room.0, from)..=(user.0, room.0, u64::MAX))? {
        row?;
        mentions += 1;
    }
    Ok(Unread {
        room,
        unread,
        mentions,
        last_read_seq,
        last_seq,
    })
}

impl Tx {
    /// Who a message by `sender` in `room` with `text` mentions: named
    /// users, `@room` (from staff or the room's creator; plain text from
    /// anyone else) and `@here` (`here`: the members online when it was
    /// submitted, as the submitter saw them). Only members who do not
    /// block the sender count, and never the sender: a name that fails
    /// these is as if not written, so the sender learns nothing from it.
    pub fn mentions_in(&self, sender: Id, room: &Room, text: &str, here: &[Id]) -> Result<Vec<Id>> {
        let parsed = mention::parse(text);
        if parsed.is_empty() {
            return Ok(Vec::new());
        }
        let mut wanted: Vec<Id> = Vec::new();
        {
            let names = self.txn.open_table(USERNAME_TO_USER)?;
            for candidates in &parsed.names {
                for name in candidates {
                    if let Some(id) = q::user_id_by_name(&names, name)? {
                        wanted.push(id);
                        break;
                    }
                }
            }
        }
        if parsed.room {
            let staff = self.user(sender)?.is_some_and(|r| r.role.is_staff());
            if staff || room.owner == Some(sender) {
                wanted.extend(self.member_ids(room.id)?);
            }
        }
        if parsed.here {
            wanted.extend_from_slice(here);
        }
        let members = self.txn.open_table(ROOM_USER_TO_MEMBER)?;
        let blocks = self.txn.open_table(USER_BLOCKED_TO_SINCE)?;
        let mut out: Vec<Id> = Vec::new();
        for id in wanted {
            if id == sender || out.contains(&id) {
                continue;
            }
            if q::member(&members, room.id, id)?.is_none() || q::has_pair(&blocks, id, sender)? {
                continue;
            }
            out.push(id);
        }
        Ok(out)
    }

    /// Adds and removes rows of the mention index for one message.
    pub(super) fn index_mentions(
        &mut self,
        room: Id,
        seq: u64,
        add: &[Id],
        remove: &[Id],
    ) -> Result<()> {
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let mut t = self.txn.open_table(USER_ROOM_SEQ_TO_MENTION)?;
        for u in remove {
            t.remove((u.0, room.0, seq))?;
        }
        for u in add {
            t.insert((u.0, room.0, seq), ())?;
        }
        Ok(())
    }

    /// A member's unread state in a room, as of this transaction.
    pub fn unread(&self, room: Id, user: Id) -> Result<Option<Unread>> {
        let Some(member) = self.member(room, user)? else {
            return Ok(None);
        };
        Ok(Some(count(
            &self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?,
            &self.txn.open_table(USER_ROOM_SEQ_TO_MENTION)?,
            room,
            user,
            member.last_read,
            self.last_seq(room)?,
        )?))
    }

    /// Sends fresh counts to each of `users` who is still a member.
    pub(super) fn emit_unread(&mut self, room: Id, users: &[Id]) -> Result<()> {
        for user in users {
            if let Some(state) = self.unread(room, *user)? {
                self.emit(Change::Unread { user: *user, state });
            }
        }
        Ok(())
    }

    /// Members whose count a change at `seq` may move: those whose marker
    /// is below it.
    pub(super) fn behind(&self, room: Id, seq: u64) -> Result<Vec<Id>> {
        let t = self.txn.open_table(ROOM_USER_TO_MEMBER)?;
        let mut out = Vec::new();
        for row in t.range((room.0, 0)..=(room.0, u128::MAX))? {
            let (k, v) = row?;
            let m: MemberRecord = decode("room_user_to_member", v.value())?;
            if m.last_read < seq {
                out.push(Id(k.value().1));
            }
        }
        Ok(out)
    }
}

impl Rx {
    /// The user's unread state in every room they are a member of.
    pub fn unread_of(&self, user: Id) -> Result<Vec<Unread>> {
        let members = self.txn.open_table(ROOM_USER_TO_MEMBER)?;
        let msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
        let index = self.txn.open_table(USER_ROOM_SEQ_TO_MENTION)?;
        let last = self.txn.open_table(ROOM_TO_LAST_SEQ)?;
        let mut out = Vec::new();
        for room in self.room_ids_of(user)? {
            let Some(m) = q::member(&members, room, user)? else {
                continue;
            };
            let last_seq = q::last_seq(&last, room)?;
            out.push(count(&msgs, &index, room, user, m.last_read, last_seq)?);
        }
        Ok(out)
    }

    /// The user's read marker in a room; None if not a member.
    pub fn read_marker(&self, room: Id, user: Id) -> Result<Option<u64>> {
        Ok(self.member(room, user)?.map(|m| m.last_read))
    }
}
