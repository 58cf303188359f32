//! Loader settings (`--*` flags with `LIENTHONG_WAREHOUSE_*` / `LIENTHONG_PG_DSN` env vars).

use std::time::Duration;

/// Everything the loader needs besides Kafka, registry and telemetry settings.
#[derive(Debug, Clone, clap::Args)]
pub struct LoaderConfig {
    /// The warehouse database.
    #[command(flatten)]
    pub pg: crate::postgres::PgSettings,
    /// Group role granted read access to the views and pseudonymized tables (never the
    /// `restricted` schema) after every migration; skipped with a warning when it does not exist.
    #[arg(
        long,
        env = "LIENTHONG_WAREHOUSE_ANALYST_ROLE",
        default_value = "lienthong_analyst"
    )]
    pub analyst_role: String,
    /// Group role of the privacy officers who answer patients' requests: granted read access
    /// to `restricted.accesses` alone after every migration; skipped with a warning when it
    /// does not exist.
    #[arg(
        long,
        env = "LIENTHONG_WAREHOUSE_PRIVACY_ROLE",
        default_value = "lienthong_privacy"
    )]
    pub privacy_role: String,
    /// Consumer group; replicas of one warehouse share it (scale up to the partition count).
    #[arg(
        long,
        env = "LIENTHONG_WAREHOUSE_GROUP",
        default_value = "lienthong-warehouse"
    )]
    pub group: String,
    /// Topics to load (comma-separated): the de-identified analytics topics and the access
    /// audit. A document topic's messages are refused (dead-lettered), never loaded.
    #[arg(
        long,
        env = "LIENTHONG_WAREHOUSE_TOPICS",
        value_delimiter = ',',
        default_value = "lienthong.analytics.referral.v1,lienthong.analytics.appointment.v1,lienthong.analytics.lab-result.v1,lienthong.analytics.referral-receipt.v1,lienthong.audit.v1"
    )]
    pub topics: Vec<String>,
    /// Which of the topics carries the regional stores' access audit (loaded into
    /// `restricted.accesses`).
    #[arg(
        long,
        env = "LIENTHONG_WAREHOUSE_AUDIT_TOPIC",
        default_value = lienthong_core::routing::AUDIT_TOPIC
    )]
    pub audit_topic: String,
    /// Dead-letter topic.
    #[arg(
        long,
        env = "LIENTHONG_WAREHOUSE_DLQ_TOPIC",
        default_value = "lienthong.dlq.v1"
    )]
    pub dlq_topic: String,
    /// Most messages in one transaction.
    #[arg(
        long,
        env = "LIENTHONG_WAREHOUSE_BATCH_EVENTS",
        default_value_t = 10_000
    )]
    pub batch_events: usize,
    /// Kafka group session timeout, in ms: how soon a crashed replica's partitions move on.
    #[arg(
        long,
        env = "LIENTHONG_WAREHOUSE_SESSION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub session_timeout_ms: u64,
    /// PostgreSQL connections writing a batch in parallel, each over its own partitions.
    #[arg(long, env = "LIENTHONG_WAREHOUSE_WRITERS", default_value_t = 2)]
    pub writers: usize,
    /// Longest a batch fills while the one before it is still being written, in milliseconds
    /// (once that is done, a batch takes what has arrived and goes).
    #[arg(long, env = "LIENTHONG_WAREHOUSE_BATCH_MS", default_value_t = 500)]
    pub batch_ms: u64,
}

impl LoaderConfig {
    /// Defaults with the given DSN and topics (tests and embedding).
    pub fn new(pg_dsn: &str, group: &str, topics: Vec<String>) -> Self {
        Self {
            pg: crate::postgres::PgSettings::new(pg_dsn),
            analyst_role: "lienthong_analyst".into(),
            privacy_role: "lienthong_privacy".into(),
            group: group.into(),
            topics,
            audit_topic: lienthong_core::routing::AUDIT_TOPIC.into(),
            dlq_topic: "lienthong.dlq.v1".into(),
            batch_events: 10_000,
            batch_ms: 500,
            session_timeout_ms: 10_000,
            writers: 2,
        }
    }

    /// Batch fill deadline.
    pub fn batch_wait(&self) -> Duration {
        Duration::from_millis(self.batch_ms.max(10))
    }
}
