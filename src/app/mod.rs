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
    AuditEntry, Change, Command, Local, NewRoom, NewUser, Page, PairOp, Revocation, SendTo, Store,
    StoreError, UploadRecord, UserRecord, rank,
};
use crate::uploads::{FileStore, UploadError};

mod accounts;
mod attention;
pub mod bots;
pub mod external;
mod files;
pub mod invites;
mod messages;
mod moderation;
pub mod oidc;
mod operations;
pub mod previews;
mod profile;
pub mod push;
mod reactions;
mod rooms;
mod search;
mod social;
mod threads;
mod uploads;
pub mod webhooks;

pub use reactions::PinInfo;
pub use search::{MAX_SEARCH_LIMIT, SearchHit, SearchInput, SearchPage};
pub use threads::{FollowedThread, ThreadPage};
use uploads::kib;

pub use crate::domain::{BanInfo, MuteInfo};

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
    /// The ban goes with the refusal so a client can say until when and why.
    #[error("{message}")]
    Banned { message: String, ban: BanInfo },
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
    /// The uploader's storage quota would be passed: `forbidden`, with
    /// `reason: "quota_exceeded"` beside the code.
    #[error("{0}")]
    QuotaExceeded(String),
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
            AppError::Forbidden(_) | AppError::Banned { .. } => ErrorCode::Forbidden,
            AppError::NotFound(_) | AppError::Absent(_) => ErrorCode::NotFound,
            AppError::Conflict(_) => ErrorCode::Conflict,
            AppError::RateLimited(_) | AppError::Throttled { .. } => ErrorCode::RateLimited,
            AppError::TooLarge(_) => ErrorCode::TooLarge,
            AppError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            AppError::Timeout(_) => ErrorCode::Timeout,
            AppError::QuotaExceeded(_) => ErrorCode::Forbidden,
            AppError::Auth(AuthError::BadToken | AuthError::BadCredentials) => {
                ErrorCode::Unauthorized
            }
            AppError::Store(StoreError::NotFound(_)) => ErrorCode::NotFound,
            AppError::Store(StoreError::Conflict(_)) => ErrorCode::Conflict,
            AppError::Store(StoreError::Forbidden(_)) => ErrorCode::Forbidden,
            AppError::Store(StoreError::Invalid(_)) => ErrorCode::BadRequest,
            AppError::Store(StoreError::Unavailable(_) | StoreError::WriterGone) => {
                ErrorCode::Unavailable
            }
            AppError::Store(StoreError::Limit(_)) => ErrorCode::LimitReached,
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
    /// The message replied to, and whether the reply also shows in the room.
    pub reply_to: Option<Id>,
    pub also_in_room: bool,
    /// `false`: no link previews for this message.
    pub previews: bool,
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
    /// Uploads being processed or waiting for the budget, each holding its
    /// body in memory: bounded, so waiting cannot pile up bodies.
    decode_queue: tokio::sync::Semaphore,
    pub limits: crate::limits::Limiters,
    /// Cluster mode: what this node tells the others besides the log.
    peers: Option<tokio::sync::mpsc::UnboundedSender<PeerEvent>>,
    /// Push notifications: the VAPID key, who is active, delivery.
    pub notifier: push::Notifier,
    /// The message index, once `start_search` opened it (servers only: the
    /// offline CLI has no use for it).
    search: std::sync::OnceLock<crate::search::Search>,
    /// Wakes the indexer after commits that change messages.
    search_poke: crate::search::Poke,
    /// Uploads being received (`uploads.max_concurrent_files`).
    file_slots: tokio::sync::Semaphore,
    /// Link previews: the queue of messages waiting for theirs.
    pub previews: previews::Previews,
    /// Outgoing webhooks: the delivery task's state.
    pub webhooks: webhooks::Deliverer,
    /// Tokens of the operator's app and sign-in providers.
    identities: external::Identities,
    /// OpenID Connect providers, as discovered.
    providers: oidc::Providers,
}

/// What a node of a cluster tells the others directly, not through the
/// log: short-lived things that are not worth a commit.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub enum PeerEvent {
    Typing { room: Id, user: User, on: bool },
}

impl App {
    /// Opens the store in the data directory and wires its changes to a new
    /// hub.
    pub fn open(config: Config) -> Result<Arc<App>> {
        Self::build(config, None)
    }

    /// A node of a cluster: the store applies `engine`'s log, tokens are
    /// signed with the secret every node shares, and what this node says
    /// to the others comes out of the returned receiver.
    pub async fn open_in_cluster(
        config: Config,
        engine: crate::store::engine::Engine,
    ) -> Result<(Arc<App>, tokio::sync::mpsc::UnboundedReceiver<PeerEvent>)> {
        // Drawn before asking, so that a failed draw is this node's error
        // and never a value every node would then share.
        let fresh = crate::store::new_secret()?;
        let secret = engine
            .shared_value("jwt_secret", || fresh)
            .await
            .map_err(|e| AppError::Store(StoreError::Unavailable(e.to_string())))?;
        if secret.len() < 32 {
            return Err(AppError::Internal(
                "the cluster's token secret is missing or too short".into(),
            ));
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let app = Self::build(config, Some((engine, secret, tx)))?;
        Ok((app, rx))
    }

    #[allow(clippy::type_complexity)]
    fn build(
        config: Config,
        cluster: Option<(
            crate::store::engine::Engine,
            Vec<u8>,
            tokio::sync::mpsc::UnboundedSender<PeerEvent>,
        )>,
    ) -> Result<Arc<App>> {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(
            config.limits.outbound_queue,
            Duration::from_millis(config.ws.typing_timeout_ms),
            metrics.clone(),
        );
        let listener_hub = hub.clone();
        let push_wake = Arc::new(tokio::sync::Notify::new());
        let listener_wake = push_wake.clone();
        let hooks_wake = Arc::new(tokio::sync::Notify::new());
        let listener_hooks = hooks_wake.clone();
        let search_poke = crate::search::Poke::default();
        let poke = search_poke.clone();
        let observed = metrics.clone();
        let files = FileStore::new(&config.server.data_dir);
        let present = files.clone();
        // In a cluster a file may live on another node: only the shared
        // object store could answer, and not while a command is applied.
        let local = Local {
            file_present: cluster
                .is_none()
                .then(|| Arc::new(move |hash: &str| present.exists(hash)) as _),
        };
        let mut store = Store::open(
            &config.db_path(),
            config.store.cache_mib,
            config.store.max_batch,
            Arc::new(move |changes: &[Change]| {
                listener_hub.apply(changes);
                if changes.iter().any(|c| matches!(c, Change::PushQueued)) {
                    listener_wake.notify_one();
                }
                if changes.iter().any(|c| matches!(c, Change::WebhookQueued)) {
                    listener_hooks.notify_one();
                }
                if changes.iter().any(changes_messages) {
                    poke.poke();
                }
            }),
            Some(Arc::new(move |size, took| {
                observed.commit_batch.observe(size as f64);
                observed.commit_seconds.observe(took.as_secs_f64());
            })),
            local,
        )?;
        let (secret, peers) = match cluster {
            Some((engine, secret, peers)) => {
                store.join(engine)?;
                (secret, Some(peers))
            }
            None => (store.jwt_secret()?, None),
        };
        let auth = Auth::new(&config.auth, &secret)?;
        let limits = crate::limits::Limiters::new(&config);
        let notifier = push::Notifier::new(&config, push_wake);
        let config_files = config.uploads.max_concurrent_files.max(1);
        let previews_queue = previews::Previews::new(&config);
        let webhooks = webhooks::Deliverer::new(&config, hooks_wake);
        let identities = external::Identities::new(&config);
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
            decode_queue: tokio::sync::Semaphore::new(uploads::MAX_QUEUED_DECODES),
            limits,
            peers,
            notifier,
            webhooks,
            search: std::sync::OnceLock::new(),
            search_poke,
            file_slots: tokio::sync::Semaphore::new(config_files),
            previews: previews_queue,
            identities,
            providers: oidc::Providers::default(),
        }))
    }

    /// Opens the search index and starts its indexer, which catches up
    /// with the store in the background.
    pub fn start_search(&self) -> Result<()> {
        if self.search.get().is_some() {
            return Ok(());
        }
        let cfg = &self.config.search;
        let search = crate::search::Search::open(
            &crate::search::dir_in(&self.config.server.data_dir),
            self.store.reader(),
            crate::search::Settings {
                commit_interval: Duration::from_millis(cfg.commit_interval_ms),
                writer_bytes: cfg.writer_mib.saturating_mul(1 << 20),
            },
            self.search_poke.clone(),
        )
        .map_err(|e| AppError::Internal(e.to_string()))?;
        let _ = self.search.set(search);
        Ok(())
    }

    /// The search index, if this process runs one.
    pub fn search_index(&self) -> Option<&crate::search::Search> {
        self.search.get()
    }
}

/// Whether a change may change what search finds (the indexer is woken).
fn changes_messages(c: &Change) -> bool {
    matches!(
        c,
        Change::MessageCreated(_)
            | Change::MessageUpdated(_)
            | Change::MessageDeleted { .. }
            | Change::RoomDeleted { .. }
    )
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
    Err(AppError::Banned {
        message: msg,
        ban: BanInfo::new(until, rec.ban_reason.clone()),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A write the cluster could not commit is the client's to retry: it
    /// says so with its own code and status, and with the store's reason,
    /// not as an internal fault.
    #[test]
    fn an_uncommitted_write_is_unavailable_and_says_why() {
        let why = "the cluster cannot commit writes now (no quorum); nothing was stored";
        let e = AppError::Store(StoreError::Unavailable(why.into()));
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert_eq!(e.code().as_str(), "unavailable");
        assert_eq!(e.code().status(), 503);
        assert_eq!(e.client_message(), why);
        // A writer that is gone stored nothing either.
        let e = AppError::Store(StoreError::WriterGone);
        assert_eq!(e.code(), ErrorCode::Unavailable);
    }
}
