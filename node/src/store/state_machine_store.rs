//! The openraft state-machine adapter: applies committed entries to the in-memory [`Cache`], builds
//! and installs snapshots, and keeps the current snapshot in sled so a restart can rebuild the cache.
//!
//! The cache, the last applied log id and the last applied membership sit together behind one
//! `std::sync::RwLock`, so a reader never sees a cache whose applied position is from another moment.
//! A std lock (not tokio's) is right here: it is never held across an `.await`, and every critical
//! section is short (one apply batch, one lookup, one snapshot copy), so blocking is cheaper than
//! an async lock's bookkeeping (same reasoning as mini-redis `src/db.rs`).

use std::io;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{FutureExt, Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::{decode, encode, keys};
use crate::state_machine::{Cache, CacheSnapshot, Response};
use crate::types::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};

/// openraft's state machine: the cache plus its applied position, and the current snapshot.
pub struct StateMachineStore {
    shared: Arc<Shared>,
    /// Whether `apply` demands `index == last_applied + 1` (always, except under openraft's
    /// conformance suite, which applies synthetic entries with gaps).
    strict_continuity: bool,
}

/// Builds snapshots from a consistent copy of the state machine; handed to openraft.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

/// A cheap, cloneable handle for serving local reads from the state machine.
#[derive(Clone)]
pub struct CacheReader {
    shared: Arc<Shared>,
}

struct Shared {
    db: sled::Db,
    snapshots: sled::Tree,
    applied: RwLock<Applied>,
    /// Serializes the compare-and-replace of the persisted snapshot.
    snapshot_write: Mutex<()>,
}

/// Everything the applied log prefix determines.
struct Applied {
    cache: Cache,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

/// The bytes of a snapshot: its metadata (so the bytes are self-describing) and the cache.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    cache: CacheSnapshot,
}

impl StateMachineStore {
    /// Restores the state machine from the snapshot persisted in `snapshots`, or starts empty.
    pub(super) fn load(db: sled::Db, snapshots: sled::Tree) -> crate::Result<StateMachineStore> {
        let applied = match read_current(&snapshots)? {
            Some((meta, data)) => {
                let file = decode_file(&meta, &data)?;
                Applied {
                    cache: Cache::restore(file.cache),
                    last_applied: meta.last_log_id,
                    last_membership: meta.last_membership,
                }
            }
            None => Applied { cache: Cache::new(), last_applied: None, last_membership: StoredMembership::default() },
        };
        let shared = Shared { db, snapshots, applied: RwLock::new(applied), snapshot_write: Mutex::new(()) };
        Ok(StateMachineStore { shared: Arc::new(shared), strict_continuity: true })
    }

    /// A handle for local reads; see [`CacheReader::read`].
    pub fn reader(&self) -> CacheReader {
        CacheReader { shared: self.shared.clone() }
    }

    /// Lets `apply` skip indexes (never go back). Only openraft's conformance suite needs this:
    /// it applies hand-made entries such as index 3 on an empty state machine.
    #[cfg(test)]
    pub(super) fn allow_apply_gaps(&mut self) {
        self.strict_continuity = false;
    }
}

impl CacheReader {
    /// Runs `f` on the cache and the log id of the last entry applied to it, under a read lock.
    /// Keep `f` short: apply waits for it.
    ///
    /// Panics if a previous apply panicked while holding the lock (the state may be half-applied;
    /// serving it could diverge from the log).
    pub fn read<R>(&self, f: impl FnOnce(&Cache, Option<LogId>) -> R) -> R {
        let applied = self.shared.applied.read().expect("state machine lock poisoned by a panic in apply");
        f(&applied.cache, applied.last_applied)
    }
}

impl Shared {
    fn read(&self) -> io::Result<RwLockReadGuard<'_, Applied>> {
        self.applied.read().map_err(|_| poisoned())
    }

    fn write(&self) -> io::Result<RwLockWriteGuard<'_, Applied>> {
        self.applied.write().map_err(|_| poisoned())
    }

    /// Makes `meta` + `data` the current snapshot and flushes. Unless `force`, a snapshot older than
    /// the persisted one is not written (a slow `build_snapshot` racing a newer install); returns
    /// whether it was written.
    async fn persist_snapshot(&self, meta: &SnapshotMeta, data: &[u8], force: bool) -> io::Result<bool> {
        {
            let _guard = self.snapshot_write.lock().map_err(|_| poisoned())?;
            if !force {
                if let Some(current) = self.snapshots.get(keys::SNAPSHOT_META)? {
                    let current: SnapshotMeta = decode(&current).map_err(io::Error::other)?;
                    if current.last_log_id > meta.last_log_id {
                        return Ok(false);
                    }
                }
            }
            let mut batch = sled::Batch::default();
            batch.insert(keys::SNAPSHOT_META, encode(meta).map_err(io::Error::other)?);
            batch.insert(keys::SNAPSHOT_DATA, data);
            self.snapshots.apply_batch(batch)?;
        }
        self.db.flush_async().await?;
        Ok(true)
    }
}

fn poisoned() -> io::Error {
    io::Error::other("state machine lock poisoned by a panic")
}

/// Reads the persisted snapshot's metadata and bytes (written together in one sled batch).
fn read_current(snapshots: &sled::Tree) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
    let Some(meta) = snapshots.get(keys::SNAPSHOT_META)? else {
        return Ok(None);
    };
    let meta: SnapshotMeta = decode(&meta).map_err(io::Error::other)?;
    let data = snapshots.get(keys::SNAPSHOT_DATA)?.ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "snapshot metadata present but its data is missing")
    })?;
    Ok(Some((meta, data.to_vec())))
}

/// Decodes snapshot bytes and checks they are the snapshot `meta` describes.
fn decode_file(meta: &SnapshotMeta, data: &[u8]) -> io::Result<SnapshotFile> {
    let file: SnapshotFile = decode(data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if file.meta.last_log_id != meta.last_log_id || file.meta.last_membership != meta.last_membership {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot bytes are of {:?}, but its metadata says {:?}", file.meta.last_log_id, meta.last_log_id),
        ));
    }
    Ok(file)
}

/// Entries must apply in log order, each once (toyDB `sql/engine/raft.rs` asserts the same):
/// a skipped or repeated entry would make this replica diverge from the others.
fn check_follows(last: Option<LogId>, next: LogId, strict: bool) -> io::Result<()> {
    let expected = last.map_or(0, |l| l.index + 1);
    let ok = if strict { next.index == expected } else { next.index >= expected };
    if ok {
        return Ok(());
    }
    let last = last.map_or_else(|| "nothing".to_string(), |l| l.to_string());
    let msg = format!("entry {next} does not follow the last applied entry ({last}); refusing to apply");
    tracing::error!("{msg}");
    Err(io::Error::new(io::ErrorKind::InvalidData, msg))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    /// Clones the state machine under the read lock (O(1): the cache's maps are persistent, see
    /// [`Cache`]), then, with the lock released and on a blocking thread (not the async
    /// runtime's), walks and encodes the clone, and persists it (flushed) as the current snapshot.
    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let (meta, cache) = {
            let applied = self.shared.read()?;
            let meta =
                SnapshotMeta { last_log_id: applied.last_applied, last_membership: applied.last_membership.clone() };
            (meta, applied.cache.clone())
        };
        let (meta, data) = tokio::task::spawn_blocking(move || {
            let file = SnapshotFile { meta, cache: cache.snapshot() };
            encode(&file).map(|data| (file.meta, data))
        })
        .await
        .map_err(io::Error::other)?
        .map_err(io::Error::other)?;
        crate::faults::point("snapshot-build-before-persist");
        self.shared.persist_snapshot(&meta, &data, false).await?;
        crate::faults::point("snapshot-build-after-persist");
        Ok(Snapshot { meta, snapshot: data })
    }
}

/// One entry's answer, sent once the batch it belongs to is applied and the lock released.
type Answer = (openraft::storage::ApplyResponder<TypeConfig>, Response);

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let applied = self.shared.read()?;
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    /// Applies the entries openraft streams in, in order. Whatever is ready at once is applied
    /// under one write lock (readers wait for one batch, not one lock round per entry), and the
    /// batch's answers are sent after the lock is released. A blank or membership entry answers
    /// `Response::default()`; a membership entry is also recorded as the last membership.
    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut answers: Vec<Answer> = Vec::new();
        while let Some(first) = entries.next().await {
            let mut applied = self.shared.write()?;
            let mut next = Some(first);
            while let Some(item) = next.take() {
                let (entry, responder) = item?;
                check_follows(applied.last_applied, entry.log_id, self.strict_continuity)?;
                let response = match entry.payload {
                    EntryPayload::Blank => Response::default(),
                    EntryPayload::Normal(command) => applied.cache.apply(entry.log_id.index, &command),
                    EntryPayload::Membership(membership) => {
                        applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                        Response::default()
                    }
                };
                applied.last_applied = Some(entry.log_id);
                if let Some(responder) = responder {
                    answers.push((responder, response));
                }
                // Take the next entry only if it is already there: never wait holding the lock.
                next = entries.next().now_or_never().flatten();
            }
            drop(applied);
            // Applied in memory, answers not yet sent: a crash here must replay the same entries.
            crate::faults::point("apply-after");
            answers.drain(..).for_each(|(responder, response)| responder.send(response));
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone() }
    }

    /// Decodes the received snapshot, persists it (flushed) as the current snapshot, then replaces
    /// the state machine with it. A crash in between restarts from the new snapshot.
    async fn install_snapshot(&mut self, meta: &SnapshotMeta, data: SnapshotData) -> io::Result<()> {
        let file = decode_file(meta, &data)?;
        let cache = Cache::restore(file.cache);
        crate::faults::point("snapshot-install-before-persist");
        self.shared.persist_snapshot(meta, &data, true).await?;
        // Persisted, but the in-memory state machine is still the old one.
        crate::faults::point("snapshot-install-mid");

        let mut applied = self.shared.write()?;
        // The eviction and expiry counts are this process's observations (metrics), not part of
        // the snapshot: keep them growing across the install.
        let mut cache = cache;
        cache.continue_counting_from(applied.cache.removals());
        *applied = Applied { cache, last_applied: meta.last_log_id, last_membership: meta.last_membership.clone() };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        Ok(read_current(&self.shared.snapshots)?.map(|(meta, data)| Snapshot { meta, snapshot: data }))
    }
}
