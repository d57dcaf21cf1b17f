//! Keys become [`Action`]s. Nothing here changes state: the same key means
//! different things in different modes, so the mapping reads the mode and
//! [`State::update`](super::state::State::update) does the rest.

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::{Action, Mode};

/// The action a terminal event stands for in `mode`, if any.
pub fn action_for(mode: &Mode, event: &Event) -> Option<Action> {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => key_action(mode, *key),
        Event::Resize(width, height) => Some(Action::Resize {
            width: *width,
            height: *height,
        }),
        _ => None,
    }
}

fn key_action(mode: &Mode, key: KeyEvent) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match mode {
        Mode::Normal => normal_key(key, ctrl),
        Mode::Filter | Mode::Command { .. } => text_key(key, ctrl),
        Mode::Confirm(_) | Mode::ConfirmQuit => match key.code {
            KeyCode::Char('y' | 'Y') => Some(Action::Yes),
            KeyCode::Char('c') if ctrl => Some(Action::Cancel),
            KeyCode::Char('n' | 'N') => Some(Action::No),
            KeyCode::Char('e' | 'E') => Some(Action::Edit),
            KeyCode::Esc => Some(Action::Cancel),
            _ => None,
        },
        Mode::Help { .. } => match key.code {
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('?' | 'q') => Some(Action::Cancel),
            KeyCode::Char('c') if ctrl => Some(Action::Cancel),
            _ => movement(key.code),
        },
        Mode::Restrictions => match key.code {
            KeyCode::Char('c') if ctrl => Some(Action::Cancel),
            KeyCode::Esc | KeyCode::Char('q' | 'B') => Some(Action::Cancel),
            KeyCode::Char('u') => Some(Action::Lift),
            _ => movement(key.code),
        },
        Mode::Room => match key.code {
            KeyCode::Char('c') if ctrl => Some(Action::Cancel),
            KeyCode::Esc | KeyCode::Char('q') => Some(Action::Cancel),
            KeyCode::Char('d') => Some(Action::DeleteMessage),
            _ => movement(key.code),
        },
    }
}

fn normal_key(key: KeyEvent, ctrl: bool) -> Option<Action> {
    if ctrl {
        return match key.code {
            KeyCode::Char('c') => Some(Action::Quit),
            _ => None,
        };
    }
    match key.code {
        KeyCode::Tab => Some(Action::FocusNext),
        KeyCode::BackTab => Some(Action::FocusPrev),
        KeyCode::Esc => Some(Action::ClearFilter),
        KeyCode::Char('/') => Some(Action::StartFilter),
        KeyCode::Char(':') => Some(Action::StartCommand),
        KeyCode::Char('s') => Some(Action::CycleSort),
        KeyCode::Char('S') => Some(Action::ReverseSort),
        KeyCode::Char('k') => Some(Action::Kick),
        KeyCode::Char('b') => Some(Action::Ban),
        KeyCode::Char('m') => Some(Action::Mute),
        KeyCode::Char('u') => Some(Action::Unban),
        KeyCode::Char('B') => Some(Action::Restrictions),
        KeyCode::Char('x') => Some(Action::CloseRoom),
        KeyCode::Enter => Some(Action::OpenRoom),
        KeyCode::Char('?') => Some(Action::Help),
        KeyCode::Char('q') => Some(Action::Quit),
        code => movement(code),
    }
}

/// Keys while typing a filter or a command.
fn text_key(key: KeyEvent, ctrl: bool) -> Option<Action> {
    if ctrl {
        return match key.code {
            KeyCode::Char('c') => Some(Action::Cancel),
            KeyCode::Char('u') => Some(Action::ClearInput),
            _ => None,
        };
    }
    match key.code {
        KeyCode::Char(c) => Some(Action::Input(c)),
        KeyCode::Backspace => Some(Action::Backspace),
        KeyCode::Enter => Some(Action::Submit),
        KeyCode::Esc => Some(Action::Cancel),
        code => movement(code),
    }
}

fn movement(code: KeyCode) -> Option<Action> {
    match code {
        KeyCode::Up => Some(Action::Up),
        KeyCode::Down => Some(Action::Down),
        KeyCode::PageUp => Some(Action::PageUp),
        KeyCode::PageDown => Some(Action::PageDown),
        KeyCode::Home => Some(Action::Home),
        KeyCode::End => Some(Action::End),
        _ => None,
    }
}
