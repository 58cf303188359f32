//! Checks shared by the three documents: header, patient, diagnosis, episode dates, practitioners.

use std::fmt::Display;

use lienthong_proto::v1::{
    Action, Diagnosis, EpisodeDates, EventHeader, InsuranceCard, Patient, PersonIdKind,
    Practitioner, Sex,
};

use super::Severity;
use super::checker::{Checker, Field, Item, Shown};
use super::text::TextKind;
use crate::datetime::{Precision, XmlDateTime};
use crate::document_id;
use crate::ids::{FacilityCode, Icd10Code, InsuranceCardNo, PersonId, PractitionerLicence};
use crate::province::ProvinceCode;
use crate::routing::DocumentKind;

/// The highest document version accepted: far above any real number of corrections, far below
/// what every sink stores (a signed 64-bit column), so a document can always be corrected.
pub const MAX_DOCUMENT_VERSION: u64 = 1_000_000;

/// Header checks. `document_facility` is the facility the document belongs to; the publisher
/// must be that facility, and ids must be the deterministic ones for the document.
pub(crate) fn header(
    c: &mut Checker<'_>,
    h: Option<&EventHeader>,
    kind: DocumentKind,
    expected_doc_id: &str,
    document_facility: &str,
) {
    let Some(h) = h else {
        c.required("header", "", "header");
        return;
    };
    c.required("header.document_id", &h.document_id, "header.document_id");
    c.required("header.event_id", &h.event_id, "header.event_id");
    // Stores join key parts with 0x00: an id with control characters could not be read back.
    if h.document_id.chars().any(char::is_control) {
        c.error(
            "header.document_id_control",
            "header.document_id",
            Some(h.document_id.escape_debug().to_string()),
            "document_id contains a control character (it comes from MA_LK, the slip number or \
             another identifying field); remove it in the HIS export"
                .into(),
            "document_id chứa ký tự điều khiển (lấy từ MA_LK, số phiếu hoặc trường định danh \
             khác); hãy loại bỏ trong dữ liệu xuất từ HIS"
                .into(),
        );
    }
    c.instant("header.occurred_at", h.occurred_at.as_ref(), true);
    c.instant("header.recorded_at", h.recorded_at.as_ref(), false);
    for (path, value, kind) in [
        ("header.event_id", &h.event_id, TextKind::Code),
        (
            "header.source_facility_code",
            &h.source_facility_code,
            TextKind::Code,
        ),
        ("header.source_system", &h.source_system, TextKind::Line),
        (
            "header.source_system_version",
            &h.source_system_version,
            TextKind::Line,
        ),
        ("header.patient_key", &h.patient_key, TextKind::Code),
        ("header.patient_key_id", &h.patient_key_id, TextKind::Code),
    ] {
        c.text_of(path, value, kind);
    }
    if h.document_version > MAX_DOCUMENT_VERSION {
        c.error(
            "header.version_too_high",
            "header.document_version",
            Some(h.document_version.to_string()),
            format!("document_version is at most {MAX_DOCUMENT_VERSION}: number versions 1, 2, 3… so that every later correction still fits"),
            format!("document_version tối đa là {MAX_DOCUMENT_VERSION}; hãy đánh số phiên bản 1, 2, 3…"),
        );
    }
    if h.document_version == 0 {
        c.error(
            "header.version",
            "header.document_version",
            Some("0".into()),
            "document_version must be 1 or more and grow with every change of the document".into(),
            "document_version phải từ 1 trở lên và tăng sau mỗi lần sửa chứng từ".into(),
        );
    }
    if h.action == Action::Unspecified as i32 || Action::try_from(h.action).is_err() {
        c.error(
            "header.action",
            "header.action",
            Some(h.action.to_string()),
            "action must be CREATED, UPDATED or CANCELLED".into(),
            "action phải là CREATED, UPDATED hoặc CANCELLED".into(),
        );
    }
    if c.id(
        "header.source_facility_code",
        &h.source_facility_code,
        Shown::Plain,
        FacilityCode::parse,
    )
    .is_some()
        && !document_facility.trim().is_empty()
        && h.source_facility_code.trim() != document_facility.trim()
    {
        c.error("header.source_mismatch", "header.source_facility_code", Some(h.source_facility_code.clone()),
            format!("the event is published as facility {} but the document belongs to {}; publish it as the issuing facility", h.source_facility_code, document_facility),
            format!("Sự kiện gửi dưới mã cơ sở {} nhưng chứng từ thuộc cơ sở {}", h.source_facility_code, document_facility));
    }
    if !h.document_id.is_empty() && !expected_doc_id.is_empty() && h.document_id != expected_doc_id
    {
        c.error("header.document_id_mismatch", "header.document_id", Some(h.document_id.clone()),
            format!("document_id must be {expected_doc_id:?} for this document so that versions and retries stay linked"),
            format!("document_id phải là {expected_doc_id:?} cho chứng từ này"));
    }
    if !h.event_id.is_empty()
        && h.document_version > 0
        && !document_id::is_event_id(&h.event_id, kind, &h.document_id, h.document_version)
    {
        let expected = document_id::event_id(kind, &h.document_id, h.document_version);
        c.error("header.event_id_mismatch", "header.event_id", Some(h.event_id.clone()),
            format!("event_id must be {expected}: the UUID version 5 of this kind, document_id and version (common.proto, EventHeader.event_id), so retries are recognised"),
            format!("event_id phải là {expected} (xác định theo chứng từ và phiên bản)"));
    }
}

/// Patient checks; returns the parsed birth date for cross-field rules.
pub(crate) fn patient(
    c: &mut Checker<'_>,
    path: &dyn Display,
    p: Option<&Patient>,
    episode: Option<(XmlDateTime, XmlDateTime)>,
) {
    let Some(p) = p else {
        c.required(path, "", "HO_TEN / SO_CCCD");
        return;
    };
    c.required(Field(path, "full_name"), &p.full_name, "HO_TEN");
    for (field, value, kind) in [
        ("citizen_id", &p.citizen_id, TextKind::Code),
        ("full_name", &p.full_name, TextKind::Line),
        ("ethnicity_code", &p.ethnicity_code, TextKind::Code),
        ("nationality_code", &p.nationality_code, TextKind::Code),
        ("address", &p.address, TextKind::Line),
        (
            "residence_province_code",
            &p.residence_province_code,
            TextKind::Code,
        ),
        (
            "facility_patient_number",
            &p.facility_patient_number,
            TextKind::Code,
        ),
    ] {
        c.text_of(Field(path, field), value, kind);
    }
    let birth = c.birth_date(Field(path, "birth_date"), p.birth_date.as_ref());
    let id_path = Field(path, "citizen_id");
    if c.required(id_path, &p.citizen_id, "SO_CCCD")
        && let Some(person) = c.id(id_path, &p.citizen_id, Shown::Masked, PersonId::parse)
    {
        let kind = match person {
            PersonId::Citizen(_) => PersonIdKind::CitizenId,
            PersonId::OldIdCard(_) => PersonIdKind::OldIdCard,
            PersonId::Passport(_) => PersonIdKind::Passport,
        };
        if p.id_kind != PersonIdKind::Unspecified as i32 && p.id_kind != kind as i32 {
            c.error(
                "patient.id_kind_mismatch",
                Field(path, "id_kind"),
                Some(p.id_kind.to_string()),
                format!(
                    "id_kind says {:?} but SO_CCCD looks like {kind:?}",
                    PersonIdKind::try_from(p.id_kind).unwrap_or_default()
                ),
                "Loại giấy tờ không khớp với SO_CCCD".into(),
            );
        }
        if let PersonId::Citizen(cccd) = &person {
            if let Some(b) = birth
                && let Err(e) = cccd.check_birth_year(b.year())
            {
                c.report_id(id_path, &p.citizen_id, Shown::Masked, &e);
            }
            let sex = Sex::try_from(p.sex).unwrap_or_default();
            let mismatch = matches!(
                (sex, cccd.is_male()),
                (Sex::Male, false) | (Sex::Female, true)
            );
            if mismatch {
                c.error(
                    "citizen_id.sex_mismatch",
                    id_path,
                    Some(cccd.masked()),
                    "the citizen ID's gender digit disagrees with GIOI_TINH; check both fields"
                        .into(),
                    "Chữ số giới tính trong số CCCD không khớp với GIOI_TINH".into(),
                );
            }
        }
    }
    if !p.residence_province_code.trim().is_empty()
        && ProvinceCode::region_of(&p.residence_province_code).is_none()
    {
        c.error(
            "patient.residence_province",
            Field(path, "residence_province_code"),
            Some(p.residence_province_code.clone()),
            "MATINH_CU_TRU is not one of the 63 (2004) or 34 (2025) province codes".into(),
            "MATINH_CU_TRU không phải mã tỉnh hợp lệ".into(),
        );
    }
    for (i, card) in p.insurance_cards.iter().enumerate() {
        insurance_card(c, &Item(path, "insurance_cards", i), card, episode);
    }
}

fn insurance_card(
    c: &mut Checker<'_>,
    path: &dyn Display,
    card: &InsuranceCard,
    episode: Option<(XmlDateTime, XmlDateTime)>,
) {
    c.text_of(Field(path, "number"), &card.number, TextKind::Code);
    c.text_of(
        Field(path, "registered_facility_code"),
        &card.registered_facility_code,
        TextKind::Code,
    );
    c.id(
        Field(path, "number"),
        &card.number,
        Shown::Masked,
        InsuranceCardNo::parse,
    );
    let from = c.date(Field(path, "valid_from"), card.valid_from.as_ref(), None);
    let to = c.date_ahead(Field(path, "valid_to"), card.valid_to.as_ref(), None, 30);
    if let Some((admitted, discharged)) = episode {
        let starts_late = from.is_some_and(|f| f.earliest() > admitted.earliest());
        let ends_early = to.is_some_and(|t| t.date() < discharged.date());
        if starts_late || ends_early {
            // A lapsed card changes who pays, not what happened clinically: a warning.
            c.push(Severity::Warning, "insurance_card.validity", path, None,
                "the insurance card's validity (GT_THE_TU..GT_THE_DEN) does not cover the whole episode".into(),
                "Thời hạn thẻ BHYT không bao trùm toàn bộ đợt điều trị".into());
        }
    }
}

/// Diagnosis codes, each in canonical form (upper case, with its dot) and named once.
pub(crate) fn diagnosis(c: &mut Checker<'_>, path: &dyn Display, d: Option<&Diagnosis>) {
    let Some(d) = d else { return };
    c.text_of(Field(path, "text"), &d.text, TextKind::Narrative);
    for (i, code) in d.traditional_codes.iter().enumerate() {
        c.text_of(Item(path, "traditional_codes", i), code, TextKind::Code);
    }
    let mut seen: Vec<Icd10Code> = Vec::new();
    if !d.main_icd10.is_empty() {
        icd10(c, Field(path, "main_icd10"), &d.main_icd10, &mut seen);
    }
    if d.secondary_icd10.len() > 12 {
        c.error(
            "diagnosis.too_many_secondary",
            Field(path, "secondary_icd10"),
            Some(d.secondary_icd10.len().to_string()),
            "MA_BENH_KT holds at most 12 codes".into(),
            "MA_BENH_KT chỉ chứa tối đa 12 mã".into(),
        );
    }
    for (i, code) in d.secondary_icd10.iter().enumerate() {
        icd10(c, Item(path, "secondary_icd10", i), code, &mut seen);
    }
}

/// One ICD-10 code: valid, canonical, and not already in `seen`.
fn icd10(c: &mut Checker<'_>, path: impl Display + Copy, raw: &str, seen: &mut Vec<Icd10Code>) {
    let Some(code) = c.id(path, raw, Shown::Plain, Icd10Code::parse) else {
        return;
    };
    if code.as_str() != raw {
        c.error(
            "icd10.not_canonical",
            path,
            Some(raw.escape_debug().to_string()),
            format!(
                "write the ICD-10 code as {}: upper case, with its dot, without spaces",
                code.as_str()
            ),
            format!(
                "Hãy ghi mã ICD-10 là {}: chữ in hoa, có dấu chấm, không khoảng trắng",
                code.as_str()
            ),
        );
    }
    if seen.contains(&code) {
        c.error(
            "icd10.repeated",
            path,
            Some(code.as_str().to_owned()),
            format!(
                "the ICD-10 code {} appears twice in the diagnosis; name each code once",
                code.as_str()
            ),
            format!(
                "Mã ICD-10 {} xuất hiện hai lần trong chẩn đoán; mỗi mã chỉ ghi một lần",
                code.as_str()
            ),
        );
    } else {
        seen.push(code);
    }
}

/// Episode dates; returns (admitted, discharged) when both parse.
pub(crate) fn episode(
    c: &mut Checker<'_>,
    path: &dyn Display,
    e: Option<&EpisodeDates>,
) -> Option<(XmlDateTime, XmlDateTime)> {
    let e = e?;
    let admitted = c.date(Field(path, "admitted_at"), e.admitted_at.as_ref(), None);
    c.date(
        Field(path, "inpatient_admitted_at"),
        e.inpatient_admitted_at.as_ref(),
        None,
    );
    let discharged = c.date(Field(path, "discharged_at"), e.discharged_at.as_ref(), None);
    let (a, d) = (admitted?, discharged?);
    if d.earliest() < a.earliest() {
        c.error(
            "episode.discharge_before_admission",
            Field(path, "discharged_at"),
            Some(d.digits()),
            format!("NGAY_RA {} is before NGAY_VAO {}", d.digits(), a.digits()),
            format!("NGAY_RA {} trước NGAY_VAO {}", d.digits(), a.digits()),
        );
    }
    Some((a, d))
}

/// A required practitioner with a licence number.
pub(crate) fn practitioner(
    c: &mut Checker<'_>,
    path: &dyn Display,
    p: Option<&Practitioner>,
    xml: &str,
) {
    if let Some(p) = p {
        for (field, value, kind) in [
            ("licence_number", &p.licence_number, TextKind::Code),
            ("raw", &p.raw, TextKind::Code),
            ("name", &p.name, TextKind::Line),
            ("title", &p.title, TextKind::Line),
        ] {
            c.text_of(Field(path, field), value, kind);
        }
    }
    let raw = p
        .map(|p| {
            if p.raw.is_empty() {
                p.licence_number.as_str()
            } else {
                p.raw.as_str()
            }
        })
        .unwrap_or("");
    if c.required(Field(path, "licence_number"), raw, xml) {
        c.id(
            Field(path, "licence_number"),
            raw,
            Shown::Plain,
            PractitionerLicence::parse,
        );
    }
}

/// A facility reference; `xml` names the field when required.
pub(crate) fn facility(
    c: &mut Checker<'_>,
    path: &str,
    code: &str,
    xml: &str,
) -> Option<FacilityCode> {
    c.text_of(path, code, TextKind::Code);
    if c.required(path, code, xml) {
        c.id(path, code, Shown::Plain, FacilityCode::parse)
    } else {
        None
    }
}

/// True when the precision is at least a day.
pub(crate) fn has_day(d: &XmlDateTime) -> bool {
    d.precision() >= Precision::Day
}
