//! The `geocache` binary exactly as a user builds it (`cargo build --release`, or any workspace
//! build, which is what `cargo test --workspace` runs these against): no fault injection, and the
//! connection and message limits of its gRPC edge. Real processes on loopback ports.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geocache_node::launcher::{self, NodeProcess, NodeSpec};

use geocache_proto as pb;
use geocache_proto::admin_client::AdminClient;
use geocache_proto::cache_client::CacheClient;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_geocache");
const WITHIN: Duration = Duration::from_secs(30);

/// One `geocache serve` process (killed on drop) and its data dir.
struct Node {
    process: NodeProcess,
    spec: NodeSpec,
    addr: String,
    _dir: tempfile::TempDir,
}

/// Node 1's spec in a fresh temp dir, on a free port, its stderr in `node-1.log` there.
fn node_spec(extra: &[&str]) -> (NodeSpec, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", launcher::free_port().unwrap()).parse().unwrap();
    let peer = format!("127.0.0.1:{}", launcher::free_port().unwrap()).parse().unwrap();
    let spec =
        NodeSpec::in_dir(dir.path(), 1, addr, &launcher::REGIONS).with_peer(peer).with_args(extra.iter().copied());
    (spec, dir)
}

fn spawn(spec: &NodeSpec, env: &[(&str, &str)]) -> NodeProcess {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    NodeProcess::spawn(Path::new(BIN), spec, &[], &env).unwrap()
}

/// Starts a one-node cluster and waits until it takes writes.
async fn start_node(extra: &[&str], env: &[(&str, &str)]) -> Node {
    let (spec, dir) = node_spec(extra);
    let process = spawn(&spec, env);
    launcher::init(&spec, vec![], WITHIN).await.unwrap();
    let addr = spec.addr.to_string();
    eventually("the first write", || async { set(&addr, "warm-up", b"1".to_vec()).await.ok() }).await;
    Node { process, spec, addr, _dir: dir }
}

/// Waits for `process` to exit by itself; its exit code.
async fn exit_code(mut process: NodeProcess) -> Option<i32> {
    eventually("the process to exit", || {
        let exited = process.try_wait().unwrap();
        async move { exited.map(|status| status.code()) }
    })
    .await
}

async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    launcher::eventually(what, WITHIN, probe).await.unwrap()
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
    // With live fault points the first write's log flush or apply would kill the node.
    let node = start_node(&[], &[("FAILPOINTS", "log-flush-after=panic;apply-after=panic")]).await;
    for i in 0..5 {
        set(&node.addr, &format!("k{i}"), b"v".to_vec()).await.expect("writes go on: FAILPOINTS means nothing");
    }
    let mut node = node;
    assert!(node.process.try_wait().unwrap().is_none(), "the node is still running");

    let mut admin = AdminClient::connect(format!("http://{}", node.addr)).await.unwrap();
    let refused = admin.set_clock_offset(pb::SetClockOffsetRequest { offset_ms: 3_600_000 }).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let status =
        admin.status(pb::StatusRequest { local_only: true, with_state_hash: false }).await.unwrap().into_inner();
    assert_eq!(status.nodes[0].clock_offset_ms, 0);

    for flag in ["--fault-injection", "--clock-offset-ms=5"] {
        let out = Command::new(BIN).args(["serve", "--id", "2", flag]).stdin(Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} must be refused: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument"), "{out:?}");
    }
}

#[tokio::test]
async fn a_damaged_database_stops_serve_with_a_clear_error_and_no_panic() {
    let node = start_node(&[], &[]).await;
    set(&node.addr, "kept", b"v".to_vec()).await.unwrap();
    let Node { process, spec, _dir: dir, .. } = node;
    process.kill().unwrap();
    let db = spec.data_dir.join("db");
    std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(100).unwrap();

    for start in ["first", "second"] {
        let code = exit_code(spawn(&spec, &[])).await;
        let log = std::fs::read_to_string(spec.log_path.as_ref().unwrap()).unwrap();
        assert_eq!(code, Some(2), "{start} start after the damage: {log}");
        assert!(log.contains(&format!("{} is damaged", db.display())), "names the file: {log}");
        assert!(!log.contains("panicked"), "{log}");
    }
    drop(dir);
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
    // tonic's own client would give up at its end first, so the requests go out by hand.
    for i in 0..20 {
        let set = pb::SetRequest { key: format!("late{i}"), value: b"v".to_vec().into(), ..Default::default() };
        let (code, message) = raw_grpc(&node.addr, "/geocache.v1.Cache/Set", &set, "1n").await;
        assert_eq!(code, Code::DeadlineExceeded as i32, "{message}");
        assert!(message.contains("nothing was done"), "{message}");
    }
    for i in 0..20 {
        let found = cache(&node.addr).await.get(get_request(&format!("late{i}"))).await.unwrap().into_inner();
        assert!(!found.found, "a write refused for its deadline was applied anyway");
    }
    let (code, message) = raw_grpc(&node.addr, "/geocache.v1.Cache/Get", &get_request("late0"), "1n").await;
    assert_eq!(code, Code::DeadlineExceeded as i32, "{message}");
    assert!(!message.contains("applied"), "a read must not talk of writes: {message}");

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
