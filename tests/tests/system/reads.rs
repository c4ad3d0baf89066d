//! Read levels on real processes: bounded reads keep their promise under a write stream, a cut-off
//! replica refuses bounded reads (typed, with its bound) but still serves stale ones, learners
//! serve every level.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use geocache_proto as pb;
use geocache_proto::cache_client::CacheClient;
use geocache_tests::{eventually, outcome, TestCluster};

const BIN: &str = env!("CARGO_BIN_EXE_geocache-under-test");

/// A raw client to exactly node `id` (no routing, no fallback).
async fn raw(cluster: &TestCluster, id: u64) -> Result<CacheClient<tonic::transport::Channel>> {
    Ok(CacheClient::connect(format!("http://{}", cluster.addr(id))).await?)
}

fn bounded(key: &str, max: Duration) -> pb::GetRequest {
    pb::GetRequest {
        key: key.into(),
        consistency: pb::Consistency::Bounded as i32,
        max_staleness_ms: max.as_millis() as u64,
        min_version: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_read_is_never_older_than_its_bound() -> Result<()> {
    let cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let writer_client = cluster.client_of(leader).await?;
    let max = Duration::from_millis(100);

    // (instant the ack was seen, version) for every acknowledged write of one register.
    let acks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let stop = Instant::now() + Duration::from_secs(4);
    let writer = {
        let acks = acks.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < stop {
                i += 1;
                if let Ok(w) = writer_client.set("register", i.to_string()).await {
                    acks.lock().unwrap().push((Instant::now(), w.version));
                }
            }
        })
    };

    let mut reader = raw(&cluster, follower).await?;
    let mut answered = Vec::new();
    let mut refused = 0;
    while Instant::now() < stop {
        let invoked = Instant::now();
        match reader.get(bounded("register", max)).await {
            Ok(r) => {
                let r = r.into_inner();
                let bound =
                    r.meta.as_ref().and_then(|m| m.staleness_bound_ms).context("a bounded answer carries its bound")?;
                assert!(bound <= max.as_millis() as u64, "answered with bound {bound}ms over {max:?}");
                answered.push((invoked, r.version));
            }
            Err(status) => {
                assert_eq!(
                    status.metadata().get(pb::ERROR_KIND_HEADER).map(|v| v.to_str().unwrap()),
                    Some(pb::STALE_REPLICA)
                );
                refused += 1;
            }
        }
    }
    writer.await?;
    let acks = acks.lock().unwrap().clone();
    assert!(
        acks.len() > 20 && answered.len() > 20,
        "too little traffic: {} writes, {} reads",
        acks.len(),
        answered.len()
    );

    for (invoked, version) in &answered {
        // The newest write acknowledged more than `max` before this read began.
        let must_see = acks.iter().filter(|(acked, _)| *acked + max < *invoked).map(|(_, v)| *v).max().unwrap_or(0);
        assert!(
            *version >= must_see,
            "bounded read returned version {version}, older than {must_see} acked > {max:?} before it"
        );
    }
    eprintln!("{} bounded reads checked, {} refused, {} writes", answered.len(), refused, acks.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_replica_refuses_bounded_reads_but_serves_stale_ones_and_recovers() -> Result<()> {
    let mut cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let client = cluster.client_of(leader).await?;
    let written = client.set("region-key", "v1").await?;
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    cluster.wait_applied(survivor, written.version, Duration::from_secs(10)).await?;
    let bound_arg = ["get", "region-key", "--consistency", "bounded", "--max-staleness", "200ms"];
    // Its first probes complete within moments of joining; until then it has no bound.
    eventually("a bounded read on the survivor", Duration::from_secs(10), || async {
        (outcome(&cluster.cli(survivor, &bound_arg)).0 == 0).then_some(())
    })
    .await?;

    // Cut the survivor off: the other two nodes die, so no leader is reachable from it.
    let others: Vec<u64> = (1..=3).filter(|id| *id != survivor).collect();
    for id in &others {
        cluster.kill(*id)?;
    }
    let cut_at = Instant::now();
    let refused_after = eventually("bounded reads to be refused", Duration::from_secs(10), || async {
        let (code, _, err) = outcome(&cluster.cli(survivor, &bound_arg));
        (code == 2 && err.contains("stale replica")).then(|| cut_at.elapsed())
    })
    .await?;
    eprintln!("bounded(200ms) reads refused {refused_after:?} after the cut");
    assert!(refused_after < Duration::from_secs(3), "took {refused_after:?}");

    let mut raw_survivor = raw(&cluster, survivor).await?;
    let refusal = raw_survivor.get(bounded("region-key", Duration::from_millis(200))).await.unwrap_err();
    assert_eq!(refusal.code(), tonic::Code::Unavailable);
    let bound: u64 = refusal.metadata().get(pb::STALENESS_BOUND_HEADER).context("bound header")?.to_str()?.parse()?;
    assert!(bound > 200, "refused with bound {bound}ms");

    // Stale reads still answer, with the (large) bound in their metadata.
    let (code, out, _) = outcome(&cluster.cli(survivor, &["get", "region-key", "--consistency", "stale"]));
    assert_eq!((code, out.as_str()), (0, "v1"));
    // Writes sent to it fail as unavailable, within the command's deadline.
    let (code, _, err) = outcome(&cluster.cli(survivor, &["set", "region-key", "v2", "--timeout", "3s"]));
    assert_eq!(code, 2, "{err}");

    // Heal: the others come back; bounded reads and writes work again.
    for id in others {
        cluster.restart(id)?;
    }
    cluster.wait_for_leader(Duration::from_secs(20)).await?;
    eventually("bounded reads to be served again", Duration::from_secs(20), || async {
        (outcome(&cluster.cli(survivor, &bound_arg)).0 == 0).then_some(())
    })
    .await?;
    let (code, _, err) = outcome(&cluster.cli(survivor, &["set", "region-key", "v3"]));
    assert_eq!(code, 0, "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_serves_every_read_level_and_reports_its_bound() -> Result<()> {
    let mut cluster = TestCluster::start(BIN, 3).await?;
    cluster.spawn(4, &[])?;
    cluster.admin(4).await?;
    let (addr, peer) = (cluster.addr(4), cluster.peer_addr(4));
    let region = cluster.nodes[&4].region.clone();
    let (code, _, err) = outcome(&cluster.cli(
        1,
        &[
            "cluster",
            "add",
            "--id",
            "4",
            "--addr",
            &addr,
            "--peer-addr",
            &peer,
            "--region",
            &region,
            "--learner",
            "--timeout",
            "20s",
        ],
    ));
    assert_eq!(code, 0, "{err}");
    let written = cluster.client().await?.set("k", "v").await?;

    let learner = raw(&cluster, 4).await?;
    for consistency in [pb::Consistency::Linearizable, pb::Consistency::Bounded, pb::Consistency::Stale] {
        let request = pb::GetRequest {
            key: "k".into(),
            consistency: consistency as i32,
            max_staleness_ms: 1000,
            min_version: written.version,
        };
        // A learner just added has no staleness bound until its first probe completes.
        let r = eventually(&format!("a {consistency:?} read on the learner"), Duration::from_secs(10), || {
            let (mut learner, request) = (learner.clone(), request.clone());
            async move { learner.get(request).await.ok().map(|r| r.into_inner()) }
        })
        .await?;
        assert!(r.found);
        assert_eq!(r.version, written.version);
        assert_eq!(r.meta.as_ref().map(|m| m.node_id), Some(4));
    }
    let status = eventually("the learner's bound in status", Duration::from_secs(10), || async {
        let full = geocache_proto::admin_client::AdminClient::connect(format!("http://{}", cluster.addr(1)))
            .await
            .ok()?
            .status(pb::StatusRequest { local_only: false, with_state_hash: false })
            .await
            .ok()?
            .into_inner();
        let learner = full.nodes.into_iter().find(|n| n.id == 4)?;
        (learner.role == "learner" && learner.staleness_bound_ms.is_some()).then_some(learner)
    })
    .await?;
    assert_eq!(status.region, region);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_linearizable_reads_share_quorum_rounds() -> Result<()> {
    let cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    cluster.client_of(leader).await?.set("hot", "1").await?;
    let counters = || async {
        let s = cluster.local_status(leader).await.context("leader status")?;
        let me = s.nodes.first().context("self")?.clone();
        anyhow::Ok((me.read_index_requests, me.read_index_rounds))
    };
    let (requests_before, rounds_before) = counters().await?;

    let reader = raw(&cluster, leader).await?;
    let reads = (0..200).map(|_| {
        let mut reader = reader.clone();
        tokio::spawn(async move {
            let request = pb::GetRequest { key: "hot".into(), ..Default::default() };
            reader.get(request).await.map(|r| r.into_inner().found)
        })
    });
    for read in futures_join(reads).await {
        assert!(read??, "linearizable read lost the key");
    }

    let (requests_after, rounds_after) = counters().await?;
    let (requests, rounds) = (requests_after - requests_before, rounds_after - rounds_before);
    eprintln!("{requests} read-index requests served by {rounds} quorum rounds");
    assert!(requests >= 200);
    assert!(rounds < requests / 2, "{requests} requests took {rounds} rounds: reads are not sharing rounds");
    Ok(())
}

async fn futures_join<T>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut results = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        results.push(handle.await);
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_load_calls_the_loader_once_for_100_concurrent_misses() -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let cluster = TestCluster::start(BIN, 3).await?;
    let cache = geocache_client::Client::builder()
        .endpoints(cluster.endpoints())
        .region("eu-west")
        .default_ttl(Duration::from_secs(60))
        .build()
        .await?;
    let calls = Arc::new(AtomicUsize::new(0));
    // A gate with no permits: the loader waits until the test opens it (never a missed wake-up).
    let release = Arc::new(tokio::sync::Semaphore::new(0));

    let callers: Vec<_> = (0..100)
        .map(|_| {
            let (cache, calls, release) = (cache.clone(), calls.clone(), release.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load("user:42", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        // Hold the load open while the other callers pile up behind it.
                        let _permit = release.acquire().await;
                        Ok::<_, std::io::Error>(vec!["ada".to_string(), "lovelace".to_string()])
                    })
                    .await
            })
        })
        .collect();
    eventually("the loader to start", Duration::from_secs(10), || async {
        (calls.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await?;
    release.add_permits(1);
    for caller in callers {
        let value: Vec<String> = caller.await??;
        assert_eq!(value, ["ada", "lovelace"]);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the loader ran more than once");

    // Stored with the default TTL, visible to everyone.
    let ttl = cluster.client().await?.ttl("user:42").await?.context("stored")?;
    assert!(ttl.expires_at_ms.is_some());
    Ok(())
}
