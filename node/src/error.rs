//! The node crate's one error type. Variants are sorted by what the caller can do about them,
//! not by where they came from; `service/` maps each to exactly one gRPC status code.

use crate::types::NodeId;

/// Result alias for the node crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a node, as the caller needs to see it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or violates a limit; retrying it unchanged cannot succeed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The request names something that does not exist (e.g. an unknown node id).
    #[error("not found: {0}")]
    NotFound(String),

    /// The request conflicts with the current state (e.g. init of an initialised cluster).
    #[error("{0}")]
    FailedPrecondition(String),

    /// The node is configured to refuse this request (e.g. fault injection outside the harness's
    /// node build), or the caller's token does not allow it ([`crate::auth`]).
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// The client port requires a token and the request carried none, or an unknown one.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    /// This node is not the leader; retry at `leader` if known.
    #[error("not the leader{}", match .leader { Some((id, addr)) => format!(" (leader is node {id} at {addr})"), None => " (no leader known yet)".to_string() })]
    NotLeader { leader: Option<(NodeId, String)> },

    /// The cluster cannot make progress right now (no quorum, node not initialised, peer down).
    /// Nothing was applied; safe to retry.
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// The node has as much client work in flight as it takes ([`crate::admission`]); nothing
    /// was applied. Safe to retry after a short backoff.
    #[error("overloaded: {0}")]
    Overloaded(String),

    /// The replica cannot meet the requested staleness bound (`bound_ms: None`: it has no bound
    /// at all, e.g. it has not reached the leader since it started).
    #[error("stale replica: {}", stale_detail(*.bound_ms, *.max_ms))]
    StaleReplica { bound_ms: Option<u64>, max_ms: u64 },

    /// The write was proposed but its outcome was not learned in time: it may or may not apply.
    #[error("timed out: {0}")]
    Timeout(String),

    /// Local storage failed or is damaged; the node is unhealthy.
    #[error("storage: {0}")]
    Storage(String),

    /// The data dir is open in another process (or, briefly, in this one after a store was
    /// dropped): two nodes must never share one.
    #[error("data dir {0} is in use by another process")]
    DataDirInUse(String),

    /// The node's TLS files are missing, unreadable or do not fit together; it cannot start.
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),

    /// Raft stopped or hit an unrecoverable error.
    #[error("fatal: {0}")]
    Fatal(String),
}

impl Error {
    /// The message without its category prefix: what goes into a gRPC status, whose code
    /// already names the category (each client adds its own prefix).
    pub fn detail(&self) -> String {
        match self {
            Error::InvalidArgument(m)
            | Error::NotFound(m)
            | Error::FailedPrecondition(m)
            | Error::PermissionDenied(m)
            | Error::Unauthenticated(m)
            | Error::Unavailable(m)
            | Error::Overloaded(m)
            | Error::Timeout(m)
            | Error::Storage(m)
            | Error::Fatal(m) => m.clone(),
            Error::DataDirInUse(_) => self.to_string(),
            Error::Tls(e) => e.to_string(),
            Error::StaleReplica { bound_ms, max_ms } => stale_detail(*bound_ms, *max_ms),
            Error::NotLeader { .. } => self.to_string(),
        }
    }
}

fn stale_detail(bound_ms: Option<u64>, max_ms: u64) -> String {
    match bound_ms {
        Some(b) => format!("bound {} exceeds {}", fmt_ms(b), fmt_ms(max_ms)),
        None => format!("no staleness bound known (leader unreachable?); asked for {}", fmt_ms(max_ms)),
    }
}

/// `1400` -> `1.4s`, `250` -> `250ms`: how a person reads a bound.
fn fmt_ms(ms: u64) -> String {
    if ms >= 1000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

/// openraft 0.10's storage traits speak `std::io::Error`; on our side every such error is the
/// store's.
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}
