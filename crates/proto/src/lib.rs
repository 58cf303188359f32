//! Generated protobuf types of the lienthong event contracts (package `lienthong.v1`).
//!
//! The .proto files in `proto/` are the contract; this crate only compiles them.

pub mod codec;
pub mod json;

/// Types of package `lienthong.v1`.
// Generated from the .proto files, whose comments write placeholders as `<kind>/<issuer>/…`
// for readers of the contract in any language, not as rustdoc.
#[allow(missing_docs, clippy::all, rustdoc::invalid_html_tags)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/lienthong.v1.rs"));
}

/// Encoded `FileDescriptorSet` of every lienthong .proto file and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/lienthong_descriptor.bin"));

/// The event-contract .proto sources, by import path, as checked in (what the schema registry
/// stores). Service APIs (ingest.proto, query.proto) are not topic schemas and are not listed.
pub const PROTO_SOURCES: &[(&str, &str)] = &[
    (
        "lienthong/v1/common.proto",
        include_str!("../../../proto/lienthong/v1/common.proto"),
    ),
    (
        "lienthong/v1/referral.proto",
        include_str!("../../../proto/lienthong/v1/referral.proto"),
    ),
    (
        "lienthong/v1/appointment.proto",
        include_str!("../../../proto/lienthong/v1/appointment.proto"),
    ),
    (
        "lienthong/v1/lab_result.proto",
        include_str!("../../../proto/lienthong/v1/lab_result.proto"),
    ),
    (
        "lienthong/v1/receipt.proto",
        include_str!("../../../proto/lienthong/v1/receipt.proto"),
    ),
    (
        "lienthong/v1/audit.proto",
        include_str!("../../../proto/lienthong/v1/audit.proto"),
    ),
    (
        "lienthong/v1/revocation.proto",
        include_str!("../../../proto/lienthong/v1/revocation.proto"),
    ),
    (
        "lienthong/v1/analytics_common.proto",
        include_str!("../../../proto/lienthong/v1/analytics_common.proto"),
    ),
    (
        "lienthong/v1/analytics_referral.proto",
        include_str!("../../../proto/lienthong/v1/analytics_referral.proto"),
    ),
    (
        "lienthong/v1/analytics_appointment.proto",
        include_str!("../../../proto/lienthong/v1/analytics_appointment.proto"),
    ),
    (
        "lienthong/v1/analytics_lab_result.proto",
        include_str!("../../../proto/lienthong/v1/analytics_lab_result.proto"),
    ),
    (
        "lienthong/v1/analytics_receipt.proto",
        include_str!("../../../proto/lienthong/v1/analytics_receipt.proto"),
    ),
    (
        "lienthong/v1/age_band_widening.proto",
        include_str!("../../../proto/lienthong/v1/age_band_widening.proto"),
    ),
];

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    #[test]
    fn referral_event_round_trips_through_bytes() {
        let event = ReferralEvent {
            header: Some(EventHeader {
                event_id: "e1".into(),
                document_id: "01001:CT-0001".into(),
                document_version: 3,
                action: Action::Updated as i32,
                source_facility_code: "01001".into(),
                patient_key: "ab".repeat(32),
                ..Default::default()
            }),
            slip: Some(ReferralSlip {
                slip_number: "CT-0001".into(),
                reason: ReferralReason::BeyondCapability as i32,
                clinical_signs: "Sốt cao, khó thở".into(),
                signature: vec![0, 1, 2, 255],
                ..Default::default()
            }),
        };
        let bytes = event.encode_to_vec();
        let back = ReferralEvent::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(back, event);
    }

    #[test]
    fn descriptor_set_lists_every_contract_file() {
        let set =
            prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).expect("valid");
        let names: Vec<_> = set.file.iter().filter_map(|f| f.name.clone()).collect();
        for (path, _) in super::PROTO_SOURCES {
            assert!(
                names.iter().any(|n| n == path),
                "{path} missing from {names:?}"
            );
        }
    }
}
