//! `confab bench search`: the one scenario that does not speak the
//! protocol. Loading a million messages over WebSocket would measure the
//! rate limits and the network path, not search; so it writes them
//! straight into a store in a scratch directory (as commands, the way the
//! server writes), builds the index the way `confab reindex` does, and then
//! times `App::search`, the function both `GET /api/search` and the
//! `search` frame call (membership filter, index, store check, snippets).

use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde_json::{Value, json};

use crate::app::{App, SearchInput};
use crate::domain::{DmPolicy, Id, Role, User, Visibility};
use crate::store::{Command, NewRoom, NewUser, SendTo};

#[derive(Args, Debug, Clone)]
pub struct SearchArgs {
    /// Messages to load.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: usize,
    /// Rooms they are spread over.
    #[arg(long, default_value_t = 200)]
    pub rooms: usize,
    /// Users; each is a member of `--rooms-per-user` rooms and searches those.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    #[arg(long, default_value_t = 20)]
    pub rooms_per_user: usize,
    /// Queries timed (a fixed mix of words, phrases, prefixes and filters).
    #[arg(long, default_value_t = 2_000)]
    pub queries: usize,
    /// The indexing buffer, MiB.
    #[arg(long, default_value_t = 64)]
    pub writer_mib: usize,
    /// Where the scratch data directory goes (default: the system's temp).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

/// A small deterministic generator (xorshift), so every run loads the same
/// texts.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// Zipf-like: small indexes far more often, like words in chat.
    fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((n as f64).powf(u) as usize).saturating_sub(1).min(n - 1)
    }
}

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "de", "po", "la", "ze", "chi", "an", "or",
    "el", "ti", "mu", "ga", "fe",
];

fn vocabulary(n: usize) -> Vec<String> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut words: Vec<String> = ["deploy", "deployment", "release", "café", "review", "merge"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    while words.len() < n {
        let len = 2 + rng.below(3);
        let w: String = (0..len)
            .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
            .collect();
        if !words.contains(&w) {
            words.push(w);
        }
    }
    words
}

fn rss() -> u64 {
    super::net::rss_bytes(std::process::id()).unwrap_or(0)
}

pub async fn run(a: SearchArgs) -> Result<Value, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let scratch = match &a.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .map_err(|e| err(&e))?;
    let mut config = crate::config::Config::default();
    config.server.data_dir = scratch.path().to_path_buf();
    config.search.writer_mib = a.writer_mib;
    let app = App::open(config).map_err(|e| err(&e))?;
    let store = app.store.clone();
    let words = vocabulary(20_000);

    eprintln!("loading {} messages into {} rooms…", a.messages, a.rooms);
    let started = Instant::now();
    let mut users = Vec::new();
    for i in 0..a.users.max(1) {
        let rec: crate::store::UserRecord = store
            .run(Command::CreateUser(NewUser {
                id: Id::new(),
                username: format!("user{i:04}"),
                role: Role::User,
                password_hash: String::new(),
            }))
            .await
            .map_err(|e| err(&e))?;
        users.push(rec.public());
    }
    let mut rooms = Vec::new();
    for i in 0..a.rooms.max(1) {
        let room: crate::domain::Room = store
            .run(Command::CreateRoom(NewRoom {
                id: Id::new(),
                name: format!("room{i}"),
                visibility: Visibility::Public,
                topic: String::new(),
                owner: None,
            }))
            .await
            .map_err(|e| err(&e))?;
        rooms.push(room.id);
    }
    let mut rng = Rng(42);
    let mut member_of: Vec<Vec<usize>> = Vec::new();
    for user in &users {
        let mut mine = Vec::new();
        while mine.len() < a.rooms_per_user.min(rooms.len()) {
            let r = rng.below(rooms.len());
            if !mine.contains(&r) {
                mine.push(r);
                store
                    .run::<bool>(Command::AddMember {
                        room: rooms[r],
                        user: user.clone(),
                        adder: None,
                    })
                    .await
                    .map_err(|e| err(&e))?;
            }
        }
        member_of.push(mine);
    }
    // Many writers at once, so the writer commits big groups.
    let words = Arc::new(words);
    let users = Arc::new(users);
    let rooms = Arc::new(rooms);
    let tasks = 1024;
    let per = a.messages.div_ceil(tasks);
    let mut joins = Vec::new();
    for t in 0..tasks {
        let (store, words, users, rooms) =
            (store.clone(), words.clone(), users.clone(), rooms.clone());
        let n = per.min(a.messages.saturating_sub(t * per));
        joins.push(tokio::spawn(async move {
            let mut rng = Rng(1000 + t as u64);
            for _ in 0..n {
                let len = 4 + rng.below(14);
                let text: Vec<&str> = (0..len)
                    .map(|_| words[rng.skewed(words.len())].as_str())
                    .collect();
                let sender: &User = &users[rng.below(users.len())];
                store
                    .run::<crate::domain::Message>(Command::SendMessage {
                        sender: sender.clone(),
                        to: SendTo::Room(rooms[rng.below(rooms.len())]),
                        text: text.join(" "),
                        uploads: vec![],
                        client_msg_id: None,
                        message: Id::new(),
                        dm_room: Id::new(),
                        dm_policy: DmPolicy::Anyone,
                        here: vec![],
                        reply_to: None,
                        also_in_room: false,
                    })
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        }));
    }
    for j in joins {
        j.await.map_err(|e| err(&e))??;
    }
    let load_secs = started.elapsed().as_secs_f64();
    eprintln!("loaded in {load_secs:.1} s; building the index…");

    let rss_before = rss();
    let started = Instant::now();
    let data_dir = scratch.path().to_path_buf();
    let reader = store.reader();
    let writer_bytes = a.writer_mib << 20;
    let indexed = tokio::task::spawn_blocking(move || {
        crate::search::rebuild(&data_dir, reader, writer_bytes)
    })
    .await
    .map_err(|e| err(&e))?
    .map_err(|e| err(&e))?;
    let index_secs = started.elapsed().as_secs_f64();
    let index_bytes = crate::search::Search::disk_bytes(&crate::search::dir_in(scratch.path()));
    let rss_indexing = rss();
    app.start_search().map_err(|e| err(&e))?;
    eprintln!(
        "indexed {indexed} in {index_secs:.1} s ({:.0}/s), {:.1} MiB on disk; querying…",
        indexed as f64 / index_secs,
        index_bytes as f64 / 1048576.0
    );

    // The mix: a frequent word, a rare word, two words, a phrase, a
    // prefix, an author filter, a one-room search.
    let mut hist =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| err(&e))?;
    let mut per_kind: Vec<(String, hdrhistogram::Histogram<u64>)> = Vec::new();
    let mut results = 0usize;
    let rss_idle = rss();
    for i in 0..a.queries {
        let u = rng.below(users.len());
        let user = &users[u];
        let w = |rng: &mut Rng| words[rng.skewed(words.len())].clone();
        let rare = |rng: &mut Rng| words[words.len() / 2 + rng.below(words.len() / 2)].clone();
        let (kind, input) = match i % 7 {
            0 => (
                "frequent word",
                SearchInput {
                    q: w(&mut rng),
                    ..Default::default()
                },
            ),
            1 => (
                "rare word",
                SearchInput {
                    q: rare(&mut rng),
                    ..Default::default()
                },
            ),
            2 => (
                "two words",
                SearchInput {
                    q: format!("{} {}", w(&mut rng), w(&mut rng)),
                    ..Default::default()
                },
            ),
            3 => (
                "phrase",
                SearchInput {
                    q: format!("\"{} {}\"", w(&mut rng), w(&mut rng)),
                    ..Default::default()
                },
            ),
            4 => {
                let word = w(&mut rng);
                let p: String = word.chars().take(3).collect();
                (
                    "prefix",
                    SearchInput {
                        q: format!("{p}*"),
                        ..Default::default()
                    },
                )
            }
            5 => (
                "word from author",
                SearchInput {
                    q: w(&mut rng),
                    from: Some(users[rng.below(users.len())].username.clone()),
                    ..Default::default()
                },
            ),
            _ => (
                "word in one room",
                SearchInput {
                    q: w(&mut rng),
                    room: Some(rooms[member_of[u][rng.below(member_of[u].len())]].to_string()),
                    ..Default::default()
                },
            ),
        };
        let t = Instant::now();
        let page = app.search(user, input).await;
        let us = t.elapsed().as_micros().max(1) as u64;
        if let Ok(p) = page {
            results += p.results.len();
        } else if let Err(e) = page {
            // An author filter may name a user with nothing here: fine.
            if e.code() != crate::protocol::ErrorCode::NotFound {
                return Err(e.to_string());
            }
        }
        let _ = hist.record(us);
        match per_kind.iter_mut().find(|(k, _)| k == kind) {
            Some((_, h)) => {
                let _ = h.record(us);
            }
            None => {
                let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                    .map_err(|e| err(&e))?;
                let _ = h.record(us);
                per_kind.push((kind.to_string(), h));
            }
        }
    }
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let kinds: Vec<Value> = per_kind
        .iter()
        .map(|(k, h)| json!({"kind": k, "p50_ms": ms(h, 0.5), "p99_ms": ms(h, 0.99), "max_ms": h.max() as f64 / 1000.0}))
        .collect();
    let out = json!({
        "scenario": "search",
        "messages": a.messages,
        "rooms": a.rooms,
        "users": a.users,
        "rooms_per_user": a.rooms_per_user,
        "load_seconds": load_secs,
        "index_seconds": index_secs,
        "index_messages_per_sec": indexed as f64 / index_secs,
        "index_bytes": index_bytes,
        "store_bytes": std::fs::metadata(scratch.path().join("confab.redb")).map(|m| m.len()).unwrap_or(0),
        "rss_before_index_bytes": rss_before,
        "rss_after_index_bytes": rss_indexing,
        "rss_after_queries_bytes": rss(),
        "rss_with_index_open_bytes": rss_idle,
        "queries": a.queries,
        "results_returned": results,
        "p50_ms": ms(&hist, 0.5),
        "p99_ms": ms(&hist, 0.99),
        "max_ms": hist.max() as f64 / 1000.0,
        "by_kind": kinds,
    });
    eprintln!(
        "{} queries: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        a.queries,
        ms(&hist, 0.5),
        ms(&hist, 0.99),
        hist.max() as f64 / 1000.0
    );
    drop(app);
    Ok(out)
}
