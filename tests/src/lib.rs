//! Helpers for the end-to-end tests in `tests/tests/`, which run against the real local stack
//! started by `deploy/local/test`. A test that cannot reach a component fails; none is skipped.

// Test support: stopping the test with a clear message is exactly what these helpers are for.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod chart_readme;
pub mod deidentifier;
pub mod gateway;
pub mod privacy;
pub mod regional;
pub mod small_disk;
pub mod tokens;
pub mod warehouse;

use std::path::PathBuf;
use std::time::Duration;

use lienthong_kafka::KafkaArgs;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Kafka settings of the local stack as `.state/env` gives them (`LIENTHONG_KAFKA_*`: SASL_SSL
/// as the admin principal).
pub fn kafka() -> KafkaArgs {
    let mut args = KafkaArgs::from_env().expect("LIENTHONG_KAFKA_* settings");
    args.timeout_secs = 15;
    args
}

/// Kafka settings after checking the broker answers; panics (fails the test) with what to run.
pub fn require_kafka() -> KafkaArgs {
    let args = kafka();
    if let Err(e) = args.probe_blocking() {
        panic!(
            "the end-to-end tests need the local stack: {e}; start it with deploy/local/test or deploy/local/up"
        );
    }
    args
}

/// A topic name no other test or run uses.
pub fn unique_topic(prefix: &str) -> String {
    format!("lienthong.test.{prefix}.{}", uuid::Uuid::new_v4().simple())
}

/// Creates a topic with the replication of the local stack (one replica on a single broker).
pub async fn create_topic(args: &KafkaArgs, name: &str, partitions: i32) -> anyhow::Result<()> {
    create_topic_with(args, name, partitions, &[]).await
}

/// A replication setting of the local stack's topics (its env file), or `default`.
fn topics_setting(name: &str, default: i32) -> i32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates a topic with topic-level configs (`max.message.bytes`, …).
pub async fn create_topic_with(
    args: &KafkaArgs,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = args.client_config()?.create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    // As many replicas as the local stack's brokers allow (three on the cluster of
    // `deploy/local/up --brokers 3`), as the checked-in topics get.
    let replication = topics_setting("LIENTHONG_TOPICS_REPLICATION_FACTOR", 1);
    let min_insync = topics_setting("LIENTHONG_TOPICS_MIN_INSYNC_REPLICAS", 1).to_string();
    let topic = configs.iter().fold(
        NewTopic::new(name, partitions, TopicReplication::Fixed(replication))
            .set("min.insync.replicas", &min_insync),
        |t, (k, v)| t.set(k, v),
    );
    for r in admin.create_topics(&[topic], &opts).await? {
        r.map_err(|(t, code)| anyhow::anyhow!("cannot create {t}: {code}"))?;
    }
    Ok(())
}

/// Sets topic-level configs of a running topic (the others return to their defaults): the
/// broker applies them without a restart.
pub async fn set_topic_configs(
    args: &KafkaArgs,
    name: &str,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = args.client_config()?.create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    let change = configs.iter().fold(
        AlterConfig::new(ResourceSpecifier::Topic(name)),
        |c, (k, v)| c.set(k, v),
    );
    for r in admin.alter_configs(&[change], &opts).await? {
        r.map_err(|(t, code)| anyhow::anyhow!("cannot change {t:?}: {code}"))?;
    }
    Ok(())
}

/// A component of the local stack (`kafka`, `postgres`) stopped with its
/// `deploy/local/<component>/stop` until this is dropped, when its `start` brings it back and
/// waits until it is ready: a test that fails half-way still leaves the stack whole for the
/// tests after it. Only for a test that runs alone (cargo runs test binaries one at a time;
/// a binary with several such tests serializes them), since every other client of the
/// component loses it meanwhile.
pub struct StackComponentStopped(&'static str);

impl StackComponentStopped {
    /// Stops `component` (blocking until it has stopped).
    pub fn stop(component: &'static str) -> anyhow::Result<Self> {
        stack_script(component, "stop")?;
        Ok(Self(component))
    }
}

impl Drop for StackComponentStopped {
    fn drop(&mut self) {
        if let Err(e) = stack_script(self.0, "start") {
            eprintln!("{e:#}");
        }
    }
}

fn stack_script(component: &str, action: &str) -> anyhow::Result<()> {
    let script = repo_root()
        .join("deploy/local")
        .join(component)
        .join(action);
    let status = std::process::Command::new(&script).status()?;
    anyhow::ensure!(status.success(), "{} failed", script.display());
    Ok(())
}

/// Deletes topics a run created (benchmarks: hundreds of megabytes each run).
pub async fn delete_topics(args: &KafkaArgs, names: &[&str]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = args.client_config()?.create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    for r in admin.delete_topics(names, &opts).await? {
        r.map_err(|(t, code)| anyhow::anyhow!("cannot delete {t}: {code}"))?;
    }
    Ok(())
}

/// Grows `topic` to `total` partitions.
pub async fn add_partitions(args: &KafkaArgs, topic: &str, total: usize) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = args.client_config()?.create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    for r in admin
        .create_partitions(&[NewPartitions::new(topic, total)], &opts)
        .await?
    {
        r.map_err(|(t, code)| anyhow::anyhow!("cannot add partitions to {t}: {code}"))?;
    }
    Ok(())
}

/// A producer that refreshes topic metadata every second, so that it learns of a partition
/// just added within a second rather than the 30 s every lienthong client is given.
pub fn producer_seeing_new_partitions(args: &KafkaArgs) -> anyhow::Result<FutureProducer> {
    Ok(args
        .client_config()?
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()?)
}

/// Writes `payload` to partition `partition` of `topic`, retrying for up to 30 s while the
/// producer does not know the partition yet (it was just added).
pub async fn write_to_partition(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    payload: &[u8],
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key("k")
            .payload(payload);
        match producer.send(record, Duration::from_secs(10)).await {
            Ok(_) => return Ok(()),
            Err((e, _)) if std::time::Instant::now() < deadline => {
                println!("partition {partition} not writable yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err((e, _)) => anyhow::bail!("cannot write to partition {partition}: {e}"),
        }
    }
}

/// Path of a workspace binary built by `cargo test --workspace` (e.g. `lienthong`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> -> target/debug/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} not built; run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// Runs the workspace's `lienthong` command with `args` to its end (for commands that need no
/// running test service: a blocking call).
pub fn lienthong_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(workspace_bin("lienthong"))
        .args(args)
        .output()
        .expect("lienthong runs")
}

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Registry settings of the local stack (LIENTHONG_REGISTRY_URL overrides the URL), after
/// registering the contract; panics (fails the test) when the registry is not reachable.
pub async fn require_registry() -> lienthong_registry::RegistryArgs {
    let args = lienthong_registry::RegistryArgs::from_env().expect("LIENTHONG_REGISTRY_* settings");
    let client = lienthong_registry::RegistryClient::new(&args).expect("registry client");
    if let Err(e) = lienthong_registry::SchemaSet::built_in()
        .register(&client)
        .await
    {
        panic!(
            "the end-to-end tests need the schema registry: {e}; start it with deploy/local/test or deploy/local/up"
        );
    }
    args
}

/// Publishes events framed through the registry; returns (event, partition, offset) per event.
pub async fn publish_framed(
    kafka: &KafkaArgs,
    registry: &lienthong_registry::RegistryArgs,
    events: Vec<lienthong_core::ClinicalEvent>,
) -> anyhow::Result<Vec<(lienthong_core::ClinicalEvent, i32, i64)>> {
    let codec = lienthong_registry::WireCodec::new(registry)?;
    let producer = lienthong_kafka::EventProducer::new(kafka, Duration::from_secs(30))?;
    let mut out = Vec::new();
    for event in events {
        let framed = codec.encode(event.kind(), &event.encode_to_vec()).await?;
        let key = event
            .header()
            .map(|h| h.patient_key.clone())
            .unwrap_or_default();
        let d = producer
            .send(event.kind().topic(), key.as_bytes(), &framed, &[])
            .await?;
        out.push((event, d.partition, d.offset));
    }
    Ok(out)
}

/// Valid synthetic events of every kind with patient keys set (test key, generated here).
pub fn keyed_events(seed: u64, count: usize) -> Vec<lienthong_core::ClinicalEvent> {
    let keyer = lienthong_core::PatientKeyer::new("test", &seed.to_le_bytes().repeat(4))
        .expect("32-byte key");
    let mut g = lienthong_core::fixtures::Generator::new(seed, time::OffsetDateTime::now_utc());
    (0..count)
        .map(|i| {
            let mut e = g.any(i);
            let person = lienthong_core::PersonId::parse(
                e.patient().map(|p| p.citizen_id.as_str()).unwrap_or(""),
            )
            .expect("valid id");
            let key = keyer.key_for(&person);
            let h = e.header_mut();
            h.patient_key = key.value;
            h.patient_key_id = key.key_id;
            e
        })
        .collect()
}

/// `documents` keyed events (see [`keyed_events`]) followed by a second version, with
/// `action`, of every tenth of those documents: what a crash test loads.
pub fn events_with_second_versions(
    seed: u64,
    documents: usize,
    action: lienthong_proto::v1::Action,
) -> Vec<lienthong_core::ClinicalEvent> {
    let mut events = keyed_events(seed, documents);
    let updates: Vec<_> = events
        .iter()
        .step_by(10)
        .map(|e| {
            let mut next = e.clone();
            let kind = next.kind();
            let h = next.header_mut();
            h.document_version = 2;
            h.action = action as i32;
            h.event_id = lienthong_core::document_id::event_id(kind, &h.document_id, 2);
            next
        })
        .collect();
    events.extend(updates);
    events
}

/// A message's headers as text, by name (dead letters carry their origin and error there).
pub fn header_map(
    msg: &rdkafka::message::OwnedMessage,
) -> std::collections::HashMap<String, String> {
    use rdkafka::Message as _;
    use rdkafka::message::Headers as _;
    msg.headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_owned(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the one message at `topic[partition]@offset` from the local broker.
pub async fn read_at(
    topic: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<rdkafka::message::OwnedMessage> {
    let mut one = read_from(topic, partition, offset, 1).await?;
    one.pop()
        .ok_or_else(|| anyhow::anyhow!("no message at {topic}[{partition}]@{offset}"))
}

/// Reads `count` messages of `topic[partition]` from `offset` on, from the local broker.
pub async fn read_from(
    topic: &str,
    partition: i32,
    offset: i64,
    count: usize,
) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let mut cfg = kafka().client_config()?;
    cfg.set("group.id", "lienthong-test-reader")
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = cfg.create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))?;
    consumer.assign(&tpl)?;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let m = tokio::time::timeout(Duration::from_secs(15), consumer.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{topic}[{partition}] held {} of the {count} messages expected from offset {offset} after 15 s",
                    out.len()
                )
            })??;
        out.push(m.detach());
    }
    Ok(out)
}

/// Fails unless `dir` and everything below it is closed to group and others (folders 0700 or
/// stricter, files 0600 or stricter): what holds personal data.
pub fn assert_private(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o777;
        anyhow::ensure!(
            mode & 0o077 == 0,
            "{} is open to others (mode {mode:o})",
            path.display()
        );
        seen += 1;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    anyhow::ensure!(seen > 1, "{} holds nothing to check", dir.display());
    Ok(())
}

/// The local stack's Python environment (`LIENTHONG_PYTHON` overrides): what an analytics team
/// or a HIS vendor would install, from tests/python/requirements.txt.
pub fn python() -> PathBuf {
    let python = std::env::var("LIENTHONG_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".state/py/bin/python"));
    assert!(
        python.is_file(),
        "{} missing: deploy/local/test installs the Python environment",
        python.display()
    );
    python
}

/// Runs one pytest file of tests/python with the local stack's Python environment (and the
/// given extra environment); fails the test unless every one of its `passed` tests passed.
pub fn run_pytest(file: &str, env: &[(&str, &std::path::Path)], passed: usize) {
    let out = std::process::Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(repo_root().join("tests/python").join(file))
        .envs(env.iter().copied())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{file} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("{passed} passed")), "{stdout}");
}

/// Every Rust source file under crates/ and services/, with its text.
pub fn rust_sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(PathBuf, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs")
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                out.push((path, text));
            }
        }
    }
    let mut all = Vec::new();
    for dir in ["crates", "services"] {
        walk(&repo_root().join(dir), &mut all);
    }
    assert!(
        !all.is_empty(),
        "no Rust sources under {}",
        repo_root().display()
    );
    all
}

/// How many `.xml` files `dir` holds (0 when it does not exist): an agent's inbox or its done/.
pub fn xml_files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "xml"))
                .count()
        })
        .unwrap_or(0)
}
