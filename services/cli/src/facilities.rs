//! `lienthong facilities`: the facility directory the gateway checks documents against.

use std::path::PathBuf;
use std::process::ExitCode;

use lienthong_core::directory::FacilityDirectory;

/// Facility directory commands.
#[derive(Debug, clap::Subcommand)]
pub enum FacilitiesCommand {
    /// Check a directory file as the gateway reads it; prints how many facilities it lists or
    /// the line that is wrong.
    Check {
        /// The CSV file (code,name,province,level,valid_from,valid_to).
        file: PathBuf,
    },
    /// Print the directory of the synthetic data (`lienthong demo`, the tests, the local stack).
    Fixtures,
}

pub fn run(cmd: FacilitiesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FacilitiesCommand::Check { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            match FacilityDirectory::parse_csv(&text) {
                Ok(d) => {
                    println!("{}: {} facilities", file.display(), d.len());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    Ok(crate::exit::code(crate::exit::REFUSED))
                }
            }
        }
        FacilitiesCommand::Fixtures => {
            print!("{}", FacilityDirectory::of_fixtures().to_csv());
            Ok(ExitCode::SUCCESS)
        }
    }
}
