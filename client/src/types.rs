//! What reads and writes return, converted once from the wire types.
//!
//! Every read answer keeps its provenance ([`ReadMeta`]: which node, which region, its applied
//! index and staleness bound), so a caller or a checker can audit what it got.

use std::time::Duration;

use bytes::Bytes;
use geocache_proto as pb;

use crate::error::{Error, Result};

/// Id of a node in the cluster.
pub type NodeId = u64;
/// Index of an entry in the Raft log. A key's version is the log index of the write that
/// produced it.
pub type LogIndex = u64;

/// Where a read answer came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadMeta {
    /// The node that answered.
    pub node_id: NodeId,
    /// Its region label.
    pub region: String,
    /// Its last applied log index when it answered.
    pub applied_index: LogIndex,
    /// Upper bound on how stale its answer may be, in ms (0 for a confirmed linearizable read);
    /// `None` when the replica knows no bound (e.g. a stale read on a partitioned replica).
    pub staleness_bound_ms: Option<u64>,
}

impl From<Option<pb::ReadMeta>> for ReadMeta {
    fn from(meta: Option<pb::ReadMeta>) -> Self {
        let meta = meta.unwrap_or_default();
        ReadMeta {
            node_id: meta.node_id,
            region: meta.region,
            applied_index: meta.applied_index,
            staleness_bound_ms: meta.staleness_bound_ms,
        }
    }
}

/// A cached value with its version, expiry and provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// The log index of the write that produced it.
    pub version: LogIndex,
    /// Absolute expiry in log time (unix ms); `None` if the entry never expires.
    pub expires_at_ms: Option<u64>,
    /// Where the answer came from.
    pub meta: ReadMeta,
}

impl Entry {
    /// `None` when the key was not found.
    pub(crate) fn from_wire(resp: pb::GetResponse) -> Option<Entry> {
        resp.found.then(|| Entry {
            value: resp.value,
            version: resp.version,
            expires_at_ms: resp.expires_at_ms,
            meta: resp.meta.into(),
        })
    }
}

/// A key's expiry, as `ttl` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlInfo {
    /// The key's version.
    pub version: LogIndex,
    /// Absolute expiry in log time (unix ms); `None` if the entry never expires.
    pub expires_at_ms: Option<u64>,
    /// Time left, measured against the answering node's clock; `None` if it never expires.
    pub remaining: Option<Duration>,
    /// Where the answer came from.
    pub meta: ReadMeta,
}

impl TtlInfo {
    /// `None` when the key was not found.
    pub(crate) fn from_wire(resp: pb::TtlResponse) -> Option<TtlInfo> {
        resp.found.then(|| TtlInfo {
            version: resp.version,
            expires_at_ms: resp.expires_at_ms,
            remaining: resp.remaining_ms.map(Duration::from_millis),
            meta: resp.meta.into(),
        })
    }
}

/// The answer to a write that the state machine accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteResult {
    /// Whether the write took effect (its condition held; for `delete`/`expire`, the key existed).
    pub applied: bool,
    /// The key's version after this write (the write's log index when applied), 0 if absent.
    pub version: LogIndex,
    /// Whether the key was present (and unexpired) before this write.
    pub existed: bool,
    /// The key's version before this write, 0 if absent.
    pub previous_version: LogIndex,
    /// The log index at which the write committed.
    pub log_index: LogIndex,
    /// Absolute expiry (log time, unix ms) after this write, if any.
    pub expires_at_ms: Option<u64>,
}

impl WriteResult {
    /// A response with `rejected` set becomes [`Error::Rejected`].
    pub(crate) fn from_wire(resp: pb::WriteResponse) -> Result<WriteResult> {
        if !resp.rejected.is_empty() {
            return Err(Error::Rejected(resp.rejected));
        }
        Ok(WriteResult {
            applied: resp.applied,
            version: resp.version,
            existed: resp.existed,
            previous_version: resp.previous_version,
            log_index: resp.log_index,
            expires_at_ms: resp.expires_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_writes_are_errors() {
        let resp = pb::WriteResponse { rejected: "value larger than capacity".into(), ..Default::default() };
        assert_eq!(WriteResult::from_wire(resp), Err(Error::Rejected("value larger than capacity".into())));
        let resp = pb::WriteResponse {
            applied: true,
            version: 7,
            log_index: 7,
            expires_at_ms: Some(1_000),
            ..Default::default()
        };
        let got = WriteResult::from_wire(resp).unwrap();
        assert!(got.applied);
        assert_eq!((got.version, got.expires_at_ms), (7, Some(1_000)));
    }

    #[test]
    fn not_found_is_none() {
        assert_eq!(Entry::from_wire(pb::GetResponse::default()), None);
        assert_eq!(TtlInfo::from_wire(pb::TtlResponse::default()), None);
        let got = Entry::from_wire(pb::GetResponse {
            found: true,
            value: Bytes::from_static(b"v"),
            version: 3,
            meta: Some(pb::ReadMeta {
                node_id: 2,
                region: "eu".into(),
                applied_index: 5,
                staleness_bound_ms: Some(40),
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(got.value, Bytes::from_static(b"v"));
        assert_eq!(got.meta.region, "eu");
        assert_eq!(got.meta.staleness_bound_ms, Some(40));
    }
}
