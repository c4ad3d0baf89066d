//! The harness's acceptance tests: each runs the `geocache-jepsen` binary as a user would against
//! real node processes and judges what it wrote. One test binary for all of them (each binary
//! links the whole node statically, and CI machines are short of disk); harness runs inside it
//! take turns (see [`common::run_test`]).

mod common;

mod broken_follower;
mod cache_workload;
mod cli;
mod clock;
mod clock_offset_ttl;
mod crash_points;
mod linearizable;
mod membership;
mod overload;
mod resp_protocol;
mod stale_reads;
mod tls;
