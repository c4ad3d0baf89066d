//! The Redis-protocol (RESP2 and RESP3) front door: `geocache serve --resp-listen ADDR`.
//!
//! Owns the RESP listener: accepting and capping connections, the TLS handshake (with
//! `--tls-*`), reading commands off each connection ([`frame`]: shape and length limits, decoded
//! by the `redis-protocol` crate), parsing them ([`command`], whose table also says what role
//! each command needs), admitting them ([`gate`]: `AUTH`, `HELLO ... AUTH` and roles, with
//! `--tokens`), running them ([`session`]) and encoding the replies ([`reply`], which also holds
//! the one mapping from the node's `Error` to Redis error replies). It owns no cache semantics:
//! every read and write goes through the same protocol-neutral client API as the gRPC `Cache`
//! service (`service::api`), so validation, forwarding to the leader and read levels are the
//! same on both ports. Which tokens exist and what a role allows is [`crate::auth`]'s; the
//! certificate is [`crate::tls`]'s.
//!
//! Invariants:
//! * With TLS, no RESP byte is read from, or written to, a connection before its handshake has
//!   completed (within [`HANDSHAKE_TIMEOUT`]); a plaintext or failed handshake closes that
//!   connection only, logged at warn at most once every ten seconds. A connection over the cap
//!   is closed without a reply on a TLS port (a plaintext error line would mean nothing there).
//! * With tokens, a connection runs nothing but `AUTH`, `HELLO` and `QUIT` until it presents a
//!   valid token (`-NOAUTH`), and then only commands its token's role allows (`-NOPERM`); the
//!   check happens before a command is parsed or run, so a refused command changes nothing and
//!   the connection stays usable. A wrong token is `-WRONGPASS`. The token decides, any
//!   username is accepted.
//! * A token is never logged, echoed in a reply, or shown in `Debug` output (`command::Secret`);
//!   nothing here logs commands or their arguments.
//! * Commands on one connection run one at a time, in the order they arrived, and their replies
//!   go out in that order; a client may pipeline as many as it likes (they wait in the query
//!   buffer, bounded below).
//! * Bad input inside a well-formed command (unknown command, wrong arity, bad option, a key or
//!   value over the node's limits) is an error reply and the connection stays usable. A frame
//!   that is malformed, or announces a bulk longer than the value limit, gets one protocol error
//!   reply and closes that connection only; nothing of it is run or written. (A bulk may be as
//!   long as the larger of the value and key limits; a value over the value limit that still
//!   fits is refused by validation, `-ERR value exceeds N bytes`, and the connection stays.)
//! * Memory per connection is bounded: the query buffer by [`RespLimits::max_query_buffer`]
//!   (a command that has not arrived whole within it closes the connection), pending replies by
//!   [`RespLimits::max_pending_reply`] (a larger reply is refused with an error instead of being
//!   encoded), and a client that stops reading replies is disconnected after the idle timeout.
//!   At most [`RespLimits::max_connections`] connections are open; one more is told so and closed.

pub mod command;
pub mod frame;
pub mod gate;
pub mod reply;
pub mod session;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::connections::{RateLimitedLog, HANDSHAKE_TIMEOUT};
use crate::service::CacheApi;
use frame::{FrameError, FrameLimits};
use gate::Gate;
use reply::Reply;
use session::{After, ServerFacts, Session};

/// Bounds on the RESP listener and each of its connections.
#[derive(Clone, Copy, Debug)]
pub struct RespLimits {
    /// Most connections open at once (`--max-connections`, counted apart from the gRPC port's).
    pub max_connections: usize,
    /// A connection that sends no command, or does not take its replies, for this long is closed
    /// (`--idle-timeout`).
    pub idle_timeout: Duration,
    /// Shape and lengths of one command.
    pub frame: FrameLimits,
    /// Most unprocessed bytes held for one connection.
    pub max_query_buffer: usize,
    /// Largest reply encoded for one command.
    pub max_pending_reply: usize,
}

impl RespLimits {
    /// The limits a node with `config` uses: bulks up to the larger of the value and key limits
    /// (so every valid key and value fits), a query buffer of four
    /// largest client messages (so `MSET` of a few large values fits), replies up to 64 MiB or
    /// that buffer, whichever is larger.
    pub fn from_config(config: &Config) -> RespLimits {
        let max_query_buffer = config.max_client_message_bytes().saturating_mul(4);
        RespLimits {
            max_connections: config.max_connections,
            idle_timeout: config.idle_timeout,
            frame: FrameLimits {
                max_bulk: config.max_value_bytes.max(config.max_key_bytes),
                max_args: 1024 * 1024,
                max_inline: 64 * 1024,
            },
            max_query_buffer,
            max_pending_reply: max_query_buffer.max(64 * 1024 * 1024),
        }
    }
}

/// Who may connect to the Redis port and what they may do.
#[derive(Clone, Default)]
pub struct RespSecurity {
    /// Tokens a connection must `AUTH` with (open without `--tokens`).
    pub access: crate::auth::Access,
    /// With `--tls-*`, every connection starts with a TLS handshake (server certificate only).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for RespSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespSecurity").field("access", &self.access).field("tls", &self.tls.is_some()).finish()
    }
}

/// Flushed as soon as this much reply data is waiting, even mid-pipeline.
const FLUSH_AT: usize = 64 * 1024;

/// Serves RESP on `listener` until `shutdown` completes; then stops accepting and drops every
/// open connection.
pub async fn serve(
    listener: TcpListener,
    api: CacheApi,
    limits: RespLimits,
    security: RespSecurity,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let facts = ServerFacts {
        started: tokio::time::Instant::now(),
        port: listener.local_addr().map(|a| a.port()).unwrap_or(0),
        connected: Arc::new(AtomicUsize::new(0)),
    };
    let next_id = AtomicU64::new(1);
    let refused_handshakes = Arc::new(RateLimitedLog::default());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    while let Some((mut stream, peer)) =
        crate::connections::next_connection(&listener, &mut connections, shutdown.as_mut(), "resp").await
    {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "RESP connection limit reached; closing a new connection");
            if security.tls.is_some() {
                // A plaintext error line means nothing to a TLS client, and a handshake would
                // spend work on a connection being refused: just close it.
                continue;
            }
            connections.spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    stream.write_all(b"-ERR max number of clients reached\r\n"),
                )
                .await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let session = Session::new(api.clone(), facts.clone(), id, Gate::new(security.access.clone()));
        let connected = facts.connected.clone();
        let tls = security.tls.clone();
        let refused_handshakes = refused_handshakes.clone();
        connections.spawn(async move {
            // Held from accept to close, handshake included: a connection that never completes
            // one still counts against the cap (and is dropped after HANDSHAKE_TIMEOUT).
            let _permit = permit;
            connected.fetch_add(1, Ordering::Relaxed);
            let closed = match tls {
                None => serve_connection(stream, session, &limits).await,
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, session, &limits).await,
                    // rustls's error says what was wrong with the handshake (not TLS, no shared
                    // version or cipher); it holds no key material.
                    Ok(Err(e)) => {
                        refused_handshakes.log(peer, &e.to_string());
                        Ok(())
                    }
                    Err(_) => {
                        refused_handshakes.log(peer, "no TLS handshake in time");
                        Ok(())
                    }
                },
            };
            if let Err(e) = closed {
                tracing::debug!(%peer, id, error = %e, "RESP connection closed");
            }
            connected.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Why a connection ended other than the client closing it.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("idle for longer than the idle timeout")]
    Idle,
    #[error("client did not take its replies within the idle timeout")]
    SlowReader,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("query buffer of {0} bytes over the limit without a whole command")]
    QueryBuffer(usize),
}

/// Runs one connection (plain TCP, or TLS after its handshake): reads commands, runs them in
/// order, writes replies in order.
async fn serve_connection<S>(mut stream: S, mut session: Session, limits: &RespLimits) -> Result<(), Closed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::with_capacity(16 * 1024);
    loop {
        // Run every whole command that has arrived (a pipeline), flushing as replies pile up.
        loop {
            let args = match frame::next_command(&mut input, &limits.frame) {
                Ok(Some(args)) => args,
                Ok(None) => break,
                Err(e) => {
                    // One protocol error reply, then close: the stream cannot be resynchronised.
                    Reply::err(e.to_string()).encode(session.protocol, &mut output);
                    flush(&mut stream, &mut output, limits).await?;
                    return Err(e.into());
                }
            };
            let (reply, after) = session.handle(args).await;
            let reply = if reply.encoded_len() > limits.max_pending_reply {
                Reply::err(format!(
                    "reply of about {} bytes exceeds the limit of {} bytes; ask for fewer keys",
                    reply.encoded_len(),
                    limits.max_pending_reply
                ))
            } else {
                reply
            };
            reply.encode(session.protocol, &mut output);
            if after == After::Close {
                flush(&mut stream, &mut output, limits).await?;
                return Ok(());
            }
            if output.len() >= FLUSH_AT {
                flush(&mut stream, &mut output, limits).await?;
            }
        }
        flush(&mut stream, &mut output, limits).await?;
        if input.len() > limits.max_query_buffer {
            Reply::err(format!("Protocol error: query buffer over the limit of {} bytes", limits.max_query_buffer))
                .encode(session.protocol, &mut output);
            flush(&mut stream, &mut output, limits).await?;
            return Err(Closed::QueryBuffer(input.len()));
        }
        input.reserve(16 * 1024);
        match tokio::time::timeout(limits.idle_timeout, stream.read_buf(&mut input)).await {
            Err(_) => return Err(Closed::Idle),
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// Writes every pending reply byte, within the idle timeout. The flush matters with TLS: a
/// write may leave encrypted records buffered in the TLS session when the socket is full.
async fn flush<S>(stream: &mut S, output: &mut BytesMut, limits: &RespLimits) -> Result<(), Closed>
where
    S: AsyncWrite + Unpin,
{
    if output.is_empty() {
        return Ok(());
    }
    let write = async {
        stream.write_all(output).await?;
        stream.flush().await
    };
    match tokio::time::timeout(limits.idle_timeout, write).await {
        Err(_) => Err(Closed::SlowReader),
        Ok(result) => {
            output.clear();
            Ok(result?)
        }
    }
}
