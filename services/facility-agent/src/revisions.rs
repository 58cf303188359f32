//! Corrections from XML become versions. An HIS corrects a document by exporting it again;
//! the export carries no version, so the agent remembers, per document id, the content digest
//! and version it last took in. A re-export with other content is the next version (UPDATED,
//! with that version's deterministic event id); one with the same content is "unchanged" and
//! nothing is sent. The record is written in the same outbox batch as the event it describes,
//! so a crash never leaves one without the other.

use lienthong_core::{ClinicalEvent, document_id};
use lienthong_proto::v1 as pb;
use sha2::{Digest, Sha256};

/// What the agent last took in of one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The version it was sent as.
    pub version: u64,
    /// SHA-256 of its content (the event without its header).
    pub digest: [u8; 32],
}

impl Delivered {
    /// The stored form: version (u64 BE) then digest.
    pub fn to_bytes(self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..8].copy_from_slice(&self.version.to_be_bytes());
        out[8..].copy_from_slice(&self.digest);
        out
    }

    /// Reads the stored form; None when it is not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let version = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let digest = bytes.get(8..40)?.try_into().ok()?;
        (bytes.len() == 40).then_some(Self { version, digest })
    }
}

/// What a document taken in from XML is, against what was taken in before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// Never seen: sent as version 1.
    First,
    /// Seen with other content: sent as the next version.
    Corrected {
        /// The version it is sent as.
        version: u64,
    },
    /// Seen with this content: nothing is sent.
    Unchanged {
        /// The version already sent.
        version: u64,
    },
}

/// SHA-256 of the document's content: the event with its header cleared, so that what the
/// agent itself stamps (ids, version, times) never makes a re-export look changed.
// `&mut` rather than a clone: every document an export holds is digested at intake; the
// header is put back as it was.
pub fn content_digest(event: &mut ClinicalEvent) -> [u8; 32] {
    let header = std::mem::take(event.header_mut());
    let digest = Sha256::digest(event.encode_to_vec()).into();
    *event.header_mut() = header;
    digest
}

/// Decides what `event` (as converted: version 1, CREATED) is against `prior`, renumbers it
/// when it is a correction, and returns what to remember of it.
pub fn revise(event: &mut ClinicalEvent, prior: Option<Delivered>) -> (Revision, Delivered) {
    let digest = content_digest(event);
    match prior {
        None => (
            Revision::First,
            Delivered {
                version: event.header().map_or(1, |h| h.document_version),
                digest,
            },
        ),
        Some(p) if p.digest == digest => (Revision::Unchanged { version: p.version }, p),
        Some(p) => {
            let version = p.version + 1;
            let kind = event.kind();
            let h = event.header_mut();
            h.document_version = version;
            h.action = pb::Action::Updated as i32;
            h.event_id = document_id::event_id(kind, &h.document_id, version);
            (
                Revision::Corrected { version },
                Delivered { version, digest },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lienthong_core::fixtures::Generator;

    fn referral() -> ClinicalEvent {
        ClinicalEvent::Referral(Generator::new(3, time::OffsetDateTime::now_utc()).referral())
    }

    #[test]
    fn a_new_document_is_version_one_and_the_same_again_is_unchanged() {
        let mut first = referral();
        let before = first.clone();
        let (revision, delivered) = revise(&mut first, None);
        assert_eq!(revision, Revision::First);
        assert_eq!(first, before, "sent as converted");
        let mut again = referral();
        // What the agent stamps itself does not count as a change.
        again.header_mut().source_system_version = "other".into();
        let (revision, kept) = revise(&mut again, Some(delivered));
        assert_eq!(revision, Revision::Unchanged { version: 1 });
        assert_eq!(kept, delivered);
    }

    #[test]
    fn a_corrected_document_is_the_next_version_with_its_own_event_id() {
        let mut first = referral();
        let (_, delivered) = revise(&mut first, None);
        let mut corrected = referral();
        if let ClinicalEvent::Referral(r) = &mut corrected
            && let Some(d) = r.slip.as_mut().and_then(|s| s.diagnosis.as_mut())
        {
            d.main_icd10 = "I21.0".into();
        }
        let (revision, now) = revise(&mut corrected, Some(delivered));
        assert_eq!(revision, Revision::Corrected { version: 2 });
        assert_eq!(now.version, 2);
        let h = corrected.header().expect("header").clone();
        assert_eq!(h.document_version, 2);
        assert_eq!(h.action, pb::Action::Updated as i32);
        assert_eq!(
            h.event_id,
            document_id::event_id(corrected.kind(), &h.document_id, 2)
        );
        assert_ne!(h.event_id, first.header().expect("header").event_id);
    }

    #[test]
    fn stored_records_read_back_and_garbage_does_not() {
        let d = Delivered {
            version: 7,
            digest: [9; 32],
        };
        assert_eq!(Delivered::from_bytes(&d.to_bytes()), Some(d));
        assert_eq!(Delivered::from_bytes(&[1, 2, 3]), None);
    }
}
