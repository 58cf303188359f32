//! Helpers for the end-to-end tests in `tests/tests/`, which run against the real local stack
//! started by `deploy/local/test`. A test that cannot reach a component fails; none is skipped.

use std::path::PathBuf;
use std::time::Duration;

use lienthong_kafka::KafkaArgs;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// Kafka settings of the local stack (LIENTHONG_KAFKA_BOOTSTRAP overrides the address).
pub fn kafka() -> KafkaArgs {
    let mut args = KafkaArgs::local(std::env::var("LIENTHONG_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into()));
    args.timeout_secs = 15;
    args
}

/// Kafka settings after checking the broker answers; panics (fails the test) with what to run.
pub fn require_kafka() -> KafkaArgs {
    let args = kafka();
    if let Err(e) = args.probe() {
        panic!("the end-to-end tests need the local stack: {e}; start it with deploy/local/test or deploy/local/up");
    }
    args
}

/// A topic name no other test or run uses.
pub fn unique_topic(prefix: &str) -> String {
    format!("lienthong.test.{prefix}.{}", uuid::Uuid::new_v4().simple())
}

/// Creates a topic with one replica (the local broker is a single node).
pub async fn create_topic(args: &KafkaArgs, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = args.client_config()?.create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    for r in admin.create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &opts).await? {
        r.map_err(|(t, code)| anyhow::anyhow!("cannot create {t}: {code}"))?;
    }
    Ok(())
}

/// Path of a workspace binary built by `cargo test --workspace` (e.g. `lienthong`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> -> target/debug/<name>
    let dir = exe.parent().and_then(|d| d.parent()).map(PathBuf::from).unwrap_or_default();
    let bin = dir.join(name);
    assert!(bin.is_file(), "{} not built; run the tests with `cargo test --workspace`", bin.display());
    bin
}

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
