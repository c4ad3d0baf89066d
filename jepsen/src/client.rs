//! The workload's client: one worker's way to the cluster, over gRPC or over the Redis protocol
//! ([`Protocol`], `geocache-jepsen test --protocol grpc|resp`), behind one interface
//! ([`WorkloadClient`]) so that [`crate::workload`] has one driver for both.
//!
//! Owns the connections, the deadline of every call, the retry of a write that was refused with
//! nothing applied, and, per protocol, the one mapping from what came back to how the operation
//! completes ([`Failure`]: `fail` or `info`). Owns no workload logic: which operation to run,
//! what to record and which read to pin are the workload's.
//!
//! Both protocols give each worker two ways in, as the workload's module doc describes: reads
//! at the configured level go to the worker's *home* replica only, writes to whichever node
//! gets them to the leader.
//!
//! * **gRPC** ([`geocache_client`]): a client with the home endpoint alone (discovery off) for
//!   reads, and one that knows every node and follows the leader for writes and a cas's read.
//!   The client's own [`geocache_client::Error::outcome_known`] decides `fail` or `info`.
//! * **RESP** (the `redis` crate, not cluster mode, one multiplexed connection per role): the
//!   *read* connection goes to the home node's RESP port and is put at the read level once, when
//!   it connects (`CLIENT READLEVEL`); the *write* connection goes to one node's RESP port (a
//!   follower forwards writes to the leader), the home node first, and moves on to the next node
//!   after a refusal (`-TRYAGAIN`: nothing applied, retried there within the same deadline) or
//!   an unknown outcome. A set is `SET k v [PX ms]`, a delete `DEL k`. Each write is pipelined
//!   with `GEOCACHE.LASTVERSION` on the same connection: commands on one connection run in
//!   order, so that is the log index of the write just acknowledged (the connection's own
//!   writes' indexes only grow), which pins the worker's next read of the key. A pinned read is
//!   pipelined as `CLIENT MINVERSION v`, `GET k`, `CLIENT MINVERSION 0`, so the pin holds for
//!   that one read only, as a gRPC read's `min_version` does.
//!
//! **No compare-and-set over RESP.** A cas conditions a write on the version of the value read.
//! Over RESP a `GET` returns no version, and the read-modify-write commands (`SET ... GET`,
//! `INCR`) do their compare-and-set inside the node on a version the client never sees, so no
//! sequence of RESP commands is a cas on a value the worker read. Under `--protocol resp` the
//! register workload therefore runs reads and writes only ([`Protocol::supports_cas`]).
//!
//! Invariants:
//! * An operation is `fail` only if nothing can have applied: the node refused it (`TRYAGAIN`,
//!   `STALE`, `ERR` for bad input, `NOPERM`, `OOM`), or no connection was ever made. Everything
//!   else is `info`: a missed deadline, a connection that broke or closed, a `TIMEOUT` reply,
//!   `ERR internal error`, a reply the harness does not understand.
//! * After an `info`, the RESP connection it happened on is dropped and the next call makes a
//!   fresh one: a late reply can never be taken for a later command's, and a pin or read level
//!   set on it cannot leak.
//! * Every call ends by its deadline ([`WorkloadClient::connect`]'s `timeout`), connecting and
//!   retries included.

use std::time::Duration;

use anyhow::{Context, Result};
use geocache_client::{Client, Condition, ReadOptions, SetOptions, WriteResult};
use redis::aio::MultiplexedConnection;
use redis::Value;
use serde::Serialize;
use tokio::time::Instant;

use crate::history::{EventKind, ReadLevel};
use crate::workload::read_options;

/// Which port and protocol the workload's clients use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The nodes' gRPC port, through `geocache-client`.
    #[default]
    Grpc,
    /// The nodes' Redis-protocol port (`--resp-listen`), through the `redis` crate.
    Resp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Resp => "resp",
        }
    }

    /// Whether the register workload's compare-and-set can be run (see the module doc).
    pub fn supports_cas(self) -> bool {
        self == Protocol::Grpc
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "grpc" => Ok(Protocol::Grpc),
            "resp" => Ok(Protocol::Resp),
            other => Err(format!("unknown protocol {other:?}; known: grpc, resp")),
        }
    }
}

/// How an operation that did not succeed completes, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// `Fail` (certainly not applied) or `Info` (may have applied).
    pub kind: EventKind,
    pub message: String,
    /// Nothing was applied and another node may take the request (no leader there, no
    /// connection): a RESP write tries the next node within its deadline.
    retry_elsewhere: bool,
}

impl Failure {
    pub(crate) fn fail(message: impl Into<String>) -> Failure {
        Failure { kind: EventKind::Fail, message: message.into(), retry_elsewhere: false }
    }

    fn info(message: impl Into<String>) -> Failure {
        Failure { kind: EventKind::Info, message: message.into(), retry_elsewhere: false }
    }

    fn elsewhere(message: impl Into<String>) -> Failure {
        Failure { retry_elsewhere: true, ..Failure::fail(message) }
    }
}

/// An acknowledged write: the log index that pins the worker's next read of its key (0: none
/// known, no pin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Written {
    pub version: u64,
}

/// A `geocache-client` builder trusting `tls_ca_pem` (the cluster CA of a `--tls` run), or
/// plaintext: every gRPC client of the harness starts here.
pub(crate) fn client_builder(tls_ca_pem: Option<&[u8]>) -> geocache_client::ClientBuilder {
    match tls_ca_pem {
        Some(pem) => Client::builder().tls_ca_pem(pem.to_vec()),
        None => Client::builder(),
    }
}

/// One worker's client, over the protocol of the test.
pub(crate) enum WorkloadClient {
    Grpc(GrpcClient),
    Resp(RespClient),
}

impl WorkloadClient {
    /// A worker's client with home node `home` (an index into `nodes`, the addresses of every
    /// node's port for `protocol`), reading at `level`, every call bounded by `timeout`. Errors
    /// only if a gRPC client cannot be built (a harness error); RESP connects on first use.
    pub async fn connect(
        protocol: Protocol,
        nodes: &[String],
        home: usize,
        level: ReadLevel,
        timeout: Duration,
        tls_ca_pem: Option<&[u8]>,
    ) -> Result<WorkloadClient> {
        Ok(match protocol {
            Protocol::Grpc => WorkloadClient::Grpc(GrpcClient::connect(nodes, home, level, timeout, tls_ca_pem).await?),
            Protocol::Resp => WorkloadClient::Resp(RespClient::new(nodes, home, level, timeout)),
        })
    }

    /// A read of `key` at the configured level from the home replica, waiting until it has
    /// applied `min_version` if given. `None`: the key was absent.
    pub async fn read(&mut self, key: &str, min_version: Option<u64>) -> Result<Option<String>, Failure> {
        match self {
            WorkloadClient::Grpc(c) => c.read(key, min_version).await,
            WorkloadClient::Resp(c) => c.read(key, min_version).await,
        }
    }

    /// A linearizable read through the cluster that also returns the version read (a cas's
    /// read). gRPC only.
    pub async fn read_versioned(&mut self, key: &str) -> Result<Option<(String, u64)>, Failure> {
        match self {
            WorkloadClient::Grpc(c) => c.read_versioned(key).await,
            WorkloadClient::Resp(_) => Err(Failure::fail("compare-and-set is not available over RESP")),
        }
    }

    /// An unconditional set, with a TTL if given.
    pub async fn set(&mut self, key: &str, value: &str, ttl: Option<Duration>) -> Result<Written, Failure> {
        match self {
            WorkloadClient::Grpc(c) => c.set(key, value, ttl).await,
            WorkloadClient::Resp(c) => c.set(key, value, ttl).await,
        }
    }

    /// A set conditioned on the key's version being `version` (absent if `None`); `Ok(None)`:
    /// the condition did not hold, nothing applied. gRPC only.
    pub async fn set_if_version(
        &mut self,
        key: &str,
        value: &str,
        version: Option<u64>,
    ) -> Result<Option<Written>, Failure> {
        match self {
            WorkloadClient::Grpc(c) => c.set_if_version(key, value, version).await,
            WorkloadClient::Resp(_) => Err(Failure::fail("compare-and-set is not available over RESP")),
        }
    }

    /// A delete; succeeds whether or not the key existed.
    pub async fn delete(&mut self, key: &str) -> Result<Written, Failure> {
        match self {
            WorkloadClient::Grpc(c) => c.delete(key).await,
            WorkloadClient::Resp(c) => c.delete(key).await,
        }
    }
}

/// The gRPC side: two `geocache-client`s.
pub(crate) struct GrpcClient {
    /// Pinned to the home replica: reads at the configured level.
    home: Client,
    /// Every node, follows the leader: writes, cas and the cas's read.
    any: Client,
    level: ReadLevel,
}

impl GrpcClient {
    async fn connect(
        nodes: &[String],
        home: usize,
        level: ReadLevel,
        timeout: Duration,
        tls_ca_pem: Option<&[u8]>,
    ) -> Result<GrpcClient> {
        let home_addr = nodes.get(home).context("no home node")?;
        let home = client_builder(tls_ca_pem)
            .endpoints([home_addr.clone()])
            .discovery(false)
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .await
            .context("build a worker's home client")?;
        let any = client_builder(tls_ca_pem)
            .endpoints(nodes.to_vec())
            .timeout(timeout)
            .connect_timeout(timeout / 2)
            .attempt_timeout(timeout / 2)
            .build()
            .await
            .context("build a worker's cluster client")?;
        Ok(GrpcClient { home, any, level })
    }

    async fn read(&mut self, key: &str, min_version: Option<u64>) -> Result<Option<String>, Failure> {
        let mut options = read_options(self.level);
        if let Some(version) = min_version {
            options = options.with_min_version(version);
        }
        let entry = self.home.get_with(key.to_string(), options).await.map_err(grpc_failure)?;
        Ok(entry.map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    async fn read_versioned(&mut self, key: &str) -> Result<Option<(String, u64)>, Failure> {
        let entry = self.any.get_with(key.to_string(), ReadOptions::linearizable()).await.map_err(grpc_failure)?;
        Ok(entry.map(|e| (String::from_utf8_lossy(&e.value).into_owned(), e.version)))
    }

    async fn set(&mut self, key: &str, value: &str, ttl: Option<Duration>) -> Result<Written, Failure> {
        let options = match ttl {
            Some(ttl) => SetOptions::new().with_ttl(ttl),
            None => SetOptions::new(),
        };
        match self.any.set_with(key.to_string(), value.to_string(), options).await.map_err(grpc_failure)? {
            w if w.applied => Ok(written(&w)),
            // An unconditional set always applies; if the node says otherwise, it did not.
            w => Err(Failure::fail(format!("not applied: {w:?}"))),
        }
    }

    async fn set_if_version(
        &mut self,
        key: &str,
        value: &str,
        version: Option<u64>,
    ) -> Result<Option<Written>, Failure> {
        let condition = version.map_or(Condition::IfAbsent, Condition::IfVersion);
        let options = SetOptions::new().with_condition(condition);
        let w = self.any.set_with(key.to_string(), value.to_string(), options).await.map_err(grpc_failure)?;
        Ok(w.applied.then(|| written(&w)))
    }

    async fn delete(&mut self, key: &str) -> Result<Written, Failure> {
        let w = self.any.delete(key.to_string()).await.map_err(grpc_failure)?;
        Ok(written(&w))
    }
}

/// The gRPC mapping: `fail` only if the client knows nothing was applied.
pub(crate) fn grpc_error_kind(e: &geocache_client::Error) -> EventKind {
    if e.outcome_known() {
        EventKind::Fail
    } else {
        EventKind::Info
    }
}

fn grpc_failure(e: geocache_client::Error) -> Failure {
    Failure { kind: grpc_error_kind(&e), message: e.to_string(), retry_elsewhere: false }
}

/// The log index a write's result pins the next read to (its version if it has no index).
fn written(w: &WriteResult) -> Written {
    Written { version: if w.log_index > 0 { w.log_index } else { w.version } }
}

/// The RESP side: a read connection to the home node and a write connection to some node, each
/// made on first use and dropped after an unknown outcome.
pub(crate) struct RespClient {
    /// Every node's RESP address.
    nodes: Vec<String>,
    home: usize,
    level: ReadLevel,
    timeout: Duration,
    reader: Option<MultiplexedConnection>,
    writer: Option<MultiplexedConnection>,
    /// The node the write connection goes to (an index into `nodes`).
    write_node: usize,
}

/// Backoff between two tries of a write that was refused with nothing applied: starts here,
/// doubles, stays under [`RETRY_BACKOFF_MAX`].
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(10);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(100);

impl RespClient {
    fn new(nodes: &[String], home: usize, level: ReadLevel, timeout: Duration) -> RespClient {
        RespClient { nodes: nodes.to_vec(), home, level, timeout, reader: None, writer: None, write_node: home }
    }

    async fn read(&mut self, key: &str, min_version: Option<u64>) -> Result<Option<String>, Failure> {
        let deadline = Instant::now() + self.timeout;
        let mut pipe = redis::pipe();
        if let Some(version) = min_version {
            pipe.cmd("CLIENT").arg("MINVERSION").arg(version);
        }
        pipe.cmd("GET").arg(key);
        if min_version.is_some() {
            pipe.cmd("CLIENT").arg("MINVERSION").arg(0);
        }
        if self.reader.is_none() {
            let addr = &self.nodes[self.home];
            let mut conn = connect(addr, deadline).await?;
            let mut setup = redis::pipe();
            setup.cmd("CLIENT").arg("READLEVEL");
            match self.level {
                ReadLevel::Linearizable => setup.arg("linearizable"),
                ReadLevel::Stale => setup.arg("stale"),
                ReadLevel::Bounded(ms) => setup.arg("bounded").arg(ms.max(1)),
            };
            // Nothing is read yet, so a failure here is a `fail` whatever it is.
            let replies = query(&mut conn, &setup, deadline).await.map_err(|f| Failure::fail(f.message))?;
            if let Err(f) = expect_ok(&replies[0]) {
                return Err(Failure::fail(format!("CLIENT READLEVEL at {addr}: {}", f.message)));
            }
            self.reader = Some(conn);
        }
        let conn = self.reader.as_mut().expect("connected above");
        let replies = match query(conn, &pipe, deadline).await {
            Ok(replies) => replies,
            Err(f) => {
                self.reader = None;
                return Err(f);
            }
        };
        if let Some(pinned) = min_version.map(|_| expect_ok(&replies[0])).transpose().err() {
            // The GET ran unpinned: it must not be recorded as a pinned read.
            self.reader = None;
            return Err(Failure::fail(format!("CLIENT MINVERSION: {}", pinned.message)));
        }
        let get = usize::from(min_version.is_some());
        let result = match &replies[get] {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
            Value::ServerError(e) => Err(server_failure(e)),
            other => Err(Failure::info(format!("unexpected reply to GET: {other:?}"))),
        };
        // A pin that was not cleared would hold for later reads too.
        if min_version.is_some() && expect_ok(&replies[2]).is_err() {
            self.reader = None;
        }
        if result.as_ref().is_err_and(|f| f.kind == EventKind::Info) {
            self.reader = None;
        }
        result
    }

    async fn set(&mut self, key: &str, value: &str, ttl: Option<Duration>) -> Result<Written, Failure> {
        let mut set = redis::cmd("SET");
        set.arg(key).arg(value);
        if let Some(ttl) = ttl {
            set.arg("PX").arg(ttl.as_millis() as u64);
        }
        let reply = self.write(set).await?;
        match reply.0 {
            Value::Okay => Ok(reply.1),
            Value::SimpleString(s) if s == "OK" => Ok(reply.1),
            // Nil: a condition did not hold. An unconditional SET always applies.
            Value::Nil => Err(Failure::fail("not applied")),
            other => {
                self.writer = None;
                Err(Failure::info(format!("unexpected reply to SET: {other:?}")))
            }
        }
    }

    async fn delete(&mut self, key: &str) -> Result<Written, Failure> {
        let mut del = redis::cmd("DEL");
        del.arg(key);
        let reply = self.write(del).await?;
        match reply.0 {
            Value::Int(0 | 1) => Ok(reply.1),
            other => {
                self.writer = None;
                Err(Failure::info(format!("unexpected reply to DEL: {other:?}")))
            }
        }
    }

    /// Sends `write` with `GEOCACHE.LASTVERSION` behind it, to the write node; after a refusal
    /// another node may not give (`TRYAGAIN`: no leader, no quorum), or when no connection can be
    /// made, tries the next node (with a short backoff) until the deadline. Returns the write's
    /// reply (never an error reply) and the version to pin.
    async fn write(&mut self, write: redis::Cmd) -> Result<(Value, Written), Failure> {
        let deadline = Instant::now() + self.timeout;
        let mut pipe = redis::pipe();
        pipe.add_command(write).cmd("GEOCACHE.LASTVERSION");
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            let refused = match self.write_once(&pipe, deadline).await {
                Ok(done) => return Ok(done),
                Err(f) if f.retry_elsewhere => f,
                Err(f) => {
                    if f.kind == EventKind::Info {
                        // The next operation is a new process's: start it on another node.
                        self.move_writes();
                    }
                    return Err(f);
                }
            };
            self.move_writes();
            let now = Instant::now();
            if now + backoff >= deadline {
                return Err(refused);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }

    /// One try of a write pipeline on the current write node.
    async fn write_once(&mut self, pipe: &redis::Pipeline, deadline: Instant) -> Result<(Value, Written), Failure> {
        if self.writer.is_none() {
            self.writer = Some(connect(&self.nodes[self.write_node], deadline).await?);
        }
        let conn = self.writer.as_mut().expect("connected above");
        let mut replies = query(conn, pipe, deadline).await?;
        let last_version = replies.pop().expect("two replies");
        let reply = replies.pop().expect("two replies");
        if let Value::ServerError(e) = &reply {
            return Err(server_failure(e));
        }
        // The write was acknowledged; a version we cannot read just means no pin.
        let version = match last_version {
            Value::Int(v) if v > 0 => v as u64,
            _ => 0,
        };
        Ok((reply, Written { version }))
    }

    /// Drops the write connection and sends the next write to the next node.
    fn move_writes(&mut self) {
        self.writer = None;
        self.write_node = (self.write_node + 1) % self.nodes.len();
    }
}

/// A connection to the RESP port at `addr`, made by `deadline`. Failing to connect is a `fail`:
/// nothing was sent.
async fn connect(addr: &str, deadline: Instant) -> Result<MultiplexedConnection, Failure> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(Failure::fail(format!("no time left to connect to {addr}")));
    }
    let client = redis::Client::open(format!("redis://{addr}/"))
        .map_err(|e| Failure::fail(format!("bad RESP address {addr}: {e}")))?;
    // The deadline is ours (below), not the crate's (500 ms by default).
    let config = redis::AsyncConnectionConfig::new().set_connection_timeout(Some(remaining)).set_response_timeout(None);
    match tokio::time::timeout(remaining, client.get_multiplexed_async_connection_with_config(&config)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(Failure::elsewhere(format!("connect to {addr}: {e}"))),
        Err(_) => Err(Failure::elsewhere(format!("connect to {addr}: timed out"))),
    }
}

/// Sends `pipe` and returns one reply per command, error replies included, or an `info` if the
/// replies did not all arrive by `deadline` (the commands may have run).
async fn query(
    conn: &mut MultiplexedConnection,
    pipe: &redis::Pipeline,
    deadline: Instant,
) -> Result<Vec<Value>, Failure> {
    let expected = pipe.cmd_iter().count();
    let mut pipe = pipe.clone();
    let sent = pipe.ignore_errors().query_async::<Vec<Value>>(conn);
    match tokio::time::timeout_at(deadline, sent).await {
        Ok(Ok(replies)) if replies.len() == expected => Ok(replies),
        Ok(Ok(replies)) => Err(Failure::info(format!("{} replies to {expected} commands", replies.len()))),
        Ok(Err(e)) => Err(Failure::info(format!("connection: {e}"))),
        Err(_) => Err(Failure::info("timed out")),
    }
}

/// `+OK`, or the reason it was not.
fn expect_ok(reply: &Value) -> Result<(), Failure> {
    match reply {
        Value::Okay => Ok(()),
        Value::SimpleString(s) if s == "OK" => Ok(()),
        Value::ServerError(e) => Err(server_failure(e)),
        other => Err(Failure::info(format!("expected OK, got {other:?}"))),
    }
}

/// The RESP mapping of an error reply, by its prefix (the node's `resp::reply` mapping): a
/// refusal is `fail`; `TIMEOUT`, an internal error and any prefix the node does not send are
/// `info`.
fn server_failure(e: &redis::ServerError) -> Failure {
    let message = match e.details() {
        Some(detail) => format!("{} {detail}", e.code()),
        None => e.code().to_string(),
    };
    match e.code() {
        "TRYAGAIN" => Failure::elsewhere(message),
        "STALE" | "NOPERM" | "OOM" => Failure::fail(message),
        "ERR" if !e.details().is_some_and(|d| d.starts_with("internal error")) => Failure::fail(message),
        _ => Failure::info(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse() {
        assert_eq!("grpc".parse::<Protocol>(), Ok(Protocol::Grpc));
        assert_eq!("resp".parse::<Protocol>(), Ok(Protocol::Resp));
        assert!("http".parse::<Protocol>().is_err());
        assert!(Protocol::Grpc.supports_cas() && !Protocol::Resp.supports_cas());
    }

    #[test]
    fn only_unknown_grpc_outcomes_are_info() {
        assert_eq!(grpc_failure(geocache_client::Error::Timeout("t".into())).kind, EventKind::Info);
        assert_eq!(grpc_failure(geocache_client::Error::Transport("t".into())).kind, EventKind::Info);
        let unavailable = geocache_client::Error::Unavailable { message: "no quorum".into(), leader: None };
        assert_eq!(grpc_failure(unavailable).kind, EventKind::Fail);
    }

    #[test]
    fn only_refusals_are_resp_failures() {
        let reply = |line: &str| -> redis::ServerError {
            let value = redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap();
            match value {
                Value::ServerError(e) => e,
                other => panic!("{other:?}"),
            }
        };
        for refused in [
            "TRYAGAIN no leader yet",
            "STALE bound 380ms exceeds 200ms",
            "ERR value exceeds 4194304 bytes",
            "NOPERM no",
            "OOM the cache is full",
        ] {
            let f = server_failure(&reply(refused));
            assert_eq!(f.kind, EventKind::Fail, "{refused}");
            assert_eq!(f.message, refused);
            // Only a refusal for want of a leader or quorum is worth a try at another node.
            assert_eq!(f.retry_elsewhere, refused.starts_with("TRYAGAIN"), "{refused}");
        }
        for unknown in [
            "TIMEOUT proposed (the write may or may not have applied)",
            "ERR internal error: storage",
            "MOVED 1 127.0.0.1:1",
            "SOMETHINGNEW x",
        ] {
            assert_eq!(server_failure(&reply(unknown)).kind, EventKind::Info, "{unknown}");
        }
    }
}
