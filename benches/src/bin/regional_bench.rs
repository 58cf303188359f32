//! Regional store: apply throughput into sled and patient-record read latency, at scale.
//!
//! Store level (no Kafka in the loop, so it measures the store): generates realistic events
//! for one region, applies them in batches of 1,000 (one sled transaction each, offsets
//! included, as the consumer does), flushes, then reads the records of random patients.
//! Targets: apply >= 50,000 events/s on this 2-core machine; GetPatientRecord p99 <= 2 ms.
//!
//!     cargo run --release -p lienthong-benches --bin regional-bench -- --events 1000000
//!
//! At 10M events: `--events 10000000` (about 10x the disk, ~4 GB; generation dominates).

use std::time::Instant;

use clap::Parser;
use lienthong_benches::percentiles;
use lienthong_core::fixtures::Generator;
use lienthong_regional_store::store::{Change, RegionStore};

#[derive(Debug, Parser)]
struct Args {
    /// Events to store.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Patient-record reads to time.
    #[arg(long, default_value_t = 20_000)]
    reads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let store = RegionStore::open(dir.path())?;
    let mut g = Generator::new(1, time::OffsetDateTime::now_utc());
    let patients: Vec<String> = (0..args.events / 4)
        .map(|i| format!("{:064x}", i * 2_654_435_761usize))
        .collect();
    let mut applied = 0usize;
    let mut apply_secs = 0.0;
    let mut offset = 0i64;
    while applied < args.events {
        let n = 1000.min(args.events - applied);
        let batch: Vec<_> = (0..n)
            .map(|i| {
                let mut e = g.any(applied + i);
                e.header_mut().patient_key = patients[(applied + i) % patients.len()].clone();
                offset += 1;
                (
                    "bench".to_owned(),
                    (offset % 12) as i32,
                    offset,
                    Change::Event(e),
                )
            })
            .collect();
        let t = Instant::now();
        store.apply_batch(&batch)?;
        apply_secs += t.elapsed().as_secs_f64();
        applied += n;
    }
    let t = Instant::now();
    futures::executor::block_on(store.flush())?;
    let flush = t.elapsed().as_secs_f64();

    let mut lat = Vec::with_capacity(args.reads);
    let mut found = 0usize;
    for i in 0..args.reads {
        let pk = &patients[(i * 7919) % patients.len()];
        let t = Instant::now();
        found += store.patient_documents(pk)?.len();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let p = percentiles(lat, &[50.0, 99.0]);
    println!(
        "regional store benchmark: {} events, {} documents, {:.0} MiB on disk",
        args.events,
        store.len(),
        store.size_on_disk() as f64 / 1048576.0
    );
    println!("| measure | figure | target |");
    println!("|---|---|---|");
    println!(
        "| apply (sled transactions of 1,000 with offsets) | {:.0} events/s | >= 50,000 |",
        args.events as f64 / apply_secs
    );
    println!(
        "| apply incl. final flush | {:.0} events/s | |",
        args.events as f64 / (apply_secs + flush)
    );
    println!("| GetPatientRecord store read p50 | {:.3} ms | |", p[0]);
    println!(
        "| GetPatientRecord store read p99 | {:.3} ms | <= 2 ms |",
        p[1]
    );
    println!("({} documents read over {} lookups)", found, args.reads);
    Ok(())
}
