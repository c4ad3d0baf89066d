//! Rust client for geocache, a Raft-replicated, geo-distributed LRU cache with time expiration.
//!
//! ```no_run
//! use std::time::Duration;
//! use geocache_client::{Client, Condition, ReadOptions, SetOptions};
//!
//! # async fn example() -> geocache_client::Result<()> {
//! let client = Client::builder()
//!     .endpoints(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])
//!     .timeout(Duration::from_secs(2))
//!     .build()
//!     .await?;
//!
//! // Writes commit through the leader; the answer carries the key's new version.
//! let w = client
//!     .set_with("session:42", "ada", SetOptions::new().with_ttl(Duration::from_secs(60)))
//!     .await?;
//!
//! // Compare-and-set: applies only if nobody wrote the key since.
//! let cas = client
//!     .set_with("session:42", "grace", SetOptions::new().with_condition(Condition::IfVersion(w.version)))
//!     .await?;
//! assert!(cas.applied);
//!
//! // Linearizable read (the default) ...
//! let entry = client.get("session:42").await?.expect("just written");
//! println!("{:?} v{} from node {}", entry.value, entry.version, entry.meta.node_id);
//!
//! // ... or a local read at most 500 ms stale that still sees our own write.
//! let options = ReadOptions::bounded(Duration::from_millis(500)).with_min_version(cas.version);
//! let _nearby = client.get_with("session:42", options).await?;
//!
//! // Typed values travel as JSON.
//! client.set_json("config", &vec![1, 2, 3]).await?;
//! let config: Option<Vec<u32>> = client.get_json("config").await?;
//! # let _ = config;
//! # Ok(())
//! # }
//! ```
//!
//! # What the client does for you
//!
//! * **Routing.** Writes and membership changes go to the leader. The client learns who leads
//!   from the cluster's topology (below) and from the leader hint a refusing node sends
//!   (`UNAVAILABLE` + `x-geocache-leader-addr`), and otherwise tries the next node. Reads at
//!   every level go to the nearest replica (`src/routing.rs`).
//! * **Retries within a deadline.** Each call has one total deadline ([`ClientBuilder::timeout`],
//!   default 5 s) covering every attempt and the backoff between them (20 ms doubling to
//!   200 ms, jittered). Bad input is never retried.
//! * **Exactly-once writes.** Every write carries a [`WriteId`] (a random client id and a
//!   sequence number) that stays the same across its retries, so a retry after a lost answer is
//!   answered with the first result instead of being applied twice.
//! * **Errors that say what happened.** [`Error::outcome_known`] is `false` exactly when a write
//!   may have taken effect despite the error (a timeout, a connection lost mid-call);
//!   [`Error::is_retryable`] says whether trying again later can help.
//!
//! # Regions and replica choice
//!
//! The client learns the topology (every member's address, region and role, and the leader)
//! from any node while it is built, then refreshes it in the background every 10 s
//! ([`ClientBuilder::refresh_interval`]) and soon after a failed attempt or a leader change. Each
//! refresh also measures every member's round trip with a cheap local status call and keeps a
//! smoothed RTT per node. Building succeeds even if no node answers; the client then starts from
//! its endpoints and keeps trying. [`Client::replicas`] shows what it knows.
//!
//! A read, at any level, asks replicas in this order (`src/topology.rs`):
//! replicas in the client's region ([`ClientBuilder::region`]) first, whatever their role;
//! then the others by measured round trip; for a **bounded** read the leader comes last (unless
//! it is in the client's region), as the fallback whose bound is smallest. Nodes that failed to
//! answer go to the back until they answer again. Without a region, the round trip alone orders.
//! A linearizable read may go to a follower too: the follower asks the leader for a read index
//! (one small round trip) and answers from its own copy.
//!
//! # Fallback
//!
//! When a replica fails (connection error, `UNAVAILABLE`, no answer in time) or refuses a
//! bounded read as too stale, the read moves to the next replica, all within the call's
//! deadline. If every replica refuses a bounded read within one round, the call fails at once
//! with [`Error::StaleReplica`] carrying the freshest refusing replica's bound, so the caller
//! can choose to read [stale](ReadOptions::stale) instead. Stale, bounded and `min_version`
//! reads give each replica only a share of the remaining deadline (half, at least 50 ms): a
//! replica that has not applied `min_version` in its share is passed over for another replica
//! or the leader rather than failing the read. Any member can serve any level, so a stale read
//! falls back only to other replicas, never to anything weaker.
//!
//! # Read-through loading
//!
//! [`Client::get_or_load`] is the integration a local cache with a load callback offers:
//!
//! ```no_run
//! # use std::time::Duration;
//! # use geocache_client::Client;
//! # #[derive(serde::Serialize, serde::Deserialize)] struct User { name: String }
//! # async fn load_user() -> Result<User, std::io::Error> { Ok(User { name: "ada".into() }) }
//! # async fn example() -> geocache_client::Result<()> {
//! let cache = Client::builder()
//!     .endpoints(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])
//!     .region("eu-west")
//!     .default_ttl(Duration::from_secs(300))
//!     .build()
//!     .await?;
//! let user: User = cache.get_or_load("user:42", load_user).await?;
//! # let _ = user;
//! # Ok(())
//! # }
//! ```
//!
//! On a miss it calls the loader, stores the value (JSON) with the client's default TTL
//! ([`ClientBuilder::default_ttl`], or per call with [`Client::get_or_load_with`]) and returns
//! it; reads use the client's default consistency ([`ClientBuilder::default_consistency`]).
//! Concurrent calls for one key on one client share a single read and loader call
//! (single-flight); a loader error reaches every waiter as [`Error::Loader`] and nothing is
//! stored. The value is stored only if the key is still absent: if another process stored it
//! first, its value is returned, so all processes agree. [`Client::get_or_load_bytes`] does the
//! same without JSON.
//!
//! # Connections
//!
//! Connections are opened lazily, one per node address, and reused by every clone of the
//! [`Client`]. A node address is `host:port` or `http://host:port` (TLS is not supported yet).
//! [`ClientBuilder::discovery`]`(false)` turns topology learning off, for tools that must talk
//! to the endpoints they were given.
//!
//! # Not here
//!
//! Reading from several replicas at once (hedged reads), and preferring replicas by their
//! reported staleness bound: the order uses region and round trip only, and a replica's bound
//! is learned when it refuses.

#![warn(missing_docs)]

mod admin;
mod client;
mod endpoint;
mod error;
mod options;
mod read_through;
mod routing;
mod topology;
mod typed;
mod types;
mod write_id;

pub use admin::{Member, Membership, NodeStatus, Role, Status};
pub use bytes::Bytes;
pub use client::{Client, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
pub use error::{Error, Result};
pub use options::{Condition, Consistency, ReadOptions, SetOptions};
pub use topology::{Replica, DEFAULT_REFRESH_INTERVAL};
pub use types::{Entry, LogIndex, NodeId, ReadMeta, TtlInfo, WriteResult};
pub use write_id::WriteId;
