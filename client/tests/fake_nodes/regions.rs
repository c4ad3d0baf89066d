//! Region-aware reads against fake nodes (`fake/mod.rs`): the order replicas are asked in,
//! fallback past stale, lagging and dead replicas, and topology refresh.
//!
//! The fakes answer round-trip probes (`Status{local_only}`) after a set delay, so "far" nodes
//! are far by tens of milliseconds, well above loopback noise.

use crate::fake;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake::{cluster, spawn, spawn_killable, spawn_on, Cluster, FakeNode, Fault};
use geocache_client::{Client, Error, ReadOptions, Role};

const MS: fn(u64) -> Duration = Duration::from_millis;

/// A discovering client that knows only `endpoint`.
async fn client_in(region: Option<&str>, endpoint: &str) -> Client {
    let mut builder = Client::builder().endpoints([endpoint]).timeout(Duration::from_secs(5));
    if let Some(region) = region {
        builder = builder.region(region);
    }
    builder.build().await.unwrap()
}

/// Polls `cond` every 20 ms for up to 5 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
        tokio::time::sleep(MS(20)).await;
    }
}

/// Four nodes: 1 leads in us-east (probe 0 ms), 2 follows in eu-west (40 ms), 3 is a learner in
/// eu-west (20 ms), 4 follows in ap-south (60 ms).
async fn four_regions(c: &Arc<Mutex<Cluster>>) -> Vec<(Arc<FakeNode>, String)> {
    let mut nodes = Vec::new();
    for (id, delay) in [(1, 0), (2, 40), (3, 20), (4, 60)] {
        nodes.push(spawn(FakeNode::new(id, c).probe_delay(MS(delay))).await);
    }
    let a: Vec<&str> = nodes.iter().map(|n| n.1.as_str()).collect();
    c.lock().unwrap().set_members(
        &[(1, a[0], "us-east"), (2, a[1], "eu-west"), (4, a[3], "ap-south"), (3, a[2], "eu-west")],
        3,
        1,
    );
    nodes
}

fn ids(client: &Client) -> Vec<u64> {
    client.replicas().iter().map(|r| r.id).collect()
}

#[tokio::test]
async fn reads_go_to_the_clients_region_first_then_by_round_trip() {
    let c = cluster();
    let nodes = four_regions(&c).await;
    // The client knows one endpoint and learns the rest while it is built.
    let eu = client_in(Some("eu-west"), &nodes[0].1).await;
    assert_eq!(eu.region(), Some("eu-west"));
    assert_eq!(eu.leader_addr(), format!("http://{}", nodes[0].1));
    assert_eq!(ids(&eu), [3, 2, 1, 4], "eu-west (learner nearest), then by RTT");
    let replicas = eu.replicas();
    assert_eq!(replicas[0].region, "eu-west");
    assert_eq!(replicas[0].role, Some(Role::Learner));
    assert_eq!(replicas[2].role, Some(Role::Leader));
    assert!(replicas.iter().all(|r| r.reachable && r.rtt.is_some()), "{replicas:?}");
    assert!(replicas[3].rtt.unwrap() >= MS(60));

    eu.set("k", "v").await.unwrap();
    assert_eq!(nodes[0].0.count("set"), 1, "writes go to the leader");
    for options in [ReadOptions::stale(), ReadOptions::bounded(MS(500)), ReadOptions::linearizable()] {
        let entry = eu.get_with("k", options).await.unwrap().unwrap();
        assert_eq!(entry.meta.node_id, 3, "{options:?}");
    }
    assert_eq!(eu.get("k").await.unwrap().unwrap().meta.node_id, 3);

    // Without a region, RTT alone; the leader is the nearest, except that a bounded read
    // spares it for the others.
    let anywhere = client_in(None, &nodes[1].1).await;
    assert_eq!(anywhere.get_with("k", ReadOptions::stale()).await.unwrap().unwrap().meta.node_id, 1);
    assert_eq!(anywhere.get_with("k", ReadOptions::bounded(MS(500))).await.unwrap().unwrap().meta.node_id, 3);

    // A region with only a far follower in it still comes first.
    let ap = client_in(Some("ap-south"), &nodes[2].1).await;
    assert_eq!(ids(&ap), [4, 1, 3, 2]);
    assert_eq!(ap.get_with("k", ReadOptions::stale()).await.unwrap().unwrap().meta.node_id, 4);
}

#[tokio::test]
async fn a_bounded_read_falls_back_past_stale_replicas_and_reports_the_freshest_bound() {
    let c = cluster();
    let (leader, a1) = spawn(FakeNode::new(1, &c)).await;
    let (far, a2) = spawn(FakeNode::new(2, &c).probe_delay(MS(30)).always(Fault::StaleReplica(Some(900)))).await;
    let (near, a3) = spawn(FakeNode::new(3, &c).always(Fault::StaleReplica(Some(300)))).await;
    c.lock().unwrap().set_members(&[(1, &a1, "us-east"), (2, &a2, "eu-west"), (3, &a3, "eu-west")], 3, 1);
    let client = client_in(Some("eu-west"), &a2).await;
    assert_eq!(ids(&client), [3, 2, 1]);
    client.set("k", "v").await.unwrap();

    // Both eu-west replicas refuse; the leader, asked last, answers.
    let bounded = ReadOptions::bounded(MS(200));
    let entry = client.get_with("k", bounded).await.unwrap().unwrap();
    assert_eq!(entry.meta.node_id, 1);
    assert_eq!((near.count("get"), far.count("get"), leader.count("get")), (1, 1, 1));

    // Stale replicas still serve stale reads.
    assert_eq!(client.get_with("k", ReadOptions::stale()).await.unwrap().unwrap().meta.node_id, 3);

    // When every replica refuses, the call fails after one round (not at its deadline) with
    // the freshest bound any replica reported.
    leader.set_always(Some(Fault::StaleReplica(None)));
    let started = Instant::now();
    let err = client.get_with("k", bounded).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    match &err {
        Error::StaleReplica { bound, .. } => assert_eq!(*bound, Some(MS(300))),
        other => panic!("expected StaleReplica, got {other:?}"),
    }
    assert!(err.is_retryable() && err.outcome_known());
    assert_eq!((near.count("get"), far.count("get"), leader.count("get")), (3, 2, 2));
}

#[tokio::test]
async fn a_min_version_read_passes_over_a_lagging_replica() {
    let c = cluster();
    let (leader, a1) = spawn(FakeNode::new(1, &c)).await;
    let (lagging, a2) = spawn(FakeNode::new(2, &c).always(Fault::Lagging)).await;
    c.lock().unwrap().set_members(&[(1, &a1, "us-east"), (2, &a2, "eu-west")], 2, 1);
    let client = Client::builder().endpoints([&a1]).region("eu-west").timeout(MS(1000)).build().await.unwrap();
    let w = client.set("k", "v").await.unwrap();

    for options in [ReadOptions::stale(), ReadOptions::bounded(MS(200)), ReadOptions::linearizable()] {
        let before = (lagging.count("get"), leader.count("get"));
        let started = Instant::now();
        let entry = client.get_with("k", options.with_min_version(w.version)).await.unwrap().unwrap();
        assert_eq!(entry.meta.node_id, 1, "{options:?}: the leader answers");
        assert!(started.elapsed() < MS(900), "{options:?} took {:?}", started.elapsed());
        assert_eq!((lagging.count("get"), leader.count("get")), (before.0 + 1, before.1 + 1));
        // The lagging replica was given about half the deadline, not all of it.
        let slice = lagging.seen().iter().rev().find(|s| s.method == "get").unwrap().grpc_timeout.unwrap();
        assert!(slice <= MS(500) && slice >= MS(400), "slice {slice:?}");
    }

    // Without min_version the lagging replica serves.
    assert_eq!(client.get_with("k", ReadOptions::stale()).await.unwrap().unwrap().meta.node_id, 2);
}

#[tokio::test]
async fn a_refresh_picks_up_a_new_leader() {
    let c = cluster();
    let (n1, a1) = spawn(FakeNode::new(1, &c)).await;
    let (n2, a2) = spawn(FakeNode::new(2, &c)).await;
    let members = [(1, a1.as_str(), "us-east"), (2, a2.as_str(), "eu-west")];
    c.lock().unwrap().set_members(&members, 2, 1);
    let client = Client::builder().endpoints([&a2]).refresh_interval(MS(100)).build().await.unwrap();
    assert_eq!(client.leader_addr(), format!("http://{a1}"));
    client.set("k", "v").await.unwrap();
    assert_eq!(n1.count("set"), 1);

    // An election elsewhere: the background refresh learns of it.
    c.lock().unwrap().set_members(&members, 2, 2);
    eventually("the new leader", || client.leader_addr() == format!("http://{a2}")).await;
    assert_eq!(client.replicas().iter().find(|r| r.id == 2).unwrap().role, Some(Role::Leader));
    client.set("k", "w").await.unwrap();
    assert_eq!((n1.count("set"), n2.count("set")), (1, 1), "the write went straight to the new leader");
}

#[tokio::test]
async fn a_dead_replica_is_passed_over_and_triggers_a_refresh() {
    let c = cluster();
    let (_leader, a1) = spawn(FakeNode::new(1, &c)).await;
    let (_doomed, a2, kill) = spawn_killable(FakeNode::new(2, &c)).await;
    let (_newcomer, a3) = spawn(FakeNode::new(3, &c)).await;
    c.lock().unwrap().set_members(&[(1, &a1, "us-east"), (2, &a2, "eu-west")], 2, 1);
    // No periodic refresh during the test: only the failure can cause one.
    let client = Client::builder()
        .endpoints([&a1])
        .region("eu-west")
        .refresh_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    client.set("k", "v").await.unwrap();
    assert_eq!(client.get_with("k", ReadOptions::stale()).await.unwrap().unwrap().meta.node_id, 2);

    // Node 2 dies and node 3 joins eu-west.
    kill.kill().await;
    c.lock().unwrap().set_members(&[(1, &a1, "us-east"), (2, &a2, "eu-west"), (3, &a3, "eu-west")], 2, 1);
    let entry = client.get_with("k", ReadOptions::stale()).await.unwrap().unwrap();
    assert_ne!(entry.meta.node_id, 2);

    eventually("the refresh the failure asked for", || ids(&client).contains(&3)).await;
    let replicas = client.replicas();
    assert_eq!(replicas.iter().map(|r| r.id).collect::<Vec<_>>(), [3, 1, 2], "the dead node last: {replicas:?}");
    assert!(!replicas[2].reachable);
    assert_eq!(client.get_with("k", ReadOptions::stale()).await.unwrap().unwrap().meta.node_id, 3);
}

#[tokio::test]
async fn a_client_builds_when_no_node_answers_and_learns_the_topology_later() {
    let c = cluster();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let client =
        Client::builder().endpoints([addr.as_str()]).region("eu-west").refresh_interval(MS(100)).build().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(ids(&client), [0], "only the seed, as an unknown node");
    assert!(client.refresh_topology().await.is_err());

    // The node comes up on that port.
    spawn_on(&addr, FakeNode::new(1, &c)).await;
    c.lock().unwrap().set_members(&[(1, &addr, "eu-west")], 1, 1);
    eventually("the topology", || ids(&client) == [1]).await;
    client.set("k", "v").await.unwrap();
}
