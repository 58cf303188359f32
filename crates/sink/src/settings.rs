//! The client settings of a sink's consumer.

use lienthong_kafka::KafkaArgs;
use lienthong_kafka::consumption::STATISTICS_INTERVAL_MS;
use rdkafka::ClientConfig;

/// A consumer of `group` that keeps its offsets with its writes: nothing is committed or
/// stored by librdkafka on its own (the sink commits, advisory, after its write); a partition
/// never seen starts at the beginning; statistics feed the lag gauge. `session_timeout_ms`
/// is for a group member; a reader that assigns its partitions itself has no session.
pub fn sink_consumer_config(
    kafka: &KafkaArgs,
    group: &str,
    session_timeout_ms: Option<u64>,
) -> lienthong_kafka::Result<ClientConfig> {
    let mut cfg = kafka.client_config()?;
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    if let Some(ms) = session_timeout_ms {
        cfg.set("session.timeout.ms", ms.to_string());
    }
    Ok(cfg)
}
