//! The client's one error type, and the one place gRPC status codes are mapped back to it.
//!
//! Variants are sorted by what the caller can do about them (docs/ARCHITECTURE.md §6):
//!
//! | variant              | comes from                                  | retry?  | outcome known? |
//! |----------------------|---------------------------------------------|---------|----------------|
//! | `InvalidArgument`    | `INVALID_ARGUMENT`, client-side validation  | no      | yes            |
//! | `NotFound`           | `NOT_FOUND` (e.g. unknown node id)          | no      | yes            |
//! | `FailedPrecondition` | `FAILED_PRECONDITION` (e.g. init twice)     | no      | yes            |
//! | `Rejected`           | a write response with `rejected` set        | no      | yes            |
//! | `Decode`             | a typed value that does not decode          | no      | yes            |
//! | `Loader`             | the loader of `get_or_load` failed          | no      | yes            |
//! | `Unavailable`        | `UNAVAILABLE` (+ leader hint), no connection| yes     | yes            |
//! | `StaleReplica`       | `UNAVAILABLE` + `x-geocache-error: stale_replica` (+ bound) | yes | yes |
//! | `Transport`          | connection broke after the request left, `UNKNOWN` | yes | **no**    |
//! | `Timeout`            | `DEADLINE_EXCEEDED`, `CANCELLED`, deadline  | yes     | **no**         |
//! | `Internal`           | `INTERNAL` and anything unexpected          | no      | **no**         |
//!
//! "Outcome known" means: if the call was a write, the caller knows it did *not* take effect.
//! Jepsen-style checkers must record a write whose error has `outcome_known() == false` as
//! indeterminate, never as failed.
//!
//! Invariants: every `tonic::Status` the client sees goes through [`From<tonic::Status>`]; a
//! failure to even connect to a node is `Unavailable` (nothing was sent), while a connection
//! that breaks mid-call is `Transport` (the request may have been delivered and applied).

use std::time::Duration;

use geocache_proto::{ERROR_KIND_HEADER, LEADER_ADDR_HEADER, STALENESS_BOUND_HEADER, STALE_REPLICA};
use tonic::Code;

/// Result alias for the client crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a geocache call can fail with, as the caller needs to see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request is malformed or violates a limit (empty key, zero TTL, oversized value);
    /// retrying it unchanged cannot succeed. Nothing was changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The request names something that does not exist (e.g. an unknown node id).
    #[error("not found: {0}")]
    NotFound(String),

    /// The request conflicts with the cluster's state (e.g. init of an initialised cluster).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),

    /// The state machine refused the write for a deterministic reason (e.g. a value larger
    /// than the whole cache). Nothing was changed; retrying the same write gives the same answer.
    #[error("write rejected: {0}")]
    Rejected(String),

    /// A stored value could not be decoded into the requested type (`get_json`, `get_or_load`).
    #[error("cannot decode value: {0}")]
    Decode(String),

    /// The loader given to [`get_or_load`](crate::Client::get_or_load) failed; the message is
    /// its error's `Display`. Every caller waiting on that load gets this error, nothing was
    /// stored, and the next call runs a loader again.
    #[error("loader failed: {0}")]
    Loader(String),

    /// No node could serve the call right now: not the leader, no quorum, or not reachable.
    /// Nothing was applied. `leader` is the leader's address when the node knew it.
    #[error("unavailable: {message}{}", .leader.as_ref().map(|l| format!(" (leader at {l})")).unwrap_or_default())]
    Unavailable {
        /// What the node (or the connection attempt) said.
        message: String,
        /// The leader's address, from the `x-geocache-leader-addr` metadata.
        leader: Option<String>,
    },

    /// No replica could meet the requested staleness bound of a bounded read. The client has
    /// already asked every replica it knows (the leader last); this is the freshest refusal.
    #[error("stale replica: {message}")]
    StaleReplica {
        /// What the replica said.
        message: String,
        /// The refusing replica's current staleness bound (from the
        /// `x-geocache-staleness-bound-ms` metadata); `None` when it knows no bound at all
        /// (e.g. it has not reached the leader since it started).
        bound: Option<Duration>,
    },

    /// The connection failed after the request may have been sent. For a write, the outcome
    /// is unknown (and a failed write's message says so).
    #[error("connection failed: {0}")]
    Transport(String),

    /// The call ran out of time after it may have been delivered: for a write, it was proposed
    /// but its outcome was not learned, so it may or may not take effect (and a failed write's
    /// message says so). A read changed nothing.
    #[error("timed out: {0}")]
    Timeout(String),

    /// The cluster requires a token and this client sent none, or one it does not know
    /// ([`ClientBuilder::token`](crate::ClientBuilder::token)). Nothing was done.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    /// The client's token does not allow this call (a `read` token writing, a `write` token
    /// changing membership). Nothing was done.
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// The node reported an internal failure (storage, fatal Raft error) or answered with
    /// something this client does not understand.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the failure is transient, so the same call may succeed if tried again later
    /// (possibly at another node).
    ///
    /// The client already retries these inside one call until its deadline; a `true` here
    /// means the deadline ran out. For a write that also has [`outcome_known`](Self::outcome_known)
    /// `== false`, a fresh call is a *new* write (exactly-once only covers the retries inside
    /// one call), so re-read before repeating a conditional write.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::StaleReplica { .. } | Error::Transport(_) | Error::Timeout(_) => true,
            Error::InvalidArgument(_)
            | Error::NotFound(_)
            | Error::FailedPrecondition(_)
            | Error::Rejected(_)
            | Error::Decode(_)
            | Error::Loader(_)
            | Error::Unauthenticated(_)
            | Error::PermissionDenied(_)
            | Error::Internal(_) => false,
        }
    }

    /// Whether the caller knows the call did not take effect. `false` means indeterminate: a
    /// write may have been applied (and may still be applied later).
    ///
    /// `false` for [`Timeout`](Error::Timeout), [`Transport`](Error::Transport) (the connection
    /// broke after the request left) and [`Internal`](Error::Internal) (a node failing mid-write
    /// may already have replicated it). Reads have no effect, so for them this is moot.
    pub fn outcome_known(&self) -> bool {
        !matches!(self, Error::Timeout(_) | Error::Transport(_) | Error::Internal(_))
    }

    /// The leader address a refusing node pointed to, if any.
    pub fn leader_hint(&self) -> Option<&str> {
        match self {
            Error::Unavailable { leader, .. } => leader.as_deref(),
            _ => None,
        }
    }

    /// An `Unavailable` without a leader hint.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable { message: message.into(), leader: None }
    }

    /// For a [`StaleReplica`](Error::StaleReplica): whether this refusal is fresher than
    /// `other` (a known bound beats an unknown one, a smaller bound a larger one).
    pub(crate) fn fresher_than(&self, other: &Error) -> bool {
        match (self, other) {
            (Error::StaleReplica { bound: Some(a), .. }, Error::StaleReplica { bound: Some(b), .. }) => a < b,
            (Error::StaleReplica { bound: Some(_), .. }, Error::StaleReplica { bound: None, .. }) => true,
            (Error::StaleReplica { .. }, Error::StaleReplica { .. }) => false,
            (Error::StaleReplica { .. }, _) => true,
            _ => false,
        }
    }
}

/// Whether tonic made `status` up on this side from a local transport failure (the node could
/// not be reached, or the connection broke), rather than decoding it from a node's answer.
pub(crate) fn is_local_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

impl From<tonic::Status> for Error {
    /// Maps a gRPC status back to the error the node meant (the table in docs/ARCHITECTURE.md §6.2), telling
    /// apart a status the node sent from one tonic made up for a local transport failure.
    fn from(status: tonic::Status) -> Self {
        if let Some(local) = classify_local(&status) {
            return local;
        }
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument(message),
            Code::NotFound => Error::NotFound(message),
            Code::FailedPrecondition | Code::AlreadyExists => Error::FailedPrecondition(message),
            Code::Unavailable if metadata(&status, ERROR_KIND_HEADER) == Some(STALE_REPLICA) => {
                let bound = metadata(&status, STALENESS_BOUND_HEADER)
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .map(Duration::from_millis);
                // The node's message may already say what it is; `Display` adds that itself.
                let message = message.strip_prefix("stale replica: ").map(str::to_string).unwrap_or(message);
                Error::StaleReplica { message, bound }
            }
            Code::Unavailable => {
                Error::Unavailable { message, leader: metadata(&status, LEADER_ADDR_HEADER).map(str::to_string) }
            }
            // Load shedding and aborted transactions: nothing was done, try again.
            Code::ResourceExhausted | Code::Aborted => Error::unavailable(message),
            // DEADLINE_EXCEEDED is the node's "proposed, no ack"; CANCELLED is what tonic's
            // server sends when our `grpc-timeout` fires mid-handler. Both: outcome unknown.
            Code::DeadlineExceeded | Code::Cancelled => Error::Timeout(message),
            // The generated client's readiness check fails before anything is sent.
            Code::Unknown if message.starts_with("Service was not ready") => Error::unavailable(message),
            // A node passes on UNKNOWN when its own hop (forwarding a write to the leader) broke
            // mid-call: the request may have reached the leader.
            Code::Unknown => Error::Transport(format!("node reported: {message}")),
            Code::Internal => Error::Internal(message),
            Code::Unauthenticated => Error::Unauthenticated(message),
            Code::PermissionDenied => Error::PermissionDenied(message),
            code => Error::Internal(format!("{code:?}: {message}")),
        }
    }
}

/// A status tonic built on this side from a transport failure carries its cause as `source`;
/// one decoded from a node's response never does. Returns the client error for the former.
fn classify_local(status: &tonic::Status) -> Option<Error> {
    let mut cause = std::error::Error::source(status)?;
    loop {
        if cause.is::<tonic::ConnectError>() {
            // Could not open a connection: the request never left this process.
            return Some(Error::unavailable(format!("cannot connect: {cause}")));
        }
        if cause.is::<tonic::TimeoutExpired>() {
            return Some(Error::Timeout(status.message().to_string()));
        }
        match cause.source() {
            Some(next) => cause = next,
            None => break,
        }
    }
    Some(Error::Transport(format!(
        "{}: {}",
        status.message(),
        std::error::Error::source(status).map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// A non-empty ASCII metadata value.
fn metadata<'a>(status: &'a tonic::Status, key: &str) -> Option<&'a str> {
    status.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use geocache_proto::LEADER_ID_HEADER;

    fn with_meta(mut status: tonic::Status, pairs: &[(&'static str, &'static str)]) -> tonic::Status {
        for (k, v) in pairs {
            status.metadata_mut().insert(*k, v.parse().unwrap());
        }
        status
    }

    #[test]
    fn codes_map_back() {
        let cases: Vec<(tonic::Status, Error)> = vec![
            (tonic::Status::invalid_argument("empty key"), Error::InvalidArgument("empty key".into())),
            (tonic::Status::not_found("node 9"), Error::NotFound("node 9".into())),
            (
                tonic::Status::failed_precondition("already initialised"),
                Error::FailedPrecondition("already initialised".into()),
            ),
            (tonic::Status::deadline_exceeded("proposed"), Error::Timeout("proposed".into())),
            (tonic::Status::cancelled("Timeout expired"), Error::Timeout("Timeout expired".into())),
            (tonic::Status::internal("sled"), Error::Internal("sled".into())),
            (tonic::Status::unavailable("no quorum"), Error::Unavailable { message: "no quorum".into(), leader: None }),
            (
                tonic::Status::unknown("Service was not ready: closed"),
                Error::unavailable("Service was not ready: closed"),
            ),
            (tonic::Status::unknown("h2 protocol error"), Error::Transport("node reported: h2 protocol error".into())),
            (tonic::Status::unimplemented("nope"), Error::Internal("Unimplemented: nope".into())),
            (tonic::Status::unauthenticated("no token"), Error::Unauthenticated("no token".into())),
            (tonic::Status::permission_denied("read token"), Error::PermissionDenied("read token".into())),
        ];
        for (status, want) in cases {
            assert_eq!(Error::from(status), want);
        }
    }

    #[test]
    fn leader_hint_is_extracted_from_metadata() {
        let status = with_meta(
            tonic::Status::unavailable("not the leader"),
            &[(LEADER_ID_HEADER, "2"), (LEADER_ADDR_HEADER, "127.0.0.1:7002")],
        );
        let err = Error::from(status);
        assert_eq!(err, Error::Unavailable { message: "not the leader".into(), leader: Some("127.0.0.1:7002".into()) });
        assert_eq!(err.leader_hint(), Some("127.0.0.1:7002"));
        assert!(err.to_string().contains("leader at 127.0.0.1:7002"));

        // An empty hint is no hint.
        let status = with_meta(tonic::Status::unavailable("x"), &[(LEADER_ADDR_HEADER, "")]);
        assert_eq!(Error::from(status).leader_hint(), None);
    }

    #[test]
    fn stale_replica_kind_is_recognised_with_its_bound() {
        let status = with_meta(
            tonic::Status::unavailable("staleness bound 900ms exceeds 100ms"),
            &[(ERROR_KIND_HEADER, "stale_replica"), (STALENESS_BOUND_HEADER, "900")],
        );
        assert_eq!(
            Error::from(status),
            Error::StaleReplica {
                message: "staleness bound 900ms exceeds 100ms".into(),
                bound: Some(Duration::from_millis(900))
            }
        );
        // The node's own prefix is not repeated.
        let status = with_meta(
            tonic::Status::unavailable("stale replica: bound 1.4s exceeds 200ms"),
            &[(ERROR_KIND_HEADER, "stale_replica"), (STALENESS_BOUND_HEADER, "1400")],
        );
        assert_eq!(Error::from(status).to_string(), "stale replica: bound 1.4s exceeds 200ms");
        // No bound known (or an unparsable one): `None`.
        for pairs in [
            &[(ERROR_KIND_HEADER, "stale_replica")][..],
            &[(ERROR_KIND_HEADER, "stale_replica"), (STALENESS_BOUND_HEADER, "soon")],
        ] {
            let status = with_meta(tonic::Status::unavailable("no bound"), pairs);
            assert_eq!(Error::from(status), Error::StaleReplica { message: "no bound".into(), bound: None });
        }
    }

    #[test]
    fn fresher_refusals_win() {
        let stale =
            |ms: Option<u64>| Error::StaleReplica { message: String::new(), bound: ms.map(Duration::from_millis) };
        assert!(stale(Some(100)).fresher_than(&stale(Some(900))));
        assert!(!stale(Some(900)).fresher_than(&stale(Some(100))));
        assert!(stale(Some(900)).fresher_than(&stale(None)));
        assert!(!stale(None).fresher_than(&stale(Some(900))));
        assert!(stale(None).fresher_than(&Error::unavailable("down")));
        assert!(!Error::unavailable("down").fresher_than(&stale(None)));
    }

    #[test]
    fn local_transport_failures_are_told_apart() {
        // Connection refused: tonic wraps it in ConnectError; nothing was sent.
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let status = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(status.code(), Code::Unavailable);
        let err = Error::from(status);
        assert!(matches!(err, Error::Unavailable { leader: None, .. }), "{err:?}");
        assert!(err.outcome_known());

        // A broken connection (any other local cause): the request may have been delivered.
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let status = tonic::Status::from_error(Box::new(reset));
        let err = Error::from(status);
        assert!(matches!(err, Error::Transport(_)), "{err:?}");
        assert!(!err.outcome_known());
        assert!(err.is_retryable());
    }

    #[test]
    fn retryable_and_outcome_known_follow_the_table() {
        let table = [
            (Error::InvalidArgument(String::new()), false, true),
            (Error::NotFound(String::new()), false, true),
            (Error::FailedPrecondition(String::new()), false, true),
            (Error::Rejected(String::new()), false, true),
            (Error::Decode(String::new()), false, true),
            (Error::unavailable(""), true, true),
            (Error::StaleReplica { message: String::new(), bound: None }, true, true),
            (Error::Loader(String::new()), false, true),
            (Error::Transport(String::new()), true, false),
            (Error::Timeout(String::new()), true, false),
            (Error::Internal(String::new()), false, false),
        ];
        for (err, retryable, known) in table {
            assert_eq!(err.is_retryable(), retryable, "{err:?}");
            assert_eq!(err.outcome_known(), known, "{err:?}");
        }
    }
}
