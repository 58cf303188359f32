//! The de-identified events of the analytics topics, as a sink reads them: recognised by their
//! registered message type, whatever topic they came from.

use lienthong_proto::v1 as pb;

/// One event of an analytics topic.
// One per message, moved on at once (as `Consumed` itself).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AnalyticsMessage {
    /// A de-identified referral slip.
    Referral(pb::AnalyticsReferralEvent),
    /// A de-identified follow-up appointment.
    Appointment(pb::AnalyticsAppointmentEvent),
    /// A de-identified lab report.
    LabResult(pb::AnalyticsLabResultEvent),
    /// A de-identified referral receipt.
    Receipt(pb::AnalyticsReferralReceiptEvent),
}

impl AnalyticsMessage {
    /// Full protobuf names of the analytics messages.
    pub const FULL_NAMES: [&'static str; 4] = [
        "lienthong.v1.AnalyticsReferralEvent",
        "lienthong.v1.AnalyticsAppointmentEvent",
        "lienthong.v1.AnalyticsLabResultEvent",
        "lienthong.v1.AnalyticsReferralReceiptEvent",
    ];

    /// Decodes `payload` as the analytics message `full_name`; None when that names no
    /// analytics message, Err when the bytes do not decode as it.
    pub fn decode(full_name: &str, payload: &[u8]) -> Option<Result<Self, prost::DecodeError>> {
        use prost::Message;
        Some(match full_name {
            "lienthong.v1.AnalyticsReferralEvent" => {
                pb::AnalyticsReferralEvent::decode(payload).map(Self::Referral)
            }
            "lienthong.v1.AnalyticsAppointmentEvent" => {
                pb::AnalyticsAppointmentEvent::decode(payload).map(Self::Appointment)
            }
            "lienthong.v1.AnalyticsLabResultEvent" => {
                pb::AnalyticsLabResultEvent::decode(payload).map(Self::LabResult)
            }
            "lienthong.v1.AnalyticsReferralReceiptEvent" => {
                pb::AnalyticsReferralReceiptEvent::decode(payload).map(Self::Receipt)
            }
            _ => return None,
        })
    }

    /// Its header, when it has one.
    pub fn header(&self) -> Option<&pb::AnalyticsHeader> {
        match self {
            Self::Referral(e) => e.header.as_ref(),
            Self::Appointment(e) => e.header.as_ref(),
            Self::LabResult(e) => e.header.as_ref(),
            Self::Receipt(e) => e.header.as_ref(),
        }
    }

    /// Its header, to change (tests of hostile values).
    pub fn header_mut(&mut self) -> &mut pb::AnalyticsHeader {
        match self {
            Self::Referral(e) => e.header.get_or_insert_default(),
            Self::Appointment(e) => e.header.get_or_insert_default(),
            Self::LabResult(e) => e.header.get_or_insert_default(),
            Self::Receipt(e) => e.header.get_or_insert_default(),
        }
    }

    /// Its protobuf bytes.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        use prost::Message;
        match self {
            Self::Referral(e) => e.encode_to_vec(),
            Self::Appointment(e) => e.encode_to_vec(),
            Self::LabResult(e) => e.encode_to_vec(),
            Self::Receipt(e) => e.encode_to_vec(),
        }
    }

    /// Its patient (receipts describe none).
    pub fn patient(&self) -> Option<&pb::AnalyticsPatient> {
        match self {
            Self::Referral(e) => e.patient.as_ref(),
            Self::Appointment(e) => e.patient.as_ref(),
            Self::LabResult(e) => e.patient.as_ref(),
            Self::Receipt(_) => None,
        }
    }

    /// Its kind as the warehouse names it: referral, appointment, lab-result, referral-receipt.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Referral(_) => "referral",
            Self::Appointment(_) => "appointment",
            Self::LabResult(_) => "lab-result",
            Self::Receipt(_) => "referral-receipt",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn each_analytics_message_is_recognised_by_its_name_and_nothing_else() {
        let referral = pb::AnalyticsReferralEvent {
            main_icd10: "J18".into(),
            ..Default::default()
        };
        let bytes = referral.encode_to_vec();
        assert_eq!(
            AnalyticsMessage::decode(AnalyticsMessage::FULL_NAMES[0], &bytes),
            Some(Ok(AnalyticsMessage::Referral(referral)))
        );
        assert!(AnalyticsMessage::decode("lienthong.v1.ReferralEvent", &bytes).is_none());
        assert!(matches!(
            AnalyticsMessage::decode(AnalyticsMessage::FULL_NAMES[2], b"\xff\xff"),
            Some(Err(_))
        ));
        for name in AnalyticsMessage::FULL_NAMES {
            assert!(AnalyticsMessage::decode(name, &[]).is_some_and(|m| m.is_ok()));
        }
    }
}
