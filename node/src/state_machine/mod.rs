//! The replicated cache: keys, values, versions, expiry times, LRU order, capacity limits,
//! exactly-once client sessions and the log clock (docs/ARCHITECTURE.md §4).
//!
//! [`Cache::apply`] takes the Raft log index and [`Command`] of a committed entry and returns a
//! [`Response`]; [`Cache::get`] answers reads; [`Cache::snapshot`] and [`Cache::restore`] move the
//! whole state in and out of Raft snapshots.
//!
//! This module owns no time, IO, randomness or networking, and knows nothing of openraft, sled or
//! tonic. Callers stamp commands with `now_ms`, persist snapshots, and decide which reads are safe
//! to serve (`read/`). Membership and blank log entries never reach it.
//!
//! # Semantics
//!
//! * **Log clock.** Every command first sets `clock = max(clock, now_ms)`, so log time never goes
//!   backwards even when a new leader's wall clock lags. An entry with `expires_at_ms <= clock`
//!   is gone: it is absent for conditions, `existed` and reads, though it may still occupy memory
//!   until a `Tick` or an eviction purges it.
//! * **Versions.** A write that applies sets the key's version to its log index. A `Set` or
//!   `Expire` whose expiry is already at or before the clock (the proposer's clock lagged) applies
//!   as a delete: the key is gone afterwards and the response's `version` is 0.
//! * **Conditions.** `Set` applies `Always`, `IfAbsent`, `IfPresent` or `IfVersion(v)` (present
//!   with version `v`). `Expire` and `Delete` apply only to a present key. A command that does not
//!   apply (`applied == false`) changes no entry and no LRU position.
//! * **Capacity.** An entry costs `key + value + ENTRY_OVERHEAD_BYTES`; a limit of 0 is
//!   unlimited. When a `Set` would exceed a limit, all expired entries are purged, then the least
//!   recently used are evicted until it fits; an overwrite frees the old value first, so a key
//!   never evicts itself. `Configure` evicts the same way down to the new limits. A single entry
//!   larger than `max_bytes` is rejected ([`Rejection::TooLarge`]), checked before the condition.
//! * **Clear.** `Clear` (Redis `FLUSHDB`) removes every entry; limits, the log clock, the
//!   recency counter and client sessions stay, so versions keep growing and a resent write is
//!   still answered once.
//! * **Recency.** Only applied writes (`Set`, `Expire`) and `Touch` move a key to the most
//!   recently used end; `get` never does. Recency is a counter in the replicated state, unique
//!   per entry, so there are no eviction ties to break.
//! * **Exactly once** (Raft thesis section 6.3). A command with a [`WriteId`] whose response is
//!   stored is answered with that response and applies nothing; one below the client's
//!   `acked_below` watermark gets [`Rejection::SessionExpired`]. At most
//!   [`MAX_RESPONSES_PER_CLIENT`] responses are kept per client, and a `Tick` drops sessions idle
//!   for more than [`SESSION_IDLE_MS`] of log time.
//!
//! # Invariants
//!
//! * The same commands applied at the same indexes to equal states give equal responses and equal
//!   states ([`Cache::state_hash`], [`Cache::dump`]) on every node; nothing iterates a `HashMap`.
//! * `Cache::restore(c.snapshot())` is indistinguishable from `c`, including what it answers later.
//! * After every apply the stored entries are within [`Limits`].
//! * `get(key, now)` never returns an entry expiring at or before `max(clock, now)`.
//! * Applied indexes strictly increase (checked in debug builds).
//! * [`Removals`] (how many entries were evicted or expired, for the node's metrics) is counted
//!   by apply but is not replicated state: it is in no snapshot, hash or dump and decides nothing.
//!
//! # Caveats
//!
//! * Sessions are implicit: a client whose session was garbage-collected (idle over an hour of log
//!   time) and then retries an old write gets it applied again. Retry loops are far shorter.
//! * The number of sessions is bounded only by the idle timeout, not by a count.
//! * Expired entries keep using memory until a `Tick` or a capacity shortfall purges them.

mod cache;
mod command;
mod session;

pub use cache::{Cache, CacheSnapshot, Removals};
pub use command::*;
pub use session::{MAX_RESPONSES_PER_CLIENT, SESSION_IDLE_MS};

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
