//! Overload mode (`--overload`): beside the checked workload, a flood of writes as fast as the
//! machine allows, and a watch on leadership, so the liveness checker
//! ([`crate::checker::liveness`]) can judge whether a saturated cluster keeps its leader and keeps
//! committing.
//!
//! * The **flood** is `clients` closed-loop writers, each with one write in flight at a time and
//!   no pause between writes, each through its own leader-following client (the library's one
//!   retry policy, so a refusal is retried with backoff inside the call's deadline). Every write
//!   goes to a fresh key (`flood-<writer>-<n>`), so the key space grows for the whole run and
//!   the cache fills to capacity and evicts. The flood is load, not evidence: it is not in the
//!   history and its keys are never read by the checked workload, so the safety checkers judge
//!   exactly what they judge without it. What it contributes is *when* writes were
//!   acknowledged, and how many were refused or left indeterminate.
//! * The **watch** asks every running node for its own term and leader (admin `Status`, local,
//!   without the state hash, so it costs the node almost nothing) every [`WATCH_INTERVAL`].
//!
//! Invariants: the flood stops when told (within one call's deadline); counts are exact (every
//! write is counted once: acknowledged, refused or indeterminate); commit times are on the
//! history's clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use geocache_client::{Bytes, Error as ClientError};
use serde::Serialize;
use tokio::sync::watch;

use crate::checker::liveness::LeadershipSample;
use crate::control::{Cluster, ProcessState};

/// How often the watch samples leadership.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The flood's settings.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct OverloadConfig {
    /// Closed-loop writers.
    pub clients: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Deadline of one write (retries included).
    #[serde(serialize_with = "crate::report::human_duration")]
    pub timeout: Duration,
    /// The longest healthy stretch without an acknowledged write that is still live; `None`:
    /// twice the election timeout.
    #[serde(serialize_with = "crate::report::human_duration_opt")]
    pub max_gap: Option<Duration>,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig { clients: 64, value_size: 100, timeout: Duration::from_secs(2), max_gap: None }
    }
}

/// What the flood did, as it goes into `results.json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FloodFigures {
    pub acknowledged: u64,
    /// Refused with nothing applied (after the client's own retries ran out of time).
    pub refused: u64,
    /// Outcome unknown (timed out or the connection broke mid-call).
    pub indeterminate: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Acknowledged writes per second over the first and the last 30 s of the flood.
    pub first_30s_per_s: f64,
    pub last_30s_per_s: f64,
}

/// The flood's running record.
pub struct Flood {
    start: Instant,
    commits_ns: Mutex<Vec<u64>>,
    acknowledged: AtomicU64,
    refused: AtomicU64,
    indeterminate: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Flood {
    /// An empty record on the history's clock (`start` is the history's zero).
    pub fn new(start: Instant) -> Flood {
        Flood {
            start,
            commits_ns: Mutex::default(),
            acknowledged: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            indeterminate: AtomicU64::new(0),
            errors: Mutex::default(),
        }
    }

    /// Acknowledged writes so far (for the progress line).
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// When each write was acknowledged, ns on the history's clock, in no particular order.
    pub fn commit_times(&self) -> Vec<u64> {
        self.commits_ns.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The figures for the report; the flood ran from `from_ns` to `to_ns`.
    pub fn figures(&self, from_ns: u64, to_ns: u64) -> FloodFigures {
        let commits = self.commit_times();
        let rate = |a: u64, b: u64| {
            let n = commits.iter().filter(|&&t| t >= a && t < b).count();
            if b > a {
                n as f64 / ((b - a) as f64 / 1e9)
            } else {
                0.0
            }
        };
        let window = 30_000_000_000u64.min(to_ns.saturating_sub(from_ns));
        FloodFigures {
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            indeterminate: self.indeterminate.load(Ordering::Relaxed),
            errors: self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            first_30s_per_s: rate(from_ns, from_ns + window),
            last_30s_per_s: rate(to_ns - window, to_ns),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn record(&self, result: Result<(), ClientError>) {
        match result {
            Ok(()) => {
                let at = self.now_ns();
                self.commits_ns.lock().unwrap_or_else(|e| e.into_inner()).push(at);
                self.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let counter = if e.outcome_known() { &self.refused } else { &self.indeterminate };
                counter.fetch_add(1, Ordering::Relaxed);
                *self.errors.lock().unwrap_or_else(|e| e.into_inner()).entry(error_kind(&e).into()).or_default() += 1;
            }
        }
    }
}

/// A failure's kind, by variant (never by message text).
fn error_kind(e: &ClientError) -> &'static str {
    match e {
        ClientError::Unavailable { .. } => "unavailable",
        ClientError::Timeout(_) => "timeout",
        ClientError::Transport(_) => "transport",
        ClientError::StaleReplica { .. } => "stale-replica",
        ClientError::InvalidArgument(_) => "invalid-argument",
        ClientError::Rejected(_) => "rejected",
        ClientError::Internal(_) => "internal",
        _ => "other",
    }
}

/// Runs the flood against `endpoints` until `stop` turns true; every write is recorded in `flood`.
pub async fn run_flood(
    config: OverloadConfig,
    endpoints: Vec<(u64, String)>,
    tls_ca_pem: Option<std::sync::Arc<[u8]>>,
    flood: Arc<Flood>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    anyhow::ensure!(config.clients > 0, "--overload-clients must be at least 1");
    let all: Vec<String> = endpoints.into_iter().map(|(_, a)| a).collect();
    let value = Bytes::from(vec![b'x'; config.value_size]);
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..config.clients {
        let client = crate::client::client_builder(tls_ca_pem.as_deref())
            .endpoints(all.clone())
            .timeout(config.timeout)
            .connect_timeout(config.timeout / 2)
            .attempt_timeout(config.timeout / 2)
            .build()
            .await
            .context("build a flood writer's client")?;
        let (flood, value, mut stop) = (flood.clone(), value.clone(), stop.clone());
        writers.spawn(async move {
            for n in 0u64.. {
                if *stop.borrow() {
                    break;
                }
                let write = client.set(format!("flood-{w}-{n}"), value.clone());
                tokio::select! {
                    result = write => flood.record(result.map(|_| ())),
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        });
    }
    while writers.join_next().await.is_some() {}
    Ok(())
}

/// Samples leadership (the highest term any running node reports, and the leader it names)
/// every [`WATCH_INTERVAL`] until `stop` turns true.
pub async fn watch_leadership(
    cluster: Arc<Cluster>,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) -> Vec<LeadershipSample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return samples,
        }
        let mut asks = tokio::task::JoinSet::new();
        for id in cluster.ids() {
            if cluster.state(id) != Some(ProcessState::Running) {
                continue;
            }
            let cluster = cluster.clone();
            asks.spawn(async move { cluster.local_role(id).await });
        }
        let mut best: Option<(u64, Option<u64>)> = None;
        while let Some(answer) = asks.join_next().await {
            if let Ok(Some(status)) = answer {
                if best.is_none_or(|(term, _)| status.term > term) {
                    best = Some((status.term, status.leader_id));
                } else if let Some((term, None)) = best {
                    if status.term == term {
                        best = Some((term, status.leader_id));
                    }
                }
            }
        }
        let at_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        samples.push(LeadershipSample { at_ns, term: best.map(|b| b.0), leader: best.and_then(|b| b.1) });
    }
}
