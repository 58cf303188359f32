//! The store's bytes: the spaces of the sled tree, document keys and values, list entries
//! derived from a document, offsets. Nothing outside the store knows them.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The first byte of a document's key (documents are stored in bundles, not under it).
pub(super) const DOCS: u8 = b'P';
pub(super) const BUNDLES: u8 = b'B';
/// First byte of the part of a lab report's key after its patient (validation refuses control
/// characters in document ids, so no other document's key part starts with it).
pub(super) const LAB_MARK: u8 = 1;
pub(super) const RECEIPTS: u8 = b'r';
pub(super) const OFFSETS: u8 = b'o';

/// A key in a space.
pub(super) fn spaced(space: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(space);
    k.extend_from_slice(key);
    k
}

/// The key of a document filed under a patient (all but lab reports).
pub(super) fn doc_key(patient_key: &[u8], document_id: &[u8]) -> Vec<u8> {
    spaced(DOCS, &key(&[patient_key, document_id]))
}

/// Where a patient's lab reports begin: `P` patient_key 0x00 0x01.
pub(super) fn lab_prefix(patient_key: &[u8]) -> Vec<u8> {
    let mut k = doc_key(patient_key, b"");
    k.push(LAB_MARK);
    k
}

/// The key `event` is filed under: its patient and id; a lab report also by service and
/// result time between the two.
pub(super) fn filing_key(event: &ClinicalEvent) -> Vec<u8> {
    let Some(h) = event.header() else {
        return Vec::new();
    };
    let (patient, doc) = (h.patient_key.as_bytes(), h.document_id.as_bytes());
    let ClinicalEvent::LabResult(e) = event else {
        return doc_key(patient, doc);
    };
    let r = e.report.as_ref();
    let first = r.and_then(|r| {
        r.lines
            .iter()
            .filter_map(|l| l.result_at.as_ref())
            .min_by(|a, b| a.value.cmp(&b.value))
    });
    let service = r.map_or("", |r| r.service_code.as_str());
    let mut k = lab_prefix(patient);
    k.extend_from_slice(&key(&[service.as_bytes(), &digits(first, 12), doc]));
    k
}

/// (patient key, document id) of a `P` key: what precedes its first 0x00 and follows its
/// last (a lab report's service and time lie between).
pub(super) fn split_doc_key(k: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = k.get(1..)?;
    let first = rest.iter().position(|b| *b == 0)?;
    let last = rest.iter().rposition(|b| *b == 0)?;
    Some((&rest[..first], &rest[last + 1..]))
}

/// True when `k` (a `P` key) files `document_id`.
pub(super) fn files(k: &[u8], document_id: &[u8]) -> bool {
    split_doc_key(k).is_some_and(|(_, d)| d == document_id)
}

/// The sled key of bundle `number`.
pub(super) fn bundle_key(number: u64) -> Vec<u8> {
    spaced(BUNDLES, &number.to_be_bytes())
}

/// The number of a bundle's sled key.
pub(super) fn bundle_number(key: &[u8]) -> Result<u64, StoreError> {
    key.get(1..)
        .and_then(|n| n.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("bundle key of {} bytes", key.len())))
}

pub(super) fn kind_byte(k: DocumentKind) -> u8 {
    match k {
        DocumentKind::Referral => 1,
        DocumentKind::Appointment => 2,
        DocumentKind::LabResult => 3,
    }
}

pub(super) fn kind_of(b: u8) -> Option<DocumentKind> {
    match b {
        1 => Some(DocumentKind::Referral),
        2 => Some(DocumentKind::Appointment),
        3 => Some(DocumentKind::LabResult),
        _ => None,
    }
}

/// Joins key components with 0x00.
pub fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

pub(super) fn digits(d: Option<&pb::PartialDateTime>, width: usize) -> Vec<u8> {
    let mut v: String = d
        .map(|d| {
            d.value
                .chars()
                .filter(char::is_ascii_digit)
                .take(width)
                .collect()
        })
        .unwrap_or_default();
    while v.len() < width {
        v.push('0');
    }
    v.into_bytes()
}

/// A `P` value: [kind][version u64][status] and `body`, the protobuf of `event`.
pub(super) fn doc_value(event: &ClinicalEvent, status: Status, body: &[u8]) -> Vec<u8> {
    let version = event.header().map_or(0, |h| h.document_version);
    let mut v = Vec::with_capacity(10 + body.len());
    v.push(kind_byte(event.kind()));
    v.extend_from_slice(&version.to_be_bytes());
    v.push(status as u8);
    v.extend_from_slice(body);
    v
}

/// A stored value with another status: the status byte changes, the body stays as stored.
pub(super) fn with_status(value: &[u8], status: Status) -> IVec {
    let mut v = value.to_vec();
    if let Some(b) = v.get_mut(9) {
        *b = status as u8;
    }
    v.into()
}

/// Decodes a `docs` value.
pub fn decode_doc(bytes: &[u8]) -> Result<StoredDoc, StoreError> {
    if bytes.len() < 10 {
        return Err(StoreError::Corrupt(
            "document value shorter than its header".into(),
        ));
    }
    let kind = kind_of(bytes[0])
        .ok_or_else(|| StoreError::Corrupt(format!("unknown kind byte {}", bytes[0])))?;
    let event = ClinicalEvent::decode(kind, &bytes[10..])
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(StoredDoc {
        event,
        status: Status::from_byte(bytes[9]),
    })
}

pub(super) fn stored_version(bytes: &[u8]) -> u64 {
    bytes
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The list entry of a document with `status` (None: a lab report, or no header).
pub(super) fn list_entry(event: &ClinicalEvent, status: Status) -> Option<ListEntry> {
    let doc = event.header()?.document_id.as_bytes();
    match event {
        ClinicalEvent::Referral(e) => {
            let s = e.slip.as_ref();
            let to = s
                .and_then(|s| s.receiving.as_ref())
                .map_or("", |f| f.code.as_str());
            let entry = key(&[
                to.as_bytes(),
                &[status as u8],
                &digits(s.and_then(|s| s.issued_at.as_ref()), 8),
                doc,
            ]);
            Some((List::Worklist, entry.into()))
        }
        ClinicalEvent::Appointment(e) => {
            let a = e.appointment.as_ref();
            let at = a
                .and_then(|a| a.facility.as_ref())
                .map_or("", |f| f.code.as_str());
            let entry = key(&[
                at.as_bytes(),
                &digits(a.and_then(|a| a.appointment_at.as_ref()), 12),
                doc,
            ]);
            Some((List::Appointments, entry.into()))
        }
        // Filed by patient, service and time: the document is its own index entry.
        ClinicalEvent::LabResult(_) => None,
    }
}

/// A list entry with another status: a worklist entry's status is the component after the
/// receiving facility (whose code holds no 0x00); appointment entries carry none. Only the
/// rare referral that meets its receipt needs this, so it is not prepared for every one.
pub(super) fn relisted((list, entry): &ListEntry, status: Status) -> ListEntry {
    let mut e = entry.to_vec();
    if *list == List::Worklist
        && let Some(b) = e
            .iter()
            .position(|b| *b == 0)
            .and_then(|at| e.get_mut(at + 1))
    {
        *b = status as u8;
    }
    (*list, e.into())
}

/// The list entry of a stored document value (decoded only if its kind is listed).
pub(super) fn stored_list_entry(value: &[u8]) -> Result<Option<ListEntry>, StoreError> {
    if value.first().copied().and_then(kind_of) == Some(DocumentKind::LabResult) {
        return Ok(None);
    }
    let old = decode_doc(value)?;
    Ok(list_entry(&old.event, old.status))
}

pub(super) fn status_of(event: &ClinicalEvent, received: bool) -> Status {
    let cancelled = event
        .header()
        .is_some_and(|h| h.action == pb::Action::Cancelled as i32);
    if cancelled {
        Status::Cancelled
    } else if received && event.kind() == DocumentKind::Referral {
        Status::Received
    } else {
        Status::Pending
    }
}

pub(super) fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    spaced(OFFSETS, &key(&[topic.as_bytes(), &partition.to_be_bytes()]))
}
