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

/// Flags of a `lienthong-regional-store` process serving `region` alone from `data`, in
/// insecure development mode on a free port, reading `topics` and `receipt`.
pub fn process_args(
    region: &str,
    data: &Path,
    kafka: &lienthong_kafka::KafkaArgs,
    registry: &lienthong_registry::RegistryArgs,
    topics: &BTreeMap<DocumentKind, String>,
    receipt: &str,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--regions".into(),
        region.into(),
        "--insecure-dev".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--kafka-bootstrap".into(),
        kafka.bootstrap.clone(),
        "--registry-url".into(),
        registry.registry_url.clone(),
        "--log".into(),
        "warn".into(),
    ];
    args.extend(topic_flags(topics, receipt));
    args
}

/// Waits (at most `within`) until the store process `child` of replica 0 of `region` has
/// applied everything in `topics`, then stops it cleanly (SIGTERM: it finishes its batch and
/// flushes). Fails if the process ends first.
pub async fn catch_up_and_stop(
    mut child: tokio::process::Child,
    region: &str,
    topics: &[String],
    within: std::time::Duration,
) -> anyhow::Result<()> {
    let until = std::time::Instant::now() + within;
    while replica_lag(region, topics)? > 0 {
        anyhow::ensure!(
            std::time::Instant::now() < until,
            "the store did not catch up"
        );
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the store stopped ({status}) before it caught up");
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    if let Some(pid) = child.id() {
        std::process::Command::new("kill")
            .arg(pid.to_string())
            .status()?;
    }
    child.wait().await?;
    Ok(())
}

/// Events published for a store process to read: fresh document topics (schemas registered)
/// and receipt topic, the events, and what the store of the region must hold once it has read
/// them.
pub struct PublishedRegion {
    /// Document topics.
    pub topics: BTreeMap<DocumentKind, String>,
    /// Receipt topic (empty).
    pub receipt: String,
    /// Every event published.
    pub events: Vec<lienthong_core::ClinicalEvent>,
    /// The latest version of each document of the region.
    pub expected: BTreeMap<String, u64>,
    /// Every topic the store reads.
    pub all_topics: Vec<String>,
}

/// Publishes `total` events made from `seed` (a tenth of them second versions that cancel
/// their document) to fresh topics, for a store of `region`.
pub async fn publish_region(
    kafka: &lienthong_kafka::KafkaArgs,
    registry: &lienthong_registry::RegistryArgs,
    seed: u64,
    total: usize,
    region: &str,
) -> anyhow::Result<PublishedRegion> {
    let topics = crate::warehouse::topics_with_schemas(registry).await?;
    let receipt = unique_topic("region.receipt");
    crate::create_topic(kafka, &receipt, 1).await?;
    let events = crate::events_with_second_versions(
        seed,
        total - total / 10,
        lienthong_proto::v1::Action::Cancelled,
    );
    let expected = latest_versions(&events, region);
    crate::warehouse::publish_to(registry, &topics, &events).await?;
    let all_topics = topics.values().cloned().chain([receipt.clone()]).collect();
    Ok(PublishedRegion {
        topics,
        receipt,
        events,
        expected,
        all_topics,
    })
}

/// Checks that the store of `region` under the process data folder `data` holds exactly
/// `expected` (document → version); returns how many documents that is.
pub fn assert_latest_versions(
    data: &Path,
    region: &str,
    expected: &BTreeMap<String, u64>,
) -> anyhow::Result<usize> {
    let store =
        lienthong_regional_store::store::RegionStore::open(&data.join(format!("region-{region}")))?;
    let got: BTreeMap<String, u64> = store.versions()?.into_iter().collect();
    anyhow::ensure!(
        got.len() == expected.len(),
        "region {region} holds {} documents, {} expected",
        got.len(),
        expected.len()
    );
    anyhow::ensure!(
        &got == expected,
        "stored versions differ from the latest version of each document"
    );
    Ok(got.len())
}
