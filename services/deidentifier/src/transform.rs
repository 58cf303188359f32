//! A document event made into its analytics event under the policy: every value that leaves
//! goes through one of the policy's actions for its field, so dropping a field in policy.toml
//! empties it here.

use lienthong_core::{
    ClinicalEvent, DocumentKind, FacilityCode, PatientKeyer, PersonId, Precision, ProvinceCode,
    XmlDateTime,
};
use lienthong_proto::v1 as pb;
use prost::Message;

use crate::policy::{FieldAction, Policy};

/// Which analytics topic an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnalyticsKind {
    /// De-identified referrals.
    Referral,
    /// De-identified appointments.
    Appointment,
    /// De-identified lab results.
    LabResult,
    /// De-identified receipts.
    Receipt,
}

impl AnalyticsKind {
    /// Every kind.
    pub const ALL: [Self; 4] = [
        Self::Referral,
        Self::Appointment,
        Self::LabResult,
        Self::Receipt,
    ];

    /// The protobuf message on its topic.
    pub fn message_name(self) -> &'static str {
        match self {
            Self::Referral => "lienthong.v1.AnalyticsReferralEvent",
            Self::Appointment => "lienthong.v1.AnalyticsAppointmentEvent",
            Self::LabResult => "lienthong.v1.AnalyticsLabResultEvent",
            Self::Receipt => "lienthong.v1.AnalyticsReferralReceiptEvent",
        }
    }

    /// Its standard topic.
    pub fn topic(self) -> &'static str {
        use lienthong_core::routing::*;
        match self {
            Self::Referral => ANALYTICS_REFERRAL_TOPIC,
            Self::Appointment => ANALYTICS_APPOINTMENT_TOPIC,
            Self::LabResult => ANALYTICS_LAB_RESULT_TOPIC,
            Self::Receipt => ANALYTICS_RECEIPT_TOPIC,
        }
    }

    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referral => "referral",
            Self::Appointment => "appointment",
            Self::LabResult => "lab-result",
            Self::Receipt => "referral-receipt",
        }
    }
}

/// The quasi-identifiers an analytics event keeps, with the patient they describe: what the
/// re-identification risk is measured on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuasiIdentifiers {
    /// Age band.
    pub age_band: String,
    /// Sex.
    pub sex: i32,
    /// Province of residence.
    pub residence: String,
    /// Facility of the event.
    pub facility: String,
    /// Day of the event.
    pub day: String,
}

/// One analytics event, encoded, ready to frame and produce.
#[derive(Debug, Clone)]
pub struct AnalyticsEvent {
    /// Its topic.
    pub kind: AnalyticsKind,
    /// Kafka key: the analytics patient key (receipts: the referral's document key).
    pub key: String,
    /// Protobuf bytes of the analytics message.
    pub payload: Vec<u8>,
    /// Quasi-identifiers and the patient (None for receipts, which describe no patient).
    pub quasi: Option<(QuasiIdentifiers, String)>,
    /// When the gateway accepted the source event (its Kafka timestamp, ms since the epoch):
    /// the analytics record carries it, so the warehouse measures freshness from acceptance.
    pub accepted_at_ms: Option<i64>,
    /// The `traceparent` its record carries on to the warehouse (the de-identification
    /// span's), when the source event was traced.
    pub trace: Option<String>,
}

/// Makes analytics events under one policy and one analytics key.
#[derive(Debug, Clone)]
pub struct Deidentifier {
    policy: Policy,
    key: PatientKeyer,
    age_band_width: u8,
}

/// Top coding: every age from here up is one band, as few people reach it.
const TOP_AGE: i32 = 90;

impl Deidentifier {
    /// A de-identifier at the policy's narrowest age band.
    pub fn new(policy: Policy, key: PatientKeyer) -> Self {
        let age_band_width = policy.risk().age_band_widths.first().copied().unwrap_or(5);
        Self {
            policy,
            key,
            age_band_width,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Current age band width in years.
    pub fn age_band_width(&self) -> u8 {
        self.age_band_width
    }

    /// Widens age bands (the risk monitor's answer to a small group).
    pub fn set_age_band_width(&mut self, width: u8) {
        self.age_band_width = width.max(1);
    }

    /// The analytics event of a validated document event.
    pub fn event(&self, event: &ClinicalEvent) -> AnalyticsEvent {
        let default_header = pb::EventHeader::default();
        let h = event.header().unwrap_or(&default_header);
        let header = self.header(h);
        let occurred_on = header.occurred_on.clone();
        match event {
            ClinicalEvent::Referral(e) => {
                let slip = self.part("ReferralEvent.slip", e.slip.as_ref());
                let patient = self.patient(
                    slip.and_then(|s| self.part("ReferralSlip.patient", s.patient.as_ref())),
                    &occurred_on,
                );
                let diagnosis =
                    slip.and_then(|s| self.part("ReferralSlip.diagnosis", s.diagnosis.as_ref()));
                let episode =
                    slip.and_then(|s| self.part("ReferralSlip.episode", s.episode.as_ref()));
                let receiving = slip
                    .and_then(|s| self.facility("ReferralSlip.receiving", s.receiving.as_ref()));
                let body = pb::AnalyticsReferralEvent {
                    issuer_facility_code: slip
                        .and_then(|s| self.facility("ReferralSlip.issuer", s.issuer.as_ref()))
                        .unwrap_or_default(),
                    receiving_province_code: receiving
                        .as_deref()
                        .map(province_of_facility)
                        .unwrap_or_default(),
                    receiving_facility_code: receiving.unwrap_or_default(),
                    reason: slip.map_or(0, |s| self.keep("ReferralSlip.reason", s.reason)),
                    discharge_type: slip.map_or(0, |s| {
                        self.keep("ReferralSlip.discharge_type", s.discharge_type)
                    }),
                    main_icd10: self.main_icd10(diagnosis),
                    secondary_icd10: self.secondary_icd10(diagnosis),
                    issued_on: slip
                        .map(|s| self.day("ReferralSlip.issued_at", s.issued_at.as_ref()))
                        .unwrap_or_default(),
                    valid_until: slip
                        .map(|s| self.day("ReferralSlip.valid_until", s.valid_until.as_ref()))
                        .unwrap_or_default(),
                    chronic_validity: slip.is_some_and(|s| {
                        self.keep("ReferralSlip.chronic_validity", s.chronic_validity)
                    }),
                    admitted_on: self.admitted_on(episode),
                    discharged_on: self.discharged_on(episode),
                    header: Some(header),
                    patient: Some(patient.clone()),
                };
                self.finish(
                    AnalyticsKind::Referral,
                    patient,
                    &body.issuer_facility_code,
                    occurred_on,
                    body.encode_to_vec(),
                )
            }
            ClinicalEvent::Appointment(e) => {
                let a = self.part("AppointmentEvent.appointment", e.appointment.as_ref());
                let patient = self.patient(
                    a.and_then(|a| self.part("FollowUpAppointment.patient", a.patient.as_ref())),
                    &occurred_on,
                );
                let diagnosis = a
                    .and_then(|a| self.part("FollowUpAppointment.diagnosis", a.diagnosis.as_ref()));
                let episode =
                    a.and_then(|a| self.part("FollowUpAppointment.episode", a.episode.as_ref()));
                let body = pb::AnalyticsAppointmentEvent {
                    facility_code: a
                        .and_then(|a| {
                            self.facility("FollowUpAppointment.facility", a.facility.as_ref())
                        })
                        .unwrap_or_default(),
                    appointment_on: a
                        .map(|a| {
                            self.day(
                                "FollowUpAppointment.appointment_at",
                                a.appointment_at.as_ref(),
                            )
                        })
                        .unwrap_or_default(),
                    issued_on: a
                        .map(|a| self.day("FollowUpAppointment.issued_at", a.issued_at.as_ref()))
                        .unwrap_or_default(),
                    main_icd10: self.main_icd10(diagnosis),
                    secondary_icd10: self.secondary_icd10(diagnosis),
                    beneficiary_category: a
                        .map(|a| {
                            self.keep(
                                "FollowUpAppointment.beneficiary_category",
                                a.beneficiary_category.clone(),
                            )
                        })
                        .unwrap_or_default(),
                    admitted_on: self.admitted_on(episode),
                    discharged_on: self.discharged_on(episode),
                    header: Some(header),
                    patient: Some(patient.clone()),
                };
                self.finish(
                    AnalyticsKind::Appointment,
                    patient,
                    &body.facility_code,
                    occurred_on,
                    body.encode_to_vec(),
                )
            }
            ClinicalEvent::LabResult(e) => {
                let r = self.part("LabResultEvent.report", e.report.as_ref());
                let patient = self.patient(
                    r.and_then(|r| self.part("LabReport.patient", r.patient.as_ref())),
                    &occurred_on,
                );
                let episode = r.and_then(|r| self.part("LabReport.episode", r.episode.as_ref()));
                let lines = r
                    .filter(|_| self.policy.passes("LabReport.lines"))
                    .map(|r| r.lines.iter().map(|l| self.lab_line(l)).collect())
                    .unwrap_or_default();
                let body = pb::AnalyticsLabResultEvent {
                    facility_code: r
                        .and_then(|r| self.facility("LabReport.facility", r.facility.as_ref()))
                        .unwrap_or_default(),
                    service_code: r
                        .map(|r| self.keep("LabReport.service_code", r.service_code.clone()))
                        .unwrap_or_default(),
                    lines,
                    admitted_on: self.admitted_on(episode),
                    header: Some(header),
                    patient: Some(patient.clone()),
                };
                self.finish(
                    AnalyticsKind::LabResult,
                    patient,
                    &body.facility_code,
                    occurred_on,
                    body.encode_to_vec(),
                )
            }
        }
    }

    /// The analytics event of a referral receipt.
    pub fn receipt(&self, receipt: &pb::ReferralReceiptEvent) -> AnalyticsEvent {
        let default_header = pb::EventHeader::default();
        let h = self
            .part("ReferralReceiptEvent.header", receipt.header.as_ref())
            .unwrap_or(&default_header);
        let header = self.header(h);
        // The receipt completes the referral: analysts join them on the referral's key.
        let referral_document_key = self.hash(
            "ReferralReceiptEvent.referral_document_id",
            "document",
            &receipt.referral_document_id,
        );
        let facility = self
            .facility(
                "ReferralReceiptEvent.received_by",
                receipt.received_by.as_ref(),
            )
            .unwrap_or_default();
        let body = pb::AnalyticsReferralReceiptEvent {
            received_by_province_code: province_of_facility(&facility),
            received_by_facility_code: facility,
            received_on: self.instant_day(
                "ReferralReceiptEvent.received_at",
                receipt.received_at.as_ref(),
            ),
            referral_document_key: referral_document_key.clone(),
            header: Some(header),
        };
        AnalyticsEvent {
            kind: AnalyticsKind::Receipt,
            key: referral_document_key,
            payload: body.encode_to_vec(),
            quasi: None,
            accepted_at_ms: None,
            trace: None,
        }
    }

    fn finish(
        &self,
        kind: AnalyticsKind,
        patient: pb::AnalyticsPatient,
        facility: &str,
        day: String,
        payload: Vec<u8>,
    ) -> AnalyticsEvent {
        let quasi = QuasiIdentifiers {
            age_band: patient.age_band,
            sex: patient.sex,
            residence: patient.residence_province_code,
            facility: facility.to_owned(),
            day,
        };
        AnalyticsEvent {
            kind,
            key: patient.patient_key.clone(),
            payload,
            quasi: Some((quasi, patient.patient_key)),
            accepted_at_ms: None,
            trace: None,
        }
    }

    fn header(&self, h: &pb::EventHeader) -> pb::AnalyticsHeader {
        let source_facility_code = self.keep(
            "EventHeader.source_facility_code",
            h.source_facility_code.clone(),
        );
        pb::AnalyticsHeader {
            event_key: self.hash("EventHeader.event_id", "event", &h.event_id),
            document_key: self.hash("EventHeader.document_id", "document", &h.document_id),
            document_version: self.keep("EventHeader.document_version", h.document_version),
            action: self.keep("EventHeader.action", h.action),
            occurred_on: self.instant_day("EventHeader.occurred_at", h.occurred_at.as_ref()),
            recorded_on: self.instant_day("EventHeader.recorded_at", h.recorded_at.as_ref()),
            source_province_code: province_of_facility(&source_facility_code),
            source_facility_code,
            policy_version: self.policy.version().to_owned(),
            analytics_key_id: self.key.key_id().to_owned(),
        }
    }

    fn patient(&self, p: Option<&pb::Patient>, occurred_on: &str) -> pb::AnalyticsPatient {
        let Some(p) = p else {
            return pb::AnalyticsPatient::default();
        };
        let patient_key = if self.policy.action("Patient.citizen_id") == FieldAction::KeyedHash {
            match PersonId::parse(&p.citizen_id) {
                Ok(person) => self.key.key_for(&person).value,
                Err(_) => self.key.keyed_hash("person", p.citizen_id.trim()),
            }
        } else {
            String::new()
        };
        let age_band = if self.policy.action("Patient.birth_date") == FieldAction::AgeBand {
            age_band(p.birth_date.as_ref(), occurred_on, self.age_band_width)
        } else {
            String::new()
        };
        let residence_province_code =
            if self.policy.action("Patient.residence_province_code") == FieldAction::Province {
                ProvinceCode::region_of(&p.residence_province_code)
                    .map(|c| c.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            };
        pb::AnalyticsPatient {
            patient_key,
            age_band,
            sex: self.keep("Patient.sex", p.sex),
            residence_province_code,
        }
    }

    fn lab_line(&self, l: &pb::LabResultLine) -> pb::AnalyticsLabLine {
        let range = self.part("LabResultLine.reference_range", l.reference_range.as_ref());
        pb::AnalyticsLabLine {
            line_number: self.keep("LabResultLine.line_number", l.line_number),
            indicator_code: self.keep("LabResultLine.indicator_code", l.indicator_code.clone()),
            loinc_code: self.keep("LabResultLine.loinc_code", l.loinc_code.clone()),
            value_numeric: self
                .part("LabResultLine.value_numeric", l.value_numeric.as_ref())
                .filter(|_| self.policy.passes("NumericValue.value"))
                .map(|v| v.value)
                .filter(|v| v.is_finite()),
            unit: self.keep("LabResultLine.unit", l.unit.clone()),
            reference_low: range.and_then(|r| self.keep("ReferenceRange.low", r.low)),
            reference_high: range.and_then(|r| self.keep("ReferenceRange.high", r.high)),
            result_on: self.day("LabResultLine.result_at", l.result_at.as_ref()),
        }
    }

    fn main_icd10(&self, d: Option<&pb::Diagnosis>) -> String {
        d.map(|d| self.keep("Diagnosis.main_icd10", d.main_icd10.clone()))
            .unwrap_or_default()
    }

    fn secondary_icd10(&self, d: Option<&pb::Diagnosis>) -> Vec<String> {
        d.map(|d| self.keep("Diagnosis.secondary_icd10", d.secondary_icd10.clone()))
            .unwrap_or_default()
    }

    fn admitted_on(&self, episode: Option<&pb::EpisodeDates>) -> String {
        self.day(
            "EpisodeDates.admitted_at",
            episode.and_then(|e| e.admitted_at.as_ref()),
        )
    }

    fn discharged_on(&self, episode: Option<&pb::EpisodeDates>) -> String {
        self.day(
            "EpisodeDates.discharged_at",
            episode.and_then(|e| e.discharged_at.as_ref()),
        )
    }

    /// A container field: Some when the policy keeps it.
    fn part<'a, T>(&self, field: &str, value: Option<&'a T>) -> Option<&'a T> {
        value.filter(|_| self.policy.passes(field))
    }

    /// A kept value, or its default (empty, zero, unspecified) when the policy drops it.
    fn keep<T: Default>(&self, field: &str, value: T) -> T {
        if self.policy.action(field) == FieldAction::Keep {
            value
        } else {
            T::default()
        }
    }

    fn facility(&self, field: &str, f: Option<&pb::FacilityRef>) -> Option<String> {
        self.part(field, f)
            .map(|f| self.keep("FacilityRef.code", f.code.trim().to_owned()))
    }

    fn hash(&self, field: &str, purpose: &str, value: &str) -> String {
        if self.policy.action(field) == FieldAction::KeyedHash {
            self.key.keyed_hash(purpose, value)
        } else {
            String::new()
        }
    }

    fn day(&self, field: &str, d: Option<&pb::PartialDateTime>) -> String {
        if self.policy.action(field) == FieldAction::Day {
            d.map(partial_day).unwrap_or_default()
        } else {
            String::new()
        }
    }

    fn instant_day(&self, field: &str, t: Option<&prost_types::Timestamp>) -> String {
        if self.policy.action(field) == FieldAction::Day {
            t.and_then(vietnam_day).unwrap_or_default()
        } else {
            String::new()
        }
    }
}

/// The day in Vietnam (UTC+7) of an instant, `yyyy-mm-dd`; None for an instant no calendar
/// here can name (the gateway accepts any valid protobuf timestamp).
pub fn vietnam_day(t: &prost_types::Timestamp) -> Option<String> {
    let local = t.seconds.checked_add(7 * 3600)?;
    let date = time::OffsetDateTime::from_unix_timestamp(local)
        .ok()?
        .date();
    Some(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

/// An XML date or date-time cut to at most its day, with dashes: `yyyy-mm-dd`, `yyyy-mm` or
/// `yyyy` as much as it knows; empty when it is no date. The MoH tables write an unknown day or
/// month as `00` (`20261200`), which validation accepts: it becomes `2026-12`, never a day 00.
pub fn partial_day(date: &pb::PartialDateTime) -> String {
    let Ok(date) = XmlDateTime::from_proto(date) else {
        return String::new();
    };
    let d = date.digits();
    match date.precision() {
        Precision::Year => d,
        Precision::Month => format!("{}-{}", &d[..4], &d[4..6]),
        Precision::Day | Precision::Minute => format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..8]),
    }
}

/// The age band (`30-34`, `90+`) at `on` (`yyyy-mm-dd`) of a birth date; empty when unknown.
pub fn age_band(birth: Option<&pb::PartialDateTime>, on: &str, width: u8) -> String {
    let birth = birth.map(partial_day).unwrap_or_default();
    let number =
        |s: &str, range: std::ops::Range<usize>| s.get(range).and_then(|x| x.parse::<i32>().ok());
    let (Some(by), Some(oy)) = (number(&birth, 0..4), number(on, 0..4)) else {
        return String::new();
    };
    let mut age = oy - by;
    // Birthday not reached yet this year: before the birth day, or before the birth month when
    // only the month is known.
    if let (Some(bm), Some(om), Some(od)) =
        (number(&birth, 5..7), number(on, 5..7), number(on, 8..10))
        && (om, od) < (bm, number(&birth, 8..10).unwrap_or(0))
    {
        age -= 1;
    }
    if !(0..=150).contains(&age) {
        return String::new();
    }
    if age >= TOP_AGE {
        return format!("{TOP_AGE}+");
    }
    let w = i32::from(width.max(1));
    let low = age / w * w;
    format!("{low}-{}", (low + w - 1).min(TOP_AGE - 1))
}

fn province_of_facility(code: &str) -> String {
    FacilityCode::parse(code)
        .map(|f| f.region().to_string())
        .unwrap_or_default()
}

/// The kind of a consumed document topic's events, for the analytics topic they go to.
pub fn analytics_kind(kind: DocumentKind) -> AnalyticsKind {
    match kind {
        DocumentKind::Referral => AnalyticsKind::Referral,
        DocumentKind::Appointment => AnalyticsKind::Appointment,
        DocumentKind::LabResult => AnalyticsKind::LabResult,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lienthong_core::fixtures::Generator;

    fn deidentifier(policy: Policy) -> Deidentifier {
        Deidentifier::new(
            policy,
            PatientKeyer::new("analytics-test", &[7; 32]).expect("key"),
        )
    }

    fn now() -> time::OffsetDateTime {
        time::macros::datetime!(2026-12-01 10:00 UTC)
    }

    /// Every identifying string a document event holds.
    fn identifiers(event: &ClinicalEvent) -> Vec<String> {
        let mut out = Vec::new();
        let h = event.header().expect("header");
        out.extend([
            h.document_id.clone(),
            h.event_id.clone(),
            h.patient_key.clone(),
        ]);
        if let Some(p) = event.patient() {
            out.extend([p.citizen_id.clone(), p.full_name.clone(), p.address.clone()]);
            out.extend(p.insurance_cards.iter().map(|c| c.number.clone()));
        }
        match event {
            ClinicalEvent::Referral(e) => {
                let s = e.slip.as_ref().expect("slip");
                out.extend([
                    s.slip_number.clone(),
                    s.episode_id.clone(),
                    s.clinical_signs.clone(),
                ]);
                out.extend(s.physician.iter().map(|p| p.licence_number.clone()));
            }
            ClinicalEvent::Appointment(e) => {
                let a = e.appointment.as_ref().expect("appointment");
                out.extend([a.slip_number.clone(), a.episode_id.clone()]);
            }
            ClinicalEvent::LabResult(e) => {
                let r = e.report.as_ref().expect("report");
                out.push(r.episode_id.clone());
            }
        }
        out.retain(|s| s.len() >= 6);
        out
    }

    #[test]
    fn no_identifier_of_the_document_reaches_the_analytics_event() {
        let d = deidentifier(Policy::shipped().expect("policy"));
        let mut g = Generator::new(11, now());
        for i in 0..300 {
            let event = g.any(i);
            let out = d.event(&event);
            let bytes = String::from_utf8_lossy(&out.payload).into_owned();
            for id in identifiers(&event) {
                assert!(!bytes.contains(&id), "{id:?} leaked into {:?}", out.kind);
                assert!(!out.key.contains(&id));
            }
            assert_eq!(out.key.len(), 64, "the key is the analytics patient key");
        }
    }

    #[test]
    fn identities_are_keyed_hashes_stable_per_key_and_unlike_the_operational_ones() {
        let d = deidentifier(Policy::shipped().expect("policy"));
        let other = Deidentifier::new(
            Policy::shipped().expect("policy"),
            PatientKeyer::new("analytics-other", &[8; 32]).expect("key"),
        );
        let event = ClinicalEvent::Referral(Generator::new(3, now()).referral());
        let a = pb::AnalyticsReferralEvent::decode(d.event(&event).payload.as_slice())
            .expect("decodes");
        let again = pb::AnalyticsReferralEvent::decode(d.event(&event).payload.as_slice())
            .expect("decodes");
        let b = pb::AnalyticsReferralEvent::decode(other.event(&event).payload.as_slice())
            .expect("decodes");
        assert_eq!(
            a, again,
            "the same event always gives the same analytics event"
        );
        let (ha, hb) = (a.header.expect("header"), b.header.expect("header"));
        assert_ne!(ha.event_key, hb.event_key, "another key, other hashes");
        assert_ne!(ha.document_key, ha.event_key);
        let pa = a.patient.expect("patient");
        assert_ne!(pa.patient_key, event.header().expect("header").patient_key);
        assert_eq!(ha.policy_version, "2026.12-1");
        assert_eq!(ha.analytics_key_id, "analytics-test");
        assert_eq!(ha.occurred_on.len(), 10, "a day: {}", ha.occurred_on);
        assert!(
            pa.age_band.contains('-') || pa.age_band == "90+",
            "{}",
            pa.age_band
        );
    }

    #[test]
    fn a_receipt_names_its_referral_by_the_referrals_document_key() {
        let d = deidentifier(Policy::shipped().expect("policy"));
        let referral = Generator::new(5, now()).referral();
        let document_id = referral
            .header
            .as_ref()
            .expect("header")
            .document_id
            .clone();
        let receipt = pb::ReferralReceiptEvent {
            header: Some(pb::EventHeader {
                event_id: "r-1".into(),
                document_id: format!("receipt/01001/{document_id}"),
                ..Default::default()
            }),
            referral_document_id: document_id.clone(),
            received_by: Some(pb::FacilityRef {
                code: "01001".into(),
                name: "Bạch Mai".into(),
            }),
            received_at: Some(prost_types::Timestamp {
                seconds: 1_790_000_000,
                nanos: 0,
            }),
        };
        let r = d.receipt(&receipt);
        let a = pb::AnalyticsReferralReceiptEvent::decode(r.payload.as_slice()).expect("decodes");
        let referral_out = pb::AnalyticsReferralEvent::decode(
            d.event(&ClinicalEvent::Referral(referral))
                .payload
                .as_slice(),
        )
        .expect("decodes");
        let referral_key = referral_out.header.expect("header").document_key;
        assert_eq!(a.referral_document_key, referral_key);
        assert_ne!(a.header.expect("header").document_key, referral_key);
        assert_eq!(a.received_by_facility_code, "01001");
        assert_eq!(a.received_by_province_code, "01");
        assert!(!String::from_utf8_lossy(&r.payload).contains("Bạch Mai"));
        assert!(r.quasi.is_none());
    }

    #[test]
    fn a_field_the_policy_drops_is_empty() {
        let text = crate::policy::SHIPPED
            .replace(
                "\"Diagnosis.main_icd10\" = \"keep\"",
                "\"Diagnosis.main_icd10\" = \"drop\"",
            )
            .replace(
                "\"Patient.birth_date\" = \"age-band\"",
                "\"Patient.birth_date\" = \"drop\"",
            )
            .replace(
                "\"LabReport.lines\" = \"keep\"",
                "\"LabReport.lines\" = \"drop\"",
            );
        let d = deidentifier(Policy::parse(&text, "t").expect("valid"));
        let mut g = Generator::new(9, now());
        let referral = d.event(&ClinicalEvent::Referral(g.referral()));
        let r = pb::AnalyticsReferralEvent::decode(referral.payload.as_slice()).expect("decodes");
        assert_eq!(r.main_icd10, "");
        assert_eq!(r.patient.expect("patient").age_band, "");
        let lab = d.event(&ClinicalEvent::LabResult(g.lab_result()));
        let l = pb::AnalyticsLabResultEvent::decode(lab.payload.as_slice()).expect("decodes");
        assert!(l.lines.is_empty());
        assert!(!l.service_code.is_empty(), "what the policy keeps stays");
    }

    #[test]
    fn dates_are_cut_to_the_day_in_vietnam_and_extreme_instants_do_not_panic() {
        let day = |value: &str| {
            partial_day(&pb::PartialDateTime {
                value: value.into(),
                ..Default::default()
            })
        };
        assert_eq!(day("202612011530"), "2026-12-01");
        assert_eq!(day("20261201"), "2026-12-01");
        assert_eq!(day("202612"), "2026-12");
        assert_eq!(day("2026"), "2026");
        // Unknown parts written as 00, as the MoH tables do: no day 00 or month 00.
        assert_eq!(day("20261200"), "2026-12");
        assert_eq!(day("202612000000"), "2026-12");
        assert_eq!(day("20260000"), "2026");
        assert_eq!(day("20x6"), "");
        assert_eq!(day("20261232"), "", "no such day");
        // 2026-11-30 20:00 UTC is 2026-12-01 03:00 in Vietnam.
        let t = prost_types::Timestamp {
            seconds: 1_796_068_800,
            nanos: 0,
        };
        assert_eq!(vietnam_day(&t).as_deref(), Some("2026-12-01"));
        let end = prost_types::Timestamp {
            seconds: 253_402_300_799,
            nanos: 0,
        };
        assert_eq!(
            vietnam_day(&end),
            None,
            "past year 9999 in Vietnam: no day, no panic"
        );
        assert_eq!(
            vietnam_day(&prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0
            }),
            None
        );
    }

    #[test]
    fn age_bands_follow_the_birthday_the_width_and_top_coding() {
        let birth = |v: &str| pb::PartialDateTime {
            value: v.into(),
            precision: 3,
        };
        assert_eq!(age_band(Some(&birth("19900615")), "2026-06-14", 5), "35-39");
        assert_eq!(age_band(Some(&birth("19900615")), "2026-06-15", 5), "35-39");
        assert_eq!(age_band(Some(&birth("19910615")), "2026-06-15", 5), "35-39");
        assert_eq!(age_band(Some(&birth("19910616")), "2026-06-15", 5), "30-34");
        assert_eq!(
            age_band(Some(&birth("19900615")), "2026-06-15", 10),
            "30-39"
        );
        assert_eq!(age_band(Some(&birth("1930")), "2026-06-15", 5), "90+");
        // Only the month known: the birthday counts as reached from the first of that month.
        assert_eq!(age_band(Some(&birth("19910700")), "2026-06-15", 5), "30-34");
        assert_eq!(age_band(Some(&birth("199107")), "2026-06-30", 5), "30-34");
        assert_eq!(age_band(Some(&birth("19910600")), "2026-06-01", 5), "35-39");
        assert_eq!(
            age_band(Some(&birth("20300101")), "2026-06-15", 5),
            "",
            "born after the event"
        );
        assert_eq!(age_band(None, "2026-06-15", 5), "");
    }
}
