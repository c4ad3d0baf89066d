//! The replicated cache: keys, values, versions, expiry times, LRU order, capacity limits,
//! exactly-once client sessions and the log clock.
//!
//! (Module doc to be completed by the implementation.)

mod command;

pub use command::*;
