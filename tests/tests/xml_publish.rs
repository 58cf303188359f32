//! A HIS export, end to end through the CLI: `lienthong xml convert` turns a GIAMDINHHS file
//! into events, `lienthong publish` sends them to a real gateway; publishing the re-exported
//! file again is answered DUPLICATE and adds nothing to Kafka.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use lienthong_facility_agent::xml::fixtures::{envelope, full_episode};
use lienthong_tests::gateway::{record_count, start_gateway};
use lienthong_tests::workspace_bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_converts_publishes_and_a_re_export_is_duplicate() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let dir = tempfile::tempdir()?;
    let export = dir.path().join("01001_20261105.xml");
    std::fs::write(
        &export,
        envelope(
            "01001",
            &[
                full_episode("LK1", "001185012345", false),
                full_episode("LK2", "001185012399", true),
            ],
        ),
    )?;
    let out = std::process::Command::new(workspace_bin("lienthong"))
        .args(["xml", "convert"])
        .arg(&export)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 episode(s) converted, 0 problem(s)"),
        "{stderr}"
    );
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, &out.stdout)?;
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    // Each episode: a referral, an appointment and two lab reports.
    assert_eq!(lines, 8);

    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, gw.pki.ca_pem())?;
    let token = dir.path().join("token");
    std::fs::write(&token, gw.token("01001", 600))?;
    let url = format!("https://localhost:{}", gw.addr.port());
    let publish = || {
        std::process::Command::new(workspace_bin("lienthong"))
            .args([
                "publish",
                "--quiet",
                "--facility",
                "01001",
                "--gateway",
                &url,
                "--ca",
            ])
            .arg(&ca)
            .arg("--token-file")
            .arg(&token)
            .arg("--file")
            .arg(&events)
            .output()
    };
    let first = publish()?;
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains(": 8 accepted"), "{stdout}");
    let count = || -> i64 {
        gw.topics
            .values()
            .map(|t| record_count(t).unwrap_or(-1))
            .sum()
    };
    assert_eq!(count(), 8);

    let again = publish()?;
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(stdout.contains(": 8 duplicate"), "{stdout}");
    assert_eq!(count(), 8, "a re-export adds nothing");
    gw.stop().await
}
