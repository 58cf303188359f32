//! Opening a store: sled with its segment size, then the in-memory structures replayed from
//! the bundles in the order they were written.

#[allow(clippy::wildcard_imports)]
use super::*;

impl RegionStore {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        let db = open_sled(path)?;
        let tree = db.open_tree("region")?;
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
}

/// sled's log segment size for new stores: a log item above a quarter of a segment is written
/// as a file of its own, synchronously by the writer, and a bundle (~100 KB) or a leaf node of
/// up to 17 of them is such an item at sled's 512 KiB default.
pub(super) const SEGMENT_SIZE: usize = 8 << 20;

/// The sled configuration of the store in `path`: a store keeps the segment size it was
/// created with (sled refuses to open it with another).
pub(super) fn sled_config(path: &std::path::Path) -> sled::Config {
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
pub(super) fn open_sled(path: &std::path::Path) -> Result<sled::Db, StoreError> {
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
pub(super) const FLUSH_EVERY_MS: u64 = 500;

/// Builds the catalogue and the filing by replaying the bundles in the order they were
/// written: a record is its document's current value until a later record of the same
/// document id (under its key or, moved, under another). Bundles left without a current
/// record (by a compaction cut short) are removed.
pub(super) fn replay_bundles(docs: &Documents) -> Result<(), StoreError> {
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
