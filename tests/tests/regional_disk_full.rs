//! A regional store whose disk fills: it stops (exit status non-zero, so a supervisor restarts
//! it and an operator sees it) rather than retrying a store that refuses every write; once
//! there is space again, the next start catches up and holds exactly the latest version of
//! every document. The disk is a small tmpfs mounted for the test, so it needs root.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use lienthong_tests::regional::replica_lag;
use lienthong_tests::small_disk::{SmallDisk, free_bytes};
use lienthong_tests::{require_kafka, require_registry};

const EVENTS: usize = 10_000;
const REGION: &str = "79";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_store_and_a_restart_with_space_loses_nothing() -> anyhow::Result<()>
{
    let kafka_args = require_kafka();
    let registry = require_registry().await;
    let published =
        lienthong_tests::regional::publish_region(&kafka_args, &registry, 8181, EVENTS, REGION)
            .await?;
    let (topics, receipt, all_topics) =
        (&published.topics, &published.receipt, &published.all_topics);

    let disk = SmallDisk::mount("3m")?;
    let data: PathBuf = disk.path().join("data");
    let mut args = lienthong_tests::regional::process_args(
        REGION,
        &data,
        &kafka_args,
        &registry,
        topics,
        receipt,
    );
    // The full disk's errors are expected.
    let log = args.iter().position(|a| a == "--log").expect("--log") + 1;
    args[log] = "error".into();

    let mut child = lienthong_tests::regional::spawn_store(&args)?;
    let status = tokio::time::timeout(Duration::from_secs(180), child.wait())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the store kept running on a full disk ({} bytes free) instead of stopping",
                free_bytes(disk.path())
            )
        })??;
    assert!(
        !status.success(),
        "a store that cannot write must not exit 0"
    );
    let behind = replica_lag(REGION, all_topics)?;
    assert!(behind > 0, "the disk did not fill: nothing left to apply");
    eprintln!("full disk: the store stopped ({status}) with {behind} messages to apply");

    disk.grow("256m")?;
    lienthong_tests::regional::catch_up_and_stop(
        lienthong_tests::regional::spawn_store(&args)?,
        REGION,
        all_topics,
        Duration::from_secs(300),
    )
    .await?;
    lienthong_tests::regional::assert_latest_versions(&data, REGION, &published.expected)?;
    Ok(())
}
