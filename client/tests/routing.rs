//! Routing, retries and exactly-once identities against tiny in-process fake nodes.
//!
//! Each fake node is a real tonic server on a loopback port (bound to port 0). It serves the
//! Cache and Admin services from a map shared by all fakes, deduplicates writes by
//! `(client_id, seq)` like the real state machine, records every request it saw, and can be
//! told to fail in scripted ways first (a refusal with a leader hint, a lost answer, a hang).
//! What this proves is the client's side of the protocol; the real cluster is tested in
//! `tests/`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use geocache_client::{Client, Error, ReadOptions, SetOptions};
use geocache_proto as pb;
use geocache_proto::admin_server::{Admin, AdminServer};
use geocache_proto::cache_server::{Cache, CacheServer};
use geocache_proto::{ERROR_KIND_HEADER, LEADER_ADDR_HEADER, LEADER_ID_HEADER};
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// How a fake node answers one request.
#[derive(Debug, Clone)]
enum Fault {
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
    /// A bounded read this replica cannot meet.
    StaleReplica,
    /// The state machine refuses the write.
    Rejected,
}

/// One recorded request.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: &'static str,
    write_id: Option<pb::WriteId>,
    has_grpc_timeout: bool,
}

/// State shared by all fake nodes of one test: the replicated cache and the dedup table.
#[derive(Default)]
struct Cluster {
    entries: HashMap<String, (Bytes, u64)>,
    log_index: u64,
    applies: u64,
    answered: HashMap<(u64, u64), pb::WriteResponse>,
}

struct FakeNode {
    id: u64,
    cluster: Arc<Mutex<Cluster>>,
    seen: Mutex<Vec<Seen>>,
    /// Faults used one per request, before `always`.
    script: Mutex<VecDeque<Fault>>,
    /// The fault for every request once the script is used up; `None` serves normally.
    always: Option<Fault>,
    /// What `status` says about the leader: (id, addr).
    leader: Option<(u64, String)>,
}

impl FakeNode {
    fn new(id: u64, cluster: &Arc<Mutex<Cluster>>) -> Self {
        FakeNode {
            id,
            cluster: cluster.clone(),
            seen: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            always: None,
            leader: None,
        }
    }

    fn failing_first(self, faults: impl IntoIterator<Item = Fault>) -> Self {
        self.script.lock().unwrap().extend(faults);
        self
    }

    fn always(mut self, fault: Fault) -> Self {
        self.always = Some(fault);
        self
    }

    fn with_leader(mut self, id: u64, addr: &str) -> Self {
        self.leader = Some((id, addr.to_string()));
        self
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, method: &str) -> usize {
        self.seen().iter().filter(|s| s.method == method).count()
    }

    /// Records the request and picks its fault, if any.
    fn enter<T>(&self, method: &'static str, req: &Request<T>, write_id: Option<pb::WriteId>) -> Option<Fault> {
        self.seen.lock().unwrap().push(Seen {
            method,
            write_id,
            has_grpc_timeout: req.metadata().get("grpc-timeout").is_some(),
        });
        self.script.lock().unwrap().pop_front().or_else(|| self.always.clone())
    }

    fn meta(&self, cluster: &Cluster) -> Option<pb::ReadMeta> {
        Some(pb::ReadMeta {
            node_id: self.id,
            region: format!("region-{}", self.id),
            applied_index: cluster.log_index,
            staleness_bound_ms: Some(0),
        })
    }

    /// Applies a write once per write id, answering duplicates with the first result.
    fn apply(
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
    async fn write(
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

async fn fail(fault: Fault) -> Status {
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
        Fault::StaleReplica => {
            let mut status = Status::unavailable("staleness bound 900ms exceeds 100ms");
            status.metadata_mut().insert(ERROR_KIND_HEADER, "stale_replica".parse().unwrap());
            status
        }
        Fault::Rejected => Status::internal("Rejected is a write answer"),
    }
}

#[tonic::async_trait]
impl Cache for FakeNode {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        if let Some(fault) = self.enter("get", &req, None) {
            // A stale replica only refuses bounded reads.
            let bounded = req.get_ref().consistency == pb::Consistency::Bounded as i32;
            if !matches!(fault, Fault::StaleReplica) || bounded {
                return Err(fail(fault).await);
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
        let fault = self.enter("set", &req, write_id);
        let req = req.into_inner();
        self.write(fault, write_id, move |cluster, index| {
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

    async fn ttl(&self, req: Request<pb::TtlRequest>) -> Result<Response<pb::TtlResponse>, Status> {
        if let Some(fault) = self.enter("ttl", &req, None) {
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

    async fn status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        if let Some(fault) = self.enter("status", &req, None) {
            return Err(fail(fault).await);
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
async fn spawn(node: FakeNode) -> (Arc<FakeNode>, String) {
    let node = Arc::new(node);
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = format!("127.0.0.1:{}", incoming.local_addr().unwrap().port());
    let server = Server::builder()
        .add_service(CacheServer::from_arc(node.clone()))
        .add_service(AdminServer::from_arc(node.clone()))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    (node, addr)
}

/// A loopback port nobody listens on.
fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("127.0.0.1:{port}")
}

async fn client(endpoints: &[&str], timeout: Duration) -> Client {
    Client::builder().endpoints(endpoints.iter().copied()).timeout(timeout).build().await.unwrap()
}

fn cluster() -> Arc<Mutex<Cluster>> {
    Arc::new(Mutex::new(Cluster::default()))
}

#[tokio::test]
async fn follows_leader_hint_and_remembers_the_leader() {
    let c = cluster();
    let (leader, leader_addr) = spawn(FakeNode::new(1, &c)).await;
    // The hint is a bare host:port, as in the membership.
    let (follower, follower_addr) = spawn(FakeNode::new(2, &c).always(Fault::NotLeader(leader_addr.clone()))).await;
    let client = client(&[&follower_addr], Duration::from_secs(5)).await;

    let w = client.set("k", "v").await.unwrap();
    assert!(w.applied);
    assert_eq!(client.leader_addr(), format!("http://{leader_addr}"));
    assert_eq!((follower.count("set"), leader.count("set")), (1, 1));

    // The next calls go straight to the leader.
    let entry = client.get("k").await.unwrap().unwrap();
    assert_eq!(entry.value, Bytes::from_static(b"v"));
    assert_eq!(entry.version, w.version);
    assert_eq!(entry.meta.node_id, 1);
    client.delete("k").await.unwrap();
    assert_eq!(follower.seen().len(), 1);
    assert!(leader.seen().iter().all(|s| s.has_grpc_timeout));
}

#[tokio::test]
async fn retries_of_one_write_reuse_its_write_id() {
    let c = cluster();
    let (leader, addr) =
        spawn(FakeNode::new(1, &c).failing_first([Fault::Deadline, Fault::NoQuorum, Fault::ApplyThenDeadline])).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;

    // The third attempt applied but lost its ack; the fourth is answered from the dedup table.
    let w = client.set("k", "v1").await.unwrap();
    assert_eq!((w.version, w.log_index), (1, 1));
    assert_eq!(c.lock().unwrap().applies, 1, "applied exactly once");

    let ids: Vec<pb::WriteId> = leader.seen().iter().filter_map(|s| s.write_id).collect();
    assert_eq!(ids.len(), 4);
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(ids[0], pb::WriteId { client_id: client.client_id(), seq: 1, acked_below: 1 });

    // The next write is seq 2, and the first is acknowledged.
    client.set("k", "v2").await.unwrap();
    let last = leader.seen().last().unwrap().write_id.unwrap();
    assert_eq!((last.seq, last.acked_below), (2, 2));
}

#[tokio::test]
async fn a_dead_first_endpoint_is_skipped() {
    let c = cluster();
    let (_leader, addr) = spawn(FakeNode::new(1, &c)).await;
    let dead = dead_addr();
    let client = client(&[&dead, &addr], Duration::from_secs(5)).await;
    client.set("k", "v").await.unwrap();
    assert_eq!(client.leader_addr(), format!("http://{addr}"));
}

#[tokio::test]
async fn bad_input_and_preconditions_are_not_retried() {
    let c = cluster();
    let (node, addr) = spawn(FakeNode::new(1, &c).failing_first([Fault::Invalid, Fault::Precondition])).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;

    let err = client.set("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = client.init(vec![]).await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    let err = client.remove(9).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert_eq!(node.seen().len(), 3, "one attempt each");

    // Client-side validation sends nothing at all.
    let zero = SetOptions::new().with_ttl(Duration::ZERO);
    assert!(matches!(client.set_with("k", "v", zero).await, Err(Error::InvalidArgument(_))));
    assert_eq!(node.seen().len(), 3);
}

#[tokio::test]
async fn an_unknown_outcome_until_the_deadline_is_a_timeout() {
    let c = cluster();
    let (node, addr) = spawn(FakeNode::new(1, &c).always(Fault::Deadline)).await;
    let client = client(&[&addr], Duration::from_millis(300)).await;
    let err = client.set("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(!err.outcome_known() && err.is_retryable());
    let ids: Vec<_> = node.seen().iter().filter_map(|s| s.write_id).collect();
    assert!(ids.len() >= 2, "retried: {ids:?}");
    assert!(ids.iter().all(|id| *id == ids[0]));
}

#[tokio::test]
async fn a_refusal_after_an_unknown_outcome_is_still_unknown() {
    let c = cluster();
    // The first attempt may have applied; every later one is refused without effect.
    let (_node, addr) =
        spawn(FakeNode::new(1, &c).failing_first([Fault::ApplyThenDeadline]).always(Fault::NoQuorum)).await;
    let client = client(&[&addr], Duration::from_millis(300)).await;
    let err = client.set("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(!err.outcome_known());

    // Reads have no effects: the last refusal is what they report.
    let err = client.get("k").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_hung_attempt_is_cut_short_and_retried() {
    let c = cluster();
    let (node, addr) = spawn(FakeNode::new(1, &c).failing_first([Fault::Hang])).await;
    let client = Client::builder()
        .endpoints([addr.as_str()])
        .timeout(Duration::from_secs(5))
        .attempt_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    client.set("k", "v").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let ids: Vec<_> = node.seen().iter().filter_map(|s| s.write_id).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
}

#[tokio::test]
async fn a_bounded_read_falls_back_from_a_stale_replica() {
    let c = cluster();
    let (stale, stale_addr) = spawn(FakeNode::new(2, &c).always(Fault::StaleReplica)).await;
    let (_fresh, fresh_addr) = spawn(FakeNode::new(3, &c)).await;
    let client = client(&[&stale_addr, &fresh_addr], Duration::from_secs(5)).await;
    client.set("k", "v").await.unwrap();

    let bounded = ReadOptions::bounded(Duration::from_millis(100));
    let entry = client.get_with("k", bounded).await.unwrap().unwrap();
    assert_eq!(entry.meta.node_id, 3);
    assert_eq!(entry.meta.region, "region-3");
    assert_eq!(stale.count("get"), 1);

    // A stale read is served by the first replica, however stale.
    let entry = client.get_with("k", ReadOptions::stale()).await.unwrap().unwrap();
    assert_eq!(entry.meta.node_id, 2);
}

#[tokio::test]
async fn rejected_writes_are_errors() {
    let c = cluster();
    let (_node, addr) = spawn(FakeNode::new(1, &c).failing_first([Fault::Rejected])).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;
    let err = client.set("k", vec![0u8; 16]).await.unwrap_err();
    assert_eq!(err, Error::Rejected("value larger than the whole cache".into()));
    assert!(err.outcome_known() && !err.is_retryable());
}

#[tokio::test]
async fn typed_values_round_trip_as_json() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Session {
        user: String,
        visits: u32,
    }
    let c = cluster();
    let (_node, addr) = spawn(FakeNode::new(1, &c)).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;

    let session = Session { user: "ada".into(), visits: 2 };
    client.set_json("s", &session).await.unwrap();
    assert_eq!(client.get_json::<Session>("s").await.unwrap(), Some(session));
    assert_eq!(client.get_json::<Session>("absent").await.unwrap(), None);

    client.set("raw", "not json").await.unwrap();
    let err = client.get_json::<Session>("raw").await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn ttl_reports_remaining_time() {
    let c = cluster();
    let (_node, addr) = spawn(FakeNode::new(1, &c)).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;
    client.set("k", "v").await.unwrap();
    let ttl = client.ttl("k").await.unwrap().unwrap();
    assert_eq!(ttl.remaining, Some(Duration::from_millis(1_500)));
    assert_eq!(ttl.expires_at_ms, Some(90_000));
    assert_eq!(client.ttl("absent").await.unwrap(), None);
}

#[tokio::test]
async fn status_teaches_the_client_who_leads() {
    let c = cluster();
    let (leader, leader_addr) = spawn(FakeNode::new(1, &c)).await;
    let (_follower, follower_addr) = spawn(FakeNode::new(2, &c).with_leader(1, &leader_addr)).await;
    let client = client(&[&follower_addr], Duration::from_secs(5)).await;

    let status = client.status().await.unwrap();
    assert_eq!(status.node_id, 2);
    assert_eq!(status.leader().unwrap().id, 1);
    assert_eq!(client.leader_addr(), format!("http://{leader_addr}"));

    client.set("k", "v").await.unwrap();
    assert_eq!(leader.count("set"), 1);

    let member = geocache_client::Member::new(4, "127.0.0.1:7004", "ap-south");
    let membership = client.add_learner(member.clone(), false).await.unwrap();
    assert_eq!(membership.learners, vec![member]);
    assert_eq!(client.configure(100, 0).await.unwrap(), 3);
}

/// Accepts connections, reads the start of each request, then drops the connection: a node
/// that crashes while a call is in flight.
async fn spawn_crashing_node() -> String {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                drop(socket);
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_connection_lost_mid_call_leaves_a_write_unknown() {
    let addr = spawn_crashing_node().await;
    let client = client(&[&addr], Duration::from_millis(300)).await;

    let err = client.get("k").await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");

    let err = client.set("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_) | Error::Transport(_)), "{err:?}");
    assert!(!err.outcome_known(), "{err:?}");
}
