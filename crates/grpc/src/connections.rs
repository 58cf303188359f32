//! The connections a gRPC API accepts, bounded: at most so many open at once, in all and per
//! peer address, so that one host holding idle connections (or TLS handshakes it never
//! finishes) cannot take every file descriptor and shut out every other facility.
//!
//! A connection over a limit is accepted and closed at once, which costs nothing and keeps the
//! listen queue moving for everyone else. Accept errors never reach tonic: tonic retries a
//! failed accept at once, and when the process is out of file descriptors that is a loop at
//! full CPU; here a failed accept pauses the listener briefly instead.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::{CONNECTIONS_OPEN, CONNECTIONS_REFUSED};

/// How long the listener rests after an accept error that is not about one connection (out of
/// file descriptors, out of memory), before it tries again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// File descriptors kept beyond the connection limit for everything else the process opens
/// (Kafka, the store's files, the registry).
const DESCRIPTOR_RESERVE: u64 = 1024;

/// How many connections an API keeps open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections in all.
    pub total: usize,
    /// Open connections from one peer address; `None` for no per-address limit (behind a
    /// proxy that hides client addresses).
    pub per_peer: Option<usize>,
}

/// Why a connection was closed as soon as it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The API holds its limit of open connections.
    Total,
    /// The peer address holds its limit of open connections.
    PerPeer,
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total => "total_limit",
            Self::PerPeer => "peer_limit",
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    open: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// The count of open connections, shared by the listener and every connection it accepted.
#[derive(Debug)]
struct Slots {
    limits: ConnectionLimits,
    table: Mutex<Table>,
}

impl Slots {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table is consistent after every statement, so a panic elsewhere leaves it usable.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let mut table = self.table();
        if table.open >= self.limits.total {
            return Err(Refusal::Total);
        }
        let from_peer = table.by_peer.get(&peer).copied().unwrap_or(0);
        if self.limits.per_peer.is_some_and(|max| from_peer >= max) {
            return Err(Refusal::PerPeer);
        }
        table.open += 1;
        table.by_peer.insert(peer, from_peer + 1);
        metrics::gauge!(CONNECTIONS_OPEN.name).set(table.open as f64);
        Ok(Slot {
            slots: Arc::clone(self),
            peer,
        })
    }
}

/// One open connection's place in the count, given back when the connection closes.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.slots.table();
        table.open = table.open.saturating_sub(1);
        if let Some(n) = table.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                table.by_peer.remove(&self.peer);
            }
        }
        metrics::gauge!(CONNECTIONS_OPEN.name).set(table.open as f64);
    }
}

/// An accepted TCP connection that holds its slot until it is dropped.
#[derive(Debug)]
pub struct CountedStream {
    tcp: TcpStream,
    _slot: Slot,
}

impl Connected for CountedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The connections `listener` accepts within `limits`, as tonic's `serve_with_incoming` takes
/// them. Never yields an error.
#[derive(Debug)]
pub struct BoundedIncoming {
    listener: TcpListener,
    slots: Arc<Slots>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl BoundedIncoming {
    /// Accepts on `listener` within `limits`.
    pub fn new(listener: TcpListener, limits: ConnectionLimits) -> Self {
        metrics::gauge!(CONNECTIONS_OPEN.name).set(0.0);
        Self {
            listener,
            slots: Arc::new(Slots {
                limits,
                table: Mutex::new(Table::default()),
            }),
            pause: None,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.slots.table().open
    }
}

/// Errors about one connection (it went away before it was accepted): the next accept is fine.
fn about_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

impl tokio_stream::Stream for BoundedIncoming {
    type Item = Result<CountedStream, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(pause) = &mut this.pause {
                ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match ready!(this.listener.poll_accept(cx)) {
                Ok((tcp, peer)) => match this.slots.take(peer.ip()) {
                    Ok(slot) => {
                        // gRPC messages are small and latency matters more than packet count.
                        let _ = tcp.set_nodelay(true);
                        return Poll::Ready(Some(Ok(CountedStream { tcp, _slot: slot })));
                    }
                    Err(refusal) => refused(peer, refusal),
                },
                Err(e) if about_one_connection(&e) => {}
                Err(e) => {
                    tracing::warn!(error = %e, pause_ms = ACCEPT_PAUSE.as_millis() as u64,
                        "cannot accept connections (are file descriptors exhausted? see --max-connections); pausing the listener");
                    this.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_PAUSE)));
                }
            }
        }
    }
}

fn refused(peer: SocketAddr, refusal: Refusal) {
    metrics::counter!(CONNECTIONS_REFUSED.name, "reason" => refusal.as_str()).increment(1);
    tracing::debug!(%peer, reason = refusal.as_str(), "connection closed at once: over the limit");
}

/// Raises this process's open-file limit towards what `limits` need (its hard limit at most),
/// and says so when even the hard limit is too low: connections beyond it would fail to be
/// accepted at all, for every caller.
pub fn reserve_descriptors(limits: ConnectionLimits) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let needed = limits.total as u64 + DESCRIPTOR_RESERVE;
    let now = getrlimit(Resource::Nofile);
    let soft = now.current.unwrap_or(u64::MAX);
    if soft >= needed {
        return;
    }
    let hard = now.maximum.unwrap_or(u64::MAX);
    let wanted = needed.min(hard);
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(wanted),
            maximum: now.maximum,
        },
    )
    .is_ok();
    if !raised || wanted < needed {
        tracing::warn!(
            open_file_limit = if raised { wanted } else { soft },
            max_connections = limits.total,
            "the open-file limit is below --max-connections plus {DESCRIPTOR_RESERVE} for everything else: raise the limit (ulimit -n, LimitNOFILE) or lower --max-connections"
        );
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;
    use tokio_stream::StreamExt as _;

    async fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = l.local_addr().expect("addr");
        (l, a)
    }

    /// Connects to `to` from the loopback address `from` (all of 127/8 is this host).
    async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((from, 0)))
            .expect("bind source");
        socket.connect(to).await.expect("connect")
    }

    /// True when the server closed `stream` (EOF) within a second.
    async fn closed_by_server(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// Accepts in the background, keeping what is accepted until the returned sender says drop.
    fn serve(
        incoming: BoundedIncoming,
    ) -> (
        tokio::sync::mpsc::Receiver<CountedStream>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            let mut incoming = incoming;
            while let Some(next) = incoming.next().await {
                if tx.send(next.expect("never an error")).await.is_err() {
                    return;
                }
            }
        });
        (rx, task)
    }

    #[tokio::test]
    async fn one_peer_gets_its_limit_and_others_still_connect() {
        let (l, addr) = listener().await;
        let limits = ConnectionLimits {
            total: 10,
            per_peer: Some(2),
        };
        let (mut accepted, task) = serve(BoundedIncoming::new(l, limits));
        let (mut held, mut kept) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            held.push(connect_from([127, 0, 0, 2], addr).await);
            kept.push(accepted.recv().await.expect("accepted"));
        }
        let mut third = connect_from([127, 0, 0, 2], addr).await;
        assert!(closed_by_server(&mut third).await, "over the peer limit");

        let mut other = connect_from([127, 0, 0, 3], addr).await;
        let _kept_other = accepted.recv().await.expect("another peer is accepted");
        assert!(!closed_by_server(&mut other).await);

        // A closed connection gives its place back.
        drop(kept.pop());
        let mut again = connect_from([127, 0, 0, 2], addr).await;
        let _kept_again = accepted.recv().await.expect("a freed place is taken");
        assert!(!closed_by_server(&mut again).await);
        task.abort();
    }

    #[tokio::test]
    async fn the_total_limit_holds_across_peers_and_frees_on_close() {
        let (l, addr) = listener().await;
        let limits = ConnectionLimits {
            total: 2,
            per_peer: None,
        };
        let incoming = BoundedIncoming::new(l, limits);
        let slots = Arc::clone(&incoming.slots);
        let (mut accepted, task) = serve(incoming);
        let _a = connect_from([127, 0, 0, 4], addr).await;
        let kept_a = accepted.recv().await.expect("first");
        let _b = connect_from([127, 0, 0, 5], addr).await;
        let _kept_b = accepted.recv().await.expect("second");
        let mut c = connect_from([127, 0, 0, 6], addr).await;
        assert!(closed_by_server(&mut c).await, "over the total limit");
        assert_eq!(slots.table().open, 2);

        drop(kept_a);
        assert_eq!(slots.table().open, 1);
        let mut d = connect_from([127, 0, 0, 6], addr).await;
        let _kept_d = accepted.recv().await.expect("a freed place is taken");
        assert!(!closed_by_server(&mut d).await);
        assert_eq!(slots.table().by_peer.len(), 2, "{:?}", slots.table());
        task.abort();
    }

    #[test]
    fn the_open_file_limit_is_raised_to_fit_the_connections() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limits = ConnectionLimits {
            total: 4096,
            per_peer: None,
        };
        let needed = limits.total as u64 + DESCRIPTOR_RESERVE;
        let now = getrlimit(Resource::Nofile);
        let hard = now.maximum.unwrap_or(u64::MAX);
        // As a service started with systemd's default soft limit would find it.
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(1024.min(hard)),
                maximum: now.maximum,
            },
        )
        .expect("lowering the soft limit");
        reserve_descriptors(limits);
        let raised = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        assert_eq!(raised, needed.min(hard));
        // Never lowered: a limit already above what is needed stays.
        reserve_descriptors(ConnectionLimits {
            total: 10,
            per_peer: None,
        });
        assert_eq!(
            getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX),
            raised
        );
    }

    #[test]
    fn refusals_have_stable_labels() {
        assert_eq!(Refusal::Total.as_str(), "total_limit");
        assert_eq!(Refusal::PerPeer.as_str(), "peer_limit");
    }
}
