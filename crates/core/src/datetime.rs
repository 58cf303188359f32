//! The date strings of the MoH XML tables: `yyyymmdd` (8) or `yyyymmddHHMM` (12), local time
//! in Vietnam (UTC+7). A birth date may carry `00` for an unknown month or day.

use std::fmt;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::ids::{IdError, IdKind};

/// How much of a date is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    /// Year only (month written as 00).
    Year,
    /// Year and month (day written as 00).
    Month,
    /// A calendar day.
    Day,
    /// Day, hour and minute.
    Minute,
}

/// A parsed XML date or date-time.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct XmlDateTime {
    year: i32,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    precision: Precision,
}

/// Vietnam's offset from UTC (no daylight saving).
pub const VIETNAM: UtcOffset = match UtcOffset::from_hms(7, 0, 0) {
    Ok(o) => o,
    Err(_) => UtcOffset::UTC,
};

impl XmlDateTime {
    /// Parses an 8- or 12-character XML date; surrounding whitespace is ignored.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let s = raw.trim();
        let kind = IdKind::XmlDate;
        if s.is_empty() {
            return Err(IdError::Empty { kind });
        }
        if let Some((position, found)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
            return Err(IdError::Charset {
                kind,
                allowed: "digits 0-9",
                found,
                position: position + 1,
            });
        }
        if s.len() != 8 && s.len() != 12 {
            return Err(IdError::Length {
                kind,
                expected: &[8, 12],
                actual: s.len(),
            });
        }
        let num = |r: std::ops::Range<usize>| s[r].parse::<u16>().unwrap_or(0);
        let (year, month, day) = (i32::from(num(0..4)), num(4..6) as u8, num(6..8) as u8);
        let (hour, minute) = if s.len() == 12 {
            (num(8..10) as u8, num(10..12) as u8)
        } else {
            (0, 0)
        };
        let precision = match (month, day, s.len()) {
            (0, 0, _) => Precision::Year,
            (0, _, _) => {
                return Err(IdError::Calendar {
                    kind,
                    reason: "a day is given but the month is 00",
                });
            }
            (_, 0, _) => Precision::Month,
            (_, _, 12) => Precision::Minute,
            _ => Precision::Day,
        };
        if !(1900..=2199).contains(&year) {
            return Err(IdError::Calendar {
                kind,
                reason: "year must be between 1900 and 2199",
            });
        }
        if precision >= Precision::Month && Month::try_from(month).is_err() {
            return Err(IdError::Calendar {
                kind,
                reason: "month must be 01-12",
            });
        }
        if precision >= Precision::Day {
            let m = Month::try_from(month).map_err(|_| IdError::Calendar {
                kind,
                reason: "month must be 01-12",
            })?;
            Date::from_calendar_date(year, m, day).map_err(|_| IdError::Calendar {
                kind,
                reason: "no such day in that month",
            })?;
        }
        if hour > 23 || minute > 59 {
            return Err(IdError::Calendar {
                kind,
                reason: "time must be 0000-2359",
            });
        }
        Ok(Self {
            year,
            month,
            day,
            hour,
            minute,
            precision,
        })
    }

    /// How much is known.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Calendar year.
    pub fn year(&self) -> i32 {
        self.year
    }

    /// The earliest instant the value can mean, in Vietnam time (unknown parts take their minimum).
    pub fn earliest(&self) -> OffsetDateTime {
        let month = Month::try_from(self.month.max(1)).unwrap_or(Month::January);
        let date = Date::from_calendar_date(self.year, month, self.day.max(1)).unwrap_or(Date::MIN);
        let time = Time::from_hms(self.hour, self.minute, 0).unwrap_or(Time::MIDNIGHT);
        PrimitiveDateTime::new(date, time).assume_offset(VIETNAM)
    }

    /// The calendar day, when known.
    pub fn date(&self) -> Option<Date> {
        (self.precision >= Precision::Day).then(|| self.earliest().date())
    }

    /// Canonical digits: 4, 6, 8 or 12 characters according to the precision.
    pub fn digits(&self) -> String {
        match self.precision {
            Precision::Year => format!("{:04}", self.year),
            Precision::Month => format!("{:04}{:02}", self.year, self.month),
            Precision::Day => format!("{:04}{:02}{:02}", self.year, self.month, self.day),
            Precision::Minute => format!(
                "{:04}{:02}{:02}{:02}{:02}",
                self.year, self.month, self.day, self.hour, self.minute
            ),
        }
    }

    /// The protobuf form.
    pub fn to_proto(&self) -> lienthong_proto::v1::PartialDateTime {
        use lienthong_proto::v1::DatePrecision as P;
        let precision = match self.precision {
            Precision::Year => P::Year,
            Precision::Month => P::Month,
            Precision::Day => P::Day,
            Precision::Minute => P::Minute,
        };
        lienthong_proto::v1::PartialDateTime {
            value: self.digits(),
            precision: precision as i32,
        }
    }

    /// Reads the protobuf form (its `value` digits carry everything).
    pub fn from_proto(p: &lienthong_proto::v1::PartialDateTime) -> Result<Self, IdError> {
        let v = p.value.trim();
        match v.len() {
            4 => Self::parse(&format!("{v}0000")),
            6 => Self::parse(&format!("{v}00")),
            _ => Self::parse(v),
        }
    }

    /// A `google.protobuf.Timestamp` of the earliest instant.
    pub fn to_timestamp(&self) -> prost_types::Timestamp {
        let t = self.earliest();
        prost_types::Timestamp {
            seconds: t.unix_timestamp(),
            nanos: 0,
        }
    }
}

/// As a reader writes it, to the precision known: `2026`, `2026-12`, `2026-12-06` or
/// `2026-12-06 15:23` (Vietnam time).
impl fmt::Display for XmlDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.year)?;
        if self.precision >= Precision::Month {
            write!(f, "-{:02}", self.month)?;
        }
        if self.precision >= Precision::Day {
            write!(f, "-{:02}", self.day)?;
        }
        if self.precision == Precision::Minute {
            write!(f, " {:02}:{:02}", self.hour, self.minute)?;
        }
        Ok(())
    }
}

impl fmt::Debug for XmlDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "XmlDateTime({})", self.digits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_both_lengths_and_partial_birth_dates() {
        let d = XmlDateTime::parse("202511031430").expect("valid");
        assert_eq!(d.precision(), Precision::Minute);
        assert_eq!(d.earliest().offset(), VIETNAM);
        assert_eq!(
            XmlDateTime::parse(" 20251103 ").expect("valid").precision(),
            Precision::Day
        );
        assert_eq!(
            XmlDateTime::parse("19800000").expect("valid").precision(),
            Precision::Year
        );
        assert_eq!(
            XmlDateTime::parse("19800300").expect("valid").digits(),
            "198003"
        );
    }

    #[test]
    fn shows_what_is_known_as_a_reader_writes_it() {
        let shown = |raw: &str| XmlDateTime::parse(raw).expect("valid").to_string();
        assert_eq!(shown("202612061523"), "2026-12-06 15:23");
        assert_eq!(shown("20261206"), "2026-12-06");
        assert_eq!(shown("19800300"), "1980-03");
        assert_eq!(shown("19800000"), "1980");
    }

    #[test]
    fn rejects_impossible_dates() {
        assert_eq!(
            XmlDateTime::parse("20250230").unwrap_err().code(),
            "xml_date.calendar"
        );
        assert_eq!(
            XmlDateTime::parse("202501011260").unwrap_err().code(),
            "xml_date.calendar"
        );
        assert_eq!(
            XmlDateTime::parse("2025010").unwrap_err().code(),
            "xml_date.length"
        );
        assert_eq!(
            XmlDateTime::parse("2025-01-01").unwrap_err().code(),
            "xml_date.charset"
        );
        assert_eq!(
            XmlDateTime::parse("20251301").unwrap_err().code(),
            "xml_date.calendar"
        );
    }

    proptest! {
        #[test]
        fn valid_dates_round_trip_through_proto(y in 1900i32..2100, m in 1u8..=12, d in 1u8..=28, h in 0u8..24, mi in 0u8..60) {
            let raw = format!("{y:04}{m:02}{d:02}{h:02}{mi:02}");
            let parsed = XmlDateTime::parse(&raw).expect("valid");
            prop_assert_eq!(parsed.digits(), raw);
            prop_assert_eq!(XmlDateTime::from_proto(&parsed.to_proto()).expect("valid"), parsed);
        }

        #[test]
        fn random_text_never_panics(s in ".{0,14}") {
            let _ = XmlDateTime::parse(&s);
        }
    }
}
