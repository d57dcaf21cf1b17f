//! Moderation: kicks, bans, mutes, announcements, deletions by staff, and
//! the audit log.

use super::*;

impl App {
    /// Staff may act on users below their own role; the operator on anyone.
    pub(super) fn moderate(&self, actor: &Actor, username: &str) -> Result<UserRecord> {
        let target = self.user_by_name(username)?;
        match &self.current(actor)? {
            Actor::Operator => Ok(target),
            Actor::User(u) if u.role.is_staff() && rank(u.role) > rank(target.role) => Ok(target),
            Actor::User(u) if u.role.is_staff() => Err(AppError::Forbidden(format!(
                "a {} cannot moderate a {}",
                u.role, target.role
            ))),
            Actor::User(_) => Err(AppError::Forbidden(
                "only moderators and admins may moderate".into(),
            )),
        }
    }

    /// Writes an audit entry on its own (for actions whose effect is
    /// another write, like an owner's room deletion by someone else).
    pub async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        reason: Option<String>,
        details: serde_json::Value,
    ) -> Result<()> {
        let entry = entry(actor, action, target, reason, details);
        self.store.run::<()>(Command::Audit(entry)).await?;
        Ok(())
    }

    pub async fn kick(
        &self,
        actor: &Actor,
        username: &str,
        reason: Option<String>,
    ) -> Result<usize> {
        let reason = Reason::parse_opt(reason)?;
        let target = self.moderate(actor, username)?;
        let entry = entry(
            actor,
            "kick",
            &target.username,
            reason.clone(),
            serde_json::Value::Null,
        );
        // Counted before: every node closes its own connections of the
        // user when it applies the kick, this one included.
        let n = self.hub.sessions_of(target.id) + self.hub.sessions_elsewhere(target.id);
        self.store
            .run::<()>(Command::Kick {
                user: target.id,
                reason: reason.unwrap_or_else(|| "kicked by a moderator".into()),
                entry,
            })
            .await?;
        self.metrics.event(
            "kick",
            format!(
                "{} kicked {} ({n} connections)",
                actor.name(),
                target.username
            ),
        );
        Ok(n)
    }

    pub async fn ban(
        &self,
        actor: &Actor,
        username: &str,
        reason: Option<String>,
        duration_secs: Option<u64>,
    ) -> Result<User> {
        let reason = Reason::parse_opt(reason)?;
        let target = self.moderate(actor, username)?;
        let until = until(duration_secs)?;
        let entry = entry(
            actor,
            "ban",
            &target.username,
            reason.clone(),
            serde_json::json!({ "duration_secs": duration_secs }),
        );
        let rec: UserRecord = self
            .store
            .run(Command::Ban {
                by: actor.user().map(|u| u.id),
                user: target.id,
                until,
                reason,
                entry,
            })
            .await?;
        self.metrics
            .event("ban", format!("{} banned {}", actor.name(), rec.username));
        Ok(rec.public())
    }

    pub async fn unban(&self, actor: &Actor, username: &str) -> Result<User> {
        let target = self.moderate(actor, username)?;
        let entry = entry(
            actor,
            "unban",
            &target.username,
            None,
            serde_json::Value::Null,
        );
        // Lifting nothing is a mistake worth saying, and not an action for
        // the audit log.
        if !target.banned_at(crate::domain::now_ms()) {
            return Err(AppError::Absent(format!(
                "{} is not banned",
                target.username
            )));
        }
        let rec: UserRecord = self
            .store
            .run(Command::Unban {
                by: actor.user().map(|u| u.id),
                user: target.id,
                entry,
            })
            .await?;
        self.metrics
            .event("ban", format!("{} unbanned {}", actor.name(), rec.username));
        Ok(rec.public())
    }

    /// Mutes in one room (by name or id) or, with no room, everywhere.
    /// Returns the room and the mute as stored.
    pub async fn mute(
        &self,
        actor: &Actor,
        username: &str,
        room: Option<&str>,
        reason: Option<String>,
        duration_secs: Option<u64>,
    ) -> Result<(Option<Room>, crate::store::MuteRecord)> {
        let reason = Reason::parse_opt(reason)?;
        let target = self.moderate(actor, username)?;
        let room = room.map(|r| self.find_room(r)).transpose()?;
        let rec = crate::store::MuteRecord {
            until: until(duration_secs)?,
            reason: reason.clone(),
            by: actor.name(),
        };
        let entry = entry(
            actor,
            "mute",
            &target.username,
            reason,
            serde_json::json!({
                "room": room.as_ref().map(|r| r.name.clone()),
                "duration_secs": duration_secs,
            }),
        );
        self.store
            .run::<()>(Command::Mute {
                by: actor.user().map(|u| u.id),
                user: target.id,
                room: room.as_ref().map(|r| r.id),
                mute: rec.clone(),
                entry,
            })
            .await?;
        let place = room
            .as_ref()
            .map(|r| format!(" in {}", r.name))
            .unwrap_or_default();
        self.metrics.event(
            "mute",
            format!("{} muted {}{place}", actor.name(), target.username),
        );
        Ok((room, rec))
    }

    /// Lifts the mute in one room, or the mute everywhere. Returns the room.
    pub async fn unmute(
        &self,
        actor: &Actor,
        username: &str,
        room: Option<&str>,
    ) -> Result<Option<Room>> {
        let target = self.moderate(actor, username)?;
        let room = room.map(|r| self.find_room(r)).transpose()?;
        let entry = entry(
            actor,
            "unmute",
            &target.username,
            None,
            serde_json::json!({ "room": room.as_ref().map(|r| r.name.clone()) }),
        );
        let (uid, rid) = (target.id, room.as_ref().map(|r| r.id));
        // A mute that has run out is no longer in force: lifting it would
        // audit an action that changed nothing.
        let now = crate::domain::now_ms();
        let active = self
            .store
            .read()?
            .mutes_of(uid, now)?
            .iter()
            .any(|(r, _)| *r == rid);
        let not_muted = format!(
            "{} is not muted {}",
            target.username,
            room.as_ref()
                .map(|r| format!("in {}", r.name))
                .unwrap_or_else(|| "everywhere".into())
        );
        if !active {
            return Err(AppError::Absent(not_muted));
        }
        self.store
            .run::<()>(Command::Unmute {
                by: actor.user().map(|u| u.id),
                user: uid,
                room: rid,
                entry,
            })
            .await?;
        self.metrics.event(
            "mute",
            format!("{} unmuted {}", actor.name(), target.username),
        );
        Ok(room)
    }

    /// Sends an `announcement` to everyone, or to one room's members.
    /// Returns the text as sent and the room.
    pub async fn announce(
        &self,
        actor: &Actor,
        text: &str,
        room: Option<&str>,
    ) -> Result<(String, Option<Room>)> {
        if !self.current(actor)?.is_staff() {
            return Err(AppError::Forbidden(
                "only moderators and admins may announce".into(),
            ));
        }
        let text =
            MessageText::parse(text, self.config.limits.max_message_chars, false)?.into_string();
        let room = room.map(|r| self.find_room(r)).transpose()?;
        let entry = entry(
            actor,
            "announce",
            room.as_ref().map(|r| r.name.as_str()).unwrap_or("everyone"),
            None,
            serde_json::json!({ "text": text }),
        );
        // Every node sends it to its own connections when it applies this.
        self.store
            .run::<()>(Command::Announce {
                text: text.clone(),
                room: room.as_ref().map(|r| r.id),
                entry,
            })
            .await?;
        self.metrics
            .event("announce", format!("{}: {text}", actor.name()));
        Ok((text, room))
    }

    /// A staff deletion of someone's message, with its audit entry.
    pub async fn moderate_delete(
        &self,
        actor: &Actor,
        id: Id,
        reason: Option<String>,
    ) -> Result<Message> {
        let reason = Reason::parse_opt(reason)?;
        let msg = self.delete_message(actor, id).await?;
        if actor.user().map(|u| u.id) != Some(msg.sender.id) {
            self.audit(
                actor,
                "delete_message",
                &msg.sender.username,
                reason,
                serde_json::json!({ "message_id": id, "room": msg.room, "seq": msg.seq }),
            )
            .await?;
            self.metrics.event(
                "delete",
                format!(
                    "{} deleted a message of {}",
                    actor.name(),
                    msg.sender.username
                ),
            );
        }
        Ok(msg)
    }

    /// The caller's own mutes in force now, so a client can say so before
    /// anything is typed.
    pub fn own_mutes(&self, user: Id) -> Result<Vec<MuteInfo>> {
        let now = crate::domain::now_ms();
        Ok(self
            .store
            .read()?
            .mutes_of(user, now)?
            .iter()
            .map(|(room, rec)| MuteInfo::new(*room, rec.until, rec.reason.clone()))
            .collect())
    }

    pub fn audit_log(&self, since: Option<i64>, limit: Option<usize>) -> Result<Vec<AuditEntry>> {
        Ok(self
            .store
            .read()?
            .audit(since.unwrap_or(0), limit.unwrap_or(1000).min(10_000))?)
    }
}

/// An audit line by `actor`, timed now.
pub(super) fn entry(
    actor: &Actor,
    action: &str,
    target: &str,
    reason: Option<String>,
    details: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at: crate::domain::now_ms(),
        actor: actor.name(),
        action: action.to_string(),
        target: target.to_string(),
        reason,
        details,
    }
}
