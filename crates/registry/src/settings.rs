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
        default_value = "http://127.0.0.1:8081/apis/ccompat/v7",
        global = true
    )]
    pub registry_url: String,
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
            registry_username: None,
            registry_password_file: None,
            registry_timeout_secs: 10,
        }
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
                let password = std::fs::read_to_string(file).map_err(|e| {
                    Error::Config(format!(
                        "cannot read registry password file {}: {e}",
                        file.display()
                    ))
                })?;
                Ok(Some((
                    user.clone(),
                    password.trim_end_matches(['\r', '\n']).to_owned(),
                )))
            }
            _ => Err(Error::Config(
                "registry basic auth needs both --registry-username and --registry-password-file"
                    .into(),
            )),
        }
    }
}
