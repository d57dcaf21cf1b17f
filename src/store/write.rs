//! Writes: what a write transaction can do (`Tx`), run only by the writer.

use super::*;

/// A write transaction inside the writer's group commit.
pub struct Tx {
    pub(super) txn: WriteTransaction,
    pub(super) changes: Vec<Change>,
    /// When the operation being applied was submitted: every time it
    /// stores comes from here, never from the clock, so that applying the
    /// same operation again gives the same result.
    pub(super) now: i64,
    /// For reading the last committed state (`file_unreferenced`).
    pub(super) db: Arc<Database>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewUser {
    pub id: Id,
    pub username: String,
    pub role: Role,
    pub password_hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewRoom {
    pub id: Id,
    pub name: String,
    pub visibility: Visibility,
    pub topic: String,
    pub owner: Option<Id>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewMessage {
    pub id: Id,
    pub room: Id,
    pub sender: Id,
    pub text: String,
    pub attachments: Vec<crate::domain::Attachment>,
    pub client_msg_id: Option<String>,
    /// Who it mentions, as `Tx::mentions_in` found them.
    #[serde(default)]
    pub mentions: Vec<Id>,
    /// An incoming webhook's `username` for this message.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The thread's root, already checked (`Tx::reply_root`).
    #[serde(default)]
    pub reply_to: Option<Id>,
    #[serde(default)]
    pub also_in_room: bool,
}

impl Tx {
    /// The operation's time (ms since the epoch), fixed when it was
    /// submitted.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Runs one operation as of `at`. An operation checks before it
    /// writes, so a failed one has written nothing; the changes it
    /// announced before failing are taken back with it.
    pub(super) fn attempt<T>(
        &mut self,
        at: i64,
        op: impl FnOnce(&mut Tx) -> Result<T>,
    ) -> Result<T> {
        self.now = at;
        let mark = self.changes.len();
        let mut result = op(self);
        // The webhook events of what the operation changed, in its own
        // transaction: an outbox that cannot miss a change or run ahead of it.
        if result.is_ok()
            && let Err(e) = super::webhooks::on_changes(self, mark)
        {
            result = Err(e);
        }
        if result.is_err() {
            self.changes.truncate(mark);
        }
        result
    }

    pub fn emit(&mut self, change: Change) {
        self.changes.push(change);
    }

    pub fn user(&self, id: Id) -> Result<Option<UserRecord>> {
        q::user(&self.txn.open_table(USER_TO_RECORD)?, id)
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>> {
        let id = q::user_id_by_name(&self.txn.open_table(USERNAME_TO_USER)?, name)?;
        match id {
            Some(id) => self.user(id),
            None => Ok(None),
        }
    }

    pub fn room(&self, id: Id) -> Result<Option<Room>> {
        q::room(&self.txn.open_table(ROOM_TO_RECORD)?, id)
    }

    pub fn member(&self, room: Id, user: Id) -> Result<Option<MemberRecord>> {
        q::member(&self.txn.open_table(ROOM_USER_TO_MEMBER)?, room, user)
    }

    pub fn member_ids(&self, room: Id) -> Result<Vec<Id>> {
        q::member_ids(&self.txn.open_table(ROOM_USER_TO_MEMBER)?, room)
    }

    pub fn create_user(&mut self, new: NewUser) -> Result<UserRecord> {
        let mut names = self.txn.open_table(USERNAME_TO_USER)?;
        if names.get(new.username.as_str())?.is_some() {
            return Err(StoreError::Conflict("username is taken".into()));
        }
        let rec = UserRecord {
            id: new.id,
            username: new.username,
            role: new.role,
            password_hash: new.password_hash,
            created_at: self.now,
            banned_until: None,
            ban_reason: None,
            token_gen: 0,
            avatar: None,
            bot: false,
        };
        names.insert(rec.username.as_str(), rec.id.0)?;
        self.txn
            .open_table(USER_TO_RECORD)?
            .insert(rec.id.0, encode(&rec).as_slice())?;
        drop(names);
        self.emit(Change::UserRegistered(rec.public()));
        Ok(rec)
    }

    /// Ends every token of the user issued so far: the generation moves on
    /// (in the caller's record, which the caller then writes).
    pub fn revoke_tokens(&mut self, rec: &mut UserRecord, why: Revocation) {
        rec.token_gen = rec.token_gen.wrapping_add(1);
        self.emit(Change::TokensRevoked { user: rec.id, why });
    }

    /// Ends one token, remembered until it would have expired.
    pub fn revoke_token(&mut self, user: Id, token: u128, expiry_secs: u64) -> Result<()> {
        self.txn
            .open_table(TOKEN_TO_EXPIRY)?
            .insert(token, expiry_secs)?;
        self.emit(Change::TokenRevoked { user, token });
        Ok(())
    }

    /// Forgets revoked tokens that have expired by now; returns how many.
    pub fn prune_revoked_tokens(&mut self, now_secs: u64) -> Result<usize> {
        let mut t = self.txn.open_table(TOKEN_TO_EXPIRY)?;
        let before = t.len()?;
        t.retain(|_, exp| exp > now_secs)?;
        Ok((before - t.len()?) as usize)
    }

    pub fn put_user(&mut self, rec: &UserRecord) -> Result<()> {
        self.txn
            .open_table(USER_TO_RECORD)?
            .insert(rec.id.0, encode(rec).as_slice())?;
        self.emit(Change::UserUpdated(rec.public()));
        Ok(())
    }

    /// Removes the account and its memberships; its messages stay, shown as
    /// from a deleted user.
    pub fn delete_user(&mut self, id: Id) -> Result<UserRecord> {
        let rec = self.user(id)?.ok_or(StoreError::NotFound("user"))?;
        self.txn.open_table(USER_TO_RECORD)?.remove(id.0)?;
        self.txn
            .open_table(USERNAME_TO_USER)?
            .remove(rec.username.as_str())?;
        let room_ids = q::room_ids_of(&self.txn.open_table(USER_ROOM_TO_JOINED)?, id)?;
        for room in room_ids {
            self.txn
                .open_table(ROOM_USER_TO_MEMBER)?
                .remove((room.0, id.0))?;
            self.txn
                .open_table(USER_ROOM_TO_JOINED)?
                .remove((id.0, room.0))?;
        }
        let me = rec.public();
        let users = self.txn.open_table(USER_TO_RECORD)?;
        let others = |table| -> Result<Vec<User>> {
            let pairs = q::pairs_of(&self.txn.open_table(table)?, id)?;
            Ok(q::users_of(&users, pairs)?
                .into_iter()
                .map(|(u, _)| u)
                .collect())
        };
        let friends = others(USER_FRIEND_TO_SINCE)?;
        let incoming = others(USER_REQUESTER_TO_SENT)?;
        let outgoing = others(USER_RECIPIENT_TO_SENT)?;
        let blocked = others(USER_BLOCKED_TO_SINCE)?;
        drop(users);
        // Those who knew this user as a friend or a pending request hear
        // that it ended, so their lists need no refresh.
        for other in friends {
            self.remove_friend(&me, &other)?;
        }
        for other in incoming {
            self.end_request(&other, &me, true)?;
        }
        for other in outgoing {
            self.end_request(&me, &other, false)?;
        }
        // Requests this user never saw exist only from users it blocks.
        for other in blocked {
            self.end_request(&other, &me, true)?;
        }
        // Blocks end silently: nobody was told of them in the first place.
        for (forward, backward) in [
            (USER_BLOCKED_TO_SINCE, USER_BLOCKER_TO_SINCE),
            (USER_BLOCKER_TO_SINCE, USER_BLOCKED_TO_SINCE),
        ] {
            let mut f = self.txn.open_table(forward)?;
            let mut b = self.txn.open_table(backward)?;
            for (other, _) in q::pairs_of(&f, id)? {
                f.remove((id.0, other.0))?;
                b.remove((other.0, id.0))?;
            }
        }
        self.txn.open_table(USER_TO_SETTINGS)?.remove(id.0)?;
        self.emit(Change::UserDeleted(id));
        Ok(rec)
    }

    pub fn create_room(&mut self, new: NewRoom) -> Result<Room> {
        let mut names = self.txn.open_table(ROOMNAME_TO_ROOM)?;
        if names.get(new.name.as_str())?.is_some() {
            return Err(StoreError::Conflict("a room with that name exists".into()));
        }
        let room = Room {
            id: new.id,
            name: new.name,
            kind: RoomKind::Room,
            visibility: new.visibility,
            topic: new.topic,
            owner: new.owner,
            created_at: self.now,
        };
        names.insert(room.name.as_str(), room.id.0)?;
        drop(names);
        self.txn
            .open_table(ROOM_TO_RECORD)?
            .insert(room.id.0, encode(&room).as_slice())?;
        let mut members = Vec::new();
        if let Some(owner) = new.owner
            && let Some(user) = self.user(owner)?
        {
            self.insert_member(room.id, user.id)?;
            members.push(user.public());
        }
        let ids: Vec<Id> = members.iter().map(|m| m.id).collect();
        self.emit(Change::RoomCreated {
            room: room.clone(),
            members,
        });
        self.emit_unread(room.id, &ids)?;
        Ok(room)
    }

    /// Moves an ordinary room's entry in the name index; the caller stores
    /// the room under its new name.
    pub fn rename_room(&mut self, room: &Room, name: &str) -> Result<()> {
        if room.kind != RoomKind::Room {
            return Err(StoreError::Forbidden(
                "direct messages cannot be renamed".into(),
            ));
        }
        let mut names = self.txn.open_table(ROOMNAME_TO_ROOM)?;
        if names.get(name)?.is_some() {
            return Err(StoreError::Conflict("a room with that name exists".into()));
        }
        names.remove(room.name.as_str())?;
        names.insert(name, room.id.0)?;
        Ok(())
    }

    pub fn put_room(&mut self, room: &Room) -> Result<()> {
        self.txn
            .open_table(ROOM_TO_RECORD)?
            .insert(room.id.0, encode(room).as_slice())?;
        self.emit(Change::RoomUpdated(room.clone()));
        Ok(())
    }

    /// Deletes the room with its memberships and history.
    pub fn delete_room(&mut self, id: Id) -> Result<Room> {
        let room = self.room(id)?.ok_or(StoreError::NotFound("room"))?;
        let members = q::member_ids(&self.txn.open_table(ROOM_USER_TO_MEMBER)?, id)?;
        {
            let mut m = self.txn.open_table(ROOM_USER_TO_MEMBER)?;
            let mut j = self.txn.open_table(USER_ROOM_TO_JOINED)?;
            for user in &members {
                m.remove((id.0, user.0))?;
                j.remove((user.0, id.0))?;
            }
        }
        let mut removed = Vec::new();
        let mut seqs = Vec::new();
        {
            let mut msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
            for row in msgs.extract_from_if((id.0, 0)..=(id.0, u64::MAX), |_, _| true)? {
                let (k, v) = row?;
                seqs.push(k.value().1);
                removed.push(decode::<MessageRecord>("room_seq_to_message", v.value())?);
            }
        }
        for (seq, rec) in seqs.iter().zip(&removed) {
            self.index_mentions(id, *seq, &[], &rec.mentions)?;
        }
        self.forget_room_threads(id)?;
        self.forget_messages(&removed)?;
        self.txn.open_table(ROOM_TO_LAST_SEQ)?.remove(id.0)?;
        self.txn.open_table(ROOM_TO_RECORD)?.remove(id.0)?;
        if room.kind == RoomKind::Room {
            self.txn
                .open_table(ROOMNAME_TO_ROOM)?
                .remove(room.name.as_str())?;
        } else if let [a, b] = members.as_slice() {
            self.txn
                .open_table(USER_PAIR_TO_DM)?
                .remove(dm_pair(*a, *b))?;
        }
        self.emit(Change::RoomDeleted {
            room: room.clone(),
            members,
        });
        Ok(room)
    }

    /// A new member has read what came before they joined: history is
    /// theirs to read, not a backlog to clear.
    fn insert_member(&mut self, room: Id, user: Id) -> Result<()> {
        let now = self.now;
        let rec = MemberRecord {
            joined_at: now,
            last_read: self.last_seq(room)?,
        };
        self.txn
            .open_table(ROOM_USER_TO_MEMBER)?
            .insert((room.0, user.0), encode(&rec).as_slice())?;
        self.txn
            .open_table(USER_ROOM_TO_JOINED)?
            .insert((user.0, room.0), now)?;
        Ok(())
    }

    /// Adds a member; returns false if they already were one.
    pub fn add_member(&mut self, room: &Room, user: &User) -> Result<bool> {
        if self.member(room.id, user.id)?.is_some() {
            return Ok(false);
        }
        self.insert_member(room.id, user.id)?;
        self.emit(Change::MemberAdded {
            room: room.clone(),
            user: user.clone(),
        });
        self.emit_unread(room.id, &[user.id])?;
        Ok(true)
    }

    /// Removes a member; returns false if they were not one.
    pub fn remove_member(&mut self, room: &Room, user: &User) -> Result<bool> {
        let removed = self
            .txn
            .open_table(ROOM_USER_TO_MEMBER)?
            .remove((room.id.0, user.id.0))?
            .is_some();
        if !removed {
            return Ok(false);
        }
        self.txn
            .open_table(USER_ROOM_TO_JOINED)?
            .remove((user.id.0, room.id.0))?;
        self.emit(Change::MemberRemoved {
            room: room.clone(),
            user: user.clone(),
        });
        Ok(true)
    }

    /// The DM room of two users, made on first use.
    /// The DM room of `a` and `b`, made with `id` if they have none.
    pub fn dm_room(&mut self, a: &User, b: &User, id: Id) -> Result<Room> {
        let pair = dm_pair(a.id, b.id);
        let existing = self
            .txn
            .open_table(USER_PAIR_TO_DM)?
            .get(pair)?
            .map(|v| Id(v.value()));
        if let Some(id) = existing
            && let Some(room) = self.room(id)?
        {
            return Ok(room);
        }
        let (first, second) = if a.username <= b.username {
            (a, b)
        } else {
            (b, a)
        };
        let room = Room {
            id,
            name: format!("{},{}", first.username, second.username),
            kind: RoomKind::Dm,
            visibility: Visibility::Private,
            topic: String::new(),
            owner: Some(a.id),
            created_at: self.now,
        };
        self.txn
            .open_table(ROOM_TO_RECORD)?
            .insert(room.id.0, encode(&room).as_slice())?;
        self.txn
            .open_table(USER_PAIR_TO_DM)?
            .insert(pair, room.id.0)?;
        self.insert_member(room.id, a.id)?;
        let mut members = vec![a.clone()];
        if a.id != b.id {
            self.insert_member(room.id, b.id)?;
            members.push(b.clone());
        }
        let ids: Vec<Id> = members.iter().map(|m| m.id).collect();
        self.emit(Change::RoomCreated {
            room: room.clone(),
            members,
        });
        self.emit_unread(room.id, &ids)?;
        Ok(room)
    }

    /// Appends a message with the room's next seq: `(message, true)`. If
    /// this sender already sent one with the same `client_msg_id`, nothing
    /// is written and that earlier message comes back: `(earlier, false)`.
    pub fn append_message(&mut self, new: NewMessage) -> Result<(Message, bool)> {
        if let Some(cid) = &new.client_msg_id {
            let existing = self
                .txn
                .open_table(SENDER_CLIENT_ID_TO_MESSAGE)?
                .get((new.sender.0, cid.as_str()))?
                .map(|v| Id(v.value()));
            if let Some(id) = existing
                && let Some(msg) = self.message(id)?
            {
                return Ok((msg, false));
            }
        }
        let users = self.txn.open_table(USER_TO_RECORD)?;
        let sender = SenderCache::new(&users).get(new.sender)?;
        drop(users);
        let mut last = self.txn.open_table(ROOM_TO_LAST_SEQ)?;
        let seq = q::last_seq(&last, new.room)? + 1;
        last.insert(new.room.0, seq)?;
        drop(last);
        self.count_attachments(&new.attachments, 1)?;
        let rec = MessageRecord {
            id: new.id,
            sender: new.sender,
            text: new.text,
            attachments: new.attachments,
            created_at: self.now,
            edited_at: None,
            deleted: false,
            client_msg_id: new.client_msg_id,
            mentions: new.mentions,
            bot: sender.bot,
            display_name: new.display_name,
            reply_to: new.reply_to,
            reply_count: 0,
            last_reply_at: None,
            also_in_room: new.reply_to.is_some() && new.also_in_room,
            previews: Vec::new(),
        };
        // A reply kept to its thread counts in the thread, not the room.
        let thread_only = rec.reply_to.is_some() && !rec.also_in_room;
        if !thread_only {
            self.index_mentions(new.room, seq, &rec.mentions, &[])?;
        }
        self.txn
            .open_table(ROOM_SEQ_TO_MESSAGE)?
            .insert((new.room.0, seq), encode(&rec).as_slice())?;
        self.txn
            .open_table(MESSAGE_TO_ROOM_SEQ)?
            .insert(rec.id.0, (new.room.0, seq))?;
        if let Some(cid) = &rec.client_msg_id {
            self.txn
                .open_table(SENDER_CLIENT_ID_TO_MESSAGE)?
                .insert((new.sender.0, cid.as_str()), rec.id.0)?;
        }
        let msg = Message {
            id: rec.id,
            room: new.room,
            seq,
            sender,
            text: rec.text,
            attachments: rec.attachments,
            created_at: rec.created_at,
            edited_at: None,
            deleted: false,
            client_msg_id: rec.client_msg_id,
            mentions: rec.mentions,
            bot: rec.bot,
            display_name: rec.display_name,
            reply_to: rec.reply_to,
            reply_count: 0,
            last_reply_at: None,
            also_in_room: rec.also_in_room,
            reactions: Vec::new(),
            pinned: false,
            previews: Vec::new(),
        };
        self.journal([msg.id])?;
        self.emit(Change::MessageCreated(msg.clone()));
        Ok((msg, true))
    }

    pub fn message(&self, id: Id) -> Result<Option<Message>> {
        q::message(
            &self.txn.open_table(MESSAGE_TO_ROOM_SEQ)?,
            &self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?,
            &self.txn.open_table(USER_TO_RECORD)?,
            id,
        )
    }

    pub(super) fn put_message(&mut self, msg: &Message) -> Result<()> {
        let rec = MessageRecord {
            id: msg.id,
            sender: msg.sender.id,
            text: msg.text.clone(),
            attachments: msg.attachments.clone(),
            created_at: msg.created_at,
            edited_at: msg.edited_at,
            deleted: msg.deleted,
            client_msg_id: msg.client_msg_id.clone(),
            mentions: msg.mentions.clone(),
            bot: msg.bot,
            display_name: msg.display_name.clone(),
            reply_to: msg.reply_to,
            reply_count: msg.reply_count,
            last_reply_at: msg.last_reply_at,
            also_in_room: msg.also_in_room,
            previews: msg.previews.clone(),
        };
        self.txn
            .open_table(ROOM_SEQ_TO_MESSAGE)?
            .insert((msg.room.0, msg.seq), encode(&rec).as_slice())?;
        self.journal([msg.id])
    }

    /// `mentions`: who the new text mentions. Those it stops or starts
    /// mentioning get fresh counts (after the update itself).
    pub fn edit_message(
        &mut self,
        mut msg: Message,
        text: String,
        mentions: Vec<Id>,
    ) -> Result<Message> {
        let gone: Vec<Id> = msg
            .mentions
            .iter()
            .filter(|u| !mentions.contains(u))
            .copied()
            .collect();
        let new: Vec<Id> = mentions
            .iter()
            .filter(|u| !msg.mentions.contains(u))
            .copied()
            .collect();
        if msg.thread_only() {
            self.index_mentions(msg.room, msg.seq, &[], &gone)?;
        } else {
            self.index_mentions(msg.room, msg.seq, &new, &gone)?;
        }
        msg.text = text;
        msg.edited_at = Some(self.now);
        msg.mentions = mentions;
        self.put_message(&msg)?;
        self.decorate(&mut msg)?;
        self.emit(Change::MessageUpdated(msg.clone()));
        let mut moved = gone;
        moved.extend(new);
        let behind = self.behind(msg.room, msg.seq)?;
        moved.retain(|u| behind.contains(u));
        self.emit_unread(msg.room, &moved)?;
        Ok(msg)
    }

    /// Blanks a message; it keeps its seq so history has no holes.
    pub fn delete_message(&mut self, mut msg: Message) -> Result<Message> {
        self.count_attachments(&msg.attachments, -1)?;
        let mentioned = std::mem::take(&mut msg.mentions);
        self.index_mentions(msg.room, msg.seq, &[], &mentioned)?;
        msg.text = String::new();
        msg.attachments.clear();
        msg.previews.clear();
        msg.deleted = true;
        self.put_message(&msg)?;
        self.strip_message(&msg)?;
        self.emit(Change::MessageDeleted {
            room: msg.room,
            id: msg.id,
            seq: msg.seq,
        });
        // It counted for everyone behind it but its sender.
        let mut behind = self.behind(msg.room, msg.seq)?;
        behind.retain(|u| *u != msg.sender.id);
        self.emit_unread(msg.room, &behind)?;
        self.on_reply_deleted(&msg)?;
        Ok(msg)
    }

    pub fn upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        q::upload(&self.txn.open_table(UPLOAD_TO_RECORD)?, id)
    }

    pub fn insert_upload(&mut self, rec: &UploadRecord) -> Result<()> {
        self.txn
            .open_table(UPLOAD_TO_RECORD)?
            .insert(rec.id.as_str(), encode(rec).as_slice())?;
        self.txn
            .open_table(UPLOADER_UPLOAD_TO_SIZE)?
            .insert((rec.uploader.0, rec.id.as_str()), rec.size)?;
        let mut refs = self.txn.open_table(FILE_TO_REFS)?;
        for hash in [&rec.file, &rec.thumb]
            .into_iter()
            .filter(|h| !h.is_empty())
        {
            let n = refs.get(hash.as_str())?.map(|v| v.value()).unwrap_or(0);
            refs.insert(hash.as_str(), n + 1)?;
        }
        Ok(())
    }

    /// Whether no upload record names the stored file `hash`, neither in
    /// this group (earlier operations' writes included) nor in the last
    /// commit: a file removed on this answer is unnamed whether the group
    /// then commits or fails.
    pub fn file_unreferenced(&self, hash: &str) -> Result<bool> {
        let here = self.txn.open_table(FILE_TO_REFS)?.get(hash)?.is_none();
        let committed = self
            .db
            .begin_read()?
            .open_table(FILE_TO_REFS)?
            .get(hash)?
            .is_none();
        Ok(here && committed)
    }

    /// Removes an upload record; returns it with the stored files that no
    /// record names any more (candidates for `file_unreferenced` once this
    /// commits).
    pub fn delete_upload(&mut self, id: &str) -> Result<(UploadRecord, Vec<String>)> {
        let rec = self.upload(id)?.ok_or(StoreError::NotFound("upload"))?;
        self.txn.open_table(UPLOAD_TO_RECORD)?.remove(id)?;
        self.txn
            .open_table(UPLOADER_UPLOAD_TO_SIZE)?
            .remove((rec.uploader.0, id))?;
        let mut refs = self.txn.open_table(FILE_TO_REFS)?;
        let mut orphaned = Vec::new();
        for hash in [&rec.file, &rec.thumb]
            .into_iter()
            .filter(|h| !h.is_empty())
        {
            let n = refs.get(hash.as_str())?.map(|v| v.value()).unwrap_or(0);
            if n <= 1 {
                refs.remove(hash.as_str())?;
                if !orphaned.contains(hash) {
                    orphaned.push(hash.clone());
                }
            } else {
                refs.insert(hash.as_str(), n - 1)?;
            }
        }
        Ok((rec, orphaned))
    }

    /// The attachments for a message, from upload ids that must exist and
    /// belong to the sender. Checks only: call `count_attachments` once the
    /// message is certain to be stored.
    pub fn resolve_attachments(
        &self,
        sender: Id,
        ids: &[String],
    ) -> Result<Vec<crate::domain::Attachment>> {
        let t = self.txn.open_table(UPLOAD_TO_RECORD)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match q::upload(&t, id)? {
                Some(rec) if rec.uploader == sender => out.push(rec.attachment()),
                // Someone else's upload is as unknown as a missing one.
                _ => {
                    return Err(StoreError::Invalid(format!(
                        "attachments: unknown upload id {id:?}"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Clears what points at messages whose rows are gone (room deletion,
    /// retention): the id index, client ids, and their uploads' counts.
    fn forget_messages(&mut self, records: &[MessageRecord]) -> Result<()> {
        self.forget_reactions_and_pins(records.iter().map(|r| r.id))?;
        let mut attached = Vec::new();
        {
            let mut index = self.txn.open_table(MESSAGE_TO_ROOM_SEQ)?;
            let mut cids = self.txn.open_table(SENDER_CLIENT_ID_TO_MESSAGE)?;
            for rec in records {
                index.remove(rec.id.0)?;
                if let Some(cid) = &rec.client_msg_id {
                    cids.remove((rec.sender.0, cid.as_str()))?;
                }
                attached.extend(rec.attachments.iter().cloned());
            }
        }
        self.journal(records.iter().map(|r| r.id))?;
        self.count_attachments(&attached, -1)
    }

    /// Makes one of the user's own uploads their picture, or none. The
    /// picture counts as a use of its upload, like a message carrying it,
    /// so unused-upload collection leaves it alone.
    pub fn set_avatar(&mut self, user: Id, upload: Option<String>) -> Result<UserRecord> {
        let mut rec = self.user(user)?.ok_or(StoreError::NotFound("user"))?;
        if rec.avatar == upload {
            return Ok(rec);
        }
        let new = match &upload {
            Some(id) => self.resolve_attachments(user, std::slice::from_ref(id))?,
            None => Vec::new(),
        };
        let old = match &rec.avatar {
            Some(id) => q::upload(&self.txn.open_table(UPLOAD_TO_RECORD)?, id)?
                .map(|u| vec![u.attachment()])
                .unwrap_or_default(),
            None => Vec::new(),
        };
        self.count_attachments(&old, -1)?;
        self.count_attachments(&new, 1)?;
        rec.avatar = upload;
        self.put_user(&rec)?;
        Ok(rec)
    }

    /// Adds `delta` to the message count of each attached upload.
    fn count_attachments(
        &mut self,
        attachments: &[crate::domain::Attachment],
        delta: i64,
    ) -> Result<()> {
        if attachments.is_empty() {
            return Ok(());
        }
        let mut t = self.txn.open_table(UPLOAD_TO_RECORD)?;
        for a in attachments {
            let rec: Option<UploadRecord> = q::upload(&t, &a.id)?;
            if let Some(mut rec) = rec {
                rec.refs = rec.refs.saturating_add_signed(delta);
                t.insert(rec.id.as_str(), encode(&rec).as_slice())?;
            }
        }
        Ok(())
    }

    /// Appends to the audit log; its seq is the next after the last.
    pub fn audit(&mut self, mut entry: AuditEntry) -> Result<()> {
        let mut t = self.txn.open_table(AUDIT_SEQ_TO_ENTRY)?;
        let seq = t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
        entry.seq = seq;
        t.insert(seq, encode(&entry).as_slice())?;
        Ok(())
    }

    pub fn set_mute(&mut self, user: Id, room: Option<Id>, rec: &MuteRecord) -> Result<()> {
        self.txn.open_table(USER_ROOM_TO_MUTE)?.insert(
            (user.0, room.map(|r| r.0).unwrap_or(0)),
            encode(rec).as_slice(),
        )?;
        Ok(())
    }

    /// Returns whether there was a mute to lift.
    pub fn clear_mute(&mut self, user: Id, room: Option<Id>) -> Result<bool> {
        Ok(self
            .txn
            .open_table(USER_ROOM_TO_MUTE)?
            .remove((user.0, room.map(|r| r.0).unwrap_or(0)))?
            .is_some())
    }

    /// Whether `user` may not speak in `room` now (muted there or
    /// everywhere).
    pub fn muted(&self, user: Id, room: Id, now: i64) -> Result<bool> {
        let t = self.txn.open_table(USER_ROOM_TO_MUTE)?;
        for key in [(user.0, 0), (user.0, room.0)] {
            if let Some(v) = t.get(key)? {
                let rec: MuteRecord = decode("user_room_to_mute", v.value())?;
                if rec.until > now {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    pub fn set_retention(&mut self, room: Id, r: &Retention) -> Result<()> {
        let mut t = self.txn.open_table(ROOM_TO_RETENTION)?;
        if *r == Retention::default() {
            t.remove(room.0)?;
        } else {
            t.insert(room.0, encode(r).as_slice())?;
        }
        Ok(())
    }

    /// Removes up to `max` of a room's oldest messages that were created
    /// before `before_ms` or have a seq up to `up_to_seq`. Returns how many
    /// went. Their seqs stay used: history starts later, with no reuse.
    pub fn prune_room(
        &mut self,
        room: Id,
        before_ms: Option<i64>,
        up_to_seq: Option<u64>,
        max: usize,
    ) -> Result<usize> {
        let mut doomed: Vec<(u64, MessageRecord)> = Vec::new();
        {
            let msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
            for row in msgs.range((room.0, 0)..=(room.0, u64::MAX))? {
                let (k, v) = row?;
                let seq = k.value().1;
                let rec: MessageRecord = decode("room_seq_to_message", v.value())?;
                let old = before_ms.is_some_and(|b| rec.created_at < b);
                let over = up_to_seq.is_some_and(|u| seq <= u);
                if !(old || over) || doomed.len() == max {
                    break;
                }
                doomed.push((seq, rec));
            }
        }
        // A thread goes with its root.
        self.add_threads_of(room, &mut doomed)?;
        {
            let mut msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
            for (seq, _) in &doomed {
                msgs.remove((room.0, *seq))?;
            }
        }
        self.forget_threads_of(room, &doomed)?;
        for (seq, rec) in &doomed {
            self.index_mentions(room, *seq, &[], &rec.mentions)?;
        }
        let last_gone = doomed.iter().map(|(seq, _)| *seq).max();
        let records: Vec<MessageRecord> = doomed.into_iter().map(|(_, rec)| rec).collect();
        self.forget_messages(&records)?;
        // Messages someone had not read may have gone with them.
        if let Some(seq) = last_gone {
            let behind = self.behind(room, seq)?;
            self.emit_unread(room, &behind)?;
        }
        Ok(records.len())
    }

    pub fn last_seq(&self, room: Id) -> Result<u64> {
        q::last_seq(&self.txn.open_table(ROOM_TO_LAST_SEQ)?, room)
    }

    pub fn are_friends(&self, a: Id, b: Id) -> Result<bool> {
        q::has_pair(&self.txn.open_table(USER_FRIEND_TO_SINCE)?, a, b)
    }

    /// Whether `requester` asked `recipient` and the recipient can see it.
    pub fn has_incoming(&self, recipient: Id, requester: Id) -> Result<bool> {
        q::has_pair(
            &self.txn.open_table(USER_REQUESTER_TO_SENT)?,
            recipient,
            requester,
        )
    }

    /// Whether `requester` has a request to `recipient` pending, delivered
    /// or not.
    pub fn has_outgoing(&self, requester: Id, recipient: Id) -> Result<bool> {
        q::has_pair(
            &self.txn.open_table(USER_RECIPIENT_TO_SENT)?,
            requester,
            recipient,
        )
    }

    pub fn blocks(&self, blocker: Id, blocked: Id) -> Result<bool> {
        q::has_pair(
            &self.txn.open_table(USER_BLOCKED_TO_SINCE)?,
            blocker,
            blocked,
        )
    }

    pub fn settings(&self, user: Id) -> Result<UserSettings> {
        q::settings(&self.txn.open_table(USER_TO_SETTINGS)?, user)
    }

    pub fn put_settings(&mut self, user: Id, settings: &UserSettings) -> Result<()> {
        self.txn
            .open_table(USER_TO_SETTINGS)?
            .insert(user.0, encode(settings).as_slice())?;
        Ok(())
    }

    /// Records a pending request. `deliver` false keeps it on the sender's
    /// side only; true also shows it to the recipient (once).
    pub fn put_request(&mut self, requester: &User, recipient: &User, deliver: bool) -> Result<()> {
        let now = self.now;
        if !self.has_outgoing(requester.id, recipient.id)? {
            self.txn
                .open_table(USER_RECIPIENT_TO_SENT)?
                .insert((requester.id.0, recipient.id.0), now)?;
        }
        if deliver && !self.has_incoming(recipient.id, requester.id)? {
            self.txn
                .open_table(USER_REQUESTER_TO_SENT)?
                .insert((recipient.id.0, requester.id.0), now)?;
            self.emit(Change::FriendRequested {
                requester: requester.clone(),
                recipient: recipient.clone(),
            });
        }
        Ok(())
    }

    /// Drops a pending request; false if there was none. The event goes
    /// to the side whose list loses it: the requester for a decline, the
    /// recipient (if they saw it) for a withdrawal.
    pub fn end_request(
        &mut self,
        requester: &User,
        recipient: &User,
        declined: bool,
    ) -> Result<bool> {
        let sent = self
            .txn
            .open_table(USER_RECIPIENT_TO_SENT)?
            .remove((requester.id.0, recipient.id.0))?
            .is_some();
        let seen = self
            .txn
            .open_table(USER_REQUESTER_TO_SENT)?
            .remove((recipient.id.0, requester.id.0))?
            .is_some();
        if (declined && sent) || (!declined && seen) {
            self.emit(Change::FriendRequestEnded {
                requester: requester.clone(),
                recipient: recipient.clone(),
                declined,
            });
        }
        Ok(sent || seen)
    }

    /// Takes a request out of its recipient's sight, leaving it pending on
    /// the requester's side; false if the recipient did not see one.
    pub fn hide_request(&mut self, requester: &User, recipient: &User) -> Result<bool> {
        let seen = self
            .txn
            .open_table(USER_REQUESTER_TO_SENT)?
            .remove((recipient.id.0, requester.id.0))?
            .is_some();
        if seen {
            self.emit(Change::FriendRequestEnded {
                requester: requester.clone(),
                recipient: recipient.clone(),
                declined: false,
            });
        }
        Ok(seen)
    }

    /// Makes two users friends, consuming the requests between them.
    pub fn add_friend(&mut self, accepter: &User, requester: &User) -> Result<()> {
        let (a, b) = (accepter.id.0, requester.id.0);
        {
            let mut incoming = self.txn.open_table(USER_REQUESTER_TO_SENT)?;
            incoming.remove((a, b))?;
            incoming.remove((b, a))?;
            let mut outgoing = self.txn.open_table(USER_RECIPIENT_TO_SENT)?;
            outgoing.remove((a, b))?;
            outgoing.remove((b, a))?;
            let mut friends = self.txn.open_table(USER_FRIEND_TO_SINCE)?;
            let now = self.now;
            friends.insert((a, b), now)?;
            friends.insert((b, a), now)?;
        }
        self.emit(Change::FriendAdded {
            accepter: accepter.clone(),
            requester: requester.clone(),
        });
        Ok(())
    }

    /// Ends a friendship; false if there was none.
    pub fn remove_friend(&mut self, by: &User, other: &User) -> Result<bool> {
        let removed = {
            let mut friends = self.txn.open_table(USER_FRIEND_TO_SINCE)?;
            let one = friends.remove((by.id.0, other.id.0))?.is_some();
            let two = friends.remove((other.id.0, by.id.0))?.is_some();
            one || two
        };
        if removed {
            self.emit(Change::FriendRemoved {
                by: by.clone(),
                other: other.clone(),
            });
        }
        Ok(removed)
    }

    /// Records a block; false if it existed.
    pub fn block(&mut self, blocker: Id, blocked: Id) -> Result<bool> {
        if self.blocks(blocker, blocked)? {
            return Ok(false);
        }
        let now = self.now;
        self.txn
            .open_table(USER_BLOCKED_TO_SINCE)?
            .insert((blocker.0, blocked.0), now)?;
        self.txn
            .open_table(USER_BLOCKER_TO_SINCE)?
            .insert((blocked.0, blocker.0), now)?;
        self.emit(Change::Blocked { blocker, blocked });
        Ok(true)
    }

    /// Lifts a block; false if there was none.
    pub fn unblock(&mut self, blocker: Id, blocked: Id) -> Result<bool> {
        let removed = self
            .txn
            .open_table(USER_BLOCKED_TO_SINCE)?
            .remove((blocker.0, blocked.0))?
            .is_some();
        if !removed {
            return Ok(false);
        }
        self.txn
            .open_table(USER_BLOCKER_TO_SINCE)?
            .remove((blocked.0, blocker.0))?;
        self.emit(Change::Unblocked { blocker, blocked });
        Ok(true)
    }

    /// Moves the member's read marker forward (never back).
    pub fn mark_read(&mut self, room: Id, user: &User, seq: u64) -> Result<u64> {
        let mut m = self.txn.open_table(ROOM_USER_TO_MEMBER)?;
        let mut rec: MemberRecord = match m.get((room.0, user.id.0))? {
            Some(v) => decode("room_user_to_member", v.value())?,
            None => return Err(StoreError::Forbidden("not a member of this room".into())),
        };
        if seq > rec.last_read {
            rec.last_read = seq;
            m.insert((room.0, user.id.0), encode(&rec).as_slice())?;
            drop(m);
            let hidden_from = q::ids_of(&self.txn.open_table(USER_BLOCKER_TO_SINCE)?, user.id)?;
            self.emit(Change::Read {
                room,
                user: user.clone(),
                seq,
                hidden_from,
            });
            self.emit_unread(room, &[user.id])?;
        }
        Ok(rec.last_read)
    }
}
