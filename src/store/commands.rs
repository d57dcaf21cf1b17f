//! Writes as data. Every change to the store is one [`Command`]: a plain,
//! serializable value with everything that could differ between two
//! applications of it (ids, times, password hashes, the server's
//! defaults) fixed by the node that submits it. Applying a command is then
//! a pure function of the store's state and the command, which is what
//! lets a single node apply it straight away and a cluster apply it from a
//! replicated log on every node and come out the same.

use super::*;

/// A command as submitted: its own id (for deduplication in the log and
/// for finding whoever waits on it), the submission time every stored time
/// comes from, and the command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub id: Id,
    pub at: i64,
    pub cmd: Command,
}

/// Where a message goes, resolved before submission (a user named by the
/// sender is looked up then, by name, so the command holds the account).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SendTo {
    Room(Id),
    User(User),
}

/// The friend and block operations between the caller and another user.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum PairOp {
    Request,
    Accept,
    Decline,
    Remove,
    Block,
    Unblock,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    CreateUser(NewUser),
    /// Ends every token of the user issued so far.
    RevokeTokens {
        user: Id,
        why: Revocation,
    },
    /// Ends one token; `expiry` (seconds) is when it would have ended anyway.
    RevokeToken {
        user: Id,
        token: u128,
        expiry: u64,
    },
    SetPassword {
        user: Id,
        hash: String,
    },
    SetRole {
        user: Id,
        role: Role,
    },
    DeleteUser {
        user: Id,
    },
    SetDmPolicy {
        user: Id,
        policy: DmPolicy,
    },
    Pair {
        op: PairOp,
        me: Id,
        other: Id,
    },
    CreateRoom(NewRoom),
    UpdateRoom {
        room: Id,
        topic: Option<String>,
        visibility: Option<Visibility>,
        /// A new name, checked against the names taken when it applies.
        #[serde(default)]
        name: Option<String>,
    },
    DeleteRoom {
        room: Id,
    },
    /// `adder`: who adds (`None`: the operator), refused by a block.
    AddMember {
        room: Id,
        user: User,
        adder: Option<Id>,
    },
    JoinRoom {
        room: Id,
        user: User,
    },
    LeaveRoom {
        room: Id,
        user: User,
    },
    SendMessage {
        sender: User,
        to: SendTo,
        text: String,
        uploads: Vec<String>,
        client_msg_id: Option<String>,
        /// The ids the message and, for a first DM, its room get.
        message: Id,
        dm_room: Id,
        dm_policy: DmPolicy,
        /// For `@here`: the room's members online at submission.
        #[serde(default)]
        here: Vec<Id>,
        /// The message replied to (its thread's root is found in apply).
        #[serde(default)]
        reply_to: Option<Id>,
        /// A reply also shown in the room.
        #[serde(default)]
        also_in_room: bool,
    },
    EditMessage {
        user: Id,
        message: Id,
        text: String,
        dm_policy: DmPolicy,
        /// For `@here`, as in `SendMessage`.
        #[serde(default)]
        here: Vec<Id>,
    },
    /// `by`: `None` is the operator.
    DeleteMessage {
        by: Option<Id>,
        message: Id,
        dm_policy: DmPolicy,
    },
    MarkRead {
        user: User,
        room: Id,
        seq: u64,
    },
    InsertUpload(UploadRecord),
    DeleteUpload {
        id: String,
    },
    /// Deletes the upload only if no message carries it (the sweep of
    /// unused uploads, which must not race a message attaching it).
    DeleteUnusedUpload {
        id: String,
    },
    Audit(AuditEntry),
    Ban {
        by: Option<Id>,
        user: Id,
        until: i64,
        reason: Option<String>,
        entry: AuditEntry,
    },
    Unban {
        by: Option<Id>,
        user: Id,
        entry: AuditEntry,
    },
    Mute {
        by: Option<Id>,
        user: Id,
        room: Option<Id>,
        mute: MuteRecord,
        entry: AuditEntry,
    },
    Unmute {
        by: Option<Id>,
        user: Id,
        room: Option<Id>,
        entry: AuditEntry,
    },
    /// Closes the user's connections on every node, with the audit entry.
    Kick {
        user: Id,
        reason: String,
        entry: AuditEntry,
    },
    /// An announcement to everyone or one room, on every node.
    Announce {
        text: String,
        room: Option<Id>,
        entry: AuditEntry,
    },
    SetRetention {
        room: Id,
        retention: Retention,
    },
    PruneRoom {
        room: Id,
        before: Option<i64>,
        up_to: Option<u64>,
        max: usize,
    },
    PruneRevokedTokens {
        now_secs: u64,
    },
    /// Push notifications: keys, subscriptions, preferences, the queue.
    Push(super::push::PushCommand),
    /// One of the user's own uploads as their picture, or none.
    SetAvatar {
        user: Id,
        upload: Option<String>,
    },
    /// Bots, incoming webhooks and invites.
    Integration(super::integrations::IntegrationCommand),
    /// Following threads and their read markers.
    Thread(super::threads::ThreadCommand),
    /// `emoji`: already checked to be one emoji, in its qualified form.
    React {
        user: Id,
        message: Id,
        emoji: String,
        dm_policy: DmPolicy,
    },
    Unreact {
        user: Id,
        message: Id,
        emoji: String,
    },
    /// `by`: `None` is the operator. `entry`: the audit line, when staff
    /// pin in a room that is not theirs.
    Pin {
        by: Option<Id>,
        message: Id,
        entry: Option<AuditEntry>,
    },
    Unpin {
        by: Option<Id>,
        message: Id,
        entry: Option<AuditEntry>,
    },
    /// Link previews fetched for a message, the pages' cache rows and the
    /// preview images stored meanwhile.
    SetPreviews {
        message: Id,
        previews: Vec<crate::domain::LinkPreview>,
        cache: Vec<super::previews::PreviewCache>,
        images: Vec<super::previews::PreviewImage>,
    },
    /// Outgoing webhooks: endpoints, claims and results of deliveries.
    Webhook(super::webhooks::WebhookCommand),
    /// Accounts linked to an identity at another issuer.
    External(super::external::ExternalCommand),
}

impl Command {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateUser(_) => "create_user",
            Command::RevokeTokens { .. } => "revoke_tokens",
            Command::RevokeToken { .. } => "revoke_token",
            Command::SetPassword { .. } => "set_password",
            Command::SetRole { .. } => "set_role",
            Command::DeleteUser { .. } => "delete_user",
            Command::SetDmPolicy { .. } => "set_dm_policy",
            Command::Pair { .. } => "pair",
            Command::CreateRoom(_) => "create_room",
            Command::UpdateRoom { .. } => "update_room",
            Command::DeleteRoom { .. } => "delete_room",
            Command::AddMember { .. } => "add_member",
            Command::JoinRoom { .. } => "join_room",
            Command::LeaveRoom { .. } => "leave_room",
            Command::SendMessage { .. } => "send_message",
            Command::EditMessage { .. } => "edit_message",
            Command::DeleteMessage { .. } => "delete_message",
            Command::MarkRead { .. } => "mark_read",
            Command::InsertUpload(_) => "insert_upload",
            Command::DeleteUpload { .. } => "delete_upload",
            Command::DeleteUnusedUpload { .. } => "delete_unused_upload",
            Command::Audit(_) => "audit",
            Command::Ban { .. } => "ban",
            Command::Unban { .. } => "unban",
            Command::Mute { .. } => "mute",
            Command::Unmute { .. } => "unmute",
            Command::Kick { .. } => "kick",
            Command::Announce { .. } => "announce",
            Command::SetRetention { .. } => "set_retention",
            Command::PruneRoom { .. } => "prune_room",
            Command::PruneRevokedTokens { .. } => "prune_revoked_tokens",
            Command::Push(_) => "push",
            Command::SetAvatar { .. } => "set_avatar",
            Command::Integration(_) => "integration",
            Command::Thread(_) => "thread",
            Command::React { .. } => "react",
            Command::Unreact { .. } => "unreact",
            Command::Pin { .. } => "pin",
            Command::Unpin { .. } => "unpin",
            Command::SetPreviews { .. } => "set_previews",
            Command::Webhook(_) => "webhook",
            Command::External(_) => "external",
        }
    }
}

/// What applying a command gave back to the one who submitted it. Each
/// command has one kind of outcome; the typed helpers on `Store` unpack it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Done,
    Flag(bool),
    Count(usize),
    Generation(u64),
    User(UserRecord),
    Room(Room),
    Joined(Room, u64),
    Message(Message),
    Upload(UploadRecord),
    /// A removed upload and the stored files no record names any more.
    UploadRemoved(Option<(UploadRecord, Vec<String>)>),
}

/// Unpacks an outcome into what its command gives back.
pub trait FromOutcome: Sized {
    fn from_outcome(o: Outcome) -> Option<Self>;
}

macro_rules! from_outcome {
    ($($t:ty => $p:pat => $v:expr),* $(,)?) => {$(
        impl FromOutcome for $t {
            fn from_outcome(o: Outcome) -> Option<Self> {
                match o {
                    $p => Some($v),
                    _ => None,
                }
            }
        }
    )*};
}

from_outcome!(
    () => Outcome::Done => (),
    bool => Outcome::Flag(b) => b,
    usize => Outcome::Count(n) => n,
    u64 => Outcome::Generation(g) => g,
    UserRecord => Outcome::User(u) => u,
    Room => Outcome::Room(r) => r,
    (Room, u64) => Outcome::Joined(r, s) => (r, s),
    Message => Outcome::Message(m) => m,
    UploadRecord => Outcome::Upload(u) => u,
    Option<(UploadRecord, Vec<String>)> => Outcome::UploadRemoved(r) => r,
);
