//! Tiny in-process fake geocache nodes for the client's tests.
//!
//! Each fake node is a real tonic server on a loopback port (bound to port 0). It serves the
//! Cache and Admin services from a map shared by all fakes, deduplicates writes by
//! `(client_id, seq)` like the real state machine, records every request it saw, and can be
//! told to fail in scripted ways (a refusal with a leader hint, a lost answer, a hang, a stale
//! or lagging replica). When a test sets the shared membership, every fake's status reports it,
//! and a fake can delay its local status answers (the client's round-trip probes) to look far
//! away.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use geocache_client::Client;
use geocache_proto as pb;
use geocache_proto::admin_server::{Admin, AdminServer};
use geocache_proto::cache_server::{Cache, CacheServer};
use geocache_proto::{ERROR_KIND_HEADER, LEADER_ADDR_HEADER, LEADER_ID_HEADER, STALENESS_BOUND_HEADER};
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// How a fake node answers one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// `UNAVAILABLE` with a leader hint (a follower that cannot forward).
    NotLeader(String),
    /// `UNAVAILABLE` without a hint (no quorum, election under way).
    NoQuorum,
    /// `DEADLINE_EXCEEDED` before applying: proposed, outcome unknown to the node.
    Deadline,
    /// Apply the write, then answer `DEADLINE_EXCEEDED`: the ack was lost.
    ApplyThenDeadline,
    /// Never answer (a paused node).
    Hang,
    /// `INVALID_ARGUMENT`.
    Invalid,
    /// `FAILED_PRECONDITION`.
    Precondition,
    /// A bounded read this replica cannot meet; its bound in ms, if it knows one. Other
    /// requests are served.
    StaleReplica(Option<u64>),
    /// A replica that never applies what a `min_version` read waits for: it waits out most of
    /// the request's deadline, then answers `UNAVAILABLE` (as a real node does). Other requests
    /// are served.
    Lagging,
    /// The state machine refuses the write.
    Rejected,
}

/// One recorded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: &'static str,
    pub write_id: Option<pb::WriteId>,
    pub has_grpc_timeout: bool,
    /// The request's `grpc-timeout`, parsed.
    pub grpc_timeout: Option<Duration>,
    /// A set's `ttl_ms` and condition.
    pub ttl_ms: Option<u64>,
    pub condition: i32,
    /// A read's consistency level.
    pub consistency: Option<i32>,
}

/// State shared by all fake nodes of one test: the replicated cache, the dedup table, and the
/// membership status reports.
#[derive(Default)]
pub struct Cluster {
    pub entries: HashMap<String, (Bytes, u64)>,
    pub log_index: u64,
    pub applies: u64,
    pub answered: HashMap<(u64, u64), pb::WriteResponse>,
    /// When non-empty, what every fake's `status` lists (and the leader it names).
    pub members: Vec<pb::NodeStatus>,
    pub leader: Option<u64>,
}

impl Cluster {
    /// Sets the membership: `(id, addr, region)`, the first `voters` of them voters, the rest
    /// learners, `leader` leading.
    pub fn set_members(&mut self, members: &[(u64, &str, &str)], voters: usize, leader: u64) {
        self.members = members
            .iter()
            .enumerate()
            .map(|(i, (id, addr, region))| pb::NodeStatus {
                id: *id,
                addr: addr.to_string(),
                region: region.to_string(),
                role: match () {
                    _ if *id == leader => "leader",
                    _ if i < voters => "follower",
                    _ => "learner",
                }
                .into(),
                reachable: true,
                ..Default::default()
            })
            .collect();
        self.leader = Some(leader);
    }
}

pub struct FakeNode {
    pub id: u64,
    pub cluster: Arc<Mutex<Cluster>>,
    pub seen: Mutex<Vec<Seen>>,
    /// Faults used one per request, before `always`.
    pub script: Mutex<VecDeque<Fault>>,
    /// The fault for every request once the script is used up; `None` serves normally.
    pub always: Mutex<Option<Fault>>,
    /// What `status` says about the leader: (id, addr), when no membership is set.
    pub leader: Option<(u64, String)>,
    /// How long a `local_only` status (a round-trip probe) takes to answer.
    pub probe_delay: Duration,
}

impl FakeNode {
    pub fn new(id: u64, cluster: &Arc<Mutex<Cluster>>) -> Self {
        FakeNode {
            id,
            cluster: cluster.clone(),
            seen: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            always: Mutex::new(None),
            leader: None,
            probe_delay: Duration::ZERO,
        }
    }

    pub fn failing_first(self, faults: impl IntoIterator<Item = Fault>) -> Self {
        self.script.lock().unwrap().extend(faults);
        self
    }

    pub fn always(self, fault: Fault) -> Self {
        self.set_always(Some(fault));
        self
    }

    pub fn set_always(&self, fault: Option<Fault>) {
        *self.always.lock().unwrap() = fault;
    }

    pub fn probe_delay(mut self, delay: Duration) -> Self {
        self.probe_delay = delay;
        self
    }

    pub fn with_leader(mut self, id: u64, addr: &str) -> Self {
        self.leader = Some((id, addr.to_string()));
        self
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self, method: &str) -> usize {
        self.seen().iter().filter(|s| s.method == method).count()
    }

    /// The consistency level of every read (`get`, `ttl`) seen, in order.
    pub fn reads(&self) -> Vec<i32> {
        self.seen().iter().filter_map(|s| s.consistency).collect()
    }

    /// Records the request and picks its fault, if any.
    pub fn enter<T>(&self, method: &'static str, req: &Request<T>, write_id: Option<pb::WriteId>) -> Option<Fault> {
        self.record(method, req, |seen| seen.write_id = write_id)
    }

    /// Records the request (with what `detail` adds) and picks its fault, if any.
    pub fn record<T>(&self, method: &'static str, req: &Request<T>, detail: impl FnOnce(&mut Seen)) -> Option<Fault> {
        let grpc_timeout = grpc_timeout(req);
        let mut seen = Seen {
            method,
            write_id: None,
            has_grpc_timeout: grpc_timeout.is_some(),
            grpc_timeout,
            ttl_ms: None,
            condition: 0,
            consistency: None,
        };
        detail(&mut seen);
        self.seen.lock().unwrap().push(seen);
        let fault = self.script.lock().unwrap().pop_front().or_else(|| self.always.lock().unwrap().clone());
        match fault {
            // Replica faults only concern reads.
            Some(Fault::StaleReplica(_) | Fault::Lagging) if !matches!(method, "get" | "ttl") => None,
            fault => fault,
        }
    }

    pub fn meta(&self, cluster: &Cluster) -> Option<pb::ReadMeta> {
        Some(pb::ReadMeta {
            node_id: self.id,
            region: format!("region-{}", self.id),
            applied_index: cluster.log_index,
            staleness_bound_ms: Some(0),
        })
    }

    /// Applies a write once per write id, answering duplicates with the first result.
    pub fn apply(
        &self,
        write_id: Option<pb::WriteId>,
        f: impl FnOnce(&mut Cluster, u64) -> pb::WriteResponse,
    ) -> pb::WriteResponse {
        let mut cluster = self.cluster.lock().unwrap();
        let key = write_id.map(|w| (w.client_id, w.seq));
        if let Some(first) = key.and_then(|k| cluster.answered.get(&k)) {
            return first.clone();
        }
        cluster.log_index += 1;
        cluster.applies += 1;
        let index = cluster.log_index;
        let resp = f(&mut cluster, index);
        if let Some(k) = key {
            cluster.answered.insert(k, resp.clone());
        }
        resp
    }

    /// Serves a write, or fails it as scripted.
    pub async fn write(
        &self,
        fault: Option<Fault>,
        write_id: Option<pb::WriteId>,
        f: impl FnOnce(&mut Cluster, u64) -> pb::WriteResponse,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        match fault {
            None => Ok(Response::new(self.apply(write_id, f))),
            Some(Fault::ApplyThenDeadline) => {
                self.apply(write_id, f);
                Err(Status::deadline_exceeded("committed, but the ack was lost"))
            }
            Some(Fault::Rejected) => Ok(Response::new(pb::WriteResponse {
                rejected: "value larger than the whole cache".into(),
                ..Default::default()
            })),
            Some(other) => Err(fail(other).await),
        }
    }
}

pub async fn fail(fault: Fault) -> Status {
    match fault {
        Fault::NotLeader(addr) => {
            let mut status = Status::unavailable("not the leader");
            status.metadata_mut().insert(LEADER_ID_HEADER, "1".parse().unwrap());
            status.metadata_mut().insert(LEADER_ADDR_HEADER, addr.parse().unwrap());
            status
        }
        Fault::NoQuorum => Status::unavailable("no quorum"),
        Fault::Deadline | Fault::ApplyThenDeadline => Status::deadline_exceeded("proposed, no ack"),
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            unreachable!()
        }
        Fault::Invalid => Status::invalid_argument("key too long"),
        Fault::Precondition => Status::failed_precondition("already initialised"),
        Fault::StaleReplica(bound) => {
            let mut status = Status::unavailable(format!("staleness bound {bound:?} ms exceeds the request's"));
            status.metadata_mut().insert(ERROR_KIND_HEADER, "stale_replica".parse().unwrap());
            if let Some(ms) = bound {
                status.metadata_mut().insert(STALENESS_BOUND_HEADER, ms.to_string().parse().unwrap());
            }
            status
        }
        Fault::Lagging => Status::unavailable("min_version not applied within the deadline"),
        Fault::Rejected => Status::internal("Rejected is a write answer"),
    }
}

/// The request's `grpc-timeout` header (`<digits><unit>`), parsed.
pub fn grpc_timeout<T>(req: &Request<T>) -> Option<Duration> {
    let value = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl Cache for FakeNode {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let consistency = req.get_ref().consistency;
        if let Some(fault) = self.record("get", &req, |seen| seen.consistency = Some(consistency)) {
            match fault {
                // A stale replica only refuses bounded reads.
                Fault::StaleReplica(_) if req.get_ref().consistency != pb::Consistency::Bounded as i32 => {}
                // A lagging one only fails reads that wait for a version, at their deadline.
                Fault::Lagging if req.get_ref().min_version == 0 => {}
                Fault::Lagging => {
                    let deadline = grpc_timeout(&req).unwrap_or(Duration::from_secs(1));
                    tokio::time::sleep(deadline.mul_f64(0.9)).await;
                    return Err(fail(fault).await);
                }
                fault => return Err(fail(fault).await),
            }
        }
        let cluster = self.cluster.lock().unwrap();
        let resp = match cluster.entries.get(&req.get_ref().key) {
            Some((value, version)) => pb::GetResponse {
                found: true,
                value: value.clone(),
                version: *version,
                expires_at_ms: None,
                meta: self.meta(&cluster),
            },
            None => pb::GetResponse { meta: self.meta(&cluster), ..Default::default() },
        };
        Ok(Response::new(resp))
    }

    async fn set(&self, req: Request<pb::SetRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let write_id = req.get_ref().write_id;
        let (ttl_ms, condition) = (req.get_ref().ttl_ms, req.get_ref().condition);
        let fault = self.record("set", &req, |seen| {
            seen.write_id = write_id;
            seen.ttl_ms = ttl_ms;
            seen.condition = condition;
        });
        let req = req.into_inner();
        self.write(fault, write_id, move |cluster, index| {
            if req.condition == pb::ConditionKind::ConditionIfAbsent as i32 {
                if let Some((_, version)) = cluster.entries.get(&req.key) {
                    return pb::WriteResponse {
                        applied: false,
                        version: *version,
                        existed: true,
                        previous_version: *version,
                        log_index: index,
                        ..Default::default()
                    };
                }
            }
            let previous = cluster.entries.insert(req.key, (req.value, index));
            pb::WriteResponse {
                applied: true,
                version: index,
                existed: previous.is_some(),
                previous_version: previous.map_or(0, |p| p.1),
                log_index: index,
                expires_at_ms: None,
                rejected: String::new(),
            }
        })
        .await
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let write_id = req.get_ref().write_id;
        let fault = self.enter("delete", &req, write_id);
        let key = req.into_inner().key;
        self.write(fault, write_id, move |cluster, index| {
            let previous = cluster.entries.remove(&key);
            pb::WriteResponse {
                applied: previous.is_some(),
                existed: previous.is_some(),
                previous_version: previous.map_or(0, |p| p.1),
                log_index: index,
                ..Default::default()
            }
        })
        .await
    }

    async fn expire(&self, req: Request<pb::ExpireRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let write_id = req.get_ref().write_id;
        let fault = self.enter("expire", &req, write_id);
        self.write(fault, write_id, |_, index| pb::WriteResponse { log_index: index, ..Default::default() }).await
    }

    async fn flush(&self, req: Request<pb::FlushRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let write_id = req.get_ref().write_id;
        let fault = self.enter("flush", &req, write_id);
        self.write(fault, write_id, |_, index| pb::WriteResponse { log_index: index, ..Default::default() }).await
    }

    async fn ttl(&self, req: Request<pb::TtlRequest>) -> Result<Response<pb::TtlResponse>, Status> {
        let consistency = req.get_ref().consistency;
        if let Some(fault) = self.record("ttl", &req, |seen| seen.consistency = Some(consistency)) {
            return Err(fail(fault).await);
        }
        let cluster = self.cluster.lock().unwrap();
        let found = cluster.entries.get(&req.get_ref().key).map(|e| e.1);
        Ok(Response::new(pb::TtlResponse {
            found: found.is_some(),
            version: found.unwrap_or(0),
            expires_at_ms: Some(90_000),
            remaining_ms: Some(1_500),
            meta: self.meta(&cluster),
        }))
    }
}

#[tonic::async_trait]
impl Admin for FakeNode {
    async fn init(&self, req: Request<pb::InitRequest>) -> Result<Response<pb::MembershipResponse>, Status> {
        if let Some(fault) = self.enter("init", &req, None) {
            return Err(fail(fault).await);
        }
        Ok(Response::new(pb::MembershipResponse { log_index: 1, voters: req.into_inner().members, learners: vec![] }))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        if let Some(fault) = self.enter("add_learner", &req, None) {
            return Err(fail(fault).await);
        }
        Ok(Response::new(pb::MembershipResponse {
            log_index: 2,
            voters: vec![],
            learners: req.into_inner().member.into_iter().collect(),
        }))
    }

    async fn change_membership(
        &self,
        req: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let _ = self.enter("change_membership", &req, None);
        Err(Status::unimplemented("not faked"))
    }

    async fn remove(&self, req: Request<pb::RemoveRequest>) -> Result<Response<pb::MembershipResponse>, Status> {
        if let Some(fault) = self.enter("remove", &req, None) {
            return Err(fail(fault).await);
        }
        Err(Status::not_found(format!("node {} is not a member", req.get_ref().id)))
    }

    async fn configure(&self, req: Request<pb::ConfigureRequest>) -> Result<Response<pb::ConfigureResponse>, Status> {
        let _ = self.enter("configure", &req, None);
        Ok(Response::new(pb::ConfigureResponse { log_index: 3 }))
    }

    async fn set_clock_offset(
        &self,
        _req: Request<pb::SetClockOffsetRequest>,
    ) -> Result<Response<pb::SetClockOffsetResponse>, Status> {
        Err(Status::unimplemented("the fake node has no clock"))
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        if let Some(fault) = self.enter("status", &req, None) {
            return Err(fail(fault).await);
        }
        let local_only = req.get_ref().local_only;
        if local_only {
            tokio::time::sleep(self.probe_delay).await;
        }
        {
            let cluster = self.cluster.lock().unwrap();
            if !cluster.members.is_empty() {
                let nodes = cluster.members.iter().filter(|n| !local_only || n.id == self.id).cloned().collect();
                return Ok(Response::new(pb::StatusResponse {
                    node_id: self.id,
                    leader_id: cluster.leader,
                    term: 1,
                    initialized: true,
                    nodes,
                    ..Default::default()
                }));
            }
        }
        let mut nodes =
            vec![pb::NodeStatus { id: self.id, role: "follower".into(), reachable: true, ..Default::default() }];
        if let Some((id, addr)) = &self.leader {
            nodes.push(pb::NodeStatus {
                id: *id,
                addr: addr.clone(),
                role: "leader".into(),
                reachable: true,
                ..Default::default()
            });
        }
        Ok(Response::new(pb::StatusResponse {
            node_id: self.id,
            leader_id: self.leader.as_ref().map(|l| l.0),
            term: 1,
            initialized: true,
            nodes,
            ..Default::default()
        }))
    }
}

/// Serves `node` on a fresh loopback port; returns `127.0.0.1:port`.
pub async fn spawn(node: FakeNode) -> (Arc<FakeNode>, String) {
    spawn_on("127.0.0.1:0", node).await
}

/// Serves `node` on `addr` (port 0: a fresh one); returns `127.0.0.1:port`.
pub async fn spawn_on(addr: &str, node: FakeNode) -> (Arc<FakeNode>, String) {
    let node = Arc::new(node);
    let incoming = TcpIncoming::bind(addr.parse().unwrap()).unwrap();
    let addr = format!("127.0.0.1:{}", incoming.local_addr().unwrap().port());
    let server = Server::builder()
        .add_service(CacheServer::from_arc(node.clone()))
        .add_service(AdminServer::from_arc(node.clone()))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    (node, addr)
}

/// Stops a node started by [`spawn_killable`].
pub struct Kill {
    signal: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Kill {
    /// Stops the node and returns once its port and connections are closed.
    pub async fn kill(self) {
        let _ = self.signal.send(());
        tokio::time::timeout(Duration::from_secs(5), self.server).await.expect("the fake node stops").unwrap().unwrap();
    }
}

/// Like [`spawn`], plus a switch that stops the node.
pub async fn spawn_killable(node: FakeNode) -> (Arc<FakeNode>, String, Kill) {
    let node = Arc::new(node);
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = format!("127.0.0.1:{}", incoming.local_addr().unwrap().port());
    let (signal, killed) = oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(CacheServer::from_arc(node.clone()))
        .add_service(AdminServer::from_arc(node.clone()))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = killed.await;
        });
    let server = tokio::spawn(server);
    (node, addr, Kill { signal, server })
}

/// A loopback port nobody listens on.
pub fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("127.0.0.1:{port}")
}

/// A client without topology discovery: these tests are about leader routing and retries, and
/// count every request a node sees (discovery adds status calls). Discovery is tested below.
pub async fn client(endpoints: &[&str], timeout: Duration) -> Client {
    Client::builder().endpoints(endpoints.iter().copied()).timeout(timeout).discovery(false).build().await.unwrap()
}

pub fn cluster() -> Arc<Mutex<Cluster>> {
    Arc::new(Mutex::new(Cluster::default()))
}
