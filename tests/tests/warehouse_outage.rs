//! PostgreSQL down: the loader waits and retries without advancing offsets, then catches up;
//! and two replicas share the partitions, one dies, the totals stay exact.
//!
//! Stops and restarts the local PostgreSQL with deploy/local/postgres/{stop,start}; this binary
//! runs alone (cargo runs test binaries one at a time) and its tests are serialized by a lock.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use lienthong_tests::deidentifier::analytics_topics_with_schemas as topics_with_schemas;
use lienthong_tests::warehouse::{
    analytics_keys, connect, fresh_database, publish_analytics as publish_to, wait_for_count,
};
use lienthong_tests::{
    StackComponentStopped, keyed_events, require_kafka, require_registry, workspace_bin,
};
use lienthong_warehouse_loader::LoaderConfig;
use tokio_util::sync::CancellationToken;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_pauses_loading_then_it_catches_up_exactly() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let kafka = require_kafka();
    let registry = require_registry().await;
    let dsn = fresh_database().await?;
    let topics = topics_with_schemas(&registry).await?;
    let shutdown = CancellationToken::new();
    let config = LoaderConfig {
        group: format!("wh-outage-{}", uuid::Uuid::new_v4().simple()),
        ..lienthong_tests::warehouse::loader_config(&dsn, &topics)
    };
    let loader = tokio::spawn(lienthong_warehouse_loader::run(
        config,
        kafka,
        registry.clone(),
        shutdown.clone(),
    ));
    publish_to(&registry, &topics, &keyed_events(7000, 300)).await?;
    let db = connect(&dsn).await?;
    wait_for_count(
        &db,
        "SELECT count(*) FROM event_history",
        300,
        Duration::from_secs(60),
    )
    .await?;
    drop(db);

    let stopped = tokio::task::spawn_blocking(|| StackComponentStopped::stop("postgres")).await??;
    // The outage is real: the database refuses connections (this repository's PostgreSQL must
    // be the one under test).
    anyhow::ensure!(
        connect(&dsn).await.is_err(),
        "PostgreSQL still answers after deploy/local/postgres/stop: is the stack under test this checkout's?"
    );
    // Published while the database is down: the loader must hold them, not skip them.
    publish_to(&registry, &topics, &keyed_events(7001, 300)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(stopped); // PostgreSQL is back
    let db = connect(&dsn).await?;
    wait_for_count(
        &db,
        "SELECT count(*) FROM event_history",
        600,
        Duration::from_secs(120),
    )
    .await?;
    let distinct: i64 = db
        .query_one("SELECT count(DISTINCT event_id) FROM event_history", &[])
        .await?
        .get(0);
    assert_eq!(distinct, 600);
    shutdown.cancel();
    loader.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_work_and_one_dying_changes_no_total() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let kafka = require_kafka();
    let registry = require_registry().await;
    let dsn = fresh_database().await?;
    let topics = topics_with_schemas(&registry).await?;
    let events = keyed_events(7100, 20_000);
    let distinct: std::collections::BTreeSet<String> =
        events.iter().map(|e| analytics_keys(e).0).collect();
    publish_to(&registry, &topics, &events).await?;
    let group = format!("wh-replicas-{}", uuid::Uuid::new_v4().simple());
    let topic_list = lienthong_deidentifier::AnalyticsKind::ALL
        .iter()
        .map(|k| topics.of(*k).to_owned())
        .collect::<Vec<_>>()
        .join(",");
    let spawn = || {
        tokio::process::Command::new(workspace_bin("lienthong-warehouse-loader"))
            .args([
                "--pg-dsn",
                &dsn,
                "--group",
                &group,
                "--topics",
                &topic_list,
                "--kafka-bootstrap",
                &kafka.bootstrap,
            ])
            .args([
                "--registry-url",
                &registry.registry_url,
                "--log",
                "warn",
                "--batch-events",
                "500",
                "--session-timeout-ms",
                "6000",
            ])
            .kill_on_drop(true)
            .spawn()
    };
    let mut a = spawn()?;
    let mut b = spawn()?;
    let db = connect(&dsn).await?;
    let count = || async {
        db.query_one("SELECT count(*) FROM event_history", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };
    let until = std::time::Instant::now() + Duration::from_secs(90);
    while count().await < 5_000 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let owners: i64 = db
        .query_one(
            "SELECT count(DISTINCT kafka_partition || kafka_topic) FROM event_history",
            &[],
        )
        .await?
        .get(0);
    assert!(owners > 1, "work was spread over partitions");
    a.kill().await?; // one replica dies; the other takes over its partitions
    wait_for_count(
        &db,
        "SELECT count(*) FROM event_history",
        distinct.len() as i64,
        Duration::from_secs(180),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.kill().await?;
    let total: i64 = db
        .query_one("SELECT count(*) FROM event_history", &[])
        .await?
        .get(0);
    let unique: i64 = db
        .query_one("SELECT count(DISTINCT event_id) FROM event_history", &[])
        .await?
        .get(0);
    assert_eq!(
        (total, unique),
        (distinct.len() as i64, distinct.len() as i64)
    );
    Ok(())
}
