//! Wire types of geocache's gRPC API, generated from `proto/geocache.proto`.
//!
//! This crate owns only the wire format. Conversions to and from domain types live beside the
//! code that owns the domain (`geocache-node`'s `service/` and the client crate), so the wire can
//! evolve without touching the state machine.

#![allow(clippy::all, missing_docs)]

pub mod codec;

pub mod v1 {
    tonic::include_proto!("geocache.v1");
}

pub use v1::*;

/// gRPC metadata key carrying the current leader's node id on a `NotLeader` refusal.
pub const LEADER_ID_HEADER: &str = "x-geocache-leader-id";
/// gRPC metadata key carrying the current leader's address on a `NotLeader` refusal.
pub const LEADER_ADDR_HEADER: &str = "x-geocache-leader-addr";
/// Set on a request a node forwards to the leader, so the leader never forwards it again.
pub const FORWARDED_HEADER: &str = "x-geocache-forwarded";
/// gRPC metadata key naming a typed error kind (e.g. `stale_replica`).
pub const ERROR_KIND_HEADER: &str = "x-geocache-error";
/// Value of [`ERROR_KIND_HEADER`] on a bounded read the replica cannot serve within the bound.
pub const STALE_REPLICA: &str = "stale_replica";
/// gRPC metadata key carrying, on a `stale_replica` refusal, the replica's current staleness bound
/// in ms (absent when the replica knows no bound at all, e.g. it never reached the leader).
pub const STALENESS_BOUND_HEADER: &str = "x-geocache-staleness-bound-ms";
