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
//! * **Routing.** Writes and linearizable reads go to the leader. The client starts with the
//!   first endpoint as its guess, follows the leader hint a refusing node sends
//!   (`UNAVAILABLE` + `x-geocache-leader-addr`), and otherwise tries the next endpoint. Stale and
//!   bounded reads go to the first replica that answers within the bound (`src/routing.rs`).
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
//! # Connections
//!
//! Connections are opened lazily, one per node address, and reused by every clone of the
//! [`Client`]; building a client succeeds while nodes are down. A node address is `host:port`
//! or `http://host:port` (TLS is not supported yet).
//!
//! # Not here yet
//!
//! Region preference for local reads (the client is told its region or measures round trips,
//! DESIGN.md section 5) and read-through loading. `Router::replica_order` in `src/routing.rs` is
//! the extension point for the former.

#![warn(missing_docs)]

mod admin;
mod client;
mod endpoint;
mod error;
mod options;
mod routing;
mod typed;
mod types;
mod write_id;

pub use admin::{Member, Membership, NodeStatus, Role, Status};
pub use bytes::Bytes;
pub use client::{Client, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
pub use error::{Error, Result};
pub use options::{Condition, Consistency, ReadOptions, SetOptions};
pub use types::{Entry, LogIndex, NodeId, ReadMeta, TtlInfo, WriteResult};
pub use write_id::WriteId;
