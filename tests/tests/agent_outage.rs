//! The facility agent through an outage: the gateway is down while 10,000 events are taken in
//! from HIS exports; the agent is killed (SIGKILL) and restarted twice meanwhile; when the
//! gateway comes back every event reaches Kafka exactly once (by event_id), each patient's
//! events in intake order. A re-exported file is then answered DUPLICATE and adds nothing.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use lienthong_core::validation::ValidationContext;
use lienthong_facility_agent::xml::fixtures::{envelope, full_episode};
use lienthong_facility_agent::xml::{Limits, convert};
use lienthong_tests::gateway::{read_all, record_count, start_gateway};
use lienthong_tests::{workspace_bin, xml_files_in};

const FILES: usize = 10;
const EPISODES_PER_FILE: usize = 250; // four events each: 10,000 in all

struct Agent {
    args: Vec<String>,
    child: Child,
}

impl Agent {
    fn start(args: &[String]) -> anyhow::Result<Self> {
        let child = Command::new(workspace_bin("lienthong-facility-agent"))
            .args(args)
            .env_remove("LIENTHONG_METRICS_ADDR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(Self {
            args: args.to_vec(),
            child,
        })
    }

    fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.child.kill()?; // SIGKILL
        self.child.wait()?;
        *self = Self::start(&self.args)?;
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !f() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn status(data: &Path) -> String {
    let out = Command::new(workspace_bin("lienthong"))
        .args(["agent", "status", "--data-dir"])
        .arg(data)
        .output()
        .expect("lienthong runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_survive_an_outage_and_two_kills_exactly_once_in_order()
-> anyhow::Result<()> {
    let mut gw = start_gateway(|_| {}).await?;
    gw.pause().await?; // the outage starts before the first file arrives
    let dir = tempfile::tempdir()?;
    let (data, inbox) = (dir.path().join("agent"), dir.path().join("inbox"));
    let args = gw.inbox_agent_args("01001", dir.path())?;

    // The exports, and what they must become (intake order per patient).
    let mut exports: Vec<(PathBuf, String)> = Vec::new();
    let mut expected: Vec<String> = Vec::new();
    let ctx = ValidationContext::now();
    for f in 0..FILES {
        let episodes: Vec<_> = (0..EPISODES_PER_FILE)
            .map(|e| {
                let n = f * EPISODES_PER_FILE + e;
                full_episode(
                    &format!("LK{n:06}"),
                    &format!("0011850{n:05}"),
                    n.is_multiple_of(2),
                )
            })
            .collect();
        let text = envelope("01001", &episodes);
        let converted =
            convert("x", text.as_bytes(), &Limits::default(), &ctx).map_err(anyhow::Error::msg)?;
        assert!(
            converted.problems.is_empty(),
            "{:?}",
            &converted.problems[..1]
        );
        expected.extend(
            converted
                .events
                .iter()
                .map(|e| e.header().unwrap().event_id.clone()),
        );
        exports.push((inbox.join(format!("01001_{f:02}.xml")), text));
    }
    assert_eq!(expected.len(), 10_000);

    let mut agent = Agent::start(&args)?;
    let done = inbox.join("done");
    for (i, (path, text)) in exports.iter().enumerate() {
        // Written as a HIS does: to a temporary name, then renamed into place.
        let tmp = inbox.join(format!(".{i}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        if i == 3 || i == 7 {
            wait_until("intake of the first files", Duration::from_secs(60), || {
                xml_files_in(&done) >= i
            })?;
            agent.kill_and_restart()?;
        }
    }
    wait_until("intake of every file", Duration::from_secs(120), || {
        xml_files_in(&done) == FILES
    })?;
    wait_until("the status report", Duration::from_secs(30), || {
        status(&data).contains("pending events:       10000")
    })?;
    let report = status(&data);
    assert!(
        report.contains("last error:") && !report.contains("last error:           none"),
        "the outage shows: {report}"
    );
    assert_eq!(
        gw.topics
            .values()
            .map(|t| record_count(t).unwrap_or(-1))
            .sum::<i64>(),
        0,
        "nothing reached Kafka during the outage"
    );

    // The gateway comes back.
    gw.resume().await?;
    wait_until("delivery of all 10,000", Duration::from_secs(240), || {
        gw.topics
            .values()
            .map(|t| record_count(t).unwrap_or(0))
            .sum::<i64>()
            >= 10_000
            && status(&data).contains("pending events:       0 ")
    })?;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let position: BTreeMap<&str, usize> = expected
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    for topic in gw.topics.values() {
        // Per partition and key (= patient), intake order must hold.
        let mut last: BTreeMap<(i32, Vec<u8>), usize> = BTreeMap::new();
        for (partition, key, id) in read_all(topic)? {
            *seen.entry(id.clone()).or_default() += 1;
            let at = *position.get(id.as_str()).expect("an event of the exports");
            let prev = last.insert((partition, key), at);
            assert!(prev.is_none_or(|p| p < at), "patient order broken at {id}");
        }
    }
    assert_eq!(seen.len(), 10_000, "every event arrived");
    assert!(seen.values().all(|n| *n == 1), "and exactly once");
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        expected.iter().cloned().collect::<BTreeSet<_>>()
    );

    // A re-exported file: every document unchanged, nothing sent, nothing new in Kafka.
    std::fs::write(inbox.join("01001_00_again.xml"), &exports[0].1)?;
    wait_until("the re-export is taken", Duration::from_secs(30), || {
        xml_files_in(&done) == FILES + 1
    })?;
    wait_until("the re-export is settled", Duration::from_secs(30), || {
        status(&data).contains("pending events:       0 ")
    })?;
    let report = std::fs::read_to_string(done.join("01001_00_again.xml.report.txt"))?;
    assert_eq!(
        report
            .matches("unchanged since version 1; nothing sent")
            .count(),
        EPISODES_PER_FILE * 4
    );
    assert_eq!(
        gw.topics
            .values()
            .map(|t| record_count(t).unwrap_or(-1))
            .sum::<i64>(),
        10_000
    );
    gw.stop().await?;
    drop(agent);
    Ok(())
}

/// A token renewed by replacing its file is sent within seconds, without restarting the agent:
/// events refused under the old token wait in the outbox, then reach Kafka, and the status
/// shows when the new token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_token_file_is_used_without_a_restart() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("agent");
    let args = gw.inbox_agent_args("79025", dir.path())?;
    let token = dir.path().join("token");
    // A token for another service: the gateway refuses it.
    let wrong = lienthong_tests::tokens::issuer().token(
        "79025",
        lienthong_grpc::REGIONAL_AUDIENCE,
        &[lienthong_grpc::Scope::Publish],
        3600,
    );
    std::fs::write(&token, wrong)?;
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let export = lienthong_tests::gateway::xml_export("79025", 2, 11)?;
    let _agent = Agent::start(&args)?;
    std::fs::write(dir.path().join("inbox").join("79025_01.xml"), &export)?;
    wait_until("the old token refused", Duration::from_secs(30), || {
        status(&data).contains("Unauthenticated")
    })?;
    let sent = |gw: &lienthong_tests::gateway::TestGateway| {
        gw.topics
            .values()
            .map(|t| record_count(t).unwrap_or(-1))
            .sum::<i64>()
    };
    assert_eq!(sent(&gw), 0);

    // Renewed: written beside it and renamed into place, as an operator would.
    let renewed = dir.path().join("token.new");
    std::fs::write(&renewed, gw.token("79025", 3600))?;
    std::fs::set_permissions(
        &renewed,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    std::fs::rename(&renewed, &token)?;
    wait_until(
        "delivery under the renewed token",
        Duration::from_secs(30),
        || status(&data).contains("pending events:       0") && sent(&gw) > 0,
    )?;
    let shown = status(&data);
    assert!(
        shown.contains("last error:           none")
            && shown.contains("token expires in:     59 min"),
        "{shown}"
    );
    gw.stop().await
}
