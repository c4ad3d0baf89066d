//! A node's configuration: one struct, each field with its default and unit, and `validate()`
//! that names the bad field. Flags (`cli/`) and env (`GEOCACHE_*`) fill it; the library takes it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::state_machine::Limits;
use crate::tls::TlsFiles;
use crate::types::NodeId;

/// Without `--peer-listen`, a node's peer listener is on the host of `--listen` at this many
/// ports above it (client 7001, peer 7101; `geocache dev` follows the same rule).
pub const PEER_PORT_OFFSET: u16 = 100;

/// The peer address beside client address `listen`: same host, port + [`PEER_PORT_OFFSET`]
/// (port 0 stays 0: pick any). `None` if the port would overflow.
pub fn default_peer_addr(listen: SocketAddr) -> Option<SocketAddr> {
    let port = match listen.port() {
        0 => 0,
        port => port.checked_add(PEER_PORT_OFFSET)?,
    };
    Some(SocketAddr::new(listen.ip(), port))
}

/// The peer address beside an advertised client address `host:port` (a name or an IP):
/// the same host, port + [`PEER_PORT_OFFSET`]. `None` if it has no numeric port or it would
/// overflow.
pub fn default_peer_advertise(advertise: &str) -> Option<String> {
    let (host, port) = advertise.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    Some(format!("{host}:{}", port.checked_add(PEER_PORT_OFFSET)?))
}

/// Default largest key, in bytes.
pub const DEFAULT_MAX_KEY_BYTES: usize = 4 * 1024;
/// Default largest value, in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;
/// Room in a client message for everything but its key and value (ids, options, metadata).
pub const CLIENT_MESSAGE_OVERHEAD_BYTES: usize = 64 * 1024;

/// Everything `geocache serve` needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; non-zero, unique in the cluster, fixed for the life of its data dir.
    pub id: NodeId,
    /// Region label stored in the membership (e.g. `us-east`).
    pub region: String,
    /// Address the client gRPC listener binds (the `Cache` and `Admin` services).
    pub listen: SocketAddr,
    /// Address clients dial to reach this node. Default: `listen`.
    pub advertise: String,
    /// Address the peer gRPC listener binds (`Raft`, and everything members call one another
    /// for). Default: [`default_peer_addr`] of `listen`.
    pub peer_listen: SocketAddr,
    /// Address other members dial to reach this node's peer listener; recorded in the
    /// membership. Default: `peer_listen`, or with `advertise` set, its host at
    /// `peer_listen`'s port.
    pub peer_advertise: String,
    /// Mutual TLS on the peer listener and every outbound peer channel. Default: none
    /// (plaintext, allowed only on loopback unless `insecure`).
    pub tls: Option<TlsFiles>,
    /// Allow listening on a non-loopback address without TLS. Default false.
    pub insecure: bool,
    /// Bearer tokens and their roles for the client-facing ports (`--tokens`,
    /// [`crate::auth`]). Default: none (those ports are open to anyone who reaches them).
    pub tokens: Option<PathBuf>,
    /// Directory holding the sled database (log, vote, snapshots).
    pub data_dir: PathBuf,
    /// Cache capacity proposed when this node initialises a cluster (0 = unlimited).
    pub limits: Limits,
    /// Largest accepted key in bytes. Default 4 KiB.
    pub max_key_bytes: usize,
    /// Largest accepted value in bytes. Default 4 MiB.
    pub max_value_bytes: usize,
    /// Route overrides: to reach node ID dial this address instead of its membership address
    /// (docs/ARCHITECTURE.md §5; used by the latency/fault proxy).
    pub routes: BTreeMap<NodeId, String>,
    /// Offset added to this node's wall clock, in ms (fault injection). Always 0 in the
    /// `geocache` binary: only the harness's build sets it ([`crate::faults`]).
    pub clock_offset_ms: i64,
    /// Accept fault-injection admin calls (`SetClockOffset`). Never true in the `geocache`
    /// binary: only the harness's build sets it ([`crate::faults`]).
    pub fault_injection: bool,
    /// Raft heartbeat interval. Default 150 ms.
    pub heartbeat_interval: Duration,
    /// Raft election timeout. Default 1 s. A voter that has heard from no leader for a random
    /// time between half of this and all of it runs a pre-vote, which its peers grant only once
    /// their own leader lease (all of it) has run out. Raise it when round trips between regions
    /// approach a tenth of it.
    pub election_timeout: Duration,
    /// How often the leader proposes a `Tick` to purge expired entries. Default 1 s.
    pub tick_interval: Duration,
    /// Longest a request may take inside the node before it answers `Timeout`. Default 5 s.
    pub request_timeout: Duration,
    /// Most connections open at once (clients, peers and admin together); more are closed as
    /// soon as they are accepted. Default 1024.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed (clients reconnect by
    /// themselves). Default 5 minutes.
    pub idle_timeout: Duration,
    /// Most client writes in flight at this node at once (proposed here or being forwarded);
    /// one more is refused at once as `Overloaded` (retryable; nothing applied). Default 2048.
    pub max_pending_writes: usize,
    /// Most linearizable and bounded reads in flight at this node at once (they may wait on the
    /// leader); one more is refused at once as `Overloaded`. Stale reads are not limited.
    /// Default 8192.
    pub max_pending_reads: usize,
    /// How often the replica probes the leader for a read index to keep its staleness bound
    /// fresh. Default 50 ms. A bound is at least about one probe interval plus one round trip.
    pub probe_interval: Duration,
    /// Build a snapshot after this many applied entries since the last one. Default 10 000.
    pub snapshot_every: u64,
    /// Where to serve the Redis protocol (RESP2/RESP3), if anywhere. Default: nowhere. Its
    /// connections are capped by `max_connections` and `idle_timeout` apart from the gRPC port's.
    pub resp_listen: Option<SocketAddr>,
    /// Where to serve Prometheus metrics (HTTP, `GET /metrics`), if anywhere. Default: nowhere.
    pub metrics_listen: Option<SocketAddr>,
}

impl Config {
    /// A config with defaults for everything but identity and location.
    pub fn new(id: NodeId, region: impl Into<String>, listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Config {
        Config {
            id,
            region: region.into(),
            listen,
            advertise: listen.to_string(),
            peer_listen: default_peer_addr(listen).unwrap_or(SocketAddr::new(listen.ip(), 0)),
            peer_advertise: default_peer_addr(listen).map(|a| a.to_string()).unwrap_or_default(),
            tls: None,
            insecure: false,
            tokens: None,
            data_dir: data_dir.into(),
            limits: Limits::default(),
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            routes: BTreeMap::new(),
            clock_offset_ms: 0,
            fault_injection: false,
            heartbeat_interval: Duration::from_millis(150),
            election_timeout: Duration::from_millis(1000),
            tick_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            max_pending_writes: 2048,
            max_pending_reads: 8192,
            probe_interval: Duration::from_millis(50),
            snapshot_every: 10_000,
            resp_listen: None,
            metrics_listen: None,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::InvalidArgument(format!("{field}: {why}")));
        if self.id == 0 {
            return bad("id", "must be non-zero");
        }
        if self.region.trim().is_empty() {
            return bad("region", "must not be empty");
        }
        if self.advertise.trim().is_empty() {
            return bad("advertise", "must not be empty");
        }
        if self.peer_advertise.trim().is_empty() {
            return bad("peer_advertise", "must not be empty (give --peer-listen or --peer-advertise)");
        }
        if self.peer_listen == self.listen && self.listen.port() != 0 {
            return bad("peer_listen", "must differ from --listen: peers and clients get separate listeners");
        }
        if self.peer_advertise == self.advertise && !self.advertise.ends_with(":0") {
            return bad("peer_advertise", "must differ from --advertise: peers and clients get separate listeners");
        }
        if self.tls.is_none() && !self.insecure {
            let exposed = [
                ("--listen", Some(self.listen)),
                ("--peer-listen", Some(self.peer_listen)),
                ("--resp-listen", self.resp_listen),
            ]
            .into_iter()
            .find_map(|(flag, addr)| addr.filter(|a| !a.ip().is_loopback()).map(|a| (flag, a)));
            if let Some((flag, addr)) = exposed {
                return Err(Error::InvalidArgument(format!(
                    "{flag} {addr} is not a loopback address and no TLS is configured: give --tls-cert, --tls-key and --tls-ca \
                     (see `geocache cert --help`), or --insecure to accept unauthenticated, unencrypted traffic"
                )));
            }
        }
        if self.max_key_bytes == 0 {
            return bad("max_key_bytes", "must be at least 1");
        }
        if self.max_value_bytes == 0 {
            return bad("max_value_bytes", "must be at least 1");
        }
        if self.heartbeat_interval.is_zero() || self.election_timeout <= self.heartbeat_interval * 2 {
            return bad("election_timeout", "must be more than twice the heartbeat interval");
        }
        if self.tick_interval.is_zero() {
            return bad("tick_interval", "must be positive");
        }
        if self.probe_interval.is_zero() {
            return bad("probe_interval", "must be positive");
        }
        if self.max_pending_writes == 0 || self.max_pending_reads == 0 {
            return bad("max_pending_writes/max_pending_reads", "must be at least 1");
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1");
        }
        if self.idle_timeout.is_zero() {
            return bad("idle_timeout", "must be positive");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout", "must be positive");
        }
        if self.snapshot_every == 0 {
            return bad("snapshot_every", "must be at least 1");
        }
        Ok(())
    }

    /// Checks a client's key against the limits (non-empty, at most `max_key_bytes`).
    pub fn validate_key(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidArgument("key must not be empty".into()));
        }
        let max = self.max_key_bytes;
        if key.len() > max {
            return Err(Error::InvalidArgument(format!("key is {} bytes, over the limit of {max} bytes", key.len())));
        }
        Ok(())
    }

    /// Largest client API message accepted or sent: a key and a value at their limits plus the
    /// fields around them. Anything larger is refused while it is being received, before it is
    /// buffered whole.
    pub fn max_client_message_bytes(&self) -> usize {
        self.max_value_bytes.saturating_add(self.max_key_bytes).saturating_add(CLIENT_MESSAGE_OVERHEAD_BYTES)
    }

    /// The openraft configuration derived from this one.
    pub(crate) fn raft_config(&self) -> Result<openraft::Config> {
        let cfg = openraft::Config {
            cluster_name: "geocache".to_string(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            // A follower waits a random time in [min, max) without leader contact before it
            // runs a pre-vote; max is also the leader lease (a voter refuses votes for that long
            // after hearing from its leader). Max = one election timeout, as the lease has
            // always been; min = half of it, so the first pre-vote after a leader dies comes
            // soon after the lease runs out (with min = the timeout and max twice it, failover
            // took 3-4.5 s in the harness instead of 1.5-2).
            election_timeout_min: self.election_timeout.as_millis() as u64 / 2,
            election_timeout_max: self.election_timeout.as_millis() as u64,
            // Entries can carry values up to 4 MiB: keep one AppendEntries well under the gRPC
            // message limit.
            max_payload_entries: 64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            // Raft thesis §9.6: a node that was cut off or paused asks first whether it could
            // win, so coming back never deposes a healthy leader with its inflated term.
            enable_pre_vote: Some(true),
            // A restarted leader must win a new election, never resume its old term: its
            // commit point on disk may be older than what it acknowledged (`save_committed`
            // does not flush), and a new term's read index is at least that term's first entry.
            enable_leader_restore: Some(false),
            // Keep some log behind a snapshot so a briefly lagging follower catches up from the
            // log rather than a whole snapshot.
            max_in_snapshot_log_to_keep: self.snapshot_every.min(1000),
            ..Default::default()
        };
        cfg.validate().map_err(|e| Error::InvalidArgument(format!("raft config: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(1, "us-east", "127.0.0.1:7001".parse().unwrap(), "/tmp/x")
    }

    #[test]
    fn defaults_are_valid() {
        config().validate().unwrap();
        config().raft_config().unwrap();
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut c = config();
        c.id = 0;
        assert!(c.validate().unwrap_err().to_string().contains("id"));
        let mut c = config();
        c.region = " ".into();
        assert!(c.validate().unwrap_err().to_string().contains("region"));
        let mut c = config();
        c.election_timeout = c.heartbeat_interval;
        assert!(c.validate().unwrap_err().to_string().contains("election_timeout"));
    }

    #[test]
    fn the_peer_listener_defaults_beside_the_client_listener() {
        let c = config();
        assert_eq!(c.peer_listen, "127.0.0.1:7101".parse().unwrap());
        assert_eq!(c.peer_advertise, "127.0.0.1:7101");
        assert_eq!(default_peer_addr("127.0.0.1:0".parse().unwrap()), Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(default_peer_addr("127.0.0.1:65500".parse().unwrap()), None);
        assert_eq!(default_peer_advertise("node1.example:7001").as_deref(), Some("node1.example:7101"));
        assert_eq!(default_peer_advertise("[::1]:7001").as_deref(), Some("[::1]:7101"));
        let mut c = config();
        c.peer_listen = c.listen;
        assert!(c.validate().unwrap_err().to_string().contains("peer_listen"));
    }

    #[test]
    fn a_non_loopback_address_without_tls_needs_insecure() {
        for (listen, peer) in [("0.0.0.0:7001", "127.0.0.1:7101"), ("127.0.0.1:7001", "10.0.0.1:7101")] {
            let mut c = config();
            c.listen = listen.parse().unwrap();
            c.peer_listen = peer.parse().unwrap();
            let refused = c.validate().unwrap_err().to_string();
            assert!(refused.contains("--insecure") && refused.contains("--tls-cert"), "{refused}");
            c.insecure = true;
            c.validate().unwrap();
        }
        let mut c = config();
        c.resp_listen = Some("0.0.0.0:6379".parse().unwrap());
        assert!(c.validate().unwrap_err().to_string().contains("--resp-listen"));
    }
}
