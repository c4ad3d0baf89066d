//! Store tests: openraft's conformance suite on the sled store, a full restart from disk, group
//! commit, and the data-dir ownership check.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{EntryPayload, RaftLogReader, RaftSnapshotBuilder, StorageHelper};
use tempfile::TempDir;
use tokio::sync::oneshot;

use super::*;
use crate::state_machine::{Command, Condition, Op};
use crate::types::{Entry, LogId, Membership, NodeInfo, StoredMembership, TypeConfig, Vote};

type StorageError = openraft::StorageError<TypeConfig>;

/// Builds a fresh store in its own temp dir for each conformance test; the dir is the guard.
struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new().map_err(|e| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Write,
                io::Error::other(e.to_string()),
            )
        })?;
        let (log, mut sm) = open(dir.path(), 0).map_err(|e| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Write,
                io::Error::other(e.to_string()),
            )
        })?;
        // The suite applies synthetic entries with gaps (e.g. index 3 first); real Raft never does.
        sm.allow_apply_gaps();
        Ok((dir, log, sm))
    }
}

#[tokio::test]
async fn openraft_conformance_suite() -> Result<(), StorageError> {
    Suite::test_all(SledStoreBuilder).await
}

/// Applies `entries` the way openraft hands them over: a stream, here with no one waiting for
/// the answers.
async fn apply(sm: &mut StateMachineStore, entries: impl IntoIterator<Item = Entry>) -> io::Result<()> {
    let items: Vec<io::Result<openraft::storage::EntryResponder<TypeConfig>>> =
        entries.into_iter().map(|entry| Ok((entry, None))).collect();
    RaftStateMachine::apply(sm, futures::stream::iter(items)).await
}

/// Opens `dir` again after the stores that had it open were dropped. Their group-commit flusher
/// runs on the runtime and lets go of the database (and so of sled's lock on the directory) a
/// moment after the drop, so a lock refusal is retried briefly, yielding to the runtime.
async fn reopen(dir: &std::path::Path, node_id: u64) -> Result<(LogStore, StateMachineStore)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open(dir, node_id) {
            Err(Error::DataDirInUse(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            other => return other,
        }
    }
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

fn membership(ids: &[u64]) -> Membership {
    let voters: BTreeSet<u64> = ids.iter().copied().collect();
    let nodes: BTreeMap<u64, NodeInfo> = ids
        .iter()
        .map(|&id| {
            (
                id,
                NodeInfo {
                    addr: format!("127.0.0.1:{}", 7000 + id),
                    region: "local".into(),
                    peer_addr: format!("127.0.0.1:{}", 7100 + id),
                },
            )
        })
        .collect();
    Membership::new(vec![voters], nodes).expect("a valid membership")
}

fn set_entry(term: u64, index: u64, key: &str, value: &str) -> Entry {
    let command = Command {
        now_ms: 1_000 + index,
        write_id: None,
        op: Op::Set {
            key: key.to_string(),
            value: Bytes::from(value.to_string()),
            expires_at_ms: None,
            condition: Condition::Always,
        },
    };
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(command) }
}

/// Index 0: the initial membership; indexes 1..=n: `set k{i} = v{i}`.
fn sample_log(n: u64) -> Vec<Entry> {
    let mut entries = vec![Entry { log_id: log_id(1, 0), payload: EntryPayload::Membership(membership(&[1, 2, 3])) }];
    entries.extend((1..=n).map(|i| set_entry(2, i, &format!("k{i}"), &format!("v{i}"))));
    entries
}

/// Appends through the real group-commit path and waits for the flush callback.
async fn append_durably(log: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = oneshot::channel();
    log.append_with(entries, Box::new(move |result| drop(tx.send(result)))).unwrap();
    rx.await.unwrap().unwrap();
}

fn value_of(reader: &CacheReader, key: &str) -> Option<Bytes> {
    reader.read(|cache, _| cache.get(key, 0).map(|e| e.value))
}

#[tokio::test]
async fn restart_recovers_vote_log_committed_snapshot_and_cache() {
    let dir = TempDir::new().unwrap();
    let entries = sample_log(10);

    let (snapshot_meta, snapshot_bytes, hash_at_snapshot, final_hash) = {
        let (mut log, mut sm) = open(dir.path(), 1).unwrap();
        let vote = Vote::new_committed(2, 1);
        log.save_vote(&vote).await.unwrap();
        append_durably(&mut log, entries.clone()).await;
        log.save_committed(Some(log_id(2, 10))).await.unwrap();

        apply(&mut sm, entries[..=7].to_vec()).await.unwrap();
        let hash_at_snapshot = sm.reader().read(|cache, _| cache.state_hash());
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(2, 7)));
        log.purge(log_id(2, 5)).await.unwrap();

        // Applied in memory only: after the restart they must come back from the log.
        apply(&mut sm, entries[8..].to_vec()).await.unwrap();
        let final_hash = sm.reader().read(|cache, _| cache.state_hash());
        (snapshot.meta, snapshot.snapshot, hash_at_snapshot, final_hash)
    };
    // Everything dropped: the directory's lock is released and the next open reads from disk.

    let (mut log, mut sm) = reopen(dir.path(), 1).await.unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new_committed(2, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 10)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 5)));
    assert_eq!(state.last_log_id, Some(log_id(2, 10)));
    assert_eq!(log.try_get_log_entries(0..).await.unwrap(), entries[6..].to_vec());
    assert_eq!(log.get_log_reader().await.try_get_log_entries(6..8).await.unwrap(), entries[6..8].to_vec());

    let current = sm.get_current_snapshot().await.unwrap().expect("snapshot persisted");
    assert_eq!(current.meta, snapshot_meta);
    assert_eq!(current.snapshot, snapshot_bytes);

    // The state machine restarts at the snapshot ...
    let (applied, last_membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(2, 7)));
    assert_eq!(last_membership, StoredMembership::new(Some(log_id(1, 0)), membership(&[1, 2, 3])));
    let reader = sm.reader();
    assert_eq!(reader.read(|cache, applied| (cache.state_hash(), applied)), (hash_at_snapshot, Some(log_id(2, 7))));
    assert_eq!(value_of(&reader, "k7"), Some(Bytes::from("v7")));
    assert_eq!(value_of(&reader, "k8"), None);

    // ... and openraft's startup re-applies the committed log after it.
    StorageHelper::new(&mut log, &mut sm).get_initial_state().await.unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(2, 10)));
    assert_eq!(reader.read(|cache, applied| (cache.state_hash(), applied)), (final_hash, Some(log_id(2, 10))));
    assert_eq!(value_of(&reader, "k10"), Some(Bytes::from("v10")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_covers_many_appends_per_flush_in_order() {
    const APPENDS: u64 = 200;
    let dir = TempDir::new().unwrap();
    let (mut log, _sm) = open(dir.path(), 1).unwrap();

    let completed = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    let started = std::time::Instant::now();
    for index in 0..APPENDS {
        let (tx, rx) = oneshot::channel::<io::Result<()>>();
        let completed = completed.clone();
        let entry = Entry { log_id: log_id(1, index), payload: EntryPayload::Blank };
        log.append_with(
            [entry],
            Box::new(move |result| {
                completed.lock().unwrap().push(index);
                drop(tx.send(result));
            }),
        )
        .unwrap();
        // Readable as soon as append returns, flushed or not.
        assert_eq!(log.try_get_log_entries(index..=index).await.unwrap().len(), 1);
        waiters.push(rx);
        if index % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for rx in waiters {
        rx.await.unwrap().unwrap();
    }

    assert_eq!(*completed.lock().unwrap(), (0..APPENDS).collect::<Vec<_>>(), "completed in order");
    let stats = log.flush_stats();
    println!("{APPENDS} appends, {} flushes, {:?}", stats.flushes, started.elapsed());
    assert_eq!(stats.appends, APPENDS);
    assert!(stats.flushes >= 1 && stats.flushes < APPENDS, "no batching: {stats:?}");
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(1, APPENDS - 1)));
}

#[tokio::test]
async fn appends_queued_before_the_flusher_runs_share_one_flush() {
    // On a current-thread runtime the flusher cannot run until this task yields, so all appends
    // are queued when it wakes: exactly one flush.
    let dir = TempDir::new().unwrap();
    let (mut log, _sm) = open(dir.path(), 1).unwrap();
    let mut waiters = Vec::new();
    for index in 0..50 {
        let (tx, rx) = oneshot::channel::<io::Result<()>>();
        let entry = Entry { log_id: log_id(1, index), payload: EntryPayload::Blank };
        log.append_with([entry], Box::new(move |result| drop(tx.send(result)))).unwrap();
        waiters.push(rx);
    }
    for rx in waiters {
        rx.await.unwrap().unwrap();
    }
    assert_eq!(log.flush_stats(), FlushStats { appends: 50, flushes: 1 });
}

#[tokio::test]
async fn a_data_dir_belongs_to_one_node() {
    let dir = TempDir::new().unwrap();
    drop(open(dir.path(), 1).unwrap());
    let err = reopen(dir.path(), 2).await.err().expect("opening as another node must fail");
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(msg.contains("node 1") && msg.contains("node 2"), "{msg}");
    // The owner can still open it.
    drop(reopen(dir.path(), 1).await.unwrap());
}

#[tokio::test]
async fn a_data_dir_that_cannot_be_opened_is_named_in_the_error() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let inside_a_file = file.join("data");
    let err = open(&inside_a_file, 1).err().expect("a data dir inside a file cannot be opened");
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
    assert!(err.to_string().contains(&inside_a_file.display().to_string()), "{err}");
}

#[tokio::test]
async fn apply_refuses_out_of_order_entries() {
    let dir = TempDir::new().unwrap();
    let (_log, mut sm) = open(dir.path(), 1).unwrap();
    let entries = sample_log(3);
    // Nothing applied yet: the first entry must be index 0.
    assert!(apply(&mut sm, entries[1..2].to_vec()).await.is_err());
    apply(&mut sm, entries[..2].to_vec()).await.unwrap();
    // A repeat and a gap are both refused; the state is unchanged.
    assert!(apply(&mut sm, entries[1..2].to_vec()).await.is_err());
    assert!(apply(&mut sm, entries[3..].to_vec()).await.is_err());
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(2, 1)));
}

#[tokio::test]
async fn install_snapshot_replaces_state_and_persists() {
    let leader_dir = TempDir::new().unwrap();
    let follower_dir = TempDir::new().unwrap();
    let entries = sample_log(4);

    let (_leader_log, mut leader) = open(leader_dir.path(), 1).unwrap();
    apply(&mut leader, entries.clone()).await.unwrap();
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let leader_hash = leader.reader().read(|cache, _| cache.state_hash());

    {
        let (_log, mut follower) = open(follower_dir.path(), 2).unwrap();
        apply(&mut follower, entries[..2].to_vec()).await.unwrap();
        follower.install_snapshot(&snapshot.meta, snapshot.snapshot.clone()).await.unwrap();
        assert_eq!(follower.applied_state().await.unwrap().0, Some(log_id(2, 4)));
        assert_eq!(follower.reader().read(|cache, _| cache.state_hash()), leader_hash);
        // The next entry after the snapshot applies normally.
        apply(&mut follower, [set_entry(2, 5, "k5", "v5")]).await.unwrap();
    }

    let (_log, mut follower) = reopen(follower_dir.path(), 2).await.unwrap();
    assert_eq!(follower.get_current_snapshot().await.unwrap().unwrap().meta, snapshot.meta);
    assert_eq!(follower.reader().read(|cache, _| cache.state_hash()), leader_hash);

    // Snapshot bytes that do not match their metadata are refused.
    let mut wrong_meta = snapshot.meta.clone();
    wrong_meta.last_log_id = Some(log_id(2, 3));
    assert!(follower.install_snapshot(&wrong_meta, snapshot.snapshot.clone()).await.is_err());
}

/// Writes a store with a committed log, closes it, then cuts its `db` file to `keep(len)` bytes.
async fn damaged_store(keep: impl Fn(u64) -> u64) -> TempDir {
    let dir = TempDir::new().unwrap();
    {
        let (mut log, _sm) = open(dir.path(), 1).unwrap();
        append_durably(&mut log, sample_log(300)).await;
        log.save_committed(Some(log_id(2, 300))).await.unwrap();
    }
    // Wait until the closed store has let go of the directory, then damage the file.
    drop(reopen(dir.path(), 1).await.unwrap());
    let _ = reopen(dir.path(), 1).await.map(drop);
    let db = dir.path().join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(keep(len)).unwrap();
    dir
}

#[tokio::test]
async fn a_truncated_database_is_refused_naming_the_file_or_opens_with_nothing_lost() {
    let mut refusals = 0;
    for keep in [0, 100, 4096, 64 * 1024, 256 * 1024] {
        let dir = damaged_store(|len| keep.min(len)).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let opened = loop {
            match open(dir.path(), 1) {
                Err(Error::DataDirInUse(_)) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                other => break other,
            }
        };
        match opened {
            // sled found every record it needs (the cut fell in unused space): nothing lost.
            Ok((mut log, _sm)) => {
                assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(2, 300)), "kept {keep} bytes");
                assert_eq!(log.try_get_log_entries(0..301).await.unwrap(), sample_log(300), "kept {keep} bytes");
            }
            Err(Error::Storage(message)) => {
                refusals += 1;
                assert!(message.contains(&dir.path().join("db").display().to_string()), "{message}");
                assert!(message.contains("damaged"), "{message}");
                // Refusing changed nothing: it is refused again.
                assert!(matches!(reopen(dir.path(), 1).await.map(drop), Err(Error::Storage(_))), "kept {keep} bytes");
            }
            Err(other) => panic!("kept {keep} bytes: a damaged store must be refused as a storage error: {other:?}"),
        }
    }
    assert!(refusals >= 2, "cutting the file to 0 or 100 bytes loses data and must be refused");
}
