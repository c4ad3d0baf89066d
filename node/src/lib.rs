//! geocache node library: a replicated LRU+TTL cache node.
//!
//! Modules and how they depend on each other: docs/ARCHITECTURE.md §1. A write goes
//! `service` -> [`node::Node::propose`] -> openraft -> `store` -> `state_machine` (§2). The main modules:
//! * [`state_machine`]: the pure, deterministic cache.
//! * [`store`]: sled log store and the openraft state-machine adapter.
//! * [`network`]: Raft RPCs between nodes over gRPC.
//! * [`read`]: consistency levels (read index, waits for an applied index).
//! * [`service`]: the gRPC edge and the protocol-neutral client API under it; the one mapping
//!   from [`Error`] to status codes (§6).
//! * [`resp`]: the Redis-protocol front door, on the same client API.
//! * [`metrics`]: the Prometheus metrics and their HTTP endpoint.
//! * [`tls`]: mutual TLS between members, and making certificates.
//! * [`cli`], [`config`]: flags, validation, the `geocache` commands.
//! * [`launcher`]: starting local nodes; [`loadgen`]: the load engine of `geocache bench` and of
//!   the comparison with etcd and Redis (`benches/compare/`).

pub mod admission;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connections;
pub mod error;
pub mod faults;
pub mod launcher;
pub mod loadgen;
pub mod metrics;
pub mod netsim;
pub mod network;
pub mod node;
pub mod read;
pub mod resp;
pub mod server;
pub mod service;
pub mod state_machine;
pub mod store;
pub mod tls;
pub mod types;

pub use config::Config;
pub use error::{Error, Result};
pub use server::run;
