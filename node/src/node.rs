//! A running node's shared handle: its configuration, the openraft instance, the read view of the
//! state machine, the peer connections, the clock and the metrics recorder. Cheap to clone; every service holds one.
//!
//! Owns the translation of openraft's errors into [`Error`], and the one way a command enters the
//! log ([`Node::propose`]), so every write path stamps time and bounds its wait the same way.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::Instant as _;
use openraft::ServerState;

use crate::admission::Admission;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Recorder;
use crate::network::PeerChannels;
use crate::read::batch::ReadIndexBatcher;
use crate::read::recency::RecencyNotes;
use crate::read::staleness::StalenessTracker;
use crate::state_machine::{Command, Op, Response};
use crate::store::{CacheReader, ClusterIdentity};
use crate::types::{LogIndex, NodeId, NodeInfo, Raft, RaftMetrics, TypeConfig};

/// On the leader: how many entries member `id`'s log is behind the leader's last log entry, as
/// far as the leader has confirmed (a member it has confirmed nothing for is behind by the whole
/// log). `None` on any other node, and for a member the leader does not replicate to. What
/// `cluster status` shows as `lag` and the metrics as `geocache_raft_replication_lag_entries`.
pub fn replication_lag(metrics: &RaftMetrics, id: NodeId) -> Option<u64> {
    let matched = metrics.replication.as_ref()?.get(&id)?;
    let last_log = metrics.last_log_index.unwrap_or(0);
    Some(last_log.saturating_sub(matched.as_ref().map_or(0, |l| l.index)))
}

/// Handle to one running node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    raft: Raft,
    reader: CacheReader,
    peers: PeerChannels,
    clock: Clock,
    recency: RecencyNotes,
    identity: ClusterIdentity,
    staleness: StalenessTracker,
    read_batcher: ReadIndexBatcher,
    recorder: Recorder,
    admission: Admission,
}

impl Node {
    pub fn new(
        config: Config,
        raft: Raft,
        reader: CacheReader,
        peers: PeerChannels,
        identity: ClusterIdentity,
        recorder: Recorder,
    ) -> Node {
        let clock = Clock::with_offset_ms(config.clock_offset_ms);
        let recency = RecencyNotes::default();
        let staleness = StalenessTracker::default();
        let read_batcher = ReadIndexBatcher::start(raft.clone(), config.id);
        let admission = Admission::new(config.max_pending_writes, config.max_pending_reads);
        Node {
            inner: Arc::new(Inner {
                config,
                raft,
                reader,
                peers,
                clock,
                recency,
                identity,
                staleness,
                read_batcher,
                recorder,
                admission,
            }),
        }
    }

    /// This replica's staleness bound, kept fresh by the probe.
    pub fn staleness(&self) -> &StalenessTracker {
        &self.inner.staleness
    }

    /// Shares the leader's read-index quorum rounds between concurrent requests.
    pub fn read_batcher(&self) -> &ReadIndexBatcher {
        &self.inner.read_batcher
    }

    /// How much client work this node takes on at once.
    pub fn admission(&self) -> &Admission {
        &self.inner.admission
    }

    /// Counts this node's events for its Prometheus metrics.
    pub fn recorder(&self) -> &Recorder {
        &self.inner.recorder
    }

    /// Which cluster this node belongs to.
    pub fn identity(&self) -> &ClusterIdentity {
        &self.inner.identity
    }

    pub fn id(&self) -> NodeId {
        self.inner.config.id
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn reader(&self) -> &CacheReader {
        &self.inner.reader
    }

    pub fn peers(&self) -> &PeerChannels {
        &self.inner.peers
    }

    /// The shared bulk channel to member `id`'s peer listener: its peer address in the current
    /// membership (or its route override). Every call one member makes to another (a forwarded
    /// write or admin call, a read-index round, a `Touch`, a status fan-out) goes through here,
    /// never to a client address, so it crosses the same firewall rule, proxy and TLS check as
    /// Raft itself.
    pub fn member_channel(&self, id: NodeId) -> Result<tonic::transport::Channel> {
        let peer_addr = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow_watched();
            let member = metrics.membership_config.membership().get_node(&id).map(|n| n.peer_addr.clone());
            member.ok_or_else(|| Error::Unavailable(format!("node {id} is not in this node's membership")))?
        };
        self.inner.peers.channel_to(id, &peer_addr).map_err(Error::Unavailable)
    }

    /// Keys local reads used, waiting to be proposed as a `Touch`.
    pub fn recency(&self) -> &RecencyNotes {
        &self.inner.recency
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// This node's own membership record.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            addr: self.inner.config.advertise.clone(),
            region: self.inner.config.region.clone(),
            peer_addr: self.inner.config.peer_advertise.clone(),
        }
    }

    /// The latest Raft metrics (a copy).
    pub fn metrics(&self) -> RaftMetrics {
        self.inner.raft.metrics().borrow_watched().clone()
    }

    /// Whether this node belongs to a cluster (has a non-empty membership).
    pub fn is_member_of_a_cluster(&self) -> bool {
        self.metrics().membership_config.membership().nodes().next().is_some()
    }

    /// The leader this node currently knows of, with its address (route overrides not applied).
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.metrics();
        let leader = metrics.current_leader?;
        let addr = metrics.membership_config.membership().get_node(&leader)?.addr.clone();
        Some((leader, addr))
    }

    pub fn is_leader(&self) -> bool {
        self.metrics().state == ServerState::Leader
    }

    /// Fails with `Unavailable` when this node has had no confirmed contact with a leader for
    /// longer than a failover takes (its staleness bound says so): it is most likely on
    /// the minority side of a partition, and a write forwarded from here would only hang.
    /// A node that has not completed its first probe yet is given the benefit of the doubt.
    pub fn ensure_leader_reachable(&self) -> Result<()> {
        // A normal failover (pre-vote after one to two election timeouts, then the vote) ends
        // well within three.
        let patience = self.inner.config.election_timeout * 3;
        match self.staleness().bound() {
            Some(bound) if bound > patience => Err(Error::Unavailable(format!(
                "cannot reach the leader: no confirmed contact for {:.1}s (is this node partitioned?)",
                bound.as_secs_f64()
            ))),
            _ => Ok(()),
        }
    }

    /// Fails with `Unavailable` when this node leads but no quorum has acknowledged it for longer
    /// than an election timeout (its lease ran out): it is most likely cut off in a minority
    /// while the majority elects a new leader, and a write proposed here would only hang until
    /// the caller's deadline. Refusing before proposing changes nothing, so the caller may try
    /// another node at once (which forwards to the new leader).
    pub fn ensure_leader_has_quorum(&self) -> Result<()> {
        // On every write: look at the metrics in place instead of cloning them.
        let since_quorum_ack = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow_watched();
            let leads_others = m.state == openraft::ServerState::Leader
                && m.membership_config.membership().voter_ids().nth(1).is_some();
            if !leads_others {
                return Ok(());
            }
            m.last_quorum_acked.as_ref().map(|acked| acked.elapsed())
        };
        let lease = self.inner.config.election_timeout;
        match since_quorum_ack {
            Some(since) if since > lease => Err(Error::Unavailable(format!(
                "node {} leads, but no quorum has answered it for {:.1}s (is it partitioned?)",
                self.id(),
                since.as_secs_f64()
            ))),
            _ => Ok(()),
        }
    }

    /// Fails with `Unavailable` when this node has not joined a cluster yet.
    pub fn ensure_member(&self) -> Result<()> {
        if self.is_member_of_a_cluster() {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "node {} is not part of a cluster yet (run `geocache cluster init` or `cluster add`)",
                self.id()
            )))
        }
    }

    /// A command for `op`, stamped with [`Node::proposal_time_ms`].
    pub fn command(&self, op: Op, write_id: Option<crate::state_machine::WriteId>) -> Command {
        Command { now_ms: self.proposal_time_ms(), write_id, op }
    }

    /// The time a command proposed now is stamped with, and the time a relative TTL counts
    /// from: this node's wall clock, or the log's clock (as this replica applied it) if that is
    /// later. The log clock runs ahead of this node's after a leader whose clock ran fast
    /// (docs/ARCHITECTURE.md §4.1: it never goes back); counting from it means such a leader makes
    /// entries live longer by the skew until the clocks agree again, instead of making a short
    /// TTL written by a correct leader expire the moment it is applied.
    pub fn proposal_time_ms(&self) -> u64 {
        let log_ms = self.reader().read(|cache, _| cache.clock_ms());
        self.clock().now_ms().max(log_ms)
    }

    /// Proposes `cmd` through the local Raft instance and waits (at most the request timeout) for
    /// it to be applied. Returns the entry's log index and the state machine's response.
    ///
    /// `NotLeader` means nothing was proposed; `Timeout` means the outcome is unknown.
    pub async fn propose(&self, cmd: Command) -> Result<(LogIndex, Response)> {
        self.ensure_member()?;
        let timeout = self.inner.config.request_timeout;
        match tokio::time::timeout(timeout, self.inner.raft.client_write(cmd)).await {
            Ok(Ok(written)) => Ok((written.log_id.index, written.data)),
            Ok(Err(e)) => Err(self.write_error(e)),
            Err(_) => {
                Err(Error::Timeout(format!("write not confirmed within {}", humantime::format_duration(timeout))))
            }
        }
    }

    /// Maps openraft's write errors (client writes and membership changes) to ours.
    pub fn write_error(&self, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Error {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Error::NotLeader {
                leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)).filter(|(id, _)| *id != self.id()),
            },
            // The entry was appended here, then replaced by another leader's log: it may still
            // commit through that leader. Retrying blindly could apply it twice.
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => Error::Timeout(
                "this node lost its leadership while the write was in flight; it may or may not have applied".into(),
            ),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => Error::FailedPrecondition(e.to_string()),
            RaftError::APIError(ClientWriteError::PreconditionFailed(e)) => Error::FailedPrecondition(e.to_string()),
            RaftError::Fatal(e) => Error::Fatal(e.to_string()),
        }
    }

    /// The current leader, waiting (until `deadline`) through an election if none is known.
    /// The leader may be this node.
    pub async fn wait_for_leader(&self, deadline: tokio::time::Instant) -> Result<(NodeId, String)> {
        let leader_of = |m: &RaftMetrics| {
            let id = m.current_leader?;
            Some((id, m.membership_config.membership().get_node(&id)?.addr.clone()))
        };
        // Every linearizable read on a follower asks this: answer from the metrics in place when a
        // leader is known (`Raft::wait` copies the whole metrics), and wait only during elections.
        if let Some(leader) = leader_of(&self.inner.raft.metrics().borrow_watched()) {
            return Ok(leader);
        }
        let within = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait = self.inner.raft.wait(Some(within));
        match wait.metrics(|m| leader_of(m).is_some(), "a known leader").await {
            Ok(m) => leader_of(&m).ok_or_else(|| Error::Fatal("the leader vanished from the metrics".into())),
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(Error::Fatal("raft stopped".into())),
            Err(_) => Err(Error::Unavailable("no leader elected in time (is a majority of voters reachable?)".into())),
        }
    }

    /// After a failed forward to `old_leader`: waits (briefly, and never past `deadline`) until
    /// this node sees another leader, so the retry goes somewhere new.
    pub async fn wait_for_leader_change(&self, old_leader: NodeId, deadline: tokio::time::Instant) {
        const PATIENCE: Duration = Duration::from_millis(500);
        let within = deadline.saturating_duration_since(tokio::time::Instant::now()).min(PATIENCE);
        let wait = self.inner.raft.wait(Some(within));
        let _ = wait.metrics(|m| m.current_leader.is_some_and(|l| l != old_leader), "another leader").await;
    }

    /// Waits until the local state machine has applied `index`, for at most `timeout`.
    ///
    /// On the read path (follower reads, `min_version`): it looks at each metrics update in place
    /// instead of through `Raft::wait`, which clones the whole metrics (membership, replication
    /// map) on every update.
    pub async fn wait_applied(&self, index: LogIndex, timeout: Duration) -> Result<()> {
        let mut metrics = self.inner.raft.metrics();
        let wait = async {
            loop {
                let applied = metrics.borrow_and_update().last_applied.map(|l| l.index).unwrap_or(0);
                if applied >= index {
                    return Ok(());
                }
                if metrics.changed().await.is_err() {
                    return Err(Error::Fatal("raft stopped".into()));
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unavailable(format!(
                "replica has not applied index {index} within {}",
                humantime::format_duration(timeout)
            ))),
        }
    }
}
