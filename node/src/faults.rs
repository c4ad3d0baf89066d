//! Named fault points, for the fault-injection harness only.
//!
//! The storage and read paths call [`point`] at named steps (before and after a log flush, a vote
//! save, a purge, a snapshot build or install, after apply, and where a follower takes its read
//! index). What happens there is decided by a hook that only a harness build installs, through
//! [`crate::cli::main_with_fault_injection`]; the harness's node binary (`jepsen/`) backs it with
//! the `fail` crate and its `FAILPOINTS` variable.
//!
//! Invariant: the `geocache` binary users run starts through [`crate::cli::main`], which installs
//! no hook, so every point is inert (one load of an empty cell), and nothing else in this crate
//! can install one. The node library itself does not depend on any fault-injection crate, so no
//! cargo feature unification can switch the points on in a user's build.

use std::sync::OnceLock;

/// Decides what a fault point does: it may panic (which aborts the node: fail-stop), sleep, or
/// return `true` to ask the point's caller to take its faulty branch (only
/// `read-skip-read-index` has one).
pub type PointHook = Box<dyn Fn(&'static str) -> bool + Send + Sync>;

static HOOK: OnceLock<PointHook> = OnceLock::new();

/// What a harness build may change in a node.
pub struct FaultInjection {
    /// The hook behind every named point.
    pub points: PointHook,
    /// Offset of this node's wall clock from the host's at start, in ms.
    pub clock_offset_ms: i64,
}

/// Installs the hook for this process. Only [`crate::cli::main_with_fault_injection`] calls it;
/// a second call is ignored.
pub(crate) fn install(points: PointHook) {
    let _ = HOOK.set(points);
}

/// A named fault point: `true` if the harness asked for the point's faulty branch.
pub(crate) fn point(name: &'static str) -> bool {
    HOOK.get().is_some_and(|hook| hook(name))
}
