//! The facility agent's local HTTP intake with a real gateway behind it: an XML export and
//! JSON Lines events are queued and delivered; a request with a bad line changes nothing and
//! names the line; an event the gateway refuses is set aside without holding back the rest;
//! the gateway's own Publish API, served by the agent, queues valid events and refuses invalid
//! ones with their reasons.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use lienthong_core::ClinicalEvent;
use lienthong_facility_agent::AgentConfig;
use lienthong_facility_agent::xml::fixtures::{envelope, full_episode};
use lienthong_grpc::GatewayConnection;
use lienthong_proto::v1::Outcome;
use lienthong_tests::gateway::{
    TestGateway, envelope as wrap, events_from, record_count, start_gateway,
};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

/// A facility agent of 01001 (by token) with its HTTP intake up, delivering to `gw`.
struct Agent {
    base: String,
    port: u16,
    grpc_port: u16,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Agent {
    async fn start(gw: &TestGateway) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, gw.pki.ca_pem())?;
        let token = dir.path().join("token");
        std::fs::write(&token, gw.token("01001", 600))?;
        let free_port = || -> anyhow::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let (port, grpc_port) = (free_port()?, free_port()?);
        let config = AgentConfig {
            data_dir: dir.path().join("agent"),
            inbox: dir.path().join("inbox"),
            poll_ms: 200,
            batch: 100,
            max_request_bytes: 3 * 1024 * 1024,
            max_pending: 1000,
            http_listen: format!("127.0.0.1:{port}"),
            grpc_listen: format!("127.0.0.1:{grpc_port}"),
            intake_beyond_loopback: false,
            intake_host_names: Vec::new(),
            conversions: 2,
            intake_wait_secs: 30,
            gateway: GatewayConnection {
                url: format!("https://localhost:{}", gw.addr.port()),
                ca: Some(ca),
                cert: None,
                key: None,
                token_file: Some(token),
            },
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(lienthong_facility_agent::run(config, shutdown.clone()));
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/v1/status")).send().await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "the HTTP intake did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            base,
            port,
            grpc_port,
            http,
            shutdown,
            task,
            _dir: dir,
        })
    }

    async fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .http
            .get(format!("{}/v1/status", self.base))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }
}

fn json_line(e: ClinicalEvent) -> anyhow::Result<String> {
    lienthong_proto::json::to_json("lienthong.v1.EventEnvelope", &wrap(e).encode_to_vec())
        .map(|v| v.to_string())
        .map_err(anyhow::Error::msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_and_json_pushed_over_http_reach_kafka() -> anyhow::Result<()> {
    // No clock-skew allowance at this gateway (the agent allows 10 minutes): an event dated a
    // few minutes ahead passes the agent and is REJECTED by the gateway.
    let gw = start_gateway(|c| c.future_skew_secs = 0).await?;
    let agent = Agent::start(&gw).await?;
    let (http, base) = (&agent.http, &agent.base);
    let (port, grpc_port) = (agent.port, agent.grpc_port);

    let export = envelope("01001", &[full_episode("LKH1", "001185012345", true)]);
    // A web page in a browser on this host posting the export: refused, nothing queued (the
    // export is then taken as new below).
    let r = http
        .post(format!("{base}/v1/xml"))
        .header("origin", "https://forged.example")
        .header("sec-fetch-site", "cross-site")
        .body(export.clone())
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await?;
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("not from web pages"),
        "{body}"
    );
    // A page served under a name that resolves to this host (DNS rebinding) reading the status.
    let r = http
        .get(format!("{base}/v1/status"))
        .header("host", format!("rebound.example:{port}"))
        .send()
        .await?;
    assert_eq!(r.status(), 421);
    let r = http
        .post(format!("{base}/v1/xml"))
        .header("x-file-name", "push.xml")
        .body(export)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(
        (body["episodes"].as_u64(), body["events"].as_u64()),
        (Some(1), Some(4)),
        "{body}"
    );

    let good: Vec<String> = events_from("01001", 91, 2)
        .into_iter()
        .map(json_line)
        .collect::<Result<_, _>>()?;
    let bad = format!("{}\n{{\"referral\": {{\"header\": 5}}}}\n", good.join("\n"));
    let r = http
        .post(format!("{base}/v1/events"))
        .body(bad)
        .send()
        .await?;
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await?;
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap_or("")
            .starts_with("line 3:"),
        "{body}"
    );

    let r = http
        .post(format!("{base}/v1/events"))
        .body(good.join("\n"))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await?["queued"].as_u64(),
        Some(2)
    );
    // An event of a facility this agent's token does not speak for (a HIS set up for a second
    // site): the gateway refuses that event alone, the agent sets it aside with the reason,
    // and everything queued after it is still delivered.
    let foreign = json_line(events_from("79025", 93, 1).remove(0))?;
    let r = http
        .post(format!("{base}/v1/events"))
        .body(foreign)
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    // The gateway's own API, served by the agent: two events queued, one refused with reasons.
    let mut grpc = lienthong_proto::v1::ingest_service_client::IngestServiceClient::connect(
        format!("http://127.0.0.1:{grpc_port}"),
    )
    .await?;
    let mut events = events_from("01001", 92, 3);
    match &mut events[2] {
        ClinicalEvent::Referral(e) => e.slip.as_mut().and_then(|s| s.patient.as_mut()),
        ClinicalEvent::Appointment(e) => e.appointment.as_mut().and_then(|a| a.patient.as_mut()),
        ClinicalEvent::LabResult(e) => e.report.as_mut().and_then(|r| r.patient.as_mut()),
    }
    .expect("a patient")
    .citizen_id = "12345".into();
    let answer = grpc
        .publish(lienthong_tests::gateway::request(events))
        .await?
        .into_inner();
    let outcomes: Vec<i32> = answer.results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Accepted as i32,
            Outcome::Accepted as i32,
            Outcome::Rejected as i32
        ]
    );
    assert!(
        answer.results[2]
            .errors
            .iter()
            .any(|e| e.code == "citizen_id.length"),
        "the reasons come back: {:?}",
        answer.results[2]
    );

    // An export whose referral is dated five minutes ahead (a HIS clock running fast).
    let ahead = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+7))
        + time::Duration::minutes(5);
    let ahead = format!(
        "{:04}{:02}{:02}{:02}{:02}",
        ahead.year(),
        u8::from(ahead.month()),
        ahead.day(),
        ahead.hour(),
        ahead.minute()
    );
    let mut episode = full_episode("LKF", "001185012388", false);
    episode[3].1 = episode[3].1.replace(
        "<NGAY_RA>202611041000</NGAY_RA>",
        &format!("<NGAY_RA>{ahead}</NGAY_RA>"),
    );
    let r = http
        .post(format!("{base}/v1/xml"))
        .body(envelope("01001", &[episode]))
        .send()
        .await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let total: i64 = gw
            .topics
            .values()
            .map(|t| record_count(t).unwrap_or(0))
            .sum();
        let status: serde_json::Value = http
            .get(format!("{base}/v1/status"))
            .send()
            .await?
            .json()
            .await?;
        if total == 11
            && status["rejected"].as_u64() == Some(2)
            && status["pending"].as_u64() == Some(0)
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "delivered {total} of 11; status {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The refused referral waits in the agent's dead-letter store with the gateway's reason.
    let status: serde_json::Value = http
        .get(format!("{base}/v1/status"))
        .send()
        .await?
        .json()
        .await?;
    let reason = status["recent_rejected"][0]["reason"]
        .as_str()
        .unwrap_or("");
    assert!(reason.contains("future"), "{status}");
    assert!(
        status["recent_rejected"][0]["event_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{status}"
    );
    let foreign = status["recent_rejected"][1]["reason"]
        .as_str()
        .unwrap_or("");
    assert!(
        foreign.starts_with("header.source_facility_forbidden at header.source_facility_code")
            && foreign.contains("79025"),
        "{status}"
    );
    // The rejection is named where staff look first: the document, its episode, the reason.
    let rejected = &status["recent_rejected"][0];
    assert!(
        rejected["document_id"]
            .as_str()
            .is_some_and(|d| d.starts_with("referral/"))
            && rejected["episode"].as_str().is_some_and(|e| !e.is_empty()),
        "{status}"
    );
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("REJECTED referral/") && e.contains("future")),
        "the status does not say `none` while events are refused: {status}"
    );
    agent.stop().await?;
    gw.stop().await
}

/// Events are sent in requests the gateway takes: six events of about 800 kB (each under the
/// topic's 1 MB limit, together over the gateway's 4 MiB request limit) all arrive, and an
/// event larger than any request is set aside as too large without holding back the event
/// queued after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_stay_within_the_gateways_size_and_an_oversized_event_is_set_aside()
-> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let agent = Agent::start(&gw).await?;
    let with_text = |seed: u64, bytes: usize| -> anyhow::Result<String> {
        let mut g = lienthong_core::fixtures::Generator::new(seed, time::OffsetDateTime::now_utc());
        let mut referral = g.referral();
        referral
            .slip
            .get_or_insert_with(Default::default)
            .course_of_illness = "Bệnh nhân sốt cao. ".repeat(bytes / 22);
        json_line(lienthong_core::fixtures::reassign(
            ClinicalEvent::Referral(referral),
            "01001",
        ))
    };
    let mut lines: Vec<String> = (0..6)
        .map(|i| with_text(500 + i, 800_000))
        .collect::<anyhow::Result<_>>()?;
    lines.push(with_text(510, 3_500_000)?);
    lines.push(with_text(511, 1_000)?);
    let r = agent
        .http
        .post(format!("{}/v1/events", agent.base))
        .body(lines.join("\n"))
        .send()
        .await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);
    let topic = gw.topics[&lienthong_core::DocumentKind::Referral].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = agent.status().await?;
        if record_count(&topic)? == 7 && status["pending"].as_u64() == Some(0) {
            break status;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "delivered {} of 7; status {status}",
            record_count(&topic)?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["rejected"].as_u64(), Some(1), "{status}");
    let reason = status["recent_rejected"][0]["reason"]
        .as_str()
        .unwrap_or("");
    assert!(
        reason.starts_with("event.too_large at event:") && reason.contains("--max-request-bytes"),
        "{status}"
    );
    agent.stop().await?;
    gw.stop().await
}
