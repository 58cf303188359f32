//! Analytics events as warehouse rows. The warehouse reads the analytics topics alone, so what
//! reaches it was de-identified by the de-identification service under its reviewed policy:
//! keyed hashes for events, documents and patients, an age band, sex, province of residence,
//! facility codes and days. A day is stored as the start of that day in Vietnam (UTC+7), or of
//! its month or year when the source knew no more.

use lienthong_core::FacilityCode;
use lienthong_proto::v1 as pb;
use lienthong_sink::AnalyticsMessage;
use time::{Date, OffsetDateTime};

/// The row of `event_history`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// The event's analytics key (a keyed hash of its event id).
    pub event_id: String,
    /// referral / appointment / lab-result.
    pub kind: &'static str,
    /// The document's analytics key (a keyed hash of its document id).
    pub document_id: String,
    /// Document version.
    pub document_version: i64,
    /// created / updated / cancelled.
    pub action: &'static str,
    /// The day it happened.
    pub occurred_at: Option<OffsetDateTime>,
    /// The day the gateway accepted it.
    pub recorded_at: Option<OffsetDateTime>,
    /// Publishing facility.
    pub source_facility: String,
    /// Its region.
    pub source_region: Option<String>,
    /// Patient pseudonym.
    pub patient: PatientFacts,
    /// SHA-256 of the analytics event's content (`content_digest`), when known.
    pub content_digest: Option<Vec<u8>>,
}

/// What the warehouse knows of a patient.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PatientFacts {
    /// The patient's analytics key.
    pub patient_key: String,
    /// Id of the analytics key that made it.
    pub patient_key_id: String,
    /// Age band at the event under the policy, e.g. "25-29" or "90+".
    pub age_band: Option<String>,
    /// male / female / undetermined.
    pub sex: Option<&'static str>,
    /// Region (2025 province) of residence.
    pub residence_region: Option<String>,
}

/// Current-state row of one document.
// One per event, moved straight into its batch: boxing the referral would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum DocumentRow {
    /// A referral slip.
    Referral(ReferralRow),
    /// A follow-up appointment.
    Appointment(AppointmentRow),
    /// A lab report with its lines.
    LabReport(LabReportRow),
    /// A receipt of a referred patient.
    Receipt(ReceiptRow),
}

/// `referral_receipts` row.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptRow {
    /// The analytics key of the referral received.
    pub referral_document_id: String,
    /// Receiving facility.
    pub received_by: String,
    /// When.
    pub received_at: Option<OffsetDateTime>,
}

/// `referrals` row.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferralRow {
    /// Issuing facility.
    pub issuer_facility: String,
    /// Receiving facility.
    pub receiving_facility: Option<String>,
    /// MA_LYDO_CT.
    pub reason: Option<&'static str>,
    /// MA_LOAI_RV.
    pub discharge_type: Option<&'static str>,
    /// Main ICD-10.
    pub main_icd10: Option<String>,
    /// Secondary ICD-10 codes.
    pub secondary_icd10: Vec<String>,
    /// Issue date.
    pub issued_on: Option<Date>,
    /// End of validity.
    pub valid_until: Option<Date>,
    /// One-year chronic validity.
    pub chronic_validity: bool,
    /// Admission.
    pub admitted_at: Option<OffsetDateTime>,
    /// Discharge.
    pub discharged_at: Option<OffsetDateTime>,
}

/// `appointments` row.
#[derive(Debug, Clone, PartialEq)]
pub struct AppointmentRow {
    /// Facility.
    pub facility: String,
    /// Appointment time.
    pub appointment_at: Option<OffsetDateTime>,
    /// Issue date.
    pub issued_on: Option<Date>,
    /// Main ICD-10.
    pub main_icd10: Option<String>,
}

/// `lab_reports` row and its `lab_result_lines`.
#[derive(Debug, Clone, PartialEq)]
pub struct LabReportRow {
    /// Facility.
    pub facility: String,
    /// Service code.
    pub service_code: String,
    /// Earliest result time.
    pub first_result_at: Option<OffsetDateTime>,
    /// Lines.
    pub lines: Vec<LabLineRow>,
}

/// `lab_result_lines` row.
#[derive(Debug, Clone, PartialEq)]
pub struct LabLineRow {
    /// STT.
    pub line_number: i32,
    /// MA_CHI_SO.
    pub indicator_code: String,
    /// Numeric value.
    pub value_numeric: Option<f64>,
    /// Unit.
    pub unit: String,
    /// The day of NGAY_KQ.
    pub result_at: Option<OffsetDateTime>,
    /// LOINC.
    pub loinc_code: String,
}

/// What one consumed message becomes in the warehouse.
// One per message, moved straight into its batch (as `EventRows` itself).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum MessageRows {
    /// A clinical event or a receipt: its history row and current state.
    Event(EventRows),
    /// An access audit record: its row of `restricted.accesses`.
    Access(crate::accesses::AccessRow),
}

impl MessageRows {
    /// The event's rows, if it is one.
    pub fn event(&self) -> Option<&EventRows> {
        match self {
            Self::Event(rows) => Some(rows),
            Self::Access(_) => None,
        }
    }
}

/// Everything one event writes.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRows {
    /// History row.
    pub history: HistoryRow,
    /// Current-state row.
    pub document: DocumentRow,
}

impl EventRows {
    /// True when the event cancels its document.
    pub fn cancelled(&self) -> bool {
        self.history.action == "cancelled"
    }

    /// Every text value with the column it goes to.
    fn texts(&self) -> Vec<(&'static str, &str)> {
        let h = &self.history;
        let mut t = vec![
            ("event_id", h.event_id.as_str()),
            ("document_id", &h.document_id),
            ("source_facility", &h.source_facility),
            ("patient_key", &h.patient.patient_key),
            ("patient_key_id", &h.patient.patient_key_id),
        ];
        let mut optional = vec![
            ("source_region", &h.source_region),
            ("age_band", &h.patient.age_band),
            ("residence_region", &h.patient.residence_region),
        ];
        match &self.document {
            DocumentRow::Referral(r) => {
                optional.extend([
                    ("receiving_facility", &r.receiving_facility),
                    ("main_icd10", &r.main_icd10),
                ]);
                t.push(("issuer_facility", &r.issuer_facility));
                t.extend(
                    r.secondary_icd10
                        .iter()
                        .map(|c| ("secondary_icd10", c.as_str())),
                );
            }
            DocumentRow::Appointment(a) => {
                optional.push(("main_icd10", &a.main_icd10));
                t.push(("facility", &a.facility));
            }
            DocumentRow::LabReport(l) => {
                t.push(("facility", &l.facility));
                t.push(("service_code", &l.service_code));
                for line in &l.lines {
                    t.extend([
                        ("indicator_code", line.indicator_code.as_str()),
                        ("unit", &line.unit),
                        ("loinc_code", &line.loinc_code),
                    ]);
                }
            }
            DocumentRow::Receipt(r) => {
                t.push(("referral_document_id", &r.referral_document_id));
                t.push(("received_by", &r.received_by));
            }
        }
        t.extend(
            optional
                .into_iter()
                .filter_map(|(name, v)| v.as_deref().map(|v| (name, v))),
        );
        t
    }

    /// PostgreSQL text cannot hold a NUL character: such an event would fail its batch on
    /// every retry and hold up every event behind it, so it is refused here (dead-lettered)
    /// with the field named.
    fn storable(self) -> Result<Self, RowError> {
        if let Some((name, _)) = self.texts().into_iter().find(|(_, v)| v.contains('\0')) {
            return Err(RowError(format!(
                "{name} contains a NUL character (0x00), which the warehouse's text columns \
                 cannot hold; remove it at the source and publish a new version"
            )));
        }
        Ok(self)
    }
}

/// Why an analytics event cannot become rows.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RowError(pub String);

/// Vietnam's offset: the days of analytics events are Vietnam days.
fn vietnam() -> time::UtcOffset {
    time::UtcOffset::from_hms(7, 0, 0).unwrap_or(time::UtcOffset::UTC)
}

/// A day of an analytics event (`yyyy-mm-dd`, or `yyyy-mm` / `yyyy` when the source knew no
/// more) as the first day it covers; Ok(None) when empty.
fn period_start(field: &str, text: &str) -> Result<Option<(Date, bool)>, RowError> {
    if text.is_empty() {
        return Ok(None);
    }
    let refused = || {
        RowError(format!(
            "{field} {text:?} is not a day (yyyy-mm-dd, yyyy-mm or yyyy); analytics events carry \
             days as the de-identification service writes them"
        ))
    };
    let number = |part: Option<&str>, digits: usize| {
        part.filter(|p| p.len() == digits && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<i32>().ok())
    };
    let mut parts = text.split('-');
    let year = number(parts.next(), 4).ok_or_else(refused)?;
    let month = match parts.next() {
        None => 1,
        m => number(m, 2).ok_or_else(refused)?,
    };
    let (day, whole) = match parts.next() {
        None => (1, false),
        d => (number(d, 2).ok_or_else(refused)?, true),
    };
    if parts.next().is_some() {
        return Err(refused());
    }
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(refused)?;
    let day = u8::try_from(day).map_err(|_| refused())?;
    let date = Date::from_calendar_date(year, month, day).map_err(|_| refused())?;
    Ok(Some((date, whole)))
}

/// The start, in Vietnam, of the day (or month, or year) `text` names.
fn day_start(field: &str, text: &str) -> Result<Option<OffsetDateTime>, RowError> {
    Ok(period_start(field, text)?.map(|(d, _)| d.midnight().assume_offset(vietnam())))
}

/// The date `text` names, only when it names a whole day.
fn whole_day(field: &str, text: &str) -> Result<Option<Date>, RowError> {
    Ok(period_start(field, text)?.and_then(|(d, whole)| whole.then_some(d)))
}

fn region_of_facility(code: &str) -> Option<String> {
    FacilityCode::parse(code)
        .ok()
        .map(|f| f.region().to_string())
}

fn non_empty(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_owned())
}

fn patient_facts(h: &pb::AnalyticsHeader, p: Option<&pb::AnalyticsPatient>) -> PatientFacts {
    PatientFacts {
        patient_key: p.map(|p| p.patient_key.clone()).unwrap_or_default(),
        patient_key_id: h.analytics_key_id.clone(),
        age_band: p.and_then(|p| non_empty(&p.age_band)),
        sex: p.and_then(|p| match pb::Sex::try_from(p.sex).unwrap_or_default() {
            pb::Sex::Male => Some("male"),
            pb::Sex::Female => Some("female"),
            pb::Sex::Undetermined => Some("undetermined"),
            pb::Sex::Unspecified => None,
        }),
        residence_region: p.and_then(|p| non_empty(&p.residence_province_code)),
    }
}

/// SHA-256 of an analytics event without what may differ between two publications of the
/// same document version: the day it was recorded, the policy and key versions, and the age
/// band (the policy widens bands when re-identification risk rises).
pub fn content_digest(event: &AnalyticsMessage) -> Vec<u8> {
    use sha2::Digest as _;
    let mut event = event.clone();
    let h = event.header_mut();
    h.recorded_on.clear();
    h.policy_version.clear();
    h.analytics_key_id.clear();
    let patient = match &mut event {
        AnalyticsMessage::Referral(e) => e.patient.as_mut(),
        AnalyticsMessage::Appointment(e) => e.patient.as_mut(),
        AnalyticsMessage::LabResult(e) => e.patient.as_mut(),
        AnalyticsMessage::Receipt(_) => None,
    };
    if let Some(p) = patient {
        p.age_band.clear();
    }
    sha2::Sha256::digest(event.encode_to_vec()).to_vec()
}

/// Maps an analytics event to its rows, with its content digest.
pub fn analytics_rows(event: &AnalyticsMessage) -> Result<EventRows, RowError> {
    let h = event
        .header()
        .ok_or_else(|| RowError(format!("{} event has no header", event.kind())))?;
    if h.event_key.is_empty() || h.document_key.is_empty() {
        return Err(RowError(format!(
            "{} event header lacks event_key or document_key",
            event.kind()
        )));
    }
    let action = match pb::Action::try_from(h.action).unwrap_or_default() {
        pb::Action::Created => "created",
        pb::Action::Updated => "updated",
        pb::Action::Cancelled => "cancelled",
        pb::Action::Unspecified => return Err(RowError("event action is unspecified".into())),
    };
    let patient = patient_facts(h, event.patient());
    if patient.patient_key.is_empty() && !matches!(event, AnalyticsMessage::Receipt(_)) {
        return Err(RowError(format!(
            "{} event has no patient key",
            event.kind()
        )));
    }
    let document = match event {
        AnalyticsMessage::Referral(e) => DocumentRow::Referral(ReferralRow {
            issuer_facility: e.issuer_facility_code.clone(),
            receiving_facility: non_empty(&e.receiving_facility_code),
            reason: match pb::ReferralReason::try_from(e.reason).unwrap_or_default() {
                pb::ReferralReason::MeetsRules => Some("meets_rules"),
                pb::ReferralReason::BeyondCapability => Some("beyond_capability"),
                pb::ReferralReason::PatientRequest => Some("patient_request"),
                pb::ReferralReason::Unspecified => None,
            },
            discharge_type: match pb::DischargeType::try_from(e.discharge_type).unwrap_or_default()
            {
                pb::DischargeType::TransferredProfessional => Some("transferred_professional"),
                pb::DischargeType::TransferredOnRequest => Some("transferred_on_request"),
                pb::DischargeType::Unspecified => None,
                _ => Some("other"),
            },
            main_icd10: non_empty(&e.main_icd10),
            secondary_icd10: e.secondary_icd10.clone(),
            issued_on: whole_day("issued_on", &e.issued_on)?,
            valid_until: whole_day("valid_until", &e.valid_until)?,
            chronic_validity: e.chronic_validity,
            admitted_at: day_start("admitted_on", &e.admitted_on)?,
            discharged_at: day_start("discharged_on", &e.discharged_on)?,
        }),
        AnalyticsMessage::Appointment(e) => DocumentRow::Appointment(AppointmentRow {
            facility: e.facility_code.clone(),
            appointment_at: day_start("appointment_on", &e.appointment_on)?,
            issued_on: whole_day("issued_on", &e.issued_on)?,
            main_icd10: non_empty(&e.main_icd10),
        }),
        AnalyticsMessage::LabResult(e) => {
            let lines = e
                .lines
                .iter()
                .map(|l| {
                    Ok(LabLineRow {
                        line_number: i32::try_from(l.line_number).unwrap_or(i32::MAX),
                        indicator_code: l.indicator_code.clone(),
                        value_numeric: l.value_numeric,
                        unit: l.unit.clone(),
                        result_at: day_start("result_on", &l.result_on)?,
                        loinc_code: l.loinc_code.clone(),
                    })
                })
                .collect::<Result<Vec<_>, RowError>>()?;
            DocumentRow::LabReport(LabReportRow {
                facility: e.facility_code.clone(),
                service_code: e.service_code.clone(),
                first_result_at: lines.iter().filter_map(|l| l.result_at).min(),
                lines,
            })
        }
        AnalyticsMessage::Receipt(e) => {
            if e.referral_document_key.is_empty() {
                return Err(RowError("receipt lacks referral_document_key".into()));
            }
            DocumentRow::Receipt(ReceiptRow {
                referral_document_id: e.referral_document_key.clone(),
                received_by: e.received_by_facility_code.clone(),
                received_at: day_start("received_on", &e.received_on)?,
            })
        }
    };
    EventRows {
        history: HistoryRow {
            event_id: h.event_key.clone(),
            kind: event.kind(),
            document_id: h.document_key.clone(),
            document_version: i64::try_from(h.document_version).unwrap_or(i64::MAX),
            action,
            occurred_at: day_start("occurred_on", &h.occurred_on)?,
            recorded_at: day_start("recorded_on", &h.recorded_on)?,
            source_facility: h.source_facility_code.clone(),
            source_region: non_empty(&h.source_province_code)
                .or_else(|| region_of_facility(&h.source_facility_code)),
            patient,
            content_digest: Some(content_digest(event)),
        },
        document,
    }
    .storable()
}

/// The `event_history` partition month of an event: the first day of the month of
/// `occurred_at` in Vietnam time (UTC+7), or 1970-01-01 when unknown. Must agree with the
/// formula in migration 0003.
pub fn history_month(occurred_at: Option<OffsetDateTime>) -> Date {
    let vietnam = time::UtcOffset::from_hms(7, 0, 0).unwrap_or(time::UtcOffset::UTC);
    // checked: an instant at the calendar's edge has no Vietnam date; validation refuses such
    // events, and an unchecked conversion would panic on each one that got through.
    let day = occurred_at
        .and_then(|t| t.checked_to_offset(vietnam))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date();
    day.replace_day(1).unwrap_or(day)
}

/// Region of a facility code, for the current-state tables.
pub fn facility_region(code: &str) -> Option<String> {
    region_of_facility(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(event: &str, document: &str) -> pb::AnalyticsHeader {
        pb::AnalyticsHeader {
            event_key: event.into(),
            document_key: document.into(),
            document_version: 2,
            action: pb::Action::Updated as i32,
            occurred_on: "2026-07-01".into(),
            recorded_on: "2026-07-02".into(),
            source_facility_code: "79025".into(),
            source_province_code: "79".into(),
            policy_version: "2026.12-1".into(),
            analytics_key_id: "a1".into(),
        }
    }

    fn patient() -> pb::AnalyticsPatient {
        pb::AnalyticsPatient {
            patient_key: "p".repeat(64),
            age_band: "30-34".into(),
            sex: pb::Sex::Female as i32,
            residence_province_code: "79".into(),
        }
    }

    fn referral() -> pb::AnalyticsReferralEvent {
        pb::AnalyticsReferralEvent {
            header: Some(header("e1", "d1")),
            patient: Some(patient()),
            issuer_facility_code: "79025".into(),
            receiving_facility_code: "01001".into(),
            receiving_province_code: "01".into(),
            reason: pb::ReferralReason::BeyondCapability as i32,
            main_icd10: "J18.9".into(),
            secondary_icd10: vec!["I10".into()],
            issued_on: "2026-07-01".into(),
            valid_until: "2026-07".into(),
            admitted_on: "2026-06-28".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_referral_becomes_rows_of_keys_bands_and_vietnam_days() {
        let rows = analytics_rows(&AnalyticsMessage::Referral(referral())).expect("rows");
        let h = &rows.history;
        assert_eq!((h.event_id.as_str(), h.document_id.as_str()), ("e1", "d1"));
        assert_eq!(
            (h.kind, h.action, h.document_version),
            ("referral", "updated", 2)
        );
        assert_eq!(h.patient.patient_key_id, "a1");
        assert_eq!(h.patient.age_band.as_deref(), Some("30-34"));
        assert_eq!(h.patient.sex, Some("female"));
        assert_eq!(h.source_region.as_deref(), Some("79"));
        // The Vietnam day 2026-07-01 starts at 2026-06-30 17:00 UTC.
        let start = h.occurred_at.expect("a day");
        assert_eq!(
            start.to_offset(time::UtcOffset::UTC).to_string(),
            "2026-06-30 17:00:00.0 +00:00:00"
        );
        assert_eq!(history_month(h.occurred_at).to_string(), "2026-07-01");
        let DocumentRow::Referral(r) = &rows.document else {
            panic!("a referral row")
        };
        assert_eq!(r.receiving_facility.as_deref(), Some("01001"));
        assert_eq!(r.reason, Some("beyond_capability"));
        assert_eq!(
            r.issued_on.map(|d| d.to_string()).as_deref(),
            Some("2026-07-01")
        );
        // A month is no date, but it still starts somewhere.
        assert_eq!(r.valid_until, None);
        assert!(r.admitted_at.is_some());
    }

    #[test]
    fn a_receipt_keeps_its_own_document_and_names_the_referral() {
        let receipt = pb::AnalyticsReferralReceiptEvent {
            header: Some(header("e9", "receipt-doc")),
            received_by_facility_code: "01001".into(),
            received_by_province_code: "01".into(),
            received_on: "2026-07-03".into(),
            referral_document_key: "d1".into(),
        };
        let rows = analytics_rows(&AnalyticsMessage::Receipt(receipt.clone())).expect("rows");
        assert_eq!(rows.history.document_id, "receipt-doc");
        assert_eq!(rows.history.kind, "referral-receipt");
        let DocumentRow::Receipt(r) = &rows.document else {
            panic!("a receipt row")
        };
        assert_eq!(r.referral_document_id, "d1");
        let mut without = receipt;
        without.referral_document_key.clear();
        let err = analytics_rows(&AnalyticsMessage::Receipt(without)).unwrap_err();
        assert!(err.0.contains("referral_document_key"), "{err}");
    }

    #[test]
    fn hostile_analytics_events_are_refused_with_the_field_named() {
        let mut bad_day = referral();
        bad_day.admitted_on = "2026-13-01".into();
        let err = analytics_rows(&AnalyticsMessage::Referral(bad_day)).unwrap_err();
        assert!(
            err.0.starts_with("admitted_on \"2026-13-01\" is not a day"),
            "{err}"
        );
        for text in ["20260701", "2026-7-1", "2026-07-01T00", "-2026", "２０２６"] {
            let mut e = referral();
            e.header.as_mut().expect("header").occurred_on = text.into();
            assert!(
                analytics_rows(&AnalyticsMessage::Referral(e)).is_err(),
                "{text:?} accepted"
            );
        }
        let mut no_key = referral();
        no_key.patient = None;
        assert!(
            analytics_rows(&AnalyticsMessage::Referral(no_key))
                .unwrap_err()
                .0
                .contains("patient key")
        );
        let mut no_header = referral();
        no_header.header = None;
        assert!(analytics_rows(&AnalyticsMessage::Referral(no_header)).is_err());
        let mut no_action = referral();
        no_action.header.as_mut().expect("header").action = 0;
        assert!(analytics_rows(&AnalyticsMessage::Referral(no_action)).is_err());
        let lab = pb::AnalyticsLabResultEvent {
            header: Some(header("e2", "d2")),
            patient: Some(patient()),
            facility_code: "79025".into(),
            service_code: "22.0120.1370".into(),
            lines: vec![pb::AnalyticsLabLine {
                line_number: 1,
                indicator_code: "HGB\0".into(),
                result_on: "2026-07-01".into(),
                ..Default::default()
            }],
            admitted_on: String::new(),
        };
        let err = analytics_rows(&AnalyticsMessage::LabResult(lab)).unwrap_err();
        assert!(
            err.0.starts_with("indicator_code contains a NUL character"),
            "{err}"
        );
    }

    #[test]
    fn the_content_digest_ignores_what_a_republication_may_change() {
        let digest = |e: pb::AnalyticsReferralEvent| content_digest(&AnalyticsMessage::Referral(e));
        let base = digest(referral());
        let mut republished = referral();
        let h = republished.header.as_mut().expect("header");
        h.recorded_on = "2026-08-01".into();
        h.policy_version = "2027.01-1".into();
        if let Some(p) = republished.patient.as_mut() {
            p.age_band = "30-39".into();
        }
        assert_eq!(digest(republished), base);
        let mut corrected = referral();
        corrected.main_icd10 = "J15".into();
        assert_ne!(digest(corrected), base);
    }

    #[test]
    fn history_month_is_the_vietnam_calendar_month() {
        // 2025-06-30 18:00 UTC is 2025-07-01 01:00 in Vietnam.
        let t = OffsetDateTime::from_unix_timestamp(1_751_306_400).ok();
        assert_eq!(history_month(t).to_string(), "2025-07-01");
        assert_eq!(history_month(None).to_string(), "1970-01-01");
        // No Vietnam date exists for the last second of 9999: no panic, the unknown month.
        let edge = OffsetDateTime::from_unix_timestamp(253_402_300_799).ok();
        assert_eq!(history_month(edge).to_string(), "1970-01-01");
    }
}
