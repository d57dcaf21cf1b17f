//! Bots, incoming webhooks and invites in the store.
//!
//! A bot's API tokens are stored by the SHA-256 of the token, never the
//! token: the token is 256 random bits, so a fast hash is as good as a
//! slow one against guessing (there is nothing to brute-force), and it
//! lets every request find its token with one key lookup. A hook's secret
//! is kept the same way. Invites count their uses when a use is applied,
//! so two nodes of a cluster cannot both spend an invite's last use.

use super::*;

/// What a bot token may do besides naming rooms (docs/integrations.md).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum BotAction {
    /// History, room lists and details, presence, search, users, read markers.
    Read,
    /// Send, edit and delete its own messages; typing.
    Send,
    /// Add and remove reactions.
    React,
    /// Join and leave rooms, accept invites.
    Join,
    /// Direct messages (which are in no room a token can name).
    Dm,
}

impl BotAction {
    pub const ALL: [BotAction; 5] = [
        BotAction::Read,
        BotAction::Send,
        BotAction::React,
        BotAction::Join,
        BotAction::Dm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BotAction::Read => "read",
            BotAction::Send => "send",
            BotAction::React => "react",
            BotAction::Join => "join",
            BotAction::Dm => "dm",
        }
    }

    pub fn parse(s: &str) -> Option<BotAction> {
        BotAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// What a token may reach: `rooms` (none: any room the bot may use by the
/// usual rules) and `actions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Scopes {
    #[serde(default)]
    pub rooms: Option<Vec<Id>>,
    pub actions: Vec<BotAction>,
}

/// A bot's API token, by the SHA-256 of the token (hex).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BotToken {
    pub id: Id,
    pub bot: Id,
    pub hash: String,
    pub scopes: Scopes,
    pub created_at: i64,
}

/// An incoming webhook: posts into `room` as the account `user`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hook {
    pub id: Id,
    pub room: Id,
    pub user: Id,
    /// SHA-256 of the secret in its URL (hex).
    pub secret_hash: String,
    pub created_at: i64,
}

/// An invite to a room.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Invite {
    pub code: String,
    pub room: Id,
    pub created_by: Option<Id>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub max_uses: Option<u32>,
    pub uses: u32,
}

impl Invite {
    /// Why the invite cannot be used at `now`, if it cannot.
    pub fn spent(&self, now: i64) -> Option<&'static str> {
        if self.expires_at.is_some_and(|e| e <= now) {
            return Some("this invite has expired");
        }
        if self.max_uses.is_some_and(|m| self.uses >= m) {
            return Some("this invite has been used up");
        }
        None
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum IntegrationCommand {
    /// A bot account, made a member of `rooms`.
    CreateBot {
        user: NewUser,
        rooms: Vec<Id>,
    },
    AddBotToken(BotToken),
    RevokeBotToken {
        id: Id,
    },
    /// The bot, its tokens and its memberships.
    RemoveBot {
        user: Id,
    },
    /// A hook and its own account, a member of its room.
    AddHook {
        hook: Hook,
        user: NewUser,
    },
    RemoveHook {
        id: Id,
    },
    /// A message from a hook, under `display_name` if given.
    HookPost {
        hook: Id,
        text: String,
        display_name: Option<String>,
        message: Id,
    },
    CreateInvite(Invite),
    RevokeInvite {
        code: String,
    },
    AcceptInvite {
        code: String,
        user: User,
    },
    /// A new account that joins the invite's room in the same commit.
    RegisterWithInvite {
        user: NewUser,
        code: String,
    },
}

pub(super) fn apply(tx: &mut Tx, cmd: IntegrationCommand) -> Result<Outcome> {
    use IntegrationCommand as C;
    Ok(match cmd {
        C::CreateBot { user, rooms } => {
            let mut found = Vec::new();
            for r in rooms {
                let room = tx.room(r)?.ok_or(StoreError::NotFound("room"))?;
                if room.kind == RoomKind::Dm {
                    return Err(StoreError::Invalid(
                        "rooms: a direct message is no room for a bot".into(),
                    ));
                }
                found.push(room);
            }
            let mut rec = tx.create_user(user)?;
            rec.bot = true;
            tx.put_user(&rec)?;
            let public = rec.public();
            for room in &found {
                tx.add_member(room, &public)?;
            }
            Outcome::User(rec)
        }
        C::AddBotToken(token) => {
            let bot = tx.user(token.bot)?.ok_or(StoreError::NotFound("bot"))?;
            if !bot.bot {
                return Err(StoreError::Invalid("this account is not a bot".into()));
            }
            tx.txn
                .open_table(BOT_TOKEN_TO_RECORD)?
                .insert(token.hash.as_str(), encode(&token).as_slice())?;
            Outcome::Done
        }
        C::RevokeBotToken { id } => {
            let token = tx_tokens(tx)?
                .into_iter()
                .find(|t| t.id == id)
                .ok_or(StoreError::NotFound("token"))?;
            drop_token(tx, &token)?;
            Outcome::Done
        }
        C::RemoveBot { user } => {
            let rec = tx.user(user)?.ok_or(StoreError::NotFound("bot"))?;
            if !rec.bot || tx_hooks(tx)?.iter().any(|h| h.user == user) {
                return Err(StoreError::NotFound("bot"));
            }
            for t in tx_tokens(tx)?.into_iter().filter(|t| t.bot == user) {
                drop_token(tx, &t)?;
            }
            let rec = tx.delete_user(user)?;
            super::push::forget_user(tx, user)?;
            Outcome::User(rec)
        }
        C::AddHook { hook, user } => {
            let room = tx.room(hook.room)?.ok_or(StoreError::NotFound("room"))?;
            if room.kind == RoomKind::Dm {
                return Err(StoreError::Invalid(
                    "a direct message cannot have a hook".into(),
                ));
            }
            let mut rec = tx.create_user(user)?;
            rec.bot = true;
            tx.put_user(&rec)?;
            tx.add_member(&room, &rec.public())?;
            tx.txn
                .open_table(HOOK_TO_RECORD)?
                .insert(hook.id.0, encode(&hook).as_slice())?;
            Outcome::User(rec)
        }
        C::RemoveHook { id } => {
            let hook = tx_hook(tx, id)?.ok_or(StoreError::NotFound("hook"))?;
            tx.txn.open_table(HOOK_TO_RECORD)?.remove(id.0)?;
            // Its messages stay, shown as a deleted account's.
            if tx.user(hook.user)?.is_some() {
                tx.delete_user(hook.user)?;
                super::push::forget_user(tx, hook.user)?;
            }
            Outcome::Done
        }
        C::HookPost {
            hook,
            text,
            display_name,
            message,
        } => {
            let hook = tx_hook(tx, hook)?.ok_or(StoreError::NotFound("hook"))?;
            let room = tx.room(hook.room)?.ok_or(StoreError::NotFound("room"))?;
            if tx.member(room.id, hook.user)?.is_none() {
                return Err(StoreError::Forbidden(
                    "the hook is no longer a member of its room".into(),
                ));
            }
            if tx.muted(hook.user, room.id, tx.now())? {
                return Err(StoreError::Forbidden("this hook is muted".into()));
            }
            let mentions = tx.mentions_in(hook.user, &room, &text, &[])?;
            let (msg, _) = tx.append_message(NewMessage {
                id: message,
                room: room.id,
                sender: hook.user,
                text,
                attachments: Vec::new(),
                client_msg_id: None,
                mentions,
                display_name,
                reply_to: None,
                also_in_room: false,
            })?;
            super::push::on_message(tx, &msg, &room)?;
            Outcome::Message(msg)
        }
        C::CreateInvite(invite) => {
            let room = tx.room(invite.room)?.ok_or(StoreError::NotFound("room"))?;
            if room.kind == RoomKind::Dm {
                return Err(StoreError::Invalid(
                    "a direct message cannot have invites".into(),
                ));
            }
            let mut t = tx.txn.open_table(INVITE_TO_RECORD)?;
            if t.get(invite.code.as_str())?.is_some() {
                return Err(StoreError::Conflict("invite code in use".into()));
            }
            t.insert(invite.code.as_str(), encode(&invite).as_slice())?;
            Outcome::Done
        }
        C::RevokeInvite { code } => {
            let removed = tx
                .txn
                .open_table(INVITE_TO_RECORD)?
                .remove(code.as_str())?
                .is_some();
            if !removed {
                return Err(StoreError::NotFound("invite"));
            }
            Outcome::Done
        }
        C::AcceptInvite { code, user } => {
            let rec = tx.user(user.id)?.ok_or(StoreError::NotFound("user"))?;
            if rec.banned_at(tx.now()) {
                return Err(StoreError::Forbidden("this account is banned".into()));
            }
            let (invite, room) = usable(tx, &code)?;
            // A member opening the link again spends nothing.
            if tx.member(room.id, user.id)?.is_none() {
                tx.add_member(&room, &rec.public())?;
                spend(tx, invite)?;
            }
            let last = tx.last_seq(room.id)?;
            Outcome::Joined(room, last)
        }
        C::RegisterWithInvite { user, code } => {
            let (invite, room) = usable(tx, &code)?;
            let rec = tx.create_user(user)?;
            tx.add_member(&room, &rec.public())?;
            spend(tx, invite)?;
            Outcome::User(rec)
        }
    })
}

/// The invite and its room, if the invite can be used now.
fn usable(tx: &Tx, code: &str) -> Result<(Invite, Room)> {
    let invite = tx_invite(tx, code)?.ok_or(StoreError::NotFound("invite"))?;
    if let Some(why) = invite.spent(tx.now()) {
        return Err(StoreError::Forbidden(why.into()));
    }
    let room = tx.room(invite.room)?.ok_or(StoreError::NotFound("room"))?;
    Ok((invite, room))
}

fn spend(tx: &mut Tx, mut invite: Invite) -> Result<()> {
    invite.uses = invite.uses.saturating_add(1);
    tx.txn
        .open_table(INVITE_TO_RECORD)?
        .insert(invite.code.as_str(), encode(&invite).as_slice())?;
    Ok(())
}

/// Removes a token; connections signed in with it close (the hub knows
/// them by the token's id).
fn drop_token(tx: &mut Tx, token: &BotToken) -> Result<()> {
    tx.txn
        .open_table(BOT_TOKEN_TO_RECORD)?
        .remove(token.hash.as_str())?;
    tx.emit(Change::TokenRevoked {
        user: token.bot,
        token: token.id.0,
    });
    Ok(())
}

fn all<K: redb::Key + 'static, T: DeserializeOwned>(
    t: &impl ReadableTable<K, &'static [u8]>,
    name: &'static str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for row in t.iter()? {
        let (_, v) = row?;
        out.push(decode(name, v.value())?);
    }
    Ok(out)
}

fn tx_tokens(tx: &Tx) -> Result<Vec<BotToken>> {
    all(
        &tx.txn.open_table(BOT_TOKEN_TO_RECORD)?,
        "bot_token_to_record",
    )
}

fn tx_hooks(tx: &Tx) -> Result<Vec<Hook>> {
    all(&tx.txn.open_table(HOOK_TO_RECORD)?, "hook_to_record")
}

fn tx_hook(tx: &Tx, id: Id) -> Result<Option<Hook>> {
    tx.txn
        .open_table(HOOK_TO_RECORD)?
        .get(id.0)?
        .map(|v| decode("hook_to_record", v.value()))
        .transpose()
}

fn tx_invite(tx: &Tx, code: &str) -> Result<Option<Invite>> {
    tx.txn
        .open_table(INVITE_TO_RECORD)?
        .get(code)?
        .map(|v| decode("invite_to_record", v.value()))
        .transpose()
}

impl Rx {
    /// A bot token by the SHA-256 of the token (hex).
    pub fn bot_token(&self, hash: &str) -> Result<Option<BotToken>> {
        self.txn
            .open_table(BOT_TOKEN_TO_RECORD)?
            .get(hash)?
            .map(|v| decode("bot_token_to_record", v.value()))
            .transpose()
    }

    pub fn bot_tokens(&self) -> Result<Vec<BotToken>> {
        all(
            &self.txn.open_table(BOT_TOKEN_TO_RECORD)?,
            "bot_token_to_record",
        )
    }

    pub fn hook(&self, id: Id) -> Result<Option<Hook>> {
        self.txn
            .open_table(HOOK_TO_RECORD)?
            .get(id.0)?
            .map(|v| decode("hook_to_record", v.value()))
            .transpose()
    }

    pub fn hooks(&self) -> Result<Vec<Hook>> {
        all(&self.txn.open_table(HOOK_TO_RECORD)?, "hook_to_record")
    }

    pub fn invite(&self, code: &str) -> Result<Option<Invite>> {
        self.txn
            .open_table(INVITE_TO_RECORD)?
            .get(code)?
            .map(|v| decode("invite_to_record", v.value()))
            .transpose()
    }

    pub fn invites_of(&self, room: Id) -> Result<Vec<Invite>> {
        let all: Vec<Invite> = all(&self.txn.open_table(INVITE_TO_RECORD)?, "invite_to_record")?;
        let mut out: Vec<Invite> = all.into_iter().filter(|i| i.room == room).collect();
        out.sort_by_key(|i| i.created_at);
        Ok(out)
    }
}
