//! Any bytes as the payload of a document topic: decode → validate, and whatever validation
//! accepts is de-identified, becomes warehouse rows and is applied to a regional store without panic.
//! The first byte picks the document kind.
#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};

use libfuzzer_sys::fuzz_target;
use lienthong_core::validation::{Severity, ValidationContext};
use lienthong_core::{ClinicalEvent, DocumentKind};
use lienthong_regional_store::store::{Change, RegionStore};

struct Scratch {
    _dir: tempfile::TempDir,
    store: RegionStore,
    offset: AtomicI64,
    deidentifier: lienthong_deidentifier::Deidentifier,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = RegionStore::open(dir.path()).expect("a temporary store");
        Scratch {
            _dir: dir,
            store,
            offset: AtomicI64::new(0),
            deidentifier: lienthong_deidentifier::Deidentifier::new(
                lienthong_deidentifier::Policy::shipped().expect("the shipped policy"),
                lienthong_core::PatientKeyer::new("fuzz", &[7; 32]).expect("a key"),
            ),
        }
    })
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&selector, payload)) = bytes.split_first() else {
        return;
    };
    let kind = DocumentKind::ALL[usize::from(selector) % DocumentKind::ALL.len()];
    let Ok(mut event) = ClinicalEvent::decode(kind, payload) else {
        return;
    };
    // What the gateway adds to every event it produces (one without is dead-lettered by the
    // warehouse, which the loader's own tests show).
    if event.header().is_some_and(|h| h.patient_key.is_empty()) {
        event.header_mut().patient_key = "p-fuzz".into();
        event.header_mut().patient_key_id = "k".into();
    }
    let accepted = !event
        .validate(&ValidationContext::now())
        .iter()
        .any(|v| v.severity == Severity::Error);
    if !accepted {
        return;
    }
    // The warehouse takes the event as the de-identification service makes it.
    let analytics = scratch().deidentifier.event(&event);
    let message = lienthong_sink::AnalyticsMessage::decode(
        analytics.kind.message_name(),
        &analytics.payload,
    )
    .expect("an analytics message")
    .expect("de-identified events decode");
    lienthong_warehouse_loader::rows::analytics_rows(&message)
        .expect("accepted events fit the warehouse");
    let s = scratch();
    let offset = s.offset.fetch_add(1, Ordering::Relaxed);
    s.store
        .apply_skipping_conflicts(&[("fuzz".into(), 0, offset, Change::event(event))])
        .expect("accepted events apply");
});
