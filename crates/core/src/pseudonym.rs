//! Pseudonymous patient keys: keyed HMAC-SHA256 over the normalized identity number.
//!
//! The key is a secret of the deployment (env or file, never the repository); the key id is
//! carried in every event so keys can rotate without confusing consumers.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::PersonId;

/// Why a pseudonym key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PseudonymError {
    /// No key was configured.
    #[error(
        "no pseudonym key configured: set LIENTHONG_PSEUDONYM_KEY or LIENTHONG_PSEUDONYM_KEY_FILE to \
         `<key-id>:<at least 64 hex characters>` (generate one with `lienthong keys generate`)"
    )]
    Missing,
    /// The key text is malformed.
    #[error("invalid pseudonym key: {0}")]
    Invalid(&'static str),
}

/// The pseudonym of a patient: lowercase hex of HMAC-SHA256 (64 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PatientKey {
    /// Hex digest; also the Kafka message key.
    pub value: String,
    /// Id of the key that produced it.
    pub key_id: String,
}

/// Computes patient keys with one secret.
#[derive(Clone)]
pub struct PatientKeyer {
    key_id: String,
    secret: Vec<u8>,
}

impl fmt::Debug for PatientKeyer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatientKeyer")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl PatientKeyer {
    /// Builds a keyer from a key id and at least 32 secret bytes.
    pub fn new(key_id: &str, secret: &[u8]) -> Result<Self, PseudonymError> {
        if key_id.is_empty()
            || !key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(PseudonymError::Invalid(
                "key id must be non-empty letters, digits, '-', '_' or '.'",
            ));
        }
        if secret.len() < 32 {
            return Err(PseudonymError::Invalid(
                "secret must be at least 32 bytes (64 hex characters)",
            ));
        }
        Ok(Self {
            key_id: key_id.to_owned(),
            secret: secret.to_vec(),
        })
    }

    /// Parses `<key-id>:<hex secret>` as found in the env var or key file.
    pub fn parse(text: &str) -> Result<Self, PseudonymError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PseudonymError::Missing);
        }
        let (id, hex_secret) = text
            .split_once(':')
            .ok_or(PseudonymError::Invalid("expected `<key-id>:<hex secret>`"))?;
        let secret = hex::decode(hex_secret.trim())
            .map_err(|_| PseudonymError::Invalid("secret is not hexadecimal"))?;
        Self::new(id.trim(), &secret)
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The pseudonym of a person.
    pub fn key_for(&self, person: &PersonId) -> PatientKey {
        // HMAC is defined for keys of every length (RFC 2104), so this cannot fail.
        #[allow(clippy::expect_used)]
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(person.normalized().as_bytes());
        PatientKey {
            value: hex::encode(mac.finalize().into_bytes()),
            key_id: self.key_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyer(id: &str, byte: u8) -> PatientKeyer {
        PatientKeyer::new(id, &[byte; 32]).expect("valid")
    }

    #[test]
    fn same_person_same_key_different_secret_different_key() {
        let a = PersonId::parse("079203001234").expect("valid");
        let b = PersonId::parse(" 079203001234 ").expect("valid");
        let k1 = keyer("k1", 7);
        assert_eq!(k1.key_for(&a), k1.key_for(&b));
        assert_eq!(k1.key_for(&a).value.len(), 64);
        assert_ne!(k1.key_for(&a).value, keyer("k2", 8).key_for(&a).value);
        assert_eq!(k1.key_for(&a).key_id, "k1");
    }

    #[test]
    fn the_key_never_contains_the_identifier() {
        let a = PersonId::parse("079203001234").expect("valid");
        assert!(!keyer("k", 1).key_for(&a).value.contains("079203001234"));
    }

    #[test]
    fn parse_errors_are_clear() {
        assert_eq!(
            PatientKeyer::parse("").unwrap_err(),
            PseudonymError::Missing
        );
        assert!(
            PatientKeyer::parse("nocolon")
                .unwrap_err()
                .to_string()
                .contains("<key-id>")
        );
        assert!(
            PatientKeyer::parse("k1:abcd")
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
        assert!(PatientKeyer::parse("k1:zz").is_err());
        let ok = PatientKeyer::parse(&format!("k2026:{}", "ab".repeat(32))).expect("valid");
        assert!(!format!("{ok:?}").contains("abab"));
    }
}
