//! The durable outbox: events are acknowledged to the HIS side only once they are flushed here;
//! they leave only when the gateway answered ACCEPTED or DUPLICATE. REJECTED events move to a
//! local dead-letter store with the gateway's reason, for the facility's IT staff.
//!
//! One sled tree, spaces by first key byte: `q` + sequence → queued entry, `d` + sequence →
//! dead entry, `x` + sequence → an entry that could not be read back, set aside with its bytes
//! as they were (so one unreadable entry never stops delivery or the status, and nothing is
//! deleted), `v` + document id → what was last taken in of that document from XML
//! (`revisions::Delivered`). Sequences come from sled's monotonic id generator, so the queue
//! keeps intake order across restarts. Values: `[enqueued at, unix ms, u64 BE][reason length
//! u32 BE][reason][origin length u32 BE][origin][trace length u32 BE][trace][EventEnvelope
//! protobuf]` (queued entries have an empty reason; the origin is the export file an event came from, empty for
//! pushed events; the trace is the W3C `traceparent` of the intake that took the event in,
//! empty when that intake was not traced).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lienthong_core::ClinicalEvent;
use lienthong_proto::v1 as pb;
use prost::Message as _;

use crate::revisions::{Delivered, Revision, revise};

const QUEUED: u8 = b'q';
const DEAD: u8 = b'd';
const DELIVERED: u8 = b'v';
const SET_ASIDE: u8 = b'x';

/// What the outbox can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// sled failed (disk full, corruption).
    #[error("{}", storage_failure(.0))]
    Sled(sled::Error),
    /// The bound is reached: nothing more is taken in until the gateway drains it.
    #[error(
        "the outbox holds {pending} events, its limit; nothing more is taken in until the gateway is reachable again (raise --max-pending if the disk allows)"
    )]
    Full {
        /// Events pending.
        pending: u64,
    },
    /// A stored entry cannot be read back.
    #[error("outbox entry {0} is corrupt")]
    Corrupt(u64),
    /// The folder could not be prepared.
    #[error("outbox folder {path}: {cause}")]
    Folder {
        /// Folder.
        path: std::path::PathBuf,
        /// I/O error.
        cause: std::io::Error,
    },
}

impl From<sled::Error> for OutboxError {
    fn from(e: sled::Error) -> Self {
        Self::Sled(e)
    }
}

/// What a storage failure means for the operator: a full disk is theirs to fix, and nothing
/// is lost while it lasts (the agent stops; files wait in the inbox, queued events in the
/// outbox, and the next start goes on from there).
fn storage_failure(e: &sled::Error) -> String {
    match e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => format!(
            "the outbox cannot be written: the disk of the data folder is full ({io}); free space there (or move --data-dir) and start the agent again. Nothing taken in is lost: files wait in the inbox and queued events stay in the outbox"
        ),
        other => format!("the outbox cannot be read or written: {other}"),
    }
}

/// An entry waiting for (or refused by) the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Position in the queue.
    pub seq: u64,
    /// When it was taken in (unix ms).
    pub enqueued_ms: u64,
    /// Why the gateway refused it (dead entries only).
    pub reason: String,
    /// The export file it came from (empty for events pushed over HTTP or gRPC).
    pub origin: String,
    /// The `traceparent` of its intake, empty when not traced: delivery continues that trace.
    pub trace: String,
    /// The event.
    pub envelope: pb::EventEnvelope,
}

/// The outbox of one agent.
#[derive(Clone)]
pub struct Outbox {
    db: sled::Db,
    tree: sled::Tree,
    pending: Arc<AtomicU64>,
    dead: Arc<AtomicU64>,
    set_aside: Arc<AtomicU64>,
    max_pending: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn key(space: u8, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = space;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn encode(
    enqueued_ms: u64,
    reason: &str,
    origin: &str,
    trace: &str,
    envelope: &pb::EventEnvelope,
) -> Vec<u8> {
    let body = envelope.encode_to_vec();
    let mut v = Vec::with_capacity(20 + reason.len() + origin.len() + trace.len() + body.len());
    v.extend_from_slice(&enqueued_ms.to_be_bytes());
    for text in [reason, origin, trace] {
        v.extend_from_slice(&(text.len() as u32).to_be_bytes());
        v.extend_from_slice(text.as_bytes());
    }
    v.extend_from_slice(&body);
    v
}

fn decode(seq: u64, v: &[u8]) -> Result<Entry, OutboxError> {
    let corrupt = || OutboxError::Corrupt(seq);
    let enqueued_ms = u64::from_be_bytes(
        v.get(..8)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    );
    let mut rest = v.get(8..).ok_or_else(corrupt)?;
    let mut text = || -> Result<String, OutboxError> {
        let len = u32::from_be_bytes(
            rest.get(..4)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?,
        ) as usize;
        let t = String::from_utf8_lossy(rest.get(4..4 + len).ok_or_else(corrupt)?).into_owned();
        rest = rest.get(4 + len..).ok_or_else(corrupt)?;
        Ok(t)
    };
    let reason = text()?;
    let origin = text()?;
    let trace = text()?;
    let envelope = pb::EventEnvelope::decode(rest).map_err(|_| corrupt())?;
    Ok(Entry {
        seq,
        enqueued_ms,
        reason,
        origin,
        trace,
        envelope,
    })
}

/// The trace of the intake running now (the current span), empty when it is not traced.
fn intake_trace() -> String {
    lienthong_telemetry::trace::traceparent_of(&tracing::Span::current()).unwrap_or_default()
}

fn seq_of(k: &[u8]) -> u64 {
    k.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, readable by its owner only: it holds personal data.
    pub fn open(dir: &std::path::Path, max_pending: u64) -> Result<Self, OutboxError> {
        let folder = |source| OutboxError::Folder {
            path: dir.to_path_buf(),
            cause: source,
        };
        std::fs::create_dir_all(dir).map_err(folder)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(folder)?;
        }
        let db = sled::open(dir)?;
        let tree = db.open_tree("outbox")?;
        let pending = tree.scan_prefix([QUEUED]).keys().count() as u64;
        let dead = tree.scan_prefix([DEAD]).keys().count() as u64;
        let set_aside = tree.scan_prefix([SET_ASIDE]).keys().count() as u64;
        Ok(Self {
            db,
            tree,
            pending: Arc::new(AtomicU64::new(pending)),
            dead: Arc::new(AtomicU64::new(dead)),
            set_aside: Arc::new(AtomicU64::new(set_aside)),
            max_pending,
        })
    }

    /// Takes events in; returns once they are on disk (only then may the HIS side be told).
    pub async fn enqueue(&self, envelopes: Vec<pb::EventEnvelope>) -> Result<(), OutboxError> {
        let pending = self.pending.load(Ordering::SeqCst);
        if pending + envelopes.len() as u64 > self.max_pending {
            return Err(OutboxError::Full { pending });
        }
        let at = now_ms();
        let trace = intake_trace();
        let mut batch = sled::Batch::default();
        for e in &envelopes {
            batch.insert(
                &key(QUEUED, self.db.generate_id()?),
                encode(at, "", "", &trace, e),
            );
        }
        self.tree.apply_batch(batch)?;
        self.db.flush_async().await?;
        self.pending
            .fetch_add(envelopes.len() as u64, Ordering::SeqCst);
        Ok(())
    }

    /// Takes in documents converted from XML: each is compared with what was taken in of it
    /// before (`revisions`), corrections are queued as their next version, unchanged ones are
    /// not queued. The queue and the records change in one batch. Returns each document's
    /// revision, in order.
    pub async fn enqueue_revised(
        &self,
        events: Vec<ClinicalEvent>,
        origin: &str,
    ) -> Result<Vec<(String, Revision)>, OutboxError> {
        let mut outcome = Vec::with_capacity(events.len());
        let mut queued = Vec::new();
        let mut records: Vec<(Vec<u8>, Delivered)> = Vec::new();
        for mut event in events {
            let document = event
                .header()
                .map(|h| h.document_id.clone())
                .unwrap_or_default();
            let mut record_key = vec![DELIVERED];
            record_key.extend_from_slice(document.as_bytes());
            // A document twice in one file: the later one is compared with the earlier.
            let prior = match records.iter().rev().find(|(k, _)| *k == record_key) {
                Some((_, d)) => Some(*d),
                None => self
                    .tree
                    .get(&record_key)?
                    .and_then(|v| Delivered::from_bytes(&v)),
            };
            let (revision, delivered) = revise(&mut event, prior);
            if !matches!(revision, Revision::Unchanged { .. }) {
                queued.push(pb::EventEnvelope::from(event));
                records.push((record_key, delivered));
            }
            outcome.push((document, revision));
        }
        let pending = self.pending.load(Ordering::SeqCst);
        if pending + queued.len() as u64 > self.max_pending {
            return Err(OutboxError::Full { pending });
        }
        let at = now_ms();
        let trace = intake_trace();
        let mut batch = sled::Batch::default();
        for e in &queued {
            batch.insert(
                &key(QUEUED, self.db.generate_id()?),
                encode(at, "", origin, &trace, e),
            );
        }
        for (k, d) in &records {
            batch.insert(k.as_slice(), &d.to_bytes()[..]);
        }
        self.tree.apply_batch(batch)?;
        self.db.flush_async().await?;
        self.pending
            .fetch_add(queued.len() as u64, Ordering::SeqCst);
        Ok(outcome)
    }

    /// The oldest `n` queued entries, in intake order. An entry that cannot be read back is set
    /// aside (see the module comment) and the next one taken in its place.
    pub fn peek(&self, n: usize) -> Result<Vec<Entry>, OutboxError> {
        self.readable(QUEUED, n, &self.pending)
    }

    /// Up to `n` readable entries of one space, oldest first; unreadable ones are moved to the
    /// set-aside space on the way, and `count` (that space's counter) is lowered for each.
    fn readable(&self, space: u8, n: usize, count: &AtomicU64) -> Result<Vec<Entry>, OutboxError> {
        let mut entries = Vec::new();
        for r in self.tree.scan_prefix([space]) {
            if entries.len() == n {
                break;
            }
            let (k, v) = r?;
            match decode(seq_of(&k), &v) {
                Ok(entry) => entries.push(entry),
                Err(_) => self.set_aside(&k, &v, count)?,
            }
        }
        Ok(entries)
    }

    fn set_aside(&self, k: &[u8], v: &[u8], count: &AtomicU64) -> Result<(), OutboxError> {
        let seq = seq_of(k);
        // Moved only if still there as read: the status and a retry may meet the same entry at
        // once, and only the one that moves it may count it.
        let moved = self
            .tree
            .transaction(|t| {
                if t.get(k)?.as_deref() != Some(v) {
                    return Ok(false);
                }
                t.remove(k)?;
                t.insert(&key(SET_ASIDE, seq), v)?;
                Ok(true)
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => e,
                sled::transaction::TransactionError::Abort(never) => never,
            })?;
        if !moved {
            return Ok(());
        }
        count.fetch_sub(1, Ordering::SeqCst);
        self.set_aside.fetch_add(1, Ordering::SeqCst);
        metrics::counter!(crate::metrics::SET_ASIDE.name).increment(1);
        tracing::error!(
            entry = seq,
            bytes = v.len(),
            "an outbox entry cannot be read back; it is set aside, unchanged, and delivery goes on \
             (see `lienthong-agent status`; keep the outbox folder for support)"
        );
        Ok(())
    }

    /// Settles delivered entries (gone) and refused ones (moved to the dead store with their
    /// reason), atomically, then flushes.
    pub async fn settle(
        &self,
        delivered: &[u64],
        refused: &[(Entry, String)],
    ) -> Result<(), OutboxError> {
        let mut batch = sled::Batch::default();
        for seq in delivered {
            batch.remove(&key(QUEUED, *seq));
        }
        for (entry, reason) in refused {
            batch.remove(&key(QUEUED, entry.seq));
            batch.insert(
                &key(DEAD, entry.seq),
                encode(
                    entry.enqueued_ms,
                    reason,
                    &entry.origin,
                    &entry.trace,
                    &entry.envelope,
                ),
            );
        }
        self.tree.apply_batch(batch)?;
        self.db.flush_async().await?;
        self.pending
            .fetch_sub((delivered.len() + refused.len()) as u64, Ordering::SeqCst);
        self.dead.fetch_add(refused.len() as u64, Ordering::SeqCst);
        Ok(())
    }

    /// Dead entries (refused by the gateway), oldest first; unreadable ones are set aside.
    pub fn dead_entries(&self) -> Result<Vec<Entry>, OutboxError> {
        self.readable(DEAD, usize::MAX, &self.dead)
    }

    /// Puts every dead entry back in the queue (after a fix), in their original order.
    pub async fn retry_dead(&self) -> Result<usize, OutboxError> {
        let dead = self.dead_entries()?;
        let mut batch = sled::Batch::default();
        for e in &dead {
            batch.remove(&key(DEAD, e.seq));
            batch.insert(
                &key(QUEUED, e.seq),
                encode(e.enqueued_ms, "", &e.origin, &e.trace, &e.envelope),
            );
        }
        self.tree.apply_batch(batch)?;
        self.db.flush_async().await?;
        self.pending.fetch_add(dead.len() as u64, Ordering::SeqCst);
        self.dead.fetch_sub(dead.len() as u64, Ordering::SeqCst);
        Ok(dead.len())
    }

    /// Events waiting for the gateway.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }

    /// Events the gateway refused.
    pub fn dead(&self) -> u64 {
        self.dead.load(Ordering::SeqCst)
    }

    /// Entries set aside because they could not be read back.
    pub fn set_aside_entries(&self) -> u64 {
        self.set_aside.load(Ordering::SeqCst)
    }

    /// The limit of pending events.
    pub fn max_pending(&self) -> u64 {
        self.max_pending
    }

    /// Age of the oldest pending event, in seconds (0 when empty).
    pub fn oldest_pending_secs(&self) -> Result<u64, OutboxError> {
        Ok(self
            .peek(1)?
            .first()
            .map_or(0, |e| now_ms().saturating_sub(e.enqueued_ms) / 1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_says_what_to_free_and_that_nothing_is_lost() {
        let full = OutboxError::from(sled::Error::Io(std::io::Error::from(
            std::io::ErrorKind::StorageFull,
        )));
        let message = full.to_string();
        assert!(
            message.contains("disk of the data folder is full")
                && message.contains("free space there")
                && message.contains("Nothing taken in is lost"),
            "{message}"
        );
        // Said once: the cause is in the message, not repeated as a source after it.
        assert!(std::error::Error::source(&full).is_none());
        let other = OutboxError::from(sled::Error::Unsupported("x".into()));
        assert!(
            other
                .to_string()
                .starts_with("the outbox cannot be read or written")
        );
    }

    fn env(n: u8) -> pb::EventEnvelope {
        pb::EventEnvelope {
            event: Some(pb::event_envelope::Event::Referral(pb::ReferralEvent {
                header: Some(pb::EventHeader {
                    event_id: format!("e{n}"),
                    ..Default::default()
                }),
                slip: None,
            })),
        }
    }

    #[tokio::test]
    async fn entries_survive_reopening_in_order_and_settle_atomically() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let o = Outbox::open(dir.path(), 10).expect("open");
            o.enqueue(vec![env(1), env(2), env(3)])
                .await
                .expect("enqueue");
            assert!(matches!(
                o.enqueue((0..8).map(env).collect()).await,
                Err(OutboxError::Full { pending: 3 })
            ));
        }
        let o = Outbox::open(dir.path(), 10).expect("reopen");
        assert_eq!(o.pending(), 3);
        let first = o.peek(10).expect("peek");
        assert_eq!(
            first.iter().map(|e| e.envelope.clone()).collect::<Vec<_>>(),
            vec![env(1), env(2), env(3)]
        );
        o.settle(
            &[first[0].seq],
            &[(first[1].clone(), "bad citizen id".into())],
        )
        .await
        .expect("settle");
        assert_eq!((o.pending(), o.dead()), (1, 1));
        assert_eq!(o.dead_entries().expect("dead")[0].reason, "bad citizen id");
        assert_eq!(o.retry_dead().await.expect("retry"), 1);
        let again = o.peek(10).expect("peek");
        assert_eq!(again.len(), 2);
        assert_eq!(again[0].envelope, env(2), "a retried entry keeps its place");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path())
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "personal data: owner only");
        }
    }

    #[tokio::test]
    async fn a_rejected_event_is_named_by_its_file_document_and_episode() {
        let dir = tempfile::tempdir().expect("tmp");
        let o = Outbox::open(dir.path(), 10).expect("open");
        let mut g = lienthong_core::fixtures::Generator::new(9, time::OffsetDateTime::now_utc());
        let event = ClinicalEvent::Referral(g.referral());
        let doc = event.header().expect("header").document_id.clone();
        o.enqueue_revised(vec![event], "01001_a.xml")
            .await
            .expect("enqueue");
        let entry = o.peek(1).expect("peek").remove(0);
        assert_eq!(entry.origin, "01001_a.xml");
        o.settle(&[], &[(entry, "facility.unknown".into())])
            .await
            .expect("settle");
        let dead = o.dead_entries().expect("dead").remove(0);
        let shown = crate::status::RejectedEvent::of(&dead, &dead.reason).to_string();
        assert!(
            shown.starts_with(&format!("REJECTED {doc} (file 01001_a.xml, MA_LK "))
                && shown.ends_with("facility.unknown"),
            "{shown}"
        );
        o.retry_dead().await.expect("retry");
        assert_eq!(
            o.peek(1).expect("peek")[0].origin,
            "01001_a.xml",
            "kept across a retry"
        );
    }

    #[tokio::test]
    async fn an_unreadable_entry_is_set_aside_and_delivery_goes_on() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let o = Outbox::open(dir.path(), 10).expect("open");
            o.enqueue(vec![env(1)]).await.expect("enqueue");
            let broken = o.db.generate_id().expect("id");
            o.tree
                .insert(key(QUEUED, broken), &b"\x00\x01not an entry"[..])
                .expect("insert");
            let dead = o.db.generate_id().expect("id");
            o.tree.insert(key(DEAD, dead), &b"x"[..]).expect("insert");
            o.enqueue(vec![env(2)]).await.expect("enqueue");
        }
        let o = Outbox::open(dir.path(), 10).expect("reopen");
        assert_eq!((o.pending(), o.dead()), (3, 1));
        let entries = o
            .peek(10)
            .expect("an unreadable entry does not fail the read");
        assert_eq!(
            entries
                .iter()
                .map(|e| e.envelope.clone())
                .collect::<Vec<_>>(),
            vec![env(1), env(2)]
        );
        assert!(o.dead_entries().expect("dead").is_empty());
        assert_eq!((o.pending(), o.dead(), o.set_aside_entries()), (2, 0, 2));
        let status = crate::status::current(&o, &Default::default()).expect("status");
        assert!(
            status
                .render()
                .contains("unreadable entries:   2 (set aside"),
            "{}",
            status.render()
        );
        drop((o, status));
        let o = Outbox::open(dir.path(), 10).expect("reopen");
        assert_eq!(
            (o.pending(), o.set_aside_entries()),
            (2, 2),
            "set aside for good, the bytes kept"
        );
    }
}
