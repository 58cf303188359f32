//! Checkpoints of the in-memory structures, so that opening a store does not read every
//! bundle: the catalogue (every document's key and where its value lies, every bundle's use)
//! and the list entries, as they stood after bundle `last`, in a file beside sled's.
//!
//! Why it is safe: a checkpoint is taken under the writer's lock right after sled flushed, so
//! every bundle it reflects is durable; opening loads it and replays only the bundles numbered
//! above `last` (bundle numbers only grow; a compaction's copy is a new bundle, replayed like
//! any other). The document filing is rebuilt from the catalogue's keys; the receipts and the
//! offsets stay in sled. A checkpoint names a serial that sled also records once the file is
//! in place: a file whose serial is not sled's (a crash between the two, a copied folder, a
//! file from elsewhere) is stale, a file whose checksum fails is corrupt, and either is set
//! aside for the full replay, with a log line saying why.
//!
//! The file: magic, serial, last bundle number, then counted sections (spans in key order,
//! bundle uses, list entries), then the SHA-256 of everything before it.

use sha2::Digest as _;

#[allow(clippy::wildcard_imports)]
use super::*;

/// The checkpoint's file name inside the store's folder.
pub(super) const FILE: &str = "lienthong-checkpoint";
const MAGIC: &[u8; 8] = b"LTCKPT01";
/// The sled key recording the serial of the latest checkpoint written.
pub(super) const SERIAL_KEY: &[u8] = b"c";

/// What a checkpoint holds.
pub(super) struct Checkpoint {
    pub(super) last: u64,
    pub(super) spans: Vec<(Box<[u8]>, Span)>,
    pub(super) uses: Vec<(u64, u32, u32)>,
    pub(super) lists: Vec<ListEntry>,
}

/// Why a checkpoint cannot be used (the store is then opened by the full replay).
#[derive(Debug, thiserror::Error)]
pub(super) enum Unusable {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("it is corrupt ({0})")]
    Corrupt(&'static str),
    #[error("it is stale: serial {file} in the file, {store} in the store")]
    Stale { file: u64, store: u64 },
    #[error("the store cannot be read: {0}")]
    Store(#[from] sled::Error),
}

/// The serial sled records for the latest checkpoint (0: none yet).
pub(super) fn stored_serial(tree: &sled::Tree) -> Result<u64, sled::Error> {
    Ok(tree
        .get(SERIAL_KEY)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

/// The bytes of a checkpoint of `catalogue` and `lists` with `serial`.
pub(super) fn encode(serial: u64, catalogue: &Catalogue, lists: &Lists) -> Vec<u8> {
    let mut out = Vec::with_capacity(catalogue.len() * 80 + lists.len() * 60 + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&serial.to_be_bytes());
    out.extend_from_slice(&catalogue.last_number().to_be_bytes());
    out.extend_from_slice(&(catalogue.len() as u64).to_be_bytes());
    for (key, span) in catalogue.all() {
        put_bytes(&mut out, key);
        out.extend_from_slice(&span.bundle.to_be_bytes());
        out.extend_from_slice(&span.offset.to_be_bytes());
        out.extend_from_slice(&span.len.to_be_bytes());
    }
    let uses: Vec<_> = catalogue.uses().collect();
    out.extend_from_slice(&(uses.len() as u64).to_be_bytes());
    for (number, records, live) in uses {
        out.extend_from_slice(&number.to_be_bytes());
        out.extend_from_slice(&records.to_be_bytes());
        out.extend_from_slice(&live.to_be_bytes());
    }
    out.extend_from_slice(&(lists.len() as u64).to_be_bytes());
    for (list, entry) in lists.entries() {
        out.push(list as u8);
        put_bytes(&mut out, entry);
    }
    let sum = sha2::Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and list entries are short (ids and codes); a longer one is a bug, not input.
    #[allow(clippy::cast_possible_truncation)]
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Writes `bytes` as the store's checkpoint in `dir`: a temporary file made durable, then
/// renamed over the last one, so a crash leaves the old file or the new one, never half.
pub(super) fn write(dir: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The checkpoint in `dir`, if there is one; an error says why it cannot be used.
pub(super) fn load(
    dir: &std::path::Path,
    tree: &sled::Tree,
) -> Result<Option<Checkpoint>, Unusable> {
    let bytes = match std::fs::read(dir.join(FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if bytes.len() < MAGIC.len() + 32 {
        return Err(Unusable::Corrupt("shorter than its checksum"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if sha2::Sha256::digest(body).as_slice() != sum {
        return Err(Unusable::Corrupt("its checksum does not match"));
    }
    let mut r = Reader { bytes: body, at: 0 };
    if r.take(8)? != MAGIC {
        return Err(Unusable::Corrupt(
            "not a lienthong checkpoint of this version",
        ));
    }
    let serial = r.u64()?;
    let store = stored_serial(tree)?;
    if serial != store {
        return Err(Unusable::Stale {
            file: serial,
            store,
        });
    }
    let last = r.u64()?;
    let n = r.count()?;
    let mut spans = Vec::with_capacity(n);
    for _ in 0..n {
        let key: Box<[u8]> = r.bytes()?.into();
        let span = Span {
            bundle: r.u64()?,
            offset: r.u32()?,
            len: r.u32()?,
        };
        spans.push((key, span));
    }
    if !spans.is_sorted_by(|a, b| a.0 < b.0) {
        return Err(Unusable::Corrupt("its keys are out of order"));
    }
    let n = r.count()?;
    let mut uses = Vec::with_capacity(n);
    for _ in 0..n {
        uses.push((r.u64()?, r.u32()?, r.u32()?));
    }
    let n = r.count()?;
    let mut lists = Vec::with_capacity(n);
    for _ in 0..n {
        let list = match r.take(1)?[0] {
            0 => List::Worklist,
            1 => List::Appointments,
            _ => return Err(Unusable::Corrupt("a list it does not know")),
        };
        lists.push((list, r.bytes()?.into()));
    }
    if r.at != body.len() {
        return Err(Unusable::Corrupt("bytes after its last section"));
    }
    Ok(Some(Checkpoint {
        last,
        spans,
        uses,
        lists,
    }))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Unusable> {
        let part = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or(Unusable::Corrupt("truncated"))?;
        self.at += n;
        Ok(part)
    }

    fn u64(&mut self) -> Result<u64, Unusable> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }

    fn u32(&mut self) -> Result<u32, Unusable> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }

    /// A section's length, no more than the bytes left could hold (a corrupt count must not
    /// make a huge allocation).
    fn count(&mut self) -> Result<usize, Unusable> {
        let n = usize::try_from(self.u64()?).map_err(|_| Unusable::Corrupt("a huge count"))?;
        if n > self.bytes.len() - self.at {
            return Err(Unusable::Corrupt("a count beyond its length"));
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], Unusable> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}
