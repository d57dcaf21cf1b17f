//! Full-text search over messages: a tantivy index under
//! `<data_dir>/search/`, derived from the store and never part of it.
//!
//! An indexer thread follows the store's message journal (a revision per
//! message change, given in apply, so in a cluster every node's store has
//! the same journal and each node keeps its own index). It commits the
//! index with the last revision it holds as the commit's payload, so a
//! restart resumes from there; an index that is missing, unreadable, of an
//! older format, ahead of the store or behind the journal's window is
//! rebuilt from the messages. The writer only appends a journal row: it
//! never waits for the index.
//!
//! The index answers "which message ids, newest first"; the caller checks
//! each against the store before showing it (`app::search`).

pub mod analyzer;
mod indexer;
pub mod query;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery, TermSetQuery};
use tantivy::schema::{
    BytesOptions, Field, INDEXED, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::{DocAddress, Index, IndexReader, Order, ReloadPolicy, TantivyDocument, Term};

use crate::domain::{Id, Message};
use crate::store::Reader;

pub use query::{Parsed, QueryError, Snippet};

/// The index's format. A different number in an existing index (its
/// commit payload) means it is rebuilt: bump it whenever the schema or the
/// analyzer changes what is indexed.
pub const FORMAT: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("search index: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = SearchError> = std::result::Result<T, E>;

/// The indexer's tuning.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often, at most, new changes are committed and become visible.
    pub commit_interval: Duration,
    /// The indexing buffer (tantivy's writer heap), in bytes.
    pub writer_bytes: usize,
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    room: Field,
    sender: Field,
    order: Field,
    text: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let id = b.add_bytes_field("id", BytesOptions::default().set_indexed().set_stored());
    let room = b.add_bytes_field("room", INDEXED);
    let sender = b.add_bytes_field("sender", INDEXED);
    let order = b.add_u64_field("order", NumericOptions::default().set_indexed().set_fast());
    let text = b.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer::NAME)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        ),
    );
    (
        b.build(),
        Fields {
            id,
            room,
            sender,
            order,
            text,
        },
    )
}

/// A message's place in "newest first": its time in ms above 20 bits of
/// its id, so two messages of the same millisecond still differ (unless
/// those bits collide, about one in a million such pairs) and a cursor
/// can resume strictly below the last hit.
pub fn order_key(created_at: i64, id: Id) -> u64 {
    ((created_at.max(0) as u64) << 20) | (id.0 as u64 & 0xF_FFFF)
}

/// The first key of the millisecond `ms`.
pub fn key_of_time(ms: i64) -> u64 {
    (ms.max(0) as u64).saturating_mul(1 << 20)
}

/// What a search is limited to besides its words.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The rooms searched (the caller's, or the one asked for).
    pub rooms: Vec<Id>,
    pub from: Option<Id>,
    /// Keys in [lo, hi).
    pub lo: u64,
    pub hi: u64,
}

#[derive(Default)]
struct State {
    poked: bool,
    stop: bool,
    /// A search waits for what is written but not yet committed to the
    /// index: commit now rather than at the interval.
    hurry: bool,
    /// The revision the readers see (committed and reloaded).
    visible: u64,
    /// Whether that is at least a first full build.
    ready: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Wakes the indexer after a commit that changed messages. Cheap and
/// non-blocking: the store's listener calls it in commit order.
#[derive(Clone, Default)]
pub struct Poke(Arc<Shared>);

impl Poke {
    pub fn poke(&self) {
        let mut s = self.0.lock();
        if !s.poked {
            s.poked = true;
            self.0.cv.notify_all();
        }
    }
}

pub struct Search {
    reader: IndexReader,
    fields: Fields,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Where the index lives in a data directory.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("search")
}

impl Search {
    /// Opens the index in `dir` (creating or discarding it as needed) and
    /// starts its indexer, which catches up with `store` in the background.
    pub fn open(dir: &Path, store: Reader, settings: Settings, poke: Poke) -> Result<Search> {
        let (index, rev) = open_index(dir)?;
        let (_, fields) = schema();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let writer = index.writer_with_num_threads(1, settings.writer_bytes.max(15_000_000))?;
        let shared = poke.0.clone();
        {
            let mut s = shared.lock();
            s.stop = false;
            s.visible = rev.unwrap_or(0);
            s.ready = rev.is_some();
        }
        let worker = indexer::Indexer {
            writer,
            reader: reader.clone(),
            fields,
            store,
            shared: shared.clone(),
            settings,
            rev,
            pending: Default::default(),
        };
        let thread = std::thread::Builder::new()
            .name("confab-search-indexer".into())
            .spawn(move || worker.run())?;
        Ok(Search {
            reader,
            fields,
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The store revision the index shows, and whether it has finished at
    /// least one full build.
    pub fn indexed(&self) -> (u64, bool) {
        let s = self.shared.lock();
        (s.visible, s.ready)
    }

    /// Waits until the index shows revision `rev` or `timeout` passes,
    /// asking the indexer to commit what it holds without waiting for its
    /// interval: a search sees the messages sent before it.
    pub fn wait_indexed(&self, rev: u64, timeout: Duration) -> bool {
        let mut s = self.shared.lock();
        let shown = s.ready && s.visible >= rev;
        if !shown && !s.hurry {
            s.hurry = true;
            self.shared.cv.notify_all();
        }
        let (s, _) = self
            .shared
            .cv
            .wait_timeout_while(s, timeout, |s| !(s.ready && s.visible >= rev))
            .unwrap_or_else(|e| e.into_inner());
        s.ready && s.visible >= rev
    }

    /// Up to `limit` message ids matching `q` within `filter`, newest
    /// first, each with its order key.
    pub fn find(&self, q: &Parsed, filter: &Filter, limit: usize) -> Result<Vec<(u64, Id)>> {
        if filter.rooms.is_empty() || filter.lo >= filter.hi || limit == 0 {
            return Ok(Vec::new());
        }
        let f = &self.fields;
        let mut parts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if !q.is_empty() {
            parts.push((Occur::Must, q.to_query(f.text)));
        }
        parts.push((
            Occur::Must,
            Box::new(TermSetQuery::new(
                filter
                    .rooms
                    .iter()
                    .map(|r| Term::from_field_bytes(f.room, &r.0.to_be_bytes())),
            )),
        ));
        if let Some(from) = filter.from {
            parts.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_bytes(f.sender, &from.0.to_be_bytes()),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if filter.lo > 0 || filter.hi < u64::MAX {
            parts.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    std::ops::Bound::Included(Term::from_field_u64(f.order, filter.lo)),
                    std::ops::Bound::Excluded(Term::from_field_u64(f.order, filter.hi)),
                )),
            ));
        }
        let query = BooleanQuery::new(parts);
        let searcher = self.reader.searcher();
        let top: Vec<(Option<u64>, DocAddress)> = searcher.search(
            &query,
            &TopDocs::with_limit(limit).order_by_u64_field("order", Order::Desc),
        )?;
        let mut out = Vec::with_capacity(top.len());
        for (key, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let id = doc
                .get_first(f.id)
                .and_then(|v| v.as_bytes())
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(|b| Id(u128::from_be_bytes(b)));
            if let (Some(key), Some(id)) = (key, id) {
                out.push((key, id));
            }
        }
        Ok(out)
    }

    /// Stops the indexer after it commits what it holds. Idempotent.
    pub fn stop(&self) {
        {
            let mut s = self.shared.lock();
            s.stop = true;
            self.shared.cv.notify_all();
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Bytes the index takes on disk.
    pub fn disk_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Drop for Search {
    /// The indexer holds the store's file open: it must be gone before
    /// whoever drops the app expects the file closed.
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    format: u64,
    rev: u64,
}

/// Opens the index in `dir`, or makes a new empty one there. Gives the
/// revision the index holds, or `None` when it must be built from the
/// store (new, unreadable, or of another format).
fn open_index(dir: &Path) -> Result<(Index, Option<u64>)> {
    if dir.join("meta.json").exists() {
        match Index::open_in_dir(dir).and_then(|index| {
            let payload = index.load_metas()?.payload;
            Ok((index, payload))
        }) {
            Ok((index, payload)) => {
                let rev = payload
                    .and_then(|p| serde_json::from_str::<Payload>(&p).ok())
                    .filter(|p| p.format == FORMAT)
                    .map(|p| p.rev);
                if rev.is_some() {
                    register(&index);
                    return Ok((index, rev));
                }
                tracing::warn!(dir = %dir.display(), "search index of another format; rebuilding it");
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "search index unreadable; rebuilding it");
            }
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let (schema, _) = schema();
    let index = Index::create_in_dir(dir, schema)?;
    register(&index);
    Ok((index, None))
}

fn register(index: &Index) {
    index
        .tokenizers()
        .register(analyzer::NAME, analyzer::analyzer());
}

fn document(fields: &Fields, m: &Message) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_bytes(fields.id, &m.id.0.to_be_bytes());
    doc.add_bytes(fields.room, &m.room.0.to_be_bytes());
    doc.add_bytes(fields.sender, &m.sender.id.0.to_be_bytes());
    doc.add_u64(fields.order, order_key(m.created_at, m.id));
    doc.add_text(fields.text, &m.text);
    doc
}

/// Rebuilds the index in `data_dir` from the store, offline (`confab
/// reindex`): the old index is discarded first. Returns the messages
/// indexed.
pub fn rebuild(data_dir: &Path, store: Reader, writer_bytes: usize) -> Result<u64> {
    let dir = dir_in(data_dir);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let (index, _) = open_index(&dir)?;
    let (_, fields) = schema();
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    let mut worker = indexer::Indexer {
        writer: index.writer_with_num_threads(1, writer_bytes.max(15_000_000))?,
        reader,
        fields,
        store,
        shared: Arc::new(Shared::default()),
        settings: Settings {
            commit_interval: Duration::ZERO,
            writer_bytes,
        },
        rev: None,
        pending: Default::default(),
    };
    let rx = worker.store.read()?;
    worker.rebuild(&rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DmPolicy, Role, User, Visibility};
    use crate::store::{Change, Command, Local, NewRoom, NewUser, SendTo, Store};

    struct Fixture {
        store: Store,
        user: User,
        room: Id,
        poke: Poke,
    }

    fn open_store(dir: &Path) -> (Store, Poke) {
        let poke = Poke::default();
        let p = poke.clone();
        let store = Store::open(
            &dir.join("confab.redb"),
            1,
            64,
            Arc::new(move |_: &[Change]| p.poke()),
            None,
            Local::default(),
        )
        .unwrap();
        (store, poke)
    }

    async fn fixture(dir: &Path) -> Fixture {
        let (store, poke) = open_store(dir);
        let rec: crate::store::UserRecord = store
            .run(Command::CreateUser(NewUser {
                id: Id::new(),
                username: "ann".into(),
                role: Role::User,
                password_hash: String::new(),
            }))
            .await
            .unwrap();
        let room: crate::domain::Room = store
            .run(Command::CreateRoom(NewRoom {
                id: Id::new(),
                name: "r".into(),
                visibility: Visibility::Public,
                topic: String::new(),
                owner: Some(rec.id),
            }))
            .await
            .unwrap();
        Fixture {
            store,
            user: rec.public(),
            room: room.id,
            poke,
        }
    }

    impl Fixture {
        async fn send(&self, text: &str) -> Message {
            self.send_reply(text, None).await
        }

        async fn send_reply(&self, text: &str, reply_to: Option<Id>) -> Message {
            self.store
                .run(Command::SendMessage {
                    sender: self.user.clone(),
                    to: SendTo::Room(self.room),
                    text: text.into(),
                    uploads: vec![],
                    client_msg_id: None,
                    message: Id::new(),
                    dm_room: Id::new(),
                    dm_policy: DmPolicy::Anyone,
                    here: vec![],
                    reply_to,
                    also_in_room: false,
                })
                .await
                .unwrap()
        }

        fn search(&self, dir: &Path) -> Search {
            Search::open(
                &dir_in(dir),
                self.store.reader(),
                Settings {
                    commit_interval: Duration::from_millis(5),
                    writer_bytes: 15_000_000,
                },
                self.poke.clone(),
            )
            .unwrap()
        }

        fn caught_up(&self, search: &Search) {
            let rev = self.store.read().unwrap().message_rev().unwrap();
            assert!(search.wait_indexed(rev, Duration::from_secs(10)));
        }

        fn ids(&self, search: &Search, q: &str) -> Vec<Id> {
            let parsed = query::parse(&mut analyzer::analyzer(), q).unwrap();
            let filter = Filter {
                rooms: vec![self.room],
                from: None,
                lo: 0,
                hi: u64::MAX,
            };
            search
                .find(&parsed, &filter, 100)
                .unwrap()
                .into_iter()
                .map(|(_, id)| id)
                .collect()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_index_follows_sends_edits_deletes_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture(dir.path()).await;
        let search = f.search(dir.path());
        let a = f.send("apples and pears").await;
        let b = f.send("pears only").await;
        f.caught_up(&search);
        assert_eq!(f.ids(&search, "pears"), [b.id, a.id]);
        f.store
            .run::<Message>(Command::EditMessage {
                user: f.user.id,
                message: b.id,
                text: "plums now".into(),
                dm_policy: DmPolicy::Anyone,
                here: vec![],
            })
            .await
            .unwrap();
        f.store
            .run::<Message>(Command::DeleteMessage {
                by: Some(f.user.id),
                message: a.id,
                dm_policy: DmPolicy::Anyone,
            })
            .await
            .unwrap();
        let c = f.send("pears again").await;
        f.caught_up(&search);
        assert_eq!(f.ids(&search, "pears"), [c.id]);
        assert_eq!(f.ids(&search, "plums"), [b.id]);
        // Retention emits no change for the hub: the journal still has it.
        let n: usize = f
            .store
            .run(Command::PruneRoom {
                room: f.room,
                before: None,
                up_to: Some(c.seq - 1),
                max: 500,
            })
            .await
            .unwrap();
        assert_eq!(n, 2);
        f.caught_up(&search);
        assert!(f.ids(&search, "plums").is_empty());
        assert_eq!(f.ids(&search, "pears"), [c.id]);
    }

    /// A thread's root is rewritten (and journaled) by every reply, with
    /// no edit: the index deletes only what it may hold, so each such
    /// change must still replace the document, never add a second one,
    /// whether the root is in the last commit or only added since.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_changed_again_and_again_is_found_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture(dir.path()).await;
        let search = f.search(dir.path());
        // Root and a reply before any commit: added, then replaced.
        let root = f.send("quinces").await;
        f.send_reply("one", Some(root.id)).await;
        f.caught_up(&search);
        assert_eq!(f.ids(&search, "quinces"), [root.id]);
        // The root is in the last commit now: replaced twice.
        f.send_reply("two", Some(root.id)).await;
        f.send_reply("three", Some(root.id)).await;
        f.caught_up(&search);
        assert_eq!(f.ids(&search, "quinces"), [root.id]);
        drop(search);
        // A restart reads the committed index from disk.
        let search = f.search(dir.path());
        f.send_reply("four", Some(root.id)).await;
        f.caught_up(&search);
        assert_eq!(f.ids(&search, "quinces"), [root.id]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_resumes_from_the_committed_revision_or_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture(dir.path()).await;
        let search = f.search(dir.path());
        let a = f.send("first").await;
        f.caught_up(&search);
        drop(search);
        // Written while no indexer runs: found after the next start.
        let b = f.send("second").await;
        let search = f.search(dir.path());
        assert_eq!(search.indexed().0, 1, "resumes from its commit");
        f.caught_up(&search);
        assert_eq!(f.ids(&search, "first"), [a.id]);
        assert_eq!(f.ids(&search, "second"), [b.id]);
        drop(search);
        // An index ahead of the store (a restored backup) is rebuilt.
        let meta = dir_in(dir.path()).join("meta.json");
        let text = std::fs::read_to_string(&meta).unwrap();
        let bumped = text.replace("\\\"rev\\\":2", "\\\"rev\\\":99");
        assert_ne!(text, bumped, "{text}");
        std::fs::write(&meta, bumped).unwrap();
        let search = f.search(dir.path());
        assert_eq!(search.indexed().0, 99);
        f.caught_up_exactly(&search);
        assert_eq!(f.ids(&search, "second"), [b.id]);
    }

    impl Fixture {
        fn caught_up_exactly(&self, search: &Search) {
            let rev = self.store.read().unwrap().message_rev().unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while search.indexed().0 != rev {
                assert!(std::time::Instant::now() < deadline, "rebuilt");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    #[test]
    fn order_keys_sort_by_time_then_id() {
        let a = Id(5);
        let b = Id(6);
        assert!(order_key(1000, a) < order_key(1000, b));
        assert!(order_key(1000, b) < order_key(1001, a));
        assert_eq!(key_of_time(1001), order_key(1001, Id(0)));
        assert_eq!(order_key(-5, a), order_key(0, a));
    }
}
