//! The inbound side of Raft traffic: the `Raft` gRPC service that hands peers' messages to the
//! local openraft instance, and answers read-index requests from followers.
//!
//! Invariant: nothing reaches openraft (or is proposed) before it is admitted: it carries this
//! node's cluster id, and every term and log index in it is below a ceiling no real cluster
//! reaches ([`MAX_TERM`], [`MAX_LOG_INDEX`]). A forged term near `u64::MAX` would otherwise be
//! persisted as this node's vote and make its next election overflow, on every restart. This
//! guards against mistakes and the worst forgeries; authenticating peers is a separate layer.
//! On the replication stream every message is admitted on its own, and the first one refused ends
//! the stream (the leader opens a new one).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use geocache_proto::raft_server::Raft as RaftRpc;
use geocache_proto::{RaftPayload, ReadIndexRequest, ReadIndexResponse, TouchRequest, TouchResponse};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use tonic::{Request, Response, Status, Streaming};

use super::{decode, encode, SnapshotTransfer};
use crate::error::Error;
use crate::node::Node;
use crate::types::{LogId, Snapshot, TypeConfig, Vote};

/// Highest term this node accepts. Terms grow by one per election: at one election every 100 ms
/// a cluster needs over 3,000 years to get here, and everything below it has room to count up.
pub const MAX_TERM: u64 = 1 << 40;
/// Highest log index this node accepts: at ten million entries a second, over 14,000 years.
pub const MAX_LOG_INDEX: u64 = 1 << 62;
/// Most keys in one `Touch` (a follower drains at most `read::recency::MAX_NOTED_KEYS` at once).
const MAX_TOUCH_KEYS: usize = crate::read::recency::MAX_NOTED_KEYS;

/// Serves `geocache.v1.Raft` for one node.
pub struct RaftService {
    node: Node,
}

impl RaftService {
    pub fn new(node: Node) -> RaftService {
        RaftService { node }
    }
}

impl RaftService {
    /// Decodes and admits one replication message (the unary and the streamed ones alike).
    async fn admit_append(&self, payload: RaftPayload) -> Result<AppendEntriesRequest<TypeConfig>, Status> {
        let req = decode(&payload.data).map_err(bad_payload)?;
        check_append(&req)?;
        check_not_from_self(&self.node, &req.vote)?;
        self.admit(payload.cluster_id, Joining::Allowed).await?;
        Ok(req)
    }

    /// Decodes and admits a vote or pre-vote request.
    async fn admit_vote(&self, payload: RaftPayload) -> Result<VoteRequest<TypeConfig>, Status> {
        let req = decode(&payload.data).map_err(bad_payload)?;
        check_vote_request(&req)?;
        self.admit(payload.cluster_id, Joining::Allowed).await?;
        Ok(req)
    }

    /// Refuses a message from another cluster (or from a node in none). A node in no cluster yet
    /// joins the sender's through a Raft message that is already decoded and checked
    /// (`Joining::Allowed`): a vote or replication, which is how members named at init or added
    /// later learn the cluster id. So a message it refuses can never bind it to a cluster.
    async fn admit(&self, theirs: u64, joining: Joining) -> Result<(), Status> {
        if theirs == 0 {
            return Err(Error::FailedPrecondition("raft message from a node that belongs to no cluster".into()).into());
        }
        let ours = match (self.node.identity().get(), joining) {
            (0, Joining::Allowed) => self.node.identity().adopt(theirs).await?,
            (0, Joining::Never) => {
                return Err(Error::FailedPrecondition("this node belongs to no cluster yet".into()).into())
            }
            (ours, _) => ours,
        };
        if ours != theirs {
            return Err(Error::FailedPrecondition(format!(
                "raft message from cluster {theirs:016x}, but this node belongs to cluster {ours:016x}"
            ))
            .into());
        }
        Ok(())
    }
}

/// Whether a message may make a node that is in no cluster yet join the sender's.
#[derive(Clone, Copy)]
enum Joining {
    /// A Raft message, decoded and checked.
    Allowed,
    /// Anything else (only leaders take recency notes).
    Never,
}

/// A leader never replicates to itself over the network: such a message is forged, and
/// openraft would run its follower path on the leader's own log.
fn check_not_from_self(node: &Node, vote: &Vote) -> Result<(), Error> {
    if vote.leader_id.node_id == node.id() {
        return Err(Error::InvalidArgument(format!(
            "replication naming this node ({}) as its leader did not come from it",
            node.id()
        )));
    }
    Ok(())
}

fn bad_payload(e: bincode::Error) -> Status {
    Status::from(Error::InvalidArgument(format!("undecodable raft payload: {e}")))
}

/// Refuses a term or index no real cluster reaches (see the module doc).
fn check_term(what: &str, term: u64) -> Result<(), Error> {
    if term > MAX_TERM {
        return Err(Error::InvalidArgument(format!("{what} has term {term}, above the highest possible {MAX_TERM}")));
    }
    Ok(())
}

fn check_log_id(what: &str, log_id: Option<&LogId>) -> Result<(), Error> {
    let Some(log_id) = log_id else { return Ok(()) };
    check_term(what, log_id.leader_id.term)?;
    if log_id.index > MAX_LOG_INDEX {
        return Err(Error::InvalidArgument(format!(
            "{what} has log index {}, above the highest possible {MAX_LOG_INDEX}",
            log_id.index
        )));
    }
    Ok(())
}

fn check_vote(what: &str, vote: &Vote) -> Result<(), Error> {
    check_term(what, vote.leader_id.term)
}

fn check_append(req: &AppendEntriesRequest<TypeConfig>) -> Result<(), Error> {
    check_vote("append-entries vote", &req.vote)?;
    check_log_id("append-entries prev_log_id", req.prev_log_id.as_ref())?;
    check_log_id("append-entries leader_commit", req.leader_commit.as_ref())?;
    req.entries.iter().try_for_each(|entry| check_log_id("append-entries entry", Some(&entry.log_id)))
}

fn check_vote_request(req: &VoteRequest<TypeConfig>) -> Result<(), Error> {
    check_vote("vote request", &req.vote)?;
    check_log_id("vote request last_log_id", req.last_log_id.as_ref())?;
    // A leadership-transfer vote is granted inside the leader's lease. Nodes here never transfer
    // leadership (the network does not implement it), so such a vote can only be forged to
    // depose a healthy leader.
    if req.leadership_transfer {
        return Err(Error::InvalidArgument("vote request claims a leadership transfer; none is ever started".into()));
    }
    Ok(())
}

fn check_snapshot(transfer: &SnapshotTransfer) -> Result<(), Error> {
    check_vote("install-snapshot vote", &transfer.vote)?;
    check_log_id("snapshot last_log_id", transfer.meta.last_log_id.as_ref())?;
    check_log_id("snapshot membership", transfer.meta.last_membership.log_id().as_ref())?;
    // No leader holds a snapshot past its own term (openraft would stop on one).
    if let Some(last) = &transfer.meta.last_log_id {
        if last.leader_id.term > transfer.vote.leader_id.term {
            return Err(Error::InvalidArgument(format!(
                "snapshot up to term {} sent under the vote of term {}",
                last.leader_id.term, transfer.vote.leader_id.term
            )));
        }
    }
    Ok(())
}

/// A Raft call openraft could not serve: it is stopping (or stopped on a storage error). The
/// sender treats it like an unreachable peer and backs off.
fn raft_stopped(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft is not running: {e}"))
}

fn payload<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data = encode(value).map_err(|e| Status::from(Error::Fatal(format!("cannot encode raft reply: {e}"))))?;
    Ok(Response::new(RaftPayload { data: data.into(), cluster_id: 0 }))
}

type AnswerStream = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let req = self.admit_append(request.into_inner()).await?;
        payload(&self.node.raft().append_entries(req).await.map_err(raft_stopped)?)
    }

    type StreamAppendStream = AnswerStream;

    async fn stream_append(&self, request: Request<Streaming<RaftPayload>>) -> Result<Response<AnswerStream>, Status> {
        let node = self.node.clone();
        // Admitted requests flow into openraft; the first refused (or broken) message ends the
        // input, and openraft ends the answers after those already under way.
        let admitted = request
            .into_inner()
            .then(move |message| {
                let service = RaftService { node: node.clone() };
                async move { service.admit_append(message?).await }
            })
            .take_while(|admitted| {
                if let Err(refused) = admitted {
                    tracing::debug!(error = %refused.message(), "replication stream refused");
                }
                futures::future::ready(admitted.is_ok())
            })
            .filter_map(|admitted| futures::future::ready(admitted.ok()));
        let answers = self.node.raft().stream_append(Box::pin(admitted)).map(|answer| {
            let answer = answer.map_err(raft_stopped)?;
            let data =
                encode(&answer).map_err(|e| Status::from(Error::Fatal(format!("cannot encode raft reply: {e}"))))?;
            Ok(RaftPayload { data: data.into(), cluster_id: 0 })
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let req = self.admit_vote(request.into_inner()).await?;
        payload(&self.node.raft().vote(req).await.map_err(raft_stopped)?)
    }

    async fn pre_vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let req = self.admit_vote(request.into_inner()).await?;
        payload(&self.node.raft().pre_vote(req).await.map_err(raft_stopped)?)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let request = request.into_inner();
        let transfer: SnapshotTransfer = decode(&request.data).map_err(bad_payload)?;
        check_snapshot(&transfer)?;
        check_not_from_self(&self.node, &transfer.vote)?;
        self.admit(request.cluster_id, Joining::Allowed).await?;
        let snapshot = Snapshot { meta: transfer.meta, snapshot: transfer.data };
        payload(&self.node.raft().install_full_snapshot(transfer.vote, snapshot).await.map_err(raft_stopped)?)
    }

    async fn read_index(&self, _request: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        let confirmed = crate::read::leader_read_index(&self.node).await?;
        Ok(Response::new(ReadIndexResponse { index: confirmed.index, leader_id: self.node.id(), term: confirmed.term }))
    }

    async fn touch(&self, request: Request<TouchRequest>) -> Result<Response<TouchResponse>, Status> {
        // Proposed only if this node leads; a follower's notes are not forwarded twice.
        let request = request.into_inner();
        self.admit(request.cluster_id, Joining::Never).await?;
        let keys = request.keys;
        if keys.len() > MAX_TOUCH_KEYS {
            return Err(
                Error::InvalidArgument(format!("{} keys in one touch, over {MAX_TOUCH_KEYS}", keys.len())).into()
            );
        }
        keys.iter().try_for_each(|key| self.node.config().validate_key(key))?;
        if !keys.is_empty() {
            self.node.propose(self.node.command(crate::state_machine::Op::Touch { keys }, None)).await?;
        }
        Ok(Response::new(TouchResponse {}))
    }
}
