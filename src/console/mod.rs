//! The operator console: a live terminal view of a running server (rooms,
//! online users, throughput, events) with keyboard moderation.
//!
//! **The console reaches the hub only through the admin socket.** It sends
//! `Request::Snapshot` every second and moderation requests when asked,
//! through a [`Backend`], so it behaves the same inside `confab serve
//! --console` and as `confab console` beside a running server, and tests
//! drive it with a fake.
//!
//! Flow: terminal events → [`input`] → [`Action`] → [`State::update`] →
//! [`Effect`]; [`ui::draw`] renders the state and never changes it. The
//! run loop owns the terminal; requests go to the server from a second
//! future on the same task, so a slow answer never freezes the keyboard.

mod command;
mod help;
mod input;
mod layout;
mod snapshot;
mod state;
mod tui;
mod ui;

#[cfg(test)]
mod testdata;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossterm::event::Event;
use futures_util::{Stream, StreamExt};
use ratatui::Terminal;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::admin::{self, AdminError, Request};

pub use command::{Command, parse_command, parse_duration};
pub use snapshot::Snapshot;
pub use state::{Action, Effect, Mode, Pane, State};
pub use ui::draw;

/// How often the console asks for a snapshot.
pub const REFRESH: Duration = Duration::from_secs(1);

/// How long quitting waits for moderation requests already sent.
const DRAIN: Duration = Duration::from_secs(3);

/// The way to the server.
pub trait Backend {
    fn call(&mut self, req: &Request) -> impl Future<Output = Result<Value, AdminError>> + Send;
}

impl Backend for admin::Client {
    fn call(&mut self, req: &Request) -> impl Future<Output = Result<Value, AdminError>> + Send {
        admin::Client::call(self, req)
    }
}

/// The admin socket at a path, reconnecting after the connection broke (a
/// restarted server), so a long-running `confab console` recovers by
/// itself. A request that failed is not retried: it may have run.
pub struct SocketBackend {
    path: PathBuf,
    client: Option<admin::Client>,
}

impl SocketBackend {
    /// Connects now, or returns `None` when no server listens at `path`.
    pub async fn connect(path: &Path) -> Option<SocketBackend> {
        let client = admin::Client::connect(path).await?;
        Some(SocketBackend {
            path: path.to_path_buf(),
            client: Some(client),
        })
    }
}

impl Backend for SocketBackend {
    async fn call(&mut self, req: &Request) -> Result<Value, AdminError> {
        if self.client.is_none() {
            self.client = admin::Client::connect(&self.path).await;
        }
        let Some(client) = self.client.as_mut() else {
            return Err(AdminError {
                code: "unavailable".into(),
                message: format!("no server listens on {}", self.path.display()),
            });
        };
        let result = client.call(req).await;
        // The client reports a broken socket (and an unreadable answer,
        // after which the stream cannot be trusted) as "internal".
        if matches!(&result, Err(e) if e.code == "internal") {
            self.client = None;
        }
        result
    }
}

/// How the console ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The operator left; the server (if any) keeps running.
    Detached,
    /// The operator asked to stop the server this console runs in. Only
    /// returned when `run` was told it owns the server.
    StopServer,
}

/// Runs the console on the real terminal until the operator quits.
/// `owns_server`: the console runs inside `confab serve`, so `q` asks
/// whether to stop the server; the caller stops it on [`Exit::StopServer`].
pub async fn run(admin: impl Backend, owns_server: bool) -> io::Result<Exit> {
    let mut tui = tui::Tui::enter()?;
    let events = crossterm::event::EventStream::new();
    let exit = run_with(&mut tui.terminal, admin, events, owns_server, REFRESH).await;
    drop(tui);
    exit
}

/// The console's loop on any terminal and any event source; [`run`] with
/// a real terminal, tests with `TestBackend` and a channel of key events.
pub async fn run_with<B, A, E>(
    terminal: &mut Terminal<B>,
    admin: A,
    events: E,
    owns_server: bool,
    refresh: Duration,
) -> io::Result<Exit>
where
    B: ratatui::backend::Backend,
    B::Error: Send + Sync + 'static,
    A: Backend,
    E: Stream<Item = io::Result<Event>> + Unpin,
{
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (ans_tx, ans_rx) = mpsc::unbounded_channel();
    let worker = serve_requests(admin, req_rx, ans_tx);
    tokio::pin!(worker);
    let ui = ui_loop(
        terminal,
        State::new(owns_server),
        events,
        req_tx,
        ans_rx,
        refresh,
    );
    tokio::pin!(ui);
    let exit = tokio::select! {
        exit = &mut ui => exit?,
        () = &mut worker => return Err(io::Error::other("the admin connection task ended")),
    };
    // The loop has returned and dropped its sender: let a kick typed just
    // before quitting still reach the server, unless the server hangs.
    let _ = tokio::time::timeout(DRAIN, worker).await;
    Ok(exit)
}

type Answer = (Request, Result<Value, AdminError>);

/// Sends requests one at a time, in order, over the one connection.
async fn serve_requests<A: Backend>(
    mut admin: A,
    mut requests: mpsc::UnboundedReceiver<Request>,
    answers: mpsc::UnboundedSender<Answer>,
) {
    while let Some(req) = requests.recv().await {
        if answers.is_closed() && matches!(req, Request::Snapshot { .. }) {
            continue;
        }
        let result = admin.call(&req).await;
        let _ = answers.send((req, result));
    }
}

async fn ui_loop<B, E>(
    terminal: &mut Terminal<B>,
    mut state: State,
    mut events: E,
    requests: mpsc::UnboundedSender<Request>,
    mut answers: mpsc::UnboundedReceiver<Answer>,
    refresh: Duration,
) -> io::Result<Exit>
where
    B: ratatui::backend::Backend,
    B::Error: Send + Sync + 'static,
    E: Stream<Item = io::Result<Event>> + Unpin,
{
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let size = terminal.size().map_err(io::Error::other)?;
        if (size.width, size.height) != (state.area.width, state.area.height) {
            state.update(Action::Resize {
                width: size.width,
                height: size.height,
            });
        }
        terminal
            .draw(|frame| ui::draw(&state, frame))
            .map_err(io::Error::other)?;
        // Answers first: a key then acts on the freshest data.
        let action = tokio::select! {
            biased;
            Some((request, result)) = answers.recv() => Some(Action::Answer {
                request,
                result,
                now_ms: now_ms(),
            }),
            event = events.next() => match event {
                Some(Ok(event)) => input::action_for(&state.mode, &event),
                Some(Err(e)) => return Err(e),
                None => return Ok(Exit::Detached),
            },
            _ = tick.tick() => Some(Action::Tick { now_ms: now_ms() }),
        };
        let Some(action) = action else { continue };
        match state.update(action) {
            Some(Effect::Send(req)) => {
                let _ = requests.send(req);
            }
            Some(Effect::Quit { stop_server }) => {
                return Ok(if stop_server {
                    Exit::StopServer
                } else {
                    Exit::Detached
                });
            }
            None => {}
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
