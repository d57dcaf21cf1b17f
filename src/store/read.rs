//! Reads: a read transaction's snapshot (`Rx`), and the lookups read and
//! write transactions share.

use super::*;

pub(super) type Row<'a> = std::result::Result<
    (
        redb::AccessGuard<'a, (u128, u64)>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;

/// Reads shared by read and write transactions, written once over redb's
/// `ReadableTable`.
pub(super) mod q {
    use super::*;

    /// A room's highest seq so far (0 before its first message).
    pub fn last_seq(t: &impl ReadableTable<u128, u64>, room: Id) -> Result<u64> {
        Ok(t.get(room.0)?.map(|v| v.value()).unwrap_or(0))
    }

    /// A message by id, with its sender.
    pub fn message(
        index: &impl ReadableTable<u128, (u128, u64)>,
        msgs: &impl ReadableTable<(u128, u64), &'static [u8]>,
        users: &impl ReadableTable<u128, &'static [u8]>,
        id: Id,
    ) -> Result<Option<Message>> {
        let Some((room, seq)) = index.get(id.0)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let Some(raw) = msgs.get((room, seq))? else {
            return Ok(None);
        };
        let rec: MessageRecord = decode("room_seq_to_message", raw.value())?;
        SenderCache::new(users)
            .message(Id(room), seq, rec)
            .map(Some)
    }

    pub fn user(t: &impl ReadableTable<u128, &'static [u8]>, id: Id) -> Result<Option<UserRecord>> {
        t.get(id.0)?
            .map(|v| decode("user_to_record", v.value()))
            .transpose()
    }

    pub fn user_id_by_name(
        t: &impl ReadableTable<&'static str, u128>,
        name: &str,
    ) -> Result<Option<Id>> {
        Ok(t.get(name)?.map(|v| Id(v.value())))
    }

    pub fn room(t: &impl ReadableTable<u128, &'static [u8]>, id: Id) -> Result<Option<Room>> {
        t.get(id.0)?
            .map(|v| decode("room_to_record", v.value()))
            .transpose()
    }

    pub fn member(
        t: &impl ReadableTable<(u128, u128), &'static [u8]>,
        room: Id,
        user: Id,
    ) -> Result<Option<MemberRecord>> {
        t.get((room.0, user.0))?
            .map(|v| decode("room_user_to_member", v.value()))
            .transpose()
    }

    pub fn member_ids(
        t: &impl ReadableTable<(u128, u128), &'static [u8]>,
        room: Id,
    ) -> Result<Vec<Id>> {
        let mut out = Vec::new();
        for row in t.range((room.0, 0)..=(room.0, u128::MAX))? {
            let (k, _) = row?;
            out.push(Id(k.value().1));
        }
        Ok(out)
    }

    pub fn upload(
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        id: &str,
    ) -> Result<Option<UploadRecord>> {
        t.get(id)?
            .map(|v| decode("upload_to_record", v.value()))
            .transpose()
    }

    pub fn room_ids_of(t: &impl ReadableTable<(u128, u128), i64>, user: Id) -> Result<Vec<Id>> {
        Ok(pairs_of(t, user)?.into_iter().map(|(id, _)| id).collect())
    }

    /// The rows `(user, other) -> time` of a pair table, as (other, time).
    /// The ids paired with `user` in a (user, other) → time table.
    pub fn ids_of(t: &impl ReadableTable<(u128, u128), i64>, user: Id) -> Result<Vec<Id>> {
        Ok(pairs_of(t, user)?.into_iter().map(|(id, _)| id).collect())
    }

    pub fn pairs_of(t: &impl ReadableTable<(u128, u128), i64>, user: Id) -> Result<Vec<(Id, i64)>> {
        let mut out = Vec::new();
        for row in t.range((user.0, 0)..=(user.0, u128::MAX))? {
            let (k, v) = row?;
            out.push((Id(k.value().1), v.value()));
        }
        Ok(out)
    }

    pub fn has_pair(t: &impl ReadableTable<(u128, u128), i64>, a: Id, b: Id) -> Result<bool> {
        Ok(t.get((a.0, b.0))?.is_some())
    }

    /// Users of `pairs`, by username; rows of deleted users are skipped.
    pub fn users_of(
        t: &impl ReadableTable<u128, &'static [u8]>,
        pairs: Vec<(Id, i64)>,
    ) -> Result<Vec<(User, i64)>> {
        let mut out = Vec::new();
        for (id, at) in pairs {
            if let Some(u) = user(t, id)? {
                out.push((u.public(), at));
            }
        }
        out.sort_by(|a, b| a.0.username.cmp(&b.0.username));
        Ok(out)
    }

    pub fn settings(t: &impl ReadableTable<u128, &'static [u8]>, user: Id) -> Result<UserSettings> {
        Ok(t.get(user.0)?
            .map(|v| decode("user_to_settings", v.value()))
            .transpose()?
            .unwrap_or_default())
    }
}

/// Resolves senders while building messages, reading each user once.
pub(super) struct SenderCache<'a, T: ReadableTable<u128, &'static [u8]>> {
    users: &'a T,
    seen: std::collections::HashMap<Id, User>,
}

impl<'a, T: ReadableTable<u128, &'static [u8]>> SenderCache<'a, T> {
    pub(super) fn new(users: &'a T) -> Self {
        SenderCache {
            users,
            seen: Default::default(),
        }
    }

    pub(super) fn get(&mut self, id: Id) -> Result<User> {
        if let Some(u) = self.seen.get(&id) {
            return Ok(u.clone());
        }
        let user = match q::user(self.users, id)? {
            Some(r) => r.public(),
            // A deleted account's messages stay; its name does not.
            None => User {
                id,
                username: "[deleted]".into(),
                role: Role::User,
                avatar_url: None,
                bot: false,
            },
        };
        self.seen.insert(id, user.clone());
        Ok(user)
    }

    pub(super) fn message(&mut self, room: Id, seq: u64, rec: MessageRecord) -> Result<Message> {
        let sender = self.get(rec.sender)?;
        Ok(Message {
            id: rec.id,
            room,
            seq,
            sender,
            text: rec.text,
            attachments: rec.attachments,
            created_at: rec.created_at,
            edited_at: rec.edited_at,
            deleted: rec.deleted,
            client_msg_id: rec.client_msg_id,
            mentions: rec.mentions,
            bot: rec.bot,
            display_name: rec.display_name,
            reply_to: rec.reply_to,
            reply_count: rec.reply_count,
            last_reply_at: rec.last_reply_at,
            also_in_room: rec.also_in_room,
            reactions: Vec::new(),
            pinned: false,
            previews: rec.previews,
        })
    }
}

/// A read transaction: one consistent snapshot.
pub struct Rx {
    pub(super) txn: ReadTransaction,
}

impl Rx {
    pub fn user(&self, id: Id) -> Result<Option<UserRecord>> {
        q::user(&self.txn.open_table(USER_TO_RECORD)?, id)
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>> {
        let names = self.txn.open_table(USERNAME_TO_USER)?;
        match q::user_id_by_name(&names, name)? {
            Some(id) => self.user(id),
            None => Ok(None),
        }
    }

    pub fn users(&self) -> Result<Vec<UserRecord>> {
        let t = self.txn.open_table(USER_TO_RECORD)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode("user_to_record", v.value())?);
        }
        Ok(out)
    }

    pub fn user_count(&self) -> Result<u64> {
        Ok(self.txn.open_table(USER_TO_RECORD)?.len()?)
    }

    pub fn room(&self, id: Id) -> Result<Option<Room>> {
        q::room(&self.txn.open_table(ROOM_TO_RECORD)?, id)
    }

    pub fn room_by_name(&self, name: &str) -> Result<Option<Room>> {
        let names = self.txn.open_table(ROOMNAME_TO_ROOM)?;
        match names.get(name)? {
            Some(id) => self.room(Id(id.value())),
            None => Ok(None),
        }
    }

    pub fn rooms(&self) -> Result<Vec<Room>> {
        let t = self.txn.open_table(ROOM_TO_RECORD)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode("room_to_record", v.value())?);
        }
        Ok(out)
    }

    pub fn room_ids_of(&self, user: Id) -> Result<Vec<Id>> {
        q::room_ids_of(&self.txn.open_table(USER_ROOM_TO_JOINED)?, user)
    }

    pub fn rooms_of(&self, user: Id) -> Result<Vec<Room>> {
        let rooms = self.txn.open_table(ROOM_TO_RECORD)?;
        let mut out = Vec::new();
        for id in self.room_ids_of(user)? {
            if let Some(r) = q::room(&rooms, id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    pub fn member(&self, room: Id, user: Id) -> Result<Option<MemberRecord>> {
        q::member(&self.txn.open_table(ROOM_USER_TO_MEMBER)?, room, user)
    }

    pub fn member_ids(&self, room: Id) -> Result<Vec<Id>> {
        q::member_ids(&self.txn.open_table(ROOM_USER_TO_MEMBER)?, room)
    }

    pub fn members(&self, room: Id) -> Result<Vec<User>> {
        let users = self.txn.open_table(USER_TO_RECORD)?;
        let mut out = Vec::new();
        for id in self.member_ids(room)? {
            if let Some(u) = q::user(&users, id)? {
                out.push(u.public());
            }
        }
        Ok(out)
    }

    pub fn last_seq(&self, room: Id) -> Result<u64> {
        q::last_seq(&self.txn.open_table(ROOM_TO_LAST_SEQ)?, room)
    }

    pub fn message(&self, id: Id) -> Result<Option<Message>> {
        q::message(
            &self.txn.open_table(MESSAGE_TO_ROOM_SEQ)?,
            &self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?,
            &self.txn.open_table(USER_TO_RECORD)?,
            id,
        )
    }

    /// Messages in ascending seq: the newest `limit` below `before` (or of
    /// all), or the oldest `limit` above `after`. `has_more` says whether
    /// more lie beyond the page in the direction read.
    pub fn history(&self, room: Id, page: Page) -> Result<(Vec<Message>, bool)> {
        let msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
        let users = self.txn.open_table(USER_TO_RECORD)?;
        let mut senders = SenderCache::new(&users);
        let lo = page.after.map(|a| a.saturating_add(1)).unwrap_or(0);
        let hi = page.before.map(|b| b.saturating_sub(1)).unwrap_or(u64::MAX);
        if page.before == Some(0) || lo > hi {
            return Ok((Vec::new(), false));
        }
        let range = msgs.range((room.0, lo)..=(room.0, hi))?;
        let mut out = Vec::with_capacity(page.limit.min(256));
        let mut has_more = false;
        let mut push = |row: Row<'_>| -> Result<bool> {
            let (k, v) = row?;
            if out.len() == page.limit {
                has_more = true;
                return Ok(false);
            }
            let seq = k.value().1;
            let rec: MessageRecord = decode("room_seq_to_message", v.value())?;
            // A reply kept to its thread is not part of the room's history.
            if rec.reply_to.is_some() && !rec.also_in_room {
                return Ok(true);
            }
            out.push(senders.message(room, seq, rec)?);
            Ok(true)
        };
        // With only `after`, read forward from it; otherwise read back from
        // the upper bound, so "newest" is the default.
        if page.after.is_some() && page.before.is_none() {
            for row in range {
                if !push(row)? {
                    break;
                }
            }
        } else {
            for row in range.rev() {
                if !push(row)? {
                    break;
                }
            }
            out.reverse();
        }
        Ok((out, has_more))
    }

    pub fn upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        q::upload(&self.txn.open_table(UPLOAD_TO_RECORD)?, id)
    }

    /// Audit entries at or after `since`, newest last, at most `limit`
    /// (the latest ones).
    pub fn audit(&self, since: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        let t = self.txn.open_table(AUDIT_SEQ_TO_ENTRY)?;
        let mut out = Vec::new();
        for row in t.iter()?.rev() {
            let (_, v) = row?;
            let e: AuditEntry = decode("audit_seq_to_entry", v.value())?;
            if e.at < since || out.len() == limit {
                break;
            }
            out.push(e);
        }
        out.reverse();
        Ok(out)
    }

    pub fn retention(&self, room: Id) -> Result<Retention> {
        Ok(self
            .txn
            .open_table(ROOM_TO_RETENTION)?
            .get(room.0)?
            .map(|v| decode("room_to_retention", v.value()))
            .transpose()?
            .unwrap_or_default())
    }

    pub fn token_revoked(&self, token: u128) -> Result<bool> {
        Ok(self.txn.open_table(TOKEN_TO_EXPIRY)?.get(token)?.is_some())
    }

    /// Active mutes of a user: (room or None for everywhere, record).
    pub fn mutes_of(&self, user: Id, now: i64) -> Result<Vec<(Option<Id>, MuteRecord)>> {
        let t = self.txn.open_table(USER_ROOM_TO_MUTE)?;
        let mut out = Vec::new();
        for row in t.range((user.0, 0)..=(user.0, u128::MAX))? {
            let (k, v) = row?;
            let rec: MuteRecord = decode("user_room_to_mute", v.value())?;
            if rec.until > now {
                let room = k.value().1;
                out.push(((room != 0).then_some(Id(room)), rec));
            }
        }
        Ok(out)
    }

    /// All uploads, or one user's, oldest first.
    pub fn uploads(&self, of: Option<Id>) -> Result<Vec<UploadRecord>> {
        let t = self.txn.open_table(UPLOAD_TO_RECORD)?;
        let mut out = Vec::new();
        match of {
            Some(user) => {
                let idx = self.txn.open_table(UPLOADER_UPLOAD_TO_SIZE)?;
                for row in idx.range((user.0, "")..(user.0 + 1, ""))? {
                    let (k, _) = row?;
                    if let Some(r) = q::upload(&t, k.value().1)? {
                        out.push(r);
                    }
                }
            }
            None => {
                for row in t.iter()? {
                    let (_, v) = row?;
                    out.push(decode("upload_to_record", v.value())?);
                }
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// Bytes a user keeps uploaded.
    pub fn uploaded_bytes(&self, user: Id) -> Result<u64> {
        let idx = self.txn.open_table(UPLOADER_UPLOAD_TO_SIZE)?;
        let mut total = 0u64;
        for row in idx.range((user.0, "")..(user.0 + 1, ""))? {
            total = total.saturating_add(row?.1.value());
        }
        Ok(total)
    }

    /// Whether any upload record names this stored file.
    pub fn file_in_use(&self, hash: &str) -> Result<bool> {
        Ok(self.txn.open_table(FILE_TO_REFS)?.get(hash)?.is_some())
    }

    pub fn dm_room(&self, a: Id, b: Id) -> Result<Option<Room>> {
        let t = self.txn.open_table(USER_PAIR_TO_DM)?;
        match t.get(dm_pair(a, b))? {
            Some(id) => self.room(Id(id.value())),
            None => Ok(None),
        }
    }

    fn users_in(
        &self,
        table: TableDefinition<(u128, u128), i64>,
        user: Id,
    ) -> Result<Vec<(User, i64)>> {
        let pairs = q::pairs_of(&self.txn.open_table(table)?, user)?;
        q::users_of(&self.txn.open_table(USER_TO_RECORD)?, pairs)
    }

    fn ids_in(&self, table: TableDefinition<(u128, u128), i64>, user: Id) -> Result<Vec<Id>> {
        q::ids_of(&self.txn.open_table(table)?, user)
    }

    /// The user's friends with the time each friendship began.
    pub fn friends(&self, user: Id) -> Result<Vec<(User, i64)>> {
        self.users_in(USER_FRIEND_TO_SINCE, user)
    }

    pub fn friend_ids(&self, user: Id) -> Result<Vec<Id>> {
        self.ids_in(USER_FRIEND_TO_SINCE, user)
    }

    /// Pending requests the user received, with the time each was sent.
    pub fn incoming_requests(&self, user: Id) -> Result<Vec<(User, i64)>> {
        self.users_in(USER_REQUESTER_TO_SENT, user)
    }

    /// Pending requests the user sent.
    pub fn outgoing_requests(&self, user: Id) -> Result<Vec<(User, i64)>> {
        self.users_in(USER_RECIPIENT_TO_SENT, user)
    }

    /// Users this user blocks.
    pub fn blocked(&self, user: Id) -> Result<Vec<(User, i64)>> {
        self.users_in(USER_BLOCKED_TO_SINCE, user)
    }

    /// Users who block this user.
    pub fn blocker_ids(&self, user: Id) -> Result<Vec<Id>> {
        self.ids_in(USER_BLOCKER_TO_SINCE, user)
    }

    pub fn settings(&self, user: Id) -> Result<UserSettings> {
        q::settings(&self.txn.open_table(USER_TO_SETTINGS)?, user)
    }

    /// Every mute in force: (user, room or None for everywhere, record).
    pub fn mutes(&self, now: i64) -> Result<Vec<(Id, Option<Id>, MuteRecord)>> {
        let t = self.txn.open_table(USER_ROOM_TO_MUTE)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let rec: MuteRecord = decode("user_room_to_mute", v.value())?;
            if rec.until > now {
                let (user, room) = k.value();
                out.push((Id(user), (room != 0).then_some(Id(room)), rec));
            }
        }
        Ok(out)
    }
}
