//! Reading documents: catalogue → bundle → value, and finding a document by id through the
//! filing of document ids under their patients.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The stored documents: bundles in sled, and in memory where each document's current value
/// lies and which patient each document id is filed under.
#[derive(Clone)]
pub(super) struct Documents {
    pub(super) tree: sled::Tree,
    pub(super) catalogue: Arc<RwLock<Catalogue>>,
    pub(super) filing: Arc<RwLock<DocumentFiling>>,
}

impl Documents {
    pub(super) fn catalogue(&self) -> std::sync::RwLockReadGuard<'_, Catalogue> {
        self.catalogue.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The current value of the document at `key`.
    pub(super) fn value(&self, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        let mut span = self.catalogue().get(key);
        // A compaction moves a bundle's records and removes it in one sled batch while it
        // holds the catalogue, so another look at the catalogue finds the new place (the
        // record moves again only if its new bundle is compacted in the meantime).
        for _ in 0..8 {
            let Some(s) = span else {
                return Ok(None);
            };
            if let Some(bundle) = self.tree.get(bundle_key(s.bundle))? {
                return value_at(s, &bundle).map(Some);
            }
            let now = self.catalogue().get(key);
            if now == span {
                break;
            }
            span = now;
        }
        Err(StoreError::Corrupt(format!(
            "the bundle holding {} is missing",
            String::from_utf8_lossy(key)
        )))
    }

    /// The documents whose key starts with `prefix`: (key, value) in key order, read where
    /// the catalogue had them when asked.
    pub(super) fn with_prefix(&self, prefix: &[u8]) -> Result<Vec<StoredValue>, StoreError> {
        let spans: Vec<(Box<[u8]>, Span)> = self
            .catalogue()
            .with_prefix(prefix)
            .map(|(k, span)| (k.into(), span))
            .collect();
        let mut out = Vec::with_capacity(spans.len());
        for (k, span) in spans {
            let value = self.value_found_at(&k, span)?;
            out.extend(value.map(|v| (k, v)));
        }
        Ok(out)
    }

    /// The value of the document at `key`, which the catalogue had at `span`: read in that
    /// bundle, unless compacted since, then wherever the catalogue has it now (None: the
    /// document moved to another key meanwhile).
    pub(super) fn value_found_at(
        &self,
        key: &[u8],
        span: Span,
    ) -> Result<Option<IVec>, StoreError> {
        match self.tree.get(bundle_key(span.bundle))? {
            Some(bundle) => Ok(Some(value_at(span, &bundle)?)),
            None => self.value(key),
        }
    }
}

/// A document's key and its current stored value.
pub(super) type StoredValue = (Box<[u8]>, IVec);

/// The value `span` points at in `bundle`.
pub(super) fn value_at(span: Span, bundle: &IVec) -> Result<IVec, StoreError> {
    if span.of(bundle).is_none() {
        return Err(StoreError::Corrupt(format!(
            "bundle {} is shorter than a span of it",
            span.bundle
        )));
    }
    Ok(bundle.subslice(span.offset as usize, span.len as usize))
}

/// Reads a document by id: its candidate patients from the filing, confirmed in the catalogue
/// (a lab report by a scan of that patient's lab reports, unless it is at `likely`, the key
/// its new version is filed under). `written` overlays a batch in progress (None: removed by
/// it).
pub(super) fn find_document(
    docs: &Documents,
    written: Option<&Written>,
    document_id: &[u8],
    likely: Option<&[u8]>,
) -> Result<Option<(IVec, IVec)>, StoreError> {
    let candidates = docs
        .filing
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .candidates(document_id);
    if candidates.is_empty() {
        return Ok(None);
    }
    // The batch's own writes first. A document the batch moved is written at its new key
    // (its patient is a candidate from the moment it is written), so one the batch has not
    // written is where the store holds it.
    if let Some(w) = written {
        let written_at = |k: &[u8]| w.get(k).cloned().flatten();
        if let Some(k) = likely.filter(|k| files(k, document_id))
            && let Some(v) = written_at(k)
        {
            return Ok(Some((k.into(), v)));
        }
        for patient in &candidates {
            let k = doc_key(patient, document_id);
            if let Some(v) = written_at(&k) {
                return Ok(Some((k.into(), v)));
            }
            let labs = lab_prefix(patient);
            for (k, v) in w {
                if let Some(v) = v
                    && k.starts_with(&labs)
                    && files(k, document_id)
                {
                    return Ok(Some((k.clone(), v.clone())));
                }
            }
        }
    }
    let held = held_key(&docs.catalogue(), &candidates, document_id, likely);
    let Some((k, span)) = held else {
        return Ok(None);
    };
    // A key the batch removed is not the document's any more.
    if written.is_some_and(|w| w.contains_key(&*k)) {
        return Ok(None);
    }
    Ok(docs.value_found_at(&k, span)?.map(|v| (IVec::from(&*k), v)))
}

/// The key `document_id` is held under in `catalogue` and where its value lies: at `likely`
/// first, else under one of `candidates` (its patients, from the filing). Shared by the reads
/// of the writer and queries and by the replay at open.
pub(super) fn held_key(
    catalogue: &Catalogue,
    candidates: &[Box<[u8]>],
    document_id: &[u8],
    likely: Option<&[u8]>,
) -> Option<(Box<[u8]>, Span)> {
    // Most new versions keep their key: one lookup instead of a scan of the patient's reports.
    if let Some(k) = likely.filter(|k| files(k, document_id))
        && let Some(span) = catalogue.get(k)
    {
        return Some((k.into(), span));
    }
    for patient in candidates {
        let k = doc_key(patient, document_id);
        if let Some(span) = catalogue.get(&k) {
            return Some((k.into(), span));
        }
        let labs = lab_prefix(patient);
        if let Some((k, span)) = catalogue
            .with_prefix(&labs)
            .find(|(k, _)| files(k, document_id))
        {
            return Some((k.into(), span));
        }
    }
    None
}
