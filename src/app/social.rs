//! Presence, friends, blocks and the direct-message policy.

use super::*;

impl App {
    /// Online users as `viewer` may see them: without those who block them.
    pub fn online_users_for(&self, viewer: Id) -> Result<Vec<User>> {
        let users = self
            .hub
            .online_users()
            .into_iter()
            .map(|o| o.user)
            .collect();
        self.hide_blockers(viewer, users)
    }

    pub(super) fn hide_blockers(&self, viewer: Id, mut users: Vec<User>) -> Result<Vec<User>> {
        let blockers = self.store.read()?.blocker_ids(viewer)?;
        if !blockers.is_empty() {
            users.retain(|u| !blockers.contains(&u.id));
        }
        Ok(users)
    }

    /// What the hub keeps of a user while they are online, read in one
    /// snapshot.
    pub fn ties(&self, user: Id) -> Result<Ties> {
        let rx = self.store.read()?;
        Ok(Ties {
            rooms: rx.room_ids_of(user)?,
            friends: rx.friend_ids(user)?,
            blocked_by: rx.blocker_ids(user)?,
        })
    }

    pub fn friends(&self, user: Id) -> Result<FriendLists> {
        let rx = self.store.read()?;
        let strip = |v: Vec<(User, i64)>| v.into_iter().map(|(u, _)| u).collect();
        Ok(FriendLists {
            friends: rx
                .friends(user)?
                .into_iter()
                .map(|(user, since)| Friend {
                    online: self.hub.is_online(user.id),
                    user,
                    since,
                })
                .collect(),
            incoming: strip(rx.incoming_requests(user)?),
            outgoing: strip(rx.outgoing_requests(user)?),
        })
    }

    /// Users `user` blocks.
    pub fn blocked(&self, user: Id) -> Result<Vec<User>> {
        Ok(self
            .store
            .read()?
            .blocked(user)?
            .into_iter()
            .map(|(u, _)| u)
            .collect())
    }

    /// The user's direct-message policy: their own, else the server's.
    pub fn dm_policy(&self, user: Id) -> Result<DmPolicy> {
        let own = self.store.read()?.settings(user)?.dm_policy;
        Ok(own.unwrap_or(self.config.server.dm_policy))
    }

    pub async fn set_dm_policy(&self, user: &User, policy: DmPolicy) -> Result<DmPolicy> {
        let uid = user.id;
        self.store
            .write(move |tx| {
                tx.user(uid)?.ok_or(StoreError::NotFound("user"))?;
                let mut settings = tx.settings(uid)?;
                settings.dm_policy = Some(policy);
                tx.put_settings(uid, &settings)
            })
            .await?;
        Ok(policy)
    }

    /// Another user, named in a friend or block operation.
    pub(super) fn other_user(&self, me: &User, name: &Username) -> Result<Id> {
        if name.as_str() == me.username {
            return Err(AppError::BadRequest(
                "username: that is you; name another user".into(),
            ));
        }
        Ok(self.user_by_name(name.as_str())?.id)
    }

    /// Runs `op` on fresh records of `me` and `other`, inside the writer.
    pub(super) async fn with_pair<T: Send + 'static>(
        &self,
        me: &User,
        name: &Username,
        op: impl FnOnce(&mut Tx, &User, &User) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T> {
        let other = self.other_user(me, name)?;
        let me = me.id;
        Ok(self
            .store
            .write(move |tx| {
                let me = tx.user(me)?.ok_or(StoreError::NotFound("user"))?.public();
                let other = tx
                    .user(other)?
                    .ok_or(StoreError::NotFound("user"))?
                    .public();
                op(tx, &me, &other)
            })
            .await?)
    }

    /// Asks `to` to be friends. A request to someone who already asked
    /// the caller makes them friends. Repeating a pending request is
    /// acknowledged again and changes nothing.
    pub async fn friend_request(&self, me: &User, to: &Username) -> Result<()> {
        self.with_pair(me, to, |tx, me, other| {
            if tx.are_friends(me.id, other.id)? {
                return Err(StoreError::Conflict("you are already friends".into()));
            }
            if tx.blocks(me.id, other.id)? {
                return Err(StoreError::Conflict(
                    "you block this user; unblock them first".into(),
                ));
            }
            if tx.has_incoming(me.id, other.id)? {
                return tx.add_friend(me, other);
            }
            // A blocked requester is answered as if the request went
            // through: it stays pending on their side and never reaches
            // the blocker, so asking reveals nothing.
            let deliver = !tx.blocks(other.id, me.id)?;
            tx.put_request(me, other, deliver)
        })
        .await
    }

    pub async fn friend_accept(&self, me: &User, from: &Username) -> Result<()> {
        self.with_pair(me, from, |tx, me, other| {
            if tx.are_friends(me.id, other.id)? {
                return Err(StoreError::Conflict("you are already friends".into()));
            }
            if !tx.has_incoming(me.id, other.id)? {
                return Err(StoreError::NotFound("friend request"));
            }
            tx.add_friend(me, other)
        })
        .await
    }

    pub async fn friend_decline(&self, me: &User, from: &Username) -> Result<()> {
        self.with_pair(me, from, |tx, me, other| {
            if !tx.has_incoming(me.id, other.id)? {
                return Err(StoreError::NotFound("friend request"));
            }
            tx.end_request(other, me, true)?;
            Ok(())
        })
        .await
    }

    /// Ends whatever is between the caller and `name`: a friendship, a
    /// request either way.
    pub async fn friend_remove(&self, me: &User, name: &Username) -> Result<()> {
        self.with_pair(me, name, |tx, me, other| {
            let friends = tx.are_friends(me.id, other.id)?;
            let outgoing = tx.has_outgoing(me.id, other.id)?;
            let incoming = tx.has_incoming(me.id, other.id)?;
            if !(friends || outgoing || incoming) {
                return Err(StoreError::NotFound("friend or friend request"));
            }
            tx.remove_friend(me, other)?;
            tx.end_request(me, other, false)?;
            tx.end_request(other, me, true)?;
            Ok(())
        })
        .await
    }

    /// Blocks `name`: ends a friendship and requests between the two, and
    /// from then on the blocked user cannot send the caller direct
    /// messages or requests, nor see the caller's presence. Blocking
    /// again changes nothing.
    pub async fn block(&self, me: &User, name: &Username) -> Result<()> {
        self.with_pair(me, name, |tx, me, other| {
            if tx.blocks(me.id, other.id)? {
                return Ok(());
            }
            tx.remove_friend(me, other)?;
            tx.end_request(me, other, false)?;
            // The blocked user's own request stays pending on their side,
            // as if ignored, rather than coming back declined.
            tx.hide_request(other, me)?;
            tx.block(me.id, other.id)?;
            Ok(())
        })
        .await
    }

    pub async fn unblock(&self, me: &User, name: &Username) -> Result<()> {
        self.with_pair(me, name, |tx, me, other| {
            if !tx.blocks(me.id, other.id)? {
                return Err(StoreError::NotFound("block"));
            }
            // A request that waited unseen behind the block ends as if
            // declined, rather than surfacing now.
            if tx.has_outgoing(other.id, me.id)? && !tx.has_incoming(me.id, other.id)? {
                tx.end_request(other, me, true)?;
            }
            tx.unblock(me.id, other.id)?;
            Ok(())
        })
        .await
    }
}
