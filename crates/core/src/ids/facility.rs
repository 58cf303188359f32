//! Facility codes (MA_CSKCB).

use std::fmt;

use super::check_len;
use super::error::{IdError, IdKind};
use crate::province::{self, ProvinceCode};

/// A 5-character facility code whose first two characters are a pre-2025 province code
/// (DOMAIN.md §2). Codes issued before the 2025 merger stay valid, so the prefix is checked
/// against the 63 old codes, and also accepted if it is a current code.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FacilityCode(String);

impl FacilityCode {
    /// Parses a facility code; surrounding whitespace is ignored.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let s = raw.trim();
        check_len(IdKind::FacilityCode, s, &[5])?;
        if let Some((position, found)) = s
            .chars()
            .enumerate()
            .find(|(_, c)| !c.is_ascii_alphanumeric())
        {
            return Err(IdError::Charset {
                kind: IdKind::FacilityCode,
                allowed: "letters and digits",
                found,
                position: position + 1,
            });
        }
        let prefix = &s[..2];
        if province::old_province_name(prefix).is_none()
            && province::Province::current(prefix).is_none()
        {
            return Err(IdError::UnknownProvince {
                kind: IdKind::FacilityCode,
                province: prefix.to_owned(),
            });
        }
        Ok(Self(s.to_ascii_uppercase()))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The province code printed in the facility code (pre-2025 numbering).
    pub fn province_prefix(&self) -> &str {
        &self.0[..2]
    }

    /// The current (2025) province-level unit the facility lies in: its region in lienthong.
    pub fn region(&self) -> ProvinceCode {
        province::to_current(self.province_prefix())
            .unwrap_or_else(|| ProvinceCode::new_unchecked(self.province_prefix()))
    }

    /// True for a temporary card registration code (province + "000").
    pub fn is_temporary_registration(&self) -> bool {
        &self.0[2..] == "000"
    }
}

impl fmt::Display for FacilityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FacilityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FacilityCode({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn maps_an_old_province_prefix_to_its_region() {
        let f = FacilityCode::parse(" 74001 ").expect("valid");
        assert_eq!(f.province_prefix(), "74");
        assert_eq!(
            f.region().as_str(),
            "79",
            "Bình Dương merged into TP Hồ Chí Minh"
        );
        assert!(
            FacilityCode::parse("01000")
                .expect("valid")
                .is_temporary_registration()
        );
    }

    #[test]
    fn rejects_bad_codes_with_specific_codes() {
        assert_eq!(
            FacilityCode::parse("0100").unwrap_err().code(),
            "facility_code.length"
        );
        assert_eq!(
            FacilityCode::parse("03001").unwrap_err().code(),
            "facility_code.province"
        );
        assert_eq!(
            FacilityCode::parse("01-01").unwrap_err().code(),
            "facility_code.charset"
        );
    }

    proptest! {
        #[test]
        fn valid_codes_round_trip(code in prop::sample::select(crate::province::old_codes().collect::<Vec<_>>()), n in 0u32..1000) {
            let raw = format!("{code}{n:03}");
            let parsed = FacilityCode::parse(&raw).expect("valid");
            prop_assert_eq!(parsed.as_str(), raw.as_str());
        }

        #[test]
        fn random_text_never_panics(s in ".{0,12}") {
            if let Err(e) = FacilityCode::parse(&s) { prop_assert!(e.code().starts_with("facility_code.")); }
        }
    }
}
