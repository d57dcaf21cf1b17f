//! Where each part of the console's screen goes: geometry only, shared by
//! the drawing and by the state, which pages by what fits.

use ratatui::layout::{Constraint, Layout, Rect};

/// Where each part of the screen goes.
#[derive(Debug, Clone, Copy)]
pub struct Areas {
    pub header: Rect,
    pub rooms: Rect,
    pub users: Rect,
    pub chart: Rect,
    pub events: Rect,
    pub footer: Rect,
}

/// Side by side from this width: each table then still has its columns.
const WIDE: u16 = 160;

pub fn layout(area: Rect) -> Areas {
    use Constraint::{Fill, Length};
    let [header, body, footer] = area.layout(&Layout::vertical([Length(1), Fill(1), Length(1)]));
    let (rooms, users, chart, events) = if area.width >= WIDE {
        let [top, bottom] = body.layout(&Layout::vertical([Fill(3), Fill(2)]));
        let [rooms, users] = top.layout(&Layout::horizontal([Fill(2), Fill(3)]));
        let [chart, events] = bottom.layout(&Layout::horizontal([Fill(2), Fill(3)]));
        (rooms, users, chart, events)
    } else {
        let [rooms, users, bottom] = body.layout(&Layout::vertical([Fill(3), Fill(4), Fill(4)]));
        let chart_width = (area.width * 2 / 5).clamp(28.min(area.width), 60);
        let [chart, events] = bottom.layout(&Layout::horizontal([Length(chart_width), Fill(1)]));
        (rooms, users, chart, events)
    };
    Areas {
        header,
        rooms,
        users,
        chart,
        events,
        footer,
    }
}

pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    )
}

pub fn restrictions_area(area: Rect) -> Rect {
    centered(area, 100.min(area.width), area.height.saturating_sub(2))
}

/// Rows of bans and mutes the view shows: its height less the borders
/// and the column titles.
pub fn restrictions_rows(area: Rect) -> usize {
    usize::from(restrictions_area(area).height.saturating_sub(3))
}

pub fn room_area(area: Rect) -> Rect {
    centered(area, 120.min(area.width), area.height.saturating_sub(2))
}

/// Messages the room view shows: its height less the borders and the
/// column titles.
pub fn room_rows(area: Rect) -> usize {
    usize::from(room_area(area).height.saturating_sub(3))
}

pub fn help_area(area: Rect) -> Rect {
    centered(area, 84.min(area.width), area.height.saturating_sub(2))
}

/// How far the help scrolls before its last line reaches the bottom.
pub fn help_max_scroll(area: Rect) -> u16 {
    let popup = help_area(area);
    let inner = popup.height.saturating_sub(2);
    let lines = super::help::help_text(popup.width.saturating_sub(2)).len();
    (lines as u16).saturating_sub(inner)
}

/// Which of a table's columns to draw in `width` columns (inside the
/// borders and the selection mark). Column 0, the name, takes what is
/// left; `widths` are the others' (index 0 unused). While the name would
/// get fewer than `min_name` columns, columns go in `drop_order`: a table
/// without an address is still useful, one without names is not.
pub fn fit_columns(width: u16, widths: &[u16], drop_order: &[usize], min_name: u16) -> Vec<usize> {
    let mut shown: Vec<usize> = (0..widths.len()).collect();
    let name_width = |shown: &[usize]| {
        // One column of space before each column after the name.
        let others: u16 = shown.iter().skip(1).map(|&i| widths[i] + 1).sum();
        width.saturating_sub(others)
    };
    for &drop in drop_order {
        if name_width(&shown) >= min_name {
            break;
        }
        shown.retain(|&i| i != drop);
    }
    shown
}
