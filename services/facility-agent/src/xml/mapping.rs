//! Episode rows to events. An episode (MA_LK) needs its XML1 row for the patient's identity;
//! XML4 rows become one lab report per service code, an XML13 row a referral, an XML14 row a
//! follow-up appointment. Document and event ids are deterministic (facility + slip number,
//! or facility + episode + service), so a re-exported file makes the same events again.

use lienthong_core::datetime::XmlDateTime;
use lienthong_core::{ClinicalEvent, DocumentKind, Icd10Code, PersonId, document_id};
use lienthong_proto::v1 as pb;

use super::tables::Row;

/// Which layout an XML13 row follows.
fn layout(row: &Row) -> pb::XmlLayout {
    if row.get("MA_CSKCB_DI").is_some()
        || row.get("MA_CSKCB_DEN").is_some()
        || row.get("TINH_TRANG_CT").is_some()
    {
        pb::XmlLayout::Qd3176
    } else {
        pb::XmlLayout::Qd4750
    }
}

/// A field that could not be mapped: (table field, reason).
pub type FieldProblem = (&'static str, String);

fn date(
    row: &Row,
    field: &'static str,
    problems: &mut Vec<FieldProblem>,
) -> Option<pb::PartialDateTime> {
    let raw = row.get(field)?;
    match XmlDateTime::parse(raw) {
        Ok(d) => Some(d.to_proto()),
        Err(e) => {
            problems.push((field, format!("{raw:?} is not a date: {e}")));
            None
        }
    }
}

fn text(row: &Row, field: &str) -> String {
    row.get(field).unwrap_or("").to_owned()
}

/// `;`-separated list, trimmed, empties dropped.
fn list(row: &Row, field: &str) -> Vec<String> {
    row.get(field)
        .map(|v| {
            v.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn facility(code: &str) -> Option<pb::FacilityRef> {
    (!code.is_empty()).then(|| pb::FacilityRef {
        code: code.to_owned(),
        name: String::new(),
    })
}

fn practitioner(raw: &str, role: pb::PractitionerRole) -> Option<pb::Practitioner> {
    let raw = raw.trim();
    (!raw.is_empty()).then(|| pb::Practitioner {
        licence_number: raw.to_owned(),
        role: role as i32,
        raw: raw.to_owned(),
        ..Default::default()
    })
}

/// An ICD-10 code in canonical form (HIS export `j189` and `J18.9` alike); what does not parse
/// is left as it is, for validation to refuse by name.
fn icd10(raw: String) -> String {
    Icd10Code::parse(&raw).map_or(raw, |c| c.as_str().to_owned())
}

fn diagnosis(row: &Row) -> pb::Diagnosis {
    let main_icd10 = icd10(text(row, "MA_BENH_CHINH"));
    // A code named twice (or as both main and secondary) means it once.
    let mut secondary_icd10: Vec<String> = Vec::new();
    for code in list(row, "MA_BENH_KT").into_iter().map(icd10) {
        if code != main_icd10 && !secondary_icd10.contains(&code) {
            secondary_icd10.push(code);
        }
    }
    pb::Diagnosis {
        main_icd10,
        secondary_icd10,
        traditional_codes: list(row, "MA_BENH_YHCT"),
        text: text(row, "CHAN_DOAN_RV"),
    }
}

fn episode(row: &Row, problems: &mut Vec<FieldProblem>) -> pb::EpisodeDates {
    pb::EpisodeDates {
        admitted_at: date(row, "NGAY_VAO", problems),
        inpatient_admitted_at: date(row, "NGAY_VAO_NOI_TRU", problems),
        discharged_at: date(row, "NGAY_RA", problems),
    }
}

/// The patient of an episode, from its XML1 row.
pub fn patient(xml1: &Row, problems: &mut Vec<FieldProblem>) -> pb::Patient {
    let id = text(xml1, "SO_CCCD");
    let id_kind = match PersonId::parse(&id) {
        Ok(PersonId::Citizen(_)) => pb::PersonIdKind::CitizenId,
        Ok(PersonId::OldIdCard(_)) => pb::PersonIdKind::OldIdCard,
        Ok(PersonId::Passport(_)) => pb::PersonIdKind::Passport,
        Err(e) => {
            problems.push(("SO_CCCD", e.to_string()));
            pb::PersonIdKind::Unspecified
        }
    };
    let cards = list(xml1, "MA_THE_BHYT")
        .into_iter()
        .map(|number| pb::InsuranceCard {
            number,
            valid_from: None,
            valid_to: None,
            registered_facility_code: text(xml1, "MA_DKBD"),
        })
        .collect::<Vec<_>>();
    let (from, to) = (
        date(xml1, "GT_THE_TU", problems),
        date(xml1, "GT_THE_DEN", problems),
    );
    let cards = cards
        .into_iter()
        .map(|mut c| {
            c.valid_from.clone_from(&from);
            c.valid_to.clone_from(&to);
            c
        })
        .collect();
    pb::Patient {
        citizen_id: id,
        id_kind: id_kind as i32,
        full_name: text(xml1, "HO_TEN"),
        birth_date: date(xml1, "NGAY_SINH", problems),
        sex: match xml1.get("GIOI_TINH") {
            Some("1") => pb::Sex::Male,
            Some("2") => pb::Sex::Female,
            Some("3") => pb::Sex::Undetermined,
            _ => pb::Sex::Unspecified,
        } as i32,
        ethnicity_code: text(xml1, "MA_DANTOC"),
        nationality_code: text(xml1, "MA_QUOCTICH"),
        address: text(xml1, "DIA_CHI"),
        residence_province_code: text(xml1, "MATINH_CU_TRU"),
        insurance_cards: cards,
        facility_patient_number: text(xml1, "MA_BN"),
    }
}

fn header(
    kind: DocumentKind,
    document_id: String,
    facility: &str,
    occurred: Option<&pb::PartialDateTime>,
) -> pb::EventHeader {
    let occurred_at = occurred
        .and_then(|d| XmlDateTime::from_proto(d).ok())
        .map(|d| d.to_timestamp());
    pb::EventHeader {
        event_id: document_id::event_id(kind, &document_id, 1),
        document_id,
        document_version: 1,
        action: pb::Action::Created as i32,
        occurred_at,
        recorded_at: None,
        source_facility_code: facility.to_owned(),
        source_system: "lienthong-facility-agent".into(),
        source_system_version: env!("CARGO_PKG_VERSION").into(),
        trace: None,
        patient_key: String::new(),
        patient_key_id: String::new(),
    }
}

/// The referral of an XML13 row.
pub fn referral(
    row: &Row,
    patient: &pb::Patient,
    facility_code: &str,
    signature: Option<&str>,
    problems: &mut Vec<FieldProblem>,
) -> ClinicalEvent {
    let layout = layout(row);
    let issuer = row.get("MA_CSKCB").unwrap_or(facility_code).to_owned();
    let (sending, receiving) = match layout {
        pb::XmlLayout::Qd3176 => (list(row, "MA_CSKCB_DI"), text(row, "MA_CSKCB_DEN")),
        _ => (list(row, "MA_NOI_DI"), text(row, "MA_NOI_DEN")),
    };
    let slip_number = text(row, "GIAY_CHUYEN_TUYEN");
    let discharged = date(row, "NGAY_RA", problems);
    let mut patient = patient.clone();
    if patient.full_name.is_empty() {
        patient.full_name = text(row, "HO_TEN");
    }
    let slip = pb::ReferralSlip {
        episode_id: row.episode().to_owned(),
        record_number: text(row, "SO_HOSO"),
        book_number: text(row, "SO_CHUYENTUYEN"),
        slip_number: slip_number.clone(),
        issuer: facility(&issuer),
        sending: sending.iter().filter_map(|c| facility(c)).collect(),
        receiving: facility(&receiving),
        patient: Some(patient),
        occupation_code: text(row, "MA_NGHE_NGHIEP"),
        episode: Some(episode(row, problems)),
        clinical_signs: text(row, "DAU_HIEU_LS"),
        diagnosis: Some(diagnosis(row)),
        course_of_illness: text(row, "QT_BENHLY"),
        test_summary: text(row, "TOMTAT_KQ"),
        treatment: text(row, "PP_DIEUTRI"),
        condition_at_transfer: text(row, "TINH_TRANG_CT"),
        discharge_type: match row.get("MA_LOAI_RV") {
            Some("1") => pb::DischargeType::Discharged,
            Some("2") => pb::DischargeType::TransferredProfessional,
            Some("3") => pb::DischargeType::Absconded,
            Some("4") => pb::DischargeType::LeftOnRequest,
            Some("5") => pb::DischargeType::TransferredOnRequest,
            _ => pb::DischargeType::Unspecified,
        } as i32,
        reason: match row.get("MA_LYDO_CT") {
            Some("1") => pb::ReferralReason::MeetsRules,
            Some("2") => pb::ReferralReason::BeyondCapability,
            Some("3") => pb::ReferralReason::PatientRequest,
            _ => pb::ReferralReason::Unspecified,
        } as i32,
        planned_treatment: text(row, "HUONG_DIEU_TRI"),
        transport: text(row, "PHUONGTIEN_VC"),
        escort: (row.get("HOTEN_NGUOI_HT").is_some()).then(|| pb::Practitioner {
            role: pb::PractitionerRole::Escort as i32,
            name: text(row, "HOTEN_NGUOI_HT"),
            title: text(row, "CHUCDANH_NGUOI_HT"),
            ..Default::default()
        }),
        physician: practitioner(&text(row, "MA_BAC_SI"), pb::PractitionerRole::Physician),
        head_of_facility: practitioner(&text(row, "MA_TTDV"), pb::PractitionerRole::HeadOfFacility),
        valid_until: None,
        chronic_validity: false,
        signature: row
            .get("DU_PHONG")
            .or(signature)
            .map(|s| s.as_bytes().to_vec())
            .unwrap_or_default(),
        layout: layout as i32,
        issued_at: discharged.clone(),
    };
    let doc = document_id::referral(&issuer, &slip_number);
    ClinicalEvent::Referral(pb::ReferralEvent {
        header: Some(header(
            DocumentKind::Referral,
            doc,
            &issuer,
            discharged.as_ref(),
        )),
        slip: Some(slip),
    })
}

/// The follow-up appointment of an XML14 row.
pub fn appointment(
    row: &Row,
    patient: &pb::Patient,
    facility_code: &str,
    problems: &mut Vec<FieldProblem>,
) -> ClinicalEvent {
    let at = row.get("MA_CSKCB").unwrap_or(facility_code).to_owned();
    let slip_number = text(row, "SO_GIAYHEN_KL");
    let issued = date(row, "NGAY_CT", problems);
    let appointment = pb::FollowUpAppointment {
        episode_id: row.episode().to_owned(),
        slip_number: slip_number.clone(),
        facility: facility(&at),
        patient: Some(patient.clone()),
        episode: Some(episode(row, problems)),
        appointment_at: date(row, "NGAY_HEN_KL", problems),
        diagnosis: Some(diagnosis(row)),
        beneficiary_category: text(row, "MA_DOITUONG_KCB"),
        physician: practitioner(&text(row, "MA_BAC_SI"), pb::PractitionerRole::Physician),
        head_of_facility: practitioner(&text(row, "MA_TTDV"), pb::PractitionerRole::HeadOfFacility),
        issued_at: issued.clone(),
    };
    let doc = document_id::appointment(&at, &slip_number);
    ClinicalEvent::Appointment(pb::AppointmentEvent {
        header: Some(header(DocumentKind::Appointment, doc, &at, issued.as_ref())),
        appointment: Some(appointment),
    })
}

/// The lab reports of an episode's XML4 rows: one per service code, lines in STT order.
pub fn lab_reports(
    rows: &[&Row],
    xml1: &Row,
    patient: &pb::Patient,
    facility_code: &str,
    problems: &mut Vec<FieldProblem>,
) -> Vec<ClinicalEvent> {
    let at = xml1.get("MA_CSKCB").unwrap_or(facility_code).to_owned();
    let mut by_service: std::collections::BTreeMap<String, Vec<&Row>> = Default::default();
    for r in rows {
        by_service.entry(text(r, "MA_DICH_VU")).or_default().push(r);
    }
    let mut out = Vec::new();
    for (service, rows) in by_service {
        if service.is_empty() {
            problems.push(("MA_DICH_VU", "an XML4 row has no service code".into()));
            continue;
        }
        let mut lines = Vec::new();
        for r in &rows {
            let value = text(r, "GIA_TRI");
            let line_number = match r.get("STT").map(|s| s.trim_start_matches('0')) {
                Some("") => 0,
                Some(s) => s.parse().unwrap_or_else(|_| {
                    problems.push(("STT", format!("{s:?} is not a line number")));
                    0
                }),
                None => 0,
            };
            let result_at = date(r, "NGAY_KQ", problems);
            lines.push(pb::LabResultLine {
                line_number,
                indicator_code: text(r, "MA_CHI_SO"),
                indicator_name: text(r, "TEN_CHI_SO"),
                value_numeric: value
                    .replace(',', ".")
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .map(|value| pb::NumericValue { value }),
                value_text: value,
                unit: text(r, "DON_VI_DO"),
                reference_range: None,
                description: text(r, "MO_TA"),
                conclusion: text(r, "KET_LUAN"),
                result_instant: result_at
                    .as_ref()
                    .and_then(|d| XmlDateTime::from_proto(d).ok())
                    .map(|d| d.to_timestamp()),
                result_at,
                readers: list(r, "MA_BS_DOC_KQ")
                    .iter()
                    .filter_map(|l| practitioner(l, pb::PractitionerRole::ResultReader))
                    .collect(),
                loinc_code: String::new(),
            });
        }
        lines.sort_by_key(|l| l.line_number);
        let last = lines
            .iter()
            .filter_map(|l| l.result_at.clone())
            .max_by(|a, b| a.value.cmp(&b.value));
        let report = pb::LabReport {
            episode_id: xml1.episode().to_owned(),
            facility: facility(&at),
            patient: Some(patient.clone()),
            service_code: service.clone(),
            episode: Some(episode(xml1, problems)),
            lines,
        };
        let doc = document_id::lab_report(&at, xml1.episode(), &service);
        out.push(ClinicalEvent::LabResult(pb::LabResultEvent {
            header: Some(header(DocumentKind::LabResult, doc, &at, last.as_ref())),
            report: Some(report),
        }));
    }
    out
}
