//! The list indexes of a region's store, held in memory: a receiving facility's referrals by
//! status and issue date (its worklist) and a facility's appointments by time.
//!
//! Why in memory: every sled write costs about the same whatever its size, and an index entry
//! in sled made a referral's or appointment's first version two writes instead of one (the
//! store-level apply ran ~55% faster without them). The lists are derived from the documents:
//! rebuilt from them when the store opens (so a crash cannot leave them out of step with what
//! sled holds), and the writer changes them only after the sled batch that holds the documents
//! has landed. Held as prefix-compressed blocks (see `packed`): entries of one facility share
//! most of their bytes.
//!
//! An entry's bytes are its components joined by 0x00, the document id last; a page token is
//! the hex of the last entry of its page.

use std::ops::Bound;

use crate::packed::{Builder, OutOfOrder, PackedMap};

/// A list a query can page through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// Receiving facility, status, issued yyyymmdd, document id.
    Worklist,
    /// Facility, appointment yyyymmddHHMM, document id.
    Appointments,
}

/// A document's place in a list: the list and the entry's bytes.
pub type ListEntry = (List, Box<[u8]>);

/// One change the writer makes to a list once its sled batch has landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListChange {
    /// A document joins a list under this entry.
    Add(List, Box<[u8]>),
    /// An entry leaves its list (an older version's, or a referral's before its status moved).
    Remove(List, Box<[u8]>),
}

/// The lists of one region's store.
#[derive(Debug, Default, Clone)]
pub struct Lists {
    worklist: PackedMap<()>,
    appointments: PackedMap<()>,
}

impl Lists {
    fn set(&self, list: List) -> &PackedMap<()> {
        match list {
            List::Worklist => &self.worklist,
            List::Appointments => &self.appointments,
        }
    }

    fn set_mut(&mut self, list: List) -> &mut PackedMap<()> {
        match list {
            List::Worklist => &mut self.worklist,
            List::Appointments => &mut self.appointments,
        }
    }

    /// Lists holding `entries` (in any order): sorted and built in bulk, which at a store's
    /// open is several times faster than inserting them one by one.
    pub fn from_entries(entries: impl IntoIterator<Item = ListEntry>) -> Self {
        let mut entries: Vec<ListEntry> = entries.into_iter().collect();
        entries.sort_unstable_by(|a, b| (a.0 as u8, &a.1).cmp(&(b.0 as u8, &b.1)));
        entries.dedup();
        let mut built = ListsBuilder::default();
        for (list, entry) in &entries {
            // Sorted and without repeats, so in order.
            let _ = built.push(*list, entry);
        }
        built.finish()
    }

    /// Applies changes in the order the writer made them.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = ListChange>) {
        for change in changes {
            match change {
                ListChange::Add(list, entry) => {
                    self.set_mut(list).insert(&entry, ());
                }
                ListChange::Remove(list, entry) => {
                    self.set_mut(list).remove(&entry);
                }
            }
        }
    }

    /// Up to `limit` entries of `list` that start with `prefix` and pass `keep`, in order (or
    /// reverse), strictly after `after`. Costs the page, not the length of the list.
    pub fn scan(
        &self,
        list: List,
        prefix: &[u8],
        after: Option<&[u8]>,
        reverse: bool,
        keep: &dyn Fn(&[u8]) -> bool,
        limit: usize,
    ) -> Vec<Vec<u8>> {
        let set = self.set(list);
        let end = prefix_end(prefix);
        let (mut lower, mut upper) = (
            Bound::Included(prefix),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        match after {
            Some(a) if !reverse && a >= prefix => lower = Bound::Excluded(a),
            Some(a) if reverse && end.as_deref().is_none_or(|e| a < e) => {
                upper = Bound::Excluded(a);
            }
            _ => {}
        }
        if matches!((lower, upper), (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u)) if l >= u)
        {
            return Vec::new();
        }
        let entries: Box<dyn Iterator<Item = (Vec<u8>, ())>> = if reverse {
            Box::new(set.range_rev(lower, upper))
        } else {
            Box::new(set.range(lower, upper))
        };
        entries
            .map(|(e, ())| e)
            .filter(|e| keep(e))
            .take(limit)
            .collect()
    }

    /// Every entry of both lists, the worklist's first, each list in order.
    pub fn entries(&self) -> impl Iterator<Item = (List, Vec<u8>)> + '_ {
        let worklist = self.worklist.iter().map(|(e, ())| (List::Worklist, e));
        let appointments = self
            .appointments
            .iter()
            .map(|(e, ())| (List::Appointments, e));
        worklist.chain(appointments)
    }

    /// Entries held in memory, over both lists.
    pub fn len(&self) -> usize {
        self.worklist.len() + self.appointments.len()
    }

    /// True when no list holds anything.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the entries take in memory (packed, without the allocator's overhead).
    pub fn packed_bytes(&self) -> usize {
        self.worklist.packed_bytes() + self.appointments.packed_bytes()
    }
}

/// Builds lists from each list's entries in strictly ascending order (as `Lists::entries`
/// gives them).
#[derive(Default)]
pub struct ListsBuilder {
    worklist: Builder<()>,
    appointments: Builder<()>,
}

impl ListsBuilder {
    /// Appends an entry to `list`, above every entry appended to it before.
    pub fn push(&mut self, list: List, entry: &[u8]) -> Result<(), OutOfOrder> {
        match list {
            List::Worklist => self.worklist.push(entry, ()),
            List::Appointments => self.appointments.push(entry, ()),
        }
    }

    /// The lists built.
    pub fn finish(self) -> Lists {
        Lists {
            worklist: self.worklist.finish(),
            appointments: self.appointments.finish(),
        }
    }
}

/// The least key above every key that starts with `prefix` (None: no such key, the prefix is
/// empty or all 0xFF).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(entries: &[&str]) -> Lists {
        let mut l = Lists::default();
        l.apply(
            entries
                .iter()
                .map(|e| ListChange::Add(List::Worklist, e.as_bytes().into())),
        );
        l
    }

    fn scan(
        l: &Lists,
        prefix: &str,
        after: Option<&str>,
        reverse: bool,
        limit: usize,
    ) -> Vec<String> {
        l.scan(
            List::Worklist,
            prefix.as_bytes(),
            after.map(str::as_bytes),
            reverse,
            &|_| true,
            limit,
        )
        .into_iter()
        .map(|e| String::from_utf8(e).expect("utf-8"))
        .collect()
    }

    #[test]
    fn a_scan_pages_through_the_prefix_in_either_direction() {
        let l = lists(&["a\0x", "b\0a", "b\0b", "b\0c", "b\x01", "c\0a"]);
        assert_eq!(scan(&l, "b\0", None, false, 10), ["b\0a", "b\0b", "b\0c"]);
        assert_eq!(scan(&l, "b\0", None, true, 2), ["b\0c", "b\0b"]);
        assert_eq!(scan(&l, "b\0", Some("b\0a"), false, 10), ["b\0b", "b\0c"]);
        assert_eq!(scan(&l, "b\0", Some("b\0b"), true, 10), ["b\0a"]);
        assert!(scan(&l, "b\0", Some("b\0c"), false, 10).is_empty());
        assert!(scan(&l, "b\0", Some("b\0a"), true, 10).is_empty());
        // A token from elsewhere does not widen the prefix.
        assert_eq!(scan(&l, "b\0", Some("a"), false, 10).len(), 3);
        assert_eq!(scan(&l, "b\0", Some("z"), true, 10).len(), 3);
        assert_eq!(scan(&l, "", None, false, 10).len(), 6);
    }

    #[test]
    fn kept_entries_fill_the_page_and_changes_apply_in_order() {
        let mut l = lists(&["f\x001", "f\x002", "f\x003", "f\x004"]);
        let even = |e: &[u8]| e.last().is_some_and(|b| b % 2 == 0);
        let page = l.scan(List::Worklist, b"f\0", None, false, &even, 1);
        assert_eq!(page, [b"f\x002".to_vec()]);
        l.apply([
            ListChange::Remove(List::Worklist, b"f\x002".as_slice().into()),
            ListChange::Add(List::Worklist, b"f\x005".as_slice().into()),
            ListChange::Remove(List::Worklist, b"f\x005".as_slice().into()),
            ListChange::Add(List::Appointments, b"f\x009".as_slice().into()),
        ]);
        assert_eq!(
            scan(&l, "f", None, false, 10),
            ["f\x001", "f\x003", "f\x004"]
        );
        assert_eq!(l.len(), 4, "three in the worklist, one appointment");
        assert_eq!(
            l.scan(List::Appointments, b"f", None, false, &|_| true, 10),
            [b"f\x009".to_vec()]
        );
    }

    #[test]
    fn lists_built_in_bulk_equal_lists_built_one_by_one() {
        let entries = [
            (List::Appointments, "b"),
            (List::Worklist, "z"),
            (List::Worklist, "a"),
            (List::Appointments, "a"),
            (List::Worklist, "a"),
        ];
        let boxed = || entries.iter().map(|(l, e)| (*l, e.as_bytes().into()));
        let bulk = Lists::from_entries(boxed());
        let mut one_by_one = Lists::default();
        one_by_one.apply(boxed().map(|(l, e)| ListChange::Add(l, e)));
        assert!(bulk.entries().eq(one_by_one.entries()));
        assert_eq!(bulk.len(), 4);
    }

    #[test]
    fn the_end_of_a_prefix_skips_trailing_high_bytes() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
