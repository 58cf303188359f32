//! Validation of whole documents: every violation at once, each with a stable code, the field
//! path, the offending value (masked when personal) and a message in English and Vietnamese that
//! a facility's IT staff can act on.

mod checker;
mod common;
mod documents;
mod text;

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

pub use common::MAX_DOCUMENT_VERSION;
pub use documents::{validate_appointment, validate_lab_result, validate_referral};

/// Whether a violation blocks the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Reported; the event is still accepted.
    Warning,
    /// The event is rejected.
    Error,
}

/// One problem found in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Stable machine-readable code, e.g. `required`, `citizen_id.length`, `referral.same_facility`.
    pub code: String,
    /// Error or warning.
    pub severity: Severity,
    /// Path of the field in the event message, e.g. `slip.patient.citizen_id`.
    pub path: String,
    /// The offending value, masked when it is personal data; None when absent.
    pub value: Option<String>,
    /// What is wrong and what to do, in English.
    pub message: String,
    /// The same, in Vietnamese.
    pub message_vi: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev} {} at {}: {}", self.code, self.path, self.message)?;
        if let Some(v) = &self.value {
            write!(f, " (value {v:?})")?;
        }
        Ok(())
    }
}

/// What validation needs to know about the world.
#[derive(Debug, Clone, Copy)]
pub struct ValidationContext {
    /// The current time.
    pub now: OffsetDateTime,
    /// How far in the future a date may lie before it is an error (clock skew at facilities).
    pub future_skew: Duration,
}

impl ValidationContext {
    /// Context at the current time with a 10-minute skew allowance.
    pub fn now() -> Self {
        Self {
            now: OffsetDateTime::now_utc(),
            future_skew: Duration::from_secs(600),
        }
    }
}

/// True when any violation is an error.
pub fn has_errors(violations: &[Violation]) -> bool {
    violations.iter().any(|v| v.severity == Severity::Error)
}
