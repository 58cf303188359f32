//! The access table, `restricted.accesses`: one row per access decision of a regional store's
//! query API (the audit topic), so that a patient can be told who accessed their record, when,
//! why and with what decision. It names patients only by pseudonymous key and lives in the
//! `restricted` schema: analysts never read it; a privacy officer's role reads it alone. The
//! record's document id (an acknowledged referral's, holding the facility's slip number) is
//! not kept: the warehouse holds no slip numbers.

use lienthong_proto::v1 as pb;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Transaction};

use crate::rows::RowError;

/// Longest text the table takes in one field: audit records are written by the stores, so a
/// longer value is a defect (or hostile), not an access to record verbatim.
const MAX_TEXT: usize = 4096;

/// Most patient keys one record may name (a list answer names each patient it held).
const MAX_PATIENTS: usize = 10_000;

/// One row of `restricted.accesses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRow {
    /// The audit record's id.
    pub audit_id: String,
    /// When the store decided.
    pub at: OffsetDateTime,
    /// The calling facility.
    pub caller_facility: String,
    /// The individual acting for it.
    pub caller_individual: String,
    /// mtls / token / insecure-dev / none.
    pub auth_method: String,
    /// The query API method.
    pub method: String,
    /// Stated purpose of use.
    pub purpose: String,
    /// allowed / refused / break-glass.
    pub decision: String,
    /// Why.
    pub reason: String,
    /// Pseudonymous keys of the patients concerned.
    pub patient_keys: Vec<String>,
    /// Documents answered.
    pub results: i32,
    /// The caller's request id.
    pub request_id: String,
    /// The client's address.
    pub client_address: String,
    /// The facility whose list or referral it was.
    pub subject_facility: String,
}

/// The decision as the table names it.
fn decision_name(decision: i32) -> Result<&'static str, RowError> {
    match pb::AccessDecision::try_from(decision) {
        Ok(pb::AccessDecision::Allowed) => Ok("allowed"),
        Ok(pb::AccessDecision::Refused) => Ok("refused"),
        Ok(pb::AccessDecision::BreakGlass) => Ok("break-glass"),
        Ok(pb::AccessDecision::Unspecified) | Err(_) => Err(RowError(format!(
            "access audit record has no known decision ({decision}); a store writes allowed, \
             refused or break-glass"
        ))),
    }
}

/// The row of an audit record; Err (dead-lettered) when it is not one a store writes.
pub fn access_row(e: &pb::AccessAuditEvent) -> Result<AccessRow, RowError> {
    if e.audit_id.is_empty() {
        return Err(RowError("access audit record has no audit_id".into()));
    }
    let at =
        e.at.as_ref()
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t.seconds).ok())
            .filter(|t| (2000..=9000).contains(&t.year()))
            .ok_or_else(|| {
                RowError(format!(
                    "access audit record {} has no time, or one outside years 2000-9000",
                    e.audit_id
                ))
            })?;
    if e.patient_keys.len() > MAX_PATIENTS {
        return Err(RowError(format!(
            "access audit record {} names {} patients, more than the {MAX_PATIENTS} one answer can hold",
            e.audit_id,
            e.patient_keys.len()
        )));
    }
    let texts = [
        ("audit_id", &e.audit_id),
        ("caller_facility", &e.caller_facility),
        ("caller_individual", &e.caller_individual),
        ("auth_method", &e.auth_method),
        ("method", &e.method),
        ("purpose", &e.purpose),
        ("reason", &e.reason),
        ("request_id", &e.request_id),
        ("client_address", &e.client_address),
        ("subject_facility", &e.subject_facility),
    ];
    for (name, value) in texts
        .into_iter()
        .chain(e.patient_keys.iter().map(|k| ("patient_keys", k)))
    {
        if value.contains('\0') || value.len() > MAX_TEXT {
            return Err(RowError(format!(
                "access audit record {}: {name} holds a NUL character or more than {MAX_TEXT} bytes",
                e.audit_id.escape_debug()
            )));
        }
    }
    Ok(AccessRow {
        audit_id: e.audit_id.clone(),
        at,
        caller_facility: e.caller_facility.clone(),
        caller_individual: e.caller_individual.clone(),
        auth_method: e.auth_method.clone(),
        method: e.method.clone(),
        purpose: e.purpose.clone(),
        decision: decision_name(e.decision)?.to_owned(),
        reason: e.reason.clone(),
        patient_keys: e.patient_keys.clone(),
        results: i32::try_from(e.results).unwrap_or(i32::MAX),
        request_id: e.request_id.clone(),
        client_address: e.client_address.clone(),
        subject_facility: e.subject_facility.clone(),
    })
}

/// Inserts the rows of a batch; a record already loaded (same audit id) is left as it is.
pub async fn insert(
    tx: &Transaction<'_>,
    rows: &[&AccessRow],
) -> Result<u64, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let statement = tx
        .prepare(
            "INSERT INTO restricted.accesses (audit_id, at, caller_facility, caller_individual, \
             auth_method, method, purpose, decision, reason, patient_keys, results, request_id, \
             client_address, subject_facility) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (audit_id) DO NOTHING",
        )
        .await?;
    // Pipelined: the statements go out together and their answers come back together.
    let statement = &statement;
    let counts = futures::future::try_join_all(rows.iter().map(|r| async move {
        let params: [&(dyn ToSql + Sync); 14] = [
            &r.audit_id,
            &r.at,
            &r.caller_facility,
            &r.caller_individual,
            &r.auth_method,
            &r.method,
            &r.purpose,
            &r.decision,
            &r.reason,
            &r.patient_keys,
            &r.results,
            &r.request_id,
            &r.client_address,
            &r.subject_facility,
        ];
        tx.execute(statement, &params).await
    }))
    .await?;
    Ok(counts.into_iter().sum())
}

/// Every access that named one of `patient_keys` (a patient's keys under the current and any
/// previous pseudonym key), oldest first.
pub async fn accesses_of(
    client: &impl GenericClient,
    patient_keys: &[String],
) -> Result<Vec<AccessRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT audit_id, at, caller_facility, caller_individual, auth_method, method, \
             purpose, decision, reason, patient_keys, results, request_id, client_address, \
             subject_facility \
             FROM restricted.accesses WHERE patient_keys && $1::text[] ORDER BY at, audit_id",
            &[&patient_keys],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AccessRow {
            audit_id: r.get(0),
            at: r.get(1),
            caller_facility: r.get(2),
            caller_individual: r.get(3),
            auth_method: r.get(4),
            method: r.get(5),
            purpose: r.get(6),
            decision: r.get(7),
            reason: r.get(8),
            patient_keys: r.get(9),
            results: r.get(10),
            request_id: r.get(11),
            client_address: r.get(12),
            subject_facility: r.get(13),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> pb::AccessAuditEvent {
        pb::AccessAuditEvent {
            audit_id: "a1".into(),
            at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            caller_facility: "79001".into(),
            caller_individual: "000001/HCM-CCHN".into(),
            auth_method: "token".into(),
            method: "GetPatientRecord".into(),
            purpose: "PURPOSE_OF_USE_TREATMENT".into(),
            decision: pb::AccessDecision::BreakGlass as i32,
            reason: "emergency".into(),
            patient_keys: vec!["pk".into()],
            results: 3,
            ..Default::default()
        }
    }

    #[test]
    fn a_store_record_becomes_its_row() {
        let row = access_row(&record()).expect("row");
        assert_eq!(row.decision, "break-glass");
        assert_eq!(row.at.unix_timestamp(), 1_800_000_000);
        assert_eq!(row.patient_keys, ["pk"]);
        assert_eq!(row.results, 3);
    }

    #[test]
    fn records_no_store_writes_are_refused_with_the_field_named() {
        let refused = |tweak: fn(&mut pb::AccessAuditEvent)| {
            let mut r = record();
            tweak(&mut r);
            access_row(&r).expect_err("refused").0
        };
        assert!(refused(|r| r.audit_id.clear()).contains("no audit_id"));
        assert!(refused(|r| r.at = None).contains("no time"));
        assert!(
            refused(|r| r.at = Some(prost_types::Timestamp {
                seconds: 253_402_300_000,
                nanos: 0
            }))
            .contains("outside years")
        );
        assert!(refused(|r| r.decision = 0).contains("no known decision"));
        assert!(refused(|r| r.decision = 99).contains("no known decision"));
        assert!(refused(|r| r.reason = "a\0b".into()).contains("reason holds a NUL"));
        assert!(refused(|r| r.patient_keys.push("x".repeat(5000))).contains("patient_keys"));
        assert!(
            refused(|r| r.patient_keys = vec!["k".into(); MAX_PATIENTS + 1]).contains("patients")
        );
    }
}
