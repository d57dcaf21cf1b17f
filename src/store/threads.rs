//! Replies and threads. A reply is a message of its room like any other
//! (it has the room's next seq, so edits, deletion, search, retention and
//! the journal treat it as one); what makes it a reply is `reply_to`, the
//! thread's root, always a message that is not itself a reply. A reply
//! kept to its thread (`also_in_room` false) is left out of the room's
//! history and of room unread counts; the thread index lists every reply.
//!
//! Following: a reply makes its sender, the root's author and the users
//! it mentions follow the thread, unless they chose to stop following it
//! (the record of that choice stays; replying again follows again). A
//! follower's unread replies are counted on demand from their thread read
//! marker, as room unread counts are from the room's.

use super::commands::Outcome;
use super::*;

/// Writes about threads that are not messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ThreadCommand {
    /// Follows the thread of `root` (a reply names its thread), with
    /// every reply so far read.
    Follow {
        user: Id,
        root: Id,
    },
    Unfollow {
        user: Id,
        root: Id,
    },
    /// Moves the thread read marker forward to the reply with room seq
    /// `seq` (never back).
    MarkRead {
        user: Id,
        root: Id,
        seq: u64,
    },
}

/// A user's unread state in one thread, as the protocol shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadUnread {
    pub room: Id,
    pub root: Id,
    pub following: bool,
    /// Replies by others, not deleted, after `last_read_seq` (0 when not
    /// following).
    pub unread: u64,
    /// Of those, the ones that mention the user.
    pub mentions: u64,
    pub last_read_seq: u64,
    /// The room seq of the thread's newest reply (0: none).
    pub last_reply_seq: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Follow {
    following: bool,
    last_read: u64,
}

/// Only what counting needs from a stored reply.
#[derive(Deserialize)]
struct Counted {
    sender: Id,
    deleted: bool,
    #[serde(default)]
    mentions: Vec<Id>,
}

fn last_reply_seq(
    replies: &impl ReadableTable<(u128, u128, u64), u128>,
    room: Id,
    root: Id,
) -> Result<u64> {
    Ok(replies
        .range((room.0, root.0, 0)..=(room.0, root.0, u64::MAX))?
        .next_back()
        .transpose()?
        .map(|(k, _)| k.value().2)
        .unwrap_or(0))
}

fn follow_of(
    t: &impl ReadableTable<(u128, u128, u128), &'static [u8]>,
    room: Id,
    root: Id,
    user: Id,
) -> Result<Option<Follow>> {
    t.get((room.0, root.0, user.0))?
        .map(|v| decode("room_root_user_to_follow", v.value()))
        .transpose()
}

/// Counting shared by read and write transactions.
fn count(
    replies: &impl ReadableTable<(u128, u128, u64), u128>,
    msgs: &impl ReadableTable<(u128, u64), &'static [u8]>,
    (room, root, user): (Id, Id, Id),
    follow: Option<Follow>,
) -> Result<ThreadUnread> {
    let last = last_reply_seq(replies, room, root)?;
    let mut state = ThreadUnread {
        room,
        root,
        following: false,
        unread: 0,
        mentions: 0,
        last_read_seq: follow.map(|f| f.last_read).unwrap_or(0),
        last_reply_seq: last,
    };
    let Some(f) = follow.filter(|f| f.following) else {
        return Ok(state);
    };
    state.following = true;
    let from = f.last_read.saturating_add(1);
    for row in replies.range((room.0, root.0, from)..=(room.0, root.0, u64::MAX))? {
        let (k, _) = row?;
        let Some(raw) = msgs.get((room.0, k.value().2))? else {
            continue;
        };
        let m: Counted = decode("room_seq_to_message", raw.value())?;
        if !m.deleted && m.sender != user {
            state.unread += 1;
            if m.mentions.contains(&user) {
                state.mentions += 1;
            }
        }
    }
    Ok(state)
}

pub(super) fn apply(tx: &mut Tx, cmd: ThreadCommand) -> Result<Outcome> {
    match cmd {
        ThreadCommand::Follow { user, root } => {
            let root = tx.thread_of(user, root)?;
            let last = tx.last_reply_seq(root.room, root.id)?;
            let old = tx.follow(root.room, root.id, user)?;
            let last_read = old.map(|f| f.last_read).unwrap_or(0).max(last);
            tx.put_follow(
                root.room,
                root.id,
                user,
                Follow {
                    following: true,
                    last_read,
                },
            )?;
            tx.emit_thread_unread(root.room, root.id, &[user])?;
        }
        ThreadCommand::Unfollow { user, root } => {
            let root = tx.thread_of(user, root)?;
            let last_read = tx
                .follow(root.room, root.id, user)?
                .map(|f| f.last_read)
                .unwrap_or(0);
            tx.put_follow(
                root.room,
                root.id,
                user,
                Follow {
                    following: false,
                    last_read,
                },
            )?;
            tx.emit_thread_unread(root.room, root.id, &[user])?;
        }
        ThreadCommand::MarkRead { user, root, seq } => {
            let root = tx.thread_of(user, root)?;
            if seq > tx.last_reply_seq(root.room, root.id)? {
                return Err(StoreError::Invalid(
                    "seq: beyond the thread's last reply".into(),
                ));
            }
            if let Some(mut f) = tx.follow(root.room, root.id, user)?
                && seq > f.last_read
            {
                f.last_read = seq;
                tx.put_follow(root.room, root.id, user, f)?;
                tx.emit_thread_unread(root.room, root.id, &[user])?;
            }
        }
    }
    Ok(Outcome::Done)
}

impl Tx {
    /// The root a reply to `id` in `room` belongs to: `id` itself, or the
    /// root of the reply `id` is (threads are one level deep). `room` is
    /// `None` for a DM not yet started, where nothing can be replied to.
    /// A message elsewhere is answered like one that does not exist.
    pub(super) fn reply_root(&self, room: Option<Id>, id: Id) -> Result<Message> {
        let missing = || StoreError::Invalid("reply_to: no such message in this room".into());
        let msg = self.message(id)?.ok_or_else(missing)?;
        if Some(msg.room) != room {
            return Err(missing());
        }
        let root = match msg.reply_to {
            Some(r) => self.message(r)?.ok_or_else(missing)?,
            None => msg,
        };
        if root.deleted {
            return Err(StoreError::Invalid(
                "reply_to: that message was deleted".into(),
            ));
        }
        Ok(root)
    }

    /// The DM room of two users, if they have one.
    pub(super) fn existing_dm(&self, a: Id, b: Id) -> Result<Option<Id>> {
        Ok(self
            .txn
            .open_table(USER_PAIR_TO_DM)?
            .get(dm_pair(a, b))?
            .map(|v| Id(v.value())))
    }

    /// The root of the thread `id` names, for a member of its room.
    fn thread_of(&self, user: Id, id: Id) -> Result<Message> {
        let msg = self.message(id)?.ok_or(StoreError::NotFound("message"))?;
        if self.member(msg.room, user)?.is_none() {
            return Err(StoreError::NotFound("message"));
        }
        match msg.reply_to {
            Some(r) => self.message(r)?.ok_or(StoreError::NotFound("message")),
            None => Ok(msg),
        }
    }

    fn last_reply_seq(&self, room: Id, root: Id) -> Result<u64> {
        last_reply_seq(&self.txn.open_table(ROOM_ROOT_SEQ_TO_REPLY)?, room, root)
    }

    fn follow(&self, room: Id, root: Id, user: Id) -> Result<Option<Follow>> {
        follow_of(
            &self.txn.open_table(ROOM_ROOT_USER_TO_FOLLOW)?,
            room,
            root,
            user,
        )
    }

    fn put_follow(&mut self, room: Id, root: Id, user: Id, f: Follow) -> Result<()> {
        self.txn
            .open_table(ROOM_ROOT_USER_TO_FOLLOW)?
            .insert((room.0, root.0, user.0), encode(&f).as_slice())?;
        let mut idx = self.txn.open_table(USER_ROOM_ROOT_TO_FOLLOWING)?;
        if f.following {
            idx.insert((user.0, room.0, root.0), ())?;
        } else {
            idx.remove((user.0, room.0, root.0))?;
        }
        Ok(())
    }

    /// Followers of a thread, still members of its room.
    fn followers(&self, room: Id, root: Id) -> Result<Vec<Id>> {
        let t = self.txn.open_table(ROOM_ROOT_USER_TO_FOLLOW)?;
        let mut out = Vec::new();
        for row in t.range((room.0, root.0, 0)..=(room.0, root.0, u128::MAX))? {
            let (k, v) = row?;
            let f: Follow = decode("room_root_user_to_follow", v.value())?;
            let user = Id(k.value().2);
            if f.following && self.member(room, user)?.is_some() {
                out.push(user);
            }
        }
        Ok(out)
    }

    pub fn thread_unread(&self, room: Id, root: Id, user: Id) -> Result<ThreadUnread> {
        count(
            &self.txn.open_table(ROOM_ROOT_SEQ_TO_REPLY)?,
            &self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?,
            (room, root, user),
            self.follow(room, root, user)?,
        )
    }

    fn emit_thread_unread(&mut self, room: Id, root: Id, users: &[Id]) -> Result<()> {
        for user in users {
            let state = self.thread_unread(room, root, *user)?;
            self.emit(Change::ThreadUnread { user: *user, state });
        }
        Ok(())
    }

    /// A new reply joins its thread: the root's count and time, who
    /// follows. Returns the followers the reply is news to (for pushes).
    pub(super) fn on_reply(&mut self, reply: &Message) -> Result<Vec<Id>> {
        let Some(root_id) = reply.reply_to else {
            return Ok(Vec::new());
        };
        let room = reply.room;
        let before = self.last_reply_seq(room, root_id)?;
        self.txn
            .open_table(ROOM_ROOT_SEQ_TO_REPLY)?
            .insert((room.0, root_id.0, reply.seq), reply.id.0)?;
        let Some(mut root) = self.message(root_id)? else {
            return Ok(Vec::new());
        };
        root.reply_count += 1;
        root.last_reply_at = Some(self.now);
        self.put_message(&root)?;
        self.emit(Change::MessageUpdated(root.clone()));
        // Replying follows (again), with the thread read up to here.
        self.put_follow(
            room,
            root_id,
            reply.sender.id,
            Follow {
                following: true,
                last_read: reply.seq,
            },
        )?;
        let mut drawn_in = vec![root.sender.id];
        drawn_in.extend(reply.mentions.iter().copied());
        for user in drawn_in {
            if user == reply.sender.id || self.follow(room, root_id, user)?.is_some() {
                continue;
            }
            if self.member(room, user)?.is_none() {
                continue;
            }
            self.put_follow(
                room,
                root_id,
                user,
                Follow {
                    following: true,
                    last_read: before,
                },
            )?;
        }
        let mut told = self.followers(room, root_id)?;
        self.emit_thread_unread(room, root_id, &told)?;
        told.retain(|u| *u != reply.sender.id);
        Ok(told)
    }

    /// A deleted reply leaves its root's count and its followers' unread.
    pub(super) fn on_reply_deleted(&mut self, reply: &Message) -> Result<()> {
        let Some(root_id) = reply.reply_to else {
            return Ok(());
        };
        if let Some(mut root) = self.message(root_id)? {
            root.reply_count = root.reply_count.saturating_sub(1);
            self.put_message(&root)?;
            self.emit(Change::MessageUpdated(root));
        }
        let mut behind = Vec::new();
        for user in self.followers(reply.room, root_id)? {
            if user != reply.sender.id
                && self
                    .follow(reply.room, root_id, user)?
                    .is_some_and(|f| f.last_read < reply.seq)
            {
                behind.push(user);
            }
        }
        self.emit_thread_unread(reply.room, root_id, &behind)
    }

    /// Retention: the replies of each root about to go, so a thread goes
    /// with its root rather than staying behind unreachable.
    pub(super) fn add_threads_of(
        &mut self,
        room: Id,
        doomed: &mut Vec<(u64, MessageRecord)>,
    ) -> Result<()> {
        let roots: Vec<Id> = doomed
            .iter()
            .filter(|(_, r)| r.reply_to.is_none())
            .map(|(_, r)| r.id)
            .collect();
        if roots.is_empty() {
            return Ok(());
        }
        let replies = self.txn.open_table(ROOM_ROOT_SEQ_TO_REPLY)?;
        let msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
        let mut extra = Vec::new();
        for root in roots {
            for row in replies.range((room.0, root.0, 0)..=(room.0, root.0, u64::MAX))? {
                let seq = row?.0.value().2;
                if doomed.iter().any(|(s, _)| *s == seq) {
                    continue;
                }
                if let Some(raw) = msgs.get((room.0, seq))? {
                    extra.push((seq, decode("room_seq_to_message", raw.value())?));
                }
            }
        }
        doomed.extend(extra);
        Ok(())
    }

    /// After retention removed `gone` (rows already deleted): their
    /// threads' rows, and the counts of roots that stay.
    pub(super) fn forget_threads_of(
        &mut self,
        room: Id,
        gone: &[(u64, MessageRecord)],
    ) -> Result<()> {
        let mut roots_left: Vec<Id> = Vec::new();
        for (seq, rec) in gone {
            match rec.reply_to {
                Some(root) => {
                    self.txn
                        .open_table(ROOM_ROOT_SEQ_TO_REPLY)?
                        .remove((room.0, root.0, *seq))?;
                    if !rec.deleted && !gone.iter().any(|(_, r)| r.id == root) {
                        roots_left.push(root);
                    }
                }
                None => self.forget_thread(room, rec.id)?,
            }
        }
        for root in roots_left {
            if let Some(mut msg) = self.message(root)? {
                msg.reply_count = msg.reply_count.saturating_sub(1);
                self.put_message(&msg)?;
                self.emit(Change::MessageUpdated(msg));
            }
        }
        Ok(())
    }

    fn forget_thread(&mut self, room: Id, root: Id) -> Result<()> {
        self.txn
            .open_table(ROOM_ROOT_SEQ_TO_REPLY)?
            .extract_from_if((room.0, root.0, 0)..=(room.0, root.0, u64::MAX), |_, _| {
                true
            })?
            .for_each(drop);
        let mut users = Vec::new();
        {
            let mut f = self.txn.open_table(ROOM_ROOT_USER_TO_FOLLOW)?;
            for row in f
                .extract_from_if((room.0, root.0, 0)..=(room.0, root.0, u128::MAX), |_, _| {
                    true
                })?
            {
                users.push(row?.0.value().2);
            }
        }
        let mut idx = self.txn.open_table(USER_ROOM_ROOT_TO_FOLLOWING)?;
        for u in users {
            idx.remove((u, room.0, root.0))?;
        }
        Ok(())
    }

    /// A deleted room's threads.
    pub(super) fn forget_room_threads(&mut self, room: Id) -> Result<()> {
        self.txn
            .open_table(ROOM_ROOT_SEQ_TO_REPLY)?
            .extract_from_if((room.0, 0, 0)..=(room.0, u128::MAX, u64::MAX), |_, _| true)?
            .for_each(drop);
        let mut keys = Vec::new();
        {
            let mut f = self.txn.open_table(ROOM_ROOT_USER_TO_FOLLOW)?;
            for row in
                f.extract_from_if((room.0, 0, 0)..=(room.0, u128::MAX, u128::MAX), |_, _| true)?
            {
                let (r, root, u) = row?.0.value();
                keys.push((u, r, root));
            }
        }
        let mut idx = self.txn.open_table(USER_ROOM_ROOT_TO_FOLLOWING)?;
        for k in keys {
            idx.remove(k)?;
        }
        Ok(())
    }
}

impl Rx {
    /// A thread's replies in order: the oldest `limit` with a room seq
    /// above `after`, and whether more follow.
    pub fn thread(&self, root: &Message, after: u64, limit: usize) -> Result<(Vec<Message>, bool)> {
        let replies = self.txn.open_table(ROOM_ROOT_SEQ_TO_REPLY)?;
        let msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
        let users = self.txn.open_table(USER_TO_RECORD)?;
        let mut senders = SenderCache::new(&users);
        let (room, id) = (root.room.0, root.id.0);
        let from = after.saturating_add(1);
        let mut out = Vec::with_capacity(limit.min(256));
        let mut has_more = false;
        for row in replies.range((room, id, from)..=(room, id, u64::MAX))? {
            let seq = row?.0.value().2;
            if out.len() == limit {
                has_more = true;
                break;
            }
            if let Some(raw) = msgs.get((room, seq))? {
                let rec: MessageRecord = decode("room_seq_to_message", raw.value())?;
                out.push(senders.message(root.room, seq, rec)?);
            }
        }
        Ok((out, has_more))
    }

    /// The user's state in one thread (not following: zero unread).
    pub fn thread_unread(&self, room: Id, root: Id, user: Id) -> Result<ThreadUnread> {
        let replies = self.txn.open_table(ROOM_ROOT_SEQ_TO_REPLY)?;
        let follow = follow_of(
            &self.txn.open_table(ROOM_ROOT_USER_TO_FOLLOW)?,
            room,
            root,
            user,
        )?;
        count(
            &replies,
            &self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?,
            (room, root, user),
            follow,
        )
    }

    /// Every thread the user follows in a room they are still a member of.
    pub fn threads_of(&self, user: Id) -> Result<Vec<ThreadUnread>> {
        let idx = self.txn.open_table(USER_ROOM_ROOT_TO_FOLLOWING)?;
        let members = self.txn.open_table(ROOM_USER_TO_MEMBER)?;
        let mut out = Vec::new();
        for row in idx.range((user.0, 0, 0)..=(user.0, u128::MAX, u128::MAX))? {
            let (_, room, root) = row?.0.value();
            if q::member(&members, Id(room), user)?.is_none() {
                continue;
            }
            out.push(self.thread_unread(Id(room), Id(root), user)?);
        }
        Ok(out)
    }
}
