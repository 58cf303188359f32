//! A control topic (token revocations, age band widenings) followed whole, on the real broker:
//! a partition added while the follower runs is read too, so a revocation that lands on it
//! takes effect within seconds without a restart.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use lienthong_kafka::follow::Follower;
use lienthong_tests::{
    add_partitions, create_topic, producer_seeing_new_partitions, require_kafka, unique_topic,
    write_to_partition,
};
use rdkafka::producer::FutureProducer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Grows `topic` from one partition to two and writes a record to the new one; when it was
/// written.
async fn add_a_partition_and_write_to_it(
    kafka: &lienthong_kafka::KafkaArgs,
    producer: &FutureProducer,
    topic: &str,
) -> anyhow::Result<Instant> {
    add_partitions(kafka, topic, 2).await?;
    write_to(producer, topic, 1, "on the added partition").await?;
    Ok(Instant::now())
}

async fn write_to(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    payload: &str,
) -> anyhow::Result<()> {
    write_to_partition(producer, topic, partition, payload.as_bytes()).await
}

/// The next payload the follower applied, within `within`.
async fn next(applied: &mut mpsc::Receiver<String>, within: Duration) -> String {
    tokio::time::timeout(within, applied.recv())
        .await
        .unwrap_or_else(|_| panic!("nothing applied within {within:?}"))
        .expect("follower alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_added_while_following_is_read_within_seconds() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let topic = unique_topic("follow");
    create_topic(&kafka, &topic, 1).await?;
    let producer = producer_seeing_new_partitions(&kafka)?;
    write_to(&producer, &topic, 0, "before the start").await?;

    let (tx, mut applied) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let apply = move |payload: &[u8]| {
        let _ = tx.try_send(String::from_utf8_lossy(payload).into_owned());
    };
    let follower = Follower::start(&kafka, Some(&topic), apply, &shutdown)
        .await?
        .expect("a topic is given");
    assert_eq!(
        next(&mut applied, Duration::from_secs(10)).await,
        "before the start"
    );

    let written = add_a_partition_and_write_to_it(&kafka, &producer, &topic).await?;
    // Looked for every 5 s; the record is read from the partition's beginning.
    assert_eq!(
        next(&mut applied, Duration::from_secs(20)).await,
        "on the added partition"
    );
    println!("read {:?} after it was written", written.elapsed());

    // The first partition is still followed.
    write_to(&producer, &topic, 0, "after").await?;
    assert_eq!(next(&mut applied, Duration::from_secs(10)).await, "after");
    follower.stop().await;
    lienthong_tests::delete_topics(&kafka, &[&topic]).await
}

/// A consumer group member (the warehouse loader, the de-identification service) sees a
/// partition added to its topic within the 30 s metadata refresh every client is given, and
/// reads it from its beginning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_reads_a_partition_added_while_it_runs() -> anyhow::Result<()> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{Consumer as _, StreamConsumer};
    let kafka = require_kafka();
    let topic = unique_topic("group-grows");
    create_topic(&kafka, &topic, 1).await?;
    let consumer: StreamConsumer = kafka
        .client_config()?
        .set(
            "group.id",
            format!("lienthong-test-{}", uuid::Uuid::new_v4()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let producer = producer_seeing_new_partitions(&kafka)?;
    write_to(&producer, &topic, 0, "first").await?;
    // Detached: a message still referring to the consumer would hang its drop.
    let first = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await??
        .detach();
    assert_eq!(first.payload(), Some(&b"first"[..]));

    let written = add_a_partition_and_write_to_it(&kafka, &producer, &topic).await?;
    // The rebalance that adds the partition hands partition 0 back from its committed
    // position (none here): "first" may come again before the new record.
    let deadline = written + Duration::from_secs(60);
    let m = loop {
        let m = tokio::time::timeout_at(deadline.into(), consumer.recv())
            .await
            .map_err(|_| anyhow::anyhow!("the added partition was not read within 60 s"))??
            .detach();
        if m.partition() == 1 {
            break m;
        }
    };
    assert_eq!(m.payload(), Some(&b"on the added partition"[..]));
    println!("read {:?} after it was written", written.elapsed());
    drop(consumer);
    lienthong_tests::delete_topics(&kafka, &[&topic]).await
}
