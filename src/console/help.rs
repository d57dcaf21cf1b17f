//! The help overlay's text: every key and command, in one place.

use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};

const DIM: Style = Style::new().fg(Color::DarkGray);

const HELP_KEYS: [(&str, &str); 16] = [
    (
        "Tab / Shift-Tab",
        "next / previous pane (rooms, users, events)",
    ),
    ("↑ ↓ PgUp PgDn", "move in the focused pane"),
    ("Home / End", "first / last row (End follows the event log)"),
    ("/", "filter the focused pane; Enter keeps it, Esc clears"),
    ("Esc", "clear the focused pane's filter"),
    ("s / S", "sort by the next column / reverse the order"),
    ("k", "kick the selected user (asks first)"),
    ("b", "ban the selected user for good (asks; e edits)"),
    ("m", "mute the selected user everywhere (asks first)"),
    ("u", "unban the selected user (asks first)"),
    ("B", "bans and mutes in force; u there lifts one (asks)"),
    (
        "Enter",
        "the selected room's messages; d there deletes one (asks)",
    ),
    ("x", "close the selected room (asks first)"),
    (":", "command line; ↑ ↓ recall earlier commands"),
    ("?", "this help"),
    ("q / Ctrl-C", "quit (asks whether to stop a server it runs)"),
];

const HELP_COMMANDS: [(&str, &str); 11] = [
    ("kick USER [reason…]", "close the user's connections"),
    (
        "ban USER [DURATION] [reason…]",
        "no DURATION: until unbanned",
    ),
    ("unban USER", ""),
    (
        "mute USER [#ROOM] [DURATION] [reason…]",
        "no room: everywhere",
    ),
    ("unmute USER [ROOM]", ""),
    (
        "delete MESSAGE_ID [reason…]",
        "blank a message (ids: Enter on a room)",
    ),
    ("announce [#ROOM] TEXT…", "no room: to everyone"),
    ("bans", "the bans and mutes view (as B)"),
    ("webhooks", "list the outgoing webhooks in the event log"),
    ("close ROOM", "delete a room and its history"),
    ("quit", ""),
];

/// What the help says below the tables, wrapped to the overlay's width.
const HELP_NOTES: [&str; 2] = [
    "DURATION: 30s 30m 2h 7d 2w, or sums like 1h30m. USER may be @user, ROOM #room.",
    "Whatever changes a user, close and delete ask y/n first.",
];

/// The help overlay's lines for an inside `width` columns wide; also how
/// far it scrolls. The notes wrap, so their ends are never cut off.
pub fn help_text(width: u16) -> Vec<Line<'static>> {
    let mut lines = vec![Line::styled("Keys", Style::new().bold().underlined())];
    for (key, what) in HELP_KEYS {
        lines.push(Line::from(vec![
            Span::styled(format!("  {key:<17}"), Style::new().fg(Color::Cyan)),
            Span::raw(what),
        ]));
    }
    lines.push(Line::default());
    lines.push(Line::styled(
        "Commands (after :)",
        Style::new().bold().underlined(),
    ));
    for (cmd, what) in HELP_COMMANDS {
        lines.push(Line::from(vec![
            Span::styled(format!("  {cmd:<40}"), Style::new().fg(Color::Cyan)),
            Span::styled(what, DIM),
        ]));
    }
    lines.push(Line::default());
    let width = usize::from(width.saturating_sub(2)).max(10);
    for note in HELP_NOTES {
        for line in wrap(note, width) {
            lines.push(Line::styled(format!("  {line}"), DIM));
        }
    }
    lines
}

/// Greedy word wrap to `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
