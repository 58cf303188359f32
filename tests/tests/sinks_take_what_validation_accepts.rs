//! Whatever validation accepts, both sinks store: generated documents with hostile values put
//! into their fields (any text, any timestamp, any version, any number, any date digits) are
//! validated, and every one accepted becomes warehouse rows (through its de-identification) and is applied to a regional store
//! without an error or a panic. No broker is needed: this is the per-message path alone.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use lienthong_core::fixtures::Generator;
use lienthong_core::validation::{Severity, ValidationContext};
use lienthong_core::{ClinicalEvent, document_id};
use lienthong_proto::v1 as pb;
use lienthong_regional_store::store::{Change, RegionStore};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::TestRunner;

/// One hostile value and where it goes.
#[derive(Debug, Clone)]
enum Edit {
    Text(usize, String),
    Occurred(i64, i32),
    Version(u64),
    LabValue(f64, String),
    Date(usize, String),
    Icd(String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let text = prop_oneof![
        any::<String>(),
        "[ -~]{0,12}",
        "[\\x00-\\x1f\\u{202a}-\\u{202e}\\u{fffd}a-zà-ỹ ]{0,12}",
    ];
    prop_oneof![
        (0..8usize, text).prop_map(|(f, t)| Edit::Text(f, t)),
        (any::<i64>(), any::<i32>()).prop_map(|(s, n)| Edit::Occurred(s, n)),
        prop_oneof![any::<u64>(), 0..3u64].prop_map(Edit::Version),
        (any::<f64>(), "[0-9.,eE+-]{0,10}").prop_map(|(v, t)| Edit::LabValue(v, t)),
        (0..5usize, "[0-9]{8}|[0-9]{12}|[0-9]{14}").prop_map(|(f, d)| Edit::Date(f, d)),
        // Calendar-shaped dates, unknown parts written 00 as the MoH tables do (`20261200`).
        (
            0..5usize,
            prop_oneof![1900..2200u32, 2000..2027u32],
            prop_oneof![Just(0u32), 1..13u32],
            prop_oneof![Just(0u32), 1..32u32],
            prop::option::of(0..2400u32)
        )
            .prop_map(|(f, y, m, d, time)| {
                let time = time.map(|t| format!("{t:04}")).unwrap_or_default();
                Edit::Date(f, format!("{y:04}{m:02}{d:02}{time}"))
            }),
        "[a-zA-Z][0-9]{2}\\.?[0-9a-zA-Z]{0,2}[ ]?".prop_map(Edit::Icd),
    ]
}

fn patient(e: &mut ClinicalEvent) -> Option<&mut pb::Patient> {
    match e {
        ClinicalEvent::Referral(r) => r.slip.as_mut()?.patient.as_mut(),
        ClinicalEvent::Appointment(a) => a.appointment.as_mut()?.patient.as_mut(),
        ClinicalEvent::LabResult(l) => l.report.as_mut()?.patient.as_mut(),
    }
}

fn apply(event: &mut ClinicalEvent, edit: &Edit) {
    match edit {
        Edit::Text(field, t) => match (field, &mut *event) {
            (0, e) => {
                if let Some(p) = patient(e) {
                    p.full_name = t.clone();
                }
            }
            (1, e) => {
                if let Some(p) = patient(e) {
                    p.address = t.clone();
                }
            }
            (2, ClinicalEvent::Referral(r)) => {
                if let Some(s) = r.slip.as_mut() {
                    s.clinical_signs = t.clone();
                }
            }
            (3, ClinicalEvent::LabResult(l)) => {
                if let Some(r) = l.report.as_mut() {
                    r.lines[0].value_text = t.clone();
                }
            }
            (4, ClinicalEvent::LabResult(l)) => {
                if let Some(r) = l.report.as_mut() {
                    r.lines[0].unit = t.clone();
                }
            }
            (5, e) => e.header_mut().source_system = t.clone(),
            (6, ClinicalEvent::Referral(r)) => {
                if let Some(f) = r.slip.as_mut().and_then(|s| s.receiving.as_mut()) {
                    f.name = t.clone();
                }
            }
            (_, e) => {
                if let Some(p) = patient(e) {
                    p.ethnicity_code = t.clone();
                }
            }
        },
        Edit::Occurred(seconds, nanos) => {
            event.header_mut().occurred_at = Some(prost_types::Timestamp {
                seconds: *seconds,
                nanos: *nanos,
            });
        }
        Edit::Version(v) => {
            let kind = event.kind();
            let h = event.header_mut();
            h.document_version = *v;
            h.event_id = document_id::event_id(kind, &h.document_id, *v);
        }
        Edit::LabValue(v, text) => {
            if let ClinicalEvent::LabResult(l) = event
                && let Some(r) = l.report.as_mut()
            {
                r.lines[0].value_numeric = Some(pb::NumericValue { value: *v });
                r.lines[0].value_text = text.clone();
            }
        }
        Edit::Date(field, digits) => {
            let date = Some(pb::PartialDateTime {
                value: digits.clone(),
                precision: match digits.len() {
                    8 => pb::DatePrecision::Day,
                    _ => pb::DatePrecision::Minute,
                } as i32,
            });
            match (field, &mut *event) {
                (0, e) => {
                    if let Some(p) = patient(e) {
                        p.birth_date = date;
                    }
                }
                (1, ClinicalEvent::Appointment(a)) => {
                    if let Some(a) = a.appointment.as_mut() {
                        a.appointment_at = date;
                    }
                }
                (2, ClinicalEvent::LabResult(l)) => {
                    if let Some(r) = l.report.as_mut() {
                        r.lines[0].result_at = date;
                    }
                }
                (3, ClinicalEvent::Appointment(a)) => {
                    if let Some(a) = a.appointment.as_mut() {
                        a.issued_at = date;
                    }
                }
                (3, ClinicalEvent::Referral(r)) => {
                    if let Some(s) = r.slip.as_mut() {
                        s.issued_at = date;
                    }
                }
                (_, ClinicalEvent::Referral(r)) => {
                    if let Some(s) = r.slip.as_mut() {
                        s.valid_until = date;
                    }
                }
                _ => {}
            }
        }
        Edit::Icd(code) => {
            let diagnosis = match event {
                ClinicalEvent::Referral(r) => r.slip.as_mut().and_then(|s| s.diagnosis.as_mut()),
                ClinicalEvent::Appointment(a) => {
                    a.appointment.as_mut().and_then(|a| a.diagnosis.as_mut())
                }
                ClinicalEvent::LabResult(_) => None,
            };
            if let Some(d) = diagnosis {
                d.main_icd10 = code.clone();
            }
        }
    }
}

#[test]
fn every_accepted_event_becomes_rows_and_applies() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = RegionStore::open(dir.path()).expect("a temporary store");
    let (accepted, offset) = (AtomicUsize::new(0), AtomicI64::new(0));
    let cases = 3000;
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    let strategy = (any::<u64>(), 0..3u8, prop::collection::vec(edit(), 1..4));
    runner
        .run(&strategy, |(seed, kind, edits)| {
            let mut g = Generator::new(seed, time::OffsetDateTime::now_utc());
            let mut event = match kind {
                0 => ClinicalEvent::Referral(g.referral()),
                1 => ClinicalEvent::Appointment(g.appointment()),
                _ => ClinicalEvent::LabResult(g.lab_result()),
            };
            for e in &edits {
                apply(&mut event, e);
            }
            // What the gateway adds before producing.
            event.header_mut().patient_key = "p-0123456789abcdef".into();
            event.header_mut().patient_key_id = "test".into();
            let valid = !event
                .validate(&ValidationContext::now())
                .iter()
                .any(|v| v.severity == Severity::Error);
            if valid {
                accepted.fetch_add(1, Ordering::Relaxed);
                let rows = lienthong_tests::warehouse::warehouse_rows(&event);
                prop_assert!(rows.is_ok(), "warehouse rows: {:?}", rows.err());
                let body = event.encode_to_vec();
                let at = offset.fetch_add(1, Ordering::Relaxed);
                let applied =
                    store.apply_batch(&[("t".into(), 0, at, Change::consumed(event, &body))]);
                prop_assert!(applied.is_ok(), "regional apply: {:?}", applied.err());
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // The edits are hostile, not hopeless: a good share must pass validation, or the property
    // says nothing about the sinks.
    let accepted = accepted.into_inner();
    assert!(
        accepted * 5 > cases as usize,
        "only {accepted} of {cases} generated events were accepted"
    );
}
