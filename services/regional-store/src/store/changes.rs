//! What the consumer hands the store: changes at their Kafka positions, document events made
//! ready to apply where they are decoded.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One thing to apply, at its Kafka position.
///
/// Small, its messages boxed: a consumer batch holds thousands of them in one vector, and at
/// the 1.6 KB of an unboxed event each batch's vector was fresh memory the kernel had to
/// zero (~4% of the consumer's CPU).
#[derive(Debug, Clone)]
pub enum Change {
    /// A document event of this region.
    Event(PreparedEvent),
    /// A receipt of a referred patient.
    Receipt(Box<pb::ReferralReceiptEvent>),
    /// Nothing to apply (another region's event, or a dead letter): only the offset moves.
    Skip,
}

impl Change {
    /// A document event, prepared for the writer.
    pub fn event(event: ClinicalEvent) -> Self {
        let body = event.encode_to_vec();
        Self::Event(PreparedEvent::new(event, &body))
    }

    /// A document event as consumed: `body` is the protobuf `event` was decoded from, stored
    /// as it came instead of encoded again.
    pub fn consumed(event: ClinicalEvent, body: &[u8]) -> Self {
        Self::Event(PreparedEvent::new(event, body))
    }

    /// A receipt of a referred patient.
    pub fn receipt(receipt: pb::ReferralReceiptEvent) -> Self {
        Self::Receipt(Box::new(receipt))
    }

    /// The document and version an event change carries.
    pub fn document(&self) -> Option<(String, u64)> {
        match self {
            Self::Event(PreparedEvent {
                document: Some(d), ..
            }) => Some((String::from_utf8_lossy(&d.id).into_owned(), d.version)),
            _ => None,
        }
    }
}

/// A document event made ready to apply where it is decoded: encoded and keyed with the
/// status it has unless a receipt says otherwise, so the one writer (the consumer's
/// bottleneck) does only what needs the stored state.
///
/// It keeps what the writer needs, not the decoded event: the event's many small allocations
/// are freed where they were made, at once, instead of by the writer a batch later (dropping
/// the batch's events on the writer's side took ~4% of the consumer's CPU).
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    /// Its document (None: an event without a header, which is never applied).
    pub(super) document: Option<DocumentRef>,
    /// Its key under its patient.
    pub(super) key: IVec,
    /// Its stored value with the status it has unless a receipt says otherwise.
    pub(super) value: IVec,
    /// Its list entry with that status (lab reports are listed by their own key).
    pub(super) listing: Option<ListEntry>,
    /// A pending referral: a stored receipt makes it received.
    pub(super) receivable: bool,
}

/// Which document an event is a version of.
#[derive(Debug, Clone)]
pub(super) struct DocumentRef {
    pub(super) id: Box<[u8]>,
    pub(super) patient_key: Box<[u8]>,
    pub(super) version: u64,
}

impl PreparedEvent {
    /// Keys `event`, whose protobuf is `body`.
    pub(super) fn new(event: ClinicalEvent, body: &[u8]) -> Self {
        let status = status_of(&event, false);
        Self {
            receivable: status == Status::Pending && event.kind() == DocumentKind::Referral,
            document: event.header().map(|h| DocumentRef {
                id: h.document_id.as_bytes().into(),
                patient_key: h.patient_key.as_bytes().into(),
                version: h.document_version,
            }),
            key: filing_key(&event).into(),
            value: doc_value(&event, status, body).into(),
            listing: list_entry(&event, status),
        }
    }
}
