//! Write identities for exactly-once application (docs/ARCHITECTURE.md §4.2).
//!
//! A client picks a random nonzero `client_id` once and numbers its writes `seq = 1, 2, 3, ...`.
//! Every attempt of one write carries the same [`WriteId`], so when an attempt's outcome is
//! unknown (leader crashed, deadline hit) the retry is answered with the first result instead of
//! being applied twice: a retried compare-and-set cannot apply twice.
//!
//! `acked_below` tells the server which answers it may forget: every write of this client with a
//! lower seq has been answered (or abandoned, so it will never be retried).
//!
//! Invariants: seqs are handed out strictly increasing and never reused; `acked_below` never
//! exceeds the seq of a write still in flight; a write leaves the in-flight set when its
//! [`InFlight`] guard drops, whether the call finished, failed or was cancelled.

use std::collections::BTreeSet;
use std::sync::Mutex;

use geocache_proto as pb;

/// Identifies one logical write of one client, across all of its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriteId {
    /// Random, nonzero, fixed for the lifetime of a [`Client`](crate::Client) and its clones.
    pub client_id: u64,
    /// Position of the write among this client's writes, starting at 1.
    pub seq: u64,
    /// Every write of this client with a lower seq has been answered; the server may forget them.
    pub acked_below: u64,
}

impl From<WriteId> for pb::WriteId {
    fn from(id: WriteId) -> Self {
        pb::WriteId { client_id: id.client_id, seq: id.seq, acked_below: id.acked_below }
    }
}

/// Hands out [`WriteId`]s and tracks which writes are still in flight.
#[derive(Debug)]
pub(crate) struct WriteIds {
    client_id: u64,
    // A std mutex: held for a few instructions, never across an await (mini-redis `db.rs`).
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    in_flight: BTreeSet<u64>,
}

impl WriteIds {
    /// A fresh identity with a random nonzero client id.
    pub(crate) fn random() -> Self {
        // 0 means "no deduplication" on the wire, so draw again in the 2^-64 case.
        let client_id = loop {
            let id = rand::random::<u64>();
            if id != 0 {
                break id;
            }
        };
        Self::new(client_id)
    }

    pub(crate) fn new(client_id: u64) -> Self {
        assert_ne!(client_id, 0, "client id 0 disables deduplication");
        WriteIds { client_id, state: Mutex::new(State { next_seq: 1, in_flight: BTreeSet::new() }) }
    }

    pub(crate) fn client_id(&self) -> u64 {
        self.client_id
    }

    /// Starts a write: takes the next seq and marks it in flight until the guard drops.
    pub(crate) fn begin(&self) -> InFlight<'_> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let seq = state.next_seq;
        state.next_seq += 1;
        state.in_flight.insert(seq);
        let acked_below = state.acked_below();
        InFlight { ids: self, id: WriteId { client_id: self.client_id, seq, acked_below } }
    }

    /// The lowest seq still in flight, or the next seq if none is.
    #[cfg(test)]
    pub(crate) fn acked_below(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).acked_below()
    }

    fn finish(&self, seq: u64) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).in_flight.remove(&seq);
    }
}

impl State {
    fn acked_below(&self) -> u64 {
        self.in_flight.first().copied().unwrap_or(self.next_seq)
    }
}

/// A write in flight. Dropping it (the call returned or its future was dropped) tells later
/// writes' `acked_below` that this seq will not be retried again.
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    ids: &'a WriteIds,
    id: WriteId,
}

impl InFlight<'_> {
    /// The identity every attempt of this write carries.
    pub(crate) fn id(&self) -> WriteId {
        self.id
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.ids.finish(self.id.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_client_ids_are_nonzero_and_differ() {
        let a = WriteIds::random();
        let b = WriteIds::random();
        assert_ne!(a.client_id(), 0);
        assert_ne!(a.client_id(), b.client_id());
    }

    #[test]
    fn seqs_count_from_one() {
        let ids = WriteIds::new(7);
        assert_eq!(ids.acked_below(), 1);
        for want in 1..=3 {
            let w = ids.begin();
            assert_eq!(w.id(), WriteId { client_id: 7, seq: want, acked_below: want });
        }
        assert_eq!(ids.acked_below(), 4);
    }

    #[test]
    fn acked_below_is_the_lowest_write_in_flight() {
        let ids = WriteIds::new(7);
        let w1 = ids.begin();
        let w2 = ids.begin();
        let w3 = ids.begin();
        assert_eq!(w3.id().acked_below, 1);

        // Finishing a later write does not move the bound past an earlier one still in flight.
        drop(w2);
        assert_eq!(ids.acked_below(), 1);
        let w4 = ids.begin();
        assert_eq!((w4.id().seq, w4.id().acked_below), (4, 1));

        drop(w1);
        assert_eq!(ids.acked_below(), 3);
        drop(w3);
        assert_eq!(ids.acked_below(), 4);
        drop(w4);
        assert_eq!(ids.acked_below(), 5);

        let w5 = ids.begin();
        assert_eq!((w5.id().seq, w5.id().acked_below), (5, 5));
    }

    #[test]
    fn converts_to_wire() {
        let id = WriteId { client_id: 9, seq: 4, acked_below: 2 };
        assert_eq!(pb::WriteId::from(id), pb::WriteId { client_id: 9, seq: 4, acked_below: 2 });
    }
}
