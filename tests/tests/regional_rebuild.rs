//! Rebuilding a region's store from its topics: the rebuilt store is swapped in at the next
//! start, or by a serving instance while it serves.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lienthong_regional_store::store::RegionStore;
use lienthong_tests::warehouse::{publish_to, topics_with_schemas};
use lienthong_tests::{keyed_events, require_kafka, require_registry, unique_topic};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_replays_the_topics_into_a_fresh_store_that_is_swapped_in_at_start()
-> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let topics = topics_with_schemas(&registry).await?;
    let receipt = unique_topic("rbd.receipt");
    lienthong_tests::create_topic(&kafka, &receipt, 1).await?;
    let region = "51";
    let events = keyed_events(9191, 5_000);
    let expected = lienthong_tests::regional::latest_versions(&events, region);
    publish_to(&registry, &topics, &events).await?;
    let dir = tempfile::tempdir()?;
    let config = lienthong_tests::regional::config(&[region], dir.path(), &topics, &receipt);
    // An outdated live store exists (empty here): the rebuild does not touch it.
    drop(lienthong_regional_store::live::open_store(&config, region)?);
    let codec = std::sync::Arc::new(lienthong_registry::WireCodec::new(&registry)?);
    let docs = lienthong_regional_store::rebuild::rebuild(&config, region, &kafka, codec).await?;
    assert_eq!(docs, expected.len());
    let live = lienthong_regional_store::live::open_store(&config, region)?; // swaps the rebuild in
    let got: BTreeMap<String, u64> = live.versions()?.into_iter().collect();
    assert!(got == expected, "rebuilt store differs");
    assert!(
        std::fs::read_dir(dir.path())?
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains(".replaced-")),
        "the old store is kept"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_store_swaps_in_a_cli_rebuild_without_restarting() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let topics = topics_with_schemas(&registry).await?;
    let receipt = unique_topic("live.receipt");
    lienthong_tests::create_topic(&kafka, &receipt, 1).await?;
    // Its own region, so the consumer group is fresh: Cần Thơ (92).
    let region = "92";
    let events = keyed_events(9292, 6_000);
    let (before, after) = events.split_at(4_000);
    let expected = lienthong_tests::regional::latest_versions(&events, region);
    publish_to(&registry, &topics, before).await?;
    let dir = tempfile::tempdir()?;
    let config = lienthong_tests::regional::config(&[region], dir.path(), &topics, &receipt);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = CancellationToken::new();
    let keyer = lienthong_core::PatientKeyer::new("test", &[7u8; 32])?;
    let serving = tokio::spawn(lienthong_regional_store::server::run(
        config.clone(),
        kafka.clone(),
        registry.clone(),
        keyer,
        listener,
        shutdown.clone(),
    ));

    // The operator's command, while the store serves.
    let out = tokio::process::Command::new(lienthong_tests::workspace_bin("lienthong"))
        .args(["regional", "rebuild", "--region", region, "--data-dir"])
        .arg(dir.path())
        .args(lienthong_tests::regional::topic_flags(&topics, &receipt))
        .env("LIENTHONG_KAFKA_BOOTSTRAP", &kafka.bootstrap)
        .env("LIENTHONG_REGISTRY_URL", &registry.registry_url)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rebuild failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("region {region} rebuilt"))
            && stdout.contains("a running store swaps it in within seconds"),
        "{stdout}"
    );

    // The running instance swaps it in by itself, keeping the old store aside.
    let until = Instant::now() + Duration::from_secs(30);
    let replaced = loop {
        let found = std::fs::read_dir(dir.path())?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().contains(".replaced-"));
        if let Some(f) = found {
            break f.path();
        }
        anyhow::ensure!(Instant::now() < until, "no swap within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        !serving.is_finished(),
        "the store kept running through the swap"
    );
    assert!(!dir.path().join(format!("region-{region}.rebuild")).exists());

    // It goes on consuming into the rebuilt store: the later events arrive there.
    publish_to(&registry, &topics, after).await?;
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        // sled locks an open store: peek through a copy.
        let peek = tempfile::tempdir()?;
        copy_dir(&dir.path().join(format!("region-{region}")), peek.path())?;
        let got: BTreeMap<String, u64> = match RegionStore::open(peek.path()) {
            Ok(s) => s.versions()?.into_iter().collect(),
            Err(_) => BTreeMap::new(),
        };
        if got == expected {
            break;
        }
        anyhow::ensure!(
            Instant::now() < until,
            "the swapped-in store holds {} of {} documents after 120 s",
            got.len(),
            expected.len()
        );
    }
    shutdown.cancel();
    serving.await??;
    let old = RegionStore::open(&replaced)?;
    assert!(
        old.len() < expected.len(),
        "the replaced store stopped receiving at the swap"
    );
    Ok(())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
