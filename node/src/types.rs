//! The Raft type configuration shared by every layer: node ids, the per-node metadata stored in the
//! membership (client address, peer address, region), and the openraft type aliases the rest of
//! the crate names.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::state_machine::{Command, Response};
use crate::store::StateMachineStore;

/// A node's id in the cluster; chosen by the operator, never 0.
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
pub use crate::state_machine::LogIndex;

/// What the membership records about a node: where to reach it and which region it serves.
///
/// Two addresses, because a node serves two listeners (docs/ARCHITECTURE.md §1): clients learn
/// `addr` (through `Admin.Status` and leader hints) and never see `peer_addr`; every
/// member-to-member call (Raft, forwarded writes and admin calls, read-index rounds, status
/// fan-out) dials `peer_addr`, or a route override of it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    /// Client gRPC address (`host:port`): the `Cache` and `Admin` services.
    pub addr: String,
    /// Region label, e.g. `us-east`.
    pub region: String,
    /// Peer gRPC address (`host:port`): what other members dial (`--peer-listen`).
    pub peer_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} (peer {})", self.addr, self.region, self.peer_addr)
    }
}

openraft::declare_raft_types!(
    /// geocache's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
);

use openraft::alias;

/// A snapshot's bytes: the whole encoded cache (see `store`), sent in one message.
pub type SnapshotData = Vec<u8>;
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;
pub type LogId = alias::LogIdOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type LeaderId = alias::LeaderIdOf<TypeConfig>;
pub type CommittedLeaderId = alias::CommittedLeaderIdOf<TypeConfig>;
pub type Entry = alias::EntryOf<TypeConfig>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, NodeInfo>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
