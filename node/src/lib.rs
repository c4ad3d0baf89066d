//! geocache node library. See DESIGN.md; data flows one way:
//! `service` -> raft -> `store` -> `state_machine`.

pub mod error;
pub mod state_machine;
pub mod store;
pub mod types;

pub use error::{Error, Result};
