//! Registry connection flags shared by every binary (`--registry-*`, env `LIENTHONG_REGISTRY_*`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Where the Confluent-compatible registry API is.
#[derive(Clone, clap::Args)]
pub struct RegistryArgs {
    /// Base URL of the Confluent-compatible API (Apicurio: `<host>/apis/ccompat/v7`).
    #[arg(
        long = "registry-url",
        env = "LIENTHONG_REGISTRY_URL",
        default_value = "https://localhost:8081/apis/ccompat/v7",
        global = true
    )]
    pub registry_url: String,
    /// CA bundle (PEM) that signs the registry's certificate; when given, only it is trusted.
    #[arg(
        long = "registry-tls-ca",
        env = "LIENTHONG_REGISTRY_TLS_CA",
        global = true
    )]
    pub registry_tls_ca: Option<PathBuf>,
    /// User for HTTP basic authentication, if the registry needs one.
    #[arg(
        long = "registry-username",
        env = "LIENTHONG_REGISTRY_USERNAME",
        global = true
    )]
    pub registry_username: Option<String>,
    /// File holding the registry password (e.g. a mounted Kubernetes Secret).
    #[arg(
        long = "registry-password-file",
        env = "LIENTHONG_REGISTRY_PASSWORD_FILE",
        global = true
    )]
    pub registry_password_file: Option<PathBuf>,
    /// Timeout of each registry call, in seconds.
    #[arg(
        long = "registry-timeout-secs",
        env = "LIENTHONG_REGISTRY_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub registry_timeout_secs: u64,
}

impl fmt::Debug for RegistryArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryArgs")
            .field("registry_url", &self.registry_url)
            .field("registry_tls_ca", &self.registry_tls_ca)
            .field("registry_username", &self.registry_username)
            .field("registry_password_file", &self.registry_password_file)
            .field("registry_timeout_secs", &self.registry_timeout_secs)
            .finish()
    }
}

impl RegistryArgs {
    /// Settings for a registry at `url` without authentication.
    pub fn local(url: impl Into<String>) -> Self {
        Self {
            registry_url: url.into(),
            registry_tls_ca: None,
            registry_username: None,
            registry_password_file: None,
            registry_timeout_secs: 10,
        }
    }

    /// The settings the environment gives (`LIENTHONG_REGISTRY_*`), defaults elsewhere.
    pub fn from_env() -> Result<Self> {
        lienthong_runtime::settings_from_env::<Self>()
            .map_err(|e| Error::Config(format!("registry settings from the environment: {e}")))
    }

    /// An HTTP client builder with the timeout and, when configured, the private CA as the
    /// only trusted root.
    pub fn http_client_builder(&self) -> Result<reqwest::ClientBuilder> {
        let mut builder = reqwest::Client::builder().timeout(self.timeout());
        if let Some(path) = &self.registry_tls_ca {
            if !self.registry_url.trim().starts_with("https://") {
                return Err(Error::Config(format!(
                    "--registry-tls-ca is set but --registry-url {} is not https://",
                    self.registry_url
                )));
            }
            let pem = std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "cannot read --registry-tls-ca {}: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Config(format!(
                    "--registry-tls-ca {} holds no PEM certificate: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "--registry-tls-ca {} holds no PEM certificate",
                    path.display()
                )));
            }
            builder = builder.tls_certs_only(certs);
        }
        Ok(builder)
    }

    /// The base URL without a trailing slash.
    pub fn base(&self) -> Result<String> {
        let url = self.registry_url.trim().trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "--registry-url {url:?} must start with http:// or https://"
            )));
        }
        Ok(url.to_owned())
    }

    /// Timeout of each call.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.registry_timeout_secs.max(1))
    }

    /// Basic-auth credentials, read from the password file.
    pub fn credentials(&self) -> Result<Option<(String, String)>> {
        match (&self.registry_username, &self.registry_password_file) {
            (None, None) => Ok(None),
            (Some(user), Some(file)) => {
                let password = lienthong_runtime::read_secret(file, "registry password")
                    .map_err(|e| Error::Config(e.to_string()))?;
                Ok(Some((user.clone(), password)))
            }
            _ => Err(Error::Config(
                "registry basic auth needs both --registry-username and --registry-password-file"
                    .into(),
            )),
        }
    }
}
