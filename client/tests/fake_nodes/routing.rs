//! Routing, retries and exactly-once identities against tiny in-process fake nodes
//! (`fake/mod.rs`). What this proves is the client's side of the protocol; the real cluster is
//! tested in `tests/`.

use crate::fake;

use std::time::Duration;

use bytes::Bytes;
use fake::{client, cluster, dead_addr, spawn, FakeNode, Fault};
use geocache_client::{Client, Error, ReadOptions, SetOptions};
use geocache_proto as pb;

#[tokio::test]
async fn follows_leader_hint_and_remembers_the_leader() {
    let c = cluster();
    let (leader, leader_addr) = spawn(FakeNode::new(1, &c)).await;
    // The hint is a bare host:port, as in the membership.
    let (follower, follower_addr) = spawn(FakeNode::new(2, &c).always(Fault::NotLeader(leader_addr.clone()))).await;
    let client = client(&[&follower_addr], Duration::from_secs(5)).await;

    let w = client.set("k", "v").await.unwrap();
    assert!(w.applied);
    assert_eq!(client.leader_addr(), format!("http://{leader_addr}"));
    assert_eq!((follower.count("set"), leader.count("set")), (1, 1));

    // The next calls go straight to the leader.
    let entry = client.get("k").await.unwrap().unwrap();
    assert_eq!(entry.value, Bytes::from_static(b"v"));
    assert_eq!(entry.version, w.version);
    assert_eq!(entry.meta.node_id, 1);
    client.delete("k").await.unwrap();
    assert_eq!(follower.seen().len(), 1);
    assert!(leader.seen().iter().all(|s| s.has_grpc_timeout));
}

#[tokio::test]
async fn a_client_held_to_its_endpoints_ignores_leader_hints() {
    let c = cluster();
    let (leader, leader_addr) = spawn(FakeNode::new(1, &c)).await;
    let (follower, follower_addr) = spawn(FakeNode::new(2, &c).always(Fault::NotLeader(leader_addr.clone()))).await;
    let client = Client::builder()
        .endpoints([follower_addr.as_str()])
        .discovery(false)
        .only_endpoints(true)
        .timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();

    let err = client.set("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert_eq!(err.leader_hint(), Some(leader_addr.as_str()), "the hint is reported, not followed");
    let err = client.get("k").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(follower.count("set") >= 1 && follower.count("get") >= 1);
    assert!(leader.seen().is_empty(), "the leader was asked: {:?}", leader.seen());
    assert_eq!(client.leader_addr(), format!("http://{follower_addr}"));
}

#[tokio::test]
async fn retries_of_one_write_reuse_its_write_id() {
    let c = cluster();
    let (leader, addr) =
        spawn(FakeNode::new(1, &c).failing_first([Fault::Deadline, Fault::NoQuorum, Fault::ApplyThenDeadline])).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;

    // The third attempt applied but lost its ack; the fourth is answered from the dedup table.
    let w = client.set("k", "v1").await.unwrap();
    assert_eq!((w.version, w.log_index), (1, 1));
    assert_eq!(c.lock().unwrap().applies, 1, "applied exactly once");

    let ids: Vec<pb::WriteId> = leader.seen().iter().filter_map(|s| s.write_id).collect();
    assert_eq!(ids.len(), 4);
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(ids[0], pb::WriteId { client_id: client.client_id(), seq: 1, acked_below: 1 });

    // The next write is seq 2, and the first is acknowledged.
    client.set("k", "v2").await.unwrap();
    let last = leader.seen().last().unwrap().write_id.unwrap();
    assert_eq!((last.seq, last.acked_below), (2, 2));
}

#[tokio::test]
async fn a_dead_first_endpoint_is_skipped() {
    let c = cluster();
    let (_leader, addr) = spawn(FakeNode::new(1, &c)).await;
    let dead = dead_addr();
    let client = client(&[&dead, &addr], Duration::from_secs(5)).await;
    client.set("k", "v").await.unwrap();
    assert_eq!(client.leader_addr(), format!("http://{addr}"));
}

#[tokio::test]
async fn bad_input_and_preconditions_are_not_retried() {
    let c = cluster();
    let (node, addr) = spawn(FakeNode::new(1, &c).failing_first([Fault::Invalid, Fault::Precondition])).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;

    let err = client.set("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = client.init(vec![]).await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    let err = client.remove(9).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert_eq!(node.seen().len(), 3, "one attempt each");

    // Client-side validation sends nothing at all.
    let zero = SetOptions::new().with_ttl(Duration::ZERO);
    assert!(matches!(client.set_with("k", "v", zero).await, Err(Error::InvalidArgument(_))));
    assert_eq!(node.seen().len(), 3);
}

#[tokio::test]
async fn an_unknown_outcome_until_the_deadline_is_a_timeout() {
    let c = cluster();
    let (node, addr) = spawn(FakeNode::new(1, &c).always(Fault::Deadline)).await;
    let client = client(&[&addr], Duration::from_millis(300)).await;
    let err = client.set("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(!err.outcome_known() && err.is_retryable());
    let ids: Vec<_> = node.seen().iter().filter_map(|s| s.write_id).collect();
    assert!(ids.len() >= 2, "retried: {ids:?}");
    assert!(ids.iter().all(|id| *id == ids[0]));
}

#[tokio::test]
async fn a_refusal_after_an_unknown_outcome_is_still_unknown() {
    let c = cluster();
    // The first attempt may have applied; every later one is refused without effect.
    let (_node, addr) =
        spawn(FakeNode::new(1, &c).failing_first([Fault::ApplyThenDeadline]).always(Fault::NoQuorum)).await;
    let client = client(&[&addr], Duration::from_millis(300)).await;
    let err = client.set("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(!err.outcome_known());

    // Reads have no effects: the last refusal is what they report.
    let err = client.get("k").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_hung_attempt_is_cut_short_and_retried() {
    let c = cluster();
    let (node, addr) = spawn(FakeNode::new(1, &c).failing_first([Fault::Hang])).await;
    let client = Client::builder()
        .endpoints([addr.as_str()])
        .timeout(Duration::from_secs(5))
        .attempt_timeout(Duration::from_millis(100))
        .discovery(false)
        .build()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    client.set("k", "v").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let ids: Vec<_> = node.seen().iter().filter_map(|s| s.write_id).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
}

#[tokio::test]
async fn without_discovery_a_bounded_read_asks_the_endpoints_in_order_and_the_leader_last() {
    let c = cluster();
    let (leader, leader_addr) = spawn(FakeNode::new(1, &c)).await;
    let (stale, stale_addr) = spawn(FakeNode::new(2, &c).always(Fault::StaleReplica(Some(900)))).await;
    let (_fresh, fresh_addr) = spawn(FakeNode::new(3, &c)).await;
    let client = client(&[&leader_addr, &stale_addr, &fresh_addr], Duration::from_secs(5)).await;
    client.set("k", "v").await.unwrap();

    let bounded = ReadOptions::bounded(Duration::from_millis(100));
    let entry = client.get_with("k", bounded).await.unwrap().unwrap();
    assert_eq!(entry.meta.node_id, 3);
    assert_eq!(entry.meta.region, "region-3");
    assert_eq!((stale.count("get"), leader.count("get")), (1, 0));

    // A stale read is served by the first endpoint, however stale.
    let entry = client.get_with("k", ReadOptions::stale()).await.unwrap().unwrap();
    assert_eq!(entry.meta.node_id, 1);
}

#[tokio::test]
async fn rejected_writes_are_errors() {
    let c = cluster();
    let (_node, addr) = spawn(FakeNode::new(1, &c).failing_first([Fault::Rejected])).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;
    let err = client.set("k", vec![0u8; 16]).await.unwrap_err();
    assert_eq!(err, Error::Rejected("value larger than the whole cache".into()));
    assert!(err.outcome_known() && !err.is_retryable());
}

#[tokio::test]
async fn typed_values_round_trip_as_json() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Session {
        user: String,
        visits: u32,
    }
    let c = cluster();
    let (_node, addr) = spawn(FakeNode::new(1, &c)).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;

    let session = Session { user: "ada".into(), visits: 2 };
    client.set_json("s", &session).await.unwrap();
    assert_eq!(client.get_json::<Session>("s").await.unwrap(), Some(session));
    assert_eq!(client.get_json::<Session>("absent").await.unwrap(), None);

    client.set("raw", "not json").await.unwrap();
    let err = client.get_json::<Session>("raw").await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn ttl_reports_remaining_time() {
    let c = cluster();
    let (_node, addr) = spawn(FakeNode::new(1, &c)).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;
    client.set("k", "v").await.unwrap();
    let ttl = client.ttl("k").await.unwrap().unwrap();
    assert_eq!(ttl.remaining, Some(Duration::from_millis(1_500)));
    assert_eq!(ttl.expires_at_ms, Some(90_000));
    assert_eq!(client.ttl("absent").await.unwrap(), None);
}

#[tokio::test]
async fn status_teaches_the_client_who_leads() {
    let c = cluster();
    let (leader, leader_addr) = spawn(FakeNode::new(1, &c)).await;
    let (_follower, follower_addr) = spawn(FakeNode::new(2, &c).with_leader(1, &leader_addr)).await;
    let client = client(&[&follower_addr], Duration::from_secs(5)).await;

    let status = client.status().await.unwrap();
    assert_eq!(status.node_id, 2);
    assert_eq!(status.leader().unwrap().id, 1);
    assert_eq!(client.leader_addr(), format!("http://{leader_addr}"));

    client.set("k", "v").await.unwrap();
    assert_eq!(leader.count("set"), 1);

    let member = geocache_client::Member::new(4, "127.0.0.1:7004", "ap-south");
    let membership = client.add_learner(member.clone(), false).await.unwrap();
    assert_eq!(membership.learners, vec![member]);
    assert_eq!(client.configure(Some(100), Some(0)).await.unwrap(), 3);
}

/// Accepts connections, reads the start of each request, then drops the connection: a node
/// that crashes while a call is in flight.
async fn spawn_crashing_node() -> String {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                drop(socket);
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_connection_lost_mid_call_leaves_a_write_unknown() {
    let addr = spawn_crashing_node().await;
    let client = client(&[&addr], Duration::from_millis(300)).await;

    let err = client.get("k").await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");

    let err = client.set("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_) | Error::Transport(_)), "{err:?}");
    assert!(!err.outcome_known(), "{err:?}");
}
