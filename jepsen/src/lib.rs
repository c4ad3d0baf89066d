//! geocache-jepsen: a Jepsen-style fault-injection harness for geocache.
//!
//! The roles, one module each (docs/ARCHITECTURE.md §7.3): [`control`] runs real `geocache` processes
//! on loopback behind the node's own `netsim` fault proxy; [`nemesis`] injects faults (through
//! that proxy, signals and restarts) on a seeded schedule; [`workload`] generates operations and
//! runs them through clients ([`client`]: one worker's client, over gRPC or the Redis protocol);
//! [`history`] records every invocation and completion; [`checker`]
//! judges the history afterwards; [`report`] writes the results and [`plot`] draws the latency
//! plot; [`overload`] floods the cluster with writes and watches its leadership (`--overload`); [`runner`] strings the phases of one test together. Everything is black-box: the
//! harness talks to the cluster only as a client would, and trusts nothing the system reports
//! about itself (versions, bounds) when checking.

pub mod checker;
pub mod client;
pub mod control;
pub mod history;
pub mod nemesis;
pub mod overload;
pub mod plot;
pub mod report;
pub mod runner;
pub mod workload;
