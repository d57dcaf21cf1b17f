//! The `:` command line: what the operator types becomes admin
//! [`Request`]s, or a console command. Pure parsing, no state.

use crate::admin::Request;
use crate::domain::{Id, Reason, Username};

/// What a command line asks for.
#[derive(Debug)]
pub enum Command {
    Send(Request),
    Quit,
    Help,
    /// Open the bans and mutes view.
    Restrictions,
}

/// Parses a command line (without the leading `:`). `Ok(None)` for an
/// empty line. `is_room` tells whether a bare word names a known room: in
/// `mute bob general spam` the word `general` is the room only if a room
/// of that name exists (`#general` always is).
pub fn parse_command(
    line: &str,
    is_room: impl Fn(&str) -> bool,
) -> Result<Option<Command>, String> {
    let Some((verb, rest)) = next_word(line) else {
        return Ok(None);
    };
    let verb = verb.to_ascii_lowercase();
    let req = match verb.as_str() {
        "quit" | "q" | "exit" => return Ok(Some(Command::Quit)),
        "help" | "?" => return Ok(Some(Command::Help)),
        "bans" | "mutes" => {
            no_more(&verb, rest)?;
            return Ok(Some(Command::Restrictions));
        }
        "webhooks" => {
            no_more(&verb, rest)?;
            Request::WebhookList
        }
        "kick" => {
            let (username, rest) = user_arg(&verb, rest)?;
            Request::Kick {
                username,
                reason: reason(&verb, rest)?,
            }
        }
        "ban" => {
            let (username, rest) = user_arg(&verb, rest)?;
            let (duration_secs, rest) = duration_arg(rest)?;
            Request::Ban {
                username,
                reason: reason(&verb, rest)?,
                duration_secs,
            }
        }
        "unban" => {
            let (username, rest) = user_arg(&verb, rest)?;
            no_more(&verb, rest)?;
            Request::Unban { username }
        }
        "mute" => {
            let (username, mut rest) = user_arg(&verb, rest)?;
            let mut room = None;
            if let Some((word, after)) = next_word(rest)
                && (word.starts_with('#') || (parse_duration(word).is_none() && is_room(word)))
            {
                room = Some(room_name(&verb, word)?);
                rest = after;
            }
            let (duration_secs, rest) = duration_arg(rest)?;
            Request::Mute {
                username,
                room,
                reason: reason(&verb, rest)?,
                duration_secs,
            }
        }
        "unmute" => {
            let (username, rest) = user_arg(&verb, rest)?;
            let room = match next_word(rest) {
                Some((word, after)) => {
                    no_more(&verb, after)?;
                    Some(room_name(&verb, word)?)
                }
                None => None,
            };
            Request::Unmute { username, room }
        }
        "delete" => {
            let (id, rest) =
                next_word(rest).ok_or("delete: which message? (delete MESSAGE_ID [reason…])")?;
            Id::parse("message id", id).map_err(|e| format!("delete: {e}"))?;
            Request::DeleteMessage {
                id: id.to_string(),
                reason: reason(&verb, rest)?,
            }
        }
        "announce" => {
            let (room, text) = match next_word(rest) {
                Some((word, after)) if word.starts_with('#') => {
                    (Some(room_name(&verb, word)?), after)
                }
                _ => (None, rest),
            };
            let text = text.trim();
            if text.is_empty() {
                return Err("announce: nothing to say (announce [#ROOM] TEXT…)".into());
            }
            Request::Announce {
                text: text.to_string(),
                room,
            }
        }
        "close" => {
            let (word, rest) = next_word(rest).ok_or("close: which room? (close ROOM)")?;
            no_more(&verb, rest)?;
            Request::RoomDelete {
                room: room_name(&verb, word)?,
            }
        }
        other => return Err(format!("unknown command '{other}' (? lists the commands)")),
    };
    Ok(Some(Command::Send(req)))
}

/// The first word and the rest, with the rest's leading space removed so
/// a reason keeps the operator's own spacing.
fn next_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Some((&s[..end], s[end..].trim_start()))
}

fn user_arg<'a>(verb: &str, rest: &'a str) -> Result<(String, &'a str), String> {
    let (word, rest) = next_word(rest).ok_or_else(|| format!("{verb}: which user?"))?;
    let name = Username::parse(word.trim_start_matches('@')).map_err(|e| format!("{verb}: {e}"))?;
    Ok((name.as_str().to_string(), rest))
}

fn room_name(verb: &str, word: &str) -> Result<String, String> {
    let name = word.trim_start_matches('#');
    if name.is_empty() {
        return Err(format!("{verb}: '#' needs a room name after it"));
    }
    Ok(name.to_string())
}

fn duration_arg(rest: &str) -> Result<(Option<u64>, &str), String> {
    match next_word(rest) {
        Some((word, after)) => match parse_duration(word) {
            Some(secs) => Ok((Some(secs?), after)),
            None => Ok((None, rest)),
        },
        None => Ok((None, rest)),
    }
}

fn no_more(verb: &str, rest: &str) -> Result<(), String> {
    if rest.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{verb}: unexpected '{}'", rest.trim()))
    }
}

/// The rest of the line as a reason, checked as the server checks it.
fn reason(verb: &str, rest: &str) -> Result<Option<String>, String> {
    let r = rest.trim();
    if r.is_empty() {
        return Ok(None);
    }
    Reason::parse(r)
        .map(|r| Some(r.into_string()))
        .map_err(|e| format!("{verb}: {e}"))
}

/// `30s`, `30m`, `2h`, `7d`, `2w` and sums such as `1h30m`. `None` when the
/// word does not look like a duration at all (it is then part of a
/// reason); `Some(Err)` when it looks like one but is zero or too large.
pub fn parse_duration(word: &str) -> Option<Result<u64, String>> {
    let bytes = word.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_digit() {
        return None;
    }
    let mut total: Option<u64> = Some(0);
    let mut digits = 0usize;
    let mut number: Option<u64> = Some(0);
    for &b in bytes {
        if b.is_ascii_digit() {
            digits += 1;
            number = number
                .and_then(|n| n.checked_mul(10))
                .and_then(|n| n.checked_add(u64::from(b - b'0')));
            continue;
        }
        let unit: u64 = match b {
            b's' => 1,
            b'm' => 60,
            b'h' => 3_600,
            b'd' => 86_400,
            b'w' => 604_800,
            _ => return None,
        };
        if digits == 0 {
            return None;
        }
        total = total
            .zip(number.and_then(|n| n.checked_mul(unit)))
            .and_then(|(t, n)| t.checked_add(n));
        digits = 0;
        number = Some(0);
    }
    if digits != 0 {
        // A bare number ("3") has no unit: read it as a word of a reason.
        return None;
    }
    Some(match total {
        None => Err(format!("duration '{word}' is too long")),
        Some(0) => Err(format!("duration '{word}' must be longer than zero")),
        Some(t) => Ok(t),
    })
}

/// The compact form of a duration, as `parse_duration` reads it.
pub fn format_duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (604_800, "w"),
        (86_400, "d"),
        (3_600, "h"),
        (60, "m"),
        (1, "s"),
    ];
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut left = secs;
    for (size, unit) in UNITS {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Option<Command>, String> {
        parse_command(line, |r| r == "general")
    }

    fn send(line: &str) -> Request {
        match parse(line) {
            Ok(Some(Command::Send(r))) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Ok(30)));
        assert_eq!(parse_duration("30m"), Some(Ok(1_800)));
        assert_eq!(parse_duration("2h"), Some(Ok(7_200)));
        assert_eq!(parse_duration("7d"), Some(Ok(604_800)));
        assert_eq!(parse_duration("1h30m"), Some(Ok(5_400)));
        assert_eq!(parse_duration("spam"), None);
        assert_eq!(parse_duration("3"), None);
        assert_eq!(parse_duration("2x"), None);
        assert!(matches!(parse_duration("0m"), Some(Err(_))));
        assert!(matches!(
            parse_duration("99999999999999999999w"),
            Some(Err(_))
        ));
        assert_eq!(format_duration(5_400), "1h30m");
        assert_eq!(format_duration(7_200), "2h");
    }

    #[test]
    fn moderation_commands() {
        assert!(matches!(
            send("kick Bob being rude"),
            Request::Kick { username, reason: Some(r) } if username == "bob" && r == "being rude"
        ));
        assert!(matches!(
            send("ban bob 2h spamming"),
            Request::Ban { username, duration_secs: Some(7_200), reason: Some(r) }
                if username == "bob" && r == "spamming"
        ));
        assert!(matches!(
            send("ban bob spamming links"),
            Request::Ban { duration_secs: None, reason: Some(r), .. } if r == "spamming links"
        ));
        assert!(matches!(send("unban bob"), Request::Unban { username } if username == "bob"));
        assert!(matches!(
            send("mute bob #random 30m flooding"),
            Request::Mute { room: Some(room), duration_secs: Some(1_800), reason: Some(r), .. }
                if room == "random" && r == "flooding"
        ));
        assert!(matches!(
            send("mute bob general"),
            Request::Mute { room: Some(room), duration_secs: None, reason: None, .. } if room == "general"
        ));
        assert!(matches!(
            send("mute bob spam everywhere"),
            Request::Mute { room: None, reason: Some(r), .. } if r == "spam everywhere"
        ));
        assert!(matches!(
            send("unmute bob #general"),
            Request::Unmute { room: Some(room), .. } if room == "general"
        ));
        assert!(matches!(
            send("delete 01J0000000000000000000000A off-topic"),
            Request::DeleteMessage { reason: Some(r), .. } if r == "off-topic"
        ));
        assert!(matches!(
            send("announce #general hello  all"),
            Request::Announce { room: Some(room), text } if room == "general" && text == "hello  all"
        ));
        assert!(matches!(
            send("announce maintenance at noon"),
            Request::Announce { room: None, text } if text == "maintenance at noon"
        ));
        assert!(
            matches!(send("close #general"), Request::RoomDelete { room } if room == "general")
        );
        assert!(matches!(parse("quit"), Ok(Some(Command::Quit))));
        assert!(matches!(parse("bans"), Ok(Some(Command::Restrictions))));
        assert!(matches!(parse("mutes"), Ok(Some(Command::Restrictions))));
        assert!(matches!(
            parse("webhooks"),
            Ok(Some(Command::Send(Request::WebhookList)))
        ));
        assert!(matches!(parse("   "), Ok(None)));
    }

    #[test]
    fn bad_input_is_explained() {
        for (line, expect) in [
            ("frobnicate", "unknown command"),
            ("kick", "which user"),
            ("kick b", "username"),
            ("ban bob 0h", "longer than zero"),
            ("unban bob now", "unexpected"),
            ("delete nonsense", "message id"),
            ("announce #general", "nothing to say"),
            ("close", "which room"),
            ("mute bob # x", "room name"),
            ("kick bob \u{1b}[2J", "control characters"),
            ("bans now", "unexpected"),
        ] {
            match parse(line) {
                Err(e) => assert!(e.contains(expect), "{line}: {e}"),
                Ok(c) => panic!("{line} parsed: {c:?}"),
            }
        }
    }
}
