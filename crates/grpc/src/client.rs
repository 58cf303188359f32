//! How a facility reaches lienthong's gRPC APIs (the gateway, a regional store's query API):
//! the connection settings every client shares (the `lienthong` CLI, the facility agent) and
//! the authenticated channel they open.

use std::error::Error as _;
use std::path::PathBuf;
use std::time::Duration;

use lienthong_proto::v1 as pb;
use lienthong_proto::v1::ingest_service_client::IngestServiceClient;
use lienthong_proto::v1::regional_query_service_client::RegionalQueryServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Gateway address and the facility's credentials.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConnection {
    /// Gateway URL: the https:// address of its TLS listener (http:// only for a gateway run
    /// with --insecure-dev).
    #[arg(
        long = "gateway",
        env = "LIENTHONG_GATEWAY_URL",
        default_value = "https://localhost:50051"
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
    #[error("cannot read {path}: {cause}")]
    Read {
        /// File.
        path: PathBuf,
        /// I/O error.
        cause: std::io::Error,
    },
    /// The URL or TLS settings are wrong.
    #[error("{service} {url}: {cause}")]
    Transport {
        /// Which API.
        service: &'static str,
        /// URL.
        url: String,
        /// tonic error.
        cause: tonic::transport::Error,
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

/// Why a call never reached the API it was meant for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// The API's certificate is not one this client trusts; the reason, in plain words.
    Untrusted(String),
    /// An `https://` URL whose server answered in plain text.
    NotTls,
    /// An `http://` URL whose server speaks TLS only, and said so.
    TlsRequired,
    /// Something answered that is no gRPC API of this kind: an `http://` URL to a server that
    /// speaks TLS, or another service's port.
    NotGrpc,
    /// Nothing answered, or the connection broke: the API may be down or restarting.
    Down,
}

/// A call that never reached the API, told as what to check. Only [`Why::Down`] is worth
/// retrying as it is; the others are settings to fix.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.explain())]
pub struct Unreached {
    /// Which API ("gateway", "regional store").
    pub service: &'static str,
    /// The URL called.
    pub url: String,
    /// What went wrong.
    pub why: Why,
    /// The client's own status, kept for its details (not a source: the explanation says
    /// what matters of it, and its own text repeats each cause twice).
    pub status: tonic::Status,
}

impl Unreached {
    /// Ok when `status` says the call never reached `endpoint`'s API; the status back when it
    /// is the API's own answer.
    pub fn of(endpoint: &Endpoint<'_>, status: tonic::Status) -> Result<Self, tonic::Status> {
        let mut text = status.message().to_owned();
        let mut transport = false;
        let mut cause = std::error::Error::source(&status);
        while let Some(c) = cause {
            transport |= c.is::<tonic::transport::Error>();
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        let why = if text.contains(crate::plaintext::TLS_REQUIRED) {
            Why::TlsRequired
        } else if let Some(reason) = text
            .split("invalid peer certificate: ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_alphanumeric()).next())
        {
            Why::Untrusted(untrusted(reason))
        } else if text.contains("InvalidContentType") {
            Why::NotTls
        } else if text.contains("HTTP/2 was not negotiated")
            || text.contains("frame with invalid size")
            || text.contains("grpc-status header missing")
        {
            Why::NotGrpc
        } else if transport {
            Why::Down
        } else {
            return Err(status);
        };
        Ok(Self {
            service: endpoint.service,
            url: endpoint.url.to_owned(),
            why,
            status,
        })
    }

    /// True when retrying later may succeed as it is.
    pub fn may_heal(&self) -> bool {
        self.why == Why::Down
    }

    fn explain(&self) -> String {
        let (service, url) = (self.service, &self.url);
        match &self.why {
            Why::Untrusted(reason) => format!(
                "the {service} at {url} presented a certificate this client does not trust: \
                 {reason}"
            ),
            Why::NotTls => format!(
                "the server at {url} does not speak TLS; the {service} URL should be the \
                 https:// address of its TLS listener (plain http:// only for a development \
                 {service} run with --insecure-dev)"
            ),
            Why::TlsRequired => format!(
                "the {service} at {url} speaks TLS only: its URL must start with https:// \
                 (and --ca name the CA that signed its certificate, if not a public one)"
            ),
            Why::NotGrpc => format!(
                "the server at {url} is not a {service} API over this scheme: if it serves \
                 TLS the URL must start with https://; otherwise check the host and port"
            ),
            Why::Down => {
                let cause = self.status.source().map_or_else(
                    || self.status.message().to_owned(),
                    |s| deepest(s).to_string(),
                );
                // A TLS server closes a plain-text connection at once, which looks like a
                // server going away.
                let scheme = if url.starts_with("http://") {
                    "; if it serves TLS, the URL must start with https://"
                } else {
                    ""
                };
                format!(
                    "cannot reach the {service} at {url}: {cause}; is it running? (locally \
                     `deploy/local/up` starts one){scheme}"
                )
            }
        }
    }
}

/// The last cause of an error chain: the one that says what happened.
fn deepest<'a>(
    mut e: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    while let Some(next) = e.source() {
        e = next;
    }
    e
}

/// rustls's name for a refused certificate, in words that say what to do.
fn untrusted(reason: &str) -> String {
    match reason {
        "UnknownIssuer" => "it is signed by a CA this client does not know; give the CA \
             certificate that signs it with --ca"
            .to_owned(),
        "BadSignature" => "its signature does not verify under the CA this client was given \
             (another CA of the same name?); give the CA certificate that signs it with --ca"
            .to_owned(),
        "NotValidForName" => "it does not name the host of the URL; use the host name its \
             certificate carries"
            .to_owned(),
        "Expired" => "it has expired; the API's operator must renew it".to_owned(),
        "NotValidYet" => "it is not valid yet; check the clocks of both machines".to_owned(),
        "Revoked" => "it is revoked".to_owned(),
        other => format!("{other}; check --ca and the URL's host name"),
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.clone(),
        cause: source,
    })
}

impl Endpoint<'_> {
    /// Opens a channel (connecting lazily: an API that is down is retried by each call).
    pub fn channel(&self) -> Result<Channel, ClientError> {
        let transport = |source| ClientError::Transport {
            service: self.service,
            url: self.url.to_owned(),
            cause: source,
        };
        let scheme = self
            .url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("https" | "http")) {
            return Err(ClientError::Url {
                service: self.service,
                url: self.url.to_owned(),
                message: format!(
                    "it must start with https:// (http:// only for a development {} run with \
                     --insecure-dev), as in https://{}",
                    self.service,
                    self.url
                        .split_once("://")
                        .map_or(self.url, |(_, rest)| rest)
                ),
            });
        }
        let mut endpoint = Channel::from_shared(self.url.to_owned())
            .map_err(|e| ClientError::Url {
                service: self.service,
                url: self.url.to_owned(),
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60));
        if scheme.as_deref() == Some("https") {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint<'static> {
        Endpoint {
            service: "gateway",
            url: "https://gateway.example:443",
            ca: None,
            identity: None,
            token_file: None,
        }
    }

    fn why(status: tonic::Status) -> Option<Why> {
        Unreached::of(&endpoint(), status).ok().map(|u| u.why)
    }

    #[test]
    fn a_wrong_ca_scheme_or_port_is_a_setting_to_fix() {
        let untrusted = Unreached::of(
            &endpoint(),
            tonic::Status::unavailable("invalid peer certificate: UnknownIssuer"),
        )
        .expect("not reached");
        assert!(!untrusted.may_heal());
        let text = untrusted.to_string();
        assert!(
            text.contains("https://gateway.example:443") && text.contains("--ca"),
            "{text}"
        );
        assert_eq!(
            why(tonic::Status::unavailable(
                "received corrupt message of type InvalidContentType"
            )),
            Some(Why::NotTls)
        );
        // The answer of a TLS port to plain text, as a call's status or in a GOAWAY.
        let told = crate::plaintext::TLS_REQUIRED;
        assert_eq!(
            why(tonic::Status::unauthenticated(told)),
            Some(Why::TlsRequired)
        );
        assert_eq!(
            why(tonic::Status::unavailable(format!(
                "connection error received: security properties do not meet minimum \
                 requirements (b\"{told}\")"
            ))),
            Some(Why::TlsRequired)
        );
        assert_eq!(
            why(tonic::Status::unavailable("HTTP/2 was not negotiated.")),
            Some(Why::NotGrpc)
        );
        assert_eq!(
            why(tonic::Status::unimplemented(
                "grpc-status header missing, mapped from HTTP status code 404"
            )),
            Some(Why::NotGrpc)
        );
    }

    #[test]
    fn a_url_without_its_scheme_says_how_to_write_it() {
        for url in [
            "localhost:50051",
            "grpc://gateway.example:443",
            "gateway.example",
        ] {
            let e = Endpoint { url, ..endpoint() }.channel().expect_err(url);
            let text = e.to_string();
            assert!(text.contains("must start with https://"), "{text}");
        }
        let e = Endpoint {
            url: "localhost:50051",
            ..endpoint()
        }
        .channel()
        .expect_err("no scheme");
        assert!(e.to_string().contains("https://localhost:50051"), "{e}");
    }

    #[test]
    fn every_refused_certificate_reason_says_what_to_do() {
        for reason in [
            "UnknownIssuer",
            "BadSignature",
            "NotValidForName",
            "Expired",
            "NotValidYet",
        ] {
            let said = untrusted(reason);
            assert!(!said.contains(reason), "{reason}: {said}");
        }
    }

    #[test]
    fn the_api_s_own_answer_is_given_back_as_it_came() {
        let answer = tonic::Status::unavailable("gateway shutting down; retry");
        let back = Unreached::of(&endpoint(), answer).expect_err("the API answered");
        assert_eq!(back.message(), "gateway shutting down; retry");
        assert!(why(tonic::Status::permission_denied("not yours")).is_none());
    }
}
