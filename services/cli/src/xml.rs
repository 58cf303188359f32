//! `lienthong xml convert`: a MoH XML export to events (JSON Lines, the format
//! `lienthong publish --file` sends), with the report of what could not be used on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
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
}

/// Runs an XML command: exit 0 when every episode converted, 1 when some were reported.
pub fn run(cmd: XmlCommand) -> anyhow::Result<ExitCode> {
    let XmlCommand::Convert { files } = cmd;
    let ctx = ValidationContext::now();
    let mut reported = 0usize;
    for path in files {
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path.display().to_string();
        let conversion = match convert(&name, &bytes, &Limits::default(), &ctx) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{name}: {e}");
                reported += 1;
                continue;
            }
        };
        for event in conversion.events {
            let bytes = pb::EventEnvelope::from(event).encode_to_vec();
            let json = lienthong_registry::json::to_json("lienthong.v1.EventEnvelope", &bytes)
                .map_err(anyhow::Error::msg)?;
            println!("{json}");
        }
        for p in &conversion.problems {
            eprintln!("{p}");
        }
        reported += conversion.problems.len();
        eprintln!(
            "{name}: {} episode(s) converted, {} problem(s)",
            conversion.episodes,
            conversion.problems.len()
        );
    }
    Ok(if reported == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
