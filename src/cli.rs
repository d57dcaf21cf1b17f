//! The command line: clap definitions and what each command does. `main`
//! only parses and calls [`run`].
//!
//! Everything a command prints goes through [`out`] (the `say!` macro):
//! `println!` panics when the reader of standard output has gone away.
#![deny(clippy::print_stdout)]

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::admin::{self, Request};
use crate::app::App;
use crate::config::{Config, Overrides};
use crate::domain::Role;
use crate::term::escape;

#[derive(Parser, Debug)]
#[command(
    name = "confab",
    version,
    about = "A self-hosted real-time chat server: one binary, an embedded store, a terminal console.",
    long_about = "confab runs a chat server (HTTP + WebSocket) over an embedded store in a data \
directory, and administers it. The user and room commands work whether or not the server is \
running: with a running server they go through its admin socket (<data_dir>/confab.sock), \
otherwise they open the store directly."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Config file (TOML). Without it, defaults and CONFAB_* variables apply.
    #[arg(long, global = true, value_name = "PATH", env = "CONFAB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory holding confab.redb and the admin socket (default ./data).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the chat server until SIGINT or SIGTERM.
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:8080 (default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
        /// Also open the operator console in this terminal (logs then go to
        /// <data_dir>/confab.log).
        #[arg(long)]
        console: bool,
    },
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage rooms.
    #[command(subcommand)]
    Room(RoomCmd),
    /// Manage bot accounts and their API tokens.
    #[command(subcommand)]
    Bot(BotCmd),
    /// Manage uploaded images.
    #[command(subcommand)]
    Upload(UploadCmd),
    /// Moderate messages.
    #[command(subcommand)]
    Message(MessageCmd),
    /// Send an announcement to everyone online, or to one room.
    Announce {
        text: String,
        /// Only this room (name or id).
        #[arg(long)]
        room: Option<String>,
    },
    /// Write a consistent copy of the store (works while the server runs).
    Backup {
        /// Where to write the copy (a redb file).
        file: PathBuf,
        /// Also copy the upload files the copy refers to into this directory.
        #[arg(long, value_name = "DIR")]
        with_uploads: Option<PathBuf>,
    },
    /// Replace the store with a backup (the server must be stopped; the old
    /// store is kept aside).
    Restore {
        file: PathBuf,
        /// Upload files saved by `backup --with-uploads DIR`.
        #[arg(long, value_name = "DIR")]
        with_uploads: Option<PathBuf>,
    },
    /// Write a room's history, with its members and attachments, as JSON.
    Export {
        room: String,
        /// json (one document) or ndjson (the room, then one message a line).
        #[arg(long, default_value = "json")]
        format: ExportFormat,
    },
    /// Check the config file and the data directory before a (re)start.
    Check,
    /// Rebuild the message search index from the store (the server must
    /// be stopped; a running server rebuilds a missing or stale index on
    /// its own).
    Reindex,
    /// Load-test a server (confab or another speaking the same protocol)
    /// on this machine: `confab bench fanout --url http://127.0.0.1:8080`.
    #[command(subcommand)]
    Bench(crate::bench::BenchCmd),
    /// A load generator process of `confab bench` (started by it).
    #[command(hide = true)]
    BenchWorker,
    /// Print the audit log of moderation and admin actions.
    Audit {
        /// Only entries newer than this, e.g. 1h or 7d.
        #[arg(long, value_parser = parse_duration)]
        since: Option<u64>,
        /// At most this many (the latest).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Watch and moderate a running server in the terminal (rooms, online
    /// users, throughput, events). Press ? inside for the keys.
    Console,
    /// Cluster mode: the nodes and the NATS JetStream engine they share.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Outgoing webhooks: endpoints that get chat events, signed as
    /// Standard Webhooks.
    #[command(subcommand)]
    Webhook(WebhookCmd),
}

#[derive(Subcommand, Debug)]
pub enum WebhookCmd {
    /// Add an endpoint; prints its id and its secret (shown only now).
    Add {
        /// Where events are POSTed (https; a private address only if
        /// allowlisted).
        url: String,
        /// Comma-separated event names, e.g. message.created,member.joined
        /// (`*` for every event).
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// Only this room's events (name or id).
        #[arg(long)]
        room: Option<String>,
    },
    /// List endpoints with their state and backlog.
    List,
    /// Remove an endpoint with its queue and attempts.
    Remove { id: String },
    /// A new secret (printed now); the old one also signs for a day.
    Rotate { id: String },
    /// Start delivering again (also after it was disabled for failing).
    Enable { id: String },
    /// Stop delivering; no events are queued for it while disabled.
    Disable { id: String },
    /// The latest delivery attempts: status, answer, time.
    Deliveries {
        id: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Send the outbox's events again from a seq, a time (RFC 3339) or a
    /// duration ago (e.g. 1h).
    Replay {
        id: String,
        #[arg(long)]
        since: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// The live nodes (from their heartbeats) and the engine: its servers,
    /// the log's leader and whether its replicas are current. Needs only
    /// the engine's address (`[cluster] nats_urls`), not a node.
    Status,
}

#[derive(Subcommand, Debug)]
pub enum UploadCmd {
    /// List uploads, oldest first.
    List {
        /// Only this user's uploads.
        #[arg(long)]
        user: Option<String>,
    },
    /// Delete an upload (its file goes when no other upload shares it).
    Delete { id: String },
    /// Remove uploads that no message carries, older than the grace period.
    Gc {
        /// Grace period in seconds (default: uploads.gc_grace_secs).
        #[arg(long)]
        grace: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create an account (the way to make the first admin).
    Add {
        /// 3-32 characters of a-z 0-9 _ . - (stored lowercase).
        name: String,
        /// user, moderator or admin.
        #[arg(long, default_value = "user")]
        role: Role,
        /// Read the password from the first line of standard input instead
        /// of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List every account.
    List,
    /// Show one account and its rooms.
    Show { name: String },
    /// Set a new password.
    Passwd {
        name: String,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change an account's role.
    Role {
        name: String,
        /// user, moderator or admin.
        role: Role,
    },
    /// Delete an account; its tokens and connections stop working at once.
    Delete { name: String },
    /// Close every connection of a user (they get `kicked`, then 4003).
    Kick {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Kick and refuse login, tokens and connections, for a while or until unbanned.
    Ban {
        name: String,
        #[arg(long)]
        reason: Option<String>,
        /// How long, e.g. 30m, 12h, 7d (default: until unbanned).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<u64>,
    },
    /// Lift a ban.
    Unban { name: String },
    /// List the bans in force, with their expiry and reason.
    Bans,
    /// List the mutes in force, with their room, expiry and reason.
    Mutes,
    /// Stop a user sending, in one room or everywhere.
    Mute {
        name: String,
        /// Only in this room (name or id); default: everywhere.
        #[arg(long)]
        room: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// How long, e.g. 10m, 1h (default: until unmuted).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<u64>,
    },
    /// Lift a mute (the same room, or the everywhere mute).
    Unmute {
        name: String,
        #[arg(long)]
        room: Option<String>,
    },
    /// List an account's friends.
    Friends { name: String },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Json,
    Ndjson,
}

#[derive(Subcommand, Debug)]
pub enum MessageCmd {
    /// Delete a message (it keeps its place in history, blanked).
    Delete {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// "90", "90s", "30m", "12h", "7d" → seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30m, 12h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h, d or w")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

#[derive(Subcommand, Debug)]
pub enum RoomCmd {
    /// Create a room owned by no user (operators manage it).
    Create {
        /// 1-64 characters of a-z 0-9 _ -.
        name: String,
        /// Only members can see and join it.
        #[arg(long)]
        private: bool,
        #[arg(long)]
        topic: Option<String>,
    },
    /// List rooms with member counts.
    List,
    /// Show a room (by name or id) and its members.
    Show { name: String },
    /// Delete a room with its history.
    Delete { name: String },
    /// Add a user to a room.
    AddMember { room: String, user: String },
    /// Change a room's own retention; options not given stay as they are.
    Set {
        name: String,
        /// Remove messages older than this (e.g. 30d), `off` to keep all,
        /// or `default` to follow the server's setting.
        #[arg(long, value_name = "DURATION", value_parser = parse_retention)]
        retention: Option<Setting>,
        /// Keep only the newest N messages (0: no cap), or `default` to
        /// follow the server's setting.
        #[arg(long, value_name = "N", value_parser = parse_keep_last)]
        keep_last: Option<Setting>,
    },
    /// Incoming webhooks: secret URLs that post into a room.
    #[command(subcommand)]
    Hook(HookCmd),
}

#[derive(Subcommand, Debug)]
pub enum HookCmd {
    /// Make a hook for the room (name or id) and print its secret URL (shown once).
    Add {
        room: String,
        /// The hook's account name (default: hook- and random letters).
        #[arg(long)]
        name: Option<String>,
    },
    /// List hooks, of one room or all.
    List { room: Option<String> },
    /// Remove a hook by id (its URL stops working at once).
    Remove { id: String },
}

#[derive(Subcommand, Debug)]
pub enum BotCmd {
    /// Make a bot account (it cannot sign in with a password).
    Add {
        name: String,
        /// Rooms (names or ids, comma-separated) to make it a member of.
        #[arg(long, value_delimiter = ',')]
        rooms: Vec<String>,
    },
    /// List bots and their tokens.
    List,
    /// Remove a bot and its tokens.
    Remove { name: String },
    /// API tokens.
    #[command(subcommand)]
    Token(BotTokenCmd),
}

#[derive(Subcommand, Debug)]
pub enum BotTokenCmd {
    /// Make a token and print it (shown once; only its hash is kept).
    Add {
        name: String,
        /// Only these rooms (names or ids, comma-separated); default: any.
        #[arg(long, value_delimiter = ',')]
        rooms: Option<Vec<String>>,
        /// Actions, comma-separated: read, send, react, join, dm
        /// (default: read,send,react).
        #[arg(long)]
        scopes: Option<String>,
    },
    /// Revoke a token by id; its connections close.
    Revoke { id: String },
}

/// A room's own retention value: `None` follows the server's setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting(pub Option<u64>);

/// A retention duration, `off` (0: keep everything) or `default`.
fn parse_retention(s: &str) -> Result<Setting, String> {
    match s {
        "off" => Ok(Setting(Some(0))),
        "default" => Ok(Setting(None)),
        s => parse_duration(s).map(|v| Setting(Some(v))),
    }
}

/// A count of messages (0: no cap) or `default`.
fn parse_keep_last(s: &str) -> Result<Setting, String> {
    if s == "default" {
        return Ok(Setting(None));
    }
    s.parse()
        .map(|n| Setting(Some(n)))
        .map_err(|_| format!("{s:?} is not a number of messages or `default`"))
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Serve(#[from] crate::server::ServeError),
    #[error("{0}")]
    App(#[from] crate::app::AppError),
    #[error("{0}")]
    Admin(#[from] admin::AdminError),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Console(String),
    #[error("{0}")]
    Bench(String),
    #[error("{0}")]
    Cluster(String),
    /// An action that only a running server can carry out, with none
    /// running.
    #[error("no server is running: {0}")]
    NoServer(String),
    #[error("writing the output: {0}")]
    Output(std::io::Error),
    /// The reader of standard output went away: not a failure of the
    /// command, which [`run`] ends quietly.
    #[error("standard output was closed")]
    OutputClosed,
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::OutputClosed
        } else {
            CliError::Output(e)
        }
    }
}

/// Writes to standard output. A closed pipe (`confab export ROOM | head`)
/// becomes [`CliError::OutputClosed`], which ends the command quietly and
/// successfully, as Unix filters do.
fn out(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// `println!` through [`out`]; evaluates to its `Result`.
macro_rules! say {
    ($($arg:tt)*) => {
        out(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub fn load_config(global: &Global, bind: Option<String>) -> Result<Config, CliError> {
    Ok(Config::load(
        global.config.as_deref(),
        &Overrides {
            data_dir: global.data_dir.clone(),
            bind,
        },
    )?)
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    match command(cli).await {
        Err(CliError::OutputClosed) => Ok(()),
        result => result,
    }
}

async fn command(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve { bind, console } => {
            let config = load_config(&cli.global, bind)?;
            if console && !std::io::stdout().is_terminal() {
                return Err(CliError::Console(
                    "the console needs a terminal on standard output".into(),
                ));
            }
            let socket = config.socket_path();
            let running = crate::server::start(config).await?;
            if !console {
                // A server whose standard output is gone keeps serving:
                // this line is a courtesy, the logs are on stderr.
                let _ = say!("confab listening on {}", running.url());
                crate::server::signal().await;
            } else {
                let backend = crate::console::SocketBackend::connect(&socket)
                    .await
                    .ok_or_else(|| CliError::Console("the admin socket does not answer".into()))?;
                tokio::select! {
                    exit = crate::console::run(backend, true) => {
                        let exit = exit.map_err(|e| CliError::Console(format!("console: {e}")))?;
                        if exit == crate::console::Exit::Detached {
                            let _ = say!(
                                "console closed; confab keeps serving {} until SIGINT or SIGTERM",
                                running.url()
                            );
                            crate::server::signal().await;
                        }
                    }
                    () = crate::server::signal() => {}
                }
            }
            tracing::info!("shutting down");
            running.shutdown().await;
            Ok(())
        }
        Command::User(cmd) => {
            let req = match cmd {
                UserCmd::Add {
                    name,
                    role,
                    password_stdin,
                } => Request::UserAdd {
                    username: name,
                    password: read_password(password_stdin)?,
                    role,
                },
                UserCmd::List => Request::UserList,
                UserCmd::Show { name } => Request::UserShow { username: name },
                UserCmd::Passwd {
                    name,
                    password_stdin,
                } => Request::UserPasswd {
                    username: name,
                    password: read_password(password_stdin)?,
                },
                UserCmd::Role { name, role } => Request::UserRole {
                    username: name,
                    role,
                },
                UserCmd::Delete { name } => Request::UserDelete { username: name },
                UserCmd::Kick { name, reason } => Request::Kick {
                    username: name,
                    reason,
                },
                UserCmd::Ban {
                    name,
                    reason,
                    duration,
                } => Request::Ban {
                    username: name,
                    reason,
                    duration_secs: duration,
                },
                UserCmd::Unban { name } => Request::Unban { username: name },
                UserCmd::Bans => Request::Bans,
                UserCmd::Mutes => Request::Mutes,
                UserCmd::Mute {
                    name,
                    room,
                    reason,
                    duration,
                } => Request::Mute {
                    username: name,
                    room,
                    reason,
                    duration_secs: duration,
                },
                UserCmd::Unmute { name, room } => Request::Unmute {
                    username: name,
                    room,
                },
                UserCmd::Friends { name } => Request::UserFriends { username: name },
            };
            operator(&cli.global, req).await
        }
        Command::Room(cmd) => {
            let req = match cmd {
                RoomCmd::Create {
                    name,
                    private,
                    topic,
                } => Request::RoomCreate {
                    name,
                    private,
                    topic,
                },
                RoomCmd::List => Request::RoomList,
                RoomCmd::Show { name } => Request::RoomShow { room: name },
                RoomCmd::Delete { name } => Request::RoomDelete { room: name },
                RoomCmd::AddMember { room, user } => Request::RoomAddMember {
                    room,
                    username: user,
                },
                RoomCmd::Set {
                    name,
                    retention,
                    keep_last,
                } => {
                    if retention.is_none() && keep_last.is_none() {
                        return Err(CliError::Input(
                            "room set: nothing to change (give --retention, --keep-last or both)"
                                .into(),
                        ));
                    }
                    Request::RoomRetention {
                        room: name,
                        max_age_secs: retention.map(|s| s.0),
                        keep_last: keep_last.map(|s| s.0),
                    }
                }
                RoomCmd::Hook(h) => match h {
                    HookCmd::Add { room, name } => Request::HookAdd { room, name },
                    HookCmd::List { room } => Request::HookList { room },
                    HookCmd::Remove { id } => Request::HookRemove { id },
                },
            };
            operator(&cli.global, req).await
        }
        Command::Bot(cmd) => {
            let req = match cmd {
                BotCmd::Add { name, rooms } => Request::BotAdd { name, rooms },
                BotCmd::List => Request::BotList,
                BotCmd::Remove { name } => Request::BotRemove { name },
                BotCmd::Token(BotTokenCmd::Add {
                    name,
                    rooms,
                    scopes,
                }) => Request::BotTokenAdd {
                    name,
                    rooms,
                    scopes,
                },
                BotCmd::Token(BotTokenCmd::Revoke { id }) => Request::BotTokenRevoke { id },
            };
            operator(&cli.global, req).await
        }
        Command::Backup { file, with_uploads } => {
            let req = Request::Backup {
                path: absolute(&file)?,
                with_uploads: with_uploads.as_deref().map(absolute).transpose()?,
            };
            operator(&cli.global, req).await
        }
        Command::Restore { file, with_uploads } => {
            restore(&cli.global, &file, with_uploads.as_deref()).await
        }
        Command::Export { room, format } => {
            let config = load_config(&cli.global, None)?;
            let v = call(&config, Request::Export { room }).await?;
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            match format {
                ExportFormat::Json => {
                    serde_json::to_writer_pretty(&mut w, &v).map_err(std::io::Error::from)?;
                    writeln!(w)?;
                }
                ExportFormat::Ndjson => {
                    writeln!(
                        w,
                        "{}",
                        serde_json::json!({"room": v["room"], "members": v["members"]})
                    )?;
                    for m in v["messages"].as_array().into_iter().flatten() {
                        writeln!(w, "{m}")?;
                    }
                }
            }
            w.flush()?;
            Ok(())
        }
        Command::Check => check(&cli.global).await,
        Command::Reindex => reindex(&cli.global).await,
        Command::Message(MessageCmd::Delete { id, reason }) => {
            operator(&cli.global, Request::DeleteMessage { id, reason }).await
        }
        Command::Announce { text, room } => {
            operator(&cli.global, Request::Announce { text, room }).await
        }
        Command::Audit { since, limit } => {
            let since = since.map(|s| crate::domain::now_ms() - (s as i64) * 1000);
            operator(
                &cli.global,
                Request::Audit {
                    since,
                    limit: Some(limit),
                },
            )
            .await
        }
        Command::Bench(cmd) => crate::bench::run(cmd, cli.global.json)
            .await
            .map_err(CliError::Bench),
        Command::BenchWorker => crate::bench::worker::main().await.map_err(CliError::Bench),
        Command::Upload(cmd) => {
            let req = match cmd {
                UploadCmd::List { user } => Request::UploadList { username: user },
                UploadCmd::Delete { id } => Request::UploadDelete { id },
                UploadCmd::Gc { grace } => Request::UploadGc { grace_secs: grace },
            };
            operator(&cli.global, req).await
        }
        Command::Console => console(&cli.global).await,
        Command::Cluster(ClusterCmd::Status) => cluster_status(&cli.global).await,
        Command::Webhook(cmd) => {
            let req = match cmd {
                WebhookCmd::Add { url, events, room } => Request::WebhookAdd { url, events, room },
                WebhookCmd::List => Request::WebhookList,
                WebhookCmd::Remove { id } => Request::WebhookRemove { id },
                WebhookCmd::Rotate { id } => Request::WebhookRotate { id },
                WebhookCmd::Enable { id } => Request::WebhookEnable { id, enabled: true },
                WebhookCmd::Disable { id } => Request::WebhookEnable { id, enabled: false },
                WebhookCmd::Deliveries { id, limit } => Request::WebhookDeliveries {
                    id,
                    limit: Some(limit),
                },
                WebhookCmd::Replay { id, since } => Request::WebhookReplay { id, since },
            };
            operator(&cli.global, req).await
        }
    }
}

/// Asks the engine, as any client of it may, which nodes are alive and how
/// the log stands. The CLI connects under a name of its own and sends no
/// heartbeat, so it never shows up as a node.
async fn cluster_status(global: &Global) -> Result<(), CliError> {
    let config = load_config(global, None)?;
    if !config.cluster.enabled() {
        return Err(CliError::Cluster(
            "not in cluster mode: set CONFAB_CLUSTER_NATS_URLS or [cluster] nats_urls".into(),
        ));
    }
    let mut engine = config.cluster.engine();
    engine.node = format!("{}-cli-{}", engine.node, std::process::id());
    let engine = crate::store::engine::Engine::connect(engine)
        .await
        .map_err(|e| CliError::Cluster(e.to_string()))?;
    let status = crate::cluster::status(&engine).await;
    if global.json {
        let v = serde_json::to_value(&status).map_err(|e| CliError::Cluster(e.to_string()))?;
        return say!("{}", pretty(&v));
    }
    print_cluster(&status, crate::domain::now_ms())
}

fn print_cluster(status: &crate::cluster::ClusterStatus, now: i64) -> Result<(), CliError> {
    let age = |at: i64| format!("{:.1} s ago", (now - at).max(0) as f64 / 1000.0);
    table(
        &[
            "node",
            "address",
            "started",
            "connections",
            "users online",
            "applied",
            "last heartbeat",
        ],
        status
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    n.address.clone(),
                    time(&Value::from(n.started)),
                    n.connections.to_string(),
                    n.users_online.to_string(),
                    n.applied.to_string(),
                    age(n.last_heartbeat),
                ]
            })
            .collect(),
    )?;
    let e = &status.engine;
    say!("")?;
    let via = if e.connected {
        format!("{} (nats-server {})", e.server_name, e.server_version)
    } else {
        "not connected".into()
    };
    say!("engine     {} via {}", escape(&e.namespace), escape(&via))?;
    say!(
        "cluster    {} ({} servers: {})",
        escape(e.cluster.as_deref().unwrap_or("none")),
        e.servers.len(),
        escape(&e.servers.join(", "))
    )?;
    match &e.log {
        Some(log) => {
            let current = log.replicas.iter().filter(|r| r.current).count();
            say!(
                "log        {}: {} {}, positions {} to {}",
                escape(&log.stream),
                log.messages,
                if log.messages == 1 {
                    "entry"
                } else {
                    "entries"
                },
                log.first_position,
                log.last_position
            )?;
            say!(
                "leader     {}",
                escape(
                    log.leader
                        .as_deref()
                        .unwrap_or("NONE (no quorum, or an election)")
                )
            )?;
            say!(
                "replicas   {current} of {} followers current (wanted {} copies)",
                log.replicas.len(),
                e.replicas_wanted
            )?;
            for r in &log.replicas {
                let lag = r.lag.map(|l| format!(", {l} behind")).unwrap_or_default();
                say!(
                    "           {} {}{lag}, heard from {:.1} s ago",
                    escape(&r.name),
                    if r.current { "current" } else { "NOT CURRENT" },
                    r.active_ms as f64 / 1000.0
                )?;
            }
        }
        None => say!("log        unknown")?,
    }
    for err in &e.errors {
        say!("error      {}", escape(err))?;
    }
    Ok(())
}

/// The console beside a running server: it only ever detaches, the
/// server keeps running.
async fn console(global: &Global) -> Result<(), CliError> {
    let config = load_config(global, None)?;
    let path = config.socket_path();
    let backend = crate::console::SocketBackend::connect(&path)
        .await
        .ok_or_else(|| {
            CliError::Console(format!(
                "no confab server is running for {} (nothing answers on {}); start one with `confab serve`",
                config.server.data_dir.display(),
                path.display()
            ))
        })?;
    if !std::io::stdout().is_terminal() {
        return Err(CliError::Console(
            "the console needs a terminal on standard output".into(),
        ));
    }
    crate::console::run(backend, false)
        .await
        .map_err(|e| CliError::Console(format!("console: {e}")))?;
    Ok(())
}

fn read_password(from_stdin: bool) -> Result<String, CliError> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::Input(format!("reading the password: {e}")))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = rpassword::prompt_password("Password: ")
        .map_err(|e| CliError::Input(format!("reading the password: {e}")))?;
    let second = rpassword::prompt_password("Again: ")
        .map_err(|e| CliError::Input(format!("reading the password: {e}")))?;
    if first != second {
        return Err(CliError::Input("the passwords differ".into()));
    }
    Ok(first)
}

/// Runs an operator request through a live server's admin socket, or on
/// the store directly when no server runs.
async fn operator(global: &Global, req: Request) -> Result<(), CliError> {
    let config = load_config(global, None)?;
    let value = call(&config, req.clone()).await?;
    print(&req, &value, global.json)
}

/// Why a request means nothing without a running server (it acts on live
/// connections only), or `None` when the store alone can carry it out.
fn needs_live_server(req: &Request) -> Option<&'static str> {
    match req {
        Request::Kick { .. } => Some("a kick closes the user's open connections"),
        Request::Announce { .. } => {
            Some("an announcement reaches only the users connected to a running server")
        }
        _ => None,
    }
}

/// Whether a request writes to the store. In cluster mode such a request
/// must go through a running node, which appends it to the log for every
/// node to apply: written into one node's store directly it would be on
/// that node alone.
fn writes(req: &Request) -> bool {
    match req {
        Request::Status
        | Request::UserList
        | Request::UserShow { .. }
        | Request::UserFriends { .. }
        | Request::RoomList
        | Request::RoomShow { .. }
        | Request::RoomMessages { .. }
        | Request::UploadList { .. }
        | Request::Snapshot { .. }
        | Request::Bans
        | Request::Mutes
        | Request::Audit { .. }
        | Request::Backup { .. }
        | Request::Export { .. }
        | Request::BotList
        | Request::HookList { .. }
        | Request::WebhookList
        | Request::WebhookDeliveries { .. } => false,
        Request::UserAdd { .. }
        | Request::UserPasswd { .. }
        | Request::UserRole { .. }
        | Request::UserDelete { .. }
        | Request::RoomCreate { .. }
        | Request::RoomDelete { .. }
        | Request::RoomAddMember { .. }
        | Request::UploadDelete { .. }
        | Request::UploadGc { .. }
        | Request::Kick { .. }
        | Request::Ban { .. }
        | Request::Unban { .. }
        | Request::Mute { .. }
        | Request::Unmute { .. }
        | Request::DeleteMessage { .. }
        | Request::Announce { .. }
        | Request::RoomRetention { .. }
        | Request::BotAdd { .. }
        | Request::BotTokenAdd { .. }
        | Request::BotTokenRevoke { .. }
        | Request::BotRemove { .. }
        | Request::HookAdd { .. }
        | Request::HookRemove { .. }
        | Request::WebhookAdd { .. }
        | Request::WebhookRemove { .. }
        | Request::WebhookRotate { .. }
        | Request::WebhookEnable { .. }
        | Request::WebhookReplay { .. } => true,
    }
}

async fn call(config: &Config, req: Request) -> Result<Value, CliError> {
    Ok(match admin::Client::connect(&config.socket_path()).await {
        Some(mut client) => client.call(&req).await?,
        None if needs_live_server(&req).is_some() => {
            return Err(CliError::NoServer(format!(
                "{} (nothing answers on {}; start one with `confab serve`)",
                needs_live_server(&req).unwrap_or_default(),
                config.socket_path().display()
            )));
        }
        None if config.cluster.enabled() && writes(&req) => {
            return Err(CliError::NoServer(format!(
                "in cluster mode a change goes through a running node, so that every node \
                 applies it, and nothing answers on {} (start this node, or run the \
                 command where one runs)",
                config.socket_path().display()
            )));
        }
        None => {
            let app = App::open(config.clone())?;
            let result = admin::execute(&app, req).await;
            close(app).await;
            result?
        }
    })
}

/// Paths sent to the server must not depend on the CLI's working directory.
fn absolute(p: &std::path::Path) -> Result<PathBuf, CliError> {
    std::path::absolute(p).map_err(|e| CliError::Input(format!("{}: {e}", p.display())))
}

async fn restore(
    global: &Global,
    file: &std::path::Path,
    uploads: Option<&std::path::Path>,
) -> Result<(), CliError> {
    let config = load_config(global, None)?;
    if admin::Client::connect(&config.socket_path())
        .await
        .is_some()
    {
        return Err(CliError::Input(format!(
            "a server is running on {}: stop it before restoring",
            config.server.data_dir.display()
        )));
    }
    let summary = crate::store::inspect(file)
        .map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?;
    let db = config.db_path();
    std::fs::create_dir_all(&config.server.data_dir).map_err(|e| CliError::Input(e.to_string()))?;
    let io = |e: std::io::Error| CliError::Input(format!("restoring: {e}"));
    if db.exists() {
        // A locked store means a server without a reachable socket.
        if let Err(crate::store::StoreError::Locked) = crate::store::inspect(&db) {
            return Err(CliError::Input(
                "the store is in use by another process".into(),
            ));
        }
        let aside = db.with_extension(format!("redb.before-restore-{}", crate::domain::now_ms()));
        std::fs::rename(&db, &aside).map_err(io)?;
        say!("kept the old store as {}", aside.display())?;
    }
    let tmp = db.with_extension("restoring");
    std::fs::copy(file, &tmp).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, &db).map_err(io)?;
    // The index described the old store; the next start builds it anew.
    let index = crate::search::dir_in(&config.server.data_dir);
    if index.exists() {
        std::fs::remove_dir_all(&index).map_err(io)?;
    }
    let mut files = 0;
    if let Some(dir) = uploads {
        let from = crate::uploads::FileStore::new_at(dir);
        let to = crate::uploads::FileStore::new(&config.server.data_dir);
        for hash in from.list() {
            if let (Some(a), Some(b)) = (from.path(&hash), to.path(&hash))
                && !b.exists()
            {
                if let Some(parent) = b.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::copy(a, b).map_err(io)?;
                files += 1;
            }
        }
    }
    say!(
        "restored {} users, {} rooms, {} messages, {} uploads ({files} files) from {}",
        summary.users,
        summary.rooms,
        summary.messages,
        summary.uploads,
        file.display()
    )
}

/// Validates the config and the data directory; fails on the first problem.
/// With a server running, reports where it actually listens (the
/// configured port may be 0, or overridden by `serve --bind`).
async fn reindex(global: &Global) -> Result<(), CliError> {
    let config = load_config(global, None)?;
    if admin::Client::connect(&config.socket_path())
        .await
        .is_some()
    {
        return Err(CliError::Input(format!(
            "a server is running on {}: stop it before reindexing",
            config.server.data_dir.display()
        )));
    }
    if !config.db_path().is_file() {
        return Err(CliError::Input(format!(
            "no store in {}",
            config.server.data_dir.display()
        )));
    }
    let started = std::time::Instant::now();
    let dir = config.server.data_dir.clone();
    let writer_bytes = config.search.writer_mib.saturating_mul(1 << 20);
    let store = crate::store::Store::open(
        &config.db_path(),
        config.store.cache_mib,
        config.store.max_batch,
        std::sync::Arc::new(|_: &[crate::store::Change]| {}),
        None,
        crate::store::Local::default(),
    )
    .map_err(|e| CliError::Input(e.to_string()))?;
    let reader = store.reader();
    let messages =
        tokio::task::spawn_blocking(move || crate::search::rebuild(&dir, reader, writer_bytes))
            .await
            .map_err(|e| CliError::Input(e.to_string()))?
            .map_err(|e| CliError::Input(e.to_string()))?;
    drop(store);
    let bytes = crate::search::Search::disk_bytes(&crate::search::dir_in(&config.server.data_dir));
    let secs = started.elapsed().as_secs_f64();
    if global.json {
        say!(
            "{}",
            serde_json::json!({ "messages": messages, "index_bytes": bytes, "seconds": secs })
        )?;
    } else {
        say!(
            "reindexed {messages} messages in {secs:.1} s (index: {:.1} MiB)",
            bytes as f64 / 1048576.0
        )?;
    }
    Ok(())
}

async fn check(global: &Global) -> Result<(), CliError> {
    let json = global.json;
    let config = load_config(global, None)?;
    if !json {
        say!(
            "config     ok (listen {}, data dir {})",
            config.server.bind,
            config.server.data_dir.display()
        )?;
    }
    let dir = &config.server.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Input(format!("data dir {}: {e}", dir.display())))?;
    let probe = dir.join(".confab-check");
    std::fs::write(&probe, b"ok")
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| CliError::Input(format!("data dir {} is not writable: {e}", dir.display())))?;
    if !json {
        say!("data dir   ok (writable)")?;
    }
    // Not fatal: a start tightens them. But until then another local user
    // may copy the store, and with it the token signing secret.
    let loose = crate::perms::loose(dir)
        .map_err(|e| CliError::Input(format!("data dir {}: {e}", dir.display())))?;
    if !json {
        if loose.is_empty() {
            say!("data dir   ok (private to its owner)")?;
        } else {
            say!(
                "data dir   WARNING: {} path(s) open to other users; the server takes that \
                 access away when it starts (or: chmod -R go-rwx {})",
                loose.len(),
                escape(&dir.display().to_string())
            )?;
            for l in &loose {
                say!(
                    "           {:o} {}",
                    l.mode,
                    escape(&l.path.display().to_string())
                )?;
            }
        }
    }
    let loose_json: Vec<Value> = loose
        .iter()
        .map(|l| serde_json::json!({ "path": l.path, "mode": format!("{:o}", l.mode) }))
        .collect();
    let mut report = serde_json::json!({
        "config": { "ok": true, "listen": config.server.bind, "data_dir": dir },
        "data_dir": { "ok": true, "writable": true, "private": loose.is_empty(), "loose": loose_json },
        "server": { "running": false },
        "store": Value::Null,
    });
    if let Some(mut client) = admin::Client::connect(&config.socket_path()).await {
        let status = client.call(&Request::Status).await?;
        report["server"] = serde_json::json!({
            "running": true,
            "pid": status["pid"],
            "connections": status["connections"],
            "listen": status["listen"],
            "url": status["url"],
        });
        if json {
            return say!("{}", pretty(&report));
        }
        let listen = match &status["listen"] {
            Value::Null => String::new(),
            v => format!(", listening on {}", s(v)),
        };
        return say!(
            "server     running (pid {}, {} connections{listen})",
            s(&status["pid"]),
            s(&status["connections"])
        );
    }
    let db = config.db_path();
    if !db.exists() {
        report["store"] = serde_json::json!({ "exists": false });
        if json {
            return say!("{}", pretty(&report));
        }
        return say!("store      none yet (created on first start)");
    }
    let summary = crate::store::inspect(&db).map_err(|e| CliError::Input(format!("store: {e}")))?;
    if json {
        report["store"] = serde_json::json!({ "exists": true, "ok": true, "summary": summary });
        return say!("{}", pretty(&report));
    }
    say!(
        "store      ok (schema {}, {} users, {} rooms, {} messages)",
        summary.schema_version,
        summary.users,
        summary.rooms,
        summary.messages
    )
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Lets the store writer finish and close the file before the process
/// exits.
async fn close(app: Arc<App>) {
    let closed = app.store.closed();
    drop(app);
    let _ = tokio::task::spawn_blocking(move || closed.wait(Duration::from_secs(10))).await;
}

/// A value as a table shows it, escaped for the terminal.
fn s(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s).into_owned(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// An expiry for a column of them: a time, or "until lifted".
fn expiry(v: &Value) -> String {
    if v.is_null() {
        "until lifted".into()
    } else {
        time(v)
    }
}

/// An expiry in a sentence: "until <time>", or `null` for "until lifted".
fn until(v: &Value) -> String {
    if v.is_null() {
        "until lifted".into()
    } else {
        format!("until {}", time(v))
    }
}

/// A user's ban and mutes in a few words ("banned until … (spam); muted
/// in general until lifted"), or `-`.
fn standing(u: &Value) -> String {
    let mut parts = Vec::new();
    if u["banned"].is_object() {
        parts.push(format!(
            "banned {}{}",
            until(&u["banned"]["until"]),
            because(&u["banned"]["reason"])
        ));
    }
    for m in u["mutes"].as_array().into_iter().flatten() {
        parts.push(format!(
            "muted {} {}{}",
            place(&m["room"]),
            until(&m["until"]),
            because(&m["reason"])
        ));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

fn place(room: &Value) -> String {
    match room {
        Value::Null => "everywhere".into(),
        r => format!("in {}", s(r)),
    }
}

fn because(reason: &Value) -> String {
    match reason {
        Value::String(r) if !r.is_empty() => format!(" ({})", escape(r)),
        _ => String::new(),
    }
}

/// A room's retention in words; `default` fills in what the room leaves
/// to the server.
fn retention_words(r: &Value, default: Option<&Value>) -> String {
    let age = |v: &Value| match v.as_u64() {
        None => "server default".to_string(),
        Some(0) => "kept forever".to_string(),
        Some(secs) => format!("{} days", secs as f64 / 86_400.0),
    };
    let keep = |v: &Value| match v.as_u64() {
        None => "server default".to_string(),
        Some(0) => "no cap".to_string(),
        Some(n) => format!("the newest {n}"),
    };
    let with_default = |own: &Value, key: &str, f: &dyn Fn(&Value) -> String| match default {
        Some(d) if own.is_null() && !d[key].is_null() => format!("{} ({})", f(own), f(&d[key])),
        _ => f(own),
    };
    format!(
        "age {}; count {}",
        with_default(&r["max_age_secs"], "max_age_secs", &age),
        with_default(&r["keep_last"], "keep_last", &keep)
    )
}

fn time(v: &Value) -> String {
    let Some(ms) = v.as_i64() else {
        return "-".into();
    };
    let secs = ms / 1000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

// Howard Hinnant's days-to-civil algorithm: UTC dates with no time crate.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> Result<(), CliError> {
    // Every cell escaped, whatever built it: a cell is printed as it is.
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| row.iter().map(|c| escape(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        say!("{}", parts.join("  ").trim_end())
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect())?;
    let empty = rows.is_empty();
    for row in rows {
        line(row)?;
    }
    if empty {
        say!("(none)")?;
    }
    Ok(())
}

fn yes_no(v: &Value) -> &'static str {
    if v.as_bool() == Some(true) {
        "yes"
    } else {
        "no"
    }
}

fn print(req: &Request, v: &Value, json: bool) -> Result<(), CliError> {
    if json {
        return say!("{}", pretty(v));
    }
    match req {
        Request::UserList => table(
            &["username", "role", "online", "created", "id", "status"],
            v["users"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|u| {
                    vec![
                        s(&u["username"]),
                        s(&u["role"]),
                        yes_no(&u["online"]).into(),
                        time(&u["created_at"]),
                        s(&u["id"]),
                        standing(u),
                    ]
                })
                .collect(),
        ),
        Request::UserShow { .. } => {
            let u = &v["user"];
            say!("username  {}", s(&u["username"]))?;
            say!("id        {}", s(&u["id"]))?;
            say!("role      {}", s(&u["role"]))?;
            say!("created   {}", time(&v["created_at"]))?;
            say!("online    {}", yes_no(&v["online"]))?;
            let rooms: Vec<String> = v["rooms"].as_array().into_iter().flatten().map(s).collect();
            say!(
                "rooms     {}",
                if rooms.is_empty() {
                    "-".into()
                } else {
                    rooms.join(", ")
                }
            )?;
            let b = &v["banned"];
            if b.is_object() {
                say!("banned    {}{}", until(&b["until"]), because(&b["reason"]))?;
            } else {
                say!("banned    no")?;
            }
            let mutes: Vec<String> = v["mutes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    format!(
                        "{} {}{}",
                        place(&m["room"]),
                        until(&m["until"]),
                        because(&m["reason"])
                    )
                })
                .collect();
            say!(
                "muted     {}",
                if mutes.is_empty() {
                    "no".into()
                } else {
                    mutes.join("; ")
                }
            )
        }
        Request::Bans => table(
            &["username", "until", "reason"],
            v["bans"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| vec![s(&b["username"]), expiry(&b["until"]), s(&b["reason"])])
                .collect(),
        ),
        Request::Mutes => table(
            &["username", "room", "until", "reason", "by"],
            v["mutes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    vec![
                        s(&m["username"]),
                        match &m["room"] {
                            Value::Null => "everywhere".into(),
                            r => s(r),
                        },
                        expiry(&m["until"]),
                        s(&m["reason"]),
                        s(&m["by"]),
                    ]
                })
                .collect(),
        ),
        Request::UserFriends { .. } => table(
            &["username", "role", "online", "since", "id"],
            v["friends"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    vec![
                        s(&f["user"]["username"]),
                        s(&f["user"]["role"]),
                        yes_no(&f["online"]).into(),
                        time(&f["since"]),
                        s(&f["user"]["id"]),
                    ]
                })
                .collect(),
        ),
        Request::UserAdd { .. } | Request::UserRole { .. } => {
            let u = &v["user"];
            say!("{} ({}) {}", s(&u["username"]), s(&u["role"]), s(&u["id"]))
        }
        Request::UserDelete { username } => say!("deleted user {}", escape(username)),
        Request::UserPasswd { username, .. } => {
            say!("password changed for {}", escape(username))
        }
        Request::RoomList => table(
            &[
                "name",
                "visibility",
                "members",
                "online",
                "messages",
                "topic",
                "id",
            ],
            v["rooms"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    vec![
                        s(&r["room"]["name"]),
                        s(&r["room"]["visibility"]),
                        s(&r["members"]),
                        s(&r["online"]),
                        s(&r["last_seq"]),
                        s(&r["room"]["topic"]),
                        s(&r["room"]["id"]),
                    ]
                })
                .collect(),
        ),
        Request::RoomShow { .. } => {
            let r = &v["room"];
            say!("name        {}", s(&r["name"]))?;
            say!("id          {}", s(&r["id"]))?;
            say!("kind        {}", s(&r["kind"]))?;
            say!("visibility  {}", s(&r["visibility"]))?;
            say!("topic       {}", s(&r["topic"]))?;
            say!("created     {}", time(&r["created_at"]))?;
            say!("messages    {}", s(&v["last_seq"]))?;
            say!(
                "retention   {}",
                retention_words(&v["retention"], Some(&v["retention_default"]))
            )?;
            let members: Vec<String> = v["members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| s(&m["username"]))
                .collect();
            say!(
                "members     {}",
                if members.is_empty() {
                    "-".into()
                } else {
                    members.join(", ")
                }
            )
        }
        Request::RoomCreate { .. } => {
            let r = &v["room"];
            say!(
                "{} ({}) {}",
                s(&r["name"]),
                s(&r["visibility"]),
                s(&r["id"])
            )
        }
        Request::RoomDelete { room } => say!("deleted room {}", escape(room)),
        Request::RoomAddMember { room, username } => {
            let (room, username) = (escape(room), escape(username));
            if v["added"].as_bool() == Some(true) {
                say!("added {username} to {room}")
            } else {
                say!("{username} was already in {room}")
            }
        }
        Request::UploadList { .. } => {
            if let (Some(used), Some(quota)) = (v["used_bytes"].as_u64(), v["quota_bytes"].as_u64())
            {
                say!("{used} of {quota} bytes of the upload quota used")?;
            }
            table(
                &[
                    "id", "uploader", "kind", "name", "type", "size", "pixels", "messages",
                    "created",
                ],
                v["uploads"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|u| {
                        vec![
                            s(&u["upload"]["id"]),
                            s(&u["uploader"]),
                            s(&u["upload"]["kind"]),
                            s(&u["upload"]["name"]),
                            s(&u["upload"]["mime"]),
                            s(&u["upload"]["size"]),
                            format!("{}x{}", s(&u["upload"]["width"]), s(&u["upload"]["height"])),
                            s(&u["messages"]),
                            time(&u["created_at"]),
                        ]
                    })
                    .collect(),
            )
        }
        Request::UploadDelete { id } => say!("deleted upload {}", escape(id)),
        Request::UploadGc { .. } => say!(
            "removed {} unused upload(s) and {} orphan file(s)",
            v["removed"].as_array().map(Vec::len).unwrap_or(0),
            s(&v["orphan_files"])
        ),
        Request::Kick { username, .. } => say!(
            "kicked {} ({} connections closed)",
            escape(username),
            s(&v["connections_closed"])
        ),
        Request::Ban { username, .. } => say!("banned {}", escape(username)),
        Request::Unban { username } => say!("unbanned {}", escape(username)),
        Request::Mute { username, room, .. } => match room {
            Some(r) => say!("muted {} in {}", escape(username), escape(r)),
            None => say!("muted {} everywhere", escape(username)),
        },
        Request::Unmute { username, .. } => say!("unmuted {}", escape(username)),
        Request::DeleteMessage { id, .. } => say!("deleted message {}", escape(id)),
        Request::Announce { .. } => say!("announced"),
        Request::RoomMessages { .. } => table(
            &["time", "author", "text", "id"],
            v["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    let text = if m["deleted"].as_bool() == Some(true) {
                        "(deleted)".into()
                    } else {
                        s(&m["text"])
                    };
                    vec![
                        time(&m["created_at"]),
                        s(&m["sender"]["username"]),
                        text,
                        s(&m["id"]),
                    ]
                })
                .collect(),
        ),
        Request::Audit { .. } => table(
            &["time", "actor", "action", "target", "reason"],
            v["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    vec![
                        time(&e["at"]),
                        s(&e["actor"]),
                        s(&e["action"]),
                        s(&e["target"]),
                        s(&e["reason"]),
                    ]
                })
                .collect(),
        ),
        Request::RoomRetention { room, .. } => {
            say!(
                "{}: {}",
                escape(room),
                retention_words(&v["retention"], None)
            )
        }
        Request::Backup { path, .. } => say!(
            "backed up {} rows and {} uploads ({} files copied) to {}",
            s(&v["rows"]),
            s(&v["uploads"]),
            s(&v["files_copied"]),
            escape(&path.display().to_string())
        ),
        Request::WebhookAdd { .. } | Request::WebhookRotate { .. } => {
            say!("id      {}", s(&v["id"]))?;
            say!("secret  {}", s(&v["secret"]))?;
            say!("(the secret is shown only now: keep it where the receiver can read it)")
        }
        Request::WebhookList => table(
            &["id", "url", "events", "room", "state", "pending", "created"],
            v["webhooks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| {
                    let events: Vec<String> = w["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(s)
                        .collect();
                    let state = if w["enabled"].as_bool().unwrap_or(false) {
                        "enabled".to_string()
                    } else {
                        format!("disabled: {}", s(&w["disabled_reason"]))
                    };
                    vec![
                        s(&w["id"]),
                        s(&w["url"]),
                        events.join(","),
                        if w["room"].is_null() {
                            "-".into()
                        } else {
                            s(&w["room"])
                        },
                        state,
                        s(&w["pending"]),
                        time(&w["created_at"]),
                    ]
                })
                .collect(),
        ),
        Request::WebhookRemove { id } => say!("removed webhook {}", escape(id)),
        Request::WebhookEnable { id, enabled } => say!(
            "{} webhook {}",
            if *enabled { "enabled" } else { "disabled" },
            escape(id)
        ),
        Request::WebhookDeliveries { .. } => table(
            &["n", "time", "seq", "event", "status", "ms", "answer"],
            v["deliveries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    vec![
                        s(&a["n"]),
                        time(&a["at"]),
                        s(&a["seq"]),
                        s(&a["type"]),
                        if a["status"].is_null() {
                            "-".into()
                        } else {
                            s(&a["status"])
                        },
                        s(&a["ms"]),
                        s(&a["answer"]),
                    ]
                })
                .collect(),
        ),
        Request::WebhookReplay { id, .. } => say!(
            "queued {} events again for webhook {}",
            s(&v["queued"]),
            escape(id)
        ),
        Request::Export { .. } | Request::Snapshot { .. } | Request::Status => {
            say!("{}", pretty(v))
        }
        Request::BotAdd { .. } => say!("bot {} created", s(&v["bot"]["username"])),
        Request::BotList => table(
            &["bot", "tokens", "created", "id"],
            v["bots"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    let tokens: Vec<String> = b["tokens"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|t| {
                            let acts: Vec<String> = t["actions"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(s)
                                .collect();
                            format!("{} ({})", s(&t["id"]), acts.join(","))
                        })
                        .collect();
                    vec![
                        s(&b["user"]["username"]),
                        if tokens.is_empty() {
                            "-".into()
                        } else {
                            tokens.join(" ")
                        },
                        time(&b["created_at"]),
                        s(&b["user"]["id"]),
                    ]
                })
                .collect(),
        ),
        Request::BotTokenAdd { .. } => {
            say!(
                "token {} (id {}); it is shown only now:",
                s(&v["info"]["bot"]),
                s(&v["info"]["id"])
            )?;
            say!("{}", s(&v["token"]))
        }
        Request::BotTokenRevoke { id } => say!("revoked token {}", escape(id)),
        Request::BotRemove { name } => say!("removed bot {}", escape(name)),
        Request::HookAdd { .. } => {
            let h = &v["hook"];
            say!(
                "hook {} posts into {} as {}; its URL is shown only now:",
                s(&h["id"]),
                s(&h["room_name"]),
                s(&h["user"]["username"])
            )?;
            say!("{}", s(&h["url"]))
        }
        Request::HookList { .. } => table(
            &["id", "room", "account", "created"],
            v["hooks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| {
                    vec![
                        s(&h["id"]),
                        s(&h["room_name"]),
                        s(&h["user"]["username"]),
                        time(&h["created_at"]),
                    ]
                })
                .collect(),
        ),
        Request::HookRemove { id } => say!("removed hook {}", escape(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("0").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(time(&Value::from(0)), "1970-01-01 00:00");
        assert_eq!(time(&Value::from(1_763_841_600_000i64)), "2025-11-22 20:00");
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::parse_from([
            "confab",
            "user",
            "add",
            "root",
            "--role",
            "admin",
            "--data-dir",
            "/tmp/x",
        ]);
        assert!(matches!(
            cli.command,
            Command::User(UserCmd::Add {
                role: Role::Admin,
                ..
            })
        ));
        assert_eq!(cli.global.data_dir, Some(PathBuf::from("/tmp/x")));
        let cli = Cli::parse_from(["confab", "cluster", "status", "--json"]);
        assert!(matches!(cli.command, Command::Cluster(ClusterCmd::Status)));
        assert!(cli.global.json);
    }
}
