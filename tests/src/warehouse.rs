//! Helpers for warehouse tests: a fresh database per test, unique topics with their schemas,
//! bulk framed publishing, and polling PostgreSQL until the loader caught up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lienthong_core::{ClinicalEvent, DocumentKind};
use lienthong_registry::{RegistryArgs, RegistryClient, SchemaSet, WireCodec};

use crate::{create_topic, kafka, unique_topic};

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

/// A loader configuration for `dsn` and `topics` with a consumer group of its own.
pub fn loader_config(
    dsn: &str,
    topics: &BTreeMap<DocumentKind, String>,
) -> lienthong_warehouse_loader::LoaderConfig {
    let mut config = lienthong_warehouse_loader::LoaderConfig::new(
        dsn,
        &format!("wh-test-{}", uuid::Uuid::new_v4().simple()),
        topics.values().cloned().collect(),
    );
    config.pg = pg_settings().with_dsn(dsn);
    config
}
