//! The client-side verbs (`set`, `get`, `del`, `ttl`, `expire`, `cluster ...`): one gRPC call (or a
//! short sequence) to exactly the endpoint given, under the command's deadline.

use std::io::Write;
use std::time::Duration;

use geocache_proto as pb;
use geocache_proto::admin_client::AdminClient;
use geocache_proto::cache_client::CacheClient;
use tonic::transport::{Channel, Endpoint};

use super::{ClusterCommand, Command, ConsistencyArg, Target};

/// A failed command: the one line printed to stderr, and the exit code.
struct Failure {
    message: String,
    code: i32,
}

type CmdResult = Result<(), Failure>;

fn fail(message: impl Into<String>) -> Failure {
    Failure { message: message.into(), code: 2 }
}

pub(super) async fn run(command: Command) -> i32 {
    let (name, target) = match &command {
        Command::Set(a) => ("set", a.target.clone()),
        Command::Get(a) => ("get", a.target.clone()),
        Command::Del(a) => ("del", a.target.clone()),
        Command::Ttl(a) => ("ttl", a.target.clone()),
        Command::Expire(a) => ("expire", a.target.clone()),
        Command::Cluster(c) => ("cluster", cluster_target(c).clone()),
        Command::Serve(_) | Command::Dev(_) => unreachable!("handled by cli::run"),
    };
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

fn channel(target: &Target) -> Result<Channel, Failure> {
    let uri =
        if target.endpoint.contains("://") { target.endpoint.clone() } else { format!("http://{}", target.endpoint) };
    let endpoint =
        Endpoint::from_shared(uri).map_err(|e| fail(format!("invalid endpoint {:?}: {e}", target.endpoint)))?;
    Ok(endpoint.connect_timeout(target.timeout.min(Duration::from_secs(2))).timeout(target.timeout).connect_lazy())
}

/// One line naming the cause of a failed call.
fn describe(target: &Target, status: tonic::Status) -> Failure {
    let message = status.message();
    let text = match status.code() {
        tonic::Code::Unavailable if is_transport(&status) => {
            format!("endpoint {} is unreachable: {}", target.endpoint, transport_cause(&status))
        }
        tonic::Code::Unavailable
            if status
                .metadata()
                .get(geocache_proto::ERROR_KIND_HEADER)
                .is_some_and(|k| k == geocache_proto::STALE_REPLICA) =>
        {
            format!("stale replica: {message}")
        }
        tonic::Code::Unavailable => format!("unavailable: {message}"),
        tonic::Code::InvalidArgument => format!("invalid argument: {message}"),
        tonic::Code::NotFound => format!("not found: {message}"),
        tonic::Code::FailedPrecondition => message.to_string(),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            format!("timed out: {message} (a write may or may not have applied)")
        }
        code => format!("{code:?}: {message}"),
    };
    fail(text)
}

/// Whether tonic failed to reach the server at all (as opposed to the server answering UNAVAILABLE).
fn is_transport(status: &tonic::Status) -> bool {
    status.metadata().is_empty() && std::error::Error::source(status).is_some()
}

fn transport_cause(status: &tonic::Status) -> String {
    let mut cause = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        cause = e.to_string();
        source = e.source();
    }
    cause
}

fn write_id_none() -> Option<pb::WriteId> {
    None
}

async fn execute(command: Command, target: &Target) -> CmdResult {
    let ch = channel(target)?;
    let mut cache = CacheClient::new(ch.clone());
    let mut admin = AdminClient::new(ch);
    let status = |s| describe(target, s);
    match command {
        Command::Set(a) => {
            let (condition, if_version) = if a.if_absent {
                (pb::ConditionKind::ConditionIfAbsent, 0)
            } else if a.if_present {
                (pb::ConditionKind::ConditionIfPresent, 0)
            } else if let Some(v) = a.if_version {
                (pb::ConditionKind::ConditionIfVersion, v)
            } else {
                (pb::ConditionKind::ConditionAlways, 0)
            };
            let ttl_ms = match a.ttl {
                Some(ttl) if ttl.as_millis() == 0 => {
                    return Err(fail("ttl must be at least 1ms (omit --ttl for no expiry)"))
                }
                Some(ttl) => Some(u64::try_from(ttl.as_millis()).map_err(|_| fail("ttl is too large"))?),
                None => None,
            };
            let req = pb::SetRequest {
                key: a.key,
                value: a.value.into_bytes().into(),
                ttl_ms,
                condition: condition as i32,
                if_version,
                write_id: write_id_none(),
            };
            let r = cache.set(req).await.map_err(status)?.into_inner();
            report_write(&r, "stored")
        }
        Command::Get(a) => {
            let consistency = match a.consistency {
                ConsistencyArg::Linearizable => pb::Consistency::Linearizable,
                ConsistencyArg::Bounded => pb::Consistency::Bounded,
                ConsistencyArg::Stale => pb::Consistency::Stale,
            };
            let max_staleness_ms = match (a.consistency, a.max_staleness) {
                (ConsistencyArg::Bounded, Some(d)) if d.as_millis() == 0 => {
                    return Err(fail("--max-staleness must be at least 1ms"))
                }
                (ConsistencyArg::Bounded, Some(d)) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                (ConsistencyArg::Bounded, None) => return Err(fail("--consistency bounded needs --max-staleness")),
                (_, Some(_)) => return Err(fail("--max-staleness only applies to --consistency bounded")),
                (_, None) => 0,
            };
            // The node may wait (min_version) only as long as this command's deadline.
            let mut req = tonic::Request::new(pb::GetRequest {
                key: a.key,
                consistency: consistency as i32,
                max_staleness_ms,
                min_version: a.min_version,
            });
            req.set_timeout(target.timeout);
            let r = cache.get(req).await.map_err(status)?.into_inner();
            if a.verbose {
                eprintln!("{}", describe_read(r.found, r.version, r.expires_at_ms, r.meta.as_ref()));
            }
            if !r.found {
                return Err(Failure { message: "not found".into(), code: 1 });
            }
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&r.value);
            let _ = out.write_all(b"\n");
            Ok(())
        }
        Command::Del(a) => {
            let r = cache.delete(pb::DeleteRequest { key: a.key, write_id: None }).await.map_err(status)?.into_inner();
            if r.existed {
                println!("deleted (log index {})", r.log_index);
            } else {
                println!("no such key (log index {})", r.log_index);
            }
            Ok(())
        }
        Command::Ttl(a) => {
            let req =
                pb::TtlRequest { key: a.key, consistency: pb::Consistency::Linearizable as i32, ..Default::default() };
            let r = cache.ttl(req).await.map_err(status)?.into_inner();
            if !r.found {
                return Err(Failure { message: "not found".into(), code: 1 });
            }
            match r.remaining_ms {
                Some(ms) => println!("{}", humantime::format_duration(Duration::from_millis(ms))),
                None => println!("no expiry"),
            }
            Ok(())
        }
        Command::Expire(a) => {
            let ttl_ms = match a.ttl {
                Some(ttl) if ttl.as_millis() == 0 => return Err(fail("ttl must be at least 1ms")),
                Some(ttl) => Some(u64::try_from(ttl.as_millis()).map_err(|_| fail("ttl is too large"))?),
                None => None,
            };
            let req = pb::ExpireRequest { key: a.key, ttl_ms, persist: a.persist, write_id: None };
            let r = cache.expire(req).await.map_err(status)?.into_inner();
            if !r.applied {
                return Err(Failure { message: "not found".into(), code: 1 });
            }
            report_write(&r, "expiry updated")
        }
        Command::Cluster(c) => cluster(c, &mut admin, target).await,
        Command::Serve(_) | Command::Dev(_) => unreachable!("handled by cli::run"),
    }
}

fn report_write(r: &pb::WriteResponse, verb: &str) -> CmdResult {
    if !r.rejected.is_empty() {
        return Err(fail(format!("rejected: {}", r.rejected)));
    }
    if !r.applied {
        return Err(fail(format!("condition failed: nothing changed (current version {})", r.previous_version)));
    }
    println!("{verb}: version {}", r.version);
    Ok(())
}

fn describe_read(found: bool, version: u64, expires_at_ms: Option<u64>, meta: Option<&pb::ReadMeta>) -> String {
    let mut parts = vec![format!("found={found}")];
    if found {
        parts.push(format!("version={version}"));
        parts.push(match expires_at_ms {
            Some(t) => format!("expires_at_ms={t}"),
            None => "expires=never".into(),
        });
    }
    if let Some(m) = meta {
        parts.push(format!("node={} region={} applied={}", m.node_id, m.region, m.applied_index));
        parts.push(match m.staleness_bound_ms {
            Some(b) => format!("staleness_bound={b}ms"),
            None => "staleness_bound=unknown".into(),
        });
    }
    parts.join(" ")
}

fn members_line(r: &pb::MembershipResponse) -> String {
    let list = |ms: &[pb::Member]| {
        ms.iter().map(|m| format!("{}={}@{}", m.id, m.addr, m.region)).collect::<Vec<_>>().join(", ")
    };
    format!("voters: [{}]  learners: [{}]  (log index {})", list(&r.voters), list(&r.learners), r.log_index)
}

async fn cluster(c: ClusterCommand, admin: &mut AdminClient<Channel>, target: &Target) -> CmdResult {
    let status = |s| describe(target, s);
    match c {
        ClusterCommand::Init { members, .. } => {
            let members = members.into_iter().map(|(id, addr, region)| pb::Member { id, addr, region }).collect();
            let r = admin.init(pb::InitRequest { members }).await.map_err(status)?.into_inner();
            println!("initialised: {}", members_line(&r));
            Ok(())
        }
        ClusterCommand::Add { id, addr, region, learner, .. } => {
            eprintln!("adding node {id} ({addr}, {region}) as a learner and waiting for it to catch up...");
            let member = pb::Member { id, addr, region };
            // The node waits for the catch-up as long as the command's own deadline allows.
            let mut request = tonic::Request::new(pb::AddLearnerRequest { member: Some(member), wait_caught_up: true });
            request.set_timeout(target.timeout.saturating_sub(Duration::from_millis(200)));
            let r = admin.add_learner(request).await.map_err(status)?.into_inner();
            if learner {
                println!("added learner {id}: {}", members_line(&r));
                return Ok(());
            }
            eprintln!("node {id} caught up; promoting it to voter...");
            let mut voters: Vec<u64> = r.voters.iter().map(|m| m.id).collect();
            if !voters.contains(&id) {
                voters.push(id);
            }
            let r = admin
                .change_membership(pb::ChangeMembershipRequest { voters, retain_as_learners: false })
                .await
                .map_err(status)?
                .into_inner();
            println!("added voter {id}: {}", members_line(&r));
            Ok(())
        }
        ClusterCommand::Remove { id, .. } => {
            let r = admin.remove(pb::RemoveRequest { id }).await.map_err(status)?.into_inner();
            println!("removed node {id}: {}", members_line(&r));
            Ok(())
        }
        ClusterCommand::Configure { max_entries, max_bytes, .. } => {
            let r =
                admin.configure(pb::ConfigureRequest { max_entries, max_bytes }).await.map_err(status)?.into_inner();
            let show = |limit: Option<u64>| limit.map_or("unchanged".to_string(), |l| l.to_string());
            println!(
                "capacity set: max_entries={} max_bytes={} (log index {})",
                show(max_entries),
                show(max_bytes),
                r.log_index
            );
            Ok(())
        }
        ClusterCommand::Status { json, .. } => {
            let r = admin.status(pb::StatusRequest { local_only: false }).await.map_err(status)?.into_inner();
            if json {
                println!("{}", status_json(&r));
            } else {
                print_status_table(&r);
            }
            Ok(())
        }
    }
}

fn status_json(r: &pb::StatusResponse) -> serde_json::Value {
    let nodes: Vec<_> = r
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "id": n.id,
                "addr": n.addr,
                "region": n.region,
                "role": n.role,
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

fn print_status_table(r: &pb::StatusResponse) {
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
            n.role,
            term,
            applied,
            lag,
            bound,
            if n.reachable { "yes" } else { "NO" }
        );
    }
}
