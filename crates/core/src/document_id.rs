//! Stable document identities and deterministic event ids.
//!
//! A document keeps its identity across retries and re-exports (referral: issuing facility +
//! slip number; appointment: facility + slip number; lab report: facility + episode + service).
//! The event id is derived from the document identity and version, so publishing the same
//! version twice — e.g. a re-exported XML file — yields the same event id and sinks store it once.

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
    let digest = Sha256::digest(
        format!("lienthong.v1\n{}\n{document_id}\n{version}", kind.as_str()).as_bytes(),
    );
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
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
    }
}
