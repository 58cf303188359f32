//! An ordered map of byte keys held in prefix-compressed blocks.
//!
//! Why: the store's in-memory structures are ordered maps of long keys (a 64-character patient
//! key then a document id; a facility, a status and a date then a document id). In a
//! `BTreeMap` each key is an allocation of its own beside the tree's node, about 160 bytes a
//! document in the catalogue. Sorted keys share most of their bytes with the key before them,
//! so a block keeps each key as the length it shares with the one before and the rest (front
//! coding), its value packed beside it; a `BTreeMap` from each block's lower bound finds the
//! block. A lookup decodes at most one block and a change rewrites one, so `MAX_ENTRIES`
//! bounds both.

use std::collections::{BTreeMap, btree_map};
use std::marker::PhantomData;
use std::ops::Bound;
use std::sync::Arc;

/// Most entries in a block.
const MAX_ENTRIES: usize = 64;
/// Entries per block when built in bulk, leaving room for inserts before a split.
const BULK_ENTRIES: usize = 48;
/// A block left with fewer entries by a removal is merged with the next one.
const MIN_ENTRIES: usize = 16;

/// A value packed beside its key.
pub trait Packed: Copy {
    /// Appends the value's bytes.
    fn pack(&self, out: &mut Vec<u8>);
    /// Reads a value at `*at`, moving past it (None: not a value).
    fn unpack(bytes: &[u8], at: &mut usize) -> Option<Self>;
}

impl Packed for () {
    fn pack(&self, _: &mut Vec<u8>) {}

    fn unpack(_: &[u8], _: &mut usize) -> Option<Self> {
        Some(())
    }
}

/// Appends `n` as a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a LEB128 varint at `*at`, moving past it.
pub fn take_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(n);
        }
    }
    None
}

/// Entries front-coded one after the other: [shared varint][rest length varint][rest][value].
/// A block is never changed in place (an edit makes a new one), so copies of a map share them.
#[derive(Debug, Default, Clone)]
struct Block {
    bytes: Arc<[u8]>,
    entries: u16,
}

/// A block with its first key.
type Started = (Box<[u8]>, Block);

/// Walks a block's entries in order; the current key is in `key`.
struct Cursor<'a, V> {
    bytes: &'a [u8],
    at: usize,
    key: Vec<u8>,
    value: PhantomData<V>,
}

impl<'a, V: Packed> Cursor<'a, V> {
    fn new(block: &'a Block) -> Self {
        Self {
            bytes: &block.bytes,
            at: 0,
            key: Vec::new(),
            value: PhantomData,
        }
    }

    /// Moves to the next entry: its value (None: no more entries).
    fn advance(&mut self) -> Option<V> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let shared = usize::try_from(take_varint(self.bytes, &mut self.at)?).ok()?;
        let len = usize::try_from(take_varint(self.bytes, &mut self.at)?).ok()?;
        let rest = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.key.truncate(shared);
        self.key.extend_from_slice(rest);
        self.at += len;
        V::unpack(self.bytes, &mut self.at)
    }
}

/// A block being written.
#[derive(Default)]
struct Encoder {
    bytes: Vec<u8>,
    last: Vec<u8>,
    entries: usize,
}

impl Encoder {
    fn push<V: Packed>(&mut self, key: &[u8], value: V) {
        if self.entries == 0 {
            self.last.clear();
        }
        put_entry(&mut self.bytes, &self.last, key, value);
        self.last.clear();
        self.last.extend_from_slice(key);
        self.entries += 1;
    }

    fn finish(self) -> Block {
        Block {
            // An allocation of the block's size, whatever capacity the vector grew to.
            bytes: Arc::from(self.bytes.as_slice()),
            // At most MAX_ENTRIES + 1 (a split follows).
            entries: u16::try_from(self.entries).unwrap_or(u16::MAX),
        }
    }

    /// The block, or two halves of it when it holds more than `MAX_ENTRIES` (the second
    /// with its first key).
    fn finish_split<V: Packed>(self) -> (Block, Option<Started>) {
        if self.entries <= MAX_ENTRIES {
            return (self.finish(), None);
        }
        let whole = self.finish();
        let half = usize::from(whole.entries) / 2;
        let (mut first, mut second) = (Encoder::default(), Encoder::default());
        let mut c = Cursor::<V>::new(&whole);
        let mut start = None;
        while let Some(v) = c.advance() {
            if first.entries < half {
                first.push(&c.key, v);
            } else {
                start.get_or_insert_with(|| Box::<[u8]>::from(c.key.as_slice()));
                second.push(&c.key, v);
            }
        }
        (first.finish(), start.map(|k| (k, second.finish())))
    }
}

/// A block's bytes after one change, its entry count, and the value the change replaced.
struct Edit<V> {
    bytes: Vec<u8>,
    entries: usize,
    old: Option<V>,
}

/// `block` with the entry at `key` set to `value` (None: removed); None when nothing changes
/// (a removal of a key it does not hold). The entries before the change are copied as they
/// are and so are those after the next one: only the changed entry and the one after it are
/// encoded (the length it shares with the key before it changes).
fn edited<V: Packed>(block: &Block, key: &[u8], value: Option<V>) -> Option<Edit<V>> {
    let bytes = &block.bytes;
    let entries = usize::from(block.entries);
    let mut c = Cursor::<V>::new(block);
    let mut before = Vec::new();
    loop {
        let start = c.at;
        before.clear();
        before.extend_from_slice(&c.key);
        let Some(held) = c.advance() else {
            // Past the last entry: an insert appends.
            let mut out = bytes.to_vec();
            put_entry(&mut out, &before, key, value?);
            return Some(Edit {
                bytes: out,
                entries: entries + 1,
                old: None,
            });
        };
        let order = c.key.as_slice().cmp(key);
        if order == std::cmp::Ordering::Less {
            continue;
        }
        let mut out = Vec::with_capacity(bytes.len() + key.len() + 16);
        out.extend_from_slice(&bytes[..start]);
        let (changed, old) = match (order, value) {
            (std::cmp::Ordering::Greater, None) => return None,
            (std::cmp::Ordering::Greater, Some(v)) => {
                put_entry(&mut out, &before, key, v);
                put_entry(&mut out, key, &c.key, held);
                (entries + 1, None)
            }
            (_, Some(v)) => {
                put_entry(&mut out, &before, key, v);
                (entries, Some(held))
            }
            (_, None) => {
                if let Some(next) = c.advance() {
                    put_entry(&mut out, &before, &c.key, next);
                }
                (entries - 1, Some(held))
            }
        };
        out.extend_from_slice(&bytes[c.at..]);
        return Some(Edit {
            bytes: out,
            entries: changed,
            old,
        });
    }
}

/// Appends an entry for `key`, front-coded against `before` (empty: the block's first).
fn put_entry<V: Packed>(out: &mut Vec<u8>, before: &[u8], key: &[u8], value: V) {
    let shared = before.iter().zip(key).take_while(|(a, b)| a == b).count();
    put_varint(out, shared as u64);
    put_varint(out, (key.len() - shared) as u64);
    out.extend_from_slice(&key[shared..]);
    value.pack(out);
}

/// Keys in order, each with a value, in prefix-compressed blocks.
pub struct PackedMap<V> {
    /// Each block under a lower bound of its keys, above every key of the block before.
    blocks: BTreeMap<Box<[u8]>, Block>,
    len: usize,
    value: PhantomData<V>,
}

impl<V> Default for PackedMap<V> {
    fn default() -> Self {
        Self {
            blocks: BTreeMap::new(),
            len: 0,
            value: PhantomData,
        }
    }
}

/// A copy sharing every block with the original: a snapshot taken in the time it takes to copy
/// the block index (one entry per up to 64 keys).
impl<V> Clone for PackedMap<V> {
    fn clone(&self) -> Self {
        Self {
            blocks: self.blocks.clone(),
            len: self.len,
            value: PhantomData,
        }
    }
}

impl<V> std::fmt::Debug for PackedMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMap")
            .field("len", &self.len)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl<V: Packed> PackedMap<V> {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the blocks hold (keys and values, without the allocator's and the tree's own).
    pub fn packed_bytes(&self) -> usize {
        self.blocks.values().map(|b| b.bytes.len()).sum()
    }

    /// The value at `key`.
    pub fn get(&self, key: &[u8]) -> Option<V> {
        let (_, block) = self.blocks.range::<[u8], _>(up_to(key)).next_back()?;
        let mut c = Cursor::<V>::new(block);
        while let Some(v) = c.advance() {
            match c.key.as_slice().cmp(key) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Some(v),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }

    /// Sets the value at `key`; the value it replaced.
    pub fn insert(&mut self, key: &[u8], value: V) -> Option<V> {
        if self
            .blocks
            .range::<[u8], _>(up_to(key))
            .next_back()
            .is_none()
        {
            // Below every block: the first block now starts at `key`.
            let first = self.blocks.pop_first().map(|(_, b)| b).unwrap_or_default();
            self.blocks.insert(key.into(), first);
        }
        let (replaced, split) = {
            let (_, block) = self.blocks.range_mut::<[u8], _>(up_to(key)).next_back()?;
            let Edit {
                bytes,
                entries,
                old,
            } = edited(block, key, Some(value))?;
            let e = Encoder {
                bytes,
                entries,
                last: Vec::new(),
            };
            let (whole, split) = e.finish_split::<V>();
            *block = whole;
            (old, split)
        };
        if let Some((start, second)) = split {
            self.blocks.insert(start, second);
        }
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    /// Removes the entry at `key`; its value.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let (start, removed, left) = {
            let (start, block) = self.blocks.range_mut::<[u8], _>(up_to(key)).next_back()?;
            let Edit {
                bytes,
                entries,
                old,
            } = edited::<V>(block, key, None)?;
            let e = Encoder {
                bytes,
                entries,
                last: Vec::new(),
            };
            *block = e.finish();
            (start.clone(), old, entries)
        };
        self.len -= 1;
        if left == 0 {
            self.blocks.remove(&start);
        } else if left < MIN_ENTRIES {
            self.merge_with_next(start);
        }
        removed
    }

    /// Merges the block at `start` with the one after it (split again if too large).
    fn merge_with_next(&mut self, start: Box<[u8]>) {
        let Some(next) = self
            .blocks
            .range::<[u8], _>((Bound::Excluded(&*start), Bound::Unbounded))
            .next()
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let Some(later) = self.blocks.remove(&next) else {
            return;
        };
        let Some(block) = self.blocks.get_mut(&start) else {
            return;
        };
        let mut e = Encoder::default();
        for b in [&*block, &later] {
            let mut c = Cursor::<V>::new(b);
            while let Some(v) = c.advance() {
                e.push(&c.key, v);
            }
        }
        let (whole, split) = e.finish_split::<V>();
        *block = whole;
        if let Some((k, second)) = split {
            self.blocks.insert(k, second);
        }
    }

    /// The entries between `lower` and `upper`, in order: (key, value).
    pub fn range(&self, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Range<'_, V> {
        let start = match lower {
            Bound::Included(k) | Bound::Excluded(k) => self
                .blocks
                .range::<[u8], _>(up_to(k))
                .next_back()
                .map(|(s, _)| &**s),
            Bound::Unbounded => None,
        };
        let blocks = match start {
            Some(s) => self
                .blocks
                .range::<[u8], _>((Bound::Included(s), Bound::Unbounded)),
            None => self.blocks.range::<[u8], _>(..),
        };
        Range {
            blocks,
            cursor: None,
            bounds: Bounds::new(lower, upper),
        }
    }

    /// The entries between `lower` and `upper`, in reverse order: (key, value).
    pub fn range_rev(&self, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> RangeRev<'_, V> {
        let blocks = match upper {
            Bound::Included(k) | Bound::Excluded(k) => self
                .blocks
                .range::<[u8], _>((Bound::Unbounded, Bound::Included(k))),
            Bound::Unbounded => self.blocks.range::<[u8], _>(..),
        };
        RangeRev {
            blocks: blocks.rev(),
            buffer: Vec::new(),
            bounds: Bounds::new(lower, upper),
        }
    }

    /// Every entry, in order.
    pub fn iter(&self) -> Range<'_, V> {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }
}

/// Blocks whose lower bound is at most `key` (the last of them is where `key` belongs).
fn up_to(key: &[u8]) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (Bound::Unbounded, Bound::Included(key))
}

/// The bounds of a range being read, and whether it has passed the far one.
struct Bounds {
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    done: bool,
}

impl Bounds {
    fn new(lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Self {
        Self {
            lower: lower.map(<[u8]>::to_vec),
            upper: upper.map(<[u8]>::to_vec),
            done: false,
        }
    }

    fn above_lower(&self, key: &[u8]) -> bool {
        match &self.lower {
            Bound::Included(l) => key >= l.as_slice(),
            Bound::Excluded(l) => key > l.as_slice(),
            Bound::Unbounded => true,
        }
    }

    fn below_upper(&self, key: &[u8]) -> bool {
        match &self.upper {
            Bound::Included(u) => key <= u.as_slice(),
            Bound::Excluded(u) => key < u.as_slice(),
            Bound::Unbounded => true,
        }
    }
}

/// Entries of a `PackedMap` in order.
pub struct Range<'a, V> {
    blocks: btree_map::Range<'a, Box<[u8]>, Block>,
    cursor: Option<Cursor<'a, V>>,
    bounds: Bounds,
}

impl<V: Packed> Iterator for Range<'_, V> {
    type Item = (Vec<u8>, V);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.bounds.done {
            let cursor = match &mut self.cursor {
                Some(c) => c,
                None => self.cursor.insert(Cursor::new(self.blocks.next()?.1)),
            };
            let Some(v) = cursor.advance() else {
                self.cursor = None;
                continue;
            };
            if !self.bounds.above_lower(&cursor.key) {
                continue;
            }
            if !self.bounds.below_upper(&cursor.key) {
                self.bounds.done = true;
                break;
            }
            return Some((cursor.key.clone(), v));
        }
        None
    }
}

/// Entries of a `PackedMap` in reverse order.
pub struct RangeRev<'a, V> {
    blocks: std::iter::Rev<btree_map::Range<'a, Box<[u8]>, Block>>,
    /// The entries of the current block within the upper bound, the next one last.
    buffer: Vec<(Vec<u8>, V)>,
    bounds: Bounds,
}

impl<V: Packed> Iterator for RangeRev<'_, V> {
    type Item = (Vec<u8>, V);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.bounds.done {
            if let Some((key, v)) = self.buffer.pop() {
                if self.bounds.above_lower(&key) {
                    return Some((key, v));
                }
                self.bounds.done = true;
                break;
            }
            let (_, block) = self.blocks.next()?;
            let mut c = Cursor::<V>::new(block);
            while let Some(v) = c.advance() {
                if !self.bounds.below_upper(&c.key) {
                    break;
                }
                self.buffer.push((c.key.clone(), v));
            }
        }
        None
    }
}

/// The keys given to a `Builder` were not in strictly ascending order.
#[derive(Debug, thiserror::Error)]
#[error("keys out of order")]
pub struct OutOfOrder;

/// Builds a `PackedMap` from entries in strictly ascending key order, far faster than
/// inserting them one by one.
pub struct Builder<V> {
    map: PackedMap<V>,
    block: Encoder,
    start: Vec<u8>,
}

impl<V: Packed> Default for Builder<V> {
    fn default() -> Self {
        Self {
            map: PackedMap::default(),
            block: Encoder::default(),
            start: Vec::new(),
        }
    }
}

impl<V: Packed> Builder<V> {
    /// Appends an entry; its key must be above every key appended before.
    pub fn push(&mut self, key: &[u8], value: V) -> Result<(), OutOfOrder> {
        if self.map.len > 0 && key <= self.block.last.as_slice() {
            return Err(OutOfOrder);
        }
        if self.block.entries == BULK_ENTRIES {
            self.seal();
        }
        if self.block.entries == 0 {
            self.start = key.to_vec();
        }
        self.block.push(key, value);
        self.map.len += 1;
        Ok(())
    }

    fn seal(&mut self) {
        let block = std::mem::take(&mut self.block);
        // The next block compares against the sealed one's last key.
        self.block.last.clone_from(&block.last);
        self.map
            .blocks
            .insert(std::mem::take(&mut self.start).into(), block.finish());
    }

    /// The map built.
    pub fn finish(mut self) -> PackedMap<V> {
        if self.block.entries > 0 {
            self.seal();
        }
        self.map
    }
}

#[cfg(test)]
mod tests;
