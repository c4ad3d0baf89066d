//! A user-space latency and fault proxy between nodes: distance and partitions on loopback, where
//! the kernel offers no netem or iptables (docs/ARCHITECTURE.md §5). Used by `geocache dev
//! --wan-latency` and by the Jepsen harness.
//!
//! A [`Netsim`] owns one *link* per ordered pair of nodes `(from, to)`: a TCP proxy on its own
//! loopback port that forwards every connection it accepts to `to`'s real address. Node `from`
//! is started with `--route to=<link port>` ([`Netsim::route_args`]), so every connection it
//! opens to `to` (Raft RPCs, read index, touches, forwarded writes, status fan-out; all share
//! one HTTP/2 connection per peer) crosses this link, and only inter-node traffic is affected:
//! clients dial nodes directly. A request from `from` to `to` and its reply both cross link
//! `(from, to)`; `to`'s own requests to `from` cross link `(to, from)`.
//!
//! Each link has a one-way **delay**, paid by bytes in both directions (a request and its reply
//! cost twice the delay), and a [`LinkState`]:
//! * [`LinkState::Up`]: bytes flow, each released `delay` after the proxy read it.
//! * [`LinkState::Blackhole`]: a partition. Connections are still accepted (the proxy's kernel
//!   answers the dial) but nothing moves in either direction; existing connections stall, so
//!   while it lasts the peer sees timeouts, never an error.
//! * [`LinkState::Refuse`]: a dead host. Existing connections are reset, new dials are refused
//!   (`ECONNREFUSED`: the port is held but not listening).
//!
//! When a link comes back up ([`Netsim::heal`] or [`Netsim::set_link`]), connections stalled by
//! a blackhole are **reset, not resumed**: resuming would deliver messages from before the
//! partition, possibly long after their senders gave up on them, which real TCP does not do after
//! a long outage either. Peers reconnect (tonic channels do so by themselves) and only new
//! connections carry traffic.
//!
//! Invariants:
//! * Bytes leave a connection in the order they entered it, each no earlier than the link's
//!   delay (as it was when the proxy read them) after it was read; delays are not summed over
//!   chunks, so a delay costs latency, not throughput.
//! * Nothing is forwarded, in either direction, while a link is down; a connection that saw its
//!   link go down never carries another byte.
//! * A link's proxy port is fixed for the life of the [`Netsim`], so routes handed out stay valid.
//! * Everything is loopback (127.0.0.1), and every task ends once the [`Netsim`] is shut down or
//!   dropped; links must be added from inside a Tokio runtime.
//!
//! Not simulated: bandwidth limits, jitter, packet loss, reordering, duplication or corruption
//! (TCP hides all of these from a node as delay; add jitter here if a test needs it), the delay
//! of the TCP handshake itself (a dial completes at once; the HTTP/2 handshake that follows does
//! pay the delay), different delays for the two directions of one link, and clients in remote
//! regions (clients are not proxied).

mod link;
mod matrix;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

pub use matrix::{format_delay, LatencyMatrix, MatrixError};

/// Raft timing for a cluster whose slowest node-to-node one-way delay is `max_delay`:
/// `(heartbeat, election timeout)`, for `geocache dev --wan-latency` and the fault harness alike.
/// openraft uses the heartbeat interval as the timeout of a heartbeat (and we give up at three
/// quarters of it), and heartbeats are what confirm a linearizable read's quorum round, so it
/// must exceed the round trip with room to spare:
/// heartbeat = max(150 ms, 2 x RTT), election timeout = max(1 s, 5 x heartbeat).
pub fn raft_timing(max_delay: std::time::Duration) -> (std::time::Duration, std::time::Duration) {
    use std::time::Duration;
    let round_trip = 2 * max_delay;
    let heartbeat = (2 * round_trip).max(Duration::from_millis(150));
    let election = (5 * heartbeat).max(Duration::from_secs(1));
    (heartbeat, election)
}

use crate::types::NodeId;
use link::{Control, LinkTasks};

/// Whether a link carries traffic; see the module doc for what each state does to connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// Bytes flow, after the link's delay.
    Up,
    /// Down as a partition: connections accepted and kept, nothing forwarded; stalled
    /// connections are reset when the link comes back.
    Blackhole,
    /// Down as a dead host: connections reset, new dials refused.
    Refuse,
}

/// One proxied link, as the [`Netsim`] controls it.
struct Link {
    addr: SocketAddr,
    target: SocketAddr,
    control: watch::Sender<Control>,
    connections: Arc<AtomicUsize>,
}

/// The proxy for a set of nodes: one [`LinkState`]-controlled, delayed TCP link per ordered pair.
///
/// ```no_run
/// # async fn example() -> std::io::Result<()> {
/// use std::time::Duration;
/// use geocache_node::netsim::Netsim;
///
/// let net = Netsim::new();
/// net.add_mesh(&[(1, "127.0.0.1:7001".parse().unwrap()), (2, "127.0.0.1:7002".parse().unwrap())])?;
/// net.set_delay(1, 2, Duration::from_millis(80))?;
/// let flags = net.route_args(1); // ["--route", "2=127.0.0.1:<port>"]: start node 1 with these
/// net.isolate(2); // a partition: node 2 neither reaches nor is reached
/// net.heal();
/// # let _ = flags;
/// # Ok(())
/// # }
/// ```
pub struct Netsim {
    // A std mutex: held only for map lookups and watch sends, never across an await.
    links: Mutex<BTreeMap<(NodeId, NodeId), Link>>,
    shutdown: watch::Sender<bool>,
}

impl Default for Netsim {
    fn default() -> Netsim {
        Netsim::new()
    }
}

impl Netsim {
    /// A proxy with no links yet.
    pub fn new() -> Netsim {
        Netsim { links: Mutex::default(), shutdown: watch::Sender::new(false) }
    }

    /// Adds link `(from, to)`: binds a fresh port on 127.0.0.1 and forwards every connection
    /// accepted there to `target` (node `to`'s address, which may not be listening yet: each
    /// connection dials it when accepted). The link starts up, with no delay. Returns the port
    /// `from` should dial instead of `target`.
    ///
    /// Errors: `target` is not a loopback address, the link exists already, the proxy is shut
    /// down, no Tokio runtime is running, or the bind failed.
    pub fn add_link(&self, from: NodeId, to: NodeId, target: SocketAddr) -> io::Result<SocketAddr> {
        if !target.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("netsim proxies loopback only, not {target}"),
            ));
        }
        if *self.shutdown.borrow() {
            return Err(io::Error::other("netsim is shut down"));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("netsim links must be added inside a Tokio runtime"))?;
        let mut links = self.lock();
        if links.contains_key(&(from, to)) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("netsim link {from} -> {to} exists")));
        }
        let listener = link::bind_listener(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = listener.local_addr()?;
        let (control, control_rx) = watch::channel(Control::new());
        let connections = Arc::new(AtomicUsize::new(0));
        let tasks = LinkTasks {
            name: format!("{from}->{to}"),
            addr,
            target,
            control: control_rx,
            shutdown: self.shutdown.subscribe(),
            connections: connections.clone(),
        };
        runtime.spawn(link::accept_loop(tasks, listener));
        links.insert((from, to), Link { addr, target, control, connections });
        Ok(addr)
    }

    /// Adds a link for every ordered pair of distinct `nodes` (`(id, address)`).
    pub fn add_mesh(&self, nodes: &[(NodeId, SocketAddr)]) -> io::Result<()> {
        for &(from, _) in nodes {
            for &(to, target) in nodes {
                if from != to {
                    self.add_link(from, to, target)?;
                }
            }
        }
        Ok(())
    }

    /// Sets the one-way delay of link `(from, to)`. Bytes the proxy reads from now on pay it;
    /// bytes already read keep the delay they were read under.
    pub fn set_delay(&self, from: NodeId, to: NodeId, delay: Duration) -> io::Result<()> {
        self.with_link(from, to, |link| {
            link.control.send_if_modified(|c| std::mem::replace(&mut c.delay, delay) != delay);
        })
    }

    /// Sets every link's delay from the regions of its two ends (`regions[id]`); a node with no
    /// region gets 0.
    pub fn apply_latency(&self, matrix: &LatencyMatrix, regions: &BTreeMap<NodeId, String>) {
        for ((from, to), link) in self.lock().iter() {
            let delay = match (regions.get(from), regions.get(to)) {
                (Some(a), Some(b)) => matrix.delay(a, b),
                _ => Duration::ZERO,
            };
            link.control.send_if_modified(|c| std::mem::replace(&mut c.delay, delay) != delay);
        }
    }

    /// Sets the state of link `(from, to)` (only that direction; see [`Netsim::isolate`] and
    /// [`Netsim::partition`] for both). Setting the state it already has changes nothing.
    pub fn set_link(&self, from: NodeId, to: NodeId, state: LinkState) -> io::Result<()> {
        self.with_link(from, to, |link| {
            link.control.send_if_modified(|c| c.set_state(state));
        })
    }

    /// Cuts `node` off: every link from or to it is blackholed.
    pub fn isolate(&self, node: NodeId) {
        self.isolate_with(node, LinkState::Blackhole);
    }

    /// Like [`Netsim::isolate`], with the links set to `state`.
    pub fn isolate_with(&self, node: NodeId, state: LinkState) {
        for ((from, to), link) in self.lock().iter() {
            if *from == node || *to == node {
                link.control.send_if_modified(|c| c.set_state(state));
            }
        }
    }

    /// Splits the nodes into `groups`: links inside a group are up, links between groups are
    /// blackholed. A node in no group is a group of its own. Replaces any earlier partition.
    pub fn partition(&self, groups: &[Vec<NodeId>]) {
        self.partition_with(groups, LinkState::Blackhole);
    }

    /// Like [`Netsim::partition`], with the links between groups set to `down`.
    pub fn partition_with(&self, groups: &[Vec<NodeId>], down: LinkState) {
        let group_of = |node: &NodeId| groups.iter().position(|g| g.contains(node));
        for ((from, to), link) in self.lock().iter() {
            let together = matches!((group_of(from), group_of(to)), (Some(a), Some(b)) if a == b);
            let state = if together { LinkState::Up } else { down };
            link.control.send_if_modified(|c| c.set_state(state));
        }
    }

    /// Brings every link up (delays are kept). Connections stalled by a blackhole are reset, not
    /// resumed; see the module doc.
    pub fn heal(&self) {
        for link in self.lock().values() {
            link.control.send_if_modified(|c| c.set_state(LinkState::Up));
        }
    }

    /// What node `from` must dial to reach each node it has a link to: `(to, proxy address)`,
    /// ordered by `to`.
    pub fn routes_for(&self, from: NodeId) -> Vec<(NodeId, SocketAddr)> {
        self.lock().iter().filter(|((f, _), _)| *f == from).map(|((_, to), link)| (*to, link.addr)).collect()
    }

    /// [`Netsim::routes_for`] as `geocache serve` flags: `--route TO=ADDR` for each link.
    pub fn route_args(&self, from: NodeId) -> Vec<String> {
        self.routes_for(from)
            .into_iter()
            .flat_map(|(to, addr)| ["--route".to_string(), format!("{to}={addr}")])
            .collect()
    }

    /// Every link, as `(from, to)`, in order.
    pub fn links(&self) -> Vec<(NodeId, NodeId)> {
        self.lock().keys().copied().collect()
    }

    /// The proxy address of link `(from, to)`.
    pub fn link_addr(&self, from: NodeId, to: NodeId) -> Option<SocketAddr> {
        self.lock().get(&(from, to)).map(|l| l.addr)
    }

    /// Where link `(from, to)` forwards to.
    pub fn link_target(&self, from: NodeId, to: NodeId) -> Option<SocketAddr> {
        self.lock().get(&(from, to)).map(|l| l.target)
    }

    /// The current delay of link `(from, to)`.
    pub fn delay(&self, from: NodeId, to: NodeId) -> Option<Duration> {
        self.lock().get(&(from, to)).map(|l| l.control.borrow().delay)
    }

    /// The current state of link `(from, to)`.
    pub fn link_state(&self, from: NodeId, to: NodeId) -> Option<LinkState> {
        self.lock().get(&(from, to)).map(|l| l.control.borrow().state)
    }

    /// How many connections link `(from, to)` holds open right now (stalled ones included).
    pub fn connections(&self, from: NodeId, to: NodeId) -> usize {
        self.lock().get(&(from, to)).map_or(0, |l| l.connections.load(Ordering::SeqCst))
    }

    /// Stops every link: listeners close and every proxied connection is reset. The tasks end
    /// on their own shortly after; dropping the [`Netsim`] does the same.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(NodeId, NodeId), Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_link(&self, from: NodeId, to: NodeId, f: impl FnOnce(&Link)) -> io::Result<()> {
        let links = self.lock();
        let link = links
            .get(&(from, to))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no netsim link {from} -> {to}")))?;
        f(link);
        Ok(())
    }
}

impl Drop for Netsim {
    fn drop(&mut self) {
        self.shutdown();
    }
}
