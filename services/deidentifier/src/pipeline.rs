//! Consume → de-identify → produce, exactly once without a database: each batch's analytics
//! events and its consumed offsets are one Kafka transaction.
//!
//! Invariants kept here:
//! - The consumed offsets of a batch are committed only inside the transaction that holds the
//!   batch's analytics events (send_offsets_to_transaction), so a crash at any instant leaves
//!   either both or neither; read_committed readers never see an aborted batch.
//! - A batch is retried as a whole in a new transaction after an abortable failure, and a
//!   commit that timed out is resumed, never abandoned (see `transaction`); the next batch may
//!   be read and prepared meanwhile, but nothing of it is produced before it commits.
//! - Poison (undecodable, invalid) is dead-lettered, durably, before the transaction that moves
//!   the offset past it; a dead letter may be sent twice if that transaction then aborts.
//! - Age bands only widen: an instance starts under the widest bands recorded for its policy
//!   (see `widening`), and records its own widening in the transaction of the first events
//!   published under it, so no committed event under wider bands lacks its record.
//! - Zombie instances are fenced: the offsets carry the consumer group's generation (KIP-447),
//!   and a restarted instance with the same transactional id aborts what its predecessor left.

use std::sync::Arc;
use std::time::Duration;

use lienthong_kafka::consumption::{StageFree, batch_ends, fill_batch, record_lag};
use lienthong_kafka::follow::Follower;
use lienthong_kafka::trace::sampled_traceparent;
use lienthong_kafka::{EventProducer, KafkaArgs};
use lienthong_registry::{RegistryArgs, RegistryClient, WireCodec};
use lienthong_sink::{Consumed, MessageReader, Retrying};
use lienthong_telemetry::trace::{continue_trace, traceparent_of};
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, Statistics, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, DeidentifierConfig};
use crate::risk::{Risk, RiskWindow, coarsened_width};
use crate::transaction::{Framed, Transactions, Uncommitted};
use crate::transform::{AnalyticsEvent, Deidentifier};
use crate::widening::{Widenings, adopted_width};

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeidentifierError {
    /// Settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Kafka settings or connection.
    #[error(transparent)]
    Kafka(#[from] lienthong_kafka::Error),
    /// Kafka client.
    #[error("kafka: {0}")]
    Client(KafkaError),
    /// Registry settings.
    #[error(transparent)]
    Registry(#[from] lienthong_registry::Error),
    /// A transactional failure nothing but a new producer can clear (fenced by a newer
    /// instance with the same transactional id, or by a rebalance); restarting is safe.
    #[error(
        "the transactional producer failed for good: {0}; restart the instance (nothing is lost: the open batch is read again)"
    )]
    Fatal(String),
}

// The cause is in the message, not a source: a chain of causes names it once.
impl From<KafkaError> for DeidentifierError {
    fn from(e: KafkaError) -> Self {
        Self::Client(e)
    }
}

/// Lag statistics of the consumer.
struct Lag {
    group: String,
}

impl ClientContext for Lag {
    fn stats(&self, statistics: Statistics) {
        record_lag(&self.group, &statistics);
    }
}

impl ConsumerContext for Lag {}

/// Runs until `shutdown`; a batch not committed by then is read again on the next start.
pub async fn run(
    config: DeidentifierConfig,
    kafka: KafkaArgs,
    registry: RegistryArgs,
    shutdown: CancellationToken,
) -> Result<(), DeidentifierError> {
    crate::metrics::register();
    config.check()?;
    let policy = config.load_policy()?;
    let key = config.load_key()?;
    kafka.probe().await?;
    RegistryClient::new(&registry)?.probe().await?;
    let mut deidentifier = Deidentifier::new(policy, key);
    let risk = deidentifier.policy().risk().clone();
    let mut window = RiskWindow::new(risk.k_floor, risk.window_events);
    metrics::gauge!(crate::metrics::RISK_K_FLOOR.name).set(risk.k_floor as f64);
    metrics::gauge!(crate::metrics::AGE_BAND_YEARS.name)
        .set(f64::from(deidentifier.age_band_width()));
    // Nothing is published before every widening recorded for this policy is known.
    let widenings = Arc::new(Widenings::new(deidentifier.policy().version()));
    let follower = {
        let widenings = Arc::clone(&widenings);
        Follower::start(
            &kafka,
            Some(&config.age_bands_topic),
            move |record| widenings.apply_record(record),
            &shutdown,
        )
        .await?
    };
    adopt_recorded(&widenings, &mut deidentifier, &mut window);

    let codec = WireCodec::new(&registry)?;
    let dlq = EventProducer::new(&kafka, Duration::from_secs(30))?;
    let inputs = config.input_topics();
    let topics: Vec<&str> = inputs.iter().map(String::as_str).collect();
    lienthong_kafka::metrics::register_consumer(&config.group, &topics);

    let transactional_id = config.transactional_id();
    let mut transactions = Transactions::start(
        producer_config(&kafka, &config, &transactional_id)?,
        Duration::from_millis(config.transaction_timeout_ms),
        &shutdown,
    )
    .await
    .map_err(|e| DeidentifierError::Fatal(e.to_string()))?;
    tracing::info!(
        group = %config.group,
        %transactional_id,
        policy = deidentifier.policy().version(),
        ?topics,
        "de-identification service consuming"
    );

    let reader = MessageReader {
        codec: &codec,
        receipt_topic: Some(&config.receipt_topic),
        audit_topic: None,
        dlq: Some(&dlq),
        dlq_topic: &config.dlq_topic,
        group: &config.group,
    };
    // This instance's own widening whose record no committed transaction holds yet: the
    // next batch produced carries it.
    let mut unrecorded: Option<Risk> = None;
    'rejoin: loop {
        let consumer = subscribed(&kafka, &config, &topics)?;
        // Pipelined: while batch n's transaction commits (waiting on the broker), batch n+1 is
        // fetched, de-identified and framed. Nothing of n+1 is produced before n has committed,
        // so a retried or abandoned transaction never has a later batch's events before it.
        let prepare = |deidentifier: &Deidentifier, free: StageFree| {
            let (reader, codec, config, consumer, shutdown) =
                (&reader, &codec, &config, &consumer, &shutdown);
            let deidentifier = deidentifier.clone();
            async move {
                let batch = next_batch(consumer, config, free, shutdown).await?;
                let Deidentified { events, spans } =
                    deidentify(reader, &deidentifier, &batch, shutdown).await?;
                let framed = frame(codec, config, &events, shutdown).await?;
                Some(Prepared {
                    batch,
                    events,
                    framed,
                    spans,
                })
            }
        };
        let mut next = prepare(&deidentifier, StageFree::now()).await;
        if let (Some(risk), Some(first)) = (&unrecorded, next.as_mut()) {
            match frame_widening(&codec, &config, &deidentifier, risk, &shutdown).await {
                Some(record) => first.framed.push(record),
                None => break,
            }
        }
        while let Some(current) = next.take() {
            let Prepared {
                batch,
                events,
                framed,
                spans,
            } = current;
            let records_widening = framed.iter().any(|f| f.topic == config.age_bands_topic);
            // Settled as soon as the transaction is, not when the next batch has arrived (the
            // join below waits for that too, which takes as long as the topics stay quiet).
            let (busy, producer_free) = StageFree::busy();
            let committing = async {
                let committed = commit(&mut transactions, &consumer, &batch, &framed).await;
                drop(busy);
                if matches!(committed, Ok(Outcome::Committed)) {
                    // The traced events' stage ends with the commit that made their records
                    // visible.
                    drop(spans);
                    for e in &events {
                        metrics::counter!(crate::metrics::EVENTS.name, "kind" => e.kind.as_str())
                            .increment(1);
                        if let Some((q, patient)) = &e.quasi {
                            window.add(q.clone(), patient.clone());
                        }
                    }
                }
                committed
            };
            let (committed, following) = {
                let mut committing = std::pin::pin!(committing);
                let mut preparing = std::pin::pin!(prepare(&deidentifier, producer_free));
                let mut prepared = None;
                let committed = loop {
                    tokio::select! {
                        c = &mut committing => break c,
                        p = &mut preparing, if prepared.is_none() => prepared = Some(p),
                    }
                };
                // A batch that did not commit leaves the next one unwanted: not waited for
                // (with its consumer's membership gone, it may never fill).
                let following = match (&committed, prepared) {
                    (Ok(Outcome::Committed), Some(p)) => p,
                    (Ok(Outcome::Committed), None) => preparing.await,
                    _ => None,
                };
                (committed, following)
            };
            match committed? {
                Outcome::Committed => {}
                Outcome::Stopping => break 'rejoin,
                Outcome::Rewind(why) => {
                    // The prepared batch was read by the same lost membership: it goes too.
                    metrics::counter!(crate::metrics::REWINDS.name).increment(1);
                    tracing::warn!(
                        error = %why,
                        "the consumer's group membership is gone; rejoining and reading again \
                         from the committed offsets"
                    );
                    continue 'rejoin;
                }
            }
            if records_widening {
                unrecorded = None;
            }
            let width = deidentifier.age_band_width();
            let widened = watch_risk(&mut window, &mut deidentifier);
            adopt_recorded(&widenings, &mut deidentifier, &mut window);
            if widened.is_some() {
                unrecorded = widened;
            }
            // A batch prepared under bands that have just widened is prepared again; when this
            // instance's own risk watch widened them, the batch's transaction records it.
            next = match following {
                Some(f) if deidentifier.age_band_width() != width => {
                    let read = deidentify(&reader, &deidentifier, &f.batch, &shutdown).await;
                    let mut framed = match &read {
                        Some(read) => frame(&codec, &config, &read.events, &shutdown).await,
                        None => None,
                    };
                    if let (Some(risk), Some(framed)) = (&unrecorded, framed.as_mut()) {
                        match frame_widening(&codec, &config, &deidentifier, risk, &shutdown).await
                        {
                            Some(record) => framed.push(record),
                            None => break 'rejoin,
                        }
                    }
                    read.zip(framed).map(|(read, framed)| Prepared {
                        batch: f.batch,
                        events: read.events,
                        framed,
                        spans: read.spans,
                    })
                }
                following => following,
            };
        }
        break;
    }
    if let Some(follower) = follower {
        follower.stop().await;
    }
    tracing::info!(
        "de-identification service stopped; what was not committed is read again on the next start"
    );
    Ok(())
}

/// A batch's analytics events, and the spans of the traced ones (open until committed).
struct Deidentified {
    events: Vec<AnalyticsEvent>,
    spans: Vec<tracing::Span>,
}

/// Decodes, validates and de-identifies a batch (poison dead-lettered); None when stopping.
async fn deidentify(
    reader: &MessageReader<'_>,
    deidentifier: &Deidentifier,
    batch: &[OwnedMessage],
    shutdown: &CancellationToken,
) -> Option<Deidentified> {
    let mut retrying = Retrying::new(
        "a batch could not be read",
        crate::metrics::BATCH_RETRIES.name,
    );
    loop {
        let mut spans = Vec::new();
        let read = reader
            .read_batch(batch, |consumed, origin| {
                let accepted_at_ms = origin.0.timestamp().to_millis();
                // A traced event's analytics record continues its trace from this stage.
                let trace = sampled_traceparent(origin.0).and_then(|parent| {
                    let span = tracing::info_span!(
                        "deidentify",
                        topic = origin.0.topic(),
                        partition = origin.0.partition(),
                        offset = origin.0.offset(),
                    );
                    continue_trace(&span, Some(parent));
                    let own = traceparent_of(&span);
                    spans.push(span);
                    own
                });
                let stamped = |mut e: AnalyticsEvent| {
                    e.accepted_at_ms = accepted_at_ms;
                    e.trace = trace;
                    e
                };
                match consumed {
                    Consumed::Event { event, .. } => Ok(stamped(deidentifier.event(&event))),
                    Consumed::Receipt(receipt) => Ok(stamped(deidentifier.receipt(&receipt))),
                    Consumed::Audit(_) => Err("the access audit is not de-identified here".into()),
                    Consumed::Analytics(_) => Err(
                        "an analytics event is de-identified already; it is not read here".into(),
                    ),
                }
            })
            .await;
        match read {
            Ok(events) => {
                return Some(Deidentified {
                    events: events.into_iter().flatten().collect(),
                    spans,
                });
            }
            Err(e) => retrying.failed(&e),
        }
        if !retrying.wait(shutdown).await {
            return None;
        }
    }
}

/// One analytics record, framed for the registry.
/// A batch read, de-identified and framed: ready for its transaction.
struct Prepared {
    batch: Vec<OwnedMessage>,
    events: Vec<AnalyticsEvent>,
    framed: Vec<Framed>,
    /// Open until the transaction commits: a traced event's span covers its whole stage.
    spans: Vec<tracing::Span>,
}

/// The next non-empty batch, cut as soon as the transaction before it has ended (`free`) and
/// nothing more is waiting; None when stopping.
async fn next_batch(
    consumer: &StreamConsumer<Lag>,
    config: &DeidentifierConfig,
    mut free: StageFree,
    shutdown: &CancellationToken,
) -> Option<Vec<OwnedMessage>> {
    while !shutdown.is_cancelled() {
        let mut batch = Vec::with_capacity(config.batch_events);
        fill_batch(
            consumer,
            &mut batch,
            config.batch_events,
            config.batch_wait(),
            &mut free,
            shutdown,
        )
        .await;
        if !batch.is_empty() {
            return Some(batch);
        }
    }
    None
}

/// Frames every event (the schema id is looked up once, then cached); None when stopping.
async fn frame(
    codec: &WireCodec,
    config: &DeidentifierConfig,
    events: &[AnalyticsEvent],
    shutdown: &CancellationToken,
) -> Option<Vec<Framed>> {
    let mut retrying = Retrying::new(
        "analytics events could not be framed",
        crate::metrics::BATCH_RETRIES.name,
    );
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let topic = config.analytics.of(e.kind);
        let value = encode(
            codec,
            topic,
            e.kind.message_name(),
            &e.payload,
            &mut retrying,
            shutdown,
        )
        .await?;
        out.push(Framed {
            topic: topic.to_owned(),
            key: e.key.clone(),
            value,
            timestamp: e.accepted_at_ms,
            trace: e.trace.clone(),
        });
    }
    Some(out)
}

/// The framed record of this instance's widening to its current age bands; None when stopping.
async fn frame_widening(
    codec: &WireCodec,
    config: &DeidentifierConfig,
    deidentifier: &Deidentifier,
    risk: &Risk,
    shutdown: &CancellationToken,
) -> Option<Framed> {
    let policy = deidentifier.policy();
    let (key, payload) = crate::widening::record(
        policy.version(),
        deidentifier.age_band_width(),
        risk,
        policy.risk().k_floor,
        std::time::SystemTime::now(),
    );
    let mut retrying = Retrying::new(
        "the age band widening could not be framed",
        crate::metrics::BATCH_RETRIES.name,
    );
    let topic = &config.age_bands_topic;
    let value = encode(
        codec,
        topic,
        crate::widening::MESSAGE,
        &payload,
        &mut retrying,
        shutdown,
    )
    .await?;
    Some(Framed {
        topic: topic.clone(),
        key,
        value,
        timestamp: None,
        trace: None,
    })
}

/// One record framed for the registry, retried until it is; None when stopping.
async fn encode(
    codec: &WireCodec,
    topic: &str,
    message: &str,
    payload: &[u8],
    retrying: &mut Retrying,
    shutdown: &CancellationToken,
) -> Option<Vec<u8>> {
    loop {
        match codec.encode_message(topic, message, payload).await {
            Ok(value) => return Some(value),
            Err(err) => {
                retrying.failed(&err);
                if !retrying.wait(shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// What became of a batch's transaction.
enum Outcome {
    /// Committed with its offsets.
    Committed,
    /// Not committed: stopping.
    Stopping,
    /// Not committed: the batch was read under a group membership that is gone.
    Rewind(String),
}

/// Commits the batch's records with its offsets.
async fn commit(
    transactions: &mut Transactions<'_>,
    consumer: &StreamConsumer<Lag>,
    batch: &[OwnedMessage],
    framed: &[Framed],
) -> Result<Outcome, DeidentifierError> {
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), end) in batch_ends(batch) {
        offsets.add_partition_offset(topic, partition, Offset::Offset(end))?;
    }
    let group = consumer
        .group_metadata()
        .ok_or(KafkaError::MessageProduction(RDKafkaErrorCode::State))?;
    match transactions
        .commit(framed, &offsets, &Arc::new(group))
        .await
    {
        Ok(()) => Ok(Outcome::Committed),
        Err(Uncommitted::Stopping) => Ok(Outcome::Stopping),
        Err(Uncommitted::Rewind(why)) => Ok(Outcome::Rewind(why)),
        Err(Uncommitted::Fatal(e)) => Err(DeidentifierError::Fatal(e)),
    }
}

/// A consumer of the input topics in the service's group, subscribed: it starts from the
/// group's committed offsets.
fn subscribed(
    kafka: &KafkaArgs,
    config: &DeidentifierConfig,
    topics: &[&str],
) -> Result<StreamConsumer<Lag>, DeidentifierError> {
    let consumer: StreamConsumer<Lag> =
        consumer_config(kafka, config)?.create_with_context(Lag {
            group: config.group.clone(),
        })?;
    consumer.subscribe(topics)?;
    Ok(consumer)
}

/// Updates the risk gauges, and widens the age bands when a full window shows a group below
/// the policy's floor; the risk that made it widen, if it did.
fn watch_risk(window: &mut RiskWindow, deidentifier: &mut Deidentifier) -> Option<Risk> {
    let risk = window.measure();
    metrics::gauge!(crate::metrics::RISK_MIN_GROUP.name).set(risk.min_group as f64);
    metrics::gauge!(crate::metrics::RISK_SHARE_BELOW.name).set(risk.share_below_floor);
    metrics::gauge!(crate::metrics::RISK_WINDOW_EVENTS.name).set(risk.events as f64);
    let policy = deidentifier.policy().risk().clone();
    let width = coarsened_width(
        &risk,
        policy.k_floor,
        window.is_full(),
        deidentifier.age_band_width(),
        &policy.age_band_widths,
    )?;
    tracing::warn!(
        k = risk.min_group,
        k_floor = policy.k_floor,
        share_below = risk.share_below_floor,
        age_band_years = width,
        "re-identification risk above the policy's floor; widening the age bands"
    );
    widen(deidentifier, window, width);
    Some(risk)
}

/// Moves to the widest bands recorded for the policy (by an earlier run or another instance)
/// when they are wider than the current ones.
fn adopt_recorded(widenings: &Widenings, deidentifier: &mut Deidentifier, window: &mut RiskWindow) {
    let widths = &deidentifier.policy().risk().age_band_widths;
    if let Some(width) = adopted_width(widenings.widest(), deidentifier.age_band_width(), widths) {
        tracing::warn!(
            policy = deidentifier.policy().version(),
            age_band_years = width,
            "publishing under the widest age bands recorded for this policy"
        );
        widen(deidentifier, window, width);
    }
}

/// Publishes under `width` from now on; the window measures the new bands afresh.
fn widen(deidentifier: &mut Deidentifier, window: &mut RiskWindow, width: u8) {
    deidentifier.set_age_band_width(width);
    metrics::gauge!(crate::metrics::AGE_BAND_YEARS.name).set(f64::from(width));
    window.clear();
}

fn consumer_config(
    kafka: &KafkaArgs,
    config: &DeidentifierConfig,
) -> lienthong_kafka::Result<ClientConfig> {
    let mut cfg = kafka.client_config()?;
    // Offsets are committed only through the producer's transactions.
    cfg.set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "statistics.interval.ms",
            lienthong_kafka::consumption::STATISTICS_INTERVAL_MS,
        );
    Ok(cfg)
}

fn producer_config(
    kafka: &KafkaArgs,
    config: &DeidentifierConfig,
    transactional_id: &str,
) -> lienthong_kafka::Result<ClientConfig> {
    let mut cfg = kafka.client_config()?;
    cfg.set("transactional.id", transactional_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .set(
            "transaction.timeout.ms",
            config.transaction_timeout_ms.to_string(),
        )
        .set(
            "message.max.bytes",
            lienthong_kafka::producer::MESSAGE_MAX_BYTES.to_string(),
        );
    Ok(cfg)
}
