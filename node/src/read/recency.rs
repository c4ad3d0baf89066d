//! Recency notes: which keys local reads used since the last `Touch` proposal.
//!
//! LRU order must change only through the log (docs/ARCHITECTURE.md §4.3), so a read does not reorder
//! the cache; it leaves a note here instead. The notes are coalesced per key and drained
//! periodically into one `Touch { keys }` command.
//!
//! Best effort by design: a read never waits for this lock (a contended note is dropped), the set
//! is capped, and a lost batch only makes eviction slightly less precise.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Most distinct keys remembered between two drains; later notes are dropped.
pub const MAX_NOTED_KEYS: usize = 10_000;

/// Keys read since the last drain.
#[derive(Default)]
pub struct RecencyNotes {
    keys: Mutex<BTreeSet<String>>,
}

impl RecencyNotes {
    /// Notes that `key` was read. Never blocks: skips the note if another thread holds the lock.
    pub fn note(&self, key: &str) {
        if let Ok(mut keys) = self.keys.try_lock() {
            if keys.len() < MAX_NOTED_KEYS && !keys.contains(key) {
                keys.insert(key.to_string());
            }
        }
    }

    /// Takes every noted key (in key order, so a `Touch` is deterministic given its notes).
    pub fn drain(&self) -> Vec<String> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *keys).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_coalesce_per_key_and_drain_empties() {
        let notes = RecencyNotes::default();
        notes.note("b");
        notes.note("a");
        notes.note("b");
        assert_eq!(notes.drain(), vec!["a".to_string(), "b".to_string()]);
        assert!(notes.drain().is_empty());
    }

    #[test]
    fn notes_are_capped() {
        let notes = RecencyNotes::default();
        for i in 0..MAX_NOTED_KEYS + 10 {
            notes.note(&i.to_string());
        }
        assert_eq!(notes.drain().len(), MAX_NOTED_KEYS);
    }
}
