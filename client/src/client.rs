//! The [`Client`] handle, its builder, and the cache operations.
//!
//! A `Client` is cheap to clone (an `Arc` inside); clones share channels, the leader guess and
//! the write numbering, so one exactly-once identity covers every clone.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use geocache_proto as pb;
use geocache_proto::cache_client::CacheClient;
use tonic::transport::Channel;

use crate::endpoint::normalize_all;
use crate::error::{Error, Result};
use crate::options::{check_key, ttl_ms, Consistency, ReadOptions, SetOptions};
use crate::routing::{Policy, Route, Router};
use crate::types::{Entry, TtlInfo, WriteResult};
use crate::write_id::WriteIds;

/// Default total time for one call, retries and backoff included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time to open a TCP connection to one node.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest response the client decodes. Above the node's default value limit (4 MiB), so a
/// maximal value plus its metadata fits.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A handle to a geocache cluster. See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) router: Router,
    pub(crate) writes: WriteIds,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.router.seeds())
            .field("leader", &self.inner.router.leader())
            .field("client_id", &self.inner.writes.client_id())
            .finish()
    }
}

/// Configures a [`Client`]. Start with [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    attempt_timeout: Option<Duration>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            endpoints: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempt_timeout: None,
        }
    }
}

impl ClientBuilder {
    /// Node addresses, `host:port` or `http://host:port`. The first is the first leader guess
    /// and (until region preference exists) the first replica asked for stale reads. Need not
    /// be all nodes: any reachable one points the client to the leader.
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

    /// Builds the client. Connections are opened lazily, on first use, so this succeeds even
    /// when some (or all) nodes are down; it fails only on bad configuration
    /// ([`Error::InvalidArgument`]: no endpoints, an unparsable address, a zero timeout).
    /// Must be called inside a tokio runtime.
    pub async fn build(self) -> Result<Client> {
        let seeds = normalize_all(self.endpoints)?;
        for (name, d) in [
            ("timeout", Some(self.timeout)),
            ("connect_timeout", Some(self.connect_timeout)),
            ("attempt_timeout", self.attempt_timeout),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(Error::InvalidArgument(format!("{name} must be > 0")));
            }
        }
        let router = Router::new(seeds, self.connect_timeout, self.timeout, self.attempt_timeout);
        Ok(Client { inner: Arc::new(Inner { router, writes: WriteIds::random() }) })
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

    /// The address leader-bound calls currently go to first (`http://host:port`): the last
    /// leader a node pointed to, or the last node that served a leader-bound call.
    pub fn leader_addr(&self) -> String {
        self.inner.router.leader()
    }

    // ---- reads -------------------------------------------------------------------------------

    /// Reads `key` linearizably. `Ok(None)` when the key is absent or expired.
    pub async fn get(&self, key: impl Into<String>) -> Result<Option<Entry>> {
        self.get_with(key, ReadOptions::default()).await
    }

    /// Reads `key` at the given consistency. A bounded read that a replica cannot meet falls
    /// back to the next replica and finally the leader; it never returns older data.
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

    /// The remaining time to live of `key`, read linearizably. `Ok(None)` when the key is absent.
    pub async fn ttl(&self, key: impl Into<String>) -> Result<Option<TtlInfo>> {
        self.ttl_with(key, ReadOptions::default()).await
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
        let req = pb::ExpireRequest { key, ttl_ms, persist: ttl_ms.is_none(), write_id: Some(write.id().into()) };
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

/// Linearizable reads need the leader's read index, so they go where writes go; the others are
/// answered locally by the nearest replica.
fn read_route(options: ReadOptions) -> Route {
    match options.consistency {
        Consistency::Linearizable => Route::Leader,
        Consistency::Bounded(_) | Consistency::Stale => Route::Nearest,
    }
}

fn cache_client(channel: Channel) -> CacheClient<Channel> {
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
