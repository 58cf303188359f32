//! Accumulates violations while walking a document.

use std::fmt::{self, Display};

use lienthong_proto::v1::PartialDateTime;
use time::OffsetDateTime;

use super::{Severity, ValidationContext, Violation};
use crate::datetime::XmlDateTime;
use crate::ids::IdError;

/// No electronic health record of Vietnam predates this: clinical dates and event times before
/// it are typing errors or defaults (year 1, 1900) that would make junk warehouse partitions.
pub(crate) const EARLIEST_RECORD: OffsetDateTime = time::macros::datetime!(1990-01-01 0:00 UTC);
/// The earliest birth date a living patient can have.
const EARLIEST_BIRTH: OffsetDateTime = time::macros::datetime!(1900-01-01 0:00 UTC);

/// Whether a value may be shown as is in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    /// Codes and numbers of facilities, services, diagnoses: not personal.
    Plain,
    /// Personal data: only a masked form appears.
    Masked,
}

/// A field below `parent`, written out only when a violation names it: every event is
/// validated and nearly all are valid, so formatting every path up front was a large share of
/// validation's cost.
#[derive(Clone, Copy)]
pub(crate) struct Field<'a>(pub &'a dyn Display, pub &'static str);

impl Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// Element `index` of the repeated field `name` below `parent`, written out on demand.
#[derive(Clone, Copy)]
pub(crate) struct Item<'a>(pub &'a dyn Display, pub &'static str, pub usize);

impl Display for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}[{}]", self.0, self.1, self.2)
    }
}

pub(crate) struct Checker<'a> {
    pub ctx: &'a ValidationContext,
    pub out: Vec<Violation>,
}

impl<'a> Checker<'a> {
    pub fn new(ctx: &'a ValidationContext) -> Self {
        Self {
            ctx,
            out: Vec::new(),
        }
    }

    pub fn push(
        &mut self,
        severity: Severity,
        code: &str,
        path: impl Display,
        value: Option<String>,
        en: String,
        vi: String,
    ) {
        self.out.push(Violation {
            code: code.to_owned(),
            severity,
            path: path.to_string(),
            value,
            message: en,
            message_vi: vi,
        });
    }

    pub fn error(
        &mut self,
        code: &str,
        path: impl Display,
        value: Option<String>,
        en: String,
        vi: String,
    ) {
        self.push(Severity::Error, code, path, value, en, vi);
    }

    /// A required text field; `xml` names the MoH field so staff can find it in their export.
    pub fn required(&mut self, path: impl Display, value: &str, xml: &str) -> bool {
        if value.trim().is_empty() {
            self.error(
                "required",
                path,
                None,
                format!("{xml} is required and is empty; fill it in the HIS export"),
                format!("Trường {xml} là bắt buộc nhưng đang để trống"),
            );
            return false;
        }
        true
    }

    /// Parses an identifier, reporting its error with code, path and (masked) value.
    pub fn id<T>(
        &mut self,
        path: impl Display,
        raw: &str,
        shown: Shown,
        parse: impl FnOnce(&str) -> Result<T, IdError>,
    ) -> Option<T> {
        match parse(raw) {
            Ok(v) => Some(v),
            Err(e) => {
                self.report_id(path, raw, shown, &e);
                None
            }
        }
    }

    pub fn report_id(&mut self, path: impl Display, raw: &str, shown: Shown, e: &IdError) {
        let value = match shown {
            Shown::Plain => raw.to_owned(),
            Shown::Masked => mask(raw),
        };
        self.error(&e.code(), path, Some(value), e.to_string(), e.message_vi());
    }

    /// An optional or required XML date of something clinical that has happened: not in the
    /// future, and not before electronic records existed.
    pub fn date(
        &mut self,
        path: impl Display + Copy,
        value: Option<&PartialDateTime>,
        required: Option<&str>,
    ) -> Option<XmlDateTime> {
        self.past_date(path, value, required, EARLIEST_RECORD)
    }

    /// A birth date: not in the future and not before 1900.
    pub fn birth_date(
        &mut self,
        path: impl Display + Copy,
        value: Option<&PartialDateTime>,
    ) -> Option<XmlDateTime> {
        self.past_date(path, value, None, EARLIEST_BIRTH)
    }

    fn past_date(
        &mut self,
        path: impl Display + Copy,
        value: Option<&PartialDateTime>,
        required: Option<&str>,
        earliest: OffsetDateTime,
    ) -> Option<XmlDateTime> {
        let parsed = self.date_shape(path, value, required)?;
        if parsed.earliest() > self.ctx.now + self.ctx.future_skew {
            self.error(
                "date.future",
                path,
                Some(parsed.digits()),
                "date lies in the future; check the HIS clock and the field".into(),
                "Ngày tháng ở tương lai; kiểm tra đồng hồ máy chủ HIS và giá trị trường".into(),
            );
        }
        self.not_before(path, &parsed, earliest);
        Some(parsed)
    }

    /// An XML date that lies ahead by nature (an appointment, the end of a validity): at most
    /// `years` ahead of now, and not before electronic records existed.
    pub fn date_ahead(
        &mut self,
        path: impl Display + Copy,
        value: Option<&PartialDateTime>,
        required: Option<&str>,
        years: i64,
    ) -> Option<XmlDateTime> {
        let parsed = self.date_shape(path, value, required)?;
        if parsed.earliest() > self.ctx.now + time::Duration::days(366 * years) {
            self.error(
                "date.too_far_ahead",
                path,
                Some(parsed.digits()),
                format!("date lies more than {years} years ahead; check the field"),
                format!("Ngày tháng cách hiện tại hơn {years} năm; kiểm tra giá trị trường"),
            );
        }
        self.not_before(path, &parsed, EARLIEST_RECORD);
        Some(parsed)
    }

    fn not_before(&mut self, path: impl Display, parsed: &XmlDateTime, earliest: OffsetDateTime) {
        if parsed.earliest() < earliest {
            let year = earliest.year();
            self.error(
                "date.too_early",
                path,
                Some(parsed.digits()),
                format!("date lies before {year}, which this field cannot hold; check the field"),
                format!(
                    "Ngày tháng trước năm {year}, không hợp lệ cho trường này; kiểm tra giá trị"
                ),
            );
        }
    }

    /// A protobuf timestamp of when something happened: a valid timestamp (RFC 3339 range,
    /// nanos below one second), not before 1990 and not in the future beyond the clock skew.
    /// Without these bounds a value near year 9999 passes here and breaks every sink that
    /// converts it to Vietnam time (UTC+7 overflows the calendar).
    pub fn instant(
        &mut self,
        path: impl Display + Copy,
        value: Option<&prost_types::Timestamp>,
        required: bool,
    ) {
        let Some(t) = value else {
            if required {
                self.required(path, "", &path.to_string());
            }
            return;
        };
        let earliest = EARLIEST_RECORD;
        let at = time::OffsetDateTime::from_unix_timestamp(t.seconds)
            .ok()
            .filter(|_| (0..1_000_000_000).contains(&t.nanos));
        // Shown only with an error: this runs for every timestamp of every event.
        let shown = || Some(format!("{}s {}ns", t.seconds, t.nanos));
        match at {
            None => self.error(
                "timestamp.invalid",
                path,
                shown(),
                "not a valid timestamp (seconds out of range or nanos not in 0..999,999,999)"
                    .into(),
                "Dấu thời gian không hợp lệ (giây ngoài phạm vi hoặc nano giây sai)".into(),
            ),
            Some(at) if at < earliest => self.error(
                "timestamp.too_early",
                path,
                shown(),
                "timestamp lies before 1990, before any electronic record; check the HIS clock \
                 and the field"
                    .into(),
                "Dấu thời gian trước năm 1990; kiểm tra đồng hồ máy chủ HIS và giá trị trường"
                    .into(),
            ),
            Some(at) if at > self.ctx.now + self.ctx.future_skew => self.error(
                "timestamp.future",
                path,
                shown(),
                "timestamp lies in the future; check the HIS clock".into(),
                "Dấu thời gian ở tương lai; kiểm tra đồng hồ máy chủ HIS".into(),
            ),
            Some(_) => {}
        }
    }

    /// An optional or required XML date that may lie in the future (validity ends, appointments).
    pub fn date_shape(
        &mut self,
        path: impl Display + Copy,
        value: Option<&PartialDateTime>,
        required: Option<&str>,
    ) -> Option<XmlDateTime> {
        let raw = value.map(|p| p.value.as_str()).unwrap_or("");
        if raw.trim().is_empty() {
            if let Some(xml) = required {
                self.required(path, "", xml);
            }
            return None;
        }
        let v = value?;
        self.id(path, raw, Shown::Plain, |_| XmlDateTime::from_proto(v))
    }
}

/// Masks all but the last two characters of a personal value.
pub(crate) fn mask(raw: &str) -> String {
    crate::ids::citizen_mask(raw.trim())
}
