//! The [`Client`] handle, its builder, and the cache operations.
//!
//! A `Client` is cheap to clone (an `Arc` inside); clones share channels, the leader guess, the
//! topology, the write numbering and the read-through flights, so one exactly-once identity and
//! one single-flight table cover every clone. The topology refresh task holds only a `Weak`
//! reference and ends when the last clone is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::endpoint::{NodeChannel, Security};
use bytes::Bytes;
use geocache_proto as pb;
use geocache_proto::cache_client::CacheClient;

use crate::endpoint::normalize_all;
use crate::error::{Error, Result};
use crate::options::{check_key, ttl_ms, Consistency, ReadOptions, SetOptions};
use crate::read_through::Flights;
use crate::routing::{Policy, Route, Router};
use crate::topology::{Replica, DEFAULT_REFRESH_INTERVAL, MIN_REFRESH_GAP};
use crate::types::{Entry, TtlInfo, WriteResult};
use crate::write_id::WriteIds;

/// Default total time for one call, retries and backoff included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time to open a TCP connection to one node.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest response the client decodes. Above the node's default value limit (4 MiB), so a
/// maximal value plus its metadata fits.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Longest `build` waits for the first topology refresh before returning anyway.
const DISCOVERY_WAIT: Duration = Duration::from_secs(2);

/// A handle to a geocache cluster. See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) router: Router,
    pub(crate) writes: WriteIds,
    pub(crate) flights: Flights,
    /// Time to live of values `get_or_load` stores; `None`: no expiry.
    pub(crate) default_ttl: Option<Duration>,
    /// Consistency of `get`, `ttl`, `get_json` and `get_or_load`.
    pub(crate) default_consistency: Consistency,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wakes the refresh task, which then finds no client left and ends.
        self.router.request_refresh();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.router.seeds())
            .field("region", &self.inner.router.region())
            .field("leader", &self.inner.router.leader())
            .field("client_id", &self.inner.writes.client_id())
            .finish()
    }
}

/// Configures a [`Client`]. Start with [`Client::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use geocache_client::{Client, Consistency};
///
/// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct User { name: String }
/// # async fn load_user() -> Result<User, std::io::Error> { Ok(User { name: "ada".into() }) }
/// # async fn example() -> geocache_client::Result<()> {
/// let cache = Client::builder()
///     .endpoints(["10.0.1.7:7001", "10.0.2.7:7001", "10.0.3.7:7001"])
///     .region("eu-west")                                  // read from eu-west replicas first
///     .default_consistency(Consistency::Bounded(Duration::from_millis(500)))
///     .default_ttl(Duration::from_secs(300))              // what get_or_load stores
///     .build()
///     .await?;
/// let user: User = cache.get_or_load("user:42", load_user).await?;
/// # let _ = user;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    region: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    attempt_timeout: Option<Duration>,
    refresh_interval: Duration,
    discovery: bool,
    only_endpoints: bool,
    default_ttl: Option<Duration>,
    default_consistency: Consistency,
    tls_ca_pem: Option<Vec<u8>>,
    token: Option<Token>,
}

/// A bearer token, kept out of `Debug` output.
#[derive(Clone)]
struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            endpoints: Vec::new(),
            region: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempt_timeout: None,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            discovery: true,
            only_endpoints: false,
            default_ttl: None,
            default_consistency: Consistency::Linearizable,
            tls_ca_pem: None,
            token: None,
        }
    }
}

impl ClientBuilder {
    /// Node addresses, `host:port` or `http://host:port`. The first is the first leader guess.
    /// Need not be all nodes: the client learns the others (and the leader) from any one that
    /// answers.
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// Total time one call may take, retries and backoff included. Default: 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time to open a TCP connection to one node before moving on. Default: 1 s.
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Cap on one attempt at one node, so a node that accepts the call but never answers
    /// (paused, partitioned away from its peers) cannot use up the whole call timeout.
    /// Default: none (an attempt may use whatever remains of the call timeout).
    pub fn attempt_timeout(mut self, attempt_timeout: Duration) -> Self {
        self.attempt_timeout = Some(attempt_timeout);
        self
    }

    /// The region this client runs in, e.g. `eu-west` (a node's `--region` label). Reads go
    /// to replicas in this region first (any role), then to the others by measured round trip.
    /// Default: none (round trip alone decides).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// How often the client refreshes the topology (members, regions, roles, leader) and
    /// re-measures round trips in the background. Failures and leader changes also trigger a
    /// refresh, at most once a second. Default: 10 s.
    pub fn refresh_interval(mut self, refresh_interval: Duration) -> Self {
        self.refresh_interval = refresh_interval;
        self
    }

    /// Whether to learn the topology from the cluster (default: `true`). With `false` the
    /// client knows only its endpoints and the leader hints nodes send: no background task, no
    /// probes, and reads ask the endpoints in the order given (a linearizable one, the leader
    /// guess first). For tools that must talk to particular nodes.
    pub fn discovery(mut self, discovery: bool) -> Self {
        self.discovery = discovery;
        self
    }

    /// Whether every call must go to one of the endpoints given (default: `false`). With
    /// `true`, a leader hint naming another node is ignored (the call goes on with the
    /// endpoints), and so are members learned by discovery: nothing is ever sent to a node
    /// that is not an endpoint. Writes a node forwards to its leader itself still work. With
    /// [`discovery`](Self::discovery) off too, this is the `geocache` command line's client:
    /// it asks exactly the node it was given.
    pub fn only_endpoints(mut self, only_endpoints: bool) -> Self {
        self.only_endpoints = only_endpoints;
        self
    }

    /// Time to live of the values [`Client::get_or_load`] stores (at least 1 ms).
    /// Default: none, the values live until evicted or deleted.
    pub fn default_ttl(mut self, default_ttl: Duration) -> Self {
        self.default_ttl = Some(default_ttl);
        self
    }

    /// Consistency of the reads that take no options: [`Client::get`], [`Client::ttl`],
    /// [`Client::get_json`] and [`Client::get_or_load`]. Default: [`Consistency::Linearizable`].
    /// (`ReadOptions::default()` stays linearizable whatever this says.)
    pub fn default_consistency(mut self, consistency: Consistency) -> Self {
        self.default_consistency = consistency;
        self
    }

    /// Connect to every node over TLS, trusting only the CA certificate(s) in `ca_pem` (PEM;
    /// the cluster CA that signed the nodes' certificates, e.g. `ca.pem` from `geocache cert`
    /// or `geocache dev --secure`). Node addresses stay `host:port`; each node's certificate
    /// must name the host dialled. Default: plaintext.
    pub fn tls_ca_pem(mut self, ca_pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca_pem = Some(ca_pem.into());
        self
    }

    /// Send `token` with every call (`authorization: Bearer TOKEN`), for a cluster started with
    /// `--tokens`. Its role decides what the client may do; a call it does not allow fails with
    /// [`Error::PermissionDenied`], a missing or unknown token with [`Error::Unauthenticated`].
    /// The token is never logged or shown by `Debug`. Default: none.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Token(token.into()));
        self
    }

    /// Builds the client. Connections are opened lazily, on first use. Unless
    /// [`discovery`](Self::discovery) is off, it then asks the cluster for its topology and
    /// measures round trips, waiting at most 2 s (or the call timeout, if shorter) for that;
    /// it succeeds even when no node answers, and keeps trying in the background.
    ///
    /// Fails only on bad configuration ([`Error::InvalidArgument`]: no endpoints, an
    /// unparsable address, a zero timeout or interval, a TTL or staleness bound under 1 ms, an
    /// empty region). Must be called inside a tokio runtime.
    pub async fn build(self) -> Result<Client> {
        let seeds = normalize_all(self.endpoints)?;
        for (name, d) in [
            ("timeout", Some(self.timeout)),
            ("connect_timeout", Some(self.connect_timeout)),
            ("attempt_timeout", self.attempt_timeout),
            ("refresh_interval", Some(self.refresh_interval)),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(Error::InvalidArgument(format!("{name} must be > 0")));
            }
        }
        if let Some(ttl) = self.default_ttl {
            ttl_ms(ttl)?;
        }
        ReadOptions { consistency: self.default_consistency, min_version: None }.to_wire()?;
        let region = match self.region {
            Some(r) if r.trim().is_empty() => {
                return Err(Error::InvalidArgument("region must not be empty".into()));
            }
            r => r.map(|r| r.trim().to_string()),
        };
        let mut security = Security::default();
        if let Some(ca_pem) = &self.tls_ca_pem {
            security = security.with_ca(ca_pem);
        }
        if let Some(Token(token)) = &self.token {
            security = security.with_token(token)?;
        }
        let router = Router::new(seeds, region, self.connect_timeout, self.timeout, self.attempt_timeout)
            .pinned(self.only_endpoints)
            .secured(security);
        let inner = Arc::new(Inner {
            router,
            writes: WriteIds::random(),
            flights: Flights::default(),
            default_ttl: self.default_ttl,
            default_consistency: self.default_consistency,
        });
        if self.discovery {
            let (ready, first_refresh) = tokio::sync::oneshot::channel();
            tokio::spawn(refresh_loop(Arc::downgrade(&inner), self.refresh_interval, ready));
            let _ = tokio::time::timeout(self.timeout.min(DISCOVERY_WAIT), first_refresh).await;
        }
        Ok(Client { inner })
    }
}

/// Keeps the topology fresh while any clone of the client lives: once at once (then tells
/// `build`), then every `interval` or when the router asks, at most once per
/// [`MIN_REFRESH_GAP`]. Holds the client only while refreshing.
async fn refresh_loop(client: Weak<Inner>, interval: Duration, ready: tokio::sync::oneshot::Sender<()>) {
    let Some(wake) = client.upgrade().map(|inner| inner.router.wake_handle()) else { return };
    let mut ready = Some(ready);
    let gap = interval.min(MIN_REFRESH_GAP);
    loop {
        let Some(inner) = client.upgrade() else { return };
        if let Err(e) = inner.router.refresh().await {
            tracing::debug!(error = %e, "topology refresh found no node to ask");
        }
        drop(inner);
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        tokio::time::sleep(gap).await;
        tokio::select! {
            _ = tokio::time::sleep(interval - gap) => {}
            _ = wake.notified() => {}
        }
    }
}

impl Client {
    /// Connects to a cluster through the given node addresses with default settings.
    /// Equivalent to `Client::builder().endpoints(endpoints).build().await`.
    pub async fn connect(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Result<Client> {
        Client::builder().endpoints(endpoints).build().await
    }

    /// A builder with default settings (5 s call timeout, 1 s connect timeout).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// This client's random, nonzero exactly-once identity (shared by its clones).
    pub fn client_id(&self) -> u64 {
        self.inner.writes.client_id()
    }

    /// The normalised seed endpoints, in the order given.
    pub fn endpoints(&self) -> &[String] {
        self.inner.router.seeds()
    }

    /// The address leader-bound calls currently go to first (`http://host:port`): the leader
    /// the last topology refresh named, the last leader a node pointed to, or the last node
    /// that served a leader-bound call, whichever came last.
    pub fn leader_addr(&self) -> String {
        self.inner.router.leader()
    }

    /// The region given to [`ClientBuilder::region`], if any.
    pub fn region(&self) -> Option<&str> {
        self.inner.router.region()
    }

    /// Every node the client knows, in the order a stale read would ask them, with the region,
    /// role, round trip and reachability it last saw. For diagnostics; the list changes with
    /// every refresh.
    pub fn replicas(&self) -> Vec<Replica> {
        self.inner.router.replicas()
    }

    /// Refreshes the topology and round-trip measurements now, instead of waiting for the
    /// background refresh. Fails (changing nothing but reachability) if no node answers.
    pub async fn refresh_topology(&self) -> Result<()> {
        self.inner.router.refresh().await
    }

    /// The read options of the reads that take none: the client's default consistency.
    pub(crate) fn default_read(&self) -> ReadOptions {
        ReadOptions { consistency: self.inner.default_consistency, min_version: None }
    }

    // ---- reads -------------------------------------------------------------------------------

    /// Reads `key` at the client's default consistency (linearizable unless
    /// [`ClientBuilder::default_consistency`] says otherwise). `Ok(None)` when the key is
    /// absent or expired.
    pub async fn get(&self, key: impl Into<String>) -> Result<Option<Entry>> {
        self.get_with(key, self.default_read()).await
    }

    /// Reads `key` at the given consistency, from the nearest replica that can serve it (see
    /// the [crate docs](crate#regions-and-replica-choice)). A replica that fails, or cannot meet
    /// a bound or a `min_version` in its share of the deadline, hands the read to the next one,
    /// the leader last for bounded reads; a read never returns data older than it asked for.
    /// When every replica refuses a bounded read as too stale, the error is
    /// [`Error::StaleReplica`] with the freshest replica's bound.
    pub async fn get_with(&self, key: impl Into<String>, options: ReadOptions) -> Result<Option<Entry>> {
        let key = key.into();
        check_key(&key)?;
        let (consistency, max_staleness_ms, min_version) = options.to_wire()?;
        let req = pb::GetRequest { key, consistency: consistency as i32, max_staleness_ms, min_version };
        let resp = self
            .inner
            .router
            .call("get", read_route(options), Policy::READ, |ch, budget| {
                let mut client = cache_client(ch);
                let req = timed(req.clone(), budget);
                async move { client.get(req).await }
            })
            .await?;
        Ok(Entry::from_wire(resp))
    }

    /// The remaining time to live of `key`, read at the client's default consistency.
    /// `Ok(None)` when the key is absent.
    pub async fn ttl(&self, key: impl Into<String>) -> Result<Option<TtlInfo>> {
        self.ttl_with(key, self.default_read()).await
    }

    /// The remaining time to live of `key`, at the given consistency.
    pub async fn ttl_with(&self, key: impl Into<String>, options: ReadOptions) -> Result<Option<TtlInfo>> {
        let key = key.into();
        check_key(&key)?;
        let (consistency, max_staleness_ms, min_version) = options.to_wire()?;
        let req = pb::TtlRequest { key, consistency: consistency as i32, max_staleness_ms, min_version };
        let resp = self
            .inner
            .router
            .call("ttl", read_route(options), Policy::READ, |ch, budget| {
                let mut client = cache_client(ch);
                let req = timed(req.clone(), budget);
                async move { client.ttl(req).await }
            })
            .await?;
        Ok(TtlInfo::from_wire(resp))
    }

    // ---- writes ------------------------------------------------------------------------------

    /// Sets `key` to `value`, unconditionally and without expiry.
    pub async fn set(&self, key: impl Into<String>, value: impl Into<Bytes>) -> Result<WriteResult> {
        self.set_with(key, value, SetOptions::default()).await
    }

    /// Sets `key` to `value` with a TTL and/or a condition. A condition that does not hold is
    /// `Ok` with `applied == false`.
    ///
    /// Errors: [`Error::InvalidArgument`] for an empty key or a TTL under 1 ms (checked before
    /// sending), [`Error::Rejected`] when the state machine refuses the write (e.g. larger than
    /// the whole cache), [`Error::Timeout`] when the outcome stayed unknown until the deadline.
    pub async fn set_with(
        &self,
        key: impl Into<String>,
        value: impl Into<Bytes>,
        options: SetOptions,
    ) -> Result<WriteResult> {
        let key = key.into();
        check_key(&key)?;
        let ttl_ms = options.ttl.map(ttl_ms).transpose()?;
        let (condition, if_version) = options.condition.to_wire();
        let write = self.inner.writes.begin();
        let req = pb::SetRequest {
            key,
            value: value.into(),
            ttl_ms,
            condition: condition as i32,
            if_version,
            write_id: Some(write.id().into()),
            expires_at_ms: None,
        };
        let resp = self
            .inner
            .router
            .call("set", Route::Leader, Policy::WRITE, |ch, budget| {
                let mut client = cache_client(ch);
                let req = timed(req.clone(), budget);
                async move { client.set(req).await }
            })
            .await?;
        WriteResult::from_wire(resp)
    }

    /// Deletes `key`. `applied` says whether it existed.
    pub async fn delete(&self, key: impl Into<String>) -> Result<WriteResult> {
        let key = key.into();
        check_key(&key)?;
        let write = self.inner.writes.begin();
        let req = pb::DeleteRequest { key, write_id: Some(write.id().into()) };
        let resp = self
            .inner
            .router
            .call("delete", Route::Leader, Policy::WRITE, |ch, budget| {
                let mut client = cache_client(ch);
                let req = timed(req.clone(), budget);
                async move { client.delete(req).await }
            })
            .await?;
        WriteResult::from_wire(resp)
    }

    /// Gives `key` a new time to live (at least 1 ms), or removes its expiry with `None`
    /// (persist). `applied` says whether the key existed.
    pub async fn expire(&self, key: impl Into<String>, ttl: Option<Duration>) -> Result<WriteResult> {
        let key = key.into();
        check_key(&key)?;
        let ttl_ms = ttl.map(ttl_ms).transpose()?;
        let write = self.inner.writes.begin();
        let req = pb::ExpireRequest {
            key,
            ttl_ms,
            persist: ttl_ms.is_none(),
            write_id: Some(write.id().into()),
            expires_at_ms: None,
        };
        let resp = self
            .inner
            .router
            .call("expire", Route::Leader, Policy::WRITE, |ch, budget| {
                let mut client = cache_client(ch);
                let req = timed(req.clone(), budget);
                async move { client.expire(req).await }
            })
            .await?;
        WriteResult::from_wire(resp)
    }
}

/// Every level is served by the nearest replica (a follower gets a linearizable read's index
/// from the leader itself). Reads that are local or wait for `min_version` share the deadline
/// among replicas; a plain linearizable read may use all of it (its leader round trip is its
/// normal cost).
fn read_route(options: ReadOptions) -> Route {
    let sliced = options.min_version.is_some() || options.consistency != Consistency::Linearizable;
    Route::Nearest { consistency: options.consistency, sliced }
}

fn cache_client(channel: NodeChannel) -> CacheClient<NodeChannel> {
    CacheClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// Wraps a request with `grpc-timeout` set to what is left of the call, so the node bounds its
/// own waits (a `min_version` catch-up, a proposal) by the caller's deadline.
pub(crate) fn timed<T>(message: T, budget: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(budget);
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builder_validates_configuration() {
        assert!(matches!(Client::connect(Vec::<String>::new()).await, Err(Error::InvalidArgument(_))));
        assert!(matches!(Client::connect(["127.0.0.1"]).await, Err(Error::InvalidArgument(_))));
        assert!(matches!(
            Client::builder().endpoints(["127.0.0.1:1"]).timeout(Duration::ZERO).build().await,
            Err(Error::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn connect_is_lazy_and_clones_share_state() {
        // Nothing listens on these ports; connecting still succeeds.
        let client = Client::connect(["127.0.0.1:1", "http://127.0.0.1:2/"]).await.unwrap();
        assert_eq!(client.endpoints(), ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!(client.leader_addr(), "http://127.0.0.1:1");
        let clone = client.clone();
        assert_eq!(clone.client_id(), client.client_id());
        assert_ne!(client.client_id(), 0);
    }

    #[tokio::test]
    async fn bad_input_fails_before_sending() {
        let client =
            Client::builder().endpoints(["127.0.0.1:1"]).timeout(Duration::from_millis(50)).build().await.unwrap();
        let zero_ttl = SetOptions::new().with_ttl(Duration::ZERO);
        for err in [
            client.set_with("k", "v", zero_ttl).await.unwrap_err(),
            client.set_with("k", "v", SetOptions::new().with_ttl(Duration::from_micros(10))).await.unwrap_err(),
            client.expire("k", Some(Duration::ZERO)).await.unwrap_err(),
            client.set("", "v").await.unwrap_err(),
            client.get("").await.unwrap_err(),
        ] {
            assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        }
        // Validation failures used no write ids.
        assert_eq!(client.inner.writes.acked_below(), 1);
    }

    #[tokio::test]
    async fn unreachable_cluster_is_unavailable_not_unknown() {
        // Port 1 refuses connections: nothing was ever sent, so the outcome is known.
        let client =
            Client::builder().endpoints(["127.0.0.1:1"]).timeout(Duration::from_millis(200)).build().await.unwrap();
        let err = client.set("k", "v").await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(err.outcome_known());
        assert!(err.is_retryable());
        // The write's seq was released when the call returned.
        assert_eq!(client.inner.writes.acked_below(), 2);
    }
}
