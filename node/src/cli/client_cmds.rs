//! The client-side verbs (`set`, `get`, `del`, `ttl`, `expire`, `cluster ...`), built on
//! `geocache-client` held to exactly the endpoint given (discovery off, leader hints not followed:
//! it is the operator's way to inspect one replica), under the command's deadline.
//!
//! The client does the protocol: it numbers writes (so its retries inside one command, after a
//! lost answer, are answered with the first result instead of applying twice), maps gRPC
//! statuses to [`Error`], and checks keys, TTLs and staleness bounds before sending. This module
//! only turns arguments into calls, and answers and errors into output and exit codes (README,
//! "The command line"): 0 success, 1 a missing key for `get`/`ttl`/`expire`, 2 any error with one
//! line naming the cause. A new command is a new client: rerunning a command is a new write.

use std::io::Write;
use std::time::Duration;

use geocache_client::{Client, Condition, Error, Member, Membership, ReadOptions, SetOptions, Status, WriteResult};

use super::{ClusterCommand, Command, ConsistencyArg, Target};

/// Longest the CLI waits to open its connection (within the command's deadline).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A failed command: the one line printed to stderr, and the exit code.
struct Failure {
    message: String,
    code: i32,
}

type CmdResult = Result<(), Failure>;

fn fail(message: impl Into<String>) -> Failure {
    Failure { message: message.into(), code: 2 }
}

fn not_found() -> Failure {
    Failure { message: "not found".into(), code: 1 }
}

pub(super) async fn run(command: Command) -> i32 {
    let (name, target) = match &command {
        Command::Set(a) => ("set", a.target.clone()),
        Command::Get(a) => ("get", a.target.clone()),
        Command::Del(a) => ("del", a.target.clone()),
        Command::Ttl(a) => ("ttl", a.target.clone()),
        Command::Expire(a) => ("expire", a.target.clone()),
        Command::Cluster(c) => ("cluster", cluster_target(c).clone()),
        Command::Serve(_) | Command::Dev(_) | Command::Bench(_) | Command::Cert(_) => {
            unreachable!("handled by cli::run")
        }
    };
    // The client keeps every call within the deadline; this also bounds commands of two calls.
    let result = match tokio::time::timeout(target.timeout, execute(command, &target)).await {
        Ok(result) => result,
        Err(_) => Err(fail(format!(
            "no answer from {} within {} (raise --timeout?)",
            target.endpoint,
            humantime::format_duration(target.timeout)
        ))),
    };
    match result {
        Ok(()) => 0,
        Err(Failure { message, code }) => {
            if code == 2 {
                eprintln!("geocache {name}: {message}");
            } else {
                eprintln!("{message}");
            }
            code
        }
    }
}

fn cluster_target(c: &ClusterCommand) -> &Target {
    match c {
        ClusterCommand::Init { target, .. }
        | ClusterCommand::Add { target, .. }
        | ClusterCommand::Remove { target, .. }
        | ClusterCommand::Status { target, .. }
        | ClusterCommand::Configure { target, .. } => target,
    }
}

/// A client that asks exactly `target.endpoint` and nothing else. Its calls end a little
/// before the command's deadline, so a call that keeps failing reports its last error rather
/// than the bare deadline.
async fn client(target: &Target) -> Result<Client, Failure> {
    let margin = (target.timeout / 10).min(Duration::from_millis(200));
    target
        .client_builder()
        .map_err(fail)?
        .discovery(false)
        .only_endpoints(true)
        .timeout((target.timeout - margin).max(Duration::from_millis(1)))
        .connect_timeout(target.timeout.min(CONNECT_TIMEOUT))
        .build()
        .await
        .map_err(|e| fail(format!("--endpoint {:?}: {e}", target.endpoint)))
}

/// One line naming the cause of a failed call. The client already words a write whose outcome
/// is unknown as such, and a read never so.
fn describe(target: &Target, err: Error) -> Failure {
    fail(match err {
        Error::Unavailable { message, leader: None } => format!("{} is unavailable: {message}", target.endpoint),
        Error::Unavailable { message, leader: Some(leader) } => {
            format!("{} is unavailable: {message} (leader at {leader})", target.endpoint)
        }
        Error::Timeout(message) => format!("timed out: {message}"),
        Error::Transport(message) if target.tls_ca.is_none() => format!(
            "connection to {} failed: {message} (if the node runs with TLS, give --tls-ca or set GEOCACHE_TLS_CA)",
            target.endpoint
        ),
        Error::Transport(message) => format!("connection to {} failed: {message}", target.endpoint),
        Error::Internal(message) => format!("internal error at {}: {message}", target.endpoint),
        Error::Unauthenticated(message) => {
            format!("{} refused the call: {message} (give --token or set GEOCACHE_TOKEN)", target.endpoint)
        }
        other => other.to_string(),
    })
}

async fn execute(command: Command, target: &Target) -> CmdResult {
    let client = client(target).await?;
    let failed = |e| describe(target, e);
    match command {
        Command::Set(a) => {
            let condition = if a.if_absent {
                Condition::IfAbsent
            } else if a.if_present {
                Condition::IfPresent
            } else if let Some(v) = a.if_version {
                Condition::IfVersion(v)
            } else {
                Condition::Always
            };
            let mut options = SetOptions::new().with_condition(condition);
            if let Some(ttl) = a.ttl {
                options = options.with_ttl(ttl);
            }
            let r = client.set_with(a.key, a.value.into_bytes(), options).await.map_err(failed)?;
            report_write(&r, "stored")
        }
        Command::Get(a) => {
            let options = match (a.consistency, a.max_staleness) {
                (ConsistencyArg::Bounded, Some(d)) => ReadOptions::bounded(d),
                (ConsistencyArg::Bounded, None) => return Err(fail("--consistency bounded needs --max-staleness")),
                (_, Some(_)) => return Err(fail("--max-staleness only applies to --consistency bounded")),
                (ConsistencyArg::Linearizable, None) => ReadOptions::linearizable(),
                (ConsistencyArg::Stale, None) => ReadOptions::stale(),
            };
            let options = if a.min_version > 0 { options.with_min_version(a.min_version) } else { options };
            let entry = client.get_with(a.key, options).await.map_err(failed)?;
            if a.verbose {
                eprintln!("{}", describe_read(entry.as_ref()));
            }
            let entry = entry.ok_or_else(not_found)?;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&entry.value);
            let _ = out.write_all(b"\n");
            Ok(())
        }
        Command::Del(a) => {
            let r = client.delete(a.key).await.map_err(failed)?;
            if r.existed {
                println!("deleted (log index {})", r.log_index);
            } else {
                println!("no such key (log index {})", r.log_index);
            }
            Ok(())
        }
        Command::Ttl(a) => {
            let info = client.ttl_with(a.key, ReadOptions::linearizable()).await.map_err(failed)?;
            match info.ok_or_else(not_found)?.remaining {
                Some(left) => println!("{}", humantime::format_duration(left)),
                None => println!("no expiry"),
            }
            Ok(())
        }
        Command::Expire(a) => {
            // `--persist` (clap: exactly one of the two) is no TTL.
            let r = client.expire(a.key, a.ttl).await.map_err(failed)?;
            if !r.applied {
                return Err(not_found());
            }
            report_write(&r, "expiry updated")
        }
        Command::Cluster(c) => cluster(c, &client, target).await,
        Command::Serve(_) | Command::Dev(_) | Command::Bench(_) | Command::Cert(_) => {
            unreachable!("handled by cli::run")
        }
    }
}

fn report_write(r: &WriteResult, verb: &str) -> CmdResult {
    if !r.applied {
        return Err(fail(format!("condition failed: nothing changed (current version {})", r.previous_version)));
    }
    println!("{verb}: version {}", r.version);
    Ok(())
}

fn describe_read(entry: Option<&geocache_client::Entry>) -> String {
    let Some(e) = entry else { return "found=false".into() };
    let mut parts = vec!["found=true".to_string(), format!("version={}", e.version)];
    parts.push(match e.expires_at_ms {
        Some(t) => format!("expires_at_ms={t}"),
        None => "expires=never".into(),
    });
    let m = &e.meta;
    parts.push(format!("node={} region={} applied={}", m.node_id, m.region, m.applied_index));
    parts.push(match m.staleness_bound_ms {
        Some(b) => format!("staleness_bound={b}ms"),
        None => "staleness_bound=unknown".into(),
    });
    parts.join(" ")
}

fn members_line(r: &Membership) -> String {
    let list =
        |ms: &[Member]| ms.iter().map(|m| format!("{}={}@{}", m.id, m.addr, m.region)).collect::<Vec<_>>().join(", ");
    format!("voters: [{}]  learners: [{}]  (log index {})", list(&r.voters), list(&r.learners), r.log_index)
}

async fn cluster(c: ClusterCommand, client: &Client, target: &Target) -> CmdResult {
    let failed = |e| describe(target, e);
    match c {
        ClusterCommand::Init { members, .. } => {
            let members = members.into_iter().collect();
            let r = client.init(members).await.map_err(failed)?;
            println!("initialised: {}", members_line(&r));
            Ok(())
        }
        ClusterCommand::Add { id, addr, region, peer_addr, learner, .. } => {
            eprintln!("adding node {id} ({addr}, {region}) as a learner and waiting for it to catch up...");
            // The node waits for the catch-up as long as the command's deadline allows.
            let member = Member::new(id, addr, region);
            let member = match peer_addr {
                Some(peer) => member.with_peer_addr(peer),
                None => member,
            };
            let r = client.add_learner(member, true).await.map_err(failed)?;
            if learner {
                println!("added learner {id}: {}", members_line(&r));
                return Ok(());
            }
            eprintln!("node {id} caught up; promoting it to voter...");
            let mut voters: Vec<u64> = r.voters.iter().map(|m| m.id).collect();
            if !voters.contains(&id) {
                voters.push(id);
            }
            let r = client.change_membership(voters, false).await.map_err(failed)?;
            println!("added voter {id}: {}", members_line(&r));
            Ok(())
        }
        ClusterCommand::Remove { id, .. } => {
            let r = client.remove(id).await.map_err(failed)?;
            println!("removed node {id}: {}", members_line(&r));
            Ok(())
        }
        ClusterCommand::Configure { max_entries, max_bytes, .. } => {
            let log_index = client.configure(max_entries, max_bytes).await.map_err(failed)?;
            let show = |limit: Option<u64>| limit.map_or("unchanged".to_string(), |l| l.to_string());
            println!(
                "capacity set: max_entries={} max_bytes={} (log index {log_index})",
                show(max_entries),
                show(max_bytes)
            );
            Ok(())
        }
        ClusterCommand::Status { json, .. } => {
            // This endpoint's view (it asks its peers for theirs), from this endpoint only.
            let r = client.node_status(&target.endpoint, false).await.map_err(|e| describe(target, e))?;
            if json {
                println!("{}", status_json(&r));
            } else {
                print_status_table(&r);
            }
            Ok(())
        }
    }
}

fn status_json(r: &Status) -> serde_json::Value {
    let nodes: Vec<_> = r
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "id": n.id,
                "addr": n.addr,
                "peer_addr": n.peer_addr,
                "region": n.region,
                "role": n.role.to_string(),
                "term": n.term,
                "applied": n.applied,
                "last_log_index": n.last_log_index,
                "lag": n.lag,
                "staleness_bound_ms": n.staleness_bound_ms,
                "reachable": n.reachable,
                "state_hash": n.state_hash,
            })
        })
        .collect();
    serde_json::json!({
        "answered_by": r.node_id,
        "cluster_id": format!("{:016x}", r.cluster_id),
        "leader": r.leader_id,
        "term": r.term,
        "initialized": r.initialized,
        "max_entries": r.max_entries,
        "max_bytes": r.max_bytes,
        "nodes": nodes,
    })
}

fn print_status_table(r: &Status) {
    if !r.initialized {
        println!("node {} is not part of a cluster yet (run `geocache cluster init`)", r.node_id);
        return;
    }
    let leader = r.leader_id.map(|l| l.to_string()).unwrap_or_else(|| "none".into());
    println!("leader: {leader}  term: {}  answered by: node {}", r.term, r.node_id);
    println!(
        "{:<4} {:<22} {:<12} {:<10} {:>6} {:>9} {:>6} {:>9}  reachable",
        "id", "addr", "region", "role", "term", "applied", "lag", "bound"
    );
    for n in &r.nodes {
        let lag = n.lag.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
        let bound = n.staleness_bound_ms.map(|b| format!("{b}ms")).unwrap_or_else(|| "-".into());
        let (term, applied) =
            if n.reachable { (n.term.to_string(), n.applied.to_string()) } else { ("-".into(), "-".into()) };
        println!(
            "{:<4} {:<22} {:<12} {:<10} {:>6} {:>9} {:>6} {:>9}  {}",
            n.id,
            n.addr,
            n.region,
            n.role.to_string(),
            term,
            applied,
            lag,
            bound,
            if n.reachable { "yes" } else { "NO" }
        );
    }
}
