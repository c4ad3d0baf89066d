//! The inbound side of Raft traffic: the `Raft` gRPC service that hands peers' messages to the
//! local openraft instance, and answers read-index requests from followers.

use geocache_proto::raft_server::Raft as RaftRpc;
use geocache_proto::{RaftPayload, ReadIndexRequest, ReadIndexResponse, TouchRequest, TouchResponse};
use tonic::{Request, Response, Status};

use super::{decode, encode};
use crate::error::Error;
use crate::node::Node;
use crate::store::LogTail;

/// Serves `geocache.v1.Raft` for one node.
pub struct RaftService {
    node: Node,
    tail: LogTail,
}

impl RaftService {
    pub fn new(node: Node, tail: LogTail) -> RaftService {
        RaftService { node, tail }
    }
}

impl RaftService {
    /// Refuses a message from another cluster (or from a node in none); a node in no cluster yet
    /// joins the sender's, which is how members added after init learn the cluster id.
    async fn admit(&self, request: &Request<RaftPayload>) -> Result<(), Status> {
        let theirs = request.get_ref().cluster_id;
        if theirs == 0 {
            return Err(Error::FailedPrecondition("raft message from a node that belongs to no cluster".into()).into());
        }
        let ours = match self.node.identity().get() {
            0 => self.node.identity().adopt(theirs).await?,
            ours => ours,
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

fn bad_payload(e: bincode::Error) -> Status {
    Status::from(Error::InvalidArgument(format!("undecodable raft payload: {e}")))
}

fn payload<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data = encode(value).map_err(|e| Status::from(Error::Fatal(format!("cannot encode raft reply: {e}"))))?;
    Ok(Response::new(RaftPayload { data: data.into(), cluster_id: 0 }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit(&request).await?;
        let req = decode(&request.into_inner().data).map_err(bad_payload)?;
        let reply = self.node.raft().append_entries(req).await;
        // Accepted from the current leader (anything but a higher vote): that is contact, for
        // the pre-vote. Only liveness depends on it, never what a read may return.
        if matches!(&reply, Ok(r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_))) {
            self.node.leader_contact().note_contact();
        }
        payload(&reply)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit(&request).await?;
        let req = decode(&request.into_inner().data).map_err(bad_payload)?;
        payload(&self.node.raft().vote(req).await)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit(&request).await?;
        let req = decode(&request.into_inner().data).map_err(bad_payload)?;
        payload(&self.node.raft().install_snapshot(req).await)
    }

    async fn read_index(&self, _request: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        let confirmed = crate::read::leader_read_index(&self.node).await?;
        Ok(Response::new(ReadIndexResponse { index: confirmed.index, leader_id: self.node.id(), term: confirmed.term }))
    }

    async fn pre_vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit(&request).await?;
        let req: crate::election::PreVoteRequest = decode(&request.into_inner().data).map_err(bad_payload)?;
        let answer = crate::election::judge(&self.node, &self.tail, &req)?;
        tracing::debug!(candidate = req.candidate, granted = answer.granted, reason = %answer.reason, "pre-vote");
        payload(&answer)
    }

    async fn touch(&self, request: Request<TouchRequest>) -> Result<Response<TouchResponse>, Status> {
        // Proposed only if this node leads; a follower's notes are not forwarded twice.
        let keys = request.into_inner().keys;
        if !keys.is_empty() {
            self.node.propose(self.node.command(crate::state_machine::Op::Touch { keys }, None)).await?;
        }
        Ok(Response::new(TouchResponse {}))
    }
}
