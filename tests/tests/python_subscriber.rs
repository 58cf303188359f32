//! Another language reads our wire format: a Python consumer (confluent-kafka + its
//! schema-registry ProtobufDeserializer, classes generated from proto/ by grpcio-tools) decodes
//! the document events Rust published, as the admin principal, and finds the same field values.
//! Analytics teams read the de-identified topics the same way (tests/python/analytics_reads.py,
//! and the README's subscriber in readme_subscriber.rs).

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use lienthong_core::ClinicalEvent;
use lienthong_tests::{keyed_events, publish_framed, require_kafka, require_registry};
use serde_json::json;

#[tokio::test]
async fn python_reads_rust_events() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let published = publish_framed(&kafka, &registry, keyed_events(21, 9)).await?;
    let events: Vec<_> = published
        .iter()
        .map(|(event, partition, offset)| {
            let h = event.header().cloned().unwrap_or_default();
            let mut v = json!({
                "topic": event.kind().topic(), "partition": partition, "offset": offset, "key": h.patient_key,
                "event_id": h.event_id, "document_id": h.document_id, "document_version": h.document_version,
                "source_facility_code": h.source_facility_code,
                "patient_name": event.patient().map(|p| p.full_name.clone()).unwrap_or_default(),
            });
            match event {
                ClinicalEvent::Referral(e) => {
                    let s = e.slip.clone().unwrap_or_default();
                    v["text"] = json!(s.clinical_signs);
                    v["signature_hex"] = json!(s.signature.iter().map(|b| format!("{b:02x}")).collect::<String>());
                    v["receiving"] = json!(s.receiving.map(|f| f.code).unwrap_or_default());
                }
                ClinicalEvent::Appointment(e) => {
                    v["text"] = json!(e.appointment.as_ref().and_then(|a| a.appointment_at.as_ref()).map(|d| d.value.clone()).unwrap_or_default());
                }
                ClinicalEvent::LabResult(e) => {
                    let r = e.report.clone().unwrap_or_default();
                    v["text"] = json!(r.service_code);
                    v["values"] = json!(r.lines.iter().map(|l| l.value_numeric.as_ref().map_or(0.0, |n| n.value)).collect::<Vec<_>>());
                }
            }
            v
        })
        .collect();
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("manifest.json");
    std::fs::write(
        &manifest,
        serde_json::to_vec(
            &json!({ "bootstrap": kafka.bootstrap, "registry_url": registry.registry_url, "events": events }),
        )?,
    )?;

    lienthong_tests::run_pytest("test_subscribe.py", &[("LIENTHONG_MANIFEST", &manifest)], 1);
    Ok(())
}

/// A Python client computes event and document ids with its standard library alone and gets
/// the published test vectors (the Rust core checks the same file).
#[test]
fn python_computes_the_published_ids() {
    lienthong_tests::run_pytest("event_ids.py", &[], 2);
}
