//! Crash test: while 100,000 events load, the loader process is killed with SIGKILL several
//! times at random moments and restarted. Afterwards every event_id is present exactly once and
//! the current-state tables equal the state computed independently from what was published.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use lienthong_proto::v1 as pb;
use lienthong_tests::deidentifier::analytics_topics_with_schemas as topics_with_schemas;
use lienthong_tests::warehouse::{
    analytics_keys, connect, fresh_database, publish_analytics as publish_to,
};
use lienthong_tests::{require_kafka, require_registry, workspace_bin};

const EVENTS: usize = 100_000;

fn loader(
    dsn: &str,
    group: &str,
    topics: &str,
    kafka: &str,
    registry: &str,
) -> anyhow::Result<tokio::process::Child> {
    Ok(
        tokio::process::Command::new(workspace_bin("lienthong-warehouse-loader"))
            .args([
                "--pg-dsn",
                dsn,
                "--group",
                group,
                "--topics",
                topics,
                "--kafka-bootstrap",
                kafka,
                "--registry-url",
                registry,
            ])
            .args([
                "--log",
                "warn",
                "--batch-events",
                "2000",
                "--session-timeout-ms",
                "6000",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_loader_repeatedly_loses_nothing_and_doubles_nothing() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let dsn = fresh_database().await?;
    let topics = topics_with_schemas(&registry).await?;

    // 100,000 events; every tenth document also gets a second version.
    let events = lienthong_tests::events_with_second_versions(
        4242,
        EVENTS - EVENTS / 10,
        pb::Action::Updated,
    );
    let mut expected_ids = BTreeSet::new();
    let mut expected_state: BTreeMap<String, i64> = BTreeMap::new();
    for e in &events {
        let h = e.header().cloned().unwrap_or_default();
        let (event_key, document_key) = analytics_keys(e);
        expected_ids.insert(event_key);
        let v = expected_state.entry(document_key).or_insert(0);
        *v = (*v).max(h.document_version as i64);
    }
    publish_to(&registry, &topics, &events).await?;

    let group = format!("wh-crash-{}", uuid::Uuid::new_v4().simple());
    let topic_list = lienthong_deidentifier::AnalyticsKind::ALL
        .iter()
        .map(|k| topics.of(*k).to_owned())
        .collect::<Vec<_>>()
        .join(",");
    let db = connect(&dsn).await?;
    let count = || async {
        db.query_one("SELECT count(*) FROM event_history", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };

    // Kill while it loads, each time after a pseudo-random amount of progress (seeded by the
    // clock, so every run kills at other moments).
    let mut kills = 0;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos() as u64;
    while kills < 4 {
        let before = count().await;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let progress = 3_000 + ((seed >> 33) % 12_000) as i64;
        let mut child = loader(
            &dsn,
            &group,
            &topic_list,
            &kafka.bootstrap,
            &registry.registry_url,
        )?;
        let until = Instant::now() + Duration::from_secs(90);
        while count().await < before + progress && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        child.kill().await?; // SIGKILL: no shutdown path runs
        kills += 1;
        let loaded = count().await;
        eprintln!(
            "kill {kills}: {loaded} events loaded (+{})",
            loaded - before
        );
        anyhow::ensure!(loaded > before, "the loader made no progress between kills");
        if loaded as usize >= expected_ids.len() {
            break;
        }
    }

    let mut child = loader(
        &dsn,
        &group,
        &topic_list,
        &kafka.bootstrap,
        &registry.registry_url,
    )?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while (count().await as usize) < expected_ids.len() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} events loaded",
            count().await,
            expected_ids.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let it run a little longer: nothing may be applied twice after catching up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.kill().await?;

    let ids: BTreeSet<String> = db
        .query("SELECT event_id FROM event_history", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let rows: i64 = db
        .query_one("SELECT count(*) FROM event_history", &[])
        .await?
        .get(0);
    assert_eq!(rows as usize, ids.len(), "an event_id is stored twice");
    assert_eq!(ids, expected_ids, "history differs from what was published");
    let state: BTreeMap<String, i64> = db
        .query(
            "SELECT document_id, document_version FROM referrals UNION ALL SELECT document_id, document_version FROM appointments \
             UNION ALL SELECT document_id, document_version FROM lab_reports",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(state.len(), expected_state.len(), "document count");
    assert!(
        state == expected_state,
        "current state differs from the latest version of each document"
    );
    eprintln!(
        "{kills} kills; {} events, {} documents: exact",
        ids.len(),
        state.len()
    );
    Ok(())
}
