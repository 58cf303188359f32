//! Pseudonymous patient keys: keyed HMAC-SHA256 over the normalized identity number.
//!
//! The key is a secret of the deployment (env or file, never the repository); the key id is
//! carried in every event so keys can rotate without confusing consumers. A keyer may also
//! hold previous keys: new pseudonyms always use the current key, lookups try every key, so a
//! patient stays findable across a rotation.

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

/// Computes patient keys with the current secret (and previous ones, for lookups).
#[derive(Clone)]
pub struct PatientKeyer {
    key_id: String,
    secret: Vec<u8>,
    previous: Vec<PatientKeyer>,
}

impl fmt::Debug for PatientKeyer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatientKeyer")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.key_id).collect::<Vec<_>>(),
            )
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
            previous: Vec::new(),
        })
    }

    /// Parses the env var or key file: one `<key-id>:<hex secret>` per line, the current key
    /// first, then previous keys still needed for lookups (blank lines and `#` comments
    /// ignored).
    pub fn parse(text: &str) -> Result<Self, PseudonymError> {
        let mut keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(Self::parse_one);
        let mut current = keys.next().ok_or(PseudonymError::Missing)??;
        for key in keys {
            let key = key?;
            if key.key_id == current.key_id
                || current.previous.iter().any(|p| p.key_id == key.key_id)
            {
                return Err(PseudonymError::Invalid(
                    "two keys share a key id; give every key its own id",
                ));
            }
            current.previous.push(key);
        }
        Ok(current)
    }

    fn parse_one(line: &str) -> Result<Self, PseudonymError> {
        let (id, hex_secret) = line
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

    /// A keyed hash (hex HMAC-SHA256 under the current key) of `text` in the domain `purpose`:
    /// for identities other than persons (documents, events) that must not be computable
    /// from public numbers without the key. The domain keeps a document id from ever hashing
    /// to the same value as an event id.
    pub fn keyed_hash(&self, purpose: &str, text: &str) -> String {
        // HMAC is defined for keys of every length (RFC 2104), so this cannot fail.
        #[allow(clippy::expect_used)]
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"\n");
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The pseudonyms of a person under every key, current first: what a lookup must try.
    pub fn all_keys_for(&self, person: &PersonId) -> Vec<PatientKey> {
        std::iter::once(self.key_for(person))
            .chain(self.previous.iter().map(|k| k.key_for(person)))
            .collect()
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
    fn a_rotated_key_file_keeps_previous_keys_for_lookups() {
        let a = PersonId::parse("079203001234").expect("valid");
        let old = keyer("k1", 7);
        let text = format!(
            "# rotated 2026-11\nk2:{}\n\nk1:{}\n",
            hex::encode([8u8; 32]),
            hex::encode([7u8; 32])
        );
        let k = PatientKeyer::parse(&text).expect("two keys");
        assert_eq!(k.key_id(), "k2", "the first key is the current one");
        assert_eq!(k.key_for(&a), keyer("k2", 8).key_for(&a));
        let all = k.all_keys_for(&a);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1], old.key_for(&a));
        let twice = format!("k1:{0}\nk1:{0}", hex::encode([7u8; 32]));
        assert!(matches!(
            PatientKeyer::parse(&twice),
            Err(PseudonymError::Invalid(m)) if m.contains("share a key id")
        ));
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
