//! The replicated vocabulary: what a log entry asks the cache to do ([`Command`]) and what applying
//! it answered ([`Response`]). These types are serialized into the Raft log and into snapshots, so
//! changing a field changes the on-disk format.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A Raft log index. A key's version is the index of the write that produced it.
pub type LogIndex = u64;

/// Identifies a client write so a retried write is applied at most once (docs/ARCHITECTURE.md §4.2).
///
/// Following the Raft thesis section 6.3, the client also says which of its earlier writes it has
/// seen answered (`acked_below`), so the state machine can forget their stored responses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WriteId {
    /// A random id the client chose for itself; never 0.
    pub client_id: u64,
    /// Increases by one per write of this client, starting at 1.
    pub seq: u64,
    /// Every write of this client with `seq < acked_below` has been answered; their stored
    /// responses may be dropped. A retry of such a write is answered as [`Rejection::SessionExpired`].
    pub acked_below: u64,
}

/// When a `Set` applies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Condition {
    /// Always.
    #[default]
    Always,
    /// Only if the key is absent (or expired).
    IfAbsent,
    /// Only if the key is present (and unexpired).
    IfPresent,
    /// Only if the key is present with exactly this version (compare-and-set).
    IfVersion(u64),
}

/// Capacity limits of the cache. Part of the replicated state (set by [`Op::Configure`]) so that
/// every replica evicts the same keys.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Limits {
    /// Most entries held at once; 0 means unlimited.
    pub max_entries: u64,
    /// Most bytes held at once, counted as key + value + [`ENTRY_OVERHEAD_BYTES`] per entry;
    /// 0 means unlimited.
    pub max_bytes: u64,
}

impl Limits {
    /// These limits with the given ones replaced (`None` keeps the current one).
    pub fn changed(self, max_entries: Option<u64>, max_bytes: Option<u64>) -> Limits {
        Limits { max_entries: max_entries.unwrap_or(self.max_entries), max_bytes: max_bytes.unwrap_or(self.max_bytes) }
    }
}

/// Fixed bytes charged per entry on top of key and value, standing for the index structures.
pub const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// One replicated write, as it sits in the Raft log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Wall-clock time (unix ms) of the node that proposed the command. The state machine clock
    /// is the largest `now_ms` applied so far.
    pub now_ms: u64,
    /// Present on client writes that want exactly-once application.
    pub write_id: Option<WriteId>,
    /// What to do.
    pub op: Op,
}

/// How a command reads in openraft's logs: the operation and key, never the value.
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.op {
            Op::Set { key, value, .. } => write!(f, "set {key:?} ({} bytes)", value.len()),
            Op::Delete { key } => write!(f, "delete {key:?}"),
            Op::Expire { key, .. } => write!(f, "expire {key:?}"),
            Op::Touch { keys } => write!(f, "touch {} keys", keys.len()),
            Op::Tick => f.write_str("tick"),
            Op::Configure { .. } => f.write_str("configure"),
            Op::Clear => f.write_str("clear"),
        }
    }
}

/// The operations of the cache.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Store `value` under `key` if `condition` holds. `expires_at_ms` is absolute log time
    /// (the proposer turned the relative TTL into it); `None` means no expiry.
    Set { key: String, value: Bytes, expires_at_ms: Option<u64>, condition: Condition },
    /// Remove `key`.
    Delete { key: String },
    /// Change the expiry of an existing key: `Some(t)` expires it at log time `t`, `None` persists it.
    Expire { key: String, expires_at_ms: Option<u64> },
    /// Mark keys as recently used (batched read recency). Missing keys are ignored.
    Touch { keys: Vec<String> },
    /// Advance the clock and purge expired entries (proposed periodically by the leader).
    Tick,
    /// Change the capacity limits (`None` keeps that limit as it is); evicts at once if the
    /// cache is over the new limits.
    Configure { max_entries: Option<u64>, max_bytes: Option<u64> },
    /// Remove every entry (Redis `FLUSHDB`). Limits, the clock, recency numbering and client
    /// sessions stay: they are not data, and a resent write must still be answered once.
    /// Appended last so the log's encoding of the other variants is unchanged.
    Clear,
}

/// Why the state machine refused a command. Deterministic: every replica refuses it alike.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The entry (key + value + overhead) is larger than the whole `max_bytes` capacity.
    TooLarge { entry_bytes: u64, max_bytes: u64 },
    /// A retry of a write whose stored response was already dropped (`seq < acked_below`).
    SessionExpired,
}

/// The answer to one applied command.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Response {
    /// Whether the command changed the key (condition held, key existed where required).
    pub applied: bool,
    /// Whether the key was present and unexpired before the command.
    pub existed: bool,
    /// The key's version before the command (0 if absent).
    pub previous_version: u64,
    /// The key's version after the command (0 if absent).
    pub version: u64,
    /// The key's absolute expiry after the command, if any.
    pub expires_at_ms: Option<u64>,
    /// Set when the command was refused for a deterministic reason.
    pub rejected: Option<Rejection>,
}

/// A read-only view of one live entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryView {
    pub value: Bytes,
    pub version: u64,
    pub expires_at_ms: Option<u64>,
}
