//! Kafka connection settings (bootstrap, TLS, SASL) shared by every lienthong binary.
//!
//! Secrets come only from env or files and never appear in Debug output or logs.

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::error::{Error, Result};

/// How often every client refreshes its topic metadata, in ms.
const METADATA_REFRESH_MS: &str = "30000";
/// How long the start-up probe waits for metadata before it looks at what librdkafka reported.
const PROBE_STEP: Duration = Duration::from_secs(1);
/// Most queued client events the probe reads between two metadata calls.
const PROBE_EVENTS_PER_STEP: usize = 64;

/// How the client talks to the brokers (librdkafka `security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityProtocol {
    /// No TLS, no authentication: local development only.
    Plaintext,
    /// TLS, optionally with a client certificate.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }
    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// Connection flags common to every binary (`--kafka-*`, env `LIENTHONG_KAFKA_*`).
#[derive(Clone, clap::Args)]
pub struct KafkaArgs {
    /// Comma-separated bootstrap servers.
    #[arg(
        long = "kafka-bootstrap",
        env = "LIENTHONG_KAFKA_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
    /// Security protocol; plaintext only as an explicit choice on a development machine.
    #[arg(
        long = "kafka-security-protocol",
        env = "LIENTHONG_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        default_value = "sasl-ssl",
        global = true
    )]
    pub security_protocol: SecurityProtocol,
    /// CA bundle (PEM) that signs the brokers' certificates.
    #[arg(long = "kafka-tls-ca", env = "LIENTHONG_KAFKA_TLS_CA", global = true)]
    pub kafka_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(
        long = "kafka-tls-cert",
        env = "LIENTHONG_KAFKA_TLS_CERT",
        global = true
    )]
    pub kafka_tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long = "kafka-tls-key", env = "LIENTHONG_KAFKA_TLS_KEY", global = true)]
    pub kafka_tls_key: Option<PathBuf>,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "LIENTHONG_KAFKA_SASL_MECHANISM",
        default_value = "SCRAM-SHA-512",
        global = true
    )]
    pub sasl_mechanism: String,
    /// SASL user name.
    #[arg(
        long = "kafka-sasl-username",
        env = "LIENTHONG_KAFKA_SASL_USERNAME",
        global = true
    )]
    pub sasl_username: Option<String>,
    /// SASL password from the environment (LIENTHONG_KAFKA_SASL_PASSWORD) only: a command line
    /// is visible to every user in `ps`. Prefer --kafka-sasl-password-file.
    #[arg(skip = std::env::var("LIENTHONG_KAFKA_SASL_PASSWORD").ok().filter(|p| !p.is_empty()))]
    pub sasl_password: Option<String>,
    /// File holding the SASL password (e.g. a mounted Kubernetes Secret).
    #[arg(
        long = "kafka-sasl-password-file",
        env = "LIENTHONG_KAFKA_SASL_PASSWORD_FILE",
        global = true
    )]
    pub sasl_password_file: Option<PathBuf>,
    /// How long a command waits for the cluster before giving up, in seconds.
    #[arg(
        long = "kafka-timeout-secs",
        env = "LIENTHONG_KAFKA_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub timeout_secs: u64,
}

impl fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaArgs")
            .field("bootstrap", &self.bootstrap)
            .field("security_protocol", &self.security_protocol)
            .field("kafka_tls_ca", &self.kafka_tls_ca)
            .field("kafka_tls_cert", &self.kafka_tls_cert)
            .field("kafka_tls_key", &self.kafka_tls_key)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<redacted>"),
            )
            .field("sasl_password_file", &self.sasl_password_file)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl Default for KafkaArgs {
    fn default() -> Self {
        Self::local("127.0.0.1:9092")
    }
}

impl KafkaArgs {
    /// Plain-text settings for a broker on `bootstrap` (development and tests).
    pub fn local(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            security_protocol: SecurityProtocol::Plaintext,
            kafka_tls_ca: None,
            kafka_tls_cert: None,
            kafka_tls_key: None,
            sasl_mechanism: "SCRAM-SHA-512".into(),
            sasl_username: None,
            sasl_password: None,
            sasl_password_file: None,
            timeout_secs: 10,
        }
    }

    /// The settings the environment gives (`LIENTHONG_KAFKA_*`), defaults elsewhere.
    pub fn from_env() -> Result<Self> {
        lienthong_runtime::settings_from_env::<Self>()
            .map_err(|e| Error::Config(format!("Kafka settings from the environment: {e}")))
    }

    /// How long to wait for the cluster.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// A librdkafka config with bootstrap, TLS and SASL set, after checking the settings agree.
    pub fn client_config(&self) -> Result<ClientConfig> {
        let mut cfg = ClientConfig::new();
        if self.bootstrap.trim().is_empty() {
            return Err(Error::Config(
                "--kafka-bootstrap is empty; give host:port of at least one broker".into(),
            ));
        }
        cfg.set("bootstrap.servers", &self.bootstrap)
            .set("security.protocol", self.security_protocol.as_librdkafka())
            .set("client.id", "lienthong")
            // Fail fast instead of the 60 s default when a broker is gone.
            .set("socket.connection.setup.timeout.ms", "5000")
            // Partitions added to a topic are seen within 30 s (the default, 5 min, would
            // leave what producers write to them unread by consumer groups that long).
            .set("topic.metadata.refresh.interval.ms", METADATA_REFRESH_MS);
        let tls_files = [
            ("--kafka-tls-ca", &self.kafka_tls_ca),
            ("--kafka-tls-cert", &self.kafka_tls_cert),
            ("--kafka-tls-key", &self.kafka_tls_key),
        ];
        if !self.security_protocol.uses_tls()
            && let Some((flag, _)) = tls_files.iter().find(|(_, v)| v.is_some())
        {
            return Err(Error::Config(format!(
                "{flag} is set but --kafka-security-protocol is {:?}; use ssl or sasl-ssl",
                self.security_protocol
            )));
        }
        for (flag, path) in tls_files {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(Error::Config(format!(
                    "{flag} {} is not a readable file",
                    path.display()
                )));
            }
        }
        if self.kafka_tls_cert.is_some() != self.kafka_tls_key.is_some() {
            return Err(Error::Config(
                "mutual TLS needs both --kafka-tls-cert and --kafka-tls-key".into(),
            ));
        }
        if let Some(ca) = &self.kafka_tls_ca {
            cfg.set("ssl.ca.location", ca.display().to_string());
        }
        if let (Some(cert), Some(key)) = (&self.kafka_tls_cert, &self.kafka_tls_key) {
            cfg.set("ssl.certificate.location", cert.display().to_string());
            cfg.set("ssl.key.location", key.display().to_string());
        }
        if self.security_protocol.uses_sasl() {
            let user = self.sasl_username.as_deref().ok_or_else(|| {
                Error::Config(
                    "SASL needs --kafka-sasl-username (LIENTHONG_KAFKA_SASL_USERNAME)".into(),
                )
            })?;
            let password = self.sasl_password()?;
            cfg.set("sasl.mechanism", &self.sasl_mechanism)
                .set("sasl.username", user)
                .set("sasl.password", password);
        } else if self.sasl_username.is_some() {
            return Err(Error::Config(
                "--kafka-sasl-username is set but the security protocol has no SASL; use sasl-ssl"
                    .into(),
            ));
        }
        Ok(cfg)
    }

    fn sasl_password(&self) -> Result<String> {
        match (&self.sasl_password, &self.sasl_password_file) {
            (Some(_), Some(_)) => Err(Error::Config(
                "give the SASL password either in LIENTHONG_KAFKA_SASL_PASSWORD or in a file, not both".into(),
            )),
            (Some(p), None) => Ok(p.clone()),
            (None, Some(path)) => lienthong_runtime::read_secret(path, "SASL password")
                .map_err(|e| Error::Config(e.to_string())),
            (None, None) => Err(Error::Config(
                "SASL needs a password: set LIENTHONG_KAFKA_SASL_PASSWORD or --kafka-sasl-password-file".into(),
            )),
        }
    }

    /// Checks within the timeout that the cluster answers; the error names the address. The
    /// wait is librdkafka's own and blocks, so it runs on a blocking thread, never on one of
    /// the runtime's workers.
    pub async fn probe(&self) -> Result<()> {
        let args = self.clone();
        tokio::task::spawn_blocking(move || args.probe_blocking())
            .await
            .map_err(|e| {
                Error::Config(format!("the check that Kafka answers did not finish: {e}"))
            })?
    }

    /// As `probe`, waiting on the calling thread: for callers outside an async runtime.
    pub fn probe_blocking(&self) -> Result<()> {
        let consumer: BaseConsumer<RemembersRefusal> = self
            .client_config()?
            .create_with_context(RemembersRefusal::default())
            .map_err(Error::Client)?;
        let deadline = Instant::now() + self.timeout();
        loop {
            let step = deadline
                .saturating_duration_since(Instant::now())
                .min(PROBE_STEP);
            let source = match consumer.fetch_metadata(None, step) {
                Ok(_) => return Ok(()),
                Err(source) => source,
            };
            // librdkafka hands its error reports (a refused login, a failed handshake) to
            // the client only when it is polled; a metadata call alone never sees them.
            for _ in 0..PROBE_EVENTS_PER_STEP {
                if consumer.poll(Duration::ZERO).is_none() {
                    break;
                }
            }
            if let Some(refusal) = consumer.context().refusal() {
                return Err(self.refused(refusal));
            }
            if Instant::now() >= deadline {
                return Err(Error::Unreachable {
                    bootstrap: self.bootstrap.clone(),
                    timeout: self.timeout(),
                    source,
                });
            }
        }
    }

    /// The error for a broker that answered but refused this client, saying which setting
    /// to check.
    fn refused(&self, refusal: Refusal) -> Error {
        let hint = match refusal.kind {
            RefusalKind::Authentication => format!(
                "the broker refused the credentials of user `{}` ({}): check \
                 --kafka-sasl-username and the password (--kafka-sasl-password-file), and \
                 that the user exists on the cluster",
                self.sasl_username.as_deref().unwrap_or("(none)"),
                self.sasl_mechanism
            ),
            RefusalKind::Tls => "the TLS handshake failed: check that --kafka-tls-ca holds the \
                 CA that signs the brokers' certificates, that --kafka-bootstrap names a TLS \
                 listener by a name its certificate carries, and the client certificate if \
                 the listener asks for one"
                .to_owned(),
        };
        Error::Refused {
            bootstrap: self.bootstrap.clone(),
            hint,
            reason: refusal.reason,
        }
    }
}

/// Why a broker that answered would not serve this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefusalKind {
    /// SASL authentication failed.
    Authentication,
    /// The TLS handshake failed.
    Tls,
}

/// A refusal and librdkafka's words for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    kind: RefusalKind,
    reason: String,
}

impl Refusal {
    /// The refusal a log line of librdkafka tells, if it tells one.
    fn in_log(message: &str) -> Option<Self> {
        let kind = if message.contains("SASL authentication error")
            || message.contains("Authentication failed")
        {
            RefusalKind::Authentication
        } else if message.contains("SSL handshake failed") {
            RefusalKind::Tls
        } else {
            return None;
        };
        Some(Self {
            kind,
            reason: message.to_owned(),
        })
    }

    /// The refusal an error callback reports, None for errors that are not one (a broker
    /// down, a timeout): those leave the cause at "unreachable".
    fn of(error: &KafkaError, reason: &str) -> Option<Self> {
        let kind = match error.rdkafka_error_code()? {
            RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::IllegalSASLState
            | RDKafkaErrorCode::UnsupportedSASLMechanism => RefusalKind::Authentication,
            RDKafkaErrorCode::SSL => RefusalKind::Tls,
            _ => return None,
        };
        Some(Self {
            kind,
            reason: reason.to_owned(),
        })
    }
}

/// Client context of the start-up probe: keeps the last refusal librdkafka reported, which
/// its metadata call alone would only call a transport failure.
#[derive(Default)]
struct RemembersRefusal {
    last: Mutex<Option<Refusal>>,
}

impl RemembersRefusal {
    fn refusal(&self) -> Option<Refusal> {
        self.last.lock().map(|last| last.clone()).unwrap_or(None)
    }
}

impl ClientContext for RemembersRefusal {
    fn error(&self, error: KafkaError, reason: &str) {
        match Refusal::of(&error, reason) {
            Some(refusal) => {
                if let Ok(mut last) = self.last.lock() {
                    *last = Some(refusal);
                }
            }
            None => tracing::debug!(%error, reason, "Kafka client error while probing"),
        }
    }

    // The error callback may come only after several failed attempts; the log line of the
    // first one says the same at once.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if let Some(refusal) = Refusal::in_log(log_message)
            && let Ok(mut last) = self.last.lock()
        {
            *last = Some(refusal);
        }
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            tracing::warn!(target: "librdkafka", "librdkafka: {fac} {log_message}");
        } else {
            tracing::debug!(target: "librdkafka", "librdkafka: {fac} {log_message}");
        }
    }
}

impl ConsumerContext for RemembersRefusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_password() {
        let mut args = KafkaArgs::local("b:9092");
        args.sasl_password = Some("hunter2-secret".into());
        let shown = format!("{args:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn sasl_without_password_is_a_clear_error() {
        let mut args = KafkaArgs::local("b:9092");
        args.security_protocol = SecurityProtocol::SaslSsl;
        args.sasl_username = Some("facility".into());
        let err = args.client_config().expect_err("must fail");
        assert!(err.to_string().contains("SASL needs a password"), "{err}");
    }

    #[test]
    fn tls_files_on_plaintext_are_rejected() {
        let mut args = KafkaArgs::local("b:9092");
        args.kafka_tls_ca = Some("/nonexistent/ca.pem".into());
        let err = args.client_config().expect_err("must fail");
        assert!(err.to_string().contains("--kafka-tls-ca"), "{err}");
    }

    #[test]
    fn sasl_password_comes_from_a_file() {
        let dir = std::env::temp_dir().join(format!("lt-sasl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").expect("write");
        set_mode(&file, 0o600);
        let mut args = KafkaArgs::local("b:9092");
        args.security_protocol = SecurityProtocol::SaslPlaintext;
        args.sasl_username = Some("u".into());
        args.sasl_password_file = Some(file);
        let cfg = args.client_config().expect("valid");
        assert_eq!(cfg.get("sasl.password"), Some("from-file"));
        assert_eq!(cfg.get("security.protocol"), Some("sasl_plaintext"));
    }

    fn set_mode(file: &std::path::Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn a_sasl_password_file_every_user_can_read_is_refused() {
        let dir = std::env::temp_dir().join(format!("lt-sasl-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").expect("write");
        set_mode(&file, 0o644);
        let mut args = KafkaArgs::local("b:9092");
        args.security_protocol = SecurityProtocol::SaslSsl;
        args.sasl_username = Some("u".into());
        args.sasl_password_file = Some(file);
        let err = args.client_config().expect_err("refused");
        assert!(err.to_string().contains("readable by every user"), "{err}");
    }

    #[test]
    fn the_sasl_password_is_no_command_line_flag() {
        use clap::Args;
        let command = KafkaArgs::augment_args(clap::Command::new("t"));
        assert!(
            command
                .get_arguments()
                .all(|a| a.get_long() != Some("kafka-sasl-password")),
            "a password on the command line is visible in ps"
        );
    }

    #[test]
    fn the_default_protocol_is_sasl_over_tls() {
        use clap::Args;
        let command = KafkaArgs::augment_args(clap::Command::new("t"));
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "security_protocol")
            .expect("the flag exists");
        assert_eq!(arg.get_default_values(), ["sasl-ssl"]);
    }

    #[test]
    fn credentials_and_tls_failures_are_refusals_and_a_dead_broker_is_not() {
        let refusal = |code| Refusal::of(&KafkaError::Global(code), "why").map(|r| r.kind);
        assert_eq!(
            refusal(RDKafkaErrorCode::Authentication),
            Some(RefusalKind::Authentication)
        );
        assert_eq!(refusal(RDKafkaErrorCode::SSL), Some(RefusalKind::Tls));
        assert_eq!(refusal(RDKafkaErrorCode::BrokerTransportFailure), None);
        assert_eq!(refusal(RDKafkaErrorCode::AllBrokersDown), None);
        let logged = |line: &str| Refusal::in_log(line).map(|r| r.kind);
        assert_eq!(
            logged(
                "sasl_ssl://b:9092/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials"
            ),
            Some(RefusalKind::Authentication)
        );
        assert_eq!(
            logged("sasl_ssl://b:9092/bootstrap: SSL handshake failed: certificate verify failed"),
            Some(RefusalKind::Tls)
        );
        assert_eq!(
            logged(
                "sasl_ssl://b:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused"
            ),
            None
        );
    }

    #[test]
    fn a_refusal_names_the_user_and_the_flags_to_check() {
        let mut args = KafkaArgs::local("broker-1:9093");
        args.sasl_username = Some("gateway".into());
        let text = args
            .refused(Refusal {
                kind: RefusalKind::Authentication,
                reason: "SASL authentication error: invalid credentials".into(),
            })
            .to_string();
        for part in [
            "broker-1:9093",
            "user `gateway`",
            "--kafka-sasl-password-file",
            "invalid credentials",
        ] {
            assert!(text.contains(part), "{part} missing from: {text}");
        }
        assert!(!text.contains("is the broker running"), "{text}");
        let text = args
            .refused(Refusal {
                kind: RefusalKind::Tls,
                reason: "certificate verify failed".into(),
            })
            .to_string();
        assert!(
            text.contains("--kafka-tls-ca") && text.contains("certificate verify failed"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn unreachable_broker_fails_in_bounded_time_naming_the_address() {
        // Port 1 on loopback: nothing listens, connection refused.
        let mut args = KafkaArgs::local("127.0.0.1:1");
        args.timeout_secs = 2;
        let started = std::time::Instant::now();
        let err = args.probe().await.expect_err("nothing listens there");
        assert!(started.elapsed() < Duration::from_secs(10));
        let text = err.to_string();
        assert!(
            text.contains("127.0.0.1:1") && text.contains("deploy/local/up"),
            "{text}"
        );
    }
}
