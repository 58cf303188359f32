//! Writes the seed corpora: MoH XML exports in both layouts and several encodings, framed
//! messages, and encoded events of every kind (valid ones, so mutation starts from what
//! validation accepts).

use std::path::Path;

use lienthong_core::fixtures::Generator;
use lienthong_core::{ClinicalEvent, DocumentKind};
use lienthong_facility_agent::xml::fixtures::{envelope, full_episode, xml1, xml4};
use lienthong_registry::frame;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "corpus".into());

    let xml = root.join("xml_export");
    for (i, layout_3176) in [false, true].into_iter().enumerate() {
        let text = envelope("01001", &[full_episode("LK1", "001185012345", layout_3176)]);
        write(&xml, &format!("envelope-{i}.xml"), text.as_bytes())?;
        let utf16: Vec<u8> = format!("\u{feff}{text}")
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        write(&xml, &format!("envelope-{i}-utf16.xml"), &utf16)?;
    }
    let bare = format!("<EXPORT>{}{}</EXPORT>", xml1("LK2", "123456789"), xml4("LK2"));
    write(&xml, "bare-tables.xml", bare.as_bytes())?;

    let mut g = Generator::new(1, time::OffsetDateTime::now_utc());
    let events = root.join("event_to_sinks");
    let frames = root.join("wire_frame");
    for i in 0..12 {
        let event = match i % 3 {
            0 => ClinicalEvent::Referral(g.referral()),
            1 => ClinicalEvent::Appointment(g.appointment()),
            _ => ClinicalEvent::LabResult(g.lab_result()),
        };
        let mut event = event;
        event.header_mut().patient_key = format!("p-seed-{i}");
        event.header_mut().patient_key_id = "k".into();
        let selector = DocumentKind::ALL
            .iter()
            .position(|k| *k == event.kind())
            .unwrap_or(0) as u8;
        let payload = event.encode_to_vec();
        let mut seed = vec![selector];
        seed.extend_from_slice(&payload);
        write(&events, &format!("event-{i}"), &seed)?;
        write(&frames, &format!("frame-{i}"), &frame::write(i, &[0], &payload))?;
    }
    write(&frames, "nested", &frame::write(3, &[1, 0, 2], b"\x08\x01"))?;
    Ok(())
}
