//! Hostile and bad input against a 3-node cluster of real processes: forged Raft messages with
//! terms and indexes no real cluster reaches, `Touch` notes from outside the cluster or with bad
//! keys, a second member at an existing member's address, partial capacity changes, and a learner
//! that never answers. Each test checks the refusal (its status code and why) and that nothing
//! changed: terms, leader, log, disk, membership.
//!
//! Forged Raft messages are built from openraft's own types (re-exported by `geocache_node::types`)
//! and encoded with the node's own `encode`. openraft's request structs are serialized as their
//! fields in order, so a tuple of those fields is the same bincode message. Each forgery has a
//! harmless twin (a stale term) that must be *accepted*, which proves the encoding is right: a
//! refusal of the forgery is then about its term or index, not an undecodable payload.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use geocache_node::network::encode;
use geocache_node::network::inbound::{MAX_LOG_INDEX, MAX_TERM};
use geocache_node::types::{Entry, LogId, Vote};
use geocache_proto as pb;
use geocache_proto::raft_client::RaftClient;
use geocache_tests::{eventually, free_port, TestCluster};
use tonic::transport::Channel;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_geocache-under-test");

/// What one node says about itself: (term, leader, last log index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    term: u64,
    leader: Option<u64>,
    last_log_index: u64,
}

async fn view(cluster: &TestCluster, id: u64) -> Result<View> {
    let status = cluster.local_status(id).await.with_context(|| format!("status of node {id}"))?;
    let me = status.nodes.first().context("status without the node itself")?;
    Ok(View { term: status.term, leader: status.leader_id, last_log_index: me.last_log_index })
}

/// (term, leader) of every running node.
async fn terms_and_leaders(cluster: &TestCluster) -> Result<BTreeMap<u64, (u64, Option<u64>)>> {
    let mut out = BTreeMap::new();
    for id in cluster.nodes.keys().copied().filter(|id| cluster.nodes[id].is_running()) {
        let v = view(cluster, id).await?;
        out.insert(id, (v.term, v.leader));
    }
    Ok(out)
}

async fn cluster_id(cluster: &TestCluster, id: u64) -> Result<u64> {
    let status = cluster.local_status(id).await.context("status")?;
    ensure!(status.cluster_id != 0, "node {id} reports no cluster id");
    Ok(status.cluster_id)
}

/// A plaintext Raft client to node `id`'s peer listener (these clusters run without TLS, on
/// loopback).
async fn raft(cluster: &TestCluster, id: u64) -> Result<RaftClient<Channel>> {
    Ok(RaftClient::connect(format!("http://{}", cluster.peer_addr(id))).await?)
}

pub(crate) fn payload(cluster_id: u64, data: Vec<u8>) -> tonic::Request<pb::RaftPayload> {
    let mut request = tonic::Request::new(pb::RaftPayload { data: data.into(), cluster_id });
    request.set_timeout(Duration::from_secs(5));
    request
}

/// A log id of term `term` proposed by `leader` at `index`.
pub(crate) fn log_id(term: u64, leader: u64, index: u64) -> LogId {
    LogId::new(Vote::new(term, leader).leader_id, index)
}

/// A `VoteRequest { vote, last_log_id, leadership_transfer: false }`, encoded.
pub(crate) fn vote_request(vote: Vote, last_log_id: Option<LogId>) -> Vec<u8> {
    encode(&(vote, last_log_id, false)).expect("encode a vote request")
}

/// An `AppendEntriesRequest { vote, prev_log_id, entries, leader_commit }` of blank entries, encoded.
fn append_request(vote: Vote, prev_log_id: Option<LogId>, entries: &[LogId], leader_commit: Option<LogId>) -> Vec<u8> {
    let entries: Vec<Entry> =
        entries.iter().map(|id| Entry { log_id: *id, payload: openraft::EntryPayload::Blank }).collect();
    encode(&(vote, prev_log_id, entries, leader_commit)).expect("encode an append-entries request")
}

/// Asserts `result` is a refusal with `code` whose message contains `needle`.
fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    needle: &str,
) -> Result<()> {
    match result {
        Ok(reply) => bail!("{what}: accepted ({reply:?}); expected {code:?}"),
        Err(status) => {
            ensure!(status.code() == code, "{what}: {:?} {:?}; expected {code:?}", status.code(), status.message());
            ensure!(
                status.message().contains(needle),
                "{what}: refused with {:?}, which does not mention {needle:?}",
                status.message()
            );
            Ok(())
        }
    }
}

/// Total size of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A write through the whole cluster, then every node has applied it (the log still flows).
async fn write_reaches_every_node(cluster: &TestCluster, key: &str) -> Result<u64> {
    let client = cluster.client().await?;
    let written =
        eventually(&format!("a write of {key}"), Duration::from_secs(10), || async { client.set(key, "v").await.ok() })
            .await?;
    for id in cluster.nodes.keys().copied().filter(|id| cluster.nodes[id].is_running()) {
        cluster.wait_applied(id, written.version, Duration::from_secs(10)).await?;
    }
    Ok(written.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_with_an_impossible_term_is_refused_and_changes_no_term() -> Result<()> {
    let mut cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let candidate = (1..=3).find(|id| *id != leader && *id != follower).unwrap();
    write_reaches_every_node(&cluster, "before").await?;
    let cid = cluster_id(&cluster, leader).await?;
    let before = terms_and_leaders(&cluster).await?;
    let now = view(&cluster, leader).await?;
    // A log at least as long as anyone's: only the term is wrong.
    let long_log = Some(log_id(now.term, leader, now.last_log_index + 1_000));

    // The twin with a stale term (0: below any elected leader's) is answered (by openraft: not
    // granted), so the encoding is right.
    for target in [follower, leader] {
        raft(&cluster, target)
            .await?
            .vote(payload(cid, vote_request(Vote::new(0, candidate), long_log)))
            .await
            .map_err(|s| anyhow::anyhow!("a stale vote request to node {target} was not answered: {s:?}"))?;
    }

    for (target, term) in [(follower, u64::MAX), (leader, u64::MAX), (leader, 1 << 63), (follower, MAX_TERM + 1)] {
        let reply =
            raft(&cluster, target).await?.vote(payload(cid, vote_request(Vote::new(term, candidate), long_log))).await;
        assert_refused(&format!("vote with term {term} to node {target}"), reply, Code::InvalidArgument, "term")?;
    }

    let after = terms_and_leaders(&cluster).await?;
    assert_eq!(after, before, "a refused vote changed a term or the leader");
    write_reaches_every_node(&cluster, "after-forged-votes").await?;

    // Nothing was persisted: the targeted follower restarts from its disk and rejoins.
    cluster.kill(follower)?;
    cluster.restart(follower)?;
    let leader_after = cluster.wait_for_leader(Duration::from_secs(15)).await?;
    write_reaches_every_node(&cluster, "after-restart").await?;
    let terms = terms_and_leaders(&cluster).await?;
    for (id, (term, l)) in &terms {
        assert!(*term < MAX_TERM, "node {id} has term {term} after the restart");
        assert_eq!(*l, Some(leader_after), "node {id} follows another leader");
    }
    assert_eq!(terms[&follower].0, terms[&leader_after].0, "the restarted follower is in another term");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_entries_with_impossible_indexes_or_terms_is_refused_and_changes_nothing() -> Result<()> {
    let cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    write_reaches_every_node(&cluster, "before").await?;
    let cid = cluster_id(&cluster, leader).await?;
    let before = terms_and_leaders(&cluster).await?;
    let now = view(&cluster, follower).await?;
    let (term, last) = (now.term, now.last_log_index);
    // The current leader's own vote: a message with it is otherwise indistinguishable from the
    // leader's, so only the impossible field can be what is refused.
    let vote = Vote::new_committed(term, leader);
    let tip = Some(log_id(term, leader, last));

    // The twin with a stale vote (term 0) is answered (openraft: a higher vote exists), so the
    // encoding is right.
    for target in [follower, leader] {
        raft(&cluster, target)
            .await?
            // (Never naming the receiver as the sender: that alone is refused.)
            .append_entries(payload(
                cid,
                append_request(
                    Vote::new_committed(0, if target == leader { follower } else { leader }),
                    tip,
                    &[],
                    None,
                ),
            ))
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "a stale append-entries to node {target} was not answered: {s:?}\n{}",
                    cluster.log(target)
                )
            })?;
    }

    let forgeries: Vec<(&str, Vec<u8>, &str)> = vec![
        ("prev_log_id index u64::MAX", append_request(vote, Some(log_id(term, leader, u64::MAX)), &[], None), "index"),
        (
            "prev_log_id index just above the ceiling",
            append_request(vote, Some(log_id(term, leader, MAX_LOG_INDEX + 1)), &[], None),
            "index",
        ),
        ("leader_commit index u64::MAX", append_request(vote, tip, &[], Some(log_id(term, leader, u64::MAX))), "index"),
        ("entry term 2^40 + 1", append_request(vote, tip, &[log_id(MAX_TERM + 1, leader, last + 1)], None), "term"),
        ("entry term u64::MAX", append_request(vote, tip, &[log_id(u64::MAX, leader, last + 1)], None), "term"),
        (
            "entry index u64::MAX",
            append_request(vote, Some(log_id(term, leader, u64::MAX - 1)), &[log_id(term, leader, u64::MAX)], None),
            "index",
        ),
        ("vote term u64::MAX", append_request(Vote::new_committed(u64::MAX, leader), tip, &[], None), "term"),
    ];
    for target in [follower, leader] {
        for (what, data, needle) in &forgeries {
            let reply = raft(&cluster, target).await?.append_entries(payload(cid, data.clone())).await;
            assert_refused(
                &format!("append-entries with {what} to node {target}"),
                reply,
                Code::InvalidArgument,
                needle,
            )?;
        }
    }

    let after = terms_and_leaders(&cluster).await?;
    assert_eq!(after, before, "a refused append-entries changed a term or the leader");
    let version = write_reaches_every_node(&cluster, "after-forged-appends").await?;
    let leader_last = view(&cluster, leader).await?.last_log_index;
    for id in 1..=3 {
        let v = view(&cluster, id).await?;
        assert!(
            v.last_log_index <= leader_last + 1 && v.last_log_index < MAX_LOG_INDEX,
            "node {id}'s log ends at {} (leader's at {leader_last})",
            v.last_log_index
        );
        let entry = cluster.client_of(id).await?.get("after-forged-appends").await?.context("write missing")?;
        assert_eq!(entry.version, version, "node {id} serves another version");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_from_outside_the_cluster_or_with_bad_keys_is_refused_and_writes_nothing() -> Result<()> {
    const MAX_KEY: usize = 64;
    let cluster = TestCluster::start_with(BIN, 3, &["--max-key-bytes", "64"]).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    write_reaches_every_node(&cluster, "before").await?;
    let cid = cluster_id(&cluster, leader).await?;
    let wrong = cid ^ 0x00ff_00ff_00ff_00ff;
    let mut raft = raft(&cluster, leader).await?;
    let touch = |keys: Vec<String>, cluster_id: u64| {
        let mut request = tonic::Request::new(pb::TouchRequest { keys, cluster_id });
        request.set_timeout(Duration::from_secs(5));
        request
    };
    let big = "k".repeat(1 << 20);
    const BIG_CALLS: usize = 8;

    let disk_before: Vec<u64> = cluster.nodes.values().map(|n| dir_bytes(&n.data_dir)).collect();
    let log_before = view(&cluster, leader).await?.last_log_index;
    let started = Instant::now();
    let mut sent = 0;
    for _ in 0..BIG_CALLS {
        let reply = raft.touch(touch(vec![big.clone()], 0)).await;
        assert_refused("touch without a cluster id", reply, Code::FailedPrecondition, "cluster")?;
        let reply = raft.touch(touch(vec![big.clone()], wrong)).await;
        assert_refused("touch with another cluster's id", reply, Code::FailedPrecondition, "cluster")?;
        let reply = raft.touch(touch(vec![big.clone()], cid)).await;
        assert_refused("touch with a 1 MiB key", reply, Code::InvalidArgument, "key")?;
        sent += 3;
    }
    for _ in 0..10 {
        let reply = raft.touch(touch(vec!["a".repeat(MAX_KEY + 1)], cid)).await;
        assert_refused("touch with a key one byte over the limit", reply, Code::InvalidArgument, "key")?;
        let reply = raft.touch(touch(vec![String::new()], cid)).await;
        assert_refused("touch with an empty key", reply, Code::InvalidArgument, "key")?;
        // One bad key spoils the note: the good one is not proposed either.
        let reply = raft.touch(touch(vec!["fine".into(), String::new()], cid)).await;
        assert_refused("touch with a good and an empty key", reply, Code::InvalidArgument, "key")?;
        sent += 3;
    }
    let too_many: Vec<String> = (0..10_001).map(|i| format!("k{i}")).collect();
    let reply = raft.touch(touch(too_many, cid)).await;
    assert_refused("touch with 10,001 keys", reply, Code::InvalidArgument, "keys")?;
    sent += 1;
    let elapsed = started.elapsed();
    let log_after = view(&cluster, leader).await?.last_log_index;

    // The leader proposes one Tick a second; nothing else may have been appended meanwhile.
    let ticks = elapsed.as_secs() + 2;
    assert!(
        log_after - log_before <= ticks,
        "the leader's log grew by {} entries in {elapsed:?} ({sent} refused touches, at most {ticks} ticks)",
        log_after - log_before
    );
    // 24 MiB of refused keys went nowhere near any node's disk.
    for ((id, node), before) in cluster.nodes.iter().zip(disk_before) {
        let after = dir_bytes(&node.data_dir);
        assert!(
            after < before + 4 * 1024 * 1024,
            "node {id}'s data dir grew from {before} to {after} bytes after {} MiB of refused keys",
            3 * BIG_CALLS
        );
    }

    // The same measure sees accepted touches: 20 good notes add at least 20 entries at once.
    let control_before = view(&cluster, leader).await?.last_log_index;
    for i in 0..20 {
        // Keys of exactly the limit are fine.
        let key = format!("{i:02}{}", "x".repeat(MAX_KEY - 2));
        raft.touch(touch(vec![key], cid)).await.context("a valid touch was refused")?;
    }
    let control_after = view(&cluster, leader).await?.last_log_index;
    assert!(
        control_after >= control_before + 20,
        "20 accepted touches grew the log by {}",
        control_after - control_before
    );
    write_reaches_every_node(&cluster, "after-touches").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_member_at_an_existing_members_address_is_refused() -> Result<()> {
    let cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let node2 = cluster.addr(2);

    // Asked of the leader, and of a follower (which forwards it to the leader).
    for asked in [leader, follower] {
        let reply = cluster
            .admin(asked)
            .await?
            .add_learner(pb::AddLearnerRequest {
                member: Some(pb::Member {
                    id: 4,
                    addr: node2.clone(),
                    region: "eu-west".into(),
                    peer_addr: format!("127.0.0.1:{}", free_port()),
                }),
                wait_caught_up: false,
            })
            .await;
        assert_refused(
            &format!("add 4 at node 2's address via node {asked}"),
            reply,
            Code::FailedPrecondition,
            &node2,
        )?;
    }
    // An existing id at a new address is refused too.
    let reply = cluster
        .admin(leader)
        .await?
        .add_learner(pb::AddLearnerRequest {
            member: Some(pb::Member {
                id: 2,
                addr: format!("127.0.0.1:{}", free_port()),
                region: "eu-west".into(),
                peer_addr: format!("127.0.0.1:{}", free_port()),
            }),
            wait_caught_up: false,
        })
        .await;
    assert_refused("re-add voter 2 elsewhere", reply, Code::FailedPrecondition, "already")?;

    // A later write has reached everyone, so any membership entry before it would be applied.
    write_reaches_every_node(&cluster, "after-add").await?;
    for asked in 1..=3 {
        let status = cluster
            .admin(asked)
            .await?
            .status(pb::StatusRequest { local_only: false, with_state_hash: false })
            .await?
            .into_inner();
        let ids: Vec<u64> = status.nodes.iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![1, 2, 3], "node {asked} sees members {ids:?}");
        assert!(status.nodes.iter().all(|n| n.voter), "node {asked} sees a non-voter: {:?}", status.nodes);
        let at_node2 = status.nodes.iter().filter(|n| n.addr == node2).count();
        assert_eq!(at_node2, 1, "node {asked} counts node 2's address {at_node2} times");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuring_one_limit_keeps_the_other() -> Result<()> {
    let cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let configure = |asked: u64, max_entries: Option<u64>, max_bytes: Option<u64>| {
        let cluster = &cluster;
        async move {
            let reply = cluster.admin(asked).await?.configure(pb::ConfigureRequest { max_entries, max_bytes }).await?;
            anyhow::Ok(reply.into_inner().log_index)
        }
    };
    let expect = |index: u64, max_entries: u64, max_bytes: u64| {
        let cluster = &cluster;
        async move {
            for id in 1..=3 {
                cluster.wait_applied(id, index, Duration::from_secs(10)).await?;
                let status = cluster.local_status(id).await.context("status")?;
                ensure!(
                    (status.max_entries, status.max_bytes) == (max_entries, max_bytes),
                    "node {id} has max_entries={} max_bytes={}; expected {max_entries} and {max_bytes}",
                    status.max_entries,
                    status.max_bytes
                );
            }
            anyhow::Ok(())
        }
    };

    let i = configure(leader, None, Some(1_000_000)).await?;
    expect(i, 0, 1_000_000).await?;
    let i = configure(leader, Some(500), None).await?;
    expect(i, 500, 1_000_000).await?;
    // Through a follower (forwarded), the other way round.
    let i = configure(follower, None, Some(2_000_000)).await?;
    expect(i, 500, 2_000_000).await?;
    // 0 still means unlimited, for the one limit given.
    let i = configure(follower, Some(0), None).await?;
    expect(i, 0, 2_000_000).await?;

    let reply =
        cluster.admin(leader).await?.configure(pb::ConfigureRequest { max_entries: None, max_bytes: None }).await;
    assert_refused("configure with no limit", reply, Code::InvalidArgument, "max_")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_an_unreachable_learner_answers_promptly_and_says_what_is_left_behind() -> Result<()> {
    let cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    // A loopback port nobody listens on, as its peer address (the one the leader dials).
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut request = tonic::Request::new(pb::AddLearnerRequest {
        member: Some(pb::Member {
            id: 4,
            addr: format!("127.0.0.1:{}", free_port()),
            region: "us-east".into(),
            peer_addr: nowhere.clone(),
        }),
        wait_caught_up: true,
    });
    request.set_timeout(Duration::from_secs(30));
    let mut admin = cluster.admin(leader).await?;
    let started = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(35), admin.add_learner(request))
        .await
        .context("add_learner outlived the caller's deadline")?;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "an unreachable learner was reported only after {took:?}");
    let status = match reply {
        Ok(r) => bail!("adding an unreachable learner succeeded: {:?}", r.into_inner()),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let message = status.message();
    for needle in ["learner", "node 4", &nowhere, "cluster remove"] {
        assert!(message.contains(needle), "the error {message:?} does not mention {needle:?}");
    }

    // It is what the message says: 4 is a learner, not a voter; removing it as told works.
    let members = cluster
        .admin(leader)
        .await?
        .status(pb::StatusRequest { local_only: false, with_state_hash: false })
        .await?
        .into_inner();
    let four = members.nodes.iter().find(|n| n.id == 4).context("node 4 is not in the membership")?;
    assert!(!four.voter, "the unreachable node became a voter: {four:?}");
    assert!(members.nodes.iter().filter(|n| n.voter).count() == 3);
    cluster.admin(leader).await?.remove(pb::RemoveRequest { id: 4 }).await.context("cluster remove --id 4")?;
    let members = cluster
        .admin(leader)
        .await?
        .status(pb::StatusRequest { local_only: false, with_state_hash: false })
        .await?
        .into_inner();
    assert!(members.nodes.iter().all(|n| n.id != 4), "node 4 is still a member: {:?}", members.nodes);
    write_reaches_every_node(&cluster, "after-unreachable-learner").await?;
    Ok(())
}

/// An AppendEntries carrying the receiving leader's own vote (right cluster id, its real term, nothing out of range) passes admission, and
/// openraft 0.9 then handles the leader as a follower: a `debug_assert!(self.leader.is_none())`
/// in `Engine::following_handler` fires (the node dies in a debug build); a release build goes
/// on to run the follower's log-consistency and append path on the leader's own log. No node
/// ever sends AppendEntries to itself, so a message naming the receiver as its leader can be
/// refused before openraft sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_entries_naming_the_receiver_as_its_leader_is_refused() -> Result<()> {
    let cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    write_reaches_every_node(&cluster, "before").await?;
    let cid = cluster_id(&cluster, leader).await?;
    let before = terms_and_leaders(&cluster).await?;
    let now = view(&cluster, leader).await?;
    let own_vote = Vote::new_committed(now.term, leader);
    let request = append_request(own_vote, Some(log_id(now.term, leader, now.last_log_index)), &[], None);
    let reply = raft(&cluster, leader).await?.append_entries(payload(cid, request)).await;
    match reply {
        Ok(_) => bail!("the leader accepted an AppendEntries with its own vote"),
        Err(status) => ensure!(
            matches!(status.code(), Code::InvalidArgument | Code::FailedPrecondition),
            "refused with {status:?} (the node may have died):\n{}",
            cluster.log(leader)
        ),
    }
    assert_eq!(terms_and_leaders(&cluster).await?, before, "the leader changed");
    write_reaches_every_node(&cluster, "after").await?;
    Ok(())
}

/// A node in no cluster adopts (durably) the cluster id of the first Raft message it accepts.
/// Before the fix it did so before the message was decoded or checked, so a refused message (an empty touch key, an
/// undecodable payload, a vote with an impossible term) from anyone binds a fresh node to a
/// made-up cluster for good: the real cluster's messages are then refused, and it cannot join.
/// Now only a decoded and checked vote or replication can do that, and a touch never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_raft_message_does_not_bind_a_fresh_node_to_its_cluster_id() -> Result<()> {
    let mut cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    cluster.spawn(4, &[])?;
    cluster.admin(4).await?;
    let made_up = 0x0bad_c0de_0bad_c0de;

    let mut fresh = raft(&cluster, 4).await?;
    let reply = fresh.touch(pb::TouchRequest { keys: vec![String::new()], cluster_id: made_up }).await;
    assert_refused("touch with an empty key to a fresh node", reply, Code::FailedPrecondition, "no cluster")?;
    let reply = fresh.vote(payload(made_up, vec![0xff; 3])).await;
    assert_refused("an undecodable vote to a fresh node", reply, Code::InvalidArgument, "undecodable")?;
    let status = cluster.local_status(4).await.context("status of node 4")?;
    assert_eq!(status.cluster_id, 0, "refused messages bound node 4 to cluster {:016x}", status.cluster_id);

    // And it can still join the real cluster.
    let mut request =
        tonic::Request::new(pb::AddLearnerRequest { member: Some(cluster.nodes[&4].member()), wait_caught_up: true });
    request.set_timeout(Duration::from_secs(10));
    cluster.admin(leader).await?.add_learner(request).await.context("add node 4")?;
    Ok(())
}
