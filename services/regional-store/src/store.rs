//! One region's materialized documents in sled. Messages are applied in atomic sled batches
//! that carry the consumed offsets of what they applied, so a crash leaves either all of such
//! a batch or none of it; the latest version of each document wins and everything older is a
//! no-op.
//!
//! Everything lives in one sled tree (`region`), because only a single tree's batch is atomic
//! without sled's much slower cross-tree transactions. The first key byte names the space:
//! - `B` bundles:    bundle number (u64, big-endian) → the documents one sled batch changed,
//!   each as a record of its key and value (see `bundles`). A document's key is `P`
//!   patient_key 0x00 document_id (a lab report's: `P` patient_key 0x00 0x01 service code 0x00
//!   result yyyymmddHHMM 0x00 document_id), its value [kind][version u64][status][event
//!   protobuf]. The catalogue in memory holds each document's key and where its current value
//!   lies, ordered by key: a patient's record is one range of it, and so are the patient's lab
//!   reports of a service by time (the lab index is the documents themselves). Which patient a
//!   document id is filed under is kept in memory too (see `filing`).
//! - `r` receipts:   referral document_id → received-at seconds (receipts may arrive first)
//! - `o` offsets:    topic, partition → next offset
//!
//! Why bundles: sled 0.34 costs about the same per key written whatever its size, most of all
//! at a random place of a large tree, so a sled batch writes one key for all of its documents.
//! For the same reason the facility worklists and the appointment lists are held in memory
//! (see `lists`), rebuilt from the documents at open.
//!
//! Stores of earlier layouts: documents by id in spaces `d` and `p` or a separate lab index in
//! space `l` are refused at open with what to do (rebuild the region from its topics). The
//! layout before this one (each document its own key in space `P`, the lists in spaces `w` and
//! `a`) is converted at open: its documents are moved into bundles, its lists dropped.
//!
//! One writer at a time (a lock in the store): a batch reads what it is about to change, so
//! two interleaved writers could lose an update.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use crate::bundles::{BundleWriter, Catalogue, Span};
use crate::filing::DocumentFiling;
use crate::lists::{List, ListChange, ListEntry, Lists};

use lienthong_core::{ClinicalEvent, DocumentKind};
use lienthong_proto::v1 as pb;
use sled::IVec;

/// What the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (disk full, corruption).
    #[error("sled store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value could not be read back.
    #[error(
        "a value in the region's store is corrupt ({0}); rebuild the region's store from its \
         topics with `lienthong regional rebuild --region <code>`"
    )]
    Corrupt(String),
    /// The store was written by an earlier version with another key layout.
    #[error(
        "the store in {0} has the key layout of an earlier lienthong: run \
         `lienthong regional rebuild --region <code>`, which replays the region's topics into a \
         store of the current layout; the next start swaps it in and keeps this one beside it \
         as region-<code>.replaced-<time>"
    )]
    EarlierLayout(String),
    /// The in-memory filing of documents is full.
    #[error(transparent)]
    FilingFull(#[from] crate::filing::FilingFull),
}

impl From<crate::bundles::Truncated> for StoreError {
    fn from(e: crate::bundles::Truncated) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// The first byte of a document's key (documents are stored in bundles, not under it).
const DOCS: u8 = b'P';
const BUNDLES: u8 = b'B';
/// Spaces of earlier layouts: documents by id with a separate patient index (`d`, `p`); a
/// separate lab index (`l`).
const EARLIER_LAYOUTS: [u8; 3] = [b'd', b'p', b'l'];
/// List index spaces of the layout before this one, dropped at open (lists are in memory);
/// its documents, each a key in space `P`, are moved into bundles.
const DROPPED_LISTS: [u8; 2] = [b'w', b'a'];
/// First byte of the part of a lab report's key after its patient (validation refuses control
/// characters in document ids, so no other document's key part starts with it).
const LAB_MARK: u8 = 1;
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
    document: Option<DocumentRef>,
    /// Its key under its patient.
    key: IVec,
    /// Its stored value with the status it has unless a receipt says otherwise.
    value: IVec,
    /// Its list entry with that status (lab reports are listed by their own key).
    listing: Option<ListEntry>,
    /// A pending referral: a stored receipt makes it received.
    receivable: bool,
}

/// Which document an event is a version of.
#[derive(Debug, Clone)]
struct DocumentRef {
    id: Box<[u8]>,
    patient_key: Box<[u8]>,
    version: u64,
}

impl PreparedEvent {
    /// Keys `event`, whose protobuf is `body`.
    fn new(event: ClinicalEvent, body: &[u8]) -> Self {
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
    /// The stored documents (read by queries, changed by the writer).
    documents: Documents,
    /// The worklists and appointment lists (read by queries, changed by the writer).
    lists: Arc<RwLock<Lists>>,
    /// The writer's lock, over the referrals it knows have a receipt.
    writer: Arc<Mutex<KnownReceipts>>,
}

/// Most messages in one atomic sled batch. Reads wait while a batch is applied: at 1,000
/// a query waited up to 17 ms (p99) during catch-up, at 100 4 ms, with the same throughput.
const SLED_BATCH: usize = 100;

/// Hashes of the referral ids that have a receipt, loaded at open and kept by the writer:
/// most referrals have none, and a miss here spares a sled lookup (which costs about as much
/// as an insert). A hash collision only costs that lookup.
#[derive(Default)]
struct KnownReceipts(HashSet<u64, foldhash::fast::RandomState>);

impl KnownReceipts {
    fn may_hold(&self, document_id: &[u8]) -> bool {
        self.0.contains(&crate::filing::hash(document_id))
    }

    fn add(&mut self, document_id: &[u8]) {
        self.0.insert(crate::filing::hash(document_id));
    }
}

/// The key of a document filed under a patient (all but lab reports).
fn doc_key(patient_key: &[u8], document_id: &[u8]) -> Vec<u8> {
    spaced(DOCS, &key(&[patient_key, document_id]))
}

/// Where a patient's lab reports begin: `P` patient_key 0x00 0x01.
fn lab_prefix(patient_key: &[u8]) -> Vec<u8> {
    let mut k = doc_key(patient_key, b"");
    k.push(LAB_MARK);
    k
}

/// The key `event` is filed under: its patient and id; a lab report also by service and
/// result time between the two.
fn filing_key(event: &ClinicalEvent) -> Vec<u8> {
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
fn split_doc_key(k: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = k.get(1..)?;
    let first = rest.iter().position(|b| *b == 0)?;
    let last = rest.iter().rposition(|b| *b == 0)?;
    Some((&rest[..first], &rest[last + 1..]))
}

/// True when `k` (a `P` key) files `document_id`.
fn files(k: &[u8], document_id: &[u8]) -> bool {
    split_doc_key(k).is_some_and(|(_, d)| d == document_id)
}

/// The stored documents: bundles in sled, and in memory where each document's current value
/// lies and which patient each document id is filed under.
#[derive(Clone)]
struct Documents {
    tree: sled::Tree,
    catalogue: Arc<RwLock<Catalogue>>,
    filing: Arc<RwLock<DocumentFiling>>,
}

/// The sled key of bundle `number`.
fn bundle_key(number: u64) -> Vec<u8> {
    spaced(BUNDLES, &number.to_be_bytes())
}

/// The number of a bundle's sled key.
fn bundle_number(key: &[u8]) -> Result<u64, StoreError> {
    key.get(1..)
        .and_then(|n| n.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("bundle key of {} bytes", key.len())))
}

impl Documents {
    fn catalogue(&self) -> std::sync::RwLockReadGuard<'_, Catalogue> {
        self.catalogue.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The current value of the document at `key`.
    fn value(&self, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        let mut span = self.catalogue().get(key);
        // A compaction moves a bundle's records and removes it in one sled batch while it
        // holds the catalogue, so another look at the catalogue finds the new place (the
        // record moves again only if its new bundle is compacted in the meantime).
        for _ in 0..8 {
            let Some(s) = span else {
                return Ok(None);
            };
            if let Some(bundle) = self.tree.get(bundle_key(s.bundle))? {
                return value_at(s, &bundle).map(Some);
            }
            let now = self.catalogue().get(key);
            if now == span {
                break;
            }
            span = now;
        }
        Err(StoreError::Corrupt(format!(
            "the bundle holding {} is missing",
            String::from_utf8_lossy(key)
        )))
    }

    /// The documents whose key starts with `prefix`: (key, value) in key order, read where
    /// the catalogue had them when asked.
    fn with_prefix(&self, prefix: &[u8]) -> Result<Vec<StoredValue>, StoreError> {
        let spans: Vec<(Box<[u8]>, Span)> = self
            .catalogue()
            .with_prefix(prefix)
            .map(|(k, span)| (k.into(), span))
            .collect();
        let mut out = Vec::with_capacity(spans.len());
        for (k, span) in spans {
            let value = self.value_found_at(&k, span)?;
            out.extend(value.map(|v| (k, v)));
        }
        Ok(out)
    }

    /// The value of the document at `key`, which the catalogue had at `span`: read in that
    /// bundle, unless compacted since, then wherever the catalogue has it now (None: the
    /// document moved to another key meanwhile).
    fn value_found_at(&self, key: &[u8], span: Span) -> Result<Option<IVec>, StoreError> {
        match self.tree.get(bundle_key(span.bundle))? {
            Some(bundle) => Ok(Some(value_at(span, &bundle)?)),
            None => self.value(key),
        }
    }
}

/// A document's key and its current stored value.
type StoredValue = (Box<[u8]>, IVec);

/// The value `span` points at in `bundle`.
fn value_at(span: Span, bundle: &IVec) -> Result<IVec, StoreError> {
    if span.of(bundle).is_none() {
        return Err(StoreError::Corrupt(format!(
            "bundle {} is shorter than a span of it",
            span.bundle
        )));
    }
    Ok(bundle.subslice(span.offset as usize, span.len as usize))
}

/// Reads a document by id: its candidate patients from the filing, confirmed in the catalogue
/// (a lab report by a scan of that patient's lab reports, unless it is at `likely`, the key
/// its new version is filed under). `written` overlays a batch in progress (None: removed by
/// it).
fn find_document(
    docs: &Documents,
    written: Option<&Written>,
    document_id: &[u8],
    likely: Option<&[u8]>,
) -> Result<Option<(IVec, IVec)>, StoreError> {
    let candidates = docs
        .filing
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .candidates(document_id);
    if candidates.is_empty() {
        return Ok(None);
    }
    // The batch's own writes first. A document the batch moved is written at its new key
    // (its patient is a candidate from the moment it is written), so one the batch has not
    // written is where the store holds it.
    if let Some(w) = written {
        let written_at = |k: &[u8]| w.get(k).cloned().flatten();
        if let Some(k) = likely.filter(|k| files(k, document_id))
            && let Some(v) = written_at(k)
        {
            return Ok(Some((k.into(), v)));
        }
        for patient in &candidates {
            let k = doc_key(patient, document_id);
            if let Some(v) = written_at(&k) {
                return Ok(Some((k.into(), v)));
            }
            let labs = lab_prefix(patient);
            for (k, v) in w {
                if let Some(v) = v
                    && k.starts_with(&labs)
                    && files(k, document_id)
                {
                    return Ok(Some((k.clone(), v.clone())));
                }
            }
        }
    }
    let held = held_key(&docs.catalogue(), &candidates, document_id, likely);
    let Some((k, span)) = held else {
        return Ok(None);
    };
    // A key the batch removed is not the document's any more.
    if written.is_some_and(|w| w.contains_key(&*k)) {
        return Ok(None);
    }
    Ok(docs.value_found_at(&k, span)?.map(|v| (IVec::from(&*k), v)))
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

/// A `P` value: [kind][version u64][status] and `body`, the protobuf of `event`.
fn doc_value(event: &ClinicalEvent, status: Status, body: &[u8]) -> Vec<u8> {
    let version = event.header().map_or(0, |h| h.document_version);
    let mut v = Vec::with_capacity(10 + body.len());
    v.push(kind_byte(event.kind()));
    v.extend_from_slice(&version.to_be_bytes());
    v.push(status as u8);
    v.extend_from_slice(body);
    v
}

/// A stored value with another status: the status byte changes, the body stays as stored.
fn with_status(value: &[u8], status: Status) -> IVec {
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

fn stored_version(bytes: &[u8]) -> u64 {
    bytes
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The list entry of a document with `status` (None: a lab report, or no header).
fn list_entry(event: &ClinicalEvent, status: Status) -> Option<ListEntry> {
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
fn relisted((list, entry): &ListEntry, status: Status) -> ListEntry {
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
fn stored_list_entry(value: &[u8]) -> Result<Option<ListEntry>, StoreError> {
    if value.first().copied().and_then(kind_of) == Some(DocumentKind::LabResult) {
        return Ok(None);
    }
    let old = decode_doc(value)?;
    Ok(list_entry(&old.event, old.status))
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

/// What a batch in progress has written (None: removed), by sled key. foldhash, not std's
/// SipHash: every write of the single writer goes through it.
type Written = HashMap<IVec, Option<IVec>, foldhash::fast::RandomState>;

/// The writes of one batch: a sled batch plus what it will have written, so later messages
/// of the batch read the effects of earlier ones.
struct PendingBatch<'a> {
    docs: &'a Documents,
    receipts: &'a mut KnownReceipts,
    written: Written,
    batch: sled::Batch,
    /// What the lists get once `batch` has landed.
    listed: Vec<ListChange>,
}

impl<'a> PendingBatch<'a> {
    /// The stored document `document_id`: (its key, its value); `likely` is where to look
    /// first.
    fn find_document(
        &self,
        document_id: &[u8],
        likely: Option<&[u8]>,
    ) -> Result<Option<(IVec, IVec)>, StoreError> {
        find_document(self.docs, Some(&self.written), document_id, likely)
    }

    /// Writes a document under its patient. The filing learns it at once: a candidate whose
    /// batch never lands only costs a lookup, a missing one would lose an update.
    fn insert_document(
        &mut self,
        patient_key: &[u8],
        document_id: &[u8],
        key: IVec,
        value: IVec,
    ) -> Result<(), StoreError> {
        self.docs
            .filing
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add(document_id, patient_key)?;
        self.insert(key, value);
        Ok(())
    }

    /// True when a receipt of referral `document_id` is stored or in this batch.
    fn has_receipt(&self, document_id: &[u8]) -> Result<bool, StoreError> {
        if !self.receipts.may_hold(document_id) {
            return Ok(false);
        }
        let key = spaced(RECEIPTS, document_id);
        if let Some(v) = self.written.get(key.as_slice()) {
            return Ok(v.is_some());
        }
        Ok(self.docs.tree.get(key)?.is_some())
    }

    // IVec clones share the bytes: a key or value is copied once, into its IVec. Documents
    // go into the batch's bundle when it is sealed; everything else straight into the batch.
    fn insert(&mut self, key: IVec, value: IVec) {
        if key.first() != Some(&DOCS) {
            self.batch.insert(&key, &value);
        }
        self.written.insert(key, Some(value));
    }

    /// Removes a document (its key changed).
    fn remove(&mut self, key: IVec) {
        self.written.insert(key, None);
    }

    fn unlist(&mut self, entry: Option<ListEntry>) {
        if let Some((list, e)) = entry {
            self.listed.push(ListChange::Remove(list, e));
        }
    }

    fn list(&mut self, entry: Option<ListEntry>) {
        if let Some((list, e)) = entry {
            self.listed.push(ListChange::Add(list, e));
        }
    }

    /// Puts the documents written into one bundle of the sled batch; the sled batch and what
    /// the catalogue gets once it has landed.
    fn seal(self) -> (sled::Batch, Sealed) {
        let PendingBatch {
            docs,
            written,
            mut batch,
            listed,
            ..
        } = self;
        let mut bundle = BundleWriter::default();
        let mut placed = Vec::new();
        for (k, v) in written {
            if k.first() != Some(&DOCS) {
                continue;
            }
            let at = v.map(|v| bundle.push(&k, &v));
            placed.push((k, at));
        }
        let sealed = Sealed::new(bundle, placed, listed, &mut batch, || {
            docs.catalogue
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .next_bundle()
        });
        (batch, sealed)
    }
}

/// What a sled batch changes in memory once it has landed.
struct Sealed {
    /// Its bundle's number and record count.
    bundle: Option<(u64, u32)>,
    /// Each document written: its key and where its value lies in the bundle (None: removed).
    placed: Vec<(IVec, Option<(u32, u32)>)>,
    /// Changes to the lists.
    listed: Vec<ListChange>,
}

impl Sealed {
    /// Puts `bundle` (unless empty) into `batch` under the number `next` gives it.
    fn new(
        bundle: BundleWriter,
        placed: Vec<(IVec, Option<(u32, u32)>)>,
        listed: Vec<ListChange>,
        batch: &mut sled::Batch,
        next: impl FnOnce() -> u64,
    ) -> Self {
        let records = bundle.records();
        let number = (records > 0).then(next);
        if let Some(n) = number {
            batch.insert(bundle_key(n), bundle.into_bytes());
        }
        Self {
            bundle: number.map(|n| (n, records)),
            placed,
            listed,
        }
    }

    /// Places the batch's documents in the catalogue.
    fn catalogue(&self, c: &mut Catalogue) {
        if let Some((n, records)) = self.bundle {
            c.add_bundle(n, records);
        }
        for (k, at) in &self.placed {
            let span = at
                .zip(self.bundle)
                .map(|((offset, len), (bundle, _))| Span {
                    bundle,
                    offset,
                    len,
                });
            c.set(k, span);
        }
    }
}

impl RegionStore {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        let db = open_sled(path)?;
        let tree = db.open_tree("region")?;
        for space in EARLIER_LAYOUTS {
            if tree.scan_prefix([space]).keys().next().is_some() {
                return Err(StoreError::EarlierLayout(path.display().to_string()));
            }
        }
        drop_stored_lists(&tree)?;
        bundle_stored_documents(&tree)?;
        let docs = Documents {
            tree: tree.clone(),
            catalogue: Arc::default(),
            filing: Arc::default(),
        };
        replay_bundles(&docs)?;
        // The current records' list entries, bundle by bundle (one read of each).
        let mut listed = Vec::new();
        {
            let catalogue = docs.catalogue();
            for kv in tree.scan_prefix([BUNDLES]) {
                let (k, bytes) = kv?;
                for record in crate::bundles::records(bundle_number(&k)?, &bytes) {
                    let (key, span) = record?;
                    if catalogue.get(key) == Some(span) {
                        listed.extend(stored_list_entry(&value_at(span, &bytes)?)?);
                    }
                }
            }
        }
        let lists = Lists::from_entries(listed);
        let mut receipts = KnownReceipts::default();
        for k in tree.scan_prefix([RECEIPTS]).keys() {
            receipts.add(&k?[1..]);
        }
        Ok(Self {
            tree,
            db,
            documents: docs,
            lists: Arc::new(RwLock::new(lists)),
            writer: Arc::new(Mutex::new(receipts)),
        })
    }

    /// The next offset to read of a partition, if this store has consumed it before.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        Ok(self
            .tree
            .get(offset_key(topic, partition))?
            .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes)))
    }

    /// Applies a batch of (topic, partition, offset, change) in order, as atomic sled batches
    /// that each carry the offsets of what they applied.
    pub fn apply_batch(&self, batch: &[(String, i32, i64, Change)]) -> Result<Applied, StoreError> {
        let mut receipts = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Applied::default();
        let mut next_offsets: HashMap<(&str, i32), i64> = HashMap::new();
        // sled makes every read wait while a batch is applied: smaller sled batches keep a
        // clinician's query from waiting for a whole consumer batch. Each carries the offsets
        // of what it applied, so a crash between two still applies everything once.
        for chunk in batch.chunks(SLED_BATCH) {
            let mut w = PendingBatch {
                docs: &self.documents,
                receipts: &mut receipts,
                // A document and its index entry per event: no rehashing as the batch grows.
                written: Written::with_capacity_and_hasher(chunk.len(), Default::default()),
                batch: sled::Batch::default(),
                listed: Vec::with_capacity(chunk.len()),
            };
            // Only the positions this sled batch moves: the others are stored already, and
            // rewriting a dozen unchanged offsets per hundred messages is measurable.
            let mut moved: HashSet<(&str, i32)> = HashSet::new();
            for (topic, partition, offset, change) in chunk {
                let next = match next_offsets.entry((topic.as_str(), *partition)) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(self.next_offset(topic, *partition)?.unwrap_or(0))
                    }
                };
                if *offset < *next {
                    out.replayed += 1;
                    continue;
                }
                *next = offset + 1;
                moved.insert((topic.as_str(), *partition));
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
            }
            for (topic, partition) in moved {
                let next = next_offsets[&(topic, partition)];
                w.batch
                    .insert(offset_key(topic, partition), &next.to_be_bytes());
            }
            let (batch, sealed) = w.seal();
            self.tree.apply_batch(batch)?;
            sealed.catalogue(
                &mut self
                    .documents
                    .catalogue
                    .write()
                    .unwrap_or_else(|p| p.into_inner()),
            );
            self.lists
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .apply(sealed.listed);
            self.compact_sparse_bundle()?;
        }
        Ok(out)
    }

    /// Copies the current records of a bundle most of whose records are dead into a new
    /// bundle and removes it, in one sled batch, while holding the catalogue (so a reader that
    /// finds the old bundle gone finds the new place at its second look). One per sled batch
    /// of documents keeps up with the records a batch can make dead, at the cost of a batch.
    fn compact_sparse_bundle(&self) -> Result<(), StoreError> {
        // Only the writer (which this is) makes bundles sparse: a look without blocking
        // readers is enough to know there is nothing to do.
        if self.documents.catalogue().sparse().is_none() {
            return Ok(());
        }
        let mut catalogue = self
            .documents
            .catalogue
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let Some(sparse) = catalogue.sparse() else {
            return Ok(());
        };
        let mut bundle = BundleWriter::default();
        let mut placed = Vec::new();
        if let Some(bytes) = self.tree.get(bundle_key(sparse))? {
            for record in crate::bundles::records(sparse, &bytes) {
                let (k, span) = record?;
                if catalogue.get(k) == Some(span) {
                    let value = span.of(&bytes).unwrap_or_default();
                    placed.push((IVec::from(k), Some(bundle.push(k, value))));
                }
            }
        }
        let mut batch = sled::Batch::default();
        batch.remove(bundle_key(sparse));
        let sealed = Sealed::new(bundle, placed, Vec::new(), &mut batch, || {
            catalogue.next_bundle()
        });
        self.tree.apply_batch(batch)?;
        sealed.catalogue(&mut catalogue);
        catalogue.forget_bundle(sparse);
        Ok(())
    }

    /// Makes everything applied so far durable (when stopping; otherwise sled writes its log
    /// every `FLUSH_EVERY_MS`).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// A document by id.
    pub fn get(&self, document_id: &str) -> Result<Option<StoredDoc>, StoreError> {
        find_document(&self.documents, None, document_id.as_bytes(), None)?
            .map(|(_, v)| decode_doc(&v))
            .transpose()
    }

    /// The document `document_id` an entry of `index` lists: a lab report is read at its key
    /// (its entry is where it is filed), the others by id.
    pub fn listed(
        &self,
        index: Index,
        entry: &[u8],
        document_id: &str,
    ) -> Result<Option<StoredDoc>, StoreError> {
        let Index::Labs = index else {
            return self.get(document_id);
        };
        // The entry reads patient 0x00 service …; the key has the lab mark after the 0x00.
        let Some(at) = entry.iter().position(|b| *b == 0) else {
            return Ok(None);
        };
        let k = [&[DOCS], &entry[..=at], &[LAB_MARK], &entry[at + 1..]].concat();
        self.documents
            .value(&k)?
            .map(|v| decode_doc(&v))
            .transpose()
    }

    /// All documents of a patient (one range scan).
    pub fn patient_documents(&self, patient_key: &str) -> Result<Vec<StoredDoc>, StoreError> {
        let prefix = doc_key(patient_key.as_bytes(), b"");
        self.documents
            .with_prefix(&prefix)?
            .iter()
            .map(|(_, v)| decode_doc(v))
            .collect()
    }

    /// Up to `limit` (index key, document id) pairs of an index under a key prefix whose key
    /// passes `keep`, in key order (or reverse), after `after` (exclusive). Stops at `limit`,
    /// so a page costs its own size, not the size of the facility's whole list. The lab index
    /// is scanned under a patient key and 0x00; its keys read patient, service, time, id.
    pub fn index_scan(
        &self,
        index: Index,
        prefix: &[u8],
        after: Option<&[u8]>,
        reverse: bool,
        keep: &dyn Fn(&[u8]) -> bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
        let list = match index {
            Index::Worklist => List::Worklist,
            Index::Appointments => List::Appointments,
            // Lab reports are documents filed under their patient, after a mark.
            Index::Labs => {
                let mut scanned = spaced(DOCS, prefix);
                scanned.push(LAB_MARK);
                let catalogue = self.documents.catalogue();
                let keys = catalogue.with_prefix(&scanned).map(|(k, _)| k);
                let keys: Box<dyn Iterator<Item = &[u8]>> = if reverse {
                    Box::new(keys.rev())
                } else {
                    Box::new(keys)
                };
                let mut out = Vec::new();
                for stored in keys {
                    if out.len() >= limit {
                        break;
                    }
                    // Page tokens carry the key without its space byte and mark.
                    let k = [prefix, &stored[scanned.len()..]].concat();
                    if let Some(a) = after
                        && ((!reverse && k.as_slice() <= a) || (reverse && k.as_slice() >= a))
                    {
                        continue;
                    }
                    if keep(&k) {
                        let doc = listed_document(&k);
                        out.push((k, doc));
                    }
                }
                return Ok(out);
            }
        };
        let entries = self
            .lists
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .scan(list, prefix, after, reverse, keep, limit);
        Ok(entries
            .into_iter()
            .map(|k| {
                let doc = listed_document(&k);
                (k, doc)
            })
            .collect())
    }

    /// (document_id, version) of every stored document, for checks and rebuild comparisons.
    pub fn versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.documents.with_prefix(&[DOCS])? {
            let (_, doc) = split_doc_key(&k)
                .ok_or_else(|| StoreError::Corrupt("document key without a patient".into()))?;
            out.push((
                String::from_utf8_lossy(doc).into_owned(),
                stored_version(&v),
            ));
        }
        Ok(out)
    }

    /// Number of stored documents.
    pub fn len(&self) -> usize {
        self.documents.catalogue().len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.documents.catalogue().is_empty()
    }

    /// Document ids held in memory by the filing (about 60 bytes each with their patients).
    pub fn filed_documents(&self) -> usize {
        self.documents
            .filing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Bundles in sled (each the documents of one sled batch).
    pub fn bundles(&self) -> usize {
        self.documents.catalogue().bundles()
    }

    /// Entries of the worklists and appointment lists held in memory (about 100 bytes each).
    pub fn listed_documents(&self) -> usize {
        self.lists.read().unwrap_or_else(|p| p.into_inner()).len()
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

/// The document id of an index entry: its last component.
fn listed_document(entry: &[u8]) -> String {
    entry
        .rsplit(|b| *b == 0)
        .next()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default()
}

/// Removes the list index spaces of the layout before this one (the lists are rebuilt from the
/// documents in memory), in sled batches of bounded size.
fn drop_stored_lists(tree: &sled::Tree) -> Result<(), StoreError> {
    for space in DROPPED_LISTS {
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for k in tree.scan_prefix([space]).keys().take(10_000) {
                batch.remove(k?);
                n += 1;
            }
            if n == 0 {
                break;
            }
            tree.apply_batch(batch)?;
        }
    }
    Ok(())
}

/// sled's log segment size for new stores: a log item above a quarter of a segment is written
/// as a file of its own, synchronously by the writer, and a bundle (~100 KB) or a leaf node of
/// up to 17 of them is such an item at sled's 512 KiB default.
const SEGMENT_SIZE: usize = 8 << 20;

/// The sled configuration of the store in `path`: a store keeps the segment size it was
/// created with (sled refuses to open it with another).
fn sled_config(path: &std::path::Path) -> sled::Config {
    // sled's `conf` file: "key: value" lines, then a binary checksum.
    let persisted = std::fs::read(path.join("conf")).ok().and_then(|conf| {
        String::from_utf8_lossy(&conf)
            .lines()
            .find_map(|l| l.strip_prefix("segment_size: "))
            .and_then(|n| n.trim().parse().ok())
    });
    sled::Config::new()
        .path(path)
        .segment_size(persisted.unwrap_or(SEGMENT_SIZE))
        .flush_every_ms(Some(FLUSH_EVERY_MS))
}

/// Opens sled in `path`, waiting a little for its lock: sled lets go of it only once the
/// background threads of a store just dropped in this process have (seen as a rare failure of
/// reopening in tests). A store locked by another process still fails, after the wait.
fn open_sled(path: &std::path::Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled_config(path).open() {
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return Ok(opened?),
        }
    }
}

/// How often sled writes its log to disk on its own: the most applied work a crash can take
/// back (never lose: the offsets go back with it, and the consumer reads it again).
const FLUSH_EVERY_MS: u64 = 500;

/// Moves the documents of the layout before this one (each its own key in space `P`) into
/// bundles, a sled batch of bundle and removals at a time, so a crash leaves every document
/// in exactly one of the two places and the next open goes on.
fn bundle_stored_documents(tree: &sled::Tree) -> Result<(), StoreError> {
    let mut next = match tree.scan_prefix([BUNDLES]).keys().next_back() {
        Some(k) => bundle_number(&k?)? + 1,
        None => 1,
    };
    loop {
        let mut bundle = BundleWriter::default();
        let mut batch = sled::Batch::default();
        for kv in tree.scan_prefix([DOCS]).take(SLED_BATCH) {
            let (k, v) = kv?;
            bundle.push(&k, &v);
            batch.remove(k);
        }
        if bundle.records() == 0 {
            return Ok(());
        }
        batch.insert(bundle_key(next), bundle.into_bytes());
        tree.apply_batch(batch)?;
        next += 1;
    }
}

/// Builds the catalogue and the filing by replaying the bundles in the order they were
/// written: a record is its document's current value until a later record of the same
/// document id (under its key or, moved, under another). Bundles left without a current
/// record (by a compaction cut short) are removed.
fn replay_bundles(docs: &Documents) -> Result<(), StoreError> {
    let mut catalogue = docs.catalogue.write().unwrap_or_else(|p| p.into_inner());
    let mut filing = docs.filing.write().unwrap_or_else(|p| p.into_inner());
    let mut numbers = Vec::new();
    for kv in docs.tree.scan_prefix([BUNDLES]) {
        let (k, bytes) = kv?;
        let number = bundle_number(&k)?;
        numbers.push(number);
        let records = crate::bundles::records(number, &bytes).collect::<Result<Vec<_>, _>>()?;
        catalogue.add_bundle(number, records.len() as u32);
        for (key, span) in records {
            let (patient, doc) = split_doc_key(key)
                .ok_or_else(|| StoreError::Corrupt("document key without a patient".into()))?;
            let candidates = filing.candidates(doc);
            if let Some((held, _)) = held_key(&catalogue, &candidates, doc, Some(key))
                && *held != *key
            {
                catalogue.set(&held, None);
            }
            catalogue.set(key, Some(span));
            filing.add(doc, patient)?;
        }
    }
    drop(filing);
    let empty: Vec<u64> = numbers
        .into_iter()
        .filter(|n| catalogue.is_unused(*n))
        .collect();
    for n in empty {
        docs.tree.remove(bundle_key(n))?;
        catalogue.forget_bundle(n);
    }
    Ok(())
}

/// The key `document_id` is held under in `catalogue` and where its value lies: at `likely`
/// first, else under one of `candidates` (its patients, from the filing). Shared by the reads
/// of the writer and queries and by the replay at open.
fn held_key(
    catalogue: &Catalogue,
    candidates: &[Arc<[u8]>],
    document_id: &[u8],
    likely: Option<&[u8]>,
) -> Option<(Box<[u8]>, Span)> {
    // Most new versions keep their key: one lookup instead of a scan of the patient's reports.
    if let Some(k) = likely.filter(|k| files(k, document_id))
        && let Some(span) = catalogue.get(k)
    {
        return Some((k.into(), span));
    }
    for patient in candidates {
        let k = doc_key(patient, document_id);
        if let Some(span) = catalogue.get(&k) {
            return Some((k.into(), span));
        }
        let labs = lab_prefix(patient);
        if let Some((k, span)) = catalogue
            .with_prefix(&labs)
            .find(|(k, _)| files(k, document_id))
        {
            return Some((k.into(), span));
        }
    }
    None
}

fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    spaced(OFFSETS, &key(&[topic.as_bytes(), &partition.to_be_bytes()]))
}

/// Applies one event; false when it is a duplicate or older than what is stored.
fn apply_event(w: &mut PendingBatch<'_>, p: &PreparedEvent) -> Result<bool, StoreError> {
    let Some(d) = &p.document else {
        return Ok(false);
    };
    let doc = &d.id;
    if let Some((old_key, old)) = w.find_document(doc, Some(&p.key))? {
        if stored_version(&old) >= d.version {
            return Ok(false);
        }
        w.unlist(stored_list_entry(&old)?);
        // A corrected patient moves the document; the same key is simply overwritten.
        if old_key != p.key {
            w.remove(old_key);
        }
    }
    // Only pending referrals change with a receipt.
    let received = p.receivable && w.has_receipt(doc)?;
    let (value, listing) = if received {
        (
            with_status(&p.value, Status::Received),
            p.listing.as_ref().map(|e| relisted(e, Status::Received)),
        )
    } else {
        (p.value.clone(), p.listing.clone())
    };
    w.insert_document(&d.patient_key, doc, p.key.clone(), value)?;
    w.list(listing);
    Ok(true)
}

fn apply_receipt(w: &mut PendingBatch<'_>, r: &pb::ReferralReceiptEvent) -> Result<(), StoreError> {
    let doc = r.referral_document_id.as_bytes();
    let at = r.received_at.as_ref().map_or(0, |t| t.seconds);
    w.insert(
        spaced(RECEIPTS, doc).into(),
        at.to_be_bytes().as_slice().into(),
    );
    w.receipts.add(doc);
    if let Some((doc_key, value)) = w.find_document(doc, None)? {
        let old = decode_doc(&value)?;
        if old.status == Status::Pending {
            let listed = list_entry(&old.event, old.status);
            let received = listed.as_ref().map(|e| relisted(e, Status::Received));
            w.unlist(listed);
            w.insert(doc_key, with_status(&value, Status::Received));
            w.list(received);
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
            ("t".to_owned(), 0, 0, Change::event(v2.clone())),
            ("t".to_owned(), 0, 1, Change::event(v1.clone())),
            ("t".to_owned(), 0, 2, Change::event(v2.clone())),
        ];
        let a = s.apply_batch(&batch).expect("apply");
        assert_eq!((a.applied, a.stale), (1, 2));
        let again = s.apply_batch(&batch).expect("replay");
        assert_eq!(again.replayed, 3, "a replayed batch applies nothing");
        s.apply_batch(&[("t".to_owned(), 0, 3, Change::event(v3))])
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
            s.apply_batch(&[("t".to_owned(), 0, 0, Change::event(v2.clone()))])
                .expect("apply");
            futures::executor::block_on(s.flush()).expect("flush");
        }
        let s = RegionStore::open(dir.path()).expect("reopen");
        let a = s
            .apply_batch(&[("t".to_owned(), 0, 1, Change::event(v1.clone()))])
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
            ("r".into(), 0, 0, Change::receipt(receipt.clone())),
            ("t".into(), 0, 0, Change::event(r.clone())),
        ])
        .expect("apply");
        assert_eq!(
            s.get(&doc).expect("get").expect("doc").status,
            Status::Received
        );
        let r2 = keyed(ClinicalEvent::Referral(g.referral()), "q");
        let doc2 = r2.header().expect("h").document_id.clone();
        s.apply_batch(&[("t".into(), 0, 1, Change::event(r2))])
            .expect("apply");
        assert_eq!(
            s.get(&doc2).expect("get").expect("doc").status,
            Status::Pending
        );
        let receipt2 = pb::ReferralReceiptEvent {
            referral_document_id: doc2.clone(),
            ..Default::default()
        };
        s.apply_batch(&[("r".into(), 0, 1, Change::receipt(receipt2))])
            .expect("apply");
        assert_eq!(
            s.get(&doc2).expect("get").expect("doc").status,
            Status::Received
        );
    }

    #[test]
    fn a_corrected_patient_moves_the_document() {
        let (_d, s) = store();
        let mut g = Generator::new(4, time::OffsetDateTime::now_utc());
        let v1 = keyed(ClinicalEvent::LabResult(g.lab_result()), "wrong");
        let v2 = keyed(version(&v1, 2, pb::Action::Updated), "right");
        s.apply_batch(&[("t".into(), 0, 0, Change::event(v1.clone()))])
            .expect("apply");
        s.apply_batch(&[("t".into(), 0, 1, Change::event(v2))])
            .expect("apply");
        assert!(s.patient_documents("wrong").expect("scan").is_empty());
        assert_eq!(s.patient_documents("right").expect("scan").len(), 1);
        let id = v1.header().expect("h").document_id.clone();
        assert_eq!(
            s.get(&id)
                .expect("get")
                .expect("doc")
                .event
                .header()
                .expect("h")
                .patient_key,
            "right"
        );
        // The stale version, replayed under the old patient, stays a no-op.
        let a = s
            .apply_batch(&[("t".into(), 0, 2, Change::event(v1))])
            .expect("apply");
        assert_eq!(a.stale, 1);
        assert_eq!(s.len(), 1);
        assert_eq!(s.versions().expect("versions"), vec![(id, 2)]);
    }

    /// Every entry of a list (page tokens as the API hands them out).
    fn listed(s: &RegionStore, index: Index) -> Vec<(Vec<u8>, String)> {
        s.index_scan(index, b"", None, false, &|_| true, 100)
            .expect("scan")
    }

    #[test]
    fn lists_are_rebuilt_from_the_documents_at_open_and_stored_lists_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut g = Generator::new(11, time::OffsetDateTime::now_utc());
        let referral = keyed(ClinicalEvent::Referral(g.referral()), "p");
        let cancelled = keyed(ClinicalEvent::Referral(g.referral()), "q");
        let appointment = keyed(ClinicalEvent::Appointment(g.appointment()), "p");
        let lab = keyed(ClinicalEvent::LabResult(g.lab_result()), "p");
        let id = |e: &ClinicalEvent| e.header().expect("h").document_id.clone();
        let receipt = pb::ReferralReceiptEvent {
            referral_document_id: id(&referral),
            ..Default::default()
        };
        let (worklist, appointments) = {
            let s = RegionStore::open(dir.path()).expect("open");
            let batch: Vec<_> = [&referral, &cancelled, &appointment, &lab]
                .into_iter()
                .enumerate()
                .map(|(i, e)| ("t".to_owned(), 0, i as i64, Change::event(e.clone())))
                .collect();
            s.apply_batch(&batch).expect("apply");
            s.apply_batch(&[
                ("r".into(), 0, 0, Change::receipt(receipt)),
                (
                    "t".into(),
                    0,
                    4,
                    Change::event(version(&cancelled, 2, pb::Action::Cancelled)),
                ),
            ])
            .expect("apply");
            // A list entry as the layout before this one stored it.
            s.tree
                .insert(b"wfac\x00\x01\x0020261101\x00old", b"".as_slice())
                .expect("insert");
            futures::executor::block_on(s.flush()).expect("flush");
            (listed(&s, Index::Worklist), listed(&s, Index::Appointments))
        };
        let status_of = |entries: &[(Vec<u8>, String)], doc: &str| {
            entries
                .iter()
                .find(|(_, d)| d == doc)
                .map(|(k, _)| k.split(|b| *b == 0).nth(1).expect("status")[0])
        };
        assert_eq!(worklist.len(), 2, "{worklist:?}");
        assert_eq!(
            status_of(&worklist, &id(&referral)),
            Some(Status::Received as u8),
            "the receipt moved the referral in its worklist"
        );
        assert_eq!(
            status_of(&worklist, &id(&cancelled)),
            Some(Status::Cancelled as u8)
        );
        assert_eq!(appointments.len(), 1);
        assert_eq!(appointments[0].1, id(&appointment));
        let s = RegionStore::open(dir.path()).expect("reopen");
        assert_eq!(listed(&s, Index::Worklist), worklist);
        assert_eq!(listed(&s, Index::Appointments), appointments);
        assert_eq!(s.listed_documents(), 3);
        assert!(
            s.tree.scan_prefix(b"w").next().is_none(),
            "the stored list of the layout before is dropped"
        );
    }

    #[test]
    fn lists_kept_by_the_writer_equal_lists_rebuilt_from_the_documents() {
        // New versions, cancellations, corrected patients and receipts (before and after their
        // referral), in batches of several sled batches: whatever the writer did to the lists
        // in memory must be what a restart derives from the stored documents.
        let dir = tempfile::tempdir().expect("tmp");
        let mut g = Generator::new(12, time::OffsetDateTime::now_utc());
        let firsts: Vec<_> = (0..600)
            .map(|i| keyed(g.any(i), &format!("p{}", i % 40)))
            .collect();
        let mut messages = Vec::new();
        for (i, e) in firsts.iter().enumerate() {
            let id = e.header().expect("h").document_id.clone();
            let receipt = Change::receipt(pb::ReferralReceiptEvent {
                referral_document_id: id,
                ..Default::default()
            });
            if i % 11 == 0 {
                messages.push(receipt.clone());
            }
            messages.push(Change::event(e.clone()));
            match i % 5 {
                0 => messages.push(Change::event(version(e, 2, pb::Action::Updated))),
                1 => messages.push(Change::event(version(e, 3, pb::Action::Cancelled))),
                2 => messages.push(Change::event(keyed(
                    version(e, 2, pb::Action::Updated),
                    "moved",
                ))),
                _ => {}
            }
            if i % 7 == 0 {
                messages.push(receipt);
            }
        }
        let s = RegionStore::open(dir.path()).expect("open");
        let positioned: Vec<_> = messages
            .into_iter()
            .enumerate()
            .map(|(i, c)| ("t".to_owned(), 0, i as i64, c))
            .collect();
        for chunk in positioned.chunks(SLED_BATCH * 3 + 7) {
            s.apply_batch(chunk).expect("apply");
        }
        futures::executor::block_on(s.flush()).expect("flush");
        let kept = (
            listed_all(&s, Index::Worklist),
            listed_all(&s, Index::Appointments),
        );
        assert!(
            kept.0.len() > 100 && kept.1.len() > 100,
            "{} {}",
            kept.0.len(),
            kept.1.len()
        );
        let statuses: HashSet<u8> = kept
            .0
            .iter()
            .map(|k| k[k.iter().position(|b| *b == 0).expect("sep") + 1])
            .collect();
        assert_eq!(
            statuses.len(),
            3,
            "pending, received and cancelled referrals are listed"
        );
        drop(s);
        let s = RegionStore::open(dir.path()).expect("reopen");
        assert_eq!(
            (
                listed_all(&s, Index::Worklist),
                listed_all(&s, Index::Appointments)
            ),
            kept
        );
    }

    /// Every entry of a list, however long.
    fn listed_all(s: &RegionStore, index: Index) -> Vec<Vec<u8>> {
        s.index_scan(index, b"", None, false, &|_| true, usize::MAX)
            .expect("scan")
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn stores_of_earlier_layouts_are_refused_with_what_to_do() {
        // Documents by id (`d`), and a separate lab index (`l`).
        for earlier in [b"ddoc-1".as_slice(), b"lpk\x00svc\x00202601010000\x00doc-1"] {
            let dir = tempfile::tempdir().expect("tmp");
            {
                let db = sled::open(dir.path()).expect("sled");
                db.open_tree("region")
                    .expect("tree")
                    .insert(earlier, b"old".as_slice())
                    .expect("insert");
                db.flush().expect("flush");
            }
            let err = RegionStore::open(dir.path()).err().expect("refused");
            assert!(matches!(err, StoreError::EarlierLayout(_)), "{err}");
            assert!(
                err.to_string().contains("lienthong regional rebuild"),
                "{err}"
            );
        }
    }

    fn lab(g: &mut Generator, patient: &str, service: &str, at: &str) -> ClinicalEvent {
        let mut e = g.lab_result();
        let r = e.report.as_mut().expect("report");
        r.service_code = service.into();
        for l in &mut r.lines {
            l.result_at = Some(pb::PartialDateTime {
                value: at.into(),
                precision: pb::DatePrecision::Minute as i32,
            });
        }
        keyed(ClinicalEvent::LabResult(e), patient)
    }

    /// (service, time) of each lab index entry of `patient`, newest first as the API reads.
    fn lab_entries(s: &RegionStore, patient: &str) -> Vec<(String, String)> {
        s.index_scan(
            Index::Labs,
            &key(&[patient.as_bytes(), b""]),
            None,
            true,
            &|_| true,
            100,
        )
        .expect("scan")
        .into_iter()
        .map(|(k, _)| {
            let parts: Vec<_> = k.split(|b| *b == 0).collect();
            assert_eq!(
                parts[0],
                patient.as_bytes(),
                "index keys start with the patient"
            );
            (
                String::from_utf8_lossy(parts[1]).into_owned(),
                String::from_utf8_lossy(parts[2]).into_owned(),
            )
        })
        .collect()
    }

    #[test]
    fn lab_reports_are_their_own_index_by_patient_service_and_time() {
        let (_d, s) = store();
        let mut g = Generator::new(6, time::OffsetDateTime::now_utc());
        let older = lab(&mut g, "p", "HbA1c", "202611010800");
        let newer = lab(&mut g, "p", "HbA1c", "202611200800");
        let other = lab(&mut g, "p", "CRE", "202611150800");
        let referral = keyed(ClinicalEvent::Referral(g.referral()), "p");
        let elsewhere = lab(&mut g, "q", "HbA1c", "202611210800");
        let batch: Vec<_> = [&older, &newer, &other, &referral, &elsewhere]
            .into_iter()
            .enumerate()
            .map(|(i, e)| ("t".to_owned(), 0, i as i64, Change::event(e.clone())))
            .collect();
        s.apply_batch(&batch).expect("apply");
        assert_eq!(
            lab_entries(&s, "p"),
            [
                ("HbA1c".into(), "202611200800".into()),
                ("HbA1c".into(), "202611010800".into()),
                ("CRE".into(), "202611150800".into()),
            ],
            "the patient's reports only, by service then newest first"
        );
        assert_eq!(s.patient_documents("p").expect("scan").len(), 4);
        assert_eq!(s.len(), 5);
        for e in [&older, &newer, &other, &referral, &elsewhere] {
            let id = &e.header().expect("h").document_id;
            assert_eq!(s.get(id).expect("get").expect("found").event, *e);
        }
        // What the lab index lists is read at its entry.
        for (entry, id) in s
            .index_scan(Index::Labs, b"p\0", None, true, &|_| true, 10)
            .expect("scan")
        {
            let d = s
                .listed(Index::Labs, &entry, &id)
                .expect("read")
                .expect("listed");
            assert_eq!(d.event.header().expect("h").document_id, id);
        }
        // Pages continue after the last key of the previous page.
        let first = s
            .index_scan(Index::Labs, b"p\0", None, true, &|_| true, 1)
            .expect("page");
        let rest = s
            .index_scan(Index::Labs, b"p\0", Some(&first[0].0), true, &|_| true, 10)
            .expect("page");
        assert_eq!((first.len(), rest.len()), (1, 2));
        assert!(rest.iter().all(|(k, _)| *k < first[0].0));
    }

    #[test]
    fn a_lab_report_corrected_to_another_service_or_time_moves_in_one_batch_or_two() {
        let (_d, s) = store();
        let mut g = Generator::new(7, time::OffsetDateTime::now_utc());
        let v1 = lab(&mut g, "p", "GLU", "202611010800");
        let id = v1.header().expect("h").document_id.clone();
        let mut v2 = version(&v1, 2, pb::Action::Updated);
        if let ClinicalEvent::LabResult(e) = &mut v2 {
            e.report.as_mut().expect("report").service_code = "HbA1c".into();
        }
        let mut v3 = version(&v2, 3, pb::Action::Updated);
        if let ClinicalEvent::LabResult(e) = &mut v3 {
            for l in &mut e.report.as_mut().expect("report").lines {
                l.result_at.as_mut().expect("at").value = "202611020900".into();
            }
        }
        // v1 and v2 in one batch: the second finds the first among the batch's own writes.
        let a = s
            .apply_batch(&[
                ("t".into(), 0, 0, Change::event(v1.clone())),
                ("t".into(), 0, 1, Change::event(v2)),
            ])
            .expect("apply");
        assert_eq!(a.applied, 2);
        assert_eq!(
            lab_entries(&s, "p"),
            [("HbA1c".into(), "202611010800".into())]
        );
        let v4 = version(&v3, 4, pb::Action::Cancelled);
        s.apply_batch(&[("t".into(), 0, 2, Change::event(v3))])
            .expect("apply");
        assert_eq!(
            lab_entries(&s, "p"),
            [("HbA1c".into(), "202611020900".into())]
        );
        let stale = s
            .apply_batch(&[("t".into(), 0, 3, Change::event(v1))])
            .expect("apply");
        assert_eq!(
            stale.stale, 1,
            "an older version stays a no-op after the move"
        );
        assert_eq!(s.versions().expect("versions"), vec![(id.clone(), 3)]);
        // A version at the same key replaces it in place.
        s.apply_batch(&[("t".into(), 0, 4, Change::event(v4))])
            .expect("apply");
        assert_eq!(
            lab_entries(&s, "p"),
            [("HbA1c".into(), "202611020900".into())]
        );
        assert_eq!(s.versions().expect("versions"), vec![(id.clone(), 4)]);
        assert_eq!(
            s.get(&id).expect("get").expect("doc").status,
            Status::Cancelled
        );
    }

    #[test]
    fn a_relisted_entry_is_the_entry_of_the_new_status() {
        let mut g = Generator::new(13, time::OffsetDateTime::now_utc());
        let referral = keyed(ClinicalEvent::Referral(g.referral()), "p");
        let mut unaddressed = g.referral();
        unaddressed.slip.as_mut().expect("slip").receiving = None;
        let unaddressed = keyed(ClinicalEvent::Referral(unaddressed), "p");
        for e in [&referral, &unaddressed] {
            let pending = list_entry(e, Status::Pending).expect("listed");
            assert_eq!(
                relisted(&pending, Status::Received),
                list_entry(e, Status::Received).expect("listed")
            );
        }
        let appointment = keyed(ClinicalEvent::Appointment(g.appointment()), "p");
        let entry = list_entry(&appointment, Status::Pending).expect("listed");
        assert_eq!(
            relisted(&entry, Status::Received),
            entry,
            "appointments carry no status"
        );
    }

    #[test]
    fn a_status_change_keeps_the_stored_body() {
        let mut g = Generator::new(10, time::OffsetDateTime::now_utc());
        let e = keyed(ClinicalEvent::Referral(g.referral()), "p");
        let body = e.encode_to_vec();
        let pending = doc_value(&e, Status::Pending, &body);
        let received = with_status(&pending, Status::Received);
        assert_eq!(&received[10..], body.as_slice());
        let doc = decode_doc(&received).expect("decode");
        assert_eq!((doc.status, doc.event), (Status::Received, e));
    }

    #[test]
    fn a_consumed_event_is_stored_as_it_came_and_reads_back_whole() {
        let (_d, s) = store();
        let mut g = Generator::new(9, time::OffsetDateTime::now_utc());
        let e = keyed(ClinicalEvent::Appointment(g.appointment()), "p");
        let body = e.encode_to_vec();
        s.apply_batch(&[("t".into(), 0, 0, Change::consumed(e.clone(), &body))])
            .expect("apply");
        let k = filing_key(&e);
        let stored = s.documents.value(&k).expect("get").expect("stored");
        assert_eq!(
            &stored[10..],
            body.as_slice(),
            "the consumed bytes, not re-encoded"
        );
        let id = &e.header().expect("h").document_id;
        assert_eq!(s.get(id).expect("get").expect("doc").event, e);
    }

    /// (document id, version) of every document, and each read by its id.
    fn read_back(s: &RegionStore) -> Vec<(String, u64)> {
        let versions = s.versions().expect("versions");
        for (id, v) in &versions {
            let doc = s.get(id).expect("get").expect("found by id");
            assert_eq!(doc.event.header().expect("h").document_version, *v);
        }
        versions
    }

    /// Closes `s` (flushed), opens the store in `dir` again and checks it reads `versions`.
    fn reads_back_when_reopened(dir: &std::path::Path, s: RegionStore, versions: &[(String, u64)]) {
        futures::executor::block_on(s.flush()).expect("flush");
        drop(s);
        let s = RegionStore::open(dir).expect("reopen");
        assert_eq!(read_back(&s), versions);
    }

    #[test]
    fn documents_of_the_layout_before_are_moved_into_bundles_at_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut g = Generator::new(14, time::OffsetDateTime::now_utc());
        let events: Vec<_> = (0..SLED_BATCH + 30)
            .map(|i| keyed(g.any(i), &format!("p{}", i % 9)))
            .collect();
        {
            // Each document its own key in space `P`, as the layout before stored them.
            let db = sled::open(dir.path()).expect("sled");
            let tree = db.open_tree("region").expect("tree");
            for e in &events {
                let value = doc_value(e, status_of(e, false), &e.encode_to_vec());
                tree.insert(filing_key(e), value).expect("insert");
            }
            tree.insert(offset_key("t", 0), &7i64.to_be_bytes())
                .expect("offset");
            db.flush().expect("flush");
        }
        let s = RegionStore::open(dir.path()).expect("open");
        assert!(s.tree.scan_prefix([DOCS]).next().is_none(), "moved");
        assert_eq!((s.len(), s.bundles()), (events.len(), 2));
        assert_eq!(s.next_offset("t", 0).expect("offset"), Some(7));
        for e in &events {
            let id = &e.header().expect("h").document_id;
            assert_eq!(s.get(id).expect("get").expect("found").event, *e);
        }
        assert_eq!(
            s.patient_documents("p0").expect("record").len(),
            events.len().div_ceil(9)
        );
        assert!(s.listed_documents() > 0);
        let versions = read_back(&s);
        reads_back_when_reopened(dir.path(), s, &versions);
    }

    #[test]
    fn bundles_of_dead_records_are_compacted_while_reads_go_on() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = RegionStore::open(dir.path()).expect("open");
        let mut g = Generator::new(15, time::OffsetDateTime::now_utc());
        let firsts: Vec<_> = (0..SLED_BATCH * 3)
            .map(|i| keyed(g.any(i), &format!("p{}", i % 17)))
            .collect();
        let ids: Vec<String> = firsts
            .iter()
            .map(|e| e.header().expect("h").document_id.clone())
            .collect();
        let mut messages: Vec<Change> = firsts.iter().cloned().map(Change::event).collect();
        // Six more versions of every document, some moved to another patient.
        for v in 2..8 {
            for (i, e) in firsts.iter().enumerate() {
                let next = version(e, v, pb::Action::Updated);
                let next = if i % 5 == 0 && v % 2 == 0 {
                    keyed(next, &format!("moved{v}"))
                } else {
                    next
                };
                messages.push(Change::event(next));
            }
        }
        let positioned: Vec<_> = messages
            .into_iter()
            .enumerate()
            .map(|(i, c)| ("t".to_owned(), 0, i as i64, c))
            .collect();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let reads = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut n = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for id in ids.iter().step_by(7) {
                        // Found once the first versions are stored, and never an error.
                        let doc = s.get(id).expect("a read during compaction");
                        n += usize::from(doc.is_some());
                    }
                }
                n
            });
            for chunk in positioned.chunks(SLED_BATCH) {
                s.apply_batch(chunk).expect("apply");
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().expect("reader")
        });
        assert!(reads > 0);
        let versions = read_back(&s);
        assert_eq!(versions.len(), firsts.len());
        assert!(versions.iter().all(|(_, v)| *v == 7), "{versions:?}");
        let bundles = s.tree.scan_prefix([BUNDLES]).count();
        assert_eq!(bundles, s.bundles());
        assert!(
            bundles <= 2 * firsts.len().div_ceil(SLED_BATCH) + 2,
            "{bundles} bundles after 21 sled batches of documents: the dead ones compacted"
        );
        reads_back_when_reopened(dir.path(), s, &versions);
    }

    #[test]
    fn a_bundle_left_by_a_compaction_cut_short_is_dead_at_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut g = Generator::new(16, time::OffsetDateTime::now_utc());
        let v1 = keyed(g.any(0), "p");
        let v2 = keyed(version(&v1, 2, pb::Action::Updated), "q");
        let id = v1.header().expect("h").document_id.clone();
        let (first, bytes) = {
            let s = RegionStore::open(dir.path()).expect("open");
            s.apply_batch(&[("t".into(), 0, 0, Change::event(v1))])
                .expect("apply");
            let (k, bytes) = s
                .tree
                .scan_prefix([BUNDLES])
                .next()
                .expect("a bundle")
                .expect("read");
            s.apply_batch(&[("t".into(), 0, 1, Change::event(v2.clone()))])
                .expect("apply");
            assert!(s.tree.get(&k).expect("get").is_none(), "compacted away");
            // As if the compaction's batch had not landed: the old bundle is back.
            s.tree.insert(&k, bytes.clone()).expect("insert");
            futures::executor::block_on(s.flush()).expect("flush");
            (k, bytes)
        };
        let s = RegionStore::open(dir.path()).expect("reopen");
        assert_eq!(s.get(&id).expect("get").expect("doc").event, v2);
        assert_eq!(s.len(), 1);
        assert!(s.patient_documents("p").expect("record").is_empty());
        assert!(
            s.tree.get(&first).expect("get").is_none(),
            "removed at open"
        );
        assert!(!bytes.is_empty());
    }

    #[test]
    fn each_sled_batch_stores_the_positions_it_moved() {
        let (_d, s) = store();
        let mut g = Generator::new(8, time::OffsetDateTime::now_utc());
        // A sled batch of partition 0 only, then one of partition 1 only.
        let batch: Vec<_> = (0..SLED_BATCH * 2)
            .map(|i| {
                let p = (i / SLED_BATCH) as i32;
                let e = keyed(g.any(i), "p");
                (
                    "t".to_owned(),
                    p,
                    (i % SLED_BATCH) as i64 + 10,
                    Change::event(e),
                )
            })
            .collect();
        s.apply_batch(&batch).expect("apply");
        for p in 0..2 {
            assert_eq!(
                s.next_offset("t", p).expect("offset"),
                Some(SLED_BATCH as i64 + 10)
            );
        }
        assert_eq!(
            s.apply_batch(&batch).expect("replay").replayed,
            batch.len() as u64
        );
    }

    #[test]
    fn a_batch_larger_than_one_sled_batch_applies_once_and_replays_as_a_whole() {
        let (_d, s) = store();
        let mut g = Generator::new(5, time::OffsetDateTime::now_utc());
        let n = SLED_BATCH * 2 + SLED_BATCH / 2;
        let batch: Vec<_> = (0..n)
            .map(|i| {
                let e = keyed(g.any(i), &format!("p{}", i % 7));
                (
                    "t".to_owned(),
                    (i % 2) as i32,
                    (i / 2) as i64,
                    Change::event(e),
                )
            })
            .collect();
        let a = s.apply_batch(&batch).expect("apply");
        assert_eq!(a.applied + a.stale, n as u64);
        assert_eq!(
            s.next_offset("t", 0).expect("offset"),
            Some(n.div_ceil(2) as i64)
        );
        assert_eq!(s.next_offset("t", 1).expect("offset"), Some((n / 2) as i64));
        let stored = s.len();
        let again = s.apply_batch(&batch).expect("replay");
        assert_eq!(again.replayed, n as u64, "nothing is applied twice");
        // Half of it again plus new messages: only the new ones count.
        let mut more = batch[n / 2..].to_vec();
        let extra = keyed(g.any(n), "p-new");
        more.push((
            "t".to_owned(),
            0,
            n.div_ceil(2) as i64,
            Change::event(extra),
        ));
        let a = s.apply_batch(&more).expect("apply");
        assert_eq!((a.replayed, a.applied), ((n - n / 2) as u64, 1));
        assert_eq!(s.len(), stored + 1);
    }
}
