//! Rules per document (DOMAIN.md §1: required fields marked * per MoH table).

use std::fmt::Display;

use lienthong_proto::v1::{
    AppointmentEvent, DischargeType, FacilityRef, LabResultEvent, LabResultLine, ReferralEvent,
    ReferralReason,
};

use super::checker::{Checker, Field, Item, Shown};
use super::common::{diagnosis, episode, facility, has_day, header, patient, practitioner};
use super::text::TextKind;
use super::{ValidationContext, Violation};
use crate::document_id;
use crate::routing::DocumentKind;

/// Every violation of a referral event (XML13).
pub fn validate_referral(e: &ReferralEvent, ctx: &ValidationContext) -> Vec<Violation> {
    let mut c = Checker::new(ctx);
    let Some(s) = e.slip.as_ref() else {
        c.required("slip", "", "XML13");
        return c.out;
    };
    let issuer = s.issuer.as_ref().map(|f| f.code.as_str()).unwrap_or("");
    header(
        &mut c,
        e.header.as_ref(),
        DocumentKind::Referral,
        &document_id::referral(issuer, &s.slip_number),
        issuer,
    );

    c.required("slip.episode_id", &s.episode_id, "MA_LK");
    c.required("slip.record_number", &s.record_number, "SO_HOSO");
    c.required("slip.book_number", &s.book_number, "SO_CHUYENTUYEN");
    c.required("slip.slip_number", &s.slip_number, "GIAY_CHUYEN_TUYEN");
    c.required("slip.clinical_signs", &s.clinical_signs, "DAU_HIEU_LS");
    c.required("slip.course_of_illness", &s.course_of_illness, "QT_BENHLY");
    c.required(
        "slip.planned_treatment",
        &s.planned_treatment,
        "HUONG_DIEU_TRI",
    );
    c.required("slip.transport", &s.transport, "PHUONGTIEN_VC");

    for (path, text, kind) in [
        ("slip.episode_id", &s.episode_id, TextKind::Code),
        ("slip.record_number", &s.record_number, TextKind::Code),
        ("slip.book_number", &s.book_number, TextKind::Code),
        ("slip.slip_number", &s.slip_number, TextKind::Code),
        ("slip.occupation_code", &s.occupation_code, TextKind::Code),
        (
            "slip.clinical_signs",
            &s.clinical_signs,
            TextKind::Narrative,
        ),
        (
            "slip.course_of_illness",
            &s.course_of_illness,
            TextKind::Narrative,
        ),
        ("slip.test_summary", &s.test_summary, TextKind::Narrative),
        ("slip.treatment", &s.treatment, TextKind::Narrative),
        (
            "slip.condition_at_transfer",
            &s.condition_at_transfer,
            TextKind::Narrative,
        ),
        (
            "slip.planned_treatment",
            &s.planned_treatment,
            TextKind::Narrative,
        ),
        ("slip.transport", &s.transport, TextKind::Line),
    ] {
        c.text_of(path, text, kind);
    }
    facility_name(&mut c, &"slip.issuer", s.issuer.as_ref());
    facility_name(&mut c, &"slip.receiving", s.receiving.as_ref());
    for (i, f) in s.sending.iter().enumerate() {
        facility_name(&mut c, &Item(&"slip", "sending", i), Some(f));
    }
    if let Some(escort) = &s.escort {
        c.text_of("slip.escort.name", &escort.name, TextKind::Line);
        c.text_of("slip.escort.title", &escort.title, TextKind::Line);
    }

    let issuer_code = facility(&mut c, "slip.issuer.code", issuer, "MA_CSKCB");
    let receiving = facility(
        &mut c,
        "slip.receiving.code",
        s.receiving.as_ref().map(|f| f.code.as_str()).unwrap_or(""),
        "MA_NOI_DEN / MA_CSKCB_DEN",
    );
    let sending: Vec<_> = s
        .sending
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            c.text_of(
                Field(&Item(&"slip", "sending", i), "code"),
                &f.code,
                TextKind::Code,
            );
            c.id(
                Field(&Item(&"slip", "sending", i), "code"),
                &f.code,
                Shown::Plain,
                crate::ids::FacilityCode::parse,
            )
        })
        .collect();
    if let Some(to) = &receiving
        && (sending.contains(to) || issuer_code.as_ref() == Some(to))
    {
        c.error("referral.same_facility", "slip.receiving.code", Some(to.to_string()),
                "the receiving facility is the sending facility; a referral must go to another facility".into(),
                "Cơ sở nhận trùng với cơ sở chuyển đi".into());
    }

    if s.reason == ReferralReason::Unspecified as i32 || ReferralReason::try_from(s.reason).is_err()
    {
        c.error("referral.reason", "slip.reason", Some(s.reason.to_string()),
            "MA_LYDO_CT must be 1 (meets referral rules), 2 (beyond capability) or 3 (patient's request)".into(),
            "MA_LYDO_CT phải là 1, 2 hoặc 3".into());
    }
    let dt = DischargeType::try_from(s.discharge_type).unwrap_or_default();
    if !matches!(
        dt,
        DischargeType::Unspecified
            | DischargeType::TransferredProfessional
            | DischargeType::TransferredOnRequest
    ) {
        c.error("referral.discharge_type", "slip.discharge_type", Some(s.discharge_type.to_string()),
            "a referral slip exists only for MA_LOAI_RV 2 (transfer for professional reasons) or 5 (transfer on request)".into(),
            "Giấy chuyển tuyến chỉ có khi MA_LOAI_RV là 2 hoặc 5".into());
    }

    let ep = episode(&mut c, &"slip.episode", s.episode.as_ref());
    patient(&mut c, &"slip.patient", s.patient.as_ref(), ep);
    diagnosis(&mut c, &"slip.diagnosis", s.diagnosis.as_ref());
    practitioner(&mut c, &"slip.physician", s.physician.as_ref(), "MA_BAC_SI");
    practitioner(
        &mut c,
        &"slip.head_of_facility",
        s.head_of_facility.as_ref(),
        "MA_TTDV",
    );

    let issued = c.date("slip.issued_at", s.issued_at.as_ref(), None);
    // A slip is valid to the end of the year at most, or a year for chronic care.
    let valid_until = c.date_ahead("slip.valid_until", s.valid_until.as_ref(), None, 2);
    if let (Some(i), Some(v)) = (issued, valid_until)
        && v.earliest() < i.earliest()
    {
        c.error(
            "referral.valid_until_before_issue",
            "slip.valid_until",
            Some(v.digits()),
            "the slip's validity ends before it was issued".into(),
            "Hạn giấy chuyển tuyến trước ngày cấp".into(),
        );
    }
    c.out
}

/// Every violation of an appointment event (XML14).
pub fn validate_appointment(e: &AppointmentEvent, ctx: &ValidationContext) -> Vec<Violation> {
    let mut c = Checker::new(ctx);
    let Some(a) = e.appointment.as_ref() else {
        c.required("appointment", "", "XML14");
        return c.out;
    };
    let fac = a.facility.as_ref().map(|f| f.code.as_str()).unwrap_or("");
    header(
        &mut c,
        e.header.as_ref(),
        DocumentKind::Appointment,
        &document_id::appointment(fac, &a.slip_number),
        fac,
    );
    c.required("appointment.episode_id", &a.episode_id, "MA_LK");
    c.required("appointment.slip_number", &a.slip_number, "SO_GIAYHEN_KL");
    for (path, text) in [
        ("appointment.episode_id", &a.episode_id),
        ("appointment.slip_number", &a.slip_number),
        ("appointment.beneficiary_category", &a.beneficiary_category),
    ] {
        c.text_of(path, text, TextKind::Code);
    }
    facility_name(&mut c, &"appointment.facility", a.facility.as_ref());
    facility(&mut c, "appointment.facility.code", fac, "MA_CSKCB");
    let ep = episode(&mut c, &"appointment.episode", a.episode.as_ref());
    patient(&mut c, &"appointment.patient", a.patient.as_ref(), ep);
    diagnosis(&mut c, &"appointment.diagnosis", a.diagnosis.as_ref());
    practitioner(
        &mut c,
        &"appointment.physician",
        a.physician.as_ref(),
        "MA_BAC_SI",
    );
    practitioner(
        &mut c,
        &"appointment.head_of_facility",
        a.head_of_facility.as_ref(),
        "MA_TTDV",
    );
    // The appointment itself is in the future by nature: check its shape, not the future rule.
    let at = c.date_ahead(
        "appointment.appointment_at",
        a.appointment_at.as_ref(),
        Some("NGAY_HEN_KL"),
        2,
    );
    let issued = c.date(
        "appointment.issued_at",
        a.issued_at.as_ref(),
        Some("NGAY_CT"),
    );
    if let (Some(at), Some(issued)) = (at, issued)
        && has_day(&at)
        && at.date() < issued.date()
    {
        c.error(
            "appointment.before_issue",
            "appointment.appointment_at",
            Some(at.digits()),
            format!(
                "NGAY_HEN_KL {} is before the slip's issue date NGAY_CT {}",
                at.digits(),
                issued.digits()
            ),
            format!(
                "NGAY_HEN_KL {} trước ngày cấp giấy NGAY_CT {}",
                at.digits(),
                issued.digits()
            ),
        );
    }
    c.out
}

/// Every violation of a lab-result event (XML4 lines of one service).
pub fn validate_lab_result(e: &LabResultEvent, ctx: &ValidationContext) -> Vec<Violation> {
    let mut c = Checker::new(ctx);
    let Some(r) = e.report.as_ref() else {
        c.required("report", "", "XML4");
        return c.out;
    };
    let fac = r.facility.as_ref().map(|f| f.code.as_str()).unwrap_or("");
    header(
        &mut c,
        e.header.as_ref(),
        DocumentKind::LabResult,
        &document_id::lab_report(fac, &r.episode_id, &r.service_code),
        fac,
    );
    c.required("report.episode_id", &r.episode_id, "MA_LK");
    c.text_of("report.episode_id", &r.episode_id, TextKind::Code);
    c.text_of("report.service_code", &r.service_code, TextKind::Code);
    facility_name(&mut c, &"report.facility", r.facility.as_ref());
    facility(&mut c, "report.facility.code", fac, "MA_CSKCB");
    if c.required("report.service_code", &r.service_code, "MA_DICH_VU")
        && r.service_code.chars().count() > 50
    {
        c.error(
            "lab.service_code_length",
            "report.service_code",
            Some(r.service_code.clone()),
            "MA_DICH_VU holds at most 50 characters (QĐ 3176)".into(),
            "MA_DICH_VU tối đa 50 ký tự".into(),
        );
    }
    let ep = episode(&mut c, &"report.episode", r.episode.as_ref());
    patient(&mut c, &"report.patient", r.patient.as_ref(), ep);
    if r.lines.is_empty() {
        c.error(
            "lab.no_lines",
            "report.lines",
            None,
            "a lab report needs at least one XML4 result line".into(),
            "Kết quả cận lâm sàng phải có ít nhất một dòng XML4".into(),
        );
    }
    for (i, line) in r.lines.iter().enumerate() {
        let p = Item(&"report", "lines", i);
        if let Some(at) = c.date(
            Field(&p, "result_at"),
            line.result_at.as_ref(),
            Some("NGAY_KQ"),
        ) && let Some((admitted, _)) = ep
            && at.earliest() < admitted.earliest()
        {
            c.error(
                "lab.result_before_admission",
                Field(&p, "result_at"),
                Some(at.digits()),
                format!(
                    "NGAY_KQ {} is before the episode's NGAY_VAO {}",
                    at.digits(),
                    admitted.digits()
                ),
                format!(
                    "NGAY_KQ {} trước NGAY_VAO {}",
                    at.digits(),
                    admitted.digits()
                ),
            );
        }
        for (field, text, kind) in [
            ("indicator_code", &line.indicator_code, TextKind::Code),
            ("indicator_name", &line.indicator_name, TextKind::Line),
            ("value_text", &line.value_text, TextKind::Line),
            ("unit", &line.unit, TextKind::Line),
            ("description", &line.description, TextKind::Narrative),
            ("conclusion", &line.conclusion, TextKind::Narrative),
            ("loinc_code", &line.loinc_code, TextKind::Code),
        ] {
            c.text_of(Field(&p, field), text, kind);
        }
        if let Some(range) = &line.reference_range {
            c.text_of(Field(&p, "reference_range"), &range.text, TextKind::Line);
        }
        lab_values(&mut c, &p, line);
        if line.value_text.chars().count() > 255 {
            c.error(
                "lab.value_length",
                Field(&p, "value_text"),
                None,
                "GIA_TRI holds at most 255 characters".into(),
                "GIA_TRI tối đa 255 ký tự".into(),
            );
        }
        if line.readers.is_empty() {
            c.required(Field(&p, "readers"), "", "MA_BS_DOC_KQ");
        }
        for (j, reader) in line.readers.iter().enumerate() {
            practitioner(
                &mut c,
                &Item(&p, "readers", j),
                Some(reader),
                "MA_BS_DOC_KQ",
            );
        }
    }
    c.out
}

/// The name a facility reference carries (its code is checked where it is required).
fn facility_name(c: &mut Checker<'_>, path: &dyn Display, f: Option<&FacilityRef>) {
    if let Some(f) = f {
        c.text_of(Field(path, "name"), &f.name, TextKind::Line);
    }
}

/// The largest magnitude a lab value may have: no analyte is measured beyond it, and a larger
/// number is a typing or unit error (or infinity in disguise) that analysts would average in.
const MAX_LAB_MAGNITUDE: f64 = 1e9;

/// A line's numbers: finite, within range, a reference range whose low is not above its high,
/// and a numeric value that agrees with the text value when the text is a number.
fn lab_values(c: &mut Checker<'_>, p: &dyn Display, line: &LabResultLine) {
    let range = line.reference_range.as_ref();
    let numbers = [
        (
            "value_numeric",
            line.value_numeric.as_ref().map(|n| n.value),
        ),
        ("reference_range.low", range.and_then(|r| r.low)),
        ("reference_range.high", range.and_then(|r| r.high)),
    ];
    let mut all_fit = true;
    for (field, value) in numbers {
        let Some(v) = value else { continue };
        if !v.is_finite() || v.abs() > MAX_LAB_MAGNITUDE {
            all_fit = false;
            c.error(
                "lab.value_out_of_range",
                Field(p, field),
                Some(v.to_string()),
                format!("a lab number must be finite and at most {MAX_LAB_MAGNITUDE:e} in magnitude; check the value and its unit"),
                format!("Giá trị xét nghiệm phải hữu hạn và không vượt quá {MAX_LAB_MAGNITUDE:e}; kiểm tra giá trị và đơn vị"),
            );
        }
    }
    if !all_fit {
        return;
    }
    if let (Some(low), Some(high)) = (range.and_then(|r| r.low), range.and_then(|r| r.high))
        && low > high
    {
        c.error(
            "lab.range_inverted",
            Field(p, "reference_range"),
            Some(format!("{low}..{high}")),
            "the reference range's low bound is above its high bound".into(),
            "Cận dưới của khoảng tham chiếu lớn hơn cận trên".into(),
        );
    }
    let Some(numeric) = line.value_numeric.as_ref().map(|n| n.value) else {
        return;
    };
    // GIA_TRI is free text ("Âm tính", "<0.5", "5,2"); only a text that is a plain number is
    // compared, with the decimal comma Vietnamese labs use.
    let text = line.value_text.trim().replace(',', ".");
    if let Ok(stated) = text.parse::<f64>()
        && stated.is_finite()
        && (stated - numeric).abs() > 1e-9 * stated.abs().max(numeric.abs()).max(1.0)
    {
        c.error(
            "lab.value_mismatch",
            Field(p, "value_numeric"),
            Some(format!("{numeric} vs {:?}", line.value_text)),
            format!("the numeric value {numeric} disagrees with the text value {:?}; send the same result in both", line.value_text),
            format!("Giá trị số {numeric} không khớp với giá trị chữ {:?}", line.value_text),
        );
    }
}
