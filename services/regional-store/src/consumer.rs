//! Consumption of one region: every partition of its topics assigned to this replica (no
//! group is joined, so every replica holds the whole region), started at the store's own
//! offsets; atomic sled batches with their offsets inside; dead letters for poison. Beside
//! it, a watch of how far the store is behind its topics, which decides the region's health.
//!
//! A batch the store cannot take stops the region, and with it the instance, instead of being
//! retried: sled keeps an I/O error (a full disk) for the life of the process, so a retry
//! fails the same way even once space is back, while a restart recovers sled from its log and
//! reads again from the stored offsets. What is retried is what heals by itself: the registry
//! and the dead-letter topic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_core::ProvinceCode;
use lienthong_kafka::assignment;
use lienthong_kafka::consumption::{
    BatchPreparer, BatchWriter, PipelineEnd, PositionSource, PreparedBatch, ReportsLag,
    consume_pipelined,
};
use lienthong_kafka::{EventProducer, KafkaArgs};
use lienthong_registry::WireCodec;
use lienthong_sink::{Consumed, MessageReader, retry, retry_unless, sink_consumer_config};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;

use crate::config::RegionalConfig;
use crate::health::{Condition, RegionHealth};
use crate::store::{Change, RegionStore, StoreError};

/// Retries of a batch not decoded or not applied.
const RETRIES: &str = crate::metrics::BATCH_RETRIES.name;

/// How often the watch measures how far behind the store is.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// How often the watch looks for partitions added to the region's topics.
const NEW_PARTITIONS_EVERY: Duration = Duration::from_secs(30);

/// The store's own positions: where each partition starts.
#[derive(Clone)]
struct StorePositions(RegionStore);

impl PositionSource for StorePositions {
    fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        // An unreadable position restarts the partition from the beginning: re-reading is
        // harmless (applied offsets are skipped), skipping would not be.
        self.0.next_offset(topic, partition).ok().flatten()
    }
}

/// The region's consumer as the loop and the watch share it.
type RegionConsumer = StreamConsumer<ReportsLag>;

/// Consumes for `region` into `store` until `shutdown`; finishes the open batch first.
/// `health` follows how far behind the store is.
#[allow(clippy::too_many_arguments)]
pub async fn run_region(
    region: String,
    config: RegionalConfig,
    kafka: KafkaArgs,
    codec: Arc<WireCodec>,
    dlq: EventProducer,
    store: RegionStore,
    health: RegionHealth,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let group = config.group(&region);
    let region_code =
        ProvinceCode::current(&region).ok_or_else(|| anyhow::anyhow!("unknown region {region}"))?;
    let cfg = sink_consumer_config(&kafka, &group, None)?;
    let positions = StorePositions(store.clone());
    let consumer: Arc<RegionConsumer> = Arc::new(cfg.create_with_context(ReportsLag {
        group: group.clone(),
    })?);
    let topics: Vec<String> = config
        .consumed_topics()
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    let parts = {
        let (consumer, topics, positions, timeout) = (
            Arc::clone(&consumer),
            topics.clone(),
            positions.clone(),
            kafka.timeout(),
        );
        tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            let parts = assignment::partitions(&*consumer, &names, timeout)?;
            consumer.assign(&assignment::starting_at_stored(&parts, &positions)?)?;
            assignment::commit_stored(&*consumer, &parts, &positions);
            anyhow::Ok(parts)
        })
        .await??
    };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    lienthong_kafka::metrics::register_consumer(&group, &names);
    tracing::info!(%region, %group, partitions = parts.len(), "regional consumer started: every partition of the region's topics");

    // Pipelined: while batch n is applied to sled (a blocking thread), batch n+1 is fetched,
    // decoded, validated and dead-lettered. n+1 is applied only after n; if n is not applied
    // (stopping), neither is n+1, and both are read again from the store's offsets.
    let stop = shutdown.child_token();
    let failure = std::sync::Mutex::new(None);
    let step = Step {
        config: &config,
        region: &region_code,
        group: &group,
        codec: &codec,
        dlq: &dlq,
        store: &store,
        shutdown: &stop,
        failure: &failure,
    };
    let watch_stop = stop.child_token();
    let watch = Watch {
        region: region.clone(),
        consumer: Arc::clone(&consumer),
        // A client of its own: on the consumer's connections, a watermark request waits
        // behind the fetch long-poll (up to 500 ms each, half a minute for the region).
        probe: Arc::new(kafka.client_config()?.set("group.id", &group).create()?),
        topics,
        parts,
        positions,
        timeout: kafka.timeout(),
        max_lag: i64::try_from(config.ready_max_lag).unwrap_or(i64::MAX),
        cutoff: Duration::from_secs(config.cutoff_secs),
        health,
    };
    let consuming = async {
        let end = consume_pipelined(
            &*consumer,
            config.batch_events,
            Duration::from_millis(200),
            &stop,
            &step,
            &mut &step,
        )
        .await;
        watch_stop.cancel();
        end
    };
    let checkpoints = checkpoint_every(
        &region,
        &store,
        Duration::from_secs(config.checkpoint_secs),
        &watch_stop,
    );
    let (end, (), ()) = tokio::join!(consuming, watch.run(&watch_stop), checkpoints);
    if let Some(failed) = failure
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        // Neither flushed nor checkpointed: the store refuses writes until a new process
        // opens it.
        return Err(failed.context(format!(
            "region {region}: the store refused a write, so this instance stops; start it \
             again (on a full disk, once its volume has space): it recovers the store and \
             reads again from the store's offsets"
        )));
    }
    store.flush().await?;
    // A clean stop leaves a checkpoint of everything applied: the next start opens from it.
    checkpoint(&region, &store).await;
    match end {
        PipelineEnd::Drained => {
            tracing::info!(%region, "regional consumer stopped after its last batch");
        }
        PipelineEnd::LeftOpenBatch => tracing::info!(
            %region,
            "regional consumer stopped; its open batch is left for the next start"
        ),
    }
    Ok(())
}

/// Checkpoints `store` every `every` until `stop`.
async fn checkpoint_every(
    region: &str,
    store: &RegionStore,
    every: Duration,
    stop: &CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => checkpoint(region, store).await,
        }
    }
}

/// Writes a checkpoint of `store` off the runtime's workers. A failure is logged: the store
/// stays correct without one, it only opens more slowly.
async fn checkpoint(region: &str, store: &RegionStore) {
    let started = Instant::now();
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.checkpoint()).await {
        Ok(Ok(bytes)) => {
            let seconds = started.elapsed().as_secs_f64();
            metrics::histogram!(crate::metrics::CHECKPOINT_SECONDS.name).record(seconds);
            tracing::debug!(region, bytes, seconds, "checkpoint written");
        }
        Ok(Err(e)) => tracing::warn!(region, error = %e, "no checkpoint written"),
        Err(e) => tracing::warn!(region, error = %e, "no checkpoint written"),
    }
}

/// Measures how far behind its topics a region's store is, and what that makes its health;
/// assigns partitions added to the topics.
struct Watch {
    region: String,
    consumer: Arc<RegionConsumer>,
    probe: Arc<rdkafka::consumer::BaseConsumer>,
    topics: Vec<String>,
    parts: Vec<(String, i32)>,
    positions: StorePositions,
    timeout: Duration,
    max_lag: i64,
    cutoff: Duration,
    health: RegionHealth,
}

impl Watch {
    async fn run(mut self, stop: &CancellationToken) {
        let mut last_contact = Instant::now();
        let mut partitions_checked = Instant::now();
        loop {
            let look_for_new = partitions_checked.elapsed() >= NEW_PARTITIONS_EVERY;
            let (consumer, probe, topics, parts, positions, timeout) = (
                Arc::clone(&self.consumer),
                Arc::clone(&self.probe),
                self.topics.clone(),
                self.parts.clone(),
                self.positions.clone(),
                self.timeout,
            );
            let began = Instant::now();
            let measured = tokio::task::spawn_blocking(move || {
                let mut added = Vec::new();
                if look_for_new {
                    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                    let stored = assignment::at_stored(&positions);
                    added = assignment::assign_added(
                        &*consumer, &*probe, &names, &parts, stored, timeout,
                    )?;
                    assignment::commit_stored(&*consumer, &added, &positions);
                }
                let all: Vec<(String, i32)> = parts.iter().chain(&added).cloned().collect();
                let behind = assignment::lag(&*probe, &all, &positions, timeout)?;
                anyhow::Ok((behind, added))
            })
            .await;
            tracing::debug!(
                region = self.region,
                seconds = began.elapsed().as_secs_f64(),
                ok = matches!(measured, Ok(Ok(_))),
                "lag measured"
            );
            // A panicked measurement is a failed one: the region's condition decides either way.
            let measured = measured.map_err(anyhow::Error::from).and_then(|m| m);
            let condition = match measured {
                Ok((behind, added)) => {
                    if look_for_new {
                        partitions_checked = Instant::now();
                    }
                    if !added.is_empty() {
                        tracing::info!(region = self.region, ?added, "new partitions assigned");
                        self.parts.extend(added);
                    }
                    last_contact = Instant::now();
                    metrics::gauge!(crate::metrics::BEHIND.name, "region" => self.region.clone())
                        .set(behind as f64);
                    if behind <= self.max_lag {
                        Condition::Serving
                    } else {
                        Condition::CatchingUp { behind }
                    }
                }
                Err(e) => {
                    tracing::debug!(
                        region = self.region,
                        error = format!("{e:#}"),
                        "cannot measure the lag"
                    );
                    let silent = last_contact.elapsed();
                    if silent > self.cutoff {
                        Condition::CutOff {
                            seconds: silent.as_secs(),
                        }
                    } else {
                        self.health.of(&self.region)
                    }
                }
            };
            self.health.set(&self.region, condition).await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(WATCH_EVERY) => {}
            }
        }
    }
}

/// A batch read from Kafka with what each message changes (dead letters already sent).
struct Classified {
    messages: Vec<OwnedMessage>,
    changes: std::sync::Arc<Vec<(String, i32, i64, Change)>>,
}

impl BatchPreparer for Step<'_> {
    type Batch = Classified;

    fn prepare(
        &self,
        messages: Vec<OwnedMessage>,
    ) -> impl Future<Output = Option<Classified>> + Send {
        self.classify_with_retry(messages)
    }
}

// Applying needs only shared access (sled's writer lock is inside the store).
impl BatchWriter<Classified> for &Step<'_> {
    fn write(&mut self, batch: &Classified) -> impl Future<Output = bool> + Send {
        self.apply_with_retry(batch)
    }
}

impl PreparedBatch for Classified {
    fn messages(&self) -> &[OwnedMessage] {
        &self.messages
    }
}

/// What one region's consumer works with, borrowed for the life of its loop.
struct Step<'a> {
    config: &'a RegionalConfig,
    region: &'a ProvinceCode,
    group: &'a str,
    codec: &'a WireCodec,
    dlq: &'a EventProducer,
    store: &'a RegionStore,
    /// Cancelled at shutdown, or by the step itself when the store fails.
    shutdown: &'a CancellationToken,
    /// Why the store failed, when it did.
    failure: &'a std::sync::Mutex<Option<anyhow::Error>>,
}

impl Step<'_> {
    /// Decodes and validates a batch, dead-lettering what is poison; a registry or DLQ
    /// failure is retried. None when stopping first.
    async fn classify_with_retry(&self, messages: Vec<OwnedMessage>) -> Option<Classified> {
        let reader = MessageReader {
            codec: self.codec,
            receipt_topic: Some(&self.config.topic_receipt),
            audit_topic: None,
            dlq: Some(self.dlq),
            dlq_topic: &self.config.dlq_topic,
            group: self.group,
        };
        let region = self.region;
        let read = retry("batch not decoded", RETRIES, self.shutdown, || {
            reader.read_batch(&messages, |c, _| Ok(change_for(region, c)))
        })
        .await?;
        let changes = messages
            .iter()
            .zip(read)
            .map(|(m, change)| {
                let change = change.unwrap_or(Change::Skip);
                (m.topic().to_owned(), m.partition(), m.offset(), change)
            })
            .collect();
        Some(Classified {
            messages,
            changes: std::sync::Arc::new(changes),
        })
    }

    /// Applies a classified batch with its offsets; a dead-letter failure is retried, a store
    /// failure stops the region (see the module's documentation). False when stopping first.
    async fn apply_with_retry(&self, batch: &Classified) -> bool {
        let applied = retry_unless(
            "batch not applied",
            RETRIES,
            self.shutdown,
            || self.apply(batch),
            |e| after_failure(e) == AfterFailure::Restart,
        )
        .await;
        match applied {
            Ok(applied) => applied.is_some(),
            Err(e) => {
                tracing::error!(region = %self.region, error = format!("{e:#}"),
                    "the store cannot take a batch; stopping the region (a restart recovers the store and reads again from its offsets)");
                *self
                    .failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                self.shutdown.cancel();
                false
            }
        }
    }

    async fn apply(&self, batch: &Classified) -> anyhow::Result<()> {
        let started = Instant::now();
        let changes = std::sync::Arc::clone(&batch.changes);
        let mut applied = {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.apply_batch(&changes)).await??
        };
        // Events that are the stored version with other content are applied by no one: their
        // partitions' positions stay before them until they are dead-lettered, all at once;
        // then the batch is applied again with them skipped, which moves those positions (what
        // followed them is stored already). A retry after a failure here re-applies nothing
        // twice (offsets) and dead-letters again only what was not yet passed.
        if !applied.conflicts.is_empty() {
            let letters: Vec<_> = applied
                .conflicts
                .iter()
                .map(|&at| {
                    let message = &batch.messages[at];
                    let (document, version) = batch.changes[at].3.document().unwrap_or_default();
                    let why = format!(
                        "{}: conflict: version {version} of {document} is stored with other \
                         content; a correction must be published as the next version",
                        lienthong_sink::Origin(message)
                    );
                    (message, lienthong_kafka::dlq::Reason::Conflict, why)
                })
                .collect();
            lienthong_kafka::dlq::send_all(self.dlq, &self.config.dlq_topic, self.group, &letters)
                .await?;
            metrics::counter!(crate::metrics::CONFLICTS.name, "region" => self.region.to_string())
                .increment(letters.len() as u64);
            let skipped = crate::store::skipping(&batch.changes, &applied.conflicts);
            let store = self.store.clone();
            let again = tokio::task::spawn_blocking(move || store.apply_batch(&skipped)).await??;
            applied.applied += again.applied;
        }
        // Not flushed here: the batch's offsets are in its own sled batches, so whatever a
        // crash takes back (at most sled's flush interval, see `store`) is read again from
        // Kafka from the offsets that survive with it; the group commit that follows is only
        // for lag. A flush per batch cost ~10% of the consumer's throughput (an fsync and a
        // sealed log buffer each). Stopping flushes.
        let region = self.region.to_string();
        metrics::counter!(crate::metrics::APPLIED.name, "region" => region.clone())
            .increment(applied.applied);
        metrics::counter!(crate::metrics::STALE.name, "region" => region.clone())
            .increment(applied.stale + applied.replayed);
        metrics::histogram!(crate::metrics::APPLY_SECONDS.name)
            .record(started.elapsed().as_secs_f64());
        lienthong_sink::freshness::record(crate::metrics::FRESHNESS.name, &batch.messages);
        metrics::gauge!(crate::metrics::STORE_BYTES.name, "region" => region.clone())
            .set(self.store.size_on_disk() as f64);
        metrics::gauge!(crate::metrics::FILED.name, "region" => region.clone())
            .set(self.store.filed_documents() as f64);
        metrics::gauge!(crate::metrics::LISTED.name, "region" => region.clone())
            .set(self.store.listed_documents() as f64);
        metrics::gauge!(crate::metrics::BUNDLES.name, "region" => region)
            .set(self.store.bundles() as f64);
        Ok(())
    }
}

/// What follows a batch that could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterFailure {
    /// Try again after a wait: the failure was outside the store (the dead-letter topic).
    Retry,
    /// Stop: the store failed, or panicked, and only a new process recovers it.
    Restart,
}

fn after_failure(e: &anyhow::Error) -> AfterFailure {
    if e.downcast_ref::<StoreError>().is_some()
        || e.downcast_ref::<tokio::task::JoinError>().is_some()
    {
        AfterFailure::Restart
    } else {
        AfterFailure::Retry
    }
}

/// What a good message changes in the store of `region`: a receipt always (it may meet its
/// referral later), an event only if it concerns the region.
pub(crate) fn change_for(region: &ProvinceCode, consumed: Consumed) -> Change {
    match consumed {
        Consumed::Receipt(r) => Change::receipt(r),
        Consumed::Event { event, payload } if event.regions().contains(region) => {
            Change::consumed(event, &payload)
        }
        // Audit records are never read by a store (no audit topic is given to its reader).
        Consumed::Event { .. } | Consumed::Audit(_) | Consumed::Analytics(_) => Change::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_failure_restarts_and_a_dead_letter_failure_is_retried() {
        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let store = anyhow::Error::from(StoreError::Sled(sled::Error::Io(full)))
            .context("applying a batch");
        assert_eq!(after_failure(&store), AfterFailure::Restart);
        let said = format!("{store:#}");
        assert_eq!(
            said.matches("No space left on device").count(),
            1,
            "the cause is named once: {said}"
        );
        let corrupt = anyhow::Error::from(StoreError::Corrupt("bundle 7".into()));
        assert_eq!(after_failure(&corrupt), AfterFailure::Restart);
        let dlq = anyhow::anyhow!("dead letter not acknowledged: Message timed out");
        assert_eq!(after_failure(&dlq), AfterFailure::Retry);
    }
}
