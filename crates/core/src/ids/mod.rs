//! Identifiers as types that can only hold valid values.
//!
//! Parsers trim surrounding whitespace (vendors pad fields) but never change the characters
//! inside: codes are strings and leading zeros matter (DOMAIN.md §1).

mod card;
mod citizen;
mod error;
mod facility;
mod icd10;
mod licence;

pub use card::InsuranceCardNo;
pub(crate) use citizen::mask_tail as citizen_mask;
pub use citizen::{CitizenId, PersonId};
pub use error::{IdError, IdKind};
pub use facility::FacilityCode;
pub use icd10::Icd10Code;
pub use licence::PractitionerLicence;

/// Splits a `;`-separated XML list, trimming items and dropping empty ones.
pub fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(';').map(str::trim).filter(|s| !s.is_empty())
}

fn check_len(kind: IdKind, s: &str, expected: &'static [usize]) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let n = s.chars().count();
    if expected.contains(&n) {
        Ok(())
    } else {
        Err(IdError::Length {
            kind,
            expected,
            actual: n,
        })
    }
}

fn check_digits(kind: IdKind, s: &str, from: usize) -> Result<(), IdError> {
    match s
        .chars()
        .enumerate()
        .skip(from)
        .find(|(_, c)| !c.is_ascii_digit())
    {
        Some((position, found)) => Err(IdError::Charset {
            kind,
            allowed: "digits 0-9",
            found,
            position: position + 1,
        }),
        None => Ok(()),
    }
}
