//! Checkpoints of the in-memory structures, so that opening a store does not read every
//! bundle: the catalogue (every document's key and where its value lies, every bundle's use)
//! and the list entries, as they stood after bundle `last`, in a file beside sled's.
//!
//! Why it is safe: a checkpoint is a copy of the structures taken under the writer's lock, and
//! sled is flushed after the copy and before the file exists, so every bundle it reflects is
//! durable (the writer goes on meanwhile: what it adds is replayed like any later bundle);
//! opening loads it and replays only the bundles numbered above `last` (bundle numbers only
//! grow; a compaction's copy is a new bundle, replayed like any other). The document filing is
//! rebuilt from the catalogue's keys; the receipts and the offsets stay in sled. A checkpoint
//! names a serial that sled also records once the file is in place: a file whose serial is not
//! sled's (a crash between the two, a copied folder, a file from elsewhere) is stale, a file
//! whose checksum fails is corrupt, and either is set aside for the full replay, with a log
//! line saying why.
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

/// A checkpoint whose checksum, header and serial are verified, read section by section as
/// the store is built from it (so its bytes are never all in memory at once): `spans`, then
/// `uses`, then `lists`, then `finish`.
pub(super) struct Checkpoint {
    pub(super) last: u64,
    r: Stream,
}

impl Checkpoint {
    /// How many documents there are (read first).
    pub(super) fn documents(&mut self) -> Result<usize, StoreError> {
        Ok(self.r.count()?)
    }

    /// Hands over the key and span of each of the `documents`, in key order.
    pub(super) fn spans(
        &mut self,
        documents: usize,
        mut each: impl FnMut(&[u8], Span) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for _ in 0..documents {
            let key_len = self.r.u32()? as usize;
            let record = self.r.take(key_len + 16)?;
            let (key, span) = record.split_at(key_len);
            let span = Span {
                bundle: u64::from_be_bytes(span[..8].try_into().unwrap_or_default()),
                offset: u32::from_be_bytes(span[8..12].try_into().unwrap_or_default()),
                len: u32::from_be_bytes(span[12..].try_into().unwrap_or_default()),
            };
            each(key, span)?;
        }
        Ok(())
    }

    /// Every bundle's use: (number, records, current records).
    pub(super) fn uses(&mut self) -> Result<Vec<(u64, u32, u32)>, StoreError> {
        let n = self.r.count()?;
        let mut uses = Vec::with_capacity(n);
        for _ in 0..n {
            uses.push((self.r.u64()?, self.r.u32()?, self.r.u32()?));
        }
        Ok(uses)
    }

    /// Hands over every list entry, the worklist's first, each list in order.
    pub(super) fn lists(
        &mut self,
        mut each: impl FnMut(List, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for _ in 0..self.r.count()? {
            let list = match self.r.take(1)?[0] {
                0 => List::Worklist,
                1 => List::Appointments,
                _ => return Err(corrupt("a list it does not know")),
            };
            let n = self.r.u32()? as usize;
            each(list, self.r.take(n)?)?;
        }
        Ok(())
    }

    /// Checks that nothing follows the last section.
    pub(super) fn finish(self) -> Result<(), StoreError> {
        if self.r.left != 0 {
            return Err(corrupt("bytes after its last section"));
        }
        Ok(())
    }
}

fn corrupt(why: &str) -> StoreError {
    StoreError::Corrupt(format!("the checkpoint is corrupt ({why})"))
}

impl From<Unusable> for StoreError {
    fn from(e: Unusable) -> Self {
        StoreError::Corrupt(format!("the checkpoint cannot be used: {e}"))
    }
}

/// Why a checkpoint cannot be used (the store is then opened by the full replay).
#[derive(Debug, thiserror::Error)]
pub(super) enum Unusable {
    #[error("cannot read it: {0}")]
    Io(std::io::Error),
    #[error("it is corrupt ({0})")]
    Corrupt(&'static str),
    #[error("it is stale: serial {file} in the file, {store} in the store")]
    Stale { file: u64, store: u64 },
    #[error("the store cannot be read: {0}")]
    Store(sled::Error),
}

// The causes are in the messages, not sources: a chain of causes names each once.
impl From<std::io::Error> for Unusable {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<sled::Error> for Unusable {
    fn from(e: sled::Error) -> Self {
        Self::Store(e)
    }
}

/// The serial sled records for the latest checkpoint (0: none yet).
pub(super) fn stored_serial(tree: &sled::Tree) -> Result<u64, sled::Error> {
    Ok(tree
        .get(SERIAL_KEY)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

/// Writes a checkpoint of `catalogue` and `lists` with `serial` as the store's checkpoint in
/// `dir`, streamed (its bytes are never all in memory: a large store's would be hundreds of
/// megabytes beside the structures themselves): a temporary file made durable, then renamed
/// over the last one, so a crash leaves the old file or the new one, never half. Returns the
/// file's size.
pub(super) fn write(
    dir: &std::path::Path,
    serial: u64,
    catalogue: &Catalogue,
    lists: &Lists,
) -> std::io::Result<u64> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let file = std::fs::File::create(&tmp)?;
    let mut out = Summed {
        inner: std::io::BufWriter::with_capacity(1 << 16, file),
        hash: sha2::Sha256::new(),
        len: 0,
    };
    out.write_all(MAGIC)?;
    out.write_all(&serial.to_be_bytes())?;
    out.write_all(&catalogue.last_number().to_be_bytes())?;
    out.write_all(&(catalogue.len() as u64).to_be_bytes())?;
    for (key, span) in catalogue.all() {
        put_bytes(&mut out, &key)?;
        out.write_all(&span.bundle.to_be_bytes())?;
        out.write_all(&span.offset.to_be_bytes())?;
        out.write_all(&span.len.to_be_bytes())?;
    }
    let uses: Vec<_> = catalogue.uses().collect();
    out.write_all(&(uses.len() as u64).to_be_bytes())?;
    for (number, records, live) in uses {
        out.write_all(&number.to_be_bytes())?;
        out.write_all(&records.to_be_bytes())?;
        out.write_all(&live.to_be_bytes())?;
    }
    out.write_all(&(lists.len() as u64).to_be_bytes())?;
    for (list, entry) in lists.entries() {
        out.write_all(&[list as u8])?;
        put_bytes(&mut out, &entry)?;
    }
    let Summed {
        mut inner,
        hash,
        len,
    } = out;
    inner.write_all(&hash.finalize())?;
    let file = inner
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(len + 32)
}

/// A writer that sums (SHA-256) and counts what passes through it.
struct Summed<W> {
    inner: W,
    hash: sha2::Sha256,
    len: u64,
}

impl<W: std::io::Write> std::io::Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn put_bytes(out: &mut impl std::io::Write, bytes: &[u8]) -> std::io::Result<()> {
    // Keys and list entries are short (ids and codes); a longer one is a bug, not input.
    #[allow(clippy::cast_possible_truncation)]
    out.write_all(&(bytes.len() as u32).to_be_bytes())?;
    out.write_all(bytes)
}

/// The checkpoint in `dir`, if there is one, its checksum and serial verified; an error says
/// why it cannot be used.
pub(super) fn load(
    dir: &std::path::Path,
    tree: &sled::Tree,
) -> Result<Option<Checkpoint>, Unusable> {
    use std::io::Read as _;
    let path = dir.join(FILE);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    if len < (MAGIC.len() + 32) as u64 {
        return Err(Unusable::Corrupt("shorter than its checksum"));
    }
    // The checksum first, over the file streamed, so nothing unverified is used.
    let body = len - 32;
    let mut hash = sha2::Sha256::new();
    let mut chunk = vec![0u8; 1 << 16];
    let mut body_reader = std::io::Read::by_ref(&mut file).take(body);
    loop {
        let n = body_reader.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        hash.update(&chunk[..n]);
    }
    let mut sum = [0u8; 32];
    file.read_exact(&mut sum)?;
    if hash.finalize().as_slice() != sum {
        return Err(Unusable::Corrupt("its checksum does not match"));
    }
    let file = std::fs::File::open(&path)?;
    if file.metadata()?.len() != len {
        return Err(Unusable::Corrupt("it changed while read"));
    }
    let mut r = Stream {
        file: std::io::BufReader::with_capacity(1 << 16, file.take(body)),
        left: body,
        buf: Vec::new(),
    };
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
    Ok(Some(Checkpoint { last, r }))
}

/// A checkpoint file's body read in order, never past its checksum.
struct Stream {
    file: std::io::BufReader<std::io::Take<std::fs::File>>,
    left: u64,
    buf: Vec<u8>,
}

impl Stream {
    fn take(&mut self, n: usize) -> Result<&[u8], Unusable> {
        use std::io::Read as _;
        if n as u64 > self.left {
            return Err(Unusable::Corrupt("truncated"));
        }
        self.buf.resize(n, 0);
        self.file.read_exact(&mut self.buf)?;
        self.left -= n as u64;
        Ok(&self.buf)
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
        if n as u64 > self.left {
            return Err(Unusable::Corrupt("a count beyond its length"));
        }
        Ok(n)
    }
}
