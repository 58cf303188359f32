//! `topics apply` against the real broker: creates, is idempotent, reconciles drift, and the
//! `lienthong` binary reports malformed specs and unreachable brokers clearly.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;

use lienthong_kafka::topics::{self, TopicChange, TopicsSpec};
use lienthong_tests::{require_kafka, unique_topic, workspace_bin};

fn spec_text(name: &str, partitions: i32, retention_ms: i64) -> String {
    format!(
        "[defaults]\nreplication_factor = 1\nmin_insync_replicas = 1\n\n[[topic]]\nname = \"{name}\"\npartitions = {partitions}\nretention_ms = {retention_ms}\ncleanup_policy = \"delete\"\n"
    )
}

#[allow(clippy::panic)] // a broken fixture must stop the test
fn spec(name: &str, partitions: i32, retention_ms: i64) -> TopicsSpec {
    match TopicsSpec::parse(
        &spec_text(name, partitions, retention_ms),
        std::path::Path::new("test.toml"),
    ) {
        Ok(s) => s,
        Err(e) => panic!("test spec is invalid: {e}"),
    }
}

#[tokio::test]
async fn apply_creates_then_reports_nothing_then_reconciles_changes() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let name = unique_topic("spec");

    let first = topics::apply(&kafka, &spec(&name, 3, 86_400_000)).await?;
    assert_eq!(
        first,
        vec![TopicChange::Created {
            topic: name.clone(),
            partitions: 3,
            replication_factor: 1
        }]
    );

    let second = topics::apply(&kafka, &spec(&name, 3, 86_400_000)).await?;
    assert!(
        second.is_empty(),
        "second apply must change nothing: {second:?}"
    );

    let third = topics::apply(&kafka, &spec(&name, 4, 3_600_000)).await?;
    assert!(
        third.contains(&TopicChange::PartitionsIncreased {
            topic: name.clone(),
            from: 3,
            to: 4
        }),
        "{third:?}"
    );
    assert!(third.iter().any(|c| matches!(c, TopicChange::ConfigChanged { key, to, .. } if key == "retention.ms" && to == "3600000")), "{third:?}");

    let state = topics::describe(&kafka, std::slice::from_ref(&name)).await?;
    assert_eq!(state[0].partitions, 4);
    assert_eq!(
        state[0].configs.get("retention.ms").map(String::as_str),
        Some("3600000")
    );
    assert_eq!(
        state[0]
            .configs
            .get("min.insync.replicas")
            .map(String::as_str),
        Some("1")
    );

    let shrink = topics::apply(&kafka, &spec(&name, 2, 3_600_000)).await;
    let err = shrink.expect_err("partitions cannot shrink").to_string();
    assert!(err.contains("cannot remove partitions"), "{err}");
    Ok(())
}

#[test]
fn the_cli_applies_twice_and_reports_no_changes_the_second_time() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("topics.toml");
    std::fs::write(&file, spec_text(&unique_topic("cli"), 2, -1))?;
    let run = || {
        Command::new(workspace_bin("lienthong"))
            .args([
                "topics",
                "apply",
                "--kafka-bootstrap",
                &kafka.bootstrap,
                "--spec",
            ])
            .arg(&file)
            .output()
    };
    let first = run()?;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("created"),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    let second = run()?;
    assert!(second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stdout).starts_with("no changes"),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );
    Ok(())
}

#[test]
fn a_malformed_spec_names_file_line_and_field() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        spec_text("x", 1, -1).replace("partitions = 1", "partitions = \"many\""),
    )?;
    let out = Command::new(workspace_bin("lienthong"))
        .args(["topics", "apply", "--spec"])
        .arg(&file)
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.toml") && err.contains("line 7") && err.contains("partitions"),
        "{err}"
    );
    Ok(())
}

#[test]
fn an_unreachable_broker_fails_fast_naming_the_address() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let out = Command::new(workspace_bin("lienthong"))
        .args([
            "topics",
            "list",
            "--kafka-bootstrap",
            "127.0.0.1:1",
            "--kafka-timeout-secs",
            "3",
        ])
        .output()?;
    // Exit code 4: unavailable, retry later.
    assert_eq!(out.status.code(), Some(4));
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1:1") && err.contains("deploy/local/up"),
        "{err}"
    );
    Ok(())
}
