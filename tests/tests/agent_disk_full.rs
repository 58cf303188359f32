//! A facility agent whose disk fills while the gateway is away: it stops (exit status
//! non-zero, so systemd restarts it and an operator sees it) with a message that names the
//! full disk and what to do, and loses nothing: exports it could not take in stay in the inbox,
//! and once there is space again the next start delivers every event of every export exactly
//! once. The disk is a small tmpfs mounted for the test, so it needs root.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lienthong_core::validation::ValidationContext;
use lienthong_facility_agent::xml::fixtures::{envelope, full_episode};
use lienthong_facility_agent::xml::{Limits, convert};
use lienthong_tests::gateway::{read_all, record_count, start_gateway};
use lienthong_tests::small_disk::{SmallDisk, free_bytes};
use lienthong_tests::{workspace_bin, xml_files_in};

const FILES: usize = 8;
const EPISODES_PER_FILE: usize = 500; // four events each: 16,000 in all

fn spawn_agent(args: &[String], log: &Path) -> anyhow::Result<Child> {
    Ok(Command::new(workspace_bin("lienthong-facility-agent"))
        .args(args)
        .env_remove("LIENTHONG_METRICS_ADDR")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?)
}

fn delivered(gw: &lienthong_tests::gateway::TestGateway) -> i64 {
    gw.topics
        .values()
        .map(|t| record_count(t).unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_agent_and_a_restart_with_space_delivers_everything_once()
-> anyhow::Result<()> {
    let mut gw = start_gateway(|_| {}).await?;
    gw.pause().await?; // nothing drains the outbox while the disk fills
    let dir = tempfile::tempdir()?;
    let disk = SmallDisk::mount("2m")?;
    let mut args = gw.inbox_agent_args("01001", dir.path())?;
    let data = args
        .iter()
        .position(|a| a == "--data-dir")
        .expect("--data-dir")
        + 1;
    args[data] = disk.path().join("agent").display().to_string();
    let inbox = dir.path().join("inbox");

    let ctx = ValidationContext::now();
    let mut expected = BTreeSet::new();
    for f in 0..FILES {
        let episodes: Vec<_> = (0..EPISODES_PER_FILE)
            .map(|e| {
                let n = f * EPISODES_PER_FILE + e;
                full_episode(&format!("LD{n:06}"), &format!("0011850{n:05}"), true)
            })
            .collect();
        let text = envelope("01001", &episodes);
        let converted =
            convert("x", text.as_bytes(), &Limits::default(), &ctx).map_err(anyhow::Error::msg)?;
        assert!(
            converted.problems.is_empty(),
            "{:?}",
            converted.problems.first()
        );
        expected.extend(
            converted
                .events
                .iter()
                .map(|e| e.header().unwrap().event_id.clone()),
        );
        let tmp = inbox.join(format!(".{f}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, inbox.join(format!("01001_{f:02}.xml")))?;
    }
    assert_eq!(expected.len(), FILES * EPISODES_PER_FILE * 4);

    let log = dir.path().join("agent.log");
    let mut agent = spawn_agent(&args, &log)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = agent.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = agent.kill();
            panic!(
                "the agent kept running on a full disk ({} bytes free) instead of stopping",
                free_bytes(disk.path())
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        !status.success(),
        "an agent that cannot write must not exit 0"
    );
    let said = std::fs::read_to_string(&log)?;
    assert!(
        said.contains("the disk of the data folder is full")
            && said.contains("free space there")
            && said.contains("Nothing taken in is lost"),
        "the operator is told what happened and what to do: {said}"
    );
    let waiting = xml_files_in(&inbox);
    assert!(
        waiting > 0,
        "the disk filled before every export was taken in"
    );
    eprintln!("full disk: the agent stopped ({status}) with {waiting} exports still in the inbox");
    assert_eq!(delivered(&gw), 0, "nothing reached Kafka during the outage");

    // Space again, and the gateway back: one start takes the rest in and delivers everything.
    disk.grow("256m")?;
    gw.resume().await?;
    let mut agent = spawn_agent(&args, &log)?;
    let deadline = Instant::now() + Duration::from_secs(240);
    while xml_files_in(&inbox) > 0 || delivered(&gw) < expected.len() as i64 {
        assert!(
            agent.try_wait()?.is_none(),
            "the agent stopped again: {}",
            std::fs::read_to_string(&log)?
        );
        assert!(
            Instant::now() < deadline,
            "not delivered within 240 s: {} exports waiting, {} of {} events in Kafka",
            xml_files_in(&inbox),
            delivered(&gw),
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for topic in gw.topics.values() {
        for (_, _, id) in read_all(topic)? {
            *seen.entry(id).or_default() += 1;
        }
    }
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "every event of every export arrived"
    );
    assert!(seen.values().all(|n| *n == 1), "and exactly once");
    assert_eq!(xml_files_in(&inbox.join("done")), FILES);
    Ok(())
}
