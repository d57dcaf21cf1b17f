//! Validated values. Each type checks its input once, at construction, so
//! the layers below the edge never see an invalid name, id or text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod emoji;
pub mod mention;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DomainError {
    pub field: &'static str,
    pub message: String,
}

impl DomainError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        DomainError {
            field,
            message: message.into(),
        }
    }
}

/// Ids of users, rooms and messages: ULIDs, sortable by creation time,
/// shown to clients as 26-character strings that they never parse.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub u128);

impl Id {
    pub fn new() -> Id {
        Id(ulid::Ulid::new().0)
    }

    pub fn parse(field: &'static str, s: &str) -> Result<Id, DomainError> {
        ulid::Ulid::from_string(s)
            .map(|u| Id(u.0))
            .map_err(|_| DomainError::new(field, "not a valid id"))
    }
}

impl Default for Id {
    fn default() -> Self {
        Id::new()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&ulid::Ulid(self.0), f)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ulid::Ulid::from_string(&s)
            .map(|u| Id(u.0))
            .map_err(|_| serde::de::Error::custom("not a valid id"))
    }
}

/// 3–32 characters of `a-z 0-9 _ . -`, compared and stored lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> Result<Username, DomainError> {
        let lower = s.to_ascii_lowercase();
        let n = lower.chars().count();
        if !(3..=32).contains(&n) {
            return Err(DomainError::new(
                "username",
                "must be 3 to 32 characters long",
            ));
        }
        if !lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
        {
            return Err(DomainError::new(
                "username",
                "may contain only a-z, 0-9, '_', '.' and '-'",
            ));
        }
        Ok(Username(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 8–1024 bytes. Never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(s: &str) -> Result<Password, DomainError> {
        if s.len() < 8 {
            return Err(DomainError::new(
                "password",
                "must be at least 8 bytes long",
            ));
        }
        if s.len() > 1024 {
            return Err(DomainError::new(
                "password",
                "must be at most 1024 bytes long",
            ));
        }
        Ok(Password(s.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// 1–64 characters of `a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RoomName(String);

impl RoomName {
    pub fn parse(s: &str) -> Result<RoomName, DomainError> {
        let n = s.len();
        if !(1..=64).contains(&n) {
            return Err(DomainError::new("name", "must be 1 to 64 characters long"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
        {
            return Err(DomainError::new(
                "name",
                "may contain only a-z, 0-9, '_' and '-'",
            ));
        }
        Ok(RoomName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message body: not blank (unless attachments carry the message), at
/// most the configured number of characters, no control characters but
/// newlines and tabs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(s: &str, max_chars: usize, allow_empty: bool) -> Result<MessageText, DomainError> {
        if s.trim().is_empty() && !allow_empty {
            return Err(DomainError::new("text", "must not be empty"));
        }
        if s.chars().count() > max_chars {
            return Err(DomainError::new(
                "text",
                format!("must be at most {max_chars} characters"),
            ));
        }
        if s.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
        {
            return Err(DomainError::new(
                "text",
                "must not contain control characters",
            ));
        }
        Ok(MessageText(s.to_string()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Characters that change the order text is shown in (bidirectional
/// overrides, embeddings, isolates and marks) or show nothing at all
/// (zero-width spaces, joiners that join nothing visible, the BOM). In a
/// one-line label such as a topic they only serve to make it read other
/// than it is. The zero-width joiner is allowed: emoji sequences need it.
pub fn reorders_or_hides(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180E}'
            | '\u{200B}'
            | '\u{200C}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{206A}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
    )
}

/// A short line of text shown as a label (a topic, a moderation reason):
/// at most `max_chars`, no control characters, nothing that reorders or
/// hides what it says.
fn one_line_label(field: &'static str, s: &str, max_chars: usize) -> Result<(), DomainError> {
    if s.chars().count() > max_chars {
        return Err(DomainError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(DomainError::new(
            field,
            "must not contain control characters",
        ));
    }
    if s.chars().any(reorders_or_hides) {
        return Err(DomainError::new(
            field,
            "must not contain invisible or direction-changing characters",
        ));
    }
    Ok(())
}

/// A room topic: at most the configured number of characters, one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic(String);

impl Topic {
    pub fn parse(s: &str, max_chars: usize) -> Result<Topic, DomainError> {
        one_line_label("topic", s, max_chars)?;
        Ok(Topic(s.to_string()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Why a moderator acted (kick, ban, mute, delete). It is shown to the
/// user in `kicked`, stored in the audit log and printed on operators'
/// terminals, so it holds no control characters: an escape sequence in a
/// reason would otherwise drive whatever terminal prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    pub const MAX_CHARS: usize = 500;

    pub fn parse(s: &str) -> Result<Reason, DomainError> {
        // The audit log must read as written, in a terminal or a browser.
        one_line_label("reason", s, Self::MAX_CHARS)?;
        Ok(Reason(s.to_string()))
    }

    /// An optional reason as requests carry it.
    pub fn parse_opt(s: Option<String>) -> Result<Option<String>, DomainError> {
        s.map(|s| Reason::parse(&s).map(Reason::into_string))
            .transpose()
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A client's idempotency key for a send: at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMsgId(String);

impl ClientMsgId {
    pub fn parse(s: &str) -> Result<ClientMsgId, DomainError> {
        if s.is_empty() || s.len() > 64 {
            return Err(DomainError::new(
                "client_msg_id",
                "must be 1 to 64 bytes long",
            ));
        }
        Ok(ClientMsgId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Moderator,
    Admin,
}

impl Role {
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Moderator | Role::Admin)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "moderator" => Ok(Role::Moderator),
            "admin" => Ok(Role::Admin),
            _ => Err(DomainError::new("role", "must be user, moderator or admin")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    pub fn parse(s: &str) -> Result<Visibility, DomainError> {
        match s {
            "public" => Ok(Visibility::Public),
            "private" => Ok(Visibility::Private),
            _ => Err(DomainError::new("visibility", "must be public or private")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    Room,
    Dm,
}

/// Who may open or continue a direct conversation with a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DmPolicy {
    Anyone,
    Friends,
}

impl DmPolicy {
    pub fn parse(s: &str) -> Result<DmPolicy, DomainError> {
        match s {
            "anyone" => Ok(DmPolicy::Anyone),
            "friends" => Ok(DmPolicy::Friends),
            _ => Err(DomainError::new("dm_policy", "must be anyone or friends")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DmPolicy::Anyone => "anyone",
            DmPolicy::Friends => "friends",
        }
    }
}

/// Milliseconds since the Unix epoch, the protocol's one time format.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A ban as its user is told it: `until` is `None` for a ban with no end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BanInfo {
    pub until: Option<i64>,
    pub reason: Option<String>,
}

impl BanInfo {
    /// From the stored end, where `i64::MAX` means until lifted.
    pub fn new(until: i64, reason: Option<String>) -> BanInfo {
        BanInfo {
            until: (until != i64::MAX).then_some(until),
            reason,
        }
    }
}

/// A mute in force as its user is told it: `room` is `None` for a mute
/// everywhere, `until` `None` for one with no end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MuteInfo {
    pub room: Option<Id>,
    pub until: Option<i64>,
    pub reason: Option<String>,
}

impl MuteInfo {
    /// From the stored end, where `i64::MAX` means until lifted.
    pub fn new(room: Option<Id>, until: i64, reason: Option<String>) -> MuteInfo {
        MuteInfo {
            room,
            until: (until != i64::MAX).then_some(until),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(
            Username::parse("Alice_1.x-y").unwrap().as_str(),
            "alice_1.x-y"
        );
        for bad in ["ab", "", "a b", "ali ce", "álice", &"a".repeat(33), "bob!"] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Username::parse(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn room_names() {
        assert!(RoomName::parse("general-2_x").is_ok());
        for bad in ["", "General", "a.b", "a b", &"a".repeat(65)] {
            assert!(RoomName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_and_texts() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"x".repeat(1025)).is_err());
        assert!(!format!("{:?}", Password::parse("hunter2hunter2").unwrap()).contains("hunter"));
        assert!(MessageText::parse("  ", 10, false).is_err());
        assert!(MessageText::parse("hi\nthere", 10, false).is_ok());
        assert!(MessageText::parse("x\u{7}", 10, false).is_err());
        assert!(MessageText::parse("ééééé", 5, false).is_ok());
        assert!(MessageText::parse("éééééé", 5, false).is_err());
    }

    #[test]
    fn reasons() {
        assert_eq!(
            Reason::parse("spamming links").unwrap().into_string(),
            "spamming links"
        );
        assert!(Reason::parse("").is_ok());
        for bad in ["\u{1b}[2J", "tab\there", "line\nbreak", "c1 \u{9b}31m"] {
            assert!(Reason::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Reason::parse(&"é".repeat(Reason::MAX_CHARS)).is_ok());
        assert!(Reason::parse(&"é".repeat(Reason::MAX_CHARS + 1)).is_err());
        assert_eq!(Reason::parse_opt(None), Ok(None));
    }

    #[test]
    fn dm_policies() {
        assert_eq!(DmPolicy::parse("friends").unwrap(), DmPolicy::Friends);
        assert_eq!(DmPolicy::parse("anyone").unwrap().as_str(), "anyone");
        assert!(DmPolicy::parse("Friends").is_err());
        assert!(DmPolicy::parse("").is_err());
    }

    #[test]
    fn ids_round_trip() {
        let id = Id::new();
        assert_eq!(Id::parse("id", &id.to_string()).unwrap(), id);
        assert!(Id::parse("id", "../../etc/passwd").is_err());
    }
}

/// The public face of an account, as the protocol shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: Id,
    pub username: String,
    pub role: Role,
    /// The user's picture (a thumbnail of one of their uploads); left out
    /// of the JSON when they have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// A bot account or an incoming webhook's identity; left out of the
    /// JSON for people.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bot: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    pub id: Id,
    pub name: String,
    pub kind: RoomKind,
    pub visibility: Visibility,
    pub topic: String,
    pub owner: Option<Id>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: String,
    pub url: String,
    pub thumb_url: String,
    pub mime: String,
    pub width: u32,
    pub height: u32,
    pub size: u64,
    /// The file's name as uploaded (sanitised); `""` for images uploaded
    /// before names were kept.
    #[serde(default)]
    pub name: String,
    /// `image` (re-encoded, shown inline), `audio`, `video` or `file`.
    #[serde(default = "image_kind")]
    pub kind: String,
}

fn image_kind() -> String {
    "image".into()
}

/// What a link in a message shows: read by the server from the page's
/// OpenGraph, Twitter card or `<title>`. `image_url` is served by confab
/// (`/previews/{hash}`): clients never contact the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPreview {
    pub url: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub site_name: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub image_width: Option<u32>,
    #[serde(default)]
    pub image_height: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: Id,
    pub room: Id,
    pub seq: u64,
    pub sender: User,
    pub text: String,
    pub attachments: Vec<Attachment>,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    pub deleted: bool,
    pub client_msg_id: Option<String>,
    /// Users the message mentions; always present, `[]` when none.
    #[serde(default)]
    pub mentions: Vec<Id>,
    /// Sent by a bot or an incoming webhook; always present.
    #[serde(default)]
    pub bot: bool,
    /// The name an incoming webhook's post asked to be shown under
    /// (`username`); the sender stays the hook's own account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The thread's root when this is a reply (docs/protocol.md,
    /// "Replies and threads"); `null` otherwise.
    #[serde(default)]
    pub reply_to: Option<Id>,
    /// Replies not deleted, on a thread's root; 0 elsewhere.
    #[serde(default)]
    pub reply_count: u64,
    /// When the root's latest reply was sent.
    #[serde(default)]
    pub last_reply_at: Option<i64>,
    /// A reply that is also shown in the room, as a room message.
    #[serde(default)]
    pub also_in_room: bool,
    /// Reactions, one entry per emoji, in the order of each emoji's first
    /// reaction. `me` is the reader's own; broadcasts carry `false`.
    #[serde(default)]
    pub reactions: Vec<Reaction>,
    #[serde(default)]
    pub pinned: bool,
    /// Link previews, attached after the message is stored; `[]` when none.
    #[serde(default)]
    pub previews: Vec<LinkPreview>,
}

impl Message {
    /// A reply that lives in its thread alone: not part of room history
    /// or room unread counts.
    pub fn thread_only(&self) -> bool {
        self.reply_to.is_some() && !self.also_in_room
    }
}

/// One emoji's reactions to a message, as a reader sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub emoji: String,
    pub count: u32,
    /// Whether the reader is among those who reacted.
    pub me: bool,
    /// The names of the first few who reacted, in order.
    pub users: Vec<String>,
}
