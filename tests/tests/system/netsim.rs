//! Three real nodes whose node-to-node links all cross a [`Netsim`] (50 ms one way), while the
//! test's clients dial the nodes directly: what distance costs and what it doesn't, and a
//! partitioned follower.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use geocache_client::{Client, ReadOptions};
use geocache_node::netsim::Netsim;
use geocache_proto as pb;
use geocache_tests::{eventually, NodeProcess, TestCluster};

const BIN: &str = env!("CARGO_BIN_EXE_geocache-under-test");
const ONE_WAY: Duration = Duration::from_millis(50);

/// Starts three voters, each with `--route` flags through `net` (every link `ONE_WAY` long) and
/// Raft timing that fits the 100 ms round trip, initialises them and waits for a leader.
async fn start_behind(net: &Netsim) -> Result<(TestCluster, u64)> {
    let mut cluster = TestCluster::new(BIN)?;
    let mut addrs = Vec::new();
    for id in 1..=3 {
        cluster.reserve(id);
        // The proxy sits in front of the peer listeners: node-to-node traffic only.
        let addr: SocketAddr = cluster.peer_addr(id).parse()?;
        addrs.push((id, addr));
    }
    net.add_mesh(&addrs)?;
    for (from, to) in net.links() {
        net.set_delay(from, to, ONE_WAY)?;
    }
    for id in 1..=3 {
        let mut args = net.route_args(id);
        args.extend(["--heartbeat", "300ms", "--election-timeout", "1500ms"].map(String::from));
        cluster.spawn(id, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    let members = cluster.nodes.values().map(NodeProcess::member).collect();
    cluster.admin(1).await?.init(pb::InitRequest { members }).await.context("init")?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    Ok((cluster, leader))
}

/// A client that talks to node `id` only: no topology discovery, so nothing but that node can
/// answer or route its calls.
async fn pinned(cluster: &TestCluster, id: u64, timeout: Duration) -> Result<Client> {
    Ok(Client::builder().endpoints([cluster.addr(id)]).discovery(false).timeout(timeout).build().await?)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_pays_a_wan_round_trip_and_a_stale_follower_read_does_not() -> Result<()> {
    let net = Netsim::new();
    let (cluster, leader) = start_behind(&net).await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let client = cluster.client().await?;
    client.set("warm-up", "x").await?; // finds the leader

    let mut last = 0;
    let mut writes = Vec::new();
    for i in 0..5 {
        let start = Instant::now();
        last = client.set("city", format!("lisbon-{i}")).await?.version;
        let took = start.elapsed();
        writes.push(took);
        // Committing needs a majority: the leader and one follower, 50 ms away each way.
        assert!(took >= 2 * ONE_WAY, "write {i} took {took:?}, less than one round trip");
    }
    eprintln!("writes at the leader took {writes:?}");
    cluster.wait_applied(follower, last, Duration::from_secs(10)).await?;

    let local = pinned(&cluster, follower, Duration::from_secs(5)).await?;
    local.get_with("city", ReadOptions::stale()).await?; // opens the connection
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let entry = local.get_with("city", ReadOptions::stale()).await?.context("missing on the follower")?;
        times.push(start.elapsed());
        assert_eq!(entry.value, "lisbon-4");
        assert_eq!(entry.meta.node_id, follower, "the stale read was not answered by the follower");
    }
    eprintln!("stale reads at follower {follower} took {times:?}");
    // The median, not the maximum: one read can lose the CPU for a while on a loaded machine,
    // but a read that crossed the WAN cannot take less than a round trip.
    let typical = median(times.clone());
    assert!(typical < ONE_WAY / 2, "stale follower reads took {times:?}");

    // A bounded read whose bound the follower meets is just as local.
    let mut bounded_times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let entry = local.get_with("city", ReadOptions::bounded(Duration::from_secs(2))).await?.context("missing")?;
        bounded_times.push(start.elapsed());
        assert_eq!(entry.meta.node_id, follower, "the bounded read was not answered by the follower");
        assert!(entry.meta.staleness_bound_ms.is_some_and(|b| b <= 2000));
    }
    eprintln!("bounded(2s) reads at follower {follower} took {bounded_times:?}");
    assert!(median(bounded_times.clone()) < ONE_WAY / 2, "bounded follower reads took {bounded_times:?}");

    // A linearizable read on the follower asks the leader for a read index: a round trip.
    let start = Instant::now();
    local.get("city").await?.context("missing")?;
    let took = start.elapsed();
    eprintln!("a linearizable read at follower {follower} took {took:?}");
    assert!(took >= 2 * ONE_WAY, "a linearizable follower read took {took:?}, less than one round trip");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_follower_serves_stale_reads_fails_writes_and_recovers_after_heal() -> Result<()> {
    let net = Netsim::new();
    let (cluster, leader) = start_behind(&net).await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    // Short links, so a healthy follower's bound (about a probe's round trips) is under 200 ms.
    for (from, to) in net.links() {
        net.set_delay(from, to, Duration::from_millis(10))?;
    }
    let written = cluster.client().await?.set("k", "before").await?;
    cluster.wait_applied(follower, written.version, Duration::from_secs(10)).await?;

    let deadline = Duration::from_secs(2);
    let via_follower = pinned(&cluster, follower, deadline).await?;
    let stale_read = || async {
        let entry = via_follower.get_with("k", ReadOptions::stale()).await?.context("k missing on the follower")?;
        anyhow::ensure!(entry.value == "before" && entry.meta.node_id == follower, "unexpected {entry:?}");
        Ok::<_, anyhow::Error>(())
    };

    let bounded = |max: Duration| {
        let via_follower = via_follower.clone();
        async move { via_follower.get_with("k", ReadOptions::bounded(max)).await }
    };
    eventually("bounded(200ms) reads before the partition", Duration::from_secs(10), || async {
        bounded(Duration::from_millis(200)).await.ok()
    })
    .await?;

    net.isolate(follower);
    let isolated_at = Instant::now();
    stale_read().await.context("a stale read on the isolated follower")?;
    // Its bound grows from its last confirmed probe: bounded(200ms) reads soon refuse, typed.
    let refused_after = eventually("bounded(200ms) reads to be refused", Duration::from_secs(5), || async {
        match bounded(Duration::from_millis(200)).await {
            Err(geocache_client::Error::StaleReplica { bound, .. }) => Some((isolated_at.elapsed(), bound)),
            _ => None,
        }
    })
    .await?;
    eprintln!("bounded(200ms) refused {:?} after isolation, replica bound {:?}", refused_after.0, refused_after.1);
    assert!(refused_after.0 < Duration::from_secs(2), "took {:?}", refused_after.0);
    assert!(refused_after.1.is_some_and(|b| b > Duration::from_millis(200)));
    let start = Instant::now();
    match via_follower.set("k", "during").await {
        Ok(w) => bail!("a write through the isolated follower succeeded: {w:?}"),
        Err(e) => {
            let took = start.elapsed();
            eprintln!("the write through the isolated follower failed after {took:?}: {e}");
            assert!(took < deadline + Duration::from_secs(1), "the failed write took {took:?}: {e}");
        }
    }
    // By now the follower's election timer has fired; it still answers from its own state.
    stale_read().await.context("a stale read on the isolated follower after its failed write")?;
    // Once it has been out of contact longer than an election takes, it refuses writes at once
    // as unavailable (nothing sent, safe to retry) instead of letting them hang.
    let refused =
        eventually("writes through the follower to be refused as unavailable", Duration::from_secs(10), || async {
            match via_follower.set("k", "during").await {
                Err(e @ geocache_client::Error::Unavailable { .. }) => Some(e),
                _ => None,
            }
        })
        .await?;
    assert!(refused.outcome_known(), "{refused}");
    eprintln!("isolated follower refuses writes: {refused}");
    // The majority side keeps committing.
    let majority = pinned(&cluster, leader, Duration::from_secs(5)).await?;
    eventually("a write on the majority side", Duration::from_secs(15), || async {
        majority.set("majority", "yes").await.ok()
    })
    .await?;

    net.heal();
    let healed_at = Instant::now();
    let healed = eventually("a write through the healed follower", Duration::from_secs(30), || async {
        via_follower.set("k", "after").await.ok()
    })
    .await?;
    eprintln!("a write through the follower succeeded {:?} after heal", healed_at.elapsed());
    assert!(healed.applied);
    let entry = cluster.client().await?.get("k").await?.context("k missing")?;
    assert_eq!(entry.value, "after");
    assert_eq!(entry.version, healed.version);
    eventually("bounded reads on the healed follower", Duration::from_secs(10), || async {
        bounded(Duration::from_millis(200)).await.ok()
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_on_a_lagging_follower_and_bounds_that_hold_under_lag() -> Result<()> {
    let net = Netsim::new();
    let (cluster, leader) = start_behind(&net).await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    // The follower trails: everything between it and the leader takes 150 ms each way.
    net.set_delay(leader, follower, 3 * ONE_WAY)?;
    net.set_delay(follower, leader, 3 * ONE_WAY)?;
    let writer = pinned(&cluster, leader, Duration::from_secs(5)).await?;
    let reader = pinned(&cluster, follower, Duration::from_secs(5)).await?;

    // Read-your-writes: acknowledged by the leader, read at once on the lagging follower.
    for i in 0..5 {
        let written = writer.set("ryw", format!("v{i}")).await?;
        let options = ReadOptions::stale().with_min_version(written.version);
        let entry = reader.get_with("ryw", options).await?.context("ryw missing")?;
        assert!(entry.version >= written.version, "read v{} before its own write v{}", entry.version, written.version);
        assert_eq!(entry.meta.node_id, follower);
    }

    // Bounded reads under a write stream on a lagging replica: an answered read is never older
    // than the newest write acknowledged more than the bound before the read began.
    // A probe costs two 150 ms hops plus the leader's quorum round: the bound hovers around 450 ms.
    let max = Duration::from_millis(800);
    let stop = Instant::now() + Duration::from_secs(4);
    let acks = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, u64)>::new()));
    let stream = {
        let (acks, writer) = (acks.clone(), writer.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while Instant::now() < stop {
                i += 1;
                if let Ok(w) = writer.set("register", format!("{i}")).await {
                    acks.lock().unwrap().push((Instant::now(), w.version));
                }
            }
        })
    };
    let mut answered = Vec::new();
    let mut refused = 0;
    while Instant::now() < stop {
        let invoked = Instant::now();
        match reader.get_with("register", ReadOptions::bounded(max)).await {
            Ok(entry) => answered.push((invoked, entry.map(|e| e.version).unwrap_or(0))),
            Err(geocache_client::Error::StaleReplica { .. }) => refused += 1,
            Err(e) => return Err(e.into()),
        }
    }
    stream.await?;
    let acks = acks.lock().unwrap().clone();
    assert!(
        acks.len() >= 5 && answered.len() >= 20,
        "{} writes, {} reads answered, {refused} refused",
        acks.len(),
        answered.len()
    );
    for (invoked, version) in &answered {
        let must_see = acks.iter().filter(|(at, _)| *at + max < *invoked).map(|(_, v)| *v).max().unwrap_or(0);
        assert!(*version >= must_see, "bounded({max:?}) read saw v{version}, but v{must_see} was acked before");
    }
    eprintln!(
        "{} bounded reads on a lagging follower checked ({} refused), {} writes",
        answered.len(),
        refused,
        acks.len()
    );
    Ok(())
}
