//! How text becomes terms, for indexing, queries and highlights alike.
//!
//! Words are runs of letters and digits in any script (Unicode's
//! alphanumeric), lowercased and folded to ASCII where a folding exists
//! ("Café" and "CAFE" are both `cafe`). Scripts written without spaces
//! between words (Han, Hiragana, Katakana) give one term per character, so
//! a query of several such characters is a phrase of them and finds them
//! anywhere in a text, without a dictionary. Combining accents written as
//! separate code points stay in their word and are dropped from its term.

use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// The name the index's text field knows its analyzer by.
pub const NAME: &str = "confab";

/// Terms longer than this (in bytes) are dropped: no word is that long,
/// and a pasted blob should not fill the term dictionary.
const MAX_TERM_BYTES: usize = 64;

pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(WordTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TERM_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// A term and where it came from in the text (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub text: String,
    pub from: usize,
    pub to: usize,
}

/// The terms of `text`, in order; a term's index is its position.
pub fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<Term> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        let t = stream.token();
        out.push(Term {
            text: t.text.clone(),
            from: t.offset_from,
            to: t.offset_to,
        });
    }
    out
}

/// Characters of scripts written without spaces: each is a term of its own.
fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x31F0..=0x31FF    // Katakana phonetic extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF66..=0xFF9F    // half-width Katakana
        | 0x20000..=0x3134F  // CJK extensions B to G
    )
}

/// Combining marks that accent the letter before them.
fn is_combining(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

fn is_word(c: char) -> bool {
    (c.is_alphanumeric() && !is_unspaced(c)) || is_combining(c)
}

#[derive(Clone, Default)]
pub struct WordTokenizer {
    token: Token,
}

pub struct WordStream<'a> {
    text: &'a str,
    at: usize,
    token: &'a mut Token,
}

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordStream<'a>;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream<'a> {
        self.token.reset();
        WordStream {
            text,
            at: 0,
            token: &mut self.token,
        }
    }
}

impl TokenStream for WordStream<'_> {
    fn advance(&mut self) -> bool {
        self.token.text.clear();
        let rest = &self.text[self.at..];
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            let from = self.at + i;
            if is_unspaced(c) {
                let to = from + c.len_utf8();
                self.token.text.push(c);
                return self.emit(from, to);
            }
            // A word starts at a letter or digit, not at a stray mark.
            if is_word(c) && !is_combining(c) {
                let mut to = from + c.len_utf8();
                self.token.text.push(c);
                for (j, d) in chars.by_ref() {
                    if !is_word(d) {
                        break;
                    }
                    to = self.at + j + d.len_utf8();
                    if !is_combining(d) {
                        self.token.text.push(d);
                    }
                }
                return self.emit(from, to);
            }
        }
        self.at = self.text.len();
        false
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

impl WordStream<'_> {
    fn emit(&mut self, from: usize, to: usize) -> bool {
        self.token.offset_from = from;
        self.token.offset_to = to;
        self.token.position = self.token.position.wrapping_add(1);
        self.at = to;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        terms(&mut analyzer(), text)
            .into_iter()
            .map(|t| t.text)
            .collect()
    }

    #[test]
    fn words_are_lowercased_and_folded() {
        assert_eq!(words("Café CRÈME, naïve!"), ["cafe", "creme", "naive"]);
        assert_eq!(words("Straße Ærø"), ["strasse", "aero"]);
        // A decomposed accent (e + U+0301) folds like the precomposed one.
        assert_eq!(words("cafe\u{301} au lait"), ["cafe", "au", "lait"]);
    }

    #[test]
    fn scripts_with_spaces_keep_their_words() {
        assert_eq!(words("Привет, МИР"), ["привет", "мир"]);
        // Folding covers Latin letters only: Greek keeps its tonos.
        assert_eq!(words("ΓΕΙΆ σου"), ["γειά", "σου"]);
        assert_eq!(words("안녕하세요 세계"), ["안녕하세요", "세계"]);
        assert_eq!(words("مرحبا بالعالم"), ["مرحبا", "بالعالم"]);
    }

    #[test]
    fn han_and_kana_give_one_term_per_character() {
        assert_eq!(words("東京タワーへ"), ["東", "京", "タ", "ワ", "ー", "へ"]);
        assert_eq!(words("abc東京"), ["abc", "東", "京"]);
    }

    #[test]
    fn offsets_point_into_the_text_and_positions_count_terms() {
        let text = "¡Olé! 東京";
        let ts = terms(&mut analyzer(), text);
        assert_eq!(&text[ts[0].from..ts[0].to], "Olé");
        assert_eq!(&text[ts[1].from..ts[1].to], "東");
        let mut a = analyzer();
        let mut s = a.token_stream("one two three");
        let mut positions = Vec::new();
        while s.advance() {
            positions.push(s.token().position);
        }
        assert_eq!(positions, [0, 1, 2]);
    }

    #[test]
    fn punctuation_emoji_and_blobs_give_no_terms() {
        assert!(words("... !!! 🎉 --").is_empty());
        assert!(words(&"x".repeat(500)).is_empty());
        assert!(words("\u{301}\u{301}").is_empty());
    }
}
