//! Facility agent: XML episodes parsed per second (envelope → events, validation included) and
//! outbox durable writes per second (events flushed to disk in batches, as intake does).
//! Target: >= 20,000 events/s flushed.
//!
//!     cargo run --release -p lienthong-benches --bin agent-bench -- --episodes 20000

use std::time::Instant;

use clap::Parser;
use lienthong_core::ClinicalEvent;
use lienthong_core::validation::ValidationContext;
use lienthong_facility_agent::outbox::Outbox;
use lienthong_facility_agent::xml::fixtures::{envelope, full_episode};
use lienthong_facility_agent::xml::{Limits, convert};

// The allocator the services run with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Episodes to parse (four events each).
    #[arg(long, default_value_t = 20_000)]
    episodes: usize,
    /// Episodes per export file.
    #[arg(long, default_value_t = 500)]
    per_file: usize,
    /// Events per durable outbox write.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let files: Vec<String> = (0..args.episodes.div_ceil(args.per_file))
        .map(|f| {
            let episodes: Vec<_> = (0..args.per_file)
                .map(|e| {
                    let n = f * args.per_file + e;
                    full_episode(
                        &format!("LK{n:07}"),
                        &format!("0011850{n:05}"),
                        n.is_multiple_of(2),
                    )
                })
                .collect();
            envelope("01001", &episodes)
        })
        .collect();
    let bytes: usize = files.iter().map(String::len).sum();
    let ctx = ValidationContext::now();
    let t = Instant::now();
    let mut events: Vec<ClinicalEvent> = Vec::new();
    let mut episodes = 0;
    for (i, f) in files.iter().enumerate() {
        let c = convert(&format!("f{i}"), f.as_bytes(), &Limits::default(), &ctx)
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(c.problems.is_empty(), "{:?}", c.problems.first());
        episodes += c.episodes;
        events.extend(c.events);
    }
    let parse = t.elapsed().as_secs_f64();

    let dir = tempfile::tempdir()?;
    let outbox = Outbox::open(dir.path(), u64::MAX)?;
    let n = events.len();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The inbox's own path: each document digested and compared with the version last taken
    // in (none here: all are first versions), queued with its record in one flushed batch.
    let t = Instant::now();
    for chunk in events.chunks(args.batch.max(1)) {
        rt.block_on(outbox.enqueue_revised(chunk.to_vec(), "bench.xml"))?;
    }
    let write = t.elapsed().as_secs_f64();
    println!(
        "facility agent benchmark: {episodes} episodes in {} files ({:.1} MB of XML), {n} events",
        files.len(),
        bytes as f64 / 1e6
    );
    println!("| measure | figure | target |");
    println!("|---|---|---|");
    println!(
        "| XML parsed, converted and validated | {:.0} episodes/s ({:.0} events/s) | |",
        episodes as f64 / parse,
        n as f64 / parse
    );
    println!(
        "| outbox durable intake with versions (flushed batches of {}) | {:.0} events/s | >= 20,000 |",
        args.batch,
        n as f64 / write
    );
    Ok(())
}
