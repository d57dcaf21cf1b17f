//! Cluster mode: a command is appended to the engine's replicated log, and
//! every node applies that log, in order, to its own store, with the same
//! code a single node runs (`apply`). The log's position of the last entry
//! applied is stored in the same write transaction as that entry's effect,
//! so a node that stops anywhere resumes exactly after it: no entry is
//! applied twice or skipped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::engine::{Engine, EngineError};
use super::*;

/// Where this node has applied the log up to.
const POSITION_KEY: &str = "log_position";

/// How long a submitter waits for its own node to apply a command the
/// engine has already committed. Past it the answer is `unavailable`:
/// the write may have happened, and a resend with the same
/// `client_msg_id` is safe.
const APPLY_WAIT: Duration = Duration::from_secs(30);

type Waiter = oneshot::Sender<Result<Outcome>>;

pub struct Link {
    engine: Engine,
    waiters: Mutex<HashMap<Id, Waiter>>,
    applied: tokio::sync::watch::Sender<u64>,
    follower: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Link {
    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Waiter>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn submit(&self, env: Envelope) -> Result<Outcome> {
        let id = env.id;
        let bytes = serde_json::to_vec(&env).map_err(|e| StoreError::Corrupt {
            table: "commands",
            message: e.to_string(),
        })?;
        let (tx, rx) = oneshot::channel();
        self.waiters().insert(id, tx);
        // Whatever happens next, and even if the caller goes away, the
        // waiter must not stay behind.
        let _forget = Forget { link: self, id };
        if let Err(e) = self.engine.append(id.0, bytes.into()).await {
            return Err(unavailable(e));
        }
        match tokio::time::timeout(APPLY_WAIT, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(StoreError::WriterGone),
            Err(_) => Err(StoreError::Unavailable(
                "the write was committed but this node has not applied it yet; \
                 retry with the same client_msg_id"
                    .into(),
            )),
        }
    }

    /// Where this node has applied the log up to.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until this node has applied the log up to `position`.
    pub async fn wait_applied(&self, position: u64) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|p| *p >= position).await;
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stops applying the log (a shutdown): the follower lets go of the
    /// writer, so the store can close, and whoever still waits for an
    /// apply is told at once that the store is going.
    pub fn stop(&self) {
        self.waiters().clear();
        if let Some(f) = self
            .follower
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            f.abort();
        }
    }
}

struct Forget<'a> {
    link: &'a Link,
    id: Id,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.link.waiters().remove(&self.id);
    }
}

fn unavailable(e: EngineError) -> StoreError {
    match e {
        EngineError::Unavailable(msg) => StoreError::Unavailable(format!(
            "the cluster cannot commit writes now ({msg}); retry later, with the same client_msg_id"
        )),
        other => StoreError::Unavailable(format!(
            "the cluster's engine failed ({other}); retry later, with the same client_msg_id"
        )),
    }
}

impl Store {
    /// Turns this store into a cluster node's: from now on every command
    /// goes through `engine`'s log, and a task applies that log here from
    /// where this store left off. Call before cloning the store.
    pub fn join(&mut self, engine: Engine) -> Result<Arc<Link>> {
        let from = self.position()?;
        let (applied, _) = tokio::sync::watch::channel(from);
        let link = Arc::new(Link {
            engine: engine.clone(),
            waiters: Mutex::new(HashMap::new()),
            applied,
            follower: Mutex::new(None),
        });
        self.cluster = Some(link.clone());
        let jobs = self.jobs.clone();
        let db = self.db.clone();
        let task = tokio::spawn(follow(engine, link.clone(), jobs, db, from));
        *link.follower.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        Ok(link)
    }

    /// The log position this store has applied up to (0 if none).
    pub fn position(&self) -> Result<u64> {
        read_position(&self.read()?.txn)
    }

    pub fn link(&self) -> Option<&Arc<Link>> {
        self.cluster.as_ref()
    }
}

/// Applies the log from `from` on, forever. Each entry becomes a job of
/// the store's writer, so entries share its group commits. A job applies
/// its entry only if it is the next one after what the store has: after
/// a failed commit the entries queued behind it are skipped, and the
/// log is followed again from what was committed.
async fn follow(
    engine: Engine,
    link: Arc<Link>,
    jobs: std_mpsc::Sender<Job>,
    db: Arc<Database>,
    mut from: u64,
) {
    loop {
        let mut entries = engine.follow(from);
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        while let Some((position, bytes)) = entries.recv().await {
            if broken.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let (link, broken) = (link.clone(), broken.clone());
            let job: Job = Box::new(move |tx: &mut Tx| {
                let (id, result) = apply_entry(tx, position, &bytes);
                Box::new(move |committed: Result<()>| {
                    if committed.is_err() {
                        broken.store(true, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        link.applied.send_if_modified(|p| {
                            let moved = *p < position;
                            *p = (*p).max(position);
                            moved
                        });
                    }
                    if let Some(id) = id
                        && let Some(waiter) = link.waiters().remove(&id)
                    {
                        let _ = waiter.send(committed.and(result));
                    }
                })
            });
            if jobs.send(job).is_err() {
                return;
            }
        }
        // The stream ended (the engine's client is gone) or a commit
        // failed: start again from what this store holds.
        let rx = match db.begin_read() {
            Ok(rx) => rx,
            Err(e) => {
                tracing::error!(error = %e, "cluster: cannot read the store's log position");
                return;
            }
        };
        from = read_position(&rx).unwrap_or(from);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn read_position(rx: &ReadTransaction) -> Result<u64> {
    position_in(&rx.open_table(META)?)
}

/// The position recorded in the meta table (0 before the first entry).
fn position_in(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64> {
    let v = meta.get(POSITION_KEY)?;
    Ok(
        v.and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0),
    )
}

/// Applies one log entry if it is the next one; records its position.
/// Returns the command's id (to answer its submitter) and what it gave.
fn apply_entry(tx: &mut Tx, position: u64, bytes: &[u8]) -> (Option<Id>, Result<Outcome>) {
    let have = match tx.position() {
        Ok(p) => p,
        Err(e) => return (None, Err(e)),
    };
    if position != have + 1 {
        // Applied already (a replay after a restart), or a gap after a
        // failed commit, which the follower mends by starting over.
        return (
            None,
            Err(StoreError::Conflict(format!(
                "log entry {position} is not the next after {have}"
            ))),
        );
    }
    let (id, result) = match serde_json::from_slice::<Envelope>(bytes) {
        Ok(env) => {
            let result = tx.attempt(env.at, |tx| apply::apply(tx, env.cmd, &Local::default()));
            (Some(env.id), result)
        }
        Err(e) => {
            // Every node fails the same way on the same entry (a command
            // from a newer confab): it is passed over everywhere alike.
            tracing::error!(position, error = %e, "cluster: a log entry this node cannot read was skipped");
            (
                None,
                Err(StoreError::Corrupt {
                    table: "log",
                    message: e.to_string(),
                }),
            )
        }
    };
    if let Err(e) = tx.set_position(position) {
        return (id, Err(e));
    }
    (id, result)
}

impl Tx {
    fn position(&self) -> Result<u64> {
        position_in(&self.txn.open_table(META)?)
    }

    fn set_position(&mut self, position: u64) -> Result<()> {
        self.txn
            .open_table(META)?
            .insert(POSITION_KEY, position.to_be_bytes().as_slice())?;
        Ok(())
    }
}
