//! `lienthong publish` against a real gateway (TLS + bearer token): synthetic events and a JSON
//! Lines file with one invalid event.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use lienthong_core::ClinicalEvent;
use lienthong_tests::gateway::{envelope, events_from, record_count, start_gateway};
use lienthong_tests::workspace_bin;
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_sends_samples_and_files_and_summarizes() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, gw.pki.ca_pem())?;
    let token = dir.path().join("token");
    std::fs::write(&token, gw.token("79025", 600))?;
    let url = format!("https://localhost:{}", gw.addr.port());
    let run = |extra: Vec<String>| {
        let mut c = tokio::process::Command::new(workspace_bin("lienthong"));
        c.args([
            "publish",
            "--quiet",
            "--facility",
            "79025",
            "--gateway",
            &url,
            "--ca",
        ])
        .arg(&ca)
        .arg("--token-file")
        .arg(&token)
        .args(extra);
        c.output()
    };

    let out = run(vec![
        "--sample".into(),
        "60".into(),
        "--batch".into(),
        "25".into(),
    ])
    .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("published 60 events") && stdout.contains("accepted"),
        "{stdout}"
    );
    let total: i64 = gw
        .topics
        .values()
        .map(|t| record_count(t).unwrap_or(-1))
        .sum();
    assert!(
        total >= 58,
        "{total} records for 60 synthetic events (a random slip-number collision makes a duplicate)"
    );

    // A JSON Lines file: two valid events and one with a bad citizen ID.
    let mut events = events_from("79025", 77, 3);
    if let ClinicalEvent::Referral(e) = &mut events[0]
        && let Some(p) = e.slip.as_mut().and_then(|s| s.patient.as_mut())
    {
        p.citizen_id = "12345".into();
    }
    let lines: Vec<String> = events
        .into_iter()
        .map(|e| {
            lienthong_proto::json::to_json(
                "lienthong.v1.EventEnvelope",
                &envelope(e).encode_to_vec(),
            )
            .map(|v| v.to_string())
        })
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines.join("\n"))?;
    let out = run(vec!["--file".into(), file.display().to_string()]).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Exit code 3: refused as it is, retrying will not help.
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("2 accepted")
            && stdout.contains("1 rejected")
            && stdout.contains("citizen_id.length at slip.patient.citizen_id"),
        "{stdout}"
    );

    // A malformed line names the file and line.
    std::fs::write(&file, "{\"referral\": {\"header\": 5}}\n")?;
    let out = run(vec!["--file".into(), file.display().to_string()]).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("events.jsonl:1"),
        "{stderr}"
    );
    gw.stop().await
}
