//! [`Cache`]: entries, LRU order, expiry index, limits, log clock and sessions, and the rules that
//! apply a [`Command`] to them. See the module docs of [`super`] for the semantics.

use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use super::command::{Command, Condition, EntryView, Limits, LogIndex, Op, Rejection, Response, ENTRY_OVERHEAD_BYTES};
use super::session::{describe_expiry, Admission, Sessions};

/// A key, shared by the entry and the indexes that name it (one allocation per key).
type Key = Arc<str>;

/// The replicated LRU + TTL cache. Deterministic: the same commands applied at the same indexes
/// give the same responses and the same [`Cache::state_hash`] on every replica.
///
/// The entries and both indexes are persistent ordered maps (`imbl`): a clone shares every node
/// with the original and copies only what either side changes later, so [`Clone`] is O(1). The
/// snapshot builder clones the cache under the state machine's lock and walks and encodes the
/// clone after releasing it, so a snapshot never stops applies for longer than a clone.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    entries: OrdMap<Key, Entry>,
    /// recency -> key; the first is the least recently used. Recency numbers are unique, so
    /// eviction never needs a tie-break.
    lru: OrdMap<u64, Key>,
    /// (expires_at_ms, key) of every entry that has an expiry.
    expiry: OrdSet<(u64, Key)>,
    /// Next recency number to hand out; only grows.
    next_recency: u64,
    /// Sum of [`entry_cost`] over `entries`. Derived, not snapshotted.
    used_bytes: u64,
    limits: Limits,
    clock_ms: u64,
    last_applied: LogIndex,
    sessions: Sessions,
    /// What this copy removed on its own: an observation, not replicated state (see [`Removals`]).
    removals: Removals,
}

/// How many entries a [`Cache`] removed that no client asked to remove, counted since the cache
/// was created or restored: the numbers behind the `geocache_cache_evictions_total` and
/// `geocache_cache_expirations_total` metrics.
///
/// Deterministic like everything here (the same commands give the same counts), but not part of
/// the replicated state: never in a snapshot, the state hash or the dump, and never read by
/// `apply`. So two replicas agree on everything that matters while one restored from a snapshot
/// counts from zero; the store carries the counts across a snapshot install
/// ([`Cache::continue_counting_from`]) so a process's counters only ever grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removals {
    /// Live entries evicted, least recently used first, to make room under the capacity limits.
    pub evicted: u64,
    /// Entries removed because they had expired in log time: purged by a `Tick`, purged to make
    /// room, or overwritten by a write while expired.
    pub expired: u64,
}

#[derive(Clone, Debug)]
struct Entry {
    value: Bytes,
    version: u64,
    expires_at_ms: Option<u64>,
    recency: u64,
}

impl Entry {
    fn is_expired_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }
}

/// Everything needed to rebuild a [`Cache`] exactly: [`Cache::restore`] of it, then applying the
/// same further commands, gives the same responses, dump and state hash as the original.
///
/// Serialized into Raft snapshots, so changing a field changes the snapshot format.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CacheSnapshot {
    last_applied: LogIndex,
    clock_ms: u64,
    limits: Limits,
    next_recency: u64,
    /// Least recently used first.
    entries: Vec<SnapshotEntry>,
    sessions: Sessions,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotEntry {
    key: String,
    value: Bytes,
    version: u64,
    expires_at_ms: Option<u64>,
    pub(crate) recency: u64,
}

#[cfg(test)]
impl CacheSnapshot {
    pub(crate) fn entries_for_test(&self) -> Vec<SnapshotEntry> {
        self.entries.clone()
    }

    pub(crate) fn push_entry_for_test(&mut self, entry: SnapshotEntry, next_recency: u64) {
        self.entries.push(entry);
        self.next_recency = next_recency;
    }
}

/// Bytes an entry is charged against `max_bytes`.
fn entry_cost(key: &str, value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD_BYTES
}

impl Cache {
    /// An empty cache with unlimited capacity, clock 0 and nothing applied.
    pub fn new() -> Cache {
        Cache::default()
    }

    /// Applies the command of log entry `index` and returns its response.
    ///
    /// `index` must be greater than every index applied before (entries the cache never sees,
    /// such as membership changes, may leave gaps). A write carrying a [`WriteId`] that was
    /// already applied is answered with its first response and applies nothing; only the clock,
    /// the applied index and the client's session activity time move.
    ///
    /// [`WriteId`]: super::WriteId
    pub fn apply(&mut self, index: LogIndex, cmd: &Command) -> Response {
        debug_assert!(index > self.last_applied, "log index {index} applied after {}", self.last_applied);
        self.last_applied = index;
        // Proposers' clocks differ; taking the max keeps log time monotonic across leader changes.
        self.clock_ms = self.clock_ms.max(cmd.now_ms);

        if let Some(w) = cmd.write_id {
            if let Admission::Answer(response) = self.sessions.admit(w, self.clock_ms) {
                return response;
            }
        }
        let response = self.apply_op(index, &cmd.op);
        if let Some(w) = cmd.write_id {
            self.sessions.record(w, &response);
        }
        response
    }

    fn apply_op(&mut self, index: LogIndex, op: &Op) -> Response {
        match op {
            Op::Set { key, value, expires_at_ms, condition } => self.set(index, key, value, *expires_at_ms, *condition),
            Op::Delete { key } => self.delete(key),
            Op::Expire { key, expires_at_ms } => self.expire(index, key, *expires_at_ms),
            Op::Touch { keys } => {
                for key in keys {
                    if self.live(key).is_some() {
                        self.touch(key);
                    }
                }
                applied()
            }
            Op::Tick => {
                self.purge_expired();
                self.sessions.expire_idle(self.clock_ms);
                applied()
            }
            Op::Configure { max_entries, max_bytes } => {
                self.limits = self.limits.changed(*max_entries, *max_bytes);
                self.make_room(0, 0);
                applied()
            }
            Op::Clear => {
                // `existed`: whether there was anything live to clear.
                let existed = self.entries.values().any(|e| !e.is_expired_at(self.clock_ms));
                self.entries.clear();
                self.lru.clear();
                self.expiry.clear();
                self.used_bytes = 0;
                Response { applied: true, existed, ..Response::default() }
            }
        }
    }

    fn set(
        &mut self,
        index: LogIndex,
        key: &str,
        value: &Bytes,
        expires_at_ms: Option<u64>,
        condition: Condition,
    ) -> Response {
        let mut response = self.unchanged(key);
        let cost = entry_cost(key, value);
        let max_bytes = self.limits.max_bytes;
        // Checked before the condition: a value that can never be stored is reported as such,
        // whatever the key's state.
        if max_bytes != 0 && cost > max_bytes {
            response.rejected = Some(Rejection::TooLarge { entry_bytes: cost, max_bytes });
            return response;
        }
        let holds = match condition {
            Condition::Always => true,
            Condition::IfAbsent => !response.existed,
            Condition::IfPresent => response.existed,
            Condition::IfVersion(v) => response.existed && response.previous_version == v,
        };
        if !holds {
            return response;
        }

        // Removing the old value first frees its bytes, so an overwrite never evicts itself.
        if self.remove(key).is_some_and(|old| old.is_expired_at(self.clock_ms)) {
            self.removals.expired += 1;
        }
        response.applied = true;
        if expires_at_ms.is_some_and(|t| t <= self.clock_ms) {
            // Already expired in log time (the proposer's clock lagged): the write is a delete.
            response.version = 0;
            response.expires_at_ms = None;
            return response;
        }
        self.make_room(1, cost);
        self.insert(key.to_string(), value.clone(), index, expires_at_ms);
        response.version = index;
        response.expires_at_ms = expires_at_ms;
        response
    }

    fn delete(&mut self, key: &str) -> Response {
        let mut response = self.unchanged(key);
        if response.existed {
            self.remove(key);
            response.applied = true;
            response.version = 0;
            response.expires_at_ms = None;
        }
        response
    }

    fn expire(&mut self, index: LogIndex, key: &str, expires_at_ms: Option<u64>) -> Response {
        let mut response = self.unchanged(key);
        if !response.existed {
            return response;
        }
        response.applied = true;
        if expires_at_ms.is_some_and(|t| t <= self.clock_ms) {
            self.remove(key);
            response.version = 0;
            response.expires_at_ms = None;
            return response;
        }
        let shared = self.entries.get_key_value(key).expect("live entry").0.clone();
        let entry = self.entries.get_mut(key).expect("live entry");
        if let Some(old) = entry.expires_at_ms {
            self.expiry.remove(&(old, shared.clone()));
        }
        if let Some(new) = expires_at_ms {
            self.expiry.insert((new, shared));
        }
        entry.expires_at_ms = expires_at_ms;
        entry.version = index;
        self.touch(key);
        response.version = index;
        response.expires_at_ms = expires_at_ms;
        response
    }

    /// The response of a command that leaves `key` as it is.
    fn unchanged(&self, key: &str) -> Response {
        match self.live(key) {
            Some(e) => Response {
                existed: true,
                previous_version: e.version,
                version: e.version,
                expires_at_ms: e.expires_at_ms,
                ..Response::default()
            },
            None => Response::default(),
        }
    }

    /// The entry under `key` unless it is absent or expired in log time.
    fn live(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key).filter(|e| !e.is_expired_at(self.clock_ms))
    }

    fn insert(&mut self, key: String, value: Bytes, version: u64, expires_at_ms: Option<u64>) {
        debug_assert!(!self.entries.contains_key(key.as_str()));
        let key: Key = Arc::from(key);
        let recency = self.next_recency;
        self.next_recency += 1;
        self.used_bytes += entry_cost(&key, &value);
        self.lru.insert(recency, key.clone());
        if let Some(t) = expires_at_ms {
            self.expiry.insert((t, key.clone()));
        }
        self.entries.insert(key, Entry { value, version, expires_at_ms, recency });
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let (key, entry) = self.entries.remove_with_key(key)?;
        self.used_bytes -= entry_cost(&key, &entry.value);
        self.lru.remove(&entry.recency);
        if let Some(t) = entry.expires_at_ms {
            self.expiry.remove(&(t, key));
        }
        Some(entry)
    }

    /// Makes `key` (which must exist) the most recently used.
    fn touch(&mut self, key: &str) {
        let recency = self.next_recency;
        self.next_recency += 1;
        let entry = self.entries.get_mut(key).expect("touched entry exists");
        let key = self.lru.remove(&entry.recency).expect("entry is in the LRU order");
        entry.recency = recency;
        self.lru.insert(recency, key);
    }

    fn purge_expired(&mut self) {
        while let Some((t, key)) = self.expiry.get_min() {
            if *t > self.clock_ms {
                break;
            }
            let key = key.clone();
            self.remove(&key);
            self.removals.expired += 1;
        }
    }

    fn fits(&self, more_entries: u64, more_bytes: u64) -> bool {
        let Limits { max_entries, max_bytes } = self.limits;
        (max_entries == 0 || self.entries.len() as u64 + more_entries <= max_entries)
            && (max_bytes == 0 || self.used_bytes + more_bytes <= max_bytes)
    }

    /// Evicts until `more_entries` entries of `more_bytes` fit: all expired entries first (they
    /// are dead anyway), then the least recently used.
    fn make_room(&mut self, more_entries: u64, more_bytes: u64) {
        if self.fits(more_entries, more_bytes) {
            return;
        }
        self.purge_expired();
        while !self.fits(more_entries, more_bytes) {
            let Some((_, key)) = self.lru.get_min() else {
                break;
            };
            let key = key.clone();
            self.remove(&key);
            self.removals.evicted += 1;
        }
    }

    /// The live value under `key`, hiding entries that expired by log time or by the reader's
    /// local clock `now_ms`, whichever is later.
    ///
    /// Never changes the LRU order: a local read is not in the log, and replicas that reordered
    /// on reads would evict different keys. Read recency is replicated as [`Op::Touch`].
    pub fn get(&self, key: &str, now_ms: u64) -> Option<EntryView> {
        let now_ms = self.clock_ms.max(now_ms);
        self.entries.get(key).filter(|e| !e.is_expired_at(now_ms)).map(|e| EntryView {
            value: e.value.clone(),
            version: e.version,
            expires_at_ms: e.expires_at_ms,
        })
    }

    /// The log clock: the largest `now_ms` applied so far.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Stored entries, including expired ones not yet purged.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries live at `now_ms` (or at the log clock, whichever is later): what a read at that
    /// time could find. Counts the expired-but-unpurged entries through the expiry index, so it
    /// costs O(expired), not O(entries).
    pub fn live_len(&self, now_ms: u64) -> usize {
        let now_ms = self.clock_ms.max(now_ms);
        let expired = match now_ms.checked_add(1) {
            Some(after) => self.expiry.range(..(after, Key::from(""))).count(),
            None => self.expiry.len(),
        };
        self.entries.len() - expired
    }

    /// Live entries at `now_ms` that have an expiry (the `expires=` of Redis's keyspace info).
    pub fn live_with_expiry(&self, now_ms: u64) -> usize {
        let now_ms = self.clock_ms.max(now_ms);
        match now_ms.checked_add(1) {
            Some(after) => self.expiry.range((after, Key::from(""))..).count(),
            None => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes charged for the stored entries (key + value + [`ENTRY_OVERHEAD_BYTES`] each).
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Entries this cache evicted or purged as expired since it was created or restored (not
    /// replicated state: see [`Removals`]).
    pub fn removals(&self) -> Removals {
        self.removals
    }

    /// Adds the removal counts of the cache this one replaces (a snapshot installed over it), so
    /// a process's counts never go back. Changes nothing replicated.
    pub fn continue_counting_from(&mut self, before: Removals) {
        self.removals.evicted += before.evicted;
        self.removals.expired += before.expired;
    }

    /// Index of the last command applied; 0 before any.
    pub fn last_applied_index(&self) -> LogIndex {
        self.last_applied
    }

    /// A copy of the whole replicated state.
    pub fn snapshot(&self) -> CacheSnapshot {
        CacheSnapshot {
            last_applied: self.last_applied,
            clock_ms: self.clock_ms,
            limits: self.limits,
            next_recency: self.next_recency,
            entries: self
                .lru
                .values()
                .map(|key| {
                    let e = &self.entries[key];
                    SnapshotEntry {
                        key: key.to_string(),
                        value: e.value.clone(),
                        version: e.version,
                        expires_at_ms: e.expires_at_ms,
                        recency: e.recency,
                    }
                })
                .collect(),
            sessions: self.sessions.clone(),
        }
    }

    /// Rebuilds the cache a snapshot was taken of.
    ///
    /// # Panics
    ///
    /// If the snapshot is inconsistent (duplicate keys or recency numbers, or a recency number
    /// not below `next_recency`). A corrupt snapshot is a local fault; carrying on would let this
    /// replica diverge.
    pub fn restore(snapshot: CacheSnapshot) -> Cache {
        let mut cache = Cache {
            limits: snapshot.limits,
            clock_ms: snapshot.clock_ms,
            last_applied: snapshot.last_applied,
            next_recency: snapshot.next_recency,
            sessions: snapshot.sessions,
            ..Cache::default()
        };
        for e in snapshot.entries {
            let key: Key = Arc::from(e.key.as_str());
            assert!(
                e.recency < cache.next_recency,
                "corrupt cache snapshot: recency {} of key {:?} not below {}",
                e.recency,
                e.key,
                cache.next_recency
            );
            assert!(
                cache.lru.insert(e.recency, key.clone()).is_none(),
                "corrupt cache snapshot: recency {} used twice",
                e.recency
            );
            if let Some(t) = e.expires_at_ms {
                cache.expiry.insert((t, key.clone()));
            }
            cache.used_bytes += entry_cost(&e.key, &e.value);
            let entry =
                Entry { value: e.value, version: e.version, expires_at_ms: e.expires_at_ms, recency: e.recency };
            assert!(
                cache.entries.insert(key.clone(), entry).is_none(),
                "corrupt cache snapshot: key {key:?} appears twice"
            );
        }
        cache
    }

    /// A hash of the whole replicated state, for comparing replicas and checking that restore +
    /// replay reproduces the original.
    ///
    /// Uses [`DefaultHasher::new`], whose keys are fixed, so the value is deterministic across
    /// processes of one build; the algorithm may change between Rust releases, so do not persist
    /// it or compare it across builds.
    pub fn state_hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.last_applied.hash(&mut h);
        self.clock_ms.hash(&mut h);
        self.limits.max_entries.hash(&mut h);
        self.limits.max_bytes.hash(&mut h);
        self.next_recency.hash(&mut h);
        // Entries in key order; their recency numbers are the LRU order.
        self.entries.len().hash(&mut h);
        for (key, e) in &self.entries {
            key.hash(&mut h);
            e.value[..].hash(&mut h);
            e.version.hash(&mut h);
            e.expires_at_ms.hash(&mut h);
            e.recency.hash(&mut h);
        }
        self.sessions.hash_into(&mut h);
        h.finish()
    }

    /// A deterministic, human-readable rendering of the whole state, entries least recently
    /// used first. Expired entries not yet purged are marked `(expired)`. Values over 32 bytes are
    /// abbreviated to their first 16 bytes and length; [`Cache::state_hash`] covers them whole.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "clock_ms={} last_applied={} next_recency={}",
            self.clock_ms, self.last_applied, self.next_recency
        );
        let _ = writeln!(
            out,
            "limits max_entries={} max_bytes={} used entries={} bytes={}",
            self.limits.max_entries,
            self.limits.max_bytes,
            self.entries.len(),
            self.used_bytes
        );
        let _ = writeln!(out, "entries (least recently used first):");
        for key in self.lru.values() {
            let e = &self.entries[key];
            let _ = write!(
                out,
                "  {key} = {} version={} expires_at={}",
                describe_value(&e.value),
                e.version,
                describe_expiry(e.expires_at_ms)
            );
            if e.is_expired_at(self.clock_ms) {
                out.push_str(" (expired)");
            }
            out.push('\n');
        }
        let _ = writeln!(out, "sessions:");
        self.sessions.dump_into(&mut out);
        out
    }

    /// Live entries (by log time), least recently used first: (key, value, version, expiry).
    #[cfg(test)]
    pub(crate) fn live_entries_lru(&self) -> Vec<(String, Bytes, u64, Option<u64>)> {
        self.lru
            .values()
            .filter_map(|key| {
                let e = self.live(key)?;
                Some((key.to_string(), e.value.clone(), e.version, e.expires_at_ms))
            })
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Checks the derived indexes against the entries.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        assert_eq!(self.entries.len(), self.lru.len());
        let mut bytes = 0;
        let mut with_expiry = 0;
        for (key, e) in &self.entries {
            bytes += entry_cost(key, &e.value);
            assert_eq!(self.lru.get(&e.recency), Some(key));
            assert!(e.recency < self.next_recency);
            if let Some(t) = e.expires_at_ms {
                with_expiry += 1;
                assert!(self.expiry.contains(&(t, key.clone())));
            }
        }
        assert_eq!(self.expiry.len(), with_expiry);
        assert_eq!(self.used_bytes, bytes);
        assert!(self.fits(0, 0), "over limits: {}", self.dump());
    }
}

/// A value as a byte-string literal, abbreviated past 32 bytes.
pub(crate) fn describe_value(value: &[u8]) -> String {
    const SHOWN: usize = 16;
    if value.len() <= 2 * SHOWN {
        format!("{:?}", Bytes::copy_from_slice(value))
    } else {
        format!("{:?}... ({} bytes)", Bytes::copy_from_slice(&value[..SHOWN]), value.len())
    }
}

fn applied() -> Response {
    Response { applied: true, ..Response::default() }
}
