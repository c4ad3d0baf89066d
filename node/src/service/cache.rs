//! The client API (`geocache.v1.Cache`): validates requests, proposes writes (forwarding them to
//! the leader when this node is not it) and serves reads at the requested consistency.

use geocache_proto as pb;
use geocache_proto::cache_client::CacheClient;
use geocache_proto::cache_server::Cache as CacheRpc;
use tonic::{Request, Response, Status};

use std::time::Duration;

use super::{forward_target, forwarded_request, grpc_timeout, is_forwarded};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::read::{self, ReadLevel};
use crate::state_machine::{Condition, EntryView, Op, Rejection, Response as Applied, WriteId};
use crate::types::LogIndex;

/// Serves `geocache.v1.Cache` for one node.
pub struct CacheService {
    node: Node,
}

impl CacheService {
    pub fn new(node: Node) -> CacheService {
        CacheService { node }
    }

    fn validate_key(&self, key: &str) -> Result<()> {
        self.node.config().validate_key(key)
    }

    /// Absolute expiry (log time) for a relative TTL, as the proposer computes it.
    fn expires_at(&self, ttl_ms: Option<u64>, now_ms: u64) -> Result<Option<u64>> {
        match ttl_ms {
            None => Ok(None),
            Some(0) => Err(Error::InvalidArgument("ttl must be positive (omit it for no expiry)".into())),
            Some(ttl) => now_ms
                .checked_add(ttl)
                .map(Some)
                .ok_or_else(|| Error::InvalidArgument(format!("ttl of {ttl} ms overflows the clock"))),
        }
    }

    fn client_for(&self, leader: &(u64, String)) -> Result<CacheClient<tonic::transport::Channel>> {
        let channel = self.node.peers().channel_to(leader.0, &leader.1).map_err(Error::Unavailable)?;
        let max = self.node.config().max_client_message_bytes();
        Ok(CacheClient::new(channel).max_decoding_message_size(max).max_encoding_message_size(max))
    }

    /// Proposes `op` locally; on `NotLeader` hands back the leader to forward to.
    async fn write(
        &self,
        op: Op,
        write_id: Option<pb::WriteId>,
        forwarded: bool,
        deadline: tokio::time::Instant,
    ) -> WriteOutcome {
        let write_id = match write_id_from_wire(write_id) {
            Ok(id) => id,
            Err(e) => return WriteOutcome::Failed(e),
        };
        loop {
            if let Err(no_quorum) = self.node.ensure_leader_has_quorum() {
                return WriteOutcome::Failed(no_quorum);
            }
            let cmd = self.node.command(op.clone(), write_id);
            match self.node.propose(cmd).await {
                Ok((index, applied)) => return WriteOutcome::Done(write_response(index, applied)),
                // Mid-election: nothing was proposed, so wait for a leader and try again; but a
                // node cut off from the leader says so at once rather than wait in vain.
                Err(Error::NotLeader { leader: None }) if !forwarded => {
                    if let Err(unreachable) = self.node.ensure_leader_reachable() {
                        return WriteOutcome::Failed(unreachable);
                    }
                    match self.node.wait_for_leader(deadline).await {
                        Ok((leader, _)) if leader == self.node.id() => {
                            // Metrics can name us a moment before Raft accepts writes: back off.
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            continue;
                        }
                        Ok(leader) => return WriteOutcome::Forward(leader),
                        Err(e) => return WriteOutcome::Failed(e),
                    }
                }
                Err(e) => {
                    return match forward_target(&e, forwarded) {
                        Some(leader) => match self.node.ensure_leader_reachable() {
                            Ok(()) => WriteOutcome::Forward(leader),
                            Err(unreachable) => WriteOutcome::Failed(unreachable),
                        },
                        None => WriteOutcome::Failed(e),
                    }
                }
            }
        }
    }

    /// Serves a read of `key` from the local state machine at the requested level, within the
    /// caller's deadline (capped by the node's request timeout).
    async fn read(
        &self,
        key: &str,
        spec: ReadSpec,
        deadline: Option<Duration>,
    ) -> Result<(Option<EntryView>, pb::ReadMeta)> {
        self.validate_key(key)?;
        let level = match pb::Consistency::try_from(spec.consistency) {
            Ok(pb::Consistency::Linearizable) => ReadLevel::Linearizable,
            Ok(pb::Consistency::Stale) => ReadLevel::Stale,
            Ok(pb::Consistency::Bounded) if spec.max_staleness_ms == 0 => {
                return Err(Error::InvalidArgument("a bounded read needs max_staleness_ms > 0".into()))
            }
            Ok(pb::Consistency::Bounded) => ReadLevel::Bounded(Duration::from_millis(spec.max_staleness_ms)),
            Err(_) => return Err(Error::InvalidArgument(format!("unknown consistency level {}", spec.consistency))),
        };
        let request_timeout = self.node.config().request_timeout;
        let timeout = deadline.unwrap_or(request_timeout).min(request_timeout);
        let bound = read::prepare_read(&self.node, level, spec.min_version, timeout).await?;
        let now_ms = self.node.clock().now_ms();
        let (entry, applied) = self.node.reader().read(|cache, applied| (cache.get(key, now_ms), applied));
        if entry.is_some() {
            self.node.recency().note(key);
        }
        let meta = pb::ReadMeta {
            node_id: self.node.id(),
            region: self.node.config().region.clone(),
            applied_index: applied.map(|l| l.index).unwrap_or(0),
            staleness_bound_ms: bound.map(|b| b.as_nanos().div_ceil(1_000_000) as u64),
        };
        Ok((entry, meta))
    }
}

/// What a read asks for, as it came off the wire.
struct ReadSpec {
    consistency: i32,
    max_staleness_ms: u64,
    min_version: u64,
}

/// `GetRequest` and `TtlRequest` carry the same read fields.
macro_rules! read_spec_from {
    ($($request:ty),*) => {$(
        impl From<&$request> for ReadSpec {
            fn from(r: &$request) -> ReadSpec {
                ReadSpec { consistency: r.consistency, max_staleness_ms: r.max_staleness_ms, min_version: r.min_version }
            }
        }
    )*};
}
read_spec_from!(pb::GetRequest, pb::TtlRequest);

enum WriteOutcome {
    Done(pb::WriteResponse),
    Forward((u64, String)),
    Failed(Error),
}

/// Runs a write locally, or forwards the original request to the leader once.
macro_rules! write_or_forward {
    ($self:ident, $request:ident, $op:expr, $method:ident) => {{
        let forwarded = is_forwarded(&$request);
        let request_timeout = $self.node.config().request_timeout;
        let timeout = grpc_timeout(&$request).unwrap_or(request_timeout).min(request_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let message = $request.into_inner();
        let op = $op(&message)?;
        loop {
            match $self.write(op.clone(), message.write_id, forwarded, deadline).await {
                WriteOutcome::Done(response) => break Ok(Response::new(response)),
                WriteOutcome::Failed(e) => break Err(e.into()),
                WriteOutcome::Forward(leader) => {
                    let mut client = $self.client_for(&leader)?;
                    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let reply = client.$method(forwarded_request(message.clone(), remaining)).await;
                    match super::forwarded_reply(&leader, reply) {
                        // Nothing was applied (the leader is unreachable or just lost its
                        // leadership): let the election settle, then try again in the deadline.
                        Err(status)
                            if status.code() == tonic::Code::Unavailable && tokio::time::Instant::now() < deadline =>
                        {
                            $self.node.wait_for_leader_change(leader.0, deadline).await;
                        }
                        reply => break reply,
                    }
                }
            }
        }
    }};
}

#[tonic::async_trait]
impl CacheRpc for CacheService {
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let deadline = grpc_timeout(&request);
        let req = request.into_inner();
        let spec = ReadSpec::from(&req);
        let (entry, meta) = self.read(&req.key, spec, deadline).await?;
        let response = match entry {
            Some(e) => pb::GetResponse {
                found: true,
                value: e.value,
                version: e.version,
                expires_at_ms: e.expires_at_ms,
                meta: Some(meta),
            },
            None => pb::GetResponse { meta: Some(meta), ..Default::default() },
        };
        Ok(Response::new(response))
    }

    async fn ttl(&self, request: Request<pb::TtlRequest>) -> Result<Response<pb::TtlResponse>, Status> {
        let deadline = grpc_timeout(&request);
        let req = request.into_inner();
        let spec = ReadSpec::from(&req);
        let (entry, meta) = self.read(&req.key, spec, deadline).await?;
        let now_ms = self.node.clock().now_ms();
        let response = match entry {
            Some(e) => pb::TtlResponse {
                found: true,
                version: e.version,
                expires_at_ms: e.expires_at_ms,
                remaining_ms: e.expires_at_ms.map(|at| at.saturating_sub(now_ms)),
                meta: Some(meta),
            },
            None => pb::TtlResponse { meta: Some(meta), ..Default::default() },
        };
        Ok(Response::new(response))
    }

    async fn set(&self, request: Request<pb::SetRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        write_or_forward!(self, request, |m: &pb::SetRequest| self.set_op(m), set)
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        write_or_forward!(
            self,
            request,
            |m: &pb::DeleteRequest| -> Result<Op> {
                self.validate_key(&m.key)?;
                Ok(Op::Delete { key: m.key.clone() })
            },
            delete
        )
    }

    async fn expire(&self, request: Request<pb::ExpireRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        write_or_forward!(self, request, |m: &pb::ExpireRequest| self.expire_op(m), expire)
    }
}

impl CacheService {
    fn set_op(&self, m: &pb::SetRequest) -> Result<Op> {
        self.validate_key(&m.key)?;
        let max = self.node.config().max_value_bytes;
        if m.value.len() > max {
            return Err(Error::InvalidArgument(format!(
                "value is {} bytes, over the limit of {max} bytes",
                m.value.len()
            )));
        }
        let condition = match pb::ConditionKind::try_from(m.condition) {
            Ok(pb::ConditionKind::ConditionAlways) => Condition::Always,
            Ok(pb::ConditionKind::ConditionIfAbsent) => Condition::IfAbsent,
            Ok(pb::ConditionKind::ConditionIfPresent) => Condition::IfPresent,
            Ok(pb::ConditionKind::ConditionIfVersion) => Condition::IfVersion(m.if_version),
            Err(_) => return Err(Error::InvalidArgument(format!("unknown condition {}", m.condition))),
        };
        let expires_at_ms = self.expires_at(m.ttl_ms, self.node.proposal_time_ms())?;
        Ok(Op::Set { key: m.key.clone(), value: m.value.clone(), expires_at_ms, condition })
    }

    fn expire_op(&self, m: &pb::ExpireRequest) -> Result<Op> {
        self.validate_key(&m.key)?;
        let expires_at_ms = if m.persist {
            None
        } else {
            match m.ttl_ms {
                None => return Err(Error::InvalidArgument("expire needs a ttl or persist".into())),
                ttl => self.expires_at(ttl, self.node.proposal_time_ms())?,
            }
        };
        Ok(Op::Expire { key: m.key.clone(), expires_at_ms })
    }
}

fn write_id_from_wire(id: Option<pb::WriteId>) -> Result<Option<WriteId>> {
    match id {
        None => Ok(None),
        Some(w) if w.client_id == 0 => Ok(None),
        Some(w) if w.seq == 0 => Err(Error::InvalidArgument("write_id.seq must start at 1".into())),
        Some(w) => Ok(Some(WriteId { client_id: w.client_id, seq: w.seq, acked_below: w.acked_below })),
    }
}

fn write_response(log_index: LogIndex, applied: Applied) -> pb::WriteResponse {
    pb::WriteResponse {
        applied: applied.applied,
        version: applied.version,
        existed: applied.existed,
        previous_version: applied.previous_version,
        log_index,
        expires_at_ms: applied.expires_at_ms,
        rejected: match applied.rejected {
            None => String::new(),
            Some(Rejection::TooLarge { entry_bytes, max_bytes }) => {
                format!("entry of {entry_bytes} bytes is larger than the whole cache capacity of {max_bytes} bytes")
            }
            Some(Rejection::SessionExpired) => {
                "write retried after its client session forgot it; its outcome is unknown".to_string()
            }
        },
    }
}
