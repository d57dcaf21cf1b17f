//! The answer to `Request::Snapshot`, as the console reads it.
//!
//! The server and the console are released together, but an operator may
//! point a console at an older or newer server. Every field therefore has a
//! default, a field of the wrong type (or `null`) falls back to its default,
//! and a malformed row is dropped rather than blanking the whole screen.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    #[serde(deserialize_with = "lenient")]
    pub server: ServerTotals,
    #[serde(deserialize_with = "rows")]
    pub rooms: Vec<RoomRow>,
    #[serde(deserialize_with = "rows")]
    pub users: Vec<UserRow>,
    #[serde(deserialize_with = "rows")]
    pub throughput: Vec<Point>,
    #[serde(deserialize_with = "rows")]
    pub events: Vec<ServerEvent>,
    #[serde(deserialize_with = "rows")]
    pub audit: Vec<AuditEntry>,
}

impl Snapshot {
    /// Reads an answer; anything that is not an object reads as empty.
    pub fn from_value(v: Value) -> Snapshot {
        Snapshot::deserialize(v).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServerTotals {
    #[serde(deserialize_with = "lenient")]
    pub uptime_secs: u64,
    #[serde(deserialize_with = "lenient")]
    pub connections: u64,
    #[serde(deserialize_with = "lenient")]
    pub online_users: u64,
    #[serde(deserialize_with = "lenient")]
    pub rooms: u64,
    #[serde(deserialize_with = "lenient")]
    pub users: u64,
    #[serde(deserialize_with = "lenient")]
    pub messages_per_sec: f64,
    #[serde(deserialize_with = "lenient")]
    pub deliveries_per_sec: f64,
    #[serde(deserialize_with = "lenient")]
    pub memory_bytes: u64,
    /// Outgoing webhook endpoints, those disabled, and events waiting.
    #[serde(deserialize_with = "lenient")]
    pub webhooks: u64,
    #[serde(deserialize_with = "lenient")]
    pub webhooks_disabled: u64,
    #[serde(deserialize_with = "lenient")]
    pub webhooks_pending: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoomRow {
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    #[serde(deserialize_with = "lenient")]
    pub name: String,
    /// "room" or "dm".
    #[serde(deserialize_with = "lenient")]
    pub kind: String,
    #[serde(deserialize_with = "lenient")]
    pub visibility: String,
    #[serde(deserialize_with = "lenient")]
    pub members: u64,
    #[serde(deserialize_with = "lenient")]
    pub online: u64,
    #[serde(deserialize_with = "lenient")]
    pub msgs_per_sec: f64,
    /// Milliseconds since the epoch; None for a room never written to.
    #[serde(deserialize_with = "lenient")]
    pub last_activity: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UserRow {
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    #[serde(deserialize_with = "lenient")]
    pub username: String,
    #[serde(deserialize_with = "lenient")]
    pub role: String,
    #[serde(deserialize_with = "lenient")]
    pub connections: u64,
    #[serde(deserialize_with = "lenient")]
    pub rooms: u64,
    /// Online since, in milliseconds since the epoch.
    #[serde(deserialize_with = "lenient")]
    pub since: i64,
    #[serde(deserialize_with = "lenient")]
    pub addr: Option<String>,
}

/// One second of traffic.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Point {
    #[serde(deserialize_with = "lenient")]
    pub t: i64,
    #[serde(deserialize_with = "lenient")]
    pub messages: f64,
    #[serde(deserialize_with = "lenient")]
    pub deliveries: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServerEvent {
    #[serde(deserialize_with = "lenient")]
    pub seq: u64,
    #[serde(deserialize_with = "lenient")]
    pub at: i64,
    #[serde(deserialize_with = "lenient")]
    pub kind: String,
    #[serde(deserialize_with = "lenient")]
    pub text: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuditEntry {
    #[serde(deserialize_with = "lenient")]
    pub seq: u64,
    #[serde(deserialize_with = "lenient")]
    pub at: i64,
    #[serde(deserialize_with = "lenient")]
    pub actor: String,
    #[serde(deserialize_with = "lenient")]
    pub action: String,
    #[serde(deserialize_with = "lenient")]
    pub target: String,
    #[serde(deserialize_with = "lenient")]
    pub reason: Option<String>,
}

/// The answer to `Request::Bans`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Bans {
    #[serde(deserialize_with = "rows")]
    pub bans: Vec<BanRow>,
}

impl Bans {
    pub fn from_value(v: Value) -> Bans {
        Bans::deserialize(v).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BanRow {
    #[serde(deserialize_with = "lenient")]
    pub username: String,
    /// Milliseconds since the epoch; None: until unbanned.
    #[serde(deserialize_with = "lenient")]
    pub until: Option<i64>,
    #[serde(deserialize_with = "lenient")]
    pub reason: Option<String>,
}

/// The answer to `Request::Mutes`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Mutes {
    #[serde(deserialize_with = "rows")]
    pub mutes: Vec<MuteRow>,
}

impl Mutes {
    pub fn from_value(v: Value) -> Mutes {
        Mutes::deserialize(v).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MuteRow {
    #[serde(deserialize_with = "lenient")]
    pub username: String,
    /// The room's name; None: everywhere.
    #[serde(deserialize_with = "lenient")]
    pub room: Option<String>,
    /// Milliseconds since the epoch; None: until unmuted.
    #[serde(deserialize_with = "lenient")]
    pub until: Option<i64>,
    #[serde(deserialize_with = "lenient")]
    pub reason: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub by: String,
}

/// The answer to `Request::RoomMessages`: oldest first.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoomMessages {
    #[serde(deserialize_with = "rows")]
    pub messages: Vec<MessageRow>,
    #[serde(deserialize_with = "lenient")]
    pub has_more: bool,
}

impl RoomMessages {
    pub fn from_value(v: Value) -> RoomMessages {
        RoomMessages::deserialize(v).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MessageRow {
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    #[serde(deserialize_with = "lenient")]
    pub seq: u64,
    #[serde(deserialize_with = "lenient")]
    pub sender: Sender,
    #[serde(deserialize_with = "lenient")]
    pub text: String,
    /// Only counted: the view has no room for files.
    #[serde(deserialize_with = "lenient")]
    pub attachments: Vec<Value>,
    /// Milliseconds since the epoch.
    #[serde(deserialize_with = "lenient")]
    pub created_at: i64,
    #[serde(deserialize_with = "lenient")]
    pub edited_at: Option<i64>,
    #[serde(deserialize_with = "lenient")]
    pub deleted: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Sender {
    #[serde(deserialize_with = "lenient")]
    pub username: String,
}

/// A present field of the wrong type (a `null` count, a float where an
/// integer was expected) reads as the default instead of failing the row.
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let v = Value::deserialize(d)?;
    Ok(T::deserialize(v).unwrap_or_default())
}

/// A list keeps the rows that read and drops the others.
fn rows<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| T::deserialize(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_documented_shape() {
        let s = Snapshot::from_value(crate::console::testdata::sample_json());
        assert_eq!(s.server.connections, 4);
        assert_eq!(s.rooms[0].name, "general");
        assert_eq!(s.users[0].username, "bob");
        assert!(!s.throughput.is_empty());
        assert_eq!(s.events[0].seq, 1);
        assert_eq!(s.audit[0].action, "kick");
    }

    #[test]
    fn tolerates_missing_null_and_mistyped_fields() {
        let s = Snapshot::from_value(json!({
            "server": {"connections": null, "messages_per_sec": "fast", "users": 4},
            "rooms": [{"name": "a", "members": -1, "last_activity": null}, 17],
            "users": "not a list",
        }));
        assert_eq!(s.server.connections, 0);
        assert_eq!(s.server.messages_per_sec, 0.0);
        assert_eq!(s.server.users, 4);
        assert_eq!(s.rooms.len(), 1);
        assert_eq!(s.rooms[0].members, 0);
        assert_eq!(s.rooms[0].last_activity, None);
        assert!(s.users.is_empty());
        assert!(Snapshot::from_value(json!(null)).rooms.is_empty());
    }
}
