//! Personal identity numbers found in SO_CCCD: the 12-digit citizen ID, old 9-digit ID cards
//! and passport numbers.

use std::fmt;

use super::error::{IdError, IdKind};
use super::{check_digits, check_len};
use crate::province;

/// A 12-digit citizen ID (CCCD / số định danh cá nhân).
///
/// Layout (DOMAIN.md §2): 3-digit province of birth registration (the 2004 province code with a
/// leading 0, 001-096), one gender/century digit (0/1 male/female born 1900s, 2/3 2000s,
/// 4/5 2100s, …), the last two digits of the birth year, then 6 digits. There is no check digit.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CitizenId(String);

impl CitizenId {
    /// Parses a citizen ID; surrounding whitespace is ignored.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let s = raw.trim();
        check_len(IdKind::CitizenId, s, &[12])?;
        check_digits(IdKind::CitizenId, s, 0)?;
        let prov = &s[1..3];
        if &s[..1] != "0" || province::old_province_name(prov).is_none() {
            return Err(IdError::UnknownProvince {
                kind: IdKind::CitizenId,
                province: s[..3].to_owned(),
            });
        }
        Ok(Self(s.to_owned()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The birth year the ID encodes (century from the 4th digit, year from the 5th and 6th).
    pub fn birth_year(&self) -> i32 {
        let b = self.0.as_bytes();
        let century_digit = i32::from(b[3] - b'0');
        let yy = i32::from(b[4] - b'0') * 10 + i32::from(b[5] - b'0');
        1900 + (century_digit / 2) * 100 + yy
    }

    /// True when the gender digit is even (male), false when odd (female).
    pub fn is_male(&self) -> bool {
        (self.0.as_bytes()[3] - b'0').is_multiple_of(2)
    }

    /// The 2004 province code of birth registration (e.g. "01", "79").
    pub fn province_code(&self) -> &str {
        &self.0[1..3]
    }

    /// Checks the encoded birth year against a known birth year.
    pub fn check_birth_year(&self, birth_year: i32) -> Result<(), IdError> {
        let id_year = self.birth_year();
        if id_year == birth_year {
            Ok(())
        } else {
            Err(IdError::BirthYearMismatch {
                id_year,
                birth_year,
            })
        }
    }

    /// A masked form for logs and error reports: province prefix and last two digits only.
    pub fn masked(&self) -> String {
        format!("{}*******{}", &self.0[..3], &self.0[10..])
    }
}

impl fmt::Debug for CitizenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CitizenId({})", self.masked())
    }
}

/// Any personal identity number found in SO_CCCD.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PersonId {
    /// 12-digit citizen ID.
    Citizen(CitizenId),
    /// Old 9-digit ID card (CMND).
    OldIdCard(String),
    /// Passport number: one or two letters then 6-8 digits (Vietnamese and most foreign).
    Passport(String),
}

impl PersonId {
    /// Classifies and checks a SO_CCCD value.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(IdError::Empty {
                kind: IdKind::CitizenId,
            });
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.len() {
                12 => CitizenId::parse(s).map(Self::Citizen),
                9 => Ok(Self::OldIdCard(s.to_owned())),
                n => Err(IdError::Length {
                    kind: IdKind::CitizenId,
                    expected: &[12, 9],
                    actual: n,
                }),
            };
        }
        let upper = s.to_ascii_uppercase();
        let letters = upper.bytes().take_while(u8::is_ascii_uppercase).count();
        let digits = &upper[letters..];
        if (1..=2).contains(&letters)
            && (6..=8).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Ok(Self::Passport(upper));
        }
        Err(IdError::Format {
            kind: IdKind::Passport,
            expected: "12-digit CCCD, 9-digit CMND, or passport (1-2 letters + 6-8 digits)",
        })
    }

    /// Normalized text used for pseudonymization: kind prefix + canonical value, so equal
    /// numbers of different kinds never collide.
    pub fn normalized(&self) -> String {
        match self {
            Self::Citizen(c) => format!("cccd:{}", c.as_str()),
            Self::OldIdCard(s) => format!("cmnd:{s}"),
            Self::Passport(s) => format!("passport:{s}"),
        }
    }

    /// Masked form for reports.
    pub fn masked(&self) -> String {
        match self {
            Self::Citizen(c) => c.masked(),
            Self::OldIdCard(s) | Self::Passport(s) => mask_tail(s),
        }
    }
}

/// Masks all but the last two characters.
pub(crate) fn mask_tail(s: &str) -> String {
    let n = s.chars().count();
    s.chars()
        .enumerate()
        .map(|(i, c)| if i + 2 < n { '*' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_birth_year_gender_and_province() {
        let id = CitizenId::parse(" 079203001234 ").expect("valid");
        assert_eq!(id.birth_year(), 2003);
        assert!(id.is_male(), "2 = male born in the 2000s");
        assert_eq!(id.province_code(), "79");
        assert_eq!(id.masked(), "079*******34");
        assert!(!format!("{id:?}").contains("001234"));
        assert_eq!(
            CitizenId::parse("001080000001")
                .expect("valid")
                .birth_year(),
            1980
        );
    }

    #[test]
    fn rejects_wrong_length_letters_and_unknown_province() {
        assert_eq!(
            CitizenId::parse("07920300123").unwrap_err().code(),
            "citizen_id.length"
        );
        assert_eq!(
            CitizenId::parse("07920300123x").unwrap_err().code(),
            "citizen_id.charset"
        );
        assert_eq!(
            CitizenId::parse("003203001234").unwrap_err().code(),
            "citizen_id.province"
        );
        assert_eq!(
            CitizenId::parse("197203001234").unwrap_err().code(),
            "citizen_id.province"
        );
        assert_eq!(CitizenId::parse("").unwrap_err().code(), "citizen_id.empty");
    }

    #[test]
    fn birth_year_must_agree() {
        let id = CitizenId::parse("079203001234").expect("valid");
        assert!(id.check_birth_year(2003).is_ok());
        assert_eq!(
            id.check_birth_year(1903).unwrap_err().code(),
            "citizen_id.birth_year_mismatch"
        );
    }

    #[test]
    fn classifies_old_ids_and_passports() {
        assert!(matches!(
            PersonId::parse("123456789"),
            Ok(PersonId::OldIdCard(_))
        ));
        assert!(
            matches!(PersonId::parse("c1234567"), Ok(PersonId::Passport(p)) if p == "C1234567")
        );
        assert_eq!(
            PersonId::parse("12345").unwrap_err().code(),
            "citizen_id.length"
        );
        assert_eq!(
            PersonId::parse("ABC-12").unwrap_err().code(),
            "passport.format"
        );
    }

    fn province_prefix() -> impl Strategy<Value = String> {
        prop::sample::select(crate::province::old_codes().collect::<Vec<_>>())
            .prop_map(|c| format!("0{c}"))
    }

    proptest! {
        #[test]
        fn valid_ids_round_trip(prefix in province_prefix(), century in 0u8..6, yy in 0u32..100, tail in 0u32..1_000_000) {
            let raw = format!("{prefix}{century}{yy:02}{tail:06}");
            let id = CitizenId::parse(&raw).expect("valid");
            prop_assert_eq!(id.as_str(), raw.as_str());
            prop_assert_eq!(id.birth_year(), 1900 + i32::from(century / 2) * 100 + yy as i32);
            let person = PersonId::parse(&raw).expect("valid");
            prop_assert_eq!(person, PersonId::Citizen(id));
        }

        #[test]
        fn random_text_never_panics_and_errors_have_codes(s in ".{0,40}") {
            if let Err(e) = PersonId::parse(&s) {
                prop_assert!(!e.code().is_empty());
                prop_assert!(!e.to_string().is_empty());
            }
            let _ = CitizenId::parse(&s);
        }
    }
}
