//! Freshness: how long an event took from its acceptance at the gateway (the Kafka timestamp
//! the gateway's producer gave it, which the de-identification service carries over to the
//! analytics record) to being stored by a sink.

use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;

/// Seconds from `accepted_at_ms` (ms since the epoch) to `now_ms`; a clock that puts the
/// acceptance in the future counts as no delay.
pub fn seconds_since(accepted_at_ms: i64, now_ms: i64) -> f64 {
    (now_ms.saturating_sub(accepted_at_ms)).max(0) as f64 / 1000.0
}

/// Records, in the histogram `metric`, the freshness of every message of a batch just stored.
/// Messages without a timestamp are left out.
pub fn record(metric: &'static str, stored: &[OwnedMessage]) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let histogram = metrics::histogram!(metric);
    for m in stored {
        if let Some(ts) = m.timestamp().to_millis() {
            histogram.record(seconds_since(ts, now_ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_is_the_delay_since_acceptance_and_never_negative() {
        assert_eq!(seconds_since(1_000, 1_250), 0.25);
        assert_eq!(
            seconds_since(5_000, 4_000),
            0.0,
            "a clock behind the producer's"
        );
        assert_eq!(seconds_since(i64::MIN, 0), i64::MAX as f64 / 1000.0);
    }
}
