//! The single writer: it takes queued operations, applies a group of them
//! in one write transaction, commits it durably, then hands the group's
//! changes and replies on, in commit order.

use super::*;

pub type Listener = Arc<dyn Fn(&[Change]) + Send + Sync>;

pub(super) type Completion = Box<dyn FnOnce(Result<()>) + Send>;
pub(super) type Job = Box<dyn FnOnce(&mut Tx) -> Completion + Send>;

/// A commit's outcome, handed from the writer to whoever finishes it.
pub(super) type Committed = (
    Vec<Change>,
    Vec<Completion>,
    std::result::Result<(), String>,
);

/// After a commit: fan-out first (the listener, in commit order), then
/// each operation's reply.
pub(super) fn finish_commit(listener: &Listener, (changes, completions, outcome): Committed) {
    match outcome {
        Ok(()) => {
            if !changes.is_empty() {
                listener(&changes);
            }
            for done in completions {
                done(Ok(()));
            }
        }
        Err(msg) => {
            // The cause (a full disk, an I/O error) is the operator's to
            // read; the client learns that nothing was stored.
            tracing::error!(error = %msg, "a commit failed: nothing of it was stored");
            for done in completions {
                done(Err(StoreError::Unavailable(
                    "the store cannot write now; nothing was stored".into(),
                )));
            }
        }
    }
}

/// Where the writer hands each commit. Inside a runtime, to one task on
/// it: waking the connections that fan-out and replies reach is then
/// the runtime waking its own tasks, not a foreign thread pushing every
/// wake-up through the runtime's shared queue (one cross-thread wake per
/// commit instead of one per delivery). One task, one channel: commit
/// order is kept.
pub(super) fn handoff(listener: Listener) -> Box<dyn Fn(Committed) + Send> {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return Box::new(move |c| finish_commit(&listener, c));
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Committed>();
    let on_task = listener.clone();
    rt.spawn(async move {
        while let Some(c) = rx.recv().await {
            finish_commit(&on_task, c);
        }
    });
    Box::new(move |c| {
        // The runtime is shutting down: finish here rather than lose it.
        if let Err(e) = tx.send(c) {
            finish_commit(&listener, e.0);
        }
    })
}

pub(super) fn writer_loop(
    db: Arc<Database>,
    rx: std_mpsc::Receiver<Job>,
    max_batch: usize,
    after: Box<dyn Fn(Committed) + Send>,
    observer: Option<CommitObserver>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    // Ends when every Store handle (and so every sender) is gone.
    while let Ok(first) = rx.recv() {
        batch.push(first);
        take_waiting(&rx, &mut batch, max_batch);
        // A lone operation: give way once before committing it. On an
        // idle machine this returns at once; on a busy core it lets the
        // threads that submit operations run on and add theirs to this
        // commit, instead of paying a commit and an fsync (and two context
        // switches) for each.
        if batch.len() == 1 {
            std::thread::yield_now();
            take_waiting(&rx, &mut batch, max_batch);
        }
        let started = std::time::Instant::now();
        let size = batch.len();
        let txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                // Dropping a job drops its reply channel: its caller gets
                // an error, never a false success.
                tracing::error!(error = %e, "store: cannot begin a write transaction; {size} operations refused");
                batch.clear();
                continue;
            }
        };
        let mut tx = Tx {
            txn,
            changes: Vec::new(),
            now: 0,
            db: db.clone(),
        };
        let completions: Vec<Completion> = batch.drain(..).map(|job| job(&mut tx)).collect();
        let Tx { txn, changes, .. } = tx;
        let outcome = txn.commit().map_err(|e| {
            let e = StoreError::from(e);
            tracing::error!(error = %e, "store: commit failed; {size} operations refused");
            e.to_string()
        });
        after((changes, completions, outcome));
        if let Some(obs) = &observer {
            obs(size, started.elapsed());
        }
    }
}

/// Adds the operations already queued to `batch`, up to `max`.
pub(super) fn take_waiting(rx: &std_mpsc::Receiver<Job>, batch: &mut Vec<Job>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}
