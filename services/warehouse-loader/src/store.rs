//! One batch, one transaction: the consumed positions and every row they produce commit
//! together, so a crash at any instant neither loses nor doubles anything.
//!
//! Rows travel by binary `COPY` into session-local staging tables; set-based statements then
//! move them: insert-if-absent into the history, highest-version-wins into current state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use time::Date;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use crate::rows::{DocumentRow, EventRows, MessageRows, facility_region, history_month};

/// A consumed message's position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// What a committed batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// New history rows.
    pub history: u64,
    /// Current-state rows inserted or replaced.
    pub current: u64,
    /// Access audit rows inserted.
    pub accesses: u64,
    /// Messages skipped because an earlier transaction already applied them.
    pub already_applied: u64,
}

/// A table filled through a staging copy of itself: target, staging table, conflict key and
/// the typed columns COPY fills (in `write` order).
struct Staged {
    table: &'static str,
    stage: &'static str,
    key: &'static str,
    columns: &'static [(&'static str, Type)],
}

const HISTORY: Staged = Staged {
    table: "event_history",
    stage: "stage_event_history",
    key: "event_id, event_month",
    columns: &[
        ("event_id", Type::TEXT),
        ("event_month", Type::DATE),
        ("kind", Type::TEXT),
        ("document_id", Type::TEXT),
        ("document_version", Type::INT8),
        ("action", Type::TEXT),
        ("occurred_at", Type::TIMESTAMPTZ),
        ("recorded_at", Type::TIMESTAMPTZ),
        ("source_facility", Type::TEXT),
        ("source_region", Type::TEXT),
        ("patient_key", Type::TEXT),
        ("patient_key_id", Type::TEXT),
        ("age_band", Type::TEXT),
        ("sex", Type::TEXT),
        ("residence_region", Type::TEXT),
        ("kafka_topic", Type::TEXT),
        ("kafka_partition", Type::INT4),
        ("kafka_offset", Type::INT8),
        ("content_digest", Type::BYTEA),
    ],
};

/// The columns every current-state document table starts with, in this order.
macro_rules! document_columns {
    ($($rest:tt)*) => {
        &[
            ("document_id", Type::TEXT),
            ("document_version", Type::INT8),
            ("event_id", Type::TEXT),
            ("cancelled", Type::BOOL),
            ("patient_key", Type::TEXT),
            ("age_band", Type::TEXT),
            ("sex", Type::TEXT),
            ("residence_region", Type::TEXT),
            $($rest)*
        ]
    };
}

const REFERRALS: Staged = Staged {
    table: "referrals",
    stage: "stage_referrals",
    key: "document_id",
    columns: document_columns!(
        ("issuer_facility", Type::TEXT),
        ("issuer_region", Type::TEXT),
        ("receiving_facility", Type::TEXT),
        ("receiving_region", Type::TEXT),
        ("reason", Type::TEXT),
        ("discharge_type", Type::TEXT),
        ("main_icd10", Type::TEXT),
        ("secondary_icd10", Type::TEXT_ARRAY),
        ("issued_on", Type::DATE),
        ("valid_until", Type::DATE),
        ("chronic_validity", Type::BOOL),
        ("admitted_at", Type::TIMESTAMPTZ),
        ("discharged_at", Type::TIMESTAMPTZ),
        ("occurred_at", Type::TIMESTAMPTZ),
    ),
};

const APPOINTMENTS: Staged = Staged {
    table: "appointments",
    stage: "stage_appointments",
    key: "document_id",
    columns: document_columns!(
        ("facility", Type::TEXT),
        ("facility_region", Type::TEXT),
        ("appointment_at", Type::TIMESTAMPTZ),
        ("issued_on", Type::DATE),
        ("main_icd10", Type::TEXT),
        ("occurred_at", Type::TIMESTAMPTZ),
    ),
};

const LAB_REPORTS: Staged = Staged {
    table: "lab_reports",
    stage: "stage_lab_reports",
    key: "document_id",
    columns: document_columns!(
        ("facility", Type::TEXT),
        ("facility_region", Type::TEXT),
        ("service_code", Type::TEXT),
        ("first_result_at", Type::TIMESTAMPTZ),
        ("line_count", Type::INT4),
        ("occurred_at", Type::TIMESTAMPTZ),
    ),
};

const LAB_LINES: Staged = Staged {
    table: "lab_result_lines",
    stage: "stage_lab_result_lines",
    key: "document_id, line_number",
    columns: &[
        ("document_id", Type::TEXT),
        ("line_number", Type::INT4),
        ("indicator_code", Type::TEXT),
        ("value_numeric", Type::FLOAT8),
        ("unit", Type::TEXT),
        ("result_at", Type::TIMESTAMPTZ),
        ("loinc_code", Type::TEXT),
    ],
};

const RECEIPTS: Staged = Staged {
    table: "referral_receipts",
    stage: "stage_referral_receipts",
    key: "referral_document_id",
    columns: &[
        ("referral_document_id", Type::TEXT),
        ("event_id", Type::TEXT),
        ("received_by_facility", Type::TEXT),
        ("received_by_region", Type::TEXT),
        ("received_at", Type::TIMESTAMPTZ),
    ],
};

impl Staged {
    fn names(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn create_stage(&self) -> String {
        // Temporary: private to the session, never WAL-logged, emptied at every commit.
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;",
            self.stage, self.table
        )
    }

    /// Insert-if-absent from the staging table.
    fn insert_absent(&self) -> String {
        let names = self.names();
        format!(
            "INSERT INTO {} ({names}) SELECT {names} FROM {} ON CONFLICT ({}) DO NOTHING",
            self.table, self.stage, self.key
        )
    }

    /// Upsert from the staging table where the staged version is newer.
    fn upsert_newer(&self) -> String {
        let names = self.names();
        let set = self
            .columns
            .iter()
            .filter(|(c, _)| !self.key.split(", ").any(|k| k == *c))
            .map(|(c, _)| format!("{c} = EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} AS t ({names}) SELECT {names} FROM {} ON CONFLICT ({}) DO UPDATE SET {set} \
             WHERE t.document_version < EXCLUDED.document_version",
            self.table, self.stage, self.key
        )
    }

    async fn copy(
        &self,
        tx: &Transaction<'_>,
        into: CopyTarget,
    ) -> Result<std::pin::Pin<Box<BinaryCopyInWriter>>, tokio_postgres::Error> {
        let target = match into {
            CopyTarget::Stage => self.stage,
            CopyTarget::Table => self.table,
        };
        let sink = tx
            .copy_in(&format!(
                "COPY {target} ({}) FROM STDIN (FORMAT binary)",
                self.names()
            ))
            .await?;
        let types: Vec<Type> = self.columns.iter().map(|(_, t)| t.clone()).collect();
        Ok(Box::pin(BinaryCopyInWriter::new(sink, &types)))
    }
}

/// Where COPY writes: the staging tables (the loader), or the tables themselves (backfill).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyTarget {
    Stage,
    Table,
}

/// Bulk-loads rows straight into the tables with binary COPY: no offsets, no comparison with
/// stored rows. Only for an empty warehouse (a backfill, or the benchmark's raw-COPY baseline);
/// `rows` must hold each event once and each document at its latest version once.
pub async fn copy_direct(
    tx: &Transaction<'_>,
    rows: &[(Position, EventRows)],
) -> Result<(), tokio_postgres::Error> {
    let fresh: Vec<(&Position, &EventRows)> = rows.iter().map(|(p, r)| (p, r)).collect();
    stage_history(tx, &fresh, CopyTarget::Table).await?;
    stage_current(tx, rows.iter().map(|(_, r)| r), CopyTarget::Table).await?;
    Ok(())
}

/// Creates the monthly `event_history` partitions a batch needs, outside its transaction
/// (the DDL must not hold locks for a whole batch). `known` remembers months already made.
pub async fn ensure_history_months<'a>(
    client: &Client,
    known: &mut HashSet<Date>,
    events: impl IntoIterator<Item = &'a EventRows>,
) -> Result<(), tokio_postgres::Error> {
    let months: BTreeSet<Date> = events
        .into_iter()
        .map(|r| history_month(r.history.occurred_at))
        .filter(|m| !known.contains(m))
        .collect();
    for m in months {
        client
            .execute("SELECT lienthong_ensure_history_month($1)", &[&m])
            .await?;
        known.insert(m);
    }
    Ok(())
}

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// PostgreSQL failed or refused the rows.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// Events stored before (same event id, so the same document version) arrived again with
    /// other content: those messages must be dead-lettered, not written. Every such message
    /// of the batch (of one writer's share) is named, so one retry writes the rest.
    #[error("{} event(s) of the batch are stored with other content, the first {}", .0.len(), .0.first().map_or("", |c| c.event_id.as_str()))]
    Conflicts(Vec<Conflict>),
}

/// A message whose event is stored with other content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The event id.
    pub event_id: String,
    /// The offset of the message that conflicts.
    pub offset: i64,
}

/// The statements that make sure a batch's staging tables exist in this session. Every batch
/// after a session's first finds them there already; the server's "already exists, skipping"
/// notice for each would be five log lines a batch, so notices are off for the transaction.
fn staging_tables() -> String {
    let mut sql = String::from("SET LOCAL client_min_messages = warning;");
    for s in [&HISTORY, &REFERRALS, &APPOINTMENTS, &LAB_REPORTS, &RECEIPTS] {
        sql.push_str(&s.create_stage());
    }
    sql
}

/// Writes a batch: `items` are (position, rows or None for a dead-lettered message).
pub async fn write_batch(
    tx: &Transaction<'_>,
    group: &str,
    items: &[&(Position, Option<MessageRows>)],
) -> Result<Written, WriteError> {
    let mut written = Written::default();
    let next = lock_positions(tx, group, items).await?;
    // A writer holds a handful of partitions: a scan beats building a key per message.
    let stored_next = |p: &Position| {
        next.iter()
            .find(|((topic, partition), _)| *partition == p.partition && *topic == p.topic)
            .map_or(0, |(_, n)| *n)
    };
    let mut fresh: Vec<(&Position, &EventRows)> = Vec::with_capacity(items.len());
    let mut accesses = Vec::new();
    for (p, rows) in items.iter().copied() {
        if p.offset < stored_next(p) {
            written.already_applied += 1;
            continue;
        }
        match rows {
            Some(MessageRows::Event(rows)) => fresh.push((p, rows)),
            Some(MessageRows::Access(row)) => accesses.push(row),
            None => {}
        }
    }
    written.accesses = crate::accesses::insert(tx, &accesses).await?;

    tx.batch_execute(&staging_tables()).await?;

    if !fresh.is_empty() {
        written.history = write_history(tx, &fresh).await?;
    }

    // Current state: per document only the highest version of this batch is staged; the
    // upsert then replaces what is stored only when it is newer (duplicates and older
    // versions are no-ops).
    let mut latest: BTreeMap<&str, &EventRows> = BTreeMap::new();
    for (_, r) in &fresh {
        let e = latest.entry(r.history.document_id.as_str()).or_insert(r);
        if r.history.document_version > e.history.document_version {
            *e = r;
        }
    }
    // Documents the warehouse has never seen are copied straight into their tables (the
    // common case: a new referral, appointment or report); only documents already stored
    // go through staging and the version-comparing upsert.
    let (new, known, stored) = split_new_documents(tx, &latest).await?;
    if let Some(conflict) = conflict_across_months(tx, &fresh, &stored).await? {
        return Err(conflict);
    }
    let mut staged_rows = known;
    if !new.is_empty() {
        tx.batch_execute("SAVEPOINT current_copy").await?;
        match stage_current(tx, new.iter().copied(), CopyTarget::Table).await {
            Ok(_) => {
                tx.batch_execute("RELEASE SAVEPOINT current_copy").await?;
                written.current += new.len() as u64;
            }
            // Stored after all (only if partitions were re-keyed, so a document's events
            // come through two partitions): undo, and upsert them like the others.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT current_copy")
                    .await?;
                staged_rows.extend(new);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let latest: BTreeMap<&str, &EventRows> = staged_rows
        .into_iter()
        .map(|r| (r.history.document_id.as_str(), r))
        .collect();
    let staged = stage_current(tx, latest.values().copied(), CopyTarget::Stage).await?;
    if staged.referrals {
        written.current += tx.execute(&REFERRALS.upsert_newer(), &[]).await?;
    }
    if staged.appointments {
        written.current += tx.execute(&APPOINTMENTS.upsert_newer(), &[]).await?;
    }
    if staged.receipts {
        written.current += tx.execute(&RECEIPTS.insert_absent(), &[]).await?;
    }
    if staged.lab_reports {
        // The upsert says which reports changed (inserted, or replaced by a newer version);
        // only their lines are written, straight into the table: a new report has no lines
        // yet, a replaced one has its old lines deleted first (by key list, which keeps to the
        // index), so nothing can conflict.
        let changed: HashMap<String, bool> = tx
            .query(
                &format!(
                    "{} RETURNING t.document_id, t.xmax = 0",
                    LAB_REPORTS.upsert_newer()
                ),
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        written.current += changed.len() as u64;
        let replaced: Vec<&str> = changed
            .iter()
            .filter(|(_, inserted)| !**inserted)
            .map(|(d, _)| d.as_str())
            .collect();
        if !replaced.is_empty() {
            tx.execute(
                "DELETE FROM lab_result_lines WHERE document_id = ANY($1)",
                &[&replaced],
            )
            .await?;
        }
        if !changed.is_empty() {
            copy_lab_lines(
                tx,
                latest
                    .values()
                    .copied()
                    .filter(|r| changed.contains_key(r.history.document_id.as_str())),
                CopyTarget::Table,
            )
            .await?;
        }
    }

    advance_positions(tx, group, items).await?;
    Ok(written)
}

/// Locks this group's rows for the batch's partitions and reads where each stands (one
/// statement each way, whatever the number of partitions).
async fn lock_positions(
    tx: &Transaction<'_>,
    group: &str,
    items: &[&(Position, Option<MessageRows>)],
) -> Result<HashMap<(String, i32), i64>, tokio_postgres::Error> {
    let partitions: BTreeSet<(&str, i32)> = items
        .iter()
        .map(|(p, _)| (p.topic.as_str(), p.partition))
        .collect();
    let topics: Vec<&str> = partitions.iter().map(|p| p.0).collect();
    let numbers: Vec<i32> = partitions.iter().map(|p| p.1).collect();
    tx.execute(
        "INSERT INTO loader_offsets (consumer_group, topic, kafka_partition, next_offset) \
         SELECT $1, t, p, 0 FROM unnest($2::text[], $3::int[]) AS u(t, p) ON CONFLICT DO NOTHING",
        &[&group, &topics, &numbers],
    )
    .await?;
    // Locked in key order, so two writers never wait on each other in a cycle.
    let rows = tx
        .query(
            "SELECT o.topic, o.kafka_partition, o.next_offset FROM loader_offsets o \
             JOIN unnest($2::text[], $3::int[]) AS u(t, p) ON o.topic = u.t AND o.kafka_partition = u.p \
             WHERE o.consumer_group = $1 ORDER BY o.topic, o.kafka_partition FOR UPDATE OF o",
            &[&group, &topics, &numbers],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}

async fn advance_positions(
    tx: &Transaction<'_>,
    group: &str,
    items: &[&(Position, Option<MessageRows>)],
) -> Result<(), tokio_postgres::Error> {
    let mut ends: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for (p, _) in items.iter().copied() {
        let e = ends
            .entry((p.topic.as_str(), p.partition))
            .or_insert(p.offset + 1);
        *e = (*e).max(p.offset + 1);
    }
    let topics: Vec<&str> = ends.keys().map(|k| k.0).collect();
    let numbers: Vec<i32> = ends.keys().map(|k| k.1).collect();
    let offsets: Vec<i64> = ends.values().copied().collect();
    tx.execute(
        "UPDATE loader_offsets o SET next_offset = GREATEST(o.next_offset, u.e), updated_at = now() \
         FROM unnest($2::text[], $3::int[], $4::bigint[]) AS u(t, p, e) \
         WHERE o.consumer_group = $1 AND o.topic = u.t AND o.kafka_partition = u.p",
        &[&group, &topics, &numbers, &offsets],
    )
    .await?;
    Ok(())
}

/// Splits the latest rows of a batch into documents not stored yet and everything else
/// (stored documents, receipts), with one indexed lookup per document table.
#[allow(clippy::type_complexity)]
async fn split_new_documents<'r>(
    tx: &Transaction<'_>,
    latest: &BTreeMap<&str, &'r EventRows>,
) -> Result<(Vec<&'r EventRows>, Vec<&'r EventRows>, HashMap<String, i64>), tokio_postgres::Error> {
    let mut stored: HashMap<String, i64> = HashMap::new();
    for (table, is_kind) in [
        (
            REFERRALS.table,
            (|d: &DocumentRow| matches!(d, DocumentRow::Referral(_))) as fn(&DocumentRow) -> bool,
        ),
        (APPOINTMENTS.table, |d| {
            matches!(d, DocumentRow::Appointment(_))
        }),
        (LAB_REPORTS.table, |d| {
            matches!(d, DocumentRow::LabReport(_))
        }),
    ] {
        let ids: Vec<&str> = latest
            .iter()
            .filter(|(_, r)| is_kind(&r.document))
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            continue;
        }
        for row in tx
            .query(
                &format!(
                    "SELECT document_id, document_version FROM {table} WHERE document_id = ANY($1)"
                ),
                &[&ids],
            )
            .await?
        {
            stored.insert(row.get(0), row.get(1));
        }
    }
    let (new, known) = latest.values().copied().partition(|r| {
        !matches!(r.document, DocumentRow::Receipt(_))
            && !stored.contains_key(r.history.document_id.as_str())
    });
    Ok((new, known, stored))
}

/// An event of `fresh` whose document is stored at its version, yet whose event id now has
/// two contents in the history: a conflict that the unique key did not catch because its
/// occurrence moved it to another monthly partition. Rare (only re-deliveries of a stored
/// version are looked up), so each is one indexed lookup.
async fn conflict_across_months(
    tx: &Transaction<'_>,
    fresh: &[(&Position, &EventRows)],
    stored: &HashMap<String, i64>,
) -> Result<Option<WriteError>, tokio_postgres::Error> {
    let mut found = Vec::new();
    for (p, r) in fresh {
        let h = &r.history;
        if h.content_digest.is_none() || stored.get(&h.document_id) != Some(&h.document_version) {
            continue;
        }
        let contents: i64 = tx
            .query_one(
                "SELECT count(DISTINCT content_digest) FROM event_history WHERE event_id = $1",
                &[&h.event_id],
            )
            .await?
            .get(0);
        if contents > 1 {
            found.push(Conflict {
                event_id: h.event_id.clone(),
                offset: p.offset,
            });
        }
    }
    Ok((!found.is_empty()).then_some(WriteError::Conflicts(found)))
}

/// Writes new history rows. Almost every event is new, so its rows are copied straight into
/// `event_history` (each event once); if one was stored before (a re-published duplicate),
/// the copy fails on the key and is undone, and the rows go through the staging table with
/// insert-if-absent instead. Returns the rows added.
async fn write_history(
    tx: &Transaction<'_>,
    fresh: &[(&Position, &EventRows)],
) -> Result<u64, WriteError> {
    let mut seen: HashMap<&str, Option<&[u8]>> = HashMap::with_capacity(fresh.len());
    let mut once: Vec<(&Position, &EventRows)> = Vec::with_capacity(fresh.len());
    let mut conflicts = Vec::new();
    for (p, r) in fresh {
        let digest = r.history.content_digest.as_deref();
        match seen.get(r.history.event_id.as_str()) {
            None => {
                seen.insert(&r.history.event_id, digest);
                once.push((p, r));
            }
            Some(Some(first)) if digest.is_some_and(|d| d != *first) => {
                conflicts.push(Conflict {
                    event_id: r.history.event_id.clone(),
                    offset: p.offset,
                });
            }
            Some(_) => {}
        }
    }
    if !conflicts.is_empty() {
        return Err(WriteError::Conflicts(conflicts));
    }
    tx.batch_execute("SAVEPOINT history_copy").await?;
    match stage_history(tx, &once, CopyTarget::Table).await {
        Ok(n) => {
            tx.batch_execute("RELEASE SAVEPOINT history_copy").await?;
            Ok(n)
        }
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT history_copy")
                .await?;
            stage_history(tx, &once, CopyTarget::Stage).await?;
            // Events already stored: copies are skipped, but the same event (so the same
            // document version) with other content is a conflict, never a silent duplicate.
            let stored_otherwise: HashSet<String> = tx
                .query(
                    "SELECT s.event_id FROM stage_event_history s JOIN event_history h \
                     ON h.event_id = s.event_id AND h.event_month = s.event_month \
                     WHERE h.content_digest <> s.content_digest",
                    &[],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            if !stored_otherwise.is_empty() {
                return Err(WriteError::Conflicts(
                    once.iter()
                        .filter(|(_, r)| stored_otherwise.contains(&r.history.event_id))
                        .map(|(p, r)| Conflict {
                            event_id: r.history.event_id.clone(),
                            offset: p.offset,
                        })
                        .collect(),
                ));
            }
            Ok(tx.execute(&HISTORY.insert_absent(), &[]).await?)
        }
        Err(e) => Err(e.into()),
    }
}

async fn stage_history(
    tx: &Transaction<'_>,
    fresh: &[(&Position, &EventRows)],
    into: CopyTarget,
) -> Result<u64, tokio_postgres::Error> {
    let mut w = HISTORY.copy(tx, into).await?;
    for (p, r) in fresh {
        let h = &r.history;
        let pt = &h.patient;
        let month = history_month(h.occurred_at);
        let row: [&(dyn ToSql + Sync); 19] = [
            &h.event_id,
            &month,
            &h.kind,
            &h.document_id,
            &h.document_version,
            &h.action,
            &h.occurred_at,
            &h.recorded_at,
            &h.source_facility,
            &h.source_region,
            &pt.patient_key,
            &pt.patient_key_id,
            &pt.age_band,
            &pt.sex,
            &pt.residence_region,
            &p.topic,
            &p.partition,
            &p.offset,
            &h.content_digest,
        ];
        w.as_mut().write(&row).await?;
    }
    w.as_mut().finish().await
}

/// Which staging tables received rows.
#[derive(Default)]
struct StagedKinds {
    referrals: bool,
    appointments: bool,
    lab_reports: bool,
    receipts: bool,
}

async fn stage_current<'r>(
    tx: &Transaction<'_>,
    latest: impl Iterator<Item = &'r EventRows>,
    into: CopyTarget,
) -> Result<StagedKinds, tokio_postgres::Error> {
    let mut referrals = Vec::new();
    let mut appointments = Vec::new();
    let mut labs = Vec::new();
    let mut receipts = Vec::new();
    for r in latest {
        match &r.document {
            DocumentRow::Referral(_) => referrals.push(r),
            DocumentRow::Appointment(_) => appointments.push(r),
            DocumentRow::LabReport(_) => labs.push(r),
            DocumentRow::Receipt(_) => receipts.push(r),
        }
    }
    let kinds = StagedKinds {
        referrals: !referrals.is_empty(),
        appointments: !appointments.is_empty(),
        lab_reports: !labs.is_empty(),
        receipts: !receipts.is_empty(),
    };
    if kinds.referrals {
        let mut w = REFERRALS.copy(tx, into).await?;
        for r in &referrals {
            let DocumentRow::Referral(d) = &r.document else {
                continue;
            };
            let (h, p) = (&r.history, &r.history.patient);
            let cancelled = r.cancelled();
            let issuer_region = facility_region(&d.issuer_facility);
            let receiving_region = d.receiving_facility.as_deref().and_then(facility_region);
            let row: [&(dyn ToSql + Sync); 22] = [
                &h.document_id,
                &h.document_version,
                &h.event_id,
                &cancelled,
                &p.patient_key,
                &p.age_band,
                &p.sex,
                &p.residence_region,
                &d.issuer_facility,
                &issuer_region,
                &d.receiving_facility,
                &receiving_region,
                &d.reason,
                &d.discharge_type,
                &d.main_icd10,
                &d.secondary_icd10,
                &d.issued_on,
                &d.valid_until,
                &d.chronic_validity,
                &d.admitted_at,
                &d.discharged_at,
                &h.occurred_at,
            ];
            w.as_mut().write(&row).await?;
        }
        w.as_mut().finish().await?;
    }
    if kinds.appointments {
        let mut w = APPOINTMENTS.copy(tx, into).await?;
        for r in &appointments {
            let DocumentRow::Appointment(d) = &r.document else {
                continue;
            };
            let (h, p) = (&r.history, &r.history.patient);
            let cancelled = r.cancelled();
            let region = facility_region(&d.facility);
            let row: [&(dyn ToSql + Sync); 14] = [
                &h.document_id,
                &h.document_version,
                &h.event_id,
                &cancelled,
                &p.patient_key,
                &p.age_band,
                &p.sex,
                &p.residence_region,
                &d.facility,
                &region,
                &d.appointment_at,
                &d.issued_on,
                &d.main_icd10,
                &h.occurred_at,
            ];
            w.as_mut().write(&row).await?;
        }
        w.as_mut().finish().await?;
    }
    if kinds.lab_reports {
        let mut w = LAB_REPORTS.copy(tx, into).await?;
        for r in &labs {
            let DocumentRow::LabReport(d) = &r.document else {
                continue;
            };
            let (h, p) = (&r.history, &r.history.patient);
            let cancelled = r.cancelled();
            let region = facility_region(&d.facility);
            let line_count = i32::try_from(d.lines.len()).unwrap_or(i32::MAX);
            let row: [&(dyn ToSql + Sync); 14] = [
                &h.document_id,
                &h.document_version,
                &h.event_id,
                &cancelled,
                &p.patient_key,
                &p.age_band,
                &p.sex,
                &p.residence_region,
                &d.facility,
                &region,
                &d.service_code,
                &d.first_result_at,
                &line_count,
                &h.occurred_at,
            ];
            w.as_mut().write(&row).await?;
        }
        w.as_mut().finish().await?;
        // Staged reports get their lines after the upsert (only those that changed).
        if into == CopyTarget::Table {
            copy_lab_lines(tx, labs.iter().copied(), into).await?;
        }
    }
    if kinds.receipts {
        let mut w = RECEIPTS.copy(tx, into).await?;
        for r in &receipts {
            let DocumentRow::Receipt(d) = &r.document else {
                continue;
            };
            let region = facility_region(&d.received_by);
            let row: [&(dyn ToSql + Sync); 5] = [
                &d.referral_document_id,
                &r.history.event_id,
                &d.received_by,
                &region,
                &d.received_at,
            ];
            w.as_mut().write(&row).await?;
        }
        w.as_mut().finish().await?;
    }
    Ok(kinds)
}

/// Copies the result lines of `reports` (lab report rows) into `into`.
async fn copy_lab_lines<'r>(
    tx: &Transaction<'_>,
    reports: impl Iterator<Item = &'r EventRows>,
    into: CopyTarget,
) -> Result<u64, tokio_postgres::Error> {
    let mut w = LAB_LINES.copy(tx, into).await?;
    for r in reports {
        let DocumentRow::LabReport(d) = &r.document else {
            continue;
        };
        for l in &d.lines {
            let row: [&(dyn ToSql + Sync); 7] = [
                &r.history.document_id,
                &l.line_number,
                &l.indicator_code,
                &l.value_numeric,
                &l.unit,
                &l.result_at,
                &l.loinc_code,
            ];
            w.as_mut().write(&row).await?;
        }
    }
    w.as_mut().finish().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_replace_only_with_newer_versions_and_never_touch_the_key() {
        let sql = REFERRALS.upsert_newer();
        assert!(sql.contains("ON CONFLICT (document_id) DO UPDATE"));
        assert!(sql.ends_with("WHERE t.document_version < EXCLUDED.document_version"));
        assert!(!sql.contains("document_id = EXCLUDED.document_id"));
        assert!(
            HISTORY
                .insert_absent()
                .ends_with("ON CONFLICT (event_id, event_month) DO NOTHING")
        );
    }

    #[test]
    fn staging_tables_are_temporary_and_emptied_at_commit() {
        for s in [
            &HISTORY,
            &REFERRALS,
            &APPOINTMENTS,
            &LAB_REPORTS,
            &LAB_LINES,
            &RECEIPTS,
        ] {
            let sql = s.create_stage();
            assert!(
                sql.starts_with("CREATE TEMP TABLE IF NOT EXISTS stage_"),
                "{sql}"
            );
            assert!(sql.contains("ON COMMIT DELETE ROWS"), "{sql}");
        }
    }

    #[test]
    fn making_sure_of_the_staging_tables_logs_no_notice() {
        let sql = staging_tables();
        assert!(
            sql.starts_with("SET LOCAL client_min_messages = warning;"),
            "{sql}"
        );
        assert_eq!(sql.matches("CREATE TEMP TABLE IF NOT EXISTS").count(), 5);
    }
}
