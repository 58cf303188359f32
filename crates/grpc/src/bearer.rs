//! The bearer token a long-running client sends, from a file it re-reads when the file
//! changes: tokens live at most a month by default, and a facility renews its token by
//! replacing the file, without restarting anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;

use crate::client::ClientError;
use crate::watched::WatchedFile;

/// A token as read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerToken {
    /// The token, as sent.
    pub text: String,
    /// Its `exp` claim (unix seconds), read without verifying the token: only to warn before
    /// it expires. None when the token carries none or is no JWT.
    pub expires_at: Option<u64>,
}

impl BearerToken {
    /// Reads a token from the text of its file.
    pub fn parse(text: &str) -> Self {
        let text = text.trim().to_owned();
        Self {
            expires_at: expiry(&text),
            text,
        }
    }

    /// Seconds left before it expires at `now` (negative once expired).
    pub fn expires_in(&self, now: u64) -> Option<i64> {
        self.expires_at
            .map(|at| i64::try_from(at).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(0))
    }
}

/// The `exp` claim of a JWT's payload, unverified.
fn expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

/// A token file, re-read within seconds of a change. A replacement that is readable by
/// every user or cannot be read is not used: the token read before stays, and the error is
/// logged.
pub struct TokenFile {
    path: PathBuf,
    file: WatchedFile<BearerToken, ClientError>,
}

impl TokenFile {
    /// Reads `path`, refusing a file every user may read.
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        lienthong_runtime::check_private(path, "bearer token")?;
        let file = WatchedFile::open(
            path,
            "bearer token",
            Box::new(|bytes: &[u8], path: &Path| {
                lienthong_runtime::check_private(path, "bearer token")?;
                Ok(BearerToken::parse(&String::from_utf8_lossy(bytes)))
            }),
            |source| ClientError::Read {
                path: path.to_owned(),
                cause: source,
            },
        )?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// The token to send now.
    pub fn current(&self) -> Arc<BearerToken> {
        self.file.current()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let part = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", part(r#"{"alg":"EdDSA"}"#), part(claims))
    }

    #[test]
    fn the_expiry_is_read_from_the_claims() {
        let token = BearerToken::parse(&format!("{}\n", jwt(r#"{"sub":"79025","exp":1000}"#)));
        assert_eq!(token.expires_at, Some(1000));
        assert_eq!(token.expires_in(400), Some(600));
        assert_eq!(token.expires_in(1600), Some(-600));
        assert!(!token.text.ends_with('\n'));
    }

    #[test]
    fn a_token_without_an_expiry_or_no_jwt_has_none() {
        assert_eq!(
            BearerToken::parse(&jwt(r#"{"sub":"79025"}"#)).expires_at,
            None
        );
        assert_eq!(BearerToken::parse("opaque-token").expires_at, None);
        assert_eq!(BearerToken::parse("a.%%%.c").expires_at, None);
    }

    #[test]
    fn a_token_file_every_user_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        std::fs::write(&path, jwt(r#"{"exp":1}"#)).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = TokenFile::open(&path).err().expect("refused");
        assert!(err.to_string().contains("readable by every user"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            TokenFile::open(&path)
                .expect("private")
                .current()
                .expires_at,
            Some(1)
        );
    }
}
