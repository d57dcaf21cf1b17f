//! Bots and incoming webhooks: accounts that sign in with API tokens
//! instead of a password, the scopes those tokens carry, and room hooks
//! that post what an outside service sends.

use super::*;
use crate::store::integrations::{BotAction, BotToken, Hook, IntegrationCommand, Scopes};
use sha2::{Digest, Sha256};

/// Every bot token starts with this, so a request's token is known to be
/// one (and looked up by hash) without trying to read it as a JWT.
pub const BOT_TOKEN_PREFIX: &str = "cfb_";

/// What `bot token add` grants without `--scopes`.
pub const DEFAULT_ACTIONS: [BotAction; 3] = [BotAction::Read, BotAction::Send, BotAction::React];

/// A bot as listed to the operator.
#[derive(Debug, Clone, Serialize)]
pub struct BotInfo {
    pub user: User,
    pub created_at: i64,
    pub tokens: Vec<TokenInfo>,
}

/// A token as listed: never the token itself, which is shown once.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: Id,
    pub bot: String,
    pub rooms: Option<Vec<Id>>,
    pub actions: Vec<&'static str>,
    pub created_at: i64,
}

/// A hook as listed to the operator (the secret is shown once, at creation).
#[derive(Debug, Clone, Serialize)]
pub struct HookInfo {
    pub id: Id,
    pub room: Id,
    pub room_name: String,
    pub user: User,
    pub created_at: i64,
    /// Only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// 256 random bits, base64url.
fn random_secret() -> Result<String> {
    use base64::Engine;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

pub(super) fn sha256_hex(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `read,send` into actions; an unknown name is refused with the list.
pub fn parse_actions(list: &str) -> Result<Vec<BotAction>> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let a = BotAction::parse(name).ok_or_else(|| {
            AppError::BadRequest(format!(
                "scopes: unknown action {name:?}; known: read, send, react, join, dm"
            ))
        })?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.is_empty() {
        return Err(AppError::BadRequest(
            "scopes: name at least one action".into(),
        ));
    }
    Ok(out)
}

impl App {
    /// Whether a token is a bot's (by its form alone).
    pub fn is_bot_token(token: &str) -> bool {
        token.starts_with(BOT_TOKEN_PREFIX)
    }

    /// A bot token's record, if the token is one that exists.
    fn bot_token_record(&self, token: &str) -> Result<BotToken> {
        if !Self::is_bot_token(token) {
            return Err(AuthError::BadToken.into());
        }
        self.store
            .read()?
            .bot_token(&sha256_hex(token))?
            .ok_or(AppError::Auth(AuthError::BadToken))
    }

    /// `authenticate_token` for a bot's token: the account must still be a
    /// bot and not banned. The token's id stands in for a JWT's, so the
    /// hub closes its connections when it is revoked.
    pub(super) fn authenticate_bot(&self, token: &str) -> Result<(User, Verified)> {
        let t = self.bot_token_record(token)?;
        let rec = self
            .store
            .read()?
            .user(t.bot)?
            .filter(|r| r.bot)
            .ok_or(AppError::Auth(AuthError::BadToken))?;
        ban_check(&rec)?;
        Ok((
            rec.public(),
            Verified {
                user: rec.id,
                generation: rec.token_gen,
                token: t.id.0,
                exp: u64::MAX,
            },
        ))
    }

    /// The scopes of a bot token; `None` for any other token.
    pub fn scopes_of(&self, token: &str) -> Result<Option<Scopes>> {
        if !Self::is_bot_token(token) {
            return Ok(None);
        }
        Ok(Some(self.bot_token_record(token)?.scopes))
    }

    /// The one rule of scopes: the action must be granted, and a room, when
    /// the request is about one, must be among the token's rooms (if it
    /// names any).
    pub fn check_scope(scopes: &Scopes, action: BotAction, room: Option<Id>) -> Result<()> {
        if !scopes.actions.contains(&action) {
            return Err(AppError::Forbidden(format!(
                "this token's scopes do not allow {:?}",
                action.as_str()
            )));
        }
        if let (Some(room), Some(rooms)) = (room, &scopes.rooms)
            && !rooms.contains(&room)
        {
            return Err(AppError::Forbidden(
                "this token's scopes do not include this room".into(),
            ));
        }
        Ok(())
    }

    /// The room a message is in, for scope checks of requests that name a
    /// message.
    pub fn room_of_message(&self, id: Id) -> Result<Id> {
        Ok(self
            .store
            .read()?
            .message(id)?
            .ok_or(AppError::NotFound("message"))?
            .room)
    }

    /// The room an invite is to, for the same.
    pub fn room_of_invite(&self, code: &str) -> Result<Id> {
        Ok(self
            .store
            .read()?
            .invite(code)?
            .ok_or(AppError::NotFound("invite"))?
            .room)
    }

    pub async fn create_bot(&self, name: Username, rooms: &[String]) -> Result<User> {
        let rooms = rooms
            .iter()
            .map(|r| self.find_room(r).map(|r| r.id))
            .collect::<Result<Vec<_>>>()?;
        let rec: UserRecord = self
            .store
            .run(Command::Integration(IntegrationCommand::CreateBot {
                user: NewUser {
                    id: Id::new(),
                    username: name.as_str().to_string(),
                    role: Role::User,
                    // No hash: a password never signs a bot in.
                    password_hash: String::new(),
                },
                rooms,
            }))
            .await?;
        tracing::info!(bot = %rec.username, "bot created");
        Ok(rec.public())
    }

    fn bot_by_name(&self, name: &str) -> Result<UserRecord> {
        let rec = self
            .user_by_name(name)
            .map_err(|_| AppError::NotFound("bot"))?;
        let is_hook = self.store.read()?.hooks()?.iter().any(|h| h.user == rec.id);
        if !rec.bot || is_hook {
            return Err(AppError::NotFound("bot"));
        }
        Ok(rec)
    }

    pub fn bots(&self) -> Result<Vec<BotInfo>> {
        let rx = self.store.read()?;
        let hooks: Vec<Id> = rx.hooks()?.iter().map(|h| h.user).collect();
        let tokens = rx.bot_tokens()?;
        let mut out: Vec<BotInfo> = rx
            .users()?
            .into_iter()
            .filter(|u| u.bot && !hooks.contains(&u.id))
            .map(|u| BotInfo {
                tokens: tokens
                    .iter()
                    .filter(|t| t.bot == u.id)
                    .map(|t| token_info(t, &u.username))
                    .collect(),
                user: u.public(),
                created_at: u.created_at,
            })
            .collect();
        out.sort_by(|a, b| a.user.username.cmp(&b.user.username));
        Ok(out)
    }

    /// A new token for the bot, shown once: only its hash is stored.
    pub async fn add_bot_token(
        &self,
        name: &str,
        rooms: Option<&[String]>,
        actions: Vec<BotAction>,
    ) -> Result<(String, TokenInfo)> {
        let bot = self.bot_by_name(name)?;
        let rooms = rooms
            .map(|rs| {
                rs.iter()
                    .map(|r| self.find_room(r).map(|r| r.id))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        let token = format!("{BOT_TOKEN_PREFIX}{}", random_secret()?);
        let record = BotToken {
            id: Id::new(),
            bot: bot.id,
            hash: sha256_hex(&token),
            scopes: Scopes { rooms, actions },
            created_at: crate::domain::now_ms(),
        };
        self.store
            .run::<()>(Command::Integration(IntegrationCommand::AddBotToken(
                record.clone(),
            )))
            .await?;
        Ok((token, token_info(&record, &bot.username)))
    }

    pub async fn revoke_bot_token(&self, id: &str) -> Result<()> {
        let id = Id::parse("token", id).map_err(|_| AppError::NotFound("token"))?;
        self.store
            .run::<()>(Command::Integration(IntegrationCommand::RevokeBotToken {
                id,
            }))
            .await?;
        Ok(())
    }

    pub async fn remove_bot(&self, name: &str) -> Result<User> {
        let bot = self.bot_by_name(name)?;
        let rec: UserRecord = self
            .store
            .run(Command::Integration(IntegrationCommand::RemoveBot {
                user: bot.id,
            }))
            .await?;
        Ok(rec.public())
    }

    /// A hook for the room (by name or id), posting as a new account
    /// `name` (default `hook-` and random letters). The URL holds the
    /// secret and is shown once.
    pub async fn add_hook(&self, room: &str, name: Option<&str>) -> Result<HookInfo> {
        let room = self.find_room(room)?;
        let secret = random_secret()?;
        let username = match name {
            Some(n) => Username::parse(n)?.as_str().to_string(),
            None => format!("hook-{}", &sha256_hex(&secret)[..8]),
        };
        let hook = Hook {
            id: Id::new(),
            room: room.id,
            user: Id::new(),
            secret_hash: sha256_hex(&secret),
            created_at: crate::domain::now_ms(),
        };
        let rec: UserRecord = self
            .store
            .run(Command::Integration(IntegrationCommand::AddHook {
                hook: hook.clone(),
                user: NewUser {
                    id: hook.user,
                    username,
                    role: Role::User,
                    password_hash: String::new(),
                },
            }))
            .await?;
        Ok(HookInfo {
            id: hook.id,
            room: room.id,
            room_name: room.name,
            user: rec.public(),
            created_at: hook.created_at,
            url: Some(format!("/hooks/{}/{secret}", hook.id)),
        })
    }

    /// Hooks, of one room (by name or id) or all.
    pub fn hooks(&self, room: Option<&str>) -> Result<Vec<HookInfo>> {
        let only = room.map(|r| self.find_room(r)).transpose()?;
        let rx = self.store.read()?;
        let mut out = Vec::new();
        for h in rx.hooks()? {
            if only.as_ref().is_some_and(|r| r.id != h.room) {
                continue;
            }
            let (Some(room), Some(user)) = (rx.room(h.room)?, rx.user(h.user)?) else {
                continue;
            };
            out.push(HookInfo {
                id: h.id,
                room: h.room,
                room_name: room.name,
                user: user.public(),
                created_at: h.created_at,
                url: None,
            });
        }
        out.sort_by_key(|h| h.created_at);
        Ok(out)
    }

    pub async fn remove_hook(&self, id: &str) -> Result<()> {
        let id = Id::parse("hook", id).map_err(|_| AppError::NotFound("hook"))?;
        self.store
            .run::<()>(Command::Integration(IntegrationCommand::RemoveHook { id }))
            .await?;
        Ok(())
    }

    /// A post to a hook's URL. An unknown hook and a wrong secret are the
    /// same `not_found`, so the answer does not say which hooks exist.
    /// The hook's account is held to a user's message rate.
    pub async fn post_to_hook(
        &self,
        id: &str,
        secret: &str,
        text: &str,
        username: Option<&str>,
    ) -> Result<Message> {
        let id = Id::parse("hook", id).map_err(|_| AppError::NotFound("hook"))?;
        let hook = self
            .store
            .read()?
            .hook(id)?
            .ok_or(AppError::NotFound("hook"))?;
        let given = sha256_hex(secret);
        if !constant_time_eq(given.as_bytes(), hook.secret_hash.as_bytes()) {
            return Err(AppError::NotFound("hook"));
        }
        if !self.limits.messages.take(&hook.user) {
            return Err(AppError::RateLimited("sending too fast; slow down".into()));
        }
        let text =
            MessageText::parse(text, self.config.limits.max_message_chars, false)?.into_string();
        let display_name = username
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                if n.chars().count() > 64 || n.chars().any(char::is_control) {
                    Err(AppError::BadRequest(
                        "username: at most 64 characters, no control characters".into(),
                    ))
                } else {
                    Ok(n.to_string())
                }
            })
            .transpose()?;
        let msg = self
            .store
            .run(Command::Integration(IntegrationCommand::HookPost {
                hook: hook.id,
                text,
                display_name,
                message: Id::new(),
            }))
            .await?;
        Ok(msg)
    }
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn token_info(t: &BotToken, bot: &str) -> TokenInfo {
    TokenInfo {
        id: t.id,
        bot: bot.to_string(),
        rooms: t.scopes.rooms.clone(),
        actions: t.scopes.actions.iter().map(|a| a.as_str()).collect(),
        created_at: t.created_at,
    }
}
