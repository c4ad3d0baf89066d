//! The proxy against an echo server on loopback. Nothing sleeps to synchronise: waits poll with a
//! deadline, and elapsed times are only measured.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const MS50: Duration = Duration::from_millis(50);

/// An echo server on a free loopback port; it runs until the test's runtime ends.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Sends `msg` and reads the echo; returns how long that took.
async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<Duration> {
    let start = Instant::now();
    stream.write_all(msg).await?;
    let mut back = vec![0; msg.len()];
    stream.read_exact(&mut back).await?;
    assert_eq!(back, msg);
    Ok(start.elapsed())
}

/// Polls `probe` until it is true (the launcher's one poll loop); panics after 5 s naming `what`.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut probe: impl FnMut() -> F) {
    let polled = crate::launcher::eventually(what, Duration::from_secs(5), || {
        let probe = probe();
        async move { probe.await.then_some(()) }
    });
    polled.await.unwrap_or_else(|e| panic!("{e}"));
}

/// Whether a connection to `addr` carries an echo within 1 s.
async fn echoes(addr: SocketAddr) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await else {
        return false;
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), round_trip(&mut s, b"probe")).await, Ok(Ok(_)))
}

/// Whether the peer closed `stream` (EOF or reset) within 2 s.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 16];
    matches!(tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test]
async fn a_round_trip_pays_the_delay_both_ways_and_delay_changes_apply() {
    let net = Netsim::new();
    let addr = net.add_link(1, 2, echo_server().await).unwrap();
    net.set_delay(1, 2, MS50).unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for _ in 0..3 {
        let rtt = round_trip(&mut s, b"ping").await.unwrap();
        assert!(rtt >= 2 * MS50, "round trip took {rtt:?}, less than twice the 50ms delay");
        assert!(rtt < Duration::from_secs(1), "round trip took {rtt:?}");
    }

    // On the same connection, the new delay applies to bytes read from now on.
    net.set_delay(1, 2, Duration::ZERO).unwrap();
    assert_eq!(net.delay(1, 2), Some(Duration::ZERO));
    let rtt = round_trip(&mut s, b"ping").await.unwrap();
    assert!(rtt < MS50, "with no delay a round trip took {rtt:?}");
    net.set_delay(1, 2, Duration::from_millis(80)).unwrap();
    let rtt = round_trip(&mut s, b"ping").await.unwrap();
    assert!(rtt >= Duration::from_millis(160), "with 80ms a round trip took {rtt:?}");
}

#[tokio::test]
async fn delayed_chunks_do_not_add_up() {
    // Ten messages written back to back arrive about one round trip after the first, not ten.
    let net = Netsim::new();
    let addr = net.add_link(1, 2, echo_server().await).unwrap();
    net.set_delay(1, 2, MS50).unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let start = Instant::now();
    let (mut r, mut w) = s.split();
    let writer = async {
        for i in 0..10u8 {
            w.write_all(&[i; 100]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await; // separate chunks
        }
    };
    let reader = async {
        let mut all = vec![0; 1000];
        r.read_exact(&mut all).await.unwrap();
        all
    };
    let ((), all) = tokio::join!(writer, reader);
    let elapsed = start.elapsed();
    assert!(all.chunks(100).enumerate().all(|(i, c)| c.iter().all(|b| *b == i as u8)), "out of order");
    assert!(elapsed >= 2 * MS50, "{elapsed:?}");
    assert!(elapsed < 10 * MS50, "delays added up: {elapsed:?}");
}

#[tokio::test]
async fn a_large_payload_passes_intact_in_order_at_full_speed() {
    let net = Netsim::new();
    let addr = net.add_link(1, 2, echo_server().await).unwrap();
    net.set_delay(1, 2, MS50).unwrap();
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    let (mut r, mut w) = s.split();
    let writer = async {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap(); // the FIN crosses the proxy too: the echo server then closes
    };
    let reader = async {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::join!(writer, reader);
    let elapsed = start.elapsed();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "payload corrupted or reordered");
    // 4 MiB is at least 64 reads of 64 KiB: paying 2 x 50ms per read in a row would take 6.4 s.
    assert!(elapsed >= 2 * MS50, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "the delay limited throughput: {elapsed:?}");
}

#[tokio::test]
async fn refuse_resets_connections_and_refuses_dials_until_up() {
    let net = Netsim::new();
    let addr = net.add_link(1, 2, echo_server().await).unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut s, b"hello").await.unwrap();
    assert_eq!(net.connections(1, 2), 1);

    net.set_link(1, 2, LinkState::Refuse).unwrap();
    assert!(closed(&mut s).await, "an existing connection survived Refuse");
    eventually("dials to be refused", || async {
        matches!(TcpStream::connect(addr).await, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    })
    .await;
    eventually("the reset connection to be forgotten", || async { net.connections(1, 2) == 0 }).await;

    net.set_link(1, 2, LinkState::Up).unwrap();
    eventually("the same port to accept and forward again", || echoes(addr)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_flapping_between_refuse_and_up_ends_up() {
    let net = Netsim::new();
    let addr = net.add_link(1, 2, echo_server().await).unwrap();
    for i in 0..200 {
        let state = if i % 2 == 0 { LinkState::Refuse } else { LinkState::Up };
        net.set_link(1, 2, state).unwrap();
        for _ in 0..i % 4 {
            tokio::task::yield_now().await; // let the accept loop see some states, miss others
        }
    }
    eventually("the link to forward again", || echoes(addr)).await;
}

#[tokio::test]
async fn blackhole_stalls_both_ways_and_heal_resets_stalled_connections() {
    let net = Netsim::new();
    let addr = net.add_link(1, 2, echo_server().await).unwrap();
    let mut old = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut old, b"hello").await.unwrap();

    net.set_link(1, 2, LinkState::Blackhole).unwrap();
    assert_eq!(net.link_state(1, 2), Some(LinkState::Blackhole));
    let stalled = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut old, b"lost")).await;
    assert!(stalled.is_err(), "bytes crossed a blackhole: {stalled:?}");
    // A new dial connects (the proxy accepts) but nothing comes back.
    let mut new = TcpStream::connect(addr).await.unwrap();
    let stalled = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut new, b"lost")).await;
    assert!(stalled.is_err(), "a connection made during the blackhole carried bytes");

    net.heal();
    assert_eq!(net.link_state(1, 2), Some(LinkState::Up));
    // Stalled connections are reset, never resumed with their old bytes.
    assert!(closed(&mut old).await, "a stalled connection resumed after heal");
    assert!(closed(&mut new).await, "a connection accepted in the blackhole resumed after heal");
    assert!(echoes(addr).await, "a new connection after heal does not work");
}

#[tokio::test]
async fn isolate_and_partition_set_both_directions() {
    let net = Netsim::new();
    let target = echo_server().await;
    net.add_mesh(&[(1, target), (2, target), (3, target), (4, target)]).unwrap();
    assert_eq!(net.links().len(), 12);
    let down = |net: &Netsim| {
        net.links().into_iter().filter(|(f, t)| net.link_state(*f, *t) != Some(LinkState::Up)).collect::<Vec<_>>()
    };

    net.isolate(3);
    assert_eq!(down(&net), vec![(1, 3), (2, 3), (3, 1), (3, 2), (3, 4), (4, 3)]);
    assert_eq!(net.link_state(1, 3), Some(LinkState::Blackhole));

    // A partition replaces what was there: 3 rejoins 1, and 4 (in no group) is alone.
    net.partition(&[vec![1, 3], vec![2]]);
    assert_eq!(down(&net), vec![(1, 2), (1, 4), (2, 1), (2, 3), (2, 4), (3, 2), (3, 4), (4, 1), (4, 2), (4, 3)]);
    net.partition_with(&[vec![1, 2, 3, 4]], LinkState::Refuse);
    assert!(down(&net).is_empty());
    net.isolate_with(1, LinkState::Refuse);
    assert_eq!(net.link_state(2, 1), Some(LinkState::Refuse));
    net.heal();
    assert!(down(&net).is_empty());
    assert_eq!(net.set_link(1, 9, LinkState::Up).unwrap_err().kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn routes_name_every_outgoing_link() {
    let net = Netsim::new();
    let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:7002".parse().unwrap();
    net.add_mesh(&[(1, a), (2, b)]).unwrap();
    let routes = net.routes_for(1);
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0], (2, net.link_addr(1, 2).unwrap()));
    assert_eq!(net.link_target(1, 2), Some(b));
    assert_eq!(net.route_args(2), vec!["--route".to_string(), format!("1={}", net.link_addr(2, 1).unwrap())]);
    assert_eq!(net.add_link(1, 2, b).unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    assert!(net.add_link(1, 3, "10.0.0.1:7003".parse().unwrap()).is_err(), "a non-loopback target was accepted");

    let regions = BTreeMap::from([(1, "us-east".to_string()), (2, "eu-west".to_string())]);
    net.apply_latency(&LatencyMatrix::uniform(Duration::from_millis(80)), &regions);
    assert_eq!(net.delay(1, 2), Some(Duration::from_millis(80)));
    assert_eq!(net.delay(2, 1), Some(Duration::from_millis(80)));
}

#[tokio::test]
async fn dropping_the_netsim_ends_every_link() {
    let net = Netsim::new();
    let addr = net.add_link(1, 2, echo_server().await).unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut s, b"hello").await.unwrap();
    drop(net);
    assert!(closed(&mut s).await, "a connection outlived the netsim");
    eventually("the proxy port to close", || async { TcpStream::connect(addr).await.is_err() }).await;
}

#[test]
fn raft_timing_fits_the_round_trip() {
    let ms = Duration::from_millis;
    // No WAN: the serve defaults.
    assert_eq!(super::raft_timing(Duration::ZERO), (ms(150), Duration::from_secs(1)));
    // 80ms one-way: a 160ms round trip, so heartbeats every 320ms and elections after 1.6s.
    assert_eq!(super::raft_timing(ms(80)), (ms(320), ms(1600)));
    let (heartbeat, election) = super::raft_timing(ms(150));
    assert!(heartbeat > 2 * ms(150) && election >= 5 * heartbeat);
}
