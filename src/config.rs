//! Typed settings: defaults, then `config.toml`, then `CONFAB_*` environment
//! variables, then command-line flags. Every key has a default, so `confab
//! serve` runs with no file at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::DmPolicy;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: String, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    #[default]
    Open,
    Closed,
    /// Registering needs a valid invite, which it also accepts.
    Invite,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub ws: WsConfig,
    pub store: StoreConfig,
    pub uploads: UploadsConfig,
    pub cluster: ClusterConfig,
    pub push: PushConfig,
    pub outbound: OutboundConfig,
    pub search: SearchConfig,
    pub socketio: SocketIoConfig,
    pub previews: PreviewsConfig,
    pub webhooks: WebhooksConfig,
}

/// Link previews (docs/protocol.md, "Link previews and files").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreviewsConfig {
    /// Off: no page is fetched and messages carry no previews.
    pub enabled: bool,
    /// Links of one message that get a preview, the first ones in the text.
    pub max_per_message: usize,
    /// How long a page's preview (or its failure) is reused before the
    /// page is fetched again.
    pub cache_secs: u64,
    /// Bytes of a page read at most; a larger page gets no preview.
    pub max_html_bytes: usize,
    /// Bytes of a preview image read at most; a larger image is left out.
    pub max_image_bytes: usize,
    /// Pages fetched at once, all messages together.
    pub max_concurrent: usize,
    /// Redirects followed per fetch, each hop vetted like the first.
    pub max_redirects: usize,
    /// Messages waiting for previews; more get none.
    pub queue: usize,
}

impl Default for PreviewsConfig {
    fn default() -> Self {
        PreviewsConfig {
            enabled: true,
            max_per_message: 3,
            cache_secs: 24 * 3600,
            max_html_bytes: 512 * 1024,
            max_image_bytes: 5 * 1024 * 1024,
            max_concurrent: 4,
            max_redirects: 3,
            queue: 256,
        }
    }
}

/// Outgoing webhooks (docs/protocol.md, "Webhooks").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Off: events are still written to the outbox of any endpoint, but
    /// this node sends nothing.
    pub enabled: bool,
    /// One delivery's whole time (connect, send, answer).
    pub timeout_ms: u64,
    /// Deliveries in flight at once on one node.
    pub max_concurrent: usize,
    /// The first retry's delay; each further one doubles it, up to
    /// `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How long an event is retried before its endpoint is disabled.
    pub retry_window_secs: u64,
    /// How long the secret before a rotation still signs deliveries.
    pub rotation_overlap_secs: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            enabled: true,
            timeout_ms: 10_000,
            max_concurrent: 8,
            retry_base_ms: 5_000,
            retry_max_ms: 3_600_000,
            retry_window_secs: 86_400,
            rotation_overlap_secs: 86_400,
        }
    }
}

/// Web Push notifications (docs/protocol.md, "Push notifications").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Off: no subscriptions are taken and nothing is sent.
    pub enabled: bool,
    /// What a push carries: "preview" (room, sender and the start of the
    /// text) or "none" (no content at all: the client shows a generic
    /// notice).
    pub content: String,
    /// Characters of the message text a preview carries at most.
    pub preview_chars: usize,
    /// The VAPID contact (`sub` claim): a `mailto:` or `https:` URL.
    pub contact: String,
    /// Messages in one room within this window after the first become one
    /// push with a count.
    pub coalesce_ms: u64,
    /// How long a push service keeps an undelivered push (`TTL` header).
    pub ttl_secs: u64,
    /// Subscriptions one user may have (one per browser).
    pub max_subscriptions: usize,
    /// Pushes one user gets per minute at most; the rest wait.
    pub max_per_minute: u32,
    /// Delivery attempts of one push before it is given up.
    pub max_attempts: u32,
    /// The first retry's delay; each further one doubles it.
    pub retry_base_ms: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: true,
            content: "preview".into(),
            preview_chars: 120,
            contact: "mailto:admin@localhost".into(),
            coalesce_ms: 3000,
            ttl_secs: 3600,
            max_subscriptions: 10,
            max_per_minute: 20,
            max_attempts: 6,
            retry_base_ms: 2000,
        }
    }
}

/// Requests the server makes to URLs clients gave it (outbound.rs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Addresses or CIDR ranges exempt from the public-address rule
    /// (e.g. "127.0.0.1" for a local test push service). Empty in production.
    pub allow: Vec<String>,
    /// Plain http to an `allow`ed address (a test push service without
    /// TLS). Never to any other address.
    pub allow_http: bool,
    pub connect_timeout_ms: u64,
    /// The whole request: resolution, connect, TLS, send and answer.
    pub timeout_ms: u64,
    /// Bytes of a response body read at most; the rest is dropped.
    pub max_response_bytes: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            allow: Vec::new(),
            allow_http: false,
            connect_timeout_ms: 3000,
            timeout_ms: 10_000,
            max_response_bytes: 8192,
        }
    }
}

/// The Socket.IO endpoint (`/socket.io/`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    /// Connection state recovery, as Socket.IO's own server offers it with
    /// `connectionStateRecovery`: the CONNECT answer carries a `pid` and
    /// each event a second argument, the offset a reconnecting client
    /// sends back. Off, as there, so every event has its `data` as
    /// its one argument.
    pub recovery: bool,
}

/// The message search index (`<data_dir>/search/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// New messages become findable within about this long: the index is
    /// committed at most this often.
    pub commit_interval_ms: u64,
    /// The indexer's buffer in MiB (at least 15).
    pub writer_mib: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            commit_interval_ms: 5000,
            writer_mib: 32,
        }
    }
}

/// Cluster mode: several nodes on one NATS JetStream cluster. No
/// `nats_urls`: a single node, with nothing to install.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Client URLs of the NATS servers (some or all of them).
    pub nats_urls: Vec<String>,
    /// This node's name in the cluster; empty: the host name.
    pub node_name: String,
    /// Copies the engine keeps of the log and the uploads (capped at the
    /// engine's size). Applies when the cluster's streams are first made.
    pub replicas: usize,
    /// Prefix of the engine's streams, buckets and subjects, so that two
    /// confab clusters can share one NATS cluster.
    pub namespace: String,
    /// How long a write waits for the engine to commit it before it is
    /// answered `unavailable` (a leader election takes a few seconds).
    pub write_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats_urls: Vec::new(),
            node_name: String::new(),
            replicas: 3,
            namespace: "confab".into(),
            write_timeout_ms: 10_000,
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.nats_urls.is_empty()
    }

    /// This node's name: the configured one, else the host name.
    pub fn node(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "confab".into())
    }

    pub fn engine(&self) -> crate::store::engine::EngineConfig {
        let mut c = crate::store::engine::EngineConfig::new(self.nats_urls.clone(), self.node());
        c.replicas = self.replicas.max(1);
        c.namespace = self.namespace.clone();
        c.append_timeout = std::time::Duration::from_millis(self.write_timeout_ms.max(100));
        c
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: String,
    pub data_dir: PathBuf,
    pub log_level: String,
    /// Origins (scheme://host[:port]) allowed to open WebSockets and call the
    /// REST API from a browser, besides the server's own.
    pub cors_origins: Vec<String>,
    /// Bearer token for `/metrics`. Empty: only loopback callers may read it.
    pub metrics_token: String,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// PEM files for HTTPS/WSS on the same port; both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Who may send a direct message to a user who has not chosen for
    /// themselves (`PATCH /api/me`).
    pub dm_policy: DmPolicy,
    /// Serve the built-in web client at `/`; off for API-only servers.
    pub web_client: bool,
    /// Time a connection has to send a whole request head (after accept,
    /// including a TLS handshake, and between requests on a keep-alive
    /// connection).
    pub header_read_timeout_ms: u64,
    /// An HTTP connection on which no byte moves either way for this long
    /// is closed (WebSockets have their heartbeat instead).
    pub idle_timeout_ms: u64,
    /// A request body must bring data at least this often...
    pub body_timeout_ms: u64,
    /// ...and be complete this long after it starts.
    pub body_deadline_ms: u64,
    /// Hosts (names or addresses, optionally `host:port`) that fetches of
    /// URLs someone gave (push endpoints, link previews, webhooks, JWKS,
    /// OpenID providers) may reach although they are not public or not
    /// https: a private deployment's own services, or a test's local site.
    pub fetch_allowed_hosts: Vec<String>,
    /// Who may register over HTTP: "open", "closed" or "invite" (the
    /// contract's name for `auth.registration`, which it overrides when
    /// not "open"; the two always read the same after loading).
    pub registration: Registration,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub registration: Registration,
    /// Empty means: generate one on first start and keep it in the store.
    pub jwt_secret: String,
    pub token_ttl_secs: u64,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Off: no password login or registration (accounts come from
    /// `[auth.external]` tokens or OpenID Connect only).
    pub local_passwords: bool,
    /// Tokens signed by the operator's own app (docs/integrations.md).
    pub external: ExternalAuthConfig,
    /// OpenID Connect providers offered on the web client's sign-in page.
    pub oidc: Vec<OidcProviderConfig>,
}

/// `[auth.external]`: JWTs from the operator's app. On when `issuer` is set.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalAuthConfig {
    /// The shared HS256 secret (the app's `JWT_SECRET`), or empty.
    pub hs256_secret: String,
    /// Where the app publishes its public keys (RS256, ES256, EdDSA), or empty.
    pub jwks_url: String,
    /// Required `iss` of every token.
    pub issuer: String,
    /// Required `aud` of every token.
    pub audience: String,
    /// The claim whose value becomes the username when the account is made.
    pub username_claim: String,
    /// A claim whose value `moderator` (or a list holding it) makes the
    /// account a moderator; empty: tokens never set roles.
    pub role_claim: String,
    /// The key set is fetched again this often.
    pub jwks_refresh_secs: u64,
    /// A token naming an unknown `kid` fetches the keys again, at most
    /// this often.
    pub jwks_min_interval_secs: u64,
}

impl Default for ExternalAuthConfig {
    fn default() -> Self {
        ExternalAuthConfig {
            hs256_secret: String::new(),
            jwks_url: String::new(),
            issuer: String::new(),
            audience: String::new(),
            username_claim: "sub".into(),
            role_claim: String::new(),
            jwks_refresh_secs: 3600,
            jwks_min_interval_secs: 30,
        }
    }
}

impl ExternalAuthConfig {
    pub fn enabled(&self) -> bool {
        !self.issuer.is_empty()
    }
}

impl std::fmt::Debug for ExternalAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalAuthConfig")
            .field(
                "hs256_secret",
                &if self.hs256_secret.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("username_claim", &self.username_claim)
            .field("role_claim", &self.role_claim)
            .finish()
    }
}

/// `[[auth.oidc]]`: one OpenID Connect provider.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// In URLs: `/api/auth/oidc/{name}/start`.
    pub name: String,
    /// The button's text.
    pub label: String,
    /// The provider's issuer; `{issuer}/.well-known/openid-configuration`
    /// is read for the rest.
    pub issuer: String,
    pub client_id: String,
    /// Empty: a public client (PKCE alone).
    pub client_secret: String,
    pub scopes: Vec<String>,
    /// The ID token claim whose value becomes the username when the
    /// account is made (falls back to `sub`).
    pub username_claim: String,
    /// The redirect URI registered at the provider; empty: this server's
    /// own `/api/auth/oidc/{name}/callback` as the request reached it.
    pub redirect_url: String,
}

impl Default for OidcProviderConfig {
    fn default() -> Self {
        OidcProviderConfig {
            name: String::new(),
            label: String::new(),
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            scopes: vec!["openid".into(), "profile".into()],
            username_claim: "preferred_username".into(),
            redirect_url: String::new(),
        }
    }
}

impl std::fmt::Debug for OidcProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProviderConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &if self.client_secret.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .finish()
    }
}

// The secret must never reach a log line, even through `{:?}` of the config.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("registration", &self.registration)
            .field(
                "jwt_secret",
                &if self.jwt_secret.is_empty() {
                    "<generated>"
                } else {
                    "<redacted>"
                },
            )
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("argon2_memory_kib", &self.argon2_memory_kib)
            .field("argon2_iterations", &self.argon2_iterations)
            .field("argon2_parallelism", &self.argon2_parallelism)
            .field("local_passwords", &self.local_passwords)
            .field("external", &self.external)
            .field("oidc", &self.oidc)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_frame_bytes: usize,
    pub max_body_bytes: usize,
    pub max_message_chars: usize,
    pub max_topic_chars: usize,
    pub outbound_queue: usize,
    pub frames_per_sec: u32,
    pub frames_burst: u32,
    pub messages_per_sec: u32,
    pub messages_burst: u32,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_connections_per_user: usize,
    pub auth_attempts_per_ip_per_min: u32,
    pub login_failures_per_account: u32,
    pub room_creations_per_hour: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    pub auth_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub typing_timeout_ms: u64,
    pub close_grace_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub max_batch: usize,
    pub cache_mib: usize,
    /// Messages older than this many days are removed; 0 keeps them all.
    pub retention_days: u64,
    /// Only the newest this many messages of each room are kept; 0: no cap.
    pub retention_keep_last: u64,
    pub retention_interval_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            log_level: "info".into(),
            cors_origins: Vec::new(),
            metrics_token: String::new(),
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
            dm_policy: DmPolicy::Anyone,
            web_client: true,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_timeout_ms: 30_000,
            body_deadline_ms: 120_000,
            fetch_allowed_hosts: Vec::new(),
            registration: Registration::Open,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        // OWASP's recommended argon2id minimum: 19 MiB, 2 iterations, 1 lane.
        AuthConfig {
            registration: Registration::Open,
            jwt_secret: String::new(),
            token_ttl_secs: 7 * 24 * 3600,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            local_passwords: true,
            external: ExternalAuthConfig::default(),
            oidc: Vec::new(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024,
            max_message_chars: 4000,
            max_topic_chars: 256,
            outbound_queue: 512,
            frames_per_sec: 50,
            frames_burst: 200,
            messages_per_sec: 5,
            messages_burst: 30,
            max_connections: 19_000,
            max_connections_per_ip: 256,
            max_connections_per_user: 32,
            auth_attempts_per_ip_per_min: 30,
            login_failures_per_account: 10,
            room_creations_per_hour: 20,
        }
    }
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            auth_timeout_ms: 10_000,
            heartbeat_interval_ms: 25_000,
            heartbeat_timeout_ms: 20_000,
            typing_timeout_ms: 6_000,
            close_grace_ms: 5_000,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_batch: 1024,
            cache_mib: 64,
            retention_days: 0,
            retention_keep_last: 0,
            retention_interval_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadsConfig {
    pub max_bytes: usize,
    pub max_width: u32,
    pub max_height: u32,
    pub max_pixels: u64,
    pub thumb_size: u32,
    pub max_concurrent: usize,
    /// The most memory one image may take to process (decoded bitmap and
    /// the copies made from it, estimated from its header).
    pub max_decode_bytes: u64,
    /// The memory all images being processed may take together.
    pub decode_budget_bytes: u64,
    /// The most an animation's frames may decode to together (RGBA).
    pub max_animation_bytes: u64,
    pub quota_bytes_per_user: u64,
    pub per_minute: u32,
    pub gc_grace_secs: u64,
    pub max_per_message: usize,
    /// Largest file that is not a re-encoded image (25 MiB).
    pub max_file_bytes: usize,
    /// Types accepted besides images, each a MIME type (`application/pdf`),
    /// a family (`audio/*`) or an extension (`.zip`). Empty: every type.
    pub allowed_types: Vec<String>,
    /// Files (not images) received at once, each held in memory.
    pub max_concurrent_files: usize,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            max_bytes: 5 * 1024 * 1024,
            max_width: 8192,
            max_height: 8192,
            max_pixels: 40_000_000,
            thumb_size: 320,
            // Sized for a 512 MB machine (config.toml.example has the sums):
            // at most 160 MiB for decoding, shared by up to 4 images, and
            // one image at most 96 MiB (a 12-megapixel photo, or 8 million
            // RGBA pixels of PNG), so two of the largest never run together.
            max_concurrent: 4,
            max_decode_bytes: 96 * 1024 * 1024,
            decode_budget_bytes: 160 * 1024 * 1024,
            max_animation_bytes: 256 * 1024 * 1024,
            quota_bytes_per_user: 200 * 1024 * 1024,
            per_minute: 30,
            gc_grace_secs: 24 * 3600,
            max_per_message: 10,
            max_file_bytes: 25 * 1024 * 1024,
            allowed_types: Vec::new(),
            max_concurrent_files: 4,
        }
    }
}

/// Overrides given on the command line; they win over file and environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub bind: Option<String>,
}

impl Config {
    /// Loads the file (if any), then `CONFAB_SECTION_KEY` variables from the
    /// process environment, then the overrides.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_with_env(path, overrides, std::env::vars())
    }

    pub fn load_with_env(
        path: Option<&Path>,
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut tree =
            toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Invalid {
                key: "(defaults)".into(),
                message: e.to_string(),
            })?;
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let file: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?;
            merge(&mut tree, file, "").map_err(|key| ConfigError::Invalid {
                message: format!("unknown key in {}", path.display()),
                key,
            })?;
        }
        apply_env(&mut tree, env)?;
        let mut config: Config =
            toml::Value::Table(tree)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.map(Path::to_path_buf).unwrap_or_default(),
                    message: e.to_string(),
                })?;
        if let Some(dir) = &overrides.data_dir {
            config.server.data_dir = dir.clone();
        }
        if let Some(bind) = &overrides.bind {
            config.server.bind = bind.clone();
        }
        if config.server.registration != Registration::Open {
            config.auth.registration = config.server.registration.clone();
        }
        config.server.registration = config.auth.registration.clone();
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        };
        self.bind_addr()?;
        if !matches!(self.push.content.as_str(), "preview" | "none") {
            return Err(invalid("push.content", "must be \"preview\" or \"none\""));
        }
        if !(self.push.contact.starts_with("mailto:") || self.push.contact.starts_with("https:")) {
            return Err(invalid("push.contact", "must be a mailto: or https: URL"));
        }
        for a in &self.outbound.allow {
            crate::outbound::Cidr::parse(a).map_err(|m| invalid("outbound.allow", &m))?;
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(invalid(
                "server.tls_cert",
                "tls_cert and tls_key go together: set both or neither",
            ));
        }
        for (key, ms) in [
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            ("server.idle_timeout_ms", self.server.idle_timeout_ms),
            ("server.body_timeout_ms", self.server.body_timeout_ms),
            ("server.body_deadline_ms", self.server.body_deadline_ms),
        ] {
            if ms == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        if self.limits.max_frame_bytes < 1024 {
            return Err(invalid("limits.max_frame_bytes", "must be at least 1024"));
        }
        if self.limits.max_message_chars == 0 {
            return Err(invalid("limits.max_message_chars", "must be positive"));
        }
        if self.limits.outbound_queue < 8 {
            return Err(invalid("limits.outbound_queue", "must be at least 8"));
        }
        if self.ws.heartbeat_interval_ms < 10 {
            return Err(invalid("ws.heartbeat_interval_ms", "must be at least 10"));
        }
        if self.auth.token_ttl_secs == 0 {
            return Err(invalid("auth.token_ttl_secs", "must be positive"));
        }
        if !self.auth.jwt_secret.is_empty() && self.auth.jwt_secret.len() < 32 {
            return Err(invalid(
                "auth.jwt_secret",
                "must be at least 32 characters (or empty to generate one)",
            ));
        }
        argon2::Params::new(
            self.auth.argon2_memory_kib,
            self.auth.argon2_iterations,
            self.auth.argon2_parallelism,
            None,
        )
        .map_err(|e| invalid("auth.argon2_*", &e.to_string()))?;
        if self.previews.max_concurrent == 0 {
            return Err(invalid("previews.max_concurrent", "must be positive"));
        }
        if self.uploads.max_concurrent_files == 0 {
            return Err(invalid("uploads.max_concurrent_files", "must be positive"));
        }
        if self.uploads.max_concurrent == 0 {
            return Err(invalid("uploads.max_concurrent", "must be positive"));
        }
        if self.uploads.max_decode_bytes > self.uploads.decode_budget_bytes {
            return Err(invalid(
                "uploads.max_decode_bytes",
                "must not exceed uploads.decode_budget_bytes",
            ));
        }
        if self.uploads.decode_budget_bytes / 1024 > u64::from(u32::MAX) {
            return Err(invalid(
                "uploads.decode_budget_bytes",
                "must be below 4 TiB",
            ));
        }
        if self.uploads.thumb_size < 16 {
            return Err(invalid("uploads.thumb_size", "must be at least 16"));
        }
        if self.webhooks.max_concurrent == 0 {
            return Err(invalid("webhooks.max_concurrent", "must be positive"));
        }
        if self.webhooks.timeout_ms == 0 || self.webhooks.retry_base_ms == 0 {
            return Err(invalid(
                "webhooks.timeout_ms",
                "timeout_ms and retry_base_ms must be positive",
            ));
        }
        if self.store.max_batch == 0 {
            return Err(invalid("store.max_batch", "must be positive"));
        }
        for host in &self.server.fetch_allowed_hosts {
            if host.trim().is_empty() || host.contains('/') || host.contains('@') {
                return Err(invalid(
                    "server.fetch_allowed_hosts",
                    &format!("{host:?} must be a host name or address, optionally with :port"),
                ));
            }
        }
        self.validate_external_auth()?;
        for origin in &self.server.cors_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(invalid(
                    "server.cors_origins",
                    &format!("{origin:?} must start with http:// or https://"),
                ));
            }
        }
        Ok(())
    }

    fn validate_external_auth(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        };
        let x = &self.auth.external;
        if x.enabled() {
            if x.hs256_secret.is_empty() == x.jwks_url.is_empty() {
                return Err(invalid(
                    "auth.external.hs256_secret",
                    "set exactly one of hs256_secret and jwks_url",
                ));
            }
            if !x.hs256_secret.is_empty() && x.hs256_secret.len() < 16 {
                return Err(invalid(
                    "auth.external.hs256_secret",
                    "must be at least 16 characters",
                ));
            }
            if x.audience.is_empty() {
                return Err(invalid("auth.external.audience", "is required"));
            }
            if x.username_claim.is_empty() {
                return Err(invalid("auth.external.username_claim", "must not be empty"));
            }
        } else if !x.hs256_secret.is_empty() || !x.jwks_url.is_empty() {
            return Err(invalid("auth.external.issuer", "is required"));
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.auth.oidc {
            let ok_name = !p.name.is_empty()
                && p.name.len() <= 32
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
            if !ok_name {
                return Err(invalid(
                    "auth.oidc.name",
                    "must be 1 to 32 characters of a-z, 0-9, '_' and '-'",
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(invalid(
                    "auth.oidc.name",
                    &format!("{:?} is given twice", p.name),
                ));
            }
            if p.issuer.is_empty() || p.client_id.is_empty() {
                return Err(invalid(
                    "auth.oidc.issuer",
                    &format!("provider {:?}: issuer and client_id are required", p.name),
                ));
            }
            if !p.scopes.iter().any(|s| s == "openid") {
                return Err(invalid("auth.oidc.scopes", "must include \"openid\""));
            }
        }
        Ok(())
    }

    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .bind
            .parse()
            .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                key: "server.bind".into(),
                message: format!("{:?}: {e}", self.server.bind),
            })
    }

    pub fn db_path(&self) -> PathBuf {
        self.server.data_dir.join("confab.redb")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.server.data_dir.join("confab.sock")
    }
}

/// Copies `from` into `into`; a key that the defaults do not have is an
/// error (returned as its dotted path), so typos are caught.
fn merge(into: &mut toml::Table, from: toml::Table, prefix: &str) -> Result<(), String> {
    for (key, value) in from {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(dst)), toml::Value::Table(src)) => merge(dst, src, &path)?,
            (Some(slot), value) => *slot = value,
            (None, _) => return Err(path),
        }
    }
    Ok(())
}

/// `CONFAB_SERVER_BIND=…` sets `server.bind`. The value is read as TOML
/// (numbers, booleans, arrays) and falls back to a plain string.
fn apply_env(
    tree: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("CONFAB_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let mut target = None;
        for (section, value) in tree.iter_mut() {
            let toml::Value::Table(table) = value else {
                continue;
            };
            let Some(key) = rest
                .strip_prefix(section.as_str())
                .and_then(|k| k.strip_prefix('_'))
            else {
                continue;
            };
            if table.contains_key(key) {
                target = Some((table, key.to_string()));
                break;
            }
            // One level deeper: CONFAB_AUTH_EXTERNAL_ISSUER sets
            // auth.external.issuer.
            let nested = table.iter_mut().find_map(|(sub, v)| {
                let toml::Value::Table(inner) = v else {
                    return None;
                };
                let k = key.strip_prefix(sub.as_str())?.strip_prefix('_')?;
                inner.contains_key(k).then(|| (inner, k.to_string()))
            });
            if let Some(found) = nested {
                target = Some(found);
                break;
            }
        }
        let Some((table, key)) = target else {
            // Variables the server does not know (CONFAB_URL for scripts, …)
            // are left alone rather than refused.
            continue;
        };
        let value = parse_env_value(&raw, table.get(&key));
        table.insert(key, value);
    }
    Ok(())
}

fn parse_env_value(raw: &str, current: Option<&toml::Value>) -> toml::Value {
    if let Some(toml::Value::String(_)) = current {
        return toml::Value::String(raw.to_string());
    }
    let wrapped = format!("v = {raw}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => {
            if let Some(toml::Value::Array(_)) = current {
                // Comma-separated lists are the natural shell spelling.
                toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                )
            } else {
                toml::Value::String(raw.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The example file lists every key with its default: adding a setting
    /// without documenting it fails here.
    #[test]
    fn example_file_is_complete_and_true() {
        let text = include_str!("../config.toml.example");
        let example: toml::Table = text.parse().unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        assert_eq!(example, defaults);
    }

    #[test]
    fn external_auth_comes_from_the_environment_and_is_checked() {
        let c = Config::load_with_env(
            None,
            &Overrides::default(),
            env(&[
                ("CONFAB_AUTH_EXTERNAL_ISSUER", "https://app.example"),
                ("CONFAB_AUTH_EXTERNAL_AUDIENCE", "confab"),
                ("CONFAB_AUTH_EXTERNAL_HS256_SECRET", "0123456789abcdef0123"),
                ("CONFAB_AUTH_LOCAL_PASSWORDS", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.auth.external.issuer, "https://app.example");
        assert_eq!(c.auth.external.hs256_secret, "0123456789abcdef0123");
        assert!(!c.auth.local_passwords);
        assert!(!format!("{c:?}").contains("0123456789abcdef0123"));
        let both = Config::load_with_env(
            None,
            &Overrides::default(),
            env(&[
                ("CONFAB_AUTH_EXTERNAL_ISSUER", "https://app.example"),
                ("CONFAB_AUTH_EXTERNAL_AUDIENCE", "confab"),
                ("CONFAB_AUTH_EXTERNAL_HS256_SECRET", "0123456789abcdef0123"),
                ("CONFAB_AUTH_EXTERNAL_JWKS_URL", "https://app.example/jwks"),
            ]),
        );
        assert!(both.is_err());
    }

    #[test]
    fn server_registration_is_the_same_setting_as_auth_registration() {
        for (k, v) in [
            ("CONFAB_SERVER_REGISTRATION", "invite"),
            ("CONFAB_AUTH_REGISTRATION", "invite"),
        ] {
            let c = Config::load_with_env(None, &Overrides::default(), env(&[(k, v)])).unwrap();
            assert_eq!(c.auth.registration, Registration::Invite, "{k}");
            assert_eq!(c.server.registration, Registration::Invite, "{k}");
        }
    }

    #[test]
    fn push_and_outbound_settings_come_from_the_environment_and_are_checked() {
        let c = Config::load_with_env(
            None,
            &Overrides::default(),
            env(&[
                ("CONFAB_PUSH_CONTENT", "none"),
                ("CONFAB_PUSH_COALESCE_MS", "500"),
                ("CONFAB_OUTBOUND_ALLOW", "127.0.0.1,10.0.0.0/8"),
                ("CONFAB_OUTBOUND_ALLOW_HTTP", "true"),
                (
                    "CONFAB_SERVER_FETCH_ALLOWED_HOSTS",
                    "localhost, 127.0.0.1:8443",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.server.fetch_allowed_hosts,
            vec!["localhost", "127.0.0.1:8443"]
        );
        assert_eq!(c.push.content, "none");
        assert_eq!(c.push.coalesce_ms, 500);
        assert_eq!(c.outbound.allow, vec!["127.0.0.1", "10.0.0.0/8"]);
        assert!(c.outbound.allow_http);
        for (k, v) in [
            ("CONFAB_PUSH_CONTENT", "everything"),
            ("CONFAB_PUSH_CONTACT", "admin@example.com"),
            ("CONFAB_OUTBOUND_ALLOW", "localhost"),
        ] {
            let e = Config::load_with_env(None, &Overrides::default(), env(&[(k, v)]))
                .unwrap_err()
                .to_string();
            let key = k
                .trim_start_matches("CONFAB_")
                .to_ascii_lowercase()
                .replacen('_', ".", 1);
            assert!(e.contains(&key), "{k}={v}: {e}");
        }
    }

    #[test]
    fn defaults_work_without_a_file() {
        let c = Config::load_with_env(None, &Overrides::default(), env(&[])).unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:8080");
        assert_eq!(c.server.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[server]\nbind = \"127.0.0.1:1\"\n[limits]\nmax_frame_bytes = 2048\n",
        )
        .unwrap();
        let c = Config::load_with_env(
            Some(&path),
            &Overrides::default(),
            env(&[
                ("CONFAB_SERVER_BIND", "127.0.0.1:2"),
                ("CONFAB_WS_HEARTBEAT_INTERVAL_MS", "100"),
                (
                    "CONFAB_SERVER_CORS_ORIGINS",
                    "http://a.example, https://b.example",
                ),
                ("CONFAB_AUTH_REGISTRATION", "closed"),
                ("CONFAB_SERVER_DM_POLICY", "friends"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:2");
        assert_eq!(c.limits.max_frame_bytes, 2048);
        assert_eq!(c.ws.heartbeat_interval_ms, 100);
        assert_eq!(c.server.cors_origins.len(), 2);
        assert_eq!(c.auth.registration, Registration::Closed);
        assert_eq!(c.server.dm_policy, DmPolicy::Friends);
        let c = Config::load_with_env(
            Some(&path),
            &Overrides {
                bind: Some("127.0.0.1:3".into()),
                data_dir: None,
            },
            env(&[("CONFAB_SERVER_BIND", "127.0.0.1:2")]),
        )
        .unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:3");
    }

    #[test]
    fn bad_files_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[server]\nbnd = \"x\"\n").unwrap();
        let e = Config::load_with_env(Some(&path), &Overrides::default(), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.bnd"), "{e}");
        std::fs::write(&path, "[limits]\nmax_frame_bytes = \"big\"\n").unwrap();
        let e = Config::load_with_env(Some(&path), &Overrides::default(), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_frame_bytes"), "{e}");
        std::fs::write(&path, "[server]\ndm_policy = \"nobody\"\n").unwrap();
        let e = Config::load_with_env(Some(&path), &Overrides::default(), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dm_policy"), "{e}");
        std::fs::write(&path, "[server]\nbind = \"nowhere\"\n").unwrap();
        let e = Config::load_with_env(Some(&path), &Overrides::default(), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.bind"), "{e}");
    }

    #[test]
    fn connection_timeouts_come_from_the_environment_and_must_be_positive() {
        let c = Config::load_with_env(
            None,
            &Overrides::default(),
            env(&[("CONFAB_SERVER_HEADER_READ_TIMEOUT_MS", "2500")]),
        )
        .unwrap();
        assert_eq!(c.server.header_read_timeout_ms, 2500);
        let e = Config::load_with_env(
            None,
            &Overrides::default(),
            env(&[("CONFAB_SERVER_BODY_TIMEOUT_MS", "0")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("server.body_timeout_ms"), "{e}");
    }

    #[test]
    fn secret_is_never_printed() {
        let mut c = Config::default();
        c.auth.jwt_secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t".into();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
