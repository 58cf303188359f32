//! The README's first flow: `lienthong demo` publishes synthetic clinical events and reads
//! every one back from the real broker.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;

use lienthong_tests::{require_kafka, workspace_bin};

#[test]
fn demo_publishes_and_reads_back_every_event() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let bin = workspace_bin("lienthong");
    let key = Command::new(&bin)
        .args(["keys", "generate", "--key-id", "test"])
        .output()?;
    assert!(key.status.success());
    let topics = Command::new(&bin)
        .args([
            "topics",
            "apply",
            "--kafka-bootstrap",
            &kafka.bootstrap,
            "--replication-factor",
            "1",
            "--min-insync-replicas",
            "1",
        ])
        .output()?;
    assert!(
        topics.status.success(),
        "{}",
        String::from_utf8_lossy(&topics.stderr)
    );
    let out = Command::new(&bin)
        .args([
            "demo",
            "--kafka-bootstrap",
            &kafka.bootstrap,
            "--count",
            "90",
        ])
        .env(
            "LIENTHONG_PSEUDONYM_KEY",
            String::from_utf8(key.stdout)?.trim(),
        )
        .env_remove("LIENTHONG_PSEUDONYM_KEY_FILE")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("published 90 events (30 referral, 30 appointment, 30 lab-result)"),
        "{stdout}"
    );
    assert!(stdout.contains("read back 90/90"), "{stdout}");
    Ok(())
}

#[test]
fn demo_without_a_pseudonym_key_refuses_to_start() -> anyhow::Result<()> {
    let out = Command::new(workspace_bin("lienthong"))
        .args(["demo", "--count", "1"])
        .env_remove("LIENTHONG_PSEUDONYM_KEY")
        .env_remove("LIENTHONG_PSEUDONYM_KEY_FILE")
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pseudonym key configured"));
    Ok(())
}
