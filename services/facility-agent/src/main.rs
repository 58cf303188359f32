//! `lienthong-facility-agent`: runs next to the HIS.

use std::process::ExitCode;

use clap::Parser;
use lienthong_facility_agent::AgentConfig;
use lienthong_telemetry::TelemetryArgs;

// Many small allocations per event on every hop: mimalloc spends far less time in them
// than the system allocator (measured in the benchmarks, which use the same allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The lienthong facility agent.
#[derive(Debug, Parser)]
#[command(name = "lienthong-facility-agent", version, about)]
struct Cli {
    #[command(flatten)]
    agent: AgentConfig,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The outbox, reports and kept exports hold personal data.
    lienthong_runtime::private_files();
    lienthong_runtime::run_main(async move {
        lienthong_telemetry::init(&cli.telemetry)?;
        let shutdown = lienthong_runtime::shutdown_token();
        lienthong_facility_agent::run(cli.agent, shutdown).await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
