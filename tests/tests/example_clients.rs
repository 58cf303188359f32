//! The example clients of examples/ (Java, Python, Node.js) do what a HIS vendor's code does,
//! against a real gateway with TLS and a bearer token: build a referral from scratch, compute its ids from the
//! published rules, publish it (ACCEPTED, and the event is in Kafka under the id the client
//! computed), then publish an invalid one and print the violation codes in Vietnamese.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::{Command, Output};

use lienthong_core::DocumentKind;
use lienthong_tests::gateway::{TestGateway, read_all, start_gateway};
use lienthong_tests::repo_root;

const FACILITY: &str = "79025";

/// Runs `command` with the gateway's address, CA and a token for FACILITY in the environment
/// the examples read (the same variables `source .state/env` sets for the local stack).
async fn run_example(gw: &TestGateway, mut command: Command) -> anyhow::Result<Output> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    let token = dir.path().join("79025.token");
    std::fs::write(&ca, gw.pki.ca_pem())?;
    std::fs::write(&token, gw.token(FACILITY, 600))?;
    command
        .env(
            "LIENTHONG_GATEWAY_URL",
            format!("https://localhost:{}", gw.addr.port()),
        )
        .env("LIENTHONG_GATEWAY_CA", &ca)
        .env("LIENTHONG_GATEWAY_TOKEN_FILE", &token);
    let out = tokio::task::spawn_blocking(move || command.output()).await??;
    drop(dir);
    Ok(out)
}

/// The example's report: every id vector checked, the valid slip ACCEPTED and stored under the
/// event id the client printed, the invalid one REJECTED with coded Vietnamese violations.
fn check_report(gw: &TestGateway, out: &Output) -> anyhow::Result<()> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the example failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("test vectors match"), "{stdout}");
    let accepted = stdout
        .lines()
        .find(|l| l.starts_with("valid slip "))
        .unwrap_or_else(|| panic!("no valid slip line in\n{stdout}"));
    assert!(accepted.contains("OUTCOME_ACCEPTED"), "{stdout}");
    let event_id = accepted
        .split_whitespace()
        .nth(2)
        .expect("event id")
        .trim_end_matches(':');
    let topic = &gw.topics[&DocumentKind::Referral];
    let stored = read_all(topic)?;
    assert!(
        stored.iter().any(|(_, _, id)| id == event_id),
        "{event_id} is not in {topic}: {stored:?}"
    );
    assert!(stdout.contains("OUTCOME_REJECTED"), "{stdout}");
    let violations: Vec<_> = stdout
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains(" at "))
        .collect();
    assert!(!violations.is_empty(), "no violations printed:\n{stdout}");
    // Vietnamese messages, not the English ones.
    assert!(
        violations.iter().any(|l| l
            .chars()
            .any(|c| "ạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹđ".contains(c))),
        "{violations:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_example_publishes_a_referral_and_reads_violations() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let mut command = Command::new(lienthong_tests::python());
    command.arg(repo_root().join("examples/python/publish_referral.py"));
    let out = run_example(&gw, command).await?;
    check_report(&gw, &out)?;
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_java_example_publishes_a_referral_and_reads_violations() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let mut command = Command::new("mvn");
    command
        .args(["-B", "-q", "compile", "exec:java"])
        .current_dir(repo_root().join("examples/java"));
    let out = run_example(&gw, command).await?;
    check_report(&gw, &out)?;
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_example_publishes_a_referral_and_reads_violations() -> anyhow::Result<()> {
    let example = repo_root().join("examples/node");
    assert!(
        example.join("node_modules/@grpc/grpc-js").is_dir(),
        "{}/node_modules is missing: deploy/local/test installs it (deploy/local/node-env)",
        example.display()
    );
    let gw = start_gateway(|_| {}).await?;
    let mut command = Command::new("node");
    command.arg("publish_referral.mjs").current_dir(&example);
    let out = run_example(&gw, command).await?;
    check_report(&gw, &out)?;
    gw.stop().await
}
