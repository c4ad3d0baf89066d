//! The client API over gRPC (`geocache.v1.Cache`): turns wire requests into the protocol-neutral
//! [`Write`]s and [`ReadSpec`]s of [`CacheApi`] (which validates, proposes or forwards, and reads
//! at a level) and its answers back into wire responses.

use std::time::Duration;

use geocache_proto as pb;
use geocache_proto::cache_server::Cache as CacheRpc;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::api::{condition_from_wire, expiry_from_wire, CacheApi, ReadSpec, Write, Written};
use super::{grpc_timeout, is_forwarded};
use crate::error::{Error, Result};
use crate::metrics::Edge;
use crate::node::Node;
use crate::read::ReadLevel;
use crate::state_machine::{EntryView, Rejection, Response as Applied, WriteId};
use crate::types::LogIndex;
use geocache_proto::{LEADER_ADDR_HEADER, LEADER_ID_HEADER};

/// Serves `geocache.v1.Cache` for one node.
pub struct CacheService {
    api: CacheApi,
}

impl CacheService {
    pub fn new(node: Node) -> CacheService {
        CacheService { api: CacheApi::new(node, Edge::Grpc) }
    }

    /// Runs `write` through the shared write path with the request's deadline and forwarding mark.
    async fn write<T>(
        &self,
        request: &Request<T>,
        write: Write,
        write_id: Option<pb::WriteId>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let forwarded = is_forwarded(request);
        let timeout = self.api.timeout(grpc_timeout(request));
        let write_id = write_id_from_wire(write_id)?;
        let written = self.api.write(write, write_id, forwarded, timeout).await?;
        Ok(forwarded_reply(written))
    }

    /// Reads one key at the level the request asks for.
    async fn read_one(
        &self,
        key: &str,
        spec: ReadSpec,
        deadline: Option<Duration>,
    ) -> Result<(Option<EntryView>, pb::ReadMeta)> {
        let (mut entries, meta) = self.api.get_many(&[key], spec, self.api.timeout(deadline)).await?;
        Ok((entries.pop().flatten(), meta))
    }
}

/// The answer to a write, with the leader named in its metadata when it was forwarded there (so
/// a client goes to the leader directly next time).
fn forwarded_reply(written: Written) -> Response<pb::WriteResponse> {
    let mut response = Response::new(written.response);
    if let Some((id, addr)) = written.via_leader {
        let metadata = response.metadata_mut();
        metadata.insert(LEADER_ID_HEADER, MetadataValue::from(id));
        if let Ok(addr) = addr.parse() {
            metadata.insert(LEADER_ADDR_HEADER, addr);
        }
    }
    response
}

/// The read level a wire request asks for.
fn read_spec(consistency: i32, max_staleness_ms: u64, min_version: u64) -> Result<ReadSpec> {
    let level = match pb::Consistency::try_from(consistency) {
        Ok(pb::Consistency::Linearizable) => ReadLevel::Linearizable,
        Ok(pb::Consistency::Stale) => ReadLevel::Stale,
        Ok(pb::Consistency::Bounded) if max_staleness_ms == 0 => {
            return Err(Error::InvalidArgument("a bounded read needs max_staleness_ms > 0".into()))
        }
        Ok(pb::Consistency::Bounded) => ReadLevel::Bounded(Duration::from_millis(max_staleness_ms)),
        Err(_) => return Err(Error::InvalidArgument(format!("unknown consistency level {consistency}"))),
    };
    Ok(ReadSpec { level, min_version })
}

#[tonic::async_trait]
impl CacheRpc for CacheService {
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let deadline = grpc_timeout(&request);
        let req = request.into_inner();
        let spec = read_spec(req.consistency, req.max_staleness_ms, req.min_version)?;
        let (entry, meta) = self.read_one(&req.key, spec, deadline).await?;
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
        let spec = read_spec(req.consistency, req.max_staleness_ms, req.min_version)?;
        let (entry, meta) = self.read_one(&req.key, spec, deadline).await?;
        let now_ms = self.api.node().clock().now_ms();
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
        let m = request.get_ref();
        let write = Write::Set {
            key: m.key.clone(),
            value: m.value.clone(),
            expiry: expiry_from_wire(m.ttl_ms, m.expires_at_ms)?,
            condition: condition_from_wire(m.condition, m.if_version)?,
        };
        self.write(&request, write, m.write_id).await
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let m = request.get_ref();
        self.write(&request, Write::Delete { key: m.key.clone() }, m.write_id).await
    }

    async fn expire(&self, request: Request<pb::ExpireRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let m = request.get_ref();
        let expiry = if m.persist {
            super::api::Expiry::Never
        } else {
            match expiry_from_wire(m.ttl_ms, m.expires_at_ms)? {
                super::api::Expiry::Never => {
                    return Err(Error::InvalidArgument("expire needs a ttl or persist".into()).into())
                }
                expiry => expiry,
            }
        };
        self.write(&request, Write::Expire { key: m.key.clone(), expiry }, m.write_id).await
    }

    async fn flush(&self, request: Request<pb::FlushRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let write_id = request.get_ref().write_id;
        self.write(&request, Write::Clear, write_id).await
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

/// The wire answer to an applied command.
pub(super) fn write_response(log_index: LogIndex, applied: Applied) -> pb::WriteResponse {
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
