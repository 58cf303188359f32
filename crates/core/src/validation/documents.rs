//! Rules per document (DOMAIN.md §1: required fields marked * per MoH table).

use lienthong_proto::v1::{
    AppointmentEvent, DischargeType, LabResultEvent, ReferralEvent, ReferralReason,
};

use super::checker::{Checker, Field, Item, Shown};
use super::common::{diagnosis, episode, facility, has_day, header, patient, practitioner};
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

    for (path, text) in [
        ("slip.clinical_signs", &s.clinical_signs),
        ("slip.course_of_illness", &s.course_of_illness),
        ("slip.test_summary", &s.test_summary),
        ("slip.treatment", &s.treatment),
        ("slip.condition_at_transfer", &s.condition_at_transfer),
        ("slip.planned_treatment", &s.planned_treatment),
    ] {
        c.text(path, text);
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
    let valid_until = c.date_shape("slip.valid_until", s.valid_until.as_ref(), None);
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
    let at = c.date_shape(
        "appointment.appointment_at",
        a.appointment_at.as_ref(),
        Some("NGAY_HEN_KL"),
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
        for (field, text) in [
            ("indicator_code", &line.indicator_code),
            ("indicator_name", &line.indicator_name),
            ("value_text", &line.value_text),
            ("unit", &line.unit),
            ("loinc_code", &line.loinc_code),
        ] {
            c.text(Field(&p, field), text);
        }
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
