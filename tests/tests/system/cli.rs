//! The `geocache` command line against real processes: membership changes step by step, exit
//! codes, and bad input that must be refused with a clear message while changing nothing.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use geocache_tests::{eventually, outcome, run_cli, DevRun, TestCluster};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_geocache-under-test");

fn status_json(cluster: &TestCluster, endpoint_id: u64) -> Result<Value> {
    let (code, out, err) = outcome(&cluster.cli(endpoint_id, &["cluster", "status", "--json"]));
    anyhow::ensure!(code == 0, "status failed: {err}");
    Ok(serde_json::from_str(&out)?)
}

fn role_of(status: &Value, id: u64) -> Option<String> {
    status["nodes"].as_array()?.iter().find(|n| n["id"] == id).map(|n| n["role"].as_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_learner_promote_it_then_remove_a_node() -> Result<()> {
    let mut cluster = TestCluster::start(BIN, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    assert_eq!(outcome(&cluster.cli(1, &["set", "seed", "1"])).0, 0);

    // Node 4 starts empty and is not part of a cluster until added.
    cluster.spawn(4, &[])?;
    cluster.admin(4).await?;
    let (addr4, peer4) = (cluster.addr(4), cluster.peer_addr(4));
    let (code, _, err) = outcome(&cluster.cli(
        1,
        &[
            "cluster",
            "add",
            "--id",
            "4",
            "--addr",
            &addr4,
            "--peer-addr",
            &peer4,
            "--region",
            "eu-west",
            "--learner",
            "--timeout",
            "20s",
        ],
    ));
    assert_eq!(code, 0, "add learner failed: {err}");
    let status = status_json(&cluster, 1)?;
    assert_eq!(role_of(&status, 4).as_deref(), Some("learner"), "{status}");
    assert_eq!(status["nodes"].as_array().unwrap().len(), 4);

    // The learner has the data.
    let (code, out, _) = outcome(&cluster.cli(4, &["get", "seed", "--consistency", "stale"]));
    assert_eq!((code, out.as_str()), (0, "1"));

    // Promote: `cluster add` without --learner on a caught-up learner makes it a voter.
    let (code, _, err) = outcome(&cluster.cli(
        1,
        &[
            "cluster",
            "add",
            "--id",
            "4",
            "--addr",
            &addr4,
            "--peer-addr",
            &peer4,
            "--region",
            "eu-west",
            "--timeout",
            "20s",
        ],
    ));
    assert_eq!(code, 0, "promote failed: {err}");
    eventually("node 4 to report itself a follower", Duration::from_secs(10), || async {
        let status = status_json(&cluster, 1).ok()?;
        (role_of(&status, 4).as_deref() == Some("follower")).then_some(())
    })
    .await?;

    // Remove a voter that is not the leader.
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let (code, out, err) = outcome(&cluster.cli(1, &["cluster", "remove", "--id", &victim.to_string()]));
    assert_eq!(code, 0, "remove failed: {err}");
    assert!(out.contains(&format!("removed node {victim}")), "{out}");
    let status = status_json(&cluster, leader)?;
    let ids: Vec<u64> = status["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_u64().unwrap()).collect();
    assert!(!ids.contains(&victim), "removed node still listed: {status}");
    assert_eq!(ids.len(), 3);
    for n in status["nodes"].as_array().unwrap() {
        for field in ["id", "addr", "region", "role", "term", "applied"] {
            assert!(!n[field].is_null(), "status lacks {field}: {n}");
        }
    }
    assert_eq!(status["leader"], leader);

    // The cluster still takes writes with the new membership.
    cluster.kill(victim)?;
    let (code, _, err) = outcome(&cluster.cli(4, &["set", "after-change", "ok"]));
    assert_eq!(code, 0, "write after the membership change failed: {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() -> Result<()> {
    let cluster = TestCluster::start(BIN, 3).await?;
    let (code, _, err) = outcome(&cluster.cli(1, &["set", "keep", "original"]));
    assert_eq!(code, 0, "{err}");

    let long_key = "k".repeat(4097);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["set", "", "x"], "key must not be empty"),
        (vec!["set", &long_key, "x"], "over the limit"),
        (vec!["set", "keep", "x", "--ttl", "0s"], "ttl"),
        (vec!["get", ""], "key must not be empty"),
        (vec!["cluster", "remove", "--id", "42"], "node 42 is not a member"),
        (vec!["cluster", "init"], "already initialised"),
        (vec!["cluster", "add", "--id", "1", "--addr", "127.0.0.1:1", "--region", "x"], "already a voter"),
    ];
    for (args, expected) in &cases {
        let (code, _, err) = outcome(&cluster.cli(2, args));
        let shown: Vec<String> =
            args.iter().map(|a| if a.len() > 20 { format!("<{} bytes>", a.len()) } else { a.to_string() }).collect();
        assert_eq!(code, 2, "{shown:?} should fail with exit 2, got {code}: {err}");
        // Progress notes may precede it; the error itself is the one last line.
        let error_line = err.lines().last().unwrap_or_default();
        assert!(error_line.starts_with("geocache "), "{shown:?}: {err:?}");
        assert!(error_line.contains(expected), "{shown:?}: message {error_line:?} lacks {expected:?}");
    }

    // A value over the 4 MiB limit is too long for a command line; send it through the API.
    let mut raw = geocache_proto::cache_client::CacheClient::connect(format!("http://{}", cluster.addr(2)))
        .await?
        .max_encoding_message_size(64 << 20);
    let big = geocache_proto::SetRequest {
        key: "keep".into(),
        value: vec![b'v'; 4 * 1024 * 1024 + 1].into(),
        ..Default::default()
    };
    let refused = raw.set(big).await.expect_err("an oversized value must be refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("over the limit"), "{}", refused.message());

    // Nothing changed: the value is intact, membership is the same three voters.
    let (code, out, err) = outcome(&cluster.cli(3, &["get", "keep"]));
    assert_eq!((code, out.as_str()), (0, "original"), "{err}");
    let status = status_json(&cluster, 1)?;
    assert_eq!(status["nodes"].as_array().context("nodes")?.len(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_deadlines() -> Result<()> {
    let cluster = TestCluster::start(BIN, 1).await?;
    let (code, out, _) = outcome(&cluster.cli(1, &["set", "a", "1", "--ttl", "1h"]));
    assert_eq!(code, 0);
    assert!(out.contains("version"), "{out}");
    let (code, out, _) = outcome(&cluster.cli(1, &["get", "a"]));
    assert_eq!((code, out.as_str()), (0, "1"));
    let (code, out, err) = outcome(&cluster.cli(1, &["get", "missing"]));
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", "not found"));
    let (code, _, _) = outcome(&cluster.cli(1, &["del", "a"]));
    assert_eq!(code, 0);
    let (code, _, _) = outcome(&cluster.cli(1, &["get", "a"]));
    assert_eq!(code, 1);

    // An endpoint nobody listens on: exit 2 quickly, naming the cause.
    let dead = format!("127.0.0.1:{}", geocache_tests::free_port());
    let started = std::time::Instant::now();
    let (code, _, err) = outcome(&cluster.cli_at(&dead, &["get", "a", "--timeout", "2s"]));
    assert_eq!(code, 2);
    assert!(err.contains(&dead) && err.contains("cannot connect"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "the CLI hung");

    // A node that is not in any cluster says so.
    let mut lonely = TestCluster::new(BIN)?;
    lonely.spawn(7, &[])?;
    lonely.admin(7).await?;
    let (code, _, err) = outcome(&lonely.cli(7, &["set", "a", "1"]));
    assert_eq!(code, 2);
    assert!(err.contains("not part of a cluster"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_raft_traffic_from_another_cluster() -> Result<()> {
    let a = TestCluster::start(BIN, 1).await?;
    let b = TestCluster::start(BIN, 1).await?;
    assert_eq!(outcome(&b.cli(1, &["set", "owner", "b"])).0, 0);
    let b_status = status_json(&b, 1)?;

    // Cluster A tries to make B's node its learner: B must refuse A's replication.
    let (code, _, _) = outcome(&a.cli(
        1,
        &[
            "cluster",
            "add",
            "--id",
            "2",
            "--addr",
            &b.addr(1),
            "--peer-addr",
            &b.peer_addr(1),
            "--region",
            "x",
            "--learner",
            "--timeout",
            "3s",
        ],
    ));
    assert_eq!(code, 2, "adding another cluster's node must not succeed");

    // B is untouched: same cluster id, its data, still its own leader and sole member.
    let after = status_json(&b, 1)?;
    assert_eq!(after["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(after["leader"], b_status["leader"]);
    let (code, out, _) = outcome(&b.cli(1, &["get", "owner"]));
    assert_eq!((code, out.as_str()), (0, "b"));
    let a_id = status_json(&a, 1)?["cluster_id"].clone();
    assert_ne!(a_id, after["cluster_id"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_starts_a_working_cluster_and_stops_it_on_sigterm() -> Result<()> {
    let (dev, lines) = DevRun::start(Path::new(BIN), &[]).await?;
    let (base, peer_base, resp_base, metrics_base) = (dev.base, dev.peer_base, dev.resp_base, dev.metrics_base);
    assert!(lines.iter().any(|l| l.contains("cluster is up")), "{lines:?}");
    let peer_of_third = format!("peer 127.0.0.1:{}", peer_base + 2);
    assert!(lines.iter().any(|l| l.contains(&peer_of_third)), "each node's peer address is printed: {lines:?}");
    let resp_of_third = format!("resp 127.0.0.1:{}", resp_base + 2);
    assert!(lines.iter().any(|l| l.contains(&resp_of_third)), "each node's RESP address is printed: {lines:?}");
    let metrics_of_third = format!("127.0.0.1:{}", metrics_base + 2);
    assert!(
        lines.iter().any(|l| l.contains(&format!("metrics {metrics_of_third}"))),
        "each node's metrics address is printed: {lines:?}"
    );
    let scraped = geocache_tests::scrape(&metrics_of_third).await?;
    assert!(scraped.value("geocache_raft_term").is_some_and(|t| t >= 1.0), "{}", scraped.text);

    let endpoint = format!("127.0.0.1:{base}");
    let probe = TestCluster::new(BIN)?;
    let (code, _, err) = outcome(&probe.cli_at(&endpoint, &["set", "hello", "world"]));
    assert_eq!(code, 0, "{err}");
    let third = format!("127.0.0.1:{}", base + 2);
    let (code, out, _) = outcome(&probe.cli_at(&third, &["get", "hello"]));
    assert_eq!((code, out.as_str()), (0, "world"));

    // SIGTERM stops dev and every node it started.
    let pid = dev.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status()?.success());
    eventually("every dev node to stop", Duration::from_secs(20), || async {
        let down = (0..3).all(|i| {
            std::net::TcpStream::connect(("127.0.0.1", base + i)).is_err()
                && std::net::TcpStream::connect(("127.0.0.1", peer_base + i)).is_err()
        });
        down.then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_reads_back_a_value_of_the_largest_allowed_size() -> Result<()> {
    let cluster = TestCluster::start(BIN, 1).await?;
    // Exactly the default value limit (4 MiB). One command-line argument is capped at 128 KiB
    // on Linux, so the value is stored through the Rust client; the CLI reads it back.
    let value = vec![b'v'; geocache_node::config::DEFAULT_MAX_VALUE_BYTES];
    let client = cluster.client_of(1).await?;
    client.set("big", value.clone()).await?;

    let output = cluster.cli(1, &["get", "big", "--timeout", "20s"]);
    let (code, _, err) = outcome(&output);
    assert_eq!(code, 0, "get of a maximal value failed: {err}");
    assert_eq!(output.stdout.len(), value.len() + 1, "value and a newline");
    assert!(output.stdout[..value.len()] == value[..], "the value read back differs");
    Ok(())
}

/// A TCP proxy in front of one node that loses the answer to the first request carrying at
/// least `request_bytes` bytes: once that much has gone from the client to the node on the
/// first connection, nothing more comes back on it, and the connection is cut when `cut` is
/// notified. Later connections pass both ways untouched. Counts connections.
struct AnswerLosingProxy {
    addr: String,
    connections: Arc<AtomicUsize>,
    request_sent: Arc<tokio::sync::Notify>,
    cut: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AnswerLosingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AnswerLosingProxy {
    async fn start(upstream: String, request_bytes: usize) -> Result<AnswerLosingProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let request_sent = Arc::new(tokio::sync::Notify::new());
        let cut = Arc::new(tokio::sync::Notify::new());
        let (count, sent, cut_it) = (connections.clone(), request_sent.clone(), cut.clone());
        let task = tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
                let first = count.fetch_add(1, Ordering::SeqCst) == 0;
                if !first {
                    tasks.spawn(async move {
                        let (mut client, mut server) = (client, server);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                    continue;
                }
                let (sent, cut_it) = (sent.clone(), cut_it.clone());
                tasks.spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let forwarded = Arc::new(AtomicUsize::new(0));
                    let up_count = forwarded.clone();
                    let up = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            // Counted before it is passed on, so the node's answer to it can
                            // never slip through.
                            if up_count.fetch_add(n, Ordering::SeqCst) + n >= request_bytes {
                                sent.notify_one();
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let down = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if forwarded.load(Ordering::SeqCst) >= request_bytes {
                                continue; // the answer is lost
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    // Both halves drop (the connection closes) when the test says so.
                    tokio::select! {
                        _ = async { tokio::join!(up, down) } => {}
                        _ = cut_it.notified() => {}
                    }
                });
            }
        });
        Ok(AnswerLosingProxy { addr, connections, request_sent, cut, task })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_write_whose_answer_is_lost_is_retried_and_applied_once() -> Result<()> {
    let cluster = TestCluster::start(BIN, 1).await?;
    // Large enough to tell the write's request from the connection's handshake; small enough
    // for one command-line argument and one HTTP/2 flow-control window.
    let value = "w".repeat(32 * 1024);
    let proxy = AnswerLosingProxy::start(cluster.addr(1), value.len()).await?;

    // `--if-absent`: a retry the node did not recognise as the same write would find the key
    // present and fail its condition.
    let endpoint = proxy.addr.clone();
    let cli = tokio::task::spawn_blocking(move || {
        run_cli(BIN.as_ref(), &endpoint, &["set", "once", &value, "--if-absent", "--timeout", "20s"])
    });

    // The node applied the first attempt; only then is its connection (and answer) cut.
    tokio::time::timeout(Duration::from_secs(20), proxy.request_sent.notified()).await?;
    let client = cluster.client_of(1).await?;
    let applied = eventually("the first attempt to apply", Duration::from_secs(20), || async {
        client.get_with("once", geocache_client::ReadOptions::stale()).await.ok().flatten()
    })
    .await?;
    proxy.cut.notify_one();

    let (code, out, err) = outcome(&cli.await?);
    assert_eq!(code, 0, "the CLI should retry the lost write and get the first answer: {err}");
    assert_eq!(out, format!("stored: version {}", applied.version), "the answer is the first attempt's");
    assert!(proxy.connections.load(Ordering::SeqCst) >= 2, "the CLI never retried");
    // Applied once: still the first attempt's version.
    let now = client.get("once").await?.context("the key")?;
    assert_eq!(now.version, applied.version);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_a_cluster_and_reports_what_it_measured() -> Result<()> {
    let cluster = TestCluster::start(BIN, 3).await?;
    cluster.wait_for_leader(Duration::from_secs(10)).await?;

    // A fill writes exactly its keys, once each, and stops.
    let (code, out, err) = outcome(&cluster.cli(1, &["bench", "--fill", "200", "--clients", "8", "--json"]));
    anyhow::ensure!(code == 0, "fill failed: {err}");
    let fill: Value = serde_json::from_str(&out)?;
    assert_eq!(fill["ops"]["write"]["ops"], 200, "{fill:#}");
    assert_eq!(fill["errors"], serde_json::json!({}), "{fill:#}");
    let status = status_json(&cluster, 1)?;
    let applied = status["nodes"][0]["applied"].as_u64().context("applied index")?;
    assert!(applied >= 200, "200 writes were committed: {status:#}");

    // A mixed open-loop run reports both kinds of operation, at about the rate asked for.
    let args = ["bench", "--workload", "mixed:0.5", "--consistency", "stale", "--duration", "2s", "--rate", "100"];
    let (code, out, err) = outcome(&cluster.cli(2, &[&args[..], &["--keys", "50", "--json"]].concat()));
    anyhow::ensure!(code == 0, "mixed run failed: {err}");
    let mixed: Value = serde_json::from_str(&out)?;
    let reads = mixed["ops"]["read"]["ops"].as_u64().context("reads")?;
    let writes = mixed["ops"]["write"]["ops"].as_u64().context("writes")?;
    assert!(reads > 0 && writes > 0, "{mixed:#}");
    assert!((150..=210).contains(&(reads + writes)), "2 s at 100 ops/s: {mixed:#}");
    assert!(mixed["ops"]["read"]["p99_ms"].as_f64().context("p99")? > 0.0, "{mixed:#}");

    // Nothing to talk to: exit 2, saying so.
    let dead = format!("127.0.0.1:{}", geocache_tests::free_port());
    let (code, _, err) = outcome(&cluster.cli_at(&dead, &["bench", "--duration", "1s", "--timeout", "500ms"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no operation succeeded") || err.contains("cannot reach"), "{err}");
    Ok(())
}
