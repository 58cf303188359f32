//! Rebuilding a region's store from the topics: everything is replayed from the beginning into
//! a fresh store beside the live one (`region-<code>.rebuild`), marked complete with a READY
//! file. The live store keeps serving meanwhile; a running service swaps the rebuilt store in
//! within seconds (see `live`), otherwise its next start does (the old one is kept as
//! `region-<code>.replaced-<unix time>`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lienthong_core::ProvinceCode;
use lienthong_core::validation::ValidationContext;
use lienthong_kafka::KafkaArgs;
use lienthong_registry::WireCodec;
use lienthong_sink::MessageReader;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::RegionalConfig;
use crate::consumer::change_for;
use crate::store::{Change, RegionStore};

const READY: &str = "READY";

fn live_dir(config: &RegionalConfig, region: &str) -> PathBuf {
    config.data_dir.join(format!("region-{region}"))
}

fn rebuild_dir(config: &RegionalConfig, region: &str) -> PathBuf {
    config.data_dir.join(format!("region-{region}.rebuild"))
}

/// When a completed rebuild replaces the live store, as told to whoever ran it.
pub const SWAPPED_IN: &str =
    "a running store swaps it in within seconds, a stopped one at its next start";

/// Replays every topic from the beginning up to its current end into a fresh store.
/// Returns the number of documents of the rebuilt store.
pub async fn rebuild(
    config: &RegionalConfig,
    region: &str,
    kafka: &KafkaArgs,
    codec: Arc<WireCodec>,
) -> anyhow::Result<usize> {
    let code = ProvinceCode::current(region)
        .ok_or_else(|| anyhow::anyhow!("{region:?} is not a current province code"))?;
    let dir = rebuild_dir(config, region);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let store = RegionStore::open(&dir)?;
    let mut cfg = kafka.client_config()?;
    cfg.set("group.id", format!("lienthong-regional-rebuild-{region}"))
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = cfg.create()?;
    let topics = config.consumed_topics();
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), kafka.timeout())?;
        for t in md.topics() {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(topic, p.id(), kafka.timeout())?;
                if high > low {
                    ends.insert((topic.to_owned(), p.id()), high);
                    tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
                }
            }
        }
    }
    consumer.assign(&tpl)?;
    let ctx = ValidationContext::now();
    let mut batch = Vec::with_capacity(config.batch_events);
    while !ends.is_empty() {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
        let part = (m.topic().to_owned(), m.partition());
        let Some(end) = ends.get(&part).copied() else {
            continue;
        };
        if m.offset() + 1 >= end {
            ends.remove(&part);
        }
        if m.offset() >= end {
            continue;
        }
        let owned = m.detach();
        // Dead letters were sent when the live store met them: here they are only skipped.
        let reader = MessageReader {
            codec: &codec,
            receipt_topic: Some(&config.topic_receipt),
            audit_topic: None,
            dlq: None,
            dlq_topic: &config.dlq_topic,
            group: "",
        };
        let change = match reader.read(&owned, &ctx).await? {
            Ok(consumed) => change_for(&code, consumed),
            Err(_) => Change::Skip,
        };
        batch.push((
            owned.topic().to_owned(),
            owned.partition(),
            owned.offset(),
            change,
        ));
        if batch.len() >= config.batch_events || ends.is_empty() {
            let (s, b) = (store.clone(), std::mem::take(&mut batch));
            tokio::task::spawn_blocking(move || s.apply_skipping_conflicts(&b)).await??;
        }
    }
    if !batch.is_empty() {
        store.apply_skipping_conflicts(&batch)?;
    }
    store.flush().await?;
    // Swapped in, it opens from this checkpoint instead of reading every bundle again.
    let store = tokio::task::spawn_blocking(move || store.checkpoint().map(|_| store)).await??;
    let docs = store.len();
    drop(store);
    std::fs::write(dir.join(READY), format!("{docs}\n"))?;
    tracing::info!(region, docs, "rebuild complete; {SWAPPED_IN}");
    Ok(docs)
}

/// At start-up: if a complete rebuild is waiting, swap it in place of the live store.
pub fn swap_in_if_ready(config: &RegionalConfig, region: &str) -> anyhow::Result<bool> {
    let (live, next) = (live_dir(config, region), rebuild_dir(config, region));
    if !next.join(READY).is_file() {
        return Ok(false);
    }
    if live.exists() {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        std::fs::rename(
            &live,
            config
                .data_dir
                .join(format!("region-{region}.replaced-{stamp}")),
        )?;
    }
    std::fs::remove_file(next.join(READY))?;
    std::fs::rename(&next, &live)?;
    tracing::info!(region, "rebuilt store swapped in");
    Ok(true)
}

/// True when a complete rebuild of `region` waits to be swapped in.
pub fn rebuild_ready(config: &RegionalConfig, region: &str) -> bool {
    is_ready(&rebuild_dir(config, region))
}

/// True when `dir` holds a complete rebuild.
pub fn is_ready(dir: &Path) -> bool {
    dir.join(READY).is_file()
}
