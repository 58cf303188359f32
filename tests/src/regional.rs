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

/// The latest version of each document of `events` that concerns `region`: what its store
/// must hold.
pub fn latest_versions(
    events: &[lienthong_core::ClinicalEvent],
    region: &str,
) -> BTreeMap<String, u64> {
    let code = lienthong_core::ProvinceCode::current(region).expect("a current province code");
    let mut latest = BTreeMap::new();
    for e in events.iter().filter(|e| e.regions().contains(&code)) {
        let h = e.header().cloned().unwrap_or_default();
        let v = latest.entry(h.document_id).or_insert(0);
        *v = (*v).max(h.document_version);
    }
    latest
}

/// The `--topic-*` flags of a store or a rebuild reading `topics` and `receipt`.
pub fn topic_flags(topics: &BTreeMap<DocumentKind, String>, receipt: &str) -> Vec<String> {
    vec![
        "--topic-referral".into(),
        topics[&DocumentKind::Referral].clone(),
        "--topic-appointment".into(),
        topics[&DocumentKind::Appointment].clone(),
        "--topic-lab-result".into(),
        topics[&DocumentKind::LabResult].clone(),
        "--topic-receipt".into(),
        receipt.to_owned(),
    ]
}

/// A `lienthong-regional-store` process with `args` and the tests' pseudonym key, killed when
/// dropped.
pub fn spawn_store(args: &[String]) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new(crate::workspace_bin("lienthong-regional-store"))
        .args(args)
        .env(
            "LIENTHONG_PSEUDONYM_KEY",
            format!("test:{}", "07".repeat(32)),
        )
        // The stack's env file names a key file; this process gets its key from the env.
        .env_remove("LIENTHONG_PSEUDONYM_KEY_FILE")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

/// Messages replica 0 of `region` has not committed yet across `topics` (its advisory commits
/// follow each batch the store took).
pub fn replica_lag(region: &str, topics: &[String]) -> anyhow::Result<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let args = crate::kafka();
    let mut cfg = args.client_config()?;
    cfg.set("group.id", format!("lienthong-regional-{region}-0"));
    let consumer: BaseConsumer = cfg.create()?;
    let mut total = 0;
    let md = consumer.fetch_metadata(None, args.timeout())?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in md
        .topics()
        .iter()
        .filter(|t| topics.iter().any(|x| x == t.name()))
    {
        for p in t.partitions() {
            tpl.add_partition(t.name(), p.id());
        }
    }
    let committed = consumer.committed_offsets(tpl, args.timeout())?;
    for e in committed.elements() {
        let (_, high) = consumer.fetch_watermarks(e.topic(), e.partition(), args.timeout())?;
        let done = match e.offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => 0,
        };
        total += high - done;
    }
    Ok(total)
}
