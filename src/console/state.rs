//! The console's model and its one way to change: [`State::update`].
//!
//! Everything the screen shows is derived from this state, and every
//! change to it (a key, a tick, an answer from the server) arrives as an
//! [`Action`]. What the outside world must do in turn (send a request,
//! quit) comes back as an [`Effect`], so the whole behaviour can be driven
//! and checked without a terminal or a server.

use std::cmp::Ordering;
use std::collections::VecDeque;

use ratatui::layout::Rect;
use serde_json::Value;

use super::command::{self, Command};
use super::layout;
use super::snapshot::{Bans, MessageRow, Mutes, RoomMessages, RoomRow, Snapshot, UserRow};
use crate::admin::{AdminError, Request};

/// How many event log lines the console keeps.
pub const LOG_CAPACITY: usize = 500;
const HISTORY_CAPACITY: usize = 50;
/// How many of a room's latest messages its view reads (the server's
/// largest page).
pub const ROOM_MESSAGES: u64 = 200;
/// How much of a message a delete confirmation quotes.
const QUOTE_CHARS: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Rooms,
    Users,
    Events,
}

impl Pane {
    fn next(self) -> Pane {
        match self {
            Pane::Rooms => Pane::Users,
            Pane::Users => Pane::Events,
            Pane::Events => Pane::Rooms,
        }
    }

    fn prev(self) -> Pane {
        match self {
            Pane::Rooms => Pane::Events,
            Pane::Users => Pane::Rooms,
            Pane::Events => Pane::Users,
        }
    }
}

/// A sortable column: its title and whether it sorts largest first when
/// chosen (counts and rates do, names do not).
pub struct Column {
    pub title: &'static str,
    pub descending: bool,
}

const fn col(title: &'static str, descending: bool) -> Column {
    Column { title, descending }
}

pub const ROOM_COLUMNS: [Column; 6] = [
    col("name", false),
    col("vis", false),
    col("members", true),
    col("online", true),
    col("msg/s", true),
    col("last", true),
];

pub const USER_COLUMNS: [Column; 6] = [
    col("username", false),
    col("role", false),
    col("conns", true),
    col("rooms", true),
    col("since", true),
    col("address", false),
];

/// What the console is doing with the keyboard.
#[derive(Debug, Clone)]
pub enum Mode {
    Normal,
    /// Typing the focused pane's filter; it applies as it is typed.
    Filter,
    /// Typing after `:`. `recall` is the history entry shown, if any.
    Command {
        line: String,
        recall: Option<usize>,
    },
    Confirm(Pending),
    /// `q` in a console that owns the server.
    ConfirmQuit,
    Help {
        scroll: u16,
    },
    /// The bans and mutes in force, over the panes; `u` lifts the
    /// selected one.
    Restrictions,
    /// A room's latest messages, over the panes; `d` deletes the
    /// selected one.
    Room,
}

/// The room whose messages the room view shows.
#[derive(Debug, Clone, Default)]
pub struct RoomView {
    /// What the request names the room by: its id (a DM's name is not
    /// unique), or its name when the snapshot had no id.
    pub key: String,
    pub name: String,
    /// Oldest first, as the server pages them.
    pub messages: Vec<MessageRow>,
    /// Older messages exist than those read.
    pub has_more: bool,
    pub view: TableView,
    /// False until the first read since the view opened.
    pub loaded: bool,
    /// Why reading failed, until a read succeeds.
    pub error: Option<String>,
    in_flight: bool,
}

/// A ban or a mute in force, as the bans and mutes view lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    pub username: String,
    pub kind: RestrictionKind,
    /// Milliseconds since the epoch; None: until lifted.
    pub until: Option<i64>,
    pub reason: Option<String>,
    /// Who muted (bans do not record it).
    pub by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RestrictionKind {
    Ban,
    /// Muted in this room; None: everywhere.
    Mute(Option<String>),
}

impl Restriction {
    /// What lifts it.
    pub fn lift(&self) -> Request {
        match &self.kind {
            RestrictionKind::Ban => Request::Unban {
                username: self.username.clone(),
            },
            RestrictionKind::Mute(room) => Request::Unmute {
                username: self.username.clone(),
                room: room.clone(),
            },
        }
    }

    /// Identity across refreshes, so the selection stays on its line.
    fn key(&self) -> String {
        match &self.kind {
            RestrictionKind::Ban => format!("ban {}", self.username),
            RestrictionKind::Mute(None) => format!("mute {}", self.username),
            RestrictionKind::Mute(Some(r)) => format!("mute {} #{r}", self.username),
        }
    }
}

/// A destructive request waiting for y/n.
#[derive(Debug, Clone)]
pub struct Pending {
    pub question: String,
    pub request: Request,
    /// The same request as a command line, for `e` (edit before sending).
    pub command: String,
    /// Asked from the bans and mutes view, which y or n returns to.
    pub from_restrictions: bool,
    /// Asked from the room view, which y or n returns to.
    pub from_room: bool,
}

#[derive(Debug)]
pub enum Action {
    FocusNext,
    FocusPrev,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    StartFilter,
    ClearFilter,
    StartCommand,
    Input(char),
    Backspace,
    ClearInput,
    Submit,
    CycleSort,
    ReverseSort,
    Kick,
    Ban,
    Mute,
    Unban,
    /// Open (or close) the bans and mutes view.
    Restrictions,
    /// Lift the selected ban or mute in that view.
    Lift,
    CloseRoom,
    /// Open the selected room's messages.
    OpenRoom,
    /// Delete the selected message in the room view.
    DeleteMessage,
    Help,
    Quit,
    Yes,
    No,
    Edit,
    Cancel,
    Resize {
        width: u16,
        height: u16,
    },
    /// Time passes; also the moment to ask for a fresh snapshot.
    Tick {
        now_ms: i64,
    },
    /// The server answered a request the console sent.
    Answer {
        request: Request,
        result: Result<Value, AdminError>,
        now_ms: i64,
    },
}

#[derive(Debug)]
pub enum Effect {
    Send(Request),
    Quit { stop_server: bool },
}

#[derive(Debug, Clone)]
pub struct LogLine {
    /// Increases by one per line, so a selection survives lines falling
    /// off the front of the ring.
    pub id: u64,
    pub at: i64,
    /// The server's event kind (connect, join, kick, …) or, for the
    /// console's own lines, ok, error or info.
    pub kind: String,
    pub text: String,
    /// An audit entry's action and target, to recognise the server's
    /// event for the same action.
    pub audited: Option<(String, String)>,
}

/// A line for the bottom bar until the next key.
#[derive(Debug, Clone)]
pub struct Flash {
    pub text: String,
    pub error: bool,
}

/// One pane's window onto its rows. Only `rows` (indices into the
/// snapshot, filtered and sorted) grows with the data; drawing reads the
/// slice from `offset` that fits.
#[derive(Debug, Clone, Default)]
pub struct TableView {
    pub filter: String,
    pub sort: usize,
    pub descending: bool,
    pub rows: Vec<usize>,
    pub selected: usize,
    pub offset: usize,
    /// The selected row's identity, so the selection follows a user or a
    /// room when a refresh reorders the table.
    key: Option<String>,
    /// Keep the last row selected as rows arrive (the event log's tail).
    follow: bool,
    /// The event log's selected line: indices shift as old lines fall
    /// off the ring, ids do not.
    line_id: Option<u64>,
}

impl TableView {
    /// Whether new lines keep the last one selected (the event log).
    pub fn following(&self) -> bool {
        self.follow
    }

    fn set_rows<'a>(&mut self, rows: Vec<usize>, key_at: impl Fn(usize) -> &'a str, page: usize) {
        self.rows = rows;
        let found = self
            .key
            .as_deref()
            .and_then(|k| self.rows.iter().position(|&i| key_at(i) == k));
        self.selected =
            found.unwrap_or_else(|| self.selected.min(self.rows.len().saturating_sub(1)));
        self.key = self.rows.get(self.selected).map(|&i| key_at(i).to_string());
        self.scroll_into_view(page);
    }

    /// Moves the selection as `action` says and keeps it on screen;
    /// returns the selected row (an index into the data), or None with no
    /// rows. With `follow`, landing on the last row keeps following rows
    /// as they arrive.
    fn move_by(&mut self, action: &Action, page: usize, follow: bool) -> Option<usize> {
        let last = self.rows.len().checked_sub(1)?;
        self.selected = step(self.selected, last, page, action);
        self.follow = follow && self.selected == last;
        self.scroll_into_view(page);
        Some(self.rows[self.selected])
    }

    fn scroll_into_view(&mut self, page: usize) {
        let page = page.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + page {
            self.offset = self.selected + 1 - page;
        }
        self.offset = self.offset.min(self.rows.len().saturating_sub(page));
    }
}

pub struct State {
    /// The console runs inside `confab serve`, so quitting may stop it.
    pub owns_server: bool,
    pub snapshot: Snapshot,
    /// False until the first snapshot arrives.
    pub connected: bool,
    pub events_after: u64,
    /// The last audit entry shown in the log.
    pub audit_after: u64,
    pub log: VecDeque<LogLine>,
    next_log_id: u64,
    pub now_ms: i64,
    pub last_update_ms: Option<i64>,
    /// Why the last snapshot failed, until one succeeds.
    pub last_error: Option<String>,
    snapshot_in_flight: bool,
    pub focus: Pane,
    pub rooms: TableView,
    pub users: TableView,
    pub events: TableView,
    /// Bans and mutes in force, as last read (only while the view is open).
    pub restrictions: Vec<Restriction>,
    pub restricted: TableView,
    /// Why reading them failed, until a read succeeds.
    pub restrictions_error: Option<String>,
    /// False until the first read since the view opened.
    pub restrictions_loaded: bool,
    /// A `Bans` (then `Mutes`) request is on its way.
    restrictions_in_flight: bool,
    bans: Bans,
    /// The room view's room and messages, while it is open.
    pub room: Option<RoomView>,
    pub mode: Mode,
    pub flash: Option<Flash>,
    history: Vec<String>,
    /// The terminal's size, for page sizes; drawing uses the frame's.
    pub area: Rect,
}

impl State {
    pub fn new(owns_server: bool) -> State {
        State {
            owns_server,
            snapshot: Snapshot::default(),
            connected: false,
            events_after: 0,
            audit_after: 0,
            log: VecDeque::with_capacity(LOG_CAPACITY),
            next_log_id: 0,
            now_ms: 0,
            last_update_ms: None,
            last_error: None,
            snapshot_in_flight: false,
            focus: Pane::Users,
            // The busiest rooms first: with thousands of rooms, those are
            // the ones an operator watches.
            rooms: TableView {
                sort: 3,
                descending: true,
                ..TableView::default()
            },
            users: TableView::default(),
            events: TableView {
                follow: true,
                ..TableView::default()
            },
            restrictions: Vec::new(),
            restricted: TableView::default(),
            restrictions_error: None,
            restrictions_loaded: false,
            restrictions_in_flight: false,
            bans: Bans::default(),
            room: None,
            mode: Mode::Normal,
            flash: None,
            history: Vec::new(),
            area: Rect::new(0, 0, 80, 24),
        }
    }

    pub fn update(&mut self, action: Action) -> Option<Effect> {
        match action {
            Action::Tick { now_ms } => {
                self.now_ms = now_ms;
                self.request_snapshot()
            }
            Action::Resize { width, height } => {
                self.area = Rect::new(0, 0, width, height);
                for pane in [Pane::Rooms, Pane::Users, Pane::Events] {
                    let page = self.page(pane);
                    self.view_mut(pane).scroll_into_view(page);
                }
                let page = self.restrictions_page();
                self.restricted.scroll_into_view(page);
                let page = self.room_page();
                if let Some(room) = &mut self.room {
                    room.view.scroll_into_view(page);
                }
                None
            }
            Action::Answer {
                request,
                result,
                now_ms,
            } => {
                self.now_ms = now_ms;
                self.answer(request, result)
            }
            key => {
                self.flash = None;
                self.key(key)
            }
        }
    }

    pub fn view(&self, pane: Pane) -> &TableView {
        match pane {
            Pane::Rooms => &self.rooms,
            Pane::Users => &self.users,
            Pane::Events => &self.events,
        }
    }

    fn view_mut(&mut self, pane: Pane) -> &mut TableView {
        match pane {
            Pane::Rooms => &mut self.rooms,
            Pane::Users => &mut self.users,
            Pane::Events => &mut self.events,
        }
    }

    pub fn selected_user(&self) -> Option<&UserRow> {
        let i = *self.users.rows.get(self.users.selected)?;
        self.snapshot.users.get(i)
    }

    pub fn selected_room(&self) -> Option<&RoomRow> {
        let i = *self.rooms.rows.get(self.rooms.selected)?;
        self.snapshot.rooms.get(i)
    }

    /// Rows a pane shows at the current terminal size.
    fn page(&self, pane: Pane) -> usize {
        visible_rows(pane, &layout::layout(self.area)).max(1)
    }

    fn request_snapshot(&mut self) -> Option<Effect> {
        if self.snapshot_in_flight {
            return None;
        }
        self.snapshot_in_flight = true;
        Some(Effect::Send(Request::Snapshot {
            events_after: self.events_after,
        }))
    }

    pub fn selected_restriction(&self) -> Option<&Restriction> {
        let i = *self.restricted.rows.get(self.restricted.selected)?;
        self.restrictions.get(i)
    }

    /// Rows the bans and mutes view shows at the current terminal size.
    fn restrictions_page(&self) -> usize {
        layout::restrictions_rows(self.area).max(1)
    }

    /// Bans, then (when they arrive) mutes: one request at a time, like
    /// every other.
    fn request_restrictions(&mut self) -> Option<Effect> {
        if self.restrictions_in_flight {
            return None;
        }
        self.restrictions_in_flight = true;
        Some(Effect::Send(Request::Bans))
    }

    /// Rows the room view shows at the current terminal size.
    fn room_page(&self) -> usize {
        layout::room_rows(self.area).max(1)
    }

    pub fn selected_message(&self) -> Option<&MessageRow> {
        let room = self.room.as_ref()?;
        let i = *room.view.rows.get(room.view.selected)?;
        room.messages.get(i)
    }

    fn request_room_messages(&mut self) -> Option<Effect> {
        let room = self.room.as_mut()?;
        if room.in_flight {
            return None;
        }
        room.in_flight = true;
        Some(Effect::Send(Request::RoomMessages {
            room: room.key.clone(),
            before: None,
            limit: Some(ROOM_MESSAGES),
        }))
    }

    /// The room a rooms-pane key acts on; `None` (with the reason shown)
    /// when another pane has the focus or no room is selected.
    fn room_for_key(&mut self, what: &str) -> Option<RoomRow> {
        if self.focus != Pane::Rooms {
            self.refuse(&format!("{what}: Tab to the rooms pane first"));
            return None;
        }
        let room = self.selected_room().cloned();
        if room.is_none() {
            self.refuse("no room selected");
        }
        room
    }

    fn open_room(&mut self) -> Option<Effect> {
        let r = self.room_for_key("Enter opens the selected room")?;
        let key = if r.id.is_empty() {
            r.name.clone()
        } else {
            r.id
        };
        let name = r.name;
        self.room = Some(RoomView {
            key,
            name,
            view: TableView {
                // Newest at the bottom, and selected when they arrive.
                follow: true,
                ..TableView::default()
            },
            ..RoomView::default()
        });
        self.mode = Mode::Room;
        self.request_room_messages()
    }

    fn apply_room_messages(&mut self, request: &Request, result: Result<Value, AdminError>) {
        let page = self.room_page();
        let Some(room) = self.room.as_mut() else {
            return;
        };
        // An answer for a room closed since is not this view's.
        if !matches!(request, Request::RoomMessages { room: key, .. } if *key == room.key) {
            return;
        }
        room.in_flight = false;
        match result {
            Ok(v) => {
                let answer = RoomMessages::from_value(v);
                room.messages = answer.messages;
                room.has_more = answer.has_more;
                room.loaded = true;
                room.error = None;
                let view = &mut room.view;
                let rows: Vec<usize> = (0..room.messages.len()).collect();
                if view.follow {
                    view.rows = rows;
                    view.selected = view.rows.len().saturating_sub(1);
                    view.key = room.messages.last().map(|m| m.id.clone());
                    view.scroll_into_view(page);
                } else {
                    let data = &room.messages;
                    view.set_rows(rows, |i| data[i].id.as_str(), page);
                }
            }
            Err(e) => room.error = Some(e.message),
        }
    }

    fn room_key(&mut self, action: Action) -> Option<Effect> {
        self.mode = Mode::Room;
        match action {
            Action::Cancel | Action::OpenRoom => {
                self.mode = Mode::Normal;
                self.room = None;
            }
            Action::DeleteMessage => {
                let Some(m) = self.selected_message() else {
                    return self.refuse("no message selected");
                };
                if m.deleted {
                    return self.refuse("that message is already deleted");
                }
                let request = Request::DeleteMessage {
                    id: m.id.clone(),
                    reason: None,
                };
                let quote = shorten(&m.text, QUOTE_CHARS);
                let question = if quote.is_empty() {
                    format!(
                        "Delete {}'s message (no text, {} file(s))?",
                        m.sender.username,
                        m.attachments.len()
                    )
                } else {
                    format!("Delete {}'s message “{quote}”?", m.sender.username)
                };
                self.confirm(request);
                if let Mode::Confirm(p) = &mut self.mode {
                    p.question = question;
                    p.from_room = true;
                }
            }
            Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Home
            | Action::End => {
                let page = self.room_page();
                if let Some(room) = self.room.as_mut()
                    && let Some(i) = room.view.move_by(&action, page, true)
                {
                    room.view.key = room.messages.get(i).map(|m| m.id.clone());
                }
            }
            _ => {}
        }
        None
    }

    fn answer(&mut self, request: Request, result: Result<Value, AdminError>) -> Option<Effect> {
        if matches!(request, Request::RoomMessages { .. }) {
            self.apply_room_messages(&request, result);
            return None;
        }
        let lists = matches!(request, Request::Bans | Request::Mutes);
        match result {
            Ok(v) if matches!(request, Request::Bans) => {
                self.bans = Bans::from_value(v);
                Some(Effect::Send(Request::Mutes))
            }
            Ok(v) if lists => {
                self.restrictions_in_flight = false;
                self.apply_restrictions(Mutes::from_value(v));
                None
            }
            Err(e) if lists => {
                self.restrictions_in_flight = false;
                self.restrictions_error = Some(e.message);
                None
            }
            result => self.answer_other(request, result),
        }
    }

    fn apply_restrictions(&mut self, mutes: Mutes) {
        let bans = self.bans.bans.iter().map(|b| Restriction {
            username: b.username.clone(),
            kind: RestrictionKind::Ban,
            until: b.until,
            reason: b.reason.clone(),
            by: None,
        });
        let mutes = mutes.mutes.into_iter().map(|m| Restriction {
            username: m.username,
            kind: RestrictionKind::Mute(m.room),
            until: m.until,
            reason: m.reason,
            by: (!m.by.is_empty()).then_some(m.by),
        });
        let mut all: Vec<Restriction> = bans.chain(mutes).collect();
        all.sort_by(|a, b| (&a.username, &a.kind).cmp(&(&b.username, &b.kind)));
        self.restrictions = all;
        self.restrictions_error = None;
        self.restrictions_loaded = true;
        let page = self.restrictions_page();
        let data = &self.restrictions;
        let keys: Vec<String> = data.iter().map(Restriction::key).collect();
        self.restricted
            .set_rows((0..data.len()).collect(), |i| keys[i].as_str(), page);
    }

    fn answer_other(
        &mut self,
        request: Request,
        result: Result<Value, AdminError>,
    ) -> Option<Effect> {
        if let Request::Snapshot { .. } = request {
            self.snapshot_in_flight = false;
            match result {
                Ok(v) => self.apply_snapshot(Snapshot::from_value(v)),
                Err(e) => {
                    // Once per distinct failure: a down server would
                    // otherwise fill the log once a second.
                    if self.last_error.as_deref() != Some(e.message.as_str()) {
                        self.push_log("error", format!("no snapshot: {}", e.message));
                        self.refresh_log();
                    }
                    self.last_error = Some(e.message);
                }
            }
            // While the view is open, its lists refresh with the rest.
            if matches!(self.mode, Mode::Restrictions) {
                return self.request_restrictions();
            }
            if matches!(self.mode, Mode::Room) {
                return self.request_room_messages();
            }
            return None;
        }
        if let (Request::WebhookList, Ok(v)) = (&request, &result) {
            let lines = webhook_lines(v);
            let text = format!("{} webhook(s)", lines.len());
            for line in lines {
                self.push_log("info", line);
            }
            self.refresh_log();
            self.flash = Some(Flash { text, error: false });
            return None;
        }
        let (text, error) = match result {
            Ok(_) => (outcome(&request), false),
            Err(e) => (
                format!("error: {} ({})", e.message, summary(&request)),
                true,
            ),
        };
        // A success is logged by its audit entry, which the snapshot
        // asked for below brings; a failure has no entry, so it is
        // logged here.
        if error {
            self.push_log("error", text.clone());
            self.refresh_log();
        }
        self.flash = Some(Flash { text, error });
        // Show the effect of the command without waiting for the tick.
        self.request_snapshot()
    }

    fn apply_snapshot(&mut self, mut snap: Snapshot) {
        if self.connected && snap.server.uptime_secs < self.snapshot.server.uptime_secs {
            // A new server process numbers its events from the start.
            self.events_after = 0;
            self.push_log("info", "the server restarted".into());
        }
        if self.last_error.take().is_some() {
            self.push_log("info", "the server answers again".into());
        }
        // The audit log's latest entries join the event log, so every
        // moderation and admin action, from anywhere, shows here. The
        // server also reports most of those actions as events: the audit
        // entry names who did it and why, so it is the one line kept.
        let mut audit = std::mem::take(&mut snap.audit);
        audit.sort_by_key(|a| a.seq);
        let mut fresh: Vec<LogLine> = Vec::new();
        for a in audit {
            if a.seq > self.audit_after {
                self.audit_after = a.seq;
                let mut text = format!("audit: {} {} {}", a.actor, a.action, a.target);
                if let Some(r) = a.reason.filter(|r| !r.is_empty()) {
                    text.push_str(&format!(" ({r})"));
                }
                let mut line = self.new_line(a.at, "audit".into(), text);
                line.audited = Some((a.action, a.target));
                fresh.push(line);
            }
        }
        // An echo already shown (its entry came in a later snapshot)
        // gives way to the entry.
        self.log.retain(|l| !fresh.iter().any(|a| echoes(l, a)));
        let mut events = std::mem::take(&mut snap.events);
        events.sort_by_key(|e| e.seq);
        for e in events {
            if e.seq > self.events_after {
                self.events_after = e.seq;
                let line = self.new_line(e.at, e.kind, e.text);
                let echo = fresh
                    .iter()
                    .chain(self.log.iter())
                    .any(|a| echoes(&line, a));
                if !echo {
                    fresh.push(line);
                }
            }
        }
        // A backlog (the audit log at attach, a late batch) may be older
        // than lines already shown: each line goes to its place in time.
        fresh.sort_by_key(|l| l.at);
        for line in fresh {
            self.insert_line(line);
        }
        self.snapshot = snap;
        self.connected = true;
        self.last_update_ms = Some(self.now_ms);
        self.refresh_rooms();
        self.refresh_users();
        self.refresh_log();
    }

    fn push_log(&mut self, kind: &str, text: String) {
        self.push_line(self.now_ms, kind.to_string(), text);
    }

    fn push_line(&mut self, at: i64, kind: String, text: String) {
        let line = self.new_line(at, kind, text);
        self.insert_line(line);
    }

    fn new_line(&mut self, at: i64, kind: String, text: String) -> LogLine {
        let id = self.next_log_id;
        self.next_log_id += 1;
        LogLine {
            id,
            at,
            kind,
            text,
            audited: None,
        }
    }

    /// Adds `line` after every line at or before its time, so the log
    /// reads in time order whatever order lines arrive in. A full ring
    /// drops its oldest line, which may be the new one.
    fn insert_line(&mut self, line: LogLine) {
        let at = self.log.partition_point(|l| l.at <= line.at);
        if self.log.len() >= LOG_CAPACITY {
            if at == 0 {
                return;
            }
            self.log.pop_front();
            self.log.insert(at - 1, line);
        } else {
            self.log.insert(at, line);
        }
    }

    fn refresh(&mut self, pane: Pane) {
        match pane {
            Pane::Rooms => self.refresh_rooms(),
            Pane::Users => self.refresh_users(),
            Pane::Events => self.refresh_log(),
        }
    }

    fn refresh_rooms(&mut self) {
        let page = self.page(Pane::Rooms);
        let data = &self.snapshot.rooms;
        let view = &mut self.rooms;
        let needle = view.filter.as_str();
        let mut rows: Vec<usize> = (0..data.len())
            .filter(|&i| {
                let r = &data[i];
                contains_ci(&r.name, needle)
                    || contains_ci(&r.visibility, needle)
                    || contains_ci(&r.kind, needle)
            })
            .collect();
        let (column, descending) = (view.sort, view.descending);
        rows.sort_by(|&a, &b| {
            let (x, y) = (&data[a], &data[b]);
            let o = compare_rooms(x, y, column);
            let o = if descending { o.reverse() } else { o };
            o.then_with(|| x.name.cmp(&y.name))
                .then_with(|| x.id.cmp(&y.id))
        });
        view.set_rows(rows, |i| room_key(&data[i]), page);
    }

    fn refresh_users(&mut self) {
        let page = self.page(Pane::Users);
        let data = &self.snapshot.users;
        let view = &mut self.users;
        let needle = view.filter.as_str();
        let mut rows: Vec<usize> = (0..data.len())
            .filter(|&i| {
                let u = &data[i];
                contains_ci(&u.username, needle)
                    || contains_ci(&u.role, needle)
                    || u.addr.as_deref().is_some_and(|a| contains_ci(a, needle))
            })
            .collect();
        let (column, descending) = (view.sort, view.descending);
        rows.sort_by(|&a, &b| {
            let (x, y) = (&data[a], &data[b]);
            let o = compare_users(x, y, column);
            let o = if descending { o.reverse() } else { o };
            o.then_with(|| x.username.cmp(&y.username))
        });
        view.set_rows(rows, |i| data[i].username.as_str(), page);
    }

    fn refresh_log(&mut self) {
        let page = self.page(Pane::Events);
        let data = &self.log;
        let view = &mut self.events;
        let needle = view.filter.as_str();
        let rows: Vec<usize> = (0..data.len())
            .filter(|&i| contains_ci(&data[i].kind, needle) || contains_ci(&data[i].text, needle))
            .collect();
        view.rows = rows;
        view.selected = if view.follow {
            view.rows.len().saturating_sub(1)
        } else {
            view.line_id
                .and_then(|id| view.rows.iter().position(|&i| data[i].id == id))
                .unwrap_or_else(|| view.selected.min(view.rows.len().saturating_sub(1)))
        };
        view.line_id = view.rows.get(view.selected).map(|&i| data[i].id);
        view.scroll_into_view(page);
    }

    fn key(&mut self, action: Action) -> Option<Effect> {
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal(action),
            Mode::Filter => self.filter_key(action),
            Mode::Command { line, recall } => self.command_key(action, line, recall),
            Mode::Confirm(pending) => match action {
                Action::Yes => {
                    self.back_from(&pending);
                    self.send(pending.request)
                }
                Action::No | Action::Cancel => {
                    self.back_from(&pending);
                    self.flash = Some(Flash {
                        text: "cancelled".into(),
                        error: false,
                    });
                    None
                }
                Action::Edit => {
                    // The command line leaves the room view for good.
                    if pending.from_room {
                        self.room = None;
                    }
                    self.mode = Mode::Command {
                        line: pending.command,
                        recall: None,
                    };
                    None
                }
                _ => {
                    self.mode = Mode::Confirm(pending);
                    None
                }
            },
            Mode::ConfirmQuit => match action {
                Action::Yes => Some(Effect::Quit { stop_server: true }),
                Action::No => Some(Effect::Quit { stop_server: false }),
                Action::Cancel => None,
                _ => {
                    self.mode = Mode::ConfirmQuit;
                    None
                }
            },
            Mode::Help { scroll } => {
                let last = layout::help_max_scroll(self.area);
                let scroll = match action {
                    Action::Cancel | Action::Help => return None,
                    Action::Up => scroll.saturating_sub(1),
                    Action::Down => scroll.saturating_add(1),
                    Action::PageUp => scroll.saturating_sub(10),
                    Action::PageDown => scroll.saturating_add(10),
                    Action::Home => 0,
                    Action::End => last,
                    _ => scroll,
                };
                self.mode = Mode::Help {
                    scroll: scroll.min(last),
                };
                None
            }
            Mode::Restrictions => self.restrictions_key(action),
            Mode::Room => self.room_key(action),
        }
    }

    fn open_restrictions(&mut self) -> Option<Effect> {
        self.mode = Mode::Restrictions;
        self.restrictions_loaded = false;
        self.request_restrictions()
    }

    fn restrictions_key(&mut self, action: Action) -> Option<Effect> {
        self.mode = Mode::Restrictions;
        match action {
            Action::Cancel | Action::Restrictions => self.mode = Mode::Normal,
            Action::Lift => {
                let Some(r) = self.selected_restriction() else {
                    return self.refuse("nothing to lift");
                };
                let request = r.lift();
                self.confirm(request);
                if let Mode::Confirm(p) = &mut self.mode {
                    p.from_restrictions = true;
                }
            }
            Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Home
            | Action::End => {
                let page = self.restrictions_page();
                if let Some(i) = self.restricted.move_by(&action, page, false) {
                    self.restricted.key = self.restrictions.get(i).map(Restriction::key);
                }
            }
            _ => {}
        }
        None
    }

    fn normal(&mut self, action: Action) -> Option<Effect> {
        match action {
            Action::FocusNext => self.focus = self.focus.next(),
            Action::FocusPrev => self.focus = self.focus.prev(),
            Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Home
            | Action::End => self.move_selection(action),
            Action::StartFilter => self.mode = Mode::Filter,
            Action::ClearFilter => {
                let focus = self.focus;
                self.view_mut(focus).filter.clear();
                self.refresh(focus);
            }
            Action::StartCommand => {
                self.mode = Mode::Command {
                    line: String::new(),
                    recall: None,
                }
            }
            Action::CycleSort | Action::ReverseSort => {
                self.sort(matches!(action, Action::CycleSort))
            }
            Action::Kick => {
                let name = self.target_user()?;
                self.confirm(Request::Kick {
                    username: name.clone(),
                    reason: None,
                });
            }
            Action::Ban => {
                let name = self.target_user()?;
                self.confirm(Request::Ban {
                    username: name.clone(),
                    reason: None,
                    duration_secs: None,
                });
            }
            Action::Mute => {
                let name = self.target_user()?;
                self.confirm(Request::Mute {
                    username: name,
                    room: None,
                    reason: None,
                    duration_secs: None,
                });
            }
            Action::Unban => {
                let name = self.target_user()?;
                self.confirm(Request::Unban { username: name });
            }
            Action::Restrictions => return self.open_restrictions(),
            Action::CloseRoom => {
                let room = self.room_for_key("x closes the selected room")?;
                let room = if room.name.is_empty() {
                    room.id
                } else {
                    room.name
                };
                self.confirm(Request::RoomDelete { room });
            }
            Action::OpenRoom => return self.open_room(),
            Action::Help => self.mode = Mode::Help { scroll: 0 },
            Action::Quit => return self.quit(),
            _ => {}
        }
        None
    }

    fn filter_key(&mut self, action: Action) -> Option<Effect> {
        let focus = self.focus;
        self.mode = Mode::Filter;
        match action {
            Action::Input(c) => self.view_mut(focus).filter.push(c),
            Action::Backspace => {
                self.view_mut(focus).filter.pop();
            }
            Action::ClearInput => self.view_mut(focus).filter.clear(),
            Action::Submit => {
                self.mode = Mode::Normal;
                return None;
            }
            Action::Cancel => {
                self.mode = Mode::Normal;
                self.view_mut(focus).filter.clear();
            }
            Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Home
            | Action::End => {
                self.move_selection(action);
                return None;
            }
            _ => return None,
        }
        self.refresh(focus);
        None
    }

    fn command_key(
        &mut self,
        action: Action,
        mut line: String,
        mut recall: Option<usize>,
    ) -> Option<Effect> {
        match action {
            Action::Input(c) => line.push(c),
            // Backspace on an empty line leaves the command line, as in vi.
            Action::Backspace if line.is_empty() => return None,
            Action::Backspace => {
                line.pop();
            }
            Action::ClearInput => line.clear(),
            Action::Up if !self.history.is_empty() => {
                let i = recall.map_or(self.history.len() - 1, |i| i.saturating_sub(1));
                recall = Some(i);
                line = self.history[i].clone();
            }
            Action::Down => match recall {
                Some(i) if i + 1 < self.history.len() => {
                    recall = Some(i + 1);
                    line = self.history[i + 1].clone();
                }
                Some(_) => {
                    recall = None;
                    line.clear();
                }
                None => {}
            },
            Action::Submit => return self.run_command(line),
            Action::Cancel => return None,
            _ => {}
        }
        self.mode = Mode::Command { line, recall };
        None
    }

    fn run_command(&mut self, line: String) -> Option<Effect> {
        let line = line.trim().to_string();
        if line.is_empty() {
            return None;
        }
        if self.history.last() != Some(&line) {
            if self.history.len() >= HISTORY_CAPACITY {
                self.history.remove(0);
            }
            self.history.push(line.clone());
        }
        let rooms = &self.snapshot.rooms;
        let parsed = command::parse_command(&line, |word| {
            rooms.iter().any(|r| r.name.eq_ignore_ascii_case(word))
        });
        match parsed {
            Ok(None) => None,
            Ok(Some(Command::Quit)) => self.quit(),
            Ok(Some(Command::Help)) => {
                self.mode = Mode::Help { scroll: 0 };
                None
            }
            Ok(Some(Command::Restrictions)) => self.open_restrictions(),
            Ok(Some(Command::Send(request))) if needs_confirmation(&request) => {
                self.mode = Mode::Confirm(Pending {
                    question: question(&request),
                    request,
                    command: line,
                    from_restrictions: false,
                    from_room: false,
                });
                None
            }
            Ok(Some(Command::Send(request))) => self.send(request),
            Err(e) => {
                self.push_log("error", e.clone());
                self.refresh_log();
                self.flash = Some(Flash {
                    text: e,
                    error: true,
                });
                None
            }
        }
    }

    fn quit(&mut self) -> Option<Effect> {
        if self.owns_server {
            self.mode = Mode::ConfirmQuit;
            None
        } else {
            Some(Effect::Quit { stop_server: false })
        }
    }

    fn send(&mut self, request: Request) -> Option<Effect> {
        self.flash = Some(Flash {
            text: format!("{}…", summary(&request)),
            error: false,
        });
        Some(Effect::Send(request))
    }

    fn confirm(&mut self, request: Request) {
        let command = command_line(&request);
        self.mode = Mode::Confirm(Pending {
            question: question(&request),
            request,
            command,
            from_restrictions: false,
            from_room: false,
        });
    }

    /// The mode a confirmation returns to once answered.
    fn back_from(&mut self, pending: &Pending) {
        if pending.from_restrictions {
            self.mode = Mode::Restrictions;
        } else if pending.from_room && self.room.is_some() {
            self.mode = Mode::Room;
        }
    }

    /// The selected user's name for a key that acts on it, or why not.
    fn target_user(&mut self) -> Option<String> {
        if self.focus != Pane::Users {
            self.refuse("k b m u act on the selected user: Tab to the users pane first");
            return None;
        }
        match self.selected_user() {
            Some(u) => Some(u.username.clone()),
            None => {
                self.refuse("no user selected");
                None
            }
        }
    }

    fn refuse(&mut self, why: &str) -> Option<Effect> {
        self.flash = Some(Flash {
            text: why.to_string(),
            error: true,
        });
        None
    }

    fn move_selection(&mut self, action: Action) {
        let pane = self.focus;
        let page = self.page(pane);
        let Some(i) = self
            .view_mut(pane)
            .move_by(&action, page, pane == Pane::Events)
        else {
            return;
        };
        match pane {
            Pane::Rooms => {
                self.rooms.key = self.snapshot.rooms.get(i).map(|r| room_key(r).to_string())
            }
            Pane::Users => self.users.key = self.snapshot.users.get(i).map(|u| u.username.clone()),
            Pane::Events => self.events.line_id = self.log.get(i).map(|l| l.id),
        }
    }

    fn sort(&mut self, cycle: bool) {
        let focus = self.focus;
        let columns: &[Column] = match focus {
            Pane::Rooms => &ROOM_COLUMNS,
            Pane::Users => &USER_COLUMNS,
            Pane::Events => {
                self.refuse("the event log stays in time order");
                return;
            }
        };
        let view = self.view_mut(focus);
        if cycle {
            view.sort = (view.sort + 1) % columns.len();
            view.descending = columns[view.sort].descending;
        } else {
            view.descending = !view.descending;
        }
        let text = format!(
            "sorted by {} {}",
            columns[view.sort].title,
            if view.descending { "↓" } else { "↑" }
        );
        self.refresh(focus);
        self.flash = Some(Flash { text, error: false });
    }
}

/// `text` on one line, cut to `max` characters with an ellipsis.
fn shorten(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// How far apart an action's event and its audit entry may be stamped.
const ECHO_WINDOW_MS: i64 = 5_000;

/// Whether `event` is the server's event for the action `audit` records.
fn echoes(event: &LogLine, audit: &LogLine) -> bool {
    let Some((action, target)) = &audit.audited else {
        return false;
    };
    if event.audited.is_some() {
        return false;
    }
    let related = match event.kind.as_str() {
        "kick" => action == "kick",
        "ban" => action == "ban" || action == "unban",
        "mute" => action == "mute" || action == "unmute",
        "delete" => action == "delete_message",
        "room" => action == "room_delete",
        // The target is a room or "everyone", not in the event's text.
        "announce" => return action == "announce" && near(event, audit),
        _ => false,
    };
    related && near(event, audit) && event.text.contains(target.as_str())
}

fn near(a: &LogLine, b: &LogLine) -> bool {
    a.at.abs_diff(b.at) <= ECHO_WINDOW_MS as u64
}

/// Where a movement key takes a selection in rows `0..=last`.
fn step(sel: usize, last: usize, page: usize, action: &Action) -> usize {
    match action {
        Action::Up => sel.saturating_sub(1),
        Action::Down => sel.saturating_add(1).min(last),
        Action::PageUp => sel.saturating_sub(page),
        Action::PageDown => sel.saturating_add(page).min(last),
        Action::Home => 0,
        Action::End => last,
        _ => sel,
    }
}

fn room_key(r: &RoomRow) -> &str {
    if r.id.is_empty() { &r.name } else { &r.id }
}

/// Case-insensitive for ASCII, without allocating: this runs over every
/// row on every refresh.
fn contains_ci(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    h.len() >= n.len() && h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

fn compare_rooms(a: &RoomRow, b: &RoomRow, column: usize) -> Ordering {
    match column {
        1 => a.visibility.cmp(&b.visibility),
        2 => a.members.cmp(&b.members),
        3 => a.online.cmp(&b.online),
        4 => a.msgs_per_sec.total_cmp(&b.msgs_per_sec),
        5 => a.last_activity.cmp(&b.last_activity),
        _ => a.name.cmp(&b.name),
    }
}

fn compare_users(a: &UserRow, b: &UserRow, column: usize) -> Ordering {
    match column {
        1 => a.role.cmp(&b.role),
        2 => a.connections.cmp(&b.connections),
        3 => a.rooms.cmp(&b.rooms),
        4 => a.since.cmp(&b.since),
        5 => a.addr.cmp(&b.addr),
        _ => a.username.cmp(&b.username),
    }
}

/// Whether a request waits for y/n: everything that changes what a user
/// may do, and what deletes.
pub fn needs_confirmation(req: &Request) -> bool {
    matches!(
        req,
        Request::Kick { .. }
            | Request::Ban { .. }
            | Request::Unban { .. }
            | Request::Mute { .. }
            | Request::Unmute { .. }
            | Request::RoomDelete { .. }
            | Request::DeleteMessage { .. }
    )
}

fn for_how_long(duration_secs: Option<u64>) -> String {
    match duration_secs {
        Some(s) => format!("for {}", command::format_duration(s)),
        None => "permanently".into(),
    }
}

fn because(reason: &Option<String>) -> String {
    reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default()
}

fn where_(room: &Option<String>) -> String {
    match room {
        Some(r) => format!("in #{r}"),
        None => "everywhere".into(),
    }
}

/// The request in a few words (no reason), for "sending …" and errors.
/// One event-log line per outgoing webhook of a `WebhookList` answer:
/// its id, state, what it asks for and where it goes.
pub fn webhook_lines(v: &Value) -> Vec<String> {
    let Some(list) = v.get("webhooks").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .map(|w| {
            let s = |k: &str| w.get(k).and_then(Value::as_str).unwrap_or("");
            let events: Vec<&str> = w
                .get("events")
                .and_then(Value::as_array)
                .map(|e| e.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let state = if w.get("enabled").and_then(Value::as_bool) == Some(false) {
                "off"
            } else {
                "on"
            };
            let room = match s("room") {
                "" => String::new(),
                r => format!(" room {r}"),
            };
            let pending = w.get("pending").and_then(Value::as_u64).unwrap_or(0);
            format!(
                "webhook {} [{state}] {} -> {}{room}, {pending} queued",
                s("id"),
                events.join(","),
                s("url")
            )
        })
        .collect()
}

pub fn summary(req: &Request) -> String {
    match req {
        Request::Kick { username, .. } => format!("kick {username}"),
        Request::Ban {
            username,
            duration_secs,
            ..
        } => format!("ban {username} {}", for_how_long(*duration_secs)),
        Request::Unban { username } => format!("unban {username}"),
        Request::Mute {
            username,
            room,
            duration_secs,
            ..
        } => format!(
            "mute {username} {}{}",
            where_(room),
            duration_secs
                .map(|s| format!(" for {}", command::format_duration(s)))
                .unwrap_or_default()
        ),
        Request::Unmute { username, room } => format!("unmute {username} {}", where_(room)),
        Request::DeleteMessage { id, .. } => format!("delete message {id}"),
        Request::Announce { room, .. } => match room {
            Some(r) => format!("announce in #{r}"),
            None => "announce to everyone".into(),
        },
        Request::RoomDelete { room } => format!("close room {room}"),
        other => format!("{other:?}"),
    }
}

/// What a successful request did, for the event log.
pub fn outcome(req: &Request) -> String {
    match req {
        Request::Kick { username, .. } => format!("kicked {username}"),
        Request::Ban {
            username,
            duration_secs,
            ..
        } => format!("banned {username} {}", for_how_long(*duration_secs)),
        Request::Unban { username } => format!("unbanned {username}"),
        Request::Mute {
            username,
            room,
            duration_secs,
            ..
        } => format!(
            "muted {username} {}{}",
            where_(room),
            duration_secs
                .map(|s| format!(" for {}", command::format_duration(s)))
                .unwrap_or_default()
        ),
        Request::Unmute { username, room } => format!("unmuted {username} {}", where_(room)),
        Request::DeleteMessage { id, .. } => format!("deleted message {id}"),
        Request::Announce { room, .. } => match room {
            Some(r) => format!("announced in #{r}"),
            None => "announced to everyone".into(),
        },
        Request::RoomDelete { room } => format!("closed room {room}"),
        other => format!("done: {}", summary(other)),
    }
}

fn question(req: &Request) -> String {
    match req {
        Request::Kick { username, reason } => {
            format!(
                "Kick {username}{}? Their connections close.",
                because(reason)
            )
        }
        Request::Ban {
            username,
            reason,
            duration_secs,
        } => format!(
            "Ban {username} {}{}?",
            for_how_long(*duration_secs),
            because(reason)
        ),
        Request::RoomDelete { room } => {
            format!("Close room {room}? It is deleted with its history.")
        }
        Request::DeleteMessage { id, reason } => {
            format!("Delete message {id}{}?", because(reason))
        }
        Request::Mute {
            username,
            room,
            reason,
            duration_secs,
        } => format!(
            "Mute {username} {} {}{}? They can read but not post.",
            where_(room),
            for_how_long(*duration_secs),
            because(reason)
        ),
        Request::Unban { username } => format!("Unban {username}? They can sign in again."),
        Request::Unmute { username, room } => {
            format!("Unmute {username} {}? They can post again.", where_(room))
        }
        other => format!("{}?", summary(other)),
    }
}

/// A key's request as the command that would make it, to edit with `e`.
fn command_line(req: &Request) -> String {
    match req {
        Request::Kick { username, .. } => format!("kick {username} "),
        Request::Ban { username, .. } => format!("ban {username} "),
        Request::Mute { username, room, .. } => match room {
            Some(r) => format!("mute {username} #{r} "),
            None => format!("mute {username} "),
        },
        Request::Unban { username } => format!("unban {username}"),
        Request::Unmute { username, room } => match room {
            Some(r) => format!("unmute {username} {r}"),
            None => format!("unmute {username}"),
        },
        Request::RoomDelete { room } => format!("close {room}"),
        Request::DeleteMessage { id, .. } => format!("delete {id} "),
        _ => String::new(),
    }
}

/// Rows of data a pane shows: its height less the borders and, for the
/// tables, the column titles.
fn visible_rows(pane: Pane, areas: &layout::Areas) -> usize {
    let (area, chrome) = match pane {
        Pane::Rooms => (areas.rooms, 3),
        Pane::Users => (areas.users, 3),
        Pane::Events => (areas.events, 2),
    };
    usize::from(area.height.saturating_sub(chrome))
}
