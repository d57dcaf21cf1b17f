//! What a user types, read as a query that cannot fail: words (all must
//! match), "phrases in quotes" and prefixes (`term*`). Anything else is
//! text: operators and stray quotes are not errors, punctuation is dropped
//! like in the indexed text. Only a query too long or with too many parts
//! is refused, with a message saying which limit.

use tantivy::query::{BooleanQuery, Occur, PhrasePrefixQuery, PhraseQuery, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;

use super::analyzer::{self, Term};

/// The longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 500;
/// The most words, phrases and prefixes one query may have.
pub const MAX_CLAUSES: usize = 16;
/// A prefix shorter than this (in characters) is searched as a word: a
/// one-letter prefix would expand to most of the dictionary.
pub const MIN_PREFIX_CHARS: usize = 2;
/// How many dictionary terms one prefix may stand for, the first in
/// alphabetical order.
pub const MAX_PREFIX_TERMS: u32 = 200;
/// The most terms kept of one phrase.
const MAX_PHRASE_TERMS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clause {
    /// These terms, next to each other in this order (one term: a word).
    Words(Vec<String>),
    /// Like `Words`, the last term being only the start of a word.
    Prefix(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub clauses: Vec<Clause>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("q: at most {MAX_QUERY_BYTES} bytes")]
    TooLong,
    #[error("q: at most {MAX_CLAUSES} words, phrases and prefixes")]
    TooManyParts,
}

pub fn parse(analyzer: &mut TextAnalyzer, q: &str) -> Result<Parsed, QueryError> {
    if q.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooLong);
    }
    let mut clauses = Vec::new();
    // Split into chunks: quoted runs are phrases (an unclosed quote runs
    // to the end), everything else splits at whitespace.
    let mut rest = q;
    while !rest.is_empty() {
        let trimmed = rest.trim_start();
        if trimmed.is_empty() {
            break;
        }
        if let Some(after) = trimmed.strip_prefix('"') {
            let (phrase, next) = match after.find('"') {
                Some(end) => (&after[..end], &after[end + 1..]),
                None => (after, ""),
            };
            let terms = words(analyzer, phrase);
            // A star right after the closing quote's last word: "foo ba"*
            let prefix = next.starts_with('*');
            push(&mut clauses, terms, prefix);
            rest = next.trim_start_matches('*');
            continue;
        }
        let end = trimmed
            .find(|c: char| c.is_whitespace() || c == '"')
            .unwrap_or(trimmed.len());
        let chunk = &trimmed[..end];
        rest = &trimmed[end..];
        let found = analyzer::terms(analyzer, chunk);
        // A prefix: the chunk ends in `*` right after its last term.
        let stars = chunk.trim_end_matches('*');
        let prefix = stars.len() < chunk.len() && found.last().is_some_and(|t| t.to == stars.len());
        push(
            &mut clauses,
            found.into_iter().map(|t| t.text).collect(),
            prefix,
        );
    }
    if clauses.len() > MAX_CLAUSES {
        return Err(QueryError::TooManyParts);
    }
    Ok(Parsed { clauses })
}

fn words(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    analyzer::terms(analyzer, text)
        .into_iter()
        .map(|t| t.text)
        .collect()
}

fn push(clauses: &mut Vec<Clause>, mut terms: Vec<String>, prefix: bool) {
    if terms.is_empty() {
        return;
    }
    terms.truncate(MAX_PHRASE_TERMS);
    let long_enough = terms
        .last()
        .is_some_and(|t| t.chars().count() >= MIN_PREFIX_CHARS);
    let clause = if prefix && long_enough {
        Clause::Prefix(terms)
    } else {
        Clause::Words(terms)
    };
    if !clauses.contains(&clause) {
        clauses.push(clause);
    }
}

impl Parsed {
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// The index query: every clause must match.
    pub fn to_query(&self, field: Field) -> Box<dyn Query> {
        let term = |t: &str| tantivy::Term::from_field_text(field, t);
        let parts: Vec<(Occur, Box<dyn Query>)> = self
            .clauses
            .iter()
            .map(|c| {
                let q: Box<dyn Query> = match c {
                    Clause::Words(ts) if ts.len() == 1 => {
                        Box::new(TermQuery::new(term(&ts[0]), IndexRecordOption::Basic))
                    }
                    Clause::Words(ts) => {
                        Box::new(PhraseQuery::new(ts.iter().map(|t| term(t)).collect()))
                    }
                    Clause::Prefix(ts) => {
                        let mut q = PhrasePrefixQuery::new(ts.iter().map(|t| term(t)).collect());
                        q.set_max_expansions(MAX_PREFIX_TERMS);
                        Box::new(q)
                    }
                };
                (Occur::Must, q)
            })
            .collect();
        Box::new(BooleanQuery::new(parts))
    }

    /// Whether `terms` (a text's, in order) satisfy every clause, and the
    /// indexes of the terms that do, for highlighting. The store's text is
    /// the truth: a hit whose text no longer matches (an edit the index
    /// has not caught up with) is not a hit.
    pub fn matches(&self, terms: &[Term]) -> Option<Vec<usize>> {
        let mut marked = Vec::new();
        for clause in &self.clauses {
            let (ts, prefix) = match clause {
                Clause::Words(ts) => (ts, false),
                Clause::Prefix(ts) => (ts, true),
            };
            let n = ts.len();
            let mut found = false;
            if terms.len() >= n {
                for start in 0..=terms.len() - n {
                    let window = &terms[start..start + n];
                    let ok = window.iter().zip(ts).enumerate().all(|(i, (have, want))| {
                        if prefix && i == n - 1 {
                            have.text.starts_with(want.as_str())
                        } else {
                            have.text == *want
                        }
                    });
                    if ok {
                        found = true;
                        marked.extend(start..start + n);
                    }
                }
            }
            if !found {
                return None;
            }
        }
        marked.sort_unstable();
        marked.dedup();
        Some(marked)
    }
}

/// A piece of a message's text around its first match, with the matched
/// terms as [start, end) offsets in UTF-16 code units (the unit of
/// JavaScript strings and the DOM) into `text`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Snippet {
    pub text: String,
    pub highlights: Vec<[usize; 2]>,
}

/// The longest snippet, in characters (plus an ellipsis at each cut end).
pub const SNIPPET_CHARS: usize = 200;
/// How much text a snippet keeps before its first match.
const LEAD_CHARS: usize = 60;

pub fn snippet(text: &str, terms: &[Term], marked: &[usize]) -> Snippet {
    // Byte ranges to mark, merged where adjacent (a phrase is one mark).
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &i in marked {
        let Some(t) = terms.get(i) else { continue };
        match ranges.last_mut() {
            Some(last) if last.1 <= t.from && text[last.1..t.from].trim().is_empty() => {
                last.1 = t.to;
            }
            _ => ranges.push((t.from, t.to)),
        }
    }
    let chars = text.chars().count();
    let (mut start, mut end) = (0, text.len());
    if chars > SNIPPET_CHARS {
        let first = ranges.first().map(|r| r.0).unwrap_or(0);
        let before = text[..first].chars().count();
        let from_char = before.saturating_sub(LEAD_CHARS).min(chars - SNIPPET_CHARS);
        start = byte_at(text, from_char);
        end = byte_at(text, from_char + SNIPPET_CHARS);
    }
    let lead = if start > 0 { "…" } else { "" };
    let tail = if end < text.len() { "…" } else { "" };
    let out = format!("{lead}{}{tail}", &text[start..end]);
    let base = utf16_len(lead);
    let highlights = ranges
        .into_iter()
        .filter(|&(f, t)| f >= start && t <= end)
        .map(|(f, t)| {
            let s = base + utf16_len(&text[start..f]);
            [s, s + utf16_len(&text[f..t])]
        })
        .collect();
    Snippet {
        text: out,
        highlights,
    }
}

fn byte_at(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map(|(i, _)| i)
        .unwrap_or(text.len())
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::analyzer::{analyzer, terms};

    fn p(q: &str) -> Vec<Clause> {
        parse(&mut analyzer(), q).unwrap().clauses
    }
    fn w(ts: &[&str]) -> Clause {
        Clause::Words(ts.iter().map(|s| s.to_string()).collect())
    }
    fn pre(ts: &[&str]) -> Clause {
        Clause::Prefix(ts.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn words_phrases_and_prefixes() {
        assert_eq!(p("Hello  World"), [w(&["hello"]), w(&["world"])]);
        assert_eq!(p("\"Big Cat\" dog"), [w(&["big", "cat"]), w(&["dog"])]);
        assert_eq!(p("deplo* x"), [pre(&["deplo"]), w(&["x"])]);
        assert_eq!(p("\"release no\"*"), [pre(&["release", "no"])]);
        assert_eq!(p("e-mail"), [w(&["e", "mail"])]);
        assert_eq!(p("東京"), [w(&["東", "京"])]);
        assert_eq!(p("Crème"), [w(&["creme"])]);
    }

    #[test]
    fn hostile_input_is_text_not_an_error() {
        assert_eq!(p("\"unclosed phrase"), [w(&["unclosed", "phrase"])]);
        assert_eq!(
            p("a AND (b OR -c) ~~ ^2 \\"),
            [
                w(&["a"]),
                w(&["and"]),
                w(&["b"]),
                w(&["or"]),
                w(&["c"]),
                w(&["2"])
            ]
        );
        assert!(p("*** \"\" \" * !!!").is_empty());
        // A one-letter prefix is a word; a repeated word counts once.
        assert_eq!(p("a* cat cat"), [w(&["a"]), w(&["cat"])]);
        assert_eq!(
            parse(&mut analyzer(), &"x".repeat(501)),
            Err(QueryError::TooLong)
        );
        let many: Vec<String> = (0..17).map(|i| format!("w{i}")).collect();
        assert_eq!(
            parse(&mut analyzer(), &many.join(" ")),
            Err(QueryError::TooManyParts)
        );
    }

    #[test]
    fn matching_checks_every_clause_against_the_text() {
        let mut a = analyzer();
        let text = "The quick brown fox, the Quick one";
        let ts = terms(&mut a, text);
        let q = parse(&mut a, "quick \"brown fox\" on*").unwrap();
        let marked = q.matches(&ts).expect("matches");
        assert_eq!(marked, [1, 2, 3, 5, 6]);
        assert!(
            parse(&mut a, "\"fox brown\"")
                .unwrap()
                .matches(&ts)
                .is_none()
        );
        assert!(parse(&mut a, "quick cat").unwrap().matches(&ts).is_none());
    }

    #[test]
    fn snippets_mark_matches_in_utf16_units() {
        let mut a = analyzer();
        let text = "😀 naïve café here";
        let ts = terms(&mut a, text);
        let q = parse(&mut a, "cafe naive").unwrap();
        let s = snippet(text, &ts, &q.matches(&ts).unwrap());
        assert_eq!(s.text, text);
        // The emoji is two UTF-16 units; adjacent matches merge.
        assert_eq!(s.highlights, [[3, 13]]);
        let utf16: Vec<u16> = s.text.encode_utf16().collect();
        assert_eq!(String::from_utf16(&utf16[3..13]).unwrap(), "naïve café");
    }

    #[test]
    fn long_texts_are_cut_around_the_first_match() {
        let mut a = analyzer();
        let text = format!("{} needle {}", "hay ".repeat(100), "straw ".repeat(100));
        let ts = terms(&mut a, &text);
        let q = parse(&mut a, "needle").unwrap();
        let s = snippet(&text, &ts, &q.matches(&ts).unwrap());
        assert!(s.text.starts_with('…') && s.text.ends_with('…'));
        assert_eq!(s.text.chars().count(), SNIPPET_CHARS + 2);
        let [from, to] = s.highlights[0];
        let utf16: Vec<u16> = s.text.encode_utf16().collect();
        assert_eq!(String::from_utf16(&utf16[from..to]).unwrap(), "needle");
    }
}
