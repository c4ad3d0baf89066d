//! Prometheus metrics on a real 3-node cluster, scraped over HTTP from each node's
//! `--metrics-listen` port: Raft and cache gauges read at scrape time, and counters that move
//! with writes (gRPC, Redis protocol, forwarded), reads per level, hits and misses, a bounded
//! read refused as stale, evictions, expirations, and an election after the leader is killed.

use std::time::Duration;

use anyhow::{Context, Result};
use geocache_client::SetOptions;
use geocache_proto as pb;
use geocache_proto::cache_client::CacheClient;
use geocache_tests::{eventually, outcome, Listeners, Scrape, TestCluster};

const BIN: &str = env!("CARGO_BIN_EXE_geocache-under-test");
/// Generous for a loaded 2-core machine; every wait polls and ends as soon as it can.
const PATIENCE: Duration = Duration::from_secs(20);

/// Scrapes node `id` until `check` holds, or fails after [`PATIENCE`] showing the last scrape.
async fn scrape_until(cluster: &TestCluster, id: u64, what: &str, check: impl Fn(&Scrape) -> bool) -> Result<Scrape> {
    let last = std::sync::Mutex::new(String::new());
    let found = eventually(&format!("node {id}: {what}"), PATIENCE, || async {
        let scrape = cluster.scrape(id).await.ok()?;
        if check(&scrape) {
            return Some(scrape);
        }
        *last.lock().expect("not poisoned") = scrape.text;
        None
    })
    .await;
    found.with_context(|| format!("last scrape of node {id}:\n{}", last.lock().expect("not poisoned")))
}

/// A raw gRPC client to exactly node `id` (no routing, no fallback).
async fn raw(cluster: &TestCluster, id: u64) -> Result<CacheClient<tonic::transport::Channel>> {
    Ok(CacheClient::connect(format!("http://{}", cluster.addr(id))).await?)
}

fn get(key: &str, consistency: pb::Consistency, max_staleness_ms: u64) -> pb::GetRequest {
    pb::GetRequest { key: key.into(), consistency: consistency as i32, max_staleness_ms, min_version: 0 }
}

fn counter(scrape: &Scrape, series: &str) -> f64 {
    scrape.value(series).unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_writes_reads_refusals_and_an_election() -> Result<()> {
    // Room for four entries, so a few more writes evict.
    let mut cluster =
        TestCluster::start_listening(BIN, 3, &["--max-entries", "4"], Listeners { resp: true, metrics: true }).await?;
    let leader = cluster.wait_for_leader(PATIENCE).await?;
    let follower = (1..=3).find(|id| *id != leader).expect("three nodes");

    // Scrape-time state: each node's role and the leader's view of its followers.
    let on_leader = scrape_until(&cluster, leader, "leads, with every follower's lag", |s| {
        s.value(r#"geocache_raft_state{state="leader"}"#) == Some(1.0)
            && s.value(&format!(r#"geocache_raft_replication_lag_entries{{follower="{follower}"}}"#)).is_some()
            && s.value("geocache_cache_max_entries") == Some(4.0)
    })
    .await?;
    assert_eq!(on_leader.value("geocache_raft_leader_id"), Some(leader as f64));
    assert!(on_leader.value("geocache_raft_term").is_some_and(|t| t >= 1.0), "{}", on_leader.text);
    let info = format!(r#"geocache_node_info{{node_id="{leader}",region="{}"}}"#, cluster.nodes[&leader].region);
    assert_eq!(on_leader.value(&info), Some(1.0), "{}", on_leader.text);
    let on_follower = scrape_until(&cluster, follower, "follows, with a staleness bound", |s| {
        s.value(r#"geocache_raft_state{state="follower"}"#) == Some(1.0)
            && s.value("geocache_staleness_bound_seconds").is_some()
    })
    .await?;
    assert!(on_follower.value("geocache_raft_replication_lag_entries").is_none(), "only the leader knows lags");
    // The followers' staleness probes ask the leader for read indexes, all the time.
    scrape_until(&cluster, leader, "read-index rounds", |s| {
        s.value("geocache_read_index_rounds_total").is_some_and(|r| r > 0.0)
            && s.value("geocache_read_index_requests_total").is_some_and(|r| r > 0.0)
    })
    .await?;

    // Expiry: an entry with a short TTL is purged by the leader's next Tick, on every replica.
    let client = cluster.client_of(leader).await?;
    client.set_with("short", "lived", SetOptions::new().with_ttl(Duration::from_millis(200))).await?;
    for id in [leader, follower] {
        scrape_until(&cluster, id, "an expiration", |s| {
            s.value("geocache_cache_expirations_total").is_some_and(|n| n >= 1.0)
        })
        .await?;
    }

    // Writes over gRPC at the leader: six keys into four slots evict two, on every replica.
    let before = cluster.scrape(leader).await?;
    let mut last = 0;
    for i in 1..=6 {
        last = client.set(format!("k{i}"), "v").await?.version;
    }
    let after = cluster.scrape(leader).await?;
    let grpc_ok = r#"geocache_writes_total{api="grpc",result="ok"}"#;
    assert!(counter(&after, grpc_ok) >= counter(&before, grpc_ok) + 6.0, "{}", after.text);
    let write_count = r#"geocache_write_duration_seconds_count{api="grpc"}"#;
    assert!(counter(&after, write_count) >= counter(&before, write_count) + 6.0, "{}", after.text);
    // openraft publishes its indexes a moment after the write's answer left the state machine.
    scrape_until(&cluster, leader, "the raft indexes at the last write", |s| {
        ["geocache_raft_applied_index", "geocache_raft_commit_index", "geocache_raft_last_log_index"]
            .iter()
            .all(|series| s.value(series).is_some_and(|i| i >= last as f64))
    })
    .await?;
    for id in [leader, follower] {
        scrape_until(&cluster, id, "two evictions and a full cache", |s| {
            s.value("geocache_cache_evictions_total").is_some_and(|n| n >= 2.0)
                && s.value("geocache_cache_entries") == Some(4.0)
                && s.value("geocache_cache_bytes").is_some_and(|b| b > 0.0)
        })
        .await?;
    }

    // A write sent to the follower (the CLI asks exactly that node) is forwarded to the leader.
    let leader_before = cluster.scrape(leader).await?;
    let follower_before = cluster.scrape(follower).await?;
    let (code, _, err) = outcome(&cluster.cli(follower, &["set", "via-follower", "v"]));
    assert_eq!(code, 0, "{err}");
    let follower_after = cluster.scrape(follower).await?;
    let forwarded_ok = r#"geocache_forwarded_writes_total{result="ok"}"#;
    assert!(
        counter(&follower_after, forwarded_ok) > counter(&follower_before, forwarded_ok),
        "{}",
        follower_after.text
    );
    assert!(counter(&follower_after, grpc_ok) > counter(&follower_before, grpc_ok), "{}", follower_after.text);
    let arrived_forwarded = r#"geocache_writes_total{api="forwarded",result="ok"}"#;
    let leader_after = cluster.scrape(leader).await?;
    assert!(
        counter(&leader_after, arrived_forwarded) > counter(&leader_before, arrived_forwarded),
        "{}",
        leader_after.text
    );

    // The Redis port: a write (forwarded) and a read on the follower, under api="resp".
    let url = format!("redis://{}/", cluster.resp_addr(follower).context("a RESP port")?);
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(15)));
    let mut resp = redis::Client::open(url)?.get_multiplexed_async_connection_with_config(&config).await?;
    let resp_before = cluster.scrape(follower).await?;
    let _: () = redis::cmd("SET").arg("resp-key").arg("v").query_async(&mut resp).await?;
    let got: Option<String> = redis::cmd("GET").arg("resp-key").query_async(&mut resp).await?;
    assert_eq!(got.as_deref(), Some("v"));
    let resp_after = cluster.scrape(follower).await?;
    for series in [
        r#"geocache_writes_total{api="resp",result="ok"}"#,
        r#"geocache_reads_total{api="resp",level="linearizable",result="ok"}"#,
        r#"geocache_read_duration_seconds_count{api="resp",level="linearizable"}"#,
    ] {
        assert!(counter(&resp_after, series) > counter(&resp_before, series), "{series}: {}", resp_after.text);
    }

    // Reads over gRPC on the follower, per level; a hit and a miss.
    let mut reader = raw(&cluster, follower).await?;
    let reads_before = cluster.scrape(follower).await?;
    let hit = reader.get(get("resp-key", pb::Consistency::Linearizable, 0)).await?.into_inner();
    assert!(hit.found);
    let miss = reader.get(get("never-written", pb::Consistency::Stale, 0)).await?.into_inner();
    assert!(!miss.found);
    let reads_after = cluster.scrape(follower).await?;
    for series in [
        r#"geocache_reads_total{api="grpc",level="linearizable",result="ok"}"#,
        r#"geocache_reads_total{api="grpc",level="stale",result="ok"}"#,
        "geocache_cache_hits_total",
        "geocache_cache_misses_total",
    ] {
        assert!(counter(&reads_after, series) > counter(&reads_before, series), "{series}: {}", reads_after.text);
    }

    // A bounded read with a bound no replica can meet (1 ms: a probe alone takes a round trip to
    // the leader) is refused as stale, and counted so.
    let refused_before = cluster.scrape(follower).await?;
    eventually("a bounded read refused as stale", PATIENCE, || {
        let mut reader = reader.clone();
        async move {
            match reader.get(get("resp-key", pb::Consistency::Bounded, 1)).await {
                Err(status) => (status.metadata().get(pb::ERROR_KIND_HEADER).and_then(|v| v.to_str().ok())
                    == Some(pb::STALE_REPLICA))
                .then_some(()),
                Ok(_) => None,
            }
        }
    })
    .await?;
    let refused_after = cluster.scrape(follower).await?;
    let refused = r#"geocache_reads_total{api="grpc",level="bounded",result="stale_refused"}"#;
    assert!(counter(&refused_after, refused) > counter(&refused_before, refused), "{}", refused_after.text);

    // An election: kill the leader; a survivor sees the term go up and another leader.
    let survivor = follower;
    let before = cluster.scrape(survivor).await?;
    let term_before = counter(&before, "geocache_raft_term");
    let elections_before = counter(&before, "geocache_raft_elections_total");
    let changes_before = counter(&before, "geocache_raft_leader_changes_total");
    cluster.kill(leader)?;
    let new_leader = cluster.wait_for_leader(PATIENCE).await?;
    assert_ne!(new_leader, leader);
    let after = scrape_until(&cluster, survivor, "a new term and leader", |s| {
        s.value("geocache_raft_term").is_some_and(|t| t > term_before)
            && s.value("geocache_raft_leader_id") == Some(new_leader as f64)
    })
    .await?;
    assert!(counter(&after, "geocache_raft_elections_total") > elections_before, "{}", after.text);
    assert!(counter(&after, "geocache_raft_leader_changes_total") > changes_before, "{}", after.text);
    scrape_until(&cluster, new_leader, "the new leader counts its win", |s| {
        s.value("geocache_raft_became_leader_total").is_some_and(|n| n >= 1.0)
            && s.value(r#"geocache_raft_state{state="leader"}"#) == Some(1.0)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_answers_only_metrics() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = TestCluster::start_listening(BIN, 1, &[], Listeners { resp: false, metrics: true }).await?;
    let addr = cluster.metrics_addr(1).context("a metrics port")?;
    let ask = |request: String| {
        let addr = addr.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut answer = String::new();
            tokio::time::timeout(PATIENCE, stream.read_to_string(&mut answer)).await??;
            anyhow::Ok(answer)
        }
    };
    let close = "Connection: close\r\n\r\n";
    let elsewhere = ask(format!("GET /other HTTP/1.1\r\nHost: x\r\n{close}")).await?;
    assert!(elsewhere.starts_with("HTTP/1.1 404"), "{elsewhere}");
    let post = ask(format!("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{close}")).await?;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let ok = ask(format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{close}")).await?;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{ok}");
    assert!(ok.contains("# TYPE geocache_reads_total counter"), "{ok}");
    Ok(())
}
