//! Provinces of Vietnam in both generations, compiled in from the data files in `data/`.
//!
//! Until 30 June 2025: 63 provinces (QĐ 124/2004/QĐ-TTg). From 1 July 2025: 34 province-level
//! units (NQ 202/2025/QH15, codes per QĐ 19/2025/QĐ-TTg), each keeping one predecessor's code.
//! Regions in lienthong are the 34 current units; an old code is mapped on ingest. The tables
//! are data, not code, so a correction is a one-line change to a .tsv file.

use std::fmt;
use std::sync::OnceLock;

const CURRENT_TSV: &str = include_str!("../data/provinces_2025.tsv");
const OLD_TSV: &str = include_str!("../data/provinces_2004.tsv");
const MAPPING_TSV: &str = include_str!("../data/province_mapping.tsv");

/// A current (2025) province-level unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Province {
    /// 2-digit code.
    pub code: &'static str,
    /// Name in Vietnamese.
    pub name: &'static str,
    /// Names of the provinces merged into it.
    pub merged: Vec<&'static str>,
}

/// The code of a current (2025) province-level unit: a lienthong region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProvinceCode(String);

impl ProvinceCode {
    /// A current province code, if `code` is one of the 34.
    pub fn current(code: &str) -> Option<Self> {
        Province::current(code.trim()).map(|p| Self(p.code.to_owned()))
    }

    /// The region of any province code, old or current.
    pub fn region_of(code: &str) -> Option<Self> {
        to_current(code.trim())
    }

    pub(crate) fn new_unchecked(code: &str) -> Self {
        Self(code.to_owned())
    }

    /// The 2-digit code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProvinceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn rows(tsv: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    tsv.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').collect())
}

struct Tables {
    current: Vec<Province>,
    old: Vec<(&'static str, &'static str)>,
    mapping: Vec<(&'static str, &'static str)>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| Tables {
        current: rows(CURRENT_TSV)
            .map(|r| Province {
                code: r[0],
                name: r.get(1).copied().unwrap_or(""),
                merged: r
                    .get(2)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
        old: rows(OLD_TSV)
            .map(|r| (r[0], r.get(1).copied().unwrap_or("")))
            .collect(),
        mapping: rows(MAPPING_TSV)
            .map(|r| (r[0], r.get(1).copied().unwrap_or("")))
            .collect(),
    })
}

impl Province {
    /// The current unit with this code.
    pub fn current(code: &str) -> Option<&'static Province> {
        tables().current.iter().find(|p| p.code == code)
    }

    /// All 34 current units.
    pub fn all_current() -> &'static [Province] {
        &tables().current
    }
}

/// Name of a pre-2025 province, if `code` is one of the 63.
pub fn old_province_name(code: &str) -> Option<&'static str> {
    tables()
        .old
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| *n)
}

/// The 63 pre-2025 codes.
pub fn old_codes() -> impl Iterator<Item = &'static str> {
    tables().old.iter().map(|(c, _)| *c)
}

/// Maps an old (2004) code to the current unit that absorbed it; a current code maps to itself.
pub fn to_current(code: &str) -> Option<ProvinceCode> {
    if let Some((_, new)) = tables().mapping.iter().find(|(old, _)| *old == code) {
        return Some(ProvinceCode(String::from(*new)));
    }
    ProvinceCode::current(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_63_old_and_34_current_units_each_named() {
        assert_eq!(old_codes().count(), 63);
        assert_eq!(Province::all_current().len(), 34);
        assert!(
            Province::all_current()
                .iter()
                .all(|p| !p.name.is_empty() && p.code.len() == 2)
        );
    }

    #[test]
    fn every_old_code_maps_to_one_current_unit() {
        for old in old_codes() {
            let new = to_current(old).unwrap_or_else(|| panic!("{old} unmapped"));
            assert!(
                Province::current(new.as_str()).is_some(),
                "{old} -> {new} is not a current unit"
            );
        }
    }

    #[test]
    fn every_current_unit_kept_a_predecessor_code() {
        for p in Province::all_current() {
            assert!(
                old_province_name(p.code).is_some(),
                "{} is not an old code",
                p.code
            );
            assert_eq!(to_current(p.code).map(|c| c.0), Some(p.code.to_owned()));
        }
    }

    #[test]
    fn known_merges() {
        assert_eq!(to_current("74").map(|c| c.0).as_deref(), Some("79"));
        assert_eq!(to_current("02").map(|c| c.0).as_deref(), Some("08"));
        assert_eq!(to_current("95").map(|c| c.0).as_deref(), Some("96"));
        assert!(to_current("03").is_none());
        assert_eq!(Province::current("79").map(|p| p.merged.len()), Some(2));
    }
}
