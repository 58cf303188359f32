//! Helpers for regional-store tests and benchmarks.

use std::collections::BTreeMap;
use std::path::Path;

use lienthong_core::DocumentKind;
use lienthong_regional_store::config::RegionalConfig;

use crate::unique_topic;

/// A regional store serving `regions` from `data_dir`, in insecure development mode (tests set
/// TLS themselves when they need it), reading the given document topics and receipt topic, with
/// fresh names for its dead-letter and audit topics (the caller creates those it will need).
pub fn config(
    regions: &[&str],
    data_dir: &Path,
    topics: &BTreeMap<DocumentKind, String>,
    receipt: &str,
) -> RegionalConfig {
    RegionalConfig {
        regions: regions.iter().map(|r| (*r).to_owned()).collect(),
        data_dir: data_dir.to_path_buf(),
        serving: lienthong_grpc::ServingArgs::insecure(([127, 0, 0, 1], 0).into()),
        topics: lienthong_kafka::topics::DocumentTopics::from_map(topics),
        topic_receipt: receipt.to_owned(),
        dlq_topic: unique_topic("rs.dlq"),
        audit_topic: unique_topic("rs.audit"),
        care_window_days: 365,
        patient_reads_per_minute: 6000,
        patient_read_burst: 1000,
        batch_events: 500,
        replica: "0".into(),
        ready_max_lag: 1000,
        cutoff_secs: 30,
        checkpoint_secs: 60,
    }
}
