//! Connecting to PostgreSQL: over TLS with the server's certificate and host name verified
//! (libpq's `verify-full`), the password from a private file; plaintext only when asked for.

use std::path::PathBuf;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PgSslMode {
    /// TLS, the certificate chain checked against the CA and the host name against the
    /// certificate (libpq's `verify-full`).
    VerifyFull,
    /// No TLS: a development database on the same machine only.
    Disable,
}

/// Where the warehouse database is and how to reach it (`--pg-*`, env `LIENTHONG_PG_*`).
#[derive(Clone, clap::Args)]
pub struct PgSettings {
    /// PostgreSQL connection string (key=value or URL form). Keep the password out of it: use
    /// --pg-password-file or PGPASSWORD.
    #[arg(
        long = "pg-dsn",
        env = "LIENTHONG_PG_DSN",
        default_value = "postgres://lienthong@localhost:5432/lienthong"
    )]
    pub dsn: String,
    /// File holding the PostgreSQL password (a mounted Secret), used when the DSN has none.
    #[arg(long = "pg-password-file", env = "LIENTHONG_PG_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// TLS: verify-full (default) or disable (development only).
    #[arg(
        long = "pg-sslmode",
        env = "LIENTHONG_PG_SSLMODE",
        value_enum,
        default_value = "verify-full"
    )]
    pub ssl_mode: PgSslMode,
    /// CA bundle (PEM) that signs the server's certificate; the system's roots when omitted.
    #[arg(long = "pg-tls-ca", env = "LIENTHONG_PG_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("dsn", &redact(&self.dsn))
            .field("password_file", &self.password_file)
            .field("ssl_mode", &self.ssl_mode)
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub enum PgConnectError {
    /// The settings do not agree or cannot be used.
    #[error("PostgreSQL settings: {0}")]
    Config(String),
    /// The password file.
    #[error(transparent)]
    Secret(#[from] lienthong_runtime::SecretFileError),
    /// The TLS client could not be built from the CA file.
    #[error("PostgreSQL TLS with CA {ca}: {cause}; check --pg-tls-ca")]
    Tls {
        /// The CA file (or "system roots").
        ca: String,
        /// OpenSSL's reason.
        cause: openssl::error::ErrorStack,
    },
    /// The server refused or could not be reached.
    #[error(
        "PostgreSQL at {dsn}: {}; is it running and does it accept this role over TLS? locally run `deploy/local/up`, otherwise check --pg-dsn, --pg-password-file, --pg-tls-ca",
        reason(source)
    )]
    Postgres {
        /// DSN without password.
        dsn: String,
        /// Client error.
        source: tokio_postgres::Error,
    },
}

impl PgSettings {
    /// Verified TLS to `dsn`, nothing else set (tests and embedding).
    pub fn new(dsn: &str) -> Self {
        Self {
            dsn: dsn.into(),
            password_file: None,
            ssl_mode: PgSslMode::VerifyFull,
            tls_ca: None,
        }
    }

    /// The settings the environment gives (`LIENTHONG_PG_*`), defaults elsewhere.
    pub fn from_env() -> Result<Self, PgConnectError> {
        lienthong_runtime::settings_from_env::<Self>()
            .map_err(|e| PgConnectError::Config(format!("from the environment: {e}")))
    }

    /// The same settings for another database or server.
    pub fn with_dsn(&self, dsn: &str) -> Self {
        Self {
            dsn: dsn.into(),
            ..self.clone()
        }
    }

    /// The DSN with any password replaced, for messages and logs.
    pub fn redacted(&self) -> String {
        redact(&self.dsn)
    }

    fn config(&self) -> Result<tokio_postgres::Config, PgConnectError> {
        let mut pg: tokio_postgres::Config = self.dsn.parse().map_err(|e| {
            PgConnectError::Config(format!(
                "--pg-dsn {} is not a connection string: {e}",
                self.redacted()
            ))
        })?;
        if pg.get_password().is_none() {
            let password = match &self.password_file {
                Some(path) => Some(lienthong_runtime::read_secret(path, "PostgreSQL password")?),
                None => std::env::var("PGPASSWORD").ok(),
            };
            if let Some(p) = password.filter(|p| !p.is_empty()) {
                pg.password(p);
            }
        }
        Ok(pg)
    }

    fn tls(&self) -> Result<MakeTlsConnector, PgConnectError> {
        let ca = self
            .tls_ca
            .as_ref()
            .map_or_else(|| "system roots".to_owned(), |p| p.display().to_string());
        let tls_error = |source| PgConnectError::Tls {
            ca: ca.clone(),
            cause: source,
        };
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(tls_error)?;
        if let Some(path) = &self.tls_ca {
            if !path.is_file() {
                return Err(PgConnectError::Config(format!(
                    "--pg-tls-ca {} is not a readable file",
                    path.display()
                )));
            }
            builder.set_ca_file(path).map_err(tls_error)?;
        }
        // The connector checks the chain and, per connection, the host name (verify-full).
        builder.set_verify(SslVerifyMode::PEER);
        Ok(MakeTlsConnector::new(builder.build()))
    }

    /// Connects; the connection task ends when the client is dropped.
    pub async fn connect(&self) -> Result<Client, PgConnectError> {
        let mut pg = self.config()?;
        let failed = |source| PgConnectError::Postgres {
            dsn: self.redacted(),
            source,
        };
        let client = match self.ssl_mode {
            PgSslMode::VerifyFull => {
                if self.dsn.contains("sslmode=disable") {
                    return Err(PgConnectError::Config(
                        "the DSN says sslmode=disable but --pg-sslmode is verify-full; choose one"
                            .into(),
                    ));
                }
                pg.ssl_mode(SslMode::Require);
                let (client, connection) = pg.connect(self.tls()?).await.map_err(failed)?;
                spawn_connection(connection);
                client
            }
            PgSslMode::Disable => {
                tracing::warn!(dsn = %self.redacted(), "PostgreSQL without TLS (--pg-sslmode disable): development only");
                pg.ssl_mode(SslMode::Disable);
                let (client, connection) =
                    pg.connect(tokio_postgres::NoTls).await.map_err(failed)?;
                spawn_connection(connection);
                client
            }
        };
        Ok(client)
    }
}

/// The server's own message when there is one ("db error" alone says nothing), else the
/// client error with its causes.
pub fn reason(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn spawn_connection<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    // Owned by the client: it ends when the client is dropped or the server goes away.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
}

/// `postgres://user:secret@host` → `postgres://user:***@host`; key=value DSNs lose `password=`.
pub fn redact(dsn: &str) -> String {
    if !dsn.contains("://") {
        return dsn
            .split_whitespace()
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    match (dsn.find("://"), dsn.find('@')) {
        (Some(s), Some(at)) if dsn[s + 3..at].contains(':') => {
            let colon = s + 3 + dsn[s + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &dsn[..colon], &dsn[at..])
        }
        _ => dsn.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact("host=h user=u password=secret"),
            "host=h user=u password=***"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let mut s = PgSettings::new("postgres://u@localhost/db");
        s.tls_ca = Some("/nonexistent/ca.pem".into());
        let err = s.tls().err().expect("refused");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_world_readable_password_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temporary folder");
        let file = dir.path().join("pw");
        std::fs::write(&file, "pw").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut s = PgSettings::new("postgres://u@localhost/db");
        s.password_file = Some(file);
        let err = s.config().expect_err("refused");
        assert!(err.to_string().contains("readable by every user"), "{err}");
    }

    #[test]
    fn verified_tls_is_the_default() {
        use clap::Args;
        let command = PgSettings::augment_args(clap::Command::new("t"));
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "ssl_mode")
            .expect("the flag exists");
        assert_eq!(arg.get_default_values(), ["verify-full"]);
    }
}
