//! The use cases: every rule about who may do what lives here, once, and
//! HTTP, WebSocket and the admin socket all call these functions. Input
//! arrives already validated into domain types.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Auth, AuthError, Verified};
use crate::config::{Config, Registration};
use serde::Serialize;

use crate::domain::{
    ClientMsgId, DmPolicy, DomainError, Id, Message, MessageText, Password, Reason, Role, Room,
    RoomKind, RoomName, Topic, User, Username, Visibility,
};
use crate::hub::{Hub, Ties};
use crate::metrics::Metrics;
use crate::protocol::ErrorCode;
use crate::store::{
    AuditEntry, Change, NewMessage, NewRoom, NewUser, Page, Revocation, Store, StoreError, Tx,
    UploadRecord, UserRecord,
};
use crate::uploads::{FileStore, UploadError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Invalid(#[from] DomainError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The account is banned: 403 over HTTP, close 4003 on a WebSocket.
    #[error("{0}")]
    Banned(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// What was asked to be lifted is not in force ("bob is not banned").
    #[error("{0}")]
    Absent(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    RateLimited(String),
    /// Rate limited, with the seconds until a retry can succeed.
    #[error("{message}; retry in {retry_after} s")]
    Throttled { message: String, retry_after: u64 },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The client was too slow sending its request.
    #[error("{0}")]
    Timeout(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    /// The one mapping from errors to the protocol's codes.
    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::Invalid(_) | AppError::BadRequest(_) => ErrorCode::BadRequest,
            AppError::Unauthorized(_) => ErrorCode::Unauthorized,
            AppError::Forbidden(_) | AppError::Banned(_) => ErrorCode::Forbidden,
            AppError::NotFound(_) | AppError::Absent(_) => ErrorCode::NotFound,
            AppError::Conflict(_) => ErrorCode::Conflict,
            AppError::RateLimited(_) | AppError::Throttled { .. } => ErrorCode::RateLimited,
            AppError::TooLarge(_) => ErrorCode::TooLarge,
            AppError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            AppError::Timeout(_) => ErrorCode::Timeout,
            AppError::Auth(AuthError::BadToken | AuthError::BadCredentials) => {
                ErrorCode::Unauthorized
            }
            AppError::Store(StoreError::NotFound(_)) => ErrorCode::NotFound,
            AppError::Store(StoreError::Conflict(_)) => ErrorCode::Conflict,
            AppError::Store(StoreError::Forbidden(_)) => ErrorCode::Forbidden,
            AppError::Store(StoreError::Invalid(_)) => ErrorCode::BadRequest,
            AppError::Upload(UploadError::Unsupported | UploadError::Corrupt(_)) => {
                ErrorCode::UnsupportedMediaType
            }
            AppError::Upload(
                UploadError::TooLarge { .. }
                | UploadError::TooHeavy { .. }
                | UploadError::AnimationTooLarge { .. }
                | UploadError::OverMemory,
            ) => ErrorCode::TooLarge,
            AppError::Store(_)
            | AppError::Auth(AuthError::Hash(_))
            | AppError::Upload(UploadError::Io(_))
            | AppError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// What the client is told. Internal details stay in the log.
    pub fn client_message(&self) -> String {
        if self.code() == ErrorCode::Internal {
            tracing::error!(error = %self, "internal error");
            "internal error".into()
        } else {
            self.to_string()
        }
    }
}

pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// Who asks: a signed-in user, or the operator at the CLI or console, who
/// may do anything.
#[derive(Debug, Clone)]
pub enum Actor {
    User(User),
    Operator,
}

impl Actor {
    pub fn user(&self) -> Option<&User> {
        match self {
            Actor::User(u) => Some(u),
            Actor::Operator => None,
        }
    }

    fn is_staff(&self) -> bool {
        match self {
            Actor::User(u) => u.role.is_staff(),
            Actor::Operator => true,
        }
    }

    fn is_admin(&self) -> bool {
        match self {
            Actor::User(u) => u.role == Role::Admin,
            Actor::Operator => true,
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone)]
pub enum Target {
    Room(Id),
    User(Username),
}

pub struct SendInput {
    pub target: Target,
    pub text: String,
    pub attachments: Vec<String>,
    pub client_msg_id: Option<ClientMsgId>,
}

/// A friend as listed to the user and the operator.
#[derive(Debug, Clone, Serialize)]
pub struct Friend {
    pub user: User,
    pub online: bool,
    /// When the friendship began.
    pub since: i64,
}

/// `GET /api/friends`: friends, and pending requests each way.
#[derive(Debug, Clone, Serialize)]
pub struct FriendLists {
    pub friends: Vec<Friend>,
    pub incoming: Vec<User>,
    pub outgoing: Vec<User>,
}

pub struct App {
    pub config: Config,
    pub store: Store,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    pub files: FileStore,
    /// Bounds the images decoded at once, so uploads cannot take every
    /// thread from chat.
    decode_slots: tokio::sync::Semaphore,
    /// `uploads.decode_budget_bytes` in KiB: each image holds its
    /// estimated peak memory (`Plan::cost`) while it is processed.
    decode_budget: tokio::sync::Semaphore,
    pub limits: crate::limits::Limiters,
}

impl App {
    /// Opens the store in the data directory and wires its changes to a new
    /// hub.
    pub fn open(config: Config) -> Result<Arc<App>> {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(
            config.limits.outbound_queue,
            Duration::from_millis(config.ws.typing_timeout_ms),
            metrics.clone(),
        );
        let listener_hub = hub.clone();
        let observed = metrics.clone();
        let store = Store::open(
            &config.db_path(),
            config.store.cache_mib,
            config.store.max_batch,
            Arc::new(move |changes: &[Change]| listener_hub.apply(changes)),
            Some(Arc::new(move |size, took| {
                observed.commit_batch.observe(size as f64);
                observed.commit_seconds.observe(took.as_secs_f64());
            })),
        )?;
        let secret = store.jwt_secret()?;
        let auth = Auth::new(&config.auth, &secret)?;
        let files = FileStore::new(&config.server.data_dir);
        let limits = crate::limits::Limiters::new(&config);
        let decode_slots = tokio::sync::Semaphore::new(config.uploads.max_concurrent);
        let decode_budget =
            tokio::sync::Semaphore::new(kib(config.uploads.decode_budget_bytes) as usize);
        Ok(Arc::new(App {
            config,
            store,
            hub,
            metrics,
            auth,
            files,
            decode_slots,
            decode_budget,
            limits,
        }))
    }

    // ----- accounts -----

    async fn hash(self: &Arc<Self>, pw: Password) -> Result<String> {
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
        let rec = self
            .store
            .write(move |tx| {
                tx.create_user(NewUser {
                    username: username.as_str().to_string(),
                    role,
                    password_hash,
                })
            })
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
        if self.config.auth.registration == Registration::Closed {
            return Err(AppError::Forbidden("registration is closed".into()));
        }
        if let Some(ip) = ip {
            self.limits
                .auth_by_ip
                .take(&ip)
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
        if let Some(ip) = ip {
            self.limits
                .auth_by_ip
                .take(&ip)
                .map_err(|retry| throttled("too many attempts from this address", retry))?;
        }
        // Failures are counted per name, existing or not, so the limit
        // says nothing about which names exist; and per address, so that
        // guessing from one place cannot lock the owner out from another.
        // The attempt is counted before the (slow) verification and given
        // back if it succeeds: counting after would let concurrent guesses
        // all pass the check first.
        let key = (username.to_ascii_lowercase(), ip);
        self.limits
            .login_failures
            .take(&key)
            .map_err(|retry| throttled("too many failed logins for this account", retry))?;
        let rec = match Username::parse(username) {
            Ok(name) => self.store.read()?.user_by_name(name.as_str())?,
            Err(_) => None,
        };
        let app = self.clone();
        let hash = rec.as_ref().map(|r| r.password_hash.clone());
        let ok = tokio::task::spawn_blocking(move || {
            app.auth.verify_password(&password, hash.as_deref())
        })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
        match rec {
            Some(rec) if ok => {
                self.limits.login_failures.refund(&key);
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
        let v = self.auth.verify(token)?;
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
        if let Some(t) = v.token
            && rx.token_revoked(t)?
        {
            return Err(AuthError::BadToken.into());
        }
        Ok((rec.public(), v))
    }

    /// Ends the token (`everywhere`: every token of its user).
    pub async fn logout(&self, token: &str, everywhere: bool) -> Result<()> {
        let (user, v) = self.authenticate_token(token)?;
        if everywhere {
            self.store
                .write(move |tx| {
                    let mut rec = tx.user(user.id)?.ok_or(StoreError::NotFound("user"))?;
                    tx.revoke_tokens(&mut rec, Revocation::LoggedOutEverywhere);
                    tx.put_user(&rec)
                })
                .await?;
            return Ok(());
        }
        let Some(id) = v.token else {
            // A token from before tokens had ids can only be ended with
            // the rest.
            return Err(AppError::BadRequest(
                "this token can only be ended with everywhere: true".into(),
            ));
        };
        self.store
            .write(move |tx| tx.revoke_token(user.id, id, v.exp))
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
        let key = (user.username.clone(), ip);
        self.limits
            .login_failures
            .take(&key)
            .map_err(|retry| throttled("too many failed attempts for this account", retry))?;
        let rec = self
            .store
            .read()?
            .user(user.id)?
            .ok_or(AppError::NotFound("user"))?;
        let app = self.clone();
        let hash = rec.password_hash.clone();
        let ok =
            tokio::task::spawn_blocking(move || app.auth.verify_password(&current, Some(&hash)))
                .await
                .map_err(|e| AppError::Internal(e.to_string()))?;
        if !ok {
            return Err(AppError::Forbidden(
                "current_password: wrong password".into(),
            ));
        }
        self.limits.login_failures.refund(&key);
        let generation = self.replace_password(user.id, new).await?;
        Ok(self.auth.issue(user.id, generation))
    }

    /// Sets the password and ends every token issued before; returns the
    /// new token generation.
    async fn replace_password(self: &Arc<Self>, id: Id, password: Password) -> Result<u64> {
        let hash = self.hash(password).await?;
        let generation = self
            .store
            .write(move |tx| {
                let mut rec = tx.user(id)?.ok_or(StoreError::NotFound("user"))?;
                rec.password_hash = hash;
                tx.revoke_tokens(&mut rec, Revocation::PasswordChanged);
                tx.put_user(&rec)?;
                Ok(rec.token_gen)
            })
            .await?;
        Ok(generation)
    }

    /// The actor as the store knows them now. A connection holds the user
    /// it signed in as; a role changed since must count at once, so every
    /// permission that depends on the role looks here, not at that copy.
    fn current(&self, actor: &Actor) -> Result<Actor> {
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
        let rec = self
            .store
            .write(move |tx| {
                let mut rec = tx.user(id)?.ok_or(StoreError::NotFound("user"))?;
                if rec.role != role {
                    rec.role = role;
                    tx.revoke_tokens(&mut rec, Revocation::RoleChanged);
                    tx.put_user(&rec)?;
                }
                Ok(rec)
            })
            .await?;
        Ok(rec.public())
    }

    pub async fn delete_user(&self, name: &str) -> Result<User> {
        let id = self.user_by_name(name)?.id;
        let rec = self.store.write(move |tx| tx.delete_user(id)).await?;
        tracing::info!(user = %rec.username, "user deleted");
        Ok(rec.public())
    }

    // ----- rooms -----

    fn visible(&self, actor: &Actor, room: &Room) -> Result<bool> {
        if room.visibility == Visibility::Public {
            return Ok(true);
        }
        let Some(user) = actor.user() else {
            return Ok(true);
        };
        if self.store.read()?.member(room.id, user.id)?.is_some() {
            return Ok(true);
        }
        // Staff see private rooms to moderate them, but not others' DMs.
        Ok(room.kind == RoomKind::Room && actor.is_staff())
    }

    /// A room the actor may see; a private room of others is `forbidden`.
    pub fn room_for(&self, actor: &Actor, id: Id) -> Result<Room> {
        let actor = &self.current(actor)?;
        let room = self
            .store
            .read()?
            .room(id)?
            .ok_or(AppError::NotFound("room"))?;
        if !self.visible(actor, &room)? {
            return Err(AppError::Forbidden("this room is private".into()));
        }
        Ok(room)
    }

    /// A room by id or by name (for the operator's CLI).
    pub fn find_room(&self, key: &str) -> Result<Room> {
        let rx = self.store.read()?;
        let by_name = rx.room_by_name(key)?;
        let room = match by_name {
            Some(r) => Some(r),
            None => match Id::parse("room", key) {
                Ok(id) => rx.room(id)?,
                Err(_) => None,
            },
        };
        room.ok_or(AppError::NotFound("room"))
    }

    /// Public rooms, and the actor's private rooms and DMs.
    pub fn list_rooms(&self, actor: &Actor) -> Result<Vec<Room>> {
        let rx = self.store.read()?;
        let mine: std::collections::HashSet<Id> = match actor.user() {
            Some(u) => rx.room_ids_of(u.id)?.into_iter().collect(),
            None => Default::default(),
        };
        let mut rooms: Vec<Room> = rx
            .rooms()?
            .into_iter()
            .filter(|r| {
                r.visibility == Visibility::Public
                    || mine.contains(&r.id)
                    || (actor.user().is_none() && r.kind == RoomKind::Room)
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rooms)
    }

    pub fn rooms_of(&self, user: Id) -> Result<Vec<Room>> {
        Ok(self.store.read()?.rooms_of(user)?)
    }

    pub async fn create_room(
        &self,
        actor: &Actor,
        name: RoomName,
        visibility: Visibility,
        topic: Option<Topic>,
    ) -> Result<Room> {
        let owner = actor.user().map(|u| u.id);
        if let Some(user) = owner {
            self.limits
                .room_creations
                .take(&user)
                .map_err(|retry| throttled("too many new rooms", retry))?;
        }
        let room = self
            .store
            .write(move |tx| {
                tx.create_room(NewRoom {
                    name: name.as_str().to_string(),
                    visibility,
                    topic: topic.map(Topic::into_string).unwrap_or_default(),
                    owner,
                })
            })
            .await?;
        tracing::info!(room = %room.name, "room created");
        Ok(room)
    }

    pub fn room_details(&self, actor: &Actor, id: Id) -> Result<(Room, Vec<User>)> {
        let room = self.room_for(actor, id)?;
        let members = self.store.read()?.members(id)?;
        Ok((room, members))
    }

    fn may_manage(&self, actor: &Actor, room: &Room) -> bool {
        match actor.user() {
            None => true,
            Some(u) => u.role.is_staff() || room.owner == Some(u.id),
        }
    }

    pub async fn update_room(
        &self,
        actor: &Actor,
        id: Id,
        topic: Option<Topic>,
        visibility: Option<Visibility>,
    ) -> Result<Room> {
        let actor = &self.current(actor)?;
        let room = self.room_for(actor, id)?;
        if room.kind == RoomKind::Dm {
            return Err(AppError::Forbidden(
                "direct messages cannot be changed".into(),
            ));
        }
        if !self.may_manage(actor, &room) {
            return Err(AppError::Forbidden(
                "only the owner, a moderator or an admin may change this room".into(),
            ));
        }
        let room = self
            .store
            .write(move |tx| {
                let mut room = tx.room(id)?.ok_or(StoreError::NotFound("room"))?;
                if let Some(t) = topic {
                    room.topic = t.into_string();
                }
                if let Some(v) = visibility {
                    room.visibility = v;
                }
                tx.put_room(&room)?;
                Ok(room)
            })
            .await?;
        Ok(room)
    }

    pub async fn delete_room(&self, actor: &Actor, id: Id) -> Result<Room> {
        let actor = &self.current(actor)?;
        // Admins may delete any room, DMs included, though they cannot read
        // others' DMs: deleting one must not first ask to see it.
        let room = if actor.is_admin() {
            self.store
                .read()?
                .room(id)?
                .ok_or(AppError::NotFound("room"))?
        } else {
            self.room_for(actor, id)?
        };
        let allowed = match actor.user() {
            None => true,
            Some(u) => u.role == Role::Admin || room.owner == Some(u.id),
        };
        if !allowed || room.kind == RoomKind::Dm && !actor.is_admin() {
            return Err(AppError::Forbidden(
                "only the owner or an admin may delete this room".into(),
            ));
        }
        let room = self.store.write(move |tx| tx.delete_room(id)).await?;
        tracing::info!(room = %room.name, "room deleted");
        // An owner closing their own room is not moderation; anyone else
        // doing it is.
        if let Actor::User(u) = actor
            && room.owner != Some(u.id)
        {
            self.audit(
                actor,
                "room_delete",
                &room.name,
                None,
                serde_json::Value::Null,
            )
            .await?;
        }
        Ok(room)
    }

    /// Adds `username` to the room. Anyone who can see a public room may
    /// add to it; private rooms take the owner, a moderator or an admin.
    pub async fn add_member(&self, actor: &Actor, id: Id, username: &str) -> Result<bool> {
        let actor = &self.current(actor)?;
        let room = self.room_for(actor, id)?;
        if room.kind == RoomKind::Dm {
            return Err(AppError::Forbidden(
                "direct messages have two members".into(),
            ));
        }
        if room.visibility == Visibility::Private && !self.may_manage(actor, &room) {
            return Err(AppError::Forbidden(
                "only the owner, a moderator or an admin may add members to a private room".into(),
            ));
        }
        let user = self.user_by_name(username)?.public();
        let adder = actor.user().map(|u| u.id);
        let added = self
            .store
            .write(move |tx| {
                let room = tx.room(id)?.ok_or(StoreError::NotFound("room"))?;
                // Nobody pulls a user who blocks them into their rooms.
                if let Some(adder) = adder
                    && tx.blocks(user.id, adder)?
                {
                    return Err(StoreError::Forbidden(
                        "this user cannot be added to a room by you".into(),
                    ));
                }
                tx.add_member(&room, &user)
            })
            .await?;
        Ok(added)
    }

    /// `join_room`: joins a public room, or confirms membership of a
    /// private one. Returns the room and its last seq.
    pub async fn join_room(&self, user: &User, id: Id) -> Result<(Room, u64)> {
        let user = user.clone();
        let (room, last) = self
            .store
            .write(move |tx| {
                let room = tx.room(id)?.ok_or(StoreError::NotFound("room"))?;
                let member = tx.member(id, user.id)?.is_some();
                if !member {
                    if room.visibility == Visibility::Private {
                        return Err(StoreError::Forbidden("this room is private".into()));
                    }
                    tx.add_member(&room, &user)?;
                }
                let last = tx.last_seq(id)?;
                Ok((room, last))
            })
            .await?;
        Ok((room, last))
    }

    pub async fn leave_room(&self, user: &User, id: Id) -> Result<()> {
        let user = user.clone();
        self.store
            .write(move |tx| {
                let room = tx.room(id)?.ok_or(StoreError::NotFound("room"))?;
                if room.kind == RoomKind::Dm {
                    return Err(StoreError::Forbidden(
                        "a direct message cannot be left".into(),
                    ));
                }
                if !tx.remove_member(&room, &user)? {
                    return Err(StoreError::NotFound("membership"));
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    // ----- messages -----

    pub async fn send_message(&self, sender: &User, input: SendInput) -> Result<Message> {
        if !self.limits.messages.take(&sender.id) {
            return Err(AppError::RateLimited("sending too fast; slow down".into()));
        }
        let max = self.config.uploads.max_per_message;
        if input.attachments.len() > max {
            return Err(AppError::BadRequest(format!(
                "attachments: at most {max} per message"
            )));
        }
        // A message may be only its attachments.
        let text = MessageText::parse(
            &input.text,
            self.config.limits.max_message_chars,
            !input.attachments.is_empty(),
        )?
        .into_string();
        let upload_ids = input.attachments;
        let sender = sender.clone();
        let cid = input.client_msg_id.map(|c| c.as_str().to_string());
        let peer = match &input.target {
            Target::User(name) => Some(
                self.store
                    .read()?
                    .user_by_name(name.as_str())?
                    .ok_or(AppError::NotFound("user"))?
                    .public(),
            ),
            Target::Room(_) => None,
        };
        let target = input.target;
        let default_policy = self.config.server.dm_policy;
        let (msg, _) = self
            .store
            .write(move |tx| {
                let attachments = tx.resolve_attachments(sender.id, &upload_ids)?;
                // Checked before anything below writes. A DM has no room
                // yet, so only a mute everywhere applies to it.
                let mute_scope = match &target {
                    Target::Room(id) => *id,
                    Target::User(_) => Id(0),
                };
                if tx.muted(sender.id, mute_scope, crate::domain::now_ms())? {
                    return Err(StoreError::Forbidden("you are muted".into()));
                }
                let room = match (&target, &peer) {
                    (_, Some(peer)) => {
                        may_dm(tx, sender.id, peer.id, default_policy)?;
                        tx.dm_room(&sender, peer)?
                    }
                    (Target::Room(id), None) => {
                        let room = tx.room(*id)?.ok_or(StoreError::NotFound("room"))?;
                        if tx.member(room.id, sender.id)?.is_none() {
                            if room.visibility == Visibility::Private {
                                return Err(StoreError::Forbidden(
                                    "not a member of this room".into(),
                                ));
                            }
                            // Speaking in a public room joins it.
                            tx.add_member(&room, &sender)?;
                        } else if room.kind == RoomKind::Dm {
                            // An existing conversation is no way around a
                            // block or a policy.
                            for peer in tx.member_ids(room.id)? {
                                may_dm(tx, sender.id, peer, default_policy)?;
                            }
                        }
                        room
                    }
                    (Target::User(_), None) => return Err(StoreError::NotFound("user")),
                };
                tx.append_message(NewMessage {
                    room: room.id,
                    sender: sender.id,
                    text,
                    attachments,
                    client_msg_id: cid,
                })
            })
            .await?;
        Ok(msg)
    }

    /// Edits obey the rules of sending: a user who may not send a message
    /// to the room now (muted, no longer a member, blocked or refused by
    /// the other side of a DM) may not change what it says either.
    pub async fn edit_message(&self, user: &User, id: Id, text: &str) -> Result<Message> {
        let text =
            MessageText::parse(text, self.config.limits.max_message_chars, false)?.into_string();
        let uid = user.id;
        let default_policy = self.config.server.dm_policy;
        let msg = self
            .store
            .write(move |tx| {
                let msg = tx.message(id)?.ok_or(StoreError::NotFound("message"))?;
                if msg.sender.id != uid {
                    return Err(StoreError::Forbidden(
                        "only the sender may edit a message".into(),
                    ));
                }
                if msg.deleted {
                    return Err(StoreError::NotFound("message"));
                }
                may_post(tx, uid, msg.room, default_policy)?;
                tx.edit_message(msg, text)
            })
            .await?;
        Ok(msg)
    }

    /// The sender may delete their own message while they may still send
    /// to its room; moderators and admins (by their role now, not when
    /// they signed in) may delete anyone's.
    pub async fn delete_message(&self, actor: &Actor, id: Id) -> Result<Message> {
        let actor = actor.clone();
        let default_policy = self.config.server.dm_policy;
        let msg = self
            .store
            .write(move |tx| {
                let msg = tx.message(id)?.ok_or(StoreError::NotFound("message"))?;
                if let Actor::User(u) = &actor {
                    let staff = tx.user(u.id)?.is_some_and(|r| r.role.is_staff());
                    if !staff {
                        if u.id != msg.sender.id {
                            return Err(StoreError::Forbidden(
                                "only the sender, a moderator or an admin may delete a message"
                                    .into(),
                            ));
                        }
                        may_post(tx, u.id, msg.room, default_policy)?;
                    }
                }
                if msg.deleted {
                    return Ok(msg);
                }
                tx.delete_message(msg)
            })
            .await?;
        Ok(msg)
    }

    pub fn history(&self, actor: &Actor, room: Id, page: Page) -> Result<(Vec<Message>, bool)> {
        self.room_for(actor, room)?;
        Ok(self.store.read()?.history(room, page)?)
    }

    pub async fn mark_read(&self, user: &User, room: Id, seq: u64) -> Result<()> {
        let user = user.clone();
        self.store
            .write(move |tx| {
                if tx.room(room)?.is_none() {
                    return Err(StoreError::NotFound("room"));
                }
                if tx.member(room, user.id)?.is_none() {
                    return Err(StoreError::Forbidden("not a member of this room".into()));
                }
                if seq > tx.last_seq(room)? {
                    return Err(StoreError::Invalid(
                        "seq: beyond the room's last message".into(),
                    ));
                }
                tx.mark_read(room, &user, seq)
            })
            .await?;
        Ok(())
    }

    /// Typing and presence need membership of the room (for public rooms,
    /// visibility is enough to read presence).
    pub fn require_member(&self, user: &User, room: Id) -> Result<()> {
        let rx = self.store.read()?;
        if rx.room(room)?.is_none() {
            return Err(AppError::NotFound("room"));
        }
        if rx.member(room, user.id)?.is_none() {
            return Err(AppError::Forbidden("not a member of this room".into()));
        }
        Ok(())
    }

    pub fn presence(&self, actor: &Actor, room: Id) -> Result<Vec<User>> {
        self.room_for(actor, room)?;
        let users = self.hub.room_presence(room);
        match actor.user() {
            Some(viewer) => self.hide_blockers(viewer.id, users),
            None => Ok(users),
        }
    }

    // ----- presence, friends, blocks, direct-message policy -----

    /// Online users as `viewer` may see them: without those who block them.
    pub fn online_users_for(&self, viewer: Id) -> Result<Vec<User>> {
        let users = self
            .hub
            .online_users()
            .into_iter()
            .map(|o| o.user)
            .collect();
        self.hide_blockers(viewer, users)
    }

    fn hide_blockers(&self, viewer: Id, mut users: Vec<User>) -> Result<Vec<User>> {
        let blockers = self.store.read()?.blocker_ids(viewer)?;
        if !blockers.is_empty() {
            users.retain(|u| !blockers.contains(&u.id));
        }
        Ok(users)
    }

    /// What the hub keeps of a user while they are online, read in one
    /// snapshot.
    pub fn ties(&self, user: Id) -> Result<Ties> {
        let rx = self.store.read()?;
        Ok(Ties {
            rooms: rx.room_ids_of(user)?,
            friends: rx.friend_ids(user)?,
            blocked_by: rx.blocker_ids(user)?,
        })
    }

    pub fn friends(&self, user: Id) -> Result<FriendLists> {
        let rx = self.store.read()?;
        let strip = |v: Vec<(User, i64)>| v.into_iter().map(|(u, _)| u).collect();
        Ok(FriendLists {
            friends: rx
                .friends(user)?
                .into_iter()
                .map(|(user, since)| Friend {
                    online: self.hub.is_online(user.id),
                    user,
                    since,
                })
                .collect(),
            incoming: strip(rx.incoming_requests(user)?),
            outgoing: strip(rx.outgoing_requests(user)?),
        })
    }

    /// Users `user` blocks.
    pub fn blocked(&self, user: Id) -> Result<Vec<User>> {
        Ok(self
            .store
            .read()?
            .blocked(user)?
            .into_iter()
            .map(|(u, _)| u)
            .collect())
    }

    /// The user's direct-message policy: their own, else the server's.
    pub fn dm_policy(&self, user: Id) -> Result<DmPolicy> {
        let own = self.store.read()?.settings(user)?.dm_policy;
        Ok(own.unwrap_or(self.config.server.dm_policy))
    }

    pub async fn set_dm_policy(&self, user: &User, policy: DmPolicy) -> Result<DmPolicy> {
        let uid = user.id;
        self.store
            .write(move |tx| {
                tx.user(uid)?.ok_or(StoreError::NotFound("user"))?;
                let mut settings = tx.settings(uid)?;
                settings.dm_policy = Some(policy);
                tx.put_settings(uid, &settings)
            })
            .await?;
        Ok(policy)
    }

    /// Another user, named in a friend or block operation.
    fn other_user(&self, me: &User, name: &Username) -> Result<Id> {
        if name.as_str() == me.username {
            return Err(AppError::BadRequest(
                "username: that is you; name another user".into(),
            ));
        }
        Ok(self.user_by_name(name.as_str())?.id)
    }

    /// Runs `op` on fresh records of `me` and `other`, inside the writer.
    async fn with_pair<T: Send + 'static>(
        &self,
        me: &User,
        name: &Username,
        op: impl FnOnce(&mut Tx, &User, &User) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T> {
        let other = self.other_user(me, name)?;
        let me = me.id;
        Ok(self
            .store
            .write(move |tx| {
                let me = tx.user(me)?.ok_or(StoreError::NotFound("user"))?.public();
                let other = tx
                    .user(other)?
                    .ok_or(StoreError::NotFound("user"))?
                    .public();
                op(tx, &me, &other)
            })
            .await?)
    }

    /// Asks `to` to be friends. A request to someone who already asked
    /// the caller makes them friends. Repeating a pending request is
    /// acknowledged again and changes nothing.
    pub async fn friend_request(&self, me: &User, to: &Username) -> Result<()> {
        self.with_pair(me, to, |tx, me, other| {
            if tx.are_friends(me.id, other.id)? {
                return Err(StoreError::Conflict("you are already friends".into()));
            }
            if tx.blocks(me.id, other.id)? {
                return Err(StoreError::Conflict(
                    "you block this user; unblock them first".into(),
                ));
            }
            if tx.has_incoming(me.id, other.id)? {
                return tx.add_friend(me, other);
            }
            // A blocked requester is answered as if the request went
            // through: it stays pending on their side and never reaches
            // the blocker, so asking reveals nothing.
            let deliver = !tx.blocks(other.id, me.id)?;
            tx.put_request(me, other, deliver)
        })
        .await
    }

    pub async fn friend_accept(&self, me: &User, from: &Username) -> Result<()> {
        self.with_pair(me, from, |tx, me, other| {
            if tx.are_friends(me.id, other.id)? {
                return Err(StoreError::Conflict("you are already friends".into()));
            }
            if !tx.has_incoming(me.id, other.id)? {
                return Err(StoreError::NotFound("friend request"));
            }
            tx.add_friend(me, other)
        })
        .await
    }

    pub async fn friend_decline(&self, me: &User, from: &Username) -> Result<()> {
        self.with_pair(me, from, |tx, me, other| {
            if !tx.has_incoming(me.id, other.id)? {
                return Err(StoreError::NotFound("friend request"));
            }
            tx.end_request(other, me, true)?;
            Ok(())
        })
        .await
    }

    /// Ends whatever is between the caller and `name`: a friendship, a
    /// request either way.
    pub async fn friend_remove(&self, me: &User, name: &Username) -> Result<()> {
        self.with_pair(me, name, |tx, me, other| {
            let friends = tx.are_friends(me.id, other.id)?;
            let outgoing = tx.has_outgoing(me.id, other.id)?;
            let incoming = tx.has_incoming(me.id, other.id)?;
            if !(friends || outgoing || incoming) {
                return Err(StoreError::NotFound("friend or friend request"));
            }
            tx.remove_friend(me, other)?;
            tx.end_request(me, other, false)?;
            tx.end_request(other, me, true)?;
            Ok(())
        })
        .await
    }

    /// Blocks `name`: ends a friendship and requests between the two, and
    /// from then on the blocked user cannot send the caller direct
    /// messages or requests, nor see the caller's presence. Blocking
    /// again changes nothing.
    pub async fn block(&self, me: &User, name: &Username) -> Result<()> {
        self.with_pair(me, name, |tx, me, other| {
            if tx.blocks(me.id, other.id)? {
                return Ok(());
            }
            tx.remove_friend(me, other)?;
            tx.end_request(me, other, false)?;
            // The blocked user's own request stays pending on their side,
            // as if ignored, rather than coming back declined.
            tx.hide_request(other, me)?;
            tx.block(me.id, other.id)?;
            Ok(())
        })
        .await
    }

    pub async fn unblock(&self, me: &User, name: &Username) -> Result<()> {
        self.with_pair(me, name, |tx, me, other| {
            if !tx.blocks(me.id, other.id)? {
                return Err(StoreError::NotFound("block"));
            }
            // A request that waited unseen behind the block ends as if
            // declined, rather than surfacing now.
            if tx.has_outgoing(other.id, me.id)? && !tx.has_incoming(me.id, other.id)? {
                tx.end_request(other, me, true)?;
            }
            tx.unblock(me.id, other.id)?;
            Ok(())
        })
        .await
    }
}

/// Whether `user` may change what they said in `room` (edit, delete): the
/// rules of sending to a room they are in.
fn may_post(tx: &Tx, user: Id, room: Id, default: DmPolicy) -> Result<(), StoreError> {
    let room = tx.room(room)?.ok_or(StoreError::NotFound("room"))?;
    if tx.member(room.id, user)?.is_none() {
        return Err(StoreError::Forbidden("not a member of this room".into()));
    }
    let scope = if room.kind == RoomKind::Dm {
        Id(0)
    } else {
        room.id
    };
    if tx.muted(user, scope, crate::domain::now_ms())? {
        return Err(StoreError::Forbidden("you are muted".into()));
    }
    if room.kind == RoomKind::Dm {
        for peer in tx.member_ids(room.id)? {
            may_dm(tx, user, peer, default)?;
        }
    }
    Ok(())
}

/// Whether `sender` may send `peer` a direct message. A block and a
/// friends-only policy are refused with the same words, so the answer does
/// not tell a blocked user that they are blocked.
fn may_dm(tx: &Tx, sender: Id, peer: Id, default: DmPolicy) -> Result<(), StoreError> {
    if sender == peer {
        return Ok(());
    }
    if tx.blocks(sender, peer)? {
        return Err(StoreError::Forbidden(
            "you block this user; unblock them to send direct messages".into(),
        ));
    }
    let policy = tx.settings(peer)?.dm_policy.unwrap_or(default);
    let refused = tx.blocks(peer, sender)?
        || (policy == DmPolicy::Friends && !tx.are_friends(sender, peer)?);
    if refused {
        return Err(StoreError::Forbidden(
            "this user does not accept direct messages from you".into(),
        ));
    }
    Ok(())
}

impl App {
    // ----- uploads -----

    /// Judges, cleans, thumbnails and keeps an image; returns the
    /// attachment that messages can carry.
    pub async fn upload(self: &Arc<Self>, user: &User, data: Vec<u8>) -> Result<UploadRecord> {
        self.limits
            .uploads
            .take(&user.id)
            .map_err(|retry| throttled("too many uploads", retry))?;
        let quota = self.config.uploads.quota_bytes_per_user;
        if self.store.read()?.uploaded_bytes(user.id)? >= quota {
            return Err(AppError::Forbidden(format!(
                "upload quota of {} MiB reached",
                quota / (1024 * 1024)
            )));
        }
        let cfg = self.config.uploads.clone();
        let (data, plan) = tokio::task::spawn_blocking(move || {
            let plan = crate::uploads::plan(&data, &cfg);
            (data, plan)
        })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
        let plan = plan?;
        let processed = {
            // The budget first: the semaphore is fair, so a large image
            // waiting for room is not overtaken for ever by small ones.
            let budget = kib(plan.cost).min(kib(self.config.uploads.decode_budget_bytes));
            let _memory = self
                .decode_budget
                .acquire_many(budget)
                .await
                .map_err(|e| AppError::Internal(e.to_string()))?;
            let _slot = self
                .decode_slots
                .acquire()
                .await
                .map_err(|e| AppError::Internal(e.to_string()))?;
            let cfg = self.config.uploads.clone();
            tokio::task::spawn_blocking(move || plan.run(&data, &cfg))
                .await
                .map_err(|e| AppError::Internal(e.to_string()))??
        };
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| AppError::Internal(e.to_string()))?;
        let processed = Arc::new(processed);
        let mut rec = UploadRecord {
            id: raw.iter().map(|b| format!("{b:02x}")).collect(),
            uploader: user.id,
            file: String::new(),
            thumb: String::new(),
            mime: processed.mime.to_string(),
            thumb_mime: processed.thumb_mime.to_string(),
            width: processed.width,
            height: processed.height,
            size: processed.bytes.len() as u64,
            created_at: crate::domain::now_ms(),
            refs: 0,
        };
        // `put` skips a file already on disk, which may be one whose last
        // record is going away: the record is written only if, on the
        // writer (where files are removed), both files are still there;
        // otherwise they are written again.
        for _ in 0..3 {
            let (files, p) = (self.files.clone(), processed.clone());
            (rec.file, rec.thumb) = tokio::task::spawn_blocking(move || {
                Ok::<_, UploadError>((files.put(&p.bytes)?, files.put(&p.thumb)?))
            })
            .await
            .map_err(|e| AppError::Internal(e.to_string()))??;
            let (files, stored) = (self.files.clone(), rec.clone());
            let recorded = self
                .store
                .write(move |tx| {
                    if !(files.exists(&stored.file) && files.exists(&stored.thumb)) {
                        return Ok(false);
                    }
                    tx.insert_upload(&stored)?;
                    Ok(true)
                })
                .await?;
            if recorded {
                return Ok(rec);
            }
        }
        Err(AppError::Internal(
            "uploaded files were removed three times before their record".into(),
        ))
    }

    /// The record behind `/uploads/{id}`; ids are 32 hex digits.
    pub fn upload_record(&self, id: &str) -> Result<UploadRecord> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AppError::NotFound("upload"));
        }
        self.store
            .read()?
            .upload(id)?
            .ok_or(AppError::NotFound("upload"))
    }

    pub fn uploads(&self, of: Option<&str>) -> Result<Vec<UploadRecord>> {
        let user = of.map(|n| self.user_by_name(n)).transpose()?;
        Ok(self.store.read()?.uploads(user.map(|u| u.id))?)
    }

    /// Removes an upload (an operator's call): its files go when no other
    /// upload names them. Messages that carried it keep a dead link.
    pub async fn delete_upload(&self, id: &str) -> Result<UploadRecord> {
        let id = id.to_string();
        let (rec, orphaned) = self.store.write(move |tx| tx.delete_upload(&id)).await?;
        self.remove_files(orphaned).await?;
        Ok(rec)
    }

    /// Removes the stored files among `hashes` that no record names. The
    /// check and the removal run inside write operations, on the store's
    /// single writer, which is also where an upload checks that its files
    /// exist before its record is written: so a file never goes between
    /// an upload finding it on disk and its record being committed.
    /// Returns how many files went.
    async fn remove_files(&self, hashes: Vec<String>) -> Result<usize> {
        let mut removed = 0;
        // A few at a time: chat waits behind each of these operations.
        for some in hashes.chunks(64) {
            let (files, some) = (self.files.clone(), some.to_vec());
            removed += self
                .store
                .write(move |tx| {
                    let mut n = 0;
                    for hash in some {
                        if tx.file_unreferenced(&hash)? && files.remove(&hash) {
                            n += 1;
                        }
                    }
                    Ok(n)
                })
                .await?;
        }
        Ok(removed)
    }

    /// Removes uploads that no message carries and that are older than
    /// `grace_secs`, then files that no upload names (left by a crash
    /// between writing a file and recording it). Returns what went.
    pub async fn gc_uploads(&self, grace_secs: u64) -> Result<(Vec<UploadRecord>, usize)> {
        let cutoff = crate::domain::now_ms() - (grace_secs as i64).saturating_mul(1000);
        let stale: Vec<UploadRecord> = self
            .store
            .read()?
            .uploads(None)?
            .into_iter()
            .filter(|u| u.refs == 0 && u.created_at < cutoff)
            .collect();
        let mut removed = Vec::new();
        for rec in stale {
            // Attached since the scan: its count is no longer zero, keep it.
            let id = rec.id.clone();
            let gone = self
                .store
                .write(move |tx| match tx.upload(&id)? {
                    Some(r) if r.refs == 0 => tx.delete_upload(&id).map(Some),
                    _ => Ok(None),
                })
                .await?;
            if let Some((rec, orphaned)) = gone {
                self.remove_files(orphaned).await?;
                removed.push(rec);
            }
        }
        // Candidates only: `remove_files` decides again on the writer.
        let rx = self.store.read()?;
        let mut unnamed = Vec::new();
        for hash in self.files.list() {
            let old = self
                .files
                .path(&hash)
                .and_then(|p| std::fs::metadata(p).ok())
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() >= grace_secs);
            if old && !rx.file_in_use(&hash)? {
                unnamed.push(hash);
            }
        }
        drop(rx);
        let swept = self.remove_files(unnamed).await?;
        Ok((removed, swept))
    }
}

/// Bytes in whole KiB, the decode budget's unit (a tokio semaphore takes
/// at most `u32::MAX` permits at once).
fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

fn throttled(message: &str, retry_after: u64) -> AppError {
    AppError::Throttled {
        message: message.into(),
        retry_after,
    }
}

fn ban_check(rec: &UserRecord) -> Result<()> {
    let now = crate::domain::now_ms();
    if !rec.banned_at(now) {
        return Ok(());
    }
    let until = rec.banned_until.unwrap_or(i64::MAX);
    let mut msg = if until == i64::MAX {
        "this account is banned".to_string()
    } else {
        format!(
            "this account is banned for {} more seconds",
            (until - now) / 1000 + 1
        )
    };
    if let Some(r) = &rec.ban_reason {
        msg.push_str(": ");
        msg.push_str(r);
    }
    Err(AppError::Banned(msg))
}

fn rank(role: Role) -> u8 {
    match role {
        Role::User => 0,
        Role::Moderator => 1,
        Role::Admin => 2,
    }
}

/// The longest ban or mute with an end: anything longer is a mistake (or
/// a number chosen to overflow), and "until lifted" is said by giving none.
pub const MAX_DURATION_SECS: u64 = 100 * 366 * 24 * 3600;

/// A duration in seconds from now, or "until lifted".
fn until(duration_secs: Option<u64>) -> Result<i64> {
    let Some(secs) = duration_secs else {
        return Ok(i64::MAX);
    };
    if secs == 0 || secs > MAX_DURATION_SECS {
        return Err(AppError::BadRequest(format!(
            "duration_secs: must be 1 to {MAX_DURATION_SECS} (100 years); leave it out for no end"
        )));
    }
    // In range by the check above: at most about 3.2e12 ms from now.
    Ok(crate::domain::now_ms() + secs as i64 * 1000)
}

impl Actor {
    /// The name the audit log records.
    pub fn name(&self) -> String {
        match self {
            Actor::User(u) => u.username.clone(),
            Actor::Operator => "operator".into(),
        }
    }
}

impl App {
    // ----- moderation -----

    /// Staff may act on users below their own role; the operator on anyone.
    fn moderate(&self, actor: &Actor, username: &str) -> Result<UserRecord> {
        let target = self.user_by_name(username)?;
        match &self.current(actor)? {
            Actor::Operator => Ok(target),
            Actor::User(u) if u.role.is_staff() && rank(u.role) > rank(target.role) => Ok(target),
            Actor::User(u) if u.role.is_staff() => Err(AppError::Forbidden(format!(
                "a {} cannot moderate a {}",
                u.role, target.role
            ))),
            Actor::User(_) => Err(AppError::Forbidden(
                "only moderators and admins may moderate".into(),
            )),
        }
    }

    /// Writes an audit entry on its own (for actions whose effect is not a
    /// store write, like a kick or an announcement).
    pub async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        reason: Option<String>,
        details: serde_json::Value,
    ) -> Result<()> {
        let entry = AuditEntry {
            seq: 0,
            at: crate::domain::now_ms(),
            actor: actor.name(),
            action: action.to_string(),
            target: target.to_string(),
            reason,
            details,
        };
        self.store.write(move |tx| tx.audit(entry)).await?;
        Ok(())
    }

    /// Closes every connection of the user with `kicked` then 4003.
    fn boot(&self, user: Id, reason: &str) -> usize {
        let f = crate::protocol::frame("kicked", None, &serde_json::json!({ "reason": reason }));
        self.hub
            .close_user(user, crate::protocol::close::KICKED, reason, Some(f))
    }

    pub async fn kick(
        &self,
        actor: &Actor,
        username: &str,
        reason: Option<String>,
    ) -> Result<usize> {
        let reason = Reason::parse_opt(reason)?;
        let target = self.moderate(actor, username)?;
        self.audit(
            actor,
            "kick",
            &target.username,
            reason.clone(),
            serde_json::Value::Null,
        )
        .await?;
        let why = reason.unwrap_or_else(|| "kicked by a moderator".into());
        let n = self.boot(target.id, &why);
        self.metrics.event(
            "kick",
            format!(
                "{} kicked {} ({n} connections)",
                actor.name(),
                target.username
            ),
        );
        Ok(n)
    }

    pub async fn ban(
        &self,
        actor: &Actor,
        username: &str,
        reason: Option<String>,
        duration_secs: Option<u64>,
    ) -> Result<User> {
        let reason = Reason::parse_opt(reason)?;
        let target = self.moderate(actor, username)?;
        let until = until(duration_secs)?;
        let entry = AuditEntry {
            seq: 0,
            at: crate::domain::now_ms(),
            actor: actor.name(),
            action: "ban".into(),
            target: target.username.clone(),
            reason: reason.clone(),
            details: serde_json::json!({ "duration_secs": duration_secs }),
        };
        let id = target.id;
        let why = reason.clone();
        let rec = self
            .store
            .write(move |tx| {
                let mut rec = tx.user(id)?.ok_or(StoreError::NotFound("user"))?;
                rec.banned_until = Some(until);
                rec.ban_reason = why.clone();
                // Connections end with `kicked` and 4003 when the hub
                // applies this, in commit order.
                tx.revoke_tokens(&mut rec, Revocation::Banned { reason: why });
                tx.put_user(&rec)?;
                tx.audit(entry)?;
                Ok(rec)
            })
            .await?;
        self.metrics
            .event("ban", format!("{} banned {}", actor.name(), rec.username));
        Ok(rec.public())
    }

    pub async fn unban(&self, actor: &Actor, username: &str) -> Result<User> {
        let target = self.moderate(actor, username)?;
        let entry = AuditEntry {
            seq: 0,
            at: crate::domain::now_ms(),
            actor: actor.name(),
            action: "unban".into(),
            target: target.username.clone(),
            reason: None,
            details: serde_json::Value::Null,
        };
        // Lifting nothing is a mistake worth saying, and not an action for
        // the audit log.
        if !target.banned_at(crate::domain::now_ms()) {
            return Err(AppError::Absent(format!(
                "{} is not banned",
                target.username
            )));
        }
        let id = target.id;
        let rec = self
            .store
            .write(move |tx| {
                let mut rec = tx.user(id)?.ok_or(StoreError::NotFound("user"))?;
                // Lifted or run out since it was read.
                if !rec.banned_at(crate::domain::now_ms()) {
                    return Err(StoreError::NotFound("ban"));
                }
                rec.banned_until = None;
                rec.ban_reason = None;
                tx.put_user(&rec)?;
                tx.audit(entry)?;
                Ok(rec)
            })
            .await?;
        self.metrics
            .event("ban", format!("{} unbanned {}", actor.name(), rec.username));
        Ok(rec.public())
    }

    /// Mutes in one room (by name or id) or, with no room, everywhere.
    /// Returns the room and the mute as stored.
    pub async fn mute(
        &self,
        actor: &Actor,
        username: &str,
        room: Option<&str>,
        reason: Option<String>,
        duration_secs: Option<u64>,
    ) -> Result<(Option<Room>, crate::store::MuteRecord)> {
        let reason = Reason::parse_opt(reason)?;
        let target = self.moderate(actor, username)?;
        let room = room.map(|r| self.find_room(r)).transpose()?;
        let rec = crate::store::MuteRecord {
            until: until(duration_secs)?,
            reason: reason.clone(),
            by: actor.name(),
        };
        let entry = AuditEntry {
            seq: 0,
            at: crate::domain::now_ms(),
            actor: actor.name(),
            action: "mute".into(),
            target: target.username.clone(),
            reason,
            details: serde_json::json!({
                "room": room.as_ref().map(|r| r.name.clone()),
                "duration_secs": duration_secs,
            }),
        };
        let (uid, rid) = (target.id, room.as_ref().map(|r| r.id));
        let stored = rec.clone();
        self.store
            .write(move |tx| {
                tx.set_mute(uid, rid, &stored)?;
                tx.audit(entry)
            })
            .await?;
        let place = room
            .as_ref()
            .map(|r| format!(" in {}", r.name))
            .unwrap_or_default();
        self.metrics.event(
            "mute",
            format!("{} muted {}{place}", actor.name(), target.username),
        );
        Ok((room, rec))
    }

    /// Lifts the mute in one room, or the mute everywhere. Returns the room.
    pub async fn unmute(
        &self,
        actor: &Actor,
        username: &str,
        room: Option<&str>,
    ) -> Result<Option<Room>> {
        let target = self.moderate(actor, username)?;
        let room = room.map(|r| self.find_room(r)).transpose()?;
        let entry = AuditEntry {
            seq: 0,
            at: crate::domain::now_ms(),
            actor: actor.name(),
            action: "unmute".into(),
            target: target.username.clone(),
            reason: None,
            details: serde_json::json!({ "room": room.as_ref().map(|r| r.name.clone()) }),
        };
        let (uid, rid) = (target.id, room.as_ref().map(|r| r.id));
        // A mute that has run out is no longer in force: lifting it would
        // audit an action that changed nothing.
        let now = crate::domain::now_ms();
        let active = self
            .store
            .read()?
            .mutes_of(uid, now)?
            .iter()
            .any(|(r, _)| *r == rid);
        let not_muted = format!(
            "{} is not muted {}",
            target.username,
            room.as_ref()
                .map(|r| format!("in {}", r.name))
                .unwrap_or_else(|| "everywhere".into())
        );
        if !active {
            return Err(AppError::Absent(not_muted));
        }
        self.store
            .write(move |tx| {
                // Lifted since it was read.
                if !tx.clear_mute(uid, rid)? {
                    return Err(StoreError::NotFound("mute"));
                }
                tx.audit(entry)
            })
            .await?;
        self.metrics.event(
            "mute",
            format!("{} unmuted {}", actor.name(), target.username),
        );
        Ok(room)
    }

    /// Sends an `announcement` to everyone, or to one room's members.
    /// Returns the text as sent and the room.
    pub async fn announce(
        &self,
        actor: &Actor,
        text: &str,
        room: Option<&str>,
    ) -> Result<(String, Option<Room>)> {
        if !self.current(actor)?.is_staff() {
            return Err(AppError::Forbidden(
                "only moderators and admins may announce".into(),
            ));
        }
        let text =
            MessageText::parse(text, self.config.limits.max_message_chars, false)?.into_string();
        let room = room.map(|r| self.find_room(r)).transpose()?;
        self.audit(
            actor,
            "announce",
            room.as_ref().map(|r| r.name.as_str()).unwrap_or("everyone"),
            None,
            serde_json::json!({ "text": text }),
        )
        .await?;
        let f = crate::protocol::frame(
            "announcement",
            None,
            &serde_json::json!({ "text": text, "room": room.as_ref().map(|r| r.id) }),
        );
        match &room {
            Some(r) => self.hub.send_to_room(r.id, &f, None),
            None => self.hub.broadcast(&f),
        }
        self.metrics
            .event("announce", format!("{}: {text}", actor.name()));
        Ok((text, room))
    }

    /// A staff deletion of someone's message, with its audit entry.
    pub async fn moderate_delete(
        &self,
        actor: &Actor,
        id: Id,
        reason: Option<String>,
    ) -> Result<Message> {
        let reason = Reason::parse_opt(reason)?;
        let msg = self.delete_message(actor, id).await?;
        if actor.user().map(|u| u.id) != Some(msg.sender.id) {
            self.audit(
                actor,
                "delete_message",
                &msg.sender.username,
                reason,
                serde_json::json!({ "message_id": id, "room": msg.room, "seq": msg.seq }),
            )
            .await?;
            self.metrics.event(
                "delete",
                format!(
                    "{} deleted a message of {}",
                    actor.name(),
                    msg.sender.username
                ),
            );
        }
        Ok(msg)
    }

    pub fn audit_log(&self, since: Option<i64>, limit: Option<usize>) -> Result<Vec<AuditEntry>> {
        Ok(self
            .store
            .read()?
            .audit(since.unwrap_or(0), limit.unwrap_or(1000).min(10_000))?)
    }
}

impl App {
    // ----- operations -----

    /// Writes a consistent copy of the store to `dest` (and, when asked,
    /// the upload files that copy refers to into `uploads_dir`, in the same
    /// layout as the data directory's `uploads/`).
    pub async fn backup(
        self: &Arc<Self>,
        dest: std::path::PathBuf,
        uploads_dir: Option<std::path::PathBuf>,
    ) -> Result<serde_json::Value> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let (uploads, rows) = app.store.backup(&dest)?;
            let mut files = 0;
            if let Some(dir) = uploads_dir {
                let target = FileStore::new_at(&dir);
                for rec in &uploads {
                    for hash in [&rec.file, &rec.thumb] {
                        if let (Some(from), Some(to)) = (app.files.path(hash), target.path(hash)) {
                            if to.exists() {
                                continue;
                            }
                            if let Some(parent) = to.parent() {
                                std::fs::create_dir_all(parent).map_err(StoreError::from)?;
                            }
                            std::fs::copy(&from, &to).map_err(StoreError::from)?;
                            files += 1;
                        }
                    }
                }
            }
            Ok::<_, AppError>(serde_json::json!({
                "path": dest,
                "rows": rows,
                "uploads": uploads.len(),
                "files_copied": files,
            }))
        })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
    }

    /// Sets a room's own retention (by room name or id).
    pub async fn set_retention(&self, key: &str, r: crate::store::Retention) -> Result<Room> {
        let room = self.find_room(key)?;
        let id = room.id;
        self.store.write(move |tx| tx.set_retention(id, &r)).await?;
        Ok(room)
    }

    /// Applies retention as of `now_ms`: each room's own policy, else the
    /// server's, in transactions of at most a few hundred messages so chat
    /// never waits long behind it. Returns the messages removed.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let cfg = &self.config.store;
        let rooms = self.store.read()?.rooms()?;
        let mut removed = 0;
        for room in rooms {
            let (own, last) = {
                let rx = self.store.read()?;
                (rx.retention(room.id)?, rx.last_seq(room.id)?)
            };
            let age = own.max_age_secs.unwrap_or(cfg.retention_days * 86_400);
            let keep = own.keep_last.unwrap_or(cfg.retention_keep_last);
            let before = (age > 0).then(|| now_ms - (age as i64).saturating_mul(1000));
            let up_to = (keep > 0 && last > keep).then(|| last - keep);
            if before.is_none() && up_to.is_none() {
                continue;
            }
            loop {
                let id = room.id;
                let n = self
                    .store
                    .write(move |tx| tx.prune_room(id, before, up_to, 500))
                    .await?;
                removed += n;
                if n < 500 {
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "retention removed old messages");
        }
        // Tokens ended one at a time need remembering only until they
        // would have expired anyway.
        let now_secs = u64::try_from(now_ms / 1000).unwrap_or(0);
        self.store
            .write(move |tx| tx.prune_revoked_tokens(now_secs))
            .await?;
        Ok(removed)
    }

    /// A room's whole history with its members, for `confab export`.
    pub fn export(&self, key: &str) -> Result<serde_json::Value> {
        let room = self.find_room(key)?;
        let rx = self.store.read()?;
        let members = rx.members(room.id)?;
        let mut messages = Vec::new();
        let mut after = 0;
        loop {
            let page = Page {
                before: None,
                after: Some(after),
                limit: 1000,
            };
            let (batch, more) = rx.history(room.id, page)?;
            if let Some(last) = batch.last() {
                after = last.seq;
            }
            messages.extend(batch);
            if !more {
                break;
            }
        }
        Ok(serde_json::json!({ "room": room, "members": members, "messages": messages }))
    }
}

/// Parses a page request with the protocol's bounds.
pub fn page(before: Option<u64>, after: Option<u64>, limit: Option<u64>) -> Result<Page> {
    let limit = limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::BadRequest(
            "limit: must be between 1 and 200".into(),
        ));
    }
    Ok(Page {
        before,
        after,
        limit: limit as usize,
    })
}
