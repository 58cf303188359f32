//! The XML adapter against hand-written exports in both layouts (4750 and 3176), field by
//! field, and a catalogue of malformed files, each with its precise report.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use base64::Engine as _;
use lienthong_core::validation::ValidationContext;
use lienthong_core::{ClinicalEvent, document_id};
use lienthong_facility_agent::xml::fixtures::{XML_DECL, b64, envelope, full_episode, xml1, xml4};
use lienthong_facility_agent::xml::{Limits, Table, TreeError, convert};
use lienthong_proto::v1 as pb;

fn ctx() -> ValidationContext {
    ValidationContext::now()
}

fn run(file: &str, text: &str) -> lienthong_facility_agent::xml::Conversion {
    convert(file, text.as_bytes(), &Limits::default(), &ctx()).expect("readable")
}

#[test]
fn both_layouts_convert_with_every_clinical_field() {
    for layout_3176 in [false, true] {
        let text = envelope("01001", &[full_episode("LK1", "001185012345", layout_3176)]);
        let c = run("export.xml", &text);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.episodes, 1);
        assert_eq!(c.events.len(), 4, "referral, appointment, two lab reports");

        let referral = c
            .events
            .iter()
            .find_map(|e| match e {
                ClinicalEvent::Referral(r) => Some(r.clone()),
                _ => None,
            })
            .expect("referral");
        let h = referral.header.clone().unwrap();
        assert_eq!(h.document_id, document_id::referral("01001", "CTLK1"));
        assert_eq!(h.source_facility_code, "01001");
        let s = referral.slip.unwrap();
        let p = s.patient.clone().unwrap();
        assert_eq!(p.citizen_id, "001185012345");
        assert_eq!(p.full_name, "Nguyễn Thị Hồng Nhung");
        assert_eq!(p.sex, pb::Sex::Female as i32);
        assert_eq!(p.birth_date.clone().unwrap().value, "198503170000");
        assert_eq!(p.residence_province_code, "01");
        assert_eq!(p.address, "Số 12 Trần Hưng Đạo, Hoàn Kiếm");
        assert_eq!(p.insurance_cards[0].number, "HN2010123456789");
        assert_eq!(
            p.insurance_cards[0].valid_to.clone().unwrap().value,
            "20261231"
        );
        assert_eq!(p.facility_patient_number, "BN0001");
        assert_eq!(s.episode_id, "LK1");
        assert_eq!(s.record_number, "HS000001");
        assert_eq!(s.book_number, "0001/CT");
        assert_eq!(s.slip_number, "CTLK1");
        assert_eq!(s.issuer.unwrap().code, "01001");
        assert_eq!(s.receiving.unwrap().code, "79025");
        assert_eq!(s.clinical_signs, "Sốt 39°C, ho, khó thở");
        assert_eq!(s.course_of_illness, "Điều trị 3 ngày không cải thiện");
        assert_eq!(s.test_summary, "Glucose 8.9 mmol/L");
        assert_eq!(s.occupation_code, "00000");
        let d = s.diagnosis.unwrap();
        assert_eq!(
            (d.main_icd10.as_str(), d.secondary_icd10.clone()),
            ("J18.9", vec!["I10".to_owned()])
        );
        assert_eq!(d.text, "Viêm phổi");
        assert_eq!(
            s.discharge_type,
            pb::DischargeType::TransferredProfessional as i32
        );
        assert_eq!(s.reason, pb::ReferralReason::BeyondCapability as i32);
        assert_eq!(s.planned_treatment, "Điều trị chuyên khoa");
        assert_eq!(s.transport, "Xe cứu thương");
        let escort = s.escort.unwrap();
        assert_eq!(
            (escort.name.as_str(), escort.title.as_str()),
            ("Lê Thị Hoa", "Điều dưỡng")
        );
        assert_eq!(s.physician.unwrap().licence_number, "094041/HNO-CCHN");
        assert_eq!(s.head_of_facility.unwrap().licence_number, "2405020801");
        assert_eq!(
            s.episode.unwrap().discharged_at.unwrap().value,
            "202611041000"
        );
        if layout_3176 {
            assert_eq!(s.layout, pb::XmlLayout::Qd3176 as i32);
            let sending: Vec<String> = s.sending.iter().map(|f| f.code.clone()).collect();
            assert_eq!(sending, ["01001", "01002"]);
            assert_eq!(s.condition_at_transfer, "Tỉnh, SpO2 93%");
            assert_eq!(s.signature, b"<sig/>");
        } else {
            assert_eq!(s.layout, pb::XmlLayout::Qd4750 as i32);
            assert_eq!(s.sending[0].code, "01001");
            assert_eq!(s.treatment, "Kháng sinh");
            assert_eq!(
                s.signature, b"<Signature>facility</Signature>",
                "the envelope's signature is kept"
            );
        }

        let appt = c
            .events
            .iter()
            .find_map(|e| match e {
                ClinicalEvent::Appointment(a) => a.appointment.clone(),
                _ => None,
            })
            .expect("appointment");
        assert_eq!(appt.slip_number, "LK1/GH");
        assert_eq!(appt.facility.unwrap().code, "01001");
        let at = appt.appointment_at.unwrap().value;
        assert_eq!(
            at,
            if layout_3176 {
                "20261118"
            } else {
                "202611180800"
            }
        );
        assert_eq!(appt.issued_at.unwrap().value, "20261104");
        assert_eq!(appt.beneficiary_category, "1.1");
        assert_eq!(appt.patient.unwrap().citizen_id, "001185012345");

        let labs: Vec<pb::LabReport> = c
            .events
            .iter()
            .filter_map(|e| match e {
                ClinicalEvent::LabResult(l) => l.report.clone(),
                _ => None,
            })
            .collect();
        let glucose = labs
            .iter()
            .find(|r| r.service_code == "23.0075.1494")
            .expect("glucose");
        assert_eq!(glucose.lines.len(), 2);
        assert_eq!(glucose.lines[0].line_number, 1, "lines in STT order");
        assert_eq!(glucose.lines[0].indicator_code, "GLU");
        assert_eq!(glucose.lines[0].value_text, "8.9");
        assert_eq!(glucose.lines[0].value_numeric.unwrap().value, 8.9);
        assert_eq!(
            glucose.lines[1].value_numeric.unwrap().value,
            6.1,
            "decimal comma"
        );
        assert_eq!(glucose.lines[0].unit, "mmol/L");
        assert_eq!(
            glucose.lines[0].result_at.clone().unwrap().value,
            "202611020900"
        );
        assert_eq!(glucose.lines[0].readers.len(), 2);
        assert_eq!(glucose.episode_id, "LK1");
        assert_eq!(glucose.patient.clone().unwrap().citizen_id, "001185012345");
    }
}

#[test]
fn a_re_exported_file_makes_the_same_events() {
    let text = envelope("01001", &[full_episode("LK1", "001185012345", true)]);
    let ids = |c: &lienthong_facility_agent::xml::Conversion| {
        c.events
            .iter()
            .map(|e| e.header().unwrap().event_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&run("a.xml", &text)), ids(&run("b.xml", &text)));
}

#[test]
fn vendor_variations_are_tolerated() {
    // Bare table files, other root and row tags, surrounding whitespace, empty elements, BOM,
    // 8-character dates, a 9-digit old ID.
    let xml1 = xml1("LK9", "123456789")
        .replace("CHITIEU_TONGHOP_KCB", "TONGHOP")
        .replace("<HO_TEN>", "<HO_TEN>   ")
        .replace("<NGAY_VAO>202611010830", "<NGAY_VAO>20261101");
    let xml4 = xml4("LK9").replace("CHI_TIET_CLS", "ROW");
    let bare = format!(
        "\u{feff}{XML_DECL}<EXPORT>{}{}<EMPTY/></EXPORT>",
        xml1.trim_start_matches(XML_DECL),
        xml4.trim_start_matches(XML_DECL)
    );
    let c = run("bare.xml", &bare);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.events.len(), 2);
    let ClinicalEvent::LabResult(l) = &c.events[0] else {
        panic!("a lab report")
    };
    let p = l.report.clone().unwrap().patient.unwrap();
    assert_eq!(p.full_name, "Nguyễn Thị Hồng Nhung");
    assert_eq!(p.id_kind, pb::PersonIdKind::OldIdCard as i32);
}

#[test]
fn a_partly_bad_file_yields_its_good_episodes_and_a_precise_report() {
    let mut bad_date = full_episode("LK2", "001185012346", false);
    bad_date[3].1 = bad_date[3]
        .1
        .replace("<NGAY_RA>202611041000", "<NGAY_RA>2026-11-04");
    let no_xml1 = vec![("XML4", xml4("LK3"))];
    let text = envelope(
        "01001",
        &[
            full_episode("LK1", "001185012345", true),
            bad_date,
            no_xml1,
            vec![
                ("XML1", xml1("LK4", "001185012347")),
                ("XML1", xml1("LK4", "001185012348")),
            ],
        ],
    );
    let c = run("mixed.xml", &text);
    assert_eq!(c.episodes, 1, "only LK1 is good");
    assert!(c.events.iter().all(|e| {
        let id = e.header().unwrap().document_id.clone();
        id.contains("LK1")
    }));
    let find = |lk: &str| {
        c.problems
            .iter()
            .find(|p| p.episode.as_deref() == Some(lk))
            .unwrap_or_else(|| panic!("a report for {lk}: {:?}", c.problems))
    };
    let p = find("LK2");
    assert_eq!(
        (p.table, p.field.as_deref()),
        (Some(Table::Xml13), Some("NGAY_RA"))
    );
    assert_eq!(p.file, "mixed.xml");
    assert!(find("LK3").reason.contains("no XML1"));
    assert!(find("LK4").reason.contains("share this MA_LK"));
    assert!(c.problems.iter().all(|p| !p.to_string().is_empty()));
}

#[test]
fn malformed_files_get_precise_reports_and_never_crash() {
    let limits = Limits::default();
    // Truncated base64 in one table: that table is reported, the file still read.
    let mut episode = full_episode("LK1", "001185012345", true);
    let text = envelope("01001", &[episode.clone()]);
    let cut = text.replacen(&b64(&episode[4].1), &b64(&episode[4].1)[..41], 1);
    // One broken table of an episode holds back the whole episode (a referral without its
    // lab results would mislead), and the report names the episode.
    let c = run("cut.xml", &cut);
    assert!(
        c.problems.iter().any(|p| p.table == Some(Table::Xml14)
            && p.episode.as_deref() == Some("LK1")
            && p.reason.contains("base64")
            && p.reason.contains("nothing of the episode is sent")),
        "{:?}",
        c.problems
    );
    assert!(
        c.events.is_empty(),
        "nothing of LK1 is sent: {:?}",
        c.events.len()
    );
    // Wrong encoding inside (Latin-1 bytes, undeclared, are not UTF-8).
    episode[1].1 = String::new();
    let latin1 = {
        let mut t = envelope("01001", &[episode.clone()]);
        let raw: Vec<u8> = b"<A><MA_LK>LK1</MA_LK><HO_TEN>Nguy\xe9n</HO_TEN></A>".to_vec();
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        t = t.replacen(&b64(&episode[3].1), &encoded, 1);
        t
    };
    let c = run("latin1.xml", &latin1);
    assert!(
        c.problems
            .iter()
            .any(|p| p.reason.contains("not valid UTF-8") && p.episode.as_deref() == Some("LK1")),
        "{:?}",
        c.problems
    );
    // Not XML at all, a truncated file, an entity-expansion bomb, a 200 MB file.
    assert!(matches!(
        convert("x.xml", b"PK\x03\x04 zip?", &limits, &ctx()),
        Err(TreeError::Empty | TreeError::Malformed { .. })
    ));
    assert!(matches!(
        convert("t.xml", &text.as_bytes()[..text.len() / 2], &limits, &ctx()),
        Err(TreeError::Malformed { .. })
    ));
    let bomb = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE GIAMDINHHS [<!ENTITY a \"aaaaaaaaaa\">{}]><GIAMDINHHS>&z;</GIAMDINHHS>",
        (b'b'..=b'z')
            .map(|c| {
                let prev = (c - 1) as char;
                format!(
                    "<!ENTITY {} \"{}\">",
                    c as char,
                    format!("&{prev};").repeat(10)
                )
            })
            .collect::<String>()
    );
    assert_eq!(
        convert("bomb.xml", bomb.as_bytes(), &limits, &ctx()).unwrap_err(),
        TreeError::DocType
    );
    let huge = vec![b' '; 200 * 1024 * 1024];
    assert!(matches!(
        convert("huge.xml", &huge, &limits, &ctx()),
        Err(TreeError::TooLarge { size, .. }) if size == 200 * 1024 * 1024
    ));
}

#[test]
fn a_windows_1258_export_with_untidy_codes_converts_to_composed_text_and_canonical_codes() {
    // A bare export of the whole episode, declared windows-1258.
    let tables: String = full_episode("LK7", "001185012345", false)
        .into_iter()
        .map(|(_, xml)| xml.trim_start_matches(XML_DECL).to_owned())
        .collect();
    let text =
        format!("<?xml version=\"1.0\" encoding=\"windows-1258\"?><EXPORT>{tables}</EXPORT>")
            .replace("J18.9", "j189")
            .replace("I10;E11", "I10;i10;J18.9");
    let cp1258 = as_windows_1258_writes(&text);
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1258.encode(&cp1258);
    assert!(!unmappable, "the fixture is representable in windows-1258");
    let c = convert("cp1258.xml", &bytes, &Limits::default(), &ctx()).expect("readable");
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let ClinicalEvent::Referral(r) = c
        .events
        .iter()
        .find(|e| matches!(e, ClinicalEvent::Referral(_)))
        .expect("a referral")
    else {
        unreachable!()
    };
    let s = r.slip.clone().unwrap();
    assert_eq!(s.patient.unwrap().full_name, "Nguyễn Thị Hồng Nhung");
    let d = s.diagnosis.unwrap();
    assert_eq!(d.main_icd10, "J18.9");
    assert_eq!(
        d.secondary_icd10,
        ["I10"],
        "repeats and the main code dropped"
    );
}

/// Vietnamese as windows-1258 holds it: letters with a tone (ễ) as the toneless letter (ê)
/// followed by the combining tone mark, since the code page has no room for them precomposed.
fn as_windows_1258_writes(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    const TONES: [char; 5] = ['\u{300}', '\u{301}', '\u{303}', '\u{309}', '\u{323}'];
    let mut out = String::new();
    for c in text.chars() {
        let (_, _, unmappable) = encoding_rs::WINDOWS_1258.encode(c.encode_utf8(&mut [0; 4]));
        if !unmappable {
            out.push(c);
            continue;
        }
        let parts: Vec<char> = std::iter::once(c).nfd().collect();
        let tone: String = parts.iter().filter(|p| TONES.contains(p)).collect();
        let letter: String = parts.iter().filter(|p| !TONES.contains(p)).collect();
        out.extend(letter.nfc());
        out.push_str(&tone);
    }
    out
}
