//! A reaction's emoji: exactly one emoji of Unicode's recommended set
//! (flags, keycaps, skin tones and ZWJ sequences included), never text.
//! The `emojis` crate holds the Unicode data; a lookup is one hash probe.

use super::DomainError;

/// Longer than any emoji of the recommended set (the longest, tag flags
/// and multi-person ZWJ sequences with skin tones, are about 35 bytes):
/// anything past it is refused before it is looked up.
const MAX_BYTES: usize = 64;

/// An emoji in its fully qualified form, so "❤" and "❤️" are one reaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Emoji(&'static str);

impl Emoji {
    pub fn parse(s: &str) -> Result<Emoji, DomainError> {
        if s.is_empty() {
            return Err(DomainError::new("emoji", "must not be empty"));
        }
        if s.len() > MAX_BYTES {
            return Err(DomainError::new("emoji", "must be a single emoji"));
        }
        // Unicode lists the bare digits, `#` and `*` as emoji components
        // (the start of a keycap); alone they are text.
        if s.is_ascii() {
            return Err(DomainError::new("emoji", "must be an emoji, not text"));
        }
        // The lookup is exact: two emoji, an emoji with text around it, or
        // a sequence Unicode does not recommend match nothing.
        match emojis::get(s) {
            Some(e) => Ok(Emoji(e.as_str())),
            None => Err(DomainError::new("emoji", "must be a single emoji")),
        }
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_emoji_of_every_kind_pass() {
        for ok in [
            "👍",
            "👍🏽", // skin tone
            "👩‍💻", // ZWJ sequence
            "👨‍👩‍👧‍👦", // family
            "🇫🇷", // flag
            "🏴󠁧󠁢󠁳󠁣󠁴󠁿", // tag flag (Scotland)
            "1️⃣", // keycap
            "❤️",
        ] {
            assert_eq!(Emoji::parse(ok).unwrap().as_str(), ok, "{ok:?}");
        }
    }

    #[test]
    fn unqualified_forms_become_one_reaction() {
        assert_eq!(Emoji::parse("❤").unwrap(), Emoji::parse("❤️").unwrap());
    }

    #[test]
    fn text_and_several_emoji_are_refused() {
        for bad in [
            "",
            "a",
            "ok",
            "1",
            "#",
            "👍👍",
            "👍 ",
            " 👍",
            "👍a",
            "🇫", // half a flag
            "é",
            "\u{200d}",
            &"👍".repeat(40),
        ] {
            assert!(Emoji::parse(bad).is_err(), "{bad:?}");
        }
    }
}
