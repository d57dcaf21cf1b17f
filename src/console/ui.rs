//! Drawing. [`draw`] reads the state and never changes it; the only
//! numbers it derives are which slice of each table fits the frame.
//!
//! The screen, top to bottom: a header of server totals, the rooms table,
//! the users table, the throughput chart beside the event log, and a
//! bottom bar (keys, a command or filter being typed, or the last result).
//! Wide terminals put rooms and users side by side.

use ratatui::Frame;
use ratatui::layout::{Constraint, Position, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Cell, Chart, Clear, Dataset, GraphType, HighlightSpacing, Paragraph, Row, Table,
    TableState,
};

use super::help::help_text;
use super::layout::{
    centered, fit_columns, help_area, help_max_scroll, layout, restrictions_area, room_area,
};
use super::snapshot::{MessageRow, RoomRow, UserRow};
use super::state::{
    Column, LogLine, Mode, Pane, ROOM_COLUMNS, Restriction, RestrictionKind, State, TableView,
    USER_COLUMNS,
};

/// A string from the server as the screen may show it: control
/// characters become visible escapes (`\u{1b}`) instead of being passed
/// to the terminal or silently dropped.
fn clean(s: &str) -> String {
    crate::term::escape(s).into_owned()
}

pub fn draw(state: &State, frame: &mut Frame) {
    let areas = layout(frame.area());
    draw_header(state, frame, areas.header);
    draw_rooms(state, frame, areas.rooms);
    draw_users(state, frame, areas.users);
    draw_chart(state, frame, areas.chart);
    draw_events(state, frame, areas.events);
    draw_footer(state, frame, areas.footer);
    match &state.mode {
        Mode::Confirm(p) => {
            if p.from_restrictions {
                draw_restrictions(state, frame);
            }
            if p.from_room {
                draw_room(state, frame);
            }
            draw_confirm(
                frame,
                &p.question,
                &[("y", "yes"), ("n", "no"), ("e", "edit as a command")],
            )
        }
        Mode::ConfirmQuit => draw_confirm(
            frame,
            "Stop the server?",
            &[
                ("y", "stop it and quit"),
                ("n", "quit, leave it running"),
                ("Esc", "stay"),
            ],
        ),
        Mode::Help { scroll } => draw_help(frame, *scroll),
        Mode::Restrictions => draw_restrictions(state, frame),
        Mode::Room => draw_room(state, frame),
        _ => {}
    }
}

const KEY: Style = Style::new().fg(Color::Black).bg(Color::Cyan);
const DIM: Style = Style::new().fg(Color::DarkGray);
const FOCUS: Color = Color::Cyan;

fn draw_header(state: &State, frame: &mut Frame, area: Rect) {
    let s = &state.snapshot.server;
    if !state.connected {
        // Zeros would read as an idle server; say what is known instead.
        let status = match &state.last_error {
            Some(e) => Span::styled(
                format!("✗ no snapshot: {}", clean(e)),
                Style::new().fg(Color::Red).bold(),
            ),
            None => Span::styled("… connecting", Style::new().fg(Color::Yellow)),
        };
        frame.render_widget(
            Line::from(vec![Span::styled(" confab ", Style::new().bold()), status]),
            area,
        );
        return;
    }
    let status = {
        let age = state
            .last_update_ms
            .map_or(0, |t| state.now_ms.saturating_sub(t) / 1000);
        if state.last_error.is_some() {
            Span::styled(
                format!("✗ stale {}", short_duration(age.max(0) as u64)),
                Style::new().fg(Color::Red).bold(),
            )
        } else if age > 3 {
            Span::styled(
                format!("● stale {}", short_duration(age as u64)),
                Style::new().fg(Color::Yellow).bold(),
            )
        } else {
            Span::styled("● live", Style::new().fg(Color::Green).bold())
        }
    };
    // In order of importance: what does not fit is left off the end.
    let mut items: Vec<(&str, String)> = vec![
        ("up", short_duration(s.uptime_secs)),
        ("conns", s.connections.to_string()),
        ("online", s.online_users.to_string()),
        ("msg/s", rate(s.messages_per_sec)),
        ("dlv/s", rate(s.deliveries_per_sec)),
        ("mem", bytes(s.memory_bytes)),
        ("users", s.users.to_string()),
        ("rooms", s.rooms.to_string()),
    ];
    // Outgoing webhooks, only where there are any: how many, how many
    // disabled (failing for their whole retry window), events waiting.
    if s.webhooks > 0 {
        let mut v = s.webhooks.to_string();
        if s.webhooks_disabled > 0 {
            v.push_str(&format!(" ({} off)", s.webhooks_disabled));
        }
        if s.webhooks_pending > 0 {
            v.push_str(&format!(" {} queued", s.webhooks_pending));
        }
        items.push(("hooks", v));
    }
    let mut spans = vec![Span::styled(" confab ", Style::new().bold()), status];
    let mut width: usize = spans.iter().map(Span::width).sum();
    for (label, value) in items {
        let w = 2 + label.len() + 1 + value.chars().count();
        if width + w > usize::from(area.width) {
            break;
        }
        width += w;
        spans.push(Span::raw("  "));
        spans.push(Span::styled(label, DIM));
        spans.push(Span::raw(" "));
        spans.push(Span::styled(value, Style::new().bold()));
    }
    frame.render_widget(Line::from(spans), area);
}

fn pane_block<'a>(state: &State, pane: Pane, title: Vec<Span<'a>>, view: &TableView) -> Block<'a> {
    let focused = state.focus == pane;
    let mut title = title;
    if !view.filter.is_empty() || (focused && matches!(state.mode, Mode::Filter)) {
        title.push(Span::styled(
            format!(" /{}", view.filter),
            Style::new().fg(Color::Yellow),
        ));
    }
    title.insert(0, Span::raw(" "));
    title.push(Span::raw(" "));
    let position = if view.rows.is_empty() {
        String::new()
    } else {
        format!(" {}/{} ", view.selected + 1, view.rows.len())
    };
    let block = Block::bordered()
        .title(Line::from(title))
        .title_bottom(Line::from(position).right_aligned());
    if focused {
        block.border_style(Style::new().fg(FOCUS))
    } else {
        block.border_style(DIM)
    }
}

fn heading(name: &str, pane: Pane, focused: Pane) -> Span<'static> {
    let style = if pane == focused {
        Style::new().fg(FOCUS).bold()
    } else {
        Style::new().bold()
    };
    Span::styled(name.to_string(), style)
}

/// "3 users online", "1 of 3 users online", "1 line".
fn count(shown: usize, total: usize, one: &str, many: &str) -> Span<'static> {
    let noun = if total == 1 { one } else { many };
    if shown == total {
        Span::raw(format!(" · {total} {noun}"))
    } else {
        Span::raw(format!(" · {shown} of {total} {noun}"))
    }
}

/// The first row to draw so that the selection shows in `height` rows.
fn window_start(view: &TableView, height: usize) -> usize {
    let height = height.max(1);
    let mut start = view.offset;
    if view.selected < start {
        start = view.selected;
    } else if view.selected >= start + height {
        start = view.selected + 1 - height;
    }
    start.min(view.rows.len().saturating_sub(height))
}

fn header_row(
    columns: &[Column],
    view: &TableView,
    numeric_from: usize,
    shown: &[usize],
) -> Row<'static> {
    let cells = shown.iter().map(|&i| {
        let c = &columns[i];
        let mut title = c.title.to_string();
        if i == view.sort {
            title.push(if view.descending { '↓' } else { '↑' });
        }
        let line = Line::from(title);
        Cell::from(if i >= numeric_from {
            line.right_aligned()
        } else {
            line
        })
    });
    Row::new(cells).style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED))
}

/// The cells of the columns that fit, as a row.
fn pick(cells: Vec<Cell<'static>>, shown: &[usize]) -> Row<'static> {
    let mut cells: Vec<Option<Cell>> = cells.into_iter().map(Some).collect();
    Row::new(shown.iter().filter_map(|&i| cells.get_mut(i)?.take()))
}

/// The columns of a table that fit in `area`, and their widths.
fn fitted(
    area: Rect,
    widths: &[u16],
    drop_order: &[usize],
    min_name: u16,
) -> (Vec<usize>, Vec<Constraint>) {
    // Borders and the selection mark.
    let inside = area.width.saturating_sub(4);
    let shown = fit_columns(inside, widths, drop_order, min_name);
    let constraints = shown
        .iter()
        .map(|&i| {
            if i == 0 {
                Constraint::Fill(1)
            } else {
                Constraint::Length(widths[i])
            }
        })
        .collect();
    (shown, constraints)
}

/// Rooms' fixed column widths (the name fills the rest), and which go
/// first when the name would be squeezed: visibility and the time of the
/// last message matter least, who is online most.
const ROOM_WIDTHS: [u16; 6] = [0, 8, 8, 7, 7, 7];
const ROOM_DROP: [usize; 5] = [1, 5, 2, 4, 3];
/// Users' likewise: the address is wide and rarely needed at a glance.
const USER_WIDTHS: [u16; 6] = [0, 10, 6, 6, 7, 21];
const USER_DROP: [usize; 5] = [5, 3, 4, 2, 1];
/// Fewer columns than this for a name and a column goes instead.
const MIN_NAME: u16 = 16;

fn right(s: String) -> Cell<'static> {
    Cell::from(Line::from(s).right_aligned())
}

#[allow(clippy::too_many_arguments)]
fn draw_table<'a>(
    state: &State,
    frame: &mut Frame,
    area: Rect,
    pane: Pane,
    block: Block<'a>,
    header: Option<Row<'a>>,
    widths: &[Constraint],
    empty: &str,
    row_at: impl Fn(usize) -> Option<Row<'a>>,
) {
    let table = Tabled {
        view: state.view(pane),
        focused: state.focus == pane,
        block,
        header,
        widths,
        empty,
    };
    draw_view(state, frame, area, table, row_at);
}

/// A table to draw: its rows' window, chrome and columns.
struct Tabled<'a, 'w> {
    view: &'w TableView,
    focused: bool,
    block: Block<'a>,
    header: Option<Row<'a>>,
    widths: &'w [Constraint],
    empty: &'w str,
}

fn draw_view<'a>(
    state: &State,
    frame: &mut Frame,
    area: Rect,
    table: Tabled<'a, '_>,
    row_at: impl Fn(usize) -> Option<Row<'a>>,
) {
    let Tabled {
        view,
        focused,
        block,
        header,
        widths,
        empty,
    } = table;
    let chrome = if header.is_some() { 3 } else { 2 };
    let height = usize::from(area.height.saturating_sub(chrome));
    let start = window_start(view, height);
    let end = (start + height).min(view.rows.len());
    let rows: Vec<Row> = view.rows[start..end]
        .iter()
        .filter_map(|&i| row_at(i))
        .collect();
    let inner = block.inner(area);
    let mut table = Table::new(rows, widths.to_vec())
        .block(block)
        .column_spacing(1)
        .highlight_spacing(HighlightSpacing::Always)
        // The arrow marks the focused pane's selection only, so it also
        // tells which pane the keys act on.
        .highlight_symbol(if focused { "▶ " } else { "  " });
    if let Some(h) = header {
        table = table.header(h);
    }
    table = if focused {
        table.row_highlight_style(Style::new().bg(Color::Rgb(40, 60, 90)).bold())
    } else {
        table.row_highlight_style(Style::new().bg(Color::Rgb(40, 40, 40)))
    };
    let mut table_state =
        TableState::new().with_selected((!view.rows.is_empty()).then(|| view.selected - start));
    frame.render_stateful_widget(table, area, &mut table_state);
    if view.rows.is_empty() && inner.height > 0 {
        let text = if !state.connected {
            match &state.last_error {
                Some(e) => format!("no answer from the server: {}", clean(e)),
                None => "waiting for the server…".into(),
            }
        } else if !view.filter.is_empty() {
            format!("nothing matches /{}", clean(&view.filter))
        } else {
            empty.to_string()
        };
        let y = inner.y + u16::from(chrome == 3).min(inner.height - 1);
        let line_area = Rect::new(inner.x + 2, y, inner.width.saturating_sub(2), 1);
        frame.render_widget(Line::styled(text, DIM), line_area);
    }
}

fn draw_rooms(state: &State, frame: &mut Frame, area: Rect) {
    let view = &state.rooms;
    let rooms = &state.snapshot.rooms;
    let title = vec![
        heading("Rooms", Pane::Rooms, state.focus),
        count(view.rows.len(), rooms.len(), "room", "rooms"),
    ];
    let block = pane_block(state, Pane::Rooms, title, view);
    let (shown, widths) = fitted(area, &ROOM_WIDTHS, &ROOM_DROP, MIN_NAME);
    let now = state.now_ms;
    draw_table(
        state,
        frame,
        area,
        Pane::Rooms,
        block,
        Some(header_row(&ROOM_COLUMNS, view, 2, &shown)),
        &widths,
        "no rooms",
        |i| rooms.get(i).map(|r| pick(room_cells(r, now), &shown)),
    );
}

fn room_cells(r: &RoomRow, now: i64) -> Vec<Cell<'static>> {
    let name = if r.kind == "dm" {
        Line::from(vec![Span::styled("dm ", DIM), Span::raw(clean(&r.name))])
    } else {
        Line::from(format!("#{}", clean(&r.name)))
    };
    let vis_style = if r.visibility == "private" {
        Style::new().fg(Color::Magenta)
    } else {
        Style::new()
    };
    let online_style = if r.online > 0 {
        Style::new().fg(Color::Green)
    } else {
        DIM
    };
    vec![
        Cell::from(name),
        Cell::from(Span::styled(clean(&r.visibility), vis_style)),
        right(r.members.to_string()),
        Cell::from(Line::styled(r.online.to_string(), online_style).right_aligned()),
        right(rate(r.msgs_per_sec)),
        right(r.last_activity.map_or("-".into(), |t| ago(now, t))),
    ]
}

fn draw_users(state: &State, frame: &mut Frame, area: Rect) {
    let view = &state.users;
    let users = &state.snapshot.users;
    let title = vec![
        heading("Users", Pane::Users, state.focus),
        count(view.rows.len(), users.len(), "user online", "users online"),
    ];
    let block = pane_block(state, Pane::Users, title, view);
    let (shown, widths) = fitted(area, &USER_WIDTHS, &USER_DROP, MIN_NAME);
    let now = state.now_ms;
    draw_table(
        state,
        frame,
        area,
        Pane::Users,
        block,
        Some(header_row(&USER_COLUMNS, view, 2, &shown)),
        &widths,
        "nobody is online",
        |i| users.get(i).map(|u| pick(user_cells(u, now), &shown)),
    );
}

fn user_cells(u: &UserRow, now: i64) -> Vec<Cell<'static>> {
    let role_style = match u.role.as_str() {
        "admin" => Style::new().fg(Color::Red),
        "moderator" => Style::new().fg(Color::Yellow),
        _ => DIM,
    };
    vec![
        Cell::from(clean(&u.username)),
        Cell::from(Span::styled(clean(&u.role), role_style)),
        right(u.connections.to_string()),
        right(u.rooms.to_string()),
        right(if u.since > 0 {
            ago(now, u.since)
        } else {
            "-".into()
        }),
        Cell::from(u.addr.as_deref().map_or_else(|| "-".into(), clean)),
    ]
}

fn draw_events(state: &State, frame: &mut Frame, area: Rect) {
    let view = &state.events;
    let mut title = vec![
        heading("Events", Pane::Events, state.focus),
        count(view.rows.len(), state.log.len(), "line", "lines"),
    ];
    if !view.following() {
        title.push(Span::styled(" · paused (End follows)", DIM));
    }
    let block = pane_block(state, Pane::Events, title, view);
    use Constraint::{Fill, Length};
    let widths = [Length(8), Fill(1)];
    draw_table(
        state,
        frame,
        area,
        Pane::Events,
        block,
        None,
        &widths,
        "nothing yet",
        |i| state.log.get(i).map(log_row),
    );
}

fn log_row(line: &LogLine) -> Row<'static> {
    let style = match line.kind.as_str() {
        "error" => Style::new().fg(Color::Red),
        "ok" => Style::new().fg(Color::Green),
        "info" => Style::new().fg(Color::Cyan),
        "kick" | "ban" | "mute" | "delete" | "close" | "rate_limited" => {
            Style::new().fg(Color::Yellow)
        }
        "disconnect" | "leave" => DIM,
        _ => Style::new(),
    };
    Row::new(vec![
        Cell::from(Span::styled(clock(line.at), DIM)),
        Cell::from(Span::styled(clean(&line.text), style)),
    ])
}

/// The seconds the chart shows: one per braille dot across its plot, so
/// every second is drawn and the y axis scales to what is drawn, up to
/// the five minutes the server keeps.
fn chart_window(area: Rect) -> usize {
    // Borders, the y labels and the axis line take about 8 columns.
    let dots = usize::from(area.width.saturating_sub(8)) * 2;
    dots.clamp(30, 300)
}

fn draw_chart(state: &State, frame: &mut Frame, area: Rect) {
    let window = chart_window(area);
    let s = &state.snapshot.server;
    let points = &state.snapshot.throughput;
    // The newest point is "now"; one point per second before it.
    let shown = &points[points.len().saturating_sub(window)..];
    let n = shown.len();
    let series = |f: fn(&super::snapshot::Point) -> f64| -> Vec<(f64, f64)> {
        shown
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64 - (n as f64 - 1.0), f(p).max(0.0)))
            .collect()
    };
    let messages = series(|p| p.messages);
    let deliveries = series(|p| p.deliveries);
    // The top follows what is on screen: a spike that has scrolled off no
    // longer flattens the rest. Never below 1/s, so an idle server's
    // noise does not fill the chart.
    let top = messages
        .iter()
        .chain(&deliveries)
        .map(|&(_, y)| y)
        .fold(0.0_f64, f64::max);
    let top = nice_ceiling(top);
    let mut title = vec![
        Span::styled(" ■ msg/s ", Style::new().fg(Color::Cyan)),
        Span::styled(rate(s.messages_per_sec), Style::new().bold()),
        Span::styled("  ■ dlv/s ", Style::new().fg(Color::Magenta)),
        Span::styled(rate(s.deliveries_per_sec), Style::new().bold()),
        Span::raw(" "),
    ];
    if area.width >= 44 {
        title.insert(0, Span::styled(" Traffic", Style::new().bold()));
    }
    let title = Line::from(title);
    let datasets = vec![
        Dataset::default()
            .name("deliveries/s")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Magenta))
            .data(&deliveries),
        Dataset::default()
            .name("messages/s")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Cyan))
            .data(&messages),
    ];
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(title).border_style(DIM))
        .legend_position(None)
        .x_axis(
            Axis::default()
                .bounds([1.0 - window as f64, 0.0])
                .labels([format!("-{}", short_duration(window as u64)), "now".into()])
                .style(DIM),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, top])
                .labels(["0".to_string(), axis_label(top)])
                .style(DIM),
        );
    frame.render_widget(chart, area);
}

fn draw_footer(state: &State, frame: &mut Frame, area: Rect) {
    match &state.mode {
        Mode::Command { line, .. } => {
            let text = format!(":{line}");
            let x = area.x + (text.chars().count() as u16).min(area.width.saturating_sub(1));
            frame.render_widget(Line::from(text), area);
            frame.set_cursor_position(Position::new(x, area.y));
        }
        Mode::Filter => {
            let filter = &state.view(state.focus).filter;
            let text = format!("/{filter}");
            let x = area.x + (text.chars().count() as u16).min(area.width.saturating_sub(1));
            frame.render_widget(
                Line::from(vec![
                    Span::styled(text, Style::new().fg(Color::Yellow)),
                    Span::styled("   Enter keep · Esc clear", DIM),
                ]),
                area,
            );
            frame.set_cursor_position(Position::new(x, area.y));
        }
        _ => match &state.flash {
            Some(f) => {
                let style = if f.error {
                    Style::new().fg(Color::Red).bold()
                } else {
                    Style::new().fg(Color::Green)
                };
                frame.render_widget(Line::styled(format!(" {}", clean(&f.text)), style), area);
            }
            None if matches!(state.mode, Mode::Restrictions) => {
                frame.render_widget(keys_line(&RESTRICTION_KEYS, area.width), area)
            }
            None if matches!(state.mode, Mode::Room) => {
                frame.render_widget(keys_line(&ROOM_KEYS, area.width), area)
            }
            None => frame.render_widget(help_bar(state.focus, area.width), area),
        },
    }
}

/// The keys that matter in the focused pane, most important first, as
/// many as fit.
fn help_bar(focus: Pane, width: u16) -> Line<'static> {
    // Tab comes early: the user keys act only in the users pane, so
    // without it the way there is missing from the bar.
    let mut keys: Vec<(&str, &str)> = vec![("?", "help"), ("q", "quit"), ("Tab", "pane")];
    match focus {
        Pane::Users => keys.extend([("k", "kick"), ("b", "ban"), ("m", "mute"), ("u", "unban")]),
        Pane::Rooms => keys.extend([("Enter", "messages"), ("x", "close room")]),
        Pane::Events => keys.push(("End", "follow")),
    }
    keys.extend([(":", "cmd"), ("/", "filter"), ("s", "sort"), ("B", "bans")]);
    keys_line(&keys, width)
}

/// The keys of the bans and mutes view.
const RESTRICTION_KEYS: [(&str, &str); 3] = [("u", "lift"), ("↑↓", "move"), ("Esc", "close")];

/// The keys of the room view.
const ROOM_KEYS: [(&str, &str); 3] = [("d", "delete"), ("↑↓", "move"), ("Esc", "close")];

/// Keys and what they do, as many as fit in `width`.
fn keys_line(keys: &[(&str, &str)], width: u16) -> Line<'static> {
    let mut spans = Vec::new();
    let mut used = 0usize;
    for &(key, label) in keys {
        let w = key.chars().count() + 2 + label.len() + 1;
        if used + w > usize::from(width) {
            break;
        }
        used += w;
        spans.push(Span::styled(format!(" {key} "), KEY));
        spans.push(Span::raw(format!("{label} ")));
    }
    Line::from(spans)
}

fn draw_confirm(frame: &mut Frame, question: &str, choices: &[(&str, &str)]) {
    let area = frame.area();
    let width = 64.min(area.width.saturating_sub(2)).max(20);
    let inner = usize::from(width.saturating_sub(4)).max(1);
    let mut lines: Vec<Line> = wrap_words(&clean(question), inner)
        .into_iter()
        .map(|l| Line::from(l).bold())
        .collect();
    lines.push(Line::default());
    let choice = |key: &str, label: &str| {
        vec![
            Span::styled(format!(" {key} "), KEY),
            Span::raw(format!(" {label}   ")),
        ]
    };
    let one_line: usize = choices.iter().map(|(k, l)| k.len() + 6 + l.len()).sum();
    if one_line <= inner {
        lines.push(Line::from(
            choices
                .iter()
                .flat_map(|(k, l)| choice(k, l))
                .collect::<Vec<_>>(),
        ));
    } else {
        lines.extend(choices.iter().map(|(k, l)| Line::from(choice(k, l))));
    }
    let popup = centered(area, width, lines.len() as u16 + 2);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(" Confirm ")
                .border_style(Style::new().fg(Color::Yellow))
                .padding(ratatui::widgets::Padding::horizontal(1)),
        ),
        popup,
    );
}

/// Greedy word wrap; a word longer than a line is cut.
fn wrap_words(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let needed = line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
        if !line.is_empty() && needed > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

fn draw_restrictions(state: &State, frame: &mut Frame) {
    let area = restrictions_area(frame.area());
    frame.render_widget(Clear, area);
    let view = &state.restricted;
    let bans = state
        .restrictions
        .iter()
        .filter(|r| r.kind == RestrictionKind::Ban)
        .count();
    let mutes = state.restrictions.len() - bans;
    let title = vec![
        Span::styled(" Bans & mutes", Style::new().fg(FOCUS).bold()),
        Span::raw(format!(
            " · {bans} {} · {mutes} {} ",
            if bans == 1 { "ban" } else { "bans" },
            if mutes == 1 { "mute" } else { "mutes" }
        )),
    ];
    let block = overlay_block(title, state.restrictions_error.as_deref(), view);
    let header = Row::new(["user", "what", "until", "reason", "by"])
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    use Constraint::{Fill, Length};
    let widths = [Length(16), Length(20), Length(20), Fill(1), Length(10)];
    let empty = empty_text(
        state.restrictions_loaded || state.restrictions_error.is_some(),
        "nobody is banned or muted",
    );
    let now = state.now_ms;
    let table = Tabled {
        view,
        focused: true,
        block,
        header: Some(header),
        widths: &widths,
        empty,
    };
    draw_view(state, frame, area, table, |i| {
        state.restrictions.get(i).map(|r| restriction_row(r, now))
    });
}

/// What an empty table says: still reading, or that there is nothing
/// (once read, or once the read has failed and says so elsewhere).
fn empty_text(answered: bool, nothing: &'static str) -> &'static str {
    if answered { nothing } else { "reading…" }
}

fn restriction_row(r: &Restriction, now: i64) -> Row<'static> {
    let (what, style) = match &r.kind {
        RestrictionKind::Ban => ("banned".to_string(), Style::new().fg(Color::Red)),
        RestrictionKind::Mute(None) => ("muted everywhere".into(), Style::new().fg(Color::Yellow)),
        RestrictionKind::Mute(Some(room)) => (
            format!("muted in #{}", clean(room)),
            Style::new().fg(Color::Yellow),
        ),
    };
    let until = match r.until {
        None => "until lifted".to_string(),
        Some(t) => format!(
            "{} (in {})",
            clock(t),
            short_duration((t.saturating_sub(now) / 1000).max(0) as u64)
        ),
    };
    Row::new(vec![
        Cell::from(clean(&r.username)),
        Cell::from(Span::styled(what, style)),
        Cell::from(until),
        Cell::from(r.reason.as_deref().map_or_else(|| "-".into(), clean)),
        Cell::from(r.by.as_deref().map_or_else(|| "-".into(), clean)),
    ])
}

fn draw_room(state: &State, frame: &mut Frame) {
    let Some(room) = &state.room else { return };
    let area = room_area(frame.area());
    frame.render_widget(Clear, area);
    let view = &room.view;
    let shown = room.messages.len();
    let title = vec![
        Span::styled(
            format!(" #{}", clean(&room.name)),
            Style::new().fg(FOCUS).bold(),
        ),
        Span::raw(format!(
            " · {}{shown} {} ",
            if room.has_more { "latest " } else { "" },
            if shown == 1 { "message" } else { "messages" },
        )),
    ];
    let block = overlay_block(title, room.error.as_deref(), view);
    // The id comes last: it is what `:delete` takes, but `d` needs no
    // id, so on a narrow screen it gives way to the text.
    let inner = area.width.saturating_sub(4);
    let with_id = fit_columns(inner, &[0, 8, 16, ID_WIDTH], &[3], 30).contains(&3);
    let mut titles = vec!["time", "author", "message"];
    use Constraint::{Fill, Length};
    let mut widths = vec![Length(8), Length(16), Fill(1)];
    if with_id {
        titles.push("id");
        widths.push(Length(ID_WIDTH));
    }
    let header =
        Row::new(titles).style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let empty = empty_text(room.loaded || room.error.is_some(), "no messages");
    let table = Tabled {
        view,
        focused: true,
        block,
        header: Some(header),
        widths: &widths,
        empty,
    };
    draw_view(state, frame, area, table, |i| {
        room.messages.get(i).map(|m| message_row(m, with_id))
    });
}

/// A message id's width (a ULID).
const ID_WIDTH: u16 = 26;

fn message_row(m: &MessageRow, with_id: bool) -> Row<'static> {
    let text = if m.deleted {
        Span::styled("(deleted)", DIM.italic())
    } else {
        let edited = if m.edited_at.is_some() {
            " (edited)"
        } else {
            ""
        };
        let files = match m.attachments.len() {
            0 => String::new(),
            1 => " [1 file]".into(),
            n => format!(" [{n} files]"),
        };
        let text = format!("{}{files}{edited}", clean(&m.text));
        Span::raw(text.trim_start().to_string())
    };
    let mut cells = vec![
        Cell::from(clock(m.created_at)),
        Cell::from(clean(&m.sender.username)),
        Cell::from(text),
    ];
    if with_id {
        cells.push(Cell::from(Span::styled(clean(&m.id), DIM)));
    }
    Row::new(cells)
}

fn draw_help(frame: &mut Frame, scroll: u16) {
    let area = frame.area();
    let popup = help_area(area);
    let scroll = scroll.min(help_max_scroll(area));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(help_text(popup.width.saturating_sub(2)))
            .scroll((scroll, 0))
            .block(
                Block::bordered()
                    .title(" Help · ↑↓ scroll · Esc closes ")
                    .border_style(Style::new().fg(FOCUS)),
            ),
        popup,
    );
}

/// A rate with one decimal, without decimals once it is large.
pub fn rate(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        "0".into()
    } else if v >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn axis_label(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The chart's top: a round number at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Two units at most: 45s, 12m, 3h05m, 4d02h.
pub fn short_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h{:02}m", secs / 3_600, secs % 3_600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3_600),
    }
}

fn ago(now_ms: i64, then_ms: i64) -> String {
    short_duration((now_ms.saturating_sub(then_ms) / 1000).max(0) as u64)
}

/// Time of day in UTC, as the server's logs give it.
pub fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// The frame of an overlay listing rows (bans and mutes, a room's
/// messages): its title, a failed read after it, and the selected row's
/// place at the bottom.
fn overlay_block<'a>(mut title: Vec<Span<'a>>, error: Option<&str>, view: &TableView) -> Block<'a> {
    if let Some(e) = error {
        title.push(Span::styled(
            format!("✗ {} ", clean(e)),
            Style::new().fg(Color::Red).bold(),
        ));
    }
    let position = if view.rows.is_empty() {
        String::new()
    } else {
        format!(" {}/{} ", view.selected + 1, view.rows.len())
    };
    Block::bordered()
        .title(Line::from(title))
        .title_bottom(Line::from(position).right_aligned())
        .border_style(Style::new().fg(FOCUS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rate(1.5), "1.5");
        assert_eq!(rate(f64::NAN), "0");
        assert_eq!(rate(12_345.6), "12346");
        assert_eq!(bytes(12_345_678), "11.8 MiB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(short_duration(7_380), "2h03m");
        assert_eq!(short_duration(45), "45s");
        assert_eq!(clock(1_763_841_605_000), "20:00:05");
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
    }
}
