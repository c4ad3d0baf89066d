//! Accepting and holding connections: every gRPC connection a node serves (clients, peers,
//! admin) is accepted here and served by hyper's HTTP/2 server, with the limits a public-facing
//! server needs.
//!
//! Owns the connection policy:
//! * at most `max_connections` open at once; one more is closed as soon as it is accepted;
//! * a connection with no request in flight for `idle_timeout` (including one that never sent a
//!   complete request: an idle or slowloris connection) is shut down, gracefully (HTTP/2 GOAWAY)
//!   and then for good after [`SHUTDOWN_GRACE`];
//! * every request has a deadline: the caller's `grpc-timeout`, or the node's request timeout if
//!   it sent none, never more than [`MAX_REQUEST_TIME_FACTOR`] request timeouts (so a half-sent
//!   request cannot hold its stream forever). A request that misses it is answered
//!   `DEADLINE_EXCEEDED` with a message that fits the operation: a write's outcome is unknown, a
//!   read or status call changed nothing; one whose deadline is under [`MIN_DEADLINE`] is
//!   refused before it starts, and says nothing was done.
//!
//! * with a TLS acceptor (the peer listener with `--tls-*`), a connection is served only once
//!   its handshake has completed within [`HANDSHAKE_TIMEOUT`]; the acceptor refuses a peer
//!   without a certificate the cluster CA signed ([`crate::tls`]), before any request is read.
//!
//! Invariant: no accepted socket outlives the node's shutdown by more than [`SHUTDOWN_GRACE`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::Status;

/// How long a connection being shut down may take to finish its requests before it is closed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// A deadline shorter than this has passed before a request can start (tokio's timer counts in
/// milliseconds); such a request is refused at once.
pub const MIN_DEADLINE: Duration = Duration::from_millis(1);
/// A caller's deadline is honoured up to this many request timeouts (an admin `add` waiting
/// for a learner to catch up may rightly take longer than one).
pub const MAX_REQUEST_TIME_FACTOR: u32 = 10;

/// The connection limits of one node.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
}

/// Serves `service` on every connection `listener` accepts until `shutdown` completes, then
/// shuts every connection down (gracefully, within [`SHUTDOWN_GRACE`]). With `tls`, each
/// connection first completes a TLS handshake within [`HANDSHAKE_TIMEOUT`] (the acceptor decides
/// whom it accepts: the peer listener's demands a member certificate, [`crate::tls`]); one that
/// does not is closed before HTTP/2 starts, so none of its bytes reach `service`.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<hyper::body::Incoming>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut last_refusal_logged: Option<Instant> = None;
    let refused_handshakes = Arc::new(RateLimitedLog::default());
    tokio::pin!(shutdown);
    while let Some((stream, peer)) = next_connection(&listener, &mut connections, shutdown.as_mut(), "grpc").await {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if last_refusal_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(%peer, max = limits.max_connections, "connection limit reached; closing new connections");
                last_refusal_logged = Some(Instant::now());
            }
            drop(stream);
            continue;
        };
        // Small request/response messages: without TCP_NODELAY, Nagle plus delayed ACKs add tens
        // of milliseconds to a local read.
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let service = WithDeadlines { inner: service.clone(), activity: activity.clone(), limits };
        let stop = stop_rx.clone();
        let tls = tls.clone();
        let refused_handshakes = refused_handshakes.clone();
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(TokioIo::new(stream), peer, service, activity, limits, stop).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        // rustls's error says what was wrong with the peer's certificate or
                        // handshake (unknown issuer, no certificate, not TLS); it holds no key
                        // material.
                        Ok(Err(e)) => return refused_handshakes.log(peer, &e.to_string()),
                        Err(_) => return refused_handshakes.log(peer, "no TLS handshake in time"),
                    };
                    serve_connection(TokioIo::new(stream), peer, service, activity, limits, stop).await
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all_closed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), all_closed).await.is_err() {
        connections.abort_all();
    }
}

/// How long a connection to a TLS listener may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/2 on one accepted (and, with TLS, handshaken) connection until it ends, goes idle
/// or the node stops.
async fn serve_connection<I, S>(
    io: I,
    peer: std::net::SocketAddr,
    service: WithDeadlines<S>,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Service<Request<hyper::body::Incoming>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    let connection = builder.serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(connection);
    let check_every = (limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut check = tokio::time::interval(check_every);
    let why = loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = stop.changed() => break "node shutting down",
            _ = check.tick() => if activity.idle_for() >= limits.idle_timeout { break "idle" },
        }
    };
    tracing::debug!(%peer, why, "closing connection");
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
}

/// Logs refused TLS handshakes at most once every ten seconds (a port scanner must not flood
/// the log), counting the ones it did not log.
#[derive(Default)]
pub(crate) struct RateLimitedLog {
    /// (when last logged, how many were refused since without a line).
    state: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    pub(crate) fn log(&self, peer: std::net::SocketAddr, why: &str) {
        // A std mutex: held for a comparison, never across an await.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, unlogged) = &mut *state;
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            tracing::warn!(%peer, why, also_refused_since_last_line = *unlogged, "connection refused in the TLS handshake");
            *last = Some(Instant::now());
            *unlogged = 0;
        } else {
            *unlogged += 1;
        }
    }
}

/// When a connection last had a request in flight.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` at which the last request finished.
    last_done_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { opened: Instant::now(), in_flight: AtomicUsize::new(0), last_done_ms: AtomicU64::new(0) }
    }

    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let since_open = self.opened.elapsed();
        since_open.saturating_sub(Duration::from_millis(self.last_done_ms.load(Ordering::Acquire)))
    }
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let done_ms = self.0.opened.elapsed().as_millis() as u64;
        self.0.last_done_ms.fetch_max(done_ms, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Applies each request's deadline and tracks the connection's activity.
#[derive(Clone)]
struct WithDeadlines<S> {
    inner: S,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
}

impl<S, B> Service<Request<B>> for WithDeadlines<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Response<Body>, Infallible>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let in_flight = InFlight::start(self.activity.clone());
        let longest = self.limits.request_timeout * MAX_REQUEST_TIME_FACTOR;
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .unwrap_or(self.limits.request_timeout)
            .min(longest);
        let operation = Operation::of(request.uri().path());
        if deadline < MIN_DEADLINE {
            // Gone before anything could start (the timer alone rounds up to a millisecond):
            // refuse rather than start work whose answer nobody waits for.
            let message = format!(
                "the deadline of {} passed before the request started; nothing was done",
                humantime::format_duration(deadline)
            );
            return Box::pin(async move {
                drop(in_flight);
                Ok(Status::deadline_exceeded(message).into_http())
            });
        }
        let answer = self.inner.call(request);
        Box::pin(async move {
            let _in_flight = in_flight;
            match tokio::time::timeout(deadline, answer).await {
                Ok(response) => response,
                Err(_) => Ok(Status::deadline_exceeded(operation.deadline_message(deadline)).into_http()),
            }
        })
    }
}

/// What a request does, as far as a missed deadline's message is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    /// Changes the cache or the cluster: the outcome of a late one is unknown.
    Write,
    /// Changes nothing.
    Read,
}

impl Operation {
    fn of(path: &str) -> Operation {
        const READS: [&str; 5] = [
            "/geocache.v1.Cache/Get",
            "/geocache.v1.Cache/Ttl",
            "/geocache.v1.Admin/Status",
            "/geocache.v1.Raft/ReadIndex",
            "/geocache.v1.Raft/PreVote",
        ];
        if READS.contains(&path) {
            Operation::Read
        } else {
            Operation::Write
        }
    }

    fn deadline_message(self, deadline: Duration) -> String {
        let within = humantime::format_duration(deadline);
        match self {
            Operation::Write => format!("not finished within the deadline of {within}; it may or may not have applied"),
            Operation::Read => format!("not answered within the deadline of {within}; nothing was changed"),
        }
    }
}

/// The next connection on `listener`, or `None` once `shutdown` completes. Every listener of a
/// node (gRPC, RESP, metrics) accepts through this: while waiting it reaps finished connection
/// tasks so `connections` does not grow, and a failed accept (out of file descriptors and the
/// like) is logged as `what` and backed off instead of spun on.
pub async fn next_connection<T: 'static, F: Future<Output = ()>>(
    listener: &TcpListener,
    connections: &mut JoinSet<T>,
    mut shutdown: std::pin::Pin<&mut F>,
    what: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            _ = &mut shutdown => return None,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(e) => {
                    tracing::warn!(error = %e, listener = what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// A `grpc-timeout` header value (`5S`, `250m`, `1n`, ...) as a duration.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (amount, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1n"), Some(Duration::from_nanos(1)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[test]
    fn a_late_read_never_says_a_write_may_have_applied() {
        let read = Operation::of("/geocache.v1.Cache/Get").deadline_message(Duration::from_millis(5));
        assert!(!read.contains("applied"), "{read}");
        let write = Operation::of("/geocache.v1.Cache/Set").deadline_message(Duration::from_millis(5));
        assert!(write.contains("may or may not have applied"), "{write}");
    }

    /// A service whose answer never comes (a write waiting on a quorum that is gone).
    #[derive(Clone)]
    struct NeverAnswers;

    impl Service<Request<()>> for NeverAnswers {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<Response<Body>, Infallible>;

        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            Box::pin(std::future::pending())
        }
    }

    fn answer_of(response: &Response<Body>) -> (String, String) {
        let header =
            |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        // `grpc-message` is percent-encoded.
        let message = percent_encoding::percent_decode_str(&header("grpc-message")).decode_utf8_lossy().into_owned();
        (header("grpc-status"), message)
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_deadline_is_answered_deadline_exceeded_for_its_operation() {
        let limits = ConnectionLimits {
            max_connections: 1,
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
        };
        let mut service = WithDeadlines { inner: NeverAnswers, activity: Arc::new(Activity::new()), limits };
        let request = |path: &str, timeout: Option<&str>| {
            let mut builder = Request::post(path);
            if let Some(timeout) = timeout {
                builder = builder.header("grpc-timeout", timeout);
            }
            builder.body(()).unwrap()
        };
        let deadline_exceeded = (Code::DeadlineExceeded as i32).to_string();

        // The caller's deadline, mid-flight: a write's outcome is unknown.
        let started = Instant::now();
        let response = service.call(request("/geocache.v1.Cache/Set", Some("250m"))).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        let (code, message) = answer_of(&response);
        assert_eq!(code, deadline_exceeded);
        assert!(message.contains("may or may not have applied"), "{message}");

        // No caller deadline: the node's request timeout; a read changed nothing.
        let started = Instant::now();
        let response = service.call(request("/geocache.v1.Cache/Get", None)).await.unwrap();
        assert_eq!(started.elapsed(), limits.request_timeout);
        let (code, message) = answer_of(&response);
        assert_eq!(code, deadline_exceeded);
        assert!(message.contains("nothing was changed"), "{message}");

        // A caller's deadline longer than the node allows is cut to ten request timeouts.
        let started = Instant::now();
        service.call(request("/geocache.v1.Admin/AddLearner", Some("1H"))).await.unwrap();
        assert_eq!(started.elapsed(), limits.request_timeout * MAX_REQUEST_TIME_FACTOR);

        // Gone before it starts: refused at once, nothing done.
        let started = Instant::now();
        let response = service.call(request("/geocache.v1.Cache/Set", Some("1n"))).await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(answer_of(&response).1.contains("nothing was done"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_nothing_in_flight() {
        let activity = Arc::new(Activity::new());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(activity.idle_for() >= Duration::from_secs(3));
        let request = InFlight::start(activity.clone());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(activity.idle_for(), Duration::ZERO);
        drop(request);
        assert!(activity.idle_for() < Duration::from_millis(10));
    }
}
