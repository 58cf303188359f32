//! Following a small control topic whole (token revocations, age band widenings): every
//! partition assigned from the beginning, no consumer group and no committed offsets, so every
//! instance sees every record. The follower first reads up to the end the topic had when it
//! started — a service serves only once it knows every revocation made before it — then keeps
//! reading new records as they arrive, until shutdown, taking in partitions added to the topic
//! meanwhile.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::{Error, KafkaArgs, Result, assignment};

/// How long one poll waits: the delay between a record's arrival and its effect.
const POLL: Duration = Duration::from_millis(200);

fn consumer_of(kafka: &KafkaArgs, topic: &str) -> Result<(BaseConsumer, Vec<(i32, i64)>)> {
    let mut config = kafka.client_config()?;
    // No group is joined (assign, not subscribe) and nothing is committed; the client still
    // names a group (`lienthong-follow-…`, which deploy/acls.toml grants) to be allowed to
    // assign.
    config
        .set("group.id", format!("lienthong-follow-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer = config.create().map_err(Error::Client)?;
    let unreachable = |source| Error::Unreachable {
        bootstrap: kafka.bootstrap.clone(),
        timeout: kafka.timeout(),
        source,
    };
    let partitions =
        assignment::partitions(&consumer, &[topic], kafka.timeout()).map_err(|e| match e {
            Error::Kafka(source) => unreachable(source),
            other => other,
        })?;
    let mut ends = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for (_, p) in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, kafka.timeout())
            .map_err(unreachable)?;
        ends.push((p, high));
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(Error::Client)?;
    }
    consumer.assign(&tpl).map_err(Error::Client)?;
    Ok((consumer, ends))
}

/// How often a follower looks for partitions added to its topic: a revocation written to a new
/// partition takes effect within this.
const NEW_PARTITIONS_EVERY: Duration = Duration::from_secs(5);

/// How long that look may hold up the reading of records when the brokers do not answer.
const NEW_PARTITIONS_TIMEOUT: Duration = Duration::from_secs(2);

/// Assigns, from their beginning, the partitions of `topic` that are not in `known` yet
/// (added since the follower started), and adds them to it. A look that fails is retried at
/// the next interval.
fn assign_added(consumer: &BaseConsumer, topic: &str, known: &mut Vec<(String, i32)>) {
    let from_beginning = |_: &str, _: i32| Offset::Beginning;
    match assignment::assign_added(
        consumer,
        consumer,
        &[topic],
        known,
        from_beginning,
        NEW_PARTITIONS_TIMEOUT,
    ) {
        Ok(added) if added.is_empty() => {}
        Ok(added) => {
            tracing::info!(
                topic,
                ?added,
                "following the topic: new partitions assigned"
            );
            known.extend(added);
        }
        Err(e) => {
            tracing::warn!(topic, error = %e, "following the topic: new partitions not looked for; retrying");
        }
    }
}

/// Follows `topic` on a blocking thread, calling `apply` with each record's payload. Returns
/// once the records that existed at the start have been applied (or `catch_up` has passed);
/// the thread goes on until `shutdown`.
pub async fn follow(
    kafka: &KafkaArgs,
    topic: &str,
    catch_up: Duration,
    apply: impl Fn(&[u8]) + Send + 'static,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let (consumer, ends) = {
        let (kafka, topic) = (kafka.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || consumer_of(&kafka, &topic))
            .await
            .map_err(|e| {
                Error::Config(format!("the follower of the topic could not start: {e}"))
            })??
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let name = topic.to_owned();
    let handle = tokio::task::spawn_blocking(move || {
        let mut known: Vec<(String, i32)> = ends.iter().map(|(p, _)| (name.clone(), *p)).collect();
        let mut looked = Instant::now();
        let mut behind: Vec<(i32, i64)> = ends.into_iter().filter(|(_, end)| *end > 0).collect();
        let mut ready = Some(ready_tx);
        caught_up_when_none_behind(&behind, &mut ready);
        while !shutdown.is_cancelled() {
            if looked.elapsed() >= NEW_PARTITIONS_EVERY {
                looked = Instant::now();
                assign_added(&consumer, &name, &mut known);
            }
            match consumer.poll(POLL) {
                // A transactional topic ends with a commit marker, which is never delivered:
                // idle, the consumer's position tells whether the end is reached.
                None => {
                    if ready.is_some()
                        && let Ok(positions) = consumer.position()
                    {
                        behind.retain(|(p, end)| {
                            positions
                                .find_partition(&name, *p)
                                .and_then(|e| e.offset().to_raw())
                                .is_none_or(|at| at < *end)
                        });
                        caught_up_when_none_behind(&behind, &mut ready);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = %name, error = %e, "following the topic: retrying");
                }
                Some(Ok(m)) => {
                    if let Some(payload) = m.payload() {
                        apply(payload);
                    }
                    let (p, next) = (m.partition(), m.offset() + 1);
                    behind.retain(|(bp, end)| !(*bp == p && next >= *end));
                    caught_up_when_none_behind(&behind, &mut ready);
                }
            }
        }
    });
    let started = Instant::now();
    match tokio::time::timeout(catch_up, ready_rx).await {
        Ok(_) => {
            tracing::info!(
                topic,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "caught up with the topic"
            );
            Ok(handle)
        }
        Err(_) => Err(Error::Topic {
            topic: topic.to_owned(),
            message: format!(
                "could not be read to its end within {catch_up:?}; is Kafka reachable?"
            ),
        }),
    }
}

/// Tells the waiting start that the topic is read to its end, once no partition is behind.
fn caught_up_when_none_behind(behind: &[(i32, i64)], ready: &mut Option<oneshot::Sender<()>>) {
    if behind.is_empty()
        && let Some(r) = ready.take()
    {
        let _ = r.send(());
    }
}

/// A running follower that stops when it is dropped or finished, however its owner ends.
pub struct Follower {
    handle: tokio::task::JoinHandle<()>,
    _stop_on_drop: tokio_util::sync::DropGuard,
}

impl Follower {
    /// Follows `topic` when it is given (see [`follow`]; 30 s to catch up), stopping with
    /// `shutdown` or when the returned value is dropped.
    pub async fn start(
        kafka: &KafkaArgs,
        topic: Option<&str>,
        apply: impl Fn(&[u8]) + Send + 'static,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>> {
        let Some(topic) = topic else {
            return Ok(None);
        };
        let stop = shutdown.child_token();
        let handle = follow(kafka, topic, Duration::from_secs(30), apply, stop.clone()).await?;
        Ok(Some(Self {
            handle,
            _stop_on_drop: stop.drop_guard(),
        }))
    }

    /// Stops the follower and waits for its thread to end.
    pub async fn stop(self) {
        let Self {
            handle,
            _stop_on_drop,
        } = self;
        _stop_on_drop.disarm().cancel();
        let _ = handle.await;
    }

    /// Waits for the follower to end (after its shutdown token fired).
    pub async fn finish(self) {
        let Self {
            handle,
            _stop_on_drop,
        } = self;
        let _ = handle.await;
    }
}
