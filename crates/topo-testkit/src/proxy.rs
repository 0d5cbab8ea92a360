//! A TCP fault proxy for tests: a relay on a free 127.0.0.1 port in front of one server
//! address, whose faults can be switched on and off while connections are open.
//!
//! A test connects its client to [`FaultProxy::addr`] instead of the server, then injects:
//!
//! - latency: [`FaultProxy::set_delay`] adds a delay before every chunk is forwarded, in
//!   both directions;
//! - a blackhole: [`FaultProxy::blackhole_client_to_server`] and
//!   [`FaultProxy::blackhole_server_to_client`] (or [`FaultProxy::blackhole`] for both) read
//!   and discard the bytes of a direction while the connections stay open, like a network
//!   that silently loses packets (TCP itself sees no error);
//! - refusal: [`FaultProxy::refuse`] closes the listening socket, so new connections fail
//!   with `ECONNREFUSED` (nothing reached a server) while open ones keep working;
//! - resets: [`FaultProxy::reset_all`] resets every open connection at once (`ECONNRESET`
//!   on the client);
//! - a lost answer: [`FaultProxy::reset_after_next_chunk`] lets the next client->server
//!   chunk through, then resets that connection: the request reaches the server, the
//!   client never sees the reply, so the outcome is unknown to it.
//!
//! Every change applies at once to open and new connections. [`FaultProxy::heal`] turns
//! everything off again. Dropping the proxy closes its listener and all its connections.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use topo_testkit::proxy::FaultProxy;
//! let proxy = FaultProxy::start("127.0.0.1:2379").await?;
//! let address = proxy.addr().to_string(); // give this to the client
//! proxy.blackhole();
//! // ... the client's calls now hang ...
//! proxy.heal();
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How long a connection chosen by [`FaultProxy::reset_after_next_chunk`] goes on
/// forwarding client->server bytes before it is reset, so that a request its client wrote
/// in more than one piece (HTTP/2 headers, then data) still reaches the server whole.
/// Server->client bytes are discarded from the chosen chunk on.
const RESET_SETTLE: Duration = Duration::from_millis(100);

/// Bound on connecting to the server for a new client connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The fault settings shared by the listener and every connection.
#[derive(Clone, Debug, Default)]
struct Faults {
    delay: Duration,
    drop_to_server: bool,
    drop_to_client: bool,
    refuse: bool,
    /// Bumped by `reset_all`: connections opened under an older value reset themselves.
    reset_epoch: u64,
    /// Armed by `reset_after_next_chunk`; the connection that forwards the next
    /// client->server chunk clears it and resets itself.
    reset_after_next: bool,
}

/// A fault-injecting TCP relay; see the [module docs](self).
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<watch::Sender<Faults>>,
    /// The accept loop; it owns every connection's task, so aborting it ends them all.
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free 127.0.0.1 port relaying to `target` (`host:port`).
    ///
    /// # Errors
    /// When no port can be bound or `target` does not resolve.
    pub async fn start(target: &str) -> io::Result<Self> {
        let target = tokio::net::lookup_host(target)
            .await?
            .next()
            .ok_or_else(|| io::Error::other(format!("{target} resolves to no address")))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(watch::Sender::new(Faults::default()));
        let task = tokio::spawn(accept_loop(listener, addr, target, faults.clone()));
        Ok(FaultProxy { addr, faults, task })
    }

    /// The address clients connect to, `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds `delay` before each chunk is forwarded, in both directions (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.faults.send_modify(|f| f.delay = delay);
    }

    /// Discards (`true`) or forwards again (`false`) the bytes clients send to the server.
    pub fn blackhole_client_to_server(&self, on: bool) {
        self.faults.send_modify(|f| f.drop_to_server = on);
    }

    /// Discards (`true`) or forwards again (`false`) the bytes the server sends to clients.
    pub fn blackhole_server_to_client(&self, on: bool) {
        self.faults.send_modify(|f| f.drop_to_client = on);
    }

    /// Discards the bytes of both directions (connections stay open) until [`Self::heal`].
    pub fn blackhole(&self) {
        self.faults.send_modify(|f| {
            f.drop_to_server = true;
            f.drop_to_client = true;
        });
    }

    /// Refuses (`true`) new connections, by closing the listening socket, or accepts them
    /// again (`false`). Open connections are not affected (one the proxy has not accepted
    /// yet, still in the listen backlog, is reset).
    pub fn refuse(&self, on: bool) {
        self.faults.send_modify(|f| f.refuse = on);
    }

    /// Resets every open connection (the client sees `ECONNRESET`); new ones work.
    pub fn reset_all(&self) {
        self.faults.send_modify(|f| f.reset_epoch += 1);
    }

    /// Forwards the next client->server chunk (of any connection), then resets that
    /// connection, discarding whatever the server answers: the request is delivered, its
    /// reply lost. One-shot; [`Self::heal`] disarms it if no chunk came.
    pub fn reset_after_next_chunk(&self) {
        self.faults.send_modify(|f| f.reset_after_next = true);
    }

    /// Back to a plain relay: no delay, no blackhole, no refusal, nothing armed.
    pub fn heal(&self) {
        self.faults.send_modify(|f| {
            *f = Faults {
                reset_epoch: f.reset_epoch,
                ..Faults::default()
            }
        });
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener on exactly `addr` (used again after a refusal ended).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts clients and relays each to `target` until aborted.
async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    target: SocketAddr,
    faults: Arc<watch::Sender<Faults>>,
) {
    let mut listener = Some(listener);
    let mut changes = faults.subscribe();
    let mut conns = JoinSet::new();
    loop {
        // Finished connections are reaped here so the set does not grow.
        while conns.try_join_next().is_some() {}
        let refuse = changes.borrow_and_update().refuse;
        if refuse {
            // No listening socket: the kernel answers connection attempts with RST.
            listener = None;
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match bind(addr) {
                Ok(l) => listener.insert(l),
                Err(e) => {
                    tracing::warn!(%addr, "fault proxy cannot listen again: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            accepted = l.accept() => match accepted {
                Ok((client, _)) => {
                    conns.spawn(relay(client, target, faults.clone()));
                }
                Err(e) => tracing::debug!(%addr, "fault proxy accept: {e}"),
            },
        }
    }
}

/// Which way a pump moves bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

/// Relays one client connection to `target`, applying the faults, until either side
/// closes or a reset is due.
async fn relay(mut client: TcpStream, target: SocketAddr, faults: Arc<watch::Sender<Faults>>) {
    let server = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await;
    let mut server = match server {
        Ok(Ok(s)) => s,
        other => {
            tracing::debug!(%target, "fault proxy cannot reach the server: {other:?}");
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let epoch = faults.borrow().reset_epoch;
    // Set when this connection forwarded the armed chunk: replies are discarded from then
    // on and the connection is reset after RESET_SETTLE.
    let (doomed_tx, mut doomed_rx) = watch::channel(false);
    let reset = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let to_server = pump(cr, sw, Direction::ToServer, &faults, &doomed_tx);
        let to_client = pump(sr, cw, Direction::ToClient, &faults, &doomed_tx);
        let mut changes = faults.subscribe();
        let reset_all = changes.wait_for(|f| f.reset_epoch != epoch);
        let doomed = async {
            if doomed_rx.wait_for(|d| *d).await.is_ok() {
                tokio::time::sleep(RESET_SETTLE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = async { tokio::try_join!(to_server, to_client) } => false,
            _ = reset_all => true,
            _ = doomed => true,
        }
    };
    if reset {
        // Zero linger: closing sends RST instead of FIN.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// Moves bytes from `src` to `dst` under the current faults; ends at end-of-file (after
/// passing it on) or on an error.
async fn pump(
    mut src: impl tokio::io::AsyncRead + Unpin,
    mut dst: impl tokio::io::AsyncWrite + Unpin,
    direction: Direction,
    faults: &watch::Sender<Faults>,
    doomed: &watch::Sender<bool>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = src.read(&mut buf).await?;
        if n == 0 {
            return dst.shutdown().await;
        }
        let f = faults.borrow().clone();
        let dropped = match direction {
            Direction::ToServer => f.drop_to_server,
            Direction::ToClient => f.drop_to_client || *doomed.borrow(),
        };
        if dropped {
            continue;
        }
        if !f.delay.is_zero() {
            tokio::time::sleep(f.delay).await;
        }
        dst.write_all(&buf[..n]).await?;
        if direction == Direction::ToServer {
            // Claim the armed reset: only one connection may take it.
            let claimed = faults.send_if_modified(|f| std::mem::take(&mut f.reset_after_next));
            if claimed {
                doomed.send_replace(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server on loopback that also records every byte it received.
    async fn echo() -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let r = received.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        r.lock().unwrap().extend_from_slice(&buf[..n]);
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, received)
    }

    async fn proxied() -> (FaultProxy, Arc<Mutex<Vec<u8>>>) {
        let (addr, received) = echo().await;
        let proxy = FaultProxy::start(&addr.to_string()).await.unwrap();
        (proxy, received)
    }

    /// Sends `msg` and reads its echo, or `None` when nothing comes back within `wait`.
    async fn round_trip(s: &mut TcpStream, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        match tokio::time::timeout(wait, s.read_exact(&mut got)).await {
            Ok(Ok(_)) => Some(got),
            Ok(Err(e)) => panic!("read failed: {e}"),
            Err(_) => None,
        }
    }

    const LONG: Duration = Duration::from_secs(5);
    const SHORT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn relays_and_delays() {
        let (proxy, _) = proxied().await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"hi", LONG).await.unwrap(), b"hi");
        proxy.set_delay(Duration::from_millis(200));
        let start = std::time::Instant::now();
        assert_eq!(round_trip(&mut s, b"slow", LONG).await.unwrap(), b"slow");
        // One delay each way.
        assert!(start.elapsed() >= Duration::from_millis(400));
        proxy.heal();
        assert_eq!(round_trip(&mut s, b"fast", LONG).await.unwrap(), b"fast");
    }

    #[tokio::test]
    async fn blackholes_each_direction_and_heals() {
        let (proxy, received) = proxied().await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.blackhole_client_to_server(true);
        assert_eq!(round_trip(&mut s, b"lost", SHORT).await, None);
        assert!(
            received.lock().unwrap().is_empty(),
            "nothing reached the server"
        );
        proxy.heal();
        assert_eq!(round_trip(&mut s, b"back", LONG).await.unwrap(), b"back");

        proxy.blackhole_server_to_client(true);
        assert_eq!(round_trip(&mut s, b"gone", SHORT).await, None);
        assert!(
            received.lock().unwrap().ends_with(b"gone"),
            "the server got it"
        );
        proxy.heal();
        assert_eq!(round_trip(&mut s, b"again", LONG).await.unwrap(), b"again");
    }

    #[tokio::test]
    async fn refuses_new_connections_only() {
        let (proxy, _) = proxied().await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        // Accepted by the proxy (one still in the listen backlog would be reset).
        assert_eq!(round_trip(&mut open, b"open", LONG).await.unwrap(), b"open");
        proxy.refuse(true);
        // The listener closes asynchronously (a connection caught in between is reset);
        // within a moment, connecting is refused.
        let refused = async {
            loop {
                match TcpStream::connect(proxy.addr()).await {
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return,
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        };
        tokio::time::timeout(LONG, refused)
            .await
            .expect("new connections are refused");
        assert_eq!(
            round_trip(&mut open, b"still", LONG).await.unwrap(),
            b"still"
        );
        proxy.heal();
        let mut again = tokio::time::timeout(LONG, async {
            loop {
                if let Ok(s) = TcpStream::connect(proxy.addr()).await {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(round_trip(&mut again, b"new", LONG).await.unwrap(), b"new");
    }

    #[tokio::test]
    async fn resets_open_connections() {
        let (proxy, _) = proxied().await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"hi", LONG).await.unwrap(), b"hi");
        proxy.reset_all();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(LONG, s.read(&mut buf)).await.unwrap();
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"ok", LONG).await.unwrap(), b"ok");
    }

    #[tokio::test]
    async fn reset_after_next_chunk_delivers_then_resets() {
        let (proxy, received) = proxied().await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"a", LONG).await.unwrap(), b"a");
        proxy.reset_after_next_chunk();
        s.write_all(b"request").await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(LONG, s.read(&mut buf)).await.unwrap();
        assert_eq!(
            read.unwrap_err().kind(),
            io::ErrorKind::ConnectionReset,
            "the echo of the request is never seen"
        );
        assert_eq!(received.lock().unwrap().as_slice(), b"arequest");
        // One-shot: the next connection is a plain relay.
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"ok", LONG).await.unwrap(), b"ok");
    }
}
