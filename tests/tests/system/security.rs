//! The peer/client listener split and mutual TLS between members (issue 11, first slice), against
//! real processes on loopback:
//! * a secure cluster serves clients on the client listener and keeps its leader;
//! * forged Raft messages (a vote with a huge term, an AppendEntries carrying a `Set`) sent to a
//!   peer listener by anyone without a member certificate (plaintext, TLS without a certificate,
//!   TLS with a certificate from another CA) are refused in the handshake and change nothing;
//!   the same connection with a member's certificate is answered, so the refusal is about the
//!   certificate and nothing else;
//! * a node whose certificate another CA signed can neither join nor take part in elections;
//! * the client listener serves no Raft;
//! * a node asked to listen on a non-loopback address without TLS refuses to start;
//! * `geocache cert` and `geocache dev --secure` make working certificates and print no key.
//!
//! Forged messages are built with `hostile.rs`'s helpers: openraft's own types encoded with the
//! node's own `encode`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::hostile::{log_id, payload, vote_request};
use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use geocache_client::ReadOptions;
use geocache_node::network::encode;
use geocache_node::network::inbound::MAX_TERM;
use geocache_node::state_machine::{Command, Condition, Op};
use geocache_node::types::{Entry, LogId, Vote};
use geocache_proto as pb;
use geocache_proto::raft_client::RaftClient;
use geocache_tests::{
    cert, eventually, free_port, outcome, run_cli, tls_flags, CertPair, ClientAccess, DevRun, TestCluster,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_geocache-under-test");
const WITHIN: Duration = Duration::from_secs(20);
/// The key the forged AppendEntries tries to set.
const FORGED_KEY: &str = "forged";

/// (term, leader) of every running node.
async fn terms_and_leaders(cluster: &TestCluster) -> Result<BTreeMap<u64, (u64, Option<u64>)>> {
    let mut out = BTreeMap::new();
    for id in cluster.nodes.keys().copied().filter(|id| cluster.nodes[id].is_running()) {
        let status = cluster.local_status(id).await.with_context(|| format!("status of node {id}"))?;
        out.insert(id, (status.term, status.leader_id));
    }
    Ok(out)
}

/// A write through the whole cluster that every running node then has applied.
async fn write_reaches_every_node(cluster: &TestCluster, key: &str) -> Result<u64> {
    let client = cluster.client().await?;
    let written =
        eventually(&format!("a write of {key}"), WITHIN, || async { client.set(key, "v").await.ok() }).await?;
    for id in cluster.nodes.keys().copied().filter(|id| cluster.nodes[id].is_running()) {
        cluster.wait_applied(id, written.version, WITHIN).await?;
    }
    Ok(written.version)
}

/// Whether any running node has `key` (a stale read of its own state machine each).
async fn anyone_has(cluster: &TestCluster, key: &str) -> Result<Vec<u64>> {
    let mut holders = Vec::new();
    for id in cluster.nodes.keys().copied().filter(|id| cluster.nodes[id].is_running()) {
        if cluster.client_of(id).await?.get_with(key, ReadOptions::stale()).await?.is_some() {
            holders.push(id);
        }
    }
    Ok(holders)
}

/// How a forger reaches a peer listener.
#[derive(Clone, Copy)]
enum Forger<'a> {
    /// Plain HTTP/2, no TLS at all.
    Plaintext,
    /// TLS trusting the cluster CA (so the server's certificate passes), presenting nothing.
    TlsWithoutCertificate { ca: &'a CertPair },
    /// TLS trusting the cluster CA, presenting `identity` (signed by whoever signed it).
    TlsWith { ca: &'a CertPair, identity: &'a CertPair },
}

impl std::fmt::Debug for Forger<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Forger::Plaintext => "plaintext",
            Forger::TlsWithoutCertificate { .. } => "TLS without a certificate",
            Forger::TlsWith { .. } => "TLS with a certificate",
        })
    }
}

/// A Raft client to `peer_addr` as `forger`; connects lazily, so a refused handshake shows as
/// the call's error.
fn raft_as(forger: Forger<'_>, peer_addr: &str) -> Result<RaftClient<Channel>> {
    let channel = match forger {
        Forger::Plaintext => Endpoint::from_shared(format!("http://{peer_addr}"))?,
        Forger::TlsWithoutCertificate { ca } => Endpoint::from_shared(format!("https://{peer_addr}"))?
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.cert_pem)))?,
        Forger::TlsWith { ca, identity } => Endpoint::from_shared(format!("https://{peer_addr}"))?.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca.cert_pem))
                .identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem)),
        )?,
    };
    Ok(RaftClient::new(channel.connect_timeout(Duration::from_secs(5)).connect_lazy()))
}

/// An `AppendEntriesRequest` from a made-up leader in term `term`, after `prev`, carrying one
/// `Set FORGED_KEY` entry and committing it.
fn forged_set(term: u64, leader: u64, prev: LogId) -> Vec<u8> {
    let index = prev.index + 1;
    let command = Command {
        now_ms: 1,
        write_id: None,
        op: Op::Set {
            key: FORGED_KEY.into(),
            value: Bytes::from_static(b"owned"),
            expires_at_ms: None,
            condition: Condition::Always,
        },
    };
    let entry = Entry { log_id: log_id(term, leader, index), payload: openraft::EntryPayload::Normal(command) };
    let commit = Some(entry.log_id);
    encode(&(Vote::new_committed(term, leader), Some(prev), vec![entry], commit)).expect("encode append-entries")
}

/// Certificates the cluster's CA did not sign: another CA's, for a node at 127.0.0.1.
struct Foreign {
    ca: CertPair,
    node: CertPair,
}

fn foreign() -> Result<Foreign> {
    let ca = cert::new_ca("someone else's CA", 1)?;
    let node = cert::new_member(&ca, "intruder", &["127.0.0.1".into()], 1)?;
    Ok(Foreign { ca, node })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_cluster_serves_clients_and_keeps_its_leader() -> Result<()> {
    let cluster = TestCluster::start_secure(BIN, 3, &[]).await?;
    let leader = cluster.wait_for_leader(WITHIN).await?;
    let before = terms_and_leaders(&cluster).await?;

    // Through the client listeners, whichever node is asked (followers forward writes to the
    // leader over their TLS peer channels).
    for id in 1..=3 {
        let client = cluster.client_of(id).await?;
        let key = format!("k{id}");
        eventually(&format!("a write via node {id}"), WITHIN, || async { client.set(key.as_str(), "v").await.ok() })
            .await?;
        let read = client.get(key.as_str()).await?.context("a linearizable read of what was written")?;
        assert_eq!(read.value.as_ref(), b"v");
    }
    write_reaches_every_node(&cluster, "everywhere").await?;
    assert_eq!(terms_and_leaders(&cluster).await?, before, "the leader or a term changed under TLS");

    // The membership records both addresses; clients are told the client one.
    let status = cluster.admin(leader).await?.status(pb::StatusRequest::default()).await?.into_inner();
    for n in &status.nodes {
        assert_eq!(n.addr, cluster.addr(n.id));
        assert_eq!(n.peer_addr, cluster.peer_addr(n.id));
        assert!(n.reachable, "node {} was not reached over TLS for its status: {n:?}", n.id);
    }
    // No key material in any node's log.
    for id in 1..=3 {
        let log = cluster.log(id);
        assert!(!log.contains("PRIVATE KEY"), "node {id} logged key material");
        assert!(log.contains("peer TLS on"), "node {id} does not say TLS is on");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_raft_messages_without_a_member_certificate_are_refused_and_change_nothing() -> Result<()> {
    let cluster = TestCluster::start_secure(BIN, 3, &[]).await?;
    let leader = cluster.wait_for_leader(WITHIN).await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let applied = write_reaches_every_node(&cluster, "before").await?;
    let status = cluster.local_status(leader).await.context("leader status")?;
    let (cid, term) = (status.cluster_id, status.term);
    let last = status.nodes.first().context("status without the node itself")?.last_log_index;
    let before = terms_and_leaders(&cluster).await?;

    // Would depose the leader on an unprotected cluster: a huge (admissible) term and a log at
    // least as long as anyone's; and would commit `Set forged` on every follower.
    let huge = MAX_TERM - 1;
    let long_log = Some(log_id(term, leader, last + 1_000));
    let ca = cluster.ca().context("a secure cluster has a CA")?.clone();
    let other = foreign()?;
    let forgers = [
        Forger::Plaintext,
        Forger::TlsWithoutCertificate { ca: &ca },
        Forger::TlsWith { ca: &ca, identity: &other.node },
    ];
    for forger in forgers {
        for target in [follower, leader] {
            let peer = cluster.peer_addr(target);
            let vote = raft_as(forger, &peer)?.vote(payload(cid, vote_request(Vote::new(huge, 99), long_log))).await;
            ensure!(vote.is_err(), "{forger:?}: a forged vote to node {target} was answered: {vote:?}");
            let prev = log_id(term, leader, applied);
            let append = raft_as(forger, &peer)?.append_entries(payload(cid, forged_set(huge, 99, prev))).await;
            ensure!(append.is_err(), "{forger:?}: a forged append to node {target} was answered: {append:?}");
            // Refused in the transport (the handshake; plaintext gets TLS bytes back, which its
            // HTTP/2 reads as a protocol error), never by a service that decoded it: a service
            // would have said InvalidArgument, FailedPrecondition or answered.
            for (what, status) in [("vote", vote.unwrap_err()), ("append", append.unwrap_err())] {
                let transport = match status.code() {
                    Code::Unavailable | Code::Unknown | Code::Cancelled => true,
                    Code::Internal => status.message().contains("protocol error"),
                    _ => false,
                };
                ensure!(
                    transport,
                    "{forger:?}: the forged {what} to node {target} got {:?} {:?}: it reached a service",
                    status.code(),
                    status.message()
                );
            }
        }
    }

    // The control: the same kind of connection with a member's certificate is answered (a
    // harmless vote with a stale term, not granted), so what was refused above was the
    // certificate, not the address, the name or the encoding.
    let dir = cluster.tls_dir();
    let member = CertPair {
        cert_pem: std::fs::read_to_string(cert::paths(&dir, &format!("node-{follower}")).0)?,
        key_pem: std::fs::read_to_string(cert::paths(&dir, &format!("node-{follower}")).1)?,
    };
    raft_as(Forger::TlsWith { ca: &ca, identity: &member }, &cluster.peer_addr(leader))?
        .vote(payload(cid, vote_request(Vote::new(0, follower), None)))
        .await
        .context("a stale vote with a member certificate was not answered")?;

    assert_eq!(terms_and_leaders(&cluster).await?, before, "a refused message changed a term or the leader");
    write_reaches_every_node(&cluster, "after").await?;
    let holders = anyone_has(&cluster, FORGED_KEY).await?;
    assert!(holders.is_empty(), "the forged key is on nodes {holders:?}");
    let log = cluster.log(leader);
    assert!(log.contains("refused in the TLS handshake"), "the leader's log does not show the refusal:\n{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_cannot_join_or_vote() -> Result<()> {
    let mut cluster = TestCluster::start_secure(BIN, 3, &[]).await?;
    let leader = cluster.wait_for_leader(WITHIN).await?;
    write_reaches_every_node(&cluster, "before").await?;
    let before = terms_and_leaders(&cluster).await?;

    // Node 4 holds a certificate another CA signed, and trusts that CA.
    let other = foreign()?;
    let dir = cluster.dir().join("intruder");
    let (ca_cert, _) = cert::write_pair(&dir, cert::CA_STEM, &other.ca)?;
    let (node_cert, node_key) = cert::write_pair(&dir, "node-4", &other.node)?;
    let flags = tls_flags(&node_cert, &node_key, &ca_cert);
    cluster.spawn(4, &flags.iter().map(String::as_str).collect::<Vec<_>>())?;
    // Its client port presents the other CA's certificate: reach it trusting that CA.
    cluster.set_node_access(4, ClientAccess::default().with_ca(other.ca.cert_pem.as_bytes()));
    cluster.admin(4).await?; // it runs and answers on its client port

    // Joining: the leader cannot reach it (each side refuses the other's certificate), so the
    // add is refused promptly and node 4 never receives the log.
    let mut request =
        tonic::Request::new(pb::AddLearnerRequest { member: Some(cluster.nodes[&4].member()), wait_caught_up: true });
    request.set_timeout(Duration::from_secs(20));
    let refused = cluster.admin(leader).await?.add_learner(request).await;
    let status = match refused {
        Ok(reply) => bail!("a node with a foreign certificate joined: {:?}", reply.into_inner()),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("has not answered"), "{status:?}");
    let four = cluster.local_status(4).await.context("node 4's status")?;
    assert!(!four.initialized && four.leader_id.is_none(), "node 4 learned the cluster: {four:?}");
    cluster.admin(leader).await?.remove(pb::RemoveRequest { id: 4 }).await.context("remove node 4")?;

    // Voting: node 4 believes it is a member of the cluster (initialised with all four) and
    // campaigns; every vote request it sends dies in the handshake.
    let members: Vec<pb::Member> = cluster.nodes.values().map(|n| n.member()).collect();
    // A refusal from now on is node 4 asking for votes. Counted from here, not from zero: a
    // test running beside this one may dial a port it once held and this cluster now reuses.
    let refusals = || cluster.log(leader).matches("refused in the TLS handshake").count();
    let before_init = refusals();
    cluster.admin(4).await?.init(pb::InitRequest { members }).await.context("init node 4 on its own")?;
    eventually("node 4's vote requests to be refused at the leader", WITHIN, || async {
        (refusals() > before_init).then_some(())
    })
    .await?;
    let four = cluster.local_status(4).await.context("node 4's status")?;
    assert!(four.initialized && four.leader_id.is_none(), "node 4 found a leader: {four:?}");
    let after = terms_and_leaders(&cluster).await?;
    for id in 1..=3 {
        assert_eq!(after[&id], before[&id], "node {id}'s term or leader changed");
    }
    assert_ne!(after[&4].1, Some(4), "node 4 won an election");
    write_reaches_every_node_but(&cluster, 4, "after").await?;
    Ok(())
}

/// A write that every running node but `except` then has applied.
async fn write_reaches_every_node_but(cluster: &TestCluster, except: u64, key: &str) -> Result<()> {
    let client = cluster.client_builder((1..=3).map(|id| cluster.addr(id))).discovery(false).build().await?;
    let written =
        eventually(&format!("a write of {key}"), WITHIN, || async { client.set(key, "v").await.ok() }).await?;
    for id in cluster.nodes.keys().copied().filter(|id| *id != except && cluster.nodes[id].is_running()) {
        cluster.wait_applied(id, written.version, WITHIN).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_listener_serves_no_raft_and_the_peer_listener_serves_raft() -> Result<()> {
    let cluster = TestCluster::start(BIN, 1).await?;
    let status = cluster.local_status(1).await.context("status")?;
    let request = || payload(status.cluster_id, vote_request(Vote::new(0, 2), None));
    let at_client = RaftClient::connect(format!("http://{}", cluster.addr(1))).await?.vote(request()).await;
    match at_client {
        Ok(reply) => bail!("the client listener answered a Raft vote: {reply:?}"),
        Err(status) => assert_eq!(status.code(), Code::Unimplemented, "{status:?}"),
    }
    // The same request on the peer listener reaches Raft (a stale vote: answered, not granted).
    RaftClient::connect(format!("http://{}", cluster.peer_addr(1))).await?.vote(request()).await?;
    Ok(())
}

/// `geocache serve` with `args` (after `--id 1 --data-dir DIR`): its exit code and stderr, once it
/// exits by itself; an error if it is still running after a while (it started), and then it is
/// killed.
async fn serve_outcome(args: &[&str]) -> Result<(i32, String)> {
    let dir = tempfile::tempdir()?;
    let stderr = dir.path().join("stderr");
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--id", "1", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr)?)
        .env_remove("RUST_LOG")
        .spawn()?;
    let exited = eventually("serve to exit", Duration::from_secs(10), || {
        let status = child.try_wait();
        async move { status.transpose() }
    })
    .await;
    if exited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let status = exited??;
    Ok((status.code().unwrap_or(-1), std::fs::read_to_string(&stderr)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_listener_without_tls_refuses_to_start() -> Result<()> {
    let port = free_port();
    let peer = format!("127.0.0.1:{}", free_port());
    // The check runs before anything binds: these never listen on a non-loopback address.
    for args in [
        vec!["--listen".to_string(), format!("0.0.0.0:{port}"), "--peer-listen".into(), peer.clone()],
        vec!["--listen".to_string(), format!("127.0.0.1:{port}"), "--peer-listen".into(), format!("0.0.0.0:{port}")],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = serve_outcome(&args).await?;
        assert_ne!(code, 0, "{args:?} started: {stderr}");
        assert!(stderr.contains("--insecure") && stderr.contains("--tls-cert"), "{args:?}: {stderr}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_makes_a_ca_and_node_certificates_a_node_starts_with() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca_dir = dir.path().join("ca");
    let node_dir = dir.path().join("node1");
    let cli = |args: &[&str]| outcome(&run_cli(Path::new(BIN), "127.0.0.1:1", args));
    let (code, out, err) = cli(&["cert", "ca", "--out", ca_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ca.pem") && !out.contains("PRIVATE"), "{out}");
    let (code, out, err) = cli(&[
        "cert",
        "node",
        "--ca",
        ca_dir.to_str().unwrap(),
        "--name",
        "node1",
        "--san",
        "127.0.0.1",
        "--out",
        node_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("--tls-cert") && !out.contains("PRIVATE"), "{out}");
    // Never replaces a key.
    let (code, _, err) = cli(&["cert", "ca", "--out", ca_dir.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("exists already") && !err.contains("PRIVATE"), "{err}");

    // A one-node cluster starts with them and takes writes (over TLS on its client port too).
    let mut cluster = TestCluster::new(BIN)?;
    cluster.trust_ca(&std::fs::read_to_string(ca_dir.join("ca.pem"))?);
    let flags = tls_flags(&node_dir.join("node1.pem"), &node_dir.join("node1-key.pem"), &ca_dir.join("ca.pem"));
    cluster.spawn(1, &flags.iter().map(String::as_str).collect::<Vec<_>>())?;
    cluster.init(WITHIN).await?;
    cluster.client_of(1).await?.set("k", "v").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_secure_starts_a_tls_cluster_and_says_so() -> Result<()> {
    let data = tempfile::tempdir()?;
    let (dev, lines) =
        DevRun::start(Path::new(BIN), &["--secure", "--data-dir", data.path().to_str().unwrap()]).await?;
    let (base, peer_base) = (dev.base, dev.peer_base);
    assert!(lines.iter().any(|l| l.contains("cluster is up")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("mutual TLS")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains(&format!("peer 127.0.0.1:{}", peer_base + 2))), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("PRIVATE")), "{lines:?}");
    for file in ["ca.pem", "ca-key.pem", "node-1.pem", "node-3-key.pem"] {
        assert!(data.path().join("tls").join(file).exists(), "no {file}");
    }
    assert!(data.path().join("tls").join("admin.token").exists(), "no admin token file");
    let token = std::fs::read_to_string(data.path().join("tls").join("admin.token"))?;
    assert!(!lines.iter().any(|l| l.contains(token.trim())), "dev printed the token: {lines:?}");
    // What dev tells a newcomer to export, and the CLI with it.
    let ca = data.path().join("tls").join("ca.pem");
    assert!(lines.iter().any(|l| l.contains("GEOCACHE_TLS_CA") && l.contains("GEOCACHE_TOKEN")), "{lines:?}");
    let cli = |endpoint: String, env: &[(&str, &Path)], token: Option<&str>, args: &[&str]| {
        let mut command = std::process::Command::new(BIN);
        command.args(args).env("GEOCACHE_ENDPOINT", endpoint).env_remove("RUST_LOG");
        command.env_remove("GEOCACHE_TLS_CA").env_remove("GEOCACHE_TOKEN");
        for (key, value) in env {
            command.env(key, value);
        }
        if let Some(token) = token {
            command.env("GEOCACHE_TOKEN", token.trim());
        }
        outcome(&command.output().expect("run the CLI"))
    };
    let first = format!("127.0.0.1:{base}");
    let (code, _, err) = cli(first.clone(), &[("GEOCACHE_TLS_CA", &ca)], Some(&token), &["set", "hello", "world"]);
    assert_eq!(code, 0, "{err}");
    let third = format!("127.0.0.1:{}", base + 2);
    let (code, out, _) = cli(third, &[("GEOCACHE_TLS_CA", &ca)], Some(&token), &["get", "hello"]);
    assert_eq!((code, out.as_str()), (0, "world"));
    // Without the CA the client port's TLS stops the call; without the token the node refuses.
    let (code, _, err) = cli(first.clone(), &[], Some(&token), &["get", "hello"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli(first, &[("GEOCACHE_TLS_CA", &ca)], None, &["get", "hello"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("token"), "{err}");
    Ok(())
}

/// Tokens of each role, long enough for the node's 16-character minimum.
const READ_TOKEN: &str = "read-token-for-the-test-0001";
const WRITE_TOKEN: &str = "write-token-for-the-test-0002";
const ADMIN_TOKEN: &str = "admin-token-for-the-test-0003";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_may_read_write_and_change_membership() -> Result<()> {
    let mut cluster = TestCluster::new(BIN)?;
    cluster.enable_tls()?;
    cluster.enable_tokens(&[("read", READ_TOKEN), ("write", WRITE_TOKEN), ("admin", ADMIN_TOKEN)])?;
    for id in 1..=3 {
        cluster.spawn(id, &[])?;
    }
    cluster.init(WITHIN).await?;
    let endpoints = || cluster.endpoints();
    let as_role = |token: &str| cluster.client_builder(endpoints()).discovery(false).token(token).build();
    let admin = cluster.client().await?;
    admin.set("seeded", "by-admin").await?;

    // No token, or a wrong one: nothing is answered.
    let mut anonymous = TestCluster::new(BIN)?;
    anonymous.trust_ca(&cluster.ca().context("CA")?.cert_pem);
    let nobody = anonymous.client_builder(endpoints()).discovery(false).build().await?;
    let refused = nobody.get("seeded").await.expect_err("a read without a token was answered");
    assert!(matches!(refused, geocache_client::Error::Unauthenticated(_)), "{refused:?}");
    let wrong = as_role("not-a-token-of-this-cluster").await?;
    let refused = wrong.set("seeded", "by-a-stranger").await.expect_err("a write with a wrong token was applied");
    assert!(matches!(refused, geocache_client::Error::Unauthenticated(_)), "{refused:?}");

    // read: reads, and nothing more.
    let reader = as_role(READ_TOKEN).await?;
    assert_eq!(reader.get("seeded").await?.map(|e| e.value), Some(Bytes::from_static(b"by-admin")));
    let refused = reader.set("seeded", "by-a-reader").await.expect_err("a read token wrote");
    assert!(matches!(refused, geocache_client::Error::PermissionDenied(_)), "{refused:?}");
    let refused = reader.delete("seeded").await.expect_err("a read token deleted");
    assert!(matches!(refused, geocache_client::Error::PermissionDenied(_)), "{refused:?}");

    // write: writes, but no membership change.
    let writer = as_role(WRITE_TOKEN).await?;
    writer.set("written", "by-a-writer").await?;
    let newcomer = geocache_client::Member::new(9, format!("127.0.0.1:{}", free_port()), "us-east")
        .with_peer_addr(format!("127.0.0.1:{}", free_port()));
    let refused = writer.add_learner(newcomer.clone(), false).await.expect_err("a write token changed membership");
    assert!(matches!(refused, geocache_client::Error::PermissionDenied(_)), "{refused:?}");

    // Nothing the refused calls asked for happened.
    assert_eq!(admin.get("seeded").await?.map(|e| e.value), Some(Bytes::from_static(b"by-admin")));
    assert_eq!(admin.get("written").await?.map(|e| e.value), Some(Bytes::from_static(b"by-a-writer")));
    let members = cluster.local_status(1).await.context("status")?.nodes;
    assert!(members.iter().all(|n| n.id != 9), "a refused add_learner added node 9: {members:?}");

    // The CLI carries the token from GEOCACHE_TOKEN, and says what a refusal means.
    let ca = cluster.tls_dir().join("ca.pem");
    let cli = |token: &str, args: &[&str]| {
        let output = std::process::Command::new(BIN)
            .args(args)
            .env("GEOCACHE_ENDPOINT", cluster.addr(1))
            .env("GEOCACHE_TLS_CA", &ca)
            .env("GEOCACHE_TOKEN", token)
            .env_remove("RUST_LOG")
            .output()
            .expect("run the CLI");
        outcome(&output)
    };
    let (code, out, err) = cli(READ_TOKEN, &["get", "written"]);
    assert_eq!((code, out.as_str()), (0, "by-a-writer"), "{err}");
    let (code, _, err) = cli(READ_TOKEN, &["set", "written", "again"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("permission denied"), "{err}");

    // No node wrote a token into its log.
    for id in 1..=3 {
        let log = cluster.log(id);
        for token in [READ_TOKEN, WRITE_TOKEN, ADMIN_TOKEN, "not-a-token-of-this-cluster"] {
            assert!(!log.contains(token), "node {id}'s log holds a token");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_clusters_client_port_speaks_only_tls() -> Result<()> {
    let cluster = TestCluster::start_secure(BIN, 1, &[]).await?;
    cluster.client().await?.set("k", "v").await?;
    // A plaintext client gets no answer from the TLS client port.
    let plain = geocache_client::Client::builder()
        .endpoints([cluster.addr(1)])
        .discovery(false)
        .timeout(Duration::from_secs(2))
        .build()
        .await?;
    let refused = plain.get("k").await.expect_err("a plaintext client was answered by a TLS port");
    assert!(refused.is_retryable(), "{refused:?}");
    // A client trusting another CA refuses the node's certificate.
    let other = foreign()?;
    let mistrusting = geocache_client::Client::builder()
        .endpoints([cluster.addr(1)])
        .discovery(false)
        .timeout(Duration::from_secs(2))
        .tls_ca_pem(other.ca.cert_pem.as_bytes().to_vec())
        .build()
        .await?;
    let refused = mistrusting.get("k").await.expect_err("a client trusting another CA accepted the node");
    assert!(format!("{refused}").to_lowercase().contains("certificate"), "{refused:?}");
    Ok(())
}
