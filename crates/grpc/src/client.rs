//! How a facility reaches the gateway: the connection settings every client shares (the
//! `lienthong` CLI, the facility agent) and the authenticated channel they open.

use std::path::PathBuf;
use std::time::Duration;

use lienthong_proto::v1 as pb;
use lienthong_proto::v1::ingest_service_client::IngestServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Gateway address and the facility's credentials.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConnection {
    /// Gateway URL (https:// in production).
    #[arg(
        long = "gateway",
        env = "LIENTHONG_GATEWAY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub url: String,
    /// CA certificate (PEM) that signed the gateway's certificate, if not a public one.
    #[arg(long = "ca", env = "LIENTHONG_GATEWAY_CA")]
    pub ca: Option<PathBuf>,
    /// Facility client certificate (PEM), for mutual TLS.
    #[arg(long = "cert", env = "LIENTHONG_GATEWAY_CLIENT_CERT")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long = "key", env = "LIENTHONG_GATEWAY_CLIENT_KEY")]
    pub key: Option<PathBuf>,
    /// File holding a bearer token (`lienthong tokens issue`), instead of a certificate.
    #[arg(long = "token-file", env = "LIENTHONG_GATEWAY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// Why the gateway could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The token file is readable by every user.
    #[error(transparent)]
    Secret(#[from] lienthong_runtime::SecretFileError),
    /// A credential file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The URL or TLS settings are wrong.
    #[error("gateway {url}: {source}")]
    Transport {
        /// URL.
        url: String,
        /// tonic error.
        source: tonic::transport::Error,
    },
    /// The URL is not a URL.
    #[error("gateway URL {url:?} is not a valid URL: {message}")]
    Url {
        /// URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The token is not a valid header value.
    #[error("the token in the token file is not a valid header value")]
    Token,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.clone(),
        source,
    })
}

impl GatewayConnection {
    /// Opens a channel (connecting lazily: a gateway that is down is retried by each call).
    pub fn channel(&self) -> Result<IngestServiceClient<Channel>, ClientError> {
        let transport = |source| ClientError::Transport {
            url: self.url.clone(),
            source,
        };
        let mut endpoint = Channel::from_shared(self.url.clone())
            .map_err(|e| ClientError::Url {
                url: self.url.clone(),
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60));
        if self.url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(c), Some(k)) = (&self.cert, &self.key) {
                tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
            }
            endpoint = endpoint.tls_config(tls).map_err(transport)?;
        }
        Ok(IngestServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(64 * 1024 * 1024))
    }

    /// The bearer token, if configured.
    pub fn token(&self) -> Result<Option<String>, ClientError> {
        self.token_file
            .as_ref()
            .map(|p| {
                lienthong_runtime::check_private(p, "bearer token")?;
                read(p).map(|t| String::from_utf8_lossy(&t).trim().to_owned())
            })
            .transpose()
    }

    /// A publish request carrying the token.
    pub fn request(
        &self,
        token: Option<&str>,
        events: Vec<pb::EventEnvelope>,
    ) -> Result<tonic::Request<pb::PublishRequest>, ClientError> {
        let mut req = tonic::Request::new(pb::PublishRequest {
            events,
            request_id: String::new(),
        });
        if let Some(t) = token {
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| ClientError::Token)?,
            );
        }
        Ok(req)
    }
}
