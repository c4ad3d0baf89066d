//! What the client knows about the cluster's shape, how it learns it, and the order in which a
//! read asks replicas.
//!
//! The client learns the members (id, address, region, role) and the leader from an
//! `Admin.Status` answer, and measures each member's round-trip time with cheap
//! `Status{local_only}` probes. It does so once while the client is built (best effort: a
//! client builds even when no node answers), then every refresh interval (10 s by default) in a
//! background task, and early (at most once a second) after a failed attempt or a leader
//! change. The task holds only a `Weak` reference, so dropping the last [`Client`](crate::Client)
//! clone ends it.
//!
//! # Read order
//!
//! [`read_order`] ranks every address the client knows, most preferred first:
//!
//! 1. replicas that answered the last probe or call before those that did not;
//! 2. replicas in the client's region (any role, the leader included) first, then the rest;
//!    without a configured region every replica is "the rest";
//! 3. for a bounded read, the leader after the other replicas of the rest: it is the final
//!    fallback (its bound is the smallest), so the others spare it the load;
//! 4. by smoothed round-trip time in whole milliseconds, measured ones first (differences under
//!    a millisecond are noise within one data centre, and rounding keeps the choice from
//!    flapping between equally near replicas);
//! 5. for a linearizable read, the leader before other replicas nothing distinguishes: there
//!    it needs no extra hop;
//! 6. then the seed endpoints in the order given, then the other members by id.
//!
//! Seed endpoints that are not members of a known topology (aliases, removed nodes) come after
//! every member that answers.
//!
//! Invariants: the order contains every member, every seed and the leader guess exactly once, so
//! a read never runs out of candidates the client knows; a refresh that gets no usable answer
//! changes nothing; a smoothed RTT only ever comes from a probe on an open connection (the first
//! probe of a node only opens it), never from a cache call (whose latency includes server work).

use std::collections::HashMap;
use std::time::Duration;

use crate::endpoint::NodeChannel;
use geocache_proto as pb;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

use crate::admin::{admin_client, Role, Status};
use crate::client::timed;
use crate::endpoint::normalize;
use crate::error::{is_local_failure, Error, Result};
use crate::options::Consistency;
use crate::routing::Router;
use crate::types::NodeId;

/// Default time between two topology refreshes.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Least time between two refreshes, however many failures ask for one.
pub(crate) const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);
/// Cap on one `Status` attempt of a refresh. Above the node's own 1.5 s wait for its peers, so a
/// node with a dead peer still answers.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// Cap on probing one node (a warm-up probe, if needed, and the measured one).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Weight of a new sample in the smoothed RTT. Higher than TCP's 1/8 (RFC 6298) because samples
/// come only once per refresh, not once per packet.
const RTT_GAIN: f64 = 0.25;

/// A cluster member as the client knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) id: NodeId,
    /// Normalised (`http://host:port`).
    pub(crate) addr: String,
    pub(crate) region: String,
    pub(crate) role: Role,
}

/// The members and the leader, from one status answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Topology {
    /// Sorted by id.
    pub(crate) nodes: Vec<Node>,
    pub(crate) leader: Option<NodeId>,
}

impl Topology {
    /// The topology a status answer describes; `None` when it describes no usable cluster (an
    /// uninitialised node, no member with a parsable address).
    pub(crate) fn from_status(status: &Status) -> Option<Topology> {
        if !status.initialized {
            return None;
        }
        let mut nodes: Vec<Node> = status
            .nodes
            .iter()
            .filter_map(|n| {
                let addr = normalize(&n.addr).ok()?;
                Some(Node { id: n.id, addr, region: n.region.clone(), role: n.role.clone() })
            })
            .collect();
        if nodes.is_empty() {
            return None;
        }
        nodes.sort_by_key(|n| n.id);
        nodes.dedup_by_key(|n| n.id);
        Some(Topology { nodes, leader: status.leader_id })
    }

    /// The leader's normalised address, if it is known and a member.
    pub(crate) fn leader_addr(&self) -> Option<&str> {
        let id = self.leader?;
        self.nodes.iter().find(|n| n.id == id).map(|n| n.addr.as_str())
    }
}

/// What the client measured of one address.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Health {
    /// Smoothed round-trip time of `Status{local_only}` probes.
    pub(crate) srtt: Option<Duration>,
    /// The last probe or call failed to reach the node.
    pub(crate) down: bool,
}

impl Health {
    /// Folds in a probe's round trip (exponentially weighted moving average).
    pub(crate) fn sample(&mut self, rtt: Duration) {
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(srtt) if rtt >= srtt => srtt + (rtt - srtt).mul_f64(RTT_GAIN),
            Some(srtt) => srtt - (srtt - rtt).mul_f64(RTT_GAIN),
        });
        self.down = false;
    }
}

/// Topology plus measurements: everything ordering needs, under one lock.
#[derive(Debug, Default)]
pub(crate) struct View {
    pub(crate) topology: Topology,
    pub(crate) health: HashMap<String, Health>,
}

/// One replica as [`Client::replicas`](crate::Client::replicas) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Node id; 0 for a seed endpoint that is not a known member.
    pub id: NodeId,
    /// Normalised address, `http://host:port`.
    pub addr: String,
    /// Region label; empty when unknown.
    pub region: String,
    /// Raft role at the last refresh; `None` when unknown.
    pub role: Option<Role>,
    /// Smoothed round-trip time of the client's probes; `None` before the first.
    pub rtt: Option<Duration>,
    /// `false` when the last probe or call could not reach it.
    pub reachable: bool,
}

/// One candidate of [`read_order`] with what ranks it.
struct Candidate<'a> {
    addr: &'a str,
    region: Option<&'a str>,
    /// A seed or leader guess outside a known topology.
    outsider: bool,
}

/// The order in which a read at `consistency` asks the known addresses (module doc, "Read
/// order"). `leader` is the normalised leader guess.
pub(crate) fn read_order(
    view: &View,
    seeds: &[String],
    region: Option<&str>,
    leader: &str,
    consistency: Consistency,
) -> Vec<String> {
    let known = !view.topology.nodes.is_empty();
    let mut candidates: Vec<Candidate<'_>> = view
        .topology
        .nodes
        .iter()
        .map(|n| Candidate { addr: &n.addr, region: Some(&n.region), outsider: false })
        .collect();
    for addr in seeds.iter().map(String::as_str).chain([leader]) {
        if !candidates.iter().any(|c| c.addr == addr) {
            candidates.push(Candidate { addr, region: None, outsider: known });
        }
    }

    let bounded = matches!(consistency, Consistency::Bounded(_));
    let linearizable = matches!(consistency, Consistency::Linearizable);
    let mut ranked: Vec<_> = candidates
        .into_iter()
        .enumerate()
        .map(|(pos, c)| {
            let health = view.health.get(c.addr).copied().unwrap_or_default();
            let is_leader = c.addr == leader;
            let local = region.is_some() && c.region == region;
            let tier = match () {
                _ if c.outsider => 3,
                _ if local => 0,
                _ if is_leader && bounded => 2,
                _ => 1,
            };
            let leader_pref = !(linearizable && is_leader);
            let rtt_ms = health.srtt.map(|rtt| rtt.as_millis());
            let seed_rank = seeds.iter().position(|s| s == c.addr).unwrap_or(usize::MAX);
            let key = (health.down, tier, rtt_ms.is_none(), rtt_ms.unwrap_or(0), leader_pref, seed_rank, pos);
            (key, c.addr)
        })
        .collect();
    ranked.sort_by_key(|a| a.0);
    ranked.into_iter().map(|(_, addr)| addr.to_string()).collect()
}

impl Router {
    /// Learns the topology from any node (leader guess first, then the members, then the
    /// seeds), then probes every member's round trip. Errors only if no node answered a status
    /// request; then nothing changes but the probes' verdicts.
    pub(crate) async fn refresh(&self) -> Result<()> {
        let status = self.fetch_status().await;
        if let Ok(status) = &status {
            match Topology::from_status(status) {
                Some(topology) => {
                    if let Some(addr) = topology.leader_addr() {
                        self.set_leader_quietly(addr);
                    }
                    debug!(members = topology.nodes.len(), leader = ?topology.leader, "topology refreshed");
                    self.view().topology = topology;
                }
                None => debug!(node = status.node_id, "status answer describes no cluster yet"),
            }
        }
        self.probe_all().await;
        status.map(|_| ())
    }

    async fn fetch_status(&self) -> Result<Status> {
        let mut candidates = vec![self.leader()];
        {
            let view = self.view();
            candidates.extend(view.topology.nodes.iter().map(|n| n.addr.clone()));
        }
        candidates.extend(self.seeds().iter().cloned());
        let mut tried = Vec::new();
        let mut last = Error::unavailable("no node to ask for the topology");
        while let Some(addr) = candidates.first().cloned() {
            candidates.remove(0);
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr.clone());
            let channel = match self.channels().get(&addr) {
                Ok(channel) => channel,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match status_of(channel, false, STATUS_TIMEOUT).await {
                Ok(status) => return Ok(status),
                Err(e) => {
                    debug!(%addr, error = %e, "topology: status failed");
                    // A refusing node may know who leads: ask that node next.
                    if let Some(Ok(hint)) = e.leader_hint().map(normalize) {
                        candidates.insert(0, hint);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Probes every member concurrently and records round trips and reachability.
    async fn probe_all(&self) {
        let targets: Vec<(String, bool)> = {
            let view = self.view();
            view.topology
                .nodes
                .iter()
                .map(|n| (n.addr.clone(), view.health.get(&n.addr).is_some_and(|h| h.srtt.is_some())))
                .collect()
        };
        let mut probes = JoinSet::new();
        for (addr, warm) in targets {
            let Ok(channel) = self.channels().get(&addr) else { continue };
            probes.spawn(async move {
                let rtt = tokio::time::timeout(PROBE_TIMEOUT, probe(channel, warm)).await.ok().flatten();
                (addr, rtt)
            });
        }
        while let Some(done) = probes.join_next().await {
            let Ok((addr, rtt)) = done else { continue };
            let mut view = self.view();
            let health = view.health.entry(addr).or_default();
            match rtt {
                Some(rtt) => health.sample(rtt),
                None => health.down = true,
            }
        }
    }

    /// Every address a stale read would ask, in that order, with what the client knows of it.
    pub(crate) fn replicas(&self) -> Vec<Replica> {
        let order = self.candidates(&crate::routing::Route::Nearest { consistency: Consistency::Stale, sliced: false });
        let view = self.view();
        order
            .into_iter()
            .map(|addr| {
                let node = view.topology.nodes.iter().find(|n| n.addr == addr);
                let health = view.health.get(&addr).copied().unwrap_or_default();
                Replica {
                    id: node.map_or(0, |n| n.id),
                    region: node.map(|n| n.region.clone()).unwrap_or_default(),
                    role: node.map(|n| n.role.clone()),
                    rtt: health.srtt,
                    reachable: !health.down,
                    addr,
                }
            })
            .collect()
    }
}

/// One `Status` call with its own timeout.
async fn status_of(channel: NodeChannel, local_only: bool, timeout: Duration) -> Result<Status> {
    let mut client = admin_client(channel);
    let call = client.status(timed(pb::StatusRequest { local_only, with_state_hash: false }, timeout));
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner().into()),
        Ok(Err(status)) => Err(Error::from(status)),
        Err(_) => Err(Error::Timeout(format!("status: no answer within {timeout:?}"))),
    }
}

/// The round trip of one `Status{local_only}` call on an open connection; `None` if the node
/// does not answer. Unless `warm`, a first call opens the connection, so the TCP and HTTP/2
/// handshakes are not measured.
async fn probe(channel: NodeChannel, warm: bool) -> Option<Duration> {
    let ask = |channel: NodeChannel| async move {
        let mut client = admin_client(channel);
        match client.status(timed(pb::StatusRequest { local_only: true, with_state_hash: false }, PROBE_TIMEOUT)).await
        {
            Ok(_) => Some(()),
            Err(status) if !is_local_failure(&status) => Some(()), // it answered, if unhappily
            Err(_) => None,
        }
    };
    if !warm {
        ask(channel.clone()).await?;
    }
    let started = Instant::now();
    ask(channel).await?;
    Some(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::NodeStatus;

    fn node(id: NodeId, region: &str, role: Role) -> Node {
        Node { id, addr: format!("http://n{id}:1"), region: region.into(), role }
    }

    /// Nodes 1-5: 1 leads in us-east, 2 follows in eu-west, 3 is a learner in eu-west, 4 follows
    /// in ap-south, 5 is a learner in us-west. RTTs in ms.
    fn view(rtts: &[(NodeId, u64)]) -> View {
        let topology = Topology {
            nodes: vec![
                node(1, "us-east", Role::Leader),
                node(2, "eu-west", Role::Follower),
                node(3, "eu-west", Role::Learner),
                node(4, "ap-south", Role::Follower),
                node(5, "us-west", Role::Learner),
            ],
            leader: Some(1),
        };
        let health = rtts
            .iter()
            .map(|(id, ms)| (format!("http://n{id}:1"), Health { srtt: Some(Duration::from_millis(*ms)), down: false }))
            .collect();
        View { topology, health }
    }

    fn ids(order: &[String]) -> Vec<u64> {
        order.iter().map(|a| a.trim_start_matches("http://n").trim_end_matches(":1").parse().unwrap_or(0)).collect()
    }

    const LEADER: &str = "http://n1:1";
    const BOUNDED: Consistency = Consistency::Bounded(Duration::from_millis(200));

    #[test]
    fn own_region_first_then_by_round_trip() {
        let v = view(&[(1, 80), (2, 9), (3, 2), (4, 150), (5, 40)]);
        let seeds = ["http://n1:1".to_string()];
        let eu = Some("eu-west");
        // Any role in the region, nearest first; then the rest by RTT.
        assert_eq!(ids(&read_order(&v, &seeds, eu, LEADER, Consistency::Stale)), [3, 2, 5, 1, 4]);
        assert_eq!(ids(&read_order(&v, &seeds, eu, LEADER, Consistency::Linearizable)), [3, 2, 5, 1, 4]);
        // A bounded read asks the leader last.
        assert_eq!(ids(&read_order(&v, &seeds, eu, LEADER, BOUNDED)), [3, 2, 5, 4, 1]);
        // ... unless it is in the client's region.
        assert_eq!(ids(&read_order(&v, &seeds, Some("us-east"), LEADER, BOUNDED)), [1, 3, 2, 5, 4]);
        // No region: RTT alone (the leader still last for bounded reads).
        assert_eq!(ids(&read_order(&v, &seeds, None, LEADER, Consistency::Stale)), [3, 2, 5, 1, 4]);
        assert_eq!(ids(&read_order(&v, &seeds, None, LEADER, BOUNDED)), [3, 2, 5, 4, 1]);
        // A region no member is in: the same as none.
        assert_eq!(ids(&read_order(&v, &seeds, Some("mars"), LEADER, BOUNDED)), [3, 2, 5, 4, 1]);
    }

    #[test]
    fn unreachable_and_unmeasured_replicas_go_later() {
        let mut v = view(&[(1, 80), (2, 9), (3, 2), (5, 40)]);
        v.health.get_mut("http://n3:1").unwrap().down = true;
        let eu = Some("eu-west");
        // 3 is down: last of all. 4 has no RTT yet: after the measured ones of its tier.
        assert_eq!(ids(&read_order(&v, &[], eu, LEADER, Consistency::Stale)), [2, 5, 1, 4, 3]);
        assert_eq!(ids(&read_order(&v, &[], eu, LEADER, BOUNDED)), [2, 5, 4, 1, 3]);
    }

    #[test]
    fn with_nothing_measured_linearizable_reads_try_the_leader_first() {
        let v = view(&[]);
        assert_eq!(ids(&read_order(&v, &[], None, LEADER, Consistency::Linearizable)), [1, 2, 3, 4, 5]);
        assert_eq!(ids(&read_order(&v, &[], None, "http://n4:1", Consistency::Linearizable)), [4, 1, 2, 3, 5]);
        assert_eq!(ids(&read_order(&v, &[], None, "http://n4:1", Consistency::Stale)), [1, 2, 3, 4, 5]);
        // The region still comes first.
        assert_eq!(ids(&read_order(&v, &[], Some("eu-west"), LEADER, Consistency::Linearizable)), [2, 3, 1, 4, 5]);
    }

    #[test]
    fn seeds_outside_the_topology_come_after_its_members() {
        let v = view(&[(1, 80), (2, 9)]);
        let seeds = ["http://alias:1".to_string(), "http://n2:1".to_string()];
        let order = read_order(&v, &seeds, None, LEADER, Consistency::Stale);
        assert_eq!(order.len(), 6, "every member and seed exactly once: {order:?}");
        assert_eq!(order.last().unwrap(), "http://alias:1");

        // Without a topology, seeds are the candidates, in the order given, then the leader guess.
        let empty = View::default();
        let seeds = ["http://a:1".to_string(), "http://b:1".to_string()];
        assert_eq!(
            read_order(&empty, &seeds, None, "http://c:1", Consistency::Stale),
            ["http://a:1", "http://b:1", "http://c:1"]
        );
        assert_eq!(read_order(&empty, &seeds, None, "http://a:1", BOUNDED), ["http://b:1", "http://a:1"]);
        assert_eq!(
            read_order(&empty, &seeds, None, "http://b:1", Consistency::Linearizable),
            ["http://b:1", "http://a:1"]
        );
    }

    #[test]
    fn round_trips_within_a_millisecond_keep_the_endpoints_order() {
        let mut v = view(&[(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]);
        for (id, micros) in [(1, 900), (2, 300), (3, 200), (4, 150), (5, 1_200)] {
            v.health.get_mut(&format!("http://n{id}:1")).unwrap().srtt = Some(Duration::from_micros(micros));
        }
        let seeds = ["http://n3:1".to_string(), "http://n2:1".to_string()];
        assert_eq!(ids(&read_order(&v, &seeds, None, LEADER, Consistency::Stale)), [3, 2, 1, 4, 5]);
        // A linearizable read still prefers the leader among equals.
        assert_eq!(ids(&read_order(&v, &seeds, None, LEADER, Consistency::Linearizable)), [1, 3, 2, 4, 5]);
    }

    #[test]
    fn rtt_is_smoothed() {
        let mut h = Health { srtt: None, down: true };
        h.sample(Duration::from_millis(100));
        assert_eq!(h.srtt, Some(Duration::from_millis(100)));
        assert!(!h.down);
        h.sample(Duration::from_millis(20));
        assert_eq!(h.srtt, Some(Duration::from_millis(80)));
        h.sample(Duration::from_millis(120));
        assert_eq!(h.srtt, Some(Duration::from_millis(90)));
    }

    #[test]
    fn topology_from_status() {
        let status = |initialized: bool, nodes: Vec<NodeStatus>| Status {
            node_id: 2,
            cluster_id: 7,
            leader_id: Some(1),
            term: 3,
            initialized,
            nodes,
            max_entries: 0,
            max_bytes: 0,
        };
        let ns = |id: NodeId, addr: &str, role: &str| NodeStatus {
            id,
            addr: addr.into(),
            peer_addr: String::new(),
            region: format!("r{id}"),
            role: role.to_string().into(),
            term: 3,
            applied: 0,
            reachable: true,
            lag: None,
            staleness_bound_ms: None,
            last_log_index: 0,
            state_hash: None,
        };
        let t = Topology::from_status(&status(
            true,
            vec![ns(2, "127.0.0.1:7002", "follower"), ns(1, "127.0.0.1:7001", "leader"), ns(3, "", "learner")],
        ))
        .unwrap();
        assert_eq!(t.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [1, 2], "sorted, unusable addresses dropped");
        assert_eq!(t.leader_addr(), Some("http://127.0.0.1:7001"));
        assert_eq!(t.nodes[1].region, "r2");
        assert!(Topology::from_status(&status(false, vec![ns(1, "127.0.0.1:7001", "leader")])).is_none());
        assert!(Topology::from_status(&status(true, vec![ns(1, "", "leader")])).is_none());
    }
}
