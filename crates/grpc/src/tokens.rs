//! Bearer tokens: what they claim, how an operator issues one, and the key file that signs and
//! checks them.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lienthong_core::FacilityCode;
use serde::{Deserialize, Serialize};

/// Shortest accepted HS256 secret: RFC 7518 §3.2 asks for a key at least as long as the hash.
pub const MIN_SECRET_BYTES: usize = 32;

/// Bearer-token claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Facility code of the caller.
    pub sub: String,
    /// Audience: the deployment of the service the token is for.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// The individual acting for the facility (practitioner licence number or user id), when
    /// the token names one; written to the access audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<String>,
}

/// Why a token could not be issued or its key read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The key file is readable by every user.
    #[error(transparent)]
    Secret(#[from] lienthong_runtime::SecretFileError),
    /// The subject is not a facility code.
    #[error("cannot issue a token for {facility:?}: {reason}")]
    Subject {
        /// As given.
        facility: String,
        /// Why it is not a facility code.
        reason: String,
    },
    /// The key file could not be read.
    #[error("cannot read token key file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The key is too short to sign with.
    #[error(
        "the token key in {path} has {len} bytes; it must have at least {MIN_SECRET_BYTES} (`lienthong keys` makes one)"
    )]
    Short {
        /// File.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs a bearer token for `facility`, valid for `ttl_secs` (operators issue these).
pub fn issue_token(
    secret: &[u8],
    audience: &str,
    facility: &str,
    ttl_secs: u64,
) -> Result<String, TokenError> {
    FacilityCode::parse(facility).map_err(|e| TokenError::Subject {
        facility: facility.to_owned(),
        reason: e.to_string(),
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        sub: facility.trim().to_owned(),
        aud: audience.to_owned(),
        exp: now + ttl_secs,
        iat: now,
        act: None,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )?)
}

/// Reads the HS256 token secret from a file (surrounding whitespace ignored).
pub fn read_token_secret(path: &Path) -> Result<Vec<u8>, TokenError> {
    lienthong_runtime::check_private(path, "token signing key")?;
    let bytes = std::fs::read(path).map_err(|source| TokenError::Read {
        path: path.to_owned(),
        source,
    })?;
    let secret = bytes.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(TokenError::Short {
            path: path.to_owned(),
            len: secret.len(),
        });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signing_key_every_user_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lt-token-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("token.key");
        std::fs::write(&file, "k".repeat(64)).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_token_secret(&file).expect_err("refused");
        assert!(err.to_string().contains("readable by every user"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            read_token_secret(&file).expect("private key is read").len(),
            64
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_token_names_a_facility_and_a_short_key_is_refused() {
        assert!(matches!(
            issue_token(&[7; 32], "a", "not a code", 60),
            Err(TokenError::Subject { .. })
        ));
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lt-token-{}", std::process::id()));
        std::fs::write(&dir, b"short\n").expect("write");
        // Private whatever the umask: this test is about the length.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = read_token_secret(&dir).expect_err("short");
        assert!(err.to_string().contains("at least 32"), "{err}");
        std::fs::write(&dir, [b'k'; 40]).expect("write");
        assert_eq!(read_token_secret(&dir).expect("long enough").len(), 40);
        let _ = std::fs::remove_file(&dir);
    }
}
