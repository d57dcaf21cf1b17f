//! Rooms: creating, finding, changing and deleting them, and their members.

use super::*;

impl App {
    pub(super) fn visible(&self, actor: &Actor, room: &Room) -> Result<bool> {
        if room.visibility == Visibility::Public {
            return Ok(true);
        }
        let Some(user) = actor.user() else {
            return Ok(true);
        };
        if self.store.read()?.member(room.id, user.id)?.is_some() {
            return Ok(true);
        }
        // Staff see private rooms to moderate them, but not others' DMs.
        Ok(room.kind == RoomKind::Room && actor.is_staff())
    }

    /// A room the actor may see; a private room of others is `forbidden`.
    pub fn room_for(&self, actor: &Actor, id: Id) -> Result<Room> {
        self.room_seen_by(&self.current(actor)?, id)
    }

    /// `room_for`, for an actor already read from the store (`current`).
    fn room_seen_by(&self, actor: &Actor, id: Id) -> Result<Room> {
        let room = self
            .store
            .read()?
            .room(id)?
            .ok_or(AppError::NotFound("room"))?;
        if !self.visible(actor, &room)? {
            return Err(AppError::Forbidden("this room is private".into()));
        }
        Ok(room)
    }

    /// A room by id or by name (for the operator's CLI).
    pub fn find_room(&self, key: &str) -> Result<Room> {
        let rx = self.store.read()?;
        let by_name = rx.room_by_name(key)?;
        let room = match by_name {
            Some(r) => Some(r),
            None => match Id::parse("room", key) {
                Ok(id) => rx.room(id)?,
                Err(_) => None,
            },
        };
        room.ok_or(AppError::NotFound("room"))
    }

    /// Public rooms, and the actor's private rooms and DMs.
    pub fn list_rooms(&self, actor: &Actor) -> Result<Vec<Room>> {
        let rx = self.store.read()?;
        let mine: std::collections::HashSet<Id> = match actor.user() {
            Some(u) => rx.room_ids_of(u.id)?.into_iter().collect(),
            None => Default::default(),
        };
        let mut rooms: Vec<Room> = rx
            .rooms()?
            .into_iter()
            .filter(|r| {
                r.visibility == Visibility::Public
                    || mine.contains(&r.id)
                    || (actor.user().is_none() && r.kind == RoomKind::Room)
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rooms)
    }

    pub fn rooms_of(&self, user: Id) -> Result<Vec<Room>> {
        Ok(self.store.read()?.rooms_of(user)?)
    }

    pub async fn create_room(
        &self,
        actor: &Actor,
        name: RoomName,
        visibility: Visibility,
        topic: Option<Topic>,
    ) -> Result<Room> {
        let owner = actor.user().map(|u| u.id);
        if let Some(user) = owner {
            self.limits
                .room_creations
                .take(&user)
                .map_err(|retry| throttled("too many new rooms", retry))?;
        }
        let id = Id::new();
        let room: Room = self
            .store
            .run(Command::CreateRoom(NewRoom {
                id,
                name: name.as_str().to_string(),
                visibility,
                topic: topic.map(Topic::into_string).unwrap_or_default(),
                owner,
            }))
            .await?;
        tracing::info!(room = %room.name, "room created");
        Ok(room)
    }

    pub fn room_details(&self, actor: &Actor, id: Id) -> Result<(Room, Vec<User>)> {
        let room = self.room_for(actor, id)?;
        let members = self.store.read()?.members(id)?;
        Ok((room, members))
    }

    pub(super) fn may_manage(&self, actor: &Actor, room: &Room) -> bool {
        match actor.user() {
            None => true,
            Some(u) => u.role.is_staff() || room.owner == Some(u.id),
        }
    }

    pub async fn update_room(
        &self,
        actor: &Actor,
        id: Id,
        topic: Option<Topic>,
        visibility: Option<Visibility>,
        name: Option<RoomName>,
    ) -> Result<Room> {
        let actor = &self.current(actor)?;
        let room = self.room_seen_by(actor, id)?;
        if room.kind == RoomKind::Dm {
            return Err(AppError::Forbidden(
                "direct messages cannot be changed".into(),
            ));
        }
        if !self.may_manage(actor, &room) {
            return Err(AppError::Forbidden(
                "only the owner, a moderator or an admin may change this room".into(),
            ));
        }
        let room = self
            .store
            .run(Command::UpdateRoom {
                room: id,
                topic: topic.map(Topic::into_string),
                visibility,
                name: name.map(|n| n.as_str().to_string()),
            })
            .await?;
        Ok(room)
    }

    pub async fn delete_room(&self, actor: &Actor, id: Id) -> Result<Room> {
        let actor = &self.current(actor)?;
        // Admins may delete any room, DMs included, though they cannot read
        // others' DMs: deleting one must not first ask to see it.
        let room = if actor.is_admin() {
            self.store
                .read()?
                .room(id)?
                .ok_or(AppError::NotFound("room"))?
        } else {
            self.room_seen_by(actor, id)?
        };
        let allowed = match actor.user() {
            None => true,
            Some(u) => u.role == Role::Admin || room.owner == Some(u.id),
        };
        if !allowed || room.kind == RoomKind::Dm && !actor.is_admin() {
            return Err(AppError::Forbidden(
                "only the owner or an admin may delete this room".into(),
            ));
        }
        let room: Room = self.store.run(Command::DeleteRoom { room: id }).await?;
        tracing::info!(room = %room.name, "room deleted");
        // An owner closing their own room is not moderation; anyone else
        // doing it is.
        if let Actor::User(u) = actor
            && room.owner != Some(u.id)
        {
            self.audit(
                actor,
                "room_delete",
                &room.name,
                None,
                serde_json::Value::Null,
            )
            .await?;
        }
        Ok(room)
    }

    /// Adds `username` to the room. Anyone who can see a public room may
    /// add to it; private rooms take the owner, a moderator or an admin.
    pub async fn add_member(&self, actor: &Actor, id: Id, username: &str) -> Result<bool> {
        let actor = &self.current(actor)?;
        let room = self.room_seen_by(actor, id)?;
        if room.kind == RoomKind::Dm {
            return Err(AppError::Forbidden(
                "direct messages have two members".into(),
            ));
        }
        if room.visibility == Visibility::Private && !self.may_manage(actor, &room) {
            return Err(AppError::Forbidden(
                "only the owner, a moderator or an admin may add members to a private room".into(),
            ));
        }
        let user = self.user_by_name(username)?.public();
        let added = self
            .store
            .run(Command::AddMember {
                room: id,
                user,
                adder: actor.user().map(|u| u.id),
            })
            .await?;
        Ok(added)
    }

    /// `join_room`: joins a public room, or confirms membership of a
    /// private one. Returns the room and its last seq.
    pub async fn join_room(&self, user: &User, id: Id) -> Result<(Room, u64)> {
        let (room, last) = self
            .store
            .run(Command::JoinRoom {
                room: id,
                user: user.clone(),
            })
            .await?;
        Ok((room, last))
    }

    pub async fn leave_room(&self, user: &User, id: Id) -> Result<()> {
        self.store
            .run::<()>(Command::LeaveRoom {
                room: id,
                user: user.clone(),
            })
            .await?;
        Ok(())
    }
}
