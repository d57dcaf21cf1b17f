//! The indexer thread: follows the store's message journal into the index.

use std::time::Instant;

use tantivy::{IndexReader, IndexWriter, TantivyDocument, Term};

use super::*;
use crate::store::Rx;

/// Journal rows applied per read transaction.
const BATCH: usize = 2_000;
/// Messages read per page while rebuilding.
const REBUILD_PAGE: usize = 5_000;
/// How long to wait after an error before trying again.
const RETRY: Duration = Duration::from_secs(2);
/// How often the journal is looked at without being poked: retention
/// removes messages without a change for the hub, so nothing pokes then.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Under a steady stream of messages, the journal is read at most this
/// often (or at the commit interval, if shorter). Well inside the
/// journal's window (`JOURNAL_KEEP` rows) at any rate one node sustains,
/// so the index never falls out of it between two reads.
const APPLY_EVERY: Duration = Duration::from_millis(500);

pub(super) struct Indexer {
    pub(super) writer: IndexWriter<TantivyDocument>,
    pub(super) reader: IndexReader,
    pub(super) fields: Fields,
    pub(super) store: Reader,
    pub(super) shared: Arc<Shared>,
    pub(super) settings: Settings,
    /// The revision the writer holds (committed or not); `None`: the
    /// index must be rebuilt first.
    pub(super) rev: Option<u64>,
    /// Messages added since the last commit: the only ones, besides those
    /// the last commit holds, that a change must delete first.
    pub(super) pending: std::collections::HashSet<u128>,
}

enum Step {
    /// More is waiting: go on at once.
    Busy,
    /// Caught up: wait for a poke, or until this long.
    Idle(Duration),
    /// Wait this long whatever pokes come, unless a search hurries.
    Defer(Duration),
}

impl Indexer {
    pub(super) fn run(mut self) {
        let mut committed = self.rev;
        let mut last_commit = Instant::now();
        // Long ago: the first poke is applied at once.
        let mut applied = None;
        loop {
            let step = self.step(&mut committed, &mut last_commit, &mut applied);
            let (wait, pokes_wake) = match step {
                Ok(Step::Busy) => (None, true),
                Ok(Step::Idle(d)) => (Some(d), true),
                Ok(Step::Defer(d)) => (Some(d), false),
                Err(e) => {
                    // A waiting search is not helped by spinning on the error.
                    self.shared.lock().hurry = false;
                    tracing::warn!(error = %e, "search indexer: retrying");
                    (Some(RETRY), true)
                }
            };
            let mut s = self.shared.lock();
            if s.stop {
                drop(s);
                if self.rev.is_some()
                    && self.rev != committed
                    && let Err(e) = self.commit()
                {
                    tracing::warn!(error = %e, "search indexer: final commit failed");
                }
                return;
            }
            if let Some(d) = wait
                && (!s.poked || !pokes_wake)
            {
                s = self
                    .shared
                    .cv
                    .wait_timeout_while(s, d, |s| (!s.poked || !pokes_wake) && !s.stop && !s.hurry)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            s.poked = false;
        }
    }

    fn step(
        &mut self,
        committed: &mut Option<u64>,
        last_commit: &mut Instant,
        applied: &mut Option<Instant>,
    ) -> Result<Step> {
        // What is applied becomes visible at the index's next commit only,
        // so under a steady stream of messages it is applied in batches:
        // applying each store commit as it came woke this thread and
        // tantivy's once per commit, a read transaction and two context
        // switches for every message sent. A search in a hurry, or a
        // first message after a quiet spell, goes through at once.
        let every = APPLY_EVERY.min(self.settings.commit_interval);
        let since_applied = applied.map(|at| at.elapsed());
        if let Some(since) = since_applied
            && self.rev.is_some()
            && since < every
            && !self.shared.lock().hurry
        {
            return Ok(Step::Defer(every - since));
        }
        let rx = self.store.read()?;
        let head = rx.message_rev()?;
        let behind = match self.rev {
            None => true,
            // The store went back (a restore) or the journal no longer
            // reaches back to where the index is.
            Some(rev) => {
                rev > head
                    || (rev < head && rx.journal_start()?.is_none_or(|start| start > rev + 1))
            }
        };
        if behind {
            self.rebuild(&rx)?;
            *committed = self.rev;
            *last_commit = Instant::now();
            return Ok(Step::Busy);
        }
        let rev = self.rev.unwrap_or(0);
        if rev < head {
            let rows = rx.journal_after(rev, BATCH)?;
            // The last commit's documents (reloaded at each commit).
            let searcher = self.reader.searcher();
            for &(at, id) in &rows {
                self.apply(&rx, &searcher, id)?;
                self.rev = Some(at);
            }
            *applied = Some(Instant::now());
            if rows.len() == BATCH {
                return Ok(Step::Busy);
            }
        }
        drop(rx);
        if self.rev != *committed {
            let since = last_commit.elapsed();
            let hurry = self.shared.lock().hurry;
            if since < self.settings.commit_interval && !hurry {
                return Ok(Step::Idle(self.settings.commit_interval - since));
            }
            self.commit()?;
            *committed = self.rev;
            *last_commit = Instant::now();
        } else {
            // Everything is visible already.
            self.shared.lock().hurry = false;
        }
        Ok(Step::Idle(IDLE_CHECK))
    }

    /// Brings one message's document in line with the store: replaced if
    /// it is there, gone if it was blanked or removed.
    fn apply(&mut self, rx: &Rx, searcher: &tantivy::Searcher, id: Id) -> Result<()> {
        let term = Term::from_field_bytes(self.fields.id, &id.0.to_be_bytes());
        // Most changes are new messages, in no segment yet: a delete costs
        // every segment a postings lookup at the next commit, so it is
        // asked only for a message the index may hold.
        if self.pending.contains(&id.0) || searcher.doc_freq(&term)? > 0 {
            self.writer.delete_term(term);
        }
        if let Some(m) = rx.message(id)?
            && !m.deleted
        {
            self.writer.add_document(document(&self.fields, &m))?;
            self.pending.insert(id.0);
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let rev = self.rev.unwrap_or(0);
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(
            &serde_json::to_string(&Payload {
                format: FORMAT,
                rev,
            })
            .unwrap_or_default(),
        );
        prepared.commit()?;
        self.reader.reload()?;
        // Only once the searcher shows them.
        self.pending.clear();
        let mut s = self.shared.lock();
        s.visible = rev;
        s.ready = true;
        s.hurry = false;
        self.shared.cv.notify_all();
        Ok(())
    }

    /// Replaces the whole index with the messages of `rx`'s snapshot and
    /// commits it at the snapshot's revision. Returns the messages indexed.
    /// Stopping midway leaves the previous commit in place.
    pub(super) fn rebuild(&mut self, rx: &Rx) -> Result<u64> {
        let head = rx.message_rev()?;
        let started = Instant::now();
        tracing::info!("search index: building from the store");
        self.writer.delete_all_documents()?;
        let mut after = None;
        let mut count = 0u64;
        loop {
            if self.shared.lock().stop {
                self.writer.rollback()?;
                return Err(SearchError::Io(std::io::Error::other(
                    "stopped while rebuilding",
                )));
            }
            let page = rx.messages_after(after, REBUILD_PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some((last.room, last.seq));
            for m in page.iter().filter(|m| !m.deleted) {
                self.writer.add_document(document(&self.fields, m))?;
                count += 1;
            }
        }
        self.rev = Some(head);
        self.commit()?;
        tracing::info!(
            messages = count,
            secs = started.elapsed().as_secs_f64(),
            "search index: built"
        );
        Ok(count)
    }
}
