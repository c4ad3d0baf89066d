//! Runs one node: opens its store, starts Raft, serves the gRPC services on two bound listeners
//! (and the Redis protocol and the Prometheus metrics on their own ports, if asked) and keeps the
//! leader's housekeeping (periodic `Tick`) going until shutdown.
//!
//! The two gRPC listeners (docs/ARCHITECTURE.md §1):
//! * the **client listener** serves `Cache` and `Admin`: clients, the CLI, operators. It never
//!   serves `Raft`.
//! * the **peer listener** serves `Raft`, and `Cache` and `Admin` again for the calls members
//!   make to one another: a follower forwarding a write or a membership change to the leader,
//!   a status fan-out, a read-index round, a `Touch`. Every member-to-member call goes here (to
//!   the membership's peer address, or its route override), so one firewall rule, one proxy
//!   (the harness's) and, with TLS, one certificate check cover all of them; and a leader can
//!   tell a forwarded request came from a member by the listener it arrived on. With TLS the
//!   peer listener completes a handshake demanding a certificate signed by the cluster CA
//!   before it reads anything ([`crate::tls`]).
//!
//! With `--tls-*` the client listener and the Redis port speak TLS too (the node's certificate,
//! no client certificate asked for); with `--tokens` every request there must carry a token
//! whose role allows it ([`crate::service::authorize`], [`crate::auth`]).
//!
//! `run` takes already bound listeners and a shutdown future (mini-redis style), so tests and
//! `geocache dev` can bind port 0 and stop a node without signals.

use std::future::Future;
use std::sync::Arc;

use geocache_proto::admin_server::AdminServer;
use geocache_proto::cache_server::CacheServer;
use geocache_proto::raft_server::RaftServer;
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::auth::{Access, Tokens};
use crate::config::Config;
use crate::connections::ConnectionLimits;
use crate::error::{Error, Result};
use crate::network::inbound::RaftService;
use crate::network::{GrpcNetworkFactory, PeerChannels, MAX_MESSAGE_BYTES};
use crate::node::Node;
use crate::service::authorize::Authorized;
use crate::service::{AdminService, CacheService};
use crate::state_machine::Op;
use crate::store;
use crate::tls::{ClientTls, PeerTls};
use crate::types::Raft;

/// A node's two bound gRPC listeners.
pub struct Listeners {
    /// `Cache` and `Admin`, for clients (`--listen`).
    pub client: TcpListener,
    /// `Raft` and member-to-member calls (`--peer-listen`).
    pub peer: TcpListener,
}

/// Serves `config` on `listeners` until `shutdown` completes, then stops Raft cleanly.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) -> Result<()> {
    config.validate()?;
    let tls = config.tls.as_ref().map(PeerTls::load).transpose()?;
    let client_tls = config.tls.as_ref().map(ClientTls::load).transpose()?;
    let access = match &config.tokens {
        Some(path) => Access::with_tokens(Tokens::load(path).map_err(|e| Error::FailedPrecondition(e.to_string()))?),
        None => Access::open(),
    };
    match &tls {
        Some(_) => tracing::info!("peer TLS on: members must present a certificate signed by the cluster CA"),
        None if config.insecure => {
            tracing::warn!("--insecure: peer traffic is plaintext and unauthenticated; anyone who reaches the peer port can forge Raft messages")
        }
        None => {}
    }
    if !access.is_open() {
        tracing::info!("tokens required on the client and Redis ports");
    } else if !config.listen.ip().is_loopback() {
        tracing::warn!(addr = %config.listen, "client listener on a non-loopback address without --tokens: anyone who reaches it may read and write");
    }
    let (log_store, state_machine, identity) = store::open_with_identity(&config.data_dir, config.id)?;
    let reader = state_machine.reader();
    let peers = PeerChannels::new(config.routes.clone(), tls.as_ref().map(PeerTls::client_config));
    let raft = Raft::new(
        config.id,
        Arc::new(config.raft_config()?),
        GrpcNetworkFactory::new(peers.clone(), identity.clone()),
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| Error::Fatal(format!("cannot start raft: {e}")))?;
    let recorder = crate::metrics::Recorder::new().map_err(|e| Error::Fatal(e.to_string()))?;
    let node = Node::new(config, raft.clone(), reader, peers, identity, recorder);
    tracing::info!(
        id = node.id(),
        region = %node.config().region,
        addr = %node.config().advertise,
        peer_addr = %node.config().peer_advertise,
        tls = tls.is_some(),
        "node started"
    );

    let ticker = tokio::spawn(tick_while_leader(node.clone()));
    let toucher = tokio::spawn(report_recency(node.clone()));
    let prober = tokio::spawn(crate::read::staleness::run_probe(node.clone()));
    let raft_watcher = tokio::spawn(crate::metrics::watch_raft(node.clone()));
    // Client messages are sized from the value limit, so an oversized one is refused while it
    // arrives instead of being buffered whole; Raft batches may carry many values.
    let client_message_bytes = node.config().max_client_message_bytes();
    let cache = CacheServer::new(CacheService::new(node.clone()))
        .max_decoding_message_size(client_message_bytes)
        .max_encoding_message_size(client_message_bytes);
    let admin = AdminServer::new(AdminService::new(node.clone()));
    let client_routes =
        Authorized::new(Routes::new(cache.clone()).add_service(admin.clone()).prepare(), access.clone());
    let peer_routes = Routes::new(cache)
        .add_service(admin)
        .add_service(
            RaftServer::new(RaftService::new(node.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .prepare();
    // The Redis front door, on its own port, over the same client API as the Cache service.
    let resp = match node.config().resp_listen {
        Some(addr) => {
            let resp_listener = TcpListener::bind(addr)
                .await
                .map_err(|e| Error::FailedPrecondition(format!("cannot listen on {addr} for RESP: {e}")))?;
            tracing::info!(%addr, tls = client_tls.is_some(), "serving RESP");
            let limits = crate::resp::RespLimits::from_config(node.config());
            let api = crate::service::CacheApi::new(node.clone(), crate::metrics::Edge::Resp);
            let security = crate::resp::RespSecurity {
                access: access.clone(),
                tls: client_tls.as_ref().map(ClientTls::resp_acceptor),
            };
            Some(tokio::spawn(crate::resp::serve(resp_listener, api, limits, security, std::future::pending())))
        }
        None => None,
    };
    // Prometheus metrics, on their own port: a scrape never competes with clients for the
    // gRPC port's connection cap.
    let metrics = match node.config().metrics_listen {
        Some(addr) => {
            let metrics_listener = TcpListener::bind(addr)
                .await
                .map_err(|e| Error::FailedPrecondition(format!("cannot listen on {addr} for metrics: {e}")))?;
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "metrics on a non-loopback address: anyone who reaches it can read them");
            }
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
            Some(tokio::spawn(crate::metrics::http::serve(metrics_listener, node.clone(), std::future::pending())))
        }
        None => None,
    };
    let limits = ConnectionLimits {
        max_connections: node.config().max_connections,
        idle_timeout: node.config().idle_timeout,
        request_timeout: node.config().request_timeout,
    };
    // The peer listener stops when the client listener's shutdown comes.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let peer_server = tokio::spawn(crate::connections::serve(
        listeners.peer,
        peer_routes,
        limits,
        tls.as_ref().map(PeerTls::acceptor),
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        },
    ));
    let client_acceptor = client_tls.as_ref().map(ClientTls::grpc_acceptor);
    crate::connections::serve(listeners.client, client_routes, limits, client_acceptor, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = peer_server.await;
    if let Some(resp) = resp {
        // Dropping the server drops every open RESP connection with it.
        resp.abort();
    }
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    raft_watcher.abort();
    ticker.abort();
    toucher.abort();
    prober.abort();
    let stopped = raft.shutdown().await;
    stopped.map_err(|e| Error::Fatal(format!("raft did not stop cleanly: {e}")))?;
    Ok(())
}

/// The leader proposes `Tick` every tick interval so expired entries are purged (and memory
/// freed) even when no writes arrive; followers do nothing.
async fn tick_while_leader(node: Node) {
    let mut interval = tokio::time::interval(node.config().tick_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if node.is_leader() {
            if let Err(e) = node.propose(node.command(Op::Tick, None)).await {
                tracing::debug!(error = %e, "tick not committed");
            }
        }
    }
}

/// Every tick interval, turns the keys local reads used into one `Touch` proposal: proposed here
/// on the leader, sent to the leader from a follower. Best effort: a failed batch is dropped.
async fn report_recency(node: Node) {
    let mut interval = tokio::time::interval(node.config().tick_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let keys = node.recency().drain();
        if keys.is_empty() {
            continue;
        }
        let result = if node.is_leader() {
            node.propose(node.command(Op::Touch { keys }, None)).await.map(|_| ())
        } else if let Some((leader, _)) = node.leader() {
            match node.member_channel(leader) {
                Ok(channel) => {
                    let mut request =
                        tonic::Request::new(geocache_proto::TouchRequest { keys, cluster_id: node.identity().get() });
                    request.set_timeout(node.config().request_timeout);
                    geocache_proto::raft_client::RaftClient::new(channel)
                        .touch(request)
                        .await
                        .map(|_| ())
                        .map_err(|s| Error::Unavailable(s.message().to_string()))
                }
                Err(e) => Err(e),
            }
        } else {
            Err(Error::Unavailable("no leader".into()))
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "recency batch dropped");
        }
    }
}
