//! One batch's records and consumed offsets as one Kafka transaction, recovered from each
//! failure as librdkafka's transactional contract prescribes (rdkafka.h, on
//! `rd_kafka_commit_transaction` and `rd_kafka_abort_transaction`).
//!
//! Invariants kept here:
//! - A retriable error (a timeout, typically while the transaction coordinator moves to
//!   another broker) resumes the same call: the broker may still complete that commit, so
//!   aborting it instead is refused by the client, and ending the service then would stop the
//!   analytics path for nothing.
//! - An error that requires an abort aborts (resumed the same way when the abort times out),
//!   then the whole batch is produced again in a new transaction.
//! - A call that has not returned long after its own timeout is wedged: librdkafka can wait for
//!   ever on a group coordinator whose broker died (confluentinc/librdkafka#5456 and #5511,
//!   open in the librdkafka this links). The producer is then replaced by a new one with the
//!   same transactional id, whose initialisation fences the wedged one and aborts its open
//!   transaction, and the batch is produced again. Calls run on threads of their own, so a
//!   wedged call holds no worker and delays no shutdown.
//! - Offsets refused because the consumer's group membership is gone (unknown member, stale
//!   generation: its session expired while its group coordinator moved) abort the transaction
//!   and send the batch back: its partitions may already be another instance's, so only the
//!   committed offsets, read again by a consumer that has rejoined, say where to go on
//!   (KIP-447).
//! - Only a fatal error (fenced by a newer instance, or a state no call can leave) ends the
//!   service: nothing but a new producer can go on, and nothing is lost, since the batch's
//!   offsets were not committed.
//! - Every wait between attempts is a backoff that ends at shutdown; the batch then stays
//!   uncommitted and is read again on the next start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_sink::Retrying;
use lienthong_telemetry::trace::TRACEPARENT;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// How long past its own timeout a transactional call may take before it counts as wedged.
pub(crate) const WEDGED_AFTER: Duration = Duration::from_secs(30);

/// Producers replaced for one batch before the service gives up and asks for a restart: each
/// wedged producer stays in memory with its threads, so their number is bounded.
const MAX_REPLACEMENTS_PER_BATCH: u32 = 4;

/// One record ready to produce: its topic, key, framed value and headers.
pub(crate) struct Framed {
    pub topic: String,
    pub key: String,
    pub value: Vec<u8>,
    /// The source event's acceptance time, kept as the record's timestamp.
    pub timestamp: Option<i64>,
    /// The `traceparent` header, for a traced event.
    pub trace: Option<String>,
}

/// What the transactional contract says to do after a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Call the same step again: it timed out and may still complete.
    Resume,
    /// Abort the transaction, then produce the batch again in a new one.
    Abort,
    /// Abort the transaction and read again from the committed offsets after rejoining the
    /// group: the batch was read under a group membership that is gone.
    Rewind,
    /// Nothing but a new producer can go on.
    Fatal,
}

impl Recovery {
    /// How to recover from `error`, returned by a step of an open transaction.
    pub(crate) fn of(error: &KafkaError) -> Self {
        match error {
            _ if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fenced) => Self::Fatal,
            _ if matches!(
                error.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::UnknownMemberId
                        | RDKafkaErrorCode::IllegalGeneration
                        | RDKafkaErrorCode::FencedInstanceId
                )
            ) =>
            {
                Self::Rewind
            }
            KafkaError::Transaction(t) if t.is_fatal() => Self::Fatal,
            KafkaError::Transaction(t) if t.txn_requires_abort() => Self::Abort,
            KafkaError::Transaction(t) if t.is_retriable() => Self::Resume,
            // A transactional call refused outright (such as a call invalid in the producer's
            // state): no retry or abort is known to leave it.
            KafkaError::Transaction(_) => Self::Fatal,
            // A record the client would not enqueue: the transaction is open and can be aborted.
            _ => Self::Abort,
        }
    }
}

/// Why a transaction did not commit.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Uncommitted {
    /// Shutdown came first; the batch is read again on the next start.
    #[error("stopping before the transaction committed")]
    Stopping,
    /// The batch was read under a group membership that is gone; the transaction was aborted.
    /// Read again from the committed offsets with a consumer that has rejoined the group.
    #[error("{0}")]
    Rewind(String),
    /// A failure only a new producer can clear.
    #[error("{0}")]
    Fatal(String),
}

/// The transactional producer of one instance: built from one configuration (which holds its
/// transactional id), replaced when a call wedges.
pub(crate) struct Transactions<'a> {
    producer: FutureProducer,
    config: ClientConfig,
    /// How long one blocking call (offsets, commit, abort) may take before it is resumed.
    timeout: Duration,
    /// How long past `timeout` a call may take before it counts as wedged.
    wedged_after: Duration,
    /// Producers replaced so far.
    replacements: u32,
    shutdown: &'a CancellationToken,
}

impl<'a> Transactions<'a> {
    /// A producer made from `config` and initialised for transactions (which fences an
    /// earlier instance with the same transactional id and aborts what it left open).
    pub(crate) async fn start(
        config: ClientConfig,
        timeout: Duration,
        shutdown: &'a CancellationToken,
    ) -> Result<Self, Uncommitted> {
        let producer = initialised(&config, timeout, WEDGED_AFTER).await?;
        Ok(Self {
            producer,
            config,
            timeout,
            wedged_after: WEDGED_AFTER,
            replacements: 0,
            shutdown,
        })
    }

    /// Produces `framed` and commits it with `offsets` (the next offset to read per
    /// partition) of `group` (its current generation, which fences a rebalanced-away
    /// instance), through every resumable or abortable failure, until it commits.
    pub(crate) async fn commit(
        &mut self,
        framed: &[Framed],
        offsets: &TopicPartitionList,
        group: &Arc<ConsumerGroupMetadata>,
    ) -> Result<(), Uncommitted> {
        let mut retrying =
            Retrying::new("a transaction failed", crate::metrics::BATCH_RETRIES.name);
        let mut replaced = 0;
        loop {
            let started = Instant::now();
            let (failure, rewind) = match self.attempt(framed, offsets, group, &mut retrying).await
            {
                Ok(()) => {
                    metrics::counter!(crate::metrics::TRANSACTIONS.name, "outcome" => "committed")
                        .increment(1);
                    metrics::histogram!(crate::metrics::TRANSACTION_SECONDS.name)
                        .record(started.elapsed().as_secs_f64());
                    return Ok(());
                }
                Err(Failed::Uncommitted(u)) => return Err(u),
                Err(Failed::Abort { what, rewind }) => (what, rewind),
                Err(Failed::Wedged(step)) => {
                    metrics::counter!(crate::metrics::TRANSACTIONS.name, "outcome" => "aborted")
                        .increment(1);
                    self.replace(step, &mut replaced, &mut retrying).await?;
                    continue;
                }
            };
            metrics::counter!(crate::metrics::TRANSACTIONS.name, "outcome" => "aborted")
                .increment(1);
            match self
                .resumed("abort", &mut retrying, |p, t| p.abort_transaction(t))
                .await
            {
                Ok(()) => {}
                Err(Failed::Uncommitted(u)) => return Err(u),
                Err(Failed::Abort { what, .. }) => {
                    return Err(Uncommitted::Fatal(format!(
                        "{failure}; the abort failed: {what}"
                    )));
                }
                Err(Failed::Wedged(step)) => {
                    self.replace(step, &mut replaced, &mut retrying).await?;
                    continue;
                }
            }
            if rewind {
                return Err(Uncommitted::Rewind(failure));
            }
            retrying.failed(&failure);
            if !retrying.wait(self.shutdown).await {
                return Err(Uncommitted::Stopping);
            }
        }
    }

    /// One transaction: begin, produce every record, add the offsets, commit.
    async fn attempt(
        &self,
        framed: &[Framed],
        offsets: &TopicPartitionList,
        group: &Arc<ConsumerGroupMetadata>,
        retrying: &mut Retrying,
    ) -> Result<(), Failed> {
        self.producer
            .begin_transaction()
            .map_err(|e| Failed::from_step("begin", e))?;
        for f in framed {
            self.produce(f).await?;
        }
        let group = Arc::clone(group);
        let offsets = offsets.clone();
        self.resumed("send_offsets_to_transaction", retrying, move |p, t| {
            p.send_offsets_to_transaction(&offsets, &group, t)
        })
        .await?;
        self.resumed("commit", retrying, |p, t| p.commit_transaction(t))
            .await
    }

    /// Enqueues one record, waiting while the local queue is full; delivery is confirmed by
    /// the commit, which fails if any record failed.
    async fn produce(&self, f: &Framed) -> Result<(), Failed> {
        let mut record = FutureRecord::to(&f.topic)
            .key(f.key.as_bytes())
            .payload(&f.value);
        if let Some(ts) = f.timestamp {
            record = record.timestamp(ts);
        }
        if let Some(trace) = &f.trace {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: TRACEPARENT,
                value: Some(trace.as_bytes()),
            }));
        }
        loop {
            match self.producer.send_result(record) {
                Ok(_delivery) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Backpressure: the local queue drains as the broker acknowledges.
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(Failed::from_step("produce", e)),
            }
        }
    }

    /// Runs a transactional call on a thread of its own, resumed after each retriable failure
    /// (after a backoff, until shutdown); `Wedged` when it has not returned by its deadline.
    async fn resumed(
        &self,
        step: &'static str,
        retrying: &mut Retrying,
        call: impl Fn(&FutureProducer, Duration) -> Result<(), KafkaError> + Clone + Send + 'static,
    ) -> Result<(), Failed> {
        loop {
            let (timeout, call) = (self.timeout, call.clone());
            let Some(result) = within(timeout + self.wedged_after, &self.producer, move |p| {
                call(p, timeout)
            })
            .await
            else {
                return Err(Failed::Wedged(step));
            };
            let Err(e) = result else { return Ok(()) };
            if Recovery::of(&e) != Recovery::Resume {
                return Err(Failed::from_step(step, e));
            }
            retrying.failed(&format!("{step} did not complete: {e}; resuming it"));
            if !retrying.wait(self.shutdown).await {
                return Err(Failed::Uncommitted(Uncommitted::Stopping));
            }
        }
    }

    /// Replaces the producer whose `step` wedged with a new one of the same transactional id
    /// (retried until it is initialised or shutdown comes), after a backoff; `replaced` counts
    /// the replacements for this batch, which are bounded.
    async fn replace(
        &mut self,
        step: &str,
        replaced: &mut u32,
        retrying: &mut Retrying,
    ) -> Result<(), Uncommitted> {
        *replaced += 1;
        if *replaced > MAX_REPLACEMENTS_PER_BATCH {
            return Err(Uncommitted::Fatal(format!(
                "{step} did not return within {:?} with {MAX_REPLACEMENTS_PER_BATCH} producers in \
                 a row (librdkafka#5511)",
                self.timeout + self.wedged_after
            )));
        }
        metrics::counter!(crate::metrics::PRODUCER_REPLACEMENTS.name).increment(1);
        self.replacements += 1;
        tracing::error!(
            step,
            after = ?self.timeout + self.wedged_after,
            replacements = self.replacements,
            "a transactional call did not return (librdkafka#5511); replacing the producer, \
             which aborts the open transaction, and producing the batch again"
        );
        loop {
            if !retrying.wait(self.shutdown).await {
                return Err(Uncommitted::Stopping);
            }
            match initialised(&self.config, self.timeout, self.wedged_after).await {
                Ok(producer) => {
                    self.producer = producer;
                    return Ok(());
                }
                Err(Uncommitted::Fatal(e)) => {
                    retrying.failed(&format!("the replacement producer: {e}"));
                }
                Err(stopping) => return Err(stopping),
            }
        }
    }
}

/// A producer made from `config` with its transactions initialised.
async fn initialised(
    config: &ClientConfig,
    timeout: Duration,
    wedged_after: Duration,
) -> Result<FutureProducer, Uncommitted> {
    let producer: FutureProducer = config
        .create()
        .map_err(|e| Uncommitted::Fatal(format!("the transactional producer: {e}")))?;
    let init = timeout.max(Duration::from_secs(60));
    match within(init + wedged_after, &producer, move |p| {
        p.init_transactions(init)
    })
    .await
    {
        Some(Ok(())) => Ok(producer),
        Some(Err(e)) => Err(Uncommitted::Fatal(format!("init_transactions: {e}"))),
        None => Err(Uncommitted::Fatal(format!(
            "init_transactions did not return within {:?}",
            init + wedged_after
        ))),
    }
}

/// Runs a blocking producer call on a thread of its own; None when it has not returned
/// within `deadline`. A call that never returns keeps its thread and its producer alive,
/// detached, and delays nothing else: not the async workers, not the runtime's shutdown.
pub(crate) async fn within<T: Send + 'static>(
    deadline: Duration,
    producer: &FutureProducer,
    call: impl FnOnce(&FutureProducer) -> Result<T, KafkaError> + Send + 'static,
) -> Option<Result<T, KafkaError>> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let producer = producer.clone();
    let spawned = std::thread::Builder::new()
        .name("txn-call".into())
        .spawn(move || {
            // The caller may have stopped waiting: nobody to answer then.
            let _ = answer.send(call(&producer));
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread for a transactional call");
        return Some(Err(KafkaError::Global(RDKafkaErrorCode::Fail)));
    }
    match tokio::time::timeout(deadline, answered).await {
        Ok(Ok(result)) => Some(result),
        // The call panicked.
        Ok(Err(_)) => Some(Err(KafkaError::Canceled)),
        Err(_) => None,
    }
}

/// A failed step, sorted by what comes next.
enum Failed {
    /// Abort, then try the batch again, or give it back to be read again (`rewind`).
    Abort { what: String, rewind: bool },
    /// This call has not returned: replace the producer, then try the batch again.
    Wedged(&'static str),
    /// Give up on the batch.
    Uncommitted(Uncommitted),
}

impl Failed {
    /// The failure of `step` with `error`, which is not resumed.
    fn from_step(step: &str, error: KafkaError) -> Self {
        let what = format!("{step}: {error}");
        match Recovery::of(&error) {
            Recovery::Abort | Recovery::Resume => Self::Abort {
                what,
                rewind: false,
            },
            Recovery::Rewind => Self::Abort { what, rewind: true },
            Recovery::Fatal => Self::Uncommitted(Uncommitted::Fatal(what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::{MockCluster, MockCoordinator};
    use rdkafka::producer::DefaultProducerContext;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;

    const TRANSACTIONAL_ID: &str = "deid-test-0";
    const GROUP: &str = "deid-test";

    /// librdkafka's mock cluster, whose coordinators answer as a test makes them (fault
    /// injection; the real-broker tests show the rest).
    struct Mock {
        group: Arc<ConsumerGroupMetadata>,
        shutdown: CancellationToken,
        // Declared last: dropped after the clients that use it.
        cluster: MockCluster<'static, DefaultProducerContext>,
    }

    impl Mock {
        fn new() -> Self {
            let cluster = MockCluster::new(3).expect("a mock cluster");
            cluster.create_topic("analytics", 1, 3).expect("a topic");
            cluster.create_topic("documents", 1, 3).expect("a topic");
            cluster
                .coordinator(MockCoordinator::Transaction(TRANSACTIONAL_ID.into()), 1)
                .expect("a transaction coordinator");
            cluster
                .coordinator(MockCoordinator::Group(GROUP.into()), 2)
                .expect("a group coordinator");
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", cluster.bootstrap_servers())
                .set("group.id", GROUP)
                .create()
                .expect("a consumer");
            let group = Arc::new(consumer.group_metadata().expect("group metadata"));
            Self {
                group,
                shutdown: CancellationToken::new(),
                cluster,
            }
        }

        /// The service's transactional producer on the mock cluster, each call given 1 s.
        async fn transactions(&self) -> Transactions<'_> {
            let mut config = ClientConfig::new();
            config
                .set("bootstrap.servers", self.cluster.bootstrap_servers())
                .set("transactional.id", TRANSACTIONAL_ID)
                .set("enable.idempotence", "true")
                .set("acks", "all");
            Transactions::start(config, Duration::from_secs(1), &self.shutdown)
                .await
                .expect("an initialised producer")
        }

        /// Commits three records and the offset 3 of `documents`.
        async fn commit(&self, transactions: &mut Transactions<'_>) -> Result<(), Uncommitted> {
            let framed: Vec<Framed> = (0..3)
                .map(|i| Framed {
                    topic: "analytics".into(),
                    key: format!("k{i}"),
                    value: vec![i; 16],
                    timestamp: None,
                    trace: None,
                })
                .collect();
            let mut offsets = TopicPartitionList::new();
            offsets
                .add_partition_offset("documents", 0, rdkafka::Offset::Offset(3))
                .expect("an offset");
            transactions.commit(&framed, &offsets, &self.group).await
        }

        /// The transaction coordinator answers the next `n` commits with `error`.
        fn fail_commits(&self, error: RDKafkaRespErr, n: usize) {
            self.cluster
                .request_errors(RDKafkaApiKey::EndTxn, &vec![error; n]);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_commit_that_outlasts_its_timeout_is_resumed_until_it_commits() {
        let mock = Mock::new();
        let mut transactions = mock.transactions().await;
        // Each refusal is retried inside librdkafka after a growing backoff, so the commit
        // call returns a retriable timeout at least once before the coordinator accepts.
        // Aborting instead is refused ("conflicting commit_transaction API call is already in
        // progress"), which used to end the service.
        mock.fail_commits(
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
            12,
        );
        let committed = mock.commit(&mut transactions).await;
        assert!(committed.is_ok(), "{committed:?}");
        // The producer is usable afterwards: the next batch commits at once.
        assert!(mock.commit(&mut transactions).await.is_ok());
        assert_eq!(transactions.replacements, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_whose_record_failed_is_aborted_and_committed_in_a_new_transaction() {
        let mock = Mock::new();
        let mut transactions = mock.transactions().await;
        // A record refused for good leaves the transaction abortable, not fatal.
        mock.cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD],
        );
        let committed = mock.commit(&mut transactions).await;
        assert!(committed.is_ok(), "{committed:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn offsets_of_a_lost_group_membership_abort_and_give_the_batch_back() {
        let mock = Mock::new();
        let mut transactions = mock.transactions().await;
        // The member's session expired while its group coordinator moved: the new coordinator
        // does not know it. Retrying with the same membership would fail for ever.
        mock.cluster.request_errors(
            RDKafkaApiKey::TxnOffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID],
        );
        match mock.commit(&mut transactions).await {
            Err(Uncommitted::Rewind(e)) => assert!(e.contains("send_offsets"), "{e}"),
            other => panic!("expected the batch back, got {other:?}"),
        }
        // Aborted, not left open: the next transaction of the same producer commits.
        let committed = mock.commit(&mut transactions).await;
        assert!(committed.is_ok(), "{committed:?}");
        assert_eq!(transactions.replacements, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_fenced_producer_ends_the_service() {
        let mock = Mock::new();
        let mut transactions = mock.transactions().await;
        mock.fail_commits(RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED, 1);
        match mock.commit(&mut transactions).await {
            Err(Uncommitted::Fatal(e)) => assert!(e.contains("commit"), "{e}"),
            other => panic!("expected a fatal failure, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn shutdown_ends_a_commit_the_coordinator_keeps_refusing() {
        let mock = Mock::new();
        let mut transactions = mock.transactions().await;
        mock.fail_commits(
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
            10_000,
        );
        let shutdown = mock.shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            shutdown.cancel();
        });
        let committed = mock.commit(&mut transactions).await;
        assert!(
            matches!(committed, Err(Uncommitted::Stopping)),
            "{committed:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_wedged_call_replaces_the_producer_and_the_batch_commits_through_the_new_one() {
        let mock = Mock::new();
        let mut transactions = mock.transactions().await;
        transactions.wedged_after = Duration::from_secs(2);
        assert!(mock.commit(&mut transactions).await.is_ok());
        let wedged = transactions.producer.clone();
        // The group coordinator answers the offsets of the next transaction 20 s late, far
        // beyond the call's 1 s timeout, as a coordinator librdkafka waits for without end
        // does; it answers promptly again after 6 s.
        mock.cluster
            .broker_round_trip_time(2, Duration::from_secs(20))
            .expect("a delay");
        let started = Instant::now();
        let heal = tokio::time::sleep(Duration::from_secs(6));
        let committed = {
            let committing = mock.commit(&mut transactions);
            tokio::pin!(committing);
            tokio::select! {
                r = &mut committing => panic!("committed before the coordinator healed: {r:?}"),
                () = heal => {}
            }
            mock.cluster
                .broker_round_trip_time(2, Duration::ZERO)
                .expect("no delay");
            tokio::time::timeout(Duration::from_secs(60), committing)
                .await
                .expect("the batch commits once the coordinator answers")
        };
        assert!(committed.is_ok(), "{committed:?}");
        assert!(transactions.replacements >= 1);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the batch waited for the wedged call: {:?}",
            started.elapsed()
        );
        // The wedged producer is fenced by its replacement: it can commit nothing more.
        let fenced = within(Duration::from_secs(30), &wedged, |p| {
            p.begin_transaction()?;
            p.commit_transaction(Duration::from_secs(10))
        })
        .await
        .expect("the wedged producer answers once its call returned");
        assert!(fenced.is_err(), "the replaced producer committed");
    }

    #[tokio::test]
    async fn a_call_that_never_returns_is_left_behind_at_its_deadline() {
        let mock = Mock::new();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", mock.cluster.bootstrap_servers())
            .create()
            .expect("a producer");
        let started = Instant::now();
        let answer = within(Duration::from_millis(200), &producer, |_| {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(())
        })
        .await;
        assert!(answer.is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_refused_enqueue_aborts_and_a_fenced_producer_is_fatal() {
        assert_eq!(
            Recovery::of(&KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageSizeTooLarge
            )),
            Recovery::Abort
        );
        assert_eq!(
            Recovery::of(&KafkaError::MessageProduction(RDKafkaErrorCode::Fenced)),
            Recovery::Fatal
        );
    }
}
