//! Which patient each stored document is filed under, kept in memory.
//!
//! Documents are stored under their patient's key (so a patient's record is one range scan and
//! needs no separate index entry per document). Finding a document by its id alone (a newer
//! version, a receipt, an acknowledgement) needs its patient: this map answers that without a
//! sled lookup, and answers "never stored" for most first versions without touching sled.
//!
//! It holds 32 bits of a hash of each document id and a slot number for its patient's key,
//! each patient key once, one after the other in one buffer: about 20 bytes per document and
//! 80 per patient (a 64-byte key); it is rebuilt from the store's keys at open. A hash answers
//! with candidate patients: the caller confirms in the catalogue. Two documents with one hash
//! (about one pair in 2^32; a hash is 32 bits because a false candidate only costs a lookup)
//! keep both patients; a document moved to another patient (a corrected citizen ID) keeps its
//! old candidate, which only costs a lookup.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::{FixedState, RandomState};

/// Set in a slot value when it indexes `shared` (several candidates) instead of a patient.
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
    by_document: ShortHashes,
    /// Candidate lists of hashes held by more than one patient.
    shared: Vec<Vec<u32>>,
    /// The patient keys by slot (a key is never moved, so a growing filing leaves no
    /// copies behind for the allocator to return).
    patients: Vec<Box<[u8]>>,
    /// Patient slots by the hash of their key.
    slot_of: hashbrown::HashTable<u32>,
}

/// The hash a document id is held under (stable within a process, which is all it needs).
pub(crate) fn hash(document_id: &[u8]) -> u64 {
    FixedState::default().hash_one(document_id)
}

/// The 32 bits of a document id's hash the filing keeps.
fn short_hash(document_id: &[u8]) -> u32 {
    (hash(document_id) >> 32) as u32
}

/// The key of patient `slot`.
fn patient(patients: &[Box<[u8]>], slot: u32) -> &[u8] {
    patients.get(slot as usize).map_or(&[], |k| k)
}

impl DocumentFiling {
    /// Records that `document_id` is (or may be) filed under `patient_key`.
    pub fn add(&mut self, document_id: &[u8], patient_key: &[u8]) -> Result<(), FilingFull> {
        let slot = self.slot(patient_key)?;
        let h = short_hash(document_id);
        let Some(held) = self.by_document.get(h) else {
            self.by_document.set(h, slot);
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
            self.by_document.set(h, index | SHARED);
        }
        Ok(())
    }

    /// The patient keys `document_id` may be filed under (empty: never stored).
    pub fn candidates(&self, document_id: &[u8]) -> Vec<Box<[u8]>> {
        let key = |s: &u32| Box::from(patient(&self.patients, *s));
        match self.by_document.get(short_hash(document_id)) {
            None => Vec::new(),
            Some(held) if held & SHARED != 0 => self.shared[(held & !SHARED) as usize]
                .iter()
                .map(key)
                .collect(),
            Some(slot) => vec![key(&slot)],
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

    /// Number of patients held.
    pub fn patients(&self) -> usize {
        self.patients.len()
    }

    /// Makes room for `documents` more documents.
    pub fn reserve(&mut self, documents: usize) {
        self.by_document.sorted.reserve_exact(documents);
    }

    /// Records that `document_id` is filed under `patient_key`, as `add` does, for many
    /// documents at once (at open): no hash table grows, one sort in `settle`, which must
    /// come before the filing is read again.
    pub fn add_unsettled(
        &mut self,
        document_id: &[u8],
        patient_key: &[u8],
    ) -> Result<(), FilingFull> {
        let slot = self.slot(patient_key)?;
        self.by_document
            .sorted
            .push((short_hash(document_id), slot));
        Ok(())
    }

    /// Sorts what `add_unsettled` recorded in with the rest.
    pub fn settle(&mut self) -> Result<(), FilingFull> {
        let mut pairs = std::mem::take(&mut self.by_document.sorted);
        pairs.extend(self.by_document.recent.drain());
        // Shared candidate lists are rebuilt below with the rest.
        let shared = std::mem::take(&mut self.shared);
        let mut expanded = Vec::new();
        pairs.retain(|&(h, held)| {
            if held & SHARED == 0 {
                return true;
            }
            expanded.extend(shared[(held & !SHARED) as usize].iter().map(|s| (h, *s)));
            false
        });
        pairs.extend(expanded);
        pairs.sort_unstable();
        pairs.dedup();
        // Runs of one hash with several patients become shared candidate lists, in place.
        let mut kept = 0;
        let mut i = 0;
        while i < pairs.len() {
            let h = pairs[i].0;
            let run = pairs[i..].iter().take_while(|p| p.0 == h).count();
            pairs[kept] = if run == 1 {
                pairs[i]
            } else {
                let index = numbered(self.shared.len())?;
                self.shared
                    .push(pairs[i..i + run].iter().map(|p| p.1).collect());
                (h, index | SHARED)
            };
            kept += 1;
            i += run;
        }
        pairs.truncate(kept);
        self.by_document.sorted = pairs;
        Ok(())
    }

    fn slot(&mut self, patient_key: &[u8]) -> Result<u32, FilingFull> {
        let h = hash(patient_key);
        let patients = &self.patients;
        if let Some(&s) = self
            .slot_of
            .find(h, |s| patient(patients, *s) == patient_key)
        {
            return Ok(s);
        }
        let s = numbered(self.patients.len())?;
        self.patients.push(patient_key.into());
        let patients = &self.patients;
        self.slot_of
            .insert_unique(h, s, |s| hash(patient(patients, *s)));
        Ok(s)
    }
}

/// Short document hashes → slot values: most in a sorted vector (8 bytes each, against
/// about 18 in a hash map, whose tables double), those added since its last merge in a hash
/// map that is merged into it once it holds an eighth as many.
#[derive(Default)]
struct ShortHashes {
    sorted: Vec<(u32, u32)>,
    recent: HashMap<u32, u32, RandomState>,
}

impl ShortHashes {
    fn get(&self, h: u32) -> Option<u32> {
        self.recent.get(&h).copied().or_else(|| {
            self.sorted
                .binary_search_by_key(&h, |e| e.0)
                .ok()
                .map(|i| self.sorted[i].1)
        })
    }

    fn set(&mut self, h: u32, value: u32) {
        if let Ok(i) = self.sorted.binary_search_by_key(&h, |e| e.0) {
            self.sorted[i].1 = value;
            return;
        }
        self.recent.insert(h, value);
        if self.recent.len() > (self.sorted.len() / 8).max(1024) {
            self.merge();
        }
    }

    fn merge(&mut self) {
        let mut recent: Vec<(u32, u32)> = std::mem::take(&mut self.recent).into_iter().collect();
        recent.sort_unstable();
        let mut merged = Vec::with_capacity(self.sorted.len() + recent.len());
        let (mut old, mut new) = (self.sorted.iter().peekable(), recent.iter().peekable());
        // The two hold different hashes (`set` changes a sorted one in place).
        loop {
            let next = match (old.peek(), new.peek()) {
                (Some(a), Some(b)) if a.0 < b.0 => old.next(),
                (Some(_), Some(_)) | (None, Some(_)) => new.next(),
                (Some(_), None) => old.next(),
                (None, None) => break,
            };
            merged.extend(next.copied());
        }
        self.sorted = merged;
    }

    fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
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
        assert_eq!(f.patients(), 1, "a patient key is held once");
    }

    #[test]
    fn documents_added_in_bulk_read_as_those_added_one_by_one() {
        let entries = [
            ("doc-1", "patient-a"),
            ("doc-2", "patient-a"),
            ("doc-1", "patient-b"),
            ("doc-3", "patient-c"),
            ("doc-1", "patient-a"),
        ];
        let mut bulk = filed(&entries[..1]);
        bulk.add(b"doc-1", b"patient-c").expect("add");
        bulk.reserve(entries.len());
        for (doc, patient) in &entries[1..] {
            bulk.add_unsettled(doc.as_bytes(), patient.as_bytes())
                .expect("add");
        }
        bulk.settle().expect("settle");
        let mut one_by_one = filed(&entries);
        one_by_one.add(b"doc-1", b"patient-c").expect("add");
        for doc in ["doc-1", "doc-2", "doc-3", "doc-4"] {
            let mut a = keys(&bulk, doc);
            let mut b = keys(&one_by_one, doc);
            a.sort();
            b.sort();
            assert_eq!(a, b, "{doc}");
        }
        assert_eq!(bulk.len(), 3);
    }

    #[test]
    fn hashes_read_back_across_merges_of_the_sorted_part() {
        let mut h = ShortHashes::default();
        let key = |n: u32| n.wrapping_mul(2_654_435_761);
        for n in 0..20_000 {
            h.set(key(n), n);
        }
        assert!(h.sorted.len() > h.recent.len(), "merged");
        for n in (0..20_000).step_by(3) {
            h.set(key(n), n + 1);
        }
        assert_eq!(h.len(), 20_000);
        for n in 0..20_000 {
            assert_eq!(h.get(key(n)), Some(if n % 3 == 0 { n + 1 } else { n }));
        }
        assert_eq!(h.get(key(20_001)), None);
        assert!(h.sorted.is_sorted());
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
