//! Regional store: apply throughput into sled and read latency of each query method, at scale.
//!
//! Part 1, store level (no Kafka in the loop, so it measures the store): generates realistic
//! events, applies them in batches of 1,000 as the consumer does (atomic sled batches with
//! their offsets) while another thread reads patient records, flushes, then times the store
//! work of each query method, then the opens of the store (each in a fresh process, with the
//! memory it adds): without a checkpoint, after a clean stop, after a kill -9 one checkpoint
//! interval (`--interval-events`) after the last checkpoint.
//! Part 2, from a pre-filled topic (needs the local stack): the real consumer of one region
//! reads fresh topics from the beginning, first into a fresh store, then (fresh topics again)
//! into the store of part 1, which already holds `--events` events; each timed from its first
//! stored batch until every partition's end offset is stored.
//! Targets: apply >= 50,000 events/s on this 2-core machine; GetPatientRecord p99 <= 2 ms;
//! open of a million documents after a clean stop <= 1 s, after a kill -9 <= the replay of one
//! checkpoint interval; <= 150 MiB per million documents.
//!
//!     cargo run --release -p lienthong-benches --bin regional-bench -- --events 1000000
//!
//! At 10M events: `--events 10000000` (about 25 GB of disk; generation dominates).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use lienthong_benches::percentiles;
use lienthong_core::ClinicalEvent;
use lienthong_core::fixtures::Generator;
use lienthong_regional_store::store::{Change, LabQuery, RegionStore, WorklistQuery};
use tokio_util::sync::CancellationToken;

// The allocator the service runs with (sled allocates per node update).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Events to store (part 1).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Reads to time per method.
    #[arg(long, default_value_t = 20_000)]
    reads: usize,
    /// Events to pre-fill for part 2 (0 skips it).
    #[arg(long, default_value_t = 200_000)]
    topic_events: usize,
    /// Most messages per applied batch in part 2 (the service's --batch-events default).
    #[arg(long, default_value_t = 4000)]
    topic_batch: usize,
    /// Events applied after the last checkpoint before the kill -9 that the open after a
    /// crash replays (one checkpoint interval of a region's traffic).
    #[arg(long, default_value_t = 100_000)]
    interval_events: usize,
    /// Only open the store in this folder and print one line of figures (what the bench runs
    /// in a fresh process to measure an open and its memory).
    #[arg(long, hide = true)]
    open_only: Option<std::path::PathBuf>,
}

/// What the queries of part 1 ask for.
#[derive(Default)]
struct Targets {
    patients: Vec<String>,
    receiving: Vec<String>,
    appointment_facilities: Vec<String>,
    labs: Vec<(String, String)>,
}

fn main() -> anyhow::Result<()> {
    // As the service does.
    lienthong_regional_store::memory::disable_transparent_huge_pages();
    let args = Args::parse();
    if let Some(dir) = &args.open_only {
        return open_only(dir);
    }
    decoding_side(args.events.min(200_000))?;
    let (_dir, filled) = store_level(&args)?;
    if args.topic_events > 0 {
        let rt = tokio::runtime::Runtime::new()?;
        let fresh_dir = tempfile::tempdir()?;
        let fresh = RegionStore::open(fresh_dir.path())?;
        rt.block_on(from_topic(&args, &fresh, "a fresh store"))?;
        drop((fresh, fresh_dir));
        let stored = format!("the store of part 1 ({} documents)", filled.len());
        rt.block_on(from_topic(&args, &filled, &stored))?;
    }
    Ok(())
}

/// The consumer's other half, on one thread: what it does to every message before the
/// writer sees it (protobuf decode, validation, routing, keys and stored value). The pipeline
/// overlaps it with the writer, but on two cores the two halves share the CPU.
// Not inlined, so a profile of the bench can tell this half apart.
#[inline(never)]
fn decoding_side(events: usize) -> anyhow::Result<()> {
    let mut g = Generator::new(2, time::OffsetDateTime::now_utc());
    let bodies: Vec<_> = (0..events)
        .map(|i| {
            let e = g.any(i);
            (e.kind(), e.encode_to_vec())
        })
        .collect();
    let ctx = lienthong_core::validation::ValidationContext::now();
    let region = lienthong_core::ProvinceCode::current("79")
        .ok_or_else(|| anyhow::anyhow!("79 is not a current province code"))?;
    let t = Instant::now();
    let mut kept = 0usize;
    for (kind, body) in &bodies {
        let event = ClinicalEvent::decode(*kind, body)?;
        let valid = event
            .validate(&ctx)
            .iter()
            .all(|v| v.severity != lienthong_core::validation::Severity::Error);
        if valid && event.regions().contains(&region) {
            kept += 1;
        }
        std::hint::black_box(Change::consumed(event, body));
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "decoding side (one thread, {events} events, {kept} routed to region 79): {:.0} events/s, {:.1} µs per event",
        events as f64 / secs,
        secs * 1e6 / events as f64
    );
    Ok(())
}

/// Part 1; the filled store, for part 2 to consume into as well.
fn store_level(args: &Args) -> anyhow::Result<(tempfile::TempDir, RegionStore)> {
    let dir = tempfile::tempdir()?;
    let store = RegionStore::open(dir.path())?;
    let mut g = Generator::new(1, time::OffsetDateTime::now_utc());
    let patients: Vec<String> = (0..args.events / 4)
        .map(|i| format!("{:064x}", i * 2_654_435_761usize))
        .collect();
    let mut targets = Targets {
        patients: patients.clone(),
        ..Targets::default()
    };
    // A clinician's reads while batches are applied (sled makes a read wait for a batch).
    let applying = AtomicBool::new(true);
    let (apply_secs, reads_while_applying) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| -> anyhow::Result<Vec<f64>> {
            let mut lat = Vec::new();
            let mut i = 0usize;
            while applying.load(Ordering::Relaxed) {
                let t = Instant::now();
                store.patient_documents(&patients[(i * 7919) % patients.len()])?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(lat)
        });
        let apply_secs = apply_all(0..args.events, &store, &mut g, &patients, &mut targets);
        applying.store(false, Ordering::Relaxed);
        let lat = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
        anyhow::Ok((apply_secs?, lat?))
    })?;
    let t = Instant::now();
    futures::executor::block_on(store.flush())?;
    let flush = t.elapsed().as_secs_f64();

    println!(
        "regional store benchmark: {} events, {} documents, {:.0} MiB on disk",
        args.events,
        store.len(),
        store.size_on_disk() as f64 / 1048576.0
    );
    println!("| measure | figure | target |");
    println!("|---|---|---|");
    println!(
        "| apply (batches of 1,000, as atomic sled batches of 100 with their offsets) | {:.0} events/s | >= 50,000 |",
        args.events as f64 / apply_secs
    );
    println!(
        "| apply incl. final flush | {:.0} events/s | |",
        args.events as f64 / (apply_secs + flush)
    );
    let p = percentiles(reads_while_applying, &[50.0, 99.0, 100.0]);
    println!(
        "| GetPatientRecord while batches are applied, p50 / p99 / max | {:.3} / {:.3} / {:.1} ms | |",
        p[0], p[1], p[2]
    );
    let page = 50;
    let time_reads = |name: &str, target: &str, read: &dyn Fn(usize) -> anyhow::Result<usize>| {
        let mut lat = Vec::with_capacity(args.reads);
        let mut found = 0usize;
        for i in 0..args.reads {
            let t = Instant::now();
            found += read(i)?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let p = percentiles(lat, &[50.0, 99.0]);
        println!(
            "| {name} p50 / p99 ({:.1} documents per call) | {:.3} / {:.3} ms | {target} |",
            found as f64 / args.reads as f64,
            p[0],
            p[1]
        );
        anyhow::Ok(())
    };
    time_reads("GetPatientRecord", "p99 <= 2 ms", &|i| {
        let pk = &targets.patients[(i * 7919) % targets.patients.len()];
        Ok(store.patient_documents(pk)?.len())
    })?;
    time_reads("ListIncomingReferrals, first page of 50", "", &|i| {
        let f = &targets.receiving[i % targets.receiving.len()];
        Ok(store
            .worklist(f, &WorklistQuery::default(), None, page + 1)?
            .len()
            .min(page))
    })?;
    time_reads("ListAppointments, first page of 50", "", &|i| {
        let f = &targets.appointment_facilities[i % targets.appointment_facilities.len()];
        Ok(store
            .appointments(f, ("", ""), None, page + 1)?
            .len()
            .min(page))
    })?;
    time_reads("FindReusableLabResults", "", &|i| {
        let (pk, service) = &targets.labs[(i * 7919) % targets.labs.len()];
        let services = [service.clone()];
        let query = LabQuery {
            services: &services,
            since: "",
        };
        Ok(store
            .lab_reports(pk, &query, None, page + 1)?
            .len()
            .min(page))
    })?;
    println!(
        "(store work only: the API adds TLS, authentication and the audit record, which must be \
         acknowledged by Kafka before the answer)"
    );
    drop(store);
    let store = opening(dir.path(), args, &mut g, &patients, &mut targets)?;
    Ok((dir, store))
}

/// One open of the store in `dir`, in this (fresh) process: seconds, how, documents, and the
/// resident memory the open added.
fn open_only(dir: &std::path::Path) -> anyhow::Result<()> {
    let before = lienthong_benches::rss_mib();
    let t = Instant::now();
    let store = RegionStore::open(dir)?;
    let seconds = t.elapsed().as_secs_f64();
    // What the open read and let go of (the checkpoint's bytes) is returned to the system
    // after a short delay; what stays is the store's.
    std::thread::sleep(Duration::from_millis(500));
    let added = lienthong_benches::rss_mib() - before;
    println!(
        "{seconds} {added} {} {} {:?}",
        store.filed_documents(),
        store.listed_documents(),
        store.opened_from()
    );
    Ok(())
}

/// Opens the store in `dir` in a fresh process (so its memory is the open's alone).
fn open_in_child(dir: &std::path::Path) -> anyhow::Result<(f64, f64, usize, String)> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--open-only")
        .arg(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the open failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout)?;
    let mut parts = line.trim().splitn(5, ' ');
    let mut next = || parts.next().unwrap_or_default().to_owned();
    Ok((next().parse()?, next().parse()?, next().parse()?, {
        let _listed = next();
        next()
    }))
}

/// Opening after a restart: without a checkpoint (every bundle replayed), after a clean stop
/// (the checkpoint alone) and after a kill -9 one checkpoint interval after the last
/// checkpoint; each in a fresh process, with the memory it added. Returns the store, open.
fn opening(
    dir: &std::path::Path,
    args: &Args,
    g: &mut Generator,
    patients: &[String],
    targets: &mut Targets,
) -> anyhow::Result<RegionStore> {
    let per_million = |mib: f64, docs: usize| mib * 1e6 / docs.max(1) as f64;
    let (full, full_mib, docs, how) = open_in_child(dir)?;
    println!(
        "| open without a checkpoint ({how}: {docs} documents) | {full:.2} s, {:.0} MiB per million documents | |",
        per_million(full_mib, docs)
    );
    let store = RegionStore::open(dir)?;
    lienthong_benches::reset_peak_rss()?;
    let before = lienthong_benches::rss_mib();
    let t = Instant::now();
    let bytes = store.checkpoint()?;
    let took = t.elapsed().as_secs_f64();
    println!(
        "| checkpoint write ({:.0} MiB file) | {took:.2} s, peak memory added {:.0} MiB | |",
        bytes as f64 / 1048576.0,
        lienthong_benches::peak_rss_mib() - before
    );
    drop(store);
    let (clean, clean_mib, docs, how) = open_in_child(dir)?;
    println!(
        "| open after a clean stop ({how}: {docs} documents) | {clean:.2} s, {:.0} MiB per million documents | <= 1 s per million; <= 150 MiB per million |",
        per_million(clean_mib, docs)
    );
    // A kill -9 one interval after the checkpoint: what sled has (flushed) past it is replayed.
    let store = RegionStore::open(dir)?;
    store.checkpoint()?;
    let t = Instant::now();
    // New documents at offsets after those of part 1.
    let first = args.events;
    apply_all(
        first..first + args.interval_events,
        &store,
        g,
        patients,
        targets,
    )?;
    let interval_apply = t.elapsed().as_secs_f64();
    futures::executor::block_on(store.flush())?;
    drop(store);
    let (crashed, _, docs, how) = open_in_child(dir)?;
    println!(
        "| open after kill -9, {} events after the last checkpoint ({how}: {docs} documents) | {crashed:.2} s (clean open {clean:.2} s + replay; applying those events took {interval_apply:.2} s) | <= the replay of one checkpoint interval |",
        args.interval_events
    );
    println!(
        "| open time, full replay / after a clean stop | {:.1}x | |",
        full / clean.max(1e-9)
    );
    Ok(RegionStore::open(dir)?)
}

/// Applies the generated events numbered `events` (each at the offset after its number) in
/// batches of 1,000 as the consumer does; the seconds spent in `apply_batch`.
fn apply_all(
    events: std::ops::Range<usize>,
    store: &RegionStore,
    g: &mut Generator,
    patients: &[String],
    targets: &mut Targets,
) -> anyhow::Result<f64> {
    let mut apply_secs = 0.0;
    let mut at = events.start;
    while at < events.end {
        let n = 1000.min(events.end - at);
        let batch: Vec<_> = (at..at + n)
            .map(|i| {
                let mut e = g.any(i);
                e.header_mut().patient_key = patients[i % patients.len()].clone();
                remember(targets, &e);
                let offset = i as i64 + 1;
                (
                    "bench".to_owned(),
                    (offset % 12) as i32,
                    offset,
                    Change::event(e),
                )
            })
            .collect();
        let t = Instant::now();
        store.apply_batch(&batch)?;
        apply_secs += t.elapsed().as_secs_f64();
        at += n;
    }
    Ok(apply_secs)
}

fn remember(t: &mut Targets, e: &ClinicalEvent) {
    let pk = e
        .header()
        .map(|h| h.patient_key.clone())
        .unwrap_or_default();
    match e {
        ClinicalEvent::Referral(r) => {
            if let Some(f) = r.slip.as_ref().and_then(|s| s.receiving.as_ref())
                && t.receiving.len() < 10_000
            {
                t.receiving.push(f.code.clone());
            }
        }
        ClinicalEvent::Appointment(a) => {
            if let Some(f) = a.appointment.as_ref().and_then(|a| a.facility.as_ref())
                && t.appointment_facilities.len() < 10_000
            {
                t.appointment_facilities.push(f.code.clone());
            }
        }
        ClinicalEvent::LabResult(l) => {
            if let Some(r) = l.report.as_ref()
                && t.labs.len() < 100_000
            {
                t.labs.push((pk, r.service_code.clone()));
            }
        }
    }
}

/// Part 2: the real consumer of region 79 reads fresh topics pre-filled with
/// `--topic-events` events into `store` (`into` names it).
async fn from_topic(args: &Args, store: &RegionStore, into: &str) -> anyhow::Result<()> {
    let (count, batch) = (args.topic_events, args.topic_batch);
    let kafka = lienthong_tests::require_kafka();
    let registry = lienthong_tests::require_registry().await;
    let topics = lienthong_tests::warehouse::topics_with_schemas(&registry).await?;
    let receipt = lienthong_tests::unique_topic("bench.receipt");
    lienthong_tests::create_topic(&kafka, &receipt, 1).await?;
    // Every event published by a facility of Hồ Chí Minh City, so every one is applied.
    let region = "79";
    let events: Vec<ClinicalEvent> = lienthong_tests::keyed_events(5151, count)
        .into_iter()
        .map(|e| lienthong_core::fixtures::reassign(e, "79025"))
        .collect();
    lienthong_tests::warehouse::publish_to(&registry, &topics, &events).await?;
    let dir = tempfile::tempdir()?;
    let mut config = lienthong_tests::regional::config(&[region], dir.path(), &topics, &receipt);
    config.batch_events = batch;
    // Where conflicts and poison go: without it the consumer would wait for it forever.
    lienthong_tests::create_topic(&kafka, &config.dlq_topic, 1).await?;
    let before = store.len();
    let codec = std::sync::Arc::new(lienthong_registry::WireCodec::new(&registry)?);
    let producer = lienthong_kafka::EventProducer::new(&kafka, Duration::from_secs(15))?;
    let shutdown = CancellationToken::new();
    // Pre-filled means settled: the broker's fresh log segments written back to disk first,
    // so the kernel's writeback does not compete with the consumer being measured.
    let synced = std::process::Command::new("sync").status();
    anyhow::ensure!(
        synced.as_ref().is_ok_and(|s| s.success()),
        "sync (coreutils) failed: {synced:?}"
    );
    eprintln!("pre-filled {count} events; consuming into {into}");
    let started = Instant::now();
    let consumer = tokio::spawn(lienthong_regional_store::consumer::run_region(
        region.into(),
        config,
        kafka.clone(),
        codec,
        producer,
        store.clone(),
        lienthong_regional_store::health::RegionHealth::unobserved(&[region.to_owned()]).await,
        shutdown.clone(),
    ));
    let mut first: Option<(Instant, i64)> = None;
    let done_at = loop {
        let mut done = 0i64;
        for topic in topics.values() {
            for p in 0..3 {
                done += store.next_offset(topic, p)?.unwrap_or(0);
            }
        }
        if done > 0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if done >= count as i64 {
            break Instant::now();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "consumer stalled at {done}/{count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    shutdown.cancel();
    consumer.await??;
    let (first_at, first_done) = first.unwrap_or((started, 0));
    println!(
        "| from a pre-filled topic (3 partitions per kind), region {region}, into {into}: consumed and applied | {:.0} events/s | >= 50,000 |",
        (count as i64 - first_done) as f64 / (done_at - first_at).as_secs_f64()
    );
    println!(
        "| … of which stored in region {region} | {} of {count} documents | |",
        store.len() - before
    );
    // The local broker keeps nothing of a run.
    let created: Vec<&str> = topics
        .values()
        .map(String::as_str)
        .chain([receipt.as_str()])
        .collect();
    lienthong_tests::delete_topics(&kafka, &created).await
}
