//! Health-insurance card numbers (MA_THE_BHYT).

use std::fmt;

use super::check_len;
use super::error::{IdError, IdKind};
use crate::province;

/// A 15-character card number: 2 letters (beneficiary group), benefit level 1-5, 2-digit
/// province, 10-digit social-insurance number (DOMAIN.md §2).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct InsuranceCardNo(String);

impl InsuranceCardNo {
    /// Parses one card number; surrounding whitespace is ignored, letters are upper-cased.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let s = raw.trim().to_ascii_uppercase();
        check_len(IdKind::InsuranceCard, &s, &[15])?;
        for (i, c) in s.chars().enumerate() {
            let (ok, allowed) = if i < 2 {
                (c.is_ascii_uppercase(), "letters A-Z (beneficiary group)")
            } else {
                (c.is_ascii_digit(), "digits 0-9")
            };
            if !ok {
                return Err(IdError::Charset {
                    kind: IdKind::InsuranceCard,
                    allowed,
                    found: c,
                    position: i + 1,
                });
            }
        }
        let level = s.as_bytes()[2] as char;
        if !('1'..='5').contains(&level) {
            return Err(IdError::BenefitLevel { found: level });
        }
        let prov = &s[3..5];
        if province::old_province_name(prov).is_none()
            && province::Province::current(prov).is_none()
        {
            return Err(IdError::UnknownProvince {
                kind: IdKind::InsuranceCard,
                province: prov.to_owned(),
            });
        }
        Ok(Self(s))
    }

    /// Parses a `;`-separated list of cards (several cards in one episode).
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, IdError> {
        super::split_list(raw).map(Self::parse).collect()
    }

    /// The card number.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Beneficiary group letters.
    pub fn group(&self) -> &str {
        &self.0[..2]
    }

    /// Benefit level 1-5.
    pub fn benefit_level(&self) -> u8 {
        self.0.as_bytes()[2] - b'0'
    }

    /// Masked form for reports.
    pub fn masked(&self) -> String {
        format!("{}********{}", &self.0[..5], &self.0[13..])
    }
}

impl fmt::Debug for InsuranceCardNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InsuranceCardNo({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_lists_and_parts() {
        let cards =
            InsuranceCardNo::parse_list(" dn4790123456789 ; HT3010000000001;").expect("valid");
        assert_eq!(cards.len(), 2);
        assert_eq!(cards[0].group(), "DN");
        assert_eq!(cards[0].benefit_level(), 4);
    }

    #[test]
    fn rejects_each_kind_of_mistake() {
        assert_eq!(
            InsuranceCardNo::parse("DN479012345678").unwrap_err().code(),
            "insurance_card.length"
        );
        assert_eq!(
            InsuranceCardNo::parse("D14790123456789")
                .unwrap_err()
                .code(),
            "insurance_card.charset"
        );
        assert_eq!(
            InsuranceCardNo::parse("DN6790123456789")
                .unwrap_err()
                .code(),
            "insurance_card.benefit_level"
        );
        assert_eq!(
            InsuranceCardNo::parse("DN4030123456789")
                .unwrap_err()
                .code(),
            "insurance_card.province"
        );
    }

    proptest! {
        #[test]
        fn valid_cards_round_trip(g in "[A-Z]{2}", level in 1u8..=5, p in prop::sample::select(crate::province::old_codes().collect::<Vec<_>>()), n in 0u64..10_000_000_000) {
            let raw = format!("{g}{level}{p}{n:010}");
            let parsed = InsuranceCardNo::parse(&raw).expect("valid");
            prop_assert_eq!(parsed.as_str(), raw.as_str());
        }

        #[test]
        fn random_text_never_panics(s in ".{0,20}") {
            if let Err(e) = InsuranceCardNo::parse_list(&s) { prop_assert!(e.code().starts_with("insurance_card.")); }
        }
    }
}
