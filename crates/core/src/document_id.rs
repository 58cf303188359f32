//! Stable document identities and deterministic event ids.
//!
//! A document keeps its identity across retries and re-exports (referral: issuing facility +
//! slip number; appointment: facility + slip number; lab report: facility + episode + service).
//! The event id is derived from the document identity and version, so publishing the same
//! version twice — e.g. a re-exported XML file — yields the same event id and sinks store it once.

use std::io::Write as _;

use sha2::{Digest, Sha256};

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

/// The deterministic event id of one version of a document: a UUID-shaped SHA-256 prefix
/// (version nibble 8, "custom", RFC 9562) so any UUID column can hold it.
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
    let digest = Sha256::new()
        .chain_update(b"lienthong.v1\n")
        .chain_update(kind.as_str())
        .chain_update(b"\n")
        .chain_update(document_id)
        .chain_update(b"\n")
        .chain_update(&version_digits.get_ref()[..digits])
        .finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
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
        assert_eq!(&a[14..15], "8");
        assert!(is_event_id(&a, DocumentKind::Referral, &doc, 1));
        assert!(!is_event_id(&a, DocumentKind::Referral, &doc, 2));
    }

    #[test]
    fn event_ids_keep_the_published_derivation() {
        // The formula of the first release (format, SHA-256, hex): ids already in Kafka and
        // the warehouse must not change.
        let (doc, version) = ("lab-report/79025/LK-1/XN001", 12_345u64);
        let digest =
            Sha256::digest(format!("lienthong.v1\nlab-result\n{doc}\n{version}").as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[6] = (b[6] & 0x0f) | 0x80;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        let first = format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        );
        assert_eq!(event_id(DocumentKind::LabResult, doc, version), first);
        assert_eq!(
            event_id(DocumentKind::Referral, "referral/79025/CT-1", 0).len(),
            36
        );
    }
}
