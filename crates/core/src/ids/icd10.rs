//! ICD-10 codes, MoH version (QĐ 4469/QĐ-BYT 2020).

use std::fmt;

use super::error::{IdError, IdKind};

/// An ICD-10 code: a letter, two digits, then optionally `.` and one or two characters
/// (e.g. `J18`, `J18.9`, `E11.65`). A code written without the dot (`J189`) is accepted and
/// stored with it, since both spellings appear in HIS exports.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Icd10Code(String);

const SHAPE: &str = "a letter, two digits, optional '.' and 1-2 characters (e.g. J18.9)";

impl Icd10Code {
    /// Parses one code.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let s = raw.trim().to_ascii_uppercase();
        if s.is_empty() {
            return Err(IdError::Empty {
                kind: IdKind::Icd10,
            });
        }
        let b = s.as_bytes();
        let head_ok = b.len() >= 3
            && b[0].is_ascii_uppercase()
            && b[1].is_ascii_digit()
            && b[2].is_ascii_digit();
        if !head_ok || !s.is_ascii() {
            return Err(IdError::Format {
                kind: IdKind::Icd10,
                expected: SHAPE,
            });
        }
        let rest = s[3..].strip_prefix('.').unwrap_or(&s[3..]);
        let rest_ok = rest.len() <= 2
            && rest.bytes().all(|c| c.is_ascii_alphanumeric())
            && !(s.len() > 3 && rest.is_empty());
        if !rest_ok {
            return Err(IdError::Format {
                kind: IdKind::Icd10,
                expected: SHAPE,
            });
        }
        Ok(Self(if rest.is_empty() {
            s[..3].to_owned()
        } else {
            format!("{}.{rest}", &s[..3])
        }))
    }

    /// Parses a `;`-separated list (MA_BENH_KT holds up to 12).
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, IdError> {
        super::split_list(raw).map(Self::parse).collect()
    }

    /// The code with its dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Icd10Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Icd10Code({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_usual_spellings() {
        assert_eq!(Icd10Code::parse("j18.9").expect("valid").as_str(), "J18.9");
        assert_eq!(Icd10Code::parse("E1165").expect("valid").as_str(), "E11.65");
        assert_eq!(Icd10Code::parse("I10").expect("valid").as_str(), "I10");
        assert_eq!(
            Icd10Code::parse_list("I10;E11.9; ").expect("valid").len(),
            2
        );
    }

    #[test]
    fn rejects_malformed_codes() {
        for bad in ["1J8", "J1", "J18.", "J18.123", "J18-9", "Ĵ18"] {
            assert_eq!(
                Icd10Code::parse(bad).unwrap_err().code(),
                "icd10.format",
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn valid_codes_round_trip(l in "[A-Z]", d in 0u8..100, sub in "[0-9A-Z]{0,2}") {
            let raw = if sub.is_empty() { format!("{l}{d:02}") } else { format!("{l}{d:02}.{sub}") };
            let parsed = Icd10Code::parse(&raw).expect("valid");
            prop_assert_eq!(parsed.as_str(), raw.as_str());
        }

        #[test]
        fn random_text_never_panics(s in ".{0,10}") {
            if let Err(e) = Icd10Code::parse(&s) { prop_assert!(e.code().starts_with("icd10.")); }
        }
    }
}
