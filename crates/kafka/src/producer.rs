//! The idempotent producer: acks=all, and a send is finished only when the broker confirms it.

use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::connection::KafkaArgs;
use crate::error::{Error, Result};

/// Where Kafka stored a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Partition written.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
}

/// The largest record the producer sends (librdkafka `message.max.bytes`, its default): a
/// publisher may not produce more whatever a topic allows.
pub const MESSAGE_MAX_BYTES: usize = 1_000_000;

/// An idempotent Kafka producer (acks=all, enable.idempotence=true).
///
/// Idempotence keeps per-partition order and prevents duplicates from internal retries;
/// `send` resolves only on the delivery report, so callers never mistake "queued" for "stored".
#[derive(Clone)]
pub struct EventProducer {
    inner: FutureProducer,
}

impl EventProducer {
    /// Creates the producer. `delivery_timeout` bounds how long a message may wait for the
    /// broker before its send fails (librdkafka `message.timeout.ms`, default 300 s is too long
    /// for a synchronous answer to a facility).
    pub fn new(args: &KafkaArgs, delivery_timeout: Duration) -> Result<Self> {
        let mut cfg = args.client_config()?;
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.max.bytes", MESSAGE_MAX_BYTES.to_string())
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().to_string(),
            );
        let inner: FutureProducer = cfg.create().map_err(Error::Client)?;
        Ok(Self { inner })
    }

    /// Sends one keyed message and waits for the broker's acknowledgement.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<Delivery> {
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (name, value) in headers {
            owned = owned.insert(Header {
                key: name,
                value: Some(*value),
            });
        }
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(owned);
        let started = Instant::now();
        // Timeout::Never: a full local queue waits for room (backpressure) rather than failing;
        // message.timeout.ms still bounds the wait for the broker.
        let result = self.inner.send(record, Timeout::Never).await;
        metrics::histogram!(crate::metrics::PRODUCE_SECONDS.name, "topic" => topic.to_owned())
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(d) => {
                metrics::counter!(crate::metrics::PRODUCED.name, "topic" => topic.to_owned(), "outcome" => "ok").increment(1);
                Ok(Delivery {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Err((cause, _)) => {
                metrics::counter!(crate::metrics::PRODUCED.name, "topic" => topic.to_owned(), "outcome" => "error").increment(1);
                Err(Error::Delivery {
                    topic: topic.to_owned(),
                    cause,
                })
            }
        }
    }

    /// Waits until every queued message is delivered or `timeout` passes (used at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.inner.flush(timeout).map_err(Error::Kafka)
    }

    /// The underlying rdkafka producer, for metadata queries.
    pub fn client(&self) -> &FutureProducer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_message_that_cannot_reach_a_broker_fails_instead_of_being_acknowledged() {
        let args = KafkaArgs::local("127.0.0.1:1");
        let producer = EventProducer::new(&args, Duration::from_secs(2)).expect("producer");
        let err = producer
            .send("t", b"k", b"v", &[])
            .await
            .expect_err("must not be delivered");
        assert!(matches!(err, Error::Delivery { .. }), "{err}");
        // The reason is in the message itself, so every log line of it says why.
        assert!(err.to_string().contains("MessageTimedOut"), "{err}");
    }
}
