//! End to end: events published through the gateway reach the regional store and, through the
//! de-identification service, the warehouse. Freshness is the time from an event's acceptance
//! (its Kafka timestamp) to its being stored, as each sink records it in its freshness
//! histogram; this bench captures every sample. The four services run in this one process on
//! the machine's two cores, beside Kafka, the registry and PostgreSQL.
//!
//! Phase 1 publishes at a steady `--rate` for `--seconds`; phase 2 publishes as fast as
//! `--max-clients` clients can for `--max-seconds` and reports the rate both sinks sustained
//! (events over the time until both had stored them all). Targets on this machine: p99
//! publish → regional store <= 250 ms and publish → warehouse <= 2 s at 5,000 events/s; highest
//! sustained rate >= 20,000 events/s.
//!
//!     cargo run --release -p lienthong-benches --bin freshness-bench -- --seconds 600

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use lienthong_benches::percentiles;
use lienthong_tests::gateway::{request, start_gateway};
use lienthong_tests::warehouse::start_warehouse_path;
use lienthong_tests::{require_kafka, require_registry, unique_topic};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tokio_util::sync::CancellationToken;

// The allocator the services run with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Phase 1: events per second.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Phase 1: seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Phase 1: concurrent publishing clients.
    #[arg(long, default_value_t = 4)]
    clients: u64,
    /// Events per publish request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Phase 2: concurrent clients publishing as fast as they can.
    #[arg(long, default_value_t = 8)]
    max_clients: u64,
    /// Phase 2: seconds (0 skips it).
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
}

/// Every freshness sample of both sinks, as they record them: (seconds since the bench
/// started when it was recorded, freshness in seconds).
struct Samples {
    started: Instant,
    regional: Mutex<Vec<(f32, f32)>>,
    warehouse: Mutex<Vec<(f32, f32)>>,
}

impl Samples {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            regional: Mutex::default(),
            warehouse: Mutex::default(),
        }
    }

    /// The freshness values of a sink.
    fn values(list: &Mutex<Vec<(f32, f32)>>) -> Vec<f64> {
        list.lock()
            .map(|v| v.iter().map(|(_, f)| f64::from(*f)).collect())
            .unwrap_or_default()
    }

    /// When (seconds into the bench) the events of the longest delay of a sink were
    /// accepted, and that delay: where a stall was.
    fn longest(list: &Mutex<Vec<(f32, f32)>>) -> (f32, f32) {
        list.lock()
            .ok()
            .and_then(|v| {
                v.iter()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(at, f)| (at - f, *f))
            })
            .unwrap_or_default()
    }
}

struct Sample(Arc<Samples>, bool);

impl metrics::HistogramFn for Sample {
    fn record(&self, value: f64) {
        let (samples, regional) = (&self.0, self.1);
        let list = if regional {
            &samples.regional
        } else {
            &samples.warehouse
        };
        #[allow(clippy::cast_possible_truncation)]
        let sample = (samples.started.elapsed().as_secs_f32(), value as f32);
        list.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
    }
}

/// A recorder that keeps the two freshness histograms' samples and drops everything else.
struct Capture(Arc<Samples>);

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == lienthong_regional_store::metrics::FRESHNESS.name {
            Histogram::from_arc(Arc::new(Sample(Arc::clone(&self.0), true)))
        } else if key.name() == lienthong_warehouse_loader::metrics::FRESHNESS.name {
            Histogram::from_arc(Arc::new(Sample(Arc::clone(&self.0), false)))
        } else {
            Histogram::noop()
        }
    }
}

/// How many samples each sink has.
fn stored(samples: &Samples) -> (usize, usize) {
    (
        samples.regional.lock().map(|v| v.len()).unwrap_or(0),
        samples.warehouse.lock().map(|v| v.len()).unwrap_or(0),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let samples = Arc::new(Samples::new());
    // Warnings of the services (RUST_LOG to see more) go to stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    metrics::set_global_recorder(Capture(Arc::clone(&samples)))
        .map_err(|_| anyhow::anyhow!("a metrics recorder was already installed"))?;
    let kafka = require_kafka();
    let registry = require_registry().await;
    // The pipeline is measured, not the per-facility limit (5,000 events/s by default): every
    // event here comes from one facility.
    let gw = start_gateway(|c| {
        c.facility_rate = 1e9;
        c.facility_burst = 1e9;
    })
    .await?;
    let receipt = unique_topic("fresh.receipt");
    lienthong_tests::create_topic(&kafka, &receipt, 3).await?;
    let warehouse = start_warehouse_path(&registry, &gw.topics, &receipt).await?;
    let shutdown = CancellationToken::new();
    let store_dir = tempfile::tempdir()?;
    let regional_config =
        lienthong_tests::regional::config(&["79"], store_dir.path(), &gw.topics, &receipt);
    for t in [&regional_config.dlq_topic, &regional_config.audit_topic] {
        lienthong_tests::create_topic(&kafka, t, 1).await?;
    }
    let regional = tokio::spawn(lienthong_regional_store::server::run(
        regional_config,
        kafka.clone(),
        registry.clone(),
        lienthong_core::PatientKeyer::new("bench", &[7; 32])?,
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;

    println!("| measure | figure | target |");
    println!("|---|---|---|");
    let next_seed = Arc::new(AtomicU64::new(1));
    // Phase 1: a steady rate.
    let per_client = args.rate as f64 / args.clients as f64;
    let every = Duration::from_secs_f64(args.batch as f64 / per_client);
    let (accepted, took) = publish(
        &gw,
        args.clients,
        args.batch,
        Some(every),
        Duration::from_secs(args.seconds),
        &next_seed,
    )
    .await?;
    let drained = drain(&samples, accepted, Duration::from_secs(300)).await;
    let regional_p = percentiles(Samples::values(&samples.regional), &[50.0, 99.0, 100.0]);
    let warehouse_p = percentiles(Samples::values(&samples.warehouse), &[50.0, 99.0, 100.0]);
    println!(
        "| steady publishing through the gateway, {} s | {:.0} events/s ({accepted} accepted) | {} events/s |",
        args.seconds,
        accepted as f64 / took.as_secs_f64(),
        args.rate
    );
    println!(
        "| publish → regional store, p50 / p99 / max | {:.0} / {:.0} / {:.0} ms | p99 <= 250 ms |",
        regional_p[0] * 1000.0,
        regional_p[1] * 1000.0,
        regional_p[2] * 1000.0
    );
    println!(
        "| publish → warehouse, p50 / p99 / max | {:.0} / {:.0} / {:.0} ms | p99 <= 2,000 ms |",
        warehouse_p[0] * 1000.0,
        warehouse_p[1] * 1000.0,
        warehouse_p[2] * 1000.0
    );
    for (sink, list) in [
        ("regional store", &samples.regional),
        ("warehouse", &samples.warehouse),
    ] {
        let (at, longest) = Samples::longest(list);
        println!(
            "| {sink}: the longest delay, for an event accepted {at:.0} s into the run | {:.0} ms | |",
            longest * 1000.0
        );
    }
    println!(
        "| both sinks stored everything {} after the last publish | {} | |",
        if drained.is_some() {
            "within"
        } else {
            "NOT within"
        },
        drained.map_or("300 s".into(), |d| format!("{:.1} s", d.as_secs_f64()))
    );
    for (role, mib) in &lienthong_benches::processes::usage().memory().0 {
        println!("| memory (proportional set size) of {role} | {mib:.0} MiB | |");
    }

    // Phase 2: as fast as the clients go; the rate both sinks sustained.
    if args.max_seconds > 0 {
        let before = stored(&samples);
        let cpu_before = lienthong_benches::processes::usage();
        let started = Instant::now();
        let (accepted, took) = publish(
            &gw,
            args.max_clients,
            args.batch,
            None,
            Duration::from_secs(args.max_seconds),
            &next_seed,
        )
        .await?;
        let target = (before.0 + accepted, before.1 + accepted);
        let until = Instant::now() + Duration::from_secs(600);
        loop {
            let now = stored(&samples);
            if now.0 >= target.0 && now.1 >= target.1 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < until,
                "the sinks did not store phase 2 within 600 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let both = started.elapsed();
        let cpu = lienthong_benches::processes::usage().cpu_since(&cpu_before);
        println!(
            "| highest rate: published with {} clients for {} s | {:.0} events/s accepted | |",
            args.max_clients,
            args.max_seconds,
            accepted as f64 / took.as_secs_f64()
        );
        println!(
            "| … stored by both sinks (events over the time until both had all) | {:.0} events/s | >= 20,000 events/s |",
            accepted as f64 / both.as_secs_f64()
        );
        print_cpu(&cpu, accepted, both);
    }
    shutdown.cancel();
    let _ = regional.await;
    warehouse.stop().await?;
    gw.stop().await
}

/// Publishes from `clients` concurrent clients for `during`, each request of `batch` events,
/// one request per `every` per client (None: as fast as answers come). Returns the events
/// accepted and the time it took.
async fn publish(
    gw: &lienthong_tests::gateway::TestGateway,
    clients: u64,
    batch: usize,
    every: Option<Duration>,
    during: Duration,
    next_seed: &Arc<AtomicU64>,
) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let mut client = gw.client_with_cert("79025").await?;
        let seed = Arc::clone(next_seed);
        tasks.spawn(async move {
            let mut accepted = 0usize;
            let mut tick = every.map(|e| {
                let mut t = tokio::time::interval(e);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            while started.elapsed() < during {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let events = lienthong_tests::gateway::events_from(
                    "79025",
                    seed.fetch_add(1, Ordering::Relaxed),
                    batch,
                );
                let answer = client.publish(request(events)).await?.into_inner();
                accepted += answer
                    .results
                    .iter()
                    .filter(|r| r.outcome == lienthong_proto::v1::Outcome::Accepted as i32)
                    .count();
            }
            anyhow::Ok(accepted)
        });
    }
    let mut accepted = 0;
    while let Some(done) = tasks.join_next().await {
        accepted += done??;
    }
    Ok((accepted, started.elapsed()))
}

/// Where the machine's processor time went while `events` were published and stored in
/// `took`, and the rate the two cores could carry at that cost per event.
fn print_cpu(cpu: &lienthong_benches::processes::ByRole, events: usize, took: Duration) {
    let per_event = |seconds: f64| seconds / events.max(1) as f64 * 1e6;
    for (role, seconds) in &cpu.0 {
        println!(
            "| … processor time of {role} | {:.2} cores, {:.0} µs per event | |",
            seconds / took.as_secs_f64(),
            per_event(*seconds)
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "| … every process, and the rate {cores} cores carry at that cost | {:.0} µs per event: {:.0} events/s | |",
        per_event(cpu.total()),
        cores as f64 * 1e6 / per_event(cpu.total()).max(f64::MIN_POSITIVE)
    );
}

/// Waits until each sink has a sample per accepted event; how long after the call that took.
async fn drain(samples: &Samples, accepted: usize, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        let (r, w) = stored(samples);
        if r >= accepted && w >= accepted {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
