//! Invites: links that let whoever holds them into a room, private ones
//! included, for a while or a number of uses, and registration that
//! requires one when `auth.registration = "invite"`.

use super::*;
use crate::store::integrations::{IntegrationCommand, Invite};

/// The most uses one invite may allow.
pub const MAX_INVITE_USES: u32 = 100_000;

/// An invite as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InviteInfo {
    pub code: String,
    /// Where the web client opens it (relative to the server).
    pub url: String,
    pub room: Id,
    pub room_name: String,
    pub created_by: Option<Id>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    /// Whether it can be used now.
    pub valid: bool,
}

impl InviteInfo {
    fn new(i: Invite, room_name: String) -> InviteInfo {
        let valid = i.spent(crate::domain::now_ms()).is_none();
        InviteInfo {
            url: format!("/invite/{}", i.code),
            code: i.code,
            room: i.room,
            room_name,
            created_by: i.created_by,
            created_at: i.created_at,
            expires_at: i.expires_at,
            max_uses: i.max_uses,
            uses: i.uses,
            valid,
        }
    }
}

/// What anyone holding a code may see before signing in.
#[derive(Debug, Clone, Serialize)]
pub struct InvitePreview {
    pub code: String,
    pub room: Id,
    pub room_name: String,
    pub topic: String,
    pub visibility: Visibility,
    pub valid: bool,
    /// Why it cannot be used, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub expires_at: Option<i64>,
}

fn new_code() -> Result<String> {
    use base64::Engine;
    // 96 bits: not guessable, short enough to read out.
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// A code as it may appear in a path: anything else is no invite.
fn check_code(code: &str) -> Result<&str> {
    if code.is_empty()
        || code.len() > 64
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(AppError::NotFound("invite"));
    }
    Ok(code)
}

impl App {
    /// Who may invite: the room's owner, moderators and admins; for a
    /// public room also any member.
    fn may_invite(&self, actor: &Actor, room: &Room) -> Result<()> {
        if room.kind == RoomKind::Dm {
            return Err(AppError::Forbidden(
                "a direct message has no invites".into(),
            ));
        }
        if self.may_manage(actor, room) {
            return Ok(());
        }
        let member = match actor.user() {
            Some(u) => self.store.read()?.member(room.id, u.id)?.is_some(),
            None => true,
        };
        if room.visibility == Visibility::Public && member {
            return Ok(());
        }
        Err(AppError::Forbidden(
            if room.visibility == Visibility::Public {
                "only members of this room may invite to it".into()
            } else {
                "only the owner, a moderator or an admin may invite to a private room".into()
            },
        ))
    }

    pub async fn create_invite(
        &self,
        actor: &Actor,
        room: Id,
        expires_in_secs: Option<u64>,
        max_uses: Option<u32>,
    ) -> Result<InviteInfo> {
        let actor = &self.current(actor)?;
        let room = self.room_for(actor, room)?;
        self.may_invite(actor, &room)?;
        let now = crate::domain::now_ms();
        let expires_at = match expires_in_secs {
            None => None,
            Some(s) if s == 0 || s > MAX_DURATION_SECS => {
                return Err(AppError::BadRequest(format!(
                    "expires_in_secs: must be 1 to {MAX_DURATION_SECS}; leave it out for no end"
                )));
            }
            Some(s) => Some(now + s as i64 * 1000),
        };
        if max_uses.is_some_and(|m| m == 0 || m > MAX_INVITE_USES) {
            return Err(AppError::BadRequest(format!(
                "max_uses: must be 1 to {MAX_INVITE_USES}; leave it out for no limit"
            )));
        }
        let invite = Invite {
            code: new_code()?,
            room: room.id,
            created_by: actor.user().map(|u| u.id),
            created_at: now,
            expires_at,
            max_uses,
            uses: 0,
        };
        self.store
            .run::<()>(Command::Integration(IntegrationCommand::CreateInvite(
                invite.clone(),
            )))
            .await?;
        Ok(InviteInfo::new(invite, room.name))
    }

    pub fn invites(&self, actor: &Actor, room: Id) -> Result<Vec<InviteInfo>> {
        let actor = &self.current(actor)?;
        let room = self.room_for(actor, room)?;
        self.may_invite(actor, &room)?;
        Ok(self
            .store
            .read()?
            .invites_of(room.id)?
            .into_iter()
            .map(|i| InviteInfo::new(i, room.name.clone()))
            .collect())
    }

    /// Revoking takes whoever made the invite, or who may manage the room.
    pub async fn revoke_invite(&self, actor: &Actor, room: Id, code: &str) -> Result<()> {
        let actor = &self.current(actor)?;
        let code = check_code(code)?;
        let invite = self
            .store
            .read()?
            .invite(code)?
            .filter(|i| i.room == room)
            .ok_or(AppError::NotFound("invite"))?;
        let room = self.room_for(actor, room)?;
        let own = actor
            .user()
            .is_some_and(|u| invite.created_by == Some(u.id));
        if !own && !self.may_manage(actor, &room) {
            return Err(AppError::Forbidden(
                "only its creator, the owner, a moderator or an admin may revoke an invite".into(),
            ));
        }
        self.store
            .run::<()>(Command::Integration(IntegrationCommand::RevokeInvite {
                code: code.to_string(),
            }))
            .await?;
        Ok(())
    }

    /// `GET /api/invites/{code}`: no sign-in needed; the code is the key.
    pub fn preview_invite(&self, code: &str) -> Result<InvitePreview> {
        let code = check_code(code)?;
        let rx = self.store.read()?;
        let invite = rx.invite(code)?.ok_or(AppError::NotFound("invite"))?;
        let room = rx.room(invite.room)?.ok_or(AppError::NotFound("invite"))?;
        let reason = invite.spent(crate::domain::now_ms());
        Ok(InvitePreview {
            code: invite.code,
            room: room.id,
            room_name: room.name,
            topic: room.topic,
            visibility: room.visibility,
            valid: reason.is_none(),
            reason,
            expires_at: invite.expires_at,
        })
    }

    /// Joins the invite's room; a member already in it spends no use.
    pub async fn accept_invite(&self, user: &User, code: &str) -> Result<(Room, u64)> {
        let code = check_code(code)?;
        let (room, last) = self
            .store
            .run(Command::Integration(IntegrationCommand::AcceptInvite {
                code: code.to_string(),
                user: user.clone(),
            }))
            .await?;
        Ok((room, last))
    }

    /// Registration with an invite: the account is made and joins the
    /// room in one commit, or neither happens. Allowed unless
    /// registration is closed.
    pub async fn register_with_invite(
        self: &Arc<Self>,
        username: Username,
        password: Password,
        code: &str,
        ip: Option<IpAddr>,
    ) -> Result<(String, User, Room)> {
        if self.config.auth.registration == Registration::Closed {
            return Err(AppError::Forbidden("registration is closed".into()));
        }
        if let Some(ip) = ip {
            self.limits
                .auth_by_ip
                .take(&crate::limits::address_key(ip))
                .map_err(|retry| throttled("too many attempts from this address", retry))?;
        }
        let code = check_code(code).map_err(|_| AppError::NotFound("invite"))?;
        let room = {
            let rx = self.store.read()?;
            if rx.user_by_name(username.as_str())?.is_some() {
                return Err(AppError::Conflict("username is taken".into()));
            }
            let invite = rx.invite(code)?.ok_or(AppError::NotFound("invite"))?;
            if let Some(why) = invite.spent(crate::domain::now_ms()) {
                return Err(AppError::Forbidden(why.into()));
            }
            rx.room(invite.room)?.ok_or(AppError::NotFound("invite"))?
        };
        let password_hash = self.hash(password).await?;
        let rec: UserRecord = self
            .store
            .run(Command::Integration(
                IntegrationCommand::RegisterWithInvite {
                    user: NewUser {
                        id: Id::new(),
                        username: username.as_str().to_string(),
                        role: Role::User,
                        password_hash,
                    },
                    code: code.to_string(),
                },
            ))
            .await?;
        tracing::info!(user = %rec.username, room = %room.name, "user registered by invite");
        Ok((self.auth.issue(rec.id, 0), rec.public(), room))
    }
}
