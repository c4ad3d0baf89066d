//! The client against fake nodes: real tonic servers on loopback ports that the tests can make
//! fail, lag or refuse, to check routing, retries, read levels and read-through loading.

mod fake;

mod read_through;
mod regions;
mod routing;
