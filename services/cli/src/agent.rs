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
    match cmd {
        AgentCommand::Status { data_dir } => {
            let s = lienthong_facility_agent::status::read(&data_dir).with_context(|| {
                format!(
                    "no status in {}: is the agent running with --data-dir {0}?",
                    data_dir.display()
                )
            })?;
            println!(
                "pending events:       {} (limit {})",
                s.pending, s.max_pending
            );
            println!("oldest pending:       {} s", s.oldest_pending_secs);
            println!("delivered (this run): {}", s.delivered_since_start);
            println!(
                "last error:           {}",
                s.last_error.as_deref().unwrap_or("none")
            );
            println!("rejected events:      {}", s.rejected);
            for r in &s.recent_rejected {
                // "REJECTED <document> (file …, MA_LK …, event …): <reason>"
                println!("  {r}");
            }
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::RetryRejected { data_dir } => {
            let request = data_dir.join("retry-rejected.request");
            std::fs::write(&request, b"retry\n")
                .with_context(|| format!("cannot write {}", request.display()))?;
            println!(
                "asked the agent to send its rejected events again (it does within seconds; if it is not running, at its next start)"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
