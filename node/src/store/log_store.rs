//! The Raft log and vote in sled, with group commit.
//!
//! openraft 0.9 calls `append` once per client write, so flushing inside `append` would cost one
//! disk sync per write. Instead `append` writes the entries to sled (readable at once, not yet
//! durable) and queues its `LogFlushed` callback to a single flusher task. The flusher takes one
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

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};
use tokio::sync::mpsc;

use super::{decode, encode, index_key, keys};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// What the flusher calls once the flush covering an append has finished (or failed).
/// In production this wraps openraft's `LogFlushed`; tests pass their own closures.
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

/// A cheap, cloneable reader of the log, used by openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    log: sled::Tree,
}

/// Reads the id of the last entry in the log, for the pre-vote check (openraft 0.9 does not
/// expose it). Cheap to clone.
#[derive(Clone)]
pub struct LogTail {
    log: sled::Tree,
    meta: sled::Tree,
}

impl LogTail {
    /// The id of the last entry the log has had: its last entry, or when everything was purged
    /// behind a snapshot, the last purged one.
    pub fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        if let Some((_, bytes)) = self.log.last().map_err(|e| read_logs(&e))? {
            let entry: Entry = decode(&bytes).map_err(|e| read_logs(&e))?;
            return Ok(Some(entry.log_id));
        }
        match self.meta.get(keys::LAST_PURGED).map_err(|e| read_logs(&e))? {
            Some(bytes) => Ok(Some(decode(&bytes).map_err(|e| read_logs(&e))?)),
            None => Ok(None),
        }
    }
}

impl LogStore {
    /// A handle that reads the last log id, usable after the store moved into openraft.
    pub fn tail(&self) -> LogTail {
        LogTail { log: self.log.clone(), meta: self.meta.clone() }
    }

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
    pub(super) fn append_with<I>(&mut self, entries: I, completion: Completion) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let value = encode(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, AnyError::new(&e)))?;
            batch.insert(&index_key(entry.log_id.index), value);
        }
        self.log.apply_batch(batch).map_err(|e| write_logs(&e))?;

        // The insert above happens before the flusher can receive this completion, so the flush
        // that completes it covers these entries.
        if let Err(mpsc::error::SendError(completion)) = self.flusher.send(completion) {
            let err = io::Error::other("log flusher task has stopped");
            let storage_err = write_logs(&err);
            completion(Err(err));
            return Err(storage_err);
        }
        Ok(())
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        to_err: fn(AnyError) -> StorageIOError<u64>,
    ) -> Result<Option<T>, StorageError> {
        let Some(bytes) = self.meta.get(key).map_err(|e| to_err(AnyError::new(&e)))? else {
            return Ok(None);
        };
        let value = decode(&bytes).map_err(|e| to_err(AnyError::new(&e)))?;
        Ok(Some(value))
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        to_err: fn(AnyError) -> StorageIOError<u64>,
    ) -> Result<(), StorageError> {
        let bytes = encode(value).map_err(|e| to_err(AnyError::new(&e)))?;
        self.meta.insert(key, bytes).map_err(|e| to_err(AnyError::new(&e)))?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_async().await.map_err(|e| write_logs(&e))?;
        Ok(())
    }
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

fn write_logs(e: &(impl std::error::Error + 'static)) -> StorageError {
    StorageIOError::write_logs(AnyError::new(e)).into()
}

fn read_logs(e: &(impl std::error::Error + 'static)) -> StorageError {
    StorageIOError::read_logs(AnyError::new(e)).into()
}

/// Reads `[range)` of the log; missing entries are skipped, as openraft allows.
fn read_range<RB: RangeBounds<u64>>(log: &sled::Tree, range: RB) -> Result<Vec<Entry>, StorageError> {
    let lo = map_bound(range.start_bound());
    let hi = map_bound(range.end_bound());
    log.range::<[u8; 8], _>((lo, hi))
        .map(|item| {
            let (_, value) = item.map_err(|e| read_logs(&e))?;
            decode::<Entry>(&value).map_err(|e| read_logs(&e))
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
    ) -> Result<Vec<Entry>, StorageError> {
        read_range(&self.log, range)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_range(&self.log, range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_meta(keys::LAST_PURGED, StorageIOError::read_logs)?;
        let last_entry = match self.log.last().map_err(|e| read_logs(&e))? {
            Some((_, value)) => Some(decode::<Entry>(&value).map_err(|e| read_logs(&e))?.log_id),
            None => None,
        };
        Ok(LogState { last_log_id: last_entry.or(last_purged_log_id), last_purged_log_id })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { log: self.log.clone() }
    }

    /// Persists the vote and flushes before returning (Raft §5.1: a vote must survive a crash, or
    /// a node could vote twice in one term). The flush also covers every earlier append.
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        crate::faults::point("vote-save-before");
        self.write_meta(keys::VOTE, vote, StorageIOError::write_vote)?;
        self.db.flush_async().await.map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        crate::faults::point("vote-save-after");
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(keys::VOTE, StorageIOError::read_vote)
    }

    /// Records the committed log id, flushed before returning. openraft saves it before applying
    /// (and so before answering) the entries it commits, so after a crash the commit point is at
    /// least every write this node acknowledged. That matters for a leader restarted in its own
    /// term: openraft 0.9 then takes its read index from the saved commit point (its no-op entry
    /// is the first of its term, long ago), and a stale commit point would let a linearizable read
    /// miss an acknowledged write. The harness's final read after restarting every node caught it.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        match committed {
            Some(log_id) => self.write_meta(keys::COMMITTED, &log_id, StorageIOError::write)?,
            None => {
                self.meta.remove(keys::COMMITTED).map_err(|e| write_logs(&e))?;
            }
        }
        self.db.flush_async().await.map_err(|e| write_logs(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.read_meta(keys::COMMITTED, StorageIOError::read)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_with(entries, Box::new(move |result| callback.log_io_completed(result)))
    }

    /// Removes every entry with index `>= log_id.index` and flushes, so the removed (conflicting,
    /// uncommitted) suffix cannot reappear after a crash.
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(|e| write_logs(&e))?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| write_logs(&e))?;
        self.flush().await
    }

    /// Removes every entry with index `<= log_id.index`. `last_purged` is persisted (and flushed)
    /// first, so a crash in between leaves extra entries, never a hole in the reported log state.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write_meta(keys::LAST_PURGED, &log_id, StorageIOError::write_logs)?;
        self.flush().await?;
        // `last_purged` is durable but the entries are still there.
        crate::faults::point("purge-mid");

        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(|e| write_logs(&e))?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| write_logs(&e))?;
        Ok(())
    }
}
