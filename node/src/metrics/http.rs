//! The metrics endpoint: a small HTTP/1.1 server (hyper) for `--metrics-listen`.
//!
//! `GET /metrics` (or `HEAD`) renders the node's metrics at that moment ([`super::render`]);
//! anything else is a 404 or 405. Bounded like the other ports, though scrapers are few: at most
//! [`MAX_CONNECTIONS`] connections, each closed after [`HEADER_TIMEOUT`] without a complete
//! request and after the node's idle timeout in all (a scraper reconnects on its own).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{render, Scraped, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use crate::node::Node;

/// Most metrics connections open at once; one more is closed at once. A few scrapers (two
/// Prometheus replicas, an operator's curl) need a handful.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection that has not sent a whole request header within this long is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` for `node` on `listener` until `shutdown` completes; then stops
/// accepting and drops every open connection.
pub async fn serve(listener: TcpListener, node: Node, shutdown: impl Future<Output = ()>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let lifetime = node.config().idle_timeout;
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    while let Some((stream, peer)) =
        crate::connections::next_connection(&listener, &mut connections, shutdown.as_mut(), "metrics").await
    {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics connection limit reached; closing a new connection");
            continue;
        };
        let node = node.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(answer(&node, &request)) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(lifetime, connection).await {
                tracing::debug!(%peer, error = %e, "metrics connection ended");
            }
        });
    }
}

/// The answer to one request.
fn answer(node: &Node, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: metrics are at /metrics\n".into());
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match render(node.recorder(), &Scraped::of(node)) {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot render metrics");
            plain(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot render metrics: {e}\n"))
        }
    }
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
