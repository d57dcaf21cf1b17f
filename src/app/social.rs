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
        self.store
            .run::<()>(Command::SetDmPolicy {
                user: user.id,
                policy,
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

    /// A friend or block operation between the caller and `name`, decided
    /// on fresh records of both when the command is applied.
    async fn pair(&self, me: &User, name: &Username, op: PairOp) -> Result<()> {
        let other = self.other_user(me, name)?;
        self.store
            .run::<()>(Command::Pair {
                op,
                me: me.id,
                other,
            })
            .await?;
        Ok(())
    }

    /// Asks `to` to be friends. A request to someone who already asked
    /// the caller makes them friends. Repeating a pending request is
    /// acknowledged again and changes nothing.
    pub async fn friend_request(&self, me: &User, to: &Username) -> Result<()> {
        self.pair(me, to, PairOp::Request).await
    }

    pub async fn friend_accept(&self, me: &User, from: &Username) -> Result<()> {
        self.pair(me, from, PairOp::Accept).await
    }

    pub async fn friend_decline(&self, me: &User, from: &Username) -> Result<()> {
        self.pair(me, from, PairOp::Decline).await
    }

    /// Ends whatever is between the caller and `name`: a friendship, a
    /// request either way.
    pub async fn friend_remove(&self, me: &User, name: &Username) -> Result<()> {
        self.pair(me, name, PairOp::Remove).await
    }

    /// Blocks `name`: ends a friendship and requests between the two, and
    /// from then on the blocked user cannot send the caller direct
    /// messages or requests, nor see the caller's presence. Blocking
    /// again changes nothing.
    pub async fn block(&self, me: &User, name: &Username) -> Result<()> {
        self.pair(me, name, PairOp::Block).await
    }

    pub async fn unblock(&self, me: &User, name: &Username) -> Result<()> {
        self.pair(me, name, PairOp::Unblock).await
    }
}
