//! etcd as a peer: a 3-member cluster on loopback with default settings (so it fsyncs its WAL
//! on every commit), and the three calls the comparison makes (`KV.Put`, `KV.Range`,
//! `Maintenance.Status`).
//!
//! The calls are made with tonic's generic client and a few prost messages declared here,
//! carrying only the fields used, with etcd's v3 field numbers (`etcdserverpb/rpc.proto`,
//! `mvccpb/kv.proto`); protobuf skips the fields left out. The `etcd-client` crate would do the
//! same over a full generated API, but its build script needs a system `protoc`, which a fresh
//! machine does not have (geocache's own protos use a vendored one).
//!
//! A `Range` is sent with `serializable = false` (etcd's default): a linearizable read, which
//! the member answers after confirming with the leader.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use geocache_node::launcher::PortReservation;
use geocache_node::loadgen::Backend;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{Error, Result};
use crate::process::{wait_ready, PeerProcess};

/// Longest one call may take: the same as geocache-client's default call timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {}

#[derive(Clone, PartialEq, prost::Message)]
struct RangeRequest {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct KeyValue {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    value: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RangeResponse {
    #[prost(message, repeated, tag = "2")]
    kvs: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "2")]
    member_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    version: String,
    #[prost(uint64, tag = "4")]
    leader: u64,
}

/// A connection to one etcd member. Clones share it; connect once per client for one
/// connection each.
#[derive(Clone, Debug)]
pub struct EtcdKv {
    grpc: tonic::client::Grpc<Channel>,
}

/// What a member says about itself and the cluster.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    /// Its member id.
    pub member_id: u64,
    /// The leader's member id; 0 while there is none.
    pub leader: u64,
    /// The etcd version, e.g. `3.4.23`.
    pub version: String,
}

impl EtcdKv {
    /// Connects to the member whose client URL is `url` (`http://127.0.0.1:PORT`).
    pub async fn connect(url: &str) -> std::result::Result<EtcdKv, String> {
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("bad etcd URL {url}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to etcd at {url}: {e}"))?;
        Ok(EtcdKv { grpc: tonic::client::Grpc::new(channel) })
    }

    async fn unary<Req, Resp>(&self, path: &'static str, request: Req) -> std::result::Result<Resp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready().await.map_err(|e| Status::unavailable(format!("etcd connection not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let response = grpc.unary(tonic::Request::new(request), PathAndQuery::from_static(path), codec).await?;
        Ok(response.into_inner())
    }

    /// `Maintenance.Status` of this member.
    pub async fn status(&self) -> std::result::Result<MemberStatus, Status> {
        let status: StatusResponse = self.unary("/etcdserverpb.Maintenance/Status", StatusRequest {}).await?;
        Ok(MemberStatus {
            member_id: status.header.map_or(0, |h| h.member_id),
            leader: status.leader,
            version: status.version,
        })
    }
}

impl Backend for EtcdKv {
    type Error = Status;

    async fn set(&self, key: String, value: Bytes) -> std::result::Result<(), Status> {
        let _: PutResponse = self.unary("/etcdserverpb.KV/Put", PutRequest { key: Bytes::from(key), value }).await?;
        Ok(())
    }

    async fn get(&self, key: String) -> std::result::Result<bool, Status> {
        let response: RangeResponse =
            self.unary("/etcdserverpb.KV/Range", RangeRequest { key: Bytes::from(key) }).await?;
        Ok(!response.kvs.is_empty())
    }

    fn error_kind(e: &Status) -> &'static str {
        match e.code() {
            Code::Unavailable => "unavailable",
            Code::DeadlineExceeded | Code::Cancelled => "timeout",
            Code::ResourceExhausted => "resource_exhausted",
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => "rejected",
            Code::Unknown => "unknown",
            _ => "internal",
        }
    }
}

/// Three etcd members on 127.0.0.1, data in a temp dir; killed and removed when dropped.
#[derive(Debug)]
pub struct EtcdCluster {
    /// Declared before `dir`: the members die before their data dirs are removed.
    _members: Vec<PeerProcess>,
    client_urls: Vec<String>,
    /// The etcd version the members report.
    pub version: String,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts three members of a new cluster (program `etcd`) and waits up to `within` until
    /// all of them answer and name the same leader.
    pub async fn start(etcd: &Path, within: Duration) -> Result<EtcdCluster> {
        let dir = tempfile::Builder::new()
            .prefix("geocache-compare-etcd-")
            .tempdir()
            .map_err(Error::io("cannot create a temp dir for etcd"))?;
        // Client ports first, then peer ports; all on 127.0.0.1.
        let addrs = PortReservation::new(6)?.release();
        let client_urls: Vec<String> = addrs[..3].iter().map(|a| format!("http://{a}")).collect();
        let peer_urls: Vec<String> = addrs[3..].iter().map(|a| format!("http://{a}")).collect();
        let initial_cluster: Vec<String> =
            peer_urls.iter().enumerate().map(|(i, u)| format!("m{}={u}", i + 1)).collect();
        // Unique per cluster, so members of another run can never join this one.
        let token = dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // etcd also reads its flags from ETCD_* variables; none of the caller's may leak in.
        let env_remove: Vec<String> =
            std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()).filter(|k| k.starts_with("ETCD_")).collect();
        let mut members = Vec::new();
        for i in 0..3 {
            let name = format!("m{}", i + 1);
            let args = vec![
                format!("--name={name}"),
                format!("--data-dir={}", dir.path().join(&name).display()),
                format!("--listen-client-urls={}", client_urls[i]),
                format!("--advertise-client-urls={}", client_urls[i]),
                format!("--listen-peer-urls={}", peer_urls[i]),
                format!("--initial-advertise-peer-urls={}", peer_urls[i]),
                format!("--initial-cluster={}", initial_cluster.join(",")),
                format!("--initial-cluster-token={token}"),
                "--initial-cluster-state=new".into(),
                "--logger=zap".into(),
                "--log-outputs=stderr".into(),
            ];
            let log = dir.path().join(format!("{name}.log"));
            members.push(PeerProcess::spawn(&format!("etcd member {name}"), etcd, &args, &log, &env_remove)?);
        }
        let urls = client_urls.clone();
        let version = wait_ready("etcd to elect a leader", within, &mut members, || {
            let urls = urls.clone();
            async move { leader_of(&urls).await.map(|(_, version)| version) }
        })
        .await?;
        Ok(EtcdCluster { _members: members, client_urls, version, dir })
    }

    /// The members' client URLs, member 1 first.
    pub fn client_urls(&self) -> &[String] {
        &self.client_urls
    }

    /// The current leader's client URL.
    pub async fn leader_url(&self) -> Result<String> {
        let (leader, _) = leader_of(&self.client_urls)
            .await
            .map_err(|message| Error::Connect { system: "etcd", message: format!("no leader: {message}") })?;
        Ok(self.client_urls[leader].clone())
    }

    /// Where the members keep their data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The index in `urls` of the member every member names as leader, and the etcd version; an
/// error while any member does not answer or they disagree.
async fn leader_of(urls: &[String]) -> std::result::Result<(usize, String), String> {
    let mut statuses = Vec::new();
    for url in urls {
        let status = EtcdKv::connect(url).await?.status().await.map_err(|e| format!("{url}: {}", e.message()))?;
        statuses.push(status);
    }
    let leader = statuses[0].leader;
    if leader == 0 || statuses.iter().any(|s| s.leader != leader) {
        return Err(format!("no agreed leader yet: {:?}", statuses.iter().map(|s| s.leader).collect::<Vec<_>>()));
    }
    let index = statuses.iter().position(|s| s.member_id == leader).ok_or("the leader is not a member")?;
    Ok((index, statuses[0].version.clone()))
}
