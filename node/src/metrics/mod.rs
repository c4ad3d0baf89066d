//! The node's Prometheus metrics: what `geocache serve --metrics-listen ADDR` serves at
//! `/metrics` ([`http`]). The README's "Metrics" section says what each one means.
//!
//! Owns every metric name, label and help text, and the text rendering. Two kinds of values:
//!
//! * **Events**, counted where they happen, through the node's [`Recorder`] (held by `Node`):
//!   client reads and writes with their latency per API and read level, reads refused as stale,
//!   forwarded writes, cache hits and misses (all in `service::api::CacheApi`, the one read and
//!   write path of both the gRPC and the Redis front door), and what the node saw Raft do
//!   (leader changes, elections), counted by [`watch_raft`] from openraft's metrics.
//! * **State**, read when a scrape comes in ([`Scraped::of`]): Raft's term, leader, indexes and
//!   replication lag (openraft's metrics), the staleness bound, the read-index counters of the
//!   batcher, the cache's size, limits and eviction and expiry counts (the state machine, under
//!   its read lock). None of it is copied into a gauge ahead of time, so a scrape never shows a
//!   value older than itself and there is nothing to keep in sync.
//!
//! Invariants:
//! * Counting an event costs an atomic add or two on a series resolved when the node started:
//!   no allocation, lock or label lookup per request. Every label combination exists from the
//!   start (at 0), so `rate()` works before the first event.
//! * Nothing here changes what the node answers or replicates. The state machine's eviction and
//!   expiry counts are an observation outside the replicated state (`state_machine::Removals`).
//! * Each node has its own registry (no global one), so nodes never share counters.
//! * Counters count from the process's start; a restart resets them (as Prometheus expects).

pub mod http;

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::ServerState;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

use crate::admission::Work;
use crate::node::Node;
use crate::read::ReadLevel;
use crate::state_machine::{Limits, Removals};
use crate::types::NodeId;

/// What building or rendering the metrics can fail with. Both mean a bug here (a bad name, a
/// duplicate series), never bad input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metrics registry: {0}")]
    Registry(#[from] prometheus::Error),
    #[error("metrics text is not UTF-8: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
}

/// Which front door a request came in through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// The gRPC `Cache` service.
    Grpc,
    /// The Redis-protocol port.
    Resp,
}

/// The `api` label of a write: the front door, or `forwarded` for a write another node sent on
/// to this one, its leader (counted here and at the node the client asked, so summing
/// `grpc` and `resp` over the cluster counts each client write once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteApi {
    Grpc,
    Resp,
    Forwarded,
}

impl WriteApi {
    /// The label of a write arriving at `edge`, forwarded by another node or not.
    pub fn of(edge: Edge, forwarded: bool) -> WriteApi {
        match (edge, forwarded) {
            (_, true) => WriteApi::Forwarded,
            (Edge::Grpc, false) => WriteApi::Grpc,
            (Edge::Resp, false) => WriteApi::Resp,
        }
    }
}

/// How a read ended, for the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadResult {
    Ok,
    /// Refused because the replica's staleness bound exceeded the read's (`StaleReplica`).
    StaleRefused,
    /// Any other error (no leader, timeout, invalid key, ...).
    Error,
}

// Label values, each list in the order of its `*_index` function below: the series vectors are
// laid out by these indexes.
const EDGES: [&str; 2] = ["grpc", "resp"];
const WRITE_APIS: [&str; 3] = ["grpc", "resp", "forwarded"];
const LEVELS: [&str; 3] = ["linearizable", "bounded", "stale"];
const READ_RESULTS: [&str; 3] = ["ok", "stale_refused", "error"];
const WRITE_RESULTS: [&str; 2] = ["ok", "error"];

/// Latency buckets, in seconds: 100 µs (a local read) to 10 s (past any request timeout).
const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn level_index(level: ReadLevel) -> usize {
    match level {
        ReadLevel::Linearizable => 0,
        ReadLevel::Bounded(_) => 1,
        ReadLevel::Stale => 2,
    }
}

fn edge_index(edge: Edge) -> usize {
    match edge {
        Edge::Grpc => 0,
        Edge::Resp => 1,
    }
}

fn write_api_index(api: WriteApi) -> usize {
    match api {
        WriteApi::Grpc => 0,
        WriteApi::Resp => 1,
        WriteApi::Forwarded => 2,
    }
}

fn read_result_index(result: ReadResult) -> usize {
    match result {
        ReadResult::Ok => 0,
        ReadResult::StaleRefused => 1,
        ReadResult::Error => 2,
    }
}

/// Counts the node's events. Cheap to clone; one per node.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Instruments>,
}

/// Every event series, resolved once: indexing a `Vec` on the hot path, never a label lookup.
struct Instruments {
    registry: Registry,
    /// `[edge][level][result]`, flattened.
    reads: Vec<IntCounter>,
    /// `[edge][level]`, flattened.
    read_seconds: Vec<Histogram>,
    /// `[api][result]`, flattened.
    writes: Vec<IntCounter>,
    /// `[api]`.
    write_seconds: Vec<Histogram>,
    /// `[result]`.
    forwards: Vec<IntCounter>,
    hits: IntCounter,
    misses: IntCounter,
    leader_changes: IntCounter,
    elections: IntCounter,
    became_leader: IntCounter,
    /// `[write, read]`.
    shed: Vec<IntCounter>,
}

impl Recorder {
    /// A recorder with every series registered at zero in a registry of its own.
    pub fn new() -> Result<Recorder, Error> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, Error> {
            let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(vec.clone()))?;
            Ok(vec)
        };
        let histogram_vec = |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, Error> {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let vec = HistogramVec::new(opts, labels)?;
            registry.register(Box::new(vec.clone()))?;
            Ok(vec)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, Error> {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };

        let reads_vec = counter_vec(
            "geocache_reads_total",
            "Client reads this node answered or refused, by front door, read level and result.",
            &["api", "level", "result"],
        )?;
        let read_seconds_vec = histogram_vec(
            "geocache_read_duration_seconds",
            "Time from a client read's arrival to its answer (or refusal), by front door and read level.",
            &["api", "level"],
        )?;
        let mut reads = Vec::new();
        let mut read_seconds = Vec::new();
        for api in EDGES {
            for level in LEVELS {
                for result in READ_RESULTS {
                    reads.push(reads_vec.get_metric_with_label_values(&[api, level, result])?);
                }
                read_seconds.push(read_seconds_vec.get_metric_with_label_values(&[api, level])?);
            }
        }

        let writes_vec = counter_vec(
            "geocache_writes_total",
            "Client writes this node took, by how they arrived (grpc, resp, or forwarded by another node) and result.",
            &["api", "result"],
        )?;
        let write_seconds_vec = histogram_vec(
            "geocache_write_duration_seconds",
            "Time from a write's arrival to its answer, forwarding included, by how it arrived.",
            &["api"],
        )?;
        let mut writes = Vec::new();
        let mut write_seconds = Vec::new();
        for api in WRITE_APIS {
            for result in WRITE_RESULTS {
                writes.push(writes_vec.get_metric_with_label_values(&[api, result])?);
            }
            write_seconds.push(write_seconds_vec.get_metric_with_label_values(&[api])?);
        }

        let forwards_vec = counter_vec(
            "geocache_forwarded_writes_total",
            "Writes this node sent on to the leader, by result (error: nothing applied, or outcome unknown).",
            &["result"],
        )?;
        let forwards = WRITE_RESULTS
            .iter()
            .map(|result| forwards_vec.get_metric_with_label_values(&[*result]))
            .collect::<Result<Vec<_>, _>>()?;

        let shed_vec = counter_vec(
            "geocache_requests_shed_total",
            "Client requests refused at once because this node had as many in flight as it takes \
             (--max-pending-writes, --max-pending-reads), by kind (write, or read waiting on the leader).",
            &["request"],
        )?;
        let shed = ["write", "read"]
            .iter()
            .map(|kind| shed_vec.get_metric_with_label_values(&[*kind]))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Recorder {
            inner: Arc::new(Instruments {
                shed,
                reads,
                read_seconds,
                writes,
                write_seconds,
                forwards,
                hits: counter("geocache_cache_hits_total", "Keys client reads found here (live).")?,
                misses: counter("geocache_cache_misses_total", "Keys client reads did not find here.")?,
                leader_changes: counter(
                    "geocache_raft_leader_changes_total",
                    "Times the leader this node knows of changed to another node (the first one it learns of counts).",
                )?,
                elections: counter(
                    "geocache_raft_elections_total",
                    "Times this node saw the Raft term go up: each new term is one election, won or not.",
                )?,
                became_leader: counter("geocache_raft_became_leader_total", "Times this node became the leader.")?,
                registry,
            }),
        })
    }

    /// A client read at `level` through `edge` ended with `result` after `elapsed`.
    pub fn read(&self, edge: Edge, level: ReadLevel, result: ReadResult, elapsed: Duration) {
        let series = edge_index(edge) * LEVELS.len() + level_index(level);
        self.inner.reads[series * READ_RESULTS.len() + read_result_index(result)].inc();
        self.inner.read_seconds[series].observe(elapsed.as_secs_f64());
    }

    /// A read looked up keys: `found` of them live, `missing` not.
    pub fn lookups(&self, found: u64, missing: u64) {
        self.inner.hits.inc_by(found);
        self.inner.misses.inc_by(missing);
    }

    /// A client write that arrived as `api` ended (`ok`: applied or answered by the state
    /// machine, refusals included) after `elapsed`.
    pub fn write(&self, api: WriteApi, ok: bool, elapsed: Duration) {
        let series = write_api_index(api);
        self.inner.writes[series * WRITE_RESULTS.len() + usize::from(!ok)].inc();
        self.inner.write_seconds[series].observe(elapsed.as_secs_f64());
    }

    /// A request of kind `work` was refused by admission ([`crate::admission`]).
    pub fn shed(&self, work: Work) {
        self.inner.shed[match work {
            Work::Write => 0,
            Work::Read => 1,
        }]
        .inc();
    }

    /// This node forwarded a write to the leader.
    pub fn forwarded(&self, ok: bool) {
        self.inner.forwards[usize::from(!ok)].inc();
    }
}

/// Counts what this node sees Raft do, from openraft's metrics, until the node stops: a
/// leader change whenever the known leader becomes another node, an election whenever the term
/// goes up, and each time this node becomes leader. openraft publishes its metrics on a watch
/// channel, which keeps only the latest value, so changes quicker than this task runs are
/// seen as one (a counter here is a lower bound; the term gauge is exact).
pub async fn watch_raft(node: Node) {
    let mut metrics = node.raft().metrics();
    let (mut leader, mut term, mut leading) = {
        let m = metrics.borrow_and_update();
        (None, m.current_term, false)
    };
    let recorder = node.recorder();
    loop {
        {
            let m = metrics.borrow_and_update();
            if m.current_leader.is_some() && m.current_leader != leader {
                recorder.inner.leader_changes.inc();
                leader = m.current_leader;
            }
            if m.current_term > term {
                recorder.inner.elections.inc();
                term = m.current_term;
            }
            let now_leading = m.state == ServerState::Leader;
            if now_leading && !leading {
                recorder.inner.became_leader.inc();
            }
            leading = now_leading;
        }
        if metrics.changed().await.is_err() {
            return; // Raft stopped.
        }
    }
}

/// The node's state as one scrape sees it: every value read once, at scrape time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scraped {
    pub node_id: NodeId,
    pub region: String,
    pub state: Option<ServerState>,
    pub term: u64,
    /// 0 while no leader is known.
    pub leader_id: NodeId,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    /// On the leader: every other member it replicates to and how many entries that member's log
    /// is behind the leader's ([`crate::node::replication_lag`]). Empty elsewhere.
    pub replication_lag: Vec<(NodeId, u64)>,
    /// On the leader: how long since a quorum last acknowledged it.
    pub quorum_ack_age: Option<Duration>,
    /// This replica's staleness bound; `None` before its first probe completes.
    pub staleness_bound: Option<Duration>,
    pub read_index_requests: u64,
    pub read_index_rounds: u64,
    pub cache_entries: u64,
    pub cache_bytes: u64,
    pub limits: Limits,
    pub removals: Removals,
}

impl Scraped {
    /// Reads everything once from `node`: openraft's metrics, the staleness tracker, the
    /// read-index batcher and (under its read lock, briefly) the cache.
    pub fn of(node: &Node) -> Scraped {
        let m = node.metrics();
        let replication_lag = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != node.id())
            .filter_map(|(id, _)| Some((*id, crate::node::replication_lag(&m, *id)?)))
            .collect();
        let (cache_entries, cache_bytes, limits, removals) =
            node.reader().read(|cache, _| (cache.len() as u64, cache.used_bytes(), cache.limits(), cache.removals()));
        let (read_index_requests, read_index_rounds) = node.read_batcher().stats();
        Scraped {
            node_id: node.id(),
            region: node.config().region.clone(),
            state: Some(m.state),
            term: m.current_term,
            leader_id: m.current_leader.unwrap_or(0),
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: m.local_committed.as_ref().map_or(0, |l| l.index),
            applied_index: m.last_applied.as_ref().map_or(0, |l| l.index),
            snapshot_index: m.snapshot.as_ref().map_or(0, |l| l.index),
            purged_index: m.purged.as_ref().map_or(0, |l| l.index),
            replication_lag,
            quorum_ack_age: m.last_quorum_acked.as_ref().map(|acked| acked.elapsed()),
            staleness_bound: node.staleness().bound(),
            read_index_requests,
            read_index_rounds,
            cache_entries,
            cache_bytes,
            limits,
            removals,
        }
    }

    /// The metric families of this state, in the Prometheus data model.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        let id = self.node_id.to_string();
        out.push(family(
            "geocache_node_info",
            "Always 1; names this node's id and region.",
            MetricType::GAUGE,
            vec![gauge(1.0, &[("node_id", id.as_str()), ("region", self.region.as_str())])],
        ));
        let states = [
            (ServerState::Leader, "leader"),
            (ServerState::Follower, "follower"),
            (ServerState::Candidate, "candidate"),
            (ServerState::Learner, "learner"),
            (ServerState::Shutdown, "shutdown"),
        ];
        out.push(family(
            "geocache_raft_state",
            "1 for this node's current Raft role, 0 for the others.",
            MetricType::GAUGE,
            states
                .iter()
                .map(|(state, name)| gauge(f64::from(u8::from(self.state == Some(*state))), &[("state", *name)]))
                .collect(),
        ));
        let plain_gauges = [
            ("geocache_raft_term", "The current Raft term.", self.term),
            ("geocache_raft_leader_id", "The leader this node knows of; 0 while it knows none.", self.leader_id),
            ("geocache_raft_last_log_index", "Index of the last entry in this node's log.", self.last_log_index),
            ("geocache_raft_commit_index", "Index of the last entry this node knows is committed.", self.commit_index),
            (
                "geocache_raft_applied_index",
                "Index of the last entry applied to this node's cache.",
                self.applied_index,
            ),
            ("geocache_raft_snapshot_index", "Last index covered by this node's latest snapshot.", self.snapshot_index),
            (
                "geocache_raft_purged_index",
                "Last index purged from this node's log (behind a snapshot).",
                self.purged_index,
            ),
            ("geocache_cache_entries", "Entries stored, including expired ones not purged yet.", self.cache_entries),
            ("geocache_cache_bytes", "Bytes charged for the stored entries (key + value + 64 each).", self.cache_bytes),
            ("geocache_cache_max_entries", "The replicated entry limit; 0 is unlimited.", self.limits.max_entries),
            ("geocache_cache_max_bytes", "The replicated byte limit; 0 is unlimited.", self.limits.max_bytes),
        ];
        for (name, help, value) in plain_gauges {
            out.push(family(name, help, MetricType::GAUGE, vec![gauge(value as f64, &[])]));
        }
        let counters = [
            (
                "geocache_read_index_requests_total",
                "Read-index requests this node answered as leader (linearizable reads and staleness probes, its own and other nodes').",
                self.read_index_requests,
            ),
            (
                "geocache_read_index_rounds_total",
                "Quorum rounds this node ran as leader to answer read-index requests (requests share rounds).",
                self.read_index_rounds,
            ),
            (
                "geocache_cache_evictions_total",
                "Live entries this node's cache evicted (least recently used first) to stay within its limits.",
                self.removals.evicted,
            ),
            (
                "geocache_cache_expirations_total",
                "Entries this node's cache removed because they had expired (in log time).",
                self.removals.expired,
            ),
        ];
        for (name, help, value) in counters {
            out.push(family(name, help, MetricType::COUNTER, vec![counter(value as f64, &[])]));
        }
        // Only on the leader, only for known values: an absent series says "not known here".
        out.push(family(
            "geocache_raft_replication_lag_entries",
            "On the leader: how many log entries each other member is behind the leader's log.",
            MetricType::GAUGE,
            self.replication_lag
                .iter()
                .map(|(follower, lag)| gauge(*lag as f64, &[("follower", follower.to_string().as_str())]))
                .collect(),
        ));
        out.push(family(
            "geocache_raft_quorum_ack_age_seconds",
            "On the leader: time since a quorum last acknowledged it (a leader refuses writes past one election timeout).",
            MetricType::GAUGE,
            self.quorum_ack_age.iter().map(|age| gauge(age.as_secs_f64(), &[])).collect(),
        ));
        out.push(family(
            "geocache_staleness_bound_seconds",
            "Upper bound on how stale this replica is (bounded reads with a smaller bound are refused); absent until its first probe completes.",
            MetricType::GAUGE,
            self.staleness_bound.iter().map(|bound| gauge(bound.as_secs_f64(), &[])).collect(),
        ));
        out
    }
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.to_string());
            pair
        })
        .collect()
}

fn gauge(value: f64, label_pairs: &[(&str, &str)]) -> Metric {
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    let mut metric = Metric::default();
    metric.set_label(labels(label_pairs));
    metric.set_gauge(gauge);
    metric
}

fn counter(value: f64, label_pairs: &[(&str, &str)]) -> Metric {
    let mut counter = Counter::default();
    counter.set_value(value);
    let mut metric = Metric::default();
    metric.set_label(labels(label_pairs));
    metric.set_counter(counter);
    metric
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus text exposition of `recorder`'s events and the `scraped` state, families in
/// name order. Families with no series (e.g. replication lag on a follower) are left out.
pub fn render(recorder: &Recorder, scraped: &Scraped) -> Result<String, Error> {
    let mut families = recorder.inner.registry.gather();
    families.extend(scraped.families().into_iter().filter(|f| !f.get_metric().is_empty()));
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut text = Vec::new();
    prometheus::TextEncoder::new().encode(&families, &mut text)?;
    Ok(String::from_utf8(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scraped() -> Scraped {
        Scraped {
            node_id: 2,
            region: "eu-west".into(),
            state: Some(ServerState::Leader),
            term: 3,
            leader_id: 2,
            last_log_index: 40,
            commit_index: 39,
            applied_index: 38,
            snapshot_index: 20,
            purged_index: 10,
            replication_lag: vec![(1, 0), (3, 7)],
            quorum_ack_age: Some(Duration::from_millis(150)),
            staleness_bound: Some(Duration::from_millis(12)),
            read_index_requests: 9,
            read_index_rounds: 4,
            cache_entries: 5,
            cache_bytes: 400,
            limits: Limits { max_entries: 100, max_bytes: 0 },
            removals: Removals { evicted: 1, expired: 2 },
        }
    }

    /// The value of the series `line_start` (name and labels exactly as rendered).
    fn value(text: &str, line_start: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn scraped_state_renders_as_prometheus_text() {
        let recorder = Recorder::new().unwrap();
        let text = render(&recorder, &scraped()).unwrap();
        assert!(text.contains("# TYPE geocache_raft_term gauge\n"), "{text}");
        assert!(text.contains("# HELP geocache_raft_term The current Raft term.\n"), "{text}");
        assert_eq!(value(&text, "geocache_raft_term"), Some(3.0));
        assert_eq!(value(&text, "geocache_raft_leader_id"), Some(2.0));
        assert_eq!(value(&text, "geocache_raft_state{state=\"leader\"}"), Some(1.0));
        assert_eq!(value(&text, "geocache_raft_state{state=\"follower\"}"), Some(0.0));
        assert_eq!(value(&text, "geocache_node_info{node_id=\"2\",region=\"eu-west\"}"), Some(1.0));
        assert_eq!(value(&text, "geocache_raft_replication_lag_entries{follower=\"3\"}"), Some(7.0));
        assert_eq!(value(&text, "geocache_staleness_bound_seconds"), Some(0.012));
        assert!(text.contains("# TYPE geocache_cache_evictions_total counter\n"), "{text}");
        assert_eq!(value(&text, "geocache_cache_evictions_total"), Some(1.0));
        assert_eq!(value(&text, "geocache_cache_expirations_total"), Some(2.0));
        assert_eq!(value(&text, "geocache_read_index_rounds_total"), Some(4.0));
        // Families come in name order, each once.
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn unknown_values_are_absent_not_zero() {
        let follower = Scraped {
            state: Some(ServerState::Follower),
            replication_lag: Vec::new(),
            quorum_ack_age: None,
            staleness_bound: None,
            ..scraped()
        };
        let text = render(&Recorder::new().unwrap(), &follower).unwrap();
        for absent in [
            "geocache_raft_replication_lag_entries",
            "geocache_raft_quorum_ack_age_seconds",
            "geocache_staleness_bound_seconds",
        ] {
            assert!(!text.contains(absent), "{absent} rendered: {text}");
        }
        assert_eq!(value(&text, "geocache_raft_state{state=\"follower\"}"), Some(1.0));
    }

    #[test]
    fn events_land_in_their_own_series_and_every_series_starts_at_zero() {
        let recorder = Recorder::new().unwrap();
        let text = render(&recorder, &scraped()).unwrap();
        // 2 front doors x 3 levels x 3 results, all present before any read.
        assert_eq!(text.lines().filter(|l| l.starts_with("geocache_reads_total{")).count(), 18);
        assert_eq!(
            value(&text, "geocache_reads_total{api=\"resp\",level=\"bounded\",result=\"stale_refused\"}"),
            Some(0.0)
        );

        recorder.read(
            Edge::Resp,
            ReadLevel::Bounded(Duration::from_millis(5)),
            ReadResult::StaleRefused,
            Duration::from_micros(300),
        );
        recorder.read(Edge::Grpc, ReadLevel::Stale, ReadResult::Ok, Duration::from_millis(2));
        recorder.write(WriteApi::of(Edge::Grpc, true), true, Duration::from_millis(3));
        recorder.write(WriteApi::of(Edge::Resp, false), false, Duration::from_millis(3));
        recorder.forwarded(false);
        recorder.lookups(2, 1);
        let text = render(&recorder, &scraped()).unwrap();
        assert_eq!(
            value(&text, "geocache_reads_total{api=\"resp\",level=\"bounded\",result=\"stale_refused\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "geocache_reads_total{api=\"grpc\",level=\"stale\",result=\"ok\"}"), Some(1.0));
        assert_eq!(value(&text, "geocache_reads_total{api=\"grpc\",level=\"stale\",result=\"error\"}"), Some(0.0));
        assert_eq!(value(&text, "geocache_read_duration_seconds_count{api=\"resp\",level=\"bounded\"}"), Some(1.0));
        assert_eq!(
            value(&text, "geocache_read_duration_seconds_bucket{api=\"resp\",level=\"bounded\",le=\"0.0005\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "geocache_read_duration_seconds_bucket{api=\"resp\",level=\"bounded\",le=\"0.00025\"}"),
            Some(0.0)
        );
        assert_eq!(value(&text, "geocache_writes_total{api=\"forwarded\",result=\"ok\"}"), Some(1.0));
        assert_eq!(value(&text, "geocache_writes_total{api=\"resp\",result=\"error\"}"), Some(1.0));
        assert_eq!(value(&text, "geocache_writes_total{api=\"grpc\",result=\"ok\"}"), Some(0.0));
        assert_eq!(value(&text, "geocache_forwarded_writes_total{result=\"error\"}"), Some(1.0));
        assert_eq!(value(&text, "geocache_cache_hits_total"), Some(2.0));
        assert_eq!(value(&text, "geocache_cache_misses_total"), Some(1.0));
    }
}
