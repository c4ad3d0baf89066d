//! Cluster administration: bootstrap, membership changes, status.
//!
//! Membership changes go to the leader with the usual routing and retries; they are idempotent
//! (adding a learner twice or asking for the same voter set twice changes nothing), so retrying
//! one whose outcome is unknown is safe. `init` goes to the first endpoint only and is retried
//! only while nothing can have happened (the node is not up yet): initialising twice is an error.
//! `status` asks any node that answers, the leader first, and teaches the client who leads.
//! A successful init or membership change asks for an early topology refresh.

use crate::endpoint::NodeChannel;
use geocache_proto as pb;
use geocache_proto::admin_client::AdminClient;

use crate::client::{timed, Client, MAX_RESPONSE_BYTES};
use crate::endpoint::normalize;
use crate::error::Result;
use crate::routing::{Policy, Route};
use crate::types::{LogIndex, NodeId};

/// A cluster member: its id, the address clients dial, its region label, and the address other
/// members dial.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// Node id (nonzero, unique in the cluster).
    pub id: NodeId,
    /// Client gRPC address, `host:port`.
    pub addr: String,
    /// Region label, e.g. `us-east`.
    pub region: String,
    /// Peer gRPC address, `host:port` (Raft and member-to-member calls). Empty when adding a
    /// member: the node derives it from `addr` (same host, port + 100).
    pub peer_addr: String,
}

impl Member {
    /// A member description, its peer address derived by the node from `addr`.
    pub fn new(id: NodeId, addr: impl Into<String>, region: impl Into<String>) -> Self {
        Member { id, addr: addr.into(), region: region.into(), peer_addr: String::new() }
    }

    /// The same member with an explicit peer address.
    pub fn with_peer_addr(mut self, peer_addr: impl Into<String>) -> Self {
        self.peer_addr = peer_addr.into();
        self
    }
}

impl From<Member> for pb::Member {
    fn from(m: Member) -> Self {
        pb::Member { id: m.id, addr: m.addr, region: m.region, peer_addr: m.peer_addr }
    }
}

impl From<pb::Member> for Member {
    fn from(m: pb::Member) -> Self {
        Member { id: m.id, addr: m.addr, region: m.region, peer_addr: m.peer_addr }
    }
}

/// The membership after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Log index of the membership entry.
    pub log_index: LogIndex,
    /// Voting members.
    pub voters: Vec<Member>,
    /// Non-voting members (replicate, serve local reads, do not count for quorum).
    pub learners: Vec<Member>,
}

impl From<pb::MembershipResponse> for Membership {
    fn from(m: pb::MembershipResponse) -> Self {
        Membership {
            log_index: m.log_index,
            voters: m.voters.into_iter().map(Into::into).collect(),
            learners: m.learners.into_iter().map(Into::into).collect(),
        }
    }
}

/// A node's Raft role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepts writes and serves linearizable reads.
    Leader,
    /// A voter replicating from the leader.
    Follower,
    /// A voter running for election.
    Candidate,
    /// A non-voter replicating from the leader.
    Learner,
    /// A role this client does not know (a newer server), as the node named it.
    Other(String),
}

impl From<String> for Role {
    fn from(s: String) -> Self {
        match s.as_str() {
            "leader" => Role::Leader,
            "follower" => Role::Follower,
            "candidate" => Role::Candidate,
            "learner" => Role::Learner,
            _ => Role::Other(s),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Other(s) => s,
        })
    }
}

/// One node as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node id.
    pub id: NodeId,
    /// Client gRPC address (what the client dials).
    pub addr: String,
    /// Peer gRPC address (what other members dial; the client never does).
    pub peer_addr: String,
    /// Region label.
    pub region: String,
    /// Raft role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// Last applied log index.
    pub applied: LogIndex,
    /// Whether the node answered the status request (fields above are then first-hand).
    pub reachable: bool,
    /// The leader's view of how many entries this node is behind, when known.
    pub lag: Option<u64>,
    /// Upper bound on the node's staleness in ms, when known.
    pub staleness_bound_ms: Option<u64>,
    /// Last log index.
    pub last_log_index: LogIndex,
    /// Hash of the cache contents at `applied`, for convergence checks; only when asked for
    /// (it walks the whole cache), so never from topology discovery.
    pub state_hash: Option<u64>,
}

impl From<pb::NodeStatus> for NodeStatus {
    fn from(n: pb::NodeStatus) -> Self {
        NodeStatus {
            id: n.id,
            addr: n.addr,
            peer_addr: n.peer_addr,
            region: n.region,
            role: n.role.into(),
            term: n.term,
            applied: n.applied,
            reachable: n.reachable,
            lag: n.lag,
            staleness_bound_ms: n.staleness_bound_ms,
            last_log_index: n.last_log_index,
            state_hash: n.state_hash,
        }
    }
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The node that answered.
    pub node_id: NodeId,
    /// The id of the cluster it belongs to (random, fixed at init; 0 before init).
    pub cluster_id: u64,
    /// The leader it knows, if any.
    pub leader_id: Option<NodeId>,
    /// Its current term.
    pub term: u64,
    /// Whether the cluster has been initialised.
    pub initialized: bool,
    /// Every member, the answering node included.
    pub nodes: Vec<NodeStatus>,
    /// The replicated cache capacity in entries (0 = unlimited).
    pub max_entries: u64,
    /// The replicated cache capacity in bytes (0 = unlimited).
    pub max_bytes: u64,
}

impl Status {
    /// The leader's entry in `nodes`, if the answering node knows the leader.
    pub fn leader(&self) -> Option<&NodeStatus> {
        let id = self.leader_id?;
        self.nodes.iter().find(|n| n.id == id)
    }
}

impl From<pb::StatusResponse> for Status {
    fn from(s: pb::StatusResponse) -> Self {
        Status {
            node_id: s.node_id,
            cluster_id: s.cluster_id,
            leader_id: s.leader_id,
            term: s.term,
            initialized: s.initialized,
            nodes: s.nodes.into_iter().map(Into::into).collect(),
            max_entries: s.max_entries,
            max_bytes: s.max_bytes,
        }
    }
}

pub(crate) fn admin_client(channel: NodeChannel) -> AdminClient<NodeChannel> {
    AdminClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

impl Client {
    /// The cluster's status from any node that answers (the best-known leader first). If the
    /// answer names the leader, later leader-bound calls go straight to it.
    pub async fn status(&self) -> Result<Status> {
        let status = self.status_at(Route::AnyLeaderFirst, false, false).await?;
        if let Some(leader) = status.leader() {
            self.inner.router.set_leader(&leader.addr);
        }
        Ok(status)
    }

    /// The status as the node at `addr` sees it, asking only that node (`local_only`: it does
    /// not ask its peers either). Retries until that node answers or the timeout elapses; for
    /// health checks and convergence checks of a particular node.
    /// Asks for each node's state hash too (a walk over its whole cache).
    pub async fn node_status(&self, addr: &str, local_only: bool) -> Result<Status> {
        self.status_at(Route::Only(normalize(addr)?), local_only, true).await
    }

    async fn status_at(&self, route: Route, local_only: bool, with_state_hash: bool) -> Result<Status> {
        let req = pb::StatusRequest { local_only, with_state_hash };
        let resp = self
            .inner
            .router
            .call("status", route, Policy::READ, |ch, budget| {
                let mut client = admin_client(ch);
                let req = timed(req, budget);
                async move { client.status(req).await }
            })
            .await?;
        Ok(resp.into())
    }

    /// Initialises a new cluster with `members` as its voters (empty: a one-voter cluster of
    /// the first endpoint itself). Sent to the first endpoint only; retried only while that
    /// node is unreachable or not ready. A second init fails with
    /// [`Error::FailedPrecondition`](crate::Error::FailedPrecondition).
    pub async fn init(&self, members: Vec<Member>) -> Result<Membership> {
        let first = self.inner.router.seeds()[0].clone();
        let req = pb::InitRequest { members: members.into_iter().map(Into::into).collect() };
        let resp = self
            .inner
            .router
            .call("init", Route::Only(first), Policy::ONCE, |ch, budget| {
                let mut client = admin_client(ch);
                let req = timed(req.clone(), budget);
                async move { client.init(req).await }
            })
            .await?;
        self.inner.router.request_refresh();
        Ok(resp.into())
    }

    /// Adds `member` as a learner. With `wait_caught_up`, answers once it has caught up with
    /// the leader's log (give the client a timeout long enough for that).
    pub async fn add_learner(&self, member: Member, wait_caught_up: bool) -> Result<Membership> {
        let req = pb::AddLearnerRequest { member: Some(member.into()), wait_caught_up };
        let resp = self
            .inner
            .router
            .call("add_learner", Route::Leader, Policy::WRITE, |ch, budget| {
                let mut client = admin_client(ch);
                let req = timed(req.clone(), budget);
                async move { client.add_learner(req).await }
            })
            .await?;
        self.inner.router.request_refresh();
        Ok(resp.into())
    }

    /// Makes `voters` the complete voter set. Removed voters stay as learners when
    /// `retain_as_learners`, else leave the cluster.
    pub async fn change_membership(&self, voters: Vec<NodeId>, retain_as_learners: bool) -> Result<Membership> {
        let req = pb::ChangeMembershipRequest { voters, retain_as_learners };
        let resp = self
            .inner
            .router
            .call("change_membership", Route::Leader, Policy::WRITE, |ch, budget| {
                let mut client = admin_client(ch);
                let req = timed(req.clone(), budget);
                async move { client.change_membership(req).await }
            })
            .await?;
        self.inner.router.request_refresh();
        Ok(resp.into())
    }

    /// Removes node `id` (voter or learner) from the cluster. An unknown id is
    /// [`Error::NotFound`](crate::Error::NotFound); removing the last voter is refused.
    pub async fn remove(&self, id: NodeId) -> Result<Membership> {
        let req = pb::RemoveRequest { id };
        let resp = self
            .inner
            .router
            .call("remove", Route::Leader, Policy::WRITE, |ch, budget| {
                let mut client = admin_client(ch);
                let req = timed(req, budget);
                async move { client.remove(req).await }
            })
            .await?;
        self.inner.router.request_refresh();
        Ok(resp.into())
    }

    /// Changes the replicated cache capacity (0 = unlimited; `None` keeps that limit as it is),
    /// so every replica evicts alike. Returns the log index of the change.
    pub async fn configure(&self, max_entries: Option<u64>, max_bytes: Option<u64>) -> Result<LogIndex> {
        let req = pb::ConfigureRequest { max_entries, max_bytes };
        let resp = self
            .inner
            .router
            .call("configure", Route::Leader, Policy::WRITE, |ch, budget| {
                let mut client = admin_client(ch);
                let req = timed(req, budget);
                async move { client.configure(req).await }
            })
            .await?;
        Ok(resp.log_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse() {
        assert_eq!(Role::from("leader".to_string()), Role::Leader);
        assert_eq!(Role::from("learner".to_string()), Role::Learner);
        assert_eq!(Role::from("witness".to_string()), Role::Other("witness".into()));
        assert_eq!(Role::Other("witness".into()).to_string(), "witness");
    }

    #[test]
    fn status_finds_its_leader() {
        let status: Status = pb::StatusResponse {
            node_id: 1,
            leader_id: Some(2),
            nodes: vec![
                pb::NodeStatus { id: 1, role: "follower".into(), ..Default::default() },
                pb::NodeStatus { id: 2, addr: "127.0.0.1:7002".into(), role: "leader".into(), ..Default::default() },
            ],
            ..Default::default()
        }
        .into();
        assert_eq!(status.leader().unwrap().addr, "127.0.0.1:7002");
        assert_eq!(status.leader().unwrap().role, Role::Leader);
    }
}
