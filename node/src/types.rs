//! The Raft type configuration shared by every layer: node ids, the per-node metadata stored in the
//! membership (address + region), and the openraft type aliases the rest of the crate names.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state_machine::{Command, Response};

/// A node's id in the cluster; chosen by the operator, never 0.
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
pub use crate::state_machine::LogIndex;

/// What the membership records about a node: where to reach it and which region it serves.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    /// gRPC address (`host:port`) other nodes and clients dial.
    pub addr: String,
    /// Region label, e.g. `us-east`.
    pub region: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.addr, self.region)
    }
}

openraft::declare_raft_types!(
    /// geocache's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type Membership = openraft::Membership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeInfo>;
