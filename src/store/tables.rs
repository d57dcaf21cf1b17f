//! Every table, the schema version, and bringing an older store forward.
//! Keys are fixed-width where possible so that ranges scan in order.

use super::*;

pub const SCHEMA_VERSION: u64 = 1;

// Keys are fixed-width where possible so that ranges scan in order:
// (room, seq) lists a room's history, (room, user) its members.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const USER_TO_RECORD: TableDefinition<u128, &[u8]> =
    TableDefinition::new("user_to_record");
pub(super) const USERNAME_TO_USER: TableDefinition<&str, u128> =
    TableDefinition::new("username_to_user");
pub(super) const ROOM_TO_RECORD: TableDefinition<u128, &[u8]> =
    TableDefinition::new("room_to_record");
pub(super) const ROOMNAME_TO_ROOM: TableDefinition<&str, u128> =
    TableDefinition::new("roomname_to_room");
pub(super) const ROOM_USER_TO_MEMBER: TableDefinition<(u128, u128), &[u8]> =
    TableDefinition::new("room_user_to_member");
pub(super) const USER_ROOM_TO_JOINED: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("user_room_to_joined");
pub(super) const ROOM_SEQ_TO_MESSAGE: TableDefinition<(u128, u64), &[u8]> =
    TableDefinition::new("room_seq_to_message");
pub(super) const MESSAGE_TO_ROOM_SEQ: TableDefinition<u128, (u128, u64)> =
    TableDefinition::new("message_to_room_seq");
pub(super) const ROOM_TO_LAST_SEQ: TableDefinition<u128, u64> =
    TableDefinition::new("room_to_last_seq");
pub(super) const SENDER_CLIENT_ID_TO_MESSAGE: TableDefinition<(u128, &str), u128> =
    TableDefinition::new("sender_client_id_to_message");
pub(super) const USER_PAIR_TO_DM: TableDefinition<(u128, u128), u128> =
    TableDefinition::new("user_pair_to_dm");
pub(super) const UPLOAD_TO_RECORD: TableDefinition<&str, &[u8]> =
    TableDefinition::new("upload_to_record");
pub(super) const UPLOADER_UPLOAD_TO_SIZE: TableDefinition<(u128, &str), u64> =
    TableDefinition::new("uploader_upload_to_size");
/// How many upload records name each stored file (by hash): a file goes
/// when its count reaches zero.
pub(super) const FILE_TO_REFS: TableDefinition<&str, u64> = TableDefinition::new("file_to_refs");
/// Mutes by (user, room); room 0 means everywhere.
pub(super) const USER_ROOM_TO_MUTE: TableDefinition<(u128, u128), &[u8]> =
    TableDefinition::new("user_room_to_mute");
pub(super) const AUDIT_SEQ_TO_ENTRY: TableDefinition<u64, &[u8]> =
    TableDefinition::new("audit_seq_to_entry");
// Friendship is kept in both directions, (user, friend), so either side
// lists its friends with one range scan.
pub(super) const USER_FRIEND_TO_SINCE: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("user_friend_to_since");
// A pending friend request, (recipient, requester): what a user was asked.
pub(super) const USER_REQUESTER_TO_SENT: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("user_requester_to_sent");
// The same request seen from its sender, (requester, recipient). A request
// made to someone who blocks the requester has only this row: the
// requester sees it pending, the recipient never sees it. Such a request
// lasts only as long as the block.
pub(super) const USER_RECIPIENT_TO_SENT: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("user_recipient_to_sent");
// (blocker, blocked): whom a user blocks.
pub(super) const USER_BLOCKED_TO_SINCE: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("user_blocked_to_since");
// (blocked, blocker): who blocks a user, read when they come online.
pub(super) const USER_BLOCKER_TO_SINCE: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("user_blocker_to_since");
pub(super) const USER_TO_SETTINGS: TableDefinition<u128, &[u8]> =
    TableDefinition::new("user_to_settings");
/// A room's own retention, overriding the server's.
pub(super) const ROOM_TO_RETENTION: TableDefinition<u128, &[u8]> =
    TableDefinition::new("room_to_retention");
/// Tokens ended one at a time ("log out" on one device), by token id, with
/// their expiry (seconds): a row is needed only until the token would have
/// expired anyway.
pub(super) const TOKEN_TO_EXPIRY: TableDefinition<u128, u64> =
    TableDefinition::new("token_to_expiry");
// Push notifications (store/push.rs).
pub(super) const PUSH_SUB_TO_RECORD: TableDefinition<u128, &[u8]> =
    TableDefinition::new("push_sub_to_record");
pub(super) const PUSH_ENDPOINT_TO_SUB: TableDefinition<&str, u128> =
    TableDefinition::new("push_endpoint_to_sub");
/// Accounts linked to an identity elsewhere (store/external.rs), by
/// (issuer, subject), and the link of each such account.
pub(super) const EXTERNAL_SUBJECT_TO_USER: TableDefinition<(&str, &str), u128> =
    TableDefinition::new("external_subject_to_user");
pub(super) const USER_TO_EXTERNAL: TableDefinition<u128, &[u8]> =
    TableDefinition::new("user_to_external");
pub(super) const USER_SUB_TO_CREATED: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("user_sub_to_created");
pub(super) const USER_TO_NOTIFY: TableDefinition<u128, &[u8]> =
    TableDefinition::new("user_to_notify");
pub(super) const USER_ROOM_TO_NOTIFY: TableDefinition<(u128, u128), &[u8]> =
    TableDefinition::new("user_room_to_notify");
/// (room, user) for each member who wants every message of a room, so a
/// message finds them without reading every member's choices.
pub(super) const ROOM_USER_TO_NOTIFY_ALL: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("room_user_to_notify_all");
/// The push queue: one entry per (user, room), and its due order.
pub(super) const USER_ROOM_TO_PUSH: TableDefinition<(u128, u128), &[u8]> =
    TableDefinition::new("user_room_to_push");
pub(super) const PUSH_DUE: TableDefinition<(i64, u128, u128), ()> =
    TableDefinition::new("push_due");
pub(super) const USER_TO_PUSH_RATE: TableDefinition<u128, &[u8]> =
    TableDefinition::new("user_to_push_rate");

/// Who a message mentions, (user, room, seq): written only for the users
/// mentioned, so counting a user's unread mentions in a room is a range
/// scan from their read marker, and a message to a room of any size
/// writes nothing per member.
pub(super) const USER_ROOM_SEQ_TO_MENTION: TableDefinition<(u128, u128, u64), ()> =
    TableDefinition::new("user_room_seq_to_mention");
/// The message journal: every message written, edited, blanked or removed
/// gets the next revision here (the last key is the current one), so a
/// follower of the store (the search index) can resume from the last
/// revision it saw instead of rescanning history. Only the newest `JOURNAL_KEEP` rows are
/// kept; a follower further behind rebuilds from the messages themselves.
pub(super) const REV_TO_MESSAGE: TableDefinition<u64, u128> =
    TableDefinition::new("rev_to_message");
/// Reactions, (message, emoji, user) -> when (ms; later than every earlier
/// reaction on the message, so it also orders them): one row per person
/// and emoji, so a message's reactions are one range scan and a repeated
/// reaction finds its row.
pub(super) const MESSAGE_EMOJI_USER_TO_AT: TableDefinition<(u128, &str, u128), i64> =
    TableDefinition::new("message_emoji_user_to_at");
/// Pinned messages, (room, message) -> who pinned and when (`PinRecord`):
/// a room's pins are one range scan, a message's flag one lookup.
pub(super) const ROOM_MESSAGE_TO_PIN: TableDefinition<(u128, u128), &[u8]> =
    TableDefinition::new("room_message_to_pin");

/// Bot API tokens by the SHA-256 of the token (hex); store/integrations.rs.
pub(super) const BOT_TOKEN_TO_RECORD: TableDefinition<&str, &[u8]> =
    TableDefinition::new("bot_token_to_record");
/// Incoming webhooks by id.
pub(super) const HOOK_TO_RECORD: TableDefinition<u128, &[u8]> =
    TableDefinition::new("hook_to_record");
/// Room invites by code.
pub(super) const INVITE_TO_RECORD: TableDefinition<&str, &[u8]> =
    TableDefinition::new("invite_to_record");
/// Threads (store/threads.rs): each reply by (room, root, room seq), so a
/// thread lists in order with one range scan and a room's threads go with
/// the room.
pub(super) const ROOM_ROOT_SEQ_TO_REPLY: TableDefinition<(u128, u128, u64), u128> =
    TableDefinition::new("room_root_seq_to_reply");
/// Each user's stand on a thread, (room, root, user): a `Follow` record,
/// kept after an unfollow so a new reply does not follow them again.
pub(super) const ROOM_ROOT_USER_TO_FOLLOW: TableDefinition<(u128, u128, u128), &[u8]> =
    TableDefinition::new("room_root_user_to_follow");
/// The threads a user follows, (user, room, root), for listing them.
pub(super) const USER_ROOM_ROOT_TO_FOLLOWING: TableDefinition<(u128, u128, u128), ()> =
    TableDefinition::new("user_room_root_to_following");
/// Link previews by page URL: what the page said, until it expires.
pub(super) const PREVIEW_URL_TO_CACHE: TableDefinition<&str, &[u8]> =
    TableDefinition::new("preview_url_to_cache");
/// Preview images confab serves (`/previews/{hash}`), with their type.
pub(super) const PREVIEW_IMAGE_TO_MIME: TableDefinition<&str, &str> =
    TableDefinition::new("preview_image_to_mime");
// Outgoing webhooks (store/webhooks.rs): the endpoints, the outbox of
// events by their seq, each endpoint's queue by (endpoint, room, seq) so a
// room's head is the first row of its range, and the attempts made.
pub(super) const WEBHOOK_TO_RECORD: TableDefinition<u128, &[u8]> =
    TableDefinition::new("webhook_to_record");
pub(super) const WEBHOOK_EVENT_SEQ_TO_EVENT: TableDefinition<u64, &[u8]> =
    TableDefinition::new("webhook_event_seq_to_event");
pub(super) const WEBHOOK_ROOM_SEQ_TO_PENDING: TableDefinition<(u128, u128, u64), &[u8]> =
    TableDefinition::new("webhook_room_seq_to_pending");
pub(super) const WEBHOOK_N_TO_ATTEMPT: TableDefinition<(u128, u64), &[u8]> =
    TableDefinition::new("webhook_n_to_attempt");

/// One step forward in the store's format: from schema `from` to `from + 1`.
pub struct Migration {
    pub from: u64,
    pub apply: fn(&WriteTransaction) -> Result<()>,
}

/// The steps that bring an older store up to [`SCHEMA_VERSION`]. Empty
/// while the first schema is current: additions (new tables) need no step,
/// since every table is created at open.
pub(super) const MIGRATIONS: &[Migration] = &[];

pub(super) fn stored_version(db: &Database) -> Result<Option<u64>> {
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
pub(super) fn prepare(
    path: &Path,
    cache: usize,
    target: u64,
    steps: &[Migration],
) -> Result<Database> {
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

pub(super) fn init_schema(db: &Database, expected: u64) -> Result<()> {
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
            meta.insert("jwt_secret", new_secret()?.as_slice())?;
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
            TOKEN_TO_EXPIRY,
            USER_ROOM_SEQ_TO_MENTION,
            PUSH_SUB_TO_RECORD,
            PUSH_ENDPOINT_TO_SUB,
            USER_SUB_TO_CREATED,
            USER_TO_NOTIFY,
            USER_ROOM_TO_NOTIFY,
            ROOM_USER_TO_NOTIFY_ALL,
            USER_ROOM_TO_PUSH,
            PUSH_DUE,
            USER_TO_PUSH_RATE,
            REV_TO_MESSAGE,
            BOT_TOKEN_TO_RECORD,
            HOOK_TO_RECORD,
            INVITE_TO_RECORD,
            ROOM_ROOT_SEQ_TO_REPLY,
            ROOM_ROOT_USER_TO_FOLLOW,
            USER_ROOM_ROOT_TO_FOLLOWING,
            MESSAGE_EMOJI_USER_TO_AT,
            ROOM_MESSAGE_TO_PIN,
            PREVIEW_URL_TO_CACHE,
            PREVIEW_IMAGE_TO_MIME,
            WEBHOOK_TO_RECORD,
            WEBHOOK_EVENT_SEQ_TO_EVENT,
            WEBHOOK_ROOM_SEQ_TO_PENDING,
            WEBHOOK_N_TO_ATTEMPT,
            EXTERNAL_SUBJECT_TO_USER,
            USER_TO_EXTERNAL
        )
    };
}
pub(super) use all_tables;

pub(super) fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
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

/// A fresh key for signing tokens: a store's own, or a cluster's shared.
pub fn new_secret() -> Result<Vec<u8>> {
    let mut secret = vec![0u8; 64];
    getrandom::fill(&mut secret)
        .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
    Ok(secret)
}
