//! Mentions and unread state: what `@here` means at submission (the one
//! part of a mention that depends on who is online, so it is settled
//! here and carried in the command), and the reads of unread counts and
//! read markers.

use super::*;
use crate::domain::mention;
use crate::store::Unread;

impl App {
    /// The members of the room a message goes to who are online now, if
    /// `text` says `@here`; nothing otherwise. Who of them may be
    /// mentioned is decided when the command is applied.
    pub(super) fn here_for(&self, sender: &User, to: &SendTo, text: &str) -> Vec<Id> {
        if !mention::parse(text).here {
            return Vec::new();
        }
        match to {
            SendTo::Room(room) => self.here_in(*room),
            SendTo::User(peer) if self.hub.is_online(peer.id) && peer.id != sender.id => {
                vec![peer.id]
            }
            SendTo::User(_) => Vec::new(),
        }
    }

    /// `here_for` an existing message's room (an edit).
    pub(super) fn here_in_text(&self, room: Id, text: &str) -> Vec<Id> {
        if !mention::parse(text).here {
            return Vec::new();
        }
        self.here_in(room)
    }

    fn here_in(&self, room: Id) -> Vec<Id> {
        self.hub
            .room_presence(room)
            .into_iter()
            .map(|u| u.id)
            .collect()
    }

    /// The user's unread state in every room they are a member of.
    pub fn unread(&self, user: Id) -> Result<Vec<Unread>> {
        Ok(self.store.read()?.unread_of(user)?)
    }

    /// The user's read marker in a room they are a member of.
    pub fn read_marker(&self, user: &User, room: Id) -> Result<u64> {
        let rx = self.store.read()?;
        if rx.room(room)?.is_none() {
            return Err(AppError::NotFound("room"));
        }
        rx.read_marker(room, user.id)?
            .ok_or_else(|| AppError::Forbidden("not a member of this room".into()))
    }
}
