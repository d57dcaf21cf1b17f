//! A fixed snapshot and the helpers the console's tests share.

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::{Value, json};

use super::input;
use super::state::{Action, Effect, State};
use crate::admin::Request;

/// 2025-11-22 21:00:00 UTC; the sample's times are an hour or less before.
pub const NOW: i64 = 1_763_845_200_000;
const T0: i64 = 1_763_841_600_000;

pub fn sample_json() -> Value {
    let throughput: Vec<Value> = (0..180)
        .map(|i| {
            let m = 1.0 + ((i as f64) / 12.0).sin().abs() * 4.0;
            json!({"t": NOW - (179 - i) * 1000, "messages": m, "deliveries": m * 2.5})
        })
        .collect();
    json!({
        "server": {"uptime_secs": 7_380, "connections": 4, "online_users": 3, "rooms": 4,
                   "users": 10, "messages_per_sec": 1.5, "deliveries_per_sec": 3.0,
                   "memory_bytes": 12_345_678},
        "rooms": [
            {"id": "01JAAAAAAAAAAAAAAAAAAAAAA1", "name": "general", "kind": "room",
             "visibility": "public", "members": 10, "online": 3, "msgs_per_sec": 0.5,
             "last_activity": NOW - 12_000},
            {"id": "01JAAAAAAAAAAAAAAAAAAAAAA2", "name": "random", "kind": "room",
             "visibility": "public", "members": 6, "online": 1, "msgs_per_sec": 0.1,
             "last_activity": NOW - 300_000},
            {"id": "01JAAAAAAAAAAAAAAAAAAAAAA3", "name": "staff", "kind": "room",
             "visibility": "private", "members": 3, "online": 1, "msgs_per_sec": 0.0,
             "last_activity": null},
            {"id": "01JAAAAAAAAAAAAAAAAAAAAAA4", "name": "alice+bob", "kind": "dm",
             "visibility": "private", "members": 2, "online": 2, "msgs_per_sec": 0.9,
             "last_activity": NOW - 2_000}
        ],
        "users": [
            {"id": "01JBBBBBBBBBBBBBBBBBBBBBB2", "username": "bob", "role": "user",
             "connections": 2, "rooms": 2, "since": NOW - 1_500_000, "addr": "10.0.0.7:40112"},
            {"id": "01JBBBBBBBBBBBBBBBBBBBBBB1", "username": "alice", "role": "admin",
             "connections": 1, "rooms": 3, "since": T0, "addr": "127.0.0.1:5555"},
            {"id": "01JBBBBBBBBBBBBBBBBBBBBBB3", "username": "carol", "role": "moderator",
             "connections": 1, "rooms": 4, "since": NOW - 60_000, "addr": null}
        ],
        "throughput": throughput,
        "events": [
            {"seq": 1, "at": T0 + 1_000, "kind": "connect", "text": "alice connected from 127.0.0.1"},
            {"seq": 2, "at": T0 + 2_000, "kind": "join", "text": "alice joined #general"},
            {"seq": 3, "at": NOW - 1_500_000, "kind": "connect", "text": "bob connected from 10.0.0.7"},
            {"seq": 4, "at": NOW - 60_000, "kind": "connect", "text": "carol connected"},
            {"seq": 5, "at": NOW - 30_000, "kind": "kick", "text": "dave was kicked (spam)"}
        ],
        "audit": [
            {"seq": 1, "at": NOW - 30_000, "actor": "operator", "action": "kick", "target": "dave", "reason": "spam"}
        ]
    })
}

/// `#general`'s latest messages, oldest first, as `Request::RoomMessages`
/// answers: one with control characters, one deleted, one long.
pub fn room_messages_json() -> Value {
    let user =
        |name: &str| json!({"id": "01JBBBBBBBBBBBBBBBBBBBBBB9", "username": name, "role": "user"});
    let msg = |n: u64, who: &str, text: &str, deleted: bool| {
        json!({"id": format!("01JCCCCCCCCCCCCCCCCCCCCCC{n}"), "room": "01JAAAAAAAAAAAAAAAAAAAAAA1",
               "seq": n, "sender": user(who), "text": text, "attachments": [],
               "created_at": T0 + n as i64 * 60_000, "edited_at": null, "deleted": deleted,
               "client_msg_id": null})
    };
    let mut file = msg(6, "bob", "", false);
    file["attachments"] = json!([{"id": "u1"}]);
    json!({
        "room": {"id": "01JAAAAAAAAAAAAAAAAAAAAAA1", "name": "general"},
        "messages": [
            msg(1, "alice", "good morning", false),
            msg(2, "bob", "cheap pills \u{1b}[31m here", false),
            msg(3, "carol", "", true),
            msg(4, "dave", &"spam ".repeat(40), false),
            msg(5, "alice", "see you", false),
            file,
        ],
        "has_more": true,
    })
}

/// A console that has received `snapshot` at [`NOW`] on a `width`×`height`
/// terminal.
pub fn state_with(snapshot: Value, owns_server: bool, width: u16, height: u16) -> State {
    let mut state = State::new(owns_server);
    state.update(Action::Resize { width, height });
    let request = match state.update(Action::Tick { now_ms: NOW }) {
        Some(Effect::Send(r @ Request::Snapshot { .. })) => r,
        other => panic!("expected a snapshot request, got {other:?}"),
    };
    state.update(Action::Answer {
        request,
        result: Ok(snapshot),
        now_ms: NOW,
    });
    state
}

pub fn sample_state(width: u16, height: u16) -> State {
    state_with(sample_json(), false, width, height)
}

/// Draws `state` on a `TestBackend` of its size and returns the screen,
/// one string per row.
pub fn render(state: &State) -> Vec<String> {
    let (w, h) = (state.area.width, state.area.height);
    let mut terminal = match Terminal::new(TestBackend::new(w, h)) {
        Ok(t) => t,
        Err(e) => match e {},
    };
    if let Err(e) = terminal.draw(|f| super::ui::draw(state, f)) {
        match e {}
    }
    screen(terminal.backend())
}

pub fn screen(backend: &TestBackend) -> Vec<String> {
    let buf = backend.buffer();
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
        })
        .collect()
}

pub fn contains(screen: &[String], needle: &str) -> bool {
    screen.iter().any(|line| line.contains(needle))
}

#[track_caller]
pub fn assert_shows(screen: &[String], needle: &str) {
    assert!(
        contains(screen, needle),
        "{needle:?} not on screen:\n{}",
        screen.join("\n")
    );
}

pub fn key_event(code: KeyCode, modifiers: KeyModifiers) -> Event {
    Event::Key(KeyEvent::new(code, modifiers))
}

/// Feeds one key through the same path as the terminal's.
pub fn press(state: &mut State, code: KeyCode) -> Option<Effect> {
    press_with(state, code, KeyModifiers::NONE)
}

pub fn press_with(state: &mut State, code: KeyCode, modifiers: KeyModifiers) -> Option<Effect> {
    let action = input::action_for(&state.mode, &key_event(code, modifiers))?;
    state.update(action)
}

/// Types `text` key by key; returns the last effect.
pub fn type_keys(state: &mut State, text: &str) -> Option<Effect> {
    let mut last = None;
    for c in text.chars() {
        last = press(state, KeyCode::Char(c));
    }
    last
}
