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
/// Header holding the reason code (`Reason::as_str`).
pub const REASON: &str = "lienthong-error-code";

/// Why a consumer gave up on a message: a stable code for dashboards, alerts and `lienthong
/// dlq`, beside the readable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not a framed message of a known schema, or its payload does not decode.
    Undecodable,
    /// Decoded, but the document breaks a validation rule.
    Invalid,
    /// Valid, but a value does not fit this sink (it cannot be mapped to its rows).
    Unfit,
    /// The sink's database refused the message's rows.
    Refused,
    /// The document version is stored with other content.
    Conflict,
}

impl Reason {
    /// The code in the header and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::Invalid => "invalid",
            Self::Unfit => "unfit",
            Self::Refused => "refused",
            Self::Conflict => "conflict",
        }
    }

    /// Every reason.
    pub const ALL: [Self; 5] = [
        Self::Undecodable,
        Self::Invalid,
        Self::Unfit,
        Self::Refused,
        Self::Conflict,
    ];
}

/// Sends each of `letters` (message, reason, error) as `send` does, all at once: they are
/// queued in the order given (so one partition of the DLQ keeps it) and this waits until the
/// broker has every one. A batch's dead letters then cost one round trip, not one each.
pub async fn send_all(
    producer: &EventProducer,
    dlq_topic: &str,
    group: &str,
    letters: &[(&OwnedMessage, Reason, String)],
) -> Result<Vec<Delivery>> {
    // try_join_all polls its futures in order, and each queues its record at its first poll.
    futures::future::try_join_all(
        letters.iter().map(|(message, reason, error)| {
            send(producer, dlq_topic, group, message, *reason, error)
        }),
    )
    .await
}

/// Sends `message` (key and payload unchanged) to `dlq_topic` with origin headers and waits for
/// the broker: the caller may move its offset past the message only after this succeeds.
pub async fn send(
    producer: &EventProducer,
    dlq_topic: &str,
    group: &str,
    message: &OwnedMessage,
    reason: Reason,
    error: &str,
) -> Result<Delivery> {
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let headers: [(&str, &[u8]); 6] = [
        (ORIGIN_TOPIC, message.topic().as_bytes()),
        (ORIGIN_PARTITION, partition.as_bytes()),
        (ORIGIN_OFFSET, offset.as_bytes()),
        (CONSUMER_GROUP, group.as_bytes()),
        (REASON, reason.as_str().as_bytes()),
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
    metrics::counter!(crate::metrics::DEAD_LETTERS.name, "topic" => message.topic().to_owned(), "group" => group.to_owned(), "reason" => reason.as_str()).increment(1);
    tracing::warn!(
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        group,
        reason = reason.as_str(),
        error,
        "message dead-lettered"
    );
    Ok(d)
}
