//! Routing and retries: which node a call goes to, and what happens when it fails.
//!
//! Writes and membership changes go to the best-known leader ([`Route::Leader`]); the guess
//! starts as the first endpoint and is corrected by topology refreshes (`src/topology.rs`) and
//! by leader hints. A node that refuses with `UNAVAILABLE` and a leader hint sends the call to
//! the hinted address at once; a refusal without a hint, a connection failure or a timeout
//! moves the call to the next candidate (the leader guess, the seeds, then the other members).
//!
//! Reads at every level go to replicas ([`Route::Nearest`]) in [`read_order`]: the client's
//! region first, then by measured round trip, the leader last for bounded reads. A transport
//! error, `UNAVAILABLE` or a stale-replica refusal moves the read to the next replica. A
//! bounded read that every candidate refused as stale within one round fails at once with the
//! freshest refusal ([`Error::StaleReplica`] carrying that replica's bound): asking again will
//! not make replicas fresher within a deadline, and the caller may prefer a stale read now.
//! Stale, bounded and `min_version` reads give each attempt only a slice of what is left of the
//! deadline (half, at least 50 ms), so a lagging or hung replica is skipped, not waited out; a
//! plain linearizable read keeps the whole remainder, since its round trip to the leader is part
//! of its normal cost.
//!
//! When a round over all candidates is used up, the call backs off (20 ms doubling to 200 ms,
//! with up to 25 % jitter) and starts another round, until the call's total deadline; then it
//! returns the last error (for a read, the freshest stale-replica refusal if there was one).
//!
//! Every node also forwards writes to the leader itself, so the leader guess is an optimisation
//! (one network hop fewer), never a correctness requirement.
//!
//! Invariants:
//! * `INVALID_ARGUMENT`, `NOT_FOUND`, `FAILED_PRECONDITION`, rejections and `INTERNAL` are never
//!   retried ([`Error::is_retryable`]).
//! * A call whose attempt may have taken effect ([`Error::outcome_known`] false) is retried only
//!   when the retry is safe: writes carry the same `WriteId` on every attempt (the server
//!   answers a duplicate with the first result), membership changes are idempotent.
//!   Init is not retried then ([`Policy::ONCE`]).
//! * If any attempt of a call with effects had an unknown outcome and the call still fails, it
//!   fails with [`Error::Timeout`] (outcome unknown), whatever the last attempt said: an earlier
//!   attempt may have been applied.
//! * A read only ever goes to a replica (every member is one); reads never change state, so any
//!   failed attempt may be retried elsewhere.
//! * The whole call, retries and backoff included, finishes within the configured timeout.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::endpoint::NodeChannel;
use geocache_proto::LEADER_ADDR_HEADER;
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tracing::debug;

use crate::endpoint::{normalize, Channels};
use crate::error::{is_local_failure, Error, Result};
use crate::options::Consistency;
use crate::topology::{read_order, View};

/// First backoff after a failed round.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
/// Largest backoff between rounds.
const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// Smallest slice of the deadline a sliced read attempt gets (unless less is left).
const MIN_SLICE: Duration = Duration::from_millis(50);

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// The best-known leader, following leader hints; then the endpoints in turn.
    Leader,
    /// A read: replicas in [`read_order`] for this consistency.
    Nearest {
        /// The read's level (decides where the leader goes in the order).
        consistency: Consistency,
        /// Give each attempt only a slice of the remaining deadline (module doc).
        sliced: bool,
    },
    /// Any node that answers, the best-known leader first (status).
    AnyLeaderFirst,
    /// Exactly this (normalised) address.
    Only(String),
}

/// What retrying a call may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// The call may change state, so an attempt with an unknown outcome matters.
    effects: bool,
    /// Retrying after an unknown outcome is safe (deduplicated or idempotent).
    retry_unknown: bool,
}

impl Policy {
    /// Reads: retry anything transient.
    pub(crate) const READ: Policy = Policy { effects: false, retry_unknown: true };
    /// Writes with a `WriteId` and idempotent membership changes: retry anything transient.
    pub(crate) const WRITE: Policy = Policy { effects: true, retry_unknown: true };
    /// Calls that must not run twice (init): retry only when nothing took effect.
    pub(crate) const ONCE: Policy = Policy { effects: true, retry_unknown: false };

    fn should_retry(self, err: &Error) -> bool {
        err.is_retryable() && (!self.effects || self.retry_unknown || err.outcome_known())
    }
}

/// Least time left for another attempt once one has failed (see [`Router::call`]).
const MIN_ATTEMPT_BUDGET: Duration = Duration::from_millis(5);

/// Seeds, channels, the leader guess, the topology view, and the retry loop.
#[derive(Debug)]
pub(crate) struct Router {
    seeds: Vec<String>,
    region: Option<String>,
    channels: Channels,
    // Std mutexes: read and replaced in place, never held across an await. Never held together.
    leader: Mutex<String>,
    view: Mutex<View>,
    /// Wakes the topology refresh task (a failure or a leader change happened).
    wake: Arc<Notify>,
    timeout: Duration,
    attempt_timeout: Option<Duration>,
    /// Only the seeds are ever asked (leader hints and learned members naming other nodes are
    /// ignored); see `ClientBuilder::only_endpoints`.
    pinned: bool,
}

impl Router {
    /// `seeds` are normalised, deduplicated and non-empty.
    pub(crate) fn new(
        seeds: Vec<String>,
        region: Option<String>,
        connect_timeout: Duration,
        timeout: Duration,
        attempt_timeout: Option<Duration>,
    ) -> Self {
        assert!(!seeds.is_empty(), "a router needs at least one endpoint");
        Router {
            leader: Mutex::new(seeds[0].clone()),
            seeds,
            region,
            channels: Channels::new(connect_timeout),
            view: Mutex::new(View::default()),
            wake: Arc::new(Notify::new()),
            timeout,
            attempt_timeout,
            pinned: false,
        }
    }

    /// With `pinned`, no call ever goes to a node that is not a seed.
    pub(crate) fn pinned(mut self, pinned: bool) -> Self {
        self.pinned = pinned;
        self
    }

    /// Every channel with `security` (TLS trust, token).
    pub(crate) fn secured(mut self, security: crate::endpoint::Security) -> Self {
        self.channels = self.channels.secured(security);
        self
    }

    /// Whether a call may go to `addr` (normalised).
    fn may_ask(&self, addr: &str) -> bool {
        !self.pinned || self.seeds.iter().any(|s| s == addr)
    }

    pub(crate) fn seeds(&self) -> &[String] {
        &self.seeds
    }

    pub(crate) fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    pub(crate) fn channels(&self) -> &Channels {
        &self.channels
    }

    pub(crate) fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the refresh task waits on besides its timer.
    pub(crate) fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Asks the refresh task (if any) for an early refresh; it rate-limits itself.
    pub(crate) fn request_refresh(&self) {
        self.wake.notify_one();
    }

    /// The address leader-bound calls go to first.
    pub(crate) fn leader(&self) -> String {
        self.leader.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Remembers a (raw or normalised) leader address; ignores one that does not parse. A
    /// change asks for a topology refresh (roles and the leader moved).
    pub(crate) fn set_leader(&self, addr: &str) {
        if self.replace_leader(addr) {
            self.request_refresh();
        }
    }

    /// [`set_leader`](Self::set_leader) without asking for a refresh (the refresh's own use).
    pub(crate) fn set_leader_quietly(&self, addr: &str) {
        self.replace_leader(addr);
    }

    /// Whether the guess changed.
    fn replace_leader(&self, addr: &str) -> bool {
        match normalize(addr) {
            Ok(addr) if !self.may_ask(&addr) => {
                debug!(%addr, "ignoring a leader outside the endpoints (pinned)");
                false
            }
            Ok(addr) => {
                let mut leader = self.leader.lock().unwrap_or_else(|e| e.into_inner());
                if *leader == addr {
                    return false;
                }
                debug!(from = %leader, to = %addr, "leader guess changed");
                *leader = addr;
                true
            }
            Err(e) => {
                debug!(%addr, error = %e, "ignoring unusable leader address");
                false
            }
        }
    }

    /// Records whether a node could be reached (a call's own verdict, between probes).
    fn set_reachable(&self, addr: &str, reachable: bool) {
        let mut view = self.view();
        match view.health.get_mut(addr) {
            Some(health) => health.down = !reachable,
            None if !reachable => {
                view.health.entry(addr.to_string()).or_default().down = true;
            }
            None => {}
        }
    }

    /// The candidates of a call, in the order they are tried.
    pub(crate) fn candidates(&self, route: &Route) -> Vec<String> {
        let mut list = match route {
            Route::Leader | Route::AnyLeaderFirst => {
                let mut list = vec![self.leader()];
                list.extend(self.seeds.iter().cloned());
                list.extend(self.view().topology.nodes.iter().map(|n| n.addr.clone()));
                list
            }
            Route::Nearest { consistency, .. } => {
                let leader = self.leader();
                read_order(&self.view(), &self.seeds, self.region(), &leader, *consistency)
            }
            // Asked for by name: exactly that node.
            Route::Only(addr) => return vec![addr.clone()],
        };
        list.retain(|addr| self.may_ask(addr));
        dedup_in_order(&mut list);
        list
    }

    /// The time one attempt may take when `left` remains of the call.
    fn budget(&self, route: &Route, left: Duration) -> Duration {
        let budget = match route {
            Route::Nearest { sliced: true, .. } => (left / 2).max(MIN_SLICE).min(left),
            _ => left,
        };
        self.attempt_timeout.map_or(budget, |t| t.min(budget))
    }

    /// Runs `attempt` against nodes chosen by `route` until it succeeds, fails for good, or the
    /// client's timeout elapses (see the module doc for the rules).
    ///
    /// `attempt(channel, budget)` makes one RPC; `budget` is the time left for it, to be sent
    /// as the request's `grpc-timeout` so the node knows the deadline too.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        what: &'static str,
        route: Route,
        policy: Policy,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(NodeChannel, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut targets = Targets::new(self.candidates(&route));
        let mut backoff = Backoff::new();
        let mut uncertain = false;
        let mut last: Option<Error> = None;
        // The freshest stale-replica refusal of the call, and whether every attempt of the
        // current round was one.
        let mut freshest_stale: Option<Error> = None;
        let mut round_all_stale = true;
        let mut hops_since_sleep = 0;

        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // An attempt with less time than a round trip can only time out (nodes refuse one
            // whose deadline is gone before it starts): keep the last real answer instead.
            if left < MIN_ATTEMPT_BUDGET && (last.is_some() || left.is_zero()) {
                break;
            }
            let budget = self.budget(&route, left);
            let target = targets.current().to_string();
            let err = match self.channels.get(&target) {
                Err(e) => e,
                Ok(channel) => match tokio::time::timeout(budget, attempt(channel, budget)).await {
                    Ok(Ok(response)) => {
                        self.observe_success(&route, &target, response.metadata());
                        return Ok(response.into_inner());
                    }
                    Ok(Err(status)) => {
                        if is_local_failure(&status) {
                            self.set_reachable(&target, false);
                        }
                        Error::from(status)
                    }
                    Err(_elapsed) => Error::Timeout(format!("{what}: no answer from {target} within {budget:?}")),
                },
            };
            debug!(what, %target, error = %err, "attempt failed");
            if policy.effects && !err.outcome_known() {
                uncertain = true;
            }
            if !policy.should_retry(&err) {
                return Err(settle(what, policy, uncertain, err));
            }
            if matches!(err, Error::StaleReplica { .. }) {
                if freshest_stale.as_ref().is_none_or(|f| err.fresher_than(f)) {
                    freshest_stale = Some(err.clone());
                }
            } else {
                round_all_stale = false;
                // The node failed or refused: the topology may have changed.
                self.request_refresh();
            }

            let hint = err.leader_hint().map(normalize);
            let fresh = match (&route, hint) {
                (Route::Leader, Some(Ok(hint))) if hint != target && self.may_ask(&hint) => {
                    self.set_leader(&hint);
                    targets.jump(hint);
                    true
                }
                (_, Some(Ok(hint))) => {
                    self.set_leader(&hint);
                    targets.advance()
                }
                _ => targets.advance(),
            };
            if !fresh && matches!(route, Route::Nearest { .. }) {
                // A whole round of reads refused as stale: the replicas will not get fresher
                // within a deadline; let the caller decide (e.g. read stale) now.
                if round_all_stale {
                    if let Some(stale) = freshest_stale {
                        return Err(stale);
                    }
                }
                round_all_stale = true;
            }
            last = Some(err);
            hops_since_sleep += 1;
            // A fresh candidate is tried at once; a finished round (or hints chasing each other
            // around during an election) waits first.
            if !fresh || hops_since_sleep > targets.len() {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.next_delay().min(left)).await;
                hops_since_sleep = 0;
            }
        }

        let err = freshest_stale
            .or(last)
            .unwrap_or_else(|| Error::Timeout(format!("{what}: deadline of {:?} elapsed", self.timeout)));
        Err(settle(what, policy, uncertain, err))
    }

    fn observe_success(&self, route: &Route, target: &str, metadata: &MetadataMap) {
        self.set_reachable(target, true);
        // A node that forwarded our call to the leader may say who that is.
        if let Some(hint) =
            metadata.get(LEADER_ADDR_HEADER).and_then(|v| v.to_str().ok()).filter(|v| !v.trim().is_empty())
        {
            self.set_leader(hint);
        } else if *route == Route::Leader {
            self.set_leader(target);
        }
    }
}

/// The error a failed call returns: if an earlier attempt of a call with effects may have taken
/// effect, the outcome is unknown, whatever the last attempt said; a call with effects whose
/// outcome is unknown says so. A read's error never speaks of effects.
fn settle(what: &str, policy: Policy, uncertain: bool, err: Error) -> Error {
    if !policy.effects {
        return err;
    }
    if uncertain && err.outcome_known() {
        return Error::Timeout(format!("{what}: an earlier attempt may have taken effect; last error: {err}"));
    }
    let unknown = |message: String| format!("{message} (the {what} may or may not have taken effect)");
    match err {
        Error::Timeout(message) => Error::Timeout(unknown(message)),
        Error::Transport(message) => Error::Transport(unknown(message)),
        Error::Internal(message) => Error::Internal(unknown(message)),
        known => known,
    }
}

fn dedup_in_order(list: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|a| seen.insert(a.clone()));
}

/// The candidates of one call and where it stands among them.
#[derive(Debug)]
struct Targets {
    list: Vec<String>,
    pos: usize,
    current: String,
}

impl Targets {
    fn new(list: Vec<String>) -> Self {
        Targets { current: list[0].clone(), list, pos: 0 }
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn current(&self) -> &str {
        &self.current
    }

    /// Goes to a hinted address; a later `advance` continues the round where it was.
    fn jump(&mut self, addr: String) {
        self.current = addr;
    }

    /// Moves to the next candidate; `false` if that starts a new round.
    fn advance(&mut self) -> bool {
        self.pos = (self.pos + 1) % self.list.len();
        self.current = self.list[self.pos].clone();
        self.pos != 0
    }
}

/// Exponential backoff with a little jitter, so clients that failed together do not retry in
/// lockstep.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(BACKOFF_MAX);
        base.mul_f64(1.0 + 0.25 * rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let bases = [20, 40, 80, 160, 200, 200, 200, 200];
        for (d, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(*d >= base && *d <= base.mul_f64(1.25), "{d:?} vs {base:?}");
        }
    }

    #[test]
    fn targets_rotate_in_rounds() {
        let mut t = Targets::new(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(t.current(), "a");
        assert!(t.advance());
        assert_eq!(t.current(), "b");
        t.jump("z".into());
        assert_eq!(t.current(), "z");
        assert!(t.advance());
        assert_eq!(t.current(), "c");
        assert!(!t.advance(), "wrapping starts a new round");
        assert_eq!(t.current(), "a");
    }

    const STALE: Route = Route::Nearest { consistency: Consistency::Stale, sliced: true };
    const BOUNDED: Route =
        Route::Nearest { consistency: Consistency::Bounded(Duration::from_millis(100)), sliced: true };

    #[tokio::test]
    async fn candidates_put_the_leader_where_the_route_wants_it() {
        let seeds = vec!["http://a:1".to_string(), "http://b:2".into()];
        let r = Router::new(seeds, None, Duration::from_secs(1), Duration::from_secs(1), None);
        r.set_leader("b:2");
        assert_eq!(r.leader(), "http://b:2");
        assert_eq!(r.candidates(&Route::Leader), ["http://b:2", "http://a:1"]);
        assert_eq!(r.candidates(&STALE), ["http://a:1", "http://b:2"]);
        assert_eq!(r.candidates(&BOUNDED), ["http://a:1", "http://b:2"]);
        r.set_leader("a:1");
        assert_eq!(r.candidates(&BOUNDED), ["http://b:2", "http://a:1"], "bounded reads ask the leader last");
        r.set_leader("c:3");
        assert_eq!(r.candidates(&STALE), ["http://a:1", "http://b:2", "http://c:3"]);
        r.set_leader("not an address");
        assert_eq!(r.leader(), "http://c:3");
    }

    #[tokio::test]
    async fn a_pinned_router_never_leaves_its_seeds() {
        let seeds = vec!["http://a:1".to_string(), "http://b:2".into()];
        let r = Router::new(seeds, None, Duration::from_secs(1), Duration::from_secs(1), None).pinned(true);
        r.set_leader("c:3");
        assert_eq!(r.leader(), "http://a:1", "a hint outside the seeds is ignored");
        r.set_leader("b:2");
        assert_eq!(r.leader(), "http://b:2");
        r.view().topology.nodes.push(crate::topology::Node {
            id: 4,
            addr: "http://d:4".into(),
            region: "r".into(),
            role: crate::admin::Role::Leader,
        });
        for route in [Route::Leader, Route::AnyLeaderFirst, STALE, BOUNDED] {
            assert_eq!(r.candidates(&route).len(), 2, "{route:?}");
            assert!(r.candidates(&route).iter().all(|a| a == "http://a:1" || a == "http://b:2"), "{route:?}");
        }
    }

    #[tokio::test]
    async fn reads_get_a_slice_of_the_deadline() {
        let r = Router::new(vec!["http://a:1".into()], None, Duration::from_secs(1), Duration::from_secs(1), None);
        let ms = Duration::from_millis;
        assert_eq!(r.budget(&STALE, ms(1000)), ms(500));
        assert_eq!(r.budget(&STALE, ms(80)), ms(50));
        assert_eq!(r.budget(&STALE, ms(30)), ms(30));
        let linearizable = Route::Nearest { consistency: Consistency::Linearizable, sliced: false };
        assert_eq!(r.budget(&linearizable, ms(1000)), ms(1000));
        assert_eq!(r.budget(&Route::Leader, ms(1000)), ms(1000));
        let capped = Router::new(vec!["http://a:1".into()], None, ms(1), ms(1), Some(ms(100)));
        assert_eq!(capped.budget(&STALE, ms(1000)), ms(100));
    }

    #[tokio::test]
    async fn unreachable_nodes_are_tried_last_until_they_answer() {
        let seeds = vec!["http://a:1".to_string(), "http://b:2".into()];
        let r = Router::new(seeds, None, Duration::from_secs(1), Duration::from_secs(1), None);
        r.set_reachable("http://a:1", false);
        assert_eq!(r.candidates(&STALE), ["http://b:2", "http://a:1"]);
        r.set_reachable("http://a:1", true);
        assert_eq!(r.candidates(&STALE), ["http://a:1", "http://b:2"]);
    }

    #[test]
    fn policies() {
        let unknown = Error::Timeout("x".into());
        let known = Error::unavailable("x");
        let fatal = Error::InvalidArgument("x".into());
        assert!(Policy::READ.should_retry(&unknown));
        assert!(Policy::WRITE.should_retry(&unknown));
        assert!(!Policy::ONCE.should_retry(&unknown));
        assert!(Policy::ONCE.should_retry(&known));
        assert!(!Policy::WRITE.should_retry(&fatal));
    }

    #[test]
    fn uncertain_failures_settle_as_timeouts() {
        let last = Error::unavailable("no quorum");
        assert!(matches!(settle("set", Policy::WRITE, true, last.clone()), Error::Timeout(_)));
        assert_eq!(settle("set", Policy::WRITE, false, last.clone()), last);
        assert_eq!(settle("get", Policy::READ, true, last.clone()), last);
    }

    #[test]
    fn only_a_call_with_effects_says_its_outcome_is_unknown() {
        let late = Error::Timeout("no answer within 1s".into());
        let read = settle("get", Policy::READ, false, late.clone()).to_string();
        assert!(!read.contains("effect") && !read.contains("applied") && !read.contains("outcome"), "{read}");
        let write = settle("set", Policy::WRITE, false, late).to_string();
        assert!(write.contains("the set may or may not have taken effect"), "{write}");
        let lost = settle("del", Policy::WRITE, false, Error::Transport("reset".into())).to_string();
        assert!(lost.contains("may or may not have taken effect"), "{lost}");
    }
}
