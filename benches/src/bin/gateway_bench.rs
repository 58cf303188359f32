//! Gateway throughput against Kafka's own producer on the same broker, in the same run.
//!
//! Publishes realistic events through an in-process gateway (real TLS, mutual-TLS identity,
//! registry framing, idempotent acks=all producer) with batched unary calls and with
//! streaming, reports events/s, p50/p99 acknowledgement latency and RSS, then runs
//! `kafka-producer-perf-test` (org.apache.kafka.tools.ProducerPerformance) with the same record
//! size, acks=all and idempotence, and prints the ratio. Target: gateway >= 0.5 x raw producer.
//!
//!     deploy/local/up && cargo run --release -p lienthong-benches --bin gateway-bench

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use lienthong_benches::{percentiles, rss_mib};
use lienthong_proto::v1 as pb;
use lienthong_tests::gateway::{events_from, request, start_gateway};
use prost::Message;

#[derive(Debug, Parser)]
struct Args {
    /// Events per mode.
    #[arg(long, default_value_t = 60_000)]
    events: usize,
    /// Events per request.
    #[arg(long, default_value_t = 250)]
    batch: usize,
    /// Concurrent clients (unary) / streams.
    #[arg(long, default_value_t = 8)]
    clients: usize,
}

struct Figures {
    events_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn batches(args: &Args, seed: u64) -> Vec<pb::PublishRequest> {
    let per_batch = args.batch;
    (0..args.events.div_ceil(per_batch))
        .map(|b| request(events_from("79025", seed * 1_000_000 + b as u64, per_batch)))
        .collect()
}

async fn unary(
    gw: &lienthong_tests::gateway::TestGateway,
    args: &Args,
    reqs: Vec<pb::PublishRequest>,
) -> anyhow::Result<Figures> {
    let client = gw.client_with_cert("79025").await?;
    let queue = Arc::new(tokio::sync::Mutex::new(reqs));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let (mut client, queue) = (client.clone(), Arc::clone(&queue));
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut acked = 0usize;
            loop {
                let Some(req) = queue.lock().await.pop() else {
                    break;
                };
                let t = Instant::now();
                let resp = client.publish(req).await?.into_inner();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                acked += resp
                    .results
                    .iter()
                    .filter(|r| {
                        r.outcome == pb::Outcome::Accepted as i32
                            || r.outcome == pb::Outcome::Duplicate as i32
                    })
                    .count();
            }
            anyhow::Ok((lat, acked))
        });
    }
    figures(tasks, started).await
}

async fn streaming(
    gw: &lienthong_tests::gateway::TestGateway,
    args: &Args,
    reqs: Vec<pb::PublishRequest>,
) -> anyhow::Result<Figures> {
    let client = gw.client_with_cert("79025").await?;
    let per_stream = reqs.len().div_ceil(args.clients);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut reqs = reqs;
    for _ in 0..args.clients {
        let chunk: Vec<pb::PublishRequest> = reqs.drain(..per_stream.min(reqs.len())).collect();
        let mut client = client.clone();
        tasks.spawn(async move {
            // Send times by request index, to measure each request's acknowledgement latency.
            let sent_at = Arc::new(std::sync::Mutex::new(Vec::with_capacity(chunk.len())));
            let marks = Arc::clone(&sent_at);
            let outbound = futures::stream::iter(chunk).map(move |r| {
                marks.lock().map(|mut m| m.push(Instant::now())).ok();
                pb::PublishStreamRequest {
                    events: r.events,
                    request_id: r.request_id,
                }
            });
            let mut inbound = client.publish_stream(outbound).await?.into_inner();
            let (mut lat, mut acked, mut i) = (Vec::new(), 0usize, 0usize);
            while let Some(resp) = inbound.message().await? {
                if let Some(t) = sent_at.lock().ok().and_then(|m| m.get(i).copied()) {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                acked += resp
                    .results
                    .iter()
                    .filter(|r| {
                        r.outcome == pb::Outcome::Accepted as i32
                            || r.outcome == pb::Outcome::Duplicate as i32
                    })
                    .count();
                i += 1;
            }
            anyhow::Ok((lat, acked))
        });
    }
    figures(tasks, started).await
}

use futures::StreamExt;

// The allocator the services run with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Client = tokio::task::JoinSet<anyhow::Result<(Vec<f64>, usize)>>;

/// Gathers (latencies, acknowledged events) from every client task into the figures.
async fn figures(mut tasks: Client, started: Instant) -> anyhow::Result<Figures> {
    let (mut lat, mut acked) = (Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        let (l, a) = r??;
        lat.extend(l);
        acked += a;
    }
    let secs = started.elapsed().as_secs_f64();
    let p = percentiles(lat, &[50.0, 99.0]);
    Ok(Figures {
        events_per_sec: acked as f64 / secs,
        p50_ms: p[0],
        p99_ms: p[1],
    })
}

fn kafka_perf_test(topic: &str, records: usize, record_size: usize) -> anyhow::Result<f64> {
    let root = lienthong_tests::repo_root();
    let libs = std::env::var("LIENTHONG_STATE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join(".state"))
        .join("kafka/libs/*");
    let bootstrap = lienthong_tests::kafka().bootstrap;
    let out = Command::new("java")
        .args(["-Xmx512m", "-cp"])
        .arg(libs)
        .args([
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            &records.to_string(),
        ])
        // The same secured listener and principal as the gateway (.state/env names the file).
        .args(
            std::env::var("LIENTHONG_KAFKA_JAVA_CLIENT_CONFIG")
                .map(|f| vec!["--producer.config".to_owned(), f])
                .unwrap_or_default(),
        )
        .args([
            "--record-size",
            &record_size.to_string(),
            "--throughput",
            "-1",
            "--producer-props",
        ])
        .arg(format!("bootstrap.servers={bootstrap}"))
        .args([
            "acks=all",
            "enable.idempotence=true",
            "linger.ms=5",
            "compression.type=lz4",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "kafka-producer-perf-test failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Last line: "N records sent, X records/sec (Y MB/sec), ..."
    let line = text
        .lines()
        .rfind(|l| l.contains("records/sec"))
        .unwrap_or_default();
    let rate = line
        .split(',')
        .nth(1)
        .and_then(|p| p.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    rate.ok_or_else(|| anyhow::anyhow!("cannot read the perf-test result from: {text}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let gw = start_gateway(|c| {
        c.facility_rate = 0.0;
        c.max_batch_events = c.max_batch_events.max(args.batch);
    })
    .await?;
    let warm = batches(
        &Args {
            events: 2_000,
            batch: args.batch,
            clients: args.clients,
        },
        1,
    );
    unary(&gw, &args, warm).await?;
    let unary_reqs = batches(&args, 2);
    let record_size = {
        let total: usize = unary_reqs
            .iter()
            .map(|r| r.events.iter().map(Message::encoded_len).sum::<usize>())
            .sum();
        total
            / unary_reqs
                .iter()
                .map(|r| r.events.len())
                .sum::<usize>()
                .max(1)
    };
    let u = unary(&gw, &args, unary_reqs).await?;
    let rss_unary = rss_mib();
    let s = streaming(&gw, &args, batches(&args, 3)).await?;
    let rss_stream = rss_mib();
    let raw_topic = lienthong_tests::unique_topic("perf");
    lienthong_tests::create_topic(&lienthong_tests::kafka(), &raw_topic, 9).await?;
    let raw =
        tokio::task::spawn_blocking(move || kafka_perf_test(&raw_topic, 200_000, record_size))
            .await??;
    gw.stop().await?;

    println!(
        "gateway benchmark ({} events per mode, batch {}, {} clients, record ~{record_size} B, 9 partitions, acks=all)",
        args.events, args.batch, args.clients
    );
    println!(
        "| mode | events/s | p50 ack ms | p99 ack ms | process RSS MiB | ratio to raw producer |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| gateway unary (batched) | {:.0} | {:.1} | {:.1} | {rss_unary:.0} | {:.2} |",
        u.events_per_sec,
        u.p50_ms,
        u.p99_ms,
        u.events_per_sec / raw
    );
    println!(
        "| gateway streaming | {:.0} | {:.1} | {:.1} | {rss_stream:.0} | {:.2} |",
        s.events_per_sec,
        s.p50_ms,
        s.p99_ms,
        s.events_per_sec / raw
    );
    println!("| kafka-producer-perf-test | {raw:.0} | | | | 1.00 |");
    println!(
        "target: gateway >= 0.5 x raw producer: {}",
        if u.events_per_sec.max(s.events_per_sec) >= 0.5 * raw {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
