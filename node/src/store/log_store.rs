//! The Raft log and vote in sled, with group commit.
//!
//! openraft 0.10 merges consecutive client writes into one `append`, but it keeps appending while
//! earlier appends are still being flushed, so flushing inside `append` would still serialize the
//! log behind the disk. Instead `append` writes the entries to sled (readable at once, not yet
//! durable) and queues its `IOFlushed` callback to a single flusher task. The flusher takes one
//! callback, drains every callback queued behind it, flushes sled once and completes them all in
//! order. Under load, one flush covers many writes; when idle, a lone write is flushed at once.
//!
//! A sled flush covers every write made before it, in every tree, so a flush started after an
//! append's insert makes that append durable, whoever started the flush.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use tokio::sync::mpsc;

use super::{decode, encode, index_key, keys};
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// What the flusher calls once the flush covering an append has finished (or failed).
/// In production this wraps openraft's `IOFlushed`; tests pass their own closures.
pub(super) type Completion = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Group-commit counters: how many appends the flusher has completed, with how many flushes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Appends whose callbacks have been completed.
    pub appends: u64,
    /// sled flushes the flusher issued for them (`save_vote`, `truncate` and `purge` flush on their
    /// own and are not counted).
    pub flushes: u64,
}

#[derive(Default)]
struct FlushCounters {
    appends: AtomicU64,
    flushes: AtomicU64,
}

/// openraft's log storage: the Raft log, the vote and the committed log id, in sled.
///
/// Not `Clone`: openraft owns it and serializes every write through it. Readers use [`LogReader`].
pub struct LogStore {
    /// The flusher holds only a `Weak` of this, so dropping the store (and every other handle)
    /// closes sled and releases the data directory at once, e.g. for an in-process restart.
    db: Arc<sled::Db>,
    log: sled::Tree,
    meta: sled::Tree,
    flusher: mpsc::UnboundedSender<Completion>,
    counters: Arc<FlushCounters>,
}

/// A cheap, cloneable reader of the log and the vote, used by openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    log: sled::Tree,
    meta: sled::Tree,
}

impl LogStore {
    /// Wraps the opened trees and spawns the flusher on `runtime`. The flusher exits when the
    /// store is dropped, after completing the callbacks already queued.
    pub(super) fn new(db: sled::Db, log: sled::Tree, meta: sled::Tree, runtime: &tokio::runtime::Handle) -> Self {
        let db = Arc::new(db);
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(FlushCounters::default());
        runtime.spawn(run_flusher(Arc::downgrade(&db), rx, counters.clone()));
        LogStore { db, log, meta, flusher: tx, counters }
    }

    /// How many appends the flusher has made durable so far, and with how many flushes.
    /// `appends / flushes` is the group-commit batch size.
    pub fn flush_stats(&self) -> FlushStats {
        FlushStats {
            appends: self.counters.appends.load(Ordering::Relaxed),
            flushes: self.counters.flushes.load(Ordering::Relaxed),
        }
    }

    /// Writes `entries` as one sled batch and queues `completion` for the flusher. The entries are
    /// readable when this returns; `completion` runs once they are durable (or the flush failed).
    pub(super) fn append_with<I>(&mut self, entries: I, completion: Completion) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let value = encode(&entry).map_err(io::Error::other)?;
            batch.insert(&index_key(entry.log_id.index), value);
        }
        self.log.apply_batch(batch)?;

        // The insert above happens before the flusher can receive this completion, so the flush
        // that completes it covers these entries.
        if let Err(mpsc::error::SendError(completion)) = self.flusher.send(completion) {
            completion(Err(io::Error::other("log flusher task has stopped")));
            return Err(io::Error::other("log flusher task has stopped"));
        }
        Ok(())
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> io::Result<()> {
        self.meta.insert(key, encode(value).map_err(io::Error::other)?)?;
        Ok(())
    }

    async fn flush(&self) -> io::Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(meta: &sled::Tree, key: &[u8]) -> io::Result<Option<T>> {
    let Some(bytes) = meta.get(key)? else {
        return Ok(None);
    };
    Ok(Some(decode(&bytes).map_err(io::Error::other)?))
}

/// The flusher task: one flush per batch of queued appends, completions in append order.
async fn run_flusher(db: Weak<sled::Db>, mut queue: mpsc::UnboundedReceiver<Completion>, counters: Arc<FlushCounters>) {
    let mut batch: Vec<Completion> = Vec::new();
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while let Ok(next) = queue.try_recv() {
            batch.push(next);
        }

        let result = match db.upgrade() {
            Some(db) => {
                counters.flushes.fetch_add(1, Ordering::Relaxed);
                crate::faults::point("log-flush-before");
                let flushed = db.flush_async().await.map_err(io::Error::from);
                // Durable, but openraft not told yet: a crash here must lose nothing acknowledged.
                crate::faults::point("log-flush-after");
                flushed
            }
            None => Err(io::Error::other("log store dropped before its appends were flushed")),
        };
        counters.appends.fetch_add(batch.len() as u64, Ordering::Relaxed);
        match result {
            Ok(_) => batch.drain(..).for_each(|done| done(Ok(()))),
            Err(e) => {
                // io::Error is not Clone: give each waiter its own copy.
                tracing::error!(error = %e, appends = batch.len(), "log flush failed");
                batch.drain(..).for_each(|done| done(Err(io::Error::new(e.kind(), e.to_string()))));
            }
        }
    }
}

/// Reads `[range)` of the log; missing entries are skipped, as openraft allows.
fn read_range<RB: RangeBounds<u64>>(log: &sled::Tree, range: RB) -> io::Result<Vec<Entry>> {
    let lo = map_bound(range.start_bound());
    let hi = map_bound(range.end_bound());
    log.range::<[u8; 8], _>((lo, hi))
        .map(|item| {
            let (_, value) = item?;
            decode::<Entry>(&value).map_err(io::Error::other)
        })
        .collect()
}

fn map_bound(bound: Bound<&u64>) -> Bound<[u8; 8]> {
    match bound {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        read_range(&self.log, range)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        read_meta(&self.meta, keys::VOTE)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        read_range(&self.log, range)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        read_meta(&self.meta, keys::VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = read_meta(&self.meta, keys::LAST_PURGED)?;
        let last_entry = match self.log.last()? {
            Some((_, value)) => Some(decode::<Entry>(&value).map_err(io::Error::other)?.log_id),
            None => None,
        };
        Ok(LogState { last_log_id: last_entry.or(last_purged_log_id), last_purged_log_id })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { log: self.log.clone(), meta: self.meta.clone() }
    }

    /// Persists the vote and flushes before returning (Raft §5.1: a vote must survive a crash, or
    /// a node could vote twice in one term). The flush also covers every earlier append.
    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        crate::faults::point("vote-save-before");
        self.write_meta(keys::VOTE, vote)?;
        self.flush().await?;
        crate::faults::point("vote-save-after");
        Ok(())
    }

    /// Records the committed log id, without a flush of its own: the next append, vote or purge
    /// flushes it, and a crash before that restarts from an older commit point, which is safe.
    /// Restart re-applies the log up to the saved point (the cache lives in memory), and the rest
    /// is committed again by the cluster. The danger a stale commit point once had, a restarted
    /// leader taking its read index from it, is gone: openraft's `enable_leader_restore` is off
    /// (see `Config::raft_config`), so a restarted node never resumes leading its old term and
    /// a read index is at least its new term's first entry, committed after the restart.
    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        match committed {
            Some(log_id) => self.write_meta(keys::COMMITTED, &log_id)?,
            None => {
                self.meta.remove(keys::COMMITTED)?;
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        read_meta(&self.meta, keys::COMMITTED)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_with(entries, Box::new(move |result| callback.io_completed(result)))
    }

    /// Removes every entry after `last_log_id` (all of them for `None`) and flushes, so the
    /// removed (conflicting, uncommitted) suffix cannot reappear after a crash.
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let first_removed = last_log_id.map_or(0, |l| l.index + 1);
        let mut batch = sled::Batch::default();
        for item in self.log.range(index_key(first_removed)..) {
            let (key, _) = item?;
            batch.remove(key);
        }
        self.log.apply_batch(batch)?;
        self.flush().await
    }

    /// Removes every entry with index `<= log_id.index`. `last_purged` is persisted (and flushed)
    /// first, so a crash in between leaves extra entries, never a hole in the reported log state.
    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        self.write_meta(keys::LAST_PURGED, &log_id)?;
        self.flush().await?;
        // `last_purged` is durable but the entries are still there.
        crate::faults::point("purge-mid");

        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (key, _) = item?;
            batch.remove(key);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }
}
