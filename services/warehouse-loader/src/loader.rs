//! The consume → transform → one-transaction-per-batch loop, with dead letters and retries.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use lienthong_kafka::consumption::{
    BatchPreparer, BatchWriter, PipelineEnd, PreparedBatch, SeekToStored, StoredPositions,
    batch_ends, consume_pipelined,
};
use lienthong_kafka::dlq::Reason;
use lienthong_kafka::{EventProducer, KafkaArgs};
use lienthong_registry::{RegistryArgs, RegistryClient, WireCodec};
use lienthong_sink::{Consumed, MessageReader, Origin, Retrying, retry, sink_consumer_config};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::config::LoaderConfig;
use crate::rows::{MessageRows, analytics_rows};
use crate::store::{Conflict, Position, WriteError, ensure_history_months, write_batch};

/// Retries of a batch not decoded or not written.
const RETRIES: &str = crate::metrics::BATCH_RETRIES.name;

/// Why the loader stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// Kafka.
    #[error(transparent)]
    Kafka(#[from] lienthong_kafka::Error),
    /// Kafka client.
    #[error("kafka consumer: {0}")]
    Consumer(rdkafka::error::KafkaError),
    /// Registry settings.
    #[error(transparent)]
    Registry(#[from] lienthong_registry::Error),
    /// PostgreSQL could not be reached at start-up.
    #[error(transparent)]
    Connect(#[from] crate::postgres::PgConnectError),
    /// PostgreSQL could not be migrated at start-up.
    #[error(
        "PostgreSQL at {dsn}: {}; check that the role owns the database (--pg-dsn / LIENTHONG_PG_DSN)",
        crate::postgres::reason(.cause)
    )]
    Postgres {
        /// DSN without password.
        dsn: String,
        /// Client error.
        cause: tokio_postgres::Error,
    },
}

// The cause is in the message, not a source: a chain of causes names it once.
impl From<rdkafka::error::KafkaError> for LoaderError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        Self::Consumer(e)
    }
}

/// Runs until `shutdown`; finishes the open batch before returning.
pub async fn run(
    config: LoaderConfig,
    kafka: KafkaArgs,
    registry: RegistryArgs,
    shutdown: CancellationToken,
) -> Result<(), LoaderError> {
    crate::metrics::register();
    kafka.probe().await?;
    // Asked now so that refused credentials stop the loader with the reason at start-up;
    // later, a registry failure only holds loading back until it heals.
    RegistryClient::new(&registry)?.probe().await?;
    let unreachable = |source| LoaderError::Postgres {
        dsn: config.pg.redacted(),
        cause: source,
    };
    let mut clients = Vec::new();
    for _ in 0..config.writers.max(1) {
        clients.push(config.pg.connect().await?);
    }
    crate::migrations::prepare(&mut clients[0], &config.analyst_role, &config.privacy_role)
        .await
        .map_err(unreachable)?;

    let codec = WireCodec::new(&registry)?;
    let dlq = EventProducer::new(&kafka, Duration::from_secs(30))?;
    // Offsets live in PostgreSQL with the rows; Kafka commits are advisory, made after the
    // transaction, so the committed offset never runs ahead of the warehouse.
    let cfg = sink_consumer_config(&kafka, &config.group, Some(config.session_timeout_ms))?;
    // Start every partition where the warehouse says it stands (PostgreSQL is the truth; a
    // new or restored database must not trust Kafka's advisory commits).
    let positions = StoredPositions::default();
    for row in clients[0]
        .query(
            "SELECT topic, kafka_partition, next_offset FROM loader_offsets WHERE consumer_group = $1",
            &[&config.group],
        )
        .await
        .map_err(unreachable)?
    {
        positions.record(row.get(0), row.get(1), row.get(2));
    }
    let consumer: StreamConsumer<SeekToStored<StoredPositions>> =
        cfg.create_with_context(SeekToStored {
            group: config.group.clone(),
            positions: positions.clone(),
        })?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    lienthong_kafka::metrics::register_consumer(&config.group, &topics);
    tracing::info!(group = %config.group, ?topics, "warehouse loader consuming");

    // Pipelined: while batch n is written, batch n+1 is fetched, decoded and dead-lettered,
    // so PostgreSQL and the decoder work at the same time. If a batch is not written
    // (stopping), what follows it is not either: both are read again on the next start, from
    // the positions PostgreSQL holds.
    let end = consume_pipelined(
        &consumer,
        config.batch_events,
        config.batch_wait(),
        &shutdown,
        &Decoder {
            config: &config,
            codec: &codec,
            dlq: &dlq,
            shutdown: &shutdown,
        },
        &mut Warehouse {
            clients: &mut clients,
            months: HashSet::new(),
            config: &config,
            dlq: &dlq,
            positions: &positions,
            shutdown: &shutdown,
        },
    )
    .await;
    match end {
        PipelineEnd::Drained => tracing::info!("warehouse loader stopped after its last batch"),
        PipelineEnd::LeftOpenBatch => {
            tracing::info!("warehouse loader stopped; its open batch is left for the next start");
        }
    }
    Ok(())
}

/// The loader's preparing side: decoding, validation, dead letters.
struct Decoder<'a> {
    config: &'a LoaderConfig,
    codec: &'a WireCodec,
    dlq: &'a EventProducer,
    shutdown: &'a CancellationToken,
}

impl BatchPreparer for Decoder<'_> {
    type Batch = Prepared;

    fn prepare(
        &self,
        messages: Vec<OwnedMessage>,
    ) -> impl Future<Output = Option<Prepared>> + Send {
        prepare_with_retry(self.config, self.codec, self.dlq, messages, self.shutdown)
    }
}

/// The loader's writing side: the PostgreSQL connections and what they have made.
struct Warehouse<'a> {
    clients: &'a mut [Client],
    months: HashSet<time::Date>,
    config: &'a LoaderConfig,
    dlq: &'a EventProducer,
    positions: &'a StoredPositions,
    shutdown: &'a CancellationToken,
}

impl BatchWriter<Prepared> for Warehouse<'_> {
    async fn write(&mut self, batch: &Prepared) -> bool {
        if !write_with_retry(
            &mut Sink {
                clients: self.clients,
                months: &mut self.months,
                config: self.config,
                dlq: self.dlq,
            },
            batch,
            self.shutdown,
        )
        .await
        {
            return false;
        }
        for ((topic, partition), end) in batch_ends(&batch.messages) {
            self.positions.record(topic, partition, end);
        }
        lienthong_sink::freshness::record(crate::metrics::FRESHNESS.name, &batch.messages);
        true
    }
}

/// A batch read from Kafka, decoded, with its dead letters already sent: ready to write.
struct Prepared {
    messages: Vec<OwnedMessage>,
    items: Vec<(Position, Option<MessageRows>)>,
}

impl PreparedBatch for Prepared {
    fn messages(&self) -> &[OwnedMessage] {
        &self.messages
    }
}

/// Decodes a batch and sends its dead letters; a registry or DLQ failure is retried (the
/// message says nothing wrong about itself). None when stopping before it succeeded.
async fn prepare_with_retry(
    config: &LoaderConfig,
    codec: &WireCodec,
    dlq: &EventProducer,
    messages: Vec<OwnedMessage>,
    shutdown: &CancellationToken,
) -> Option<Prepared> {
    let reader = MessageReader {
        codec,
        receipt_topic: None,
        audit_topic: Some(&config.audit_topic),
        dlq: Some(dlq),
        dlq_topic: &config.dlq_topic,
        group: &config.group,
    };
    let rows = retry("batch not decoded", RETRIES, shutdown, || {
        reader.read_batch(&messages, rows_for)
    })
    .await?;
    let items = messages
        .iter()
        .zip(rows)
        .map(|(m, rows)| {
            let position = Position {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
            };
            (position, rows)
        })
        .collect();
    Some(Prepared { messages, items })
}

/// The warehouse rows of a good message; Err (dead-lettered) when its values do not fit the
/// warehouse. Only de-identified analytics events (and the access audit) are loaded: a
/// document or receipt with personal data never becomes a row, whatever topic it came from.
fn rows_for(consumed: Consumed, origin: Origin<'_>) -> Result<MessageRows, String> {
    match consumed {
        Consumed::Analytics(event) => analytics_rows(&event).map(MessageRows::Event),
        Consumed::Audit(a) => crate::accesses::access_row(&a).map(MessageRows::Access),
        Consumed::Event { .. } | Consumed::Receipt(_) => {
            return Err(format!(
                "{origin}: the warehouse loads de-identified analytics events only, and this \
                 topic holds documents with personal data; load lienthong.analytics.* topics \
                 (--topics / LIENTHONG_WAREHOUSE_TOPICS)"
            ));
        }
    }
    .map_err(|e| format!("{origin}: {e}"))
}

/// What writing a batch needs: the connections, the months known to exist, where poison goes.
struct Sink<'a> {
    clients: &'a mut [Client],
    months: &'a mut HashSet<time::Date>,
    config: &'a LoaderConfig,
    dlq: &'a EventProducer,
}

impl Sink<'_> {
    /// Sends `message` to the dead-letter topic; durable before its offset moves.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        reason: Reason,
        why: &str,
    ) -> lienthong_kafka::Result<()> {
        let config = self.config;
        lienthong_kafka::dlq::send(
            self.dlq,
            &config.dlq_topic,
            &config.group,
            message,
            reason,
            why,
        )
        .await
        .map(|_| ())
    }
}

/// Writes a prepared batch; on a database failure waits and retries the same batch without
/// advancing anything, reconnecting as needed. A failure that is the data's own (PostgreSQL
/// refuses a value) is isolated instead: see `write_or_split`. False when stopping before it
/// was written.
async fn write_with_retry(
    sink: &mut Sink<'_>,
    batch: &Prepared,
    shutdown: &CancellationToken,
) -> bool {
    let mut retrying = Retrying::new("batch not written", RETRIES);
    let all: Vec<usize> = (0..batch.items.len()).collect();
    let mut skipped = Vec::new();
    loop {
        // Messages dead-lettered as conflicts, written as skipped (their offsets move); kept
        // across retries so a conflict is dead-lettered once.
        match write_or_split(sink, batch, &all, &mut skipped).await {
            Ok(()) => return true,
            Err(e) => {
                retrying.failed(&format!("{e:#}"));
                // Even when stopping, an unwritten batch is simply left for the next start.
                if !retrying.wait(shutdown).await {
                    return false;
                }
                for client in sink.clients.iter_mut().filter(|c| c.is_closed()) {
                    match sink.config.pg.connect().await {
                        Ok(c) => *client = c,
                        Err(e) => tracing::warn!(error = %e, "PostgreSQL still unreachable"),
                    }
                }
            }
        }
    }
}

/// True when PostgreSQL refused the data itself (data exception, constraint violation,
/// program limit): the same rows would fail again however often they are retried.
fn refused_by_data(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| {
            c.downcast_ref::<tokio_postgres::Error>().or_else(|| {
                match c.downcast_ref::<WriteError>() {
                    Some(WriteError::Postgres(e)) => Some(e),
                    _ => None,
                }
            })
        })
        .filter_map(tokio_postgres::Error::code)
        .any(|code| matches!(&code.code()[..2], "22" | "23" | "54"))
}

/// The conflicts a failed write found, if that is why it failed.
fn conflicts_of(e: &anyhow::Error) -> Option<&[Conflict]> {
    e.chain()
        .find_map(|c| match c.downcast_ref::<WriteError>() {
            Some(WriteError::Conflicts(found)) => Some(found.as_slice()),
            _ => None,
        })
}

/// Writes the messages `at` (indexes into the batch, in batch order). When PostgreSQL refuses
/// their data, the first half is written, then the second, down to the one message it refuses
/// alone: that one is dead-lettered with the database's reason and written as skipped (its
/// offset moves), so one message never stops the warehouse. Halves are written in order, so
/// each partition's offsets still only move forward; a half already committed is skipped on
/// a retry, as any applied offset is.
async fn write_or_split(
    sink: &mut Sink<'_>,
    batch: &Prepared,
    at: &[usize],
    skipped: &mut Vec<(usize, BatchItem)>,
) -> anyhow::Result<()> {
    let e = loop {
        let items: Vec<&BatchItem> = at
            .iter()
            .map(|&i| {
                skipped
                    .iter()
                    .find(|(s, _)| *s == i)
                    .map_or(&batch.items[i], |(_, item)| item)
            })
            .collect();
        let e = match write(sink, &items).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // The same document version with other content: those messages are dead-lettered
        // and the rest written, whatever their place in the batch.
        let Some(conflicts) = conflicts_of(&e) else {
            break e;
        };
        let found: Vec<(usize, &Conflict)> = conflicts
            .iter()
            .filter_map(|c| {
                at.iter()
                    .copied()
                    .find(|&i| {
                        let (p, rows) = &batch.items[i];
                        p.offset == c.offset
                            && rows
                                .as_ref()
                                .and_then(MessageRows::event)
                                .is_some_and(|r| r.history.event_id == c.event_id)
                            && !skipped.iter().any(|(s, _)| *s == i)
                    })
                    .map(|i| (i, c))
            })
            .collect();
        if found.is_empty() {
            break e;
        }
        let letters: Vec<_> = found
            .iter()
            .map(|&(i, c)| {
                let message = &batch.messages[i];
                let why = format!(
                    "{}: conflict: event {} (its document version) is stored with other \
                     content; a correction must be published as the next version",
                    Origin(message),
                    c.event_id
                );
                (message, Reason::Conflict, why)
            })
            .collect();
        // All of the write's conflicts at once: one round trip to the broker, not one each.
        lienthong_kafka::dlq::send_all(
            sink.dlq,
            &sink.config.dlq_topic,
            &sink.config.group,
            &letters,
        )
        .await?;
        metrics::counter!(crate::metrics::CONFLICTS.name).increment(letters.len() as u64);
        skipped.extend(
            found
                .iter()
                .map(|&(i, _)| (i, (batch.items[i].0.clone(), None))),
        );
    };
    if !refused_by_data(&e) {
        return Err(e);
    }
    if let [i] = at {
        let message = &batch.messages[*i];
        let why = format!(
            "{}: the warehouse refuses this message's rows: {e:#}",
            Origin(message)
        );
        sink.dead_letter(message, Reason::Refused, &why).await?;
        let skipped = (batch.items[*i].0.clone(), None);
        return write(sink, &[&skipped]).await;
    }
    tracing::warn!(messages = at.len(), error = %format!("{e:#}"), "PostgreSQL refuses a batch's data; writing it in halves to find the message");
    // Conflicts found above are dead-lettered already: the halves write them as skipped.
    let (left, right) = at.split_at(at.len() / 2);
    Box::pin(write_or_split(sink, batch, left, skipped)).await?;
    Box::pin(write_or_split(sink, batch, right, skipped)).await
}

async fn write(sink: &mut Sink<'_>, items: &[&BatchItem]) -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_history_months(
        &sink.clients[0],
        sink.months,
        items
            .iter()
            .filter_map(|(_, rows)| rows.as_ref().and_then(MessageRows::event)),
    )
    .await?;
    let group = &sink.config.group;
    // One transaction per writer, each over whole partitions: a partition's rows and its
    // offset always commit together, and one patient's documents (keyed to one partition)
    // never meet in two transactions. If one commits and another fails, the retry skips what
    // was committed (its offsets moved) and writes the rest.
    let shares = shares_by_partition(items, sink.clients.len());
    let written = futures::future::try_join_all(
        sink.clients
            .iter_mut()
            .zip(shares.iter())
            .filter(|(_, share)| !share.is_empty())
            .map(|(client, share)| async move {
                let tx = client.transaction().await?;
                let written = write_batch(&tx, group, share).await?;
                tx.commit().await?;
                Ok::<_, WriteError>(written)
            }),
    )
    .await?
    .into_iter()
    .fold(crate::store::Written::default(), |mut all, w| {
        all.history += w.history;
        all.current += w.current;
        all.accesses += w.accesses;
        all.already_applied += w.already_applied;
        all
    });
    metrics::histogram!(crate::metrics::COMMIT_SECONDS.name)
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!(crate::metrics::BATCH_SIZE.name).record(items.len() as f64);
    metrics::counter!(crate::metrics::ROWS.name, "table" => "event_history")
        .increment(written.history);
    metrics::counter!(crate::metrics::ROWS.name, "table" => "current").increment(written.current);
    metrics::counter!(crate::metrics::ROWS.name, "table" => "accesses").increment(written.accesses);
    metrics::counter!(crate::metrics::SKIPPED.name).increment(written.already_applied);
    tracing::debug!(messages = items.len(), ?written, "batch committed");
    Ok(())
}

/// One message of a batch at its position: its rows, or None when it was dead-lettered.
type BatchItem = (Position, Option<MessageRows>);

/// Splits a batch over `writers` connections, whole partitions each (in offset order), the
/// largest partitions first to the least loaded writer, so the writers finish together: a
/// batch is done only when its slowest writer is. Batches are written one after the other,
/// so a partition may go to another writer in the next batch.
fn shares_by_partition<'a>(items: &[&'a BatchItem], writers: usize) -> Vec<Vec<&'a BatchItem>> {
    let mut partitions: BTreeMap<(&str, i32), Vec<&BatchItem>> = BTreeMap::new();
    for &item in items {
        partitions
            .entry((item.0.topic.as_str(), item.0.partition))
            .or_default()
            .push(item);
    }
    let mut partitions: Vec<_> = partitions.into_values().collect();
    // Stable: equal sizes keep key order, so the split is deterministic.
    partitions.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut shares: Vec<Vec<&BatchItem>> = vec![Vec::new(); writers.max(1)];
    for partition in partitions {
        if let Some(share) = shares.iter_mut().min_by_key(|s| s.len()) {
            share.extend(partition);
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_partition_goes_whole_to_one_writer_and_the_writers_share_evenly() {
        let item = |topic: &str, partition: i32, offset: i64| {
            (
                Position {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                },
                None,
            )
        };
        // Nine partitions of unequal size (what hashing had split 7 to 2).
        let mut items = Vec::new();
        for (topic, sizes) in [
            ("a", [400, 300, 100]),
            ("b", [350, 250, 150]),
            ("c", [200, 120, 80]),
        ] {
            for (partition, size) in sizes.into_iter().enumerate() {
                for offset in 0..size {
                    items.push(item(topic, partition as i32, offset));
                }
            }
        }
        let items: Vec<&BatchItem> = items.iter().collect();
        let shares = shares_by_partition(&items, 2);
        assert_eq!(shares.len(), 2);
        assert_eq!(shares.iter().map(Vec::len).sum::<usize>(), items.len());
        let (a, b) = (shares[0].len(), shares[1].len());
        assert!(a.abs_diff(b) <= 80, "uneven shares {a} / {b}");
        for share in &shares {
            for (topic, partition) in share.iter().map(|(p, _)| (&p.topic, p.partition)) {
                let elsewhere = shares
                    .iter()
                    .filter(|s| {
                        s.iter()
                            .any(|(p, _)| &p.topic == topic && p.partition == partition)
                    })
                    .count();
                assert_eq!(elsewhere, 1, "{topic}[{partition}] split over writers");
            }
            // Offsets of a partition stay in order.
            let mut last: BTreeMap<(&str, i32), i64> = BTreeMap::new();
            for (p, _) in share {
                let prev = last.insert((p.topic.as_str(), p.partition), p.offset);
                assert!(prev.is_none_or(|o| o < p.offset));
            }
        }
        assert_eq!(
            shares_by_partition(&items, 0).len(),
            1,
            "zero writers means one"
        );
        assert_eq!(shares_by_partition(&items, 1)[0].len(), items.len());
    }
}
