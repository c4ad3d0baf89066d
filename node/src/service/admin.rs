//! The admin API (`geocache.v1.Admin`): cluster bootstrap, membership changes, capacity and
//! status. Membership changes run on the leader; a follower forwards them once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use geocache_proto as pb;
use geocache_proto::admin_client::AdminClient;
use geocache_proto::admin_server::Admin as AdminRpc;
use openraft::error::{InitializeError, RaftError};
use openraft::{ChangeMembers, ServerState};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{forward_target, forwarded_request, grpc_timeout, is_forwarded};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::state_machine::{Limits, Op};
use crate::types::{NodeId, NodeInfo};

/// How long `add` waits for a new learner's first answer before reporting it unreachable.
const LEARNER_FIRST_ANSWER: Duration = Duration::from_secs(3);

/// How long a status request waits for each peer's own view before reporting it unreachable.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(1500);

/// Serves `geocache.v1.Admin` for one node.
pub struct AdminService {
    node: Node,
}

impl AdminService {
    pub fn new(node: Node) -> AdminService {
        AdminService { node }
    }

    /// An admin client to member `id`'s peer listener (see [`Node::member_channel`]).
    fn admin_client(node: &Node, member: &(u64, String)) -> Result<AdminClient<Channel>> {
        Ok(AdminClient::new(node.member_channel(member.0)?))
    }

    fn membership_response(&self, log_index: u64) -> pb::MembershipResponse {
        let metrics = self.node.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut response = pb::MembershipResponse { log_index, ..Default::default() };
        for (id, info) in membership.nodes() {
            let member = member_to_wire(*id, info);
            if voters.contains(id) {
                response.voters.push(member);
            } else {
                response.learners.push(member);
            }
        }
        response
    }

    async fn add_learner_local(&self, m: &pb::AddLearnerRequest, timeout: Duration) -> Result<pb::MembershipResponse> {
        let member = m.member.as_ref().ok_or_else(|| Error::InvalidArgument("member is required".into()))?;
        let (id, info) = member_from_wire(member)?;
        let metrics = self.node.metrics();
        let membership = metrics.membership_config.membership();
        if membership.voter_ids().any(|v| v == id) {
            return Err(Error::FailedPrecondition(format!("node {id} is already a voter")));
        }
        if let Some(existing) = membership.get_node(&id) {
            if *existing != info {
                return Err(Error::FailedPrecondition(format!(
                    "node {id} is already a learner at {existing}; remove it before re-adding it elsewhere"
                )));
            }
        }
        // One process must never count as two members (it would hold two votes).
        let shared = |n: &NodeInfo| {
            [&n.addr, &n.peer_addr].into_iter().find(|a| **a == info.addr || **a == info.peer_addr).cloned()
        };
        if let Some((other, addr)) =
            membership.nodes().find_map(|(o, n)| (*o != id).then(|| shared(n)).flatten().map(|a| (*o, a)))
        {
            return Err(Error::FailedPrecondition(format!(
                "{addr} is already an address of node {other}; one process cannot be two members"
            )));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let add = self.node.raft().add_learner(id, info.clone(), false);
        let written = tokio::time::timeout_at(deadline, add)
            .await
            .map_err(|_| Error::Timeout(format!("adding learner {id} was not confirmed in time")))?
            .map_err(|e| self.node.write_error(e))?;
        if m.wait_caught_up {
            self.wait_caught_up(id, &info, written.log_id.index, deadline).await?;
        }
        Ok(self.membership_response(written.log_id.index))
    }

    /// Waits until learner `id` has the entry at `target` (the one that added it). openraft's
    /// own blocking wait counts a learner within 5000 entries as caught up, even one that never
    /// answered. A learner that has answered nothing at all (no heartbeat, no append) within
    /// [`LEARNER_FIRST_ANSWER`] is
    /// reported at once instead of waiting out the caller's deadline; either way the error says
    /// that it stays in the membership as a learner and how to undo that.
    async fn wait_caught_up(
        &self,
        id: NodeId,
        info: &NodeInfo,
        target: u64,
        deadline: tokio::time::Instant,
    ) -> Result<()> {
        let started = tokio::time::Instant::now();
        let first_answer_by = deadline.min(started + LEARNER_FIRST_ANSWER);
        let left_behind = format!(
            "node {id} stays in the membership as a learner (log index {target}): start it and run `geocache cluster add` again, or `geocache cluster remove --id {id}`"
        );
        let matched = |m: &crate::types::RaftMetrics| {
            m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index)
        };
        // Answered: it acknowledged a heartbeat or an append. A live learner that needs a large
        // snapshot first acknowledges heartbeats long before it matches any entry.
        let answered = |m: &crate::types::RaftMetrics| {
            matched(m).is_some() || m.heartbeat.as_ref().and_then(|h| h.get(&id)).is_some_and(Option::is_some)
        };
        let first_wait = self.node.raft().wait(Some(first_answer_by - started));
        if first_wait.metrics(answered, "learner's first answer").await.is_err() {
            return Err(Error::FailedPrecondition(format!(
                "learner {id} at peer address {} has not answered in {} (is it running, reachable, a holder of a certificate the cluster CA signed if TLS is on, and not part of another cluster?); {left_behind}",
                info.peer_addr,
                fmt_duration(first_answer_by - started)
            )));
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let catch_up_wait = self.node.raft().wait(Some(remaining));
        let caught_up = catch_up_wait.metrics(|m| matched(m).is_some_and(|index| index >= target), "learner caught up");
        caught_up.await.map_err(|_| {
            Error::Timeout(format!(
                "learner {id} answers but has not caught up within {}; {left_behind}",
                fmt_duration(deadline - started)
            ))
        })?;
        Ok(())
    }

    async fn change_membership_local(&self, m: &pb::ChangeMembershipRequest) -> Result<pb::MembershipResponse> {
        if m.voters.is_empty() {
            return Err(Error::InvalidArgument("the new voter set must not be empty".into()));
        }
        let metrics = self.node.metrics();
        let membership = metrics.membership_config.membership();
        for id in &m.voters {
            if membership.get_node(id).is_none() {
                return Err(Error::NotFound(format!("node {id} is not a member; add it as a learner first")));
            }
        }
        let voters: BTreeSet<NodeId> = m.voters.iter().copied().collect();
        self.change(ChangeMembers::ReplaceAllVoters(voters), m.retain_as_learners).await
    }

    async fn remove_local(&self, id: NodeId) -> Result<pb::MembershipResponse> {
        let metrics = self.node.metrics();
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(Error::NotFound(format!("node {id} is not a member of this cluster")));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(Error::FailedPrecondition(format!("node {id} is the last voter; it cannot be removed")));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.change(change, false).await
    }

    async fn change(&self, change: ChangeMembers<NodeId, NodeInfo>, retain: bool) -> Result<pb::MembershipResponse> {
        let timeout = self.node.config().request_timeout;
        let written = tokio::time::timeout(timeout, self.node.raft().change_membership(change, retain))
            .await
            .map_err(|_| Error::Timeout("membership change not confirmed in time".into()))?
            .map_err(|e| self.node.write_error(e))?;
        Ok(self.membership_response(written.log_id.index))
    }

    /// This node's own view: itself first-hand, plus (on the leader) every member's lag.
    fn local_status(&self, with_state_hash: bool) -> pb::StatusResponse {
        let node = &self.node;
        let metrics = node.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let (state_hash, limits, applied) =
            node.reader().read(|cache, applied| (with_state_hash.then(|| cache.state_hash()), cache.limits(), applied));
        let last_log = metrics.last_log_index.unwrap_or(0);
        let (read_index_requests, read_index_rounds) = node.read_batcher().stats();
        // The membership record is what the cluster routes by; flags only describe a node
        // that is in no cluster yet.
        let my_info = membership.get_node(&node.id()).cloned().unwrap_or_else(|| node.info());
        let me = pb::NodeStatus {
            id: node.id(),
            addr: my_info.addr,
            region: my_info.region,
            peer_addr: my_info.peer_addr,
            role: role_name(metrics.state, voters.contains(&node.id()), is_removed(membership, node.id())).to_string(),
            term: metrics.current_term,
            applied: applied.map(|l| l.index).unwrap_or(0),
            reachable: true,
            lag: (metrics.state == ServerState::Leader).then_some(0),
            // The probe's bound, not openraft's `millis_since_quorum_ack` (which is not one).
            staleness_bound_ms: node.staleness().bound_ms(),
            last_log_index: last_log,
            state_hash,
            snapshot_index: metrics.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: metrics.purged.map(|l| l.index).unwrap_or(0),
            read_index_requests,
            read_index_rounds,
            clock_offset_ms: node.clock().offset_ms(),
            voter: voters.contains(&node.id()),
        };
        let mut nodes = vec![me];
        // Every other member, as the membership names them (openraft 0.10 may keep replicating
        // to a removed node for a moment, so the replication map is not the member list); the
        // leader adds how far behind each one is.
        for (id, info) in membership.nodes().filter(|(id, _)| **id != node.id()) {
            nodes.push(pb::NodeStatus {
                id: *id,
                addr: info.addr.clone(),
                region: info.region.clone(),
                peer_addr: info.peer_addr.clone(),
                role: if voters.contains(id) { "follower" } else { "learner" }.to_string(),
                voter: voters.contains(id),
                lag: crate::node::replication_lag(&metrics, *id),
                ..Default::default()
            });
        }
        let initialized = membership.nodes().next().is_some();
        pb::StatusResponse {
            node_id: node.id(),
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            initialized,
            nodes,
            cluster_id: node.identity().get(),
            max_entries: limits.max_entries,
            max_bytes: limits.max_bytes,
        }
    }

    /// Every member's own view, merged: first-hand fields from each node that answers, lag from
    /// the leader's replication progress.
    async fn cluster_status(&self, with_state_hash: bool) -> pb::StatusResponse {
        let mut status = self.local_status(with_state_hash);
        let metrics = self.node.metrics();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let leader_view: BTreeMap<NodeId, pb::NodeStatus> = status.nodes.drain(1..).map(|n| (n.id, n)).collect();
        let me = status.nodes.pop().expect("local status lists this node first");

        let peers = membership.nodes().filter(|(id, _)| **id != self.node.id()).map(|(id, info)| {
            let (id, info) = (*id, info.clone());
            let node = self.node.clone();
            async move {
                let ask = async {
                    let mut client = Self::admin_client(&node, &(id, info.addr.clone())).ok()?;
                    let mut request = Request::new(pb::StatusRequest { local_only: true, with_state_hash });
                    request.set_timeout(PEER_STATUS_TIMEOUT);
                    let reply = client.status(request).await.ok()?.into_inner();
                    Some(reply)
                };
                let reply = tokio::time::timeout(PEER_STATUS_TIMEOUT, ask).await.ok().flatten();
                (id, info, reply)
            }
        });
        let replies = futures::future::join_all(peers).await;

        let mut lags = leader_view;
        for (_, _, reply) in &replies {
            if let Some(reply) = reply {
                if reply.leader_id == Some(reply.node_id) {
                    lags.extend(reply.nodes.iter().skip(1).map(|n| (n.id, n.clone())));
                }
            }
        }
        let mut nodes = vec![me];
        for (id, info, reply) in replies {
            let first_hand = reply.and_then(|r| r.nodes.into_iter().find(|n| n.id == id));
            let mut entry = first_hand.unwrap_or_else(|| pb::NodeStatus {
                id,
                addr: info.addr.clone(),
                region: info.region.clone(),
                peer_addr: info.peer_addr.clone(),
                role: if voters.contains(&id) { "follower" } else { "learner" }.to_string(),
                reachable: false,
                ..Default::default()
            });
            if entry.lag.is_none() {
                entry.lag = lags.get(&id).and_then(|n| n.lag);
            }
            // The membership as this node knows it, like every other entry's.
            entry.voter = voters.contains(&id);
            nodes.push(entry);
        }
        if nodes[0].lag.is_none() {
            nodes[0].lag = lags.get(&self.node.id()).and_then(|n| n.lag);
        }
        nodes.sort_by_key(|n| n.id);
        status.nodes = nodes;
        status
    }
}

/// Proposes the initial capacity once a leader exists; logs (does not fail init) if it cannot.
async fn configure_after_init(node: Node, limits: Limits) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let result = match node.leader() {
            Some((leader, _)) if leader == node.id() => {
                let op = Op::Configure { max_entries: Some(limits.max_entries), max_bytes: Some(limits.max_bytes) };
                node.propose(node.command(op, None)).await.map(|_| ())
            }
            Some(leader) => match AdminService::admin_client(&node, &leader) {
                Ok(mut client) => client
                    .configure(forwarded_request(
                        pb::ConfigureRequest {
                            max_entries: Some(limits.max_entries),
                            max_bytes: Some(limits.max_bytes),
                        },
                        node.config().request_timeout,
                    ))
                    .await
                    .map(|_| ())
                    .map_err(|s| Error::Unavailable(s.message().to_string())),
                Err(e) => Err(e),
            },
            None => Err(Error::Unavailable("no leader yet".into())),
        };
        match result {
            Ok(()) => {
                tracing::info!(?limits, "cache capacity configured");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "capacity not configured yet; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::warn!(?limits, "could not configure the cache capacity after init; run `geocache cluster configure`");
}

/// Forwards `$message` to the leader's admin service if the local attempt said `NotLeader`.
macro_rules! or_forward {
    ($self:ident, $result:expr, $forwarded:expr, $message:expr, $method:ident) => {{
        match $result {
            Ok(response) => Ok(Response::new(response)),
            Err(e) => match forward_target(&e, $forwarded) {
                Some(leader) => {
                    let mut client = Self::admin_client(&$self.node, &leader)?;
                    let reply = client.$method(forwarded_request($message, $self.node.config().request_timeout)).await;
                    super::forwarded_reply(&leader, reply)
                }
                None => Err(e.into()),
            },
        }
    }};
}

#[tonic::async_trait]
impl AdminRpc for AdminService {
    async fn init(&self, request: Request<pb::InitRequest>) -> Result<Response<pb::MembershipResponse>, Status> {
        let req = request.into_inner();
        let is_initialized = self.node.raft().is_initialized().await.map_err(|e| Error::Fatal(e.to_string()))?;
        if is_initialized {
            return Err(Error::FailedPrecondition(
                "cluster is already initialised; use `geocache cluster add` to grow it".into(),
            )
            .into());
        }
        let mut members = BTreeMap::new();
        if req.members.is_empty() {
            members.insert(self.node.id(), self.node.info());
        }
        for m in &req.members {
            let (id, info) = member_from_wire(m)?;
            if members.insert(id, info).is_some() {
                return Err(Error::InvalidArgument(format!("node {id} is listed twice")).into());
            }
        }
        if !members.contains_key(&self.node.id()) {
            return Err(Error::InvalidArgument(format!(
                "the initial members must include the node receiving init (node {})",
                self.node.id()
            ))
            .into());
        }
        // The cluster id must be durable before the first vote request carries it.
        let cluster_id = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        self.node.identity().adopt(cluster_id).await?;
        let initial = members.clone();
        match self.node.raft().initialize(members).await {
            Ok(()) => {}
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                return Err(Error::FailedPrecondition(format!("cluster is already initialised: {e}")).into())
            }
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => {
                return Err(Error::InvalidArgument(e.to_string()).into())
            }
            Err(RaftError::Fatal(e)) => return Err(Error::Fatal(e.to_string()).into()),
        }
        let limits = self.node.config().limits;
        if limits != Limits::default() {
            tokio::spawn(configure_after_init(self.node.clone(), limits));
        }
        // The membership entry may not be applied yet: answer with what was initialised.
        let index = self.node.metrics().last_log_index.unwrap_or(0);
        let voters = initial.iter().map(|(id, info)| member_to_wire(*id, info)).collect();
        Ok(Response::new(pb::MembershipResponse { log_index: index, voters, learners: vec![] }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let timeout = grpc_timeout(&request).unwrap_or(self.node.config().request_timeout);
        let req = request.into_inner();
        or_forward!(self, self.add_learner_local(&req, timeout).await, forwarded, req, add_learner)
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        or_forward!(self, self.change_membership_local(&req).await, forwarded, req, change_membership)
    }

    async fn remove(&self, request: Request<pb::RemoveRequest>) -> Result<Response<pb::MembershipResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let result = if self.node.is_leader() || forwarded {
            self.remove_local(req.id).await
        } else {
            // Only the leader's membership view is authoritative: let it judge the id.
            Err(Error::NotLeader { leader: self.node.leader() })
        };
        or_forward!(self, result, forwarded, req, remove)
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let pb::StatusRequest { local_only, with_state_hash } = *request.get_ref();
        let status =
            if local_only { self.local_status(with_state_hash) } else { self.cluster_status(with_state_hash).await };
        Ok(Response::new(status))
    }

    async fn configure(
        &self,
        request: Request<pb::ConfigureRequest>,
    ) -> Result<Response<pb::ConfigureResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        if req.max_entries.is_none() && req.max_bytes.is_none() {
            return Err(Error::InvalidArgument("configure needs max_entries, max_bytes or both".into()).into());
        }
        let op = Op::Configure { max_entries: req.max_entries, max_bytes: req.max_bytes };
        let result = self
            .node
            .propose(self.node.command(op, None))
            .await
            .map(|(log_index, _)| pb::ConfigureResponse { log_index });
        or_forward!(self, result, forwarded, req, configure)
    }

    async fn set_clock_offset(
        &self,
        request: Request<pb::SetClockOffsetRequest>,
    ) -> Result<Response<pb::SetClockOffsetResponse>, Status> {
        if !self.node.config().fault_injection {
            return Err(Error::PermissionDenied(
                "clock offsets can only be changed in the fault-injection harness's node build".into(),
            )
            .into());
        }
        let offset_ms = request.into_inner().offset_ms;
        let previous_offset_ms = self.node.clock().set_offset_ms(offset_ms);
        tracing::warn!(offset_ms, previous_offset_ms, "fault injection: wall clock offset changed");
        Ok(Response::new(pb::SetClockOffsetResponse { previous_offset_ms }))
    }
}

/// Whether the cluster removed this node: it has a membership, and that membership no longer
/// names it (it may still think it leads until it steps down).
fn is_removed(membership: &crate::types::Membership, id: NodeId) -> bool {
    membership.nodes().next().is_some() && membership.get_node(&id).is_none()
}

fn role_name(state: ServerState, is_voter: bool, removed: bool) -> &'static str {
    if removed {
        return "removed";
    }
    match state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Follower if is_voter => "follower",
        ServerState::Follower | ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

fn member_from_wire(m: &pb::Member) -> Result<(NodeId, NodeInfo)> {
    if m.id == 0 {
        return Err(Error::InvalidArgument("node id must be non-zero".into()));
    }
    if m.addr.trim().is_empty() {
        return Err(Error::InvalidArgument(format!("node {}: address must not be empty", m.id)));
    }
    if m.region.trim().is_empty() {
        return Err(Error::InvalidArgument(format!("node {}: region must not be empty", m.id)));
    }
    // No peer address given: the documented rule, the client address's host at port + 100.
    let peer_addr = if m.peer_addr.trim().is_empty() {
        crate::config::default_peer_advertise(&m.addr).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "node {}: no peer address given and none follows from {:?} (give the member's peer address)",
                m.id, m.addr
            ))
        })?
    } else {
        m.peer_addr.clone()
    };
    if peer_addr == m.addr {
        return Err(Error::InvalidArgument(format!(
            "node {}: the peer address must differ from the client address {}",
            m.id, m.addr
        )));
    }
    Ok((m.id, NodeInfo { addr: m.addr.clone(), region: m.region.clone(), peer_addr }))
}

fn member_to_wire(id: NodeId, info: &NodeInfo) -> pb::Member {
    pb::Member { id, addr: info.addr.clone(), region: info.region.clone(), peer_addr: info.peer_addr.clone() }
}

/// To a tenth of a second: `3s`, `2s 500ms`.
fn fmt_duration(d: Duration) -> String {
    let tenths = (d.as_millis() as u64 + 50) / 100;
    humantime::format_duration(Duration::from_millis(tenths * 100)).to_string()
}
