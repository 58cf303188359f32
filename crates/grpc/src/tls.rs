//! Server TLS that follows its files: the certificate and key, the client CA and the client
//! certificate revocation list are re-read within seconds of a change, so a renewed
//! certificate (cert-manager renews a month before expiry) is served to every new connection
//! without a restart, and a revoked client certificate is refused in the handshake. Each
//! connection is handshaken on its own within the handshake timeout, never holding up the
//! accepting of others.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer,
};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tonic::transport::server::Connected;

use crate::connections::{BoundedIncoming, CountedConnection};
use crate::plaintext::{self, Opening};
use crate::serving::ServingError;

/// How often the files are looked at for a change.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The files server TLS is made of.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA of client certificates (PEM): client certificates are verified when presented.
    pub client_ca: Option<PathBuf>,
    /// Revoked client certificates (PEM CRLs or one DER CRL), signed by the client CA.
    pub client_crl: Option<PathBuf>,
}

impl TlsFiles {
    fn all(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key)]
            .into_iter()
            .chain([self.client_ca.as_ref(), self.client_crl.as_ref()])
            .flatten()
            .map(PathBuf::as_path)
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        self.all()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// A rustls server configuration from the files as they are now.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, ServingError> {
        let invalid = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
            ServingError::Config(format!("{what} {}: {e}", path.display()))
        };
        let certs = CertificateDer::pem_slice_iter(&read("TLS certificate", &self.cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("TLS certificate", &self.cert, &e))?;
        if certs.is_empty() {
            return Err(invalid(
                "TLS certificate",
                &self.cert,
                &"holds no CERTIFICATE block",
            ));
        }
        lienthong_runtime::check_private(&self.key, "TLS key")?;
        let key = PrivateKeyDer::from_pem_slice(&read("TLS key", &self.key)?)
            .map_err(|e| invalid("TLS key", &self.key, &e))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ServingError::Config(format!("TLS versions: {e}")))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&read("client CA", ca)?) {
                    let cert = cert.map_err(|e| invalid("client CA", ca, &e))?;
                    roots.add(cert).map_err(|e| invalid("client CA", ca, &e))?;
                }
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        // Optional: a caller with a bearer token connects without one; a caller
                        // with neither is refused by the authenticator.
                        .allow_unauthenticated();
                if let Some(crl) = &self.client_crl {
                    verifier = verifier
                        .with_crls(revocation_lists(crl)?)
                        // The list names the facilities' certificates; a CA of the chain
                        // that it does not cover is not thereby refused.
                        .only_check_end_entity_revocation()
                        .allow_unknown_revocation_status();
                }
                let verifier = verifier.build().map_err(|e| invalid("client CA", ca, &e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| invalid("TLS certificate and key", &self.cert, &e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ServingError> {
    std::fs::read(path).map_err(|source| ServingError::Read {
        what,
        path: path.to_owned(),
        cause: source,
    })
}

/// The CRLs of a file: PEM blocks, or the file itself as one DER list.
fn revocation_lists(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, ServingError> {
    let bytes = read("client CRL", path)?;
    let pem: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| ServingError::Config(format!("client CRL {}: {e}", path.display())))?;
    Ok(if pem.is_empty() {
        vec![CertificateRevocationListDer::from(bytes)]
    } else {
        pem
    })
}

struct Current {
    acceptor: TlsAcceptor,
    modified: Vec<Option<SystemTime>>,
    checked: Instant,
}

/// The TLS acceptor of a server, rebuilt when one of its files changes. A change that does
/// not make a valid configuration is not used: the one before stays, and the error is
/// logged.
#[derive(Clone)]
pub struct ReloadingTls {
    files: Arc<TlsFiles>,
    current: Arc<RwLock<Current>>,
}

impl ReloadingTls {
    /// Reads the files; Err names the file that is wrong.
    pub fn new(files: TlsFiles) -> Result<Self, ServingError> {
        let config = files.server_config()?;
        Ok(Self {
            current: Arc::new(RwLock::new(Current {
                acceptor: TlsAcceptor::from(Arc::new(config)),
                modified: files.modified(),
                checked: Instant::now(),
            })),
            files: Arc::new(files),
        })
    }

    /// The acceptor for the next connection, rebuilt first if a file changed.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.reload_if_changed();
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .acceptor
            .clone()
    }

    fn reload_if_changed(&self) {
        {
            let current = self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if current.checked.elapsed() < CHECK_EVERY {
                return;
            }
        }
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        current.checked = Instant::now();
        let modified = self.files.modified();
        if modified == current.modified {
            return;
        }
        current.modified = modified;
        match self.files.server_config() {
            Ok(config) => {
                current.acceptor = TlsAcceptor::from(Arc::new(config));
                tracing::info!(
                    cert = %self.files.cert.display(),
                    "server TLS files changed; new connections use them"
                );
            }
            Err(e) => tracing::error!(
                error = %e,
                "server TLS files changed but do not make a valid configuration; keeping the one before"
            ),
        }
    }
}

/// What the server knows of a caller's connection: its address and, over TLS, the
/// certificates it presented. Every request carries it in its extensions.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// The caller's address.
    pub remote: Option<SocketAddr>,
    /// The certificate chain the caller presented, leaf first.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl PeerInfo {
    /// The connection facts of `request`, if it came over a connection of this module.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Self> {
        request.extensions().get::<Self>()
    }
}

/// A caller's connection: plain text (insecure development only) or TLS.
#[allow(clippy::large_enum_variant)]
pub enum CallerConnection {
    /// Plain text.
    Plain(CountedConnection),
    /// TLS, handshake completed.
    Tls(Box<tokio_rustls::server::TlsStream<CountedConnection>>),
}

impl Connected for CallerConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Self::Plain(c) => PeerInfo {
                remote: c.connect_info().remote_addr(),
                certs: None,
            },
            Self::Tls(t) => {
                let (c, session) = t.get_ref();
                PeerInfo {
                    remote: c.connect_info().remote_addr(),
                    certs: session
                        .peer_certificates()
                        .map(|certs| Arc::new(certs.to_vec())),
                }
            }
        }
    }
}

impl AsyncRead for CallerConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(c) => Pin::new(c).poll_read(cx, buf),
            Self::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for CallerConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(c) => Pin::new(c).poll_write(cx, buf),
            Self::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(c) => Pin::new(c).poll_flush(cx),
            Self::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(c) => Pin::new(c).poll_shutdown(cx),
            Self::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            Self::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(c) => c.is_write_vectored(),
            Self::Tls(t) => t.is_write_vectored(),
        }
    }
}

/// The connections a server takes, as `serve_with_incoming_shutdown` wants them.
pub type CallerConnections =
    Pin<Box<dyn futures::Stream<Item = io::Result<CallerConnection>> + Send>>;

/// The connections a server takes: accepted within the connection limits, then (with TLS)
/// handshaken concurrently, each within `handshake_timeout`. A failed or slow handshake closes
/// that connection alone and is counted.
pub fn caller_connections(
    accepted: BoundedIncoming,
    tls: Option<ReloadingTls>,
    handshake_timeout: Duration,
    handshakes_at_once: usize,
) -> CallerConnections {
    let Some(tls) = tls else {
        return Box::pin(accepted.map(|c| c.map(CallerConnection::Plain)));
    };
    Box::pin(
        accepted
            .filter_map(|c| std::future::ready(c.ok()))
            .map(move |connection| {
                let acceptor = tls.acceptor();
                async move {
                    let handshake = async {
                        match plaintext::opening(&connection).await? {
                            Opening::Tls => acceptor.accept(connection).await.map(Some),
                            Opening::Closed => Ok(None),
                            spoken => {
                                handshake_failed("plaintext");
                                plaintext::tell(connection, spoken).await;
                                Ok(None)
                            }
                        }
                    };
                    match tokio::time::timeout(handshake_timeout, handshake).await {
                        Ok(Ok(Some(stream))) => Some(CallerConnection::Tls(Box::new(stream))),
                        Ok(Ok(None)) => None,
                        Ok(Err(e)) => {
                            handshake_failed("refused");
                            tracing::debug!(error = %e, "TLS handshake failed");
                            None
                        }
                        Err(_) => {
                            handshake_failed("timeout");
                            None
                        }
                    }
                }
            })
            .buffer_unordered(handshakes_at_once.max(1))
            .filter_map(|c| std::future::ready(c.map(Ok))),
    )
}

fn handshake_failed(reason: &'static str) {
    metrics::counter!(crate::metrics::TLS_HANDSHAKE_FAILURES.name, "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::ConnectionLimits;
    use crate::test_pki::{Authority, Leaf};
    use tokio::io::AsyncReadExt as _;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsConnector;

    fn private(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        // Written beside and renamed into place, as a mounted Secret changes.
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).expect("write");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::rename(&tmp, path).expect("rename");
    }

    /// A CA, server TLS files in `dir` with a certificate of serial 1 (and, with `clients`,
    /// the CA for client certificates and an empty revocation list), and that certificate.
    fn setup(dir: &Path, clients: bool) -> (Authority, TlsFiles, Leaf) {
        let pki = Authority::new("test CA");
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client_ca: clients.then(|| dir.join("ca.pem")),
            client_crl: clients.then(|| dir.join("crl.pem")),
        };
        let server = pki.leaf("gateway", 1);
        private(&files.cert, &server.cert_pem);
        private(&files.key, &server.key_pem);
        if let (Some(ca), Some(crl)) = (&files.client_ca, &files.client_crl) {
            private(ca, &pki.ca_pem);
            private(crl, &pki.crl(&[]).pem().expect("pem"));
        }
        (pki, files, server)
    }

    /// A server of `caller_connections` on a loopback port; what each accepted connection
    /// presented is sent on the channel.
    async fn serve(
        tls: ReloadingTls,
        timeout: Duration,
    ) -> (SocketAddr, tokio::sync::mpsc::Receiver<PeerInfo>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = BoundedIncoming::new(
            listener,
            ConnectionLimits {
                total: 64,
                per_peer: None,
            },
        );
        let mut connections = caller_connections(accepted, Some(tls), timeout, 64);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(Ok(mut c)) = connections.next().await {
                let _ = tx.send(c.connect_info()).await;
                tokio::spawn(async move {
                    let mut buf = [0u8; 16];
                    let _ = c.read(&mut buf).await;
                });
            }
        });
        (addr, rx)
    }

    /// Connects over TLS trusting `ca_pem`, with a client identity if given; the server
    /// certificate it was shown, or the handshake's error.
    async fn connect(
        addr: SocketAddr,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> io::Result<Vec<u8>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.expect("ca")).expect("root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
                )
                .expect("client auth"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        // Under TLS 1.3 a refused client certificate shows on the first read.
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), tls.read(&mut buf)).await {
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => return Err(io::Error::other("closed by the server")),
            _ => {}
        }
        let (_, session) = tls.get_ref();
        Ok(session.peer_certificates().expect("server certificate")[0].to_vec())
    }

    #[tokio::test]
    async fn a_renewed_server_certificate_is_served_without_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let (pki, files, first) = setup(dir.path(), false);
        let (addr, _accepted) = serve(
            ReloadingTls::new(files.clone()).expect("tls"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            connect(addr, &pki.ca_pem, None).await.expect("tls"),
            first.der
        );

        let renewed = pki.leaf("gateway", 2);
        private(&files.cert, &renewed.cert_pem);
        private(&files.key, &renewed.key_pem);
        tokio::time::sleep(CHECK_EVERY + Duration::from_millis(200)).await;
        assert_eq!(
            connect(addr, &pki.ca_pem, None).await.expect("tls"),
            renewed.der
        );

        // A replacement that does not work (a key of another certificate) is not used.
        private(&files.key, &pki.leaf("gateway", 3).key_pem);
        tokio::time::sleep(CHECK_EVERY + Duration::from_millis(200)).await;
        assert_eq!(
            connect(addr, &pki.ca_pem, None).await.expect("tls"),
            renewed.der
        );
    }

    #[tokio::test]
    async fn a_revoked_client_certificate_is_refused_in_the_handshake() {
        let dir = tempfile::tempdir().expect("dir");
        let (pki, files, _) = setup(dir.path(), true);
        let (addr, mut accepted) = serve(
            ReloadingTls::new(files.clone()).expect("tls"),
            Duration::from_secs(5),
        )
        .await;
        let facility = pki.leaf("79025", 42);
        let identity = Some((facility.cert_pem.as_str(), facility.key_pem.as_str()));
        connect(addr, &pki.ca_pem, identity)
            .await
            .expect("not revoked yet");
        let shown = accepted.recv().await.expect("accepted");
        assert_eq!(
            shown.certs.expect("a client certificate")[0].as_ref(),
            facility.der.as_slice()
        );
        connect(addr, &pki.ca_pem, None)
            .await
            .expect("a caller without a certificate connects (bearer tokens)");

        private(
            files.client_crl.as_deref().expect("crl"),
            &pki.crl(&[42]).pem().expect("pem"),
        );
        tokio::time::sleep(CHECK_EVERY + Duration::from_millis(200)).await;
        connect(addr, &pki.ca_pem, identity)
            .await
            .expect_err("revoked: refused in the handshake");
    }

    #[tokio::test]
    async fn a_caller_that_never_handshakes_holds_up_nobody() {
        let dir = tempfile::tempdir().expect("dir");
        let (pki, files, first) = setup(dir.path(), false);
        let (addr, _accepted) = serve(
            ReloadingTls::new(files).expect("tls"),
            Duration::from_secs(1),
        )
        .await;
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        // Another caller is served while the first says nothing.
        assert_eq!(
            connect(addr, &pki.ca_pem, None).await.expect("tls"),
            first.der
        );
        // The silent one is closed at the handshake timeout.
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
            .await
            .expect("closed within the timeout");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    /// Everything the server sends after `opening`, until it closes.
    async fn answer_to(addr: SocketAddr, opening: &[u8]) -> Vec<u8> {
        use tokio::io::AsyncWriteExt as _;
        let mut plain = TcpStream::connect(addr).await.expect("connect");
        plain.write_all(opening).await.expect("write");
        let mut answer = Vec::new();
        let mut buf = [0u8; 512];
        // A reset after the answer ends it as a close does.
        while let Ok(Ok(n @ 1..)) =
            tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf)).await
        {
            answer.extend_from_slice(&buf[..n]);
        }
        answer
    }

    /// The HTTP/2 frames in `bytes`: type, flags, stream and payload of each.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while bytes.len() >= 9 {
            let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
            bytes = &bytes[9 + len..];
        }
        out
    }

    #[tokio::test]
    async fn a_plaintext_caller_is_told_to_use_tls_and_tls_callers_are_served() {
        let dir = tempfile::tempdir().expect("dir");
        let (pki, files, first) = setup(dir.path(), false);
        let (addr, _accepted) = serve(
            ReloadingTls::new(files).expect("tls"),
            Duration::from_secs(5),
        )
        .await;
        let tls_required = plaintext::TLS_REQUIRED.as_bytes();

        // A gRPC client without TLS: the preface and its SETTINGS, as grpcurl -plaintext sends.
        // Then a call's HEADERS on stream 1 (its header block is never decoded).
        let mut h2c = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        h2c.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        h2c.extend_from_slice(&[0, 0, 1, 1, 4, 0, 0, 0, 1, 0x83]);
        let answer = answer_to(addr, &h2c).await;
        let sent = frames(&answer);
        let kinds: Vec<_> = sent.iter().map(|(kind, _, _, _)| *kind).collect();
        // SETTINGS, SETTINGS ACK, HEADERS that end stream 1, GOAWAY.
        assert_eq!(kinds, [4, 4, 1, 7], "{sent:?}");
        assert_eq!((sent[2].1, sent[2].2), (5, 1));
        let trailers = &sent[2].3;
        assert!(
            trailers.windows(2).any(|w| w == b"16"),
            "grpc-status 16: {trailers:?}"
        );
        assert!(trailers.ends_with(tls_required), "{trailers:?}");
        assert!(sent[3].3.ends_with(tls_required), "{sent:?}");

        // A client that never calls is told by the GOAWAY alone.
        let answer = answer_to(addr, &h2c[..33]).await;
        let kinds: Vec<_> = frames(&answer).iter().map(|f| f.0).collect();
        assert_eq!(kinds, [4, 4, 7]);

        let answer = answer_to(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let text = String::from_utf8(answer).expect("text");
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert!(text.contains(plaintext::TLS_REQUIRED), "{text}");

        // A frame claiming 16 MiB, or a flood of small ones, is not read beyond 64 KiB: the
        // caller is told by GOAWAY at once.
        let started = Instant::now();
        let mut huge = h2c[..33].to_vec();
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0]);
        let kinds: Vec<_> = frames(&answer_to(addr, &huge).await)
            .iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(kinds, [4, 4, 7]);
        let mut flood = h2c[..24].to_vec();
        for _ in 0..10_000 {
            flood.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        }
        let answer = answer_to(addr, &flood).await;
        let sent = frames(&answer);
        assert_eq!(sent.last().map(|f| f.0), Some(7), "ends with GOAWAY");
        assert!(sent.len() < 64 * 1024 / 9 + 3, "{} frames", sent.len());
        // Both at once, not after the wait for a first call (a second each).
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        // Bytes that are neither TLS nor HTTP go to the handshake, which refuses them.
        let answer = answer_to(addr, b"\x00\x00garbage").await;
        assert!(
            !answer.starts_with(b"HTTP/") && answer.len() < 16,
            "{answer:?}"
        );
        assert_eq!(
            connect(addr, &pki.ca_pem, None).await.expect("tls"),
            first.der
        );
    }
}
