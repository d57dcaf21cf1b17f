//! Searching messages: who may find what. The index says which message
//! ids match; every hit is then read from the store and shown only if the
//! message is still there, not blanked, in a room the caller may read now,
//! and its current text still matches.

use super::*;
use crate::search::{self, Filter, Parsed, Snippet};

/// The most results one page may ask for.
pub const MAX_SEARCH_LIMIT: usize = 50;
const DEFAULT_SEARCH_LIMIT: usize = 20;
/// Index reads per request: hits the store turns down (a message blanked
/// since it was indexed) are replaced by reading on, within this bound.
const MAX_ROUNDS: usize = 4;

/// A search as asked, each field validated by `App::search`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SearchInput {
    #[serde(default)]
    pub q: String,
    pub room: Option<String>,
    pub from: Option<String>,
    /// RFC 3339, or milliseconds since the epoch.
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub limit: Option<u64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub message: Message,
    pub room: Room,
    pub snippet: Snippet,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchPage {
    pub results: Vec<SearchHit>,
    /// Give it back as `cursor` for the next page; `null`: no more.
    pub next_cursor: Option<String>,
}

impl App {
    pub async fn search(self: &Arc<Self>, user: &User, input: SearchInput) -> Result<SearchPage> {
        let app = self.clone();
        let user = user.clone();
        tokio::task::spawn_blocking(move || app.search_now(&user, input))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
    }

    fn search_now(&self, user: &User, input: SearchInput) -> Result<SearchPage> {
        let Some(index) = self.search.get() else {
            return Err(AppError::Internal("search is not running".into()));
        };
        // What was sent before the search is found by it: the indexer
        // commits early for a waiting search. Bounded, so a search during
        // a rebuild answers from what is indexed.
        let rev = self.store.read()?.message_rev()?;
        index.wait_indexed(rev, std::time::Duration::from_secs(2));
        let mut analyzer = search::analyzer::analyzer();
        let parsed = search::query::parse(&mut analyzer, &input.q)
            .map_err(|e| AppError::BadRequest(e.to_string()))?;
        let limit = match input.limit {
            None => DEFAULT_SEARCH_LIMIT,
            Some(n) if (1..=MAX_SEARCH_LIMIT as u64).contains(&n) => n as usize,
            Some(_) => {
                return Err(AppError::BadRequest(format!(
                    "limit: must be between 1 and {MAX_SEARCH_LIMIT}"
                )));
            }
        };
        let before = input
            .before
            .as_ref()
            .map(|v| time("before", v))
            .transpose()?;
        let after = input.after.as_ref().map(|v| time("after", v)).transpose()?;
        let cursor = input
            .cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| {
                u64::from_str_radix(c, 16)
                    .map_err(|_| AppError::BadRequest("cursor: not one this server gave".into()))
            })
            .transpose()?;
        let actor = self.current(&Actor::User(user.clone()))?;
        let rooms = match input.room.as_deref().filter(|r| !r.is_empty()) {
            // One room: any the caller may read, as for its history.
            Some(r) => vec![self.room_for(&actor, Id::parse("room", r)?)?.id],
            // Everywhere: the rooms and DMs the caller is in now.
            None => self.store.read()?.room_ids_of(user.id)?,
        };
        let from = match input.from.as_deref().filter(|f| !f.is_empty()) {
            Some(name) => {
                let name = Username::parse(name)?;
                match self.store.read()?.user_by_name(name.as_str())? {
                    Some(u) => Some(u.id),
                    None => return Err(AppError::NotFound("user")),
                }
            }
            None => None,
        };
        if parsed.is_empty() && from.is_none() && input.room.as_deref().is_none_or(str::is_empty) {
            return Err(AppError::BadRequest(
                "q: nothing to search for (give words, or a room or an author)".into(),
            ));
        }
        let mut filter = Filter {
            rooms,
            from,
            lo: after
                .map(|t| search::key_of_time(t.saturating_add(1)))
                .unwrap_or(0),
            hi: before.map(search::key_of_time).unwrap_or(u64::MAX),
        };
        if let Some(c) = cursor {
            filter.hi = filter.hi.min(c);
        }
        let mut results = Vec::new();
        let mut next_cursor = None;
        for _ in 0..MAX_ROUNDS {
            let want = limit - results.len() + 1;
            let hits = index
                .find(&parsed, &filter, want)
                .map_err(|e| AppError::Internal(e.to_string()))?;
            let more = hits.len() == want;
            let rx = self.store.read()?;
            let mut last_key = None;
            for (key, id) in hits {
                if results.len() == limit {
                    break;
                }
                last_key = Some(key);
                if let Some(hit) = self.check_hit(&rx, &parsed, &filter, &mut analyzer, id)? {
                    results.push(hit);
                }
            }
            next_cursor = None;
            if !more {
                break;
            }
            // Resume strictly below the last hit looked at.
            let Some(key) = last_key else { break };
            filter.hi = key;
            next_cursor = Some(format!("{key:x}"));
            if results.len() == limit {
                break;
            }
        }
        Ok(SearchPage {
            results,
            next_cursor,
        })
    }

    /// The hit as the caller may see it now, or `None`.
    fn check_hit(
        &self,
        rx: &crate::store::Rx,
        parsed: &Parsed,
        filter: &Filter,
        analyzer: &mut tantivy::tokenizer::TextAnalyzer,
        id: Id,
    ) -> Result<Option<SearchHit>> {
        let Some(message) = rx.message(id)? else {
            return Ok(None);
        };
        if message.deleted
            || !filter.rooms.contains(&message.room)
            || filter.from.is_some_and(|f| f != message.sender.id)
        {
            return Ok(None);
        }
        let Some(room) = rx.room(message.room)? else {
            return Ok(None);
        };
        let terms = search::analyzer::terms(analyzer, &message.text);
        let marked = if parsed.is_empty() {
            Vec::new()
        } else {
            match parsed.matches(&terms) {
                Some(m) => m,
                None => return Ok(None),
            }
        };
        let snippet = search::query::snippet(&message.text, &terms, &marked);
        Ok(Some(SearchHit {
            message,
            room,
            snippet,
        }))
    }
}

/// A time bound: RFC 3339 (`2026-01-31T12:00:00Z`) or milliseconds since
/// the epoch.
fn time(field: &'static str, v: &serde_json::Value) -> Result<i64> {
    let bad = || {
        AppError::BadRequest(format!(
            "{field}: an RFC 3339 time or milliseconds since the epoch"
        ))
    };
    match v {
        serde_json::Value::Number(n) => n.as_i64().filter(|&t| t >= 0).ok_or_else(bad),
        serde_json::Value::String(s) => {
            if let Ok(ms) = s.parse::<i64>() {
                return (ms >= 0).then_some(ms).ok_or_else(bad);
            }
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|_| bad())?;
            i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}
