//! `lienthong agent`: what the facility's IT staff ask of a facility agent (the same commands
//! as `lienthong-facility-agent status` and `retry-rejected`).

use std::process::ExitCode;

pub use lienthong_facility_agent::commands::AgentCommand;

/// Runs an agent command.
pub fn run(cmd: AgentCommand) -> anyhow::Result<ExitCode> {
    let text = cmd.run().map_err(anyhow::Error::msg)?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
