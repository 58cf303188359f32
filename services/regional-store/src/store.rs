//! One region's materialized documents in sled. A batch of messages is applied in one sled
//! transaction together with the consumed offsets, so a crash leaves either all of a batch or
//! none of it; the latest version of each document wins and everything older is a no-op.
//!
//! Trees (keys are components joined by 0x00; dates as digits so keys sort by time):
//! - `docs`:       document_id → [kind][version u64][status][event protobuf]
//! - `by_patient`: patient_key, document_id
//! - `worklist`:   receiving facility, status, issued yyyymmdd, document_id
//! - `appts`:      facility, appointment yyyymmddHHMM, document_id
//! - `labs`:       patient_key, service code, result yyyymmddHHMM, document_id
//! - `receipts`:   referral document_id → received-at seconds (receipts may arrive first)
//! - `offsets`:    topic, partition → next offset

use lienthong_core::{ClinicalEvent, DocumentKind};
use lienthong_proto::v1 as pb;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

/// What the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (disk full, corruption).
    #[error("sled store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value could not be read back.
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// Status byte of a stored document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Active (referral: patient not yet received).
    Pending = 1,
    /// Referral acknowledged by the receiving facility.
    Received = 2,
    /// Cancelled by its issuer (kept, marked).
    Cancelled = 3,
}

impl Status {
    fn from_byte(b: u8) -> Self {
        match b {
            2 => Self::Received,
            3 => Self::Cancelled,
            _ => Self::Pending,
        }
    }
}

/// One thing to apply, at its Kafka position.
// Built once per message and moved into the batch; boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Change {
    /// A document event of this region.
    Event(ClinicalEvent),
    /// A receipt of a referred patient.
    Receipt(pb::ReferralReceiptEvent),
    /// Nothing to apply (another region's event, or a dead letter): only the offset moves.
    Skip,
}

/// A stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDoc {
    /// The latest event of the document.
    pub event: ClinicalEvent,
    /// Its status.
    pub status: Status,
}

/// Counts of what a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Documents inserted or replaced by a newer version.
    pub applied: u64,
    /// Duplicates and older versions (no-ops).
    pub stale: u64,
    /// Messages already applied by an earlier batch (replays after a crash).
    pub replayed: u64,
}

/// The sled store of one region.
#[derive(Clone)]
pub struct RegionStore {
    db: sled::Db,
    docs: sled::Tree,
    by_patient: sled::Tree,
    worklist: sled::Tree,
    appts: sled::Tree,
    labs: sled::Tree,
    receipts: sled::Tree,
    offsets: sled::Tree,
}

fn kind_byte(k: DocumentKind) -> u8 {
    match k {
        DocumentKind::Referral => 1,
        DocumentKind::Appointment => 2,
        DocumentKind::LabResult => 3,
    }
}

fn kind_of(b: u8) -> Option<DocumentKind> {
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

fn digits(d: Option<&pb::PartialDateTime>, width: usize) -> Vec<u8> {
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

fn encode_doc(event: &ClinicalEvent, status: Status) -> Vec<u8> {
    let version = event.header().map_or(0, |h| h.document_version);
    let mut v = Vec::with_capacity(10 + event.encode_to_vec().len());
    v.push(kind_byte(event.kind()));
    v.extend_from_slice(&version.to_be_bytes());
    v.push(status as u8);
    v.extend_from_slice(&event.encode_to_vec());
    v
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

fn stored_version(bytes: &[u8]) -> u64 {
    bytes
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// Index keys of a document in each index tree: (tree index, key).
fn index_keys(event: &ClinicalEvent, status: Status) -> Vec<(usize, Vec<u8>)> {
    let Some(h) = event.header() else {
        return Vec::new();
    };
    let doc = h.document_id.as_bytes();
    let pk = h.patient_key.as_bytes();
    let mut keys = vec![(0, key(&[pk, doc]))];
    match event {
        ClinicalEvent::Referral(e) => {
            let s = e.slip.clone().unwrap_or_default();
            let to = s.receiving.map(|f| f.code).unwrap_or_default();
            keys.push((
                1,
                key(&[
                    to.as_bytes(),
                    &[status as u8],
                    &digits(s.issued_at.as_ref(), 8),
                    doc,
                ]),
            ));
        }
        ClinicalEvent::Appointment(e) => {
            let a = e.appointment.clone().unwrap_or_default();
            let at = a.facility.map(|f| f.code).unwrap_or_default();
            keys.push((
                2,
                key(&[at.as_bytes(), &digits(a.appointment_at.as_ref(), 12), doc]),
            ));
        }
        ClinicalEvent::LabResult(e) => {
            let r = e.report.clone().unwrap_or_default();
            let first = r
                .lines
                .iter()
                .filter_map(|l| l.result_at.as_ref())
                .min_by(|a, b| a.value.cmp(&b.value))
                .cloned();
            keys.push((
                3,
                key(&[
                    pk,
                    r.service_code.as_bytes(),
                    &digits(first.as_ref(), 12),
                    doc,
                ]),
            ));
        }
    }
    keys
}

fn status_of(event: &ClinicalEvent, received: bool) -> Status {
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

type Trees<'a> = (
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
);

fn abort<E: std::fmt::Display>(e: E) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(StoreError::Corrupt(e.to_string()))
}

impl RegionStore {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        let db = sled::open(path)?;
        Ok(Self {
            docs: db.open_tree("docs")?,
            by_patient: db.open_tree("by_patient")?,
            worklist: db.open_tree("worklist")?,
            appts: db.open_tree("appts")?,
            labs: db.open_tree("labs")?,
            receipts: db.open_tree("receipts")?,
            offsets: db.open_tree("offsets")?,
            db,
        })
    }

    /// The next offset to read of a partition, if this store has consumed it before.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        Ok(self
            .offsets
            .get(key(&[topic.as_bytes(), &partition.to_be_bytes()]))?
            .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes)))
    }

    /// Applies a batch of (topic, partition, offset, change) atomically, with the offsets.
    pub fn apply_batch(&self, batch: &[(String, i32, i64, Change)]) -> Result<Applied, StoreError> {
        let trees = (
            &self.docs,
            &self.by_patient,
            &self.worklist,
            &self.appts,
            &self.labs,
            &self.receipts,
            &self.offsets,
        );
        let applied = trees.transaction(|t| {
            let t: Trees<'_> = (&t.0, &t.1, &t.2, &t.3, &t.4, &t.5, &t.6);
            let mut out = Applied::default();
            for (topic, partition, offset, change) in batch {
                let okey = key(&[topic.as_bytes(), &partition.to_be_bytes()]);
                let next =
                    t.6.get(&okey)?
                        .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes))
                        .unwrap_or(0);
                if *offset < next {
                    out.replayed += 1;
                    continue;
                }
                match change {
                    Change::Event(event) => {
                        if apply_event(t, event)? {
                            out.applied += 1;
                        } else {
                            out.stale += 1;
                        }
                    }
                    Change::Receipt(r) => apply_receipt(t, r)?,
                    Change::Skip => {}
                }
                t.6.insert(okey, &(offset + 1).to_be_bytes())?;
            }
            Ok(out)
        })?;
        Ok(applied)
    }

    /// Makes everything applied so far durable (called before Kafka's advisory commit).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// A document by id.
    pub fn get(&self, document_id: &str) -> Result<Option<StoredDoc>, StoreError> {
        self.docs
            .get(document_id.as_bytes())?
            .map(|v| decode_doc(&v))
            .transpose()
    }

    /// All documents of a patient.
    pub fn patient_documents(&self, patient_key: &str) -> Result<Vec<StoredDoc>, StoreError> {
        let prefix = key(&[patient_key.as_bytes(), b""]);
        let mut out = Vec::new();
        for item in self.by_patient.scan_prefix(&prefix) {
            let (k, _) = item?;
            if let Some(doc) = self.get(&String::from_utf8_lossy(&k[prefix.len()..]))? {
                out.push(doc);
            }
        }
        Ok(out)
    }

    /// Document ids of an index tree under a key prefix, in key order, from `start` (exclusive).
    pub fn index_scan(
        &self,
        index: Index,
        prefix: &[u8],
        after: Option<&[u8]>,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
        let tree = match index {
            Index::Worklist => &self.worklist,
            Index::Appointments => &self.appts,
            Index::Labs => &self.labs,
        };
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if reverse {
            Box::new(tree.scan_prefix(prefix).rev())
        } else {
            Box::new(tree.scan_prefix(prefix))
        };
        let mut out = Vec::new();
        for item in iter {
            let (k, _) = item?;
            if let Some(a) = after
                && ((!reverse && k.as_ref() <= a) || (reverse && k.as_ref() >= a))
            {
                continue;
            }
            let doc = k
                .rsplit(|b| *b == 0)
                .next()
                .map(|d| String::from_utf8_lossy(d).into_owned())
                .unwrap_or_default();
            out.push((k.to_vec(), doc));
        }
        Ok(out)
    }

    /// (document_id, version) of every stored document, for checks and rebuild comparisons.
    pub fn versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.docs
            .iter()
            .map(|r| {
                r.map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), stored_version(&v)))
                    .map_err(StoreError::from)
            })
            .collect()
    }

    /// Number of stored documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// The secondary indexes a list query can scan.
#[derive(Debug, Clone, Copy)]
pub enum Index {
    /// Receiving facility → referrals.
    Worklist,
    /// Facility → appointments by time.
    Appointments,
    /// Patient + service → lab reports by time.
    Labs,
}

fn index_tree<'a>(t: Trees<'a>, i: usize) -> &'a TransactionalTree {
    match i {
        0 => t.1,
        1 => t.2,
        2 => t.3,
        _ => t.4,
    }
}

/// Applies one event; false when it is a duplicate or older than what is stored.
fn apply_event(
    t: Trees<'_>,
    event: &ClinicalEvent,
) -> Result<bool, ConflictableTransactionError<StoreError>> {
    let Some(h) = event.header() else {
        return Ok(false);
    };
    let doc_key = h.document_id.as_bytes();
    if let Some(old) = t.0.get(doc_key)? {
        if stored_version(&old) >= h.document_version {
            return Ok(false);
        }
        let old = decode_doc(&old).map_err(abort)?;
        for (i, k) in index_keys(&old.event, old.status) {
            index_tree(t, i).remove(k)?;
        }
    }
    let received = t.5.get(doc_key)?.is_some();
    let status = status_of(event, received);
    t.0.insert(doc_key, encode_doc(event, status))?;
    for (i, k) in index_keys(event, status) {
        index_tree(t, i).insert(k, &[])?;
    }
    Ok(true)
}

fn apply_receipt(
    t: Trees<'_>,
    r: &pb::ReferralReceiptEvent,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let doc_key = r.referral_document_id.as_bytes();
    let at = r.received_at.as_ref().map_or(0, |t| t.seconds);
    t.5.insert(doc_key, &at.to_be_bytes())?;
    if let Some(old) = t.0.get(doc_key)? {
        let old = decode_doc(&old).map_err(abort)?;
        if old.status == Status::Pending {
            for (i, k) in index_keys(&old.event, old.status) {
                index_tree(t, i).remove(k)?;
            }
            t.0.insert(doc_key, encode_doc(&old.event, Status::Received))?;
            for (i, k) in index_keys(&old.event, Status::Received) {
                index_tree(t, i).insert(k, &[])?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lienthong_core::fixtures::Generator;

    fn store() -> (tempfile::TempDir, RegionStore) {
        let dir = tempfile::tempdir().expect("tmp");
        let s = RegionStore::open(dir.path()).expect("open");
        (dir, s)
    }

    fn keyed(mut e: ClinicalEvent, key: &str) -> ClinicalEvent {
        e.header_mut().patient_key = key.into();
        e
    }

    fn version(e: &ClinicalEvent, v: u64, action: pb::Action) -> ClinicalEvent {
        let mut n = e.clone();
        n.header_mut().document_version = v;
        n.header_mut().action = action as i32;
        n
    }

    #[test]
    fn latest_version_wins_duplicates_and_older_are_noops_cancelled_kept() {
        let (_d, s) = store();
        let mut g = Generator::new(1, time::OffsetDateTime::now_utc());
        let v1 = keyed(ClinicalEvent::Referral(g.referral()), "p1");
        let v2 = version(&v1, 2, pb::Action::Updated);
        let v3 = version(&v1, 3, pb::Action::Cancelled);
        let batch = vec![
            ("t".to_owned(), 0, 0, Change::Event(v2.clone())),
            ("t".to_owned(), 0, 1, Change::Event(v1.clone())),
            ("t".to_owned(), 0, 2, Change::Event(v2.clone())),
        ];
        let a = s.apply_batch(&batch).expect("apply");
        assert_eq!((a.applied, a.stale), (1, 2));
        let again = s.apply_batch(&batch).expect("replay");
        assert_eq!(again.replayed, 3, "a replayed batch applies nothing");
        s.apply_batch(&[("t".to_owned(), 0, 3, Change::Event(v3))])
            .expect("apply");
        let doc = s
            .get(&v1.header().expect("h").document_id)
            .expect("get")
            .expect("stored");
        assert_eq!(doc.status, Status::Cancelled);
        assert_eq!(doc.event.header().expect("h").document_version, 3);
        assert_eq!(s.patient_documents("p1").expect("scan").len(), 1);
        assert_eq!(s.next_offset("t", 0).expect("offset"), Some(4));
    }

    #[test]
    fn a_receipt_before_or_after_its_referral_marks_it_received() {
        let (_d, s) = store();
        let mut g = Generator::new(2, time::OffsetDateTime::now_utc());
        let r = keyed(ClinicalEvent::Referral(g.referral()), "p");
        let doc = r.header().expect("h").document_id.clone();
        let receipt = pb::ReferralReceiptEvent {
            referral_document_id: doc.clone(),
            ..Default::default()
        };
        s.apply_batch(&[
            ("r".into(), 0, 0, Change::Receipt(receipt.clone())),
            ("t".into(), 0, 0, Change::Event(r.clone())),
        ])
        .expect("apply");
        assert_eq!(
            s.get(&doc).expect("get").expect("doc").status,
            Status::Received
        );
        let r2 = keyed(ClinicalEvent::Referral(g.referral()), "q");
        let doc2 = r2.header().expect("h").document_id.clone();
        s.apply_batch(&[("t".into(), 0, 1, Change::Event(r2))])
            .expect("apply");
        assert_eq!(
            s.get(&doc2).expect("get").expect("doc").status,
            Status::Pending
        );
        let receipt2 = pb::ReferralReceiptEvent {
            referral_document_id: doc2.clone(),
            ..Default::default()
        };
        s.apply_batch(&[("r".into(), 0, 1, Change::Receipt(receipt2))])
            .expect("apply");
        assert_eq!(
            s.get(&doc2).expect("get").expect("doc").status,
            Status::Received
        );
    }
}
