//! Events as warehouse rows: pseudonymized by construction. Only the patient key, an age band at
//! the event, sex and region of residence describe a patient; no identifier, name, address or
//! card number has a field here to go into.

use lienthong_core::datetime::XmlDateTime;
use lienthong_core::{ClinicalEvent, FacilityCode, ProvinceCode};
use lienthong_proto::v1 as pb;
use time::{Date, OffsetDateTime};

/// The row of `event_history`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// Deterministic event id.
    pub event_id: String,
    /// referral / appointment / lab-result.
    pub kind: &'static str,
    /// Document id.
    pub document_id: String,
    /// Document version.
    pub document_version: i64,
    /// created / updated / cancelled.
    pub action: &'static str,
    /// When it happened.
    pub occurred_at: Option<OffsetDateTime>,
    /// When the gateway accepted it.
    pub recorded_at: Option<OffsetDateTime>,
    /// Publishing facility.
    pub source_facility: String,
    /// Its region.
    pub source_region: Option<String>,
    /// Patient pseudonym.
    pub patient: PatientFacts,
    /// SHA-256 of the event's content (`ClinicalEvent::content_digest`), when known.
    pub content_digest: Option<Vec<u8>>,
}

/// What the warehouse knows of a patient.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PatientFacts {
    /// Pseudonymous key.
    pub patient_key: String,
    /// Key id.
    pub patient_key_id: String,
    /// Age band at the event, e.g. "25-34".
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
    /// The referral received.
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
    /// Free-text clinical narrative; written only to the restricted schema, and only when
    /// the loader runs with `--free-text`.
    pub notes: ReferralNotes,
}

/// The free-text fields of a referral slip (`restricted.referral_notes`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReferralNotes {
    /// DAU_HIEU_LS.
    pub clinical_signs: Option<String>,
    /// CHAN_DOAN_RV.
    pub diagnosis_text: Option<String>,
    /// QT_BENHLY.
    pub course_of_illness: Option<String>,
    /// TOMTAT_KQ.
    pub test_summary: Option<String>,
    /// PP_DIEUTRI.
    pub treatment: Option<String>,
    /// TINH_TRANG_CT.
    pub condition_at_transfer: Option<String>,
    /// HUONG_DIEU_TRI.
    pub planned_treatment: Option<String>,
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
    /// TEN_CHI_SO.
    pub indicator_name: String,
    /// Numeric value.
    pub value_numeric: Option<f64>,
    /// GIA_TRI as exported.
    pub value_text: String,
    /// Unit.
    pub unit: String,
    /// NGAY_KQ.
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
                let n = &r.notes;
                optional.extend([
                    ("receiving_facility", &r.receiving_facility),
                    ("main_icd10", &r.main_icd10),
                    ("clinical_signs", &n.clinical_signs),
                    ("diagnosis_text", &n.diagnosis_text),
                    ("course_of_illness", &n.course_of_illness),
                    ("test_summary", &n.test_summary),
                    ("treatment", &n.treatment),
                    ("condition_at_transfer", &n.condition_at_transfer),
                    ("planned_treatment", &n.planned_treatment),
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
                        ("indicator_name", &line.indicator_name),
                        ("value_text", &line.value_text),
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

fn ts(t: Option<&prost_types::Timestamp>) -> Option<OffsetDateTime> {
    t.and_then(|t| OffsetDateTime::from_unix_timestamp(t.seconds).ok())
}

fn xml_instant(d: Option<&pb::PartialDateTime>) -> Option<OffsetDateTime> {
    d.filter(|d| !d.value.is_empty())
        .and_then(|d| XmlDateTime::from_proto(d).ok())
        .map(|d| d.earliest())
}

fn xml_date(d: Option<&pb::PartialDateTime>) -> Option<Date> {
    d.filter(|d| !d.value.is_empty())
        .and_then(|d| XmlDateTime::from_proto(d).ok())
        .and_then(|d| d.date())
}

fn region_of_facility(code: &str) -> Option<String> {
    FacilityCode::parse(code)
        .ok()
        .map(|f| f.region().to_string())
}

/// Age band at `at` for a birth date; None when unknown.
pub fn age_band(birth: Option<&pb::PartialDateTime>, at: Option<OffsetDateTime>) -> Option<String> {
    let birth = XmlDateTime::from_proto(birth?).ok()?;
    let at = at?;
    let age = at.year() - birth.year();
    Some(
        match age {
            i32::MIN..=-1 => return None,
            0..=4 => "0-4",
            5..=14 => "5-14",
            15..=24 => "15-24",
            25..=34 => "25-34",
            35..=44 => "35-44",
            45..=54 => "45-54",
            55..=64 => "55-64",
            65..=74 => "65-74",
            _ => "75+",
        }
        .to_owned(),
    )
}

fn patient_facts(
    h: &pb::EventHeader,
    p: Option<&pb::Patient>,
    at: Option<OffsetDateTime>,
) -> PatientFacts {
    PatientFacts {
        patient_key: h.patient_key.clone(),
        patient_key_id: h.patient_key_id.clone(),
        age_band: p.and_then(|p| age_band(p.birth_date.as_ref(), at)),
        sex: p.and_then(|p| match pb::Sex::try_from(p.sex).unwrap_or_default() {
            pb::Sex::Male => Some("male"),
            pb::Sex::Female => Some("female"),
            pb::Sex::Undetermined => Some("undetermined"),
            pb::Sex::Unspecified => None,
        }),
        residence_region: p
            .and_then(|p| ProvinceCode::region_of(&p.residence_province_code))
            .map(|r| r.to_string()),
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_owned())
}

/// Why an event cannot become rows.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RowError(pub String);

/// Maps an event to its rows.
pub fn rows_of(event: &ClinicalEvent) -> Result<EventRows, RowError> {
    let h = event
        .header()
        .ok_or_else(|| RowError("event has no header".into()))?;
    if h.event_id.is_empty() || h.document_id.is_empty() || h.patient_key.is_empty() {
        return Err(RowError(
            "event header lacks event_id, document_id or patient_key".into(),
        ));
    }
    let occurred_at = ts(h.occurred_at.as_ref());
    let action = match pb::Action::try_from(h.action).unwrap_or_default() {
        pb::Action::Created => "created",
        pb::Action::Updated => "updated",
        pb::Action::Cancelled => "cancelled",
        pb::Action::Unspecified => return Err(RowError("event action is unspecified".into())),
    };
    let patient = patient_facts(h, event.patient(), occurred_at);
    let document = match event {
        ClinicalEvent::Referral(e) => {
            let s = e
                .slip
                .as_ref()
                .ok_or_else(|| RowError("referral event without slip".into()))?;
            let d = s.diagnosis.clone().unwrap_or_default();
            let ep = s.episode.clone().unwrap_or_default();
            DocumentRow::Referral(ReferralRow {
                issuer_facility: s
                    .issuer
                    .as_ref()
                    .map(|f| f.code.clone())
                    .unwrap_or_default(),
                receiving_facility: s.receiving.as_ref().and_then(|f| non_empty(&f.code)),
                reason: match pb::ReferralReason::try_from(s.reason).unwrap_or_default() {
                    pb::ReferralReason::MeetsRules => Some("meets_rules"),
                    pb::ReferralReason::BeyondCapability => Some("beyond_capability"),
                    pb::ReferralReason::PatientRequest => Some("patient_request"),
                    pb::ReferralReason::Unspecified => None,
                },
                discharge_type: match pb::DischargeType::try_from(s.discharge_type)
                    .unwrap_or_default()
                {
                    pb::DischargeType::TransferredProfessional => Some("transferred_professional"),
                    pb::DischargeType::TransferredOnRequest => Some("transferred_on_request"),
                    pb::DischargeType::Unspecified => None,
                    _ => Some("other"),
                },
                main_icd10: non_empty(&d.main_icd10),
                secondary_icd10: d.secondary_icd10,
                issued_on: xml_date(s.issued_at.as_ref()),
                valid_until: xml_date(s.valid_until.as_ref()),
                chronic_validity: s.chronic_validity,
                admitted_at: xml_instant(ep.admitted_at.as_ref()),
                discharged_at: xml_instant(ep.discharged_at.as_ref()),
                notes: ReferralNotes {
                    clinical_signs: non_empty(&s.clinical_signs),
                    diagnosis_text: non_empty(&d.text),
                    course_of_illness: non_empty(&s.course_of_illness),
                    test_summary: non_empty(&s.test_summary),
                    treatment: non_empty(&s.treatment),
                    condition_at_transfer: non_empty(&s.condition_at_transfer),
                    planned_treatment: non_empty(&s.planned_treatment),
                },
            })
        }
        ClinicalEvent::Appointment(e) => {
            let a = e
                .appointment
                .as_ref()
                .ok_or_else(|| RowError("appointment event without appointment".into()))?;
            DocumentRow::Appointment(AppointmentRow {
                facility: a
                    .facility
                    .as_ref()
                    .map(|f| f.code.clone())
                    .unwrap_or_default(),
                appointment_at: xml_instant(a.appointment_at.as_ref()),
                issued_on: xml_date(a.issued_at.as_ref()),
                main_icd10: a.diagnosis.as_ref().and_then(|d| non_empty(&d.main_icd10)),
            })
        }
        ClinicalEvent::LabResult(e) => {
            let r = e
                .report
                .as_ref()
                .ok_or_else(|| RowError("lab-result event without report".into()))?;
            let lines: Vec<LabLineRow> = r
                .lines
                .iter()
                .map(|l| LabLineRow {
                    line_number: i32::try_from(l.line_number).unwrap_or(i32::MAX),
                    indicator_code: l.indicator_code.clone(),
                    indicator_name: l.indicator_name.clone(),
                    value_numeric: l.value_numeric.as_ref().map(|n| n.value),
                    value_text: l.value_text.clone(),
                    unit: l.unit.clone(),
                    result_at: xml_instant(l.result_at.as_ref()),
                    loinc_code: l.loinc_code.clone(),
                })
                .collect();
            DocumentRow::LabReport(LabReportRow {
                facility: r
                    .facility
                    .as_ref()
                    .map(|f| f.code.clone())
                    .unwrap_or_default(),
                service_code: r.service_code.clone(),
                first_result_at: lines.iter().filter_map(|l| l.result_at).min(),
                lines,
            })
        }
    };
    EventRows {
        history: HistoryRow {
            event_id: h.event_id.clone(),
            kind: event.kind().as_str(),
            document_id: h.document_id.clone(),
            document_version: i64::try_from(h.document_version).unwrap_or(i64::MAX),
            action,
            occurred_at,
            recorded_at: ts(h.recorded_at.as_ref()),
            source_facility: h.source_facility_code.clone(),
            source_region: region_of_facility(&h.source_facility_code),
            patient,
            content_digest: None,
        },
        document,
    }
    .storable()
}

/// The rows of a consumed event with its content digest, so the same version arriving again
/// with other content is found (`store::WriteError::Conflict`).
pub fn rows_with_digest(mut event: ClinicalEvent) -> Result<EventRows, RowError> {
    let digest = event.content_digest();
    let mut rows = rows_of(&event)?;
    rows.history.content_digest = Some(digest.to_vec());
    Ok(rows)
}

/// Maps a referral receipt to its rows.
pub fn receipt_rows(r: &pb::ReferralReceiptEvent) -> Result<EventRows, RowError> {
    let h = r
        .header
        .as_ref()
        .ok_or_else(|| RowError("receipt has no header".into()))?;
    if h.event_id.is_empty() || r.referral_document_id.is_empty() {
        return Err(RowError(
            "receipt lacks event_id or referral_document_id".into(),
        ));
    }
    let received_by = r
        .received_by
        .as_ref()
        .map(|f| f.code.clone())
        .unwrap_or_default();
    EventRows {
        history: HistoryRow {
            event_id: h.event_id.clone(),
            kind: "referral-receipt",
            document_id: h.document_id.clone(),
            document_version: i64::try_from(h.document_version).unwrap_or(i64::MAX),
            action: "created",
            occurred_at: ts(h.occurred_at.as_ref()),
            recorded_at: ts(h.recorded_at.as_ref()),
            source_facility: h.source_facility_code.clone(),
            source_region: region_of_facility(&h.source_facility_code),
            patient: PatientFacts {
                patient_key: h.patient_key.clone(),
                patient_key_id: h.patient_key_id.clone(),
                ..Default::default()
            },
            content_digest: None,
        },
        document: DocumentRow::Receipt(ReceiptRow {
            referral_document_id: r.referral_document_id.clone(),
            received_by,
            received_at: ts(r.received_at.as_ref()),
        }),
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
    use lienthong_core::fixtures::Generator;

    #[test]
    fn rows_hold_no_identity_and_derive_age_band_and_region() {
        let mut g = Generator::new(5, OffsetDateTime::now_utc());
        let mut e = ClinicalEvent::Referral(g.referral());
        e.header_mut().patient_key = "k".repeat(64);
        e.header_mut().patient_key_id = "k1".into();
        let patient = e.patient().cloned().unwrap_or_default();
        let rows = rows_of(&e).expect("rows");
        let text = format!("{rows:?}");
        for secret in [
            &patient.citizen_id,
            &patient.full_name,
            &patient.address,
            &patient.insurance_cards[0].number,
        ] {
            assert!(!text.contains(secret.as_str()), "{secret} leaked into rows");
        }
        assert!(rows.history.patient.age_band.is_some());
        assert!(rows.history.source_region.is_some());
        assert_eq!(rows.history.action, "created");
    }

    #[test]
    fn a_text_with_a_nul_character_is_refused_with_its_field_named() {
        let mut g = Generator::new(6, OffsetDateTime::now_utc());
        // As the gateway publishes them: pseudonymized.
        let keyed = |mut e: ClinicalEvent| {
            e.header_mut().patient_key = "k".repeat(64);
            e
        };
        let mut lab = g.lab_result();
        if let Some(r) = lab.report.as_mut() {
            r.lines[0].value_text = "5.4\0".into();
        }
        let err = rows_of(&keyed(ClinicalEvent::LabResult(lab)))
            .expect_err("NUL refused")
            .to_string();
        assert!(
            err.starts_with("value_text contains a NUL character") && err.contains("publish"),
            "{err}"
        );
        let mut referral = g.referral();
        if let Some(s) = referral.slip.as_mut() {
            s.clinical_signs = "sốt\0".into();
        }
        let err = rows_of(&keyed(ClinicalEvent::Referral(referral)))
            .expect_err("NUL refused")
            .to_string();
        assert!(err.starts_with("clinical_signs "), "{err}");
        let receipt = pb::ReferralReceiptEvent {
            header: Some(pb::EventHeader {
                event_id: "e".into(),
                ..Default::default()
            }),
            referral_document_id: "referral/79025/\0".into(),
            ..Default::default()
        };
        let err = receipt_rows(&receipt).expect_err("NUL refused").to_string();
        assert!(err.starts_with("referral_document_id "), "{err}");
        assert!(rows_of(&keyed(ClinicalEvent::Appointment(g.appointment()))).is_ok());
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

    #[test]
    fn referral_free_text_is_kept_apart_from_the_analytic_columns() {
        let mut g = Generator::new(7, OffsetDateTime::now_utc());
        let mut e = ClinicalEvent::Referral(g.referral());
        e.header_mut().patient_key = "k".repeat(64);
        if let ClinicalEvent::Referral(r) = &mut e
            && let Some(s) = r.slip.as_mut()
        {
            s.course_of_illness = "  sốt cao 3 ngày ".into();
        }
        let rows = rows_of(&e).expect("rows");
        let DocumentRow::Referral(r) = rows.document else {
            panic!("referral row expected")
        };
        assert_eq!(r.notes.course_of_illness.as_deref(), Some("sốt cao 3 ngày"));
    }

    #[test]
    fn age_bands() {
        let at = OffsetDateTime::from_unix_timestamp(1_750_000_000).ok();
        let b = |y: &str| {
            age_band(
                Some(&pb::PartialDateTime {
                    value: y.into(),
                    precision: 3,
                }),
                at,
            )
        };
        assert_eq!(b("20240101").as_deref(), Some("0-4"));
        assert_eq!(b("19900101").as_deref(), Some("35-44"));
        assert_eq!(b("19200101").as_deref(), Some("75+"));
        assert_eq!(b("21000101"), None);
    }

    #[test]
    fn an_event_without_key_or_action_is_refused() {
        let mut g = Generator::new(6, OffsetDateTime::now_utc());
        let e = ClinicalEvent::Appointment(g.appointment());
        assert!(rows_of(&e).unwrap_err().0.contains("patient_key"));
    }
}
