//! Applying a command: the rules that must be decided against the state
//! the write lands on (membership, blocks, mutes, ranks, seqs), in one
//! place that a single node and every node of a cluster run alike. Each
//! arm checks everything before it writes anything: an error after a
//! write would leave that write in the group commit.

use super::commands::{Command, Outcome, PairOp, SendTo};
use super::*;

/// Whether a stored file (by its hash) is present.
pub type FileCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What a node may consult besides the store while applying: only checks
/// whose answer is the same wherever the command is applied.
#[derive(Clone, Default)]
pub struct Local {
    /// Whether a stored upload file is present. Single-node mode only: there
    /// the file system and the store are one node's, and an upload's record
    /// must not be committed after its file was swept away.
    pub file_present: Option<FileCheck>,
}

pub fn apply(tx: &mut Tx, cmd: Command, local: &Local) -> Result<Outcome> {
    use Outcome::*;
    Ok(match cmd {
        Command::CreateUser(new) => User(tx.create_user(new)?),
        Command::RevokeTokens { user, why } => {
            let mut rec = tx.user(user)?.ok_or(StoreError::NotFound("user"))?;
            tx.revoke_tokens(&mut rec, why);
            tx.put_user(&rec)?;
            Done
        }
        Command::RevokeToken {
            user,
            token,
            expiry,
        } => {
            tx.revoke_token(user, token, expiry)?;
            Done
        }
        Command::SetPassword { user, hash } => {
            let mut rec = tx.user(user)?.ok_or(StoreError::NotFound("user"))?;
            rec.password_hash = hash;
            tx.revoke_tokens(&mut rec, Revocation::PasswordChanged);
            tx.put_user(&rec)?;
            Generation(rec.token_gen)
        }
        Command::SetRole { user, role } => {
            let mut rec = tx.user(user)?.ok_or(StoreError::NotFound("user"))?;
            if rec.role != role {
                rec.role = role;
                tx.revoke_tokens(&mut rec, Revocation::RoleChanged);
                tx.put_user(&rec)?;
            }
            User(rec)
        }
        Command::DeleteUser { user } => {
            let rec = tx.delete_user(user)?;
            super::push::forget_user(tx, user)?;
            User(rec)
        }
        Command::SetDmPolicy { user, policy } => {
            tx.user(user)?.ok_or(StoreError::NotFound("user"))?;
            let mut settings = tx.settings(user)?;
            settings.dm_policy = Some(policy);
            tx.put_settings(user, &settings)?;
            Done
        }
        Command::Pair { op, me, other } => {
            let me = tx.user(me)?.ok_or(StoreError::NotFound("user"))?.public();
            let other = tx
                .user(other)?
                .ok_or(StoreError::NotFound("user"))?
                .public();
            pair(tx, op, &me, &other)?;
            Done
        }
        Command::CreateRoom(new) => Room(tx.create_room(new)?),
        Command::UpdateRoom {
            room,
            topic,
            visibility,
            name,
        } => {
            let mut room = tx.room(room)?.ok_or(StoreError::NotFound("room"))?;
            if let Some(n) = name
                && n != room.name
            {
                tx.rename_room(&room, &n)?;
                room.name = n;
            }
            if let Some(t) = topic {
                room.topic = t;
            }
            if let Some(v) = visibility {
                room.visibility = v;
            }
            tx.put_room(&room)?;
            Room(room)
        }
        Command::DeleteRoom { room } => Room(tx.delete_room(room)?),
        Command::AddMember { room, user, adder } => {
            let room = tx.room(room)?.ok_or(StoreError::NotFound("room"))?;
            // Nobody pulls a user who blocks them into their rooms.
            if let Some(adder) = adder
                && tx.blocks(user.id, adder)?
            {
                return Err(StoreError::Forbidden(
                    "this user cannot be added to a room by you".into(),
                ));
            }
            Flag(tx.add_member(&room, &user)?)
        }
        Command::JoinRoom { room, user } => {
            let room = tx.room(room)?.ok_or(StoreError::NotFound("room"))?;
            if tx.member(room.id, user.id)?.is_none() {
                if room.visibility == Visibility::Private {
                    return Err(StoreError::Forbidden("this room is private".into()));
                }
                tx.add_member(&room, &user)?;
            }
            let last = tx.last_seq(room.id)?;
            Joined(room, last)
        }
        Command::LeaveRoom { room, user } => {
            let room = tx.room(room)?.ok_or(StoreError::NotFound("room"))?;
            if room.kind == RoomKind::Dm {
                return Err(StoreError::Forbidden(
                    "a direct message cannot be left".into(),
                ));
            }
            if !tx.remove_member(&room, &user)? {
                return Err(StoreError::NotFound("membership"));
            }
            Done
        }
        Command::SendMessage {
            sender,
            to,
            text,
            uploads,
            client_msg_id,
            message,
            dm_room,
            dm_policy,
            here,
            reply_to,
            also_in_room,
        } => Message(send(
            tx,
            sender,
            to,
            text,
            &uploads,
            client_msg_id,
            (message, dm_room),
            dm_policy,
            &here,
            (reply_to, also_in_room),
        )?),
        Command::EditMessage {
            user,
            message,
            text,
            dm_policy,
            here,
        } => {
            let msg = tx
                .message(message)?
                .ok_or(StoreError::NotFound("message"))?;
            if msg.sender.id != user {
                return Err(StoreError::Forbidden(
                    "only the sender may edit a message".into(),
                ));
            }
            if msg.deleted {
                return Err(StoreError::NotFound("message"));
            }
            may_post(tx, user, msg.room, dm_policy)?;
            let room = tx.room(msg.room)?.ok_or(StoreError::NotFound("room"))?;
            let mentions = tx.mentions_in(user, &room, &text, &here)?;
            // Only those the new text adds are told again: the others
            // were told when the message was sent, or chose to be left out.
            let added: Vec<Id> = mentions
                .iter()
                .filter(|u| !msg.mentions.contains(u))
                .copied()
                .collect();
            let edited = tx.edit_message(msg, text, mentions)?;
            super::push::on_mentions_added(tx, &edited, &room, &added)?;
            Message(edited)
        }
        Command::DeleteMessage {
            by,
            message,
            dm_policy,
        } => {
            let msg = tx
                .message(message)?
                .ok_or(StoreError::NotFound("message"))?;
            if let Some(by) = by {
                let staff = tx.user(by)?.is_some_and(|r| r.role.is_staff());
                if !staff {
                    if by != msg.sender.id {
                        return Err(StoreError::Forbidden(
                            "only the sender, a moderator or an admin may delete a message".into(),
                        ));
                    }
                    may_post(tx, by, msg.room, dm_policy)?;
                }
            }
            if msg.deleted {
                Message(msg)
            } else {
                Message(tx.delete_message(msg)?)
            }
        }
        Command::MarkRead { user, room, seq } => {
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
            Generation(tx.mark_read(room, &user, seq)?)
        }
        Command::InsertUpload(rec) => {
            if let Some(present) = &local.file_present
                && !(present(&rec.file) && (rec.thumb.is_empty() || present(&rec.thumb)))
            {
                return Ok(Flag(false));
            }
            tx.insert_upload(&rec)?;
            Flag(true)
        }
        Command::DeleteUpload { id } => UploadRemoved(Some(tx.delete_upload(&id)?)),
        Command::DeleteUnusedUpload { id } => match tx.upload(&id)? {
            Some(r) if r.refs == 0 => UploadRemoved(Some(tx.delete_upload(&id)?)),
            _ => UploadRemoved(None),
        },
        Command::Audit(entry) => {
            tx.audit(entry)?;
            Done
        }
        Command::Ban {
            by,
            user,
            until,
            reason,
            entry,
        } => {
            still_outranks(tx, by, user)?;
            let mut rec = tx.user(user)?.ok_or(StoreError::NotFound("user"))?;
            rec.banned_until = Some(until);
            rec.ban_reason = reason.clone();
            // Connections end with `kicked` and 4003 when the hub applies
            // this, in commit order.
            tx.revoke_tokens(&mut rec, Revocation::Banned { reason, until });
            tx.put_user(&rec)?;
            tx.audit(entry)?;
            User(rec)
        }
        Command::Unban { by, user, entry } => {
            still_outranks(tx, by, user)?;
            let mut rec = tx.user(user)?.ok_or(StoreError::NotFound("user"))?;
            // Lifted or run out since it was read.
            if !rec.banned_at(tx.now()) {
                return Err(StoreError::NotFound("ban"));
            }
            rec.banned_until = None;
            rec.ban_reason = None;
            tx.put_user(&rec)?;
            tx.audit(entry)?;
            User(rec)
        }
        Command::Mute {
            by,
            user,
            room,
            mute,
            entry,
        } => {
            still_outranks(tx, by, user)?;
            tx.set_mute(user, room, &mute)?;
            tx.audit(entry)?;
            tx.emit(Change::Muted { user, room, mute });
            Done
        }
        Command::Unmute {
            by,
            user,
            room,
            entry,
        } => {
            still_outranks(tx, by, user)?;
            // Lifted since it was read.
            if !tx.clear_mute(user, room)? {
                return Err(StoreError::NotFound("mute"));
            }
            tx.audit(entry)?;
            tx.emit(Change::Unmuted { user, room });
            Done
        }
        Command::Kick {
            user,
            reason,
            entry,
        } => {
            tx.audit(entry)?;
            tx.emit(Change::Kicked { user, reason });
            Done
        }
        Command::Announce { text, room, entry } => {
            tx.audit(entry)?;
            tx.emit(Change::Announced { text, room });
            Done
        }
        Command::SetRetention { room, retention } => {
            tx.set_retention(room, &retention)?;
            Done
        }
        Command::PruneRoom {
            room,
            before,
            up_to,
            max,
        } => Count(tx.prune_room(room, before, up_to, max)?),
        Command::PruneRevokedTokens { now_secs } => Count(tx.prune_revoked_tokens(now_secs)?),
        Command::Push(c) => super::push::apply(tx, c)?,
        Command::External(c) => super::external::apply(tx, c)?,
        Command::SetAvatar { user, upload } => User(tx.set_avatar(user, upload)?),
        Command::Integration(c) => super::integrations::apply(tx, c)?,
        Command::Thread(c) => super::threads::apply(tx, c)?,
        Command::React {
            user,
            message,
            emoji,
            dm_policy,
        } => {
            super::reactions::react(tx, user, message, emoji, dm_policy)?;
            Done
        }
        Command::Unreact {
            user,
            message,
            emoji,
        } => {
            super::reactions::unreact(tx, user, message, emoji)?;
            Done
        }
        Command::Pin { by, message, entry } => Flag(super::reactions::pin(tx, by, message, entry)?),
        Command::Unpin { by, message, entry } => {
            Flag(super::reactions::unpin(tx, by, message, entry)?)
        }
        Command::SetPreviews {
            message,
            previews,
            cache,
            images,
        } => Flag(tx.set_previews(message, previews, &cache, &images)?),
        Command::Webhook(c) => super::webhooks::apply(tx, c)?,
    })
}

#[allow(clippy::too_many_arguments)]
fn send(
    tx: &mut Tx,
    sender: User,
    to: SendTo,
    text: String,
    uploads: &[String],
    client_msg_id: Option<String>,
    (message, dm_room): (Id, Id),
    dm_policy: DmPolicy,
    here: &[Id],
    (reply_to, also_in_room): (Option<Id>, bool),
) -> Result<crate::domain::Message> {
    let attachments = tx.resolve_attachments(sender.id, uploads)?;
    // Checked before anything below writes. A DM has no room yet, so only
    // a mute everywhere applies to it.
    let mute_scope = match &to {
        SendTo::Room(id) => *id,
        SendTo::User(_) => Id(0),
    };
    if tx.muted(sender.id, mute_scope, tx.now())? {
        return Err(StoreError::Forbidden("you are muted".into()));
    }
    // Before anything is written (speaking in a public room joins it).
    let root = match reply_to {
        None => None,
        Some(id) => {
            let room = match &to {
                SendTo::Room(r) => Some(*r),
                SendTo::User(peer) => tx.existing_dm(sender.id, peer.id)?,
            };
            Some(tx.reply_root(room, id)?.id)
        }
    };
    let room = match &to {
        SendTo::User(peer) => {
            // The account may have gone since the name was looked up.
            tx.user(peer.id)?.ok_or(StoreError::NotFound("user"))?;
            may_dm(tx, sender.id, peer.id, dm_policy)?;
            tx.dm_room(&sender, peer, dm_room)?
        }
        SendTo::Room(id) => {
            let room = tx.room(*id)?.ok_or(StoreError::NotFound("room"))?;
            if tx.member(room.id, sender.id)?.is_none() {
                if room.visibility == Visibility::Private {
                    return Err(StoreError::Forbidden("not a member of this room".into()));
                }
                // Speaking in a public room joins it.
                tx.add_member(&room, &sender)?;
            } else if room.kind == RoomKind::Dm {
                // An existing conversation is no way around a block or a
                // policy.
                for peer in tx.member_ids(room.id)? {
                    may_dm(tx, sender.id, peer, dm_policy)?;
                }
            }
            room
        }
    };
    let mentions = tx.mentions_in(sender.id, &room, &text, here)?;
    let (msg, created) = tx.append_message(NewMessage {
        id: message,
        room: room.id,
        sender: sender.id,
        text,
        attachments,
        client_msg_id,
        mentions,
        display_name: None,
        reply_to: root,
        also_in_room,
    })?;
    super::push::on_message(tx, &msg, &room)?;
    if created && msg.reply_to.is_some() {
        let followers = tx.on_reply(&msg)?;
        super::push::on_thread_reply(tx, &msg, &room, &followers)?;
    }
    Ok(msg)
}

fn pair(tx: &mut Tx, op: PairOp, me: &User, other: &User) -> Result<()> {
    match op {
        // A request to someone who already asked makes them friends.
        // Repeating a pending request is acknowledged again and changes
        // nothing.
        PairOp::Request => {
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
            // through: it stays pending on their side and never reaches the
            // blocker, so asking reveals nothing.
            let deliver = !tx.blocks(other.id, me.id)?;
            tx.put_request(me, other, deliver)
        }
        PairOp::Accept => {
            if tx.are_friends(me.id, other.id)? {
                return Err(StoreError::Conflict("you are already friends".into()));
            }
            if !tx.has_incoming(me.id, other.id)? {
                return Err(StoreError::NotFound("friend request"));
            }
            tx.add_friend(me, other)
        }
        PairOp::Decline => {
            if !tx.has_incoming(me.id, other.id)? {
                return Err(StoreError::NotFound("friend request"));
            }
            tx.end_request(other, me, true)?;
            Ok(())
        }
        // Ends whatever is between the two: a friendship, a request either
        // way.
        PairOp::Remove => {
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
        }
        PairOp::Block => {
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
        }
        PairOp::Unblock => {
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
        }
    }
}

/// Whether `user` may change what they said in `room` (edit, delete): the
/// rules of sending to a room they are in.
pub(super) fn may_post(tx: &Tx, user: Id, room: Id, default: DmPolicy) -> Result<()> {
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
fn may_dm(tx: &Tx, sender: Id, peer: Id, default: DmPolicy) -> Result<()> {
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

/// The moderation rule checked when the command is applied: a moderator
/// demoted (or a target promoted) between the check and the write does not
/// get one more action through. `by` is `None` for the operator.
fn still_outranks(tx: &Tx, by: Option<Id>, target: Id) -> Result<()> {
    let Some(by) = by else {
        return Ok(());
    };
    let role = |id| -> Result<Role> { Ok(tx.user(id)?.ok_or(StoreError::NotFound("user"))?.role) };
    let (mine, theirs) = (role(by)?, role(target)?);
    if !mine.is_staff() || rank(mine) <= rank(theirs) {
        return Err(StoreError::Forbidden(
            "only a moderator or admin above the user may moderate them".into(),
        ));
    }
    Ok(())
}

/// Role order for moderation.
pub fn rank(role: Role) -> u8 {
    match role {
        Role::User => 0,
        Role::Moderator => 1,
        Role::Admin => 2,
    }
}
