//! System tests: real `geocache` processes on loopback ports, driven through gRPC, the CLI, the
//! Redis port and `/metrics`. One test binary for all of them (each binary links the whole node
//! statically, and CI machines are short of disk); every test starts its own cluster on ports
//! the OS hands out, so tests from different modules run side by side safely.

mod cli;
mod cluster;
mod hostile;
mod metrics;
mod netsim;
mod reads;
mod resp;
mod security;
mod workspace;
