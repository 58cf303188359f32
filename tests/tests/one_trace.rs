//! One trace across the whole path, read back from the local trace collector (Jaeger, started
//! by deploy/local/stack): an export file taken in by the facility agent, published by the
//! gateway, stored by the regional store and, through the de-identification service, by the
//! warehouse loader. The agent, the regional store, the de-identification service and the
//! loader run as their own binaries, each exporting its spans as its service over mutual TLS;
//! the gateway runs in this test process, which exports as `lienthong-gateway`.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lienthong_facility_agent::xml::fixtures::{envelope, full_episode};
use lienthong_telemetry::trace::TraceArgs;
use lienthong_telemetry::{LogFormat, TelemetryArgs};
use lienthong_tests::deidentifier::{
    age_bands_topic_with_schema, analytics_key_file, analytics_topics_with_schemas,
};
use lienthong_tests::gateway::{TestPki, start_gateway};
use lienthong_tests::warehouse::fresh_database;
use lienthong_tests::{create_topic, require_kafka, require_registry, unique_topic, workspace_bin};
use serde_json::Value;

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(binary: &str, args: &[String]) -> anyhow::Result<Running> {
    let child = Command::new(workspace_bin(binary))
        .args(args)
        .args(["--log", "warn"])
        // Every trace this test starts is recorded.
        .env("LIENTHONG_TRACE_SAMPLE_RATIO", "1")
        .stdout(Stdio::null())
        .spawn()?;
    Ok(Running(child))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with deploy/local/test (or `source .state/env`)")
    })
}

/// The local Jaeger's query API.
struct Jaeger {
    url: String,
    http: reqwest::Client,
}

impl Jaeger {
    async fn connect() -> anyhow::Result<Self> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(env("LIENTHONG_OTLP_CA"))?)?;
        let jaeger = Jaeger {
            url: env("LIENTHONG_JAEGER_URL"),
            http: reqwest::Client::builder()
                .add_root_certificate(ca)
                .build()?,
        };
        jaeger.get("/api/services").await.map_err(|e| {
            anyhow::anyhow!(
                "the trace collector does not answer at {}: {e}; start the stack with deploy/local/test",
                jaeger.url
            )
        })?;
        Ok(jaeger)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.http.get(format!("{}{path}", self.url)).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    /// Recent traces that have a span of `service`.
    async fn traces_of(&self, service: &str) -> anyhow::Result<Vec<Value>> {
        let found = self
            .get(&format!(
                "/api/traces?service={service}&lookback=1h&limit=200"
            ))
            .await?;
        Ok(found["data"].as_array().cloned().unwrap_or_default())
    }
}

/// A span of a trace as Jaeger returns it: its service, operation and tags.
#[derive(Debug)]
struct SpanSeen {
    service: String,
    operation: String,
    tags: BTreeMap<String, String>,
}

fn spans_of(trace: &Value) -> Vec<SpanSeen> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .map(|s| SpanSeen {
                    service: processes[s["processID"].as_str().unwrap_or_default()]["serviceName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    operation: s["operationName"].as_str().unwrap_or_default().to_owned(),
                    tags: s["tags"]
                        .as_array()
                        .map(|tags| {
                            tags.iter()
                                .map(|t| {
                                    let value = match &t["value"] {
                                        Value::String(s) => s.clone(),
                                        other => other.to_string(),
                                    };
                                    (t["key"].as_str().unwrap_or_default().to_owned(), value)
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_links_the_agents_intake_the_gateways_publish_and_both_sinks()
-> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let jaeger = Jaeger::connect().await?;
    let _telemetry = lienthong_telemetry::init(
        &TelemetryArgs {
            log_filter: "warn".into(),
            log_format: LogFormat::Pretty,
            metrics_addr: None,
            trace: TraceArgs {
                otlp_endpoint: Some(env("LIENTHONG_OTLP_ENDPOINT")),
                otlp_ca: Some(env("LIENTHONG_OTLP_CA").into()),
                otlp_cert: Some(env("LIENTHONG_OTLP_CERT").into()),
                otlp_key: Some(env("LIENTHONG_OTLP_KEY").into()),
                trace_sample_ratio: 1.0,
            },
        },
        "lienthong-gateway",
    )?;
    let gw = start_gateway(|_| {}).await?;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).display().to_string();

    // The regional store of the agent's province, reading the gateway's topics.
    let (receipt, audit, dlq) = (
        unique_topic("trace.receipt"),
        unique_topic("trace.audit"),
        unique_topic("trace.dlq"),
    );
    for t in [&receipt, &audit, &dlq] {
        create_topic(&kafka, t, 1).await?;
    }
    let pki = TestPki::new()?;
    let (cert, key) = pki.leaf("localhost", false)?;
    std::fs::write(path("s.pem"), cert)?;
    std::fs::write(path("s.key"), key)?;
    let keys = lienthong_tests::tokens::issuer().write_key_set(dir.path());
    let mut store_args: Vec<String> = [
        "--regions",
        "01",
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--audit-topic",
        &audit,
        "--dlq-topic",
        &dlq,
        "--data-dir",
        &path("store"),
        "--tls-cert",
        &path("s.pem"),
        "--tls-key",
        &path("s.key"),
        "--token-keys",
        &keys.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    store_args.extend(lienthong_tests::regional::topic_flags(&gw.topics, &receipt));
    let _store = spawn("lienthong-regional-store", &store_args)?;

    // De-identification into analytics topics of its own, and the loader of those.
    let analytics = analytics_topics_with_schemas(&registry).await?;
    let age_bands = age_bands_topic_with_schema(&registry).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut deid_args: Vec<String> = [
        "--analytics-key-file",
        &analytics_key_file(),
        "--group",
        &format!("trace-deid-{run}"),
        "--transactional-id",
        &format!("trace-deid-{run}-0"),
        "--dlq-topic",
        &dlq,
        "--receipt-topic",
        &receipt,
        "--analytics-topic-referral",
        &analytics.analytics_topic_referral,
        "--analytics-topic-appointment",
        &analytics.analytics_topic_appointment,
        "--analytics-topic-lab-result",
        &analytics.analytics_topic_lab_result,
        "--analytics-topic-receipt",
        &analytics.analytics_topic_receipt,
        "--batch-ms",
        "100",
        "--age-bands-topic",
        &age_bands,
    ]
    .map(String::from)
    .to_vec();
    for (flag, kind) in [
        ("--topic-referral", lienthong_core::DocumentKind::Referral),
        (
            "--topic-appointment",
            lienthong_core::DocumentKind::Appointment,
        ),
        (
            "--topic-lab-result",
            lienthong_core::DocumentKind::LabResult,
        ),
    ] {
        deid_args.push(flag.into());
        deid_args.push(gw.topics[&kind].clone());
    }
    let _deidentifier = spawn("lienthong-deidentifier", &deid_args)?;
    let analytics_topics: BTreeSet<String> = lienthong_deidentifier::AnalyticsKind::ALL
        .iter()
        .map(|k| analytics.of(*k).to_owned())
        .collect();
    let mut loader_topics: Vec<String> = analytics_topics.iter().cloned().collect();
    loader_topics.push(audit.clone());
    let dsn = fresh_database().await?;
    let loader_args: Vec<String> = [
        "--pg-dsn",
        &dsn,
        "--group",
        &format!("trace-wh-{run}"),
        "--topics",
        &loader_topics.join(","),
        "--audit-topic",
        &audit,
        "--dlq-topic",
        &dlq,
        "--batch-ms",
        "100",
    ]
    .map(String::from)
    .to_vec();
    let _loader = spawn("lienthong-warehouse-loader", &loader_args)?;

    // The facility agent, taking in one HIS export from its inbox.
    let agent_args = gw.inbox_agent_args("01001", dir.path())?;
    let inbox = dir.path().join("inbox");
    let _agent = spawn("lienthong-facility-agent", &agent_args)?;
    let export = envelope("01001", &[full_episode("LKTRACE01", "001185000001", true)]);
    std::fs::write(inbox.join(".export.tmp"), export)?;
    std::fs::rename(inbox.join(".export.tmp"), inbox.join("01001_trace.xml"))?;

    // The agent's traces, until one holds every stage: its intake and delivery, the gateway's
    // publication, the regional store's apply of a document record, the de-identification,
    // and the warehouse's apply of the analytics record made from it.
    let document_topics: BTreeSet<String> = gw.topics.values().cloned().collect();
    let complete = |spans: &[SpanSeen]| {
        let has = |service: &str, operation: &str, topics: Option<&BTreeSet<String>>| {
            spans.iter().any(|s| {
                s.service == service
                    && s.operation == operation
                    && topics.is_none_or(|t| s.tags.get("topic").is_some_and(|v| t.contains(v)))
            })
        };
        has("lienthong-facility-agent", "intake", None)
            && has("lienthong-facility-agent", "send", None)
            && has("lienthong-gateway", "publish", None)
            && has("lienthong-regional-store", "apply", Some(&document_topics))
            && has(
                "lienthong-deidentifier",
                "deidentify",
                Some(&document_topics),
            )
            && has(
                "lienthong-warehouse-loader",
                "apply",
                Some(&analytics_topics),
            )
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last_seen = Vec::new();
    loop {
        let traces = jaeger.traces_of("lienthong-facility-agent").await?;
        let ours: Vec<Vec<SpanSeen>> = traces
            .iter()
            .map(spans_of)
            .filter(|spans| {
                spans.iter().any(|s| {
                    s.tags.get("topic").is_some_and(|t| {
                        document_topics.contains(t) || analytics_topics.contains(t)
                    })
                })
            })
            .collect();
        if let Some(spans) = ours.iter().find(|spans| complete(spans)) {
            // Each stage once per event at most: 4 events of one export in one trace.
            let applies = |service: &str| {
                spans
                    .iter()
                    .filter(|s| s.service == service && s.operation == "apply")
                    .count()
            };
            assert_eq!(applies("lienthong-regional-store"), 4, "{spans:#?}");
            assert_eq!(applies("lienthong-warehouse-loader"), 4, "{spans:#?}");
            // Spans name stages and events, never a patient.
            for s in spans {
                for value in s.tags.values() {
                    assert!(
                        !value.contains("001185000001") && !value.contains("LKTRACE01"),
                        "a span carries personal or episode data: {s:?}"
                    );
                }
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            panic!(
                "no trace holds the agent's intake, the gateway's publish and both sinks' apply \
                 after 180 s; the traces of this test's topics: {last_seen:#?}"
            );
        }
        last_seen = ours
            .iter()
            .map(|spans| {
                spans
                    .iter()
                    .map(|s| format!("{} {}", s.service, s.operation))
                    .collect::<BTreeSet<_>>()
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
