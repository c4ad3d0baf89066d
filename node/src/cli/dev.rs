//! `geocache dev`: a working local cluster in one command. Starts N `geocache serve` child
//! processes on loopback (so any of them can be `kill -9`ed to watch failover), initialises them as
//! one cluster, prints endpoints and example commands, and stops them all on Ctrl-C.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use geocache_proto as pb;
use geocache_proto::admin_client::AdminClient;

use super::DevArgs;

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

pub(super) async fn run(args: DevArgs) -> i32 {
    match start(args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("geocache dev: {e}");
            2
        }
    }
}

async fn start(args: DevArgs) -> Result<(), String> {
    if args.nodes == 0 || args.nodes > 9 {
        return Err("--nodes must be between 1 and 9".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the geocache binary: {e}"))?;
    // A temp dir is removed when `_temp` drops at the end of this function.
    let (_temp, root): (Option<tempfile::TempDir>, PathBuf) = match &args.data_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let t = tempfile::Builder::new().prefix("geocache-dev-").tempdir().map_err(|e| e.to_string())?;
            let path = t.path().to_path_buf();
            (Some(t), path)
        }
    };
    let members: Vec<pb::Member> = (1..=args.nodes)
        .map(|id| pb::Member {
            id,
            addr: format!("127.0.0.1:{}", args.base_port as u64 + id - 1),
            region: REGIONS[(id as usize - 1) % REGIONS.len()].to_string(),
        })
        .collect();

    let mut children = Vec::new();
    for m in &members {
        let dir = root.join(format!("node-{}", m.id));
        let log = std::fs::File::create(root.join(format!("node-{}.log", m.id))).map_err(|e| e.to_string())?;
        let child = tokio::process::Command::new(&exe)
            .arg("serve")
            .args(["--id", &m.id.to_string(), "--region", &m.region, "--listen", &m.addr])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--max-entries", &args.max_entries.to_string()])
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start node {}: {e}", m.id))?;
        eprintln!("started node {} ({}) on {}  [pid {}]", m.id, m.region, m.addr, child.id().unwrap_or(0));
        children.push(child);
    }

    let first = format!("http://{}", members[0].addr);
    let mut admin = wait_for_admin(&first, Duration::from_secs(20)).await?;
    match admin.init(pb::InitRequest { members: members.clone() }).await {
        Ok(_) => eprintln!("initialised a {}-voter cluster", members.len()),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => eprintln!("cluster already initialised; resuming"),
        Err(s) => return Err(format!("init failed: {}", s.message())),
    }
    let leader = wait_for_leader(&mut admin, Duration::from_secs(20)).await?;
    eprintln!("leader elected: node {leader}");

    println!();
    println!("geocache dev cluster is up. Data and logs: {}", root.display());
    for m in &members {
        println!("  node {}  {:<9} {}", m.id, m.region, m.addr);
    }
    println!();
    // The CLI's default endpoint is 127.0.0.1:7001; name node 1 when it lives elsewhere.
    let to_first =
        if members[0].addr == "127.0.0.1:7001" { String::new() } else { format!(" --endpoint {}", members[0].addr) };
    println!("Try, in another terminal:");
    println!("  geocache set greeting hello --ttl 60s{to_first}");
    println!("  geocache get greeting -v --endpoint {}", members.last().map(|m| m.addr.as_str()).unwrap_or_default());
    println!("  geocache cluster status{to_first}");
    println!("(with cargo: cargo run --release -- <command>). Press Ctrl-C to stop.");

    wait_for_stop_signal().await;
    eprintln!("stopping {} nodes", children.len());
    for child in &mut children {
        let _ = child.start_kill();
    }
    for child in &mut children {
        let _ = child.wait().await;
    }
    Ok(())
}

async fn wait_for_admin(uri: &str, within: Duration) -> Result<AdminClient<tonic::transport::Channel>, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match AdminClient::connect(uri.to_string()).await {
            Ok(client) => return Ok(client),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(format!("{uri} never came up: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn wait_for_leader(admin: &mut AdminClient<tonic::transport::Channel>, within: Duration) -> Result<u64, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(r) = admin.status(pb::StatusRequest { local_only: true }).await {
            if let Some(leader) = r.into_inner().leader_id {
                return Ok(leader);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("no leader elected in time; see the node logs".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ctrl-C or SIGTERM: either way the children are stopped before `dev` exits.
async fn wait_for_stop_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
