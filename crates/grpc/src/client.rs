//! How a facility reaches lienthong's gRPC APIs (the gateway, a regional store's query API):
//! the connection settings every client shares (the `lienthong` CLI, the facility agent) and
//! the authenticated channel they open.

use std::path::PathBuf;
use std::time::Duration;

use lienthong_proto::v1 as pb;
use lienthong_proto::v1::ingest_service_client::IngestServiceClient;
use lienthong_proto::v1::regional_query_service_client::RegionalQueryServiceClient;
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

/// A regional store's query API address and the facility's credentials.
#[derive(Debug, Clone, clap::Args)]
pub struct RegionalConnection {
    /// Regional store query API URL.
    #[arg(
        long = "regional",
        env = "LIENTHONG_REGIONAL_URL",
        default_value = "https://localhost:50061"
    )]
    pub url: String,
    /// CA certificate (PEM) that signed the store's certificate, if not a public one.
    #[arg(long = "ca", env = "LIENTHONG_REGIONAL_CA")]
    pub ca: Option<PathBuf>,
    /// Facility client certificate (PEM), for mutual TLS.
    #[arg(long = "cert", env = "LIENTHONG_REGIONAL_CLIENT_CERT")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long = "key", env = "LIENTHONG_REGIONAL_CLIENT_KEY")]
    pub key: Option<PathBuf>,
    /// File holding a bearer token (`lienthong tokens issue`), instead of a certificate.
    #[arg(long = "token-file", env = "LIENTHONG_REGIONAL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// Where one gRPC API is and how the facility proves who it is: what every client of every
/// lienthong API needs, whatever flags it came from.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// What the API is, for messages ("gateway", "regional store").
    pub service: &'static str,
    /// URL.
    pub url: &'a str,
    /// CA certificate file.
    pub ca: Option<&'a PathBuf>,
    /// Client certificate and key files, for mutual TLS.
    pub identity: Option<(&'a PathBuf, &'a PathBuf)>,
    /// Bearer token file.
    pub token_file: Option<&'a PathBuf>,
}

/// Why an API could not be reached.
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
    #[error("{service} {url}: {source}")]
    Transport {
        /// Which API.
        service: &'static str,
        /// URL.
        url: String,
        /// tonic error.
        source: tonic::transport::Error,
    },
    /// The URL is not a URL.
    #[error("{service} URL {url:?} is not a valid URL: {message}")]
    Url {
        /// Which API.
        service: &'static str,
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

impl Endpoint<'_> {
    /// Opens a channel (connecting lazily: an API that is down is retried by each call).
    pub fn channel(&self) -> Result<Channel, ClientError> {
        let transport = |source| ClientError::Transport {
            service: self.service,
            url: self.url.to_owned(),
            source,
        };
        let mut endpoint = Channel::from_shared(self.url.to_owned())
            .map_err(|e| ClientError::Url {
                service: self.service,
                url: self.url.to_owned(),
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60));
        if self.url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = self.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let Some((c, k)) = self.identity {
                tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
            }
            endpoint = endpoint.tls_config(tls).map_err(transport)?;
        }
        Ok(endpoint.connect_lazy())
    }

    /// The bearer token, if configured (refused when every user may read its file).
    pub fn token(&self) -> Result<Option<String>, ClientError> {
        self.token_file
            .map(|p| {
                lienthong_runtime::check_private(p, "bearer token")?;
                read(p).map(|t| String::from_utf8_lossy(&t).trim().to_owned())
            })
            .transpose()
    }
}

/// `message` as a request carrying the bearer token, if any.
pub fn authorized<T>(token: Option<&str>, message: T) -> Result<tonic::Request<T>, ClientError> {
    let mut req = tonic::Request::new(message);
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

impl GatewayConnection {
    /// Where the gateway is and the facility's credentials.
    pub fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            service: "gateway",
            url: &self.url,
            ca: self.ca.as_ref(),
            identity: self.cert.as_ref().zip(self.key.as_ref()),
            token_file: self.token_file.as_ref(),
        }
    }

    /// Opens a channel (connecting lazily: a gateway that is down is retried by each call).
    pub fn channel(&self) -> Result<IngestServiceClient<Channel>, ClientError> {
        Ok(IngestServiceClient::new(self.endpoint().channel()?)
            .max_decoding_message_size(64 * 1024 * 1024))
    }

    /// The bearer token, if configured.
    pub fn token(&self) -> Result<Option<String>, ClientError> {
        self.endpoint().token()
    }

    /// A publish request carrying the token.
    pub fn request(
        &self,
        token: Option<&str>,
        events: Vec<pb::EventEnvelope>,
    ) -> Result<tonic::Request<pb::PublishRequest>, ClientError> {
        authorized(
            token,
            pb::PublishRequest {
                events,
                request_id: String::new(),
            },
        )
    }
}

impl RegionalConnection {
    /// Where the regional store is and the facility's credentials.
    pub fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            service: "regional store",
            url: &self.url,
            ca: self.ca.as_ref(),
            identity: self.cert.as_ref().zip(self.key.as_ref()),
            token_file: self.token_file.as_ref(),
        }
    }

    /// A query client (connecting lazily).
    pub fn client(&self) -> Result<RegionalQueryServiceClient<Channel>, ClientError> {
        Ok(RegionalQueryServiceClient::new(self.endpoint().channel()?)
            .max_decoding_message_size(64 * 1024 * 1024))
    }
}
