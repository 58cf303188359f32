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
//! - `c` checkpoint: the serial of the latest checkpoint written (see `checkpoint`)
//!
//! Why bundles: sled 0.34 costs about the same per key written whatever its size, most of all
//! at a random place of a large tree, so a sled batch writes one key for all of its documents.
//! For the same reason the facility worklists and the appointment lists are held in memory
//! (see `lists`), rebuilt from the documents at open.
//!
//! One writer at a time (a lock in the store): a batch reads what it is about to change, so
//! two interleaved writers could lose an update.
//!
//! The modules: `layout` (the bytes), `documents` (reading through catalogue → bundle),
//! `writer` (applying batches, compaction), `open` (opening), `checkpoint` (the in-memory
//! structures saved, so opening need not read every bundle), `reads` (the typed read API). docs/regional-store.md describes the whole design and its costs.

mod changes;
mod checkpoint;
mod documents;
mod layout;
mod open;
mod reads;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

pub use changes::{Change, PreparedEvent};
use documents::*;
use layout::*;
pub use open::OpenedFrom;
pub use reads::*;
pub use writer::skipping;
use writer::*;

use crate::bundles::{BundleWriter, Catalogue, Span};
use crate::filing::DocumentFiling;
use crate::lists::{List, ListChange, ListEntry, Lists};

use lienthong_core::{ClinicalEvent, DocumentKind};
use lienthong_proto::v1 as pb;
use sled::IVec;

/// What the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (disk full, corruption). The cause is in the message, not a source, so a
    /// chain of causes names it once.
    #[error("the region's store cannot be read or written: {0}")]
    Sled(sled::Error),
    /// A stored value could not be read back.
    #[error(
        "a value in the region's store is corrupt ({0}); rebuild the region's store from its \
         topics with `lienthong regional rebuild --region <code>`"
    )]
    Corrupt(String),
    /// The in-memory filing of documents is full.
    #[error(transparent)]
    FilingFull(#[from] crate::filing::FilingFull),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self::Sled(e)
    }
}

impl From<crate::bundles::Truncated> for StoreError {
    fn from(e: crate::bundles::Truncated) -> Self {
        Self::Corrupt(e.to_string())
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

/// A stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDoc {
    /// The latest event of the document.
    pub event: ClinicalEvent,
    /// Its status.
    pub status: Status,
}

/// Counts of what a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Documents inserted or replaced by a newer version.
    pub applied: u64,
    /// Duplicates and older versions (no-ops).
    pub stale: u64,
    /// Messages already applied by an earlier batch (replays after a crash).
    pub replayed: u64,
    /// Indexes of events that are the version stored, with other content, in batch order.
    /// None of them is applied, and the position of a partition that has one stays before its
    /// first (what follows it is applied but not yet marked read). The caller dead-letters them
    /// and applies the batch again with them skipped, which marks the rest read.
    pub conflicts: Vec<usize>,
}

/// The sled store of one region.
#[derive(Clone)]
pub struct RegionStore {
    db: sled::Db,
    tree: sled::Tree,
    /// The store's folder (its checkpoint lies beside sled's files).
    dir: Arc<std::path::Path>,
    opened_from: OpenedFrom,
    /// The stored documents (read by queries, changed by the writer).
    documents: Documents,
    /// The worklists and appointment lists (read by queries, changed by the writer).
    lists: Arc<RwLock<Lists>>,
    /// The writer's lock, over the referrals it knows have a receipt.
    writer: Arc<Mutex<KnownReceipts>>,
    /// Held while a checkpoint is written: one at a time, each with the next serial.
    checkpointing: Arc<Mutex<()>>,
}

impl RegionStore {
    /// The next offset to read of a partition, if this store has consumed it before.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        Ok(self
            .tree
            .get(offset_key(topic, partition))?
            .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes)))
    }

    /// Makes everything applied so far durable (when stopping; otherwise sled writes its log
    /// every `FLUSH_EVERY_MS`).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
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

    /// A SHA-256 (hex) over every stored document (key and value: content, version, status)
    /// and every list entry, in order: two replicas that hold the same region have the same.
    pub fn digest(&self) -> Result<String, StoreError> {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        let mut part = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        for (k, v) in self.documents.with_prefix(&[DOCS])? {
            part(&k);
            part(&v);
        }
        let lists = self.lists.read().unwrap_or_else(|p| p.into_inner());
        for (list, entry) in lists.entries() {
            part(&[list as u8]);
            part(&entry);
        }
        drop(lists);
        Ok(hex::encode(hash.finalize()))
    }

    /// Number of stored documents.
    pub fn len(&self) -> usize {
        self.documents.catalogue().len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.documents.catalogue().is_empty()
    }

    /// Document ids held in memory by the filing (about 8 bytes each, 80 per patient).
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

    /// Entries of the worklists and appointment lists held in memory (about 32 bytes each).
    pub fn listed_documents(&self) -> usize {
        self.lists.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
