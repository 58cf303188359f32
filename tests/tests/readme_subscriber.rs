//! The README's Python subscriber, run exactly as written: its install block, its
//! `subscribe.py` and its run block, from a folder shaped like the repository root (`proto/`
//! and the local stack's `.state/`), against the local stack, as the analytics principal. It
//! must print the event key of every de-identified referral this test publishes. If the README
//! drifts from what works, this fails.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use lienthong_core::ClinicalEvent;
use lienthong_deidentifier::AnalyticsTopics;
use lienthong_tests::{keyed_events, repo_root, require_kafka, require_registry};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

/// The code block that follows `<!-- readme-subscriber: {name} -->` in README.md.
fn readme_block(readme: &str, name: &str) -> String {
    let marker = format!("<!-- readme-subscriber: {name} -->");
    let after = &readme[readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md lost the marker {marker}"))
        + marker.len()..];
    let fence = after.find("```").expect("a code block after the marker");
    let body = &after[fence..];
    let start = body.find('\n').expect("fence line") + 1;
    let end = body[start..].find("\n```").expect("closing fence");
    body[start..start + end + 1].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_python_subscriber_works_as_written() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let readme = std::fs::read_to_string(repo_root().join("README.md"))?;
    let (install, script, run) = (
        readme_block(&readme, "install"),
        readme_block(&readme, "subscribe.py"),
        readme_block(&readme, "run"),
    );

    // The README's group reads from the beginning only when it has no committed position.
    let admin: AdminClient<DefaultClientContext> = kafka.client_config()?.create()?;
    let deleted = admin
        .delete_groups(&["analytics-my-team"], &AdminOptions::new())
        .await?;
    for result in deleted {
        if let Err((group, code)) = result {
            assert!(
                code == rdkafka::types::RDKafkaErrorCode::GroupIdNotFound,
                "cannot reset group {group}: {code}"
            );
        }
    }
    // Referrals as the de-identification service writes them to the standard analytics topic.
    let referrals: Vec<ClinicalEvent> = keyed_events(31, 12)
        .into_iter()
        .filter(|event| matches!(event, ClinicalEvent::Referral(_)))
        .collect();
    assert!(!referrals.is_empty(), "the fixture holds referrals");
    lienthong_tests::warehouse::publish_analytics(
        &registry,
        &AnalyticsTopics::prefixed(""),
        &referrals,
    )
    .await?;
    let event_keys: Vec<String> = referrals
        .iter()
        .map(|event| lienthong_tests::warehouse::analytics_keys(event).0)
        .collect();

    let dir = tempfile::tempdir()?;
    std::os::unix::fs::symlink(repo_root().join("proto"), dir.path().join("proto"))?;
    std::os::unix::fs::symlink(repo_root().join(".state"), dir.path().join(".state"))?;
    std::fs::write(dir.path().join("subscribe.py"), script)?;
    let python_bin = lienthong_tests::python()
        .parent()
        .expect("venv bin folder")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        python_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -euo pipefail\n{install}{run}");
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            std::process::Command::new("bash")
                .arg("-c")
                .arg(script)
                .current_dir(dir)
                .env("PATH", path)
                .output()
        }
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the README subscriber failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in &event_keys {
        assert!(
            stdout.lines().any(|l| l.starts_with(key.as_str())),
            "{key} not printed by the README subscriber"
        );
    }
    Ok(())
}
