//! Unit tests: one behaviour per test, driven through the public API.

use bytes::Bytes;

use super::*;

/// A cache plus the next log index to apply at; checks the internal indexes after every apply.
struct Machine {
    cache: Cache,
    next_index: LogIndex,
}

impl Machine {
    fn new() -> Self {
        Machine { cache: Cache::new(), next_index: 1 }
    }

    fn with_limits(max_entries: u64, max_bytes: u64) -> Self {
        let mut m = Machine::new();
        m.configure(0, max_entries, max_bytes);
        m
    }

    fn apply(&mut self, cmd: Command) -> Response {
        let index = self.next_index;
        self.next_index += 1;
        let response = self.cache.apply(index, &cmd);
        self.cache.check_invariants();
        response
    }

    fn run(&mut self, now_ms: u64, op: Op) -> Response {
        self.apply(Command { now_ms, write_id: None, op })
    }

    fn run_as(&mut self, now_ms: u64, write_id: WriteId, op: Op) -> Response {
        self.apply(Command { now_ms, write_id: Some(write_id), op })
    }

    fn set(&mut self, now_ms: u64, key: &str, value: &str, expires_at_ms: Option<u64>) -> Response {
        self.run(now_ms, set_op(key, value, expires_at_ms, Condition::Always))
    }

    fn set_if(&mut self, now_ms: u64, key: &str, value: &str, condition: Condition) -> Response {
        self.run(now_ms, set_op(key, value, None, condition))
    }

    fn touch(&mut self, now_ms: u64, keys: &[&str]) -> Response {
        self.run(now_ms, Op::Touch { keys: keys.iter().map(|k| k.to_string()).collect() })
    }

    fn configure(&mut self, now_ms: u64, max_entries: u64, max_bytes: u64) -> Response {
        self.run(now_ms, Op::Configure { max_entries: Some(max_entries), max_bytes: Some(max_bytes) })
    }

    fn value(&self, key: &str) -> Option<String> {
        self.cache.get(key, 0).map(|e| String::from_utf8(e.value.to_vec()).unwrap())
    }

    /// Live keys, least recently used first.
    fn lru(&self) -> Vec<String> {
        self.cache.live_entries_lru().into_iter().map(|(k, ..)| k).collect()
    }
}

fn set_op(key: &str, value: &str, expires_at_ms: Option<u64>, condition: Condition) -> Op {
    Op::Set { key: key.to_string(), value: Bytes::copy_from_slice(value.as_bytes()), expires_at_ms, condition }
}

fn wid(client_id: u64, seq: u64, acked_below: u64) -> WriteId {
    WriteId { client_id, seq, acked_below }
}

/// Bytes charged for a key/value pair.
fn cost(key: &str, value: &str) -> u64 {
    (key.len() + value.len()) as u64 + ENTRY_OVERHEAD_BYTES
}

fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

#[test]
fn new_cache_is_empty_and_unlimited() {
    let c = Cache::new();
    assert!(c.is_empty());
    assert_eq!(c.len(), 0);
    assert_eq!(c.used_bytes(), 0);
    assert_eq!(c.limits(), Limits { max_entries: 0, max_bytes: 0 });
    assert_eq!(c.clock_ms(), 0);
    assert_eq!(c.last_applied_index(), 0);
    assert_eq!(c.state_hash(), Cache::default().state_hash());
}

#[test]
fn set_returns_log_index_as_version() {
    let mut m = Machine::new();
    m.next_index = 7;
    let r = m.set(1000, "a", "1", Some(5000));
    assert_eq!(
        r,
        Response {
            applied: true,
            existed: false,
            previous_version: 0,
            version: 7,
            expires_at_ms: Some(5000),
            rejected: None
        }
    );
    // Gaps in the log (membership entries) are fine; versions follow the index.
    m.next_index = 12;
    let r = m.set(1000, "a", "2", None);
    assert_eq!((r.existed, r.previous_version, r.version, r.expires_at_ms), (true, 7, 12, None));
    assert_eq!(m.cache.last_applied_index(), 12);
    let e = m.cache.get("a", 0).unwrap();
    assert_eq!((e.value, e.version, e.expires_at_ms), (Bytes::from("2"), 12, None));
}

#[test]
fn ttl_boundary_is_exclusive() {
    let mut m = Machine::new();
    m.set(1000, "a", "1", Some(1500));
    m.run(1499, Op::Tick);
    assert_eq!(m.value("a").as_deref(), Some("1"), "one ms before expiry: visible");
    // A reader whose local clock is ahead hides it already, without changing the state.
    assert!(m.cache.get("a", 1500).is_none());
    assert!(m.cache.get("a", 1499).is_some());
    assert_eq!(m.cache.len(), 1);

    // Log time reaching expires_at_ms makes it gone for writes too, even before a purge.
    m.run(1500, Op::Touch { keys: vec![] });
    assert!(m.cache.get("a", 0).is_none());
    assert_eq!(m.cache.len(), 1, "expired but not yet purged");
    let r = m.set_if(1500, "a", "2", Condition::IfAbsent);
    assert!(r.applied);
    assert!(!r.existed);
    assert_eq!(r.previous_version, 0);
}

#[test]
fn clock_never_goes_backwards() {
    let mut m = Machine::new();
    m.set(1000, "a", "1", Some(1100));
    m.run(1200, Op::Tick);
    assert_eq!(m.cache.clock_ms(), 1200);
    // A proposer whose clock lags does not rewind log time, so `a` stays expired.
    let r = m.set_if(500, "a", "x", Condition::IfPresent);
    assert!(!r.applied);
    assert_eq!(m.cache.clock_ms(), 1200);
    assert!(m.cache.get("a", 500).is_none());
}

#[test]
fn set_with_expiry_in_the_past_deletes() {
    let mut m = Machine::new();
    m.set(1000, "a", "1", None);
    let r = m.set(1000, "a", "2", Some(1000));
    assert_eq!((r.applied, r.existed, r.previous_version, r.version), (true, true, 1, 0));
    assert_eq!(r.expires_at_ms, None);
    assert!(m.cache.is_empty());
}

#[test]
fn capacity_exactly_full_fits() {
    let mut m = Machine::with_limits(3, 3 * cost("a", "1"));
    for k in ["a", "b", "c"] {
        assert!(m.set(0, k, "1", None).applied);
    }
    assert_eq!(m.cache.len(), 3);
    assert_eq!(m.cache.used_bytes(), 3 * cost("a", "1"));
    assert_eq!(m.lru(), strings(&["a", "b", "c"]));
}

#[test]
fn one_entry_over_evicts_lru() {
    let mut m = Machine::with_limits(3, 0);
    for k in ["a", "b", "c", "d"] {
        m.set(0, k, "1", None);
    }
    assert_eq!(m.lru(), strings(&["b", "c", "d"]));
}

#[test]
fn one_byte_over_evicts_lru() {
    let mut m = Machine::with_limits(0, 3 * cost("a", "1"));
    for k in ["a", "b", "c"] {
        m.set(0, k, "1", None);
    }
    m.set(0, "d", "12", None); // one byte more than the one-byte values
    assert_eq!(m.lru(), strings(&["c", "d"]), "a alone frees too little; b goes too");
    assert_eq!(m.cache.used_bytes(), cost("c", "1") + cost("d", "12"));

    let mut m = Machine::with_limits(0, 3 * cost("a", "1") + 1);
    for k in ["a", "b", "c"] {
        m.set(0, k, "1", None);
    }
    m.set(0, "d", "12", None);
    assert_eq!(m.lru(), strings(&["b", "c", "d"]), "a alone frees enough");
}

#[test]
fn touch_changes_eviction_order() {
    let mut m = Machine::with_limits(3, 0);
    for k in ["a", "b", "c"] {
        m.set(0, k, "1", None);
    }
    let r = m.touch(0, &["b", "missing", "a"]);
    assert_eq!(r, Response { applied: true, ..Response::default() });
    assert_eq!(m.lru(), strings(&["c", "b", "a"]));
    m.set(0, "d", "1", None);
    assert_eq!(m.lru(), strings(&["b", "a", "d"]));
}

#[test]
fn touch_ignores_expired_keys() {
    let mut m = Machine::new();
    m.set(0, "a", "1", Some(100));
    m.set(0, "b", "1", None);
    let before = m.cache.snapshot().entries_for_test();
    m.touch(100, &["a"]);
    assert_eq!(m.cache.snapshot().entries_for_test(), before, "the dead entry did not move");
}

#[test]
fn get_never_changes_lru_order() {
    let mut m = Machine::with_limits(2, 0);
    m.set(0, "a", "1", None);
    m.set(0, "b", "1", None);
    let before = m.cache.state_hash();
    for _ in 0..3 {
        assert!(m.cache.get("a", 0).is_some());
    }
    assert_eq!(m.cache.state_hash(), before);
    m.set(0, "c", "1", None);
    assert_eq!(m.lru(), strings(&["b", "c"]), "a was read, not touched, so it is evicted");
}

#[test]
fn expired_entries_are_evicted_before_lru() {
    let mut m = Machine::with_limits(3, 0);
    m.set(0, "a", "1", None);
    m.set(0, "b", "1", Some(50));
    m.set(0, "c", "1", None);
    m.run(60, Op::Tick); // purges b
    m.set(60, "b", "1", Some(100));
    m.touch(60, &["a"]); // order: c b a; b is not LRU
    let r = m.set(100, "d", "1", None);
    assert!(r.applied);
    assert_eq!(m.lru(), strings(&["c", "a", "d"]), "expired b goes, LRU c stays");
    assert_eq!(m.cache.len(), 3);
}

#[test]
fn too_large_value_is_rejected_and_old_value_kept() {
    let max = cost("k", "0123456789");
    let mut m = Machine::with_limits(0, max);
    let r = m.set(0, "k", "0123456789", None);
    assert!(r.applied, "exactly max_bytes fits");
    let hash = m.cache.state_hash();
    let r = m.set(0, "k", "0123456789X", None);
    assert_eq!(
        r,
        Response {
            applied: false,
            existed: true,
            previous_version: 2,
            version: 2,
            expires_at_ms: None,
            rejected: Some(Rejection::TooLarge { entry_bytes: max + 1, max_bytes: max }),
        }
    );
    assert_eq!(m.value("k").as_deref(), Some("0123456789"));
    assert_ne!(m.cache.state_hash(), hash, "only last_applied moved");
    assert_eq!(m.cache.live_entries_lru()[0].2, 2);
}

#[test]
fn too_large_is_checked_before_the_condition() {
    let mut m = Machine::with_limits(0, cost("k", ""));
    let r = m.set_if(0, "k", "x", Condition::IfPresent);
    assert!(matches!(r.rejected, Some(Rejection::TooLarge { .. })));
}

#[test]
fn overwrite_frees_old_size_first() {
    let mut m = Machine::with_limits(0, cost("a", "1") + cost("b", "1234"));
    m.set(0, "a", "1", None);
    m.set(0, "b", "1234", None);
    // Shrinking then growing b back to its old size needs no eviction.
    m.set(0, "b", "1", None);
    assert_eq!(m.cache.used_bytes(), 2 * cost("a", "1"));
    m.set(0, "b", "1234", None);
    assert_eq!(m.lru(), strings(&["a", "b"]));
    // Growing b past the limit evicts a, never b itself.
    m.set(0, "b", "12345", None);
    assert_eq!(m.lru(), strings(&["b"]));
    assert_eq!(m.cache.used_bytes(), cost("b", "12345"));
    // Overwriting with max_entries full needs no eviction either.
    let mut m = Machine::with_limits(2, 0);
    m.set(0, "a", "1", None);
    m.set(0, "b", "1", None);
    m.set(0, "a", "2", None);
    assert_eq!(m.lru(), strings(&["b", "a"]));
}

#[test]
fn condition_if_absent() {
    let mut m = Machine::new();
    let r = m.set_if(0, "a", "1", Condition::IfAbsent);
    assert!(r.applied && !r.existed);
    let r = m.set_if(0, "a", "2", Condition::IfAbsent);
    assert_eq!((r.applied, r.existed, r.previous_version, r.version), (false, true, 1, 1));
    assert_eq!(m.value("a").as_deref(), Some("1"));
}

#[test]
fn condition_if_present() {
    let mut m = Machine::new();
    let r = m.set_if(0, "a", "1", Condition::IfPresent);
    assert_eq!(r, Response::default());
    assert!(m.cache.is_empty());
    m.set(0, "a", "1", None);
    let r = m.set_if(0, "a", "2", Condition::IfPresent);
    assert_eq!((r.applied, r.existed, r.previous_version, r.version), (true, true, 2, 3));
    assert_eq!(m.value("a").as_deref(), Some("2"));
}

#[test]
fn condition_if_version() {
    let mut m = Machine::new();
    assert!(!m.set_if(0, "a", "1", Condition::IfVersion(0)).applied, "absent never matches");
    m.set(0, "a", "1", None); // version 2
    let r = m.set_if(0, "a", "x", Condition::IfVersion(1));
    assert_eq!((r.applied, r.existed, r.version), (false, true, 2));
    let r = m.set_if(0, "a", "2", Condition::IfVersion(2));
    assert_eq!((r.applied, r.previous_version, r.version), (true, 2, 4));
}

#[test]
fn failed_condition_changes_nothing_not_even_lru() {
    let mut m = Machine::with_limits(2, 0);
    m.set(0, "a", "1", None);
    m.set(0, "b", "1", None);
    let before = m.cache.snapshot().entries_for_test();
    assert!(!m.set_if(0, "a", "2", Condition::IfAbsent).applied);
    assert!(!m.set_if(0, "a", "2", Condition::IfVersion(99)).applied);
    assert_eq!(m.cache.snapshot().entries_for_test(), before);
    m.set(0, "c", "1", None);
    assert_eq!(m.lru(), strings(&["b", "c"]));
}

#[test]
fn delete_existing_and_missing() {
    let mut m = Machine::new();
    m.set(0, "a", "1", Some(100));
    let r = m.run(0, Op::Delete { key: "a".into() });
    assert_eq!(r, Response { applied: true, existed: true, previous_version: 1, ..Response::default() });
    assert!(m.cache.is_empty());
    assert_eq!(m.cache.used_bytes(), 0);
    let r = m.run(0, Op::Delete { key: "a".into() });
    assert_eq!(r, Response::default());
}

#[test]
fn delete_of_expired_key_reports_absent() {
    let mut m = Machine::new();
    m.set(0, "a", "1", Some(100));
    let r = m.run(100, Op::Delete { key: "a".into() });
    assert_eq!(r, Response::default());
}

#[test]
fn expire_sets_and_persists() {
    let mut m = Machine::new();
    m.set(0, "a", "1", None);
    m.set(0, "b", "1", None);
    let r = m.run(10, Op::Expire { key: "a".into(), expires_at_ms: Some(500) });
    assert_eq!(
        r,
        Response {
            applied: true,
            existed: true,
            previous_version: 1,
            version: 3,
            expires_at_ms: Some(500),
            rejected: None
        }
    );
    assert_eq!(m.lru(), strings(&["b", "a"]), "expire touches like a write");
    let r = m.run(20, Op::Expire { key: "a".into(), expires_at_ms: None });
    assert_eq!((r.previous_version, r.version, r.expires_at_ms), (3, 4, None));
    m.run(600, Op::Tick);
    assert_eq!(m.value("a").as_deref(), Some("1"), "persisted");
}

#[test]
fn expire_missing_key_is_not_applied() {
    let mut m = Machine::new();
    let r = m.run(0, Op::Expire { key: "a".into(), expires_at_ms: Some(10) });
    assert_eq!(r, Response::default());
    m.set(0, "a", "1", Some(5));
    let r = m.run(5, Op::Expire { key: "a".into(), expires_at_ms: None });
    assert_eq!(r, Response::default(), "expired counts as missing");
}

#[test]
fn expire_in_the_past_deletes() {
    let mut m = Machine::new();
    m.set(100, "a", "1", None);
    let r = m.run(100, Op::Expire { key: "a".into(), expires_at_ms: Some(100) });
    assert_eq!((r.applied, r.existed, r.previous_version, r.version), (true, true, 1, 0));
    assert!(m.cache.is_empty());
}

#[test]
fn tick_purges_expired_entries() {
    let mut m = Machine::new();
    m.set(0, "a", "1", Some(100));
    m.set(0, "b", "1", Some(200));
    m.set(0, "c", "1", None);
    assert_eq!(m.run(150, Op::Tick), Response { applied: true, ..Response::default() });
    assert_eq!(m.cache.len(), 2);
    assert_eq!(m.cache.used_bytes(), 2 * cost("a", "1"));
    m.run(200, Op::Tick);
    assert_eq!(m.lru(), strings(&["c"]));
    assert_eq!(m.cache.len(), 1);
}

#[test]
fn configure_shrinking_evicts() {
    let mut m = Machine::new();
    for k in ["a", "b", "c", "d"] {
        m.set(0, k, "1", None);
    }
    m.touch(0, &["a"]);
    let r = m.configure(0, 2, 0);
    assert!(r.applied);
    assert_eq!(m.cache.limits(), Limits { max_entries: 2, max_bytes: 0 });
    assert_eq!(m.lru(), strings(&["d", "a"]));
    m.configure(0, 0, cost("a", "1"));
    assert_eq!(m.lru(), strings(&["a"]));
    // Going back to unlimited keeps what is left.
    m.configure(0, 0, 0);
    assert_eq!(m.lru(), strings(&["a"]));
}

#[test]
fn configure_purges_expired_before_evicting() {
    let mut m = Machine::new();
    m.set(0, "a", "1", None);
    m.set(0, "b", "1", Some(10));
    m.configure(10, 1, 0);
    assert_eq!(m.lru(), strings(&["a"]));
}

#[test]
fn duplicate_write_returns_first_response() {
    let mut m = Machine::new();
    let first = m.run_as(100, wid(7, 1, 1), set_op("a", "1", None, Condition::Always));
    assert_eq!(first.version, 1);
    m.set(100, "a", "other", None);
    let again = m.run_as(900, wid(7, 1, 1), set_op("a", "1", None, Condition::Always));
    assert_eq!(again, first);
    assert_eq!(m.value("a").as_deref(), Some("other"), "the retry was not applied");
    assert_eq!(m.cache.clock_ms(), 900, "the clock still advances");
    assert_eq!(m.cache.last_applied_index(), 3);
}

#[test]
fn retried_compare_and_set_applies_once() {
    let mut m = Machine::new();
    m.set(0, "counter", "0", None); // version 1
    let cas = set_op("counter", "1", None, Condition::IfVersion(1));
    let first = m.run_as(0, wid(3, 1, 1), cas.clone());
    assert!(first.applied);
    // Without the session the retry would fail its condition and tell the client it lost.
    let retry = m.run_as(0, wid(3, 1, 1), cas.clone());
    assert_eq!(retry, first);
    assert_eq!(m.cache.get("counter", 0).unwrap().version, 2);
    // The same command from another client is a different write.
    let other = m.run_as(0, wid(4, 1, 1), cas);
    assert!(!other.applied);
}

#[test]
fn rejected_writes_are_remembered_too() {
    let mut m = Machine::with_limits(0, cost("a", "1"));
    let w = wid(1, 1, 1);
    let first = m.run_as(0, w, set_op("a", "12", None, Condition::Always));
    assert!(first.rejected.is_some());
    m.configure(0, 0, 0);
    assert_eq!(m.run_as(0, w, set_op("a", "12", None, Condition::Always)), first);
    assert!(m.cache.is_empty());
}

#[test]
fn acked_writes_are_forgotten_and_retries_refused() {
    let mut m = Machine::new();
    m.run_as(0, wid(5, 1, 1), set_op("a", "1", None, Condition::Always));
    m.run_as(0, wid(5, 2, 1), set_op("a", "2", None, Condition::Always));
    assert_eq!(m.cache.sessions().stored_seqs(5), vec![1, 2]);
    m.run_as(0, wid(5, 3, 3), set_op("a", "3", None, Condition::Always));
    assert_eq!(m.cache.sessions().stored_seqs(5), vec![3]);
    let r = m.run_as(0, wid(5, 2, 1), set_op("a", "2", None, Condition::Always));
    assert_eq!(r, Response { rejected: Some(Rejection::SessionExpired), ..Response::default() });
    assert_eq!(m.value("a").as_deref(), Some("3"));
    // The next new write is applied normally.
    assert!(m.run_as(0, wid(5, 4, 3), set_op("a", "4", None, Condition::Always)).applied);
}

#[test]
fn stored_responses_are_capped_per_client() {
    let mut m = Machine::new();
    let n = MAX_RESPONSES_PER_CLIENT as u64 + 3;
    for seq in 1..=n {
        m.run_as(0, wid(9, seq, 0), Op::Delete { key: "k".into() });
    }
    let seqs = m.cache.sessions().stored_seqs(9);
    assert_eq!(seqs.len(), MAX_RESPONSES_PER_CLIENT);
    assert_eq!(seqs[0], 4);
    let r = m.run_as(0, wid(9, 3, 0), set_op("k", "1", None, Condition::Always));
    assert_eq!(r.rejected, Some(Rejection::SessionExpired), "dropped, so refused");
    assert!(m.cache.is_empty());
}

#[test]
fn idle_sessions_are_collected_on_tick() {
    let mut m = Machine::new();
    m.run_as(1_000, wid(1, 1, 1), set_op("a", "1", None, Condition::Always));
    m.run_as(2_000, wid(2, 1, 1), set_op("b", "1", None, Condition::Always));
    // Writes alone never collect.
    m.set(1_000 + SESSION_IDLE_MS + 1, "c", "1", None);
    assert_eq!(m.cache.sessions().client_count(), 2);
    m.run(1_000 + SESSION_IDLE_MS + 1, Op::Tick);
    assert_eq!(m.cache.sessions().client_count(), 1, "client 1 idle just over the limit");
    m.run(2_000 + SESSION_IDLE_MS, Op::Tick);
    assert_eq!(m.cache.sessions().client_count(), 1, "client 2 idle exactly the limit");
    m.run(2_000 + SESSION_IDLE_MS + 1, Op::Tick);
    assert_eq!(m.cache.sessions().client_count(), 0);
}

#[test]
fn retries_keep_a_session_alive() {
    let mut m = Machine::new();
    let w = wid(1, 1, 1);
    let first = m.run_as(0, w, set_op("a", "1", None, Condition::Always));
    let again = m.run_as(SESSION_IDLE_MS, w, set_op("a", "1", None, Condition::Always));
    assert_eq!(again, first);
    m.run(SESSION_IDLE_MS + 10, Op::Tick);
    assert_eq!(m.cache.sessions().client_count(), 1);
}

#[test]
fn snapshot_restore_round_trips_through_bincode() {
    let mut m = Machine::with_limits(3, 1000);
    m.set(10, "a", "1", Some(500));
    m.set(20, "b", "22", None);
    m.run_as(30, wid(1, 1, 1), set_op("c", "333", None, Condition::IfAbsent));
    m.touch(40, &["a"]);
    let bytes = bincode::serialize(&m.cache.snapshot()).unwrap();
    let snap: CacheSnapshot = bincode::deserialize(&bytes).unwrap();
    assert_eq!(snap, m.cache.snapshot());
    let mut restored = Machine { cache: Cache::restore(snap), next_index: m.next_index };
    restored.cache.check_invariants();
    assert_eq!(restored.cache.dump(), m.cache.dump());
    assert_eq!(restored.cache.state_hash(), m.cache.state_hash());
    assert_eq!(restored.cache.used_bytes(), m.cache.used_bytes());
    for machine in [&mut m, &mut restored] {
        machine.set(600, "d", "4", None);
        machine.run_as(600, wid(1, 1, 1), set_op("c", "333", None, Condition::IfAbsent));
    }
    assert_eq!(restored.cache.dump(), m.cache.dump());
    assert_eq!(restored.cache.state_hash(), m.cache.state_hash());
}

#[test]
fn state_hash_sees_lru_order() {
    let mut x = Machine::new();
    let mut y = Machine::new();
    for m in [&mut x, &mut y] {
        m.set(0, "a", "1", None);
        m.set(0, "b", "1", None);
    }
    x.touch(0, &["a", "b"]);
    y.touch(0, &["b", "a"]);
    assert_ne!(x.cache.state_hash(), y.cache.state_hash());
    assert_ne!(x.cache.dump(), y.cache.dump());
}

#[test]
#[should_panic(expected = "corrupt cache snapshot")]
fn restore_refuses_duplicate_keys() {
    let mut m = Machine::new();
    m.set(0, "a", "1", None);
    let mut snap = m.cache.snapshot();
    let mut dup = snap.entries_for_test()[0].clone();
    dup.recency = 5;
    snap.push_entry_for_test(dup, 6);
    Cache::restore(snap);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "applied after")]
fn indexes_must_increase() {
    let mut c = Cache::new();
    c.apply(2, &Command { now_ms: 0, write_id: None, op: Op::Tick });
    c.apply(2, &Command { now_ms: 0, write_id: None, op: Op::Tick });
}

#[test]
fn clear_removes_every_entry_and_keeps_clock_limits_and_sessions() {
    let mut m = Machine::with_limits(10, 0);
    m.run_as(10, wid(7, 1, 0), set_op("a", "1", None, Condition::Always));
    m.set(20, "b", "2", Some(30));
    m.set(25, "c", "3", None);
    // b is expired in log time after this, but still stored until purged.
    let cleared = m.run(40, Op::Clear);
    assert!(cleared.applied);
    assert!(cleared.existed, "live entries were there");
    assert_eq!(m.cache.len(), 0);
    assert_eq!(m.cache.used_bytes(), 0);
    assert_eq!(m.value("a"), None);
    assert_eq!(m.cache.clock_ms(), 40);
    assert_eq!(m.cache.limits().max_entries, 10);
    // The session remembers the first answer: a resend applies nothing.
    let resent = m.run_as(50, wid(7, 1, 0), set_op("a", "1", None, Condition::Always));
    assert_eq!(resent.version, 2, "the first answer: a was stored at index 2");
    assert_eq!(m.value("a"), None);
    // Clearing an empty cache applies and says nothing existed.
    let again = m.run(50, Op::Clear);
    assert!(again.applied && !again.existed);
}

#[test]
fn clear_is_deterministic_through_a_snapshot() {
    let mut m = Machine::new();
    m.set(1, "a", "1", None);
    m.set(2, "b", "2", Some(5));
    m.run(3, Op::Clear);
    m.set(4, "c", "3", None);
    let restored = Cache::restore(m.cache.snapshot());
    assert_eq!(restored.state_hash(), m.cache.state_hash());
    assert_eq!(restored.dump(), m.cache.dump());
}

#[test]
fn live_len_hides_entries_expired_by_either_clock() {
    let mut m = Machine::new();
    m.set(10, "a", "1", None);
    m.set(10, "b", "2", Some(100));
    m.set(10, "c", "3", Some(200));
    assert_eq!(m.cache.live_len(0), 3);
    assert_eq!(m.cache.live_with_expiry(0), 2);
    assert_eq!(m.cache.live_len(100), 2, "expiry is exclusive: b is gone at 100");
    assert_eq!(m.cache.live_with_expiry(100), 1);
    assert_eq!(m.cache.live_len(u64::MAX), 1);
    assert_eq!(m.cache.live_with_expiry(u64::MAX), 0);
}

#[test]
fn removals_count_evictions_and_expirations_but_not_client_deletes() {
    let mut m = Machine::with_limits(2, 0);
    m.set(0, "a", "1", None);
    m.set(0, "b", "1", Some(50));
    m.set(0, "c", "1", None); // evicts a (least recently used)
    assert_eq!(m.cache.removals(), Removals { evicted: 1, expired: 0 });
    m.run(60, Op::Tick); // purges b
    assert_eq!(m.cache.removals(), Removals { evicted: 1, expired: 1 });
    m.set(60, "d", "1", Some(70));
    m.set(80, "d", "2", None); // overwrites an expired d
    assert_eq!(m.cache.removals(), Removals { evicted: 1, expired: 2 });
    // What a client asks to remove is not counted.
    m.run(80, Op::Delete { key: "c".into() });
    m.run(80, Op::Expire { key: "d".into(), expires_at_ms: Some(1) });
    m.run(80, Op::Clear);
    assert_eq!(m.cache.removals(), Removals { evicted: 1, expired: 2 });
}

#[test]
fn removals_are_not_replicated_state() {
    let mut m = Machine::with_limits(1, 0);
    m.set(0, "a", "1", None);
    m.set(0, "b", "1", None);
    assert_eq!(m.cache.removals().evicted, 1);
    let mut restored = Cache::restore(m.cache.snapshot());
    assert_eq!(restored.removals(), Removals::default(), "a restored cache counts from zero");
    assert_eq!(restored.state_hash(), m.cache.state_hash(), "the counts are not in the hash");
    assert_eq!(restored.dump(), m.cache.dump(), "nor in the dump");
    restored.continue_counting_from(m.cache.removals());
    assert_eq!(restored.removals().evicted, 1);
}
