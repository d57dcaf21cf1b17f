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

pub const SCHEMA_VERSION: u64 = 1;

// Keys are fixed-width where possible so that ranges scan in order:
// (room, seq) lists a room's history, (room, user) its members.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const USER_TO_RECORD: TableDefinition<u128, &[u8]> = TableDefinition::new("user_to_record");
const USERNAME_TO_USER: TableDefinition<&str, u128> = TableDefinition::new("username_to_user");
const ROOM_TO_RECORD: TableDefinition<u128, &[u8]> = TableDefinition::new("room_to_record");
const ROOMNAME_TO_ROOM: TableDefinition<&str, u128> = TableDefinition::new("roomname_to_room");
const ROOM_USER_TO_MEMBER: TableDefinition<(u128, u128), &[u8]> =
    TableDefinition::new("room_user_to_member");
const USER_ROOM_TO_JOINED: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("user_room_to_joined");
const ROOM_SEQ_TO_MESSAGE: TableDefinition<(u128, u64), &[u8]> =
    TableDefinition::new("room_seq_to_message");
const MESSAGE_TO_ROOM_SEQ: TableDefinition<u128, (u128, u64)> =
    TableDefinition::new("message_to_room_seq");
const ROOM_TO_LAST_SEQ: TableDefinition<u128, u64> = TableDefinition::new("room_to_last_seq");
const SENDER_CLIENT_ID_TO_MESSAGE: TableDefinition<(u128, &str), u128> =
    TableDefinition::new("sender_client_id_to_message");
const USER_PAIR_TO_DM: TableDefinition<(u128, u128), u128> =
    TableDefinition::new("user_pair_to_dm");
const UPLOAD_TO_RECORD: TableDefinition<&str, &[u8]> = TableDefinition::new("upload_to_record");
const UPLOADER_UPLOAD_TO_SIZE: TableDefinition<(u128, &str), u64> =
    TableDefinition::new("uploader_upload_to_size");
/// How many upload records name each stored file (by hash): a file goes
/// when its count reaches zero.
const FILE_TO_REFS: TableDefinition<&str, u64> = TableDefinition::new("file_to_refs");
/// Mutes by (user, room); room 0 means everywhere.
const USER_ROOM_TO_MUTE: TableDefinition<(u128, u128), &[u8]> =
    TableDefinition::new("user_room_to_mute");
const AUDIT_SEQ_TO_ENTRY: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_seq_to_entry");
// Friendship is kept in both directions, (user, friend), so either side
// lists its friends with one range scan.
const USER_FRIEND_TO_SINCE: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("user_friend_to_since");
// A pending friend request, (recipient, requester): what a user was asked.
const USER_REQUESTER_TO_SENT: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("user_requester_to_sent");
// The same request seen from its sender, (requester, recipient). A request
// made to someone who blocks the requester has only this row: the
// requester sees it pending, the recipient never sees it. Such a request
// lasts only as long as the block.
const USER_RECIPIENT_TO_SENT: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("user_recipient_to_sent");
// (blocker, blocked): whom a user blocks.
const USER_BLOCKED_TO_SINCE: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("user_blocked_to_since");
// (blocked, blocker): who blocks a user, read when they come online.
const USER_BLOCKER_TO_SINCE: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("user_blocker_to_since");
const USER_TO_SETTINGS: TableDefinition<u128, &[u8]> = TableDefinition::new("user_to_settings");
/// A room's own retention, overriding the server's.
const ROOM_TO_RETENTION: TableDefinition<u128, &[u8]> = TableDefinition::new("room_to_retention");
/// Tokens ended one at a time ("log out" on one device), by token id, with
/// their expiry (seconds): a row is needed only until the token would have
/// expired anyway.
const TOKEN_TO_EXPIRY: TableDefinition<u128, u64> = TableDefinition::new("token_to_expiry");

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
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
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
}

impl UploadRecord {
    pub fn attachment(&self) -> crate::domain::Attachment {
        crate::domain::Attachment {
            id: self.id.clone(),
            url: format!("/uploads/{}", self.id),
            thumb_url: format!("/uploads/{}/thumb", self.id),
            mime: self.mime.clone(),
            width: self.width,
            height: self.height,
            size: self.size,
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
}

/// Why a user's tokens were ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    PasswordChanged,
    RoleChanged,
    Banned { reason: Option<String> },
    LoggedOutEverywhere,
}

pub type Listener = Arc<dyn Fn(&[Change]) + Send + Sync>;

type Completion = Box<dyn FnOnce(Result<()>) + Send>;
type Job = Box<dyn FnOnce(&mut Tx) -> Completion + Send>;

/// A commit's outcome, handed from the writer to whoever finishes it.
type Committed = (
    Vec<Change>,
    Vec<Completion>,
    std::result::Result<(), String>,
);

/// After a commit: fan-out first (the listener, in commit order), then
/// each operation's reply.
fn finish_commit(listener: &Listener, (changes, completions, outcome): Committed) {
    match outcome {
        Ok(()) => {
            if !changes.is_empty() {
                listener(&changes);
            }
            for done in completions {
                done(Ok(()));
            }
        }
        Err(msg) => {
            for done in completions {
                done(Err(StoreError::Io(std::io::Error::other(msg.clone()))));
            }
        }
    }
}

/// Where the writer hands each commit. Inside a runtime, to one task on
/// it: waking the connections that fan-out and replies reach is then
/// the runtime waking its own tasks, not a foreign thread pushing every
/// wake-up through the runtime's shared queue (one cross-thread wake per
/// commit instead of one per delivery). One task, one channel: commit
/// order is kept.
fn handoff(listener: Listener) -> Box<dyn Fn(Committed) + Send> {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return Box::new(move |c| finish_commit(&listener, c));
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Committed>();
    let on_task = listener.clone();
    rt.spawn(async move {
        while let Some(c) = rx.recv().await {
            finish_commit(&on_task, c);
        }
    });
    Box::new(move |c| {
        // The runtime is shutting down: finish here rather than lose it.
        if let Err(e) = tx.send(c) {
            finish_commit(&listener, e.0);
        }
    })
}

/// A cheap, cloneable handle to the store.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    jobs: std_mpsc::Sender<Job>,
    closed: Arc<Closed>,
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
        Ok(Store { db, jobs, closed })
    }

    /// Runs `op` in the writer's next group commit and returns its result
    /// once that commit is durable. `op` must check everything it needs
    /// before it writes anything: an error after a write would leave that
    /// write in the group.
    pub async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx) -> Result<T> + Send + 'static,
    {
        let (done, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |tx: &mut Tx| {
            let mark = tx.changes.len();
            let result = op(tx);
            if result.is_err() {
                tx.changes.truncate(mark);
            }
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

/// One step forward in the store's format: from schema `from` to `from + 1`.
pub struct Migration {
    pub from: u64,
    pub apply: fn(&WriteTransaction) -> Result<()>,
}

/// The steps that bring an older store up to [`SCHEMA_VERSION`]. Empty
/// while the first schema is current: additions (new tables) need no step,
/// since every table is created at open.
const MIGRATIONS: &[Migration] = &[];

fn stored_version(db: &Database) -> Result<Option<u64>> {
    let rx = db.begin_read()?;
    let meta = match rx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    meta.get("schema_version")?
        .map(|v| decode_u64(v.value()))
        .transpose()
}

/// Opens the store file at `target`'s schema: an older store is first
/// copied aside (`confab.redb.schema-vN.bak`), then brought forward one
/// step at a time in a single transaction; a newer one is refused.
fn prepare(path: &Path, cache: usize, target: u64, steps: &[Migration]) -> Result<Database> {
    let open = || Database::builder().set_cache_size(cache).create(path);
    let db = open()?;
    if let Some(found) = stored_version(&db)?
        && found < target
    {
        if (found..target).any(|n| !steps.iter().any(|m| m.from == n)) {
            return Err(StoreError::Schema {
                found,
                expected: target,
                hint: "it is older than any version this confab can migrate",
            });
        }
        drop(db);
        let backup = path.with_extension(format!("redb.schema-v{found}.bak"));
        std::fs::copy(path, &backup)?;
        tracing::warn!(from = found, to = target, backup = %backup.display(), "migrating the store");
        let db = open()?;
        let txn = db.begin_write()?;
        for n in found..target {
            if let Some(step) = steps.iter().find(|m| m.from == n) {
                (step.apply)(&txn)?;
            }
        }
        txn.open_table(META)?
            .insert("schema_version", target.to_be_bytes().as_slice())?;
        txn.commit()?;
        init_schema(&db, target)?;
        return Ok(db);
    }
    init_schema(&db, target)?;
    Ok(db)
}

fn init_schema(db: &Database, expected: u64) -> Result<()> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let found = meta
            .get("schema_version")?
            .map(|v| decode_u64(v.value()))
            .transpose()?;
        match found {
            None => {
                meta.insert("schema_version", expected.to_be_bytes().as_slice())?;
            }
            Some(v) if v == expected => {}
            Some(v) if v > expected => {
                return Err(StoreError::Schema {
                    found: v,
                    expected,
                    hint: "it was written by a newer confab; run that version, or restore a backup",
                });
            }
            Some(v) => {
                return Err(StoreError::Schema {
                    found: v,
                    expected,
                    hint: "it is older than any version this confab can migrate",
                });
            }
        }
        if meta.get("jwt_secret")?.is_none() {
            let mut secret = [0u8; 64];
            getrandom::fill(&mut secret)
                .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
            meta.insert("jwt_secret", secret.as_slice())?;
        }
        drop(meta);
        // Every table exists from the first open on, so readers never meet
        // a missing table; tables added later are created the same way.
        macro_rules! open_all {
            ($($t:ident),*) => { $( txn.open_table($t)?; )* };
        }
        all_tables!(open_all);
    }
    txn.commit()?;
    Ok(())
}

/// Every table, for the code that must visit them all (creation at open,
/// backup). A new table goes here too.
macro_rules! all_tables {
    ($m:ident) => {
        $m!(
            META,
            USER_TO_RECORD,
            USERNAME_TO_USER,
            ROOM_TO_RECORD,
            ROOMNAME_TO_ROOM,
            ROOM_USER_TO_MEMBER,
            USER_ROOM_TO_JOINED,
            ROOM_SEQ_TO_MESSAGE,
            MESSAGE_TO_ROOM_SEQ,
            ROOM_TO_LAST_SEQ,
            SENDER_CLIENT_ID_TO_MESSAGE,
            USER_PAIR_TO_DM,
            UPLOAD_TO_RECORD,
            UPLOADER_UPLOAD_TO_SIZE,
            FILE_TO_REFS,
            USER_ROOM_TO_MUTE,
            AUDIT_SEQ_TO_ENTRY,
            USER_FRIEND_TO_SINCE,
            USER_REQUESTER_TO_SENT,
            USER_RECIPIENT_TO_SENT,
            USER_BLOCKED_TO_SINCE,
            USER_BLOCKER_TO_SINCE,
            USER_TO_SETTINGS,
            ROOM_TO_RETENTION,
            TOKEN_TO_EXPIRY
        )
    };
}
use all_tables;

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64> {
    let src = from.open_table(def)?;
    let mut dst = to.open_table(def)?;
    let mut rows = 0;
    for row in src.iter()? {
        let (k, v) = row?;
        dst.insert(k.value(), v.value())?;
        rows += 1;
    }
    Ok(rows)
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

fn writer_loop(
    db: Arc<Database>,
    rx: std_mpsc::Receiver<Job>,
    max_batch: usize,
    after: Box<dyn Fn(Committed) + Send>,
    observer: Option<CommitObserver>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    // Ends when every Store handle (and so every sender) is gone.
    while let Ok(first) = rx.recv() {
        batch.push(first);
        take_waiting(&rx, &mut batch, max_batch);
        // A lone operation: give way once before committing it. On an
        // idle machine this returns at once; on a busy core it lets the
        // threads that submit operations run on and add theirs to this
        // commit, instead of paying a commit and an fsync (and two context
        // switches) for each.
        if batch.len() == 1 {
            std::thread::yield_now();
            take_waiting(&rx, &mut batch, max_batch);
        }
        let started = std::time::Instant::now();
        let size = batch.len();
        let txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                // Dropping a job drops its reply channel: its caller gets
                // an error, never a false success.
                tracing::error!(error = %e, "store: cannot begin a write transaction; {size} operations refused");
                batch.clear();
                continue;
            }
        };
        let mut tx = Tx {
            txn,
            changes: Vec::new(),
            db: db.clone(),
        };
        let completions: Vec<Completion> = batch.drain(..).map(|job| job(&mut tx)).collect();
        let Tx { txn, changes, .. } = tx;
        let outcome = txn.commit().map_err(|e| {
            let e = StoreError::from(e);
            tracing::error!(error = %e, "store: commit failed; {size} operations refused");
            e.to_string()
        });
        after((changes, completions, outcome));
        if let Some(obs) = &observer {
            obs(size, started.elapsed());
        }
    }
}

/// Adds the operations already queued to `batch`, up to `max`.
fn take_waiting(rx: &std_mpsc::Receiver<Job>, batch: &mut Vec<Job>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(table: &'static str, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt {
        table,
        message: e.to_string(),
    })
}

fn dm_pair(a: Id, b: Id) -> (u128, u128) {
    if a.0 <= b.0 { (a.0, b.0) } else { (b.0, a.0) }
}

type Row<'a> = std::result::Result<
    (
        redb::AccessGuard<'a, (u128, u64)>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;

/// Which slice of a room's history to read.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub before: Option<u64>,
    pub after: Option<u64>,
    pub limit: usize,
}

/// Reads shared by read and write transactions, written once over redb's
/// `ReadableTable`.
mod q {
    use super::*;

    pub fn user(t: &impl ReadableTable<u128, &'static [u8]>, id: Id) -> Result<Option<UserRecord>> {
        t.get(id.0)?
            .map(|v| decode("user_to_record", v.value()))
            .transpose()
    }

    pub fn user_id_by_name(
        t: &impl ReadableTable<&'static str, u128>,
        name: &str,
    ) -> Result<Option<Id>> {
        Ok(t.get(name)?.map(|v| Id(v.value())))
    }

    pub fn room(t: &impl ReadableTable<u128, &'static [u8]>, id: Id) -> Result<Option<Room>> {
        t.get(id.0)?
            .map(|v| decode("room_to_record", v.value()))
            .transpose()
    }

    pub fn member(
        t: &impl ReadableTable<(u128, u128), &'static [u8]>,
        room: Id,
        user: Id,
    ) -> Result<Option<MemberRecord>> {
        t.get((room.0, user.0))?
            .map(|v| decode("room_user_to_member", v.value()))
            .transpose()
    }

    pub fn member_ids(
        t: &impl ReadableTable<(u128, u128), &'static [u8]>,
        room: Id,
    ) -> Result<Vec<Id>> {
        let mut out = Vec::new();
        for row in t.range((room.0, 0)..=(room.0, u128::MAX))? {
            let (k, _) = row?;
            out.push(Id(k.value().1));
        }
        Ok(out)
    }

    pub fn upload(
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        id: &str,
    ) -> Result<Option<UploadRecord>> {
        t.get(id)?
            .map(|v| decode("upload_to_record", v.value()))
            .transpose()
    }

    pub fn room_ids_of(t: &impl ReadableTable<(u128, u128), i64>, user: Id) -> Result<Vec<Id>> {
        Ok(pairs_of(t, user)?.into_iter().map(|(id, _)| id).collect())
    }

    /// The rows `(user, other) -> time` of a pair table, as (other, time).
    /// The ids paired with `user` in a (user, other) → time table.
    pub fn ids_of(t: &impl ReadableTable<(u128, u128), i64>, user: Id) -> Result<Vec<Id>> {
        Ok(pairs_of(t, user)?.into_iter().map(|(id, _)| id).collect())
    }

    pub fn pairs_of(t: &impl ReadableTable<(u128, u128), i64>, user: Id) -> Result<Vec<(Id, i64)>> {
        let mut out = Vec::new();
        for row in t.range((user.0, 0)..=(user.0, u128::MAX))? {
            let (k, v) = row?;
            out.push((Id(k.value().1), v.value()));
        }
        Ok(out)
    }

    pub fn has_pair(t: &impl ReadableTable<(u128, u128), i64>, a: Id, b: Id) -> Result<bool> {
        Ok(t.get((a.0, b.0))?.is_some())
    }

    /// Users of `pairs`, by username; rows of deleted users are skipped.
    pub fn users_of(
        t: &impl ReadableTable<u128, &'static [u8]>,
        pairs: Vec<(Id, i64)>,
    ) -> Result<Vec<(User, i64)>> {
        let mut out = Vec::new();
        for (id, at) in pairs {
            if let Some(u) = user(t, id)? {
                out.push((u.public(), at));
            }
        }
        out.sort_by(|a, b| a.0.username.cmp(&b.0.username));
        Ok(out)
    }

    pub fn settings(t: &impl ReadableTable<u128, &'static [u8]>, user: Id) -> Result<UserSettings> {
        Ok(t.get(user.0)?
            .map(|v| decode("user_to_settings", v.value()))
            .transpose()?
            .unwrap_or_default())
    }
}

/// Resolves senders while building messages, reading each user once.
struct SenderCache<'a, T: ReadableTable<u128, &'static [u8]>> {
    users: &'a T,
    seen: std::collections::HashMap<Id, User>,
}

impl<'a, T: ReadableTable<u128, &'static [u8]>> SenderCache<'a, T> {
    fn new(users: &'a T) -> Self {
        SenderCache {
            users,
            seen: Default::default(),
        }
    }

    fn get(&mut self, id: Id) -> Result<User> {
        if let Some(u) = self.seen.get(&id) {
            return Ok(u.clone());
        }
        let user = match q::user(self.users, id)? {
            Some(r) => r.public(),
            // A deleted account's messages stay; its name does not.
            None => User {
                id,
                username: "[deleted]".into(),
                role: Role::User,
            },
        };
        self.seen.insert(id, user.clone());
        Ok(user)
    }

    fn message(&mut self, room: Id, seq: u64, rec: MessageRecord) -> Result<Message> {
        let sender = self.get(rec.sender)?;
        Ok(Message {
            id: rec.id,
            room,
            seq,
            sender,
            text: rec.text,
            attachments: rec.attachments,
            created_at: rec.created_at,
            edited_at: rec.edited_at,
            deleted: rec.deleted,
            client_msg_id: rec.client_msg_id,
        })
    }
}

/// A read transaction: one consistent snapshot.
pub struct Rx {
    txn: ReadTransaction,
}

impl Rx {
    pub fn user(&self, id: Id) -> Result<Option<UserRecord>> {
        q::user(&self.txn.open_table(USER_TO_RECORD)?, id)
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>> {
        let names = self.txn.open_table(USERNAME_TO_USER)?;
        match q::user_id_by_name(&names, name)? {
            Some(id) => self.user(id),
            None => Ok(None),
        }
    }

    pub fn users(&self) -> Result<Vec<UserRecord>> {
        let t = self.txn.open_table(USER_TO_RECORD)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode("user_to_record", v.value())?);
        }
        Ok(out)
    }

    pub fn user_count(&self) -> Result<u64> {
        Ok(self.txn.open_table(USER_TO_RECORD)?.len()?)
    }

    pub fn room(&self, id: Id) -> Result<Option<Room>> {
        q::room(&self.txn.open_table(ROOM_TO_RECORD)?, id)
    }

    pub fn room_by_name(&self, name: &str) -> Result<Option<Room>> {
        let names = self.txn.open_table(ROOMNAME_TO_ROOM)?;
        match names.get(name)? {
            Some(id) => self.room(Id(id.value())),
            None => Ok(None),
        }
    }

    pub fn rooms(&self) -> Result<Vec<Room>> {
        let t = self.txn.open_table(ROOM_TO_RECORD)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode("room_to_record", v.value())?);
        }
        Ok(out)
    }

    pub fn room_ids_of(&self, user: Id) -> Result<Vec<Id>> {
        q::room_ids_of(&self.txn.open_table(USER_ROOM_TO_JOINED)?, user)
    }

    pub fn rooms_of(&self, user: Id) -> Result<Vec<Room>> {
        let rooms = self.txn.open_table(ROOM_TO_RECORD)?;
        let mut out = Vec::new();
        for id in self.room_ids_of(user)? {
            if let Some(r) = q::room(&rooms, id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    pub fn member(&self, room: Id, user: Id) -> Result<Option<MemberRecord>> {
        q::member(&self.txn.open_table(ROOM_USER_TO_MEMBER)?, room, user)
    }

    pub fn member_ids(&self, room: Id) -> Result<Vec<Id>> {
        q::member_ids(&self.txn.open_table(ROOM_USER_TO_MEMBER)?, room)
    }

    pub fn members(&self, room: Id) -> Result<Vec<User>> {
        let users = self.txn.open_table(USER_TO_RECORD)?;
        let mut out = Vec::new();
        for id in self.member_ids(room)? {
            if let Some(u) = q::user(&users, id)? {
                out.push(u.public());
            }
        }
        Ok(out)
    }

    pub fn last_seq(&self, room: Id) -> Result<u64> {
        Ok(self
            .txn
            .open_table(ROOM_TO_LAST_SEQ)?
            .get(room.0)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    pub fn message(&self, id: Id) -> Result<Option<Message>> {
        let index = self.txn.open_table(MESSAGE_TO_ROOM_SEQ)?;
        let Some((room, seq)) = index.get(id.0)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
        let Some(raw) = msgs.get((room, seq))? else {
            return Ok(None);
        };
        let rec: MessageRecord = decode("room_seq_to_message", raw.value())?;
        let users = self.txn.open_table(USER_TO_RECORD)?;
        SenderCache::new(&users)
            .message(Id(room), seq, rec)
            .map(Some)
    }

    /// Messages in ascending seq: the newest `limit` below `before` (or of
    /// all), or the oldest `limit` above `after`. `has_more` says whether
    /// more lie beyond the page in the direction read.
    pub fn history(&self, room: Id, page: Page) -> Result<(Vec<Message>, bool)> {
        let msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
        let users = self.txn.open_table(USER_TO_RECORD)?;
        let mut senders = SenderCache::new(&users);
        let lo = page.after.map(|a| a.saturating_add(1)).unwrap_or(0);
        let hi = page.before.map(|b| b.saturating_sub(1)).unwrap_or(u64::MAX);
        if page.before == Some(0) || lo > hi {
            return Ok((Vec::new(), false));
        }
        let range = msgs.range((room.0, lo)..=(room.0, hi))?;
        let mut out = Vec::with_capacity(page.limit.min(256));
        let mut has_more = false;
        let mut push = |row: Row<'_>| -> Result<bool> {
            let (k, v) = row?;
            if out.len() == page.limit {
                has_more = true;
                return Ok(false);
            }
            let seq = k.value().1;
            let rec: MessageRecord = decode("room_seq_to_message", v.value())?;
            out.push(senders.message(room, seq, rec)?);
            Ok(true)
        };
        // With only `after`, read forward from it; otherwise read back from
        // the upper bound, so "newest" is the default.
        if page.after.is_some() && page.before.is_none() {
            for row in range {
                if !push(row)? {
                    break;
                }
            }
        } else {
            for row in range.rev() {
                if !push(row)? {
                    break;
                }
            }
            out.reverse();
        }
        Ok((out, has_more))
    }

    pub fn upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        q::upload(&self.txn.open_table(UPLOAD_TO_RECORD)?, id)
    }

    /// Audit entries at or after `since`, newest last, at most `limit`
    /// (the latest ones).
    pub fn audit(&self, since: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        let t = self.txn.open_table(AUDIT_SEQ_TO_ENTRY)?;
        let mut out = Vec::new();
        for row in t.iter()?.rev() {
            let (_, v) = row?;
            let e: AuditEntry = decode("audit_seq_to_entry", v.value())?;
            if e.at < since || out.len() == limit {
                break;
            }
            out.push(e);
        }
        out.reverse();
        Ok(out)
    }

    pub fn retention(&self, room: Id) -> Result<Retention> {
        Ok(self
            .txn
            .open_table(ROOM_TO_RETENTION)?
            .get(room.0)?
            .map(|v| decode("room_to_retention", v.value()))
            .transpose()?
            .unwrap_or_default())
    }

    pub fn token_revoked(&self, token: u128) -> Result<bool> {
        Ok(self.txn.open_table(TOKEN_TO_EXPIRY)?.get(token)?.is_some())
    }

    /// Active mutes of a user: (room or None for everywhere, record).
    pub fn mutes_of(&self, user: Id, now: i64) -> Result<Vec<(Option<Id>, MuteRecord)>> {
        let t = self.txn.open_table(USER_ROOM_TO_MUTE)?;
        let mut out = Vec::new();
        for row in t.range((user.0, 0)..=(user.0, u128::MAX))? {
            let (k, v) = row?;
            let rec: MuteRecord = decode("user_room_to_mute", v.value())?;
            if rec.until > now {
                let room = k.value().1;
                out.push(((room != 0).then_some(Id(room)), rec));
            }
        }
        Ok(out)
    }

    /// All uploads, or one user's, oldest first.
    pub fn uploads(&self, of: Option<Id>) -> Result<Vec<UploadRecord>> {
        let t = self.txn.open_table(UPLOAD_TO_RECORD)?;
        let mut out = Vec::new();
        match of {
            Some(user) => {
                let idx = self.txn.open_table(UPLOADER_UPLOAD_TO_SIZE)?;
                for row in idx.range((user.0, "")..(user.0 + 1, ""))? {
                    let (k, _) = row?;
                    if let Some(r) = q::upload(&t, k.value().1)? {
                        out.push(r);
                    }
                }
            }
            None => {
                for row in t.iter()? {
                    let (_, v) = row?;
                    out.push(decode("upload_to_record", v.value())?);
                }
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// Bytes a user keeps uploaded.
    pub fn uploaded_bytes(&self, user: Id) -> Result<u64> {
        let idx = self.txn.open_table(UPLOADER_UPLOAD_TO_SIZE)?;
        let mut total = 0u64;
        for row in idx.range((user.0, "")..(user.0 + 1, ""))? {
            total = total.saturating_add(row?.1.value());
        }
        Ok(total)
    }

    /// Whether any upload record names this stored file.
    pub fn file_in_use(&self, hash: &str) -> Result<bool> {
        Ok(self.txn.open_table(FILE_TO_REFS)?.get(hash)?.is_some())
    }

    pub fn dm_room(&self, a: Id, b: Id) -> Result<Option<Room>> {
        let t = self.txn.open_table(USER_PAIR_TO_DM)?;
        match t.get(dm_pair(a, b))? {
            Some(id) => self.room(Id(id.value())),
            None => Ok(None),
        }
    }

    fn users_in(
        &self,
        table: TableDefinition<(u128, u128), i64>,
        user: Id,
    ) -> Result<Vec<(User, i64)>> {
        let pairs = q::pairs_of(&self.txn.open_table(table)?, user)?;
        q::users_of(&self.txn.open_table(USER_TO_RECORD)?, pairs)
    }

    fn ids_in(&self, table: TableDefinition<(u128, u128), i64>, user: Id) -> Result<Vec<Id>> {
        q::ids_of(&self.txn.open_table(table)?, user)
    }

    /// The user's friends with the time each friendship began.
    pub fn friends(&self, user: Id) -> Result<Vec<(User, i64)>> {
        self.users_in(USER_FRIEND_TO_SINCE, user)
    }

    pub fn friend_ids(&self, user: Id) -> Result<Vec<Id>> {
        self.ids_in(USER_FRIEND_TO_SINCE, user)
    }

    /// Pending requests the user received, with the time each was sent.
    pub fn incoming_requests(&self, user: Id) -> Result<Vec<(User, i64)>> {
        self.users_in(USER_REQUESTER_TO_SENT, user)
    }

    /// Pending requests the user sent.
    pub fn outgoing_requests(&self, user: Id) -> Result<Vec<(User, i64)>> {
        self.users_in(USER_RECIPIENT_TO_SENT, user)
    }

    /// Users this user blocks.
    pub fn blocked(&self, user: Id) -> Result<Vec<(User, i64)>> {
        self.users_in(USER_BLOCKED_TO_SINCE, user)
    }

    /// Users who block this user.
    pub fn blocker_ids(&self, user: Id) -> Result<Vec<Id>> {
        self.ids_in(USER_BLOCKER_TO_SINCE, user)
    }

    pub fn settings(&self, user: Id) -> Result<UserSettings> {
        q::settings(&self.txn.open_table(USER_TO_SETTINGS)?, user)
    }

    /// Every mute in force: (user, room or None for everywhere, record).
    pub fn mutes(&self, now: i64) -> Result<Vec<(Id, Option<Id>, MuteRecord)>> {
        let t = self.txn.open_table(USER_ROOM_TO_MUTE)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let rec: MuteRecord = decode("user_room_to_mute", v.value())?;
            if rec.until > now {
                let (user, room) = k.value();
                out.push((Id(user), (room != 0).then_some(Id(room)), rec));
            }
        }
        Ok(out)
    }
}

/// A write transaction inside the writer's group commit.
pub struct Tx {
    txn: WriteTransaction,
    changes: Vec<Change>,
    /// For reading the last committed state (`file_unreferenced`).
    db: Arc<Database>,
}

pub struct NewUser {
    pub username: String,
    pub role: Role,
    pub password_hash: String,
}

pub struct NewRoom {
    pub name: String,
    pub visibility: Visibility,
    pub topic: String,
    pub owner: Option<Id>,
}

pub struct NewMessage {
    pub room: Id,
    pub sender: Id,
    pub text: String,
    pub attachments: Vec<crate::domain::Attachment>,
    pub client_msg_id: Option<String>,
}

impl Tx {
    pub fn emit(&mut self, change: Change) {
        self.changes.push(change);
    }

    pub fn user(&self, id: Id) -> Result<Option<UserRecord>> {
        q::user(&self.txn.open_table(USER_TO_RECORD)?, id)
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>> {
        let id = q::user_id_by_name(&self.txn.open_table(USERNAME_TO_USER)?, name)?;
        match id {
            Some(id) => self.user(id),
            None => Ok(None),
        }
    }

    pub fn room(&self, id: Id) -> Result<Option<Room>> {
        q::room(&self.txn.open_table(ROOM_TO_RECORD)?, id)
    }

    pub fn member(&self, room: Id, user: Id) -> Result<Option<MemberRecord>> {
        q::member(&self.txn.open_table(ROOM_USER_TO_MEMBER)?, room, user)
    }

    pub fn member_ids(&self, room: Id) -> Result<Vec<Id>> {
        q::member_ids(&self.txn.open_table(ROOM_USER_TO_MEMBER)?, room)
    }

    pub fn create_user(&mut self, new: NewUser) -> Result<UserRecord> {
        let mut names = self.txn.open_table(USERNAME_TO_USER)?;
        if names.get(new.username.as_str())?.is_some() {
            return Err(StoreError::Conflict("username is taken".into()));
        }
        let rec = UserRecord {
            id: Id::new(),
            username: new.username,
            role: new.role,
            password_hash: new.password_hash,
            created_at: crate::domain::now_ms(),
            banned_until: None,
            ban_reason: None,
            token_gen: 0,
        };
        names.insert(rec.username.as_str(), rec.id.0)?;
        self.txn
            .open_table(USER_TO_RECORD)?
            .insert(rec.id.0, encode(&rec).as_slice())?;
        Ok(rec)
    }

    /// Ends every token of the user issued so far: the generation moves on
    /// (in the caller's record, which the caller then writes).
    pub fn revoke_tokens(&mut self, rec: &mut UserRecord, why: Revocation) {
        rec.token_gen = rec.token_gen.wrapping_add(1);
        self.emit(Change::TokensRevoked { user: rec.id, why });
    }

    /// Ends one token, remembered until it would have expired.
    pub fn revoke_token(&mut self, user: Id, token: u128, expiry_secs: u64) -> Result<()> {
        self.txn
            .open_table(TOKEN_TO_EXPIRY)?
            .insert(token, expiry_secs)?;
        self.emit(Change::TokenRevoked { user, token });
        Ok(())
    }

    /// Forgets revoked tokens that have expired by now; returns how many.
    pub fn prune_revoked_tokens(&mut self, now_secs: u64) -> Result<usize> {
        let mut t = self.txn.open_table(TOKEN_TO_EXPIRY)?;
        let before = t.len()?;
        t.retain(|_, exp| exp > now_secs)?;
        Ok((before - t.len()?) as usize)
    }

    pub fn put_user(&mut self, rec: &UserRecord) -> Result<()> {
        self.txn
            .open_table(USER_TO_RECORD)?
            .insert(rec.id.0, encode(rec).as_slice())?;
        self.emit(Change::UserUpdated(rec.public()));
        Ok(())
    }

    /// Removes the account and its memberships; its messages stay, shown as
    /// from a deleted user.
    pub fn delete_user(&mut self, id: Id) -> Result<UserRecord> {
        let rec = self.user(id)?.ok_or(StoreError::NotFound("user"))?;
        self.txn.open_table(USER_TO_RECORD)?.remove(id.0)?;
        self.txn
            .open_table(USERNAME_TO_USER)?
            .remove(rec.username.as_str())?;
        let room_ids = q::room_ids_of(&self.txn.open_table(USER_ROOM_TO_JOINED)?, id)?;
        for room in room_ids {
            self.txn
                .open_table(ROOM_USER_TO_MEMBER)?
                .remove((room.0, id.0))?;
            self.txn
                .open_table(USER_ROOM_TO_JOINED)?
                .remove((id.0, room.0))?;
        }
        let me = rec.public();
        let users = self.txn.open_table(USER_TO_RECORD)?;
        let others = |table| -> Result<Vec<User>> {
            let pairs = q::pairs_of(&self.txn.open_table(table)?, id)?;
            Ok(q::users_of(&users, pairs)?
                .into_iter()
                .map(|(u, _)| u)
                .collect())
        };
        let friends = others(USER_FRIEND_TO_SINCE)?;
        let incoming = others(USER_REQUESTER_TO_SENT)?;
        let outgoing = others(USER_RECIPIENT_TO_SENT)?;
        let blocked = others(USER_BLOCKED_TO_SINCE)?;
        drop(users);
        // Those who knew this user as a friend or a pending request hear
        // that it ended, so their lists need no refresh.
        for other in friends {
            self.remove_friend(&me, &other)?;
        }
        for other in incoming {
            self.end_request(&other, &me, true)?;
        }
        for other in outgoing {
            self.end_request(&me, &other, false)?;
        }
        // Requests this user never saw exist only from users it blocks.
        for other in blocked {
            self.end_request(&other, &me, true)?;
        }
        // Blocks end silently: nobody was told of them in the first place.
        for (forward, backward) in [
            (USER_BLOCKED_TO_SINCE, USER_BLOCKER_TO_SINCE),
            (USER_BLOCKER_TO_SINCE, USER_BLOCKED_TO_SINCE),
        ] {
            let mut f = self.txn.open_table(forward)?;
            let mut b = self.txn.open_table(backward)?;
            for (other, _) in q::pairs_of(&f, id)? {
                f.remove((id.0, other.0))?;
                b.remove((other.0, id.0))?;
            }
        }
        self.txn.open_table(USER_TO_SETTINGS)?.remove(id.0)?;
        self.emit(Change::UserDeleted(id));
        Ok(rec)
    }

    pub fn create_room(&mut self, new: NewRoom) -> Result<Room> {
        let mut names = self.txn.open_table(ROOMNAME_TO_ROOM)?;
        if names.get(new.name.as_str())?.is_some() {
            return Err(StoreError::Conflict("a room with that name exists".into()));
        }
        let room = Room {
            id: Id::new(),
            name: new.name,
            kind: RoomKind::Room,
            visibility: new.visibility,
            topic: new.topic,
            owner: new.owner,
            created_at: crate::domain::now_ms(),
        };
        names.insert(room.name.as_str(), room.id.0)?;
        drop(names);
        self.txn
            .open_table(ROOM_TO_RECORD)?
            .insert(room.id.0, encode(&room).as_slice())?;
        let mut members = Vec::new();
        if let Some(owner) = new.owner
            && let Some(user) = self.user(owner)?
        {
            self.insert_member(room.id, user.id)?;
            members.push(user.public());
        }
        self.emit(Change::RoomCreated {
            room: room.clone(),
            members,
        });
        Ok(room)
    }

    pub fn put_room(&mut self, room: &Room) -> Result<()> {
        self.txn
            .open_table(ROOM_TO_RECORD)?
            .insert(room.id.0, encode(room).as_slice())?;
        self.emit(Change::RoomUpdated(room.clone()));
        Ok(())
    }

    /// Deletes the room with its memberships and history.
    pub fn delete_room(&mut self, id: Id) -> Result<Room> {
        let room = self.room(id)?.ok_or(StoreError::NotFound("room"))?;
        let members = q::member_ids(&self.txn.open_table(ROOM_USER_TO_MEMBER)?, id)?;
        {
            let mut m = self.txn.open_table(ROOM_USER_TO_MEMBER)?;
            let mut j = self.txn.open_table(USER_ROOM_TO_JOINED)?;
            for user in &members {
                m.remove((id.0, user.0))?;
                j.remove((user.0, id.0))?;
            }
        }
        let mut removed = Vec::new();
        {
            let mut msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
            for row in msgs.extract_from_if((id.0, 0)..=(id.0, u64::MAX), |_, _| true)? {
                let (_, v) = row?;
                removed.push(decode::<MessageRecord>("room_seq_to_message", v.value())?);
            }
        }
        self.forget_messages(&removed)?;
        self.txn.open_table(ROOM_TO_LAST_SEQ)?.remove(id.0)?;
        self.txn.open_table(ROOM_TO_RECORD)?.remove(id.0)?;
        if room.kind == RoomKind::Room {
            self.txn
                .open_table(ROOMNAME_TO_ROOM)?
                .remove(room.name.as_str())?;
        } else if let [a, b] = members.as_slice() {
            self.txn
                .open_table(USER_PAIR_TO_DM)?
                .remove(dm_pair(*a, *b))?;
        }
        self.emit(Change::RoomDeleted {
            room: room.clone(),
            members,
        });
        Ok(room)
    }

    fn insert_member(&mut self, room: Id, user: Id) -> Result<()> {
        let now = crate::domain::now_ms();
        let rec = MemberRecord {
            joined_at: now,
            last_read: 0,
        };
        self.txn
            .open_table(ROOM_USER_TO_MEMBER)?
            .insert((room.0, user.0), encode(&rec).as_slice())?;
        self.txn
            .open_table(USER_ROOM_TO_JOINED)?
            .insert((user.0, room.0), now)?;
        Ok(())
    }

    /// Adds a member; returns false if they already were one.
    pub fn add_member(&mut self, room: &Room, user: &User) -> Result<bool> {
        if self.member(room.id, user.id)?.is_some() {
            return Ok(false);
        }
        self.insert_member(room.id, user.id)?;
        self.emit(Change::MemberAdded {
            room: room.clone(),
            user: user.clone(),
        });
        Ok(true)
    }

    /// Removes a member; returns false if they were not one.
    pub fn remove_member(&mut self, room: &Room, user: &User) -> Result<bool> {
        let removed = self
            .txn
            .open_table(ROOM_USER_TO_MEMBER)?
            .remove((room.id.0, user.id.0))?
            .is_some();
        if !removed {
            return Ok(false);
        }
        self.txn
            .open_table(USER_ROOM_TO_JOINED)?
            .remove((user.id.0, room.id.0))?;
        self.emit(Change::MemberRemoved {
            room: room.clone(),
            user: user.clone(),
        });
        Ok(true)
    }

    /// The DM room of two users, made on first use.
    pub fn dm_room(&mut self, a: &User, b: &User) -> Result<Room> {
        let pair = dm_pair(a.id, b.id);
        let existing = self
            .txn
            .open_table(USER_PAIR_TO_DM)?
            .get(pair)?
            .map(|v| Id(v.value()));
        if let Some(id) = existing
            && let Some(room) = self.room(id)?
        {
            return Ok(room);
        }
        let (first, second) = if a.username <= b.username {
            (a, b)
        } else {
            (b, a)
        };
        let room = Room {
            id: Id::new(),
            name: format!("{},{}", first.username, second.username),
            kind: RoomKind::Dm,
            visibility: Visibility::Private,
            topic: String::new(),
            owner: Some(a.id),
            created_at: crate::domain::now_ms(),
        };
        self.txn
            .open_table(ROOM_TO_RECORD)?
            .insert(room.id.0, encode(&room).as_slice())?;
        self.txn
            .open_table(USER_PAIR_TO_DM)?
            .insert(pair, room.id.0)?;
        self.insert_member(room.id, a.id)?;
        let mut members = vec![a.clone()];
        if a.id != b.id {
            self.insert_member(room.id, b.id)?;
            members.push(b.clone());
        }
        self.emit(Change::RoomCreated {
            room: room.clone(),
            members,
        });
        Ok(room)
    }

    /// Appends a message with the room's next seq: `(message, true)`. If
    /// this sender already sent one with the same `client_msg_id`, nothing
    /// is written and that earlier message comes back: `(earlier, false)`.
    pub fn append_message(&mut self, new: NewMessage) -> Result<(Message, bool)> {
        if let Some(cid) = &new.client_msg_id {
            let existing = self
                .txn
                .open_table(SENDER_CLIENT_ID_TO_MESSAGE)?
                .get((new.sender.0, cid.as_str()))?
                .map(|v| Id(v.value()));
            if let Some(id) = existing
                && let Some(msg) = self.message(id)?
            {
                return Ok((msg, false));
            }
        }
        let users = self.txn.open_table(USER_TO_RECORD)?;
        let sender = SenderCache::new(&users).get(new.sender)?;
        drop(users);
        let mut last = self.txn.open_table(ROOM_TO_LAST_SEQ)?;
        let seq = last.get(new.room.0)?.map(|v| v.value()).unwrap_or(0) + 1;
        last.insert(new.room.0, seq)?;
        drop(last);
        self.count_attachments(&new.attachments, 1)?;
        let rec = MessageRecord {
            id: Id::new(),
            sender: new.sender,
            text: new.text,
            attachments: new.attachments,
            created_at: crate::domain::now_ms(),
            edited_at: None,
            deleted: false,
            client_msg_id: new.client_msg_id,
        };
        self.txn
            .open_table(ROOM_SEQ_TO_MESSAGE)?
            .insert((new.room.0, seq), encode(&rec).as_slice())?;
        self.txn
            .open_table(MESSAGE_TO_ROOM_SEQ)?
            .insert(rec.id.0, (new.room.0, seq))?;
        if let Some(cid) = &rec.client_msg_id {
            self.txn
                .open_table(SENDER_CLIENT_ID_TO_MESSAGE)?
                .insert((new.sender.0, cid.as_str()), rec.id.0)?;
        }
        let msg = Message {
            id: rec.id,
            room: new.room,
            seq,
            sender,
            text: rec.text,
            attachments: rec.attachments,
            created_at: rec.created_at,
            edited_at: None,
            deleted: false,
            client_msg_id: rec.client_msg_id,
        };
        self.emit(Change::MessageCreated(msg.clone()));
        Ok((msg, true))
    }

    pub fn message(&self, id: Id) -> Result<Option<Message>> {
        let Some((room, seq)) = self
            .txn
            .open_table(MESSAGE_TO_ROOM_SEQ)?
            .get(id.0)?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        let msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
        let Some(raw) = msgs.get((room, seq))? else {
            return Ok(None);
        };
        let rec: MessageRecord = decode("room_seq_to_message", raw.value())?;
        let users = self.txn.open_table(USER_TO_RECORD)?;
        SenderCache::new(&users)
            .message(Id(room), seq, rec)
            .map(Some)
    }

    fn put_message(&mut self, msg: &Message) -> Result<()> {
        let rec = MessageRecord {
            id: msg.id,
            sender: msg.sender.id,
            text: msg.text.clone(),
            attachments: msg.attachments.clone(),
            created_at: msg.created_at,
            edited_at: msg.edited_at,
            deleted: msg.deleted,
            client_msg_id: msg.client_msg_id.clone(),
        };
        self.txn
            .open_table(ROOM_SEQ_TO_MESSAGE)?
            .insert((msg.room.0, msg.seq), encode(&rec).as_slice())?;
        Ok(())
    }

    pub fn edit_message(&mut self, mut msg: Message, text: String) -> Result<Message> {
        msg.text = text;
        msg.edited_at = Some(crate::domain::now_ms());
        self.put_message(&msg)?;
        self.emit(Change::MessageUpdated(msg.clone()));
        Ok(msg)
    }

    /// Blanks a message; it keeps its seq so history has no holes.
    pub fn delete_message(&mut self, mut msg: Message) -> Result<Message> {
        self.count_attachments(&msg.attachments, -1)?;
        msg.text = String::new();
        msg.attachments.clear();
        msg.deleted = true;
        self.put_message(&msg)?;
        self.emit(Change::MessageDeleted {
            room: msg.room,
            id: msg.id,
            seq: msg.seq,
        });
        Ok(msg)
    }

    pub fn upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        q::upload(&self.txn.open_table(UPLOAD_TO_RECORD)?, id)
    }

    pub fn insert_upload(&mut self, rec: &UploadRecord) -> Result<()> {
        self.txn
            .open_table(UPLOAD_TO_RECORD)?
            .insert(rec.id.as_str(), encode(rec).as_slice())?;
        self.txn
            .open_table(UPLOADER_UPLOAD_TO_SIZE)?
            .insert((rec.uploader.0, rec.id.as_str()), rec.size)?;
        let mut refs = self.txn.open_table(FILE_TO_REFS)?;
        for hash in [&rec.file, &rec.thumb] {
            let n = refs.get(hash.as_str())?.map(|v| v.value()).unwrap_or(0);
            refs.insert(hash.as_str(), n + 1)?;
        }
        Ok(())
    }

    /// Whether no upload record names the stored file `hash`, neither in
    /// this group (earlier operations' writes included) nor in the last
    /// commit: a file removed on this answer is unnamed whether the group
    /// then commits or fails.
    pub fn file_unreferenced(&self, hash: &str) -> Result<bool> {
        let here = self.txn.open_table(FILE_TO_REFS)?.get(hash)?.is_none();
        let committed = self
            .db
            .begin_read()?
            .open_table(FILE_TO_REFS)?
            .get(hash)?
            .is_none();
        Ok(here && committed)
    }

    /// Removes an upload record; returns it with the stored files that no
    /// record names any more (candidates for `file_unreferenced` once this
    /// commits).
    pub fn delete_upload(&mut self, id: &str) -> Result<(UploadRecord, Vec<String>)> {
        let rec = self.upload(id)?.ok_or(StoreError::NotFound("upload"))?;
        self.txn.open_table(UPLOAD_TO_RECORD)?.remove(id)?;
        self.txn
            .open_table(UPLOADER_UPLOAD_TO_SIZE)?
            .remove((rec.uploader.0, id))?;
        let mut refs = self.txn.open_table(FILE_TO_REFS)?;
        let mut orphaned = Vec::new();
        for hash in [&rec.file, &rec.thumb] {
            let n = refs.get(hash.as_str())?.map(|v| v.value()).unwrap_or(0);
            if n <= 1 {
                refs.remove(hash.as_str())?;
                if !orphaned.contains(hash) {
                    orphaned.push(hash.clone());
                }
            } else {
                refs.insert(hash.as_str(), n - 1)?;
            }
        }
        Ok((rec, orphaned))
    }

    /// The attachments for a message, from upload ids that must exist and
    /// belong to the sender. Checks only: call `count_attachments` once the
    /// message is certain to be stored.
    pub fn resolve_attachments(
        &self,
        sender: Id,
        ids: &[String],
    ) -> Result<Vec<crate::domain::Attachment>> {
        let t = self.txn.open_table(UPLOAD_TO_RECORD)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match q::upload(&t, id)? {
                Some(rec) if rec.uploader == sender => out.push(rec.attachment()),
                // Someone else's upload is as unknown as a missing one.
                _ => {
                    return Err(StoreError::Invalid(format!(
                        "attachments: unknown upload id {id:?}"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Clears what points at messages whose rows are gone (room deletion,
    /// retention): the id index, client ids, and their uploads' counts.
    fn forget_messages(&mut self, records: &[MessageRecord]) -> Result<()> {
        let mut attached = Vec::new();
        {
            let mut index = self.txn.open_table(MESSAGE_TO_ROOM_SEQ)?;
            let mut cids = self.txn.open_table(SENDER_CLIENT_ID_TO_MESSAGE)?;
            for rec in records {
                index.remove(rec.id.0)?;
                if let Some(cid) = &rec.client_msg_id {
                    cids.remove((rec.sender.0, cid.as_str()))?;
                }
                attached.extend(rec.attachments.iter().cloned());
            }
        }
        self.count_attachments(&attached, -1)
    }

    /// Adds `delta` to the message count of each attached upload.
    fn count_attachments(
        &mut self,
        attachments: &[crate::domain::Attachment],
        delta: i64,
    ) -> Result<()> {
        if attachments.is_empty() {
            return Ok(());
        }
        let mut t = self.txn.open_table(UPLOAD_TO_RECORD)?;
        for a in attachments {
            let rec: Option<UploadRecord> = q::upload(&t, &a.id)?;
            if let Some(mut rec) = rec {
                rec.refs = rec.refs.saturating_add_signed(delta);
                t.insert(rec.id.as_str(), encode(&rec).as_slice())?;
            }
        }
        Ok(())
    }

    /// Appends to the audit log; its seq is the next after the last.
    pub fn audit(&mut self, mut entry: AuditEntry) -> Result<()> {
        let mut t = self.txn.open_table(AUDIT_SEQ_TO_ENTRY)?;
        let seq = t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
        entry.seq = seq;
        t.insert(seq, encode(&entry).as_slice())?;
        Ok(())
    }

    pub fn set_mute(&mut self, user: Id, room: Option<Id>, rec: &MuteRecord) -> Result<()> {
        self.txn.open_table(USER_ROOM_TO_MUTE)?.insert(
            (user.0, room.map(|r| r.0).unwrap_or(0)),
            encode(rec).as_slice(),
        )?;
        Ok(())
    }

    /// Returns whether there was a mute to lift.
    pub fn clear_mute(&mut self, user: Id, room: Option<Id>) -> Result<bool> {
        Ok(self
            .txn
            .open_table(USER_ROOM_TO_MUTE)?
            .remove((user.0, room.map(|r| r.0).unwrap_or(0)))?
            .is_some())
    }

    /// Whether `user` may not speak in `room` now (muted there or
    /// everywhere).
    pub fn muted(&self, user: Id, room: Id, now: i64) -> Result<bool> {
        let t = self.txn.open_table(USER_ROOM_TO_MUTE)?;
        for key in [(user.0, 0), (user.0, room.0)] {
            if let Some(v) = t.get(key)? {
                let rec: MuteRecord = decode("user_room_to_mute", v.value())?;
                if rec.until > now {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    pub fn set_retention(&mut self, room: Id, r: &Retention) -> Result<()> {
        let mut t = self.txn.open_table(ROOM_TO_RETENTION)?;
        if *r == Retention::default() {
            t.remove(room.0)?;
        } else {
            t.insert(room.0, encode(r).as_slice())?;
        }
        Ok(())
    }

    /// Removes up to `max` of a room's oldest messages that were created
    /// before `before_ms` or have a seq up to `up_to_seq`. Returns how many
    /// went. Their seqs stay used: history starts later, with no reuse.
    pub fn prune_room(
        &mut self,
        room: Id,
        before_ms: Option<i64>,
        up_to_seq: Option<u64>,
        max: usize,
    ) -> Result<usize> {
        let mut doomed: Vec<(u64, MessageRecord)> = Vec::new();
        {
            let msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
            for row in msgs.range((room.0, 0)..=(room.0, u64::MAX))? {
                let (k, v) = row?;
                let seq = k.value().1;
                let rec: MessageRecord = decode("room_seq_to_message", v.value())?;
                let old = before_ms.is_some_and(|b| rec.created_at < b);
                let over = up_to_seq.is_some_and(|u| seq <= u);
                if !(old || over) || doomed.len() == max {
                    break;
                }
                doomed.push((seq, rec));
            }
        }
        {
            let mut msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
            for (seq, _) in &doomed {
                msgs.remove((room.0, *seq))?;
            }
        }
        let records: Vec<MessageRecord> = doomed.into_iter().map(|(_, rec)| rec).collect();
        self.forget_messages(&records)?;
        Ok(records.len())
    }

    pub fn last_seq(&self, room: Id) -> Result<u64> {
        Ok(self
            .txn
            .open_table(ROOM_TO_LAST_SEQ)?
            .get(room.0)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    pub fn are_friends(&self, a: Id, b: Id) -> Result<bool> {
        q::has_pair(&self.txn.open_table(USER_FRIEND_TO_SINCE)?, a, b)
    }

    /// Whether `requester` asked `recipient` and the recipient can see it.
    pub fn has_incoming(&self, recipient: Id, requester: Id) -> Result<bool> {
        q::has_pair(
            &self.txn.open_table(USER_REQUESTER_TO_SENT)?,
            recipient,
            requester,
        )
    }

    /// Whether `requester` has a request to `recipient` pending, delivered
    /// or not.
    pub fn has_outgoing(&self, requester: Id, recipient: Id) -> Result<bool> {
        q::has_pair(
            &self.txn.open_table(USER_RECIPIENT_TO_SENT)?,
            requester,
            recipient,
        )
    }

    pub fn blocks(&self, blocker: Id, blocked: Id) -> Result<bool> {
        q::has_pair(
            &self.txn.open_table(USER_BLOCKED_TO_SINCE)?,
            blocker,
            blocked,
        )
    }

    pub fn settings(&self, user: Id) -> Result<UserSettings> {
        q::settings(&self.txn.open_table(USER_TO_SETTINGS)?, user)
    }

    pub fn put_settings(&mut self, user: Id, settings: &UserSettings) -> Result<()> {
        self.txn
            .open_table(USER_TO_SETTINGS)?
            .insert(user.0, encode(settings).as_slice())?;
        Ok(())
    }

    /// Records a pending request. `deliver` false keeps it on the sender's
    /// side only; true also shows it to the recipient (once).
    pub fn put_request(&mut self, requester: &User, recipient: &User, deliver: bool) -> Result<()> {
        let now = crate::domain::now_ms();
        if !self.has_outgoing(requester.id, recipient.id)? {
            self.txn
                .open_table(USER_RECIPIENT_TO_SENT)?
                .insert((requester.id.0, recipient.id.0), now)?;
        }
        if deliver && !self.has_incoming(recipient.id, requester.id)? {
            self.txn
                .open_table(USER_REQUESTER_TO_SENT)?
                .insert((recipient.id.0, requester.id.0), now)?;
            self.emit(Change::FriendRequested {
                requester: requester.clone(),
                recipient: recipient.clone(),
            });
        }
        Ok(())
    }

    /// Drops a pending request; false if there was none. The event goes
    /// to the side whose list loses it: the requester for a decline, the
    /// recipient (if they saw it) for a withdrawal.
    pub fn end_request(
        &mut self,
        requester: &User,
        recipient: &User,
        declined: bool,
    ) -> Result<bool> {
        let sent = self
            .txn
            .open_table(USER_RECIPIENT_TO_SENT)?
            .remove((requester.id.0, recipient.id.0))?
            .is_some();
        let seen = self
            .txn
            .open_table(USER_REQUESTER_TO_SENT)?
            .remove((recipient.id.0, requester.id.0))?
            .is_some();
        if (declined && sent) || (!declined && seen) {
            self.emit(Change::FriendRequestEnded {
                requester: requester.clone(),
                recipient: recipient.clone(),
                declined,
            });
        }
        Ok(sent || seen)
    }

    /// Takes a request out of its recipient's sight, leaving it pending on
    /// the requester's side; false if the recipient did not see one.
    pub fn hide_request(&mut self, requester: &User, recipient: &User) -> Result<bool> {
        let seen = self
            .txn
            .open_table(USER_REQUESTER_TO_SENT)?
            .remove((recipient.id.0, requester.id.0))?
            .is_some();
        if seen {
            self.emit(Change::FriendRequestEnded {
                requester: requester.clone(),
                recipient: recipient.clone(),
                declined: false,
            });
        }
        Ok(seen)
    }

    /// Makes two users friends, consuming the requests between them.
    pub fn add_friend(&mut self, accepter: &User, requester: &User) -> Result<()> {
        let (a, b) = (accepter.id.0, requester.id.0);
        {
            let mut incoming = self.txn.open_table(USER_REQUESTER_TO_SENT)?;
            incoming.remove((a, b))?;
            incoming.remove((b, a))?;
            let mut outgoing = self.txn.open_table(USER_RECIPIENT_TO_SENT)?;
            outgoing.remove((a, b))?;
            outgoing.remove((b, a))?;
            let mut friends = self.txn.open_table(USER_FRIEND_TO_SINCE)?;
            let now = crate::domain::now_ms();
            friends.insert((a, b), now)?;
            friends.insert((b, a), now)?;
        }
        self.emit(Change::FriendAdded {
            accepter: accepter.clone(),
            requester: requester.clone(),
        });
        Ok(())
    }

    /// Ends a friendship; false if there was none.
    pub fn remove_friend(&mut self, by: &User, other: &User) -> Result<bool> {
        let removed = {
            let mut friends = self.txn.open_table(USER_FRIEND_TO_SINCE)?;
            let one = friends.remove((by.id.0, other.id.0))?.is_some();
            let two = friends.remove((other.id.0, by.id.0))?.is_some();
            one || two
        };
        if removed {
            self.emit(Change::FriendRemoved {
                by: by.clone(),
                other: other.clone(),
            });
        }
        Ok(removed)
    }

    /// Records a block; false if it existed.
    pub fn block(&mut self, blocker: Id, blocked: Id) -> Result<bool> {
        if self.blocks(blocker, blocked)? {
            return Ok(false);
        }
        let now = crate::domain::now_ms();
        self.txn
            .open_table(USER_BLOCKED_TO_SINCE)?
            .insert((blocker.0, blocked.0), now)?;
        self.txn
            .open_table(USER_BLOCKER_TO_SINCE)?
            .insert((blocked.0, blocker.0), now)?;
        self.emit(Change::Blocked { blocker, blocked });
        Ok(true)
    }

    /// Lifts a block; false if there was none.
    pub fn unblock(&mut self, blocker: Id, blocked: Id) -> Result<bool> {
        let removed = self
            .txn
            .open_table(USER_BLOCKED_TO_SINCE)?
            .remove((blocker.0, blocked.0))?
            .is_some();
        if !removed {
            return Ok(false);
        }
        self.txn
            .open_table(USER_BLOCKER_TO_SINCE)?
            .remove((blocked.0, blocker.0))?;
        self.emit(Change::Unblocked { blocker, blocked });
        Ok(true)
    }

    /// Moves the member's read marker forward (never back).
    pub fn mark_read(&mut self, room: Id, user: &User, seq: u64) -> Result<u64> {
        let mut m = self.txn.open_table(ROOM_USER_TO_MEMBER)?;
        let mut rec: MemberRecord = match m.get((room.0, user.id.0))? {
            Some(v) => decode("room_user_to_member", v.value())?,
            None => return Err(StoreError::Forbidden("not a member of this room".into())),
        };
        if seq > rec.last_read {
            rec.last_read = seq;
            m.insert((room.0, user.id.0), encode(&rec).as_slice())?;
            drop(m);
            let hidden_from = q::ids_of(&self.txn.open_table(USER_BLOCKER_TO_SINCE)?, user.id)?;
            self.emit(Change::Read {
                room,
                user: user.clone(),
                seq,
                hidden_from,
            });
        }
        Ok(rec.last_read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> Result<Store> {
        Store::open(path, 1, 16, Arc::new(|_: &[Change]| {}), None)
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
