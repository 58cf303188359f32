//! Helpers for tests and benchmarks of the de-identification service: analytics topics of
//! their own, and how far its group has committed.

use std::time::Duration;

use lienthong_deidentifier::{AnalyticsKind, AnalyticsTopics};
use lienthong_registry::{RegistryArgs, RegistryClient, SchemaSet};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{create_topic, kafka};

/// Fresh analytics topics (3 partitions each) with their schemas registered, named under the
/// prefix the analytics principal may read (`lienthong.analytics.test-<run>.…`).
pub async fn analytics_topics_with_schemas(
    registry: &RegistryArgs,
) -> anyhow::Result<AnalyticsTopics> {
    let topics = analytics_topics().await?;
    register_analytics_schemas(registry, &topics).await?;
    Ok(topics)
}

/// Fresh analytics topics (3 partitions each), their schemas not registered.
pub async fn analytics_topics() -> anyhow::Result<AnalyticsTopics> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let name = |k: AnalyticsKind| {
        format!(
            "lienthong.analytics.test-{run}.{}",
            k.topic().trim_start_matches("lienthong.analytics.")
        )
    };
    let topics = AnalyticsTopics {
        analytics_topic_referral: name(AnalyticsKind::Referral),
        analytics_topic_appointment: name(AnalyticsKind::Appointment),
        analytics_topic_lab_result: name(AnalyticsKind::LabResult),
        analytics_topic_receipt: name(AnalyticsKind::Receipt),
    };
    for kind in AnalyticsKind::ALL {
        create_topic(&kafka(), topics.of(kind), 3).await?;
    }
    Ok(topics)
}

/// Registers the analytics schemas under `topics`.
pub async fn register_analytics_schemas(
    registry: &RegistryArgs,
    topics: &AnalyticsTopics,
) -> anyhow::Result<()> {
    let mut set = SchemaSet::built_in();
    for kind in AnalyticsKind::ALL {
        set = set.with_topic_renamed(kind.topic(), topics.of(kind));
    }
    set.register(&RegistryClient::new(registry)?).await?;
    Ok(())
}

/// A fresh age band widenings topic (one partition, as the real one) with its schema
/// registered: a test's widenings never reach another test's service, nor the stack's.
pub async fn age_bands_topic_with_schema(registry: &RegistryArgs) -> anyhow::Result<String> {
    let topic = crate::unique_topic("deid.age-bands");
    create_topic(&kafka(), &topic, 1).await?;
    SchemaSet::built_in()
        .with_topic_renamed(lienthong_core::routing::AGE_BANDS_TOPIC, &topic)
        .register(&RegistryClient::new(registry)?)
        .await?;
    Ok(topic)
}

/// Messages of `inputs` (partitions 0..`partitions`) whose offsets `group` committed in
/// committed transactions.
///
/// The query does not ask for stable offsets (read_uncommitted): asked for them, the broker
/// answers "unstable offset commit" for as long as any transaction holds offsets, which for a
/// service committing one transaction after the other is nearly always. Unasked, it answers
/// with the offsets of the transactions committed so far; a pending transaction's offsets are
/// not among them until its commit marker is written. Callers still retry a failed query and
/// never read a failure as zero.
pub fn committed(group: &str, inputs: &[String], partitions: i32) -> anyhow::Result<i64> {
    let mut cfg = kafka().client_config()?;
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted");
    let c = cfg.create::<BaseConsumer>()?;
    let mut tpl = TopicPartitionList::new();
    for t in inputs {
        for p in 0..partitions {
            tpl.add_partition(t, p);
        }
    }
    let tpl = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(tpl
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .sum())
}

/// The local stack's analytics key file (`LIENTHONG_ANALYTICS_KEY_FILE`, set by `.state/env`);
/// panics with what to do when it is not set, as `require_kafka` does.
pub fn analytics_key_file() -> String {
    std::env::var("LIENTHONG_ANALYTICS_KEY_FILE").unwrap_or_else(|_| {
        panic!(
            "LIENTHONG_ANALYTICS_KEY_FILE is not set: start the local stack (deploy/local/up) \
             and `source .state/env`"
        )
    })
}

/// The local stack's analytics key.
pub fn analytics_keyer() -> lienthong_core::PatientKeyer {
    let file = analytics_key_file();
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("the analytics key {file} cannot be read: {e}"));
    lienthong_core::PatientKeyer::parse(&text)
        .unwrap_or_else(|e| panic!("the analytics key {file} is not a key: {e}"))
}

/// The analytics key of a document id (its `document_id` in the warehouse).
pub fn document_key(document_id: &str) -> String {
    analytics_keyer().keyed_hash("document", document_id)
}

/// A de-identification service running inside a test over the given document topics, with
/// analytics topics, a consumer group and a transactional id of its own.
pub struct RunningDeidentifier {
    /// The analytics topics it produces to.
    pub analytics: AnalyticsTopics,
    /// Its consumer group.
    pub group: String,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), lienthong_deidentifier::DeidentifierError>>,
}

/// Starts the service over `documents` and `receipt_topic` with the stack's analytics key.
pub async fn start_deidentifier(
    registry: &RegistryArgs,
    documents: &std::collections::BTreeMap<lienthong_core::DocumentKind, String>,
    receipt_topic: &str,
) -> anyhow::Result<RunningDeidentifier> {
    let analytics = analytics_topics_with_schemas(registry).await?;
    let group = format!("deid-test-{}", uuid::Uuid::new_v4().simple());
    let mut config = lienthong_deidentifier::DeidentifierConfig::new(
        analytics_key_file().into(),
        &group,
        lienthong_kafka::topics::DocumentTopics::from_map(documents),
        receipt_topic,
        analytics.clone(),
    );
    config.transactional_id = Some(format!("{group}-0"));
    config.age_bands_topic = age_bands_topic_with_schema(registry).await?;
    Ok(RunningDeidentifier::spawn(config, registry))
}

impl RunningDeidentifier {
    /// Runs the service with `config` inside the test.
    pub fn spawn(
        config: lienthong_deidentifier::DeidentifierConfig,
        registry: &RegistryArgs,
    ) -> Self {
        let (analytics, group) = (config.analytics.clone(), config.group.clone());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(lienthong_deidentifier::run(
            config,
            kafka(),
            registry.clone(),
            shutdown.clone(),
        ));
        Self {
            analytics,
            group,
            shutdown,
            task,
        }
    }

    /// Fails with the service's own outcome once it has stopped by itself, so a test waiting
    /// for its output says why it ended instead of timing out.
    pub async fn ensure_running(&mut self) -> anyhow::Result<()> {
        ended_by_itself("the de-identification service", &mut self.task).await
    }

    /// Stops the service gracefully; its error, if it failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Fails with `task`'s outcome when it has ended (it ran until shutdown otherwise); `what` names
/// it. Called once: the failure ends the test.
pub async fn ended_by_itself<E: std::fmt::Display>(
    what: &str,
    task: &mut tokio::task::JoinHandle<Result<(), E>>,
) -> anyhow::Result<()> {
    if !task.is_finished() {
        return Ok(());
    }
    match task.await {
        Ok(Ok(())) => anyhow::bail!("{what} stopped by itself without an error"),
        Ok(Err(e)) => anyhow::bail!("{what} stopped by itself: {e}"),
        Err(e) => anyhow::bail!("{what} panicked: {e}"),
    }
}
