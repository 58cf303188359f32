//! Where events go: the topic of each document kind, the Kafka key, and the regions that care.

use std::collections::BTreeSet;

use lienthong_proto::v1::{AppointmentEvent, LabResultEvent, Patient, ReferralEvent};

use crate::ids::FacilityCode;
use crate::province::ProvinceCode;

/// The three clinical document kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DocumentKind {
    /// Referral slip (XML13).
    Referral,
    /// Follow-up appointment (XML14).
    Appointment,
    /// Lab report (XML4).
    LabResult,
}

impl DocumentKind {
    /// All kinds.
    pub const ALL: [Self; 3] = [Self::Referral, Self::Appointment, Self::LabResult];

    /// Short name used in ids and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referral => "referral",
            Self::Appointment => "appointment",
            Self::LabResult => "lab-result",
        }
    }

    /// The Kafka topic of this kind (ARCHITECTURE.md, "Contracts").
    pub fn topic(self) -> &'static str {
        match self {
            Self::Referral => "lienthong.referral.v1",
            Self::Appointment => "lienthong.appointment.v1",
            Self::LabResult => "lienthong.lab-result.v1",
        }
    }

    /// The kind whose topic this is.
    pub fn from_topic(topic: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.topic() == topic)
    }

    /// Fully-qualified protobuf name of the topic's event message.
    pub fn message_name(self) -> &'static str {
        match self {
            Self::Referral => "lienthong.v1.ReferralEvent",
            Self::Appointment => "lienthong.v1.AppointmentEvent",
            Self::LabResult => "lienthong.v1.LabResultEvent",
        }
    }
}

/// Receipts of referred patients (AcknowledgeReferral).
pub const RECEIPT_TOPIC: &str = "lienthong.referral-receipt.v1";
/// Dead-letter topic.
pub const DLQ_TOPIC: &str = "lienthong.dlq.v1";
/// Access-audit topic.
pub const AUDIT_TOPIC: &str = "lienthong.audit.v1";
/// Revoked bearer tokens, followed by every verifier.
pub const REVOCATIONS_TOPIC: &str = "lienthong.token-revocations.v1";
/// Age band widenings of the de-identification service, followed by each of its instances.
pub const AGE_BANDS_TOPIC: &str = "lienthong.deidentifier.age-bands.v1";
/// De-identified referrals, what analytics teams and the warehouse read.
pub const ANALYTICS_REFERRAL_TOPIC: &str = "lienthong.analytics.referral.v1";
/// De-identified follow-up appointments.
pub const ANALYTICS_APPOINTMENT_TOPIC: &str = "lienthong.analytics.appointment.v1";
/// De-identified lab results.
pub const ANALYTICS_LAB_RESULT_TOPIC: &str = "lienthong.analytics.lab-result.v1";
/// De-identified referral receipts.
pub const ANALYTICS_RECEIPT_TOPIC: &str = "lienthong.analytics.referral-receipt.v1";

fn region_of_facility(code: &str) -> Option<ProvinceCode> {
    FacilityCode::parse(code).ok().map(|f| f.region())
}

fn region_of_patient(patient: Option<&Patient>) -> Option<ProvinceCode> {
    patient.and_then(|p| ProvinceCode::region_of(&p.residence_province_code))
}

/// Regions of a referral: the source facility's, the receiving facility's and the patient's.
pub fn referral_regions(e: &ReferralEvent) -> BTreeSet<ProvinceCode> {
    let slip = e.slip.as_ref();
    [
        e.header
            .as_ref()
            .and_then(|h| region_of_facility(&h.source_facility_code)),
        slip.and_then(|s| s.receiving.as_ref())
            .and_then(|f| region_of_facility(&f.code)),
        region_of_patient(slip.and_then(|s| s.patient.as_ref())),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Regions of an appointment: the source facility's and the patient's.
pub fn appointment_regions(e: &AppointmentEvent) -> BTreeSet<ProvinceCode> {
    [
        e.header
            .as_ref()
            .and_then(|h| region_of_facility(&h.source_facility_code)),
        region_of_patient(e.appointment.as_ref().and_then(|a| a.patient.as_ref())),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Regions of a lab report: the source facility's and the patient's.
pub fn lab_result_regions(e: &LabResultEvent) -> BTreeSet<ProvinceCode> {
    [
        e.header
            .as_ref()
            .and_then(|h| region_of_facility(&h.source_facility_code)),
        region_of_patient(e.report.as_ref().and_then(|r| r.patient.as_ref())),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lienthong_proto::v1::{EventHeader, FacilityRef, ReferralSlip};

    #[test]
    fn a_referral_interests_sender_receiver_and_residence_regions() {
        let e = ReferralEvent {
            header: Some(EventHeader {
                source_facility_code: "74001".into(),
                ..Default::default()
            }),
            slip: Some(ReferralSlip {
                receiving: Some(FacilityRef {
                    code: "01001".into(),
                    name: String::new(),
                }),
                patient: Some(Patient {
                    residence_province_code: "95".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let regions: Vec<_> = referral_regions(&e)
            .into_iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(regions, ["01", "79", "96"]);
    }

    #[test]
    fn topics_round_trip() {
        for k in DocumentKind::ALL {
            assert_eq!(DocumentKind::from_topic(k.topic()), Some(k));
        }
    }
}
