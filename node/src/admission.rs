//! Admission: how much client work a node takes on at once. Past that, a request is refused at
//! once with [`Error::Overloaded`] (retryable, nothing applied) instead of joining a queue it
//! would leave only by timing out.
//!
//! Why refuse early: a saturated node that queues without bound answers every request late,
//! clients time out and retry, and the retries are more load on the same queue; work done for a
//! request whose caller has given up is wasted. A bounded number of requests in flight keeps
//! latency near what the node can really do, and a refusal costs almost nothing and tells the
//! client (whose one retry policy backs off) to slow down.
//!
//! Invariants:
//! * Writes and reads that wait on the leader (linearizable and bounded) are counted apart, so
//!   a flood of one never starves the other. Stale reads are answered from local memory at
//!   once and are not limited here (the connection caps bound them).
//! * A permit is held for the whole request (forwarding and waiting included) and released when
//!   it is dropped, whatever the outcome, so the count cannot leak.
//! * A refusal happens before anything is proposed or forwarded: an `Overloaded` write changed
//!   nothing.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// What kind of request asks to be admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Write,
    /// A linearizable or bounded read (it may wait for a read index or for the log to catch up).
    Read,
}

/// The node's admission limits. Cheap to clone.
#[derive(Clone)]
pub struct Admission {
    writes: Arc<Semaphore>,
    reads: Arc<Semaphore>,
    limits: (usize, usize),
}

/// Holds one request's place until dropped.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    /// At most `max_writes` writes and `max_reads` waiting reads in flight at once.
    pub fn new(max_writes: usize, max_reads: usize) -> Admission {
        Admission {
            writes: Arc::new(Semaphore::new(max_writes)),
            reads: Arc::new(Semaphore::new(max_reads)),
            limits: (max_writes, max_reads),
        }
    }

    /// Admits one request of kind `work`, or refuses it with [`Error::Overloaded`] if that many
    /// are in flight already.
    pub fn admit(&self, work: Work) -> Result<Admitted> {
        let (semaphore, limit, what) = match work {
            Work::Write => (&self.writes, self.limits.0, "writes"),
            Work::Read => (&self.reads, self.limits.1, "reads waiting on the leader"),
        };
        semaphore.clone().try_acquire_owned().map(|permit| Admitted { _permit: permit }).map_err(|_| {
            Error::Overloaded(format!("this node has {limit} {what} in flight already; retry after a short backoff"))
        })
    }

    /// Requests of kind `work` in flight now.
    pub fn in_flight(&self, work: Work) -> usize {
        match work {
            Work::Write => self.limits.0 - self.writes.available_permits(),
            Work::Read => self.limits.1 - self.reads.available_permits(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_then_refuses_until_a_place_frees() {
        let admission = Admission::new(2, 1);
        let a = admission.admit(Work::Write).unwrap();
        let _b = admission.admit(Work::Write).unwrap();
        let refused = admission.admit(Work::Write).err().unwrap();
        assert!(matches!(refused, Error::Overloaded(_)), "{refused:?}");
        assert_eq!(admission.in_flight(Work::Write), 2);
        // Reads have their own limit.
        let _r = admission.admit(Work::Read).unwrap();
        assert!(admission.admit(Work::Read).is_err());
        drop(a);
        assert_eq!(admission.in_flight(Work::Write), 1);
        assert!(admission.admit(Work::Write).is_ok());
    }
}
