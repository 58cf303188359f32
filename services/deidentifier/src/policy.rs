//! The de-identification policy (policy.toml): per field of the contract, keep, drop,
//! generalise or keyed hash. Loading it checks it against the compiled contract, so a field
//! nobody decided about, or an action this service cannot apply, stops the service at start.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use serde::Deserialize;

/// The policy shipped with this build (services/deidentifier/policy.toml).
pub const SHIPPED: &str = include_str!("../policy.toml");

/// The document messages whose fields the policy decides, one per consumed topic.
const ROOTS: &[&str] = &[
    "lienthong.v1.ReferralEvent",
    "lienthong.v1.AppointmentEvent",
    "lienthong.v1.LabResultEvent",
    "lienthong.v1.ReferralReceiptEvent",
];

/// Message types decided as one value (a date, an instant), not field by field.
const VALUES: &[&str] = &["lienthong.v1.PartialDateTime", "google.protobuf.Timestamp"];

/// What happens to one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldAction {
    /// Copied (a container: its fields are decided one by one).
    Keep,
    /// Never leaves the document topics.
    Drop,
    /// HMAC-SHA256 under the analytics key.
    KeyedHash,
    /// Cut to its day (Vietnam time).
    Day,
    /// A birth date becomes the age band at the event.
    AgeBand,
    /// A province code becomes the current province.
    Province,
}

/// Every action other than drop that this service applies, by field: what the analytics
/// events have a place for. A policy may drop any field, and may ask for nothing else.
pub const SLOTS: &[(&str, FieldAction)] = {
    use FieldAction::*;
    &[
        ("EventHeader.event_id", KeyedHash),
        ("EventHeader.document_id", KeyedHash),
        ("EventHeader.document_version", Keep),
        ("EventHeader.action", Keep),
        ("EventHeader.occurred_at", Day),
        ("EventHeader.recorded_at", Day),
        ("EventHeader.source_facility_code", Keep),
        ("Patient.citizen_id", KeyedHash),
        ("Patient.birth_date", AgeBand),
        ("Patient.sex", Keep),
        ("Patient.residence_province_code", Province),
        ("FacilityRef.code", Keep),
        ("Diagnosis.main_icd10", Keep),
        ("Diagnosis.secondary_icd10", Keep),
        ("EpisodeDates.admitted_at", Day),
        ("EpisodeDates.discharged_at", Day),
        ("ReferralEvent.header", Keep),
        ("ReferralEvent.slip", Keep),
        ("ReferralSlip.issuer", Keep),
        ("ReferralSlip.receiving", Keep),
        ("ReferralSlip.patient", Keep),
        ("ReferralSlip.episode", Keep),
        ("ReferralSlip.diagnosis", Keep),
        ("ReferralSlip.discharge_type", Keep),
        ("ReferralSlip.reason", Keep),
        ("ReferralSlip.valid_until", Day),
        ("ReferralSlip.chronic_validity", Keep),
        ("ReferralSlip.issued_at", Day),
        ("AppointmentEvent.header", Keep),
        ("AppointmentEvent.appointment", Keep),
        ("FollowUpAppointment.facility", Keep),
        ("FollowUpAppointment.patient", Keep),
        ("FollowUpAppointment.episode", Keep),
        ("FollowUpAppointment.appointment_at", Day),
        ("FollowUpAppointment.diagnosis", Keep),
        ("FollowUpAppointment.beneficiary_category", Keep),
        ("FollowUpAppointment.issued_at", Day),
        ("LabResultEvent.header", Keep),
        ("LabResultEvent.report", Keep),
        ("LabReport.facility", Keep),
        ("LabReport.patient", Keep),
        ("LabReport.service_code", Keep),
        ("LabReport.episode", Keep),
        ("LabReport.lines", Keep),
        ("LabResultLine.line_number", Keep),
        ("LabResultLine.indicator_code", Keep),
        ("LabResultLine.value_numeric", Keep),
        ("LabResultLine.unit", Keep),
        ("LabResultLine.reference_range", Keep),
        ("LabResultLine.result_at", Day),
        ("LabResultLine.loinc_code", Keep),
        ("NumericValue.value", Keep),
        ("ReferenceRange.low", Keep),
        ("ReferenceRange.high", Keep),
        ("ReferralReceiptEvent.header", Keep),
        ("ReferralReceiptEvent.referral_document_id", KeyedHash),
        ("ReferralReceiptEvent.received_by", Keep),
        ("ReferralReceiptEvent.received_at", Day),
    ]
};

/// How re-identification risk is measured and answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskPolicy {
    /// Smallest acceptable group of distinct patients sharing the kept quasi-identifiers.
    pub k_floor: usize,
    /// Events in the sliding window.
    pub window_events: usize,
    /// Age band widths in years, narrowest first; the next is used while k is below the floor.
    pub age_band_widths: Vec<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: String,
    risk: RiskPolicy,
    fields: BTreeMap<String, FieldAction>,
}

/// Why a policy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read the de-identification policy {path}: {cause}")]
    Read {
        /// File.
        path: String,
        /// I/O error.
        cause: std::io::Error,
    },
    /// Not valid TOML of the policy's shape.
    #[error("de-identification policy {origin}: {message}")]
    Syntax {
        /// File.
        origin: String,
        /// Parser message.
        message: String,
    },
    /// Valid TOML that does not fit the contract.
    #[error(
        "de-identification policy {origin} (version {version}): {problems}; every field of the contract needs exactly one decision this service can apply"
    )]
    Unfit {
        /// File.
        origin: String,
        /// Its version.
        version: String,
        /// What is wrong, `; `-separated.
        problems: String,
    },
}

/// A checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    version: String,
    risk: RiskPolicy,
    fields: BTreeMap<String, FieldAction>,
}

impl Policy {
    /// The policy compiled into this build.
    pub fn shipped() -> Result<Self, PolicyError> {
        Self::parse(SHIPPED, "policy.toml (shipped)")
    }

    /// The policy in `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            cause: source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a policy against the compiled contract.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            origin: origin.to_owned(),
            message: e.message().to_owned(),
        })?;
        let mut problems = Vec::new();
        if file.version.trim().is_empty() {
            problems.push("`version` is empty".to_owned());
        }
        let risk = &file.risk;
        if risk.k_floor < 2 {
            problems.push(format!("[risk] k_floor {} is below 2", risk.k_floor));
        }
        if risk.window_events < risk.k_floor || risk.window_events > 10_000_000 {
            problems.push(format!(
                "[risk] window_events {} must be between k_floor and 10000000",
                risk.window_events
            ));
        }
        let widths = &risk.age_band_widths;
        if widths.is_empty() || widths.contains(&0) || !widths.is_sorted() {
            problems.push(format!(
                "[risk] age_band_widths {widths:?} must be non-zero years, narrowest first"
            ));
        }
        let contract = contract_fields();
        for missing in contract.difference(&file.fields.keys().cloned().collect()) {
            problems.push(format!("{missing} has no decision"));
        }
        for (field, action) in &file.fields {
            if !contract.contains(field) {
                problems.push(format!("{field} names no field of the contract"));
            } else if *action != FieldAction::Drop && !SLOTS.contains(&(field.as_str(), *action)) {
                problems.push(format!(
                    "{field} cannot be `{}` (this service can only {})",
                    action.as_str(),
                    applicable(field).join(" or ")
                ));
            }
        }
        if !problems.is_empty() {
            return Err(PolicyError::Unfit {
                origin: origin.to_owned(),
                version: file.version,
                problems: problems.join("; "),
            });
        }
        Ok(Self {
            version: file.version,
            risk: file.risk,
            fields: file.fields,
        })
    }

    /// The version every analytics event carries.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The risk settings.
    pub fn risk(&self) -> &RiskPolicy {
        &self.risk
    }

    /// The action for a field (`Message.field`); drop for anything the policy does not name.
    pub fn action(&self, field: &str) -> FieldAction {
        self.fields.get(field).copied().unwrap_or(FieldAction::Drop)
    }

    /// True when the field leaves the document topics in some form.
    pub fn passes(&self, field: &str) -> bool {
        self.action(field) != FieldAction::Drop
    }
}

impl FieldAction {
    /// The name used in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Drop => "drop",
            Self::KeyedHash => "keyed-hash",
            Self::Day => "day",
            Self::AgeBand => "age-band",
            Self::Province => "province",
        }
    }
}

fn applicable(field: &str) -> Vec<&'static str> {
    SLOTS
        .iter()
        .filter(|(f, _)| *f == field)
        .map(|(_, a)| a.as_str())
        .chain(["drop"])
        .collect()
}

/// Every `Message.field` of the messages reachable from the consumed document messages.
pub fn contract_fields() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // The descriptor set is compiled into this build by the same build that made the types;
    // it failing to decode is a build defect, and then nothing is let through.
    let Ok(pool) = DescriptorPool::decode(lienthong_proto::FILE_DESCRIPTOR_SET) else {
        return out;
    };
    let mut seen = BTreeSet::new();
    let mut todo: Vec<MessageDescriptor> = ROOTS
        .iter()
        .filter_map(|n| pool.get_message_by_name(n))
        .collect();
    while let Some(message) = todo.pop() {
        if !seen.insert(message.full_name().to_owned()) {
            continue;
        }
        for field in message.fields() {
            out.insert(format!("{}.{}", message.name(), field.name()));
            if let Kind::Message(inner) = field.kind()
                && !VALUES.contains(&inner.full_name())
            {
                todo.push(inner);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_decides_every_field_of_the_contract() {
        let policy = Policy::shipped().expect("the shipped policy fits the contract");
        assert!(
            contract_fields().len() > 100,
            "{:?}",
            contract_fields().len()
        );
        assert_eq!(policy.action("Patient.full_name"), FieldAction::Drop);
        assert_eq!(policy.action("Patient.citizen_id"), FieldAction::KeyedHash);
    }

    #[test]
    fn the_shipped_policy_drops_every_direct_identifier_and_free_text() {
        let policy = Policy::shipped().expect("valid");
        for field in [
            "Patient.full_name",
            "Patient.address",
            "Patient.insurance_cards",
            "InsuranceCard.number",
            "Patient.facility_patient_number",
            "ReferralSlip.slip_number",
            "ReferralSlip.episode_id",
            "ReferralSlip.clinical_signs",
            "ReferralSlip.course_of_illness",
            "FollowUpAppointment.slip_number",
            "LabReport.episode_id",
            "LabResultLine.value_text",
            "LabResultLine.conclusion",
            "Practitioner.licence_number",
            "Diagnosis.text",
            "EventHeader.patient_key",
        ] {
            assert_eq!(policy.action(field), FieldAction::Drop, "{field}");
        }
        for field in ["EventHeader.document_id", "EventHeader.event_id"] {
            assert_eq!(policy.action(field), FieldAction::KeyedHash, "{field}");
        }
    }

    fn without(line_prefix: &str) -> String {
        SHIPPED
            .lines()
            .filter(|l| !l.starts_with(line_prefix))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_field_without_a_decision_stops_the_service() {
        let err = Policy::parse(&without("\"Patient.address\""), "t").expect_err("refused");
        assert!(
            err.to_string().contains("Patient.address has no decision"),
            "{err}"
        );
    }

    #[test]
    fn keeping_a_direct_identifier_is_refused_with_what_is_possible() {
        let text = SHIPPED.replace(
            "\"Patient.full_name\" = \"drop\"",
            "\"Patient.full_name\" = \"keep\"",
        );
        let err = Policy::parse(&text, "t").expect_err("refused");
        assert!(
            err.to_string()
                .contains("Patient.full_name cannot be `keep` (this service can only drop)"),
            "{err}"
        );
        let text = SHIPPED.replace(
            "\"Patient.citizen_id\" = \"keyed-hash\"",
            "\"Patient.citizen_id\" = \"keep\"",
        );
        let err = Policy::parse(&text, "t").expect_err("refused");
        assert!(err.to_string().contains("keyed-hash or drop"), "{err}");
    }

    #[test]
    fn unknown_fields_actions_and_bad_risk_settings_are_refused() {
        let text = format!("{SHIPPED}\n\"Patient.shoe_size\" = \"drop\"\n");
        let err = Policy::parse(&text, "t").expect_err("refused");
        assert!(err.to_string().contains("names no field"), "{err}");
        let text = SHIPPED.replace("\"Patient.sex\" = \"keep\"", "\"Patient.sex\" = \"blur\"");
        let err = Policy::parse(&text, "t").expect_err("refused");
        assert!(matches!(err, PolicyError::Syntax { .. }), "{err}");
        let text = SHIPPED.replace("k_floor = 5", "k_floor = 1");
        assert!(Policy::parse(&text, "t").is_err());
        let text = SHIPPED.replace("[5, 10, 20]", "[10, 5]");
        assert!(Policy::parse(&text, "t").is_err());
    }

    #[test]
    fn a_policy_may_drop_what_the_shipped_one_keeps() {
        let text = SHIPPED.replace(
            "\"Diagnosis.main_icd10\" = \"keep\"",
            "\"Diagnosis.main_icd10\" = \"drop\"",
        );
        let policy = Policy::parse(&text, "t").expect("dropping is always possible");
        assert!(!policy.passes("Diagnosis.main_icd10"));
    }
}
