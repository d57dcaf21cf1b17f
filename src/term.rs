//! What may reach an operator's terminal. Strings from the store (a topic,
//! an audit detail, a reason stored before reasons were checked, a message)
//! are shown with control characters as escapes (`\u{1b}`, `\n`), and
//! with characters that reorder or hide text shown by their code, so that
//! none can drive the terminal or make a line read other than it is.

use std::borrow::Cow;

use crate::domain::reorders_or_hides;

pub fn escape(s: &str) -> Cow<'_, str> {
    let hostile = |c: char| c.is_control() || reorders_or_hides(c);
    if !s.chars().any(hostile) {
        return Cow::Borrowed(s);
    }
    let mut clean = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            clean.extend(c.escape_default());
        } else if reorders_or_hides(c) {
            clean.extend(c.escape_unicode());
        } else {
            clean.push(c);
        }
    }
    Cow::Owned(clean)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn hostile_characters_become_visible() {
        assert_eq!(escape("plain topic"), "plain topic");
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("x\ny"), "x\\ny");
        assert_eq!(escape("\u{202E}exe.txt"), "\\u{202e}exe.txt");
    }
}
