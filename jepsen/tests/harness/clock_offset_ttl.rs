//! The harness's own node binary (`geocache-node-under-test`), the only one with fault
//! injection: its clock can be skewed while it runs, and a TTL written after a fast leader's
//! clock moved log time ahead still counts from log time (it is never shortened).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use geocache_client::{Client, SetOptions};
use geocache_node::launcher::{self, NodeProcess, NodeSpec};
use geocache_proto as pb;

const NODE: &str = env!("CARGO_BIN_EXE_geocache-node-under-test");
const WITHIN: Duration = Duration::from_secs(20);

/// Host wall clock, unix ms.
fn host_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_skewed_by_fault_injection_never_shortens_a_later_ttl() -> Result<()> {
    const HOUR_MS: i64 = 3_600_000;
    let dir = tempfile::tempdir()?;
    let addr = format!("127.0.0.1:{}", launcher::free_port()?).parse()?;
    let peer = format!("127.0.0.1:{}", launcher::free_port()?).parse()?;
    let spec = NodeSpec::in_dir(dir.path(), 1, addr, &launcher::REGIONS).with_peer(peer);
    let _node = NodeProcess::spawn(Path::new(NODE), &spec, &[], &[])?;
    launcher::init(&spec, vec![], WITHIN).await?;
    let client = Client::builder().endpoints([addr.to_string()]).build().await?;
    launcher::eventually("the first write", WITHIN, || async { client.set("warm-up", "1").await.ok() }).await?;

    // The node (the leader) runs an hour fast: the time it stamps moves the log clock an hour on.
    let mut admin = launcher::admin(&addr.to_string(), &Default::default()).await?;
    let previous = admin.set_clock_offset(pb::SetClockOffsetRequest { offset_ms: HOUR_MS }).await?.into_inner();
    assert_eq!(previous.previous_offset_ms, 0);
    let status = launcher::local_status(&addr.to_string(), &Default::default()).await.context("status")?;
    assert_eq!(status.nodes[0].clock_offset_ms, HOUR_MS);
    let ten_minutes = Duration::from_secs(600);
    let fast = client.set_with("fast", "a", SetOptions::new().with_ttl(ten_minutes)).await?;
    let expires = fast.expires_at_ms.context("an expiry")?;
    assert!(expires >= host_now_ms() + HOUR_MS as u64 + 590_000, "stamped by the fast clock: {expires}");

    // Its clock is corrected. The log clock stays an hour ahead (it never goes back), so a TTL
    // counted from the node's own clock would have expired on arrival; it counts from the log's.
    admin.set_clock_offset(pb::SetClockOffsetRequest { offset_ms: 0 }).await?;
    let later = client.set_with("later", "b", SetOptions::new().with_ttl(ten_minutes)).await?;
    assert!(later.applied, "{later:?}");
    assert!(later.expires_at_ms.context("an expiry")? >= expires, "{later:?} vs {expires}");
    let read = client.get("later").await?.context("a ten-minute entry written a moment ago is there")?;
    assert_eq!(&read.value[..], b"b");
    Ok(())
}
