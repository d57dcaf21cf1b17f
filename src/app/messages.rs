//! Messages: sending, editing, deleting, history and read markers, and
//! the rules of who may post where.

use super::*;

impl App {
    pub async fn send_message(&self, sender: &User, input: SendInput) -> Result<Message> {
        if !self.limits.messages.take(&sender.id) {
            return Err(AppError::RateLimited("sending too fast; slow down".into()));
        }
        let max = self.config.uploads.max_per_message;
        if input.attachments.len() > max {
            return Err(AppError::BadRequest(format!(
                "attachments: at most {max} per message"
            )));
        }
        // A message may be only its attachments.
        let text = MessageText::parse(
            &input.text,
            self.config.limits.max_message_chars,
            !input.attachments.is_empty(),
        )?
        .into_string();
        let upload_ids = input.attachments;
        let sender = sender.clone();
        let cid = input.client_msg_id.map(|c| c.as_str().to_string());
        let peer = match &input.target {
            Target::User(name) => Some(
                self.store
                    .read()?
                    .user_by_name(name.as_str())?
                    .ok_or(AppError::NotFound("user"))?
                    .public(),
            ),
            Target::Room(_) => None,
        };
        let target = input.target;
        let default_policy = self.config.server.dm_policy;
        // Made before the write, used if it needs them.
        let (message_id, dm_id) = (Id::new(), Id::new());
        let (msg, _) = self
            .store
            .write(move |tx| {
                let attachments = tx.resolve_attachments(sender.id, &upload_ids)?;
                // Checked before anything below writes. A DM has no room
                // yet, so only a mute everywhere applies to it.
                let mute_scope = match &target {
                    Target::Room(id) => *id,
                    Target::User(_) => Id(0),
                };
                if tx.muted(sender.id, mute_scope, tx.now())? {
                    return Err(StoreError::Forbidden("you are muted".into()));
                }
                let room = match (&target, &peer) {
                    (_, Some(peer)) => {
                        may_dm(tx, sender.id, peer.id, default_policy)?;
                        tx.dm_room(&sender, peer, dm_id)?
                    }
                    (Target::Room(id), None) => {
                        let room = tx.room(*id)?.ok_or(StoreError::NotFound("room"))?;
                        if tx.member(room.id, sender.id)?.is_none() {
                            if room.visibility == Visibility::Private {
                                return Err(StoreError::Forbidden(
                                    "not a member of this room".into(),
                                ));
                            }
                            // Speaking in a public room joins it.
                            tx.add_member(&room, &sender)?;
                        } else if room.kind == RoomKind::Dm {
                            // An existing conversation is no way around a
                            // block or a policy.
                            for peer in tx.member_ids(room.id)? {
                                may_dm(tx, sender.id, peer, default_policy)?;
                            }
                        }
                        room
                    }
                    (Target::User(_), None) => return Err(StoreError::NotFound("user")),
                };
                tx.append_message(NewMessage {
                    id: message_id,
                    room: room.id,
                    sender: sender.id,
                    text,
                    attachments,
                    client_msg_id: cid,
                })
            })
            .await?;
        Ok(msg)
    }

    /// Edits obey the rules of sending: a user who may not send a message
    /// to the room now (muted, no longer a member, blocked or refused by
    /// the other side of a DM) may not change what it says either.
    pub async fn edit_message(&self, user: &User, id: Id, text: &str) -> Result<Message> {
        let text =
            MessageText::parse(text, self.config.limits.max_message_chars, false)?.into_string();
        let uid = user.id;
        let default_policy = self.config.server.dm_policy;
        let msg = self
            .store
            .write(move |tx| {
                let msg = tx.message(id)?.ok_or(StoreError::NotFound("message"))?;
                if msg.sender.id != uid {
                    return Err(StoreError::Forbidden(
                        "only the sender may edit a message".into(),
                    ));
                }
                if msg.deleted {
                    return Err(StoreError::NotFound("message"));
                }
                may_post(tx, uid, msg.room, default_policy)?;
                tx.edit_message(msg, text)
            })
            .await?;
        Ok(msg)
    }

    /// The sender may delete their own message while they may still send
    /// to its room; moderators and admins (by their role now, not when
    /// they signed in) may delete anyone's.
    pub async fn delete_message(&self, actor: &Actor, id: Id) -> Result<Message> {
        let actor = actor.clone();
        let default_policy = self.config.server.dm_policy;
        let msg = self
            .store
            .write(move |tx| {
                let msg = tx.message(id)?.ok_or(StoreError::NotFound("message"))?;
                if let Actor::User(u) = &actor {
                    let staff = tx.user(u.id)?.is_some_and(|r| r.role.is_staff());
                    if !staff {
                        if u.id != msg.sender.id {
                            return Err(StoreError::Forbidden(
                                "only the sender, a moderator or an admin may delete a message"
                                    .into(),
                            ));
                        }
                        may_post(tx, u.id, msg.room, default_policy)?;
                    }
                }
                if msg.deleted {
                    return Ok(msg);
                }
                tx.delete_message(msg)
            })
            .await?;
        Ok(msg)
    }

    pub fn history(&self, actor: &Actor, room: Id, page: Page) -> Result<(Vec<Message>, bool)> {
        self.room_for(actor, room)?;
        Ok(self.store.read()?.history(room, page)?)
    }

    pub async fn mark_read(&self, user: &User, room: Id, seq: u64) -> Result<()> {
        let user = user.clone();
        self.store
            .write(move |tx| {
                if tx.room(room)?.is_none() {
                    return Err(StoreError::NotFound("room"));
                }
                if tx.member(room, user.id)?.is_none() {
                    return Err(StoreError::Forbidden("not a member of this room".into()));
                }
                if seq > tx.last_seq(room)? {
                    return Err(StoreError::Invalid(
                        "seq: beyond the room's last message".into(),
                    ));
                }
                tx.mark_read(room, &user, seq)
            })
            .await?;
        Ok(())
    }

    /// Typing and presence need membership of the room (for public rooms,
    /// visibility is enough to read presence).
    pub fn require_member(&self, user: &User, room: Id) -> Result<()> {
        let rx = self.store.read()?;
        if rx.room(room)?.is_none() {
            return Err(AppError::NotFound("room"));
        }
        if rx.member(room, user.id)?.is_none() {
            return Err(AppError::Forbidden("not a member of this room".into()));
        }
        Ok(())
    }

    pub fn presence(&self, actor: &Actor, room: Id) -> Result<Vec<User>> {
        self.room_for(actor, room)?;
        let users = self.hub.room_presence(room);
        match actor.user() {
            Some(viewer) => self.hide_blockers(viewer.id, users),
            None => Ok(users),
        }
    }
}

/// Whether `user` may change what they said in `room` (edit, delete): the
/// rules of sending to a room they are in.
pub(super) fn may_post(tx: &Tx, user: Id, room: Id, default: DmPolicy) -> Result<(), StoreError> {
    let room = tx.room(room)?.ok_or(StoreError::NotFound("room"))?;
    if tx.member(room.id, user)?.is_none() {
        return Err(StoreError::Forbidden("not a member of this room".into()));
    }
    let scope = if room.kind == RoomKind::Dm {
        Id(0)
    } else {
        room.id
    };
    if tx.muted(user, scope, tx.now())? {
        return Err(StoreError::Forbidden("you are muted".into()));
    }
    if room.kind == RoomKind::Dm {
        for peer in tx.member_ids(room.id)? {
            may_dm(tx, user, peer, default)?;
        }
    }
    Ok(())
}

/// Whether `sender` may send `peer` a direct message. A block and a
/// friends-only policy are refused with the same words, so the answer does
/// not tell a blocked user that they are blocked.
pub(super) fn may_dm(tx: &Tx, sender: Id, peer: Id, default: DmPolicy) -> Result<(), StoreError> {
    if sender == peer {
        return Ok(());
    }
    if tx.blocks(sender, peer)? {
        return Err(StoreError::Forbidden(
            "you block this user; unblock them to send direct messages".into(),
        ));
    }
    let policy = tx.settings(peer)?.dm_policy.unwrap_or(default);
    let refused = tx.blocks(peer, sender)?
        || (policy == DmPolicy::Friends && !tx.are_friends(sender, peer)?);
    if refused {
        return Err(StoreError::Forbidden(
            "this user does not accept direct messages from you".into(),
        ));
    }
    Ok(())
}
