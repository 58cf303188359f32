//! De-identification service: events/s from pre-filled document topics to committed analytics
//! events, with Kafka transactions (target >= 30,000 events/s), against the de-identification
//! alone in memory (decode, transform, encode: the ceiling without Kafka).
//!
//! Needs the local stack (`deploy/local/up`, then `source .state/env`):
//!
//!     cargo run --release -p lienthong-benches --bin deidentifier-bench -- --events 200000
//!
//! Each run uses fresh topics and a fresh consumer group.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use lienthong_core::{ClinicalEvent, PatientKeyer};
use lienthong_deidentifier::{Deidentifier, DeidentifierConfig, Policy};
use lienthong_kafka::topics::DocumentTopics;
use lienthong_tests::deidentifier::{
    age_bands_topic_with_schema, analytics_topics_with_schemas, committed, ended_by_itself,
};
use lienthong_tests::warehouse::{publish_to, topics_with_schemas};
use lienthong_tests::{create_topic, keyed_events, require_kafka, require_registry, unique_topic};
use tokio_util::sync::CancellationToken;

// The allocator the services run with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Events to pre-fill and de-identify.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Messages per transaction (the service's default).
    #[arg(long, default_value_t = 5_000)]
    batch_events: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kafka = require_kafka();
    let registry = require_registry().await;
    let key_file = std::env::var("LIENTHONG_ANALYTICS_KEY_FILE").map_err(|_| {
        anyhow::anyhow!("LIENTHONG_ANALYTICS_KEY_FILE is not set: source .state/env")
    })?;
    let events = keyed_events(9191, args.events);

    // The ceiling: the same events de-identified in memory, one core.
    let deidentifier = Deidentifier::new(
        Policy::shipped()?,
        PatientKeyer::parse(&std::fs::read_to_string(&key_file)?)?,
    );
    let payloads: Vec<(lienthong_core::DocumentKind, Vec<u8>)> = events
        .iter()
        .map(|e| (e.kind(), e.encode_to_vec()))
        .collect();
    let t = Instant::now();
    let mut bytes = 0usize;
    for (kind, payload) in &payloads {
        let event = ClinicalEvent::decode(*kind, payload)?;
        bytes += deidentifier.event(&event).payload.len();
    }
    let memory_rate = events.len() as f64 / t.elapsed().as_secs_f64();

    let documents = topics_with_schemas(&registry).await?;
    let receipts = unique_topic("deid-bench.receipt");
    create_topic(&kafka, &receipts, 3).await?;
    let analytics = analytics_topics_with_schemas(&registry).await?;
    let t = Instant::now();
    publish_to(&registry, &documents, &events).await?;
    println!(
        "pre-filled {} events in {:.1} s",
        events.len(),
        t.elapsed().as_secs_f64()
    );

    let group = format!(
        "lienthong-deidentifier-bench-{}",
        uuid::Uuid::new_v4().simple()
    );
    let mut config = DeidentifierConfig::new(
        key_file.into(),
        &group,
        DocumentTopics::from_map(&documents),
        &receipts,
        analytics,
    );
    config.batch_events = args.batch_events;
    config.transactional_id = Some(format!("{group}-0"));
    config.age_bands_topic = age_bands_topic_with_schema(&registry).await?;
    let inputs = config.input_topics();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let mut service = tokio::spawn(lienthong_deidentifier::run(
        config,
        kafka,
        registry,
        shutdown.clone(),
    ));
    let total = events.len() as i64;
    let mut first_commit: Option<(Instant, i64)> = None;
    let mut peak_rss = 0f64;
    loop {
        let done = tokio::task::spawn_blocking({
            let (group, inputs) = (group.clone(), inputs.clone());
            // Unreadable for a moment (an open transaction): count it as no news.
            move || committed(&group, &inputs, 3).unwrap_or(0)
        })
        .await?;
        peak_rss = peak_rss.max(lienthong_benches::rss_mib());
        if done > 0 && first_commit.is_none() {
            first_commit = Some((Instant::now(), done));
        }
        if done >= total {
            break;
        }
        ended_by_itself("the de-identification service", &mut service)
            .await
            .with_context(|| format!("at {done}/{total} events"))?;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "stalled at {done}/{total}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let catch_up = started.elapsed().as_secs_f64();
    let (first_at, first_done) = first_commit.unwrap_or((started, 0));
    let rate = (total - first_done) as f64 / first_at.elapsed().as_secs_f64();
    shutdown.cancel();
    service.await??;

    println!(
        "de-identification benchmark: {total} events, {} per transaction, {:.0} analytics bytes per event",
        args.batch_events,
        bytes as f64 / events.len() as f64
    );
    println!("| measure | figure | target |");
    println!("|---|---|---|");
    println!(
        "| service, documents → analytics topics, transactions (after the first commit) | {rate:.0} events/s | >= 30,000 |"
    );
    println!("| de-identification alone, in memory, one core | {memory_rate:.0} events/s | |");
    println!(
        "| ratio service / in memory | {:.2} | |",
        rate / memory_rate
    );
    println!("| catch-up for {total} events (incl. start-up and group join) | {catch_up:.1} s | |");
    println!(
        "| peak resident memory of the process (events held for pre-fill included) | {peak_rss:.0} MiB | |"
    );
    Ok(())
}
