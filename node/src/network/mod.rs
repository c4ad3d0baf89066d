//! Raft traffic between nodes over gRPC: outbound ([`RaftNetworkFactory`] / [`RaftNetwork`]) and
//! inbound (the `Raft` gRPC service in [`inbound`]).
//!
//! Owns the long-lived connections to peers ([`PeerChannels`]): one lazily connected tonic channel
//! per peer address, which reconnects by itself after a failure, shared by Raft RPCs, read-index
//! requests and forwarded client requests.
//!
//! Invariants: an openraft message crosses the wire as bincode inside an opaque `RaftPayload`, so
//! only this module knows the encoding; a peer's address comes from the route overrides first
//! (docs/ARCHITECTURE.md §5, used by the fault proxy) and from the membership otherwise.

pub mod inbound;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geocache_proto::raft_client::RaftClient;
use geocache_proto::RaftPayload;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::store::ClusterIdentity;
use crate::types::{NodeId, NodeInfo, TypeConfig};

/// Largest gRPC message a node sends or accepts (an AppendEntries batch of big values, a
/// snapshot chunk).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// One long-lived channel per peer address, plus the route overrides.
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    routes: Arc<BTreeMap<NodeId, String>>,
}

impl PeerChannels {
    /// Channels that dial `routes[id]` instead of a node's membership address when present.
    pub fn new(routes: BTreeMap<NodeId, String>) -> PeerChannels {
        PeerChannels { channels: Arc::default(), routes: Arc::new(routes) }
    }

    /// The address to dial to reach node `id` whose membership address is `addr`.
    pub fn route(&self, id: NodeId, addr: &str) -> String {
        self.routes.get(&id).cloned().unwrap_or_else(|| addr.to_string())
    }

    /// The shared channel to `addr`, created (lazily connecting) on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        // A std mutex is fine: it guards a map lookup and is never held across an await.
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let uri = if addr.starts_with("http://") { addr.to_string() } else { format!("http://{addr}") };
        let channel = Endpoint::from_shared(uri)
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// The channel to node `id` (membership address `addr`), honouring route overrides.
    pub fn channel_to(&self, id: NodeId, addr: &str) -> Result<Channel, String> {
        self.channel(&self.route(id, addr))
    }
}

/// Creates a [`PeerClient`] per replication target; openraft calls it once per peer stream.
#[derive(Clone)]
pub struct GrpcNetworkFactory {
    peers: PeerChannels,
    identity: ClusterIdentity,
}

impl GrpcNetworkFactory {
    pub fn new(peers: PeerChannels, identity: ClusterIdentity) -> GrpcNetworkFactory {
        GrpcNetworkFactory { peers, identity }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        let channel = self.peers.channel_to(target, &node.addr);
        PeerClient { target, channel, identity: self.identity.clone() }
    }
}

/// Sends openraft's RPCs to one peer.
pub struct PeerClient {
    target: NodeId,
    /// `Err` when the peer's address could not even be parsed; every RPC then reports it.
    channel: Result<Channel, String>,
    /// Stamped on every message so the receiver can refuse another cluster's traffic.
    identity: ClusterIdentity,
}

/// Encodes an openraft message for the wire.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(value)
}

/// Decodes an openraft message from the wire. The same encoding as `bincode::deserialize`, but
/// never allocating more than the message's own size, whatever lengths a malformed one claims.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn call<Req, Resp, E>(&mut self, method: RaftMethod, req: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = self.channel.clone().map_err(|e| RPCError::Unreachable(Unreachable::new(&StringError(e))))?;
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(RaftPayload { data: data.into(), cluster_id: self.identity.get() });
        request.set_timeout(option.hard_ttl());
        let reply = match method {
            RaftMethod::AppendEntries => client.append_entries(request).await,
            RaftMethod::Vote => client.vote(request).await,
            RaftMethod::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            // The peer is down or refusing: openraft should back off before retrying.
            tonic::Code::Unavailable | tonic::Code::Unknown => RPCError::Unreachable(Unreachable::new(&status)),
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply.into_inner().data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum RaftMethod {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

#[derive(Debug)]
struct StringError(String);

impl std::fmt::Display for StringError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StringError {}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(RaftMethod::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(RaftMethod::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(RaftMethod::Vote, &rpc, &option).await
    }
}
