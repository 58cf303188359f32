//! Which patient each stored document is filed under, kept in memory.
//!
//! Documents are stored under their patient's key (so a patient's record is one range scan and
//! needs no separate index entry per document). Finding a document by its id alone (a newer
//! version, a receipt, an acknowledgement) needs its patient: this map answers that without a
//! sled lookup, and answers "never stored" for most first versions without touching sled.
//!
//! It holds a 64-bit hash of each document id and a slot number for its patient's key (each
//! patient key once), about 30 bytes per document plus 100 per patient; it is rebuilt from
//! the store's keys at open. A hash answers with candidate patients: the caller confirms in
//! sled. Two documents with one hash keep both patients; a document moved to another patient
//! (a corrected citizen ID) keeps its old candidate, which only costs a lookup.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::{FixedState, RandomState};

/// Set in a slot value when it indexes `shared` (several candidates) instead of `patients`.
const SHARED: u32 = 1 << 31;

/// More patients (or shared hashes) than the filing numbers (2^31).
#[derive(Debug, thiserror::Error)]
#[error(
    "one region's store holds more than 2^31 patients or shared document hashes; split the region across stores"
)]
pub struct FilingFull;

/// Document id hash → patient key candidates.
// foldhash, not std's SipHash: the writer looks a document up in here for every event.
#[derive(Default)]
pub struct DocumentFiling {
    by_document: HashMap<u64, u32, RandomState>,
    /// Candidate lists of hashes held by more than one patient.
    shared: Vec<Vec<u32>>,
    patients: Vec<Arc<[u8]>>,
    slot_of: HashMap<Arc<[u8]>, u32, RandomState>,
}

/// The hash a document id is held under (stable within a process, which is all it needs).
pub(crate) fn hash(document_id: &[u8]) -> u64 {
    FixedState::default().hash_one(document_id)
}

impl DocumentFiling {
    /// Records that `document_id` is (or may be) filed under `patient_key`.
    pub fn add(&mut self, document_id: &[u8], patient_key: &[u8]) -> Result<(), FilingFull> {
        let slot = self.slot(patient_key)?;
        let h = hash(document_id);
        let Some(&held) = self.by_document.get(&h) else {
            self.by_document.insert(h, slot);
            return Ok(());
        };
        if held & SHARED != 0 {
            let list = &mut self.shared[(held & !SHARED) as usize];
            if !list.contains(&slot) {
                list.push(slot);
            }
        } else if held != slot {
            let index = numbered(self.shared.len())?;
            self.shared.push(vec![held, slot]);
            self.by_document.insert(h, index | SHARED);
        }
        Ok(())
    }

    /// The patient keys `document_id` may be filed under (empty: never stored).
    pub fn candidates(&self, document_id: &[u8]) -> Vec<Arc<[u8]>> {
        match self.by_document.get(&hash(document_id)) {
            None => Vec::new(),
            Some(&held) if held & SHARED != 0 => self.shared[(held & !SHARED) as usize]
                .iter()
                .map(|s| Arc::clone(&self.patients[*s as usize]))
                .collect(),
            Some(&slot) => vec![Arc::clone(&self.patients[slot as usize])],
        }
    }

    /// Number of distinct document hashes held.
    pub fn len(&self) -> usize {
        self.by_document.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.by_document.is_empty()
    }

    fn slot(&mut self, patient_key: &[u8]) -> Result<u32, FilingFull> {
        if let Some(&s) = self.slot_of.get(patient_key) {
            return Ok(s);
        }
        let key: Arc<[u8]> = Arc::from(patient_key);
        let s = numbered(self.patients.len())?;
        self.patients.push(Arc::clone(&key));
        self.slot_of.insert(key, s);
        Ok(s)
    }
}

/// The number of the next entry of a list, below the `SHARED` bit.
fn numbered(len: usize) -> Result<u32, FilingFull> {
    u32::try_from(len)
        .ok()
        .filter(|n| n & SHARED == 0)
        .ok_or(FilingFull)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filed(entries: &[(&str, &str)]) -> DocumentFiling {
        let mut f = DocumentFiling::default();
        for (doc, patient) in entries {
            f.add(doc.as_bytes(), patient.as_bytes()).expect("add");
        }
        f
    }

    fn keys(f: &DocumentFiling, doc: &str) -> Vec<String> {
        f.candidates(doc.as_bytes())
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn a_document_is_found_under_its_patient_and_unknown_ones_are_absent() {
        let f = filed(&[
            ("doc-1", "patient-a"),
            ("doc-2", "patient-a"),
            ("doc-1", "patient-a"),
        ]);
        assert_eq!(keys(&f, "doc-1"), ["patient-a"]);
        assert_eq!(keys(&f, "doc-2"), ["patient-a"]);
        assert!(keys(&f, "doc-3").is_empty());
        assert_eq!(f.patients.len(), 1, "a patient key is held once");
    }

    #[test]
    fn a_moved_document_keeps_both_candidates() {
        let mut f = filed(&[
            ("doc-1", "patient-a"),
            ("doc-1", "patient-b"),
            ("doc-1", "patient-c"),
            ("doc-1", "patient-b"),
        ]);
        assert_eq!(keys(&f, "doc-1"), ["patient-a", "patient-b", "patient-c"]);
        f.add(b"doc-2", b"patient-c").expect("add");
        assert_eq!(keys(&f, "doc-2"), ["patient-c"]);
    }
}
