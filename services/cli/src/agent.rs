//! `lienthong agent`: what the facility's IT staff ask of a running facility agent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Agent commands.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Pending events, age of the oldest, the last error, rejected events and why.
    Status {
        /// The agent's data folder.
        #[arg(
            long,
            env = "LIENTHONG_AGENT_DATA_DIR",
            default_value = "lienthong-agent"
        )]
        data_dir: PathBuf,
    },
    /// Send the events the gateway rejected again (after fixing their cause in the HIS).
    RetryRejected {
        /// The agent's data folder.
        #[arg(
            long,
            env = "LIENTHONG_AGENT_DATA_DIR",
            default_value = "lienthong-agent"
        )]
        data_dir: PathBuf,
    },
}

/// Runs an agent command.
pub fn run(cmd: AgentCommand) -> anyhow::Result<ExitCode> {
    use lienthong_facility_agent::status;
    match cmd {
        AgentCommand::Status { data_dir } => {
            let s = status::read(&data_dir).with_context(|| {
                format!(
                    "no status in {}: is the agent running with --data-dir {0}?",
                    data_dir.display()
                )
            })?;
            print!("{}", s.render());
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::RetryRejected { data_dir } => {
            let request = status::request_retry(&data_dir).with_context(|| {
                format!("cannot write a retry request into {}", data_dir.display())
            })?;
            println!(
                "asked the agent to send its rejected events again (it does within seconds; if it is not running, at its next start): {}",
                request.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
