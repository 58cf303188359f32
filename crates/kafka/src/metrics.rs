//! Metrics of the Kafka hops every service shares: producing, consumer lag, dead letters.

use lienthong_telemetry::{Metric, describe, zero};

/// `lienthong_kafka_produce_seconds`: time from produce to the broker's acknowledgement (acks=all)
pub const PRODUCE_SECONDS: Metric = Metric::histogram(
    "lienthong_kafka_produce_seconds",
    &["topic"],
    "Time from produce to the broker's acknowledgement (acks=all)",
);

/// `lienthong_kafka_produced_total`: messages produced, by outcome (ok or error)
pub const PRODUCED: Metric = Metric::counter(
    "lienthong_kafka_produced_total",
    &["topic", "outcome"],
    "Messages produced, by outcome (ok or error)",
);

/// `lienthong_consumer_lag`: messages behind the end of each partition, as the consumer sees it
pub const CONSUMER_LAG: Metric = Metric::gauge(
    "lienthong_consumer_lag",
    &["group", "topic", "partition"],
    "Messages behind the end of each partition, as the consumer sees it",
);

/// `lienthong_dead_letters_total`: messages sent to the dead-letter topic, by the topic they came from and the consumer group
pub const DEAD_LETTERS: Metric = Metric::counter(
    "lienthong_dead_letters_total",
    &["topic", "group", "reason"],
    "Messages sent to the dead-letter topic, by the topic they came from, the consumer group and the reason code",
);

/// Every metric this crate exports.
pub const ALL: &[Metric] = &[PRODUCE_SECONDS, PRODUCED, CONSUMER_LAG, DEAD_LETTERS];

/// Describes these metrics and starts the dead-letter counters of a consumer `group` reading
/// `topics` at zero.
pub fn register_consumer(group: &str, topics: &[&str]) {
    describe(ALL);
    for topic in topics {
        for reason in crate::dlq::Reason::ALL {
            zero(
                &DEAD_LETTERS,
                &[
                    ("topic", (*topic).to_owned()),
                    ("group", group.to_owned()),
                    ("reason", reason.as_str().to_owned()),
                ],
            );
        }
    }
}
