//! Raft traffic between nodes over gRPC: outbound ([`RaftNetworkFactory`] / [`RaftNetworkV2`])
//! and inbound (the `Raft` gRPC service in [`inbound`]).
//!
//! Owns the long-lived connections to peers ([`PeerChannels`]), always to a member's *peer*
//! address (its peer listener, `--peer-listen`), never its client address: per peer address, one lazily
//! connected tonic channel for bulk traffic (the replication stream, snapshots, forwarded client
//! requests) and one for urgent traffic (heartbeats, votes, pre-votes, read-index rounds). Each
//! reconnects by itself after a failure. Two connections, because HTTP/2 multiplexes streams over
//! one TCP connection: a heartbeat queued behind megabytes of replicated values on a busy link
//! arrives late, and a follower that hears no heartbeat starts an election against a healthy
//! leader.
//!
//! Replication runs over one bidirectional gRPC stream per follower (`StreamAppend`): openraft
//! keeps several AppendEntries in flight on it and reads the answers in order, so a write that
//! arrives while an earlier batch is on the wire does not wait a round trip for it.
//!
//! Invariants: an openraft message crosses the wire as bincode inside an opaque `RaftPayload`, so
//! only this module knows the encoding; a peer's address comes from the route overrides first
//! (docs/ARCHITECTURE.md §5, used by the fault proxy) and from the membership's `peer_addr`
//! otherwise; with TLS configured every channel is mutual TLS ([`crate::tls`]); every
//! unary RPC is bounded by openraft's soft TTL, so it fails before openraft gives up on it.

pub mod inbound;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use geocache_proto::raft_client::RaftClient;
use geocache_proto::RaftPayload;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::store::ClusterIdentity;
use crate::types::{NodeId, NodeInfo, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};

/// Largest gRPC message a node sends or accepts (an AppendEntries batch of big values, a
/// snapshot).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// Which of a peer's two connections a call goes over (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Replication, snapshots, forwarded client requests.
    Bulk,
    /// Heartbeats, votes, pre-votes, read-index rounds: small, and late means an election.
    Urgent,
}

/// Two long-lived channels per peer address (one per [`Purpose`]), plus the route overrides
/// and, with TLS, what every channel presents and trusts.
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<(String, Purpose), Channel>>>,
    routes: Arc<BTreeMap<NodeId, String>>,
    /// `Some`: every channel is `https`, presents this node's certificate and accepts only a
    /// peer whose certificate the cluster CA signed for the host dialled.
    tls: Option<ClientTlsConfig>,
}

impl PeerChannels {
    /// Channels that dial `routes[id]` instead of a node's membership peer address when present,
    /// over mutual TLS when `tls` is given.
    pub fn new(routes: BTreeMap<NodeId, String>, tls: Option<ClientTlsConfig>) -> PeerChannels {
        PeerChannels { channels: Arc::default(), routes: Arc::new(routes), tls }
    }

    /// The address to dial to reach node `id` whose membership peer address is `peer_addr`.
    pub fn route(&self, id: NodeId, peer_addr: &str) -> String {
        self.routes.get(&id).cloned().unwrap_or_else(|| peer_addr.to_string())
    }

    /// The shared bulk channel to `addr`, created (lazily connecting) on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        self.channel_for(addr, Purpose::Bulk)
    }

    /// The shared channel to `addr` for `purpose`, created (lazily connecting) on first use.
    pub fn channel_for(&self, addr: &str, purpose: Purpose) -> Result<Channel, String> {
        // A std mutex is fine: it guards a map lookup and is never held across an await.
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let key = (addr.to_string(), purpose);
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let bare = addr.strip_prefix("http://").or_else(|| addr.strip_prefix("https://")).unwrap_or(addr);
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{bare}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| format!("TLS to peer {addr}: {e}"))?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE)
            .connect_lazy();
        channels.insert(key, channel.clone());
        Ok(channel)
    }

    /// The bulk channel to node `id` (membership peer address `peer_addr`), honouring route
    /// overrides.
    pub fn channel_to(&self, id: NodeId, peer_addr: &str) -> Result<Channel, String> {
        self.channel(&self.route(id, peer_addr))
    }

    /// The channel for `purpose` to node `id` (membership peer address `peer_addr`), honouring
    /// route overrides.
    pub fn channel_to_for(&self, id: NodeId, peer_addr: &str, purpose: Purpose) -> Result<Channel, String> {
        self.channel_for(&self.route(id, peer_addr), purpose)
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
        PeerClient {
            bulk: self.peers.channel_to_for(target, &node.peer_addr, Purpose::Bulk),
            urgent: self.peers.channel_to_for(target, &node.peer_addr, Purpose::Urgent),
            identity: self.identity.clone(),
        }
    }
}

/// Sends openraft's RPCs to one peer.
pub struct PeerClient {
    /// `Err` when the peer's address could not even be parsed; every RPC then reports it.
    bulk: Result<Channel, String>,
    urgent: Result<Channel, String>,
    /// Stamped on every message so the receiver can refuse another cluster's traffic.
    identity: ClusterIdentity,
}

/// A whole snapshot as one message: the leader's vote (the receiver installs it only under that
/// vote), what the snapshot covers, and its bytes.
#[derive(Serialize, Deserialize)]
pub struct SnapshotTransfer {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub data: SnapshotData,
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

/// How a failed gRPC call looks to openraft: a peer that is down or refusing is `Unreachable`
/// (openraft backs off before retrying), anything else a `Network` error (retried at once).
fn rpc_error(status: tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded => {
            RPCError::Unreachable(Unreachable::new(&status))
        }
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

fn unreachable(why: &str) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(why))
}

fn raft_client(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
}

impl PeerClient {
    fn client(&self, purpose: Purpose) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        let channel = match purpose {
            Purpose::Bulk => &self.bulk,
            Purpose::Urgent => &self.urgent,
        };
        channel.clone().map(raft_client).map_err(|e| unreachable(&e))
    }

    fn payload<Req: Serialize>(&self, req: &Req) -> Result<RaftPayload, RPCError<TypeConfig>> {
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        Ok(RaftPayload { data: data.into(), cluster_id: self.identity.get() })
    }

    /// One unary call on the urgent channel, bounded by `option`'s soft TTL.
    async fn call<Req, Resp>(
        &mut self,
        method: RaftMethod,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let mut client = self.client(Purpose::Urgent)?;
        let mut request = tonic::Request::new(self.payload(req)?);
        request.set_timeout(option.soft_ttl());
        let reply = match method {
            RaftMethod::AppendEntries => client.append_entries(request).await,
            RaftMethod::Vote => client.vote(request).await,
            RaftMethod::PreVote => client.pre_vote(request).await,
        };
        let reply = reply.map_err(rpc_error)?;
        decode(&reply.into_inner().data).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

#[derive(Clone, Copy)]
enum RaftMethod {
    AppendEntries,
    Vote,
    PreVote,
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    /// Unary AppendEntries: openraft sends heartbeats this way (replication goes through
    /// [`Self::stream_append`]), so it rides the urgent channel.
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftMethod::AppendEntries, &rpc, &option).await
    }

    /// Replication as one bidirectional gRPC stream on the bulk channel: requests go out as
    /// openraft produces them and answers come back in order (HTTP/2 keeps a stream's messages in
    /// order), so several batches are in flight at once. A dead peer ends the stream through the
    /// channel's HTTP/2 keep-alive; openraft then opens a new one.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let mut client = self.client(Purpose::Bulk)?;
            let cluster_id = self.identity.get();
            let outbound = input.filter_map(move |req| {
                // Encoding our own types does not fail; if it ever did, the request is dropped,
                // its answer never comes and openraft times the stream out and starts over.
                let encoded = encode(&req).map_err(|e| tracing::error!(error = %e, "cannot encode append-entries"));
                futures::future::ready(encoded.ok().map(|data| RaftPayload { data: data.into(), cluster_id }))
            });
            let answers = client.stream_append(tonic::Request::new(outbound)).await.map_err(rpc_error)?.into_inner();
            let answers = answers.map(|answer| {
                let payload = answer.map_err(rpc_error)?;
                decode::<StreamAppendResult<TypeConfig>>(&payload.data)
                    .map_err(|e| RPCError::Network(NetworkError::new(&e)))
            });
            Ok(Box::pin(answers) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftMethod::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftMethod::PreVote, &rpc, &option).await
    }

    /// The whole snapshot in one message on the bulk channel, given up when openraft cancels it.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let into_streaming = |e: RPCError<TypeConfig>| match e {
            RPCError::Unreachable(e) => StreamingError::Unreachable(e),
            RPCError::Timeout(e) => StreamingError::Timeout(e),
            RPCError::Network(e) => StreamingError::Network(e),
            RPCError::RemoteError(e) => StreamingError::Network(NetworkError::new(&e)),
        };
        let mut client = self.client(Purpose::Bulk).map_err(into_streaming)?;
        let transfer = SnapshotTransfer { vote, meta: snapshot.meta, data: snapshot.snapshot };
        let payload = self.payload(&transfer).map_err(into_streaming)?;
        let deadline = snapshot_deadline(payload.data.len(), option.soft_ttl());
        let mut request = tonic::Request::new(payload);
        request.set_timeout(deadline);
        let reply = tokio::select! {
            reply = client.install_snapshot(request) => reply.map_err(rpc_error).map_err(into_streaming)?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        decode(&reply.into_inner().data).map_err(|e| StreamingError::Network(NetworkError::new(&e)))
    }
}

/// How long sending and installing a snapshot of `bytes` may take: at least [`SNAPSHOT_BASE`]
/// (and at least what openraft asks, its `install_snapshot_timeout`, 200 ms by default), plus one
/// second per MiB. openraft's 200 ms alone was the whole budget before, so a follower that
/// needed a snapshot of a large cache (tens of MB to send, decode, restore and flush) timed out
/// on every attempt and never caught up (the harness's overload runs found it). A long deadline
/// costs nothing when the peer is dead: keep-alive ([`KEEP_ALIVE`]) ends the call, and openraft
/// cancels it when replication to the peer closes.
fn snapshot_deadline(bytes: usize, asked: Duration) -> Duration {
    let mib = u32::try_from(bytes >> 20).unwrap_or(u32::MAX);
    SNAPSHOT_BASE.max(asked).saturating_add(Duration::from_secs(1).saturating_mul(mib))
}

/// The least time a snapshot transfer gets, whatever its size.
const SNAPSHOT_BASE: Duration = Duration::from_secs(10);

/// Keep-alive for the channels: a peer that stops answering (crashed, paused, cut off) is noticed
/// within this, which ends a replication stream stuck on it.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_deadline_grows_with_its_size_and_never_falls_below_the_base() {
        let asked = Duration::from_millis(200);
        assert_eq!(snapshot_deadline(0, asked), SNAPSHOT_BASE);
        assert_eq!(snapshot_deadline(145 << 20, asked), SNAPSHOT_BASE + Duration::from_secs(145));
        assert_eq!(snapshot_deadline(1 << 20, Duration::from_secs(30)), Duration::from_secs(31));
        assert_eq!(
            snapshot_deadline(usize::MAX, asked),
            SNAPSHOT_BASE.saturating_add(Duration::from_secs(1) * u32::MAX)
        );
    }
}
