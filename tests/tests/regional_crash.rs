//! Crash test of a regional store: while 100,000 events flow, the store process is killed with
//! SIGKILL several times at random moments; after a final clean run it holds exactly the
//! latest version of every document of its region, computed independently from what was sent.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use lienthong_tests::regional::replica_lag;
use lienthong_tests::{require_kafka, require_registry};

const EVENTS: usize = 100_000;
const REGION: &str = "79";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_store_repeatedly_loses_nothing_and_doubles_nothing() -> anyhow::Result<()> {
    let kafka_args = require_kafka();
    let registry = require_registry().await;
    let published =
        lienthong_tests::regional::publish_region(&kafka_args, &registry, 8080, EVENTS, REGION)
            .await?;
    let (topics, receipt, all_topics) =
        (&published.topics, &published.receipt, &published.all_topics);

    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let args = lienthong_tests::regional::process_args(
        REGION,
        &data,
        &kafka_args,
        &registry,
        topics,
        receipt,
    );
    let spawn = || lienthong_tests::regional::spawn_store(&args);
    let total = published.events.len() as i64;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos() as u64;
    for kill in 1..=4 {
        let before = replica_lag(REGION, all_topics)?;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let progress = 5_000 + ((seed >> 33) % 15_000) as i64;
        let mut child = spawn()?;
        let until = Instant::now() + Duration::from_secs(90);
        while replica_lag(REGION, all_topics)? > (before - progress).max(0)
            && Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        child.kill().await?; // SIGKILL
        eprintln!(
            "kill {kill}: lag {} of {total}",
            replica_lag(REGION, all_topics)?
        );
    }
    lienthong_tests::regional::catch_up_and_stop(
        spawn()?,
        REGION,
        all_topics,
        Duration::from_secs(300),
    )
    .await?;

    // The store holds personal data: nothing in it is open to other users.
    lienthong_tests::assert_private(&data)?;
    let documents =
        lienthong_tests::regional::assert_latest_versions(&data, REGION, &published.expected)?;
    eprintln!("region {REGION}: {documents} documents exact after 4 kills");
    Ok(())
}
