//! The facility directory: every health facility that may issue, receive or host a document,
//! with its province (one of the 34 current units), its level (Luật KBCB 15/2023: initial,
//! basic, specialised) and the dates it is valid. Operators supply it as a CSV file:
//!
//! ```text
//! code,name,province,level,valid_from,valid_to
//! 79025,Bệnh viện Chợ Rẫy,79,chuyen_sau,2000-01-01,
//! ```
//!
//! `valid_to` may be empty (still operating). A facility code belongs to the province its first
//! two digits name (after the 2025 merger), so a row saying otherwise is refused. Parsing is
//! all or nothing: a directory with one bad row is not used at all.

use std::borrow::Cow;
use std::collections::HashMap;

use time::Date;

use crate::ClinicalEvent;
use crate::ids::FacilityCode;
use crate::province::ProvinceCode;
use crate::validation::{Severity, Violation};

/// A facility's level of technical expertise (Luật Khám bệnh, chữa bệnh 15/2023, Điều 104).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Cấp khám bệnh, chữa bệnh ban đầu.
    Initial,
    /// Cấp khám bệnh, chữa bệnh cơ bản.
    Basic,
    /// Cấp khám bệnh, chữa bệnh chuyên sâu.
    Specialised,
}

impl Level {
    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "ban_dau" => Some(Self::Initial),
            "co_ban" => Some(Self::Basic),
            "chuyen_sau" => Some(Self::Specialised),
            _ => None,
        }
    }

    /// The spelling in the directory file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "ban_dau",
            Self::Basic => "co_ban",
            Self::Specialised => "chuyen_sau",
        }
    }
}

/// One facility of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facility {
    /// MA_CSKCB.
    pub code: String,
    /// Its name.
    pub name: String,
    /// Its province (a current code).
    pub province: ProvinceCode,
    /// Its level.
    pub level: Level,
    /// First day it may appear on a document.
    pub valid_from: Date,
    /// Last day, if it closed or merged.
    pub valid_to: Option<Date>,
}

impl Facility {
    /// True when it operates on `day`.
    pub fn valid_on(&self, day: Date) -> bool {
        self.valid_from <= day && self.valid_to.is_none_or(|to| day <= to)
    }
}

/// Why a directory file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The header line is not the expected one.
    #[error("the first line must be `{HEADER}`")]
    Header,
    /// A row is wrong.
    #[error("line {line}: {reason}")]
    Row {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No facility at all: a directory that refuses everything is a mistake, not a policy.
    #[error("the directory lists no facility")]
    Empty,
}

const HEADER: &str = "code,name,province,level,valid_from,valid_to";

/// Every facility, by code.
#[derive(Debug, Clone, Default)]
pub struct FacilityDirectory {
    by_code: HashMap<String, Facility>,
}

/// Splits one CSV line: fields separated by commas, a field in double quotes may hold commas
/// and doubled quotes.
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    out.push(field);
    Ok(out)
}

fn date(raw: &str, what: &str) -> Result<Date, String> {
    Date::parse(
        raw,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| format!("{what} {raw:?} is not a date (YYYY-MM-DD)"))
}

impl FacilityDirectory {
    /// Parses a directory file (see the module documentation).
    pub fn parse_csv(text: &str) -> Result<Self, DirectoryError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text.lines().enumerate();
        if lines.next().map(|(_, l)| l.trim()) != Some(HEADER) {
            return Err(DirectoryError::Header);
        }
        let mut by_code = HashMap::new();
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let row = |reason: String| DirectoryError::Row {
                line: i + 1,
                reason,
            };
            let f = fields(line).map_err(row)?;
            let [code, name, province, level, from, to] = f.as_slice() else {
                return Err(row(format!("{} fields, expected 6 ({HEADER})", f.len())));
            };
            let parsed = FacilityCode::parse(code).map_err(|e| row(e.to_string()))?;
            if parsed.as_str() != code {
                return Err(row(format!(
                    "facility code {code:?} is not in its canonical form"
                )));
            }
            let province = ProvinceCode::current(province).ok_or_else(|| {
                row(format!(
                    "{province:?} is not one of the 34 current province codes"
                ))
            })?;
            if ProvinceCode::region_of(parsed.province_prefix()).as_ref() != Some(&province) {
                return Err(row(format!(
                    "facility {code} belongs to the province of its prefix {}, not {province}",
                    parsed.province_prefix()
                )));
            }
            let level = Level::parse(level).ok_or_else(|| {
                row(format!(
                    "level {level:?} is not ban_dau, co_ban or chuyen_sau"
                ))
            })?;
            let valid_from = date(from, "valid_from").map_err(row)?;
            let valid_to = if to.is_empty() {
                None
            } else {
                Some(date(to, "valid_to").map_err(row)?)
            };
            if valid_to.is_some_and(|to| to < valid_from) {
                return Err(row("valid_to is before valid_from".into()));
            }
            let facility = Facility {
                code: code.clone(),
                name: name.clone(),
                province,
                level,
                valid_from,
                valid_to,
            };
            if by_code.insert(code.clone(), facility).is_some() {
                return Err(row(format!("facility {code} is listed twice")));
            }
        }
        if by_code.is_empty() {
            return Err(DirectoryError::Empty);
        }
        Ok(Self { by_code })
    }

    /// The directory as a file (rows sorted by code).
    pub fn to_csv(&self) -> String {
        let mut rows: Vec<&Facility> = self.by_code.values().collect();
        rows.sort_by(|a, b| a.code.cmp(&b.code));
        let mut out = format!("{HEADER}\n");
        for f in rows {
            let name = if f.name.contains([',', '"']) {
                format!("\"{}\"", f.name.replace('"', "\"\""))
            } else {
                f.name.clone()
            };
            out.push_str(&format!(
                "{},{name},{},{},{},{}\n",
                f.code,
                f.province,
                f.level.as_str(),
                f.valid_from,
                f.valid_to.map(|d| d.to_string()).unwrap_or_default()
            ));
        }
        out
    }

    /// The directory of the test fixtures: every code `fixtures::Generator` makes (each old
    /// province prefix, numbers 001 to 099), valid since 2000.
    pub fn of_fixtures() -> Self {
        let mut by_code = HashMap::new();
        for prefix in crate::province::old_codes() {
            let Some(province) = ProvinceCode::region_of(prefix) else {
                continue;
            };
            for n in 1..=99 {
                let code = format!("{prefix}{n:03}");
                by_code.insert(
                    code.clone(),
                    Facility {
                        name: format!("Cơ sở thử nghiệm {code}"),
                        code,
                        province: province.clone(),
                        level: if n == 1 {
                            Level::Specialised
                        } else {
                            Level::Basic
                        },
                        valid_from: time::macros::date!(2000 - 01 - 01),
                        valid_to: None,
                    },
                );
            }
        }
        Self { by_code }
    }

    /// The facility with this code.
    pub fn get(&self, code: &str) -> Option<&Facility> {
        self.by_code.get(code)
    }

    /// Facilities listed.
    pub fn len(&self) -> usize {
        self.by_code.len()
    }

    /// True when it lists none.
    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty()
    }

    /// The facilities a document names (issuer, sending, receiving, host) that the directory
    /// does not list, or lists as not operating on `day`.
    pub fn violations(&self, event: &ClinicalEvent, day: Date) -> Vec<Violation> {
        // Paths are written out only for a violation; most are constants.
        let mut named: Vec<(Cow<'static, str>, &str)> = Vec::new();
        match event {
            ClinicalEvent::Referral(e) => {
                if let Some(s) = &e.slip {
                    if let Some(f) = &s.issuer {
                        named.push((Cow::Borrowed("slip.issuer.code"), &f.code));
                    }
                    if let Some(f) = &s.receiving {
                        named.push((Cow::Borrowed("slip.receiving.code"), &f.code));
                    }
                    for (i, f) in s.sending.iter().enumerate() {
                        named.push((Cow::Owned(format!("slip.sending[{i}].code")), &f.code));
                    }
                }
            }
            ClinicalEvent::Appointment(e) => {
                if let Some(f) = e.appointment.as_ref().and_then(|a| a.facility.as_ref()) {
                    named.push((Cow::Borrowed("appointment.facility.code"), &f.code));
                }
            }
            ClinicalEvent::LabResult(e) => {
                if let Some(f) = e.report.as_ref().and_then(|r| r.facility.as_ref()) {
                    named.push((Cow::Borrowed("report.facility.code"), &f.code));
                }
            }
        }
        let mut out = Vec::new();
        for (path, code) in named.into_iter().filter(|(_, c)| !c.is_empty()) {
            match self.get(code) {
                None => out.push(Violation {
                    code: "facility.unknown".into(),
                    severity: Severity::Error,
                    path: path.into_owned(),
                    value: Some(code.to_owned()),
                    message: format!(
                        "facility {code} is not in the facility directory; check the code, or ask \
                         the operator to add the facility"
                    ),
                    message_vi: format!(
                        "Cơ sở {code} không có trong danh mục cơ sở khám chữa bệnh; kiểm tra mã \
                         hoặc đề nghị bổ sung vào danh mục"
                    ),
                }),
                Some(f) if !f.valid_on(day) => out.push(Violation {
                    code: "facility.inactive".into(),
                    severity: Severity::Error,
                    path: path.into_owned(),
                    value: Some(code.to_owned()),
                    message: format!(
                        "facility {code} ({}) does not operate on {day} by the facility directory",
                        f.name
                    ),
                    message_vi: format!(
                        "Cơ sở {code} ({}) không hoạt động vào ngày {day} theo danh mục",
                        f.name
                    ),
                }),
                Some(_) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Generator;

    const GOOD: &str = "code,name,province,level,valid_from,valid_to\n\
        79025,\"Bệnh viện Chợ Rẫy, TP HCM\",79,chuyen_sau,2000-01-01,\n\
        01001,Bệnh viện Bạch Mai,01,chuyen_sau,2000-01-01,2024-12-31\n";

    #[test]
    fn a_directory_reads_and_writes_back() {
        let d = FacilityDirectory::parse_csv(GOOD).expect("parses");
        assert_eq!(d.len(), 2);
        assert_eq!(
            d.get("79025").map(|f| f.name.as_str()),
            Some("Bệnh viện Chợ Rẫy, TP HCM")
        );
        let again = FacilityDirectory::parse_csv(&d.to_csv()).expect("round trip");
        assert_eq!(again.get("01001"), d.get("01001"));
    }

    #[test]
    fn bad_rows_are_refused_with_their_line() {
        let bad = |row: &str| {
            FacilityDirectory::parse_csv(&format!("{HEADER}\n{row}\n"))
                .expect_err(row)
                .to_string()
        };
        assert!(bad("79025,X,01,co_ban,2000-01-01,").contains("line 2: facility 79025 belongs"));
        assert!(bad("79025,X,99,co_ban,2000-01-01,").contains("34 current"));
        assert!(bad("79025,X,79,tinh,2000-01-01,").contains("level"));
        assert!(bad("79025,X,79,co_ban,2000-13-01,").contains("not a date"));
        assert!(bad("79025,X,79,co_ban,2020-01-01,2019-01-01").contains("before"));
        assert!(bad("79025,X,79").contains("3 fields"));
        assert!(bad("7902,X,79,co_ban,2000-01-01,").contains("line 2"));
        assert!(bad("\"79025,X,79,co_ban,2000-01-01,").contains("not closed"));
        assert!(
            bad("79025,X,79,co_ban,2000-01-01,\n79025,Y,79,co_ban,2000-01-01,")
                .contains("line 3: facility 79025 is listed twice")
        );
        assert_eq!(
            FacilityDirectory::parse_csv("code,name\n").err(),
            Some(DirectoryError::Header)
        );
        assert_eq!(
            FacilityDirectory::parse_csv(HEADER).err(),
            Some(DirectoryError::Empty)
        );
    }

    #[test]
    fn unknown_and_closed_facilities_are_violations() {
        let d = FacilityDirectory::parse_csv(GOOD).expect("parses");
        let mut g = Generator::new(5, time::OffsetDateTime::now_utc());
        let event = crate::fixtures::reassign(ClinicalEvent::Referral(g.referral()), "01001");
        let today = time::OffsetDateTime::now_utc().date();
        let codes: Vec<String> = d
            .violations(&event, today)
            .into_iter()
            .map(|v| v.code)
            .collect();
        // 01001 closed at the end of 2024; the generated receiving facility is unknown.
        assert!(codes.contains(&"facility.inactive".to_owned()), "{codes:?}");
        assert!(codes.contains(&"facility.unknown".to_owned()), "{codes:?}");
        let fixtures = FacilityDirectory::of_fixtures();
        for _ in 0..50 {
            for e in [
                ClinicalEvent::Referral(g.referral()),
                ClinicalEvent::Appointment(g.appointment()),
                ClinicalEvent::LabResult(g.lab_result()),
            ] {
                assert!(fixtures.violations(&e, today).is_empty());
            }
        }
    }
}
