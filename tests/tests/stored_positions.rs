//! A consumer that starts from its own stored positions also tells Kafka about them: a process
//! killed between its write and its advisory commit must not show lag forever on a partition
//! that gets no new message.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use lienthong_kafka::EventProducer;
use lienthong_kafka::consumption::{SeekToStored, StoredPositions};
use lienthong_tests::{create_topic, require_kafka, unique_topic};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_positions_are_committed_on_assignment_and_reading_starts_there()
-> anyhow::Result<()> {
    let kafka = require_kafka();
    let topic = unique_topic("positions");
    create_topic(&kafka, &topic, 2).await?;
    let producer = EventProducer::new(&kafka, Duration::from_secs(30))?;
    for i in 0..5 {
        // One key: all five land in one partition; which one is librdkafka's choice.
        producer
            .send(&topic, b"patient", format!("m{i}").as_bytes(), &[])
            .await?;
    }
    let full = (0..2)
        .find(|p| {
            let probe: rdkafka::consumer::BaseConsumer = kafka
                .client_config()
                .expect("config")
                .create()
                .expect("probe");
            probe
                .fetch_watermarks(&topic, *p, Duration::from_secs(10))
                .map(|(_, high)| high == 5)
                .unwrap_or(false)
        })
        .expect("one partition holds the five messages");
    // The store had applied all five but died before its advisory commit.
    let positions = StoredPositions::default();
    positions.record(&topic, full, 5);
    let group = unique_topic("positions-group");
    let mut cfg = kafka.client_config()?;
    cfg.set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: StreamConsumer<SeekToStored<StoredPositions>> =
        cfg.create_with_context(SeekToStored {
            group: group.clone(),
            positions,
        })?;
    consumer.subscribe(&[&topic])?;

    let deadline = Instant::now() + Duration::from_secs(30);
    let committed = loop {
        // Nothing is to be read: the stored position is the end of the partition.
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            panic!("read {m:?} although everything was stored");
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, full);
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(5))?;
        let at = committed
            .find_partition(&topic, full)
            .map(|e| e.offset())
            .unwrap_or(Offset::Invalid);
        if at == Offset::Offset(5) || Instant::now() > deadline {
            break at;
        }
    };
    assert_eq!(
        committed,
        Offset::Offset(5),
        "the stored position is committed, so the group shows no lag"
    );
    Ok(())
}
