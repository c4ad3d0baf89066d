//! Node addresses: normalisation and the lazily connected, cached gRPC channel per address.
//!
//! An address is written `host:port` or `http://host:port`; both normalise to
//! `http://host:port`, which is the key of the channel cache, so a seed endpoint and a leader
//! hint naming the same node share one connection.
//!
//! With [`Security`] set, every channel speaks TLS, trusting only the given CA (the cluster's),
//! and every request carries the bearer token.
//!
//! Invariants: one channel per normalised address for the life of the client; creating a
//! channel never blocks or fails on an unreachable node (tonic's `connect_lazy`), so a client
//! can start while some nodes are down and reconnects when they return. The token is never
//! formatted (`Debug` says only whether there is one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};

use crate::error::{Error, Result};

/// How often an idle-but-open HTTP/2 connection is pinged, so a node that vanished without a
/// TCP reset (paused, partitioned) is noticed instead of hanging calls until their deadline.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Normalises a node address to `http://host:port`.
///
/// Accepts `host:port` and `http://host:port` (a trailing `/` is dropped). Refuses an empty
/// address, a missing port (a typo would otherwise dial port 80 and time out), a path, and
/// `https://` (TLS is chosen by the client's configuration, not per address).
pub(crate) fn normalize(addr: &str) -> Result<String> {
    let addr = addr.trim();
    let bad = |why: &str| Error::InvalidArgument(format!("bad node address {addr:?}: {why}"));
    if addr.is_empty() {
        return Err(bad("empty"));
    }
    let with_scheme = match addr.split_once("://") {
        Some(("http", _)) => addr.to_string(),
        Some(("https", _)) => {
            return Err(bad(
                "write host:port; TLS is turned on for every node by ClientBuilder::tls_ca_pem (CLI: --tls-ca)",
            ))
        }
        Some((scheme, _)) => return Err(bad(&format!("unsupported scheme {scheme:?}"))),
        None => format!("http://{addr}"),
    };
    let uri: Uri = with_scheme.parse().map_err(|e| bad(&format!("{e}")))?;
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if authority.port_u16().is_none() {
        return Err(bad("no port (expected host:port, e.g. 127.0.0.1:7001)"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a node address has no path"));
    }
    Ok(format!("http://{authority}"))
}

/// Normalises and deduplicates seed endpoints, keeping their order (the order is the
/// preference for the first leader guess and for stale reads).
pub(crate) fn normalize_all<I, S>(endpoints: I) -> Result<Vec<String>>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut out: Vec<String> = Vec::new();
    for addr in endpoints {
        let addr = normalize(&addr.into())?;
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument("no endpoints given; pass at least one node address".into()));
    }
    Ok(out)
}

/// How the client proves itself and checks the nodes: TLS trusting a CA, and a bearer token.
#[derive(Clone, Default)]
pub(crate) struct Security {
    tls: Option<ClientTlsConfig>,
    token: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security").field("tls", &self.tls.is_some()).field("token", &self.token.is_some()).finish()
    }
}

impl Security {
    /// Connect with TLS, trusting only the CA certificate(s) in `ca_pem`.
    pub(crate) fn with_ca(mut self, ca_pem: &[u8]) -> Self {
        self.tls = Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)));
        self
    }

    /// Send `token` as `authorization: Bearer TOKEN` with every request.
    pub(crate) fn with_token(mut self, token: &str) -> Result<Self> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::InvalidArgument("a token must be printable ASCII".into()))?;
        value.set_sensitive(true);
        self.token = Some(value);
        Ok(self)
    }
}

/// Adds the bearer token, if any, to every request on a channel.
#[derive(Clone)]
pub(crate) struct WithToken(Option<MetadataValue<Ascii>>);

impl Interceptor for WithToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// A channel to one node, with the client's token on every request.
pub(crate) type NodeChannel = InterceptedService<Channel, WithToken>;

/// One lazily connected channel per normalised address.
#[derive(Debug)]
pub(crate) struct Channels {
    connect_timeout: Duration,
    security: Security,
    // A std mutex: only held to look up or insert, never across an await.
    cache: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        Channels { connect_timeout, security: Security::default(), cache: Mutex::new(HashMap::new()) }
    }

    /// The same, with `security` on every channel.
    pub(crate) fn secured(self, security: Security) -> Self {
        Channels { security, ..self }
    }

    /// The channel to a normalised address, created on first use. Must run inside a tokio
    /// runtime (tonic spawns the channel's worker task there).
    pub(crate) fn get(&self, addr: &str) -> Result<NodeChannel> {
        let with_token = |channel: Channel| InterceptedService::new(channel, WithToken(self.security.token.clone()));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = cache.get(addr) {
            return Ok(with_token(channel.clone()));
        }
        let bad = |e: &dyn std::fmt::Display| Error::InvalidArgument(format!("bad node address {addr:?}: {e}"));
        let dial = match &self.security.tls {
            Some(_) => addr.replacen("http://", "https://", 1),
            None => addr.to_string(),
        };
        let mut endpoint = Endpoint::from_shared(dial)
            .map_err(|e| bad(&e))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
        if let Some(tls) = &self.security.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| bad(&e))?;
        }
        let channel = endpoint.connect_lazy();
        cache.insert(addr.to_string(), channel.clone());
        Ok(with_token(channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalise() {
        for (given, want) in [
            ("127.0.0.1:7001", "http://127.0.0.1:7001"),
            ("http://127.0.0.1:7001", "http://127.0.0.1:7001"),
            (" http://localhost:7002/ ", "http://localhost:7002"),
            ("[::1]:7003", "http://[::1]:7003"),
            ("node-1.example:7001", "http://node-1.example:7001"),
        ] {
            assert_eq!(normalize(given).unwrap(), want, "{given}");
        }
    }

    #[test]
    fn bad_addresses_are_refused() {
        for bad in [
            "",
            "   ",
            "127.0.0.1",
            "http://127.0.0.1",
            "https://127.0.0.1:7001",
            "grpc://127.0.0.1:7001",
            "127.0.0.1:7001/path",
            "127.0.0.1:notaport",
            ":7001",
        ] {
            assert!(matches!(normalize(bad), Err(Error::InvalidArgument(_))), "{bad:?} was accepted");
        }
    }

    #[test]
    fn seeds_are_deduplicated_in_order() {
        let seeds = normalize_all(["b:2", "a:1", "http://b:2", "c:3"]).unwrap();
        assert_eq!(seeds, ["http://b:2", "http://a:1", "http://c:3"]);
        assert!(normalize_all(Vec::<String>::new()).is_err());
    }

    #[tokio::test]
    async fn one_channel_per_address() {
        let channels = Channels::new(Duration::from_millis(100));
        channels.get("http://127.0.0.1:1").unwrap();
        channels.get("http://127.0.0.1:1").unwrap();
        channels.get("http://127.0.0.1:2").unwrap();
        assert_eq!(channels.cache.lock().unwrap().len(), 2);
    }
}
