//! The client API without a wire format: validation, the write path and reads at a level, shared
//! by the gRPC `Cache` service ([`super::CacheService`]) and the Redis-protocol front door
//! (`crate::resp`). Each edge only turns its own wire format into a [`Write`] or a [`ReadSpec`]
//! and the answers back; what a request means and how it reaches the log is decided here, once.
//!
//! Invariants:
//! * A write that fails validation ([`CacheApi::validate`]) changes nothing and is never proposed
//!   or forwarded.
//! * [`CacheApi::write`] is the one function that proposes locally or forwards to the leader, and
//!   a request is forwarded at most once: a node that received it forwarded never forwards it
//!   again, so forwarding never loops. The leader re-validates and stamps it itself.
//! * One retry policy for every write: nothing is retried on a fixed timer. A node mid-election
//!   waits for Raft to name a leader; a forward that was refused with nothing applied
//!   (`Unavailable`, `NotLeader`) waits for the leader to change and goes again; everything
//!   within the caller's one deadline. A write whose outcome is unknown (`Timeout`) is never
//!   retried here.
//! * Relative TTLs become absolute log times when (and where) the write is proposed
//!   (docs/ARCHITECTURE.md §4.1).
//! * Every client read and write is counted once, here, for the node's metrics
//!   ([`crate::metrics`]): [`CacheApi::read`] and [`CacheApi::write`] record the front door
//!   ([`Edge`]), the level or forwarding, the result and the latency; [`CacheApi::get_many`] the
//!   keys found and missed; a forward to the leader is counted where it is sent.

use std::time::Duration;

use bytes::Bytes;
use geocache_proto as pb;
use geocache_proto::cache_client::CacheClient;
use geocache_proto::{ERROR_KIND_HEADER, LEADER_ADDR_HEADER, LEADER_ID_HEADER, STALENESS_BOUND_HEADER, STALE_REPLICA};
use openraft::async_runtime::WatchReceiver;
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::admission::{Admitted, Work};
use crate::error::{Error, Result};
use crate::metrics::{Edge, ReadResult, WriteApi};
use crate::node::Node;
use crate::read::{self, ReadLevel};
use crate::state_machine::{Cache, Condition, EntryView, Op, WriteId};
use crate::types::{LogIndex, NodeId};

/// When a written entry expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Never (an `Expire` with this persists the key).
    Never,
    /// This long after the write is proposed; must be positive.
    After(Duration),
    /// At this absolute log time (unix ms). At or before the log clock when applied, the write
    /// applies as a delete.
    At(u64),
}

/// A write as a client asks for it, before it is stamped into a [`Command`](crate::state_machine::Command).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Store `value` under `key` if `condition` holds.
    Set { key: String, value: Bytes, expiry: Expiry, condition: Condition },
    /// Remove `key`.
    Delete { key: String },
    /// Change the expiry of an existing key ([`Expiry::Never`]: persist it).
    Expire { key: String, expiry: Expiry },
    /// Remove every entry.
    Clear,
}

/// What a read asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadSpec {
    pub level: ReadLevel,
    /// Wait until this replica has applied at least this index (read-your-writes); 0: no wait.
    pub min_version: LogIndex,
}

/// A committed write's answer.
#[derive(Clone, Debug)]
pub struct Written {
    pub response: pb::WriteResponse,
    /// The leader it was forwarded to, if it was.
    pub via_leader: Option<(NodeId, String)>,
}

/// The client API of one node, for any wire format. Cheap to clone.
#[derive(Clone)]
pub struct CacheApi {
    node: Node,
    /// The front door this API serves, for the metrics.
    edge: Edge,
}

/// What one attempt to propose locally came to.
enum Attempt {
    Done(pb::WriteResponse),
    Forward((NodeId, String)),
}

impl CacheApi {
    /// The client API behind the front door `edge`.
    pub fn new(node: Node, edge: Edge) -> CacheApi {
        CacheApi { node, edge }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// How long a request may take: the caller's deadline if it gave one, never more than the
    /// node's request timeout.
    pub fn timeout(&self, asked: Option<Duration>) -> Duration {
        let request_timeout = self.node.config().request_timeout;
        asked.unwrap_or(request_timeout).min(request_timeout)
    }

    /// Checks a key against the node's limits.
    pub fn validate_key(&self, key: &str) -> Result<()> {
        self.node.config().validate_key(key)
    }

    /// Checks `write` against the node's limits; a refused write changes nothing.
    pub fn validate(&self, write: &Write) -> Result<()> {
        match write {
            Write::Set { key, value, expiry, .. } => {
                self.validate_key(key)?;
                let max = self.node.config().max_value_bytes;
                if value.len() > max {
                    return Err(Error::InvalidArgument(format!(
                        "value exceeds {max} bytes (it is {} bytes, over the limit)",
                        value.len()
                    )));
                }
                validate_expiry(*expiry)
            }
            Write::Delete { key } => self.validate_key(key),
            Write::Expire { key, expiry } => {
                self.validate_key(key)?;
                validate_expiry(*expiry)
            }
            Write::Clear => Ok(()),
        }
    }

    /// Validates `write`, then proposes it here or, if another node leads, forwards it there
    /// once (unless `forwarded`: then it came from another node and is answered here, whatever
    /// happens). Retries as the module doc says, all within `timeout`.
    ///
    /// `Timeout` means the outcome is unknown; every other error means nothing was applied.
    pub async fn write(
        &self,
        write: Write,
        write_id: Option<WriteId>,
        forwarded: bool,
        timeout: Duration,
    ) -> Result<Written> {
        let started = Instant::now();
        let result = self.write_counted(write, write_id, forwarded, timeout).await;
        self.node.recorder().write(WriteApi::of(self.edge, forwarded), result.is_ok(), started.elapsed());
        result
    }

    /// [`CacheApi::write`] without the counting.
    async fn write_counted(
        &self,
        write: Write,
        write_id: Option<WriteId>,
        forwarded: bool,
        timeout: Duration,
    ) -> Result<Written> {
        self.validate(&write)?;
        let _admitted = self.admitted(Work::Write)?;
        let deadline = Instant::now() + timeout;
        loop {
            let leader = match self.propose_here(&write, write_id, forwarded, deadline).await? {
                Attempt::Done(response) => return Ok(Written { response, via_leader: None }),
                Attempt::Forward(leader) => leader,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let sent = self.forward(&leader, &write, write_id, remaining).await;
            self.node.recorder().forwarded(sent.is_ok());
            match sent {
                Ok(response) => return Ok(Written { response, via_leader: Some(leader) }),
                // Nothing was applied (the leader is unreachable or just lost its leadership):
                // let the election settle, then go again within the deadline.
                Err(Error::Unavailable(_) | Error::NotLeader { .. }) if Instant::now() < deadline => {
                    self.node.wait_for_leader_change(leader.0, deadline).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Proposes `write` through the local Raft instance; on `NotLeader` hands back the leader to
    /// forward to (unless the request was forwarded already).
    async fn propose_here(
        &self,
        write: &Write,
        write_id: Option<WriteId>,
        forwarded: bool,
        deadline: Instant,
    ) -> Result<Attempt> {
        loop {
            self.node.ensure_leader_has_quorum()?;
            // Stamped per attempt: a relative TTL counts from the proposal that may commit.
            let cmd = self.node.command(self.op(write)?, write_id);
            match self.node.propose(cmd).await {
                Ok((index, applied)) => return Ok(Attempt::Done(super::cache::write_response(index, applied))),
                // Mid-election: nothing was proposed, so wait for a leader and try again; but a
                // node cut off from the leader says so at once rather than wait in vain.
                Err(Error::NotLeader { leader: None }) if !forwarded => {
                    self.node.ensure_leader_reachable()?;
                    match self.node.wait_for_leader(deadline).await? {
                        (leader, _) if leader == self.node.id() => self.wait_until_leading(deadline).await?,
                        leader => return Ok(Attempt::Forward(leader)),
                    }
                }
                Err(Error::NotLeader { leader: Some(leader) }) if !forwarded => {
                    self.node.ensure_leader_reachable()?;
                    return Ok(Attempt::Forward(leader));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A place for one request of kind `work`, or `Overloaded` (counted) if the node is full.
    fn admitted(&self, work: Work) -> Result<Admitted> {
        let admitted = self.node.admission().admit(work);
        if admitted.is_err() {
            self.node.recorder().shed(work);
        }
        admitted
    }

    /// The metrics name this node leader a moment before Raft accepts writes: wait for Raft's
    /// next state change (not a fixed sleep), within `deadline`.
    async fn wait_until_leading(&self, deadline: Instant) -> Result<()> {
        let mut metrics = self.node.raft().metrics();
        metrics.borrow_and_update();
        match tokio::time::timeout_at(deadline, metrics.changed()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Fatal("raft stopped".into())),
            Err(_) => Err(Error::Unavailable("this node was elected but did not take writes in time".into())),
        }
    }

    /// The replicated op for `write`, with relative TTLs made absolute from the proposal time.
    fn op(&self, write: &Write) -> Result<Op> {
        Ok(match write {
            Write::Set { key, value, expiry, condition } => Op::Set {
                key: key.clone(),
                value: value.clone(),
                expires_at_ms: self.expires_at(*expiry)?,
                condition: *condition,
            },
            Write::Delete { key } => Op::Delete { key: key.clone() },
            Write::Expire { key, expiry } => Op::Expire { key: key.clone(), expires_at_ms: self.expires_at(*expiry)? },
            Write::Clear => Op::Clear,
        })
    }

    /// Absolute expiry (log time) for `expiry`, as the proposer computes it.
    fn expires_at(&self, expiry: Expiry) -> Result<Option<u64>> {
        match expiry {
            Expiry::Never => Ok(None),
            Expiry::At(at) => Ok(Some(at)),
            Expiry::After(ttl) => {
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                self.node
                    .proposal_time_ms()
                    .checked_add(ttl_ms)
                    .map(Some)
                    .ok_or_else(|| Error::InvalidArgument(format!("ttl of {ttl_ms} ms overflows the clock")))
            }
        }
    }

    /// Sends `write` to the leader's `Cache` service, marked as forwarded, and classifies a
    /// failure: see [`forward_failure`].
    async fn forward(
        &self,
        leader: &(NodeId, String),
        write: &Write,
        write_id: Option<WriteId>,
        remaining: Duration,
    ) -> Result<pb::WriteResponse> {
        let channel = self.node.member_channel(leader.0)?;
        let max = self.node.config().max_client_message_bytes();
        let mut client = CacheClient::new(channel).max_decoding_message_size(max).max_encoding_message_size(max);
        let write_id = write_id.map(|w| pb::WriteId { client_id: w.client_id, seq: w.seq, acked_below: w.acked_below });
        let reply = match write.clone() {
            Write::Set { key, value, expiry, condition } => {
                let (ttl_ms, expires_at_ms) = expiry_to_wire(expiry);
                let (condition, if_version) = condition_to_wire(condition);
                let request = pb::SetRequest {
                    key,
                    value,
                    ttl_ms,
                    condition: condition as i32,
                    if_version,
                    write_id,
                    expires_at_ms,
                };
                client.set(super::forwarded_request(request, remaining)).await
            }
            Write::Delete { key } => {
                client.delete(super::forwarded_request(pb::DeleteRequest { key, write_id }, remaining)).await
            }
            Write::Expire { key, expiry } => {
                let (ttl_ms, expires_at_ms) = expiry_to_wire(expiry);
                let persist = expiry == Expiry::Never;
                let request = pb::ExpireRequest { key, ttl_ms, persist, write_id, expires_at_ms };
                client.expire(super::forwarded_request(request, remaining)).await
            }
            Write::Clear => client.flush(super::forwarded_request(pb::FlushRequest { write_id }, remaining)).await,
        };
        reply.map(tonic::Response::into_inner).map_err(|status| forward_failure(leader, status))
    }

    /// Waits until this replica may answer `spec` within `timeout`, then runs `query` on the
    /// local state machine at the reading time (the later of the log clock and this node's
    /// clock, so an entry expired by either is hidden). Returns its answer and where it came from.
    pub async fn read<T>(
        &self,
        spec: ReadSpec,
        timeout: Duration,
        query: impl FnOnce(&Cache, u64) -> T,
    ) -> Result<(T, pb::ReadMeta)> {
        let started = Instant::now();
        let result = self.read_counted(spec, timeout, query).await;
        let counted = match &result {
            Ok(_) => ReadResult::Ok,
            Err(Error::StaleReplica { .. }) => ReadResult::StaleRefused,
            Err(_) => ReadResult::Error,
        };
        self.node.recorder().read(self.edge, spec.level, counted, started.elapsed());
        result
    }

    /// [`CacheApi::read`] without the counting.
    async fn read_counted<T>(
        &self,
        spec: ReadSpec,
        timeout: Duration,
        query: impl FnOnce(&Cache, u64) -> T,
    ) -> Result<(T, pb::ReadMeta)> {
        // Expiry is judged at the time the read arrived, not when it is answered. A
        // linearizable read's state is at least as new as its arrival (the read index covers
        // every write acknowledged before it), but not necessarily as new as its answer: judged
        // after a long wait, an entry that expired during the wait would read as absent although
        // the state it was read from predates a write that replaced it (the harness caught
        // this under partition,kill: a read waiting 400 ms for its read index returned absent
        // while a newer value had been written in the meantime).
        let now_ms = self.node.clock().now_ms();
        // Only a read that may wait (on the leader, or for its own writes) takes a place; a
        // stale read is answered from memory at once.
        let _admitted = if spec.level != ReadLevel::Stale || spec.min_version > 0 {
            Some(self.admitted(Work::Read)?)
        } else {
            None
        };
        let bound = read::prepare_read(&self.node, spec.level, spec.min_version, timeout).await?;
        let (answer, applied) = self.node.reader().read(|cache, applied| (query(cache, now_ms), applied));
        let meta = pb::ReadMeta {
            node_id: self.node.id(),
            region: self.node.config().region.clone(),
            applied_index: applied.map(|l| l.index).unwrap_or(0),
            staleness_bound_ms: bound.map(duration_ms_ceil),
        };
        Ok((answer, meta))
    }

    /// Reads `keys` (validated first) from one consistent view at `spec`; notes the keys found
    /// for read recency (docs/ARCHITECTURE.md §4.3).
    pub async fn get_many<K: AsRef<str>>(
        &self,
        keys: &[K],
        spec: ReadSpec,
        timeout: Duration,
    ) -> Result<(Vec<Option<EntryView>>, pb::ReadMeta)> {
        for key in keys {
            self.validate_key(key.as_ref())?;
        }
        let (entries, meta) = self
            .read(spec, timeout, |cache, now_ms| keys.iter().map(|k| cache.get(k.as_ref(), now_ms)).collect::<Vec<_>>())
            .await?;
        let mut found = 0;
        for (key, entry) in keys.iter().zip(&entries) {
            if entry.is_some() {
                self.node.recency().note(key.as_ref());
                found += 1;
            }
        }
        self.node.recorder().lookups(found, entries.len() as u64 - found);
        Ok((entries, meta))
    }
}

fn validate_expiry(expiry: Expiry) -> Result<()> {
    match expiry {
        Expiry::After(ttl) if ttl.is_zero() => {
            Err(Error::InvalidArgument("ttl must be positive (omit it for no expiry)".into()))
        }
        _ => Ok(()),
    }
}

/// Milliseconds, rounded up: a bound is never reported smaller than it is.
pub fn duration_ms_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// `(ttl_ms, expires_at_ms)` on the wire for `expiry`.
fn expiry_to_wire(expiry: Expiry) -> (Option<u64>, Option<u64>) {
    match expiry {
        Expiry::Never => (None, None),
        Expiry::After(ttl) => (Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)), None),
        Expiry::At(at) => (None, Some(at)),
    }
}

/// The expiry a wire request asks for: a relative `ttl_ms` or an absolute `expires_at_ms`, not
/// both; neither means [`Expiry::Never`].
pub(super) fn expiry_from_wire(ttl_ms: Option<u64>, expires_at_ms: Option<u64>) -> Result<Expiry> {
    match (ttl_ms, expires_at_ms) {
        (Some(_), Some(_)) => Err(Error::InvalidArgument("give ttl_ms or expires_at_ms, not both".into())),
        (Some(ttl), None) => Ok(Expiry::After(Duration::from_millis(ttl))),
        (None, Some(at)) => Ok(Expiry::At(at)),
        (None, None) => Ok(Expiry::Never),
    }
}

fn condition_to_wire(condition: Condition) -> (pb::ConditionKind, u64) {
    match condition {
        Condition::Always => (pb::ConditionKind::ConditionAlways, 0),
        Condition::IfAbsent => (pb::ConditionKind::ConditionIfAbsent, 0),
        Condition::IfPresent => (pb::ConditionKind::ConditionIfPresent, 0),
        Condition::IfVersion(v) => (pb::ConditionKind::ConditionIfVersion, v),
    }
}

pub(super) fn condition_from_wire(kind: i32, if_version: u64) -> Result<Condition> {
    match pb::ConditionKind::try_from(kind) {
        Ok(pb::ConditionKind::ConditionAlways) => Ok(Condition::Always),
        Ok(pb::ConditionKind::ConditionIfAbsent) => Ok(Condition::IfAbsent),
        Ok(pb::ConditionKind::ConditionIfPresent) => Ok(Condition::IfPresent),
        Ok(pb::ConditionKind::ConditionIfVersion) => Ok(Condition::IfVersion(if_version)),
        Err(_) => Err(Error::InvalidArgument(format!("unknown condition {kind}"))),
    }
}

/// Classifies a failed forward: a connection that never opened means nothing was sent
/// (`Unavailable`); a connection lost mid-call means the request may have applied (`Timeout`,
/// outcome unknown); otherwise it is the leader's own answer, turned back into the error it was.
pub(super) fn forward_failure(leader: &(NodeId, String), status: Status) -> Error {
    let mut source = std::error::Error::source(&status);
    let local_failure = source.is_some();
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return Error::Unavailable(format!("leader {} at {} is unreachable: {e}", leader.0, leader.1));
        }
        source = e.source();
    }
    if local_failure {
        return Error::Timeout(format!("connection to leader {} lost mid-request: {}", leader.0, status.message()));
    }
    error_from_leader(&status)
}

/// The [`Error`] a leader's status stands for: the inverse of `From<Error> for Status`
/// (service/mod.rs) on code and metadata, so a forwarded answer leaves this node as it left the
/// leader. A code no node sends (the call broke somewhere between) is an unknown outcome.
fn error_from_leader(status: &Status) -> Error {
    let message = status.message().to_string();
    let metadata = status.metadata();
    let number = |header: &str| metadata.get(header).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match status.code() {
        Code::InvalidArgument => Error::InvalidArgument(message),
        Code::NotFound => Error::NotFound(message),
        Code::FailedPrecondition => Error::FailedPrecondition(message),
        Code::PermissionDenied => Error::PermissionDenied(message),
        Code::Unauthenticated => Error::Unauthenticated(message),
        Code::Unavailable if metadata.get(ERROR_KIND_HEADER).is_some_and(|k| k == STALE_REPLICA) => {
            // Writes are never refused as stale; kept for completeness of the inverse.
            Error::StaleReplica { bound_ms: number(STALENESS_BOUND_HEADER), max_ms: 0 }
        }
        Code::Unavailable => match (number(LEADER_ID_HEADER), metadata.get(LEADER_ADDR_HEADER)) {
            (Some(id), Some(addr)) => {
                Error::NotLeader { leader: addr.to_str().ok().map(|addr| (id, addr.to_string())) }
            }
            _ => Error::Unavailable(message),
        },
        Code::DeadlineExceeded => Error::Timeout(message),
        Code::Internal => Error::Fatal(message),
        _ => Error::Timeout(format!("the leader's answer was lost ({}): {message}", status.code())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_forward_says_whether_anything_was_sent() {
        let leader = (2, "127.0.0.1:9".to_string());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let never_sent = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert!(matches!(forward_failure(&leader, never_sent), Error::Unavailable(_)));
        let reset = Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        assert!(matches!(forward_failure(&leader, reset), Error::Timeout(_)));
        let leaders_answer = Status::invalid_argument("bad key");
        assert!(matches!(forward_failure(&leader, leaders_answer), Error::InvalidArgument(m) if m == "bad key"));
    }

    #[test]
    fn a_leaders_error_survives_the_round_trip_through_a_status() {
        let cases = [
            Error::InvalidArgument("x".into()),
            Error::NotFound("x".into()),
            Error::FailedPrecondition("x".into()),
            Error::PermissionDenied("x".into()),
            Error::Unauthenticated("x".into()),
            Error::NotLeader { leader: Some((3, "127.0.0.1:7003".into())) },
            Error::Unavailable("x".into()),
            Error::Timeout("x".into()),
            Error::Fatal("x".into()),
        ];
        for error in cases {
            let before = format!("{error:?}");
            let back = error_from_leader(&Status::from(error));
            assert_eq!(format!("{back:?}"), before);
        }
    }

    #[test]
    fn wire_expiry_is_relative_or_absolute_not_both() {
        assert_eq!(expiry_from_wire(None, None).unwrap(), Expiry::Never);
        assert_eq!(expiry_from_wire(Some(5), None).unwrap(), Expiry::After(Duration::from_millis(5)));
        assert_eq!(expiry_from_wire(None, Some(9)).unwrap(), Expiry::At(9));
        assert!(expiry_from_wire(Some(5), Some(9)).is_err());
        assert!(validate_expiry(Expiry::After(Duration::ZERO)).is_err());
        assert!(validate_expiry(Expiry::At(0)).is_ok(), "a time in the past applies as a delete");
        for expiry in [Expiry::Never, Expiry::After(Duration::from_millis(7)), Expiry::At(9)] {
            let (ttl, at) = expiry_to_wire(expiry);
            assert_eq!(expiry_from_wire(ttl, at).unwrap(), expiry);
        }
    }

    #[test]
    fn conditions_round_trip_through_the_wire() {
        for c in [Condition::Always, Condition::IfAbsent, Condition::IfPresent, Condition::IfVersion(42)] {
            let (kind, v) = condition_to_wire(c);
            assert_eq!(condition_from_wire(kind as i32, v).unwrap(), c);
        }
        assert!(condition_from_wire(99, 0).is_err());
    }
}
