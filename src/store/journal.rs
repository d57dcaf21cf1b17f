//! The message journal: a revision for every change to a message, so what
//! follows the store from outside the writer (the search index) can say
//! "I have seen up to revision N" and resume from there after a restart or
//! a crash, on every node alike (revisions are given in apply, in log
//! order).

use super::*;

/// How many journal rows are kept. A follower further behind than this
/// rebuilds from the messages, which it must be able to do anyway.
pub const JOURNAL_KEEP: u64 = 100_000;

impl Tx {
    /// Gives each of `ids` the next revision. Called by every write that
    /// changes, blanks or removes a message, after its checks.
    pub(super) fn journal(&mut self, ids: impl IntoIterator<Item = Id>) -> Result<()> {
        // The last revision given is the journal's last key: trimming
        // keeps the newest rows, so once written it is never empty.
        let mut log = self.txn.open_table(REV_TO_MESSAGE)?;
        let start = match log.last()? {
            Some((k, _)) => k.value(),
            None => 0,
        };
        let mut rev = start;
        for id in ids {
            rev += 1;
            log.insert(rev, id.0)?;
        }
        if rev == start {
            return Ok(());
        }
        // Trim what fell out of the window, oldest first: at most as many
        // rows as were added, so the table stays at JOURNAL_KEEP.
        if rev > JOURNAL_KEEP {
            let below = rev - JOURNAL_KEEP;
            log.retain_in(..=below, |_, _| false)?;
        }
        Ok(())
    }
}

impl Rx {
    /// The revision of the last message change committed (0: none yet).
    pub fn message_rev(&self) -> Result<u64> {
        Ok(self
            .txn
            .open_table(REV_TO_MESSAGE)?
            .last()?
            .map(|(k, _)| k.value())
            .unwrap_or(0))
    }

    /// The oldest revision still in the journal, if any.
    pub fn journal_start(&self) -> Result<Option<u64>> {
        Ok(self
            .txn
            .open_table(REV_TO_MESSAGE)?
            .first()?
            .map(|(k, _)| k.value()))
    }

    /// Up to `limit` journal rows after revision `after`, in order.
    pub fn journal_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Id)>> {
        let t = self.txn.open_table(REV_TO_MESSAGE)?;
        let mut out = Vec::new();
        for row in t.range(after.saturating_add(1)..)? {
            let (k, v) = row?;
            out.push((k.value(), Id(v.value())));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `limit` stored messages after the (room, seq) key `after`, in
    /// key order: a whole-store scan in pages, within this one snapshot.
    pub fn messages_after(&self, after: Option<(Id, u64)>, limit: usize) -> Result<Vec<Message>> {
        let msgs = self.txn.open_table(ROOM_SEQ_TO_MESSAGE)?;
        let users = self.txn.open_table(USER_TO_RECORD)?;
        let mut senders = SenderCache::new(&users);
        let range = match after {
            Some((room, seq)) => msgs.range((
                std::ops::Bound::Excluded((room.0, seq)),
                std::ops::Bound::Unbounded,
            ))?,
            None => msgs.range::<(u128, u64)>(..)?,
        };
        let mut out = Vec::new();
        for row in range {
            let (k, v) = row?;
            let (room, seq) = k.value();
            let rec: MessageRecord = decode("room_seq_to_message", v.value())?;
            out.push(senders.message(Id(room), seq, rec)?);
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }
}

/// Read-only access to the store that does not keep its writer running:
/// for a follower that must let the store close when the app does.
#[derive(Clone)]
pub struct Reader {
    pub(super) db: Arc<Database>,
}

impl Reader {
    pub fn read(&self) -> Result<Rx> {
        Ok(Rx {
            txn: self.db.begin_read()?,
        })
    }
}

impl Store {
    pub fn reader(&self) -> Reader {
        Reader {
            db: self.db.clone(),
        }
    }
}
