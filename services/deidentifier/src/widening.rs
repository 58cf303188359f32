//! Age band widenings outlive the instance that made them: each is published to a compacted
//! topic (keyed `<policy version>/<width>`) in the transaction of the first analytics events
//! under the wider bands, and every instance follows that topic from the beginning.
//!
//! Invariants kept here:
//! - Within one policy version the bands only ever widen: an instance publishes under the
//!   widest width any instance recorded for its version, from its start on, so a restart or a
//!   second instance never returns to narrower bands the risk had ruled out.
//! - Another policy version starts again from its own narrowest width (its fields may differ).
//! - A record that does not decode, or names a width the policy does not list, never narrows
//!   anything: it is logged and, when it names a width, the next listed width at least as wide
//!   is taken.

use std::sync::atomic::{AtomicU8, Ordering};

use lienthong_proto::v1 as pb;
use prost::Message as _;

use crate::risk::Risk;

/// Full name of the record's message, for the registry.
pub const MESSAGE: &str = "lienthong.v1.AgeBandWidening";

/// The widest age band width recorded for one policy version, as the topic tells it.
#[derive(Debug)]
pub struct Widenings {
    policy_version: String,
    /// 0 while none is recorded.
    widest: AtomicU8,
}

impl Widenings {
    /// Nothing recorded yet for `policy_version`.
    pub fn new(policy_version: &str) -> Self {
        Self {
            policy_version: policy_version.to_owned(),
            widest: AtomicU8::new(0),
        }
    }

    /// Applies one record of the topic (a registry-framed `AgeBandWidening`).
    pub fn apply_record(&self, payload: &[u8]) {
        let decoded = lienthong_registry::frame::parse(payload)
            .map_err(|e| e.to_string())
            .and_then(|f| pb::AgeBandWidening::decode(f.payload).map_err(|e| e.to_string()));
        match decoded {
            Ok(w) if w.policy_version == self.policy_version => {
                let years = u8::try_from(w.age_band_years).unwrap_or(u8::MAX);
                let before = self.widest.fetch_max(years, Ordering::Relaxed);
                if years > before {
                    tracing::info!(
                        policy = %w.policy_version,
                        age_band_years = years,
                        "an age band widening is recorded for this policy"
                    );
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %e,
                "a record of the age band widenings topic does not decode; skipped"
            ),
        }
    }

    /// The widest width recorded, if any.
    pub fn widest(&self) -> Option<u8> {
        match self.widest.load(Ordering::Relaxed) {
            0 => None,
            w => Some(w),
        }
    }
}

/// The width to publish under once `recorded` is known: the narrowest of `widths` at least as
/// wide as `recorded` (the widest of them when `recorded` is wider than all), and never
/// narrower than `current`. None to keep `current`.
pub fn adopted_width(recorded: Option<u8>, current: u8, widths: &[u8]) -> Option<u8> {
    let recorded = recorded.filter(|&r| r > current)?;
    let widest = widths.iter().copied().max()?;
    let width = widths
        .iter()
        .copied()
        .find(|&w| w >= recorded)
        .unwrap_or(widest);
    (width > current).then_some(width)
}

/// The record of a widening to `width`: its key and its (unframed) protobuf payload.
pub fn record(
    policy_version: &str,
    width: u8,
    risk: &Risk,
    k_floor: usize,
    now: std::time::SystemTime,
) -> (String, Vec<u8>) {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let widening = pb::AgeBandWidening {
        policy_version: policy_version.to_owned(),
        age_band_years: u32::from(width),
        widened_at: Some(prost_types::Timestamp {
            seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
        }),
        min_group: u32::try_from(risk.min_group).unwrap_or(u32::MAX),
        k_floor: u32::try_from(k_floor).unwrap_or(u32::MAX),
    };
    (
        format!("{policy_version}/{width}"),
        widening.encode_to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        // Magic byte, schema id 7, message index [0] (one zero byte), then the payload.
        let mut out = vec![0, 0, 0, 0, 7, 0];
        out.extend_from_slice(payload);
        out
    }

    fn widening(version: &str, width: u8) -> Vec<u8> {
        let risk = Risk {
            events: 10,
            min_group: 1,
            share_below_floor: 0.5,
        };
        let (key, payload) = record(version, width, &risk, 5, std::time::SystemTime::now());
        assert_eq!(key, format!("{version}/{width}"));
        framed(&payload)
    }

    #[test]
    fn the_widest_width_of_the_same_policy_version_is_kept() {
        let w = Widenings::new("2026.12-1");
        assert_eq!(w.widest(), None);
        w.apply_record(&widening("2026.12-1", 20));
        w.apply_record(&widening("2026.12-1", 10));
        w.apply_record(&widening("2025.01-1", 40));
        assert_eq!(
            w.widest(),
            Some(20),
            "a narrower or older-policy record never narrows nor counts"
        );
    }

    #[test]
    fn a_record_that_does_not_decode_changes_nothing() {
        let w = Widenings::new("v");
        w.apply_record(b"not framed");
        w.apply_record(&framed(&[0xff, 0xff, 0xff]));
        assert_eq!(w.widest(), None);
    }

    #[test]
    fn the_adopted_width_is_a_listed_one_and_never_narrower() {
        let widths = [5, 10, 20];
        assert_eq!(adopted_width(None, 5, &widths), None);
        assert_eq!(adopted_width(Some(10), 5, &widths), Some(10));
        assert_eq!(adopted_width(Some(10), 10, &widths), None);
        assert_eq!(adopted_width(Some(5), 10, &widths), None, "never narrows");
        assert_eq!(
            adopted_width(Some(7), 5, &widths),
            Some(10),
            "an unlisted width rounds up"
        );
        assert_eq!(
            adopted_width(Some(30), 5, &widths),
            Some(20),
            "wider than all: the widest listed"
        );
    }
}
