//! What every lienthong consumer shares: advisory offset commits (the truth lives with the
//! consumer's writes) and consumer lag as a metric, from librdkafka's statistics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// How often librdkafka reports statistics (and so how fresh the lag gauge is), in ms.
pub const STATISTICS_INTERVAL_MS: &str = "10000";

/// Sets `lienthong_consumer_lag{group,topic,partition}` from a statistics report.
pub fn record_lag(group: &str, statistics: &Statistics) {
    for (topic, t) in &statistics.topics {
        for (partition, p) in &t.partitions {
            // -1 is librdkafka's internal "unassigned" partition; a negative lag is unknown.
            if *partition < 0 || p.consumer_lag < 0 {
                continue;
            }
            metrics::gauge!(
                crate::metrics::CONSUMER_LAG.name,
                "group" => group.to_owned(),
                "topic" => topic.clone(),
                "partition" => partition.to_string()
            )
            .set(p.consumer_lag as f64);
        }
    }
}

/// Where a consumer's writes say each partition stands (next offset to read), shared between
/// the consumer loop, which records what it committed, and the rebalance callback, which starts
/// every assigned partition there. A figure may lag behind the truth (another replica moved a
/// partition on since): that only re-reads messages the writer then skips; it is never ahead.
#[derive(Debug, Clone, Default)]
pub struct StoredPositions {
    next: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, i32), i64>>>,
}

impl StoredPositions {
    /// Records that everything before `next` of a partition is stored.
    pub fn record(&self, topic: &str, partition: i32, next: i64) {
        if let Ok(mut map) = self.next.lock() {
            let e = map.entry((topic.to_owned(), partition)).or_insert(next);
            *e = (*e).max(next);
        }
    }

    /// The stored next offset of a partition, if any.
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.next
            .lock()
            .ok()?
            .get(&(topic.to_owned(), partition))
            .copied()
    }
}

/// Where a consumer's own store says a partition stands: the next offset to read, None when
/// the store never had the partition.
pub trait PositionSource: Send + Sync + 'static {
    /// The stored next offset of a partition.
    fn next_offset(&self, topic: &str, partition: i32) -> Option<i64>;
}

impl PositionSource for StoredPositions {
    fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.get(topic, partition)
    }
}

/// Consumer context of a reader that assigns its partitions itself: reports lag.
pub struct ReportsLag {
    /// The group its advisory commits name, the lag metric's label.
    pub group: String,
}

impl ClientContext for ReportsLag {
    fn stats(&self, statistics: Statistics) {
        record_lag(&self.group, &statistics);
    }
}

impl ConsumerContext for ReportsLag {}

/// Consumer context that starts every assigned partition at its stored position (or the
/// beginning when nothing of it was ever stored), so the consumer's own store, not Kafka's
/// advisory commits, decides where reading resumes; it also reports lag.
pub struct SeekToStored<S: PositionSource> {
    /// Consumer group, the lag metric's label.
    pub group: String,
    /// The positions.
    pub positions: S,
}

impl<S: PositionSource> ClientContext for SeekToStored<S> {
    fn stats(&self, statistics: Statistics) {
        record_lag(&self.group, &statistics);
    }
}

impl<S: PositionSource> ConsumerContext for SeekToStored<S> {
    fn rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr;
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                for (topic, partition) in &parts {
                    let next = self.positions.next_offset(topic, *partition);
                    let start = next.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(err) = tpl.set_partition_offset(topic, *partition, start) {
                        tracing::error!(%err, topic, partition, "cannot set start offset");
                    }
                }
                tracing::info!(
                    partitions = tpl.count(),
                    "partitions assigned; starting from the stored positions"
                );
                let assigned = consumer.assign(tpl);
                if assigned.is_ok() {
                    crate::assignment::commit_stored(consumer, &parts, &self.positions);
                }
                assigned
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                consumer.unassign()
            }
            other => {
                tracing::error!(?other, "rebalance error");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "rebalance assignment failed");
        }
    }
}

/// Adds messages to `batch` until it holds `max`, `wait` has passed, a consume error occurs
/// (logged; the caller goes on with what it has) or `shutdown` is cancelled; and, once the
/// stage the batch goes to is `free`, as soon as no further message is already waiting. So a
/// batch is what arrived while the previous one was being written: small and quick when the
/// load is light, up to `max` under a backlog, and an event never waits for a batch to fill
/// while nothing else is being done.
pub async fn fill_batch<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    batch: &mut Vec<OwnedMessage>,
    max: usize,
    wait: Duration,
    free: &mut StageFree,
    shutdown: &CancellationToken,
) {
    let deadline = Instant::now() + wait;
    while batch.len() < max {
        // With the stage free and something to hand it, only what librdkafka already holds
        // is taken: a timeout of zero still polls the receive once before it expires.
        let remaining = if free.is_free() && !batch.is_empty() {
            Duration::ZERO
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            () = free.wait(), if !free.is_free() => {}
            r = tokio::time::timeout(remaining, consumer.recv()) => match r {
                Err(_) => return,
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "consume error");
                    return;
                }
            },
        }
    }
}

/// Whether the stage a batch is filled for (a write, a transaction) is free: it becomes free
/// when the `StageBusy` paired with it is dropped, and stays free.
#[derive(Debug)]
pub struct StageFree(Option<tokio::sync::oneshot::Receiver<()>>);

/// Held by a stage while it works; dropping it frees the batch being filled (see `fill_batch`).
#[derive(Debug)]
pub struct StageBusy {
    _held: tokio::sync::oneshot::Sender<()>,
}

impl StageFree {
    /// A stage that is busy until the returned `StageBusy` is dropped.
    pub fn busy() -> (StageBusy, Self) {
        let (busy, free) = tokio::sync::oneshot::channel();
        (StageBusy { _held: busy }, Self(Some(free)))
    }

    /// A stage that is free already.
    pub fn now() -> Self {
        Self(None)
    }

    /// Completes once the stage is free (at once if it was already).
    pub async fn wait(&mut self) {
        if let Some(free) = &mut self.0 {
            let _ = free.await;
            self.0 = None;
        }
    }

    fn is_free(&self) -> bool {
        self.0.is_none()
    }
}

/// The wait between retries of one batch: 250 ms, doubling up to 30 s, cut short by shutdown.
#[derive(Debug)]
pub struct BatchBackoff {
    next: Duration,
}

impl Default for BatchBackoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(250),
        }
    }
}

impl BatchBackoff {
    /// The wait the next `wait` will take (for logs).
    pub fn next_wait(&self) -> Duration {
        self.next
    }

    /// Waits, then doubles the next wait; false when `shutdown` came first (stop retrying).
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let waited = tokio::select! {
            _ = tokio::time::sleep(self.next) => true,
            _ = shutdown.cancelled() => false,
        };
        self.next = (self.next * 2).min(Duration::from_secs(30));
        waited
    }
}

/// A batch a consumer has prepared (decoded, validated, dead letters sent) and will write.
pub trait PreparedBatch: Send {
    /// The Kafka messages it was made from.
    fn messages(&self) -> &[OwnedMessage];
}

/// Turns consumed messages into a batch ready to write (None: stopping before it was ready).
pub trait BatchPreparer {
    /// What it makes.
    type Batch: PreparedBatch;
    /// Decodes, validates and dead-letters `messages`, retrying what is transient.
    fn prepare(
        &self,
        messages: Vec<OwnedMessage>,
    ) -> impl Future<Output = Option<Self::Batch>> + Send;
}

/// Writes prepared batches with their positions, each all or nothing.
pub trait BatchWriter<B> {
    /// Writes `batch`, retrying what is transient; false when stopping before it was written.
    fn write(&mut self, batch: &B) -> impl Future<Output = bool> + Send;
}

/// How a pipelined consumer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineEnd {
    /// Everything read was written.
    Drained,
    /// A batch could not be written before shutdown; it and what followed are left unwritten,
    /// to be read again from the stored positions on the next start.
    LeftOpenBatch,
}

/// Consumes in batches of up to `max` messages (waiting at most `wait` to fill one), preparing
/// batch n+1 while batch n is written, so decoding and the store work at the same time; batch
/// n+1 holds what arrived while n was written (see `fill_batch`).
/// Batch n+1 is written only after n was; a batch the writer gives up on (only when stopping)
/// ends the loop with nothing after it written. Each written batch is committed to Kafka as
/// advisory. On shutdown the batch already prepared is written first.
pub async fn consume_pipelined<C, P, W>(
    consumer: &StreamConsumer<C>,
    max: usize,
    wait: Duration,
    shutdown: &CancellationToken,
    preparer: &P,
    writer: &mut W,
) -> PipelineEnd
where
    C: ConsumerContext + 'static,
    P: BatchPreparer,
    W: BatchWriter<P::Batch>,
{
    let mut ready: Option<P::Batch> = None;
    loop {
        let (busy, mut writer_free) = StageFree::busy();
        let writing = async {
            let written = match ready.take() {
                Some(batch) if traced_write(writer, &batch).await => Ok(Some(batch)),
                Some(_) => Err(()),
                None => Ok(None),
            };
            drop(busy);
            written
        };
        let reading = async {
            let mut batch = Vec::with_capacity(max);
            fill_batch(consumer, &mut batch, max, wait, &mut writer_free, shutdown).await;
            if batch.is_empty() {
                None
            } else {
                preparer.prepare(batch).await
            }
        };
        let (written, next) = tokio::join!(writing, reading);
        match written {
            Ok(Some(batch)) => commit_advisory(consumer, batch.messages()),
            Ok(None) => {}
            Err(()) => return PipelineEnd::LeftOpenBatch,
        }
        ready = next;
        if shutdown.is_cancelled() {
            if let Some(batch) = ready.take() {
                if !traced_write(writer, &batch).await {
                    return PipelineEnd::LeftOpenBatch;
                }
                commit_advisory(consumer, batch.messages());
            }
            return PipelineEnd::Drained;
        }
    }
}

/// Writes `batch` under one `apply` span per traced message, each lasting the write.
async fn traced_write<B: PreparedBatch, W: BatchWriter<B>>(writer: &mut W, batch: &B) -> bool {
    let spans: Vec<tracing::Span> = batch
        .messages()
        .iter()
        .filter_map(crate::trace::apply_span)
        .collect();
    let written = writer.write(batch).await;
    drop(spans);
    written
}

/// The end offset (last + 1) of each partition in `batch`.
pub fn batch_ends(batch: &[OwnedMessage]) -> BTreeMap<(&str, i32), i64> {
    let mut ends = BTreeMap::new();
    for m in batch {
        let e = ends
            .entry((m.topic(), m.partition()))
            .or_insert(m.offset() + 1);
        *e = (*e).max(m.offset() + 1);
    }
    ends
}

/// Tells Kafka how far a consumer is, for lag monitoring. Best effort: the truth is stored
/// with the consumer's writes, and a failed commit (e.g. during a rebalance) only makes the
/// lag look larger.
pub fn commit_advisory<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    batch: &[OwnedMessage],
) {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), end) in batch_ends(batch) {
        if tpl
            .add_partition_offset(topic, partition, Offset::Offset(end))
            .is_err()
        {
            return;
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, "advisory commit failed");
    }
}

#[cfg(test)]
mod tests {

    #[tokio::test(start_paused = true)]
    async fn batch_backoff_doubles_to_a_ceiling_and_stops_at_shutdown() {
        let shutdown = CancellationToken::new();
        let mut b = BatchBackoff::default();
        let mut waits = Vec::new();
        for _ in 0..9 {
            waits.push(b.next_wait());
            assert!(b.wait(&shutdown).await);
        }
        assert_eq!(waits[0], Duration::from_millis(250));
        assert_eq!(waits[1], Duration::from_millis(500));
        assert_eq!(b.next_wait(), Duration::from_secs(30));
        shutdown.cancel();
        assert!(
            !b.wait(&shutdown).await,
            "a stopping consumer does not wait"
        );
    }
    use super::*;
    use rdkafka::Timestamp;

    fn message(topic: &str, partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            topic.into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn batch_ends_are_one_past_the_highest_offset_per_partition() {
        let batch = [
            message("a", 0, 5),
            message("a", 0, 3),
            message("a", 1, 9),
            message("b", 0, 0),
        ];
        let ends = batch_ends(&batch);
        assert_eq!(ends[&("a", 0)], 6);
        assert_eq!(ends[&("a", 1)], 10);
        assert_eq!(ends[&("b", 0)], 1);
    }
}
