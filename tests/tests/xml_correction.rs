//! A correction made in the HIS reaches both sinks: an export goes through the facility
//! agent and the gateway into the warehouse and the regional store; the same export with a
//! corrected diagnosis is sent as version 2 of the documents it changes (and nothing of those
//! it does not), and both sinks then hold the correction. Exporting it a third time sends
//! nothing.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use lienthong_core::ClinicalEvent;
use lienthong_core::document_id;
use lienthong_facility_agent::xml::fixtures::{envelope, full_episode};
use lienthong_tests::deidentifier::document_key;
use lienthong_tests::gateway::{record_count, start_gateway};
use lienthong_tests::warehouse::{connect, start_warehouse_path, wait_for_count};
use lienthong_tests::{require_kafka, require_registry, unique_topic, workspace_bin};
use tokio_util::sync::CancellationToken;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    for _ in 0..240 {
        if done() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("{what}: not within 60 s")
}

fn report_of(inbox: &Path, name: &str) -> String {
    std::fs::read_to_string(inbox.join("done").join(format!("{name}.report.txt")))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrected_export_becomes_version_two_in_both_sinks() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let gw = start_gateway(|_| {}).await?;
    let dir = tempfile::tempdir()?;
    let (data, inbox) = (dir.path().join("agent"), dir.path().join("inbox"));
    std::fs::create_dir_all(&inbox)?;
    std::fs::write(dir.path().join("ca.pem"), gw.pki.ca_pem())?;
    std::fs::write(dir.path().join("token"), gw.token("01001", 3600))?;
    let _agent = Agent(
        Command::new(workspace_bin("lienthong-facility-agent"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--inbox")
            .arg(&inbox)
            .args(["--poll-ms", "200", "--http-listen", "", "--grpc-listen", ""])
            .args([
                "--gateway",
                &format!("https://localhost:{}", gw.addr.port()),
            ])
            .arg("--ca")
            .arg(dir.path().join("ca.pem"))
            .arg("--token-file")
            .arg(dir.path().join("token"))
            .env_remove("LIENTHONG_METRICS_ADDR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    );

    // The sinks: the warehouse (through the de-identification service and the analytics
    // topics), and the store of region 01 (Hà Nội, the issuing facility's).
    let shutdown = CancellationToken::new();
    let receipt = unique_topic("corr.receipt");
    lienthong_tests::create_topic(&kafka, &receipt, 1).await?;
    let warehouse = start_warehouse_path(&registry, &gw.topics, &receipt).await?;
    let store_dir = tempfile::tempdir()?;
    let regional_config =
        lienthong_tests::regional::config(&["01"], store_dir.path(), &gw.topics, &receipt);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let regional = tokio::spawn(lienthong_regional_store::server::run(
        regional_config.clone(),
        kafka.clone(),
        registry.clone(),
        lienthong_core::PatientKeyer::new("test", &[7; 32])?,
        listener,
        shutdown.clone(),
    ));

    let original = envelope("01001", &[full_episode("LK1", "001185012345", false)]);
    std::fs::write(inbox.join("01001_a.xml"), &original)?;
    std::fs::set_permissions(
        inbox.join("01001_a.xml"),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )?;
    let db = connect(&warehouse.dsn).await?;
    let history = "SELECT count(*) FROM event_history";
    wait_for_count(&db, history, 4, Duration::from_secs(60)).await?;

    // The HIS corrects the main diagnosis and exports the episode again.
    let corrected = envelope(
        "01001",
        &[full_episode("LK1", "001185012345", false)
            .into_iter()
            .map(|(table, xml)| (table, xml.replace("J18.9", "I21.0")))
            .collect()],
    );
    std::fs::write(inbox.join("01001_b.xml"), &corrected)?;
    // Referral and appointment carry the diagnosis; the two lab reports do not.
    wait_for_count(&db, history, 6, Duration::from_secs(60)).await?;
    let report = report_of(&inbox, "01001_b.xml");
    let referral_id = document_id::referral("01001", "CTLK1");
    assert!(
        report.contains(&format!(
            "{referral_id}: changed since it was last taken in; sent as version 2 (UPDATED)"
        )),
        "{report}"
    );
    assert_eq!(
        report
            .matches("unchanged since version 1; nothing sent")
            .count(),
        2,
        "{report}"
    );

    let row = db
        .query_one(
            "SELECT document_version, main_icd10 FROM referrals WHERE document_id = $1",
            &[&document_key(&referral_id)],
        )
        .await?;
    assert_eq!(row.get::<_, i64>(0), 2);
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("I21.0"));
    let row = db
        .query_one(
            "SELECT document_version, main_icd10 FROM appointments WHERE document_id = $1",
            &[&document_key(&document_id::appointment("01001", "LK1/GH"))],
        )
        .await?;
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, Option<String>>(1)),
        (2, Some("I21.0".into()))
    );

    // The same corrected export once more: nothing is sent.
    let produced = || -> i64 {
        gw.topics
            .values()
            .map(|t| record_count(t).unwrap_or(-1))
            .sum()
    };
    assert_eq!(produced(), 6);
    std::fs::write(inbox.join("01001_c.xml"), &corrected)?;
    eventually("the third export is taken", || {
        report_of(&inbox, "01001_c.xml")
            .matches("nothing sent")
            .count()
            == 4
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(produced(), 6, "an unchanged export sends nothing");
    // The inbox, kept exports, reports and the outbox hold personal data: private to the
    // agent's user (folders 0700, files 0600), though the HIS wrote the exports readable by all.
    lienthong_tests::assert_private(&inbox)?;
    lienthong_tests::assert_private(&data)?;

    // The regional store holds version 2 once its consumer has caught up; read it after stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    shutdown.cancel();
    regional.await??;
    warehouse.stop().await?;
    let store = lienthong_regional_store::live::open_store(&regional_config, "01")?;
    let stored = store
        .get(&referral_id)?
        .expect("the referral is in region 01");
    let ClinicalEvent::Referral(r) = stored.event else {
        panic!("a referral")
    };
    assert_eq!(r.header.unwrap().document_version, 2);
    assert_eq!(r.slip.unwrap().diagnosis.unwrap().main_icd10, "I21.0");
    gw.stop().await
}
