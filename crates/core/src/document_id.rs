//! Stable document identities and deterministic event ids.
//!
//! A document keeps its identity across retries and re-exports (referral: issuing facility +
//! slip number; appointment: facility + slip number; lab report: facility + episode + service).
//! The event id is derived from the document identity and version, so publishing the same
//! version twice — e.g. a re-exported XML file — yields the same event id and sinks store it once.
//! The derivation is the contract's (proto/lienthong/v1/common.proto, `EventHeader.event_id`):
//! any language computes it with its standard library, and
//! proto/lienthong/v1/ids.test-vectors.json holds examples every implementation checks.

use std::io::Write as _;

use sha1::{Digest, Sha1};

use crate::routing::DocumentKind;

/// Document id of a referral slip: `<issuer facility>/<slip number>`.
pub fn referral(issuer: &str, slip_number: &str) -> String {
    format!("referral/{}/{}", issuer.trim(), slip_number.trim())
}

/// Document id of a follow-up appointment: `<facility>/<slip number>`.
pub fn appointment(facility: &str, slip_number: &str) -> String {
    format!("appointment/{}/{}", facility.trim(), slip_number.trim())
}

/// Document id of a lab report: `<facility>/<episode MA_LK>/<service code>`.
pub fn lab_report(facility: &str, episode_id: &str, service_code: &str) -> String {
    format!(
        "lab-report/{}/{}/{}",
        facility.trim(),
        episode_id.trim(),
        service_code.trim()
    )
}

/// Namespace of event ids (UUID version 5), as published in common.proto.
pub const EVENT_ID_NAMESPACE: [u8; 16] = [
    0x78, 0xf6, 0x25, 0xd9, 0x77, 0x86, 0x41, 0x90, 0xa2, 0xae, 0xc0, 0x45, 0xbc, 0x26, 0x70, 0xc5,
];

/// The deterministic event id of one version of a document: the UUID version 5 of
/// `<kind>\n<document id>\n<version>` under [`EVENT_ID_NAMESPACE`].
pub fn event_id(kind: DocumentKind, document_id: &str, version: u64) -> String {
    event_id_bytes(kind, document_id, version)
        .iter()
        .map(|&b| char::from(b))
        .collect()
}

/// Whether `event_id` is the deterministic id of this document version (no allocation: every
/// consumed event is checked).
pub fn is_event_id(event_id: &str, kind: DocumentKind, document_id: &str, version: u64) -> bool {
    event_id.as_bytes() == event_id_bytes(kind, document_id, version)
}

/// The event id's 36 ASCII bytes.
fn event_id_bytes(kind: DocumentKind, document_id: &str, version: u64) -> [u8; 36] {
    // A u64 has at most 20 decimal digits, so the write always fits.
    let mut version_digits = std::io::Cursor::new([0u8; 20]);
    let _ = write!(version_digits, "{version}");
    let digits = usize::try_from(version_digits.position()).unwrap_or(0);
    // UUID v5 is SHA-1 over namespace and name; hashing the name's parts in turn equals
    // hashing the joined name, without building it (every consumed event is checked).
    let digest = Sha1::new()
        .chain_update(EVENT_ID_NAMESPACE)
        .chain_update(kind.as_str())
        .chain_update(b"\n")
        .chain_update(document_id)
        .chain_update(b"\n")
        .chain_update(&version_digits.get_ref()[..digits])
        .finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_deterministic_and_version_sensitive() {
        let doc = referral("01001", "CT-0001");
        let a = event_id(DocumentKind::Referral, &doc, 1);
        assert_eq!(a, event_id(DocumentKind::Referral, &doc, 1));
        assert_ne!(a, event_id(DocumentKind::Referral, &doc, 2));
        assert_ne!(a, event_id(DocumentKind::Appointment, &doc, 1));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5", "UUID version 5");
        assert!(is_event_id(&a, DocumentKind::Referral, &doc, 1));
        assert!(!is_event_id(&a, DocumentKind::Referral, &doc, 2));
    }

    #[test]
    fn event_ids_match_the_published_test_vectors() {
        let text = include_str!("../../../proto/lienthong/v1/ids.test-vectors.json");
        let vectors: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
        let events = vectors["event_ids"].as_array().expect("event_ids");
        assert!(events.len() >= 6);
        for v in events {
            let kind = crate::routing::DocumentKind::ALL
                .into_iter()
                .find(|k| k.as_str() == v["kind"].as_str().unwrap_or_default())
                .expect("a known kind");
            let doc = v["document_id"].as_str().expect("document_id");
            let version = v["document_version"].as_u64().expect("document_version");
            let expected = v["event_id"].as_str().expect("event_id");
            assert_eq!(event_id(kind, doc, version), expected, "{v}");
            assert!(is_event_id(expected, kind, doc, version));
        }
        for v in vectors["document_ids"].as_array().expect("document_ids") {
            let f = |k: &str| v[k].as_str().unwrap_or_default();
            let built = match f("kind") {
                "referral" => referral(f("facility"), f("slip_number")),
                "appointment" => appointment(f("facility"), f("slip_number")),
                _ => lab_report(f("facility"), f("episode"), f("service_code")),
            };
            assert_eq!(built, f("document_id"), "{v}");
        }
    }
}
