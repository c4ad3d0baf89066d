//! A 3-node cluster of real `geocache` processes on loopback: replication, forwarding, failover,
//! restart from disk, whole-cluster crash, exactly-once writes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use geocache_client::{Condition, ReadOptions, SetOptions};
use geocache_proto as pb;
use geocache_proto::cache_client::CacheClient;
use geocache_tests::{eventually, TestCluster};

const BIN: &str = env!("CARGO_BIN_EXE_geocache-under-test");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_on_leader_is_read_with_the_same_version_on_every_node() -> Result<()> {
    let cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let written = cluster.client_of(leader).await?.set("city", "lisbon").await?;
    assert!(written.applied);

    for id in 1..=3 {
        // A linearizable read sent to each node is served by that node itself (read index).
        let entry = cluster.client_of(id).await?.get("city").await?.context("missing on a node")?;
        assert_eq!(entry.value, "lisbon");
        assert_eq!(entry.version, written.version, "node {id} serves another version");
        assert_eq!(entry.meta.node_id, id, "the read was not served by node {id}");
        assert_eq!(entry.meta.region, cluster.nodes[&id].region);
        assert!(entry.meta.applied_index >= written.version);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_to_a_follower_is_forwarded_to_the_leader() -> Result<()> {
    let cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap();

    // The raw API, so nothing but the follower itself can route the write.
    let mut raw = CacheClient::connect(format!("http://{}", cluster.addr(follower))).await?;
    let reply = raw
        .set(pb::SetRequest { key: "via-follower".into(), value: "yes".into(), ..Default::default() })
        .await?
        .into_inner();
    assert!(reply.applied);

    let entry = cluster.client_of(leader).await?.get("via-follower").await?.context("write lost")?;
    assert_eq!(entry.value, "yes");
    assert_eq!(entry.version, reply.version);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_the_restarted_node_catches_up() -> Result<()> {
    let mut cluster = TestCluster::start(BIN, 3).await?;
    let client = cluster.client().await?;
    client.set("k", "before").await?;
    let old_leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;

    cluster.kill(old_leader)?;
    let killed_at = Instant::now();
    // Writes succeed again within 5 s of the kill (the client retries through the election).
    let written = eventually("a write after the leader died", Duration::from_secs(5), || async {
        client.set("k", "after").await.ok()
    })
    .await?;
    let recovered_in = killed_at.elapsed();
    assert!(recovered_in < Duration::from_secs(5), "writes resumed only after {recovered_in:?}");
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    assert_ne!(new_leader, old_leader);

    cluster.restart(old_leader)?;
    cluster.wait_applied(old_leader, written.version, Duration::from_secs(20)).await?;
    let entry = cluster.client_of(old_leader).await?.get_with("k", ReadOptions::stale()).await?.context("missing")?;
    assert_eq!(entry.value, "after", "restarted node serves an old value");
    assert_eq!(entry.meta.node_id, old_leader);
    assert_eq!(entry.version, written.version);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill_9_of_the_whole_cluster() -> Result<()> {
    let mut cluster = TestCluster::start(BIN, 3).await?;
    let client = cluster.client().await?;

    // A stream of writes; each acknowledged one is remembered.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..100_000u64 {
                match client.set(format!("key-{i}"), format!("value-{i}")).await {
                    Ok(w) => acknowledged.push((i, w.version)),
                    Err(_) => break,
                }
            }
            acknowledged
        })
    };
    // Let some writes land, then kill every node mid-stream.
    eventually("some acknowledged writes", Duration::from_secs(20), || async {
        let status = cluster.local_status(1).await?;
        (status.nodes.first()?.applied > 50).then_some(())
    })
    .await?;
    for id in 1..=3 {
        cluster.kill(id)?;
    }
    let acknowledged = writer.await?;
    assert!(acknowledged.len() > 10, "too few writes acknowledged: {}", acknowledged.len());

    for id in 1..=3 {
        cluster.restart(id)?;
    }
    cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let client = cluster.client().await?;
    // Newest first, at once: the last writes before the crash are the ones a restarted node could
    // forget, and a later commit would hide that (a leader restarted in its own term must not
    // answer a linearizable read from a commit index older than what it acknowledged).
    for (i, version) in acknowledged.iter().rev() {
        let entry = client.get(format!("key-{i}")).await?.with_context(|| format!("acknowledged key-{i} lost"))?;
        assert_eq!(entry.value, format!("value-{i}"));
        assert_eq!(entry.version, *version);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_write_is_answered_with_its_first_result_and_applied_once() -> Result<()> {
    let cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let client = cluster.client().await?;
    let v1 = client.set("balance", "100").await?.version;

    // Compare-and-set from version v1, sent twice with the same client id and sequence number,
    // as a client does when the first reply was lost.
    let cas = pb::SetRequest {
        key: "balance".into(),
        value: "150".into(),
        condition: pb::ConditionKind::ConditionIfVersion as i32,
        if_version: v1,
        write_id: Some(pb::WriteId { client_id: 0xC11E47, seq: 1, acked_below: 1 }),
        ..Default::default()
    };
    let mut raw = CacheClient::connect(format!("http://{}", cluster.addr(leader))).await?;
    let first = raw.set(cas.clone()).await?.into_inner();
    assert!(first.applied, "the CAS should hold the first time");
    // The resent request travels in a log entry of its own (`log_index`); everything the write
    // itself produced must be the first answer.
    let same_result = |r: &pb::WriteResponse| pb::WriteResponse { log_index: first.log_index, ..r.clone() };
    let again = raw.set(cas.clone()).await?.into_inner();
    assert!(again.log_index > first.log_index);
    assert_eq!(same_result(&again), first, "a duplicate must get the first result");

    // Had it applied twice, the second CAS would have failed (version moved) or bumped the version.
    let entry = client.get("balance").await?.context("missing")?;
    assert_eq!(entry.value, "150");
    assert_eq!(entry.version, first.version);

    // The same seq with another payload is still the same write: first result, no effect.
    let different = pb::SetRequest { value: "999".into(), ..cas };
    let third = raw.set(different).await?.into_inner();
    assert_eq!(same_result(&third), first);
    assert_eq!(client.get("balance").await?.context("missing")?.value, "150");

    // A fresh CAS against the old version now fails: the condition is judged on the real state.
    let stale_cas = client.set_with("balance", "0", SetOptions::new().with_condition(Condition::IfVersion(v1))).await?;
    assert!(!stale_cas.applied);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_fell_behind_a_purged_log_catches_up_from_a_snapshot() -> Result<()> {
    let mut cluster = TestCluster::start_with(BIN, 3, &["--snapshot-every", "20"]).await?;
    let client = cluster.client().await?;
    client.set("first", "1").await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill(lagging)?;

    let mut last = None;
    for i in 0..200 {
        last = Some(client.set(format!("k{i}"), format!("v{i}")).await?);
    }
    let last = last.unwrap();
    // The leader built snapshots and purged the log the lagging node would need.
    eventually("the leader to purge its log", Duration::from_secs(10), || async {
        let s = cluster.local_status(leader).await?;
        (s.nodes.first()?.purged_index > 2).then_some(())
    })
    .await?;

    cluster.restart(lagging)?;
    cluster.wait_applied(lagging, last.version, Duration::from_secs(30)).await?;
    let lagging_client = cluster.client_of(lagging).await?;
    for i in [0, 57, 199] {
        let entry = lagging_client.get_with(format!("k{i}"), ReadOptions::stale()).await?.context("missing")?;
        assert_eq!(entry.value, format!("v{i}"));
    }
    assert_eq!(lagging_client.get_with("first", ReadOptions::stale()).await?.context("missing")?.value, "1");

    // And every replica holds the same state (ticks keep appending: poll until all agree).
    eventually("replicas to agree on applied index and state hash", Duration::from_secs(10), || async {
        let mut seen = Vec::new();
        for id in 1..=3 {
            let s = cluster.local_status(id).await?;
            let me = s.nodes.first()?;
            seen.push((me.applied, me.state_hash));
        }
        seen.iter().all(|x| *x == seen[0]).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capacity_given_at_init_evicts_least_recently_written_keys_everywhere() -> Result<()> {
    let cluster = TestCluster::start_with(BIN, 3, &["--max-entries", "3"]).await?;
    let client = cluster.client().await?;
    eventually("the capacity to be configured", Duration::from_secs(10), || async {
        let s = client.status().await.ok()?;
        (s.max_entries == 3).then_some(())
    })
    .await?;
    for key in ["a", "b", "c", "d"] {
        client.set(key, key).await?;
    }
    let last = client.set("e", "e").await?;
    for id in 1..=3 {
        cluster.wait_applied(id, last.version, Duration::from_secs(10)).await?;
        let c = cluster.client_of(id).await?;
        for (key, present) in [("a", false), ("b", false), ("c", true), ("d", true), ("e", true)] {
            let found = c.get_with(key, ReadOptions::stale()).await?.is_some();
            assert_eq!(found, present, "node {id}: key {key} present={found}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_acknowledged_just_before_a_whole_cluster_crash_is_read_first_thing_after() -> Result<()> {
    let mut cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let client = cluster.client_of(leader).await?;
    client.set("last-word", "before").await?;
    for round in 0..3 {
        let value = format!("after-{round}");
        let written = client.set("last-word", value.clone()).await?;
        // Crash everything at once, before any later append could make the commit point durable.
        for id in 1..=3 {
            cluster.kill(id)?;
        }
        for id in 1..=3 {
            cluster.restart(id)?;
        }
        let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
        // The first read after the restart, linearizable, at the leader.
        let entry = cluster.client_of(leader).await?.get("last-word").await?.context("key lost")?;
        assert_eq!(
            entry.value,
            value.as_str(),
            "round {round}: a linearizable read after the restart missed an acknowledged write"
        );
        assert_eq!(entry.version, written.version);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_its_quorum_refuses_writes_at_once_instead_of_hanging() -> Result<()> {
    let mut cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let raw = CacheClient::connect(format!("http://{}", cluster.addr(leader))).await?;
    // Both followers die; the leader still believes it leads (Raft has no step-down by itself).
    for id in (1..=3).filter(|id| *id != leader) {
        cluster.kill(id)?;
    }
    // Once its lease (one election timeout) has run out, a write is refused as unavailable, so
    // a client moves on to another node; before, it hung until the node's request timeout.
    let refusal = eventually("a write refused for lack of a quorum", Duration::from_secs(20), || {
        let mut raw = raw.clone();
        async move {
            let mut request = tonic::Request::new(pb::SetRequest {
                key: "k".into(),
                value: b"v".to_vec().into(),
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(3));
            let status = raw.set(request).await.err()?;
            (status.code() == tonic::Code::Unavailable).then_some(status)
        }
    })
    .await?;
    assert!(refusal.message().contains("no quorum"), "{refusal:?}");
    // With the followers back, the same node takes writes again (as leader or by forwarding).
    for id in (1..=3).filter(|id| *id != leader) {
        cluster.restart(id)?;
    }
    cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let client = cluster.client_of(leader).await?;
    eventually("a write through the old leader", Duration::from_secs(20), || async {
        client.set("k", "after").await.ok()
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_write_limit_a_node_refuses_at_once_and_applies_nothing() -> Result<()> {
    // One write in flight at a time: of many sent at once, most must be refused.
    let cluster = TestCluster::start_with(BIN, 3, &["--max-pending-writes", "1"]).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let raw = CacheClient::connect(format!("http://{}", cluster.addr(leader))).await?;
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..64 {
        let mut raw = raw.clone();
        sends.spawn(async move {
            let request = pb::SetRequest { key: format!("shed-{i}"), value: "v".into(), ..Default::default() };
            (i, raw.set(request).await.map(|r| r.into_inner().version))
        });
    }
    let (mut applied, mut refused) = (Vec::new(), Vec::new());
    while let Some(sent) = sends.join_next().await {
        match sent? {
            (i, Ok(_)) => applied.push(i),
            (i, Err(status)) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "write {i}: {status:?}");
                assert!(status.message().contains("in flight"), "{status:?}");
                refused.push(i);
            }
        }
    }
    assert!(!applied.is_empty() && !refused.is_empty(), "applied {applied:?}, refused {refused:?}");
    // A refused write changed nothing; an admitted one is there.
    let client = cluster.client_of(leader).await?;
    for i in &refused {
        assert!(client.get(format!("shed-{i}")).await?.is_none(), "refused write {i} was applied");
    }
    for i in &applied {
        assert!(client.get(format!("shed-{i}")).await?.is_some(), "write {i} was acknowledged but is missing");
    }
    // The client library takes a refusal as "retry after a backoff": the same burst through it
    // all lands.
    let mut sets = tokio::task::JoinSet::new();
    for i in 0..64 {
        let client = client.clone();
        sets.spawn(async move { client.set(format!("retried-{i}"), "v").await });
    }
    while let Some(set) = sets.join_next().await {
        set??;
    }
    Ok(())
}
