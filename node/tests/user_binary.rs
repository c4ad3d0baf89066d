//! The `geocache` binary exactly as a user builds it (`cargo build --release`, or any workspace
//! build, which is what `cargo test --workspace` runs these against): no fault injection, and the
//! connection and message limits of its gRPC edge. Real processes on loopback ports.

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use geocache_proto as pb;
use geocache_proto::admin_client::AdminClient;
use geocache_proto::cache_client::CacheClient;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_geocache");

/// One `geocache serve` process, killed on drop.
struct Node {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `geocache serve` for node 1; it exits when this process goes (`--exit-with-stdin`).
fn serve_command(addr: &str, dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut command = one_shot_serve_command(addr, dir, extra);
    command.arg("--exit-with-stdin");
    command
}

/// `geocache serve` run to completion with `Command::output` (no stdin to watch).
fn one_shot_serve_command(addr: &str, dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--id", "1", "--listen", addr, "--data-dir"])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Starts a one-node cluster and waits until it takes writes.
async fn start_node(extra: &[&str], env: &[(&str, &str)]) -> Node {
    let addr = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let child = serve_command(&addr, dir.path(), extra).envs(env.iter().copied()).spawn().unwrap();
    let node = Node { child, addr, dir };
    eventually("the node to answer init", || async {
        let mut admin = AdminClient::connect(format!("http://{}", node.addr)).await.ok()?;
        admin.init(pb::InitRequest { members: vec![] }).await.ok()
    })
    .await;
    eventually("the first write", || async { set(&node.addr, "warm-up", b"1".to_vec()).await.ok() }).await;
    node
}

async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cache(addr: &str) -> CacheClient<tonic::transport::Channel> {
    CacheClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

async fn set(addr: &str, key: &str, value: Vec<u8>) -> Result<pb::WriteResponse, tonic::Status> {
    let mut client = CacheClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?
        .max_encoding_message_size(64 << 20);
    client
        .set(pb::SetRequest { key: key.into(), value: value.into(), ..Default::default() })
        .await
        .map(|r| r.into_inner())
}

fn get_request(key: &str) -> pb::GetRequest {
    pb::GetRequest { key: key.into(), consistency: pb::Consistency::Linearizable as i32, ..Default::default() }
}

#[tokio::test]
async fn fault_points_and_fault_flags_do_not_exist_in_the_users_binary() {
    // In a build with live fault points the first write's flush would kill the node, and a
    // follower... here the only node would skip nothing; the flush point is the test.
    let node = start_node(&[], &[("FAILPOINTS", "log-flush-after=panic;apply-after=panic")]).await;
    for i in 0..5 {
        set(&node.addr, &format!("k{i}"), b"v".to_vec()).await.expect("writes go on: FAILPOINTS means nothing");
    }
    let mut node = node;
    assert!(node.child.try_wait().unwrap().is_none(), "the node is still running");

    let mut admin = AdminClient::connect(format!("http://{}", node.addr)).await.unwrap();
    let refused = admin.set_clock_offset(pb::SetClockOffsetRequest { offset_ms: 3_600_000 }).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let status = admin.status(pb::StatusRequest { local_only: true }).await.unwrap().into_inner();
    assert_eq!(status.nodes[0].clock_offset_ms, 0);

    for flag in ["--fault-injection", "--clock-offset-ms=5"] {
        let out =
            one_shot_serve_command("127.0.0.1:1", node.dir.path(), &[flag]).stdin(Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} must be refused: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument"), "{out:?}");
    }
}

#[tokio::test]
async fn a_damaged_database_stops_serve_with_a_clear_error_and_no_panic() {
    let node = start_node(&[], &[]).await;
    set(&node.addr, "kept", b"v".to_vec()).await.unwrap();
    let mut node = node;
    let _ = node.child.kill();
    let _ = node.child.wait();
    let (addr, dir) = (node.addr.clone(), node.dir.path().to_path_buf());
    let db = dir.join("db");
    std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(100).unwrap();

    let out: Output = one_shot_serve_command(&addr, &dir, &[]).stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "names the file: {stderr}");
    assert!(stderr.contains("damaged"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Refused again on the next start: the refusal did not turn it into an empty store.
    let again: Output = one_shot_serve_command(&addr, &dir, &[]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));
}

#[tokio::test]
async fn client_messages_are_sized_from_the_value_limit() {
    let node = start_node(&["--max-value-bytes", "1048576"], &[]).await;
    let limit = 1 << 20;
    set(&node.addr, "max", vec![7u8; limit]).await.expect("a value of exactly the limit is stored");
    let found = cache(&node.addr).await.get(get_request("max")).await.unwrap().into_inner();
    assert_eq!(found.value.len(), limit);
    // Over the limit but under the message size: refused by validation.
    let over = set(&node.addr, "over", vec![7u8; limit + 1]).await.unwrap_err();
    assert_eq!(over.code(), Code::InvalidArgument, "{over:?}");
    // Far over it: refused as it arrives, never buffered whole.
    let huge = set(&node.addr, "huge", vec![7u8; 32 << 20]).await.unwrap_err();
    assert!(matches!(huge.code(), Code::ResourceExhausted | Code::OutOfRange), "{huge:?}");
}

#[tokio::test]
async fn a_missed_server_deadline_is_deadline_exceeded_and_malformed_protobuf_is_invalid_argument() {
    let node = start_node(&[], &[]).await;
    // tonic's own client would give up at its end first, so the request goes out by hand.
    for i in 0..5 {
        let set = pb::SetRequest { key: format!("late{i}"), value: b"v".to_vec().into(), ..Default::default() };
        let (code, message) = raw_grpc(&node.addr, "/geocache.v1.Cache/Set", &set, "1n").await;
        assert_eq!(code, Code::DeadlineExceeded as i32, "{message}");
        assert!(message.contains("may or may not have applied"), "{message}");
    }
    let (code, message) = raw_grpc(&node.addr, "/geocache.v1.Cache/Get", &get_request("late0"), "1n").await;
    if code != Code::Ok as i32 {
        assert_eq!(code, Code::DeadlineExceeded as i32, "{message}");
        assert!(!message.contains("applied"), "a read must not talk of writes: {message}");
    }

    // A GetRequest whose field 1 (the key, a string) arrives as a varint.
    let mut grpc = tonic::client::Grpc::new(
        tonic::transport::Channel::from_shared(format!("http://{}", node.addr)).unwrap().connect().await.unwrap(),
    );
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/geocache.v1.Cache/Get");
    let malformed = grpc
        .unary(
            tonic::Request::new(WrongWireType { key: 42 }),
            path,
            tonic_prost::ProstCodec::<WrongWireType, pb::GetResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed:?}");
}

/// A message with field 1 as a varint, where `GetRequest` has a string.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(uint64, tag = "1")]
    key: u64,
}

/// Whether the server closed `socket` (EOF or reset) within `within`.
fn closed_within(socket: &mut TcpStream, within: Duration) -> bool {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // the server's HTTP/2 settings or GOAWAY: keep reading
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    return false;
                }
            }
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

#[tokio::test]
async fn idle_connections_are_closed_and_their_number_is_capped() {
    let node = start_node(&["--idle-timeout", "1s", "--max-connections", "4"], &[]).await;
    // Let the set-up's own connections go idle and close.
    eventually("the set-up connections to close", || async {
        let mut probe = TcpStream::connect(&node.addr).ok()?;
        (!closed_within(&mut probe, Duration::from_millis(300))).then_some(())
    })
    .await;
    // Four silent connections fill the node; a fifth is closed at once.
    let mut held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&node.addr).unwrap()).collect();
    let mut fifth = TcpStream::connect(&node.addr).unwrap();
    assert!(closed_within(&mut fifth, Duration::from_millis(500)), "over the cap: closed at once");
    // The silent ones are closed once idle, well within a few idle timeouts.
    for socket in &mut held {
        assert!(closed_within(socket, Duration::from_secs(10)), "an idle connection is closed");
    }
    // And the node serves again.
    eventually("a write after the idle connections closed", || async {
        set(&node.addr, "after", b"v".to_vec()).await.ok()
    })
    .await;
}

/// Sends one unary gRPC call with `grpc-timeout: timeout` over a bare HTTP/2 connection and
/// returns the answer's `grpc-status` and `grpc-message`.
async fn raw_grpc(addr: &str, path: &str, message: &impl prost::Message, timeout: &str) -> (i32, String) {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(connection);
    let encoded = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    let request = tonic::codegen::http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(Full::new(bytes::Bytes::from(framed)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let field =
        |name: &str| parts.headers.get(name).or_else(|| trailers.get(name)).map(|v| v.to_str().unwrap().to_string());
    let code = field("grpc-status").map_or(-1, |c| c.parse().unwrap());
    // `grpc-message` is percent-encoded.
    let message = field("grpc-message")
        .map(|m| percent_encoding::percent_decode_str(&m).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    (code, message)
}
