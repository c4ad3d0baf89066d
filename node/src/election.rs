//! Elections with a pre-vote: a node starts a Raft election only after a majority of voters
//! agree that none of them is in contact with a working leader.
//!
//! Why: openraft 0.9 has no PreVote (Raft thesis section 9.6). A node cut off by a partition or
//! paused for a while times out, raises its term on every attempt, and when it comes back its
//! higher term makes the healthy leader step down: seconds without a leader, for nothing. So
//! openraft's own election timer is switched off (`enable_elect = false`) and this module decides
//! when to call `trigger().elect()`.
//!
//! The rule. A voter that is not the leader and has had no *leader contact* for a randomized
//! election timeout (between 1x and 2x `--election-timeout`) asks every voter for a pre-vote.
//! A voter grants it when it has had no leader contact for at least one election timeout either,
//! and the candidate's log is at least as up to date as its own (term, then index). With a
//! majority of grants (its own included) the node starts a real election; openraft then runs the
//! normal vote, which alone decides safety. Pre-votes change no state: they only gate elections.
//!
//! Leader contact, for a follower, is the newest of: an AppendEntries (a heartbeat or entries)
//! accepted from the current leader, a change of leader or term, and the start of its last
//! completed staleness probe. For the leader it is the last time a quorum acknowledged its
//! replication (openraft's `millis_since_quorum_ack`): a working leader refuses pre-votes, one
//! that lost its quorum stops refusing. (Heartbeat arrival is fine here, unlike for staleness
//! bounds: it only decides when to hold an election, never what a read may return.)
//!
//! Invariants: a pre-vote never changes a node's term, vote or log; an election is started only by
//! this module or by `Raft::initialize`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use geocache_proto::raft_client::RaftClient;
use geocache_proto::RaftPayload;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::network::{decode, encode};
use crate::node::Node;
use crate::store::LogTail;
use crate::types::{LogId, NodeId};

/// A pre-vote request: would you vote for me if I started an election now?
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    pub last_log_id: Option<LogId>,
}

/// The answer, with the reason for people reading logs.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PreVoteResponse {
    pub granted: bool,
    pub reason: String,
}

/// When this node last saw a sign of a working leader (besides its probes): an accepted
/// AppendEntries, or a change of leader or term.
pub struct LeaderContact {
    base: Instant,
    /// Nanoseconds from `base` to the last sign of a leader, plus one; 0 = never.
    last_contact: AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact { base: Instant::now(), last_contact: AtomicU64::new(0) }
    }
}

impl LeaderContact {
    /// Records a sign of a working leader, now.
    pub fn note_contact(&self) {
        let stamp = Instant::now().saturating_duration_since(self.base).as_nanos() as u64 + 1;
        self.last_contact.fetch_max(stamp, Ordering::AcqRel);
    }

    fn since_contact(&self) -> Duration {
        match self.last_contact.load(Ordering::Acquire) {
            // Never: count from when the node started.
            0 => self.base.elapsed(),
            stamp => (self.base + Duration::from_nanos(stamp - 1)).elapsed(),
        }
    }
}

/// How long ago this node last had leader contact (see the module doc).
pub fn time_without_leader(node: &Node) -> Duration {
    let metrics = node.metrics();
    if metrics.state == openraft::ServerState::Leader {
        // Just elected, no acknowledgement yet: the election itself was the contact.
        return match metrics.millis_since_quorum_ack {
            Some(ms) => Duration::from_millis(ms),
            None => node.leader_contact().since_contact(),
        };
    }
    let since_contact = node.leader_contact().since_contact();
    match node.staleness().bound() {
        Some(bound) => bound.min(since_contact),
        None => since_contact,
    }
}

/// Answers a pre-vote request (the inbound side).
pub fn judge(node: &Node, tail: &LogTail, request: &PreVoteRequest) -> Result<PreVoteResponse> {
    let quiet = time_without_leader(node);
    let timeout = node.config().election_timeout;
    if quiet < timeout {
        return Ok(PreVoteResponse {
            granted: false,
            reason: format!("node {} had leader contact {}ms ago", node.id(), quiet.as_millis()),
        });
    }
    let mine = tail.last_log_id().map_err(|e| Error::Storage(e.to_string()))?;
    if !at_least_as_up_to_date(request.last_log_id.as_ref(), mine.as_ref()) {
        return Ok(PreVoteResponse {
            granted: false,
            reason: format!("candidate's log {:?} is behind node {}'s {:?}", request.last_log_id, node.id(), mine),
        });
    }
    Ok(PreVoteResponse {
        granted: true,
        reason: format!("node {} has had no leader for {}ms", node.id(), quiet.as_millis()),
    })
}

/// Raft's up-to-date rule (section 5.4.1): the later term wins, then the longer log.
fn at_least_as_up_to_date(candidate: Option<&LogId>, mine: Option<&LogId>) -> bool {
    let key = |l: Option<&LogId>| l.map(|l| (l.leader_id.term, l.index));
    key(candidate) >= key(mine)
}

/// Runs forever: watches for leader changes, and starts a pre-vote round (then an election)
/// when this voter has been without a leader for its randomized timeout.
pub async fn run(node: Node, tail: LogTail) {
    let base = node.config().election_timeout;
    let mut metrics = node.raft().metrics();
    // One borrow at a time: a second `borrow()` while holding the first deadlocks as soon as
    // openraft waits to publish new metrics (the lock lets no new reader in ahead of a writer).
    let leader_and_term =
        |m: &openraft::RaftMetrics<NodeId, crate::types::NodeInfo>| (m.current_leader, m.current_term);
    let mut seen = leader_and_term(&metrics.borrow());
    let mut patience = randomized(base);
    let mut ticks = tokio::time::interval((base / 10).max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = leader_and_term(&metrics.borrow_and_update());
                if now != seen {
                    seen = now;
                    node.leader_contact().note_contact();
                }
                continue;
            }
            _ = ticks.tick() => {}
        }
        let m = node.metrics();
        let is_voter = m.membership_config.membership().voter_ids().any(|v| v == node.id());
        // A candidate whose election failed tries again from here too: openraft's own timer,
        // which would retry it, is off.
        if !is_voter || m.state == openraft::ServerState::Leader {
            continue;
        }
        if time_without_leader(&node) < patience {
            continue;
        }
        patience = randomized(base);
        match prevote_round(&node, &tail).await {
            Ok(true) => {
                tracing::info!("pre-vote granted by a majority; starting an election");
                node.leader_contact().note_contact();
                if let Err(e) = node.raft().trigger().elect().await {
                    tracing::warn!(error = %e, "could not start an election");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "pre-vote round failed"),
        }
    }
}

fn randomized(base: Duration) -> Duration {
    base + base.mul_f64(rand::thread_rng().gen_range(0.0..1.0))
}

/// Asks every voter (in parallel, briefly) and counts grants, this node's own included.
async fn prevote_round(node: &Node, tail: &LogTail) -> Result<bool> {
    let metrics = node.metrics();
    let membership = metrics.membership_config.membership().clone();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let request = PreVoteRequest {
        candidate: node.id(),
        last_log_id: tail.last_log_id().map_err(|e| Error::Storage(e.to_string()))?,
    };
    let own = judge(node, tail, &request)?;
    if !own.granted {
        return Ok(false);
    }
    let payload = encode(&request).map_err(|e| Error::Fatal(e.to_string()))?;
    let timeout = node.config().election_timeout;
    let asks = voters.iter().filter(|id| **id != node.id()).filter_map(|id| {
        let info = membership.get_node(id)?.clone();
        let channel = node.peers().channel_to(*id, &info.addr).ok()?;
        let mut rpc =
            tonic::Request::new(RaftPayload { data: payload.clone().into(), cluster_id: node.identity().get() });
        rpc.set_timeout(timeout);
        let id = *id;
        Some(async move {
            let reply = tokio::time::timeout(timeout, RaftClient::new(channel).pre_vote(rpc)).await;
            let granted = match reply {
                Ok(Ok(reply)) => {
                    decode::<PreVoteResponse>(&reply.into_inner().data).map(|r| r.granted).unwrap_or(false)
                }
                _ => false,
            };
            (id, granted)
        })
    });
    // Done as soon as a majority granted: a peer cut off by a partition would otherwise hold
    // the round (and the election) up for a whole timeout.
    let mut pending: futures::stream::FuturesUnordered<_> = asks.collect();
    let mut grants = 1;
    let mut answers = Vec::new();
    while grants * 2 <= voters.len() {
        let Some((id, granted)) = pending.next().await else { break };
        grants += usize::from(granted);
        answers.push((id, granted));
    }
    tracing::debug!(grants, voters = voters.len(), ?answers, "pre-vote round");
    Ok(grants * 2 > voters.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        assert!(at_least_as_up_to_date(Some(&log_id(2, 5)), Some(&log_id(2, 5))));
        assert!(at_least_as_up_to_date(Some(&log_id(3, 1)), Some(&log_id(2, 9))));
        assert!(!at_least_as_up_to_date(Some(&log_id(2, 4)), Some(&log_id(2, 5))));
        assert!(!at_least_as_up_to_date(None, Some(&log_id(1, 1))));
        assert!(at_least_as_up_to_date(Some(&log_id(1, 1)), None));
        assert!(at_least_as_up_to_date(None, None));
    }

    #[test]
    fn randomized_timeouts_stay_between_one_and_two_timeouts() {
        let base = Duration::from_millis(100);
        for _ in 0..100 {
            let t = randomized(base);
            assert!(t >= base && t < base * 2, "{t:?}");
        }
    }
}
