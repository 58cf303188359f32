//! Accumulates violations while walking a document.

use std::fmt::{self, Display};

use lienthong_proto::v1::PartialDateTime;

use super::{Severity, ValidationContext, Violation};
use crate::datetime::XmlDateTime;
use crate::ids::IdError;

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

    /// A text that sinks store as text: PostgreSQL cannot hold a NUL character, so an event
    /// carrying one is refused here rather than stalling the warehouse behind it.
    pub fn text(&mut self, path: impl Display, value: &str) {
        if value.contains('\0') {
            self.error(
                "text.nul",
                path,
                None,
                "the text contains a NUL character (0x00); remove it in the HIS export".into(),
                "Văn bản chứa ký tự NUL (0x00); hãy loại bỏ trong dữ liệu xuất từ HIS".into(),
            );
        }
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

    /// An optional or required XML date that records the past: it may not lie in the future.
    pub fn date(
        &mut self,
        path: impl Display + Copy,
        value: Option<&PartialDateTime>,
        required: Option<&str>,
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
        Some(parsed)
    }

    /// A protobuf timestamp of when something happened: a valid timestamp (RFC 3339 range,
    /// nanos below one second), not before 1900 and not in the future beyond the clock skew.
    /// Without these bounds a value near year 9999 passes here and breaks every sink that
    /// converts it to Vietnam time (UTC+7 overflows the calendar).
    pub fn instant(&mut self, path: impl Display + Copy, value: Option<&prost_types::Timestamp>) {
        let Some(t) = value else { return };
        let earliest = time::macros::datetime!(1900-01-01 0:00 UTC);
        let at = time::OffsetDateTime::from_unix_timestamp(t.seconds)
            .ok()
            .filter(|_| (0..1_000_000_000).contains(&t.nanos));
        let shown = Some(format!("{}s {}ns", t.seconds, t.nanos));
        match at {
            None => self.error(
                "timestamp.invalid",
                path,
                shown,
                "not a valid timestamp (seconds out of range or nanos not in 0..999,999,999)"
                    .into(),
                "Dấu thời gian không hợp lệ (giây ngoài phạm vi hoặc nano giây sai)".into(),
            ),
            Some(at) if at < earliest => self.error(
                "timestamp.too_early",
                path,
                shown,
                "timestamp lies before 1900; check the HIS clock and the field".into(),
                "Dấu thời gian trước năm 1900; kiểm tra đồng hồ máy chủ HIS và giá trị trường"
                    .into(),
            ),
            Some(at) if at > self.ctx.now + self.ctx.future_skew => self.error(
                "timestamp.future",
                path,
                shown,
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
