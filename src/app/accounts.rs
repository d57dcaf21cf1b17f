//! Accounts: registration, login, tokens, passwords and roles.

use super::*;

/// `auth.local_passwords = false`: accounts sign in through the operator's
/// app or an OpenID provider only.
fn passwords_on(config: &Config) -> Result<()> {
    if config.auth.local_passwords {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "password sign-in is switched off on this server".into(),
        ))
    }
}

impl App {
    pub(super) async fn hash(self: &Arc<Self>, pw: Password) -> Result<String> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || app.auth.hash_password(&pw))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
            .map_err(AppError::from)
    }

    pub async fn create_user(
        self: &Arc<Self>,
        username: Username,
        password: Password,
        role: Role,
    ) -> Result<User> {
        let password_hash = self.hash(password).await?;
        // Ids are made here, not while the store applies the write: the
        // write must come out the same wherever it is applied.
        let id = Id::new();
        let rec: UserRecord = self
            .store
            .run(Command::CreateUser(NewUser {
                id,
                username: username.as_str().to_string(),
                role,
                password_hash,
            }))
            .await?;
        tracing::info!(user = %rec.username, role = %rec.role, "user created");
        Ok(rec.public())
    }

    pub async fn register(
        self: &Arc<Self>,
        username: Username,
        password: Password,
        ip: Option<IpAddr>,
    ) -> Result<(String, User)> {
        passwords_on(&self.config)?;
        match self.config.auth.registration {
            Registration::Closed => {
                return Err(AppError::Forbidden("registration is closed".into()));
            }
            Registration::Invite => {
                return Err(AppError::Forbidden(
                    "invite: registration needs an invite".into(),
                ));
            }
            Registration::Open => {}
        }
        if let Some(ip) = ip {
            self.limits
                .auth_by_ip
                .take(&crate::limits::address_key(ip))
                .map_err(|retry| throttled("too many attempts from this address", retry))?;
        }
        if self
            .store
            .read()?
            .user_by_name(username.as_str())?
            .is_some()
        {
            return Err(AppError::Conflict("username is taken".into()));
        }
        let user = self.create_user(username, password, Role::User).await?;
        Ok((self.auth.issue(user.id, 0), user))
    }

    pub async fn login(
        self: &Arc<Self>,
        username: &str,
        password: String,
        ip: Option<IpAddr>,
    ) -> Result<(String, User)> {
        passwords_on(&self.config)?;
        if let Some(ip) = ip {
            self.limits
                .auth_by_ip
                .take(&crate::limits::address_key(ip))
                .map_err(|retry| throttled("too many attempts from this address", retry))?;
        }
        // Failures are counted per name, existing or not, so the limit
        // says nothing about which names exist.
        let rec = match Username::parse(username) {
            Ok(name) => self.store.read()?.user_by_name(name.as_str())?,
            Err(_) => None,
        };
        // A bot has no password: it is checked against the dummy hash
        // like an unknown name, and refused like one.
        let hash = rec
            .as_ref()
            .filter(|r| !r.bot)
            .map(|r| r.password_hash.clone());
        let ok = self
            .try_password(
                username.to_ascii_lowercase(),
                ip,
                password,
                hash,
                "too many failed logins for this account",
            )
            .await?;
        match rec {
            Some(rec) if ok && !rec.bot => {
                ban_check(&rec)?;
                Ok((self.auth.issue(rec.id, rec.token_gen), rec.public()))
            }
            _ => Err(AuthError::BadCredentials.into()),
        }
    }

    /// The user a token belongs to, if the token is valid, of the user's
    /// current generation, not revoked, and the account still exists and
    /// is not banned: each of those ends a token at once.
    pub fn authenticate(&self, token: &str) -> Result<User> {
        self.authenticate_token(token).map(|(user, _)| user)
    }

    /// `authenticate`, with what the token said.
    pub fn authenticate_token(&self, token: &str) -> Result<(User, Verified)> {
        if Self::is_bot_token(token) {
            return self.authenticate_bot(token);
        }
        let v = match self.auth.verify(token) {
            Ok(v) => v,
            Err(_) if self.identities.external.is_some() => {
                return self.authenticate_external(token);
            }
            Err(e) => return Err(e.into()),
        };
        let rx = self.store.read()?;
        let rec = rx
            .user(v.user)?
            .ok_or(AppError::Auth(AuthError::BadToken))?;
        // A ban ends the tokens too, but while it lasts a client is told
        // why (403 or 4003, with the reason), not just that the token is
        // bad.
        ban_check(&rec)?;
        if rec.token_gen != v.generation {
            return Err(AuthError::BadToken.into());
        }
        if rx.token_revoked(v.token)? {
            return Err(AuthError::BadToken.into());
        }
        Ok((rec.public(), v))
    }

    /// Ends the token (`everywhere`: every token of its user).
    pub async fn logout(&self, token: &str, everywhere: bool) -> Result<()> {
        let (user, v) = self.authenticate_token(token)?;
        if everywhere {
            self.end_external_tokens(user.id).await?;
            self.store
                .run::<()>(Command::RevokeTokens {
                    user: user.id,
                    why: Revocation::LoggedOutEverywhere,
                })
                .await?;
            return Ok(());
        }
        self.store
            .run::<()>(Command::RevokeToken {
                user: user.id,
                token: v.token,
                expiry: v.exp,
            })
            .await?;
        Ok(())
    }

    /// A user's own password change: the current password is checked (and
    /// counted like a login), every earlier token ends, and a new token is
    /// returned for the caller to go on with.
    pub async fn change_password(
        self: &Arc<Self>,
        user: &User,
        current: String,
        new: Password,
        ip: Option<IpAddr>,
    ) -> Result<String> {
        let hash = self
            .store
            .read()?
            .user(user.id)?
            .ok_or(AppError::NotFound("user"))?
            .password_hash;
        let ok = self
            .try_password(
                user.username.clone(),
                ip,
                current,
                Some(hash),
                "too many failed attempts for this account",
            )
            .await?;
        if !ok {
            return Err(AppError::Forbidden(
                "current_password: wrong password".into(),
            ));
        }
        let generation = self.replace_password(user.id, new).await?;
        Ok(self.auth.issue(user.id, generation))
    }

    /// Checks `password` against `hash` (or a dummy, for no account) as an
    /// attempt on account `name` from `ip`. Attempts are limited per
    /// account and address, so guessing from one place cannot lock the
    /// owner out from another. The attempt counts before the (slow) check,
    /// under one lock with the limit, and is given back if it succeeds:
    /// counting after would let concurrent guesses all pass the limit.
    async fn try_password(
        self: &Arc<Self>,
        name: String,
        ip: Option<IpAddr>,
        password: String,
        hash: Option<String>,
        limited: &str,
    ) -> Result<bool> {
        let key = (name, ip.map(crate::limits::address_key));
        self.limits
            .login_failures
            .take(&key)
            .map_err(|retry| throttled(limited, retry))?;
        let app = self.clone();
        let ok = tokio::task::spawn_blocking(move || {
            app.auth.verify_password(&password, hash.as_deref())
        })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
        if ok {
            self.limits.login_failures.refund(&key);
        }
        Ok(ok)
    }

    /// Sets the password and ends every token issued before; returns the
    /// new token generation.
    pub(super) async fn replace_password(
        self: &Arc<Self>,
        id: Id,
        password: Password,
    ) -> Result<u64> {
        let hash = self.hash(password).await?;
        let generation = self
            .store
            .run(Command::SetPassword { user: id, hash })
            .await?;
        Ok(generation)
    }

    /// The actor as the store knows them now. A connection holds the user
    /// it signed in as; a role changed since must count at once, so every
    /// permission that depends on the role looks here, not at that copy.
    pub(super) fn current(&self, actor: &Actor) -> Result<Actor> {
        match actor {
            Actor::Operator => Ok(Actor::Operator),
            Actor::User(u) => {
                let rec = self
                    .store
                    .read()?
                    .user(u.id)?
                    .ok_or(AppError::Auth(AuthError::BadToken))?;
                Ok(Actor::User(rec.public()))
            }
        }
    }

    pub fn user_by_name(&self, name: &str) -> Result<UserRecord> {
        let name = Username::parse(name)?;
        self.store
            .read()?
            .user_by_name(name.as_str())?
            .ok_or(AppError::NotFound("user"))
    }

    pub fn users(&self) -> Result<Vec<UserRecord>> {
        let mut users = self.store.read()?.users()?;
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    pub async fn set_password(self: &Arc<Self>, name: &str, password: Password) -> Result<()> {
        let id = self.user_by_name(name)?.id;
        self.replace_password(id, password).await?;
        Ok(())
    }

    /// A new role ends the user's tokens (and so their connections): no
    /// session goes on with powers it no longer has.
    pub async fn set_role(&self, name: &str, role: Role) -> Result<User> {
        let id = self.user_by_name(name)?.id;
        let rec: UserRecord = self.store.run(Command::SetRole { user: id, role }).await?;
        Ok(rec.public())
    }

    pub async fn delete_user(&self, name: &str) -> Result<User> {
        let id = self.user_by_name(name)?.id;
        let rec: UserRecord = self.store.run(Command::DeleteUser { user: id }).await?;
        tracing::info!(user = %rec.username, "user deleted");
        Ok(rec.public())
    }
}
