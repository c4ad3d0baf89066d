//! geocache node library: a replicated LRU+TTL cache node.
//!
//! Layers, one module each (DESIGN.md section 2); data flows one way,
//! `service` -> raft -> `store` -> `state_machine`:
//! * [`state_machine`]: the pure, deterministic cache.
//! * [`store`]: sled log store and the openraft state-machine adapter.
//! * [`network`]: Raft RPCs between nodes over gRPC.
//! * [`read`]: consistency levels (read index, waits for an applied index).
//! * [`service`]: the gRPC edge; the only code that knows status codes.
//! * [`cli`], [`config`]: flags, validation, the `geocache` commands.

pub mod cli;
pub mod clock;
pub mod config;
pub mod election;
pub mod error;
pub mod launcher;
pub mod netsim;
pub mod network;
pub mod node;
pub mod read;
pub mod server;
pub mod service;
pub mod state_machine;
pub mod store;
pub mod types;

pub use config::Config;
pub use error::{Error, Result};
pub use server::run;
