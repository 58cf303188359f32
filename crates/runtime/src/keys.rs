//! Loading the pseudonym key at start-up (env or file; never the repository).

use std::path::PathBuf;

use lienthong_core::{PatientKeyer, PseudonymError};

/// Where the pseudonym key comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct PseudonymKeyArgs {
    /// File holding `<key-id>:<hex secret>` (or set LIENTHONG_PSEUDONYM_KEY).
    #[arg(long = "pseudonym-key-file", env = "LIENTHONG_PSEUDONYM_KEY_FILE")]
    pub file: Option<PathBuf>,
}

/// Why the key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Both sources set.
    #[error("both LIENTHONG_PSEUDONYM_KEY and a pseudonym key file are set; keep one")]
    Ambiguous,
    /// File unreadable.
    #[error("cannot read pseudonym key file {path}: {cause}")]
    Read {
        /// File.
        path: PathBuf,
        /// I/O error.
        cause: std::io::Error,
    },
    /// The key file is readable by every user.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretFileError),
    /// Missing or malformed key.
    #[error(transparent)]
    Invalid(#[from] PseudonymError),
}

impl PseudonymKeyArgs {
    /// Loads the key from LIENTHONG_PSEUDONYM_KEY or the key file; a clear error if neither.
    pub fn load(&self) -> Result<PatientKeyer, KeyError> {
        let env = std::env::var("LIENTHONG_PSEUDONYM_KEY")
            .ok()
            .filter(|v| !v.trim().is_empty());
        let text = match (env, &self.file) {
            (Some(_), Some(_)) => return Err(KeyError::Ambiguous),
            (Some(v), None) => v,
            (None, Some(path)) => {
                crate::secrets::check_private(path, "pseudonym key")?;
                std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: path.clone(),
                    cause: source,
                })?
            }
            (None, None) => String::new(),
        };
        Ok(PatientKeyer::parse(&text)?)
    }
}
