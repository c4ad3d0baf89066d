//! One link's tasks: the accept loop on its proxy port and one task per proxied connection,
//! which pumps bytes both ways with the link's delay and obeys its state.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::LinkState;

/// Largest chunk read from a socket at once.
const CHUNK_BYTES: usize = 64 * 1024;
/// Bytes one direction of one connection may hold in flight (read, not yet written). Beyond it
/// the proxy stops reading, so TCP flow control pushes back on the sender and memory stays
/// bounded; a connection's throughput is at most this much per delay (32 MiB / 150 ms is over
/// 200 MiB/s).
const IN_FLIGHT_BYTES: usize = 32 * 1024 * 1024;
/// How often a failed re-bind of the proxy port is retried after a `Refuse` ends.
const REBIND_RETRY: Duration = Duration::from_millis(50);

/// What every task of a link watches: its delay and state, as last set by the [`super::Netsim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Control {
    pub delay: Duration,
    pub state: LinkState,
    /// How many times the link went from up to down. A connection remembers the count it was
    /// accepted under; a different count once the link is up again means an outage came between
    /// and the connection must be closed rather than resumed.
    pub outages: u64,
}

impl Control {
    pub fn new() -> Control {
        Control { delay: Duration::ZERO, state: LinkState::Up, outages: 0 }
    }

    /// Applies a new state; `false` if nothing changed (so watchers are not woken).
    pub fn set_state(&mut self, state: LinkState) -> bool {
        if self.state == state {
            return false;
        }
        if self.state == LinkState::Up {
            self.outages += 1;
        }
        self.state = state;
        true
    }

    /// What a connection accepted under `outages` does now.
    fn fate(&self, outages: u64) -> Fate {
        match self.state {
            LinkState::Up if self.outages == outages => Fate::Forward,
            LinkState::Up | LinkState::Refuse => Fate::Close,
            LinkState::Blackhole => Fate::Stall,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Forward,
    Stall,
    Close,
}

/// Binds a listener on `addr` (port 0: any free port) with `SO_REUSEADDR`, so the same port can
/// be bound again after a `Refuse` while old connections on it linger in `TIME_WAIT`.
pub(super) fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Holds `addr` while the link refuses: bound but not listening, so a dial gets
/// `ECONNREFUSED` and no other socket can take the port.
fn hold_port(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// Everything a link's tasks share.
#[derive(Clone)]
pub(super) struct LinkTasks {
    pub name: String,
    pub addr: SocketAddr,
    pub target: SocketAddr,
    pub control: watch::Receiver<Control>,
    pub shutdown: watch::Receiver<bool>,
    /// Open proxied connections on this link.
    pub connections: Arc<AtomicUsize>,
}

/// Resolves when the [`super::Netsim`] shuts down or is dropped.
async fn shut_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The accept loop: accepts on the proxy port and spawns a connection task per dialler. While
/// the link refuses, the listener is closed (the port held, not listening) and re-bound after.
pub(super) async fn accept_loop(tasks: LinkTasks, listener: TcpListener) {
    let LinkTasks { mut control, mut shutdown, .. } = tasks.clone();
    let mut listener = Some(listener);
    loop {
        let refusing = control.borrow_and_update().state == LinkState::Refuse;
        match (&listener, refusing) {
            (_, true) => {
                // Close the listener first: pending dials in its backlog are reset with it.
                listener = None;
                let held = hold_port(tasks.addr);
                if let Err(e) = &held {
                    tracing::warn!(link = %tasks.name, "netsim cannot hold {} while refusing: {e}", tasks.addr);
                }
                tokio::select! {
                    _ = shut_down(&mut shutdown) => return,
                    changed = control.wait_for(|c| c.state != LinkState::Refuse) => if changed.is_err() { return },
                }
                drop(held);
            }
            (None, false) => match bind_listener(tasks.addr) {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::warn!(link = %tasks.name, "netsim cannot re-bind {}: {e}; retrying", tasks.addr);
                    tokio::select! {
                        _ = shut_down(&mut shutdown) => return,
                        _ = tokio::time::sleep(REBIND_RETRY) => {}
                    }
                }
            },
            (Some(l), false) => {
                tokio::select! {
                    _ = shut_down(&mut shutdown) => return,
                    changed = control.changed() => if changed.is_err() { return },
                    accepted = l.accept() => match accepted {
                        Ok((stream, _)) => {
                            tokio::spawn(connection(tasks.clone(), stream));
                        }
                        Err(e) => {
                            // E.g. out of file descriptors: back off instead of spinning.
                            tracing::warn!(link = %tasks.name, "netsim accept failed: {e}");
                            tokio::time::sleep(REBIND_RETRY).await;
                        }
                    },
                }
            }
        }
    }
}

/// Counts a connection while its task lives.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(counter: &Arc<AtomicUsize>) -> Open {
        counter.fetch_add(1, Ordering::SeqCst);
        Open(counter.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Resets `stream`: an abortive close (RST), as a peer sees a connection that died rather than
/// one that finished. Unsent bytes are discarded, which is the point.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// One proxied connection, from accept to close.
async fn connection(tasks: LinkTasks, client: TcpStream) {
    let _open = Open::new(&tasks.connections);
    let LinkTasks { mut control, mut shutdown, .. } = tasks;
    let born = *control.borrow_and_update();
    let outages = born.outages;
    match born.state {
        LinkState::Up => {}
        // Accepted in the instant before the accept loop closed the listener.
        LinkState::Refuse => return reset(client),
        // A partition: the dial "succeeds" (the proxy's kernel answered) but nothing gets
        // through. The target is never dialled; the connection is closed when the link changes.
        LinkState::Blackhole => {
            tokio::select! {
                _ = shut_down(&mut shutdown) => {}
                _ = control.wait_for(|c| c.state != LinkState::Blackhole || c.outages != outages) => {}
            }
            return reset(client);
        }
    }
    let server = tokio::select! {
        _ = shut_down(&mut shutdown) => return reset(client),
        server = TcpStream::connect(tasks.target) => match server {
            Ok(server) => server,
            // The target is down: the dialler sees its connection reset at once.
            Err(_) => return reset(client),
        },
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client, mut server) = (client, server);
    let ended_cleanly = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let upstream = pipe(client_read, server_write, control.clone(), outages);
        let downstream = pipe(server_read, client_write, control.clone(), outages);
        let pumps = async { tokio::try_join!(upstream, downstream) };
        tokio::select! {
            result = pumps => result.is_ok(),
            _ = shut_down(&mut shutdown) => false,
            _ = control.wait_for(|c| c.fate(outages) == Fate::Close) => false,
        }
    };
    if !ended_cleanly {
        reset(client);
        reset(server);
    }
}

/// A chunk in flight: the bytes (`None` = the sender's FIN), when to release them, and the
/// share of the in-flight budget they hold.
struct Chunk {
    release_at: Instant,
    bytes: Option<Bytes>,
    _budget: Option<OwnedSemaphorePermit>,
}

/// Waits until bytes may move; `Err` when the connection must close instead.
async fn wait_until_forwarding(control: &mut watch::Receiver<Control>, outages: u64) -> io::Result<()> {
    let closed = || io::Error::new(io::ErrorKind::ConnectionAborted, "netsim link went down");
    let now = control.wait_for(|c| c.fate(outages) != Fate::Stall).await.map_err(|_| closed())?;
    match now.fate(outages) {
        Fate::Forward => Ok(()),
        _ => Err(closed()),
    }
}

/// Copies `src` to `dst`, releasing each chunk `delay` after it was read, in order.
///
/// Reading and writing run side by side: a chunk is stamped when read and released at
/// `read time + delay`, so the delay is paid once per byte, not once per chunk in a row, and a
/// busy connection keeps its throughput. The delay in force when a chunk is read applies to it.
/// Nothing moves while the link is blackholed. On EOF the FIN is passed on, delayed like data.
async fn pipe<R, W>(mut src: R, mut dst: W, control: watch::Receiver<Control>, outages: u64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Chunk>();
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_BYTES));
    let mut read_control = control.clone();
    let reader = async move {
        let mut buf = vec![0; CHUNK_BYTES];
        loop {
            wait_until_forwarding(&mut read_control, outages).await?;
            let n = src.read(&mut buf).await?;
            let release_at = Instant::now() + read_control.borrow().delay;
            if n == 0 {
                let _ = tx.send(Chunk { release_at, bytes: None, _budget: None });
                return Ok::<(), io::Error>(());
            }
            let permit = budget.clone().acquire_many_owned(n as u32).await.expect("the budget is never closed");
            let chunk = Chunk { release_at, bytes: Some(Bytes::copy_from_slice(&buf[..n])), _budget: Some(permit) };
            if tx.send(chunk).is_err() {
                return Ok(()); // the writer failed; its error ends the connection
            }
        }
    };
    let mut write_control = control;
    let writer = async move {
        while let Some(chunk) = rx.recv().await {
            tokio::time::sleep_until(chunk.release_at).await;
            wait_until_forwarding(&mut write_control, outages).await?;
            match chunk.bytes {
                Some(bytes) => dst.write_all(&bytes).await?,
                None => {
                    dst.shutdown().await?;
                    return Ok(());
                }
            }
        }
        Ok::<(), io::Error>(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `Refuse` relies on: with the listener closed, a bound but not listening socket
    /// keeps the port (dials are refused) and does not stop a new listener from binding it,
    /// even with an accepted connection still open on the port.
    #[tokio::test]
    async fn a_held_port_refuses_dials_and_can_be_listened_on_again() {
        // Other tests in this process bind and dial loopback ports at the same time, so the
        // freshly released port can be taken by one of them in between: try another port then.
        for _attempt in 0..10 {
            let listener = bind_listener(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
            let addr = listener.local_addr().unwrap();
            let dialled = TcpStream::connect(addr).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            drop(listener);

            let held = match hold_port(addr) {
                Ok(held) => held,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => panic!("hold {addr}: {e}"),
            };
            let refused = TcpStream::connect(addr).await.unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
            let listener = bind_listener(addr).unwrap();
            drop(held);
            let _again = TcpStream::connect(addr).await.unwrap();
            listener.accept().await.unwrap();
            drop((accepted, dialled));
            return;
        }
        panic!("every port tried was taken by someone else in between");
    }
}
