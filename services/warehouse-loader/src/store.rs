//! One batch, one transaction: the consumed positions and every row they produce commit
//! together, so a crash at any instant neither loses nor doubles anything.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::Transaction;

use crate::rows::{DocumentRow, EventRows, facility_region};

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
    /// Messages skipped because an earlier transaction already applied them.
    pub already_applied: u64,
}

/// Writes a batch: `items` are (position, rows or None for a dead-lettered message).
pub async fn write_batch(
    tx: &Transaction<'_>,
    group: &str,
    items: &[(Position, Option<EventRows>)],
) -> Result<Written, tokio_postgres::Error> {
    let mut written = Written::default();
    // Lock this group's rows for the batch's partitions and read where each stands.
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    for p in items
        .iter()
        .map(|(p, _)| (p.topic.clone(), p.partition))
        .collect::<std::collections::BTreeSet<_>>()
    {
        tx.execute(
            "INSERT INTO loader_offsets (consumer_group, topic, kafka_partition, next_offset) VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
            &[&group, &p.0, &p.1],
        )
        .await?;
        let row = tx
            .query_one("SELECT next_offset FROM loader_offsets WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = $3 FOR UPDATE", &[&group, &p.0, &p.1])
            .await?;
        next.insert(p, row.get(0));
    }
    let fresh: Vec<&(Position, Option<EventRows>)> = items
        .iter()
        .filter(|(p, _)| {
            p.offset
                >= next
                    .get(&(p.topic.clone(), p.partition))
                    .copied()
                    .unwrap_or(0)
        })
        .collect();
    written.already_applied = (items.len() - fresh.len()) as u64;

    let history = tx
        .prepare(
            "INSERT INTO event_history (event_id, kind, document_id, document_version, action, occurred_at, recorded_at, source_facility, \
             source_region, patient_key, patient_key_id, age_band, sex, residence_region, kafka_topic, kafka_partition, kafka_offset) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) ON CONFLICT (event_id) DO NOTHING",
        )
        .await?;
    let inserts = fresh
        .iter()
        .filter_map(|(p, rows)| rows.as_ref().map(|r| (p, r)))
        .map(|(p, r)| {
            let h = &r.history;
            let pt = &h.patient;
            let history = &history;
            async move {
                tx.execute(
                    history,
                    &[
                        &h.event_id,
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
                    ],
                )
                .await
            }
        });
    // try_join_all keeps every insert in flight at once on the one connection (pipelining).
    for n in futures::future::try_join_all(inserts).await? {
        written.history += n;
    }

    // Current state: per document keep only the highest version of this batch, then upsert
    // where it is newer than what is stored (duplicates and older versions are no-ops).
    let mut latest: BTreeMap<&str, &EventRows> = BTreeMap::new();
    for (_, rows) in &fresh {
        if let Some(r) = rows {
            let e = latest.entry(r.history.document_id.as_str()).or_insert(r);
            if r.history.document_version > e.history.document_version {
                *e = r;
            }
        }
    }
    for n in futures::future::try_join_all(latest.values().map(|r| upsert_current(tx, r))).await? {
        written.current += n;
    }

    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (p, _) in items {
        let e = ends
            .entry((p.topic.clone(), p.partition))
            .or_insert(p.offset + 1);
        *e = (*e).max(p.offset + 1);
    }
    for ((topic, partition), end) in ends {
        tx.execute(
            "UPDATE loader_offsets SET next_offset = GREATEST(next_offset, $4), updated_at = now() \
             WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = $3",
            &[&group, &topic, &partition, &end],
        )
        .await?;
    }
    Ok(written)
}

async fn upsert_current(tx: &Transaction<'_>, r: &EventRows) -> Result<u64, tokio_postgres::Error> {
    let h = &r.history;
    let p = &h.patient;
    let cancelled = r.cancelled();
    match &r.document {
        DocumentRow::Receipt(d) => {
            tx.execute(
                "INSERT INTO referral_receipts (referral_document_id, event_id, received_by_facility, received_by_region, received_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (referral_document_id) DO NOTHING",
                &[&d.referral_document_id, &h.event_id, &d.received_by, &facility_region(&d.received_by), &d.received_at],
            )
            .await
        }
        DocumentRow::Referral(d) => {
            tx.execute(
                "INSERT INTO referrals (document_id, document_version, event_id, cancelled, patient_key, age_band, sex, residence_region, \
                 issuer_facility, issuer_region, receiving_facility, receiving_region, reason, discharge_type, main_icd10, secondary_icd10, \
                 issued_on, valid_until, chronic_validity, admitted_at, discharged_at, occurred_at) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22) \
                 ON CONFLICT (document_id) DO UPDATE SET document_version = EXCLUDED.document_version, event_id = EXCLUDED.event_id, \
                 cancelled = EXCLUDED.cancelled, patient_key = EXCLUDED.patient_key, age_band = EXCLUDED.age_band, sex = EXCLUDED.sex, \
                 residence_region = EXCLUDED.residence_region, issuer_facility = EXCLUDED.issuer_facility, issuer_region = EXCLUDED.issuer_region, \
                 receiving_facility = EXCLUDED.receiving_facility, receiving_region = EXCLUDED.receiving_region, reason = EXCLUDED.reason, \
                 discharge_type = EXCLUDED.discharge_type, main_icd10 = EXCLUDED.main_icd10, secondary_icd10 = EXCLUDED.secondary_icd10, \
                 issued_on = EXCLUDED.issued_on, valid_until = EXCLUDED.valid_until, chronic_validity = EXCLUDED.chronic_validity, \
                 admitted_at = EXCLUDED.admitted_at, discharged_at = EXCLUDED.discharged_at, occurred_at = EXCLUDED.occurred_at \
                 WHERE referrals.document_version < EXCLUDED.document_version",
                &[
                    &h.document_id, &h.document_version, &h.event_id, &cancelled, &p.patient_key, &p.age_band, &p.sex, &p.residence_region,
                    &d.issuer_facility, &facility_region(&d.issuer_facility), &d.receiving_facility,
                    &d.receiving_facility.as_deref().and_then(facility_region), &d.reason, &d.discharge_type, &d.main_icd10,
                    &d.secondary_icd10, &d.issued_on, &d.valid_until, &d.chronic_validity, &d.admitted_at, &d.discharged_at, &h.occurred_at,
                ],
            )
            .await
        }
        DocumentRow::Appointment(d) => {
            tx.execute(
                "INSERT INTO appointments (document_id, document_version, event_id, cancelled, patient_key, age_band, sex, residence_region, \
                 facility, facility_region, appointment_at, issued_on, main_icd10, occurred_at) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) \
                 ON CONFLICT (document_id) DO UPDATE SET document_version = EXCLUDED.document_version, event_id = EXCLUDED.event_id, \
                 cancelled = EXCLUDED.cancelled, patient_key = EXCLUDED.patient_key, age_band = EXCLUDED.age_band, sex = EXCLUDED.sex, \
                 residence_region = EXCLUDED.residence_region, facility = EXCLUDED.facility, facility_region = EXCLUDED.facility_region, \
                 appointment_at = EXCLUDED.appointment_at, issued_on = EXCLUDED.issued_on, main_icd10 = EXCLUDED.main_icd10, \
                 occurred_at = EXCLUDED.occurred_at \
                 WHERE appointments.document_version < EXCLUDED.document_version",
                &[
                    &h.document_id, &h.document_version, &h.event_id, &cancelled, &p.patient_key, &p.age_band, &p.sex, &p.residence_region,
                    &d.facility, &facility_region(&d.facility), &d.appointment_at, &d.issued_on, &d.main_icd10, &h.occurred_at,
                ],
            )
            .await
        }
        DocumentRow::LabReport(d) => {
            let changed = tx
                .execute(
                    "INSERT INTO lab_reports (document_id, document_version, event_id, cancelled, patient_key, age_band, sex, residence_region, \
                     facility, facility_region, service_code, first_result_at, line_count, occurred_at) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) \
                     ON CONFLICT (document_id) DO UPDATE SET document_version = EXCLUDED.document_version, event_id = EXCLUDED.event_id, \
                     cancelled = EXCLUDED.cancelled, patient_key = EXCLUDED.patient_key, age_band = EXCLUDED.age_band, sex = EXCLUDED.sex, \
                     residence_region = EXCLUDED.residence_region, facility = EXCLUDED.facility, facility_region = EXCLUDED.facility_region, \
                     service_code = EXCLUDED.service_code, first_result_at = EXCLUDED.first_result_at, line_count = EXCLUDED.line_count, \
                     occurred_at = EXCLUDED.occurred_at \
                     WHERE lab_reports.document_version < EXCLUDED.document_version",
                    &[
                        &h.document_id, &h.document_version, &h.event_id, &cancelled, &p.patient_key, &p.age_band, &p.sex, &p.residence_region,
                        &d.facility, &facility_region(&d.facility), &d.service_code, &d.first_result_at, &(d.lines.len() as i32), &h.occurred_at,
                    ],
                )
                .await?;
            if changed > 0 {
                tx.execute("DELETE FROM lab_result_lines WHERE document_id = $1", &[&h.document_id]).await?;
                for l in &d.lines {
                    tx.execute(
                        "INSERT INTO lab_result_lines (document_id, line_number, indicator_code, indicator_name, value_numeric, value_text, unit, result_at, loinc_code) \
                         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT DO NOTHING",
                        &[&h.document_id, &l.line_number, &l.indicator_code, &l.indicator_name, &l.value_numeric, &l.value_text, &l.unit, &l.result_at, &l.loinc_code],
                    )
                    .await?;
                }
            }
            Ok(changed)
        }
    }
}
