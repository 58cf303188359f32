//! Practitioner licence numbers (số chứng chỉ hành nghề), as written in MA_BAC_SI / MA_BS_DOC_KQ.

use std::fmt;

use super::error::{IdError, IdKind};

/// A practitioner licence number. Exports append suffixes such as `.TX.<facility>` for
/// telehealth readings (DOMAIN.md §1, XML4); the licence is the part before the first `.`,
/// the raw value is kept too.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PractitionerLicence {
    licence: String,
    raw: String,
}

impl PractitionerLicence {
    /// Parses one licence: 1-30 characters of letters, digits, `/` and `-` before any suffix.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(IdError::Empty {
                kind: IdKind::PractitionerLicence,
            });
        }
        let licence = raw.split('.').next().unwrap_or(raw);
        if licence.is_empty() || licence.chars().count() > 30 {
            return Err(IdError::Length {
                kind: IdKind::PractitionerLicence,
                expected: &[1, 30],
                actual: licence.chars().count(),
            });
        }
        if let Some((position, found)) = licence
            .chars()
            .enumerate()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_')))
        {
            return Err(IdError::Charset {
                kind: IdKind::PractitionerLicence,
                allowed: "letters, digits, '/', '-', '_'",
                found,
                position: position + 1,
            });
        }
        Ok(Self {
            licence: licence.to_ascii_uppercase(),
            raw: raw.to_owned(),
        })
    }

    /// Parses a `;`-separated list (MA_BS_DOC_KQ).
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, IdError> {
        super::split_list(raw).map(Self::parse).collect()
    }

    /// The licence number without suffixes.
    pub fn licence(&self) -> &str {
        &self.licence
    }

    /// The value as exported.
    pub fn raw(&self) -> &str {
        &self.raw
    }
}

impl fmt::Debug for PractitionerLicence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PractitionerLicence({})", self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strips_telehealth_suffix_but_keeps_raw() {
        let l = PractitionerLicence::parse("001234/HNO-CCHN.TX.79025").expect("valid");
        assert_eq!(l.licence(), "001234/HNO-CCHN");
        assert_eq!(l.raw(), "001234/HNO-CCHN.TX.79025");
        assert_eq!(
            PractitionerLicence::parse_list("A1;B2")
                .expect("valid")
                .len(),
            2
        );
    }

    #[test]
    fn rejects_empty_and_odd_characters() {
        assert_eq!(
            PractitionerLicence::parse(" ").unwrap_err().code(),
            "practitioner_licence.empty"
        );
        assert_eq!(
            PractitionerLicence::parse("12 34").unwrap_err().code(),
            "practitioner_licence.charset"
        );
        assert_eq!(
            PractitionerLicence::parse(".TX").unwrap_err().code(),
            "practitioner_licence.length"
        );
    }

    proptest! {
        #[test]
        fn valid_licences_round_trip(s in "[0-9A-Z/-]{1,30}") {
            let parsed = PractitionerLicence::parse(&s).expect("valid");
            prop_assert_eq!(parsed.licence(), s.as_str());
        }

        #[test]
        fn random_text_never_panics(s in ".{0,40}") {
            let _ = PractitionerLicence::parse_list(&s);
        }
    }
}
