//! Threads: reading one (with the rights of reading its room's history),
//! following, and thread read markers. Replies themselves are sent with
//! `send_message` (`reply_to`).

use super::*;
use crate::store::ThreadCommand;

/// `GET /api/messages/{id}/thread`: the root, a page of replies, and the
/// caller's stand on the thread.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadPage {
    pub root: Message,
    pub messages: Vec<Message>,
    pub has_more: bool,
    pub following: bool,
    pub unread: u64,
    pub last_read_seq: u64,
}

/// One followed thread, as `GET /api/me/threads` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FollowedThread {
    pub room: Id,
    pub root: Message,
    pub unread: u64,
    pub mentions: u64,
    pub last_read_seq: u64,
    pub last_reply_seq: u64,
}

impl App {
    /// The thread of `id` (a reply names its thread). A message of a room
    /// the actor may not read is answered as one that does not exist.
    pub fn thread(
        &self,
        actor: &Actor,
        id: Id,
        after: Option<u64>,
        limit: Option<u64>,
    ) -> Result<ThreadPage> {
        let limit = page(None, after, limit)?.limit;
        let rx = self.store.read()?;
        let msg = rx.message(id)?.ok_or(AppError::NotFound("message"))?;
        let root = match msg.reply_to {
            Some(r) => rx.message(r)?.ok_or(AppError::NotFound("message"))?,
            None => msg,
        };
        match self.room_for(actor, root.room) {
            Ok(_) => {}
            Err(AppError::Forbidden(_) | AppError::NotFound(_)) => {
                return Err(AppError::NotFound("message"));
            }
            Err(e) => return Err(e),
        }
        let (messages, has_more) = rx.thread(&root, after.unwrap_or(0), limit)?;
        let state = match actor.user() {
            Some(u) => Some(rx.thread_unread(root.room, root.id, u.id)?),
            None => None,
        };
        Ok(ThreadPage {
            root,
            messages,
            has_more,
            following: state.is_some_and(|s| s.following),
            unread: state.map(|s| s.unread).unwrap_or(0),
            last_read_seq: state.map(|s| s.last_read_seq).unwrap_or(0),
        })
    }

    pub async fn follow_thread(&self, user: &User, id: Id, follow: bool) -> Result<()> {
        let cmd = if follow {
            ThreadCommand::Follow {
                user: user.id,
                root: id,
            }
        } else {
            ThreadCommand::Unfollow {
                user: user.id,
                root: id,
            }
        };
        self.store.run::<()>(Command::Thread(cmd)).await?;
        Ok(())
    }

    pub async fn mark_thread_read(&self, user: &User, id: Id, seq: u64) -> Result<()> {
        self.store
            .run::<()>(Command::Thread(ThreadCommand::MarkRead {
                user: user.id,
                root: id,
                seq,
            }))
            .await?;
        Ok(())
    }

    /// The threads the user follows, the most recently replied to first.
    pub fn followed_threads(&self, user: &User) -> Result<Vec<FollowedThread>> {
        let rx = self.store.read()?;
        let mut out = Vec::new();
        for state in rx.threads_of(user.id)? {
            if let Some(root) = rx.message(state.root)? {
                out.push(FollowedThread {
                    room: state.room,
                    root,
                    unread: state.unread,
                    mentions: state.mentions,
                    last_read_seq: state.last_read_seq,
                    last_reply_seq: state.last_reply_seq,
                });
            }
        }
        out.sort_by_key(|t| std::cmp::Reverse(t.root.last_reply_at.unwrap_or(t.root.created_at)));
        Ok(out)
    }
}
