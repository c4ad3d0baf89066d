//! One connection's state (protocol, name, read level, versions) and what each command does,
//! through the protocol-neutral client API ([`CacheApi`]): the same validation, write path
//! (propose locally or forward to the leader once) and read levels as the gRPC port.
//!
//! Invariants:
//! * A command runs only once the connection's [`Gate`] admitted it (authentication and role,
//!   checked on the command's name before its arguments are parsed).
//! * A connection reads its own writes: every read waits until the replica has applied at least
//!   the connection's last write (and its `CLIENT MINVERSION`), whatever its read level.
//! * Read-modify-write commands (`INCR`/`DECR`/`INCRBY`/`DECRBY`, `SET ... GET`, `SET ... KEEPTTL`)
//!   are compare-and-set on the key's version (`Condition::IfVersion`, or `IfAbsent` for a missing
//!   key), retried on conflict until the request deadline, so they are exact under concurrency. A
//!   failed compare-and-set applies nothing; the retry reads at least up to the conflicting entry.
//! * Multi-key commands (`DEL`, `MSET`) validate every key and value first, so bad input changes
//!   nothing; then they apply key by key, each write atomic on its own but not all together
//!   (geocache has no multi-key transactions).

use std::time::Duration;

use bytes::Bytes;
use geocache_proto as pb;
use tokio::time::Instant;

use super::command::{
    self, ClientCommand, Command, CommandInfo, CommandSpec, Credentials, ExpireAt, LevelArg, SetCondition, SetExpiry,
    TABLE,
};
use super::gate::Gate;
use super::reply::{Protocol, Reply};
use crate::error::Error;
use crate::read::ReadLevel;
use crate::service::api::{duration_ms_ceil, CacheApi, Expiry, ReadSpec, Write};
use crate::state_machine::{Condition, EntryView};

/// The Redis version whose command semantics this front door follows (what `INFO` and `HELLO`
/// report as `redis_version`/`version`, for clients that check it).
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

/// What to do with the connection after a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Send the reply, then close (`QUIT`).
    Close,
}

/// Facts about the server a session reports (`INFO`).
#[derive(Clone, Debug)]
pub struct ServerFacts {
    pub started: Instant,
    pub port: u16,
    pub connected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// One connection's state.
pub struct Session {
    api: CacheApi,
    facts: ServerFacts,
    /// Whether the connection has authenticated, and its role.
    gate: Gate,
    pub id: u64,
    pub protocol: Protocol,
    name: Option<String>,
    level: ReadLevel,
    min_version: u64,
    /// The log index of this connection's last write (`GEOCACHE.LASTVERSION`).
    last_version: u64,
}

/// What a read-modify-write plan decides from the key's current entry.
enum Plan {
    /// Answer without writing.
    Answer(Reply),
    /// Write this value with this expiry, conditioned on the entry read; answer if it applies.
    Write { value: Bytes, expiry: Expiry, answer: Reply },
}

impl Session {
    pub fn new(api: CacheApi, facts: ServerFacts, id: u64, gate: Gate) -> Session {
        Session {
            api,
            facts,
            gate,
            id,
            protocol: Protocol::Resp2,
            name: None,
            level: ReadLevel::Linearizable,
            min_version: 0,
            last_version: 0,
        }
    }

    /// Runs one command (`args`, its name first) if the connection may, and returns its reply.
    /// The gate is checked on the command's name and arity, before its arguments are parsed
    /// (as Redis does); a refused or malformed command is an error reply and changes nothing.
    pub async fn handle(&mut self, args: Vec<Bytes>) -> (Reply, After) {
        let admitted = command::lookup(&args).and_then(|spec| self.gate.admit(spec.needs));
        if let Err(reply) = admitted {
            return (reply, After::Continue);
        }
        match command::parse(args) {
            Ok(command) => self.execute(command).await,
            Err(reply) => (reply, After::Continue),
        }
    }

    /// Runs one parsed command and returns its reply. Errors become error replies here; the
    /// connection stays usable after any of them.
    async fn execute(&mut self, command: Command) -> (Reply, After) {
        let after = if command == Command::Quit { After::Close } else { After::Continue };
        let reply = match self.run(command).await {
            Ok(reply) | Err(reply) => reply,
        };
        (reply, after)
    }

    async fn run(&mut self, command: Command) -> Result<Reply, Reply> {
        match command {
            Command::Get { key } => {
                let entry = self.get(&key).await?;
                Ok(entry.map_or(Reply::Nil, |e| Reply::Bulk(e.value)))
            }
            Command::Set { key, value, expiry, condition, get } => self.set(key, value, expiry, condition, get).await,
            Command::Del { keys } => {
                for key in &keys {
                    self.api.validate_key(key)?;
                }
                let mut deleted = 0;
                for key in keys {
                    deleted += i64::from(self.write(Write::Delete { key }).await?.applied);
                }
                Ok(Reply::Int(deleted))
            }
            Command::Exists { keys } => {
                let (entries, _) = self.api.get_many(&keys, self.read_spec(0), self.timeout()).await?;
                Ok(Reply::Int(entries.iter().filter(|e| e.is_some()).count() as i64))
            }
            Command::MGet { keys } => {
                let (entries, _) = self.api.get_many(&keys, self.read_spec(0), self.timeout()).await?;
                Ok(Reply::Array(entries.into_iter().map(|e| e.map_or(Reply::Nil, |e| Reply::Bulk(e.value))).collect()))
            }
            Command::MSet { pairs } => {
                let writes: Vec<Write> = pairs
                    .into_iter()
                    .map(|(key, value)| Write::Set { key, value, expiry: Expiry::Never, condition: Condition::Always })
                    .collect();
                for write in &writes {
                    self.api.validate(write)?;
                }
                for write in writes {
                    self.write(write).await?;
                }
                Ok(Reply::Ok)
            }
            Command::Expire { key, at } => {
                let expiry = match at {
                    ExpireAt::In(ms) if ms > 0 => Expiry::After(Duration::from_millis(ms as u64)),
                    // Zero, negative or a time in the past: an expiry at or before the log clock
                    // deletes the key when applied (Redis deletes it too).
                    ExpireAt::In(_) => Expiry::At(0),
                    ExpireAt::At(ms) => Expiry::At(ms.max(0) as u64),
                };
                let applied = self.write(Write::Expire { key, expiry }).await?.applied;
                Ok(Reply::Int(i64::from(applied)))
            }
            Command::Persist { key } => {
                // 0 without writing when there is nothing to persist; a concurrent change of the
                // expiry in between is overwritten by the persist, which is what was asked.
                match self.get(&key).await? {
                    Some(e) if e.expires_at_ms.is_some() => {
                        let applied = self.write(Write::Expire { key, expiry: Expiry::Never }).await?.applied;
                        Ok(Reply::Int(i64::from(applied)))
                    }
                    _ => Ok(Reply::Int(0)),
                }
            }
            Command::Ttl { key, millis } => {
                let entry = self.get(&key).await?;
                let now_ms = self.api.node().clock().now_ms();
                Ok(Reply::Int(match entry {
                    None => -2,
                    Some(EntryView { expires_at_ms: None, .. }) => -1,
                    Some(EntryView { expires_at_ms: Some(at), .. }) => {
                        let remaining = at.saturating_sub(now_ms) as i64;
                        if millis {
                            remaining
                        } else {
                            (remaining + 500) / 1000
                        }
                    }
                }))
            }
            Command::IncrBy { key, delta } => self.incr_by(key, delta).await,
            Command::Ping(None) => Ok(Reply::Simple("PONG".into())),
            Command::Ping(Some(message)) | Command::Echo(message) => Ok(Reply::Bulk(message)),
            Command::Select(0) => Ok(Reply::Ok),
            Command::Select(_) => Err(Reply::err("DB index is out of range")),
            Command::Info(sections) => Ok(Reply::bulk(self.info(&sections))),
            Command::Client(client) => self.client(client),
            Command::Command(info) => Ok(command_info(info)),
            Command::Auth(credentials) => Ok(self.gate.auth(&credentials)),
            Command::Hello { protocol, auth, name } => self.hello(protocol, auth, name),
            Command::Quit => Ok(Reply::Ok),
            Command::DbSize => {
                let (n, _) = self.api.read(self.read_spec(0), self.timeout(), |cache, now| cache.live_len(now)).await?;
                Ok(Reply::Int(n as i64))
            }
            Command::FlushDb => {
                self.write(Write::Clear).await?;
                Ok(Reply::Ok)
            }
            Command::LastVersion => Ok(Reply::Int(self.last_version as i64)),
        }
    }

    fn timeout(&self) -> Duration {
        self.api.timeout(None)
    }

    /// The connection's read level, waiting for its own writes, its `MINVERSION` and `at_least`.
    fn read_spec(&self, at_least: u64) -> ReadSpec {
        ReadSpec { level: self.level, min_version: self.min_version.max(self.last_version).max(at_least) }
    }

    async fn get(&self, key: &str) -> Result<Option<EntryView>, Error> {
        let (mut entries, _) = self.api.get_many(&[key], self.read_spec(0), self.timeout()).await?;
        Ok(entries.pop().flatten())
    }

    /// Writes through the shared write path and records the version it produced. A write the
    /// state machine refused for a deterministic reason is an error reply.
    async fn write(&mut self, write: Write) -> Result<pb::WriteResponse, Reply> {
        let written = self.api.write(write, None, false, self.timeout()).await?;
        let response = written.response;
        self.last_version = self.last_version.max(response.log_index);
        if !response.rejected.is_empty() {
            return Err(Reply::Error("OOM", response.rejected));
        }
        Ok(response)
    }

    async fn set(
        &mut self,
        key: String,
        value: Bytes,
        expiry: SetExpiry,
        condition: SetCondition,
        get: bool,
    ) -> Result<Reply, Reply> {
        let fixed_expiry = match expiry {
            SetExpiry::None => Some(Expiry::Never),
            SetExpiry::After(d) => Some(Expiry::After(d)),
            SetExpiry::At(ms) => Some(Expiry::At(ms)),
            SetExpiry::Keep => None,
        };
        if let (false, Some(expiry)) = (get, fixed_expiry) {
            // The common case: one conditional write, no read.
            let condition = match condition {
                SetCondition::Always => Condition::Always,
                SetCondition::IfAbsent => Condition::IfAbsent,
                SetCondition::IfPresent => Condition::IfPresent,
            };
            let applied = self.write(Write::Set { key, value, expiry, condition }).await?.applied;
            return Ok(if applied { Reply::Ok } else { Reply::Nil });
        }
        // GET or KEEPTTL need the current entry: compare-and-set on it.
        self.read_modify_write(&key, |current| {
            let old = current.map_or(Reply::Nil, |e| Reply::Bulk(e.value.clone()));
            let skip = match condition {
                SetCondition::Always => false,
                SetCondition::IfAbsent => current.is_some(),
                SetCondition::IfPresent => current.is_none(),
            };
            let answer = if get { old.clone() } else { Reply::Ok };
            if skip {
                return Ok(Plan::Answer(if get { old } else { Reply::Nil }));
            }
            let expiry = fixed_expiry.unwrap_or_else(|| kept_expiry(current));
            Ok(Plan::Write { value: value.clone(), expiry, answer })
        })
        .await
    }

    async fn incr_by(&mut self, key: String, delta: i64) -> Result<Reply, Reply> {
        self.read_modify_write(&key, |current| {
            let now = match current {
                None => 0,
                Some(e) => std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| Reply::err("value is not an integer or out of range"))?,
            };
            let next = now.checked_add(delta).ok_or_else(|| Reply::err("increment or decrement would overflow"))?;
            // INCR keeps the key's expiry, as in Redis.
            Ok(Plan::Write {
                value: Bytes::from(next.to_string()),
                expiry: kept_expiry(current),
                answer: Reply::Int(next),
            })
        })
        .await
    }

    /// Reads `key`, lets `plan` decide, and writes conditioned on the version read; on conflict
    /// reads again (at least up to the conflicting entry) until the request deadline.
    async fn read_modify_write(
        &mut self,
        key: &str,
        mut plan: impl FnMut(Option<&EntryView>) -> Result<Plan, Reply>,
    ) -> Result<Reply, Reply> {
        let deadline = Instant::now() + self.timeout();
        let mut at_least = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Unavailable(
                    "compare-and-set kept conflicting with other writes; nothing applied".into(),
                )
                .into());
            }
            let (mut entries, _) = self.api.get_many(&[key], self.read_spec(at_least), remaining).await?;
            let current = entries.pop().flatten();
            let (value, expiry, answer) = match plan(current.as_ref())? {
                Plan::Answer(reply) => return Ok(reply),
                Plan::Write { value, expiry, answer } => (value, expiry, answer),
            };
            let condition = current.as_ref().map_or(Condition::IfAbsent, |e| Condition::IfVersion(e.version));
            let response = self.write(Write::Set { key: key.to_string(), value, expiry, condition }).await?;
            if response.applied {
                return Ok(answer);
            }
            at_least = response.log_index;
        }
    }

    fn client(&mut self, command: ClientCommand) -> Result<Reply, Reply> {
        Ok(match command {
            ClientCommand::SetName(name) => {
                self.name = (!name.is_empty()).then_some(name);
                Reply::Ok
            }
            ClientCommand::GetName => self.name.clone().map_or(Reply::Nil, Reply::bulk),
            ClientCommand::Id => Reply::Int(self.id as i64),
            ClientCommand::SetInfo => Reply::Ok,
            ClientCommand::ReadLevel(level) => {
                self.level = match level {
                    LevelArg::Linearizable => ReadLevel::Linearizable,
                    LevelArg::Stale => ReadLevel::Stale,
                    LevelArg::Bounded(d) => ReadLevel::Bounded(d),
                };
                Reply::Ok
            }
            ClientCommand::MinVersion(v) => {
                self.min_version = v;
                Reply::Ok
            }
        })
    }

    /// `HELLO`: checks the protocol, then authenticates (or insists the connection already
    /// is), and only then switches protocol and name, so a refused `HELLO` changes nothing.
    fn hello(
        &mut self,
        protocol: Option<i64>,
        auth: Option<Credentials>,
        name: Option<String>,
    ) -> Result<Reply, Reply> {
        let protocol = match protocol {
            None => self.protocol,
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return Err(Reply::Error("NOPROTO", "unsupported protocol version".into())),
        };
        self.gate.hello(auth.as_ref())?;
        self.protocol = protocol;
        if let Some(name) = name {
            self.name = Some(name);
        }
        let role = if self.api.node().is_leader() { "master" } else { "replica" };
        let proto = if self.protocol == Protocol::Resp3 { 3 } else { 2 };
        Ok(Reply::Map(vec![
            (Reply::bulk("server"), Reply::bulk("geocache")),
            (Reply::bulk("version"), Reply::bulk(REDIS_COMPAT_VERSION)),
            (Reply::bulk("proto"), Reply::Int(proto)),
            (Reply::bulk("id"), Reply::Int(self.id as i64)),
            (Reply::bulk("mode"), Reply::bulk("standalone")),
            (Reply::bulk("role"), Reply::bulk(role)),
            (Reply::bulk("modules"), Reply::Array(Vec::new())),
        ]))
    }

    /// `INFO`: this node's own view, answered locally without waiting on any read level.
    fn info(&self, sections: &[String]) -> String {
        let all = sections.is_empty() || sections.iter().any(|s| s == "all" || s == "everything" || s == "default");
        let wants = |name: &str| all || sections.iter().any(|s| s == name);
        let node = self.api.node();
        let metrics = node.metrics();
        let mut out = String::new();
        if wants("server") {
            out += &format!(
                "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\ngeocache_version:{}\r\nredis_mode:standalone\r\n\
                 process_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                self.facts.port,
                self.facts.started.elapsed().as_secs(),
            );
        }
        if wants("clients") {
            let connected = self.facts.connected.load(std::sync::atomic::Ordering::Relaxed);
            out += &format!("# Clients\r\nconnected_clients:{connected}\r\n\r\n");
        }
        let leader = node.leader();
        if wants("replication") {
            let is_leader = node.is_leader();
            out += &format!("# Replication\r\nrole:{}\r\n", if is_leader { "master" } else { "slave" });
            if !is_leader {
                let link = if leader.is_some() { "up" } else { "down" };
                out += &format!("master_link_status:{link}\r\n");
            }
            if let Some((id, addr)) = &leader {
                out += &format!("geocache_leader_id:{id}\r\ngeocache_leader_grpc_addr:{addr}\r\n");
            }
            out += "\r\n";
        }
        if wants("keyspace") {
            let now_ms = node.clock().now_ms();
            let (keys, expires) =
                node.reader().read(|cache, _| (cache.live_len(now_ms), cache.live_with_expiry(now_ms)));
            out += "# Keyspace\r\n";
            if keys > 0 {
                out += &format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n");
            }
            out += "\r\n";
        }
        if wants("geo") {
            let bound = node.staleness().bound().map_or("none".to_string(), |b| duration_ms_ceil(b).to_string());
            out += &format!(
                "# Geo\r\ngeo_node_id:{}\r\ngeo_region:{}\r\ngeo_role:{}\r\ngeo_term:{}\r\ngeo_leader_id:{}\r\n\
                 geo_applied_index:{}\r\ngeo_staleness_bound_ms:{bound}\r\n\r\n",
                node.id(),
                node.config().region,
                format!("{:?}", metrics.state).to_ascii_lowercase(),
                metrics.current_term,
                leader.map_or("none".to_string(), |(id, _)| id.to_string()),
                metrics.last_applied.map_or(0, |l| l.index),
            );
        }
        out
    }
}

/// The expiry an entry has now, to keep across a rewrite (`KEEPTTL`, `INCR`).
fn kept_expiry(current: Option<&EntryView>) -> Expiry {
    current.and_then(|e| e.expires_at_ms).map_or(Expiry::Never, Expiry::At)
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO`, `COMMAND DOCS`.
fn command_info(info: CommandInfo) -> Reply {
    let describe = |c: &CommandSpec| {
        Reply::Array(vec![
            Reply::bulk(c.name),
            Reply::Int(c.arity),
            Reply::Array(c.flags.iter().map(|f| Reply::Simple(f.to_string())).collect()),
            Reply::Int(c.first_key),
            Reply::Int(c.last_key),
            Reply::Int(c.key_step),
        ])
    };
    match info {
        CommandInfo::Count => Reply::Int(TABLE.len() as i64),
        CommandInfo::Docs => Reply::Map(Vec::new()),
        CommandInfo::Info(names) if names.is_empty() => Reply::Array(TABLE.iter().map(describe).collect()),
        CommandInfo::Info(names) => Reply::Array(
            names.iter().map(|n| TABLE.iter().find(|e| e.name == n).map_or(Reply::Nil, describe)).collect(),
        ),
    }
}
