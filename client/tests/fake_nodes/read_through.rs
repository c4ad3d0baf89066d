//! `get_or_load` against a fake node (`fake/mod.rs`): single-flight, loader errors, the TTL and
//! condition of the store, and a race with another process.
//!
//! The concurrency tests run on tokio's current-thread runtime and make the overlap certain
//! rather than likely: the loader waits on a `Notify` that the test releases only after every
//! caller has entered `get_or_load`, and on a current-thread runtime a task that has counted
//! itself in has also run to its first await inside the call, so it has joined the flight.

use crate::fake;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fake::{cluster, spawn, FakeNode};
use geocache_client::{Client, Consistency, Error};
use geocache_proto as pb;
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    id: u32,
    name: String,
}

async fn single_node(ttl: Option<Duration>) -> (Arc<FakeNode>, Client) {
    let c = cluster();
    let (node, addr) = spawn(FakeNode::new(1, &c)).await;
    c.lock().unwrap().set_members(&[(1, &addr, "eu-west")], 1, 1);
    let mut builder = Client::builder().endpoints([addr.as_str()]).region("eu-west");
    if let Some(ttl) = ttl {
        builder = builder.default_ttl(ttl);
    }
    (node, builder.build().await.unwrap())
}

/// Yields until `counter` reaches `n`.
async fn until(counter: &AtomicUsize, n: usize) {
    while counter.load(Ordering::SeqCst) < n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_hundred_concurrent_misses_call_the_loader_once() {
    let (node, client) = single_node(Some(Duration::from_secs(60))).await;
    let entered = Arc::new(AtomicUsize::new(0));
    let loads = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());

    let mut callers = Vec::new();
    for _ in 0..100 {
        let (client, entered, loads, release) = (client.clone(), entered.clone(), loads.clone(), release.clone());
        callers.push(tokio::spawn(async move {
            entered.fetch_add(1, Ordering::SeqCst);
            client
                .get_or_load("user:42", || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                    Ok::<_, std::io::Error>(User { id: 42, name: "ada".into() })
                })
                .await
        }));
    }
    until(&entered, 100).await;
    until(&loads, 1).await;
    release.notify_one();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), User { id: 42, name: "ada".into() });
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1, "the loader ran once");
    assert_eq!((node.count("get"), node.count("set")), (1, 1), "one read and one store for the whole flight");
    let store = node.seen().into_iter().find(|s| s.method == "set").unwrap();
    assert_eq!(store.ttl_ms, Some(60_000), "the client's default TTL");
    assert_eq!(store.condition, pb::ConditionKind::ConditionIfAbsent as i32);

    // Stored: the next call is a hit and never calls its loader.
    let user: User = client.get_or_load("user:42", || async { Err::<User, _>("must not be called") }).await.unwrap();
    assert_eq!(user.name, "ada");
    assert_eq!(client.get_json::<User>("user:42").await.unwrap().unwrap().id, 42);
}

#[tokio::test]
async fn a_loader_error_reaches_every_waiter_and_nothing_is_stored() {
    let (node, client) = single_node(None).await;
    let entered = Arc::new(AtomicUsize::new(0));
    let loads = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());

    let mut callers = Vec::new();
    for _ in 0..20 {
        let (client, entered, loads, release) = (client.clone(), entered.clone(), loads.clone(), release.clone());
        callers.push(tokio::spawn(async move {
            entered.fetch_add(1, Ordering::SeqCst);
            client
                .get_or_load("user:7", || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                    Err::<User, _>("database unreachable")
                })
                .await
        }));
    }
    until(&entered, 20).await;
    until(&loads, 1).await;
    release.notify_one();
    for caller in callers {
        let err = caller.await.unwrap().unwrap_err();
        assert_eq!(err, Error::Loader("database unreachable".into()));
        assert!(err.outcome_known() && !err.is_retryable());
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(node.count("set"), 0, "nothing stored");
    assert_eq!(client.get("user:7").await.unwrap(), None);

    // The next call runs its loader again, and this time stores.
    let user = client
        .get_or_load("user:7", || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(User { id: 7, name: "grace".into() })
        })
        .await
        .unwrap();
    assert_eq!(user.name, "grace");
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert_eq!(node.count("set"), 1);
    let store = node.seen().into_iter().find(|s| s.method == "set").unwrap();
    assert_eq!(store.ttl_ms, None, "no default TTL: no expiry");
}

#[tokio::test]
async fn a_value_stored_first_by_another_process_wins() {
    let (node, client) = single_node(None).await;
    let other = Client::connect(client.endpoints().to_vec()).await.unwrap();

    // Between our miss and our store, another process stores its own value.
    let ours = User { id: 1, name: "ours".into() };
    let got = client
        .get_or_load_with("user:1", Some(Duration::from_secs(5)), || async {
            other.set_json("user:1", &User { id: 1, name: "theirs".into() }).await.unwrap();
            Ok::<_, String>(ours.clone())
        })
        .await
        .unwrap();
    assert_eq!(got.name, "theirs");
    assert_eq!(client.get_json::<User>("user:1").await.unwrap().unwrap().name, "theirs");
    let stores: Vec<_> = node.seen().into_iter().filter(|s| s.method == "set").collect();
    assert_eq!(stores.len(), 2);
    assert_eq!(stores[1].ttl_ms, Some(5_000), "the per-call TTL");
}

#[tokio::test]
async fn bytes_flavour_and_decode_errors() {
    let (_node, client) = single_node(None).await;
    let value = client.get_or_load_bytes("raw", || async { Ok::<_, String>("not json") }).await.unwrap();
    assert_eq!(value, Bytes::from_static(b"not json"));
    let again = client.get_or_load_bytes("raw", || async { Err::<Bytes, _>("must not be called") }).await.unwrap();
    assert_eq!(again, value);

    // A stored value that is not JSON of the type asked for is a decode error, not a miss.
    let err = client.get_or_load::<User, _, _, _>("raw", || async { Err::<User, _>("not called") }).await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");

    // Bad input fails before anything is sent or loaded.
    let err = client.get_or_load_bytes("", || async { Ok::<_, String>("x") }).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = client.get_or_load_bytes_with("k", Some(Duration::ZERO), || async { Ok::<_, String>("x") }).await;
    assert!(matches!(err, Err(Error::InvalidArgument(_))), "{err:?}");
}

#[tokio::test]
async fn builder_defaults_are_validated_and_used_by_plain_reads() {
    let c = cluster();
    let (node, addr) = spawn(FakeNode::new(1, &c)).await;
    for bad in [
        Client::builder().endpoints([addr.as_str()]).default_ttl(Duration::from_micros(10)),
        Client::builder().endpoints([addr.as_str()]).default_consistency(Consistency::Bounded(Duration::ZERO)),
        Client::builder().endpoints([addr.as_str()]).region(" "),
        Client::builder().endpoints([addr.as_str()]).refresh_interval(Duration::ZERO),
    ] {
        assert!(matches!(bad.build().await, Err(Error::InvalidArgument(_))));
    }

    let client = Client::builder()
        .endpoints([addr.as_str()])
        .default_consistency(Consistency::Stale)
        .discovery(false)
        .build()
        .await
        .unwrap();
    client.get("k").await.unwrap();
    client.ttl("k").await.unwrap();
    client.get_json::<User>("k").await.unwrap();
    assert_eq!(node.count("get"), 2);
    let _ = client.get_or_load_bytes("k", || async { Ok::<_, String>("v") }).await.unwrap();
    assert_eq!(node.count("get"), 3);
    assert!(node.reads().iter().all(|c| *c == pb::Consistency::Stale as i32), "{:?}", node.reads());
}
