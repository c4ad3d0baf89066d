//! geocache-jepsen: a Jepsen-style fault-injection harness for geocache.
//!
//! The roles, one module each (DESIGN.md section 2): `control` runs real `geocache` processes on
//! loopback; `nemesis` injects faults (through the node's own `netsim` proxy, signals and
//! restarts); `workload` generates operations and runs them through clients; [`history`] records
//! every invocation and completion; `checker` judges the history afterwards; `report` writes the
//! results. Everything is black-box: the harness talks to the cluster only as a client would, and
//! trusts nothing the system reports about itself (versions, bounds) when checking.

pub mod checker;
pub mod history;
