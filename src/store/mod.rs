//! The redb store. Knows nothing of HTTP, WebSockets or JSON on the wire.
//!
//! Reads run on the caller's thread in their own read transaction. Every
//! write goes through one writer thread, which takes operations from a
//! queue, applies a group of them in one write transaction and commits it
//! durably; only then does each operation's caller get its result, and the
//! group's [`Change`]s go to the listener (the hub) in commit order. That
//! one thread is why a room's seq has no gaps and every subscriber sees the
//! same order.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::oneshot;

use crate::domain::{DmPolicy, Id, Message, Role, Room, RoomKind, User, Visibility};

mod apply;
mod attention;
pub mod cluster;
pub mod commands;
pub mod engine;
pub mod external;
pub mod integrations;
mod journal;
pub mod previews;
pub mod push;
mod reactions;
mod read;
mod tables;
mod threads;
pub mod webhooks;
mod write;
mod writer;

pub use apply::{Local, rank};
pub use attention::Unread;
pub use commands::{Command, Envelope, FromOutcome, Outcome, PairOp, SendTo};
pub use journal::{JOURNAL_KEEP, Reader};
pub use reactions::{MAX_PINS_PER_ROOM, MAX_REACTIONS_PER_MESSAGE, PinRecord};
pub use read::Rx;
pub use tables::{Migration, SCHEMA_VERSION, new_secret};
pub use threads::{ThreadCommand, ThreadUnread};
pub use write::{NewMessage, NewRoom, NewUser, Tx};

use read::{SenderCache, q};
use tables::*;
pub use writer::Listener;
use writer::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data directory is in use by another confab process (is a server running without its admin socket?)"
    )]
    Locked,
    #[error(
        "the store has schema version {found}, this confab understands version {expected}: {hint}"
    )]
    Schema {
        found: u64,
        expected: u64,
        hint: &'static str,
    },
    #[error("storage error: {0}")]
    Db(#[from] redb::Error),
    #[error("corrupt record in {table}: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
    },
    #[error("the store is unavailable")]
    WriterGone,
    /// The write could not be committed in time (a cluster without
    /// quorum, an engine out of reach). Never an ack; after a lost
    /// acknowledgement from the engine it may still be applied, so a
    /// resend must be idempotent (`client_msg_id`).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    /// A count limit reached (reactions on a message, pins in a room).
    #[error("{0}")]
    Limit(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked,
            e => StoreError::Db(e.into()),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What an account keeps besides its public face.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: Id,
    pub username: String,
    pub role: Role,
    pub password_hash: String,
    pub created_at: i64,
    /// Banned until this time (ms); `i64::MAX` is until unbanned.
    #[serde(default)]
    pub banned_until: Option<i64>,
    #[serde(default)]
    pub ban_reason: Option<String>,
    /// Tokens carry the generation they were issued at; only tokens of the
    /// current generation are accepted.
    #[serde(default)]
    pub token_gen: u64,
    /// The upload shown as the user's picture.
    #[serde(default)]
    pub avatar: Option<String>,
    /// A bot or an incoming webhook's identity: no password sign-in, API
    /// tokens instead (store/integrations.rs).
    #[serde(default)]
    pub bot: bool,
}

impl UserRecord {
    pub fn banned_at(&self, now: i64) -> bool {
        self.banned_until.is_some_and(|until| until > now)
    }

    pub fn public(&self) -> User {
        User {
            id: self.id,
            username: self.username.clone(),
            role: self.role,
            avatar_url: self
                .avatar
                .as_ref()
                .map(|id| format!("/uploads/{id}/thumb")),
            bot: self.bot,
        }
    }
}

/// An upload: who sent it, what it is, which stored files hold it, and how
/// many messages carry it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: String,
    pub uploader: Id,
    pub file: String,
    pub thumb: String,
    pub mime: String,
    pub thumb_mime: String,
    pub width: u32,
    pub height: u32,
    pub size: u64,
    pub created_at: i64,
    #[serde(default)]
    pub refs: u64,
    /// The sanitised file name; `""` for older images.
    #[serde(default)]
    pub name: String,
    /// `""` (an image, as before kinds existed), `image`, `audio`, `video`
    /// or `file`.
    #[serde(default)]
    pub kind: String,
}

impl UploadRecord {
    pub fn kind(&self) -> &str {
        if self.kind.is_empty() {
            "image"
        } else {
            &self.kind
        }
    }

    pub fn is_image(&self) -> bool {
        self.kind() == "image"
    }

    pub fn attachment(&self) -> crate::domain::Attachment {
        crate::domain::Attachment {
            id: self.id.clone(),
            url: format!("/uploads/{}", self.id),
            // Only images have thumbnails.
            thumb_url: if self.is_image() {
                format!("/uploads/{}/thumb", self.id)
            } else {
                String::new()
            },
            mime: self.mime.clone(),
            width: self.width,
            height: self.height,
            size: self.size,
            name: self.name.clone(),
            kind: self.kind().to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MuteRecord {
    /// `i64::MAX`: until unmuted.
    pub until: i64,
    pub reason: Option<String>,
    pub by: String,
}

/// One line of the audit log: who did what to whom, why, when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(default)]
    pub seq: u64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub reason: Option<String>,
    #[serde(default)]
    pub details: serde_json::Value,
}

/// A user's own choices. `None` means "the server's default", so a change
/// of the configured default reaches everyone who never chose.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserSettings {
    #[serde(default)]
    pub dm_policy: Option<DmPolicy>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberRecord {
    pub joined_at: i64,
    #[serde(default)]
    pub last_read: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MessageRecord {
    id: Id,
    sender: Id,
    text: String,
    #[serde(default)]
    attachments: Vec<crate::domain::Attachment>,
    created_at: i64,
    edited_at: Option<i64>,
    deleted: bool,
    client_msg_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mentions: Vec<Id>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    bot: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<Id>,
    #[serde(default, skip_serializing_if = "is_zero")]
    reply_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_reply_at: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    also_in_room: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    previews: Vec<crate::domain::LinkPreview>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A durable change, reported to the listener after its commit, in commit
/// order. The hub turns these into events for connected clients.
#[derive(Debug, Clone)]
pub enum Change {
    UserUpdated(User),
    UserDeleted(Id),
    /// A new room with its first members (owner, or a DM's two users).
    RoomCreated {
        room: Room,
        members: Vec<User>,
    },
    RoomUpdated(Room),
    RoomDeleted {
        room: Room,
        members: Vec<Id>,
    },
    MemberAdded {
        room: Room,
        user: User,
    },
    MemberRemoved {
        room: Room,
        user: User,
    },
    MessageCreated(Message),
    MessageUpdated(Message),
    MessageDeleted {
        room: Id,
        id: Id,
        seq: u64,
    },
    Read {
        room: Id,
        user: User,
        seq: u64,
        /// Users who block the reader: the event is kept from them.
        hidden_from: Vec<Id>,
    },
    /// A friend request reached its recipient.
    FriendRequested {
        requester: User,
        recipient: User,
    },
    /// A delivered request is no longer pending without a friendship:
    /// declined by its recipient, or withdrawn (by its sender, by a block,
    /// by an account deletion).
    FriendRequestEnded {
        requester: User,
        recipient: User,
        declined: bool,
    },
    FriendAdded {
        accepter: User,
        requester: User,
    },
    FriendRemoved {
        by: User,
        other: User,
    },
    Blocked {
        blocker: Id,
        blocked: Id,
    },
    Unblocked {
        blocker: Id,
        blocked: Id,
    },
    /// Every token of the user issued before this change stopped working;
    /// their open connections must end.
    TokensRevoked {
        user: Id,
        why: Revocation,
    },
    /// One token stopped working; connections opened with it must end.
    TokenRevoked {
        user: Id,
        token: u128,
    },
    /// A moderator ended the user's connections (on every node).
    Kicked {
        user: Id,
        reason: String,
    },
    /// Staff spoke to everyone, or to one room's members.
    Announced {
        text: String,
        room: Option<Id>,
    },
    /// A user's unread counts in a room changed other than by a new
    /// message (which clients count themselves): the marker moved, or a
    /// deletion or an edit changed what counts.
    Unread {
        user: Id,
        state: Unread,
    },
    /// A push was queued: a node's delivery task looks at the queue.
    PushQueued,
    /// The user may not send in `room` (everywhere for `None`) until the
    /// mute ends; their own connections are told.
    Muted {
        user: Id,
        room: Option<Id>,
        mute: MuteRecord,
    },
    Unmuted {
        user: Id,
        room: Option<Id>,
    },
    /// A follower's unread state in one thread changed.
    ThreadUnread {
        user: Id,
        state: ThreadUnread,
    },
    /// `count`: the emoji's count on the message after the change.
    /// `hidden_from`: users who block the reactor.
    ReactionAdded {
        room: Id,
        message: Id,
        emoji: String,
        user: User,
        count: u32,
        hidden_from: Vec<Id>,
    },
    ReactionRemoved {
        room: Id,
        message: Id,
        emoji: String,
        user: User,
        count: u32,
        hidden_from: Vec<Id>,
    },
    /// `by`: `None` is the operator.
    MessagePinned {
        message: Message,
        by: Option<User>,
    },
    /// `by`: `None` is the operator, or the message's deletion.
    MessageUnpinned {
        room: Id,
        message: Id,
        by: Option<User>,
    },
    /// Webhook events were queued or a queue moved on: a node's delivery
    /// task looks at the queues.
    WebhookQueued,
    /// A new account (`user.registered` for webhooks).
    UserRegistered(User),
}

/// Why a user's tokens were ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Revocation {
    PasswordChanged,
    RoleChanged,
    Banned {
        reason: Option<String>,
        /// The ban's end (ms); `i64::MAX` is until unbanned.
        #[serde(default)]
        until: i64,
    },
    LoggedOutEverywhere,
}

/// A cheap, cloneable handle to the store.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    jobs: std_mpsc::Sender<Job>,
    closed: Arc<Closed>,
    local: Local,
    /// Set in cluster mode: commands go through the engine's log.
    cluster: Option<Arc<cluster::Link>>,
}

/// Set by the writer thread once it has finished and let go of the
/// database, so a shutdown can wait for the file to be closed cleanly.
#[derive(Default)]
pub struct Closed {
    done: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Closed {
    /// Waits up to `timeout`; true if the writer has finished.
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        let guard = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// What the writer thread reports about each commit, for metrics.
pub type CommitObserver = Arc<dyn Fn(usize, std::time::Duration) + Send + Sync>;

impl Store {
    /// Opens (or creates) the store, checks its schema version and starts
    /// the writer thread. `listener` hears every committed change.
    pub fn open(
        path: &Path,
        cache_mib: usize,
        max_batch: usize,
        listener: Listener,
        observer: Option<CommitObserver>,
        local: Local,
    ) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = prepare(
            path,
            cache_mib.max(1) * 1024 * 1024,
            SCHEMA_VERSION,
            MIGRATIONS,
        )?;
        let db = Arc::new(db);
        let (jobs, rx) = std_mpsc::channel::<Job>();
        let writer_db = db.clone();
        let closed = Arc::new(Closed::default());
        let writer_closed = closed.clone();
        let after = handoff(listener);
        std::thread::Builder::new()
            .name("confab-store-writer".into())
            .spawn(move || {
                writer_loop(writer_db, rx, max_batch.max(1), after, observer);
                let mut done = writer_closed.done.lock().unwrap_or_else(|e| e.into_inner());
                *done = true;
                writer_closed.cv.notify_all();
            })?;
        Ok(Store {
            db,
            jobs,
            closed,
            local,
            cluster: None,
        })
    }

    /// Applies `cmd` and returns what it gave, once it is durable: in the
    /// writer's next group commit on a single node; in cluster mode once the
    /// engine holds it on a quorum and this node has applied it (so the
    /// caller reads its own write here at once).
    pub async fn submit(&self, cmd: Command) -> Result<Outcome> {
        let at = crate::domain::now_ms();
        match &self.cluster {
            // The id finds the submitter again among the log's entries;
            // the writer's own queue needs none.
            Some(link) => {
                link.submit(Envelope {
                    id: Id::new(),
                    at,
                    cmd,
                })
                .await
            }
            None => {
                let local = self.local.clone();
                self.job(at, move |tx| apply::apply(tx, cmd, &local)).await
            }
        }
    }

    /// `submit`, with the outcome unpacked into what the command gives.
    pub async fn run<T: FromOutcome>(&self, cmd: Command) -> Result<T> {
        let name = cmd.name();
        let outcome = self.submit(cmd).await?;
        T::from_outcome(outcome).ok_or_else(|| StoreError::Corrupt {
            table: "commands",
            message: format!("{name} gave an outcome of another kind"),
        })
    }

    /// Runs `op` on the writer, in order with the writes, and writes
    /// nothing: for effects outside the store that must not interleave
    /// with a write (removing a file no record names). Local to this node.
    pub async fn on_writer<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx) -> Result<T> + Send + 'static,
    {
        self.job(crate::domain::now_ms(), move |tx| op(tx)).await
    }

    /// Runs `op` in the writer's next group commit and returns its result
    /// once that commit is durable. `op` must check everything it needs
    /// before it writes anything: an error after a write would leave that
    /// write in the group.
    async fn job<T, F>(&self, at: i64, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx) -> Result<T> + Send + 'static,
    {
        let (done, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |tx: &mut Tx| {
            let result = tx.attempt(at, op);
            Box::new(move |committed: Result<()>| {
                let _ = done.send(committed.and(result));
            })
        });
        self.jobs.send(job).map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Writes a consistent copy of the whole store to `dest`: every table
    /// read in one read transaction, so the copy is a single point in time,
    /// while writers go on. Written to a temporary name, made durable, then
    /// renamed. Blocking: call it off the async threads. Returns the upload
    /// records of that same snapshot (to copy their files) and the row count.
    pub fn backup(&self, dest: &Path) -> Result<(Vec<UploadRecord>, u64)> {
        let rtx = self.db.begin_read()?;
        let tmp = dest.with_extension("partial");
        let _ = std::fs::remove_file(&tmp);
        let out = Database::create(&tmp)?;
        let wtx = out.begin_write()?;
        let mut rows = 0;
        macro_rules! copy_all {
            ($($t:ident),*) => { $( rows += copy_table(&rtx, &wtx, $t)?; )* };
        }
        all_tables!(copy_all);
        wtx.commit()?;
        drop(out);
        std::fs::rename(&tmp, dest)?;
        let mut uploads = Vec::new();
        for row in rtx.open_table(UPLOAD_TO_RECORD)?.iter()? {
            let (_, v) = row?;
            uploads.push(decode("upload_to_record", v.value())?);
        }
        Ok((uploads, rows))
    }

    /// The writer's "finished" signal. It fires once every handle to the
    /// store is gone and the last group is committed.
    pub fn closed(&self) -> Arc<Closed> {
        self.closed.clone()
    }

    pub fn read(&self) -> Result<Rx> {
        Ok(Rx {
            txn: self.db.begin_read()?,
        })
    }

    pub fn jwt_secret(&self) -> Result<Vec<u8>> {
        let rx = self.read()?;
        let meta = rx.txn.open_table(META)?;
        match meta.get("jwt_secret")? {
            Some(v) => Ok(v.value().to_vec()),
            None => Err(StoreError::NotFound("jwt secret")),
        }
    }
}

/// How long a room keeps its messages. `None` fields follow the server's
/// setting; `Some(0)` means "no limit" for this room.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retention {
    pub max_age_secs: Option<u64>,
    pub keep_last: Option<u64>,
}

/// What a store file holds, as `confab restore` and `confab check` report.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub schema_version: u64,
    pub users: u64,
    pub rooms: u64,
    pub messages: u64,
    pub uploads: u64,
}

/// Opens a store file that no server uses, checks its schema version and
/// counts what it holds. Refuses a file it cannot read.
pub fn inspect(path: &Path) -> Result<Summary> {
    if !path.is_file() {
        return Err(StoreError::NotFound("store file"));
    }
    let db = Database::open(path)?;
    let rx = db.begin_read()?;
    let meta = rx.open_table(META)?;
    let version = meta
        .get("schema_version")?
        .map(|v| decode_u64(v.value()))
        .transpose()?
        .ok_or(StoreError::Corrupt {
            table: "meta",
            message: "no schema version: not a confab store".into(),
        })?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Schema {
            found: version,
            expected: SCHEMA_VERSION,
            hint: "it was written by a newer confab; run that version, or restore a backup",
        });
    }
    Ok(Summary {
        schema_version: version,
        users: rx.open_table(USER_TO_RECORD)?.len()?,
        rooms: rx.open_table(ROOM_TO_RECORD)?.len()?,
        messages: rx.open_table(ROOM_SEQ_TO_MESSAGE)?.len()?,
        uploads: rx.open_table(UPLOAD_TO_RECORD)?.len()?,
    })
}

fn decode_u64(b: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = b.try_into().map_err(|_| StoreError::Corrupt {
        table: "meta",
        message: "schema_version is not 8 bytes".into(),
    })?;
    Ok(u64::from_be_bytes(arr))
}

pub(super) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

pub(super) fn decode<T: DeserializeOwned>(table: &'static str, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt {
        table,
        message: e.to_string(),
    })
}

pub(super) fn dm_pair(a: Id, b: Id) -> (u128, u128) {
    if a.0 <= b.0 { (a.0, b.0) } else { (b.0, a.0) }
}

/// Which slice of a room's history to read.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub before: Option<u64>,
    pub after: Option<u64>,
    pub limit: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> Result<Store> {
        Store::open(
            path,
            1,
            16,
            Arc::new(|_: &[Change]| {}),
            None,
            Local::default(),
        )
    }

    #[test]
    fn a_newer_store_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confab.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(
                    "schema_version",
                    (SCHEMA_VERSION + 1).to_be_bytes().as_slice(),
                )
                .unwrap();
            txn.commit().unwrap();
        }
        let err = open(&path).err().expect("refused").to_string();
        assert!(err.contains("newer confab"), "{err}");
        let err = inspect(&path).unwrap_err().to_string();
        assert!(err.contains("newer confab"), "{err}");
    }

    #[test]
    fn an_older_store_is_backed_up_then_migrated_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confab.redb");
        drop(prepare(&path, 1 << 20, 1, &[]).unwrap());
        let steps = [Migration {
            from: 1,
            apply: |txn| {
                txn.open_table(META)?.insert("migrated", [1u8].as_slice())?;
                Ok(())
            },
        }];
        let db = prepare(&path, 1 << 20, 2, &steps).unwrap();
        assert_eq!(stored_version(&db).unwrap(), Some(2));
        let rx = db.begin_read().unwrap();
        assert!(
            rx.open_table(META)
                .unwrap()
                .get("migrated")
                .unwrap()
                .is_some()
        );
        drop(rx);
        drop(db);
        // The copy kept beside it is the store as it was.
        let backup = dir.path().join("confab.redb.schema-v1.bak");
        assert_eq!(inspect(&backup).unwrap().schema_version, 1);
        // A gap with no step is refused, not half done.
        let err = prepare(&path, 1 << 20, 4, &steps)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("older than any version"), "{err}");
    }

    #[test]
    fn a_second_process_is_told_the_store_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confab.redb");
        let _first = open(&path).unwrap();
        assert!(matches!(open(&path), Err(StoreError::Locked)));
    }
}
