//! Read-index batching on the leader: read-index requests that arrive together share one quorum
//! round instead of paying a heartbeat round each.
//!
//! openraft's `get_read_log_id` sends a heartbeat to every voter per call. Here one task starts
//! the rounds: it takes every request queued so far, starts one round for them all, and repeats.
//! A round only answers requests that arrived before it began, because only those are covered by
//! the leadership the round confirms (openraft takes the read index when the round starts).
//! A few rounds may be in flight at once, so a read never waits for an unrelated round to finish
//! (one round trip, not two, over a WAN); when all slots are busy, requests queue and share the
//! next round, which is what makes reads scale with load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::{Error, Result};
use crate::types::Raft;

/// Most quorum rounds in flight at once.
const MAX_ROUNDS_IN_FLIGHT: usize = 4;

/// Longest one quorum round may take before its requests are answered `NoQuorum`.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of one quorum round, as handed to every request it answered: the read index it
/// confirmed (0 before anything was committed).
type RoundResult = std::result::Result<u64, RoundError>;

/// What a round can fail with, cloneable so every waiter gets its own copy.
#[derive(Clone, Debug)]
enum RoundError {
    NotLeader(Option<(u64, String)>),
    NoQuorum(String),
    Fatal(String),
}

impl From<RoundError> for Error {
    fn from(e: RoundError) -> Error {
        match e {
            RoundError::NotLeader(leader) => Error::NotLeader { leader },
            RoundError::NoQuorum(why) => Error::Unavailable(format!("no quorum: {why}")),
            RoundError::Fatal(why) => Error::Fatal(why),
        }
    }
}

/// Queue of read-index requests served by one batching task.
#[derive(Clone)]
pub struct ReadIndexBatcher {
    requests: mpsc::UnboundedSender<oneshot::Sender<RoundResult>>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    rounds: AtomicU64,
}

impl ReadIndexBatcher {
    /// Starts the batching task for `raft` (on the current Tokio runtime). The task ends when
    /// every handle is dropped.
    pub fn start(raft: Raft, self_id: u64) -> ReadIndexBatcher {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        tokio::spawn(run_rounds(raft, self_id, rx, counters.clone()));
        ReadIndexBatcher { requests: tx, counters }
    }

    /// (requests answered, quorum rounds run) so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.counters.requests.load(Ordering::Relaxed), self.counters.rounds.load(Ordering::Relaxed))
    }

    /// Joins the next quorum round that starts after this call and returns its read index.
    pub async fn read_index(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).map_err(|_| Error::Fatal("read-index batcher stopped".into()))?;
        let result = rx.await.map_err(|_| Error::Fatal("read-index batcher stopped".into()))?;
        Ok(result?)
    }
}

async fn run_rounds(
    raft: Raft,
    self_id: u64,
    mut requests: mpsc::UnboundedReceiver<oneshot::Sender<RoundResult>>,
    counters: Arc<Counters>,
) {
    let rounds_in_flight = Arc::new(Semaphore::new(MAX_ROUNDS_IN_FLIGHT));
    while let Some(first) = requests.recv().await {
        // While every round slot is busy, requests pile up here and share the next round.
        let Ok(slot) = rounds_in_flight.clone().acquire_owned().await else { return };
        let mut waiters = vec![first];
        while let Ok(more) = requests.try_recv() {
            waiters.push(more);
        }
        counters.rounds.fetch_add(1, Ordering::Relaxed);
        counters.requests.fetch_add(waiters.len() as u64, Ordering::Relaxed);
        let raft = raft.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let result = one_round(&raft, self_id).await;
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        });
    }
}

/// One quorum round: openraft takes the read index when it starts the round, then confirms its
/// leadership with a heartbeat to every voter.
async fn one_round(raft: &Raft, self_id: u64) -> RoundResult {
    use openraft::error::{LinearizableReadError, RaftError};
    // A round normally ends within a heartbeat timeout; the cap only keeps a wedged round from
    // holding its slot forever.
    let round = raft.get_read_log_id(openraft::ReadPolicy::ReadIndex);
    let Ok(round) = tokio::time::timeout(ROUND_TIMEOUT, round).await else {
        return Err(RoundError::NoQuorum("quorum round timed out".into()));
    };
    match round {
        Ok((read_log_id, _applied)) => Ok(read_log_id.index()),
        Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
            Err(RoundError::NotLeader(f.leader_id.zip(f.leader_node.map(|n| n.addr)).filter(|(id, _)| *id != self_id)))
        }
        Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => Err(RoundError::NoQuorum(e.to_string())),
        Err(RaftError::Fatal(e)) => Err(RoundError::Fatal(e.to_string())),
    }
}
