//! Any of the three clinical events, for code that handles them alike.

use std::collections::BTreeSet;

use lienthong_proto::v1::{AppointmentEvent, EventHeader, LabResultEvent, Patient, ReferralEvent};
use prost::Message;

use crate::province::ProvinceCode;
use crate::routing::{self, DocumentKind};
use crate::validation::{self, ValidationContext, Violation};

/// One event of any document kind.
// Events are built once and moved a few times; boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ClinicalEvent {
    /// A referral slip event.
    Referral(ReferralEvent),
    /// A follow-up appointment event.
    Appointment(AppointmentEvent),
    /// A lab report event.
    LabResult(LabResultEvent),
}

impl From<ClinicalEvent> for lienthong_proto::v1::EventEnvelope {
    fn from(event: ClinicalEvent) -> Self {
        use lienthong_proto::v1::event_envelope::Event;
        Self {
            event: Some(match event {
                ClinicalEvent::Referral(e) => Event::Referral(e),
                ClinicalEvent::Appointment(e) => Event::Appointment(e),
                ClinicalEvent::LabResult(e) => Event::LabResult(e),
            }),
        }
    }
}

impl From<&Violation> for lienthong_proto::v1::ValidationError {
    fn from(v: &Violation) -> Self {
        use lienthong_proto::v1::ErrorSeverity;
        Self {
            code: v.code.clone(),
            severity: match v.severity {
                validation::Severity::Error => ErrorSeverity::Error,
                validation::Severity::Warning => ErrorSeverity::Warning,
            } as i32,
            path: v.path.clone(),
            value: v.value.clone().unwrap_or_default(),
            message: v.message.clone(),
            message_vi: v.message_vi.clone(),
        }
    }
}

impl ClinicalEvent {
    /// The event an ingest envelope carries; None when it carries none (an unknown kind).
    pub fn from_envelope(envelope: lienthong_proto::v1::EventEnvelope) -> Option<Self> {
        use lienthong_proto::v1::event_envelope::Event;
        Some(match envelope.event? {
            Event::Referral(e) => Self::Referral(e),
            Event::Appointment(e) => Self::Appointment(e),
            Event::LabResult(e) => Self::LabResult(e),
        })
    }

    /// The document kind.
    pub fn kind(&self) -> DocumentKind {
        match self {
            Self::Referral(_) => DocumentKind::Referral,
            Self::Appointment(_) => DocumentKind::Appointment,
            Self::LabResult(_) => DocumentKind::LabResult,
        }
    }

    /// The header, if set.
    pub fn header(&self) -> Option<&EventHeader> {
        match self {
            Self::Referral(e) => e.header.as_ref(),
            Self::Appointment(e) => e.header.as_ref(),
            Self::LabResult(e) => e.header.as_ref(),
        }
    }

    /// The header, created empty if absent.
    pub fn header_mut(&mut self) -> &mut EventHeader {
        match self {
            Self::Referral(e) => e.header.get_or_insert_with(Default::default),
            Self::Appointment(e) => e.header.get_or_insert_with(Default::default),
            Self::LabResult(e) => e.header.get_or_insert_with(Default::default),
        }
    }

    /// The patient of the document.
    pub fn patient(&self) -> Option<&Patient> {
        match self {
            Self::Referral(e) => e.slip.as_ref().and_then(|s| s.patient.as_ref()),
            Self::Appointment(e) => e.appointment.as_ref().and_then(|a| a.patient.as_ref()),
            Self::LabResult(e) => e.report.as_ref().and_then(|r| r.patient.as_ref()),
        }
    }

    /// Every violation of the document.
    pub fn validate(&self, ctx: &ValidationContext) -> Vec<Violation> {
        match self {
            Self::Referral(e) => validation::validate_referral(e, ctx),
            Self::Appointment(e) => validation::validate_appointment(e, ctx),
            Self::LabResult(e) => validation::validate_lab_result(e, ctx),
        }
    }

    /// Regions that must see the event.
    pub fn regions(&self) -> BTreeSet<ProvinceCode> {
        match self {
            Self::Referral(e) => routing::referral_regions(e),
            Self::Appointment(e) => routing::appointment_regions(e),
            Self::LabResult(e) => routing::lab_result_regions(e),
        }
    }

    /// SHA-256 of the document as its publisher sent it: what the gateway sets itself
    /// (recorded_at, the patient key) does not count, so every copy of one event version has
    /// the same digest and another content under the same version does not.
    // `&mut` rather than a clone: the gateway digests every event it accepts, and the fields
    // are put back as they were.
    pub fn content_digest(&mut self) -> [u8; 32] {
        use sha2::Digest as _;
        let h = self.header_mut();
        let kept = (
            h.recorded_at.take(),
            std::mem::take(&mut h.patient_key),
            std::mem::take(&mut h.patient_key_id),
        );
        let digest = sha2::Sha256::digest(self.encode_to_vec()).into();
        let h = self.header_mut();
        (h.recorded_at, h.patient_key, h.patient_key_id) = kept;
        digest
    }

    /// Protobuf encoding of the event message.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            Self::Referral(e) => e.encode_to_vec(),
            Self::Appointment(e) => e.encode_to_vec(),
            Self::LabResult(e) => e.encode_to_vec(),
        }
    }

    /// Decodes an event message of the given kind.
    pub fn decode(kind: DocumentKind, bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Ok(match kind {
            DocumentKind::Referral => Self::Referral(ReferralEvent::decode(bytes)?),
            DocumentKind::Appointment => Self::Appointment(AppointmentEvent::decode(bytes)?),
            DocumentKind::LabResult => Self::LabResult(LabResultEvent::decode(bytes)?),
        })
    }
}
