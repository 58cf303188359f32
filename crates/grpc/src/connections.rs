//! The connections a gRPC API accepts, counted within its limits (see
//! `lienthong_telemetry::connections`): one host holding idle connections or TLS handshakes
//! it never finishes keeps to its share, and every other facility connects as usual.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use lienthong_telemetry::connections::{
    ACCEPT_PAUSE, ConnectionCount, about_one_connection, accept_failed,
};
use tokio::net::TcpListener;

pub use lienthong_telemetry::connections::{
    ConnectionLimits, CountedConnection, Refusal, reserve_descriptors,
};

/// The connections `listener` accepts within `limits`, as tonic's `serve_with_incoming` takes
/// them. Never yields an error: tonic retries a failed accept at once, which is a loop at full
/// CPU when the process is out of file descriptors; this pauses the listener instead.
#[derive(Debug)]
pub struct BoundedIncoming {
    listener: TcpListener,
    count: ConnectionCount,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl BoundedIncoming {
    /// Accepts on `listener` within `limits`.
    pub fn new(listener: TcpListener, limits: ConnectionLimits) -> Self {
        Self {
            listener,
            count: ConnectionCount::new("grpc", limits),
            pause: None,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.count.open()
    }
}

impl tokio_stream::Stream for BoundedIncoming {
    type Item = Result<CountedConnection, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(pause) = &mut this.pause {
                ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match ready!(this.listener.poll_accept(cx)) {
                Ok((tcp, peer)) => {
                    if let Some(connection) = this.count.admit(tcp, peer, None) {
                        return Poll::Ready(Some(Ok(connection)));
                    }
                }
                Err(e) if about_one_connection(&e) => {}
                Err(e) => {
                    accept_failed("grpc", &e);
                    this.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_PAUSE)));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpStream;
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
        tokio::sync::mpsc::Receiver<CountedConnection>,
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
        let count = incoming.count.clone();
        let (mut accepted, task) = serve(incoming);
        let _a = connect_from([127, 0, 0, 4], addr).await;
        let kept_a = accepted.recv().await.expect("first");
        let _b = connect_from([127, 0, 0, 5], addr).await;
        let _kept_b = accepted.recv().await.expect("second");
        let mut c = connect_from([127, 0, 0, 6], addr).await;
        assert!(closed_by_server(&mut c).await, "over the total limit");
        assert_eq!(count.open(), 2);

        drop(kept_a);
        assert_eq!(count.open(), 1);
        let mut d = connect_from([127, 0, 0, 6], addr).await;
        let _kept_d = accepted.recv().await.expect("a freed place is taken");
        assert!(!closed_by_server(&mut d).await);
        assert_eq!(count.peers(), 2);
        task.abort();
    }
}
