//! Consumption of one region: its own consumer group, seek to the store's offsets on every
//! assignment, atomic sled batches with their offsets inside, dead letters for poison.

use std::time::{Duration, Instant};

use lienthong_core::ProvinceCode;
use lienthong_core::validation::{Severity, ValidationContext};
use lienthong_kafka::consumption::{
    BatchBackoff, BatchPreparer, BatchWriter, PipelineEnd, PositionSource, PreparedBatch,
    STATISTICS_INTERVAL_MS, SeekToStored, consume_pipelined,
};
use lienthong_kafka::{EventProducer, KafkaArgs};
use lienthong_proto::v1 as pb;
use lienthong_registry::{DecodeError, WireCodec};
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;

use crate::config::RegionalConfig;
use crate::store::{Change, RegionStore};

/// The store's own positions: where each partition resumes after a (re)assignment.
struct StorePositions(RegionStore);

impl PositionSource for StorePositions {
    fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        // An unreadable position restarts the partition from the beginning: re-reading is
        // harmless (applied offsets are skipped), skipping would not be.
        self.0.next_offset(topic, partition).ok().flatten()
    }
}

/// Consumes for `region` into `store` until `shutdown`; finishes the open batch first.
pub async fn run_region(
    region: String,
    config: RegionalConfig,
    kafka: KafkaArgs,
    codec: std::sync::Arc<WireCodec>,
    dlq: EventProducer,
    store: RegionStore,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let group = RegionalConfig::group(&region);
    let region_code =
        ProvinceCode::current(&region).ok_or_else(|| anyhow::anyhow!("unknown region {region}"))?;
    let mut cfg = kafka.client_config()?;
    cfg.set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    let consumer: StreamConsumer<SeekToStored<StorePositions>> =
        cfg.create_with_context(SeekToStored {
            group: group.clone(),
            positions: StorePositions(store.clone()),
        })?;
    let topics = [
        config.topic_referral.as_str(),
        config.topic_appointment.as_str(),
        config.topic_lab_result.as_str(),
        config.topic_receipt.as_str(),
    ];
    consumer.subscribe(&topics)?;
    tracing::info!(%region, %group, "regional consumer started");

    // Pipelined: while batch n is applied to sled (a blocking thread), batch n+1 is fetched,
    // decoded, validated and dead-lettered. n+1 is applied only after n; if n is not applied
    // (stopping), neither is n+1, and both are read again from the store's offsets.
    let step = Step {
        config: &config,
        region: &region_code,
        group: &group,
        codec: &codec,
        dlq: &dlq,
        store: &store,
        shutdown: &shutdown,
    };
    let end = consume_pipelined(
        &consumer,
        config.batch_events,
        Duration::from_millis(200),
        &shutdown,
        &step,
        &mut &step,
    )
    .await;
    store.flush().await?;
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
    shutdown: &'a CancellationToken,
}

impl Step<'_> {
    /// Decodes and validates a batch, dead-lettering what is poison; a registry or DLQ
    /// failure is retried. None when stopping first.
    async fn classify_with_retry(&self, messages: Vec<OwnedMessage>) -> Option<Classified> {
        let mut backoff = BatchBackoff::default();
        loop {
            match self.classify_batch(&messages).await {
                Ok(changes) => {
                    return Some(Classified {
                        messages,
                        changes: std::sync::Arc::new(changes),
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff.next_wait(), "batch not decoded; retrying");
                    if !backoff.wait(self.shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn classify_batch(
        &self,
        batch: &[OwnedMessage],
    ) -> anyhow::Result<Vec<(String, i32, i64, Change)>> {
        let ctx = ValidationContext::now();
        let mut changes = Vec::with_capacity(batch.len());
        for m in batch {
            let change = match classify(self.config, self.region, self.codec, &ctx, m).await? {
                Ok(change) => change,
                Err(error) => {
                    lienthong_kafka::dlq::send(
                        self.dlq,
                        &self.config.dlq_topic,
                        self.group,
                        m,
                        &error,
                    )
                    .await?;
                    Change::Skip
                }
            };
            changes.push((m.topic().to_owned(), m.partition(), m.offset(), change));
        }
        Ok(changes)
    }

    /// Applies a classified batch with its offsets and makes it durable; a store failure is
    /// retried. False when stopping first.
    async fn apply_with_retry(&self, batch: &Classified) -> bool {
        let mut backoff = BatchBackoff::default();
        loop {
            match self.apply(batch).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff.next_wait(), "batch not applied; retrying");
                    if !backoff.wait(self.shutdown).await {
                        return false;
                    }
                }
            }
        }
    }

    async fn apply(&self, batch: &Classified) -> anyhow::Result<()> {
        let started = Instant::now();
        let (store, changes) = (self.store.clone(), std::sync::Arc::clone(&batch.changes));
        let applied = tokio::task::spawn_blocking(move || store.apply_batch(&changes)).await??;
        // Not flushed here: the batch's offsets are in its own sled batches, so whatever a
        // crash takes back (at most sled's flush interval, see `store`) is read again from
        // Kafka from the offsets that survive with it; the group commit that follows is only
        // for lag. A flush per batch cost ~10% of the consumer's throughput (an fsync and a
        // sealed log buffer each). Stopping flushes.
        let region = self.region.to_string();
        metrics::counter!("lienthong_regional_applied_total", "region" => region.clone())
            .increment(applied.applied);
        metrics::counter!("lienthong_regional_stale_total", "region" => region.clone())
            .increment(applied.stale + applied.replayed);
        metrics::histogram!("lienthong_regional_apply_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!("lienthong_regional_store_bytes", "region" => region.clone())
            .set(self.store.size_on_disk() as f64);
        metrics::gauge!("lienthong_regional_filed_documents", "region" => region.clone())
            .set(self.store.filed_documents() as f64);
        metrics::gauge!("lienthong_regional_listed_documents", "region" => region.clone())
            .set(self.store.listed_documents() as f64);
        metrics::gauge!("lienthong_regional_bundles", "region" => region)
            .set(self.store.bundles() as f64);
        Ok(())
    }
}

/// Where a message was read from, formatted only when an error names it (this runs for
/// every consumed message).
struct Origin<'a>(&'a OwnedMessage);

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}[{}]@{}",
            self.0.topic(),
            self.0.partition(),
            self.0.offset()
        )
    }
}

/// Ok(Ok(change)), Ok(Err(reason to dead-letter)), or Err(transient: retry the batch).
pub(crate) async fn classify(
    config: &RegionalConfig,
    region: &ProvinceCode,
    codec: &WireCodec,
    ctx: &ValidationContext,
    m: &OwnedMessage,
) -> anyhow::Result<Result<Change, String>> {
    let origin = Origin(m);
    let decoded = match codec
        .decode(m.payload(), m.topic(), m.partition(), m.offset())
        .await
    {
        Ok(d) => d,
        Err(e @ DecodeError::Registry { .. }) => anyhow::bail!("{e}"),
        Err(e) => return Ok(Err(e.to_string())),
    };
    if m.topic() == config.topic_receipt {
        return Ok(
            match pb::ReferralReceiptEvent::decode(decoded.payload.as_slice()) {
                Ok(r) if decoded.full_name == "lienthong.v1.ReferralReceiptEvent" => {
                    Ok(Change::receipt(r))
                }
                Ok(_) => Err(format!(
                    "{origin}: {} is not a referral receipt",
                    decoded.full_name
                )),
                Err(e) => Err(format!("{origin}: receipt does not decode: {e}")),
            },
        );
    }
    let event = match decoded.event(&origin) {
        Ok(e) => e,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let errors: Vec<String> = event
        .validate(ctx)
        .into_iter()
        .filter(|v| v.severity == Severity::Error)
        .map(|v| v.to_string())
        .collect();
    if !errors.is_empty() {
        return Ok(Err(format!(
            "{origin}: invalid document: {}",
            errors.join("; ")
        )));
    }
    Ok(Ok(if event.regions().contains(region) {
        Change::consumed(event, &decoded.payload)
    } else {
        Change::Skip
    }))
}
