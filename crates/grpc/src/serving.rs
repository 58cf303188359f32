//! The serving side shared by every lienthong gRPC API: one flattenable set of flags (listener,
//! TLS, caller authentication, hubs), checked together at start-up, and what they build: the
//! authenticator and the tonic server with its TLS.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::connections::{BoundedIncoming, ConnectionLimits};
use crate::tls::{CallerConnections, ReloadingTls, TlsFiles, caller_connections};

use std::sync::Arc;

use crate::identity::{Authenticator, Revocations, TokenPolicy};
use crate::revoked::RevokedCertificates;
use crate::tokens::{KeySet, TokenError};

/// The gateway's audience unless a deployment sets its own.
pub const GATEWAY_AUDIENCE: &str = "lienthong-gateway";
/// The regional stores' audience unless a deployment sets its own.
pub const REGIONAL_AUDIENCE: &str = "lienthong-regional";
/// Longest token lifetime a service accepts unless configured: 30 days.
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECS: u64 = 30 * 24 * 3600;

/// Listener, TLS and caller authentication of a gRPC API.
#[derive(Debug, Clone, clap::Args)]
pub struct ServingArgs {
    /// Address of the gRPC listener (each service has its own default port).
    #[arg(long, env = "LIENTHONG_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Development only: plain-text gRPC, no caller authentication, any caller acts for any
    /// facility.
    #[arg(long, env = "LIENTHONG_INSECURE_DEV")]
    pub insecure_dev: bool,
    /// Server certificate chain (PEM).
    #[arg(long, env = "LIENTHONG_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "LIENTHONG_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that signs facility client certificates; enables mutual TLS. The certificate's
    /// common name is the facility code.
    #[arg(long, env = "LIENTHONG_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation list (PEM with one or more CRLs, or DER) signed by the client
    /// CA; re-read when it changes. A request with a revoked client certificate is refused.
    #[arg(long, env = "LIENTHONG_CLIENT_CRL", requires = "client_ca")]
    pub client_crl: Option<PathBuf>,
    /// JWK set file of the public keys that sign bearer tokens (Ed25519, one per key id;
    /// reloaded when it changes); enables token auth. `lienthong tokens keygen` writes it.
    #[arg(long, env = "LIENTHONG_TOKEN_KEYS")]
    pub token_keys: Option<PathBuf>,
    /// Audience bearer tokens must name: this service (each service has its own default:
    /// lienthong-gateway, lienthong-regional).
    #[arg(long, env = "LIENTHONG_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,
    /// Topic of revoked tokens, followed from its beginning: a revoked token is refused within
    /// a second of its revocation.
    #[arg(long, env = "LIENTHONG_TOKEN_REVOCATIONS_TOPIC", default_value = lienthong_core::routing::REVOCATIONS_TOPIC)]
    pub token_revocations_topic: String,
    /// Longest token lifetime (exp − iat) accepted, in seconds; longer tokens are refused.
    #[arg(long, env = "LIENTHONG_TOKEN_MAX_LIFETIME_SECS", default_value_t = DEFAULT_MAX_TOKEN_LIFETIME_SECS)]
    pub token_max_lifetime_secs: u64,
    /// Regional hubs that act for other facilities (publish for them at the gateway, read their
    /// lists at the query API): `HUB=F1,F2;HUB2=F3`.
    #[arg(long = "hub", env = "LIENTHONG_HUBS", value_delimiter = ';')]
    pub hubs: Vec<String>,
    /// Most connections held open at once; a connection beyond it is closed as soon as it is
    /// accepted. The open-file limit is raised to fit it where the hard limit allows.
    #[arg(long, env = "LIENTHONG_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most connections held open at once from one peer address, so that one host cannot take
    /// every connection; 0 for no per-address limit (only behind a proxy that hides client
    /// addresses: the chart preserves them).
    #[arg(long, env = "LIENTHONG_MAX_CONNECTIONS_PER_PEER", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_PEER)]
    pub max_connections_per_peer: usize,
    /// Seconds a caller has to complete the TLS handshake before its connection is closed.
    #[arg(long, env = "LIENTHONG_TLS_HANDSHAKE_TIMEOUT_SECS", default_value_t = DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS)]
    pub tls_handshake_timeout_secs: u64,
}

/// Connections an API holds open at once unless configured.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Connections an API holds open at once from one address unless configured.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 256;
/// Seconds allowed for a TLS handshake unless configured.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Requests in progress on one connection: the HTTP/2 streams a peer may open at once (it
/// queues the rest) and the calls served at once. Without it h2 admits any number of
/// streams, each holding server state while its body trickles in.
const STREAMS_PER_CONNECTION: u32 = 256;
/// How often an idle connection's peer is asked to show it is still there (HTTP/2 ping), so
/// that connections of peers gone without a word give their place back.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// How long a ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why an API could not be set up to serve.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// Flags that do not fit together.
    #[error("invalid serving settings: {0}")]
    Config(String),
    /// A TLS file could not be read.
    #[error("cannot read {what} {path}: {cause}")]
    Read {
        /// What the file is.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// I/O error.
        cause: std::io::Error,
    },
    /// The token key.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The certificate revocation list.
    #[error(transparent)]
    Crl(#[from] crate::revoked::CrlError),
    /// A key file readable by every user.
    #[error(transparent)]
    Secret(#[from] lienthong_runtime::SecretFileError),
    /// tonic refused the TLS settings.
    #[error("TLS settings: {0}")]
    Tls(tonic::transport::Error),
}

// The cause is in the message, not a source: a chain of causes names it once.
impl From<tonic::transport::Error> for ServingError {
    fn from(e: tonic::transport::Error) -> Self {
        Self::Tls(e)
    }
}

impl ServingArgs {
    /// Secure defaults with no credentials set: `check()` says what is missing.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen: Some(listen),
            insecure_dev: false,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            client_crl: None,
            token_keys: None,
            token_audience: None,
            token_revocations_topic: lienthong_core::routing::REVOCATIONS_TOPIC.to_owned(),
            token_max_lifetime_secs: DEFAULT_MAX_TOKEN_LIFETIME_SECS,
            hubs: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            tls_handshake_timeout_secs: DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS,
        }
    }

    /// Plain-text and unauthenticated (development and tests).
    pub fn insecure(listen: SocketAddr) -> Self {
        Self {
            insecure_dev: true,
            ..Self::new(listen)
        }
    }

    /// The listener address, or the service's `default`.
    pub fn listen_or(&self, default: SocketAddr) -> SocketAddr {
        self.listen.unwrap_or(default)
    }

    /// Cross-field checks; the message says which flags to set.
    pub fn check(&self) -> Result<(), ServingError> {
        if !self.insecure_dev {
            if self.tls_cert.is_none() || self.tls_key.is_none() {
                return Err(ServingError::Config(
                    "set --tls-cert and --tls-key (or --insecure-dev for local development only)"
                        .into(),
                ));
            }
            if self.client_ca.is_none() && self.token_keys.is_none() {
                return Err(ServingError::Config("callers must be authenticated: set --client-ca (mutual TLS) and/or --token-keys (bearer tokens)".into()));
            }
        }
        if self.client_crl.is_some() && self.client_ca.is_none() {
            return Err(ServingError::Config(
                "--client-crl revokes client certificates: set --client-ca too".into(),
            ));
        }
        if self
            .token_audience
            .as_deref()
            .is_some_and(|a| a.trim().is_empty())
        {
            return Err(ServingError::Config(
                "--token-audience must not be empty".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(ServingError::Config(
                "--max-connections must be at least 1".into(),
            ));
        }
        if self.tls_handshake_timeout_secs == 0 {
            return Err(ServingError::Config(
                "--tls-handshake-timeout-secs must be at least 1".into(),
            ));
        }
        if self.token_max_lifetime_secs == 0 {
            return Err(ServingError::Config(
                "--token-max-lifetime-secs must be at least 1".into(),
            ));
        }
        self.hub_map().map(|_| ())
    }

    /// Hubs and the facilities each acts for.
    pub fn hub_map(&self) -> Result<HashMap<String, HashSet<String>>, ServingError> {
        let mut map = HashMap::new();
        for entry in self.hubs.iter().filter(|h| !h.trim().is_empty()) {
            let (hub, list) = entry.split_once('=').ok_or_else(|| {
                ServingError::Config(format!("--hub {entry:?} must look like HUB=F1,F2"))
            })?;
            let facilities: HashSet<String> = list
                .split(',')
                .map(|f| f.trim().to_owned())
                .filter(|f| !f.is_empty())
                .collect();
            for code in std::iter::once(hub.trim()).chain(facilities.iter().map(String::as_str)) {
                lienthong_core::FacilityCode::parse(code).map_err(|e| {
                    ServingError::Config(format!(
                        "--hub {entry:?}: {code:?} is not a facility code: {e}"
                    ))
                })?;
            }
            map.insert(hub.trim().to_owned(), facilities);
        }
        Ok(map)
    }

    /// The revocations topic to follow: only when bearer tokens are accepted.
    pub fn revocations_topic(&self) -> Option<&str> {
        self.token_keys
            .as_ref()
            .map(|_| self.token_revocations_topic.as_str())
    }

    /// The audience tokens must name: the configured one, or the service's `default`.
    pub fn audience_or(&self, default: &str) -> String {
        self.token_audience
            .as_deref()
            .map_or(default, str::trim)
            .to_owned()
    }

    /// The authenticator these flags describe (reads the key set), for a service whose
    /// audience is `default_audience` unless configured, refusing the `revocations` it learns.
    pub fn authenticator(
        &self,
        default_audience: &str,
        revocations: Arc<Revocations>,
    ) -> Result<Authenticator, ServingError> {
        let tokens = self
            .token_keys
            .as_deref()
            .map(|path| -> Result<TokenPolicy, ServingError> {
                Ok(TokenPolicy {
                    keys: KeySet::from_file(path)?,
                    audience: self.audience_or(default_audience),
                    max_lifetime_secs: self.token_max_lifetime_secs,
                    revocations: Arc::clone(&revocations),
                })
            })
            .transpose()?;
        let revoked = match (&self.client_crl, &self.client_ca) {
            (Some(crl), Some(ca)) => {
                let list = RevokedCertificates::from_files(crl, ca)?;
                tracing::info!(path = %crl.display(), revoked = list.len(), "client certificate revocation list read");
                Some(list)
            }
            _ => None,
        };
        Ok(
            Authenticator::new(tokens, self.hub_map()?, self.insecure_dev)
                .with_revoked_certificates(revoked),
        )
    }

    /// The connection limits these flags describe.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            total: self.max_connections,
            per_peer: (self.max_connections_per_peer > 0).then_some(self.max_connections_per_peer),
        }
    }

    /// The connections to serve from `listener`: accepted within the connection limits (the
    /// open-file limit raised to fit them) and, unless insecure, handshaken with the TLS of
    /// these flags, which follows its files (see `tls`). Pass it to
    /// `serve_with_incoming_shutdown`.
    pub fn incoming(&self, listener: TcpListener) -> Result<CallerConnections, ServingError> {
        let limits = self.connection_limits();
        lienthong_telemetry::connections::reserve_descriptors(limits);
        let tls = if self.insecure_dev {
            None
        } else {
            let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
                return Err(ServingError::Config(
                    "TLS certificate and key are required".into(),
                ));
            };
            Some(ReloadingTls::new(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca.clone(),
                client_crl: self.client_crl.clone(),
            })?)
        };
        Ok(caller_connections(
            BoundedIncoming::new(listener, limits),
            tls,
            Duration::from_secs(self.tls_handshake_timeout_secs),
            limits.total,
        ))
    }

    /// A tonic server builder with a bound on the requests in progress per connection and
    /// keepalive pings that close the connections of vanished peers (TLS is `incoming`'s).
    /// Checks the flags first, and the TLS files can be read; says so loudly in insecure mode,
    /// naming `what` is exposed.
    pub fn server(&self, what: &str) -> Result<Server, ServingError> {
        self.check()?;
        let builder = Server::builder()
            .max_concurrent_streams(Some(STREAMS_PER_CONNECTION))
            .concurrency_limit_per_connection(STREAMS_PER_CONNECTION as usize)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
        if self.insecure_dev {
            tracing::warn!(
                "INSECURE DEVELOPMENT MODE: {what} is plain-text and callers are NOT authenticated. Never use this with real data."
            );
            return Ok(builder);
        }
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Err(ServingError::Config(
                "TLS certificate and key are required".into(),
            ));
        };
        // Read now, so that a wrong file stops the service before anything else starts.
        TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.client_ca.clone(),
            client_crl: self.client_crl.clone(),
        }
        .server_config()?;
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[test]
    fn secure_mode_needs_tls_and_an_authentication_method() {
        let mut c = ServingArgs::new(addr());
        assert!(c.check().unwrap_err().to_string().contains("--tls-cert"));
        c.tls_cert = Some("c".into());
        c.tls_key = Some("k".into());
        assert!(c.check().unwrap_err().to_string().contains("--client-ca"));
        c.token_keys = Some("t".into());
        assert!(c.check().is_ok());
        c.token_audience = Some(" ".into());
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("--token-audience")
        );
    }

    #[test]
    fn connection_limits_must_allow_a_connection_and_zero_per_peer_means_none() {
        let mut c = ServingArgs::insecure(addr());
        assert_eq!(
            c.connection_limits(),
            ConnectionLimits {
                total: DEFAULT_MAX_CONNECTIONS,
                per_peer: Some(DEFAULT_MAX_CONNECTIONS_PER_PEER)
            }
        );
        c.max_connections_per_peer = 0;
        assert_eq!(c.connection_limits().per_peer, None);
        c.max_connections = 0;
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("--max-connections")
        );
        c.max_connections = 1;
        c.tls_handshake_timeout_secs = 0;
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("--tls-handshake-timeout-secs")
        );
    }

    #[test]
    fn hubs_parse_and_bad_ones_are_named() {
        let mut c = ServingArgs::insecure(addr());
        c.hubs = vec!["79000=79001, 79002".into()];
        assert_eq!(c.hub_map().expect("valid")["79000"].len(), 2);
        c.hubs = vec!["79000".into()];
        assert!(c.check().unwrap_err().to_string().contains("HUB=F1,F2"));
        c.hubs = vec!["79000=hospital".into()];
        assert!(c.check().unwrap_err().to_string().contains("\"hospital\""));
    }

    #[test]
    fn a_missing_tls_file_is_named() {
        let files = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "k".into(),
            client_ca: None,
            client_crl: None,
        };
        let err = files.server_config().expect_err("missing");
        assert!(
            err.to_string()
                .contains("TLS certificate /nonexistent/cert.pem"),
            "{err}"
        );
    }
}
