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
        let to = match &input.target {
            Target::User(name) => SendTo::User(
                self.store
                    .read()?
                    .user_by_name(name.as_str())?
                    .ok_or(AppError::NotFound("user"))?
                    .public(),
            ),
            Target::Room(id) => SendTo::Room(*id),
        };
        let here = self.here_for(sender, &to, &text);
        let wants_previews = input.previews;
        // The ids are made here, used if the command needs them.
        let msg = self
            .store
            .run(Command::SendMessage {
                sender: sender.clone(),
                to,
                text,
                uploads: input.attachments,
                client_msg_id: input.client_msg_id.map(|c| c.as_str().to_string()),
                message: Id::new(),
                dm_room: Id::new(),
                dm_policy: self.config.server.dm_policy,
                here,
                reply_to: input.reply_to,
                also_in_room: input.also_in_room,
            })
            .await?;
        if wants_previews {
            self.queue_previews(&msg);
        }
        Ok(msg)
    }

    /// Edits obey the rules of sending: a user who may not send a message
    /// to the room now (muted, no longer a member, blocked or refused by
    /// the other side of a DM) may not change what it says either.
    pub async fn edit_message(&self, user: &User, id: Id, text: &str) -> Result<Message> {
        let text =
            MessageText::parse(text, self.config.limits.max_message_chars, false)?.into_string();
        // Only a message that exists has a room whose presence matters.
        let here = match self.store.read()?.message(id)? {
            Some(m) => self.here_in_text(m.room, &text),
            None => Vec::new(),
        };
        let mut msg = self
            .store
            .run(Command::EditMessage {
                user: user.id,
                message: id,
                text,
                dm_policy: self.config.server.dm_policy,
                here,
            })
            .await?;
        self.decorate(std::slice::from_mut(&mut msg), Some(user.id))?;
        Ok(msg)
    }

    /// The sender may delete their own message while they may still send
    /// to its room; moderators and admins (by their role now, not when
    /// they signed in) may delete anyone's.
    pub async fn delete_message(&self, actor: &Actor, id: Id) -> Result<Message> {
        let msg = self
            .store
            .run(Command::DeleteMessage {
                by: actor.user().map(|u| u.id),
                message: id,
                dm_policy: self.config.server.dm_policy,
            })
            .await?;
        Ok(msg)
    }

    pub fn history(&self, actor: &Actor, room: Id, page: Page) -> Result<(Vec<Message>, bool)> {
        self.room_for(actor, room)?;
        let rx = self.store.read()?;
        let (mut messages, has_more) = rx.history(room, page)?;
        // Each reader sees their own `me` on reactions.
        rx.decorate(&mut messages, actor.user().map(|u| u.id))?;
        Ok((messages, has_more))
    }

    pub async fn mark_read(&self, user: &User, room: Id, seq: u64) -> Result<()> {
        self.store
            .run::<u64>(Command::MarkRead {
                user: user.clone(),
                room,
                seq,
            })
            .await?;
        Ok(())
    }

    /// typing_start / typing_stop, here and on the cluster's other nodes.
    pub fn typing(&self, room: Id, user: &User, on: bool) -> Result<()> {
        self.require_member(user, room)?;
        self.hub.typing(room, user, on);
        if let Some(peers) = &self.peers {
            let _ = peers.send(PeerEvent::Typing {
                room,
                user: user.clone(),
                on,
            });
        }
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
