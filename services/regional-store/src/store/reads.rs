//! The typed read API the query service calls: documents by id, a patient's record, the
//! facility worklists and appointment lists, a patient's lab reports by service and time.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A page of a list: each document with its position, opaque to callers, which orders the
/// list (ascending positions, or descending where the list is newest first) and resumes a
/// page after it.
pub type ListPage = Vec<(Position, StoredDoc)>;

/// A document's position in a list; see [`ListPage`].
pub type Position = Vec<u8>;

/// Which referrals of a facility's worklist.
#[derive(Debug, Clone, Default)]
pub struct WorklistQuery<'a> {
    /// Only referrals of this status (None: all).
    pub status: Option<Status>,
    /// Only referrals issued on or after this day, `yyyymmdd` (empty: all).
    pub issued_since: &'a str,
}

/// Which lab reports of a patient.
#[derive(Debug, Clone, Default)]
pub struct LabQuery<'a> {
    /// Only these services (empty: all).
    pub services: &'a [String],
    /// Only results on or after this day, `yyyymmdd` (empty: all).
    pub since: &'a str,
}

impl RegionStore {
    /// A facility's incoming referrals, newest first: up to `limit` after `after`.
    pub fn worklist(
        &self,
        facility: &str,
        query: &WorklistQuery<'_>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let prefix = match query.status {
            Some(status) => key(&[facility.as_bytes(), &[status as u8], b""]),
            None => key(&[facility.as_bytes(), b""]),
        };
        // Entries read facility 0x00 status 0x00 issued-day …
        let day_at = facility.len() + 3;
        let since = query.issued_since.as_bytes();
        let keep =
            |k: &[u8]| since.is_empty() || k.get(day_at..day_at + 8).is_some_and(|d| d >= since);
        self.page(Index::Worklist, &prefix, after, true, &keep, limit)
    }

    /// A facility's appointments by time, earliest first, between two days `yyyymmdd`
    /// (inclusive; empty: open): up to `limit` after `after`.
    pub fn appointments(
        &self,
        facility: &str,
        (from, to): (&str, &str),
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let prefix = key(&[facility.as_bytes(), b""]);
        let at = prefix.len();
        let keep = |k: &[u8]| {
            let day = k.get(at..at + 8).unwrap_or_default();
            (from.is_empty() || day >= from.as_bytes()) && (to.is_empty() || day <= to.as_bytes())
        };
        self.page(Index::Appointments, &prefix, after, false, &keep, limit)
    }

    /// A patient's lab reports, newest first: up to `limit` after `after`.
    pub fn lab_reports(
        &self,
        patient_key: &str,
        query: &LabQuery<'_>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let prefix = key(&[patient_key.as_bytes(), b""]);
        let at = prefix.len();
        let keep = |k: &[u8]| {
            let mut parts = k.get(at..).unwrap_or_default().split(|b| *b == 0);
            let service = parts.next().unwrap_or_default();
            let when = parts.next().unwrap_or_default();
            (query.services.is_empty() || query.services.iter().any(|s| s.as_bytes() == service))
                && (query.since.is_empty()
                    || when.get(..8).is_some_and(|d| d >= query.since.as_bytes()))
        };
        self.page(Index::Labs, &prefix, after, true, &keep, limit)
    }

    /// The documents an index lists under `prefix`, with their positions.
    fn page(
        &self,
        index: Index,
        prefix: &[u8],
        after: Option<&[u8]>,
        reverse: bool,
        keep: &dyn Fn(&[u8]) -> bool,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let mut out = Vec::new();
        for (position, id) in self.index_scan(index, prefix, after, reverse, keep, limit)? {
            if let Some(doc) = self.listed(index, &position, &id)? {
                out.push((position, doc));
            }
        }
        Ok(out)
    }

    /// A document by id.
    pub fn get(&self, document_id: &str) -> Result<Option<StoredDoc>, StoreError> {
        find_document(&self.documents, None, document_id.as_bytes(), None)?
            .map(|(_, v)| decode_doc(&v))
            .transpose()
    }

    /// The document `document_id` an entry of `index` lists: a lab report is read at its key
    /// (its entry is where it is filed), the others by id.
    pub(super) fn listed(
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
    pub(super) fn index_scan(
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
                // One patient's reports: few enough to gather before turning them round.
                let mut keys: Vec<Vec<u8>> = self
                    .documents
                    .catalogue()
                    .with_prefix(&scanned)
                    .map(|(k, _)| k)
                    .collect();
                if reverse {
                    keys.reverse();
                }
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
}

/// The secondary indexes a list query can scan.
#[derive(Debug, Clone, Copy)]
pub(super) enum Index {
    /// Receiving facility → referrals.
    Worklist,
    /// Facility → appointments by time.
    Appointments,
    /// Patient + service → lab reports by time.
    Labs,
}

/// The document id of an index entry: its last component.
pub(super) fn listed_document(entry: &[u8]) -> String {
    entry
        .rsplit(|b| *b == 0)
        .next()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default()
}
