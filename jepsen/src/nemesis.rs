//! The nemesis: faults injected into a running [`Cluster`] on a schedule, from this process only.
//!
//! The schedule alternates a healthy window and a fault window (`heal_window`, then
//! `fault_window`, then `heal_window`, ...), starting healthy. The fault windows go in rounds:
//! each round uses every configured [`NemesisKind`] once, in an order shuffled by an [`StdRng`]
//! seeded with the test's seed, so even a short test sees every kind. At the start of each fault
//! window the nemesis picks the fault's shape and targets at random (same generator), injects
//! the [`Fault`], and undoes it at the window's end. Each
//! window is recorded ([`FaultWindow`]) for the report. When the test stops, any fault in force
//! is undone at once and then everything is healed regardless ([`Cluster::heal_all`]): every
//! link up, every paused node resumed, every killed node restarted.
//!
//! The kinds:
//! * `partition`: blackholes links through the fault proxy (connections stall, as in a real
//!   partition; see `geocache_node::netsim`), in one of five shapes ([`PartitionShape`]):
//!   random halves, one node isolated, the current leader in a minority, a bridge (two halves
//!   that reach each other only through one node), or one way (one node's calls to the others
//!   blackholed while theirs to it go through; the leader half the time). The proxy has one
//!   link per ordered pair, each carrying the calls one node makes to the other, so cutting
//!   `a -> b` alone is a one-way cut.
//! * `kill`: `kill -9` a random minority of the nodes (1 to (n-1)/2); restarted on the same
//!   data dir at the window's end.
//! * `pause`: SIGSTOP one random node; SIGCONT at the window's end.
//! * `crash-points`: one random node is restarted *armed* with one fault point of the node
//!   (the `fault-points` feature of `geocache-node`; [`CRASH_POINTS`]), `FAILPOINTS=POINT=ACTION`,
//!   so it aborts at that step; at the window's end it is restarted unarmed on its data dir
//!   (killed first if it never got there). Points that fire on every write (log flush, apply)
//!   panic with a small probability, so the node dies soon but not at its first write; the
//!   others panic the first time they are reached, and the nemesis makes sure they are: a
//!   vote-save point gets an election (the leader, or the armed node if it leads, is restarted),
//!   a snapshot-install point gets a node that lagged (it stays down for half the window first
//!   so the log it missed is purged behind a snapshot; the runner makes the nodes snapshot
//!   every few hundred entries when this nemesis is on). Each window records the point and
//!   whether the node died at it ([`FaultWindow::fault_point`], [`FaultWindow::died`]).
//!
//! * `clock`: one node's wall clock (the leader's half the time, as it stamps the time on every
//!   command it proposes) is skewed through the node's `--fault-injection` admin call, in one
//!   of two shapes ([`ClockShape`]): a *jump* to an offset of up to `--clock-skew` either way,
//!   held for the window, or a *strobe* that flips the offset between 0 and that value every
//!   few tens of ms. Back to 0 at the window's end. Log time never runs backwards, so a
//!   forward skew can make entries expire early by up to the offset: the TTL checker is told
//!   the spread of offsets the run applied ([`clock_spread_ms`]).
//! * `membership`: a voter (any, the leader included) leaves the voter set while the
//!   workload runs, in one of three shapes ([`MembershipShape`]): *demoted* to a learner,
//!   *removed* from the cluster altogether, or demoted while a partition isolates one random
//!   node (so the change needs the majority side). At the window's end the links heal and
//!   every node becomes a voter again (a removed node is added back as a learner and caught
//!   up first).
//!
//! Replaying a seed replays the choices of kind, shape and targets, except where a choice
//! depends on the cluster's state at the time (the leader-minority shape's leader, the clock
//! nemesis's leader, and which nodes are up to be killed or paused).

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use geocache_node::netsim::LinkState;
use geocache_node::types::NodeId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::watch;

use crate::control::{Cluster, Membership, ProcessState};

/// A kind of fault the nemesis can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NemesisKind {
    Partition,
    Kill,
    Pause,
    CrashPoints,
    Clock,
    Membership,
}

impl NemesisKind {
    pub const ALL: [NemesisKind; 6] = [
        NemesisKind::Partition,
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::CrashPoints,
        NemesisKind::Clock,
        NemesisKind::Membership,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::Partition => "partition",
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::CrashPoints => "crash-points",
            NemesisKind::Clock => "clock",
            NemesisKind::Membership => "membership",
        }
    }

    /// Parses a comma-separated list: `partition,kill`, `all` (every kind) or `none`.
    pub fn parse_list(spec: &str) -> Result<Vec<NemesisKind>, String> {
        let mut kinds: Vec<NemesisKind> = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let named = match item {
                "none" => vec![],
                "all" => NemesisKind::ALL.to_vec(),
                other => vec![other.parse()?],
            };
            for kind in named {
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
        }
        Ok(kinds)
    }
}

impl FromStr for NemesisKind {
    type Err = String;

    fn from_str(s: &str) -> Result<NemesisKind, String> {
        NemesisKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = NemesisKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown nemesis {s:?}; known: {}, all, none", names.join(", "))
        })
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a partition splits the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionShape {
    /// The nodes shuffled and cut in two: floor(n/2) against the rest.
    RandomHalves,
    /// One random node alone against the rest.
    IsolateOne,
    /// The current leader plus random others, (n-1)/2 in all, against the majority: forces an
    /// election, and leaves a deposed leader serving on the minority side.
    LeaderMinority,
    /// Two halves that cannot reach each other, and one random node (the bridge) that reaches
    /// both: each half sees a majority only through the bridge (Jepsen's "bridge").
    Bridge,
    /// One node (the leader half the time) whose calls to every other node are blackholed,
    /// while theirs to it go through: it hears the cluster but cannot speak to it.
    OneWay,
}

impl PartitionShape {
    const ALL: [PartitionShape; 5] = [
        PartitionShape::RandomHalves,
        PartitionShape::IsolateOne,
        PartitionShape::LeaderMinority,
        PartitionShape::Bridge,
        PartitionShape::OneWay,
    ];

    fn name(self) -> &'static str {
        match self {
            PartitionShape::RandomHalves => "random-halves",
            PartitionShape::IsolateOne => "isolate-one",
            PartitionShape::LeaderMinority => "leader-minority",
            PartitionShape::Bridge => "bridge",
            PartitionShape::OneWay => "one-way",
        }
    }

    /// The links (`from`, `to`: calls from `from` to `to`) a partition of this shape with these
    /// `groups` (as [`partition`] makes them) blackholes. Every other link stays up.
    fn cut_links(self, groups: &[Vec<NodeId>]) -> Vec<(NodeId, NodeId)> {
        let across = |a: &[NodeId], b: &[NodeId]| -> Vec<(NodeId, NodeId)> {
            a.iter().flat_map(|x| b.iter().flat_map(move |y| [(*x, *y), (*y, *x)])).collect()
        };
        let mut cut = match (self, groups) {
            // [left, [bridge], right]: only the two halves are cut from each other.
            (PartitionShape::Bridge, [left, _, right]) => across(left, right),
            // [[node], rest]: only the node's own calls.
            (PartitionShape::OneWay, [node, rest]) => {
                node.iter().flat_map(|x| rest.iter().map(move |y| (*x, *y))).collect()
            }
            _ => {
                let mut cut = Vec::new();
                for (i, a) in groups.iter().enumerate() {
                    for b in &groups[i + 1..] {
                        cut.extend(across(a, b));
                    }
                }
                cut
            }
        };
        cut.sort_unstable();
        cut
    }
}

/// How the `clock` nemesis skews a node's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockShape {
    /// The offset is set once and held for the window.
    Jump,
    /// The offset flips between 0 and the skew every `period_ms`.
    Strobe { period_ms: u64 },
}

/// How the `membership` nemesis takes a voter out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MembershipShape {
    /// Voter to learner: it still replicates, but neither votes nor counts for a quorum.
    Demote,
    /// Out of the cluster: it gets no more entries until it is added back.
    Remove,
    /// Demoted while a partition isolates one random node (maybe the same one, maybe the
    /// leader), so only the majority side can make the change.
    DemotePartitioned,
}

impl MembershipShape {
    const ALL: [MembershipShape; 3] =
        [MembershipShape::Demote, MembershipShape::Remove, MembershipShape::DemotePartitioned];

    fn name(self) -> &'static str {
        match self {
            MembershipShape::Demote => "demote",
            MembershipShape::Remove => "remove",
            MembershipShape::DemotePartitioned => "demote-partitioned",
        }
    }
}

/// How long a membership change may be retried before the nemesis gives up (a harness error:
/// a cluster with a healthy majority should manage it well within this).
const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The node's fault points the `crash-points` nemesis arms, with the `fail` action each gets:
/// `1*panic` (the first time the step is reached) or, for steps on every write batch, a chance
/// per pass, at most once. openraft merges writes into batches (one flush and one apply step
/// for many writes), so the chance per pass is high enough that a 3 s window at a modest rate
/// reaches it.
pub const CRASH_POINTS: [(&str, &str); 10] = [
    ("log-flush-before", "10%1*panic"),
    ("log-flush-after", "10%1*panic"),
    ("apply-after", "10%1*panic"),
    ("vote-save-before", "1*panic"),
    ("vote-save-after", "1*panic"),
    ("purge-mid", "1*panic"),
    ("snapshot-build-before-persist", "1*panic"),
    ("snapshot-build-after-persist", "1*panic"),
    ("snapshot-install-before-persist", "1*panic"),
    ("snapshot-install-mid", "1*panic"),
];

/// One fault, with its targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Links between groups blackholed, links inside a group up; for a bridge, only the links
    /// between the two halves, for one-way only the first group's calls to the second
    /// ([`PartitionShape::cut_links`]).
    Partition { shape: PartitionShape, groups: Vec<Vec<NodeId>> },
    /// These nodes killed with SIGKILL.
    Kill { nodes: Vec<NodeId> },
    /// This node stopped with SIGSTOP.
    Pause { node: NodeId },
    /// This node restarted with `FAILPOINTS=point=action`.
    CrashPoint { node: NodeId, point: &'static str, action: &'static str },
    /// This node's wall clock shifted by `offset_ms`.
    Clock { node: NodeId, shape: ClockShape, offset_ms: i64 },
    /// This voter taken out of the voter set; for [`MembershipShape::DemotePartitioned`],
    /// `isolated` cut off by a partition meanwhile.
    Membership { node: NodeId, shape: MembershipShape, isolated: Option<NodeId> },
}

impl Fault {
    pub fn kind(&self) -> NemesisKind {
        match self {
            Fault::Partition { .. } => NemesisKind::Partition,
            Fault::Kill { .. } => NemesisKind::Kill,
            Fault::Pause { .. } => NemesisKind::Pause,
            Fault::CrashPoint { .. } => NemesisKind::CrashPoints,
            Fault::Clock { .. } => NemesisKind::Clock,
            Fault::Membership { .. } => NemesisKind::Membership,
        }
    }

    /// The nodes the fault hits: the smaller side of a partition, the killed or paused nodes,
    /// the skewed node, the voter taken out (and the isolated one).
    pub fn nodes(&self) -> Vec<NodeId> {
        match self {
            Fault::Partition { shape: PartitionShape::Bridge, groups } => groups.get(1).cloned().unwrap_or_default(),
            Fault::Partition { groups, .. } => groups.iter().min_by_key(|g| g.len()).cloned().unwrap_or_default(),
            Fault::Kill { nodes } => nodes.clone(),
            Fault::Pause { node } | Fault::CrashPoint { node, .. } | Fault::Clock { node, .. } => vec![*node],
            Fault::Membership { node, isolated, .. } => {
                let mut nodes = vec![*node];
                nodes.extend(isolated.filter(|i| i != node));
                nodes
            }
        }
    }

    /// Applies the fault. `window` is how long it will last (a snapshot-install crash point
    /// keeps its node down for half of it first).
    pub async fn inject(&self, cluster: &Cluster, window: Duration) -> Result<()> {
        match self {
            Fault::Partition { shape, groups } => {
                let net = cluster.net();
                net.heal();
                for (from, to) in shape.cut_links(groups) {
                    net.set_link(from, to, LinkState::Blackhole).with_context(|| format!("cut link {from}->{to}"))?;
                }
            }
            Fault::Kill { nodes } => {
                for id in nodes {
                    cluster.kill(*id)?;
                }
            }
            Fault::Pause { node } => cluster.pause(*node)?,
            Fault::CrashPoint { node, point, action } => {
                let node = *node;
                let leader = cluster.leader().await;
                if cluster.state(node) == Some(ProcessState::Running) {
                    cluster.kill(node)?;
                }
                if point.starts_with("snapshot-install") {
                    // Writes go on without it; its log falls behind the others' snapshots.
                    tokio::time::sleep(window / 2).await;
                }
                let failpoints = format!("{point}={action}");
                cluster.restart_with_env(node, &[("FAILPOINTS", &failpoints)]).await?;
                if point.starts_with("vote-save") {
                    // An election, so the armed node saves a vote: restarting it was one if it
                    // led; otherwise restart the leader.
                    if let Some(leader) = leader.filter(|l| *l != node) {
                        if cluster.state(leader) == Some(ProcessState::Running) {
                            cluster.kill(leader)?;
                            cluster.restart(leader).await?;
                        }
                    }
                }
            }
            Fault::Clock { node, offset_ms, .. } => cluster.set_clock_offset(*node, *offset_ms).await?,
            Fault::Membership { node, shape, isolated } => {
                if let Some(isolated) = isolated {
                    let rest: Vec<NodeId> = cluster.ids().into_iter().filter(|id| id != isolated).collect();
                    cluster.net().partition(&[vec![*isolated], rest]);
                }
                match shape {
                    MembershipShape::Remove => cluster.remove_member(*node, MEMBERSHIP_CHANGE_TIMEOUT).await?,
                    MembershipShape::Demote | MembershipShape::DemotePartitioned => {
                        cluster.remove_voter(*node, MEMBERSHIP_CHANGE_TIMEOUT).await?
                    }
                }
            }
        }
        Ok(())
    }

    /// Undoes the fault: heals the links, restarts the killed nodes (waiting until they accept
    /// connections), resumes the paused node.
    pub async fn heal(&self, cluster: &Cluster) -> Result<()> {
        match self {
            Fault::Partition { .. } => cluster.net().heal(),
            Fault::Kill { nodes } => {
                for id in nodes {
                    cluster.restart(*id).await?;
                }
            }
            Fault::Pause { node } => cluster.resume(*node)?,
            Fault::CrashPoint { node, .. } => {
                cluster.poll_exits();
                if cluster.state(*node) == Some(ProcessState::Running) {
                    cluster.kill(*node)?; // it never reached the point: disarm it
                }
                if cluster.state(*node) != Some(ProcessState::Running) {
                    cluster.restart(*node).await?;
                }
            }
            Fault::Clock { node, .. } => cluster.set_clock_offset(*node, 0).await?,
            Fault::Membership { isolated, .. } => {
                if isolated.is_some() {
                    cluster.net().heal();
                }
                cluster.restore_membership(MEMBERSHIP_CHANGE_TIMEOUT).await?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |nodes: &[NodeId]| nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
        match self {
            Fault::Partition { shape: PartitionShape::Bridge, groups } if groups.len() == 3 => {
                write!(f, "partition bridge [{}] <{}> [{}]", list(&groups[0]), list(&groups[1]), list(&groups[2]))
            }
            Fault::Partition { shape: PartitionShape::OneWay, groups } if groups.len() == 2 => {
                write!(f, "partition one-way [{}] -/-> [{}]", list(&groups[0]), list(&groups[1]))
            }
            Fault::Partition { shape, groups } => {
                let sides: Vec<String> = groups.iter().map(|g| format!("[{}]", list(g))).collect();
                write!(f, "partition {} {}", shape.name(), sides.join(" | "))
            }
            Fault::Kill { nodes } => write!(f, "kill -9 [{}]", list(nodes)),
            Fault::Pause { node } => write!(f, "pause [{node}]"),
            Fault::CrashPoint { node, point, action } => write!(f, "crash-point {point}={action} [{node}]"),
            Fault::Clock { node, shape: ClockShape::Jump, offset_ms } => {
                write!(f, "clock jump {offset_ms:+}ms [{node}]")
            }
            Fault::Clock { node, shape: ClockShape::Strobe { period_ms }, offset_ms } => {
                write!(f, "clock strobe 0/{offset_ms:+}ms every {period_ms}ms [{node}]")
            }
            Fault::Membership { node, shape, isolated: None } => write!(f, "membership {} [{node}]", shape.name()),
            Fault::Membership { node, shape, isolated: Some(isolated) } => {
                write!(f, "membership {} [{node}] with [{isolated}] isolated", shape.name())
            }
        }
    }
}

/// A fault as it happened, for the report. Times are on the history's clock.
#[derive(Clone, Debug, Serialize)]
pub struct FaultWindow {
    pub nemesis: NemesisKind,
    /// e.g. `partition isolate-one [2] | [1,3]`, `kill -9 [4]`.
    pub fault: String,
    /// The nodes cut off (see [`Fault::nodes`]).
    pub nodes: Vec<NodeId>,
    /// For a partition, its sides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<Vec<NodeId>>>,
    /// For `crash-points`, the fault point the node was armed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_point: Option<String>,
    /// For `crash-points`, whether the node died at that point before the window ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub died: Option<bool>,
    /// For `clock`, the offset applied to the node's clock (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// For `membership`, the voters and learners once the change was made (as the leader
    /// reported them then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership: Option<Membership>,
    /// When the fault took effect, ns since the test started.
    pub start_ns: u64,
    /// When it was undone (for a kill: when the restarted nodes accepted connections again);
    /// `None` if the harness failed before.
    pub end_ns: Option<u64>,
}

impl FaultWindow {
    /// Whether `time_ns` falls inside the window.
    pub fn contains(&self, time_ns: u64) -> bool {
        time_ns >= self.start_ns && self.end_ns.is_none_or(|end| time_ns < end)
    }
}

#[cfg(test)]
impl FaultWindow {
    /// A window with only what every kind has (the kind-specific fields empty), for tests.
    pub(crate) fn plain(
        nemesis: NemesisKind,
        fault: &str,
        nodes: Vec<NodeId>,
        start_ns: u64,
        end_ns: Option<u64>,
    ) -> Self {
        FaultWindow {
            nemesis,
            fault: fault.into(),
            nodes,
            groups: None,
            fault_point: None,
            died: None,
            clock_offset_ms: None,
            membership: None,
            start_ns,
            end_ns,
        }
    }
}

/// How far apart the clocks of the nodes may have been during a run with these windows, in
/// ms: the largest offset applied ahead minus the largest behind (each at least 0, since the
/// other nodes kept the host's clock). Log time is the largest clock any proposer stamped, so
/// an entry may vanish up to this much earlier than its TTL measured on the host's clock.
pub fn clock_spread_ms(windows: &[FaultWindow]) -> u64 {
    let offsets = windows.iter().filter_map(|w| w.clock_offset_ms);
    let ahead = offsets.clone().max().unwrap_or(0).max(0);
    let behind = offsets.min().unwrap_or(0).min(0);
    ahead.abs_diff(behind)
}

/// The nemesis's settings.
#[derive(Clone, Debug, Serialize)]
pub struct NemesisConfig {
    /// Kinds to choose from; empty: no faults at all.
    pub kinds: Vec<NemesisKind>,
    /// How long each fault lasts.
    #[serde(serialize_with = "crate::report::human_duration")]
    pub fault_window: Duration,
    /// How long the cluster stays healthy between faults (and before the first).
    #[serde(serialize_with = "crate::report::human_duration")]
    pub heal_window: Duration,
    /// The largest clock offset the `clock` nemesis applies, either way.
    #[serde(serialize_with = "crate::report::human_duration")]
    pub clock_skew: Duration,
    pub seed: u64,
}

/// The fault in force right now, shared with the progress line.
pub type CurrentFault = Arc<Mutex<Option<String>>>;

/// What a nemesis run leaves: the windows, and the harness error that ended it early, if any.
pub struct NemesisOutcome {
    pub windows: Vec<FaultWindow>,
    pub error: Option<anyhow::Error>,
}

/// Runs the schedule against `cluster` until `stop` turns true, then heals everything.
/// `start` is the history's clock. A failure to inject or undo a fault (a node that cannot be
/// restarted, a signal that cannot be sent) ends the schedule early as a harness error.
pub async fn run(
    config: NemesisConfig,
    cluster: Arc<Cluster>,
    start: Instant,
    current: CurrentFault,
    mut stop: watch::Receiver<bool>,
) -> NemesisOutcome {
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x6E65_6D65_7369_7321); // "nemesis!"
    let mut windows = Vec::new();
    let now_ns = || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let set_current = |text: Option<String>| *current.lock().unwrap_or_else(|e| e.into_inner()) = text;
    let mut error = None;
    // The kinds still to come in this round: each round injects every kind once, in a shuffled
    // order, so even a short test sees each of them.
    let mut round: Vec<NemesisKind> = Vec::new();
    if !config.kinds.is_empty() {
        loop {
            if sleep_or_stop(config.heal_window, &mut stop).await {
                break;
            }
            if round.is_empty() {
                round = config.kinds.clone();
                round.shuffle(&mut rng);
                round.reverse(); // popped from the back
            }
            let kind = round.pop().expect("refilled above");
            let Some(fault) = plan(kind, &cluster, config.clock_skew, &mut rng).await else {
                tracing::warn!("no target for the {kind} nemesis now; skipping a window");
                continue;
            };
            let injected_ns = now_ns();
            let injected_at = Instant::now();
            if let Err(e) = fault.inject(&cluster, config.fault_window).await {
                error = Some(e.context(format!("injecting {fault}")));
                break;
            }
            let groups = match &fault {
                Fault::Partition { groups, .. } => Some(groups.clone()),
                _ => None,
            };
            let fault_point = match &fault {
                Fault::CrashPoint { point, .. } => Some(point.to_string()),
                _ => None,
            };
            let clock_offset_ms = match &fault {
                Fault::Clock { offset_ms, .. } => Some(*offset_ms),
                _ => None,
            };
            let membership = match &fault {
                Fault::Membership { .. } => cluster.membership(Duration::from_secs(5)).await.ok(),
                _ => None,
            };
            windows.push(FaultWindow {
                nemesis: kind,
                fault: fault.to_string(),
                nodes: fault.nodes(),
                groups,
                died: fault_point.as_ref().map(|_| false),
                fault_point,
                clock_offset_ms,
                membership,
                // A crash point's window starts when the node went down to be armed.
                start_ns: if matches!(fault, Fault::CrashPoint { .. }) { injected_ns } else { now_ns() },
                end_ns: None,
            });
            set_current(Some(fault.to_string()));
            let stopped = match &fault {
                Fault::CrashPoint { node, .. } => {
                    // Watch for the death (it is recorded), then sit out the rest of the window.
                    let until = injected_at + config.fault_window;
                    let mut stopped = false;
                    while Instant::now() < until && !stopped {
                        if cluster.died_at_fault_point(*node) {
                            if let Some(w) = windows.last_mut() {
                                w.died = Some(true);
                            }
                            set_current(Some(format!("{fault} (died)")));
                            stopped = sleep_or_stop(until.saturating_duration_since(Instant::now()), &mut stop).await;
                            break;
                        }
                        stopped = sleep_or_stop(
                            Duration::from_millis(100).min(until.saturating_duration_since(Instant::now())),
                            &mut stop,
                        )
                        .await;
                    }
                    stopped
                }
                Fault::Clock { node, shape: ClockShape::Strobe { period_ms }, offset_ms } => {
                    let until = injected_at + config.fault_window;
                    let mut skewed = true;
                    let mut stopped = false;
                    while Instant::now() < until && !stopped {
                        let tick =
                            Duration::from_millis(*period_ms).min(until.saturating_duration_since(Instant::now()));
                        stopped = sleep_or_stop(tick, &mut stop).await;
                        skewed = !skewed;
                        if let Err(e) = cluster.set_clock_offset(*node, if skewed { *offset_ms } else { 0 }).await {
                            error = Some(e.context(format!("strobing in {fault}")));
                            break;
                        }
                    }
                    stopped
                }
                _ => sleep_or_stop(config.fault_window, &mut stop).await,
            };
            if error.is_some() {
                break;
            }
            if let Fault::CrashPoint { node, .. } = &fault {
                if cluster.died_at_fault_point(*node) {
                    if let Some(w) = windows.last_mut() {
                        w.died = Some(true);
                    }
                }
            }
            if let Err(e) = fault.heal(&cluster).await {
                error = Some(e.context(format!("undoing {fault}")));
                break;
            }
            if let Some(w) = windows.last_mut() {
                w.end_ns = Some(now_ns());
            }
            set_current(None);
            if stopped {
                break;
            }
        }
    }
    // Whatever happened above, leave every node up and every link healed.
    if let Err(e) = cluster.heal_all().await {
        let e = e.context("the final heal");
        error = Some(match error {
            Some(first) => first.context(format!("{e:#}")),
            None => e,
        });
    }
    set_current(None);
    NemesisOutcome { windows, error }
}

/// Sleeps `d`; returns early with `true` if `stop` turns true.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    // A dropped sender counts as a stop too.
    let stopped = async {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stopped => true,
    }
}

/// Picks targets for a fault of `kind`, or `None` if there is nothing to hit (e.g. every node
/// is down already).
async fn plan(kind: NemesisKind, cluster: &Cluster, clock_skew: Duration, rng: &mut StdRng) -> Option<Fault> {
    let ids = cluster.ids();
    let running: Vec<NodeId> =
        ids.iter().copied().filter(|id| cluster.state(*id) == Some(ProcessState::Running)).collect();
    match kind {
        NemesisKind::Partition => {
            let shape = *PartitionShape::ALL.choose(rng).expect("non-empty");
            let leader = match shape {
                PartitionShape::LeaderMinority => cluster.leader().await,
                PartitionShape::OneWay if rng.gen_bool(0.5) => cluster.leader().await,
                _ => None,
            };
            partition(shape, &ids, leader, rng).map(|groups| Fault::Partition { shape, groups })
        }
        NemesisKind::Kill => {
            let most = minority(ids.len()).min(running.len());
            if most == 0 {
                return None;
            }
            let count = rng.gen_range(1..=most);
            let mut nodes: Vec<NodeId> = running.choose_multiple(rng, count).copied().collect();
            nodes.sort_unstable();
            Some(Fault::Kill { nodes })
        }
        NemesisKind::Pause => running.choose(rng).map(|node| Fault::Pause { node: *node }),
        NemesisKind::CrashPoints => {
            let (point, action) = *CRASH_POINTS.choose(rng).expect("non-empty");
            running.choose(rng).map(|node| Fault::CrashPoint { node: *node, point, action })
        }
        NemesisKind::Clock => {
            let shape = if rng.gen_bool(0.5) {
                ClockShape::Jump
            } else {
                ClockShape::Strobe { period_ms: rng.gen_range(20..=200) }
            };
            let offset_ms = skew(clock_skew, rng);
            let random = *running.choose(rng)?;
            let node = if rng.gen_bool(0.5) {
                cluster.leader().await.filter(|l| running.contains(l)).unwrap_or(random)
            } else {
                random
            };
            Some(Fault::Clock { node, shape, offset_ms })
        }
        NemesisKind::Membership => {
            let shape = *MembershipShape::ALL.choose(rng).expect("non-empty");
            if ids.len() < 2 {
                return None;
            }
            let node = *ids.choose(rng).expect("non-empty");
            // Isolating another node leaves a majority of the new voters reachable only with
            // more than three nodes (three: one demoted, one of the two left cut off).
            let isolated = (shape == MembershipShape::DemotePartitioned).then(|| {
                if ids.len() > 3 {
                    *ids.choose(rng).expect("non-empty")
                } else {
                    node
                }
            });
            Some(Fault::Membership { node, shape, isolated })
        }
    }
}

/// A random clock offset of a quarter to all of `max`, ahead or behind (0 if `max` is 0).
fn skew(max: Duration, rng: &mut StdRng) -> i64 {
    let max_ms = i64::try_from(max.as_millis()).unwrap_or(i64::MAX);
    if max_ms == 0 {
        return 0;
    }
    let magnitude = rng.gen_range((max_ms / 4).max(1)..=max_ms);
    if rng.gen_bool(0.5) {
        magnitude
    } else {
        -magnitude
    }
}

/// The largest minority of `n` nodes, at least 1.
fn minority(n: usize) -> usize {
    ((n.saturating_sub(1)) / 2).max(1)
}

/// The sides of a partition of `ids` shaped `shape` (the leader, if known, on the small side
/// of [`PartitionShape::LeaderMinority`] and as the [`PartitionShape::OneWay`] node; without
/// one, random nodes): two groups, or three for a bridge (left, bridge, right). `None` when
/// there are too few nodes to cut (one; two for a bridge).
fn partition(
    shape: PartitionShape,
    ids: &[NodeId],
    leader: Option<NodeId>,
    rng: &mut StdRng,
) -> Option<Vec<Vec<NodeId>>> {
    if ids.len() < 2 {
        return None;
    }
    let mut shuffled = ids.to_vec();
    shuffled.shuffle(rng);
    if shape == PartitionShape::Bridge {
        if ids.len() < 3 {
            return None;
        }
        let (bridge, rest) = shuffled.split_first().expect("three or more");
        let (left, right) = rest.split_at(rest.len() / 2);
        let mut groups = vec![left.to_vec(), vec![*bridge], right.to_vec()];
        for g in &mut groups {
            g.sort_unstable();
        }
        return Some(groups);
    }
    // The leader (if known) goes first, so it lands on the small side.
    if matches!(shape, PartitionShape::LeaderMinority | PartitionShape::OneWay) {
        if let Some(leader) = leader.filter(|l| ids.contains(l)) {
            shuffled.retain(|id| *id != leader);
            shuffled.insert(0, leader);
        }
    }
    let cut = match shape {
        PartitionShape::RandomHalves => ids.len() / 2,
        PartitionShape::IsolateOne | PartitionShape::OneWay | PartitionShape::Bridge => 1,
        PartitionShape::LeaderMinority => minority(ids.len()),
    };
    let (small, large) = shuffled.split_at(cut);
    let mut groups = vec![small.to_vec(), large.to_vec()];
    for g in &mut groups {
        g.sort_unstable();
    }
    Some(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_parse() {
        use NemesisKind::*;
        assert_eq!(NemesisKind::parse_list("partition,kill,pause").unwrap(), vec![Partition, Kill, Pause]);
        assert_eq!(NemesisKind::parse_list("all").unwrap(), NemesisKind::ALL.to_vec());
        assert_eq!(
            NemesisKind::parse_list("kill, kill,all").unwrap(),
            vec![Kill, Partition, Pause, CrashPoints, Clock, Membership]
        );
        assert_eq!(NemesisKind::parse_list("clock,membership").unwrap(), vec![Clock, Membership]);
        assert_eq!(NemesisKind::parse_list("crash-points").unwrap(), vec![CrashPoints]);
        assert_eq!(NemesisKind::parse_list("none").unwrap(), vec![]);
        let err = NemesisKind::parse_list("partition,clock-skew").unwrap_err();
        assert!(err.contains("clock-skew") && err.contains("crash-points, clock, membership"), "{err}");
    }

    #[test]
    fn partitions_have_the_promised_shapes() {
        let ids = [1, 2, 3, 4, 5];
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..50 {
            let halves = partition(PartitionShape::RandomHalves, &ids, None, &mut rng).unwrap();
            assert_eq!((halves[0].len(), halves[1].len()), (2, 3));
            let one = partition(PartitionShape::IsolateOne, &ids, None, &mut rng).unwrap();
            assert_eq!((one[0].len(), one[1].len()), (1, 4));
            let lm = partition(PartitionShape::LeaderMinority, &ids, Some(4), &mut rng).unwrap();
            assert_eq!(lm[0].len(), 2);
            assert!(lm[0].contains(&4), "{lm:?}");
            for groups in [halves, one, lm] {
                let mut all: Vec<NodeId> = groups.concat();
                all.sort_unstable();
                assert_eq!(all, ids);
            }
        }
        for _ in 0..50 {
            let bridge = partition(PartitionShape::Bridge, &ids, None, &mut rng).unwrap();
            assert_eq!(bridge.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1, 2], "{bridge:?}");
            let one = partition(PartitionShape::OneWay, &ids, Some(3), &mut rng).unwrap();
            assert_eq!(one[0], vec![3]);
            assert_eq!(one[1], vec![1, 2, 4, 5]);
        }
        assert_eq!(partition(PartitionShape::Bridge, &[1, 2], None, &mut rng), None);
        // Three nodes: every shape cuts one node off.
        for shape in PartitionShape::ALL {
            let g = partition(shape, &[1, 2, 3], Some(2), &mut rng).unwrap();
            assert_eq!(g[0].len(), 1, "{shape:?}: {g:?}");
        }
        assert_eq!(partition(PartitionShape::IsolateOne, &[1], None, &mut rng), None);
    }

    #[test]
    fn partitions_cut_the_links_their_shape_says() {
        let halves = PartitionShape::RandomHalves.cut_links(&[vec![1], vec![2, 3]]);
        assert_eq!(halves, vec![(1, 2), (1, 3), (2, 1), (3, 1)]);
        // The bridge (3) keeps both halves; only the halves are cut from each other.
        let bridge = PartitionShape::Bridge.cut_links(&[vec![1, 2], vec![3], vec![4, 5]]);
        assert_eq!(bridge, vec![(1, 4), (1, 5), (2, 4), (2, 5), (4, 1), (4, 2), (5, 1), (5, 2)]);
        // One way: node 2's calls are cut, the others' calls to it are not.
        let one_way = PartitionShape::OneWay.cut_links(&[vec![2], vec![1, 3]]);
        assert_eq!(one_way, vec![(2, 1), (2, 3)]);
        let f = Fault::Partition { shape: PartitionShape::Bridge, groups: vec![vec![1, 2], vec![3], vec![4, 5]] };
        assert_eq!(f.to_string(), "partition bridge [1,2] <3> [4,5]");
        assert_eq!(f.nodes(), vec![3]);
        let f = Fault::Partition { shape: PartitionShape::OneWay, groups: vec![vec![2], vec![1, 3]] };
        assert_eq!(f.to_string(), "partition one-way [2] -/-> [1,3]");
        assert_eq!(f.nodes(), vec![2]);
    }

    #[test]
    fn the_same_seed_plans_the_same_partitions() {
        let plan = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..10)
                .map(|_| partition(PartitionShape::RandomHalves, &[1, 2, 3, 4, 5], None, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(plan(7), plan(7));
        assert_ne!(plan(7), plan(8));
    }

    #[test]
    fn faults_describe_themselves() {
        let f = Fault::Partition { shape: PartitionShape::IsolateOne, groups: vec![vec![2], vec![1, 3]] };
        assert_eq!(f.to_string(), "partition isolate-one [2] | [1,3]");
        assert_eq!(f.nodes(), vec![2]);
        assert_eq!(Fault::Kill { nodes: vec![1, 4] }.to_string(), "kill -9 [1,4]");
        assert_eq!(Fault::Pause { node: 3 }.nodes(), vec![3]);
        let c = Fault::CrashPoint { node: 2, point: "apply-after", action: "10%1*panic" };
        assert_eq!(c.to_string(), "crash-point apply-after=10%1*panic [2]");
        assert_eq!((c.nodes(), c.kind()), (vec![2], NemesisKind::CrashPoints));
        let j = Fault::Clock { node: 1, shape: ClockShape::Jump, offset_ms: -400 };
        assert_eq!(j.to_string(), "clock jump -400ms [1]");
        let st = Fault::Clock { node: 2, shape: ClockShape::Strobe { period_ms: 50 }, offset_ms: 700 };
        assert_eq!(st.to_string(), "clock strobe 0/+700ms every 50ms [2]");
        assert_eq!((st.nodes(), st.kind()), (vec![2], NemesisKind::Clock));
        let m = Fault::Membership { node: 3, shape: MembershipShape::DemotePartitioned, isolated: Some(5) };
        assert_eq!(m.to_string(), "membership demote-partitioned [3] with [5] isolated");
        assert_eq!((m.nodes(), m.kind()), (vec![3, 5], NemesisKind::Membership));
        let same = Fault::Membership { node: 3, shape: MembershipShape::DemotePartitioned, isolated: Some(3) };
        assert_eq!(same.nodes(), vec![3]);
        assert_eq!(
            Fault::Membership { node: 4, shape: MembershipShape::Remove, isolated: None }.to_string(),
            "membership remove [4]"
        );
        assert_eq!(minority(3), 1);
        assert_eq!(minority(5), 2);
        assert_eq!(minority(1), 1);
    }

    #[test]
    fn windows_contain_their_span() {
        let w = FaultWindow::plain(NemesisKind::Pause, "pause [1]", vec![1], 10, Some(20));
        assert!(!w.contains(9) && w.contains(10) && w.contains(19) && !w.contains(20));
    }

    #[test]
    fn clock_skews_stay_within_the_maximum_and_spread_both_ways() {
        let mut rng = StdRng::seed_from_u64(1);
        let skews: Vec<i64> = (0..200).map(|_| skew(Duration::from_millis(800), &mut rng)).collect();
        assert!(skews.iter().all(|s| (200..=800).contains(&s.abs())), "{skews:?}");
        assert!(skews.iter().any(|s| *s > 0) && skews.iter().any(|s| *s < 0));
        assert_eq!(skew(Duration::ZERO, &mut rng), 0);

        let window = |offset: Option<i64>| FaultWindow {
            clock_offset_ms: offset,
            ..FaultWindow::plain(NemesisKind::Clock, "", vec![1], 0, None)
        };
        assert_eq!(clock_spread_ms(&[]), 0);
        assert_eq!(clock_spread_ms(&[window(None)]), 0);
        assert_eq!(clock_spread_ms(&[window(Some(300))]), 300, "one node ahead of the rest");
        assert_eq!(clock_spread_ms(&[window(Some(-250))]), 250, "one node behind the rest");
        assert_eq!(clock_spread_ms(&[window(Some(300)), window(Some(-250)), window(Some(100))]), 550);
    }
}
