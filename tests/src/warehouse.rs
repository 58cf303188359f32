//! Helpers for warehouse tests: a fresh database per test, unique topics with their schemas,
//! bulk framed publishing (of documents, and of their analytics events as the de-identification
//! service makes them), and polling PostgreSQL until the loader caught up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lienthong_core::{ClinicalEvent, DocumentKind};
use lienthong_registry::{RegistryArgs, RegistryClient, SchemaSet, WireCodec};

use lienthong_deidentifier::{AnalyticsKind, AnalyticsTopics, Deidentifier, Policy};

use crate::{create_topic, kafka, unique_topic};

/// The de-identification the warehouse tests publish through: the shipped policy under the
/// local stack's analytics key, as the service runs there.
pub fn test_deidentifier() -> &'static Deidentifier {
    static ONCE: std::sync::OnceLock<Deidentifier> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        Deidentifier::new(
            Policy::shipped().expect("the shipped policy loads"),
            crate::deidentifier::analytics_keyer(),
        )
    })
}

/// The analytics keys of an event as the warehouse stores them: (event_id, document_id).
pub fn analytics_keys(event: &ClinicalEvent) -> (String, String) {
    let a = test_deidentifier().event(event);
    let h = lienthong_sink::AnalyticsMessage::decode(a.kind.message_name(), &a.payload)
        .and_then(Result::ok)
        .and_then(|m| m.header().cloned())
        .unwrap_or_default();
    (h.event_key, h.document_key)
}

/// De-identifies `events` with [`test_deidentifier`] and publishes them to the analytics
/// `topics` (keyed as the service keys them), 256 in flight at once.
pub async fn publish_analytics(
    registry: &RegistryArgs,
    topics: &AnalyticsTopics,
    events: &[ClinicalEvent],
) -> anyhow::Result<()> {
    let analytics: Vec<_> = events
        .iter()
        .map(|e| test_deidentifier().event(e))
        .collect();
    publish_analytics_events(registry, topics, &analytics).await
}

/// The warehouse rows of a document event, through the de-identification it takes on its way.
pub fn warehouse_rows(
    event: &ClinicalEvent,
) -> anyhow::Result<lienthong_warehouse_loader::rows::EventRows> {
    let a = test_deidentifier().event(event);
    let message = lienthong_sink::AnalyticsMessage::decode(a.kind.message_name(), &a.payload)
        .ok_or_else(|| anyhow::anyhow!("{} is no analytics message", a.kind.message_name()))??;
    Ok(lienthong_warehouse_loader::rows::analytics_rows(&message)?)
}

/// An analytics event changed by `change` (hostile or corrected values).
pub fn rewritten(
    event: &lienthong_deidentifier::AnalyticsEvent,
    change: impl FnOnce(&mut lienthong_sink::AnalyticsMessage),
) -> lienthong_deidentifier::AnalyticsEvent {
    let mut m = lienthong_sink::AnalyticsMessage::decode(event.kind.message_name(), &event.payload)
        .expect("an analytics message")
        .expect("decodes");
    change(&mut m);
    lienthong_deidentifier::AnalyticsEvent {
        payload: m.encode_to_vec(),
        ..event.clone()
    }
}

/// The event key of an analytics event (its `event_id` in the warehouse).
pub fn event_key(event: &lienthong_deidentifier::AnalyticsEvent) -> String {
    lienthong_sink::AnalyticsMessage::decode(event.kind.message_name(), &event.payload)
        .and_then(Result::ok)
        .and_then(|m| m.header().map(|h| h.event_key.clone()))
        .unwrap_or_default()
}

/// Publishes analytics events, framed, to their `topics`, 256 in flight at once.
pub async fn publish_analytics_events(
    registry: &RegistryArgs,
    topics: &AnalyticsTopics,
    events: &[lienthong_deidentifier::AnalyticsEvent],
) -> anyhow::Result<()> {
    let codec = WireCodec::new(registry)?;
    let producer = lienthong_kafka::EventProducer::new(&kafka(), Duration::from_secs(30))?;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(events.iter().map(|a| {
        let (codec, producer) = (&codec, &producer);
        async move {
            let topic = topics.of(a.kind);
            let framed = codec
                .encode_message(topic, a.kind.message_name(), &a.payload)
                .await?;
            producer.send(topic, a.key.as_bytes(), &framed, &[]).await?;
            Ok(())
        }
    }))
    .buffered(256)
    .collect()
    .await;
    results.into_iter().collect()
}

/// PostgreSQL settings of the local stack (`LIENTHONG_PG_*`: DSN, password file, TLS CA).
pub fn pg_settings() -> lienthong_warehouse_loader::PgSettings {
    lienthong_warehouse_loader::PgSettings::from_env().expect("LIENTHONG_PG_* settings")
}

/// DSN of the local stack's `lienthong` database (LIENTHONG_PG_DSN overrides it).
pub fn base_dsn() -> String {
    pg_settings().dsn
}

/// Settings to reach `dsn` as another role of the local stack (`analyst`, `privacy_officer`),
/// with that role's password file from the state folder.
pub fn as_role(dsn: &str, role: &str) -> lienthong_warehouse_loader::PgSettings {
    let users = std::env::var("LIENTHONG_PG_USERS_DIR")
        .expect("LIENTHONG_PG_USERS_DIR is not set: run the tests with deploy/local/test");
    let mut settings = pg_settings().with_dsn(&dsn.replacen("lienthong@", &format!("{role}@"), 1));
    settings.password_file = Some(std::path::Path::new(&users).join(format!("{role}.password")));
    settings
}

/// Creates an empty database for one test; returns its DSN. Fails when PostgreSQL is down.
pub async fn fresh_database() -> anyhow::Result<String> {
    let base = base_dsn();
    let client = pg_settings().connect().await.map_err(|e| {
        anyhow::anyhow!("the warehouse tests need the local PostgreSQL: {e}; run deploy/local/test")
    })?;
    let name = format!("lt_test_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let cut = base.rfind('/').unwrap_or(base.len());
    Ok(format!("{}/{name}", &base[..cut]))
}

/// Connects to a database of the local PostgreSQL (TLS, password from the state folder).
pub async fn connect(dsn: &str) -> anyhow::Result<tokio_postgres::Client> {
    Ok(pg_settings().with_dsn(dsn).connect().await?)
}

/// Unique topics for the three kinds, created, with their schemas registered.
pub async fn topics_with_schemas(
    registry: &RegistryArgs,
) -> anyhow::Result<BTreeMap<DocumentKind, String>> {
    let mut topics = BTreeMap::new();
    let mut set = SchemaSet::built_in();
    for kind in DocumentKind::ALL {
        let t = unique_topic(&format!("wh.{}", kind.as_str()));
        create_topic(&kafka(), &t, 3).await?;
        set = set.with_topic(kind, &t);
        topics.insert(kind, t);
    }
    set.register(&RegistryClient::new(registry)?).await?;
    Ok(topics)
}

/// Publishes framed events to the given topics (keyed by patient key), 256 in flight at once.
pub async fn publish_to(
    registry: &RegistryArgs,
    topics: &BTreeMap<DocumentKind, String>,
    events: &[ClinicalEvent],
) -> anyhow::Result<()> {
    let codec = WireCodec::new(registry)?;
    let producer = lienthong_kafka::EventProducer::new(&kafka(), Duration::from_secs(30))?;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(events.iter().map(|e| {
        let (codec, producer) = (&codec, &producer);
        async move {
            let topic = &topics[&e.kind()];
            let framed = codec
                .encode_for(e.kind(), topic, &e.encode_to_vec())
                .await?;
            let h = e.header().cloned().unwrap_or_default();
            producer
                .send(
                    topic,
                    h.patient_key.as_bytes(),
                    &framed,
                    &[("lienthong-event-id", h.event_id.as_bytes())],
                )
                .await?;
            Ok(())
        }
    }))
    .buffered(256)
    .collect()
    .await;
    results.into_iter().collect()
}

/// Polls `sql` (returning one bigint) until it equals `expected` or `timeout` passes.
pub async fn wait_for_count(
    client: &tokio_postgres::Client,
    sql: &str,
    expected: i64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = -1;
    while Instant::now() < deadline {
        if let Ok(row) = client.query_one(sql, &[]).await {
            last = row.get::<_, i64>(0);
            if last == expected {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("`{sql}` is {last}, expected {expected} after {timeout:?}")
}

/// A warehouse loader running inside a test, with a connection to its database.
pub struct RunningLoader {
    /// Connection to the loader's database.
    pub db: tokio_postgres::Client,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), lienthong_warehouse_loader::LoaderError>>,
}

/// Starts a loader with `config` and waits (60 s at most) until `event_history` holds
/// `history_rows` rows.
pub async fn start_loader(
    mut config: lienthong_warehouse_loader::LoaderConfig,
    kafka: lienthong_kafka::KafkaArgs,
    registry: RegistryArgs,
    history_rows: i64,
) -> anyhow::Result<RunningLoader> {
    // The local stack's TLS and password settings, whatever database the test chose.
    config.pg = pg_settings().with_dsn(&config.pg.dsn);
    let dsn = config.pg.dsn.clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(lienthong_warehouse_loader::run(
        config,
        kafka,
        registry,
        shutdown.clone(),
    ));
    let db = connect(&dsn).await?;
    wait_for_count(
        &db,
        "SELECT count(*) FROM event_history",
        history_rows,
        Duration::from_secs(60),
    )
    .await?;
    Ok(RunningLoader { db, shutdown, task })
}

impl RunningLoader {
    /// Stops the loader gracefully; its error, if it failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}

/// A loader configuration for `dsn` and the analytics `topics` with a consumer group of its
/// own.
pub fn loader_config(
    dsn: &str,
    topics: &AnalyticsTopics,
) -> lienthong_warehouse_loader::LoaderConfig {
    let mut config = lienthong_warehouse_loader::LoaderConfig::new(
        dsn,
        &format!("wh-test-{}", uuid::Uuid::new_v4().simple()),
        AnalyticsKind::ALL
            .iter()
            .map(|k| topics.of(*k).to_owned())
            .collect(),
    );
    config.pg = pg_settings().with_dsn(dsn);
    config
}

/// The warehouse path over some document topics: the de-identification service, and a loader
/// of its analytics topics into a fresh database, as the tests and benchmarks that follow an
/// event end to end run them.
pub struct WarehousePath {
    /// The de-identification service.
    pub deidentifier: crate::deidentifier::RunningDeidentifier,
    /// The fresh database the loader writes.
    pub dsn: String,
    loader: tokio::task::JoinHandle<Result<(), lienthong_warehouse_loader::LoaderError>>,
    shutdown: tokio_util::sync::CancellationToken,
}

/// Starts the de-identification service over `documents` and `receipt` and a loader of its
/// analytics topics into a fresh database.
pub async fn start_warehouse_path(
    registry: &RegistryArgs,
    documents: &BTreeMap<DocumentKind, String>,
    receipt: &str,
) -> anyhow::Result<WarehousePath> {
    let dsn = fresh_database().await?;
    let deidentifier =
        crate::deidentifier::start_deidentifier(registry, documents, receipt).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let loader = tokio::spawn(lienthong_warehouse_loader::run(
        loader_config(&dsn, &deidentifier.analytics),
        kafka(),
        registry.clone(),
        shutdown.clone(),
    ));
    Ok(WarehousePath {
        deidentifier,
        dsn,
        loader,
        shutdown,
    })
}

impl WarehousePath {
    /// Fails with the outcome of the loader or the de-identification service once either has
    /// stopped by itself.
    pub async fn ensure_running(&mut self) -> anyhow::Result<()> {
        crate::deidentifier::ended_by_itself("the warehouse loader", &mut self.loader).await?;
        self.deidentifier.ensure_running().await
    }

    /// Stops the loader, then the de-identification service; the first error either had.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.loader.await??;
        self.deidentifier.stop().await
    }
}
