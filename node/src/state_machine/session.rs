//! Exactly-once client sessions (Raft thesis section 6.3).
//!
//! A client tags each write with a [`WriteId`]. The first time a `(client_id, seq)` is applied its
//! response is stored; a retry of the same write (the client never learned the outcome, say because
//! the leader crashed after committing it) is answered with the stored response instead of being
//! applied again. The client reports `acked_below`, the writes whose answers it has seen, so their
//! responses can be dropped; a retry of a dropped one gets [`Rejection::SessionExpired`], never a
//! second application.
//!
//! Sessions are part of the replicated state: every replica must answer a retry the same way, so
//! they live in snapshots and are expired by log time ([`SESSION_IDLE_MS`]), not wall time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::command::{Rejection, Response, WriteId};

/// A client session with no write for longer than this (in log time) is dropped on the next
/// [`Op::Tick`](super::Op::Tick). Far longer than any client retry loop, so a live client never
/// loses its session; a client that comes back later starts a fresh one.
pub const SESSION_IDLE_MS: u64 = 60 * 60 * 1000;

/// Most stored responses kept per client. A client that never advances `acked_below` would
/// otherwise grow its session without bound; past the cap the lowest sequence numbers are dropped
/// and treated as acknowledged.
pub const MAX_RESPONSES_PER_CLIENT: usize = 4096;

/// What to do with a tagged write.
pub(crate) enum Admission {
    /// New write: apply it, then [`Sessions::record`] the response.
    Apply,
    /// Duplicate or expired retry: answer this and apply nothing.
    Answer(Response),
}

/// All client sessions, by client id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Sessions {
    clients: BTreeMap<u64, Session>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
struct Session {
    /// Log time of this client's latest write (applied or answered from the table).
    last_active_ms: u64,
    /// Every `seq` below this is acknowledged or dropped; its response is gone.
    acked_below: u64,
    /// Responses of applied writes with `seq >= acked_below`.
    responses: BTreeMap<u64, Response>,
}

impl Sessions {
    /// Decides whether the write `w`, arriving at log time `now_ms`, is new. Records the activity
    /// either way, so a client busy retrying is not garbage-collected.
    pub(crate) fn admit(&mut self, w: WriteId, now_ms: u64) -> Admission {
        let session = self.clients.entry(w.client_id).or_default();
        session.last_active_ms = now_ms;
        if let Some(response) = session.responses.get(&w.seq) {
            return Admission::Answer(response.clone());
        }
        if w.seq < session.acked_below {
            // It may or may not have been applied; we no longer know, so we refuse rather than
            // risk applying it twice.
            return Admission::Answer(Response { rejected: Some(Rejection::SessionExpired), ..Response::default() });
        }
        Admission::Apply
    }

    /// Stores the response of the newly applied write `w` and forgets what the client acknowledged.
    pub(crate) fn record(&mut self, w: WriteId, response: &Response) {
        let session = self.clients.entry(w.client_id).or_default();
        session.responses.insert(w.seq, response.clone());
        session.acked_below = session.acked_below.max(w.acked_below);
        session.responses = session.responses.split_off(&session.acked_below);
        while session.responses.len() > MAX_RESPONSES_PER_CLIENT {
            if let Some((seq, _)) = session.responses.pop_first() {
                // Raise the watermark too: a retry of the dropped write must be refused, not
                // applied a second time.
                session.acked_below = session.acked_below.max(seq + 1);
            }
        }
    }

    /// Drops sessions idle for more than [`SESSION_IDLE_MS`] at log time `now_ms`.
    pub(crate) fn expire_idle(&mut self, now_ms: u64) {
        self.clients.retain(|_, s| now_ms.saturating_sub(s.last_active_ms) <= SESSION_IDLE_MS);
    }

    pub(crate) fn hash_into<H: Hasher>(&self, h: &mut H) {
        self.clients.len().hash(h);
        for (client_id, s) in &self.clients {
            client_id.hash(h);
            s.last_active_ms.hash(h);
            s.acked_below.hash(h);
            s.responses.len().hash(h);
            for (seq, r) in &s.responses {
                seq.hash(h);
                hash_response(r, h);
            }
        }
    }

    pub(crate) fn dump_into(&self, out: &mut String) {
        for (client_id, s) in &self.clients {
            let _ =
                writeln!(out, "  client {client_id} last_active_ms={} acked_below={}", s.last_active_ms, s.acked_below);
            for (seq, r) in &s.responses {
                let _ = writeln!(out, "    seq {seq}: {}", describe_response(r));
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn client_count(&self) -> usize {
        self.clients.len()
    }

    #[cfg(test)]
    pub(crate) fn stored_seqs(&self, client_id: u64) -> Vec<u64> {
        self.clients.get(&client_id).map(|s| s.responses.keys().copied().collect()).unwrap_or_default()
    }
}

// `Response` and `Rejection` do not derive `Hash` (they belong to the shared vocabulary), so the
// fields are fed in by hand; the match keeps this in step if a variant is added.
fn hash_response<H: Hasher>(r: &Response, h: &mut H) {
    r.applied.hash(h);
    r.existed.hash(h);
    r.previous_version.hash(h);
    r.version.hash(h);
    r.expires_at_ms.hash(h);
    match &r.rejected {
        None => 0u8.hash(h),
        Some(Rejection::TooLarge { entry_bytes, max_bytes }) => {
            1u8.hash(h);
            entry_bytes.hash(h);
            max_bytes.hash(h);
        }
        Some(Rejection::SessionExpired) => 2u8.hash(h),
    }
}

/// One-line rendering of a response, shared by [`super::Cache::dump`] and the golden scripts.
pub(crate) fn describe_response(r: &Response) -> String {
    let mut s = format!(
        "applied={} existed={} prev={} version={} expires_at={}",
        r.applied,
        r.existed,
        r.previous_version,
        r.version,
        describe_expiry(r.expires_at_ms)
    );
    if let Some(rejection) = &r.rejected {
        let _ = write!(s, " rejected={rejection:?}");
    }
    s
}

pub(crate) fn describe_expiry(expires_at_ms: Option<u64>) -> String {
    match expires_at_ms {
        Some(t) => t.to_string(),
        None => "none".to_string(),
    }
}
