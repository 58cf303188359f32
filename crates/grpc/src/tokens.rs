//! Bearer tokens: what they claim, how an issuer signs one, and the key set every verifier
//! holds. Tokens are EdDSA (Ed25519) JWTs: an issuer signs with its private key, and the
//! gateway and the stores hold only public keys, in a JWK set file with one key per key id
//! (several during a rotation), reloaded when the file changes.
//!
//! Claims: `sub` the facility, `aud` the services the token is for (one or several),
//! `scope` what it may do (`publish`, `read`, `acknowledge`, space-separated), `act` the
//! individual acting (required with `read`), `jti` its id (for revocation), `iat` and `exp`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use lienthong_core::FacilityCode;
use serde::{Deserialize, Serialize};

use crate::watched::WatchedFile;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Publish events at the gateway.
    Publish,
    /// Read patient data and the facility's lists at a regional store.
    Read,
    /// Acknowledge referrals at a regional store.
    Acknowledge,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Publish, Scope::Read, Scope::Acknowledge];

    /// Its name in the `scope` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Read => "read",
            Scope::Acknowledge => "acknowledge",
        }
    }

    /// The scope a name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Bearer-token claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Facility code of the caller.
    pub sub: String,
    /// Audiences: the services the token is for (a single string is read as one).
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Token id, for revocation.
    pub jti: String,
    /// Scopes, space-separated.
    pub scope: String,
    /// The individual acting for the facility (practitioner licence number or user id);
    /// required with the `read` scope, written to the access audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(a) => a,
    })
}

/// Why a token could not be issued, or a key or key set read.
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
    /// What was asked cannot make a valid token.
    #[error("cannot issue this token: {0}")]
    Request(String),
    /// A key file could not be read or written.
    #[error("cannot use key file {path}: {cause}")]
    Io {
        /// File.
        path: PathBuf,
        /// I/O error.
        cause: std::io::Error,
    },
    /// A key or key set is not what it should be.
    #[error("{path}: {reason}")]
    Key {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

// The cause is in the message, not a source: a chain of causes names it once.
impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        Self::Sign(e)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a token should say.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The facility.
    pub facility: String,
    /// The services it is for.
    pub audiences: Vec<String>,
    /// What it allows.
    pub scopes: Vec<Scope>,
    /// The individual acting (required with `read`).
    pub individual: Option<String>,
    /// Lifetime.
    pub ttl_secs: u64,
}

/// An issuer's signing key: Ed25519, PKCS#8 PEM, with the key id verifiers know it by.
pub struct TokenSigner {
    key_id: String,
    key: EncodingKey,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// The signer of a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem(pem: &[u8], key_id: &str) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self {
            key_id: key_id.to_owned(),
            key: EncodingKey::from_ed_pem(pem)?,
        })
    }

    /// Reads a private key file (refused when every user may read it).
    pub fn from_file(path: &Path, key_id: &str) -> Result<Self, TokenError> {
        lienthong_runtime::check_private(path, "token signing key")?;
        let pem = std::fs::read(path).map_err(|source| TokenError::Io {
            path: path.to_owned(),
            cause: source,
        })?;
        Self::from_pem(&pem, key_id).map_err(|e| TokenError::Key {
            path: path.to_owned(),
            reason: format!("not an Ed25519 private key in PKCS#8 PEM ({e}); `lienthong tokens keygen` makes one"),
        })
    }

    /// Signs a token.
    pub fn issue(&self, request: &TokenRequest) -> Result<String, TokenError> {
        let facility = FacilityCode::parse(&request.facility).map_err(|e| TokenError::Subject {
            facility: request.facility.clone(),
            reason: e.to_string(),
        })?;
        if request.audiences.iter().all(|a| a.trim().is_empty()) {
            return Err(TokenError::Request(
                "name at least one audience (--audience)".into(),
            ));
        }
        if request.scopes.is_empty() {
            return Err(TokenError::Request(
                "name at least one scope (--scope publish|read|acknowledge)".into(),
            ));
        }
        let individual = request
            .individual
            .as_deref()
            .map(str::trim)
            .filter(|i| !i.is_empty());
        if request.scopes.contains(&Scope::Read) && individual.is_none() {
            return Err(TokenError::Request(
                "a token with the read scope names the individual acting (--individual: practitioner licence number or user id)".into(),
            ));
        }
        if let Some(i) = individual
            && (i.len() > 128 || i.chars().any(char::is_control))
        {
            return Err(TokenError::Request(
                "the individual must be at most 128 printable characters".into(),
            ));
        }
        let now = now_secs();
        let mut scopes = request.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let claims = Claims {
            sub: facility.to_string(),
            aud: request
                .audiences
                .iter()
                .map(|a| a.trim().to_owned())
                .collect(),
            exp: now + request.ttl_secs,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            act: individual.map(str::to_owned),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key_id.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

/// A new Ed25519 signing key: (PKCS#8 PEM of the private key, the public key's JWK).
pub fn generate_signing_key(key_id: &str) -> Result<(String, serde_json::Value), TokenError> {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    let failed =
        |what: &str| TokenError::Request(format!("cannot generate an Ed25519 key: {what}"));
    let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&aws_lc_rs::rand::SystemRandom::new())
        .map_err(|_| failed("key generation failed"))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| failed(&e.to_string()))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let jwk = serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "use": "sig",
        "kid": key_id,
        "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
    });
    Ok((pem, jwk))
}

/// The public keys of a JWK set, by key id. Only Ed25519 keys are taken; any other key is
/// an error naming it, so a mistaken file is noticed at once.
pub fn parse_key_set(text: &str, path: &Path) -> Result<HashMap<String, DecodingKey>, TokenError> {
    let bad = |reason: String| TokenError::Key {
        path: path.to_owned(),
        reason,
    };
    let set: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| bad(format!("not a JWK set (JSON with \"keys\"): {e}")))?;
    let keys = set["keys"]
        .as_array()
        .ok_or_else(|| bad("not a JWK set: no \"keys\" array".into()))?;
    let mut out = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        let kid = k["kid"]
            .as_str()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| bad(format!("key {i} has no \"kid\"")))?;
        if k["kty"] != "OKP" || k["crv"] != "Ed25519" {
            return Err(bad(format!(
                "key {kid:?} is not an Ed25519 key (kty OKP, crv Ed25519)"
            )));
        }
        let x = k["x"]
            .as_str()
            .ok_or_else(|| bad(format!("key {kid:?} has no \"x\"")))?;
        if URL_SAFE_NO_PAD.decode(x).map(|b| b.len()) != Ok(32) {
            return Err(bad(format!(
                "key {kid:?}: \"x\" is not a 32-byte Ed25519 public key in base64url"
            )));
        }
        let key =
            DecodingKey::from_ed_components(x).map_err(|e| bad(format!("key {kid:?}: {e}")))?;
        if out.insert(kid.to_owned(), key).is_some() {
            return Err(bad(format!("key id {kid:?} appears twice")));
        }
    }
    if out.is_empty() {
        return Err(bad("the key set holds no key".into()));
    }
    Ok(out)
}

/// The key set file's bytes as keys.
fn key_set_of(bytes: &[u8], path: &Path) -> Result<HashMap<String, DecodingKey>, TokenError> {
    let text = std::str::from_utf8(bytes).map_err(|_| TokenError::Key {
        path: path.to_owned(),
        reason: "the key set is not UTF-8 JSON".into(),
    })?;
    parse_key_set(text, path)
}

/// The verifier's public keys, from a JWK set file reloaded when it changes (a rotation adds
/// the new key beside the old, then removes the old once its tokens have expired). A file that
/// no longer parses is not used: the keys last read stay, and the error is logged.
pub struct KeySet {
    file: WatchedFile<HashMap<String, DecodingKey>, TokenError>,
}

impl KeySet {
    /// Reads the key set file.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        Ok(Self {
            file: WatchedFile::open(path, "token key set", Box::new(key_set_of), |source| {
                TokenError::Io {
                    path: path.to_owned(),
                    cause: source,
                }
            })?,
        })
    }

    /// The key with id `kid`, if the set holds it.
    pub fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.file.current().get(kid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(scopes: &[Scope], individual: Option<&str>) -> TokenRequest {
        TokenRequest {
            facility: "79025".into(),
            audiences: vec!["lienthong-gateway".into()],
            scopes: scopes.to_vec(),
            individual: individual.map(str::to_owned),
            ttl_secs: 60,
        }
    }

    #[test]
    fn a_generated_key_signs_what_its_public_key_verifies() {
        let (pem, jwk) = generate_signing_key("k1").expect("key");
        let signer = TokenSigner::from_pem(pem.as_bytes(), "k1").expect("signer");
        let token = signer
            .issue(&request(
                &[Scope::Read, Scope::Publish],
                Some("001234/HCM-CCHN"),
            ))
            .expect("token");
        let set = serde_json::json!({ "keys": [jwk] }).to_string();
        let keys = parse_key_set(&set, Path::new("keys.json")).expect("set");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.kid.as_deref(), Some("k1"));
        assert_eq!(header.alg, Algorithm::EdDSA);
        let mut v = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        v.set_audience(&["lienthong-gateway"]);
        let data = jsonwebtoken::decode::<Claims>(&token, &keys["k1"], &v).expect("verifies");
        assert_eq!(data.claims.scope, "publish read");
        assert_eq!(data.claims.act.as_deref(), Some("001234/HCM-CCHN"));
        assert!(!data.claims.jti.is_empty());
    }

    #[test]
    fn tokens_that_would_be_refused_are_not_issued() {
        let (pem, _) = generate_signing_key("k1").expect("key");
        let signer = TokenSigner::from_pem(pem.as_bytes(), "k1").expect("signer");
        let err = signer
            .issue(&request(&[Scope::Read], None))
            .expect_err("read needs act");
        assert!(err.to_string().contains("--individual"), "{err}");
        assert!(signer.issue(&request(&[], None)).is_err());
        let mut r = request(&[Scope::Publish], None);
        r.facility = "not a code".into();
        assert!(matches!(signer.issue(&r), Err(TokenError::Subject { .. })));
        r = request(&[Scope::Publish], Some("a\u{1b}[2J"));
        assert!(signer.issue(&r).is_err());
    }

    #[test]
    fn hostile_key_sets_are_refused_with_the_reason() {
        let p = Path::new("keys.json");
        for (text, reason) in [
            ("not json", "not a JWK set"),
            ("{}", "no \"keys\""),
            ("{\"keys\":[]}", "holds no key"),
            (
                "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"a\",\"k\":\"c2VjcmV0\"}]}",
                "not an Ed25519 key",
            ),
            (
                "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AA\"}]}",
                "no \"kid\"",
            ),
            (
                "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"a\",\"x\":\"AA\"}]}",
                "32-byte",
            ),
        ] {
            let err = parse_key_set(text, p).expect_err(text);
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
        let (_, jwk) = generate_signing_key("dup").expect("key");
        let twice = serde_json::json!({ "keys": [jwk.clone(), jwk] }).to_string();
        assert!(
            parse_key_set(&twice, p)
                .expect_err("dup")
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn a_signing_key_every_user_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("signing.pem");
        let (pem, _) = generate_signing_key("k1").expect("key");
        std::fs::write(&file, pem).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = TokenSigner::from_file(&file, "k1").expect_err("refused");
        assert!(err.to_string().contains("readable by every user"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(TokenSigner::from_file(&file, "k1").is_ok());
        std::fs::write(&file, "not a key").expect("write");
        assert!(
            TokenSigner::from_file(&file, "k1")
                .expect_err("garbage")
                .to_string()
                .contains("keygen")
        );
    }
}
