//! Documents stored in bundles: each atomic sled batch writes the documents it changed as one
//! sled value (a bundle), and the catalogue in memory says where each document's current
//! value lies.
//!
//! Why: sled 0.34 costs about the same per key written whatever its size, and a key at a
//! random place of a large tree (documents were filed under their patient) costs the most:
//! leaf splits and copy-on-write node rewrites took ~75% of the writer's CPU, and sled's log
//! threads a fifth of the process. One key per batch of about a hundred documents, at the
//! end of the tree, cost ~6 µs of CPU per document against ~45 in a bench of sled alone.
//!
//! The catalogue is derived from the bundles: rebuilt at open by replaying them in the order
//! they were written (the latest record of each document id is its current value; a document
//! has one key at a time, so its older records under other keys are dead), and changed by the
//! writer only after the sled batch holding the bundle has landed. Its keys are held in
//! prefix-compressed blocks (see `packed`): about 60 bytes of memory per document.
//!
//! A bundle whose records are mostly dead (newer versions written since) is compacted: its
//! live records are copied into a new bundle, and only once the catalogue points there is the
//! old one removed, so a reader holding an old span finds either the old bundle or, looking
//! again, the new span.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use crate::packed::PackedMap;

/// Where a document's stored value lies: a span of a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The bundle's number (its sled key after the space byte, big-endian).
    pub bundle: u64,
    /// Offset of the value in the bundle.
    pub offset: u32,
    /// Length of the value.
    pub len: u32,
}

impl Span {
    /// The value's bytes in `bundle`, if the bundle is long enough.
    pub fn of<'a>(&self, bundle: &'a [u8]) -> Option<&'a [u8]> {
        bundle.get(self.offset as usize..self.offset as usize + self.len as usize)
    }
}

/// A bundle's bytes could not be read back as records.
#[derive(Debug, thiserror::Error)]
#[error("bundle {bundle} is truncated at byte {at}")]
pub struct Truncated {
    bundle: u64,
    at: usize,
}

/// A bundle being written: records of `[key length u32][key][value length u32][value]`.
#[derive(Debug, Default)]
pub struct BundleWriter {
    bytes: Vec<u8>,
    records: u32,
}

impl BundleWriter {
    /// Appends a record; where its value lies (offset, length).
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> (u32, u32) {
        for part in [key, value] {
            self.bytes.extend_from_slice(&len32(part).to_be_bytes());
            self.bytes.extend_from_slice(part);
        }
        self.records += 1;
        (len32(&self.bytes) - len32(value), len32(value))
    }

    /// Records written so far.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// The bundle's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

fn len32(b: &[u8]) -> u32 {
    // A document is a Kafka message (at most a few MiB) and a bundle a hundred of them, far
    // below 4 GiB: a longer one is a bug, not input.
    #[allow(clippy::expect_used)]
    u32::try_from(b.len()).expect("a record under 4 GiB")
}

/// The records of bundle number `bundle`: (key, span of its value), in the order written.
pub fn records(
    bundle: u64,
    bytes: &[u8],
) -> impl Iterator<Item = Result<(&[u8], Span), Truncated>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let mut part = || -> Option<(usize, usize)> {
            let len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
            let start = at + 4;
            bytes.get(start..start + len)?;
            at = start + len;
            Some((start, len))
        };
        let record = part().zip(part());
        Some(match record {
            Some(((k, klen), (v, vlen))) => Ok((
                &bytes[k..k + klen],
                Span {
                    bundle,
                    offset: v as u32,
                    len: vlen as u32,
                },
            )),
            None => {
                let e = Truncated { bundle, at };
                at = bytes.len();
                Err(e)
            }
        })
    })
}

impl crate::packed::Packed for Span {
    fn pack(&self, out: &mut Vec<u8>) {
        use crate::packed::put_varint;
        put_varint(out, self.bundle);
        put_varint(out, u64::from(self.offset));
        put_varint(out, u64::from(self.len));
    }

    fn unpack(bytes: &[u8], at: &mut usize) -> Option<Self> {
        use crate::packed::take_varint;
        Some(Self {
            bundle: take_varint(bytes, at)?,
            offset: u32::try_from(take_varint(bytes, at)?).ok()?,
            len: u32::try_from(take_varint(bytes, at)?).ok()?,
        })
    }
}

/// How many records a bundle holds and how many of them are current.
#[derive(Debug, Clone, Copy)]
struct Use {
    records: u32,
    live: u32,
}

/// Where each stored document's current value lies, by the document's key (ordered, so a
/// patient's documents and a patient's lab reports by service and time are range scans).
#[derive(Debug, Default, Clone)]
pub struct Catalogue {
    spans: PackedMap<Span>,
    bundles: HashMap<u64, Use, foldhash::fast::RandomState>,
    /// Bundles with fewer than half of their records current, to compact.
    sparse: BTreeSet<u64>,
    next: u64,
}

impl Catalogue {
    /// The span of the document at `key`.
    pub fn get(&self, key: &[u8]) -> Option<Span> {
        self.spans.get(key)
    }

    /// The documents whose key starts with `prefix`, in key order.
    pub fn with_prefix(&self, prefix: &[u8]) -> impl Iterator<Item = (Vec<u8>, Span)> + '_ {
        let end = crate::lists::prefix_end(prefix);
        self.spans.range(
            Bound::Included(prefix),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        )
    }

    /// Every document, in key order.
    pub fn all(&self) -> impl Iterator<Item = (Vec<u8>, Span)> + '_ {
        self.spans.iter()
    }

    /// Documents held.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when no document is held.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bundles held.
    pub fn bundles(&self) -> usize {
        self.bundles.len()
    }

    /// A number for a new bundle, above every bundle held or seen.
    pub fn next_bundle(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Registers bundle `bundle` of `records` records, before its records are placed.
    pub fn add_bundle(&mut self, bundle: u64, records: u32) {
        self.next = self.next.max(bundle);
        self.bundles.insert(bundle, Use { records, live: 0 });
    }

    /// Places the document at `key` at `span` (None: removes it); the bundle of its previous
    /// span loses a current record.
    pub fn set(&mut self, key: &[u8], span: Option<Span>) {
        let old = match span {
            Some(s) => {
                if let Some(u) = self.bundles.get_mut(&s.bundle) {
                    u.live += 1;
                }
                self.spans.insert(key, s)
            }
            None => self.spans.remove(key),
        };
        if let Some(old) = old
            && let Some(u) = self.bundles.get_mut(&old.bundle)
        {
            u.live = u.live.saturating_sub(1);
            if u.live * 2 < u.records {
                self.sparse.insert(old.bundle);
            }
        }
    }

    /// A bundle with fewer than half of its records current, if any.
    pub fn sparse(&self) -> Option<u64> {
        self.sparse.first().copied()
    }

    /// True when none of bundle `bundle`'s records is current.
    pub fn is_unused(&self, bundle: u64) -> bool {
        self.bundles.get(&bundle).is_some_and(|u| u.live == 0)
    }

    /// The highest bundle number held or seen (new bundles get higher ones).
    pub fn last_number(&self) -> u64 {
        self.next
    }

    /// Every bundle held: (number, records, current records).
    pub fn uses(&self) -> impl Iterator<Item = (u64, u32, u32)> + '_ {
        self.bundles.iter().map(|(n, u)| (*n, u.records, u.live))
    }

    /// Bundles none of whose records is current.
    pub fn unused(&self) -> Vec<u64> {
        self.bundles
            .iter()
            .filter(|(_, u)| u.live == 0)
            .map(|(n, _)| *n)
            .collect()
    }

    /// A catalogue as a checkpoint recorded it: the spans by key, bundle uses (number,
    /// records, current records) and the highest bundle number seen.
    pub fn restore(
        spans: PackedMap<Span>,
        uses: impl IntoIterator<Item = (u64, u32, u32)>,
        last_number: u64,
    ) -> Self {
        let mut c = Self {
            spans,
            next: last_number,
            ..Self::default()
        };
        for (number, records, live) in uses {
            c.bundles.insert(number, Use { records, live });
            if live * 2 < records {
                c.sparse.insert(number);
            }
        }
        c
    }

    /// Bytes the keys and spans take in memory (packed, without the allocator's overhead).
    pub fn packed_bytes(&self) -> usize {
        self.spans.packed_bytes()
    }

    /// Forgets a bundle (compacted or empty; none of its records is current any more).
    pub fn forget_bundle(&mut self, bundle: u64) {
        self.bundles.remove(&bundle);
        self.sparse.remove(&bundle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written_and_a_truncated_bundle_says_where() {
        let mut w = BundleWriter::default();
        let a = w.push(b"Pp\0doc-1", b"first");
        let b = w.push(b"Pp\0doc-2", b"");
        assert_eq!(w.records(), 2);
        let bytes = w.into_bytes();
        let read: Vec<_> = records(7, &bytes).collect::<Result<_, _>>().expect("read");
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].0, b"Pp\0doc-1");
        assert_eq!((read[0].1.offset, read[0].1.len), a);
        assert_eq!(read[0].1.of(&bytes), Some(b"first".as_slice()));
        assert_eq!((read[1].1.offset, read[1].1.len), b);
        assert_eq!(read[1].1.bundle, 7);
        let cut = &bytes[..bytes.len() - 3];
        let read: Vec<_> = records(7, cut).collect();
        assert_eq!(read.len(), 2);
        assert!(read[1].is_err(), "{read:?}");
    }

    #[test]
    fn a_bundle_is_sparse_once_fewer_than_half_of_its_records_are_current() {
        let mut c = Catalogue::default();
        let first = c.next_bundle();
        c.add_bundle(first, 4);
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            let span = Span {
                bundle: first,
                offset: i as u32,
                len: 1,
            };
            c.set(*k, Some(span));
        }
        let second = c.next_bundle();
        assert!(second > first);
        c.add_bundle(second, 2);
        let moved = |offset| {
            Some(Span {
                bundle: second,
                offset,
                len: 1,
            })
        };
        c.set(b"a", moved(0));
        c.set(b"b", None);
        assert_eq!(c.sparse(), None, "two of four still current");
        c.set(b"c", moved(1));
        assert_eq!(c.sparse(), Some(first));
        assert_eq!(c.len(), 3);
        let keys: Vec<_> = c.with_prefix(b"").map(|(k, _)| k.to_vec()).collect();
        assert_eq!(keys, [b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        assert_eq!(c.with_prefix(b"c").count(), 1);
        // Keys of other lengths and common prefixes sort as bytes do.
        for k in [
            &b"Pab"[..],
            b"Pab\0x",
            b"Pab\0",
            b"Pabcdefghij",
            b"Pabcdefghi",
            b"P",
        ] {
            c.set(k, moved(2));
        }
        let keys: Vec<_> = c.all().map(|(k, _)| k.to_vec()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(c.with_prefix(b"Pab").count(), 5);
        c.forget_bundle(first);
        assert_eq!((c.sparse(), c.bundles()), (None, 1));
        assert_eq!(c.len(), 9);
    }
}
