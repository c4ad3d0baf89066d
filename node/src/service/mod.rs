//! The client and operator API: the `Cache` (client API) and `Admin` gRPC services, the
//! protocol-neutral client API under `Cache` and the Redis front door ([`api`]), and the one
//! mapping from [`Error`] to gRPC status codes.
//!
//! Owns request validation (turning requests into [`Command`](crate::state_machine::Command)s
//! or reads), forwarding to the leader, and wire <-> domain conversion. Knows nothing of sled.
//!
//! Invariants: a request that fails validation changes nothing; a request is forwarded to the
//! leader at most once (the `x-geocache-forwarded` header), so forwarding never loops; every error
//! leaves here with exactly the code the table in docs/ARCHITECTURE.md §6.2 gives it.

mod admin;
pub mod api;
pub mod authorize;
mod cache;

pub use admin::AdminService;
pub use api::CacheApi;
pub use cache::CacheService;

use geocache_proto::{
    ERROR_KIND_HEADER, FORWARDED_HEADER, LEADER_ADDR_HEADER, LEADER_ID_HEADER, STALENESS_BOUND_HEADER, STALE_REPLICA,
};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::Error;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let message = e.detail();
        match e {
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::NotFound(_) => Status::not_found(message),
            Error::FailedPrecondition(_) => Status::failed_precondition(message),
            Error::NotLeader { leader } => {
                let mut status = Status::unavailable(message);
                if let Some((id, addr)) = leader {
                    let metadata = status.metadata_mut();
                    metadata.insert(LEADER_ID_HEADER, MetadataValue::from(id));
                    if let Ok(addr) = addr.parse() {
                        metadata.insert(LEADER_ADDR_HEADER, addr);
                    }
                }
                status
            }
            Error::PermissionDenied(_) => Status::permission_denied(message),
            Error::Unauthenticated(_) => Status::unauthenticated(message),
            Error::Unavailable(_) => Status::unavailable(message),
            Error::Overloaded(_) => Status::resource_exhausted(message),
            Error::StaleReplica { bound_ms, .. } => {
                let mut status = Status::unavailable(message);
                let metadata = status.metadata_mut();
                metadata.insert(ERROR_KIND_HEADER, MetadataValue::from_static(STALE_REPLICA));
                if let Some(bound_ms) = bound_ms {
                    metadata.insert(STALENESS_BOUND_HEADER, MetadataValue::from(bound_ms));
                }
                status
            }
            Error::Timeout(_) => Status::deadline_exceeded(message),
            Error::Storage(_) | Error::DataDirInUse(_) | Error::Tls(_) | Error::Fatal(_) => {
                Status::new(Code::Internal, message)
            }
        }
    }
}

/// The caller's deadline from the `grpc-timeout` header (e.g. `5S`, `250m`), if any.
fn grpc_timeout<T>(request: &tonic::Request<T>) -> Option<std::time::Duration> {
    crate::connections::parse_grpc_timeout(request.metadata().get("grpc-timeout")?.to_str().ok()?)
}

/// Whether another node already forwarded this request (so it must not be forwarded again).
fn is_forwarded<T>(request: &tonic::Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_HEADER)
}

/// Wraps `message` in a request marked as forwarded, with the node's request timeout.
fn forwarded_request<T>(message: T, timeout: std::time::Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
    request.set_timeout(timeout);
    request
}

/// Sends a forwarded request's answer back: the leader's reply with the leader named in its
/// metadata (so a client goes there directly next time), or an error with a precise code.
fn forwarded_reply<T>(
    leader: &(u64, String),
    reply: Result<tonic::Response<T>, Status>,
) -> Result<tonic::Response<T>, Status> {
    match reply {
        Ok(mut response) => {
            let metadata = response.metadata_mut();
            metadata.insert(LEADER_ID_HEADER, MetadataValue::from(leader.0));
            if let Ok(addr) = leader.1.parse() {
                metadata.insert(LEADER_ADDR_HEADER, addr);
            }
            Ok(response)
        }
        Err(status) => Err(api::forward_failure(leader, status).into()),
    }
}

/// The leader to forward to, if `error` says this node is not it and the request may still move.
fn forward_target(error: &Error, already_forwarded: bool) -> Option<(u64, String)> {
    match error {
        Error::NotLeader { leader: Some(leader) } if !already_forwarded => Some(leader.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_carries_the_leader_in_metadata() {
        let status = Status::from(Error::NotLeader { leader: Some((3, "127.0.0.1:7003".into())) });
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.metadata().get(LEADER_ID_HEADER).unwrap(), "3");
        assert_eq!(status.metadata().get(LEADER_ADDR_HEADER).unwrap(), "127.0.0.1:7003");
    }

    #[test]
    fn each_error_has_its_code() {
        let cases = [
            (Error::InvalidArgument("x".into()), Code::InvalidArgument),
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::FailedPrecondition("x".into()), Code::FailedPrecondition),
            (Error::PermissionDenied("x".into()), Code::PermissionDenied),
            (Error::Unauthenticated("x".into()), Code::Unauthenticated),
            (Error::NotLeader { leader: None }, Code::Unavailable),
            (Error::Unavailable("x".into()), Code::Unavailable),
            (Error::Overloaded("x".into()), Code::ResourceExhausted),
            (Error::StaleReplica { bound_ms: Some(1400), max_ms: 200 }, Code::Unavailable),
            (Error::Timeout("x".into()), Code::DeadlineExceeded),
            (Error::Storage("x".into()), Code::Internal),
            (Error::Fatal("x".into()), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }

    #[test]
    fn a_stale_replica_refusal_is_typed_and_carries_the_bound() {
        let status = Status::from(Error::StaleReplica { bound_ms: Some(1400), max_ms: 200 });
        assert_eq!(status.message(), "bound 1.4s exceeds 200ms");
        assert_eq!(status.metadata().get(ERROR_KIND_HEADER).unwrap(), STALE_REPLICA);
        assert_eq!(status.metadata().get(STALENESS_BOUND_HEADER).unwrap(), "1400");
        let unknown = Status::from(Error::StaleReplica { bound_ms: None, max_ms: 200 });
        assert!(unknown.metadata().get(STALENESS_BOUND_HEADER).is_none());
        assert!(unknown.message().contains("no staleness bound"), "{}", unknown.message());
    }

    #[test]
    fn forwarding_happens_at_most_once() {
        let e = Error::NotLeader { leader: Some((2, "a".into())) };
        assert!(forward_target(&e, false).is_some());
        assert!(forward_target(&e, true).is_none());
        assert!(forward_target(&Error::NotLeader { leader: None }, false).is_none());
    }
}
