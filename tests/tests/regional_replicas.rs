//! Two replicas of one region, each a full copy: a query load that fails over between their
//! addresses goes on while one replica is killed with SIGKILL and restarted; no query fails
//! after one retry, no answer is partial, and afterwards both stores hold the same region
//! (one digest over every document and list entry). Then Kafka stops: both replicas leave the
//! rotation within their cut-off and answer nothing they cannot audit; once Kafka is back they
//! serve again and apply what is published next.
//!
//! Stops and restarts the local Kafka: this binary holds this one test and runs alone (cargo
//! runs test binaries one at a time).

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lienthong_core::{ClinicalEvent, ProvinceCode};
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::regional_query_service_client::RegionalQueryServiceClient;
use lienthong_regional_store::store::RegionStore;
use lienthong_tests::gateway::TestPki;
use lienthong_tests::warehouse::{publish_to, topics_with_schemas};
use lienthong_tests::{keyed_events, require_kafka, require_registry, unique_topic};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const REGION: &str = "48";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One replica's process and where it answers.
struct Replica {
    args: Vec<String>,
    data: PathBuf,
    grpc: u16,
    metrics: u16,
    child: Option<tokio::process::Child>,
}

impl Replica {
    fn start(&mut self) -> anyhow::Result<()> {
        let child = lienthong_tests::regional::spawn_store(&self.args)?;
        self.child = Some(child);
        Ok(())
    }

    async fn http(&self, path: &str) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        Some(body)
    }

    async fn ready(&self) -> bool {
        self.http("/readyz")
            .await
            .is_some_and(|b| b.starts_with("HTTP/1.0 200"))
    }

    /// Messages of the region not yet in this replica's store, as its metrics say.
    async fn behind(&self) -> Option<i64> {
        self.metric("lienthong_regional_behind_messages{")
            .await
            .map(|v| v as i64)
    }

    /// The value of the first exported sample whose line starts with `prefix`.
    async fn metric(&self, prefix: &str) -> Option<f64> {
        let body = self.http("/metrics").await?;
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    }

    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + within;
        while !self.ready().await {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                anyhow::bail!("replica on port {} exited: {status}", self.grpc);
            }
            anyhow::ensure!(
                Instant::now() < until,
                "replica on port {} not ready within {within:?}: {:?}",
                self.grpc,
                self.http("/readyz").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().await?; // SIGKILL
        }
        Ok(())
    }

    async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status()?;
            }
            let status = tokio::time::timeout(Duration::from_secs(60), c.wait()).await??;
            anyhow::ensure!(status.success(), "replica stopped with {status}");
        }
        Ok(())
    }
}

async fn client(pki: &TestPki, port: u16) -> anyhow::Result<RegionalQueryServiceClient<Channel>> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.ca_pem()))
        .domain_name("localhost");
    let ch = Channel::from_shared(format!("https://localhost:{port}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(RegionalQueryServiceClient::new(ch))
}

/// The worklist of `facility`, all pages, as one replica answers it.
async fn worklist(pki: &TestPki, port: u16, facility: &str) -> anyhow::Result<Vec<String>> {
    let mut c = client(pki, port).await?;
    let token = lienthong_tests::tokens::issuer().token(
        facility,
        lienthong_grpc::REGIONAL_AUDIENCE,
        &[lienthong_grpc::Scope::Read],
        600,
    );
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let mut r = tonic::Request::new(pb::ListIncomingReferralsRequest {
            facility_code: facility.into(),
            purpose: pb::PurposeOfUse::ContinuityOfCare as i32,
            page: Some(pb::PageRequest {
                page_size: 100,
                page_token: page_token.clone(),
            }),
            ..Default::default()
        });
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let page = c.list_incoming_referrals(r).await?.into_inner();
        ids.extend(page.referrals.iter().filter_map(|v| {
            v.referral
                .as_ref()
                .and_then(|e| e.header.as_ref())
                .map(|h| format!("{}@{}", h.document_id, h.document_version))
        }));
        if page.next_page_token.is_empty() {
            return Ok(ids);
        }
        page_token = page.next_page_token;
    }
}

/// The receiving facility with the most referrals of the region.
fn busiest_receiver(events: &[ClinicalEvent], region: &ProvinceCode) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e.regions().contains(region)) {
        if let ClinicalEvent::Referral(r) = e
            && let Some(to) = r.slip.as_ref().and_then(|s| s.receiving.as_ref())
        {
            *counts.entry(to.code.clone()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(f, _)| f)
        .expect("a referral of the region")
}

fn digest_of(data: &Path) -> anyhow::Result<(String, usize)> {
    let store = RegionStore::open(&data.join(format!("region-{REGION}")))?;
    Ok((store.digest()?, store.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_answer_alike_through_a_kill_and_a_restart() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let topics = topics_with_schemas(&registry).await?;
    let (receipt, audit, dlq) = (
        unique_topic("rep.receipt"),
        unique_topic("rep.audit"),
        unique_topic("rep.dlq"),
    );
    for t in [&receipt, &audit, &dlq] {
        lienthong_tests::create_topic(&kafka, t, 1).await?;
    }
    let mut events = keyed_events(4848, 20_000);
    let region = ProvinceCode::current(REGION).expect("region");
    let facility = busiest_receiver(&events, &region);
    publish_to(&registry, &topics, &events).await?;

    let pki = TestPki::new()?;
    let dir = tempfile::tempdir()?;
    let (cert, key) = pki.leaf("localhost", false)?;
    std::fs::write(dir.path().join("s.pem"), cert)?;
    std::fs::write(dir.path().join("s.key"), key)?;
    let keys = lienthong_tests::tokens::issuer().write_key_set(dir.path());
    let mut replicas: Vec<Replica> = (0..2)
        .map(|i| {
            let data = dir.path().join(format!("replica-{i}"));
            let (grpc, metrics) = (free_port(), free_port());
            let mut args: Vec<String> = [
                "--regions",
                REGION,
                "--replica",
                &i.to_string(),
                "--listen",
                &format!("127.0.0.1:{grpc}"),
                "--metrics-addr",
                &format!("127.0.0.1:{metrics}"),
                "--audit-topic",
                &audit,
                "--dlq-topic",
                &dlq,
                "--kafka-bootstrap",
                &kafka.bootstrap,
                "--registry-url",
                &registry.registry_url,
                "--cutoff-secs",
                "3",
                "--log",
                "warn",
            ]
            .map(String::from)
            .to_vec();
            args.extend(lienthong_tests::regional::topic_flags(&topics, &receipt));
            for (flag, path) in [
                ("--data-dir", data.clone()),
                ("--tls-cert", dir.path().join("s.pem")),
                ("--tls-key", dir.path().join("s.key")),
                ("--token-keys", keys.clone()),
            ] {
                args.push(flag.into());
                args.push(path.display().to_string());
            }
            Replica {
                args,
                data,
                grpc,
                metrics,
                child: None,
            }
        })
        .collect();
    for r in &mut replicas {
        r.start()?;
    }
    for r in &mut replicas {
        r.wait_ready(Duration::from_secs(180)).await?;
    }
    let expected = worklist(&pki, replicas[0].grpc, &facility).await?;
    anyhow::ensure!(!expected.is_empty(), "facility {facility} has no worklist");
    assert_eq!(
        worklist(&pki, replicas[1].grpc, &facility).await?,
        expected,
        "caught-up replicas answer alike"
    );

    // The load: each query goes to the next replica in turn and, if that fails, once to the
    // other. Replica 0 is killed after 3 s and restarted 3 s later.
    let ports = [replicas[0].grpc, replicas[1].grpc];
    let started = Instant::now();
    let (mut answered, mut first_try_failed) = (0usize, 0usize);
    let mut killed_at = None;
    let mut restarted = false;
    let mut back_ready_at = None;
    for i in 0usize.. {
        let elapsed = started.elapsed();
        if killed_at.is_none() && elapsed > Duration::from_secs(3) {
            replicas[0].kill().await?;
            killed_at = Some(Instant::now());
        }
        if !restarted && elapsed > Duration::from_secs(6) {
            replicas[0].start()?;
            restarted = true;
        }
        if restarted && back_ready_at.is_none() && replicas[0].ready().await {
            back_ready_at = Some(Instant::now());
        }
        // Go on until the restarted replica has answered alongside the other for 3 s.
        if back_ready_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            break;
        }
        anyhow::ensure!(
            elapsed < Duration::from_secs(240),
            "the restarted replica was not ready within 240 s"
        );
        let first = ports[i % 2];
        let answer = match worklist(&pki, first, &facility).await {
            Ok(a) => a,
            Err(_) => {
                first_try_failed += 1;
                let other = ports[(i + 1) % 2];
                worklist(&pki, other, &facility)
                    .await
                    .map_err(|e| anyhow::anyhow!("query {i} failed on both replicas: {e:#}"))?
            }
        };
        assert_eq!(answer, expected, "query {i}: a partial or different answer");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{answered} queries answered, {first_try_failed} after one retry; replica back in {:?}",
        back_ready_at.zip(killed_at).map(|(b, k)| b - k)
    );
    assert!(first_try_failed > 0, "the kill was never seen by the load");

    // Kafka stops. Each replica leaves the rotation once Kafka has not answered it for the
    // cut-off (3 s; its lag measurement waits up to the Kafka timeout of 10 s for an answer),
    // and a query is not answered, since its access cannot be audited.
    let stopped =
        tokio::task::spawn_blocking(|| lienthong_tests::StackComponentStopped::stop("kafka"))
            .await??;
    let until = Instant::now() + Duration::from_secs(60);
    for r in &replicas {
        loop {
            let readyz = r.http("/readyz").await.unwrap_or_default();
            if readyz.starts_with("HTTP/1.0 503") && readyz.contains("Kafka unreachable") {
                break;
            }
            anyhow::ensure!(
                Instant::now() < until,
                "replica on port {} still ready 60 s after Kafka stopped: {readyz}",
                r.grpc
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Refused at once, saying why (not after the producer's timeout), so the caller turns to
    // another replica.
    let unaudited = worklist(&pki, replicas[1].grpc, &facility)
        .await
        .expect_err("an answer left while its access could not be audited");
    let status = unaudited
        .downcast_ref::<tonic::Status>()
        .expect("refused by the replica");
    assert!(
        status.code() == tonic::Code::Unavailable
            && status.message().contains("could not be audited")
            && status.message().contains("has not answered this replica"),
        "{status:?}"
    );
    assert!(
        replicas[1]
            .metric("lienthong_regional_audit_failures_total{reason=\"kafka_unreachable\"}")
            .await
            .is_some_and(|n| n >= 1.0),
        "the withheld answer is counted"
    );
    drop(stopped); // Kafka starts again and is ready

    for r in &mut replicas {
        r.wait_ready(Duration::from_secs(120)).await?;
    }
    let later = keyed_events(4849, 2_000);
    publish_to(&registry, &topics, &later).await?;
    events.extend(later);
    let until = Instant::now() + Duration::from_secs(120);
    for r in &replicas {
        // The gauge follows each second's measurement: 0 once everything published is applied.
        while r.behind().await != Some(0) {
            anyhow::ensure!(
                Instant::now() < until,
                "replica on port {} did not apply what was published after the outage",
                r.grpc
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    for r in &mut replicas {
        r.stop().await?;
    }
    let (a, b) = (digest_of(&replicas[0].data)?, digest_of(&replicas[1].data)?);
    assert_eq!(a, b, "both replicas hold the same region");
    let latest = lienthong_tests::regional::latest_versions(&events, REGION);
    assert_eq!(a.1, latest.len(), "each replica holds the whole region");
    Ok(())
}
