//! Broker stopped mid-stream: callers get UNAVAILABLE, never ACCEPTED; after the broker is
//! back, retried events are accepted and nothing acknowledged earlier is missing.
//!
//! This file stops and restarts the local Kafka with deploy/local/kafka/{stop,start}; cargo
//! runs test binaries one at a time, and this binary holds a single test, so nothing else is
//! talking to the broker meanwhile.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashSet;
use std::time::Duration;

use lienthong_proto::v1 as pb;
use lienthong_tests::StackComponentStopped;
use lienthong_tests::gateway::{events_from, request, start_gateway};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;

async fn event_ids_in(topics: &[String]) -> anyhow::Result<HashSet<String>> {
    let args = lienthong_tests::kafka();
    let mut cfg = args.client_config()?;
    cfg.set(
        "group.id",
        format!("lienthong-outage-{}", uuid::Uuid::new_v4()),
    )
    .set("auto.offset.reset", "earliest")
    .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = cfg.create()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let mut ids = HashSet::new();
    while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_secs(8), consumer.recv()).await {
        if let Some(h) = msg.headers() {
            for header in h.iter().filter(|h| h.key == "lienthong-event-id") {
                ids.insert(String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned());
            }
        }
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_is_unavailable_never_accepted_and_nothing_acknowledged_is_lost()
-> anyhow::Result<()> {
    let gw = start_gateway(|c| c.produce_timeout_ms = 4_000).await?;
    let mut client = gw.client_with_cert("79025").await?;
    let mut acknowledged: HashSet<String> = HashSet::new();
    let mut note = |resp: &pb::PublishResponse| {
        for r in &resp.results {
            if r.outcome == pb::Outcome::Accepted as i32
                || r.outcome == pb::Outcome::Duplicate as i32
            {
                acknowledged.insert(r.event_id.clone());
            }
        }
    };

    let before = client
        .publish(request(events_from("79025", 500, 30)))
        .await?
        .into_inner();
    assert!(
        before
            .results
            .iter()
            .all(|r| r.outcome == pb::Outcome::Accepted as i32)
    );
    note(&before);

    let stopped = tokio::task::spawn_blocking(|| StackComponentStopped::stop("kafka")).await??;
    let during_events = events_from("79025", 501, 30);
    let during = client
        .publish(request(during_events.clone()))
        .await?
        .into_inner();
    for r in &during.results {
        assert_eq!(
            r.outcome,
            pb::Outcome::Unavailable as i32,
            "with the broker down an event must not be ACCEPTED: {r:?}"
        );
        assert!(r.retry_after_ms > 0);
    }

    drop(stopped); // restarts Kafka and waits until it is ready
    // Retry until accepted: the producer reconnects by itself.
    let mut retried = None;
    for _ in 0..30 {
        let resp = client
            .publish(request(during_events.clone()))
            .await?
            .into_inner();
        if resp.results.iter().all(|r| {
            r.outcome == pb::Outcome::Accepted as i32 || r.outcome == pb::Outcome::Duplicate as i32
        }) {
            retried = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let retried = retried
        .ok_or_else(|| anyhow::anyhow!("retries were not accepted after the broker came back"))?;
    note(&retried);
    assert_eq!(acknowledged.len(), 60);

    let topics: Vec<String> = gw.topics.values().cloned().collect();
    let stored = event_ids_in(&topics).await?;
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in Kafka: {missing:?}"
    );
    gw.stop().await
}
