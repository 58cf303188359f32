//! One region's materialized documents in sled. A batch of messages is applied as one atomic
//! sled batch together with the consumed offsets, so a crash leaves either all of a batch or
//! none of it; the latest version of each document wins and everything older is a no-op.
//!
//! Everything lives in one sled tree (`region`), because only a single tree's batch is atomic
//! without sled's much slower cross-tree transactions. The first key byte names the space
//! (other key components are joined by 0x00; dates as digits so keys sort by time):
//! - `d` docs:       document_id → [kind][version u64][status][event protobuf]
//! - `p` by patient: patient_key, document_id
//! - `w` worklist:   receiving facility, status, issued yyyymmdd, document_id
//! - `a` appts:      facility, appointment yyyymmddHHMM, document_id
//! - `l` labs:       patient_key, service code, result yyyymmddHHMM, document_id
//! - `r` receipts:   referral document_id → received-at seconds (receipts may arrive first)
//! - `o` offsets:    topic, partition → next offset
//!
//! One writer at a time (a lock in the store): a batch reads what it is about to change, so
//! two interleaved writers could lose an update.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Arc, Mutex};

use lienthong_core::{ClinicalEvent, DocumentKind};
use lienthong_proto::v1 as pb;

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

const DOCS: u8 = b'd';
const BY_PATIENT: u8 = b'p';
const WORKLIST: u8 = b'w';
const APPTS: u8 = b'a';
const LABS: u8 = b'l';
const RECEIPTS: u8 = b'r';
const OFFSETS: u8 = b'o';

/// A key in a space.
fn spaced(space: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(space);
    k.extend_from_slice(key);
    k
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
    tree: sled::Tree,
    /// The writer's lock, over the documents it knows are stored.
    writer: Arc<Mutex<KnownDocuments>>,
}

/// Hashes of every stored document id, loaded at open and kept by the writer. Most events
/// are a document's first version: a miss here answers "not stored" without a sled lookup,
/// which costs about as much as an insert. A hash collision only costs that lookup.
#[derive(Default)]
struct KnownDocuments(HashSet<u64>);

impl KnownDocuments {
    fn hash(document_id: &[u8]) -> u64 {
        BuildHasherDefault::<DefaultHasher>::default().hash_one(document_id)
    }

    fn may_hold(&self, document_id: &[u8]) -> bool {
        self.0.contains(&Self::hash(document_id))
    }

    fn add(&mut self, document_id: &[u8]) {
        self.0.insert(Self::hash(document_id));
    }
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
    let body = event.encode_to_vec();
    let mut v = Vec::with_capacity(10 + body.len());
    v.push(kind_byte(event.kind()));
    v.extend_from_slice(&version.to_be_bytes());
    v.push(status as u8);
    v.extend_from_slice(&body);
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

/// Index keys of a document, each in its space.
fn index_keys(event: &ClinicalEvent, status: Status) -> Vec<Vec<u8>> {
    let Some(h) = event.header() else {
        return Vec::new();
    };
    let doc = h.document_id.as_bytes();
    let pk = h.patient_key.as_bytes();
    let mut keys = vec![spaced(BY_PATIENT, &key(&[pk, doc]))];
    match event {
        ClinicalEvent::Referral(e) => {
            let s = e.slip.as_ref();
            let to = s
                .and_then(|s| s.receiving.as_ref())
                .map_or("", |f| f.code.as_str());
            keys.push(spaced(
                WORKLIST,
                &key(&[
                    to.as_bytes(),
                    &[status as u8],
                    &digits(s.and_then(|s| s.issued_at.as_ref()), 8),
                    doc,
                ]),
            ));
        }
        ClinicalEvent::Appointment(e) => {
            let a = e.appointment.as_ref();
            let at = a
                .and_then(|a| a.facility.as_ref())
                .map_or("", |f| f.code.as_str());
            keys.push(spaced(
                APPTS,
                &key(&[
                    at.as_bytes(),
                    &digits(a.and_then(|a| a.appointment_at.as_ref()), 12),
                    doc,
                ]),
            ));
        }
        ClinicalEvent::LabResult(e) => {
            let r = e.report.as_ref();
            let first = r.and_then(|r| {
                r.lines
                    .iter()
                    .filter_map(|l| l.result_at.as_ref())
                    .min_by(|a, b| a.value.cmp(&b.value))
            });
            let service = r.map_or("", |r| r.service_code.as_str());
            keys.push(spaced(
                LABS,
                &key(&[pk, service.as_bytes(), &digits(first, 12), doc]),
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

/// The writes of one batch: a sled batch plus what it will have written, so later messages
/// of the batch read the effects of earlier ones.
struct PendingBatch<'a> {
    tree: &'a sled::Tree,
    known: &'a mut KnownDocuments,
    written: HashMap<Vec<u8>, Option<Vec<u8>>>,
    batch: sled::Batch,
}

impl<'a> PendingBatch<'a> {
    fn new(tree: &'a sled::Tree, known: &'a mut KnownDocuments) -> Self {
        Self {
            tree,
            known,
            written: HashMap::new(),
            batch: sled::Batch::default(),
        }
    }

    /// The stored document `document_id` (under `key`), skipping sled when it is not known.
    fn get_document(&self, key: &[u8], document_id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.written.get(key) {
            return Ok(v.clone());
        }
        if !self.known.may_hold(document_id) {
            return Ok(None);
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    /// Writes a document (remembered as known at once: a superset is always safe).
    fn insert_document(&mut self, key: Vec<u8>, document_id: &[u8], value: Vec<u8>) {
        self.known.add(document_id);
        self.insert(key, value);
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.written.get(key) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.batch.insert(key.as_slice(), value.as_slice());
        self.written.insert(key, Some(value));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.batch.remove(key.as_slice());
        self.written.insert(key, None);
    }
}

impl RegionStore {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        let db = sled::open(path)?;
        let tree = db.open_tree("region")?;
        let mut known = KnownDocuments::default();
        for k in tree.scan_prefix([DOCS]).keys() {
            known.add(&k?[1..]);
        }
        Ok(Self {
            tree,
            db,
            writer: Arc::new(Mutex::new(known)),
        })
    }

    /// The next offset to read of a partition, if this store has consumed it before.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        Ok(self
            .tree
            .get(offset_key(topic, partition))?
            .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes)))
    }

    /// Applies a batch of (topic, partition, offset, change) atomically, with the offsets.
    pub fn apply_batch(&self, batch: &[(String, i32, i64, Change)]) -> Result<Applied, StoreError> {
        let mut known = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut w = PendingBatch::new(&self.tree, &mut known);
        let mut out = Applied::default();
        for (topic, partition, offset, change) in batch {
            let okey = offset_key(topic, *partition);
            let next = w
                .get(&okey)?
                .and_then(|v| v.as_slice().try_into().ok().map(i64::from_be_bytes))
                .unwrap_or(0);
            if *offset < next {
                out.replayed += 1;
                continue;
            }
            match change {
                Change::Event(event) => {
                    if apply_event(&mut w, event)? {
                        out.applied += 1;
                    } else {
                        out.stale += 1;
                    }
                }
                Change::Receipt(r) => apply_receipt(&mut w, r)?,
                Change::Skip => {}
            }
            w.insert(okey, (offset + 1).to_be_bytes().to_vec());
        }
        self.tree.apply_batch(w.batch)?;
        Ok(out)
    }

    /// Makes everything applied so far durable (called before Kafka's advisory commit).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// A document by id.
    pub fn get(&self, document_id: &str) -> Result<Option<StoredDoc>, StoreError> {
        self.tree
            .get(spaced(DOCS, document_id.as_bytes()))?
            .map(|v| decode_doc(&v))
            .transpose()
    }

    /// All documents of a patient.
    pub fn patient_documents(&self, patient_key: &str) -> Result<Vec<StoredDoc>, StoreError> {
        let prefix = spaced(BY_PATIENT, &key(&[patient_key.as_bytes(), b""]));
        let mut out = Vec::new();
        for k in self.tree.scan_prefix(&prefix).keys() {
            let k = k?;
            if let Some(doc) = self.get(&String::from_utf8_lossy(&k[prefix.len()..]))? {
                out.push(doc);
            }
        }
        Ok(out)
    }

    /// Up to `limit` (index key, document id) pairs of an index under a key prefix whose key
    /// passes `keep`, in key order (or reverse), after `after` (exclusive). Stops at `limit`,
    /// so a page costs its own size, not the size of the facility's whole list.
    pub fn index_scan(
        &self,
        index: Index,
        prefix: &[u8],
        after: Option<&[u8]>,
        reverse: bool,
        keep: &dyn Fn(&[u8]) -> bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
        let space = match index {
            Index::Worklist => WORKLIST,
            Index::Appointments => APPTS,
            Index::Labs => LABS,
        };
        let prefix = spaced(space, prefix);
        let iter: Box<dyn Iterator<Item = sled::Result<sled::IVec>>> = if reverse {
            Box::new(self.tree.scan_prefix(&prefix).keys().rev())
        } else {
            Box::new(self.tree.scan_prefix(&prefix).keys())
        };
        let mut out = Vec::new();
        for k in iter {
            let k = k?;
            // Page tokens carry the key without its space byte.
            let k = &k[1..];
            if out.len() >= limit {
                break;
            }
            if let Some(a) = after
                && ((!reverse && k <= a) || (reverse && k >= a))
            {
                continue;
            }
            if !keep(k) {
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
        self.tree
            .scan_prefix([DOCS])
            .map(|r| {
                r.map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&k[1..]).into_owned(),
                        stored_version(&v),
                    )
                })
                .map_err(StoreError::from)
            })
            .collect()
    }

    /// Number of stored documents (counts them: for checks and reports, not hot paths).
    pub fn len(&self) -> usize {
        self.tree.scan_prefix([DOCS]).keys().count()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.tree.scan_prefix([DOCS]).keys().next().is_none()
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

fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    spaced(OFFSETS, &key(&[topic.as_bytes(), &partition.to_be_bytes()]))
}

/// Applies one event; false when it is a duplicate or older than what is stored.
fn apply_event(w: &mut PendingBatch<'_>, event: &ClinicalEvent) -> Result<bool, StoreError> {
    let Some(h) = event.header() else {
        return Ok(false);
    };
    let doc = h.document_id.as_bytes();
    let doc_key = spaced(DOCS, doc);
    if let Some(old) = w.get_document(&doc_key, doc)? {
        if stored_version(&old) >= h.document_version {
            return Ok(false);
        }
        let old = decode_doc(&old)?;
        for k in index_keys(&old.event, old.status) {
            w.remove(k);
        }
    }
    // Only referrals have receipts.
    let received =
        event.kind() == DocumentKind::Referral && w.get(&spaced(RECEIPTS, doc))?.is_some();
    let status = status_of(event, received);
    w.insert_document(doc_key, doc, encode_doc(event, status));
    for k in index_keys(event, status) {
        w.insert(k, Vec::new());
    }
    Ok(true)
}

fn apply_receipt(w: &mut PendingBatch<'_>, r: &pb::ReferralReceiptEvent) -> Result<(), StoreError> {
    let doc = r.referral_document_id.as_bytes();
    let at = r.received_at.as_ref().map_or(0, |t| t.seconds);
    w.insert(spaced(RECEIPTS, doc), at.to_be_bytes().to_vec());
    let doc_key = spaced(DOCS, doc);
    if let Some(old) = w.get_document(&doc_key, doc)? {
        let old = decode_doc(&old)?;
        if old.status == Status::Pending {
            for k in index_keys(&old.event, old.status) {
                w.remove(k);
            }
            w.insert(doc_key, encode_doc(&old.event, Status::Received));
            for k in index_keys(&old.event, Status::Received) {
                w.insert(k, Vec::new());
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
    fn a_reopened_store_still_knows_its_documents() {
        // The writer skips sled lookups for documents it does not know; after a restart it
        // must know every stored one, or an older version would overwrite a newer one.
        let dir = tempfile::tempdir().expect("tmp");
        let mut g = Generator::new(3, time::OffsetDateTime::now_utc());
        let v1 = keyed(ClinicalEvent::Referral(g.referral()), "p1");
        let v2 = version(&v1, 2, pb::Action::Updated);
        {
            let s = RegionStore::open(dir.path()).expect("open");
            s.apply_batch(&[("t".to_owned(), 0, 0, Change::Event(v2.clone()))])
                .expect("apply");
            futures::executor::block_on(s.flush()).expect("flush");
        }
        let s = RegionStore::open(dir.path()).expect("reopen");
        let a = s
            .apply_batch(&[("t".to_owned(), 0, 1, Change::Event(v1.clone()))])
            .expect("apply");
        assert_eq!((a.applied, a.stale), (0, 1), "the older version is a no-op");
        let doc = s
            .get(&v1.header().expect("h").document_id)
            .expect("get")
            .expect("stored");
        assert_eq!(doc.event.header().expect("h").document_version, 2);
        assert_eq!(s.patient_documents("p1").expect("scan").len(), 1);
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
