//! Redis as a peer: one `redis-server` on 127.0.0.1 without persistence (`--save ''
//! --appendonly no`), the way a cache in front of a database is usually run, and a
//! [`Backend`] over the `redis` crate's multiplexed connection (`SET`, `GET`).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use geocache_node::launcher;
use geocache_node::loadgen::Backend;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};

use crate::error::{Error, Result};
use crate::process::{wait_ready, PeerProcess};

/// Longest one call may take: the same as geocache-client's default call timeout (the `redis`
/// crate's own default is 500 ms).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One connection to the server. Clones share it; connect once per client for one connection
/// each.
#[derive(Clone)]
pub struct RedisConnection {
    connection: MultiplexedConnection,
}

impl RedisConnection {
    /// Connects to `url` (`redis://127.0.0.1:PORT/`).
    pub async fn connect(url: &str) -> std::result::Result<RedisConnection, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL {url}: {e}"))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("cannot connect to Redis at {url}: {e}"))?;
        Ok(RedisConnection { connection })
    }

    /// The server's version, from `INFO server`.
    pub async fn version(&self) -> std::result::Result<String, String> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| format!("INFO: {e}"))?;
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| "INFO server names no redis_version".to_string())
    }
}

impl Backend for RedisConnection {
    type Error = RedisError;

    async fn set(&self, key: String, value: Bytes) -> std::result::Result<(), RedisError> {
        redis::cmd("SET").arg(key).arg(&value[..]).query_async::<()>(&mut self.connection.clone()).await
    }

    async fn get(&self, key: String) -> std::result::Result<bool, RedisError> {
        let value: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(&mut self.connection.clone()).await?;
        Ok(value.is_some())
    }

    fn error_kind(e: &RedisError) -> &'static str {
        if e.is_timeout() {
            "timeout"
        } else if e.is_connection_dropped() || e.is_io_error() {
            "transport"
        } else {
            "server"
        }
    }
}

/// One `redis-server` on 127.0.0.1; killed and its dir removed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    /// Declared before `dir`: the server dies before its dir is removed.
    _process: [PeerProcess; 1],
    url: String,
    /// The Redis version the server reports.
    pub version: String,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` without persistence and waits up to `within` until it answers.
    pub async fn start(redis_server: &Path, within: Duration) -> Result<RedisServer> {
        let dir = tempfile::Builder::new()
            .prefix("geocache-compare-redis-")
            .tempdir()
            .map_err(Error::io("cannot create a temp dir for Redis"))?;
        let port = launcher::free_port()?;
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            &dir.path().display().to_string(),
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let log = dir.path().join("redis.log");
        let mut process = [PeerProcess::spawn("redis-server", redis_server, &args, &log, &[])?];
        let url = format!("redis://127.0.0.1:{port}/");
        let probe_url = url.clone();
        let version = wait_ready("redis-server to answer", within, &mut process, || {
            let url = probe_url.clone();
            async move { RedisConnection::connect(&url).await?.version().await }
        })
        .await?;
        Ok(RedisServer { _process: process, url, version, dir })
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the server keeps its log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
