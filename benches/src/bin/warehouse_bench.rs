//! Warehouse loader: events/s loaded from pre-filled analytics topics (the events de-identified
//! as the de-identification service does, before the timing starts), against a raw binary `COPY` of
//! the same rows into the same PostgreSQL in the same run (target ratio >= 0.7), and the
//! catch-up time for the whole topic.
//!
//! Needs the local stack (`deploy/local/up`, then `source .state/env`):
//!
//!     cargo run --release -p lienthong-benches --bin warehouse-bench -- --events 1000000
//!
//! Each run uses fresh topics and two fresh databases (dropped at the end).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use clap::Parser;
use lienthong_deidentifier::AnalyticsEvent;
use lienthong_sink::AnalyticsMessage;
use lienthong_tests::deidentifier::analytics_topics_with_schemas;
use lienthong_tests::warehouse::{
    connect, fresh_database, loader_config, publish_analytics_events, test_deidentifier,
};
use lienthong_tests::{keyed_events, require_kafka, require_registry};
use lienthong_warehouse_loader::rows::{EventRows, analytics_rows, history_month};
use lienthong_warehouse_loader::store::{Position, copy_direct, ensure_history_months};
use tokio_util::sync::CancellationToken;

// The allocator the services run with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Events to pre-fill and load.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Loader batch size (messages per batch; the loader's default).
    #[arg(long, default_value_t = 10_000)]
    batch_events: usize,
    /// Loader writer connections.
    #[arg(long, default_value_t = 2)]
    writers: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kafka = require_kafka();
    let registry = require_registry().await;
    let events: Vec<AnalyticsEvent> = keyed_events(4242, args.events)
        .iter()
        .map(|e| test_deidentifier().event(e))
        .collect();
    let topics = analytics_topics_with_schemas(&registry).await?;
    let t = Instant::now();
    publish_analytics_events(&registry, &topics, &events).await?;
    println!(
        "pre-filled {} events in {:.1} s",
        events.len(),
        t.elapsed().as_secs_f64()
    );

    // The loader, from the first message to the last offset stored.
    let loaded_dsn = fresh_database().await?;
    let mut config = loader_config(&loaded_dsn, &topics);
    config.batch_events = args.batch_events;
    config.writers = args.writers;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let loader = tokio::spawn(lienthong_warehouse_loader::run(
        config,
        kafka,
        registry,
        shutdown.clone(),
    ));
    let db = connect(&loaded_dsn).await?;
    let total = events.len() as i64;
    let mut first_commit: Option<(Instant, i64)> = None;
    loop {
        let done: i64 = db
            .query_one(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM loader_offsets",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if done > 0 && first_commit.is_none() {
            first_commit = Some((Instant::now(), done));
        }
        if done >= total {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "loader stalled at {done}/{total}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let catch_up = started.elapsed().as_secs_f64();
    let (first_at, first_done) = first_commit.unwrap_or((started, 0));
    let steady = first_at.elapsed().as_secs_f64();
    shutdown.cancel();
    loader.await??;
    let history: i64 = db
        .query_one("SELECT count(*) FROM event_history", &[])
        .await?
        .get(0);

    // The same rows (each document once, at its latest version) by raw COPY, in one
    // transaction, into a second fresh warehouse with the same schema and indexes.
    let raw_dsn = fresh_database().await?;
    let mut raw = connect(&raw_dsn).await?;
    lienthong_warehouse_loader::migrations::migrate(&mut raw).await?;
    let mut latest: BTreeMap<String, (Position, EventRows)> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let rows = rows_of(e)?;
        let position = Position {
            topic: topics.of(e.kind).to_owned(),
            partition: 0,
            offset: i as i64,
        };
        let keep = latest
            .get(&rows.history.document_id)
            .is_none_or(|(_, r)| r.history.document_version < rows.history.document_version);
        if keep {
            latest.insert(rows.history.document_id.clone(), (position, rows));
        }
    }
    let rows: Vec<(Position, EventRows)> = latest.into_values().collect();
    ensure_history_months(&raw, &mut HashSet::new(), rows.iter().map(|(_, r)| r)).await?;
    let t = Instant::now();
    let tx = raw.transaction().await?;
    copy_direct(&tx, &rows).await?;
    tx.commit().await?;
    let raw_secs = t.elapsed().as_secs_f64();
    let raw_history: i64 = raw
        .query_one("SELECT count(*) FROM event_history", &[])
        .await?
        .get(0);
    // The loader keeps every distinct event; the raw baseline copies each document once.
    // They differ where the generator made two different events of one document (a slip
    // number drawn twice). History is unique per (event_id, month of occurrence): two events
    // claiming one id with occurrences in different months are both kept (known limit).
    let distinct_events = events
        .iter()
        .map(|e| rows_of(e).map(|r| (r.history.event_id, history_month(r.history.occurred_at))))
        .collect::<Result<HashSet<_>, _>>()?
        .len() as i64;
    anyhow::ensure!(
        distinct_events == history,
        "the loader stored {history} history rows for {distinct_events} distinct events"
    );
    anyhow::ensure!(
        raw_history as usize == rows.len(),
        "the raw COPY stored {raw_history} history rows for {} documents",
        rows.len()
    );

    let loader_rate = (total - first_done) as f64 / steady;
    let raw_rate = rows.len() as f64 / raw_secs;
    println!(
        "warehouse benchmark: {} events ({} distinct documents), batch {}, {} writer(s)",
        total,
        rows.len(),
        args.batch_events,
        args.writers
    );
    println!("| measure | figure | target |");
    println!("|---|---|---|");
    println!(
        "| loader, Kafka → PostgreSQL (after the first commit) | {loader_rate:.0} events/s | |"
    );
    println!("| raw binary COPY of the same rows, one transaction | {raw_rate:.0} events/s | |");
    println!(
        "| ratio loader / raw COPY | {:.2} | >= 0.7 |",
        loader_rate / raw_rate
    );
    println!("| catch-up for {total} events (incl. start-up and group join) | {catch_up:.1} s | |");

    let admin = connect(&lienthong_tests::warehouse::base_dsn()).await?;
    drop(db);
    drop(raw);
    for dsn in [loaded_dsn, raw_dsn] {
        if let Some(name) = dsn.rsplit('/').next() {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
    Ok(())
}

/// The warehouse rows of an analytics event.
fn rows_of(event: &AnalyticsEvent) -> anyhow::Result<EventRows> {
    let message = AnalyticsMessage::decode(event.kind.message_name(), &event.payload)
        .ok_or_else(|| anyhow::anyhow!("not an analytics message"))??;
    Ok(analytics_rows(&message)?)
}
