//! The one error type of identifier parsing, with stable codes.

use std::fmt;

/// Which identifier a value was meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// Citizen ID (CCCD).
    CitizenId,
    /// Old 9-digit ID card (CMND).
    OldIdCard,
    /// Passport number.
    Passport,
    /// Facility code (MA_CSKCB).
    FacilityCode,
    /// Health-insurance card number (MA_THE_BHYT).
    InsuranceCard,
    /// ICD-10 code.
    Icd10,
    /// Practitioner licence number.
    PractitionerLicence,
    /// XML date or date-time.
    XmlDate,
}

impl IdKind {
    /// Stable code prefix.
    pub fn code(self) -> &'static str {
        match self {
            Self::CitizenId => "citizen_id",
            Self::OldIdCard => "old_id_card",
            Self::Passport => "passport",
            Self::FacilityCode => "facility_code",
            Self::InsuranceCard => "insurance_card",
            Self::Icd10 => "icd10",
            Self::PractitionerLicence => "practitioner_licence",
            Self::XmlDate => "xml_date",
        }
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CitizenId => "citizen ID (CCCD)",
            Self::OldIdCard => "old ID card number (CMND)",
            Self::Passport => "passport number",
            Self::FacilityCode => "facility code (MA_CSKCB)",
            Self::InsuranceCard => "health-insurance card number (MA_THE_BHYT)",
            Self::Icd10 => "ICD-10 code",
            Self::PractitionerLicence => "practitioner licence number",
            Self::XmlDate => "XML date (yyyymmdd or yyyymmddHHMM)",
        })
    }
}

/// Why a value is not a valid identifier. Messages never repeat the value (it may be personal data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Nothing was given.
    #[error("{kind} is empty")]
    Empty {
        /// Identifier kind.
        kind: IdKind,
    },
    /// Wrong number of characters.
    #[error(
        "{kind} must have {} characters, found {actual}",
        lengths(expected, "or")
    )]
    Length {
        /// Identifier kind.
        kind: IdKind,
        /// Allowed lengths.
        expected: &'static [usize],
        /// Length found.
        actual: usize,
    },
    /// A character that is not allowed at that place.
    #[error("{kind} allows only {allowed} at position {position}, found {found:?}")]
    Charset {
        /// Identifier kind.
        kind: IdKind,
        /// What is allowed.
        allowed: &'static str,
        /// Offending character.
        found: char,
        /// 1-based position.
        position: usize,
    },
    /// The embedded province code is not one of the 63 (2004) or 34 (2025) codes.
    #[error("{kind} carries province code {province}, which is not a Vietnamese province code")]
    UnknownProvince {
        /// Identifier kind.
        kind: IdKind,
        /// The code found.
        province: String,
    },
    /// CCCD gender/century digit disagrees with the birth year.
    #[error(
        "citizen ID says born in {id_year} but the birth date says {birth_year}; check SO_CCCD and NGAY_SINH"
    )]
    BirthYearMismatch {
        /// Year encoded in the ID.
        id_year: i32,
        /// Year of the birth date.
        birth_year: i32,
    },
    /// Insurance card benefit level outside 1-5.
    #[error("health-insurance card benefit level must be 1-5, found {found:?}")]
    BenefitLevel {
        /// Character found.
        found: char,
    },
    /// Value does not have the shape of the identifier.
    #[error("{kind} must look like {expected}")]
    Format {
        /// Identifier kind.
        kind: IdKind,
        /// Expected shape.
        expected: &'static str,
    },
    /// A date field that does not name a real calendar date or time.
    #[error("{kind}: {reason}")]
    Calendar {
        /// Identifier kind.
        kind: IdKind,
        /// What is impossible.
        reason: &'static str,
    },
}

impl IdError {
    /// Stable machine-readable code, e.g. `citizen_id.length`.
    pub fn code(&self) -> String {
        let (kind, reason) = match self {
            Self::Empty { kind } => (*kind, "empty"),
            Self::Length { kind, .. } => (*kind, "length"),
            Self::Charset { kind, .. } => (*kind, "charset"),
            Self::UnknownProvince { kind, .. } => (*kind, "province"),
            Self::BirthYearMismatch { .. } => (IdKind::CitizenId, "birth_year_mismatch"),
            Self::BenefitLevel { .. } => (IdKind::InsuranceCard, "benefit_level"),
            Self::Format { kind, .. } => (*kind, "format"),
            Self::Calendar { kind, .. } => (*kind, "calendar"),
        };
        format!("{}.{reason}", kind.code())
    }

    /// The same problem, said in Vietnamese for a facility's IT staff.
    pub fn message_vi(&self) -> String {
        match self {
            Self::Empty { kind } => format!("{} bị bỏ trống", kind_vi(*kind)),
            Self::Length {
                kind,
                expected,
                actual,
            } => format!(
                "{} phải có {} ký tự, hiện có {actual}",
                kind_vi(*kind),
                lengths(expected, "hoặc")
            ),
            Self::Charset { kind, position, .. } => format!(
                "{} có ký tự không hợp lệ ở vị trí {position}",
                kind_vi(*kind)
            ),
            Self::UnknownProvince { kind, province } => {
                format!("{} mang mã tỉnh {province} không tồn tại", kind_vi(*kind))
            }
            Self::BirthYearMismatch {
                id_year,
                birth_year,
            } => {
                format!("số CCCD cho năm sinh {id_year} nhưng NGAY_SINH là {birth_year}")
            }
            Self::BenefitLevel { .. } => "mức hưởng trên thẻ BHYT phải từ 1 đến 5".into(),
            Self::Format { kind, expected } => {
                format!("{} phải có dạng {expected}", kind_vi(*kind))
            }
            Self::Calendar { kind, .. } => {
                format!("{} không phải ngày giờ có thật", kind_vi(*kind))
            }
        }
    }
}

fn kind_vi(kind: IdKind) -> &'static str {
    match kind {
        IdKind::CitizenId => "Số CCCD",
        IdKind::OldIdCard => "Số CMND",
        IdKind::Passport => "Số hộ chiếu",
        IdKind::FacilityCode => "Mã cơ sở KBCB",
        IdKind::InsuranceCard => "Mã thẻ BHYT",
        IdKind::Icd10 => "Mã ICD-10",
        IdKind::PractitionerLicence => "Số chứng chỉ hành nghề",
        IdKind::XmlDate => "Ngày tháng",
    }
}

/// The allowed lengths as a reader says them: "12 or 9".
fn lengths(expected: &[usize], or: &str) -> String {
    let words: Vec<String> = expected.iter().map(ToString::to_string).collect();
    words.join(&format!(" {or} "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_error_names_the_allowed_lengths_in_words() {
        let e = IdError::Length {
            kind: IdKind::CitizenId,
            expected: &[12, 9],
            actual: 8,
        };
        assert!(
            e.to_string()
                .contains("must have 12 or 9 characters, found 8"),
            "{e}"
        );
        assert!(
            e.message_vi()
                .contains("phải có 12 hoặc 9 ký tự, hiện có 8"),
            "{}",
            e.message_vi()
        );
    }
}
