//! A real Kafka on the wire: the idempotent producer writes 10,000 keyed messages, a consumer
//! group reads all of them back in per-key order, and kcat independently counts the same topic.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lienthong_kafka::EventProducer;
use lienthong_tests::{create_topic, require_kafka, unique_topic};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};

const MESSAGES: usize = 10_000;
const KEYS: usize = 97;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keyed_messages_come_back_in_per_key_order() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let topic = unique_topic("roundtrip");
    create_topic(&kafka, &topic, 6).await?;

    let producer = EventProducer::new(&kafka, Duration::from_secs(60))?;
    let sends = futures::stream::iter((0..MESSAGES).map(|i| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            let key = format!("patient-{}", i % KEYS);
            // Sequence per key in the payload, so order can be checked on the way back.
            let payload = format!("{}:{}", key, i / KEYS);
            producer
                .send(
                    &topic,
                    key.as_bytes(),
                    payload.as_bytes(),
                    &[("lienthong-test", b"1")],
                )
                .await
        }
    }))
    // Ordered issue (buffered, not unordered) keeps each key's sends in sequence.
    .buffered(512)
    .collect::<Vec<_>>()
    .await;
    let mut per_partition: HashMap<i32, usize> = HashMap::new();
    for d in sends {
        *per_partition.entry(d?.partition).or_default() += 1;
    }
    assert_eq!(per_partition.values().sum::<usize>(), MESSAGES);
    assert!(
        per_partition.len() > 1,
        "keys should spread over partitions: {per_partition:?}"
    );

    let mut cfg = kafka.client_config()?;
    cfg.set(
        "group.id",
        format!("lienthong-test-{}", uuid::Uuid::new_v4()),
    )
    .set("auto.offset.reset", "earliest")
    .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = cfg.create()?;
    consumer.subscribe(&[&topic])?;
    let mut next_seq: HashMap<String, usize> = HashMap::new();
    let mut received = 0usize;
    let deadline = Instant::now() + Duration::from_secs(90);
    while received < MESSAGES {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(remaining, consumer.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!("only {received} of {MESSAGES} messages arrived within 90 s")
            })??;
        let key = String::from_utf8(msg.key().unwrap_or_default().to_vec())?;
        let payload = std::str::from_utf8(msg.payload().unwrap_or_default())?;
        let (pkey, seq) = payload
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("bad payload {payload}"))?;
        assert_eq!(pkey, key);
        let expected = next_seq.entry(key.clone()).or_default();
        assert_eq!(seq.parse::<usize>()?, *expected, "key {key} out of order");
        *expected += 1;
        received += 1;
    }
    assert_eq!(next_seq.len(), KEYS);
    drop(consumer);

    // kcat speaks the Kafka protocol itself: an independent reader, as the admin principal.
    let client_config = std::env::var("LIENTHONG_KAFKA_CLIENT_CONFIG").map_err(|_| {
        anyhow::anyhow!("LIENTHONG_KAFKA_CLIENT_CONFIG is not set; run deploy/local/test")
    })?;
    let out = Command::new("kcat")
        .args([
            "-F",
            &client_config,
            "-C",
            "-b",
            &kafka.bootstrap,
            "-t",
            &topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k\n",
        ])
        .output()
        .map_err(|e| anyhow::anyhow!("kcat not runnable ({e}); deploy/local/test installs it"))?;
    assert!(
        out.status.success(),
        "kcat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8(out.stdout)?.lines().count();
    assert_eq!(lines, MESSAGES, "kcat saw a different count");
    Ok(())
}
