//! The console's behaviour at its boundaries: what a snapshot looks like
//! on screen, what keys and commands send to the server, and the run loop
//! against a fake server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossterm::event::{Event, KeyCode, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::state::{LOG_CAPACITY, Mode, Pane};
use super::testdata::*;
use super::{Action, Backend, Effect, Exit, State, run_with};
use crate::admin::{AdminError, Request};

#[test]
fn an_80x24_terminal_shows_every_pane() {
    let state = sample_state(80, 24);
    let screen = render(&state);
    for needle in [
        // header
        "● live",
        "up 2h03m",
        "conns 4",
        "online 3",
        "msg/s 1.5",
        "11.8 MiB",
        // rooms: name, visibility, members, online, msg/s, last activity
        "#general",
        "public",
        "#random",
        "alice+bob",
        "4 rooms",
        "0.5",
        "12s",
        // users: name, role, address, count
        "alice",
        "admin",
        "127.0.0.1:5555",
        "moderator",
        "3 users online",
        // chart title and event log
        "■ msg/s 1.5",
        "■ dlv/s 3.0",
        "audit: operator kick dave (spam)",
        // help bar
        "? help",
        "q quit",
        "k kick",
    ] {
        assert_shows(&screen, needle);
    }
    assert_eq!(screen.len(), 24);
    assert!(screen.iter().all(|l| l.chars().count() == 80));
}

#[test]
fn a_larger_terminal_shows_more() {
    let state = sample_state(120, 40);
    let screen = render(&state);
    for needle in [
        "users 10",
        "rooms 4",
        "#staff",
        "private",
        "10.0.0.7:40112",
        "carol",
        "alice connected from 127.0.0.1",
        "20:00:01",
    ] {
        assert_shows(&screen, needle);
    }
    let wide = render(&sample_state(200, 50));
    assert_shows(&wide, "#general");
    assert_shows(&wide, "127.0.0.1:5555");
}

#[test]
fn any_size_and_mode_draws_without_panicking() {
    for (w, h) in [
        (0, 0),
        (1, 1),
        (5, 3),
        (20, 6),
        (40, 12),
        (80, 24),
        (161, 20),
        (300, 90),
    ] {
        let mut state = sample_state(w, h);
        render(&state);
        for keys in [":kick bob", "/al", "?"] {
            let mut s = sample_state(w, h);
            type_keys(&mut s, keys);
            render(&s);
        }
        press(&mut state, KeyCode::Down);
        press(&mut state, KeyCode::Char('k'));
        render(&state);
        let mut quitting = state_with(sample_json(), true, w, h);
        press(&mut quitting, KeyCode::Char('q'));
        render(&quitting);
    }
    // Nothing from the server yet.
    render(&State::new(false));
}

fn many_users(n: usize) -> Value {
    let users: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": format!("u{i}"), "username": format!("user{i:06}"), "role": "user",
                   "connections": 1 + i % 3, "rooms": i % 7, "since": NOW - (i as i64) * 1000,
                   "addr": format!("10.{}.{}.{}:4000", i / 65_536, i / 256 % 256, i % 256)})
        })
        .collect();
    let mut snap = sample_json();
    snap["users"] = Value::Array(users);
    snap
}

#[test]
fn a_hundred_thousand_users_render_a_window() {
    let mut state = state_with(many_users(100_000), false, 80, 24);
    let started = Instant::now();
    let screen = render(&state);
    let took = started.elapsed();
    assert_shows(&screen, "100000 users online");
    assert_shows(&screen, "user000000");
    assert_shows(&screen, "user000001");
    assert_shows(&screen, "1/100000");
    assert!(!contains(&screen, "user099999"));
    // Only the visible rows are built, so a frame costs the same as with
    // three users; the bound is loose for a loaded debug build.
    assert!(took < Duration::from_millis(500), "render took {took:?}");

    press(&mut state, KeyCode::End);
    let screen = render(&state);
    assert_shows(&screen, "user099999");
    assert_shows(&screen, "100000/100000");
    assert!(!contains(&screen, "user000000"));

    press(&mut state, KeyCode::PageUp);
    press(&mut state, KeyCode::Home);
    assert_shows(&render(&state), "user000000");

    type_keys(&mut state, "/user09999");
    let screen = render(&state);
    assert_shows(&screen, "10 of 100000 users online");
    assert_shows(&screen, "user099990");
}

#[test]
fn k_asks_then_kicks_the_selected_user() {
    let mut state = sample_state(80, 24);
    assert_eq!(state.focus, Pane::Users);
    // Sorted by name: alice, bob, carol.
    press(&mut state, KeyCode::Down);
    assert_eq!(
        state.selected_user().map(|u| u.username.as_str()),
        Some("bob")
    );
    assert!(press(&mut state, KeyCode::Char('k')).is_none());
    assert!(matches!(state.mode, Mode::Confirm(_)));
    assert_shows(&render(&state), "Kick bob?");
    match press(&mut state, KeyCode::Char('y')) {
        Some(Effect::Send(Request::Kick { username, reason })) => {
            assert_eq!(username, "bob");
            assert_eq!(reason, None);
        }
        other => panic!("expected a kick, got {other:?}"),
    }
    assert!(matches!(state.mode, Mode::Normal));
}

#[test]
fn n_cancels_a_confirmation() {
    let mut state = sample_state(80, 24);
    press(&mut state, KeyCode::Char('b'));
    assert!(matches!(state.mode, Mode::Confirm(_)));
    assert!(press(&mut state, KeyCode::Char('n')).is_none());
    assert!(matches!(state.mode, Mode::Normal));
    assert_shows(&render(&state), "cancelled");
    // Esc too.
    press(&mut state, KeyCode::Char('k'));
    assert!(press(&mut state, KeyCode::Esc).is_none());
    assert!(matches!(state.mode, Mode::Normal));
}

#[test]
fn e_turns_a_confirmation_into_an_editable_command() {
    let mut state = sample_state(80, 24);
    press(&mut state, KeyCode::Char('b'));
    press(&mut state, KeyCode::Char('e'));
    assert!(matches!(&state.mode, Mode::Command { line, .. } if line == "ban alice "));
    type_keys(&mut state, "7d raid");
    press(&mut state, KeyCode::Enter);
    match press(&mut state, KeyCode::Char('y')) {
        Some(Effect::Send(Request::Ban {
            username,
            duration_secs,
            reason,
        })) => {
            assert_eq!(username, "alice");
            assert_eq!(duration_secs, Some(7 * 86_400));
            assert_eq!(reason.as_deref(), Some("raid"));
        }
        other => panic!("expected a ban, got {other:?}"),
    }
}

#[test]
fn the_command_line_bans_after_confirmation() {
    let mut state = sample_state(80, 24);
    press(&mut state, KeyCode::Char(':'));
    type_keys(&mut state, "ban bob 2h spamming");
    assert_shows(&render(&state), ":ban bob 2h spamming");
    assert!(press(&mut state, KeyCode::Enter).is_none());
    assert_shows(&render(&state), "Ban bob for 2h (spamming)?");
    match press(&mut state, KeyCode::Char('y')) {
        Some(Effect::Send(Request::Ban {
            username,
            duration_secs,
            reason,
        })) => {
            assert_eq!(username, "bob");
            assert_eq!(duration_secs, Some(7_200));
            assert_eq!(reason.as_deref(), Some("spamming"));
        }
        other => panic!("expected a ban, got {other:?}"),
    }
}

#[test]
fn announce_goes_out_without_confirmation() {
    let mut state = sample_state(80, 24);
    press(&mut state, KeyCode::Char(':'));
    type_keys(&mut state, "announce #general hello all");
    match press(&mut state, KeyCode::Enter) {
        Some(Effect::Send(Request::Announce { text, room })) => {
            assert_eq!(room.as_deref(), Some("general"));
            assert_eq!(text, "hello all");
        }
        other => panic!("expected an announcement, got {other:?}"),
    }
}

#[test]
fn every_action_on_a_user_asks_first() {
    let mut state = sample_state(80, 24);
    press(&mut state, KeyCode::End);
    for (key, question) in [
        ('k', "Kick carol?"),
        ('b', "Ban carol permanently?"),
        ('m', "Mute carol everywhere permanently?"),
        ('u', "Unban carol?"),
    ] {
        assert!(
            press(&mut state, KeyCode::Char(key)).is_none(),
            "{key} sent at once"
        );
        assert!(matches!(state.mode, Mode::Confirm(_)), "{key}");
        assert_shows(&render(&state), question);
        // n sends nothing.
        assert!(press(&mut state, KeyCode::Char('n')).is_none());
        assert!(matches!(state.mode, Mode::Normal));
    }
    press(&mut state, KeyCode::Char('m'));
    assert!(matches!(
        press(&mut state, KeyCode::Char('y')),
        Some(Effect::Send(Request::Mute { username, room: None, .. })) if username == "carol"
    ));
    press(&mut state, KeyCode::Char('u'));
    assert!(matches!(
        press(&mut state, KeyCode::Char('y')),
        Some(Effect::Send(Request::Unban { username })) if username == "carol"
    ));
    // The command line asks too.
    for line in ["mute carol 10m", "unmute carol", "unban carol"] {
        press(&mut state, KeyCode::Char(':'));
        type_keys(&mut state, line);
        assert!(press(&mut state, KeyCode::Enter).is_none(), "{line}");
        assert!(matches!(state.mode, Mode::Confirm(_)), "{line}");
        assert!(matches!(
            press(&mut state, KeyCode::Char('y')),
            Some(Effect::Send(_))
        ));
    }
    // e turns a mute into its command, to add a room or a duration.
    press(&mut state, KeyCode::Char('m'));
    press(&mut state, KeyCode::Char('e'));
    assert!(matches!(&state.mode, Mode::Command { line, .. } if line == "mute carol "));
}

#[test]
fn x_closes_the_selected_room_after_confirmation() {
    let mut state = sample_state(80, 24);
    // x acts on rooms only, so it refuses in the users pane.
    assert!(press(&mut state, KeyCode::Char('x')).is_none());
    assert!(matches!(state.mode, Mode::Normal));
    press_with(&mut state, KeyCode::BackTab, KeyModifiers::SHIFT);
    assert_eq!(state.focus, Pane::Rooms);
    // The busiest room comes first.
    press(&mut state, KeyCode::Char('x'));
    assert_shows(&render(&state), "Close room general?");
    assert!(matches!(
        press(&mut state, KeyCode::Char('y')),
        Some(Effect::Send(Request::RoomDelete { room })) if room == "general"
    ));
}

#[test]
fn slash_filters_the_focused_table() {
    let mut state = sample_state(80, 24);
    press(&mut state, KeyCode::Char('/'));
    type_keys(&mut state, "bo");
    assert_eq!(state.users.rows.len(), 1);
    let screen = render(&state);
    assert_shows(&screen, "bob");
    assert_shows(&screen, "1 of 3 users online");
    assert!(!contains(&screen, "moderator"));
    // The filter applies while typed and stays after Enter.
    press(&mut state, KeyCode::Enter);
    assert!(matches!(state.mode, Mode::Normal));
    assert_eq!(state.users.rows.len(), 1);
    // It survives a refresh…
    let request = Request::Snapshot { events_after: 5 };
    state.update(Action::Answer {
        request,
        result: Ok(sample_json()),
        now_ms: NOW + 1_000,
    });
    assert_eq!(state.users.rows.len(), 1);
    // …and Esc clears it.
    press(&mut state, KeyCode::Esc);
    assert_eq!(state.users.rows.len(), 3);
    // The rooms table filters by its own text.
    press(&mut state, KeyCode::BackTab);
    type_keys(&mut state, "/priv");
    assert_eq!(state.rooms.rows.len(), 2);
    assert_eq!(state.users.rows.len(), 3);
}

#[test]
fn s_cycles_the_sort_column() {
    let mut state = sample_state(80, 24);
    let names = |s: &State| -> Vec<String> {
        s.users
            .rows
            .iter()
            .map(|&i| s.snapshot.users[i].username.clone())
            .collect()
    };
    assert_eq!(names(&state), ["alice", "bob", "carol"]);
    press(&mut state, KeyCode::Char('s')); // role
    press(&mut state, KeyCode::Char('s')); // connections, most first
    assert_eq!(names(&state)[0], "bob");
    assert_shows(&render(&state), "conns↓");
    press(&mut state, KeyCode::Char('S'));
    assert_eq!(names(&state)[2], "bob");
}

#[test]
fn the_selection_follows_its_user_across_refreshes() {
    let mut state = sample_state(80, 24);
    press(&mut state, KeyCode::Down);
    assert_eq!(
        state.selected_user().map(|u| u.username.as_str()),
        Some("bob")
    );
    // A newcomer sorts first; the selection stays on bob.
    let mut snap = sample_json();
    if let Some(users) = snap["users"].as_array_mut() {
        users.push(json!({"username": "aaron", "role": "user", "connections": 1}));
    }
    state.update(Action::Answer {
        request: Request::Snapshot { events_after: 5 },
        result: Ok(snap),
        now_ms: NOW + 1_000,
    });
    assert_eq!(
        state.selected_user().map(|u| u.username.as_str()),
        Some("bob")
    );
}

#[test]
fn q_asks_before_stopping_a_server_it_owns() {
    let mut state = state_with(sample_json(), true, 80, 24);
    assert!(press(&mut state, KeyCode::Char('q')).is_none());
    assert!(matches!(state.mode, Mode::ConfirmQuit));
    let screen = render(&state);
    assert_shows(&screen, "Stop the server?");
    assert_shows(&screen, "leave it running");
    assert!(matches!(
        press(&mut state, KeyCode::Char('y')),
        Some(Effect::Quit { stop_server: true })
    ));

    let mut state = state_with(sample_json(), true, 80, 24);
    press(&mut state, KeyCode::Char('q'));
    assert!(matches!(
        press(&mut state, KeyCode::Char('n')),
        Some(Effect::Quit { stop_server: false })
    ));

    let mut state = state_with(sample_json(), true, 80, 24);
    press_with(&mut state, KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert!(press(&mut state, KeyCode::Esc).is_none());
    assert!(matches!(state.mode, Mode::Normal));

    // Without a server of its own, the console just detaches.
    let mut state = sample_state(80, 24);
    assert!(matches!(
        press(&mut state, KeyCode::Char('q')),
        Some(Effect::Quit { stop_server: false })
    ));
    let mut state = sample_state(80, 24);
    press(&mut state, KeyCode::Char(':'));
    type_keys(&mut state, "quit");
    assert!(matches!(
        press(&mut state, KeyCode::Enter),
        Some(Effect::Quit { stop_server: false })
    ));
}

#[test]
fn a_bad_command_is_logged_and_sends_nothing() {
    let mut state = sample_state(80, 24);
    press(&mut state, KeyCode::Char(':'));
    type_keys(&mut state, "ban bob 0h");
    assert!(press(&mut state, KeyCode::Enter).is_none());
    assert!(matches!(state.mode, Mode::Normal));
    let last = state.log.back().map(|l| (l.kind.clone(), l.text.clone()));
    assert!(
        matches!(&last, Some((kind, text)) if kind == "error" && text.contains("longer than zero")),
        "{last:?}"
    );
    assert_shows(&render(&state), "duration '0h' must be longer than zero");

    press(&mut state, KeyCode::Char(':'));
    type_keys(&mut state, "frobnicate now");
    assert!(press(&mut state, KeyCode::Enter).is_none());
    press(&mut state, KeyCode::Tab); // clear the flash, show the log
    assert_shows(&render(&state), "unknown command 'frobnicate'");
}

#[test]
fn answers_are_logged() {
    let mut state = sample_state(100, 30);
    let effect = state.update(Action::Answer {
        request: Request::Kick {
            username: "bob".into(),
            reason: None,
        },
        result: Ok(json!({})),
        now_ms: NOW,
    });
    // A result asks for a fresh snapshot at once.
    assert!(matches!(
        effect,
        Some(Effect::Send(Request::Snapshot { .. }))
    ));
    state.update(Action::Answer {
        request: Request::Ban {
            username: "zed".into(),
            reason: None,
            duration_secs: None,
        },
        result: Err(AdminError {
            code: "not_found".into(),
            message: "user not found".into(),
        }),
        now_ms: NOW,
    });
    press(&mut state, KeyCode::Tab);
    let screen = render(&state);
    // A success is logged by its audit entry, not by a line of its own.
    assert!(!state.log.iter().any(|l| l.text.contains("kicked bob")));
    assert_shows(&screen, "error: user not found (ban zed permanently)");
}

#[test]
fn events_advance_and_the_log_stays_bounded() {
    let mut state = sample_state(80, 24);
    assert_eq!(state.events_after, 5);
    let log_len = state.log.len();
    // The same events again add nothing; new ones are appended.
    let mut snap = sample_json();
    if let Some(events) = snap["events"].as_array_mut() {
        for seq in 6..=1_000 {
            events.push(
                json!({"seq": seq, "at": NOW, "kind": "join", "text": format!("event {seq}")}),
            );
        }
    }
    match state.update(Action::Tick {
        now_ms: NOW + 1_000,
    }) {
        Some(Effect::Send(Request::Snapshot { events_after })) => assert_eq!(events_after, 5),
        other => panic!("expected a snapshot request, got {other:?}"),
    }
    // Only one snapshot at a time.
    assert!(
        state
            .update(Action::Tick {
                now_ms: NOW + 2_000
            })
            .is_none()
    );
    state.update(Action::Answer {
        request: Request::Snapshot { events_after: 5 },
        result: Ok(snap),
        now_ms: NOW + 2_000,
    });
    assert!(log_len < LOG_CAPACITY);
    assert_eq!(state.log.len(), LOG_CAPACITY);
    assert_eq!(state.events_after, 1_000);
    assert_eq!(
        state.log.back().map(|l| l.text.as_str()),
        Some("event 1000")
    );
    // The log follows its tail.
    assert_shows(&render(&state), "event 1000");
}

#[test]
fn a_paused_log_keeps_its_line_while_old_lines_drop() {
    let mut state = sample_state(80, 24);
    press(&mut state, KeyCode::Tab); // events
    press(&mut state, KeyCode::Up);
    let picked = state.events.rows[state.events.selected];
    assert_eq!(state.log[picked].text, "carol connected");
    let mut snap = sample_json();
    snap["events"] = Value::Array(
        (6..=(LOG_CAPACITY as u64 + 2))
            .map(|seq| json!({"seq": seq, "at": NOW, "kind": "join", "text": format!("event {seq}")}))
            .collect(),
    );
    state.update(Action::Answer {
        request: Request::Snapshot { events_after: 5 },
        result: Ok(snap),
        now_ms: NOW + 1_000,
    });
    // Lines fell off the front; the selection is still carol's line.
    assert!(
        state
            .log
            .front()
            .is_some_and(|l| l.text != "alice connected from 127.0.0.1")
    );
    let picked = state.events.rows[state.events.selected];
    assert_eq!(state.log[picked].text, "carol connected");
    assert_shows(&render(&state), "paused (End follows)");
    press(&mut state, KeyCode::End);
    assert!(state.events.following());
}

#[test]
fn the_latest_audit_entries_show_in_the_log() {
    let state = sample_state(100, 30);
    assert!(
        state
            .log
            .iter()
            .any(|l| l.text == "audit: operator kick dave (spam)"),
        "{:?}",
        state.log
    );
    assert_shows(&render(&state), "audit: operator kick dave (spam)");
}

#[test]
fn a_failing_server_is_reported_once() {
    let mut state = sample_state(80, 24);
    let fail = |state: &mut State, at: i64| {
        state.update(Action::Tick { now_ms: at });
        state.update(Action::Answer {
            request: Request::Snapshot { events_after: 5 },
            result: Err(AdminError {
                code: "internal".into(),
                message: "the server closed the admin socket".into(),
            }),
            now_ms: at,
        });
    };
    let before = state.log.len();
    for i in 1..=5 {
        fail(&mut state, NOW + i * 1_000);
    }
    assert_eq!(state.log.len(), before + 1);
    let screen = render(&state);
    assert_shows(&screen, "✗ stale 5s");
    assert_shows(&screen, "no snapshot: the server closed");
    // Data on screen stays until the server answers again.
    assert_shows(&screen, "#general");
}

#[test]
fn before_the_first_snapshot_the_header_says_why() {
    let mut state = State::new(false);
    state.update(Action::Resize {
        width: 80,
        height: 24,
    });
    assert_shows(&render(&state), "… connecting");
    let request = match state.update(Action::Tick { now_ms: NOW }) {
        Some(Effect::Send(r)) => r,
        other => panic!("expected a snapshot request, got {other:?}"),
    };
    state.update(Action::Answer {
        request,
        result: Err(AdminError {
            code: "bad_request".into(),
            message: "not available yet".into(),
        }),
        now_ms: NOW,
    });
    let screen = render(&state);
    assert_shows(&screen, "✗ no snapshot: not available yet");
    assert!(!contains(&screen, "conns 0"));
}

#[test]
fn question_mark_shows_every_command() {
    let mut state = sample_state(120, 40);
    press(&mut state, KeyCode::Char('?'));
    let screen = render(&state);
    for needle in [
        "Help",
        "kick USER [reason…]",
        "ban USER [DURATION] [reason…]",
        "unban USER",
        "mute USER [#ROOM] [DURATION] [reason…]",
        "unmute USER [ROOM]",
        "delete MESSAGE_ID [reason…]",
        "announce [#ROOM] TEXT…",
        "close ROOM",
        "Tab / Shift-Tab",
    ] {
        assert_shows(&screen, needle);
    }
    press(&mut state, KeyCode::Esc);
    assert!(!contains(&render(&state), "announce [#ROOM]"));
    // At 80x24 the help scrolls to its end.
    let mut small = sample_state(80, 24);
    press(&mut small, KeyCode::Char('?'));
    press(&mut small, KeyCode::End);
    assert_shows(&render(&small), "close ROOM");
}

fn bans_json() -> Value {
    json!({"bans": [
        {"username": "bob", "id": "01JBBBBBBBBBBBBBBBBBBBBBB2", "until": null, "reason": "spam"},
        {"username": "dave", "until": NOW + 7_200_000, "reason": null}
    ]})
}

fn mutes_json() -> Value {
    json!({"mutes": [
        {"username": "carol", "room": "general", "until": null, "reason": "flooding", "by": "operator"},
        {"username": "bob", "room": null, "until": NOW + 600_000, "reason": null, "by": "alice"}
    ]})
}

/// Opens the bans and mutes view and answers its two requests.
fn open_restrictions(state: &mut State) {
    assert!(matches!(
        press(state, KeyCode::Char('B')),
        Some(Effect::Send(Request::Bans))
    ));
    assert!(matches!(state.mode, Mode::Restrictions));
    if state.area.width >= 40 && state.area.height >= 10 {
        assert_shows(&render(state), "reading…");
    }
    let next = state.update(Action::Answer {
        request: Request::Bans,
        result: Ok(bans_json()),
        now_ms: NOW,
    });
    assert!(
        matches!(next, Some(Effect::Send(Request::Mutes))),
        "{next:?}"
    );
    let next = state.update(Action::Answer {
        request: Request::Mutes,
        result: Ok(mutes_json()),
        now_ms: NOW,
    });
    assert!(next.is_none(), "{next:?}");
}

#[test]
fn shift_b_lists_bans_and_mutes_and_u_lifts_the_selected_one() {
    let mut state = sample_state(100, 30);
    open_restrictions(&mut state);
    let screen = render(&state);
    for needle in [
        "Bans & mutes · 2 bans · 2 mutes",
        "banned",
        "until lifted",
        "spam",
        "muted everywhere",
        "(in 10m)",
        "alice",
        "muted in #general",
        "flooding",
        "dave",
        "23:00:00 (in 2h00m)",
        " u lift ",
    ] {
        assert_shows(&screen, needle);
    }
    // By user, a ban before mutes: bob's ban, bob's mute, carol, dave.
    // Each lifting asks first, over the view, and returns to it.
    assert!(press(&mut state, KeyCode::Char('u')).is_none());
    let screen = render(&state);
    assert_shows(&screen, "Unban bob? They can sign in again.");
    assert_shows(&screen, "Bans & mutes");
    assert!(press(&mut state, KeyCode::Char('n')).is_none());
    assert!(matches!(state.mode, Mode::Restrictions));
    press(&mut state, KeyCode::Char('u'));
    assert!(matches!(
        press(&mut state, KeyCode::Char('y')),
        Some(Effect::Send(Request::Unban { username })) if username == "bob"
    ));
    press(&mut state, KeyCode::Down);
    press(&mut state, KeyCode::Char('u'));
    assert!(matches!(
        press(&mut state, KeyCode::Char('y')),
        Some(Effect::Send(Request::Unmute { username, room: None })) if username == "bob"
    ));
    press(&mut state, KeyCode::Down);
    press(&mut state, KeyCode::Char('u'));
    assert_shows(&render(&state), "Unmute carol in #general?");
    assert!(matches!(
        press(&mut state, KeyCode::Char('y')),
        Some(Effect::Send(Request::Unmute { username, room: Some(room) }))
            if username == "carol" && room == "general"
    ));
    // The view stays open and refreshes with each snapshot.
    assert!(matches!(state.mode, Mode::Restrictions));
    let next = state.update(Action::Answer {
        request: Request::Snapshot { events_after: 5 },
        result: Ok(sample_json()),
        now_ms: NOW + 1_000,
    });
    assert!(
        matches!(next, Some(Effect::Send(Request::Bans))),
        "{next:?}"
    );
    // The selection stays on carol's mute when bob's ban is gone.
    state.update(Action::Answer {
        request: Request::Bans,
        result: Ok(json!({"bans": [{"username": "dave", "until": null}]})),
        now_ms: NOW + 1_000,
    });
    state.update(Action::Answer {
        request: Request::Mutes,
        result: Ok(mutes_json()),
        now_ms: NOW + 1_000,
    });
    assert_eq!(
        state.selected_restriction().map(|r| r.username.as_str()),
        Some("carol")
    );
    // Esc closes it; `u` is the users pane's unban again.
    press(&mut state, KeyCode::Esc);
    assert!(matches!(state.mode, Mode::Normal));
    assert!(!contains(&render(&state), "Bans & mutes"));
    let next = state.update(Action::Answer {
        request: Request::Snapshot { events_after: 5 },
        result: Ok(sample_json()),
        now_ms: NOW + 2_000,
    });
    assert!(next.is_none(), "a closed view asks for nothing: {next:?}");
}

#[test]
fn the_bans_view_says_when_nobody_is_restricted_or_the_server_fails() {
    let mut state = sample_state(80, 24);
    press(&mut state, KeyCode::Char(':'));
    type_keys(&mut state, "bans");
    assert!(matches!(
        press(&mut state, KeyCode::Enter),
        Some(Effect::Send(Request::Bans))
    ));
    state.update(Action::Answer {
        request: Request::Bans,
        result: Ok(json!({"bans": []})),
        now_ms: NOW,
    });
    state.update(Action::Answer {
        request: Request::Mutes,
        result: Ok(json!({"mutes": []})),
        now_ms: NOW,
    });
    assert_shows(&render(&state), "nobody is banned or muted");
    assert!(press(&mut state, KeyCode::Char('u')).is_none());
    assert_shows(&render(&state), "nothing to lift");

    state.update(Action::Answer {
        request: Request::Snapshot { events_after: 5 },
        result: Ok(sample_json()),
        now_ms: NOW + 1_000,
    });
    state.update(Action::Answer {
        request: Request::Bans,
        result: Err(AdminError {
            code: "unknown".into(),
            message: "bad admin request".into(),
        }),
        now_ms: NOW + 1_000,
    });
    assert_shows(&render(&state), "✗ bad admin request");
    // Any size draws.
    for (w, h) in [(0, 0), (1, 1), (20, 6), (300, 90)] {
        let mut s = sample_state(w, h);
        open_restrictions(&mut s);
        render(&s);
    }
}

#[test]
fn control_characters_from_the_server_are_shown_escaped() {
    let mut snap = sample_json();
    snap["events"] = json!([
        {"seq": 9, "at": NOW, "kind": "join", "text": "x\u{1b}[2Jy joined"}
    ]);
    snap["audit"] = json!([
        {"seq": 9, "at": NOW, "actor": "operator", "action": "ban", "target": "bob",
         "reason": "old\u{1b}]0;pwned\u{7}"}
    ]);
    snap["users"][0]["addr"] = json!("10.0.0.7\u{9b}31m");
    let mut state = state_with(snap, false, 120, 40);
    let screen = render(&state);
    assert_shows(&screen, "x\\u{1b}[2Jy joined");
    assert_shows(&screen, "(old\\u{1b}]0;pwned\\u{7})");
    assert_shows(&screen, "10.0.0.7\\u{9b}31m");
    let raw = |screen: &[String]| screen.iter().any(|l| l.chars().any(char::is_control));
    assert!(!raw(&screen), "{}", screen.join("\n"));

    state.update(Action::Answer {
        request: Request::Unban {
            username: "bob".into(),
        },
        result: Err(AdminError {
            code: "conflict".into(),
            message: "no\u{1b}[31m".into(),
        }),
        now_ms: NOW,
    });
    let screen = render(&state);
    assert_shows(&screen, "error: no\\u{1b}[31m");
    assert!(!raw(&screen));

    open_restrictions(&mut state);
    state.update(Action::Answer {
        request: Request::Mutes,
        result: Ok(json!({"mutes": [{"username": "bob", "reason": "a\u{1b}b"}]})),
        now_ms: NOW,
    });
    let screen = render(&state);
    assert_shows(&screen, "a\\u{1b}b");
    assert!(!raw(&screen));
}

const GENERAL: &str = "01JAAAAAAAAAAAAAAAAAAAAAA1";

/// Focuses the rooms pane (general, the busiest, is selected), opens its
/// view and answers its request.
fn open_general(state: &mut State) {
    press(state, KeyCode::BackTab);
    assert_eq!(state.focus, Pane::Rooms);
    let next = press(state, KeyCode::Enter);
    assert!(
        matches!(&next, Some(Effect::Send(Request::RoomMessages { room, before: None, limit: Some(200) }))
            if room == GENERAL),
        "{next:?}"
    );
    assert!(matches!(state.mode, Mode::Room));
    if state.area.width >= 40 && state.area.height >= 10 {
        assert_shows(&render(state), "reading…");
    }
    let next = state.update(Action::Answer {
        request: Request::RoomMessages {
            room: GENERAL.into(),
            before: None,
            limit: Some(200),
        },
        result: Ok(room_messages_json()),
        now_ms: NOW,
    });
    assert!(next.is_none(), "{next:?}");
}

fn selected_message_id(state: &State) -> Option<String> {
    state.selected_message().map(|m| m.id.clone())
}

#[test]
fn enter_on_a_room_lists_its_messages_newest_at_the_bottom() {
    let mut state = sample_state(120, 30);
    open_general(&mut state);
    let screen = render(&state);
    for needle in [
        "#general · latest 6 messages",
        "[1 file]",
        "good morning",
        "01JCCCCCCCCCCCCCCCCCCCCCC1",
        "cheap pills \\u{1b}[31m here",
        "(deleted)",
        "carol",
        "see you",
        " 6/6 ",
        " d delete ",
    ] {
        assert_shows(&screen, needle);
    }
    assert!(!screen.iter().any(|l| l.chars().any(char::is_control)));
    // Oldest first, so the newest is the last line, and selected.
    let row = |needle: &str| screen.iter().position(|l| l.contains(needle));
    assert!(row("good morning") < row("see you"));
    assert_eq!(
        selected_message_id(&state).as_deref(),
        Some("01JCCCCCCCCCCCCCCCCCCCCCC6")
    );
    press(&mut state, KeyCode::Up);
    press(&mut state, KeyCode::Up);
    press(&mut state, KeyCode::Up);
    assert_eq!(
        selected_message_id(&state).as_deref(),
        Some("01JCCCCCCCCCCCCCCCCCCCCCC3")
    );
    // A deleted message is not deleted again.
    assert!(press(&mut state, KeyCode::Char('d')).is_none());
    assert!(matches!(state.mode, Mode::Room));
    assert_shows(&render(&state), "already deleted");
    // A message with a file and no text says so in the question.
    press(&mut state, KeyCode::End);
    press(&mut state, KeyCode::Char('d'));
    assert_shows(
        &render(&state),
        "Delete bob's message (no text, 1 file(s))?",
    );
    press(&mut state, KeyCode::Char('n'));
    // `e` makes the question a command to add a reason to.
    press(&mut state, KeyCode::Char('d'));
    press(&mut state, KeyCode::Char('e'));
    assert!(
        matches!(&state.mode, Mode::Command { line, .. } if line == "delete 01JCCCCCCCCCCCCCCCCCCCCCC6 "),
        "{:?}",
        state.mode
    );
    assert!(state.room.is_none());
    press(&mut state, KeyCode::Esc);
    press(&mut state, KeyCode::Enter);
    assert!(matches!(state.mode, Mode::Room));
    // Esc closes the view; a snapshot then asks for nothing more.
    press(&mut state, KeyCode::Esc);
    assert!(matches!(state.mode, Mode::Normal));
    assert!(state.room.is_none());
    assert!(!contains(&render(&state), "good morning"));
    let next = state.update(Action::Answer {
        request: Request::Snapshot { events_after: 5 },
        result: Ok(sample_json()),
        now_ms: NOW + 1_000,
    });
    assert!(next.is_none(), "{next:?}");
}

#[test]
fn d_deletes_the_selected_message_after_a_confirmation_naming_it() {
    let mut state = sample_state(100, 30);
    open_general(&mut state);
    // The long one: the question quotes it shortened.
    press(&mut state, KeyCode::Up);
    press(&mut state, KeyCode::Up);
    assert!(press(&mut state, KeyCode::Char('d')).is_none());
    let screen = render(&state);
    assert_shows(&screen, "Delete dave's message");
    assert_shows(&screen, "spam spam");
    assert_shows(&screen, "…”?");
    // n returns to the view, the selection kept.
    assert!(press(&mut state, KeyCode::Char('n')).is_none());
    assert!(matches!(state.mode, Mode::Room));
    press(&mut state, KeyCode::Up);
    press(&mut state, KeyCode::Up);
    press(&mut state, KeyCode::Char('d'));
    let screen = render(&state);
    assert_shows(
        &screen,
        "Delete bob's message “cheap pills \\u{1b}[31m here”?",
    );
    assert!(!screen.iter().any(|l| l.chars().any(char::is_control)));
    let next = press(&mut state, KeyCode::Char('y'));
    assert!(
        matches!(&next, Some(Effect::Send(Request::DeleteMessage { id, reason: None }))
            if id == "01JCCCCCCCCCCCCCCCCCCCCCC2"),
        "{next:?}"
    );
    assert!(matches!(state.mode, Mode::Room));
    // The answer refreshes the snapshot, and the snapshot the view, whose
    // selection stays on its message.
    let next = state.update(Action::Answer {
        request: Request::DeleteMessage {
            id: "01JCCCCCCCCCCCCCCCCCCCCCC2".into(),
            reason: None,
        },
        result: Ok(json!({})),
        now_ms: NOW,
    });
    assert!(
        matches!(next, Some(Effect::Send(Request::Snapshot { .. }))),
        "{next:?}"
    );
    let next = state.update(Action::Answer {
        request: Request::Snapshot { events_after: 5 },
        result: Ok(sample_json()),
        now_ms: NOW + 1_000,
    });
    assert!(
        matches!(&next, Some(Effect::Send(Request::RoomMessages { room, .. })) if room == GENERAL),
        "{next:?}"
    );
    let mut after = room_messages_json();
    after["messages"][1]["deleted"] = json!(true);
    after["messages"][1]["text"] = json!("");
    state.update(Action::Answer {
        request: Request::RoomMessages {
            room: GENERAL.into(),
            before: None,
            limit: Some(200),
        },
        result: Ok(after),
        now_ms: NOW + 1_000,
    });
    assert_eq!(
        selected_message_id(&state).as_deref(),
        Some("01JCCCCCCCCCCCCCCCCCCCCCC2")
    );
    assert!(!contains(&render(&state), "cheap pills"));
}

#[test]
fn enter_outside_the_rooms_pane_or_a_failed_read_is_explained() {
    let mut state = sample_state(80, 24);
    assert_eq!(state.focus, Pane::Users);
    assert!(press(&mut state, KeyCode::Enter).is_none());
    assert_shows(&render(&state), "Tab to the rooms pane");
    assert!(matches!(state.mode, Mode::Normal));

    press(&mut state, KeyCode::BackTab);
    press(&mut state, KeyCode::Enter);
    state.update(Action::Answer {
        request: Request::RoomMessages {
            room: GENERAL.into(),
            before: None,
            limit: Some(200),
        },
        result: Err(AdminError {
            code: "not_found".into(),
            message: "room not found".into(),
        }),
        now_ms: NOW,
    });
    let screen = render(&state);
    assert_shows(&screen, "✗ room not found");
    assert!(press(&mut state, KeyCode::Char('d')).is_none());
    assert_shows(&render(&state), "no message selected");
    // At 80 columns the text keeps its room and the ids give way.
    let mut narrow = sample_state(80, 24);
    open_general(&mut narrow);
    let screen = render(&narrow);
    assert_shows(&screen, "spam spam spam spam spam spam spam spam");
    assert!(!contains(&screen, "01JCCCC"), "{}", screen.join("\n"));
    // Any size draws.
    for (w, h) in [(0, 0), (1, 1), (20, 6), (300, 90)] {
        let mut s = sample_state(w, h);
        open_general(&mut s);
        press(&mut s, KeyCode::Char('d'));
        render(&s);
    }
}

/// Answers like a server: the sample snapshot, `{}` for the rest, and a
/// record of every request.
#[derive(Clone)]
struct FakeServer {
    seen: Arc<Mutex<Vec<Request>>>,
}

impl FakeServer {
    fn seen(&self) -> Vec<Request> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn snapshots(&self) -> usize {
        self.seen()
            .iter()
            .filter(|r| matches!(r, Request::Snapshot { .. }))
            .count()
    }
}

impl Backend for FakeServer {
    async fn call(&mut self, req: &Request) -> Result<Value, AdminError> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(req.clone());
        }
        match req {
            Request::Snapshot { .. } => Ok(sample_json()),
            Request::RoomMessages { .. } => Ok(room_messages_json()),
            _ => Ok(json!({})),
        }
    }
}

fn keys(text: &str) -> Vec<Event> {
    text.chars()
        .map(|c| match c {
            '\n' => key_event(KeyCode::Enter, KeyModifiers::NONE),
            c => key_event(KeyCode::Char(c), KeyModifiers::NONE),
        })
        .collect()
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_loop_renders_snapshots_and_sends_commands() {
    let server = FakeServer {
        seen: Arc::default(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<std::io::Result<Event>>();
    let events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut terminal = match Terminal::new(TestBackend::new(100, 30)) {
        Ok(t) => t,
        Err(e) => match e {},
    };
    let driver = {
        let server = server.clone();
        async move {
            eventually("the first snapshot", || server.snapshots() >= 1).await;
            for ev in keys(":kick bob spam\ny") {
                let _ = tx.send(Ok(ev));
            }
            // The kick's answer triggers a second snapshot, which the loop
            // asks for only after it applied the first.
            eventually("the refresh after the kick", || server.snapshots() >= 2).await;
            let _ = tx.send(Ok(key_event(KeyCode::Char('q'), KeyModifiers::NONE)));
            // Keep the sender: a closed stream would also end the loop.
            tx
        }
    };
    let (exit, _tx) = tokio::join!(
        run_with(
            &mut terminal,
            server.clone(),
            events,
            false,
            Duration::from_secs(3600)
        ),
        driver
    );
    assert!(matches!(exit, Ok(Exit::Detached)), "{exit:?}");
    assert!(server.seen().iter().any(|r| matches!(
        r,
        Request::Kick { username, reason: Some(reason) } if username == "bob" && reason == "spam"
    )));
    let screen = screen(terminal.backend());
    assert_shows(&screen, "#general");
    assert_shows(&screen, "kicked bob");
}

#[tokio::test]
async fn quitting_right_after_a_command_still_sends_it() {
    let server = FakeServer {
        seen: Arc::default(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<std::io::Result<Event>>();
    for ev in keys(":unban bob\nyq") {
        let _ = tx.send(Ok(ev));
    }
    drop(tx);
    let events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut terminal = match Terminal::new(TestBackend::new(80, 24)) {
        Ok(t) => t,
        Err(e) => match e {},
    };
    let exit = run_with(
        &mut terminal,
        server.clone(),
        events,
        false,
        Duration::from_secs(3600),
    )
    .await;
    assert!(matches!(exit, Ok(Exit::Detached)), "{exit:?}");
    assert!(
        server
            .seen()
            .iter()
            .any(|r| matches!(r, Request::Unban { username } if username == "bob"))
    );
}

#[tokio::test]
async fn the_loop_opens_a_room_and_deletes_the_chosen_message() {
    let server = FakeServer {
        seen: Arc::default(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<std::io::Result<Event>>();
    let events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut terminal = match Terminal::new(TestBackend::new(100, 30)) {
        Ok(t) => t,
        Err(e) => match e {},
    };
    let key = |code| Ok(key_event(code, KeyModifiers::NONE));
    let driver = {
        let server = server.clone();
        async move {
            eventually("the first snapshot", || server.snapshots() >= 1).await;
            let _ = tx.send(key(KeyCode::BackTab));
            let _ = tx.send(key(KeyCode::Enter));
            eventually("the room's messages", || {
                server
                    .seen()
                    .iter()
                    .any(|r| matches!(r, Request::RoomMessages { .. }))
            })
            .await;
            for code in [KeyCode::Home, KeyCode::Char('d'), KeyCode::Char('y')] {
                let _ = tx.send(key(code));
            }
            eventually("the delete", || {
                server
                    .seen()
                    .iter()
                    .any(|r| matches!(r, Request::DeleteMessage { .. }))
            })
            .await;
            let _ = tx.send(key(KeyCode::Esc));
            let _ = tx.send(key(KeyCode::Char('q')));
            tx
        }
    };
    let (exit, _tx) = tokio::join!(
        run_with(
            &mut terminal,
            server.clone(),
            events,
            false,
            Duration::from_secs(3600)
        ),
        driver
    );
    assert!(matches!(exit, Ok(Exit::Detached)), "{exit:?}");
    let seen = server.seen();
    assert!(
        seen.iter()
            .any(|r| matches!(r, Request::RoomMessages { room, .. } if room == GENERAL))
    );
    let deletes: Vec<&Request> = seen
        .iter()
        .filter(|r| matches!(r, Request::DeleteMessage { .. }))
        .collect();
    assert!(
        matches!(deletes[..], [Request::DeleteMessage { id, reason: None }]
            if id == "01JCCCCCCCCCCCCCCCCCCCCCC1"),
        "{deletes:?}"
    );
}

/// Prints the screen that docs/console.md shows:
/// `cargo test --lib console::tests::print_screen -- --ignored --nocapture`
#[test]
#[ignore]
fn print_screen() {
    let state = sample_state(100, 30);
    println!("{}", render(&state).join("\n"));
}

/// The times of the log's lines, in the order shown.
fn log_times(state: &State) -> Vec<i64> {
    state.log.iter().map(|l| l.at).collect()
}

#[test]
fn the_log_reads_in_time_order_when_a_backlog_arrives() {
    // At attach the audit log's backlog is older than the live events.
    let mut snap = sample_json();
    snap["audit"] = json!([
        {"seq": 1, "at": NOW - 3_599_500, "actor": "operator", "action": "user_add",
         "target": "alice (admin)"},
        {"seq": 2, "at": NOW - 100_000, "actor": "operator", "action": "room_create",
         "target": "staff"}
    ]);
    let mut state = state_with(snap, false, 100, 40);
    let times = log_times(&state);
    assert!(times.is_sorted(), "{:?}", state.log);
    assert_eq!(
        state.log.front().map(|l| l.text.as_str()),
        Some("audit: operator user_add alice (admin)")
    );

    // A later batch with older entries goes to its place too.
    let mut snap = sample_json();
    snap["events"] = json!([
        {"seq": 6, "at": NOW + 1_000, "kind": "join", "text": "carol joined #random"}
    ]);
    snap["audit"] = json!([
        {"seq": 3, "at": NOW - 50_000, "actor": "alice", "action": "room_retention",
         "target": "general"}
    ]);
    state.update(Action::Answer {
        request: Request::Snapshot { events_after: 5 },
        result: Ok(snap),
        now_ms: NOW + 2_000,
    });
    assert!(log_times(&state).is_sorted(), "{:?}", state.log);
    assert_eq!(
        state.log.back().map(|l| l.text.as_str()),
        Some("carol joined #random")
    );
    let screen = render(&state);
    let row = |needle: &str| {
        screen
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not on screen:\n{}", screen.join("\n")))
    };
    assert!(row("carol connected") < row("room_retention general"));
    assert!(row("room_retention general") < row("dave was kicked"));
    assert!(row("dave was kicked") < row("carol joined #random"));
}

#[test]
fn one_operator_action_makes_one_log_line() {
    let mut state = sample_state(100, 30);
    let before = state.log.len();
    let kick = Request::Kick {
        username: "bob".into(),
        reason: None,
    };
    state.update(Action::Answer {
        request: kick.clone(),
        result: Ok(json!({})),
        now_ms: NOW + 1_000,
    });
    // The server's event comes in one snapshot, its audit entry in the next.
    let mut snap = sample_json();
    snap["events"] = json!([
        {"seq": 6, "at": NOW + 900, "kind": "kick", "text": "operator kicked bob (2 connections)"}
    ]);
    snap["audit"] = json!([]);
    state.update(Action::Answer {
        request: Request::Snapshot { events_after: 5 },
        result: Ok(snap),
        now_ms: NOW + 1_000,
    });
    let mut snap = sample_json();
    snap["events"] = json!([]);
    snap["audit"] = json!([
        {"seq": 2, "at": NOW + 899, "actor": "operator", "action": "kick", "target": "bob"}
    ]);
    state.update(Action::Answer {
        request: Request::Snapshot { events_after: 6 },
        result: Ok(snap),
        now_ms: NOW + 2_000,
    });
    let about_bob: Vec<&str> = state
        .log
        .iter()
        .filter(|l| l.text.contains("bob") && l.text.contains("kick"))
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(about_bob, ["audit: operator kick bob"]);
    assert_eq!(state.log.len(), before + 1);

    // Event and entry in one snapshot: the same single line.
    let mut snap = sample_json();
    snap["events"] = json!([
        {"seq": 7, "at": NOW + 3_000, "kind": "mute", "text": "operator muted carol"}
    ]);
    snap["audit"] = json!([
        {"seq": 3, "at": NOW + 3_000, "actor": "operator", "action": "mute", "target": "carol"}
    ]);
    state.update(Action::Answer {
        request: Request::Snapshot { events_after: 6 },
        result: Ok(snap),
        now_ms: NOW + 3_000,
    });
    let about_carol = state
        .log
        .iter()
        .filter(|l| l.text.contains("muted carol") || l.text.contains("mute carol"))
        .count();
    assert_eq!(about_carol, 1, "{:?}", state.log);
    // The sample's kick of dave shows once too.
    assert_eq!(
        state.log.iter().filter(|l| l.text.contains("dave")).count(),
        1
    );
}

/// A snapshot whose traffic is steady but for one second `ago` seconds
/// before the newest sample.
fn traffic_with_spike(ago: usize) -> Value {
    let points: Vec<Value> = (0..300)
        .map(|i| {
            let m = if 299 - i == ago { 900.0 } else { 3.0 };
            json!({"t": NOW - (299 - i as i64) * 1000, "messages": m, "deliveries": m * 2.0})
        })
        .collect();
    let mut snap = sample_json();
    snap["throughput"] = Value::Array(points);
    snap
}

/// The chart's y axis labels: the first column inside its border.
fn chart_top_label(screen: &[String]) -> String {
    let top = screen
        .iter()
        .position(|l| l.contains("■ msg/s"))
        .expect("the chart on screen");
    screen[top + 1]
        .chars()
        .skip(1)
        .take_while(|c| *c != '│')
        .collect::<String>()
        .trim()
        .to_string()
}

#[test]
fn the_chart_scales_to_the_traffic_it_shows() {
    // A spike that is no longer drawn does not set the scale.
    let screen = render(&state_with(traffic_with_spike(200), false, 80, 24));
    assert_eq!(chart_top_label(&screen), "10", "{}", screen.join("\n"));
    assert!(!contains(&screen, "-5m"));
    // One that is drawn does.
    let screen = render(&state_with(traffic_with_spike(5), false, 80, 24));
    assert_eq!(chart_top_label(&screen), "2000", "{}", screen.join("\n"));
    // Wide enough for all five minutes, the old spike is on screen again.
    let screen = render(&state_with(traffic_with_spike(200), false, 400, 40));
    assert_shows(&screen, "-5m");
    assert_eq!(chart_top_label(&screen), "2000");
    // An idle server still gets a 0..1 axis.
    let mut idle = traffic_with_spike(0);
    for p in idle["throughput"].as_array_mut().into_iter().flatten() {
        p["messages"] = json!(0.0);
        p["deliveries"] = json!(0.0);
    }
    let screen = render(&state_with(idle, false, 80, 24));
    assert_eq!(chart_top_label(&screen), "1");
}

#[test]
fn at_80x24_the_bar_keeps_tab_and_the_help_ends_whole() {
    for tabs in 0..3 {
        let mut state = sample_state(80, 24);
        for _ in 0..tabs {
            press(&mut state, KeyCode::Tab);
        }
        let screen = render(&state);
        assert!(
            screen[23].contains("Tab pane"),
            "pane {:?}: {}",
            state.focus,
            screen[23]
        );
    }
    let mut state = sample_state(80, 24);
    press(&mut state, KeyCode::Down);
    assert_shows(&render(&state), " k kick ");

    press(&mut state, KeyCode::Char('?'));
    press(&mut state, KeyCode::End);
    let screen = render(&state);
    assert_shows(&screen, "#room.");
    assert_shows(&screen, "ask y/n first.");
}

#[test]
fn narrow_tables_drop_columns_before_names() {
    let mut snap = sample_json();
    snap["users"][0]["username"] = json!("bartholomew_long");
    snap["rooms"][0]["name"] = json!("general-discussion");
    let screen = render(&state_with(snap.clone(), false, 60, 30));
    for needle in [
        "bartholomew_long",
        "#general-discussion",
        "carol",
        "moderator",
    ] {
        assert_shows(&screen, needle);
    }
    // The address went first.
    assert!(!contains(&screen, "10.0.0.7:40112"));
    assert!(!contains(&screen, "address"));
    // Wide enough, every column is back.
    let screen = render(&state_with(snap.clone(), false, 80, 30));
    for needle in ["bartholomew_long", "10.0.0.7:40112", "address", "public"] {
        assert_shows(&screen, needle);
    }
    // Very narrow, a name still shows whole.
    let screen = render(&state_with(snap, false, 30, 30));
    assert_shows(&screen, "bartholomew_long");
    assert_shows(&screen, "#general-discussi");
}

#[test]
fn the_webhooks_command_lists_each_webhook_in_the_log() {
    let v = serde_json::json!({"webhooks": [
        {"id": "W1", "url": "https://hooks.example/a", "events": ["message.created", "member.joined"],
         "room": null, "enabled": true, "pending": 2},
        {"id": "W2", "url": "https://hooks.example/b", "events": ["*"],
         "room": "R1", "enabled": false, "pending": 0},
    ]});
    let lines = crate::console::state::webhook_lines(&v);
    assert_eq!(
        lines,
        vec![
            "webhook W1 [on] message.created,member.joined -> https://hooks.example/a, 2 queued",
            "webhook W2 [off] * -> https://hooks.example/b room R1, 0 queued",
        ]
    );
}
