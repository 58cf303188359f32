//! Regional store settings (`LIENTHONG_REGIONAL_*`).

use std::net::SocketAddr;
use std::path::PathBuf;

use lienthong_core::DocumentKind;
use lienthong_core::routing::{AUDIT_TOPIC, DLQ_TOPIC, RECEIPT_TOPIC};
use lienthong_grpc::ServingArgs;
use lienthong_kafka::topics::DocumentTopics;

/// Everything a regional store needs besides Kafka, registry, key and telemetry settings.
#[derive(Debug, Clone, clap::Args)]
pub struct RegionalConfig {
    /// Regions served (current 2-digit province codes, comma-separated), e.g. 79,01.
    #[arg(long, env = "LIENTHONG_REGIONAL_REGIONS", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Folder holding one sled store per region.
    #[arg(
        long,
        env = "LIENTHONG_REGIONAL_DATA_DIR",
        default_value = "regional-data"
    )]
    pub data_dir: PathBuf,
    /// Listener, TLS, caller authentication and hubs of the query API.
    #[command(flatten)]
    pub serving: ServingArgs,
    /// The topic of each document kind.
    #[command(flatten)]
    pub topics: DocumentTopics,
    /// Topic of referral receipts.
    #[arg(long, env = "LIENTHONG_TOPIC_RECEIPT", default_value = RECEIPT_TOPIC)]
    pub topic_receipt: String,
    /// Dead-letter topic.
    #[arg(long, env = "LIENTHONG_REGIONAL_DLQ_TOPIC", default_value = DLQ_TOPIC)]
    pub dlq_topic: String,
    /// Access-audit topic.
    #[arg(long, env = "LIENTHONG_REGIONAL_AUDIT_TOPIC", default_value = AUDIT_TOPIC)]
    pub audit_topic: String,
    /// How long a referral, appointment or lab report (or an attestation of presence) keeps a
    /// facility's care relationship with the patient, in days: without one a facility reads
    /// the patient's record only for an EMERGENCY.
    #[arg(
        long,
        env = "LIENTHONG_REGIONAL_CARE_WINDOW_DAYS",
        default_value_t = 365
    )]
    pub care_window_days: u32,
    /// Patient records (GetPatientRecord, FindReusableLabResults) one facility may read per
    /// minute, against bulk harvesting; beyond it RESOURCE_EXHAUSTED with how long to wait.
    #[arg(
        long,
        env = "LIENTHONG_REGIONAL_PATIENT_READS_PER_MINUTE",
        default_value_t = 120
    )]
    pub patient_reads_per_minute: u32,
    /// How many patient records a facility may read at once before the per-minute rate applies.
    #[arg(
        long,
        env = "LIENTHONG_REGIONAL_PATIENT_READ_BURST",
        default_value_t = 60
    )]
    pub patient_read_burst: u32,
    /// Most messages read and applied per batch (written as atomic sled batches of 100, each
    /// with its offsets).
    #[arg(long, env = "LIENTHONG_REGIONAL_BATCH_EVENTS", default_value_t = 4000)]
    pub batch_events: usize,
    /// Seconds between checkpoints of a store's in-memory structures (and one at every clean
    /// stop): after a crash, opening replays at most what was applied in this time.
    #[arg(long, env = "LIENTHONG_REGIONAL_CHECKPOINT_SECS", default_value_t = 60)]
    pub checkpoint_secs: u64,
    /// This replica's name within its region (the StatefulSet pod index): every replica
    /// reads every partition of its region and keeps its own positions, and names its
    /// advisory offset commits (the lag of `lienthong-regional-<region>-<replica>`) with it.
    #[arg(long, env = "LIENTHONG_REGIONAL_REPLICA", default_value = "0")]
    pub replica: String,
    /// Messages a region's store may be behind its topics' ends and still be ready (gRPC
    /// health SERVING, `/readyz` 200); further behind, it is catching up and not ready.
    #[arg(long, env = "LIENTHONG_REGIONAL_READY_MAX_LAG", default_value_t = 1000)]
    pub ready_max_lag: u64,
    /// Seconds a region's store may go without reaching Kafka before it stops being ready
    /// (its answers may be missing what was published since).
    #[arg(long, env = "LIENTHONG_REGIONAL_CUTOFF_SECS", default_value_t = 30)]
    pub cutoff_secs: u64,
}

impl RegionalConfig {
    /// The topic of a document kind.
    pub fn topic(&self, kind: DocumentKind) -> &str {
        self.topics.of(kind)
    }

    /// The topics a region's consumer reads: every document topic and the receipts.
    pub fn consumed_topics(&self) -> [&str; 4] {
        [
            self.topics.of(DocumentKind::Referral),
            self.topics.of(DocumentKind::Appointment),
            self.topics.of(DocumentKind::LabResult),
            &self.topic_receipt,
        ]
    }

    /// Where the query API listens unless `--listen` says otherwise.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50061);

    /// The query API's listener address.
    pub fn listen(&self) -> SocketAddr {
        self.serving.listen_or(Self::DEFAULT_LISTEN)
    }

    /// The group named by a replica's advisory commits (no group is joined: every replica
    /// reads every partition).
    pub fn group(&self, region: &str) -> String {
        format!("lienthong-regional-{region}-{}", self.replica)
    }

    /// Checks the settings together.
    pub fn check(&self) -> Result<(), String> {
        if self.regions.is_empty() {
            return Err(
                "--regions is required: the current province codes this store serves, e.g. 79,01"
                    .into(),
            );
        }
        for r in &self.regions {
            if lienthong_core::ProvinceCode::current(r).is_none() {
                return Err(format!(
                    "--regions: {r:?} is not one of the 34 current province codes"
                ));
            }
        }
        if self.replica.is_empty()
            || !self
                .replica
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(format!(
                "--replica {:?}: give the replica's name in letters, digits, '-', '_' or '.' \
                 (in Kubernetes, the pod index)",
                self.replica
            ));
        }
        if self.checkpoint_secs == 0 {
            return Err("--checkpoint-secs must be at least 1".into());
        }
        if self.care_window_days == 0 {
            return Err("--care-window-days must be at least 1".into());
        }
        self.serving
            .check()
            .map_err(|e| format!("the query API: {e}"))
    }
}
