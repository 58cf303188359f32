//! De-identification service settings (`--*` flags with `LIENTHONG_DEIDENTIFIER_*` env vars).

use std::path::PathBuf;
use std::time::Duration;

use lienthong_core::PatientKeyer;
use lienthong_kafka::topics::DocumentTopics;

use crate::policy::{Policy, PolicyError};
use crate::transform::AnalyticsKind;

/// The analytics topics written, one per kind.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalyticsTopics {
    /// Topic of de-identified referrals.
    #[arg(long, env = "LIENTHONG_ANALYTICS_TOPIC_REFERRAL", default_value = lienthong_core::routing::ANALYTICS_REFERRAL_TOPIC)]
    pub analytics_topic_referral: String,
    /// Topic of de-identified appointments.
    #[arg(long, env = "LIENTHONG_ANALYTICS_TOPIC_APPOINTMENT", default_value = lienthong_core::routing::ANALYTICS_APPOINTMENT_TOPIC)]
    pub analytics_topic_appointment: String,
    /// Topic of de-identified lab results.
    #[arg(long, env = "LIENTHONG_ANALYTICS_TOPIC_LAB_RESULT", default_value = lienthong_core::routing::ANALYTICS_LAB_RESULT_TOPIC)]
    pub analytics_topic_lab_result: String,
    /// Topic of de-identified referral receipts.
    #[arg(long, env = "LIENTHONG_ANALYTICS_TOPIC_RECEIPT", default_value = lienthong_core::routing::ANALYTICS_RECEIPT_TOPIC)]
    pub analytics_topic_receipt: String,
}

impl AnalyticsTopics {
    /// The topic of `kind`.
    pub fn of(&self, kind: AnalyticsKind) -> &str {
        match kind {
            AnalyticsKind::Referral => &self.analytics_topic_referral,
            AnalyticsKind::Appointment => &self.analytics_topic_appointment,
            AnalyticsKind::LabResult => &self.analytics_topic_lab_result,
            AnalyticsKind::Receipt => &self.analytics_topic_receipt,
        }
    }

    /// The standard topics with a common prefix (tests and per-environment topics).
    pub fn prefixed(prefix: &str) -> Self {
        let t = |k: AnalyticsKind| format!("{prefix}{}", k.topic());
        Self {
            analytics_topic_referral: t(AnalyticsKind::Referral),
            analytics_topic_appointment: t(AnalyticsKind::Appointment),
            analytics_topic_lab_result: t(AnalyticsKind::LabResult),
            analytics_topic_receipt: t(AnalyticsKind::Receipt),
        }
    }
}

/// Everything the service needs besides Kafka, registry and telemetry settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DeidentifierConfig {
    /// The document topics read.
    #[command(flatten)]
    pub documents: DocumentTopics,
    /// The receipt topic read.
    #[arg(long, env = "LIENTHONG_DEIDENTIFIER_RECEIPT_TOPIC", default_value = lienthong_core::routing::RECEIPT_TOPIC)]
    pub receipt_topic: String,
    /// The analytics topics written.
    #[command(flatten)]
    pub analytics: AnalyticsTopics,
    /// The de-identification policy file (default: the policy.toml this build was made with).
    #[arg(long, env = "LIENTHONG_DEIDENTIFIER_POLICY")]
    pub policy: Option<PathBuf>,
    /// File holding the analytics key, `<key-id>:<hex secret>` (as `lienthong keys generate`
    /// writes it). It must not be the operational pseudonym key: analytics identities must not
    /// be joinable to the document topics' keys.
    #[arg(long, env = "LIENTHONG_ANALYTICS_KEY_FILE")]
    pub analytics_key_file: PathBuf,
    /// Consumer group; instances share it and split the partitions.
    #[arg(
        long,
        env = "LIENTHONG_DEIDENTIFIER_GROUP",
        default_value = "lienthong-deidentifier"
    )]
    pub group: String,
    /// Transactional id of this instance; it must stay the same across restarts of one instance
    /// and differ between instances (default: `lienthong-deidentifier-<host name>`).
    #[arg(long, env = "LIENTHONG_DEIDENTIFIER_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,
    /// Compacted topic of age band widenings, followed by every instance and written in the
    /// transaction of the first events under wider bands.
    #[arg(long, env = "LIENTHONG_DEIDENTIFIER_AGE_BANDS_TOPIC", default_value = lienthong_core::routing::AGE_BANDS_TOPIC)]
    pub age_bands_topic: String,
    /// Dead-letter topic.
    #[arg(long, env = "LIENTHONG_DEIDENTIFIER_DLQ_TOPIC", default_value = lienthong_core::routing::DLQ_TOPIC)]
    pub dlq_topic: String,
    /// Most messages in one transaction.
    #[arg(
        long,
        env = "LIENTHONG_DEIDENTIFIER_BATCH_EVENTS",
        default_value_t = 5_000
    )]
    pub batch_events: usize,
    /// Longest a batch fills while the one before it is still being written, in milliseconds
    /// (once that is done, a batch takes what has arrived and goes).
    #[arg(long, env = "LIENTHONG_DEIDENTIFIER_BATCH_MS", default_value_t = 100)]
    pub batch_ms: u64,
    /// Kafka transaction timeout, in ms: how long the broker waits for a crashed instance's
    /// open transaction before aborting it (read_committed readers wait behind it).
    #[arg(
        long,
        env = "LIENTHONG_DEIDENTIFIER_TRANSACTION_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub transaction_timeout_ms: u64,
    /// Kafka group session timeout, in ms.
    #[arg(
        long,
        env = "LIENTHONG_DEIDENTIFIER_SESSION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub session_timeout_ms: u64,
}

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The analytics key.
    #[error(
        "analytics key {path}: {message}; create one with `lienthong keys generate --key-id analytics-1 > FILE` (mode 0600)"
    )]
    Key {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Settings that contradict each other.
    #[error("{0}")]
    Invalid(String),
}

impl DeidentifierConfig {
    /// Defaults with the given key file, group and topics (tests and embedding).
    pub fn new(
        analytics_key_file: PathBuf,
        group: &str,
        documents: DocumentTopics,
        receipt_topic: &str,
        analytics: AnalyticsTopics,
    ) -> Self {
        Self {
            documents,
            receipt_topic: receipt_topic.into(),
            analytics,
            policy: None,
            analytics_key_file,
            group: group.into(),
            transactional_id: None,
            age_bands_topic: lienthong_core::routing::AGE_BANDS_TOPIC.into(),
            dlq_topic: lienthong_core::routing::DLQ_TOPIC.into(),
            batch_events: 5_000,
            batch_ms: 100,
            transaction_timeout_ms: 30_000,
            session_timeout_ms: 10_000,
        }
    }

    /// The policy in force.
    pub fn load_policy(&self) -> Result<Policy, ConfigError> {
        Ok(match &self.policy {
            Some(path) => Policy::load(path)?,
            None => Policy::shipped()?,
        })
    }

    /// The analytics key; refused when the operational pseudonym key is configured in the same
    /// process environment and equal to it.
    pub fn load_key(&self) -> Result<PatientKeyer, ConfigError> {
        let err = |message: String| ConfigError::Key {
            path: self.analytics_key_file.clone(),
            message,
        };
        let text =
            lienthong_runtime::secrets::read_secret(&self.analytics_key_file, "analytics key")
                .map_err(|e| err(e.to_string()))?;
        let key = PatientKeyer::parse(&text).map_err(|e| err(e.to_string()))?;
        if let Some(pseudonym) = std::env::var_os("LIENTHONG_PSEUDONYM_KEY_FILE")
            && let Ok(p) = std::fs::read_to_string(&pseudonym)
            && first_key_line(&p) == first_key_line(&text)
        {
            return Err(err(
                "it is the operational pseudonym key (LIENTHONG_PSEUDONYM_KEY_FILE); analytics needs a key of its own".into(),
            ));
        }
        Ok(key)
    }

    /// This instance's transactional id.
    pub fn transactional_id(&self) -> String {
        self.transactional_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "0".into());
            format!("lienthong-deidentifier-{host}")
        })
    }

    /// Every topic read.
    pub fn input_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.documents.all().into_values().collect();
        topics.push(self.receipt_topic.clone());
        topics
    }

    /// Batch fill deadline.
    pub fn batch_wait(&self) -> Duration {
        Duration::from_millis(self.batch_ms.max(1))
    }

    /// Cross-field checks.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.batch_events == 0 {
            return Err(ConfigError::Invalid(
                "--batch-events must be at least 1".into(),
            ));
        }
        let inputs = self.input_topics();
        if inputs.contains(&self.age_bands_topic)
            || AnalyticsKind::ALL
                .iter()
                .any(|&k| self.analytics.of(k) == self.age_bands_topic)
        {
            return Err(ConfigError::Invalid(format!(
                "--age-bands-topic {} is also a document or analytics topic; it needs a topic of its own",
                self.age_bands_topic
            )));
        }
        for kind in AnalyticsKind::ALL {
            let out = self.analytics.of(kind);
            if inputs.iter().any(|t| t == out) {
                return Err(ConfigError::Invalid(format!(
                    "analytics topic {out} is also read as a document topic; analytics topics must be separate"
                )));
            }
        }
        Ok(())
    }
}

fn first_key_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
}
