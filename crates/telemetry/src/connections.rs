//! How many connections a listener of a lienthong process holds open: at most so many in all
//! and per peer address, so that one host holding idle connections (or handshakes or request
//! headers it never finishes) cannot take every file descriptor and shut out everyone else.
//! The gRPC APIs count their connections with it, and so does the metrics and health endpoint
//! (whose probes must keep answering while a scanner holds connections open).
//!
//! A connection over a limit is accepted and closed at once, which costs nothing and keeps the
//! listen queue moving for everyone else. A failed accept that is not about one connection
//! (out of file descriptors) pauses the listener briefly instead of being retried at once,
//! which would be a loop at full CPU.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::Metric;

/// `lienthong_connections_open`: connections a listener holds open
pub const CONNECTIONS_OPEN: Metric = Metric::gauge(
    "lienthong_connections_open",
    &["listener"],
    "Connections a listener holds open (grpc: TLS handshakes in progress included, at most --max-connections; metrics: the metrics and health endpoint)",
);

/// `lienthong_connections_refused_total`: connections closed at once, over a limit
pub const CONNECTIONS_REFUSED: Metric = Metric::counter(
    "lienthong_connections_refused_total",
    &["listener", "reason"],
    "Connections closed as soon as they were accepted, by listener and the limit they were over (total_limit, peer_limit)",
);

/// Every metric this module exports.
pub const ALL: &[Metric] = &[CONNECTIONS_OPEN, CONNECTIONS_REFUSED];

/// How long a listener rests after an accept error that is not about one connection (out of
/// file descriptors, out of memory), before it tries again.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// File descriptors kept beyond the connection limit for everything else the process opens
/// (Kafka, the store's files, the registry, the metrics endpoint).
const DESCRIPTOR_RESERVE: u64 = 1024;

/// How many connections a listener keeps open.
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
    /// The listener holds its limit of open connections.
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

#[derive(Debug)]
struct Slots {
    listener: &'static str,
    limits: ConnectionLimits,
    table: Mutex<Table>,
}

impl Slots {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table is consistent after every statement, so a panic elsewhere leaves it usable.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn report(&self, open: usize) {
        metrics::gauge!(CONNECTIONS_OPEN.name, "listener" => self.listener).set(open as f64);
    }
}

/// The count of a listener's open connections, shared by the listener and every connection
/// it accepted.
#[derive(Debug, Clone)]
pub struct ConnectionCount(Arc<Slots>);

impl ConnectionCount {
    /// A count within `limits` for the listener named `listener` in metrics.
    pub fn new(listener: &'static str, limits: ConnectionLimits) -> Self {
        let slots = Slots {
            listener,
            limits,
            table: Mutex::new(Table::default()),
        };
        slots.report(0);
        // Series that exist before the first refusal, so that an alert on increase() sees it.
        for refusal in [Refusal::Total, Refusal::PerPeer] {
            metrics::counter!(CONNECTIONS_REFUSED.name, "listener" => listener, "reason" => refusal.as_str())
                .increment(0);
        }
        Self(Arc::new(slots))
    }

    /// A place for a connection from `peer`, or why there is none (counted).
    pub fn take(&self, peer: SocketAddr) -> Result<Slot, Refusal> {
        let refusal = {
            let mut table = self.0.table();
            let from_peer = table.by_peer.get(&peer.ip()).copied().unwrap_or(0);
            if table.open >= self.0.limits.total {
                Refusal::Total
            } else if self.0.limits.per_peer.is_some_and(|max| from_peer >= max) {
                Refusal::PerPeer
            } else {
                table.open += 1;
                table.by_peer.insert(peer.ip(), from_peer + 1);
                self.0.report(table.open);
                return Ok(Slot {
                    slots: Arc::clone(&self.0),
                    peer: peer.ip(),
                });
            }
        };
        metrics::counter!(CONNECTIONS_REFUSED.name, "listener" => self.0.listener, "reason" => refusal.as_str())
            .increment(1);
        tracing::debug!(%peer, listener = self.0.listener, reason = refusal.as_str(), "connection closed at once: over the limit");
        Err(refusal)
    }

    /// `tcp` from `peer` counted, living at most `lifetime`; None (it is closed) when over a
    /// limit.
    pub fn admit(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        lifetime: Option<Duration>,
    ) -> Option<CountedConnection> {
        let slot = self.take(peer).ok()?;
        // Requests and answers are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        Some(CountedConnection {
            tcp,
            _slot: slot,
            ends: lifetime.map(|l| Box::pin(tokio::time::sleep(l))),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.0.table().open
    }

    /// Peer addresses with a connection open now.
    pub fn peers(&self) -> usize {
        self.0.table().by_peer.len()
    }
}

/// One open connection's place in the count, given back when it is dropped.
#[derive(Debug)]
pub struct Slot {
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
        self.slots.report(table.open);
    }
}

/// Errors about one connection (it went away before it was accepted): the next accept is fine.
pub fn about_one_connection(e: &io::Error) -> bool {
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

/// Logs a failed accept that is not about one connection; the caller pauses [`ACCEPT_PAUSE`].
pub fn accept_failed(listener: &'static str, e: &io::Error) {
    tracing::warn!(listener, error = %e, pause_ms = ACCEPT_PAUSE.as_millis() as u64,
        "cannot accept connections (are file descriptors exhausted?); pausing the listener");
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

/// How the metrics and health endpoint accepts: Prometheus and the kubelet need a few
/// connections each, and a request is answered in milliseconds.
const ENDPOINT_LIMITS: ConnectionLimits = ConnectionLimits {
    total: 64,
    per_peer: Some(8),
};
/// How long a connection to the metrics and health endpoint may stay open, so that one whose
/// request never finishes gives its place back (Prometheus opens another for its next scrape).
const ENDPOINT_CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// The metrics and health endpoint's listener, for `axum::serve`.
#[derive(Debug)]
pub struct EndpointListener {
    listener: TcpListener,
    count: ConnectionCount,
    lifetime: Duration,
}

impl EndpointListener {
    /// Accepts on `listener` within the endpoint's limits.
    pub fn new(listener: TcpListener) -> Self {
        Self::with_lifetime(listener, ENDPOINT_CONNECTION_LIFETIME)
    }

    fn with_lifetime(listener: TcpListener, lifetime: Duration) -> Self {
        Self {
            listener,
            count: ConnectionCount::new("metrics", ENDPOINT_LIMITS),
            lifetime,
        }
    }
}

impl axum::serve::Listener for EndpointListener {
    type Io = CountedConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedConnection, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    if let Some(connection) = self.count.admit(tcp, peer, Some(self.lifetime)) {
                        return (connection, peer);
                    }
                }
                Err(e) if about_one_connection(&e) => {}
                Err(e) => {
                    accept_failed("metrics", &e);
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted connection: it holds its place in the count until it is dropped and, with a
/// lifetime, fails its reads once that is over, which closes it (an answer being written is
/// finished; the next request is refused).
#[derive(Debug)]
pub struct CountedConnection {
    tcp: TcpStream,
    _slot: Slot,
    ends: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl CountedConnection {
    /// Waits for the caller's first bytes and copies up to `buf.len()` of them without taking
    /// them from the connection; 0 when the caller closed it.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.peek(buf).await
    }

    fn over(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let ends = self.ends.as_mut()?;
        ends.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection outlived its lifetime",
            )
        })
    }
}

#[cfg(feature = "grpc")]
impl tonic::transport::server::Connected for CountedConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.connect_info()
    }
}

impl AsyncRead for CountedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.over(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // An answer being written is finished: only the next request is refused.
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

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn from(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], port))
    }

    #[test]
    fn one_peer_gets_its_share_and_a_closed_connection_gives_its_place_back() {
        let count = ConnectionCount::new(
            "test",
            ConnectionLimits {
                total: 10,
                per_peer: Some(2),
            },
        );
        let mut held = vec![
            count.take(from(2, 1)).expect("first"),
            count.take(from(2, 2)).expect("second"),
        ];
        assert_eq!(count.take(from(2, 3)).err(), Some(Refusal::PerPeer));
        let _other = count.take(from(3, 1)).expect("another peer");
        assert_eq!((count.open(), count.peers()), (3, 2));
        held.pop();
        let _again = count.take(from(2, 4)).expect("a freed place");
    }

    #[test]
    fn the_total_holds_across_peers_and_no_limit_per_peer_means_none() {
        let count = ConnectionCount::new(
            "test",
            ConnectionLimits {
                total: 3,
                per_peer: None,
            },
        );
        let held: Vec<Slot> = (0..3)
            .map(|port| count.take(from(4, port)).expect("one peer may take all"))
            .collect();
        assert_eq!(count.take(from(5, 1)).err(), Some(Refusal::Total));
        drop(held);
        assert_eq!((count.open(), count.peers()), (0, 0));
    }

    #[test]
    fn refusals_have_stable_labels() {
        assert_eq!(Refusal::Total.as_str(), "total_limit");
        assert_eq!(Refusal::PerPeer.as_str(), "peer_limit");
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

    /// A connection whose request never finishes is closed at the end of its lifetime, and
    /// the endpoint keeps answering meanwhile.
    #[tokio::test]
    async fn a_stalled_endpoint_connection_is_closed_at_its_lifetime() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route("/livez", axum::routing::get(|| async { "alive\n" }));
        let lifetime = Duration::from_secs(1);
        let server = tokio::spawn(async move {
            axum::serve(EndpointListener::with_lifetime(listener, lifetime), app)
                .await
                .expect("serve");
        });
        let started = std::time::Instant::now();
        let mut stalled = TcpStream::connect(addr).await.expect("connect");
        stalled
            .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("half a request");
        let mut probe = TcpStream::connect(addr).await.expect("connect");
        probe
            .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut answer = String::new();
        probe.read_to_string(&mut answer).await.expect("answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut rest))
            .await
            .expect("closed by the endpoint");
        assert!(started.elapsed() >= lifetime, "closed before its lifetime");
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
        server.abort();
    }

    #[tokio::test]
    async fn the_endpoint_closes_connections_over_a_peers_share() {
        use tokio::io::AsyncReadExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route("/livez", axum::routing::get(|| async { "alive\n" }));
        let server = tokio::spawn(async move {
            axum::serve(EndpointListener::new(listener), app)
                .await
                .expect("serve");
        });
        let mut held = Vec::new();
        for _ in 0..ENDPOINT_LIMITS.per_peer.unwrap_or(0) {
            held.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let mut over = TcpStream::connect(addr).await.expect("connect");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), over.read(&mut byte))
            .await
            .expect("closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        server.abort();
    }
}
