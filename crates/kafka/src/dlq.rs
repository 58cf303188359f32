//! Dead letters: a message a consumer cannot process goes to the dead-letter topic with its
//! origin and the reason, so the partition can move on and an operator can replay it later.

use rdkafka::message::{Message, OwnedMessage};

use crate::error::Result;
use crate::producer::{Delivery, EventProducer};

/// Header naming the topic the message was read from.
pub const ORIGIN_TOPIC: &str = "lienthong-origin-topic";
/// Header naming its partition.
pub const ORIGIN_PARTITION: &str = "lienthong-origin-partition";
/// Header naming its offset.
pub const ORIGIN_OFFSET: &str = "lienthong-origin-offset";
/// Header naming the consumer group that gave up on it.
pub const CONSUMER_GROUP: &str = "lienthong-consumer-group";
/// Header holding the error.
pub const ERROR: &str = "lienthong-error";

/// Sends `message` (key and payload unchanged) to `dlq_topic` with origin headers and waits for
/// the broker: the caller may move its offset past the message only after this succeeds.
pub async fn send(
    producer: &EventProducer,
    dlq_topic: &str,
    group: &str,
    message: &OwnedMessage,
    error: &str,
) -> Result<Delivery> {
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let headers: [(&str, &[u8]); 5] = [
        (ORIGIN_TOPIC, message.topic().as_bytes()),
        (ORIGIN_PARTITION, partition.as_bytes()),
        (ORIGIN_OFFSET, offset.as_bytes()),
        (CONSUMER_GROUP, group.as_bytes()),
        (ERROR, error.as_bytes()),
    ];
    let d = producer
        .send(
            dlq_topic,
            message.key().unwrap_or_default(),
            message.payload().unwrap_or_default(),
            &headers,
        )
        .await?;
    metrics::counter!(crate::metrics::DEAD_LETTERS.name, "topic" => message.topic().to_owned(), "group" => group.to_owned()).increment(1);
    tracing::warn!(
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        group,
        error,
        "message dead-lettered"
    );
    Ok(d)
}
