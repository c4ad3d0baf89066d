//! Durable Raft storage in sled: the log, the vote, the committed pointer and snapshots, plus the
//! openraft state-machine adapter around [`crate::state_machine::Cache`].
//!
//! One node owns one data directory holding one `sled::Db` with three trees:
//!
//! | tree       | key                      | value (bincode 1)                                   |
//! |------------|--------------------------|-----------------------------------------------------|
//! | `log`      | log index, big-endian u64 | [`Entry`](crate::types::Entry)                     |
//! | `meta`     | `node_id`, `vote`, `committed`, `last_purged` | the node id (big-endian u64), [`Vote`](crate::types::Vote), [`LogId`](crate::types::LogId)s |
//! | `snapshot` | `meta`, `data`           | the current snapshot's [`SnapshotMeta`](crate::types::SnapshotMeta) and bytes |
//!
//! Big-endian keys make sled's byte order the numeric order, so a range scan is a log range.
//!
//! [`LogStore`] implements openraft's `RaftLogStorage`; [`StateMachineStore`] implements
//! `RaftStateMachine` and hands out [`CacheReader`]s for local reads. The cache itself lives only in
//! memory: on open it is restored from the current snapshot, and openraft re-applies the committed log
//! after it (it reads [`LogStore`]'s committed pointer on startup).
//!
//! Owns: every byte under the data directory. Refuses to own: what a command means (that is
//! `state_machine/`), when to snapshot or purge (openraft decides), networking.
//!
//! Invariants:
//! - A data directory belongs to one node id, recorded on first open; opening it as another node is
//!   refused.
//! - The vote is flushed before `save_vote` returns; the commit point is written by
//!   `save_committed` and made durable by the next flush (a restart from an older commit point is
//!   safe: see `LogStore::save_committed`); appended entries are flushed before their
//!   `IOFlushed` callback fires (group commit: one background flusher task issues one flush for every
//!   append queued so far, then completes their callbacks in append order; never one flush per write).
//! - Entries are readable as soon as `append` returns, and the log never has a hole: an append is one
//!   sled batch, `truncate` removes a suffix, `purge` a prefix, after persisting `last_purged` first.
//! - The state machine applies entries strictly in index order, each exactly once (`index ==
//!   last_applied + 1`); anything else is a storage error, which stops the Raft node rather than let it
//!   diverge.
//! - A snapshot is flushed to sled before `build_snapshot` / `install_snapshot` returns, so openraft
//!   may purge the log it covers; a persisted snapshot is only replaced by one at least as new.
//!
//! Durability caveat: sled 0.34's flush writes its log with `sync_file_range` on Linux, not `fsync`.
//! A flushed write survives a process crash (`kill -9`), but not necessarily power loss or a kernel
//! crash. We also rely on sled recovering a prefix of its (single, all-trees) write log, so e.g. a
//! persisted committed pointer never points past entries that were written before it.

mod log_store;
mod state_machine_store;
#[cfg(test)]
mod tests;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use log_store::{FlushStats, LogReader, LogStore};
pub use state_machine_store::{CacheReader, SnapshotBuilder, StateMachineStore};

use crate::error::{Error, Result};
use crate::types::NodeId;

/// Tree names and keys, in one place because they are the on-disk format.
mod keys {
    pub const LOG_TREE: &str = "log";
    pub const META_TREE: &str = "meta";
    pub const SNAPSHOT_TREE: &str = "snapshot";

    pub const NODE_ID: &[u8] = b"node_id";
    pub const CLUSTER_ID: &[u8] = b"cluster_id";
    pub const VOTE: &[u8] = b"vote";
    pub const COMMITTED: &[u8] = b"committed";
    pub const LAST_PURGED: &[u8] = b"last_purged";

    pub const SNAPSHOT_META: &[u8] = b"meta";
    pub const SNAPSHOT_DATA: &[u8] = b"data";
}

/// Opens (creating if needed) the node's storage in `dir` and returns its log store and state
/// machine, the latter already restored from the persisted snapshot, if any.
///
/// Must be called inside a Tokio runtime: the log store spawns its flusher task on it, and the task
/// ends when the [`LogStore`] is dropped.
///
/// Errors: [`Error::InvalidArgument`] if `dir` was first opened by a node other than `node_id`;
/// [`Error::Storage`] if sled cannot open the directory or a persisted record does not decode;
/// [`Error::Fatal`] if called outside a Tokio runtime.
pub fn open(dir: &Path, node_id: NodeId) -> Result<(LogStore, StateMachineStore)> {
    let (log_store, state_machine, _) = open_with_identity(dir, node_id)?;
    Ok((log_store, state_machine))
}

/// [`open`], plus the node's [`ClusterIdentity`].
pub fn open_with_identity(dir: &Path, node_id: NodeId) -> Result<(LogStore, StateMachineStore, ClusterIdentity)> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| Error::Fatal(format!("store::open must run inside a Tokio runtime: {e}")))?;
    let db_file = dir.join("db");
    let existed = db_file.exists();
    let (db, meta) = open_db(dir, &db_file)?;

    match meta.get(keys::NODE_ID)? {
        Some(stored) => {
            let stored = decode_u64(&stored)
                .ok_or_else(|| Error::Storage(format!("corrupt node id record in {}", dir.display())))?;
            if stored != node_id {
                return Err(Error::InvalidArgument(format!(
                    "data dir {} belongs to node {stored}, not node {node_id}; \
                     use the node id it was created with or another --data-dir",
                    dir.display()
                )));
            }
        }
        // sled recovers a damaged (e.g. truncated) file as the longest intact prefix it finds,
        // which can be nothing at all: a database that existed but lost even its first record
        // has lost data, and must not start as a fresh node.
        None if existed => return Err(damaged(&db_file, "its first record (the node id) is missing")),
        None => {
            meta.insert(keys::NODE_ID, &node_id.to_be_bytes())?;
            db.flush()?;
        }
    }

    let log = db.open_tree(keys::LOG_TREE)?;
    let snapshots = db.open_tree(keys::SNAPSHOT_TREE)?;
    check_commit_point_is_covered(&meta, &log, &snapshots).map_err(|why| damaged(&db_file, &why))?;
    let identity = ClusterIdentity::load(meta.clone())?;
    let log_store = LogStore::new(db.clone(), log, meta, &runtime);
    let state_machine = StateMachineStore::load(db, snapshots)?;
    Ok((log_store, state_machine, identity))
}

/// The error for a database that is damaged: names the file and what to do.
fn damaged(db_file: &Path, why: &str) -> Error {
    Error::Storage(format!(
        "the database file {} is damaged ({why}); refusing to start with lost data. Restore the \
         data dir from a backup, or remove this node from the cluster (`geocache cluster remove`), \
         empty its data dir and add it back so it copies the data from the others",
        db_file.display()
    ))
}

thread_local! {
    /// Set while this thread opens sled: a panic there is turned into an error (see
    /// [`panic_is_caught_here`]).
    static OPENING_DB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic on this thread right now is one [`open`] catches and reports as a damaged
/// store (sled panics on some damaged files). The process's fail-stop panic hook asks this so
/// it neither aborts nor prints a panic for it.
pub fn panic_is_caught_here() -> bool {
    OPENING_DB.with(|opening| opening.get())
}

/// Opens sled and its `meta` tree; a panic inside sled becomes a [`damaged`] error.
fn open_db(dir: &Path, db_file: &Path) -> Result<(sled::Db, sled::Tree)> {
    OPENING_DB.with(|opening| opening.set(true));
    let opened = std::panic::catch_unwind(|| -> Result<(sled::Db, sled::Tree)> {
        let db = sled::open(dir).map_err(|e| match e {
            sled::Error::Corruption { .. } => damaged(db_file, &e.to_string()),
            e if e.to_string().contains("could not acquire lock") => Error::DataDirInUse(dir.display().to_string()),
            // sled's I/O errors (permission denied, not a directory, ...) name no path.
            e => Error::Storage(format!("cannot open the data dir {}: {e}", dir.display())),
        })?;
        let meta = db.open_tree(keys::META_TREE)?;
        Ok((db, meta))
    });
    OPENING_DB.with(|opening| opening.set(false));
    opened.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(damaged(db_file, &format!("sled could not read it: {message}")))
    })
}

/// A commit point past both the log's end and the snapshot means committed entries are gone.
fn check_commit_point_is_covered(meta: &sled::Tree, log: &sled::Tree, snapshots: &sled::Tree) -> Result<(), String> {
    let undecodable = |what: &str| format!("the {what} record does not decode");
    let Some(committed) = meta.get(keys::COMMITTED).map_err(|e| e.to_string())? else { return Ok(()) };
    let committed: crate::types::LogId = decode(&committed).map_err(|_| undecodable("commit point"))?;
    let last_logged = match log.last().map_err(|e| e.to_string())? {
        Some((key, _)) => decode_u64(&key).ok_or_else(|| undecodable("log key"))?,
        None => 0,
    };
    let snapshotted = match snapshots.get(keys::SNAPSHOT_META).map_err(|e| e.to_string())? {
        Some(bytes) => {
            let meta: crate::types::SnapshotMeta = decode(&bytes).map_err(|_| undecodable("snapshot"))?;
            meta.last_log_id.map_or(0, |l| l.index)
        }
        None => 0,
    };
    if committed.index > last_logged.max(snapshotted) {
        return Err(format!(
            "entries up to {} were committed, but the log ends at {last_logged} and the snapshot at {snapshotted}",
            committed.index
        ));
    }
    Ok(())
}

/// Which cluster this node belongs to (0 = none yet), persisted in the `meta` tree.
///
/// Chosen at random by the node that initialises the cluster and adopted by every other node from
/// the first Raft message it accepts; from then on, Raft messages from any other cluster are
/// refused (docs/ARCHITECTURE.md §4.7).
#[derive(Clone)]
pub struct ClusterIdentity {
    meta: sled::Tree,
    current: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ClusterIdentity {
    fn load(meta: sled::Tree) -> Result<ClusterIdentity> {
        let current = match meta.get(keys::CLUSTER_ID)? {
            Some(bytes) => decode_u64(&bytes).ok_or_else(|| Error::Storage("corrupt cluster id record".into()))?,
            None => 0,
        };
        Ok(ClusterIdentity { meta, current: std::sync::Arc::new(current.into()) })
    }

    /// The cluster id, or 0 if this node has not joined a cluster yet.
    pub fn get(&self) -> u64 {
        self.current.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records `id` (non-zero) as this node's cluster, durably, unless it already has one.
    /// Returns the id the node belongs to afterwards.
    pub async fn adopt(&self, id: u64) -> Result<u64> {
        let swapped = self.meta.compare_and_swap(keys::CLUSTER_ID, None::<&[u8]>, Some(&id.to_be_bytes()[..]))?;
        let stored = match swapped {
            Ok(()) => {
                self.meta.flush_async().await?;
                id
            }
            Err(existing) => existing
                .current
                .as_deref()
                .and_then(decode_u64)
                .ok_or_else(|| Error::Storage("corrupt cluster id record".into()))?,
        };
        self.current.store(stored, std::sync::atomic::Ordering::Release);
        Ok(stored)
    }
}

/// Big-endian key of a log index: byte order equals numeric order.
fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(value)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}
