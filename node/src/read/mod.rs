//! Read consistency: turning a read request into "the local state machine may now answer".
//!
//! Owns the read-index protocol (docs/ARCHITECTURE.md §3). A linearizable read on the leader runs
//! openraft's quorum check (`get_read_log_id`) and waits for its own state machine to reach the
//! returned index. On a follower it asks the leader for a *fresh* read index over the `Raft`
//! service on every attempt, then waits until it has applied that index locally, so the data never
//! crosses regions, only one small round trip to the leader does.
//!
//! A `bounded(d)` read is served locally when the replica's staleness bound ([`staleness`]) is at
//! most `d`, and refused with `StaleReplica` otherwise; a `stale` read is served locally always.
//! On the leader, read-index requests share quorum rounds ([`batch`]).
//!
//! Invariants: a read index is never reused across requests or retries; no read is ever served on
//! the strength of a leader lease; `stale` and `bounded` reads never wait on the network.

pub mod batch;
pub mod recency;
pub mod staleness;

use std::time::Duration;

use geocache_proto::raft_client::RaftClient;
use geocache_proto::ReadIndexRequest;

use crate::error::{Error, Result};
use crate::node::Node;
use crate::types::{LogIndex, Term};

/// A read index the leader confirmed with a quorum round.
#[derive(Clone, Copy, Debug)]
pub struct ConfirmedIndex {
    pub index: LogIndex,
    pub term: Term,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadLevel {
    /// Sees every write acknowledged before the read began.
    Linearizable,
    /// Sees every write acknowledged more than this long before the read began.
    Bounded(Duration),
    /// Whatever the local replica has applied.
    Stale,
}

/// On the leader: confirms leadership with a quorum round and returns the index a linearizable
/// read must wait for. Fails with `NotLeader` or `Unavailable` (no quorum).
pub async fn leader_read_index(node: &Node) -> Result<ConfirmedIndex> {
    node.ensure_member()?;
    let timeout = node.config().request_timeout;
    let index = tokio::time::timeout(timeout, node.read_batcher().read_index())
        .await
        .map_err(|_| Error::Unavailable("leadership not confirmed by a quorum in time".into()))??;
    Ok(ConfirmedIndex { index, term: node.metrics().current_term })
}

/// Waits until this replica may answer a read at `level`, within `timeout`, having applied at
/// least `min_index` (read-your-writes). Returns the staleness bound the answer carries: zero for
/// a linearizable read, the replica's current bound otherwise (`None`: it knows none).
pub async fn prepare_read(
    node: &Node,
    level: ReadLevel,
    min_index: LogIndex,
    timeout: Duration,
) -> Result<Option<Duration>> {
    node.ensure_member()?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut required = min_index;
    if level == ReadLevel::Linearizable {
        let confirmed = fresh_read_index(node, timeout).await?;
        required = required.max(confirmed.index);
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    node.wait_applied(required, remaining).await?;
    match level {
        ReadLevel::Linearizable => Ok(Some(Duration::ZERO)),
        ReadLevel::Stale => Ok(node.staleness().bound()),
        // Judged after any min_version wait: the bound only improves while we wait.
        ReadLevel::Bounded(max) => match node.staleness().bound() {
            Some(bound) if bound <= max => Ok(Some(bound)),
            bound => Err(Error::StaleReplica {
                bound_ms: bound.map(|b| b.as_nanos().div_ceil(1_000_000) as u64),
                max_ms: max.as_millis() as u64,
            }),
        },
    }
}

/// A fresh read index: from the local quorum check on the leader, or asked of the leader.
pub(crate) async fn fresh_read_index(node: &Node, timeout: Duration) -> Result<ConfirmedIndex> {
    // Harness builds only: a deliberately broken follower that skips the read index, so the
    // harness can show it catches the stale reads that follow.
    if !node.is_leader() && crate::faults::point("read-skip-read-index") {
        return Ok(ConfirmedIndex { index: 0, term: 0 });
    }
    if node.is_leader() {
        return leader_read_index(node).await;
    }
    // During an election there is briefly no leader: wait for one within the read's deadline.
    let (leader, _) = node.wait_for_leader(tokio::time::Instant::now() + timeout).await?;
    if leader == node.id() {
        // Metrics say we lead but the state moved under us; the quorum check decides.
        return leader_read_index(node).await;
    }
    let channel = node.member_channel(leader)?;
    let mut request = tonic::Request::new(ReadIndexRequest { from: node.id() });
    request.set_timeout(timeout);
    match RaftClient::new(channel).read_index(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            Ok(ConfirmedIndex { index: reply.index, term: reply.term })
        }
        Err(status) => {
            Err(Error::Unavailable(format!("leader {leader} did not confirm a read index: {}", status.message())))
        }
    }
}
