//! `lienthong xml convert`: a MoH XML export to events (JSON Lines, the format
//! `lienthong publish --file` sends), with the report of what could not be used on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use lienthong_core::printable::printable;
use lienthong_core::validation::ValidationContext;
use lienthong_facility_agent::xml::{Limits, convert};
use lienthong_proto::v1 as pb;
use prost::Message as _;

/// XML commands.
#[derive(Debug, clap::Subcommand)]
pub enum XmlCommand {
    /// Convert GIAMDINHHS envelopes or bare XML1/XML4/XML13/XML14 files to events.
    Convert {
        /// Files to convert.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a synthetic export (GIAMDINHHS envelope, both layouts alternating), for demos.
    Sample {
        /// Exporting facility.
        #[arg(long, default_value = "79025")]
        facility: String,
        /// Episodes (each: XML1, XML4, XML13, XML14 → four events).
        #[arg(long, default_value_t = 25)]
        episodes: usize,
        /// Seed of the synthetic patients (same seed, same export).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Runs an XML command: exit 0 when every episode converted, 1 when some were reported.
pub fn run(cmd: XmlCommand) -> anyhow::Result<ExitCode> {
    let files = match cmd {
        XmlCommand::Convert { files } => files,
        XmlCommand::Sample {
            facility,
            episodes,
            seed,
        } => {
            use lienthong_facility_agent::xml::fixtures::{envelope, full_episode};
            // The fixtures export as 01001 and refer to 79025: move them to `facility`, and
            // refer to the other one.
            let other = if facility == "01001" {
                "79025"
            } else {
                "01001"
            };
            let all: Vec<_> = (0..episodes)
                .map(|i| {
                    let n = seed * 100_000 + i as u64;
                    // Citizen IDs of people born in 1985 (the fixtures' birth date), unique per n.
                    full_episode(
                        &format!("LK{n:010}"),
                        &format!("0011850{:05}", n % 100_000),
                        i % 2 == 1,
                    )
                    .into_iter()
                    .map(|(table, xml)| {
                        let xml = xml
                            .replace("79025", "\u{0}")
                            .replace("01001", &facility)
                            .replace('\u{0}', other);
                        (table, xml)
                    })
                    .collect::<Vec<_>>()
                })
                .collect();
            println!("{}", envelope(&facility, &all));
            return Ok(ExitCode::SUCCESS);
        }
    };
    let ctx = ValidationContext::now();
    let mut reported = 0usize;
    for path in files {
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path.display().to_string();
        let conversion = match convert(&name, &bytes, &Limits::default(), &ctx) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}", printable(&format!("{name}: {e}")));
                reported += 1;
                continue;
            }
        };
        for event in conversion.events {
            let bytes = pb::EventEnvelope::from(event).encode_to_vec();
            let json = lienthong_proto::json::to_json("lienthong.v1.EventEnvelope", &bytes)
                .map_err(anyhow::Error::msg)?;
            println!("{json}");
        }
        for p in &conversion.problems {
            eprintln!("{}", printable(&p.to_string()));
        }
        reported += conversion.problems.len();
        eprintln!(
            "{}: {} episode(s) converted, {} problem(s)",
            printable(&name),
            conversion.episodes,
            conversion.problems.len()
        );
    }
    Ok(if reported == 0 {
        ExitCode::SUCCESS
    } else {
        crate::exit::code(crate::exit::REFUSED)
    })
}
