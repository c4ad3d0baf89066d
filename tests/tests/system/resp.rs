//! The Redis-protocol front door on a real 3-node cluster, driven by the `redis` crate (tokio,
//! not cluster mode) and, where a test needs bytes no client would send, by a raw socket: every
//! command, RESP3 through `HELLO 3`, pipelining, exact `INCR` under concurrency, read levels,
//! a follower forwarding writes, and bad input closing only its own connection; and the port's
//! security: `AUTH` and roles with `--tokens`, TLS with `--tls-*` (a small tokio-rustls client
//! speaking raw RESP, so the test trusts exactly the cluster CA and uses ring, like the node).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use geocache_tests::{eventually, Listeners, TestCluster};
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_geocache-under-test");
/// A small value limit, so an oversized value is cheap to send.
const MAX_VALUE: usize = 1024;
/// The longest bulk a node reads: the larger of the value and key limits (the key limit, 4 KiB,
/// by default).
const BULK_LIMIT: usize = 4096;

/// A connection to node `id`'s RESP port, in RESP2 or RESP3, with deadlines fit for a loaded
/// 2-core machine (the crate's default response timeout is 500 ms).
async fn connect(cluster: &TestCluster, id: u64, resp3: bool) -> Result<MultiplexedConnection> {
    connect_as(cluster, id, None, resp3).await
}

/// [`connect`], authenticating with `token` on connect if given (`AUTH token`, or
/// `HELLO 3 AUTH default token` in RESP3, as the crate does).
async fn connect_as(cluster: &TestCluster, id: u64, token: Option<&str>, resp3: bool) -> Result<MultiplexedConnection> {
    let addr = cluster.resp_addr(id).context("node has no RESP port")?;
    let auth = token.map_or(String::new(), |t| format!(":{t}@"));
    let url = if resp3 { format!("redis://{auth}{addr}/?protocol=resp3") } else { format!("redis://{auth}{addr}/") };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(15)));
    let client = redis::Client::open(url)?;
    // The port opens with the node; poll until it answers.
    Ok(eventually(&format!("node {id}'s RESP port to answer"), Duration::from_secs(20), || {
        let client = client.clone();
        let config = config.clone();
        async move { client.get_multiplexed_async_connection_with_config(&config).await.ok() }
    })
    .await?)
}

/// The error reply of `result` as `CODE message`, failing if it succeeded.
fn error_of<T: std::fmt::Debug>(result: redis::RedisResult<T>) -> Result<String> {
    match result {
        Ok(v) => bail!("expected an error reply, got {v:?}"),
        Err(e) => Ok(format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))),
    }
}

async fn cmd<T: redis::FromRedisValue>(conn: &mut MultiplexedConnection, args: &[&str]) -> redis::RedisResult<T> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await
}

/// A raw socket to node `id`'s RESP port.
async fn raw(cluster: &TestCluster, id: u64) -> Result<tokio::net::TcpStream> {
    Ok(tokio::net::TcpStream::connect(cluster.resp_addr(id).context("no RESP port")?).await?)
}

/// Reads until the peer closes (or resets) the connection, within a deadline; returns what came.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> Result<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.context("the server kept the connection open")?;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// Reads exactly `want` bytes' worth of replies (the test knows their size).
async fn read_exactly(stream: &mut tokio::net::TcpStream, want: usize) -> Result<String> {
    let mut got = vec![0u8; want];
    tokio::time::timeout(Duration::from_secs(15), stream.read_exact(&mut got)).await??;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_and_bad_input_over_resp2_and_resp3() -> Result<()> {
    let value_limit = MAX_VALUE.to_string();
    let cluster = TestCluster::start_with_resp(BIN, 3, &["--max-value-bytes", &value_limit]).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let follower = (1..=3).find(|id| *id != leader).expect("three nodes");
    let mut c = connect(&cluster, leader, false).await?;

    // Connection commands.
    assert_eq!(cmd::<String>(&mut c, &["PING"]).await?, "PONG");
    assert_eq!(cmd::<String>(&mut c, &["PING", "hi"]).await?, "hi");
    assert_eq!(cmd::<String>(&mut c, &["ECHO", "hello"]).await?, "hello");
    assert_eq!(cmd::<String>(&mut c, &["SELECT", "0"]).await?, "OK");
    assert!(error_of(cmd::<String>(&mut c, &["SELECT", "1"]).await)?.starts_with("ERR DB index is out of range"));
    assert_eq!(cmd::<String>(&mut c, &["CLIENT", "SETNAME", "tester"]).await?, "OK");
    assert_eq!(cmd::<String>(&mut c, &["CLIENT", "GETNAME"]).await?, "tester");
    assert!(cmd::<i64>(&mut c, &["CLIENT", "ID"]).await? > 0);
    let count: i64 = cmd(&mut c, &["COMMAND", "COUNT"]).await?;
    let table: Vec<Value> = cmd(&mut c, &["COMMAND"]).await?;
    assert_eq!(table.len() as i64, count);

    // GET, SET and its options.
    assert_eq!(c.get::<_, Option<String>>("k").await?, None);
    assert_eq!(cmd::<String>(&mut c, &["SET", "k", "v1"]).await?, "OK");
    assert_eq!(c.get::<_, String>("k").await?, "v1");
    assert_eq!(cmd::<Option<String>>(&mut c, &["SET", "k", "x", "NX"]).await?, None, "NX on a present key");
    assert_eq!(cmd::<Option<String>>(&mut c, &["SET", "absent", "x", "XX"]).await?, None, "XX on an absent key");
    assert_eq!(c.exists::<_, i64>("absent").await?, 0);
    assert_eq!(cmd::<Option<String>>(&mut c, &["SET", "k", "v2", "XX", "GET"]).await?.as_deref(), Some("v1"));
    assert_eq!(cmd::<String>(&mut c, &["SET", "k", "v3", "EX", "100"]).await?, "OK");
    let ttl: i64 = cmd(&mut c, &["TTL", "k"]).await?;
    assert!((95..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(cmd::<String>(&mut c, &["SET", "k", "v4", "KEEPTTL"]).await?, "OK");
    let pttl: i64 = cmd(&mut c, &["PTTL", "k"]).await?;
    assert!(pttl > 90_000 && pttl <= 100_000, "KEEPTTL kept the expiry: pttl {pttl}");
    assert_eq!(c.get::<_, String>("k").await?, "v4");
    assert_eq!(cmd::<String>(&mut c, &["SET", "k", "v5", "PX", "50000"]).await?, "OK");
    let pttl: i64 = cmd(&mut c, &["PTTL", "k"]).await?;
    assert!(pttl > 40_000 && pttl <= 50_000, "pttl {pttl}");
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    assert_eq!(cmd::<String>(&mut c, &["SET", "at", "1", "EXAT", &(now_s + 200).to_string()]).await?, "OK");
    let ttl: i64 = cmd(&mut c, &["TTL", "at"]).await?;
    assert!((190..=201).contains(&ttl), "EXAT ttl {ttl}");
    let past_ms = (now_s - 10) * 1000;
    assert_eq!(cmd::<String>(&mut c, &["SET", "at", "2", "PXAT", &past_ms.to_string()]).await?, "OK");
    assert_eq!(c.get::<_, Option<String>>("at").await?, None, "an expiry in the past deletes");
    assert_eq!(cmd::<String>(&mut c, &["SET", "k", "v6"]).await?, "OK");
    assert_eq!(cmd::<i64>(&mut c, &["TTL", "k"]).await?, -1, "a plain SET drops the expiry");
    assert_eq!(cmd::<i64>(&mut c, &["TTL", "nothing"]).await?, -2);
    assert!(error_of(cmd::<String>(&mut c, &["SET", "k", "v", "NX", "XX"]).await)?.starts_with("ERR syntax error"));
    assert!(error_of(cmd::<String>(&mut c, &["SET", "k", "v", "EX", "0"]).await)?.starts_with("ERR invalid expire"));

    // The version a write produced, for pinning reads elsewhere.
    let version: u64 = cmd(&mut c, &["GEOCACHE.LASTVERSION"]).await?;
    assert!(version > 0);

    // Multi-key commands.
    assert_eq!(cmd::<String>(&mut c, &["MSET", "a", "1", "b", "2", "c", "3"]).await?, "OK");
    let got: Vec<Option<String>> = cmd(&mut c, &["MGET", "a", "nope", "c"]).await?;
    assert_eq!(got, vec![Some("1".into()), None, Some("3".into())]);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "a", "b", "nope", "a"]).await?, 3);
    assert_eq!(cmd::<i64>(&mut c, &["DEL", "a", "b", "nope"]).await?, 2);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "a", "b"]).await?, 0);

    // Expiry commands.
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRE", "c", "100"]).await?, 1);
    assert!((95..=100).contains(&cmd::<i64>(&mut c, &["TTL", "c"]).await?));
    assert_eq!(cmd::<i64>(&mut c, &["PEXPIRE", "c", "80000"]).await?, 1);
    assert!(cmd::<i64>(&mut c, &["PTTL", "c"]).await? <= 80_000);
    assert_eq!(cmd::<i64>(&mut c, &["EXPIREAT", "c", &(now_s + 300).to_string()]).await?, 1);
    assert!(cmd::<i64>(&mut c, &["TTL", "c"]).await? > 200);
    assert_eq!(cmd::<i64>(&mut c, &["PEXPIREAT", "c", &((now_s + 400) * 1000).to_string()]).await?, 1);
    assert!(cmd::<i64>(&mut c, &["TTL", "c"]).await? > 300);
    assert_eq!(cmd::<i64>(&mut c, &["PERSIST", "c"]).await?, 1);
    assert_eq!(cmd::<i64>(&mut c, &["TTL", "c"]).await?, -1);
    assert_eq!(cmd::<i64>(&mut c, &["PERSIST", "c"]).await?, 0, "nothing to persist");
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRE", "missing", "10"]).await?, 0);
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRE", "c", "-1"]).await?, 1, "a negative expiry deletes");
    assert_eq!(c.exists::<_, i64>("c").await?, 0);

    // Counters.
    assert_eq!(cmd::<i64>(&mut c, &["INCR", "n"]).await?, 1);
    assert_eq!(cmd::<i64>(&mut c, &["INCRBY", "n", "41"]).await?, 42);
    assert_eq!(cmd::<i64>(&mut c, &["DECR", "n"]).await?, 41);
    assert_eq!(cmd::<i64>(&mut c, &["DECRBY", "n", "40"]).await?, 1);
    assert!(error_of(cmd::<i64>(&mut c, &["INCR", "k"]).await)?.contains("not an integer"));
    assert_eq!(cmd::<String>(&mut c, &["SET", "big", &i64::MAX.to_string()]).await?, "OK");
    assert!(error_of(cmd::<i64>(&mut c, &["INCR", "big"]).await)?.contains("overflow"));

    // DBSIZE, INFO, FLUSHDB (replicated: a follower sees it).
    let size: i64 = cmd(&mut c, &["DBSIZE"]).await?;
    assert_eq!(size, 3, "k, n, big");
    let info: String = cmd(&mut c, &["INFO"]).await?;
    for needle in ["# Server", "redis_version:", "# Replication", "role:master", "# Keyspace", "db0:keys=3", "# Geo"] {
        assert!(info.contains(needle), "INFO lacks {needle}: {info}");
    }
    assert!(info.contains(&format!("geo_node_id:{leader}")) && info.contains("geo_role:leader"), "{info}");
    let geo: String = cmd(&mut c, &["INFO", "geo"]).await?;
    assert!(geo.contains("geo_applied_index:") && geo.contains("geo_staleness_bound_ms:") && !geo.contains("# Server"));
    assert_eq!(cmd::<String>(&mut c, &["FLUSHDB"]).await?, "OK");
    let mut f = connect(&cluster, follower, false).await?;
    assert_eq!(cmd::<i64>(&mut f, &["DBSIZE"]).await?, 0, "a linearizable DBSIZE on a follower sees the flush");
    let info: String = cmd(&mut f, &["INFO", "replication"]).await?;
    assert!(info.contains("role:slave") && info.contains("master_link_status:up"), "{info}");

    // Unknown commands are refused and the connection stays usable.
    let unknown = error_of(cmd::<String>(&mut c, &["LPUSH", "list", "a"]).await)?;
    assert!(unknown.starts_with("ERR unknown command 'LPUSH'"), "{unknown}");
    assert!(error_of(cmd::<String>(&mut c, &["GET"]).await)?.contains("wrong number of arguments"));
    assert_eq!(cmd::<String>(&mut c, &["PING"]).await?, "PONG");

    // RESP3: HELLO 3 (sent by the client on connect) and its typed replies.
    let mut r3 = connect(&cluster, follower, true).await?;
    let hello: Value = cmd(&mut r3, &["HELLO", "3"]).await?;
    let Value::Map(fields) = hello else { bail!("HELLO 3 answers a map, got {hello:?}") };
    assert!(fields.iter().any(|(k, v)| *k == Value::BulkString(b"proto".to_vec()) && *v == Value::Int(3)));
    assert_eq!(cmd::<Value>(&mut r3, &["GET", "nothing"]).await?, Value::Nil);
    assert_eq!(cmd::<String>(&mut r3, &["SET", "r3", "yes"]).await?, "OK", "a follower forwards the write");
    assert_eq!(cmd::<String>(&mut r3, &["GET", "r3"]).await?, "yes");
    let hello2: Value = cmd(&mut r3, &["HELLO", "2"]).await?;
    assert!(matches!(hello2, Value::Array(_)), "HELLO 2 answers a flat array: {hello2:?}");
    assert!(error_of(cmd::<Value>(&mut r3, &["HELLO", "4"]).await)?.starts_with("NOPROTO"));

    // A value over the limit that still fits a bulk (bulks may be as long as the key limit,
    // 4 KiB, which is larger here) is refused by validation; the connection stays.
    let over = "x".repeat(MAX_VALUE + 1);
    let refused = error_of(cmd::<String>(&mut c, &["SET", "oversized", &over]).await)?;
    assert!(refused.starts_with(&format!("ERR value exceeds {MAX_VALUE} bytes")), "{refused}");
    assert_eq!(cmd::<String>(&mut c, &["PING"]).await?, "PONG");
    // A bulk over every limit closes only that connection, and nothing is written.
    let mut doomed = connect(&cluster, leader, false).await?;
    let too_big = "x".repeat(BULK_LIMIT + 1);
    let refused: redis::RedisResult<String> = cmd(&mut doomed, &["SET", "oversized", &too_big]).await;
    assert!(refused.is_err(), "an oversized bulk is refused: {refused:?}");
    assert!(cmd::<String>(&mut doomed, &["PING"]).await.is_err(), "its connection is closed");
    assert_eq!(cmd::<String>(&mut c, &["PING"]).await?, "PONG", "other connections are not");
    assert_eq!(c.exists::<_, i64>("oversized").await?, 0);
    // The same, byte by byte: the refusal comes from the header alone, before the body.
    let mut s = raw(&cluster, leader).await?;
    s.write_all(format!("*3\r\n$3\r\nSET\r\n$9\r\noversized\r\n${}\r\n", BULK_LIMIT + 1).as_bytes()).await?;
    let answer = read_to_close(&mut s).await?;
    assert!(answer.starts_with("-ERR Protocol error"), "{answer:?}");
    // A malformed frame: one protocol error, then the connection closes.
    let mut s = raw(&cluster, follower).await?;
    s.write_all(b"*1\r\n:5\r\n").await?;
    let answer = read_to_close(&mut s).await?;
    assert!(answer.starts_with("-ERR Protocol error"), "{answer:?}");
    // Inline commands (nc, telnet) and errors on a raw socket that stays open.
    let mut s = raw(&cluster, follower).await?;
    s.write_all(b"PING\r\nNOSUCH a\r\nPING\r\n").await?;
    let expected = "+PONG\r\n-ERR unknown command 'NOSUCH', with args beginning with: 'a' \r\n+PONG\r\n";
    assert_eq!(read_exactly(&mut s, expected.len()).await?, expected);
    assert_eq!(c.exists::<_, i64>("oversized").await?, 0, "nothing was written");

    // QUIT answers, then closes.
    let mut s = raw(&cluster, leader).await?;
    s.write_all(b"*1\r\n$4\r\nQUIT\r\n").await?;
    assert_eq!(read_to_close(&mut s).await?, "+OK\r\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_counters_forwarding_and_read_levels() -> Result<()> {
    // Slow probes, so a follower's staleness bound is usually far above 1 ms (for the refusal).
    let cluster = TestCluster::start_with_resp(BIN, 3, &["--probe-interval", "500ms"]).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let mut on_leader = connect(&cluster, leader, false).await?;

    // Pipelining: many commands in flight on one connection, answered in order.
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
    }
    for i in 0..200 {
        pipe.cmd("GET").arg(format!("p{i}"));
    }
    let got: Vec<i64> = pipe.query_async(&mut on_leader).await?;
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    // On a follower, where every write is forwarded to the leader.
    let mut on_follower = connect(&cluster, followers[0], false).await?;
    let mut pipe = redis::pipe();
    for _ in 0..50 {
        pipe.cmd("INCR").arg("piped");
        pipe.cmd("GET").arg("piped");
    }
    let got: Vec<i64> = pipe.query_async(&mut on_follower).await?;
    let expected: Vec<i64> = (1..=50).flat_map(|i| [i, i]).collect();
    assert_eq!(got, expected, "each GET sees the INCR before it");

    // INCR is exact under concurrency: compare-and-set on the version, from every node at once.
    let mut tasks = Vec::new();
    for (n, id) in [leader, followers[0], followers[1], leader].into_iter().enumerate() {
        let mut conn = connect(&cluster, id, n % 2 == 0).await?;
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..25 {
                seen.push(cmd::<i64>(&mut conn, &["INCR", "counter"]).await?);
            }
            redis::RedisResult::Ok(seen)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=100).collect::<Vec<i64>>(), "every increment applied once, each value seen once");
    assert_eq!(cmd::<i64>(&mut on_leader, &["GET", "counter"]).await?, 100);

    // Read-your-writes anywhere: a stale follower read pinned to the version a write produced.
    assert_eq!(cmd::<String>(&mut on_leader, &["SET", "ryw", "mine"]).await?, "OK");
    let version: u64 = cmd(&mut on_leader, &["GEOCACHE.LASTVERSION"]).await?;
    let mut far = connect(&cluster, followers[1], false).await?;
    assert_eq!(cmd::<String>(&mut far, &["CLIENT", "READLEVEL", "stale"]).await?, "OK");
    assert_eq!(cmd::<String>(&mut far, &["CLIENT", "MINVERSION", &version.to_string()]).await?, "OK");
    assert_eq!(cmd::<String>(&mut far, &["GET", "ryw"]).await?, "mine");
    assert!(cmd::<u64>(&mut far, &["GEOCACHE.LASTVERSION"]).await? == 0, "no write on this connection yet");
    // A connection reads its own writes at any level.
    assert_eq!(cmd::<String>(&mut far, &["SET", "own", "1"]).await?, "OK");
    assert_eq!(cmd::<String>(&mut far, &["GET", "own"]).await?, "1");

    // Bounded reads: a generous bound is served, a 1 ms bound refused with the replica's bound.
    let mut bounded = connect(&cluster, followers[0], false).await?;
    assert_eq!(cmd::<String>(&mut bounded, &["CLIENT", "READLEVEL", "bounded", "60000"]).await?, "OK");
    let read = eventually("a bounded read within 60 s", Duration::from_secs(20), || {
        let mut bounded = bounded.clone();
        async move { cmd::<String>(&mut bounded, &["GET", "ryw"]).await.ok() }
    })
    .await?;
    assert_eq!(read, "mine");
    assert_eq!(cmd::<String>(&mut bounded, &["CLIENT", "READLEVEL", "bounded", "1"]).await?, "OK");
    let refusal = eventually("a bounded read refused as stale", Duration::from_secs(20), || {
        let mut bounded = bounded.clone();
        async move { error_of(cmd::<String>(&mut bounded, &["GET", "ryw"]).await).ok() }
    })
    .await?;
    assert!(refusal.starts_with("STALE bound ") && refusal.ends_with("exceeds 1ms"), "{refusal}");
    assert!(error_of(cmd::<String>(&mut bounded, &["CLIENT", "READLEVEL", "bounded", "0"]).await)?.starts_with("ERR"));
    assert_eq!(cmd::<String>(&mut bounded, &["CLIENT", "READLEVEL", "linearizable"]).await?, "OK");
    assert_eq!(cmd::<String>(&mut bounded, &["GET", "ryw"]).await?, "mine");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_query_buffers_and_idle_clients_are_bounded() -> Result<()> {
    let value_limit = MAX_VALUE.to_string();
    let args = ["--max-connections", "4", "--idle-timeout", "3s", "--max-value-bytes", &value_limit];
    let cluster = TestCluster::start_with_resp(BIN, 1, &args).await?;

    // The connection cap: four are served, a fifth is told so and closed.
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = raw(&cluster, 1).await?;
        s.write_all(b"PING\r\n").await?;
        assert_eq!(read_exactly(&mut s, 7).await?, "+PONG\r\n");
        open.push(s);
    }
    let mut fifth = raw(&cluster, 1).await?;
    assert_eq!(read_to_close(&mut fifth).await?, "-ERR max number of clients reached\r\n");
    // Once one closes, a new connection is served again.
    drop(open.pop());
    let served = eventually("a connection to be served after one closed", Duration::from_secs(10), || async {
        let mut s = raw(&cluster, 1).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        (read_exactly(&mut s, 7).await.ok()? == "+PONG\r\n").then_some(s)
    })
    .await?;
    drop(open);

    // A command that never completes cannot grow its query buffer without bound: past four
    // largest messages (about 280 KiB here) the connection is closed, and nothing ran.
    let mut s = raw(&cluster, 1).await?;
    s.write_all(b"*1000000\r\n$3\r\nSET\r\n").await?;
    let chunk = "$1\r\nx\r\n".repeat(10_000);
    let mut closed_early = false;
    for _ in 0..100 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            closed_early = true;
            break;
        }
    }
    let answer = read_to_close(&mut s).await?;
    assert!(closed_early || answer.contains("query buffer"), "{answer:?}");

    // An idle client is disconnected after --idle-timeout; one that is talking is not.
    drop(served);
    let mut idle = raw(&cluster, 1).await?;
    idle.write_all(b"PING\r\n").await?;
    assert_eq!(read_exactly(&mut idle, 7).await?, "+PONG\r\n");
    let started = std::time::Instant::now();
    assert_eq!(read_to_close(&mut idle).await?, "");
    assert!(started.elapsed() >= Duration::from_secs(2), "closed after {:?}", started.elapsed());
    let mut c = connect(&cluster, 1, false).await?;
    assert_eq!(cmd::<String>(&mut c, &["PING"]).await?, "PONG");
    Ok(())
}

const READ_TOKEN: &str = "read-token-for-resp-tests-0001";
const WRITE_TOKEN: &str = "write-token-for-resp-tests-0002";
const ADMIN_TOKEN: &str = "admin-token-for-resp-tests-0003";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_every_command_by_role_and_refusals_change_nothing() -> Result<()> {
    let tokens = [("read", READ_TOKEN), ("write", WRITE_TOKEN), ("admin", ADMIN_TOKEN)];
    let listeners = Listeners { resp: true, metrics: false };
    let cluster = TestCluster::start_with_tokens(BIN, 3, &tokens, &[], listeners).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let follower = (1..=3).find(|id| *id != leader).expect("three nodes");

    // An admin connection (AUTH on connect) writes the key the others try to change.
    let mut admin = connect_as(&cluster, leader, Some(ADMIN_TOKEN), false).await?;
    assert_eq!(cmd::<String>(&mut admin, &["SET", "k", "original"]).await?, "OK");

    // Unauthenticated: everything but AUTH, HELLO and QUIT is NOAUTH, and changes nothing.
    let mut anon = connect(&cluster, follower, false).await?;
    for args in [&["GET", "k"][..], &["SET", "k", "anon"], &["PING"], &["INFO"], &["DEL", "k"], &["CLIENT", "ID"]] {
        assert_eq!(error_of(cmd::<Value>(&mut anon, args).await)?, "NOAUTH Authentication required.", "{args:?}");
    }
    // Redis's checks before authentication still apply: an unknown command, a wrong arity.
    assert!(error_of(cmd::<Value>(&mut anon, &["LPUSH", "l", "a"]).await)?.starts_with("ERR unknown command"));
    assert!(error_of(cmd::<Value>(&mut anon, &["GET"]).await)?.starts_with("ERR wrong number of arguments"));
    assert!(error_of(cmd::<Value>(&mut anon, &["HELLO", "3"]).await)?
        .starts_with("NOAUTH HELLO must be called with the client already authenticated"));
    // A wrong token: WRONGPASS, and the connection stays open and unauthenticated.
    for args in
        [&["AUTH", "not-a-token-at-all"][..], &["AUTH", "default", "not-a-token-at-all"], &["AUTH", &READ_TOKEN[1..]]]
    {
        assert_eq!(
            error_of(cmd::<Value>(&mut anon, args).await)?,
            "WRONGPASS invalid username-password pair or user is disabled.",
        );
    }
    assert_eq!(error_of(cmd::<Value>(&mut anon, &["GET", "k"]).await)?, "NOAUTH Authentication required.");

    // A read token: reads, but every write is NOPERM and changes nothing.
    assert_eq!(cmd::<String>(&mut anon, &["AUTH", READ_TOKEN]).await?, "OK");
    assert_eq!(cmd::<String>(&mut anon, &["PING"]).await?, "PONG");
    assert_eq!(anon.get::<_, String>("k").await?, "original");
    for args in [
        &["SET", "k", "by-reader"][..],
        &["DEL", "k"],
        &["EXPIRE", "k", "1"],
        &["INCR", "counter"],
        &["MSET", "k", "x", "k2", "y"],
        &["FLUSHDB"],
    ] {
        let refused = error_of(cmd::<Value>(&mut anon, args).await)?;
        assert!(refused.starts_with("NOPERM") && refused.contains("needs write"), "{args:?}: {refused}");
    }
    // Still usable, and nothing changed (asked on the admin connection, at the leader).
    assert_eq!(cmd::<i64>(&mut anon, &["EXISTS", "k", "counter", "k2"]).await?, 1);
    assert_eq!(admin.get::<_, String>("k").await?, "original");
    assert_eq!(cmd::<i64>(&mut admin, &["TTL", "k"]).await?, -1);
    assert_eq!(cmd::<i64>(&mut admin, &["DBSIZE"]).await?, 1);

    // Another AUTH on the same connection takes the new token's role: a write token writes
    // (through the follower, forwarded to the leader).
    assert_eq!(cmd::<String>(&mut anon, &["AUTH", "anyone", WRITE_TOKEN]).await?, "OK");
    assert_eq!(cmd::<String>(&mut anon, &["SET", "k", "by-writer"]).await?, "OK");
    assert_eq!(admin.get::<_, String>("k").await?, "by-writer");

    // HELLO 3 AUTH authenticates and switches protocol in one command.
    let mut fresh = connect(&cluster, leader, false).await?;
    let hello: Value = cmd(&mut fresh, &["HELLO", "3", "AUTH", "default", WRITE_TOKEN]).await?;
    assert!(matches!(hello, Value::Map(_)), "HELLO 3 answers a map: {hello:?}");
    assert_eq!(cmd::<String>(&mut fresh, &["SET", "k2", "v2"]).await?, "OK");
    assert_eq!(fresh.get::<_, String>("k2").await?, "v2");
    // The crate's own HELLO 3 AUTH on connect, with a read token.
    let mut reader3 = connect_as(&cluster, follower, Some(READ_TOKEN), true).await?;
    assert_eq!(reader3.get::<_, String>("k").await?, "by-writer");
    assert!(error_of(cmd::<Value>(&mut reader3, &["SET", "k", "x"]).await)?.starts_with("NOPERM"));

    // No token reached any node's log.
    for id in 1..=3 {
        let log = cluster.log(id);
        for token in [READ_TOKEN, WRITE_TOKEN, ADMIN_TOKEN, &READ_TOKEN[1..]] {
            assert!(!log.contains(token), "node {id} logged a token");
        }
    }
    Ok(())
}

/// A TLS client that trusts only `ca_pem`, over ring (as the node).
fn tls_connector(ca_pem: &str) -> Result<tokio_rustls::TlsConnector> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)))
}

/// Sends one command (as a RESP array of bulks) and reads its reply: a simple string, error or
/// integer line as it came, a bulk as `$` and its text, a nil as `$-1`.
async fn call<S>(stream: &mut S, args: &[&str]) -> Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request += &format!("${}\r\n{a}\r\n", a.len());
    }
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut reply = Vec::new();
    let exchange = async {
        // The first line.
        while !reply.ends_with(b"\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await?;
            reply.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&reply[..reply.len() - 2]).into_owned();
        if let Some(len) = line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            let mut body = vec![0u8; len + 2];
            stream.read_exact(&mut body).await?;
            return anyhow::Ok(format!("${}", String::from_utf8_lossy(&body[..len])));
        }
        anyhow::Ok(line)
    };
    tokio::time::timeout(Duration::from_secs(15), exchange).await.context("no reply within 15 s")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_the_port_serves_only_tls_clients() -> Result<()> {
    let cluster = TestCluster::start_secure_listening(BIN, 1, &[], Listeners { resp: true, metrics: false }).await?;
    let addr = cluster.resp_addr(1).context("no RESP port")?;
    let ca = cluster.ca().context("a secure cluster has a CA")?.cert_pem.clone();

    // Plaintext RESP gets no RESP reply: the handshake fails and the connection closes.
    let mut plain = eventually("the RESP port to accept", Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(&addr).await.ok()
    })
    .await?;
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
    let got = read_to_close(&mut plain).await?;
    assert!(!got.contains("PONG") && !got.starts_with(['+', '-', ':', '$', '*', '%', '_']), "plaintext got {got:?}");
    eventually("the refused handshake in node 1's log", Duration::from_secs(20), || async {
        cluster.log(1).contains("connection refused in the TLS handshake").then_some(())
    })
    .await?;

    // A TLS client that trusts the cluster CA is served: writes and reads.
    let connector = tls_connector(&ca)?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    let mut tls = tokio::time::timeout(Duration::from_secs(15), connector.connect(name, tcp)).await??;
    assert_eq!(call(&mut tls, &["PING"]).await?, "+PONG");
    // The port has no tokens: AUTH is refused as on a Redis without a password.
    assert!(call(&mut tls, &["AUTH", "whatever-whatever"]).await?.starts_with("-ERR AUTH <password> called without"));
    // The one node leads once init returned; a TRYAGAIN meanwhile is retried until a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = call(&mut tls, &["SET", "secure", "value"]).await?;
        if reply == "+OK" {
            break;
        }
        if !reply.starts_with("-TRYAGAIN") || tokio::time::Instant::now() > deadline {
            bail!("SET over TLS: {reply}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(call(&mut tls, &["GET", "secure"]).await?, "$value");
    assert_eq!(call(&mut tls, &["EXISTS", "secure"]).await?, ":1");
    assert!(!cluster.log(1).contains("PRIVATE KEY"), "node 1 logged key material");
    Ok(())
}
