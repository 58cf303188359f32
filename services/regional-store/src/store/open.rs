//! Opening a store: sled with its segment size, then the in-memory structures loaded from the
//! checkpoint and the bundles written after it, or replayed from every bundle in the order
//! they were written; and writing checkpoints.

#[allow(clippy::wildcard_imports)]
use super::*;

/// How a store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenedFrom {
    /// From its checkpoint, replaying the bundles written after it.
    Checkpoint {
        /// Bundles replayed after the checkpoint.
        replayed: usize,
    },
    /// By replaying every bundle (no usable checkpoint).
    FullReplay {
        /// Bundles replayed.
        replayed: usize,
    },
}

impl RegionStore {
    /// Opens (or creates) the store in `path`: from its checkpoint when it has a usable one,
    /// else by replaying every bundle.
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        let db = open_sled(path)?;
        let tree = db.open_tree("region")?;
        let docs = Documents {
            tree: tree.clone(),
            catalogue: Arc::default(),
            filing: Arc::default(),
        };
        let from_checkpoint = match checkpoint::load(path, &tree) {
            Ok(None) => None,
            Ok(Some(cp)) => match open_from_checkpoint(&docs, cp) {
                Ok(opened) => Some(opened),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "the checkpoint does not fit the store; replaying every bundle");
                    *docs.catalogue.write().unwrap_or_else(|p| p.into_inner()) =
                        Catalogue::default();
                    *docs.filing.write().unwrap_or_else(|p| p.into_inner()) =
                        DocumentFiling::default();
                    None
                }
            },
            Err(why) => {
                tracing::warn!(path = %path.display(), %why, "the checkpoint cannot be used; replaying every bundle");
                None
            }
        };
        let (lists, opened_from) = match from_checkpoint {
            Some((lists, replayed)) => (lists, OpenedFrom::Checkpoint { replayed }),
            None => {
                let replayed = replay_bundles(&docs, 0, None)?;
                (
                    Lists::from_entries(current_list_entries(&docs)?),
                    OpenedFrom::FullReplay { replayed },
                )
            }
        };
        let mut receipts = KnownReceipts::default();
        for k in tree.scan_prefix([RECEIPTS]).keys() {
            receipts.add(&k?[1..]);
        }
        Ok(Self {
            tree,
            db,
            dir: Arc::from(path),
            opened_from,
            documents: docs,
            lists: Arc::new(RwLock::new(lists)),
            writer: Arc::new(Mutex::new(receipts)),
            checkpointing: Arc::new(Mutex::new(())),
        })
    }

    /// How this store was opened.
    pub fn opened_from(&self) -> OpenedFrom {
        self.opened_from
    }

    /// Writes a checkpoint of the in-memory structures (see `checkpoint`): the writer waits
    /// only while they are copied (their blocks are shared, not duplicated); sled's flush and
    /// the file, streamed from the copy, are done beside it. Returns the checkpoint's size.
    pub fn checkpoint(&self) -> Result<u64, StoreError> {
        let _one_at_a_time = self.checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        let (catalogue, lists) = {
            let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let catalogue = self.documents.catalogue().clone();
            let lists = self.lists.read().unwrap_or_else(|p| p.into_inner()).clone();
            (catalogue, lists)
        };
        // Everything the copy reflects must be durable before the checkpoint exists: the
        // flush makes it so (and what the writer did since, which a later open replays).
        self.db.flush()?;
        let serial = checkpoint::stored_serial(&self.tree)? + 1;
        let size = checkpoint::write(&self.dir, serial, &catalogue, &lists).map_err(|e| {
            StoreError::Corrupt(format!(
                "cannot write the checkpoint in {}: {e}",
                self.dir.display()
            ))
        })?;
        // From here the file is this store's latest checkpoint; until sled has the serial,
        // it is stale and a crash falls back to the full replay.
        self.tree
            .insert(checkpoint::SERIAL_KEY, &serial.to_be_bytes())?;
        Ok(size)
    }
}

/// Restores the catalogue and the filing from `cp`, replays the bundles written after it and
/// returns the lists (the checkpoint's, with the entries of documents changed since replaced)
/// and the number of bundles replayed.
fn open_from_checkpoint(
    docs: &Documents,
    mut cp: checkpoint::Checkpoint,
) -> Result<(Lists, usize), StoreError> {
    let out_of_order = |_| StoreError::Corrupt("the checkpoint's keys are out of order".into());
    let mut spans = crate::packed::Builder::default();
    {
        let mut filing = docs.filing.write().unwrap_or_else(|p| p.into_inner());
        let documents = cp.documents()?;
        filing.reserve(documents);
        cp.spans(documents, |key, span| {
            spans.push(key, span).map_err(out_of_order)?;
            let (patient, doc) = split_doc_key(key)
                .ok_or_else(|| StoreError::Corrupt("document key without a patient".into()))?;
            filing.add_unsettled(doc, patient)?;
            Ok(())
        })?;
        filing.settle()?;
    }
    let catalogue = Catalogue::restore(spans.finish(), cp.uses()?, cp.last);
    *docs.catalogue.write().unwrap_or_else(|p| p.into_inner()) = catalogue;
    let mut touched = Vec::new();
    let replayed = replay_bundles(docs, cp.last, Some(&mut touched))?;
    let changed: HashSet<&[u8]> = touched
        .iter()
        .filter_map(|k| split_doc_key(k).map(|(_, doc)| doc))
        .collect();
    let mut kept = crate::lists::ListsBuilder::default();
    cp.lists(|list, entry| {
        if !changed.contains(listed_document(entry)) {
            kept.push(list, entry).map_err(out_of_order)?;
        }
        Ok(())
    })?;
    cp.finish()?;
    let mut lists = kept.finish();
    let mut listed: Vec<ListEntry> = Vec::new();
    // The entries of the changed documents' current values, each bundle read once.
    let mut current: Vec<Span> = {
        let catalogue = docs.catalogue();
        touched.iter().filter_map(|k| catalogue.get(k)).collect()
    };
    current.sort_by_key(|s| (s.bundle, s.offset));
    current.dedup();
    let mut bundle: Option<(u64, IVec)> = None;
    for span in current {
        if bundle.as_ref().is_none_or(|(n, _)| *n != span.bundle) {
            let bytes = docs
                .tree
                .get(bundle_key(span.bundle))?
                .ok_or_else(|| StoreError::Corrupt(format!("bundle {} is missing", span.bundle)))?;
            bundle = Some((span.bundle, bytes));
        }
        if let Some((_, bytes)) = &bundle {
            listed.extend(stored_list_entry(&value_at(span, bytes)?)?);
        }
    }
    lists.apply(listed.into_iter().map(|(l, e)| ListChange::Add(l, e)));
    Ok((lists, replayed))
}

/// The document id of a list entry: its last component.
fn listed_document(entry: &[u8]) -> &[u8] {
    entry
        .iter()
        .rposition(|b| *b == 0)
        .map_or(entry, |at| &entry[at + 1..])
}

/// The list entries of every current document, bundle by bundle (one read of each).
fn current_list_entries(docs: &Documents) -> Result<Vec<ListEntry>, StoreError> {
    let mut listed = Vec::new();
    let catalogue = docs.catalogue();
    for kv in docs.tree.scan_prefix([BUNDLES]) {
        let (k, bytes) = kv?;
        for record in crate::bundles::records(bundle_number(&k)?, &bytes) {
            let (key, span) = record?;
            if catalogue.get(key) == Some(span) {
                listed.extend(stored_list_entry(&value_at(span, &bytes)?)?);
            }
        }
    }
    Ok(listed)
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

/// Builds the catalogue and the filing by replaying the bundles numbered above `after` in the
/// order they were written: a record is its document's current value until a later record of
/// the same document id (under its key or, moved, under another). The keys it sets go to
/// `touched`. Bundles left without a current record (by a compaction cut short, or compacted
/// since a checkpoint) are removed. Returns the number of bundles replayed.
pub(super) fn replay_bundles(
    docs: &Documents,
    after: u64,
    mut touched: Option<&mut Vec<Box<[u8]>>>,
) -> Result<usize, StoreError> {
    let mut catalogue = docs.catalogue.write().unwrap_or_else(|p| p.into_inner());
    let mut filing = docs.filing.write().unwrap_or_else(|p| p.into_inner());
    let mut replayed = 0;
    let range = bundle_key(after.saturating_add(1))..=bundle_key(u64::MAX);
    for kv in docs.tree.range(range) {
        let (k, bytes) = kv?;
        let number = bundle_number(&k)?;
        replayed += 1;
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
            if let Some(t) = touched.as_mut() {
                t.push(key.into());
            }
        }
    }
    drop(filing);
    for n in catalogue.unused() {
        docs.tree.remove(bundle_key(n))?;
        catalogue.forget_bundle(n);
    }
    Ok(replayed)
}
