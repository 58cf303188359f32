//! What the facility's IT staff ask of an agent, running or not: its status, and a retry of
//! the events the gateway rejected. The same in `lienthong-facility-agent status` and
//! `lienthong agent status`.

use std::path::PathBuf;

use crate::status;

/// Agent commands.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Print the agent's status: pending events, the age of the oldest, the last error, the
    /// rejected events and why (read from its data folder).
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

impl AgentCommand {
    /// Runs the command: what to print, or what went wrong and what to do.
    pub fn run(&self) -> Result<String, String> {
        match self {
            Self::Status { data_dir } => status::read(data_dir).map(|s| s.render()).map_err(|e| {
                format!(
                    "no status in {}: {e}; is the agent running with this data folder (--data-dir, or LIENTHONG_AGENT_DATA_DIR in its settings file)?",
                    data_dir.display()
                )
            }),
            Self::RetryRejected { data_dir } => status::request_retry(data_dir)
                .map(|_| {
                    "asked the agent to send its rejected events again (within seconds if it runs, else at its next start)\n".to_owned()
                })
                .map_err(|e| {
                    format!("cannot leave a retry request in {}: {e}", data_dir.display())
                }),
        }
    }
}
