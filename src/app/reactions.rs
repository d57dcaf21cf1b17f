//! Reactions and pins. The rules that depend on the state a write lands on
//! (membership, mutes, blocks, roles, the limits) are decided when the
//! command applies (store/reactions.rs); here the input is checked and the
//! reads are shaped for the caller.

use super::*;
use crate::domain::emoji::Emoji;
use crate::store::PinRecord;

/// A pin as `GET /api/rooms/{id}/pins` lists it beside the messages.
#[derive(Debug, Clone, Serialize)]
pub struct PinInfo {
    pub message_id: Id,
    /// `null`: the operator.
    pub by: Option<User>,
    pub at: i64,
}

impl App {
    /// Adds the caller's reaction. A reaction is not a message: it moves
    /// no unread count and notifies no one, but it counts against the
    /// sender's message rate, since each one is broadcast to the room.
    pub async fn react(&self, user: &User, message: Id, emoji: &str) -> Result<()> {
        let emoji = Emoji::parse(emoji)?;
        if !self.limits.messages.take(&user.id) {
            return Err(AppError::RateLimited("reacting too fast; slow down".into()));
        }
        self.store
            .run::<()>(Command::React {
                user: user.id,
                message,
                emoji: emoji.as_str().to_string(),
                dm_policy: self.config.server.dm_policy,
            })
            .await?;
        Ok(())
    }

    pub async fn unreact(&self, user: &User, message: Id, emoji: &str) -> Result<()> {
        let emoji = Emoji::parse(emoji)?;
        self.store
            .run::<()>(Command::Unreact {
                user: user.id,
                message,
                emoji: emoji.as_str().to_string(),
            })
            .await?;
        Ok(())
    }

    /// Pins (`on`) or unpins a message. Staff acting in a room that is not
    /// theirs, and the operator, are audited like other moderation.
    pub async fn set_pinned(&self, actor: &Actor, message: Id, on: bool) -> Result<()> {
        let actor = self.current(actor)?;
        let (msg, room) = {
            let rx = self.store.read()?;
            let msg = rx.message(message)?.ok_or(AppError::NotFound("message"))?;
            let room = rx.room(msg.room)?.ok_or(AppError::NotFound("room"))?;
            (msg, room)
        };
        // Nobody learns of a message in a room they may not see.
        if !self.visible(&actor, &room)? {
            return Err(AppError::NotFound("message"));
        }
        let by = actor.user().map(|u| u.id);
        let moderation = room.kind == RoomKind::Room && (by.is_none() || room.owner != by);
        let entry = moderation.then(|| {
            super::moderation::entry(
                &actor,
                if on { "pin_message" } else { "unpin_message" },
                &msg.sender.username,
                None,
                serde_json::json!({ "message_id": message, "room": room.id }),
            )
        });
        let cmd = if on {
            Command::Pin { by, message, entry }
        } else {
            Command::Unpin { by, message, entry }
        };
        self.store.run::<bool>(cmd).await?;
        Ok(())
    }

    /// A room's pinned messages, newest pin first, for whoever may read
    /// its history.
    pub fn pins(&self, actor: &Actor, room: Id) -> Result<(Vec<Message>, Vec<PinInfo>)> {
        self.room_for(actor, room)?;
        let rx = self.store.read()?;
        let found: Vec<(Message, PinRecord)> = rx.pins(room)?;
        let mut messages = Vec::with_capacity(found.len());
        let mut pins = Vec::with_capacity(found.len());
        for (m, rec) in found {
            let by = match rec.by {
                Some(id) => rx.user(id)?.map(|u| u.public()),
                None => None,
            };
            pins.push(PinInfo {
                message_id: m.id,
                by,
                at: rec.at,
            });
            messages.push(m);
        }
        rx.decorate(&mut messages, actor.user().map(|u| u.id))?;
        Ok((messages, pins))
    }

    /// Messages as `viewer` reads them: reactions with their own `me`, and
    /// the pin flag.
    pub fn decorate(&self, messages: &mut [Message], viewer: Option<Id>) -> Result<()> {
        Ok(self.store.read()?.decorate(messages, viewer)?)
    }
}
