//! How consumers cut batches, on a real broker: while the stage a batch goes to is busy, the
//! batch fills up to its maximum or its deadline; once the stage is free, it is cut as soon as
//! nothing more is waiting, so an event never waits out a fill deadline on an idle consumer.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use lienthong_kafka::EventProducer;
use lienthong_kafka::consumption::{StageFree, fill_batch};
use lienthong_tests::{create_topic, require_kafka, unique_topic};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const MESSAGES: usize = 200;

/// A fresh one-partition topic holding `MESSAGES` messages, and a consumer assigned to it
/// from the start whose buffer already holds them all.
async fn filled_topic() -> anyhow::Result<StreamConsumer> {
    let kafka = require_kafka();
    let topic = unique_topic("batches");
    create_topic(&kafka, &topic, 1).await?;
    let producer = EventProducer::new(&kafka, Duration::from_secs(60))?;
    for i in 0..MESSAGES {
        producer
            .send(&topic, b"k", format!("{i}").as_bytes(), &[])
            .await?;
    }
    let mut cfg = kafka.client_config()?;
    cfg.set(
        "group.id",
        format!("lienthong-test-{}", uuid::Uuid::new_v4()),
    )
    .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    // Everything fetched before the batches are cut: read it all once while busy, then seek
    // back (the messages stay in librdkafka's buffer of the partition).
    let (_busy, mut free) = StageFree::busy();
    let all = fill(&consumer, MESSAGES, Duration::from_secs(60), &mut free).await;
    assert_eq!(all.len(), MESSAGES, "the topic's messages within 60 s");
    consumer.seek(&topic, 0, Offset::Beginning, Duration::from_secs(10))?;
    Ok(consumer)
}

/// One batch of at most `max` messages, filled for at most `wait`.
async fn fill(
    consumer: &StreamConsumer,
    max: usize,
    wait: Duration,
    free: &mut StageFree,
) -> Vec<OwnedMessage> {
    let mut batch = Vec::new();
    fill_batch(
        consumer,
        &mut batch,
        max,
        wait,
        free,
        &CancellationToken::new(),
    )
    .await;
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_stage_lets_the_batch_fill_to_its_maximum_or_its_deadline() -> anyhow::Result<()> {
    let consumer = filled_topic().await?;
    let (_busy, mut free) = StageFree::busy();
    let batch = fill(&consumer, 50, Duration::from_secs(60), &mut free).await;
    assert_eq!(batch.len(), 50, "filled to its maximum");

    // 150 are left; a maximum of 1,000 is never reached, so the deadline cuts the batch.
    let started = Instant::now();
    let batch = fill(&consumer, 1_000, Duration::from_secs(2), &mut free).await;
    assert_eq!(
        batch.len(),
        MESSAGES - 50,
        "everything left, after the deadline"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "a busy stage's batch waits for its deadline: {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_stage_takes_what_waits_without_waiting_for_the_deadline() -> anyhow::Result<()> {
    let consumer = filled_topic().await?;
    let started = Instant::now();
    let mut taken = 0;
    let mut batches = 0;
    while taken < MESSAGES {
        let batch = fill(
            &consumer,
            10_000,
            Duration::from_secs(600),
            &mut StageFree::now(),
        )
        .await;
        assert!(
            !batch.is_empty(),
            "a batch is cut only with a message in it"
        );
        taken += batch.len();
        batches += 1;
    }
    assert_eq!(taken, MESSAGES);
    // Against a 600 s deadline per batch: only the cut on a free stage ends these early.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{batches} batches took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_freed_during_the_fill_cuts_the_batch() -> anyhow::Result<()> {
    let consumer = filled_topic().await?;
    let (busy, mut free) = StageFree::busy();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(busy);
    });
    let started = Instant::now();
    let batch = fill(&consumer, 10_000, Duration::from_secs(600), &mut free).await;
    release.await?;
    assert_eq!(batch.len(), MESSAGES, "everything that waited");
    assert!(
        started.elapsed() >= Duration::from_millis(500)
            && started.elapsed() < Duration::from_secs(60),
        "cut when the stage was freed: {:?}",
        started.elapsed()
    );
    Ok(())
}
