//! Finding `@username`, `@room` and `@here` in a message's text. Pure
//! text work: whether a name is a user, and whether that user may be
//! mentioned, is decided against the store when the message is applied.
//!
//! The rules, the same for every client:
//! - A mention starts with `@` at the start of the text or after a
//!   character that is neither a letter, a digit, nor one of `_ . - @`:
//!   so `(@bob)`, `hi,@bob` and `"@bob"` mention bob, `bob@example.com`
//!   and `@@bob` do not.
//! - The name is the longest run of username characters (`a-z A-Z 0-9 _ .
//!   -`) after the `@`, compared ignoring case, as usernames are. A run
//!   followed by `@` (`@bob@example.com`) is an address, not a mention;
//!   one followed by another letter (`@bobé`) is no name at all.
//! - Sentence punctuation is not part of a name: when the run ends in `.`
//!   or `-`, the run without them is tried too ("thanks @bob." mentions
//!   bob, or the user `bob.` if there is one: the longer name wins).
//! - `@room` and `@here` are keywords, in any case and with trailing
//!   punctuation (`@room.`). A user named `room` or `here` is not
//!   mentioned by name.
//! - A name that cannot be a username (shorter than 3 or longer than 32
//!   characters) is plain text.

use super::Username;

/// What a text asks to mention, before anyone checks who exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mentions {
    /// One entry per distinct `@name`: the names it may stand for,
    /// longest first, lowercase.
    pub names: Vec<Vec<String>>,
    /// `@room`: every member of the room.
    pub room: bool,
    /// `@here`: the members online when it is sent.
    pub here: bool,
}

impl Mentions {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && !self.room && !self.here
    }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Whether `prev` (the character before an `@`) lets a mention start.
fn opens(prev: Option<char>) -> bool {
    match prev {
        None => true,
        Some(c) => !(c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '@')),
    }
}

/// The mentions in `text`, in the order they first appear.
pub fn parse(text: &str) -> Mentions {
    let mut out = Mentions::default();
    // Most messages mention no one: one byte search and done.
    if !text.contains('@') {
        return out;
    }
    let mut prev: Option<char> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '@' || !opens(prev) {
            prev = Some(c);
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while let Some(&(j, n)) = chars.peek() {
            if !name_char(n) {
                break;
            }
            end = j + n.len_utf8();
            chars.next();
        }
        prev = text[..end].chars().next_back();
        // A name ends a word: not followed by `@` (an address) or by a
        // letter no username has (`@bobé` is no mention of bob).
        if end == start
            || chars
                .peek()
                .is_some_and(|&(_, n)| n == '@' || n.is_alphanumeric())
        {
            continue;
        }
        let run = text[start..end].to_ascii_lowercase();
        let trimmed = run.trim_end_matches(['.', '-']);
        match trimmed {
            "room" => {
                out.room = true;
                continue;
            }
            "here" => {
                out.here = true;
                continue;
            }
            _ => {}
        }
        let mut candidates = Vec::with_capacity(2);
        for name in [run.as_str(), trimmed] {
            if valid(name) && !candidates.iter().any(|c: &String| c == name) {
                candidates.push(name.to_string());
            }
        }
        if !candidates.is_empty() && !out.names.contains(&candidates) {
            out.names.push(candidates);
        }
    }
    out
}

fn valid(name: &str) -> bool {
    name != "room" && name != "here" && Username::parse(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<Vec<&'static str>> {
        let leaked: &'static str = Box::leak(text.to_string().into_boxed_str());
        parse(leaked)
            .names
            .into_iter()
            .map(|c| {
                c.into_iter()
                    .map(|s| &*Box::leak(s.into_boxed_str()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn plain_names_at_word_boundaries() {
        assert_eq!(names("@bob hi"), vec![vec!["bob"]]);
        assert_eq!(names("hi @bob"), vec![vec!["bob"]]);
        assert_eq!(
            names("hi @bob and @carol_2"),
            vec![vec!["bob"], vec!["carol_2"]]
        );
        assert_eq!(names("(@bob)"), vec![vec!["bob"]]);
        assert_eq!(names("hi,@bob!"), vec![vec!["bob"]]);
        assert_eq!(names("\"@bob\""), vec![vec!["bob"]]);
        assert_eq!(names("@bob's idea"), vec![vec!["bob"]]);
        assert_eq!(names("line\n@bob"), vec![vec!["bob"]]);
        assert_eq!(names("»@bob«"), vec![vec!["bob"]]);
    }

    #[test]
    fn not_inside_words_or_addresses() {
        assert!(names("mail bob@example.com").is_empty());
        assert!(names("@bob@example.com").is_empty());
        assert!(names("@@bob").is_empty());
        assert!(names("x_@bob").is_empty());
        assert!(names("é@bob").is_empty());
        assert!(names("@ bob").is_empty());
        assert!(names("@").is_empty());
        assert!(names("no at sign").is_empty());
    }

    #[test]
    fn case_is_ignored_as_in_usernames() {
        assert_eq!(names("@Bob @BOB @bob"), vec![vec!["bob"]]);
        assert!(parse("@ROOM").room);
        assert!(parse("@Here").here);
    }

    #[test]
    fn trailing_punctuation_is_tried_without() {
        assert_eq!(names("thanks @bob."), vec![vec!["bob.", "bob"]]);
        assert_eq!(names("@bob..."), vec![vec!["bob...", "bob"]]);
        assert_eq!(names("@bob-"), vec![vec!["bob-", "bob"]]);
        assert_eq!(names("@b.o.b"), vec![vec!["b.o.b"]]);
        assert_eq!(names("@jean-luc, hi"), vec![vec!["jean-luc"]]);
    }

    #[test]
    fn only_names_a_username_could_have() {
        assert!(names("@al").is_empty());
        assert!(names(&format!("@{}", "a".repeat(33))).is_empty());
        assert_eq!(names(&format!("@{}", "a".repeat(32))).len(), 1);
        // Too long with the dots, a name without them.
        assert_eq!(
            names(&format!("@{}...", "a".repeat(31))),
            vec![vec!["a".repeat(31).leak() as &str]]
        );
        // Characters a username cannot have end the name.
        assert_eq!(names("@bób"), Vec::<Vec<&str>>::new());
        assert!(names("@bobé").is_empty());
    }

    #[test]
    fn keywords() {
        let m = parse("@room look, @here too");
        assert!(m.room && m.here && m.names.is_empty());
        let m = parse("ping @room.");
        assert!(m.room && m.names.is_empty());
        assert!(!parse("@rooms").room);
        assert_eq!(names("@rooms"), vec![vec!["rooms"]]);
        assert!(!parse("x@here").here);
        assert!(parse("hello").is_empty());
    }
}
