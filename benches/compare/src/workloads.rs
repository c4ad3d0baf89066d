//! The four comparisons of issue 9's table, what each pits geocache against, which figure its
//! ratio is taken of, and the goal the issue sets for it.

use std::fmt;

use crate::table::Figures;

/// The note every write comparison carries: the two sides do not promise the same durability.
pub const FSYNC_NOTE: &str = "etcd fsyncs every commit; geocache (sled) does not fsync per write";

/// One row of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Workload {
    /// Writes from every client: geocache vs etcd, both at their leader.
    Writes,
    /// One client writing at the leader; compared by p50 latency: geocache vs etcd.
    #[value(name = "write-1")]
    WriteOne,
    /// Linearizable reads from every client, spread over the three nodes / members:
    /// geocache (`Linearizable`) vs etcd (`Range`, serializable = false).
    LinearizableReads,
    /// Stale reads from every client, spread over geocache's three nodes, vs Redis `GET` on
    /// its one node.
    StaleReads,
}

/// The system geocache is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Etcd,
    Redis,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Etcd => "etcd",
            Peer::Redis => "Redis",
        })
    }
}

/// Which figure a ratio is taken of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// geocache's ops/s over the peer's: above 1 is faster.
    Throughput,
    /// geocache's p50 over the peer's: below 1 is faster.
    MedianLatency,
}

impl Workload {
    /// Every workload, in the order they run and print.
    pub const ALL: [Workload; 4] =
        [Workload::Writes, Workload::WriteOne, Workload::LinearizableReads, Workload::StaleReads];

    /// The flag value (`--only writes`).
    pub fn id(self) -> &'static str {
        match self {
            Workload::Writes => "writes",
            Workload::WriteOne => "write-1",
            Workload::LinearizableReads => "linearizable-reads",
            Workload::StaleReads => "stale-reads",
        }
    }

    /// The row's title, as in issue 9's table, with `clients` the clients of the wide rows.
    pub fn title(self, clients: usize) -> String {
        match self {
            Workload::Writes => format!("writes, {clients} clients"),
            Workload::WriteOne => "1-client write at the leader, p50".to_string(),
            Workload::LinearizableReads => format!("linearizable reads, {clients} clients"),
            Workload::StaleReads => format!("stale reads, {clients} clients over 3 nodes"),
        }
    }

    pub fn peer(self) -> Peer {
        match self {
            Workload::Writes | Workload::WriteOne | Workload::LinearizableReads => Peer::Etcd,
            Workload::StaleReads => Peer::Redis,
        }
    }

    pub fn is_write(self) -> bool {
        matches!(self, Workload::Writes | Workload::WriteOne)
    }

    /// How many clients it runs with, given the wide rows' count.
    pub fn clients(self, clients: usize) -> usize {
        match self {
            Workload::WriteOne => 1,
            _ => clients,
        }
    }

    pub fn measure(self) -> Measure {
        match self {
            Workload::WriteOne => Measure::MedianLatency,
            _ => Measure::Throughput,
        }
    }

    /// Issue 9's goal for this row.
    pub fn goal(self) -> &'static str {
        match self {
            Workload::Writes => ">= 3x etcd, p99 <= 10 ms",
            Workload::WriteOne => "<= 0.5x etcd",
            Workload::LinearizableReads => ">= 3x etcd",
            Workload::StaleReads => ">= 0.5x Redis, p99 <= 2 ms",
        }
    }

    /// Whether `geocache` meets the goal against `peer` (`None` if either measured nothing).
    pub fn goal_met(self, geocache: &Figures, peer: &Figures) -> Option<bool> {
        let ratio = self.ratio(geocache, peer)?;
        Some(match self {
            Workload::Writes => ratio >= 3.0 && geocache.p99_ms <= 10.0,
            Workload::WriteOne => ratio <= 0.5,
            Workload::LinearizableReads => ratio >= 3.0,
            Workload::StaleReads => ratio >= 0.5 && geocache.p99_ms <= 2.0,
        })
    }

    /// geocache's figure over the peer's (see [`Measure`]); `None` if either measured nothing.
    pub fn ratio(self, geocache: &Figures, peer: &Figures) -> Option<f64> {
        if geocache.ops == 0 || peer.ops == 0 {
            return None;
        }
        let (g, p) = match self.measure() {
            Measure::Throughput => (geocache.ops_per_s, peer.ops_per_s),
            Measure::MedianLatency => (geocache.p50_ms, peer.p50_ms),
        };
        (p > 0.0).then_some(g / p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(ops_per_s: f64, p50_ms: f64, p99_ms: f64) -> Figures {
        Figures { ops: 100, ops_per_s, p50_ms, p99_ms, ..Figures::default() }
    }

    #[test]
    fn ratios_and_goals_follow_issue_9() {
        let (fast, slow) = (figures(9000.0, 1.0, 8.0), figures(3000.0, 4.0, 30.0));
        assert_eq!(Workload::Writes.ratio(&fast, &slow), Some(3.0));
        assert_eq!(Workload::Writes.goal_met(&fast, &slow), Some(true));
        // Three times the rate but a p99 over 10 ms misses.
        assert_eq!(Workload::Writes.goal_met(&figures(9000.0, 1.0, 11.0), &slow), Some(false));
        // The 1-client row compares medians: 1 ms against 4 ms is 0.25x.
        assert_eq!(Workload::WriteOne.ratio(&fast, &slow), Some(0.25));
        assert_eq!(Workload::WriteOne.goal_met(&fast, &slow), Some(true));
        assert_eq!(Workload::StaleReads.goal_met(&slow, &fast), Some(false));
        assert_eq!(Workload::LinearizableReads.ratio(&Figures::default(), &slow), None);
    }
}
