//! `lienthong-facility-agent`: runs next to the HIS.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use lienthong_facility_agent::commands::AgentCommand;
use lienthong_facility_agent::{AgentConfig, settings_file};
use lienthong_telemetry::TelemetryArgs;

// Many small allocations per event on every hop: mimalloc spends far less time in them
// than the system allocator (measured in the benchmarks, which use the same allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The lienthong facility agent: takes the HIS's MoH XML exports (from its inbox folder, or
/// over HTTP or gRPC on loopback) and delivers them to the lienthong gateway through a durable
/// outbox. Without a subcommand it runs.
#[derive(Debug, Parser)]
#[command(
    name = "lienthong-facility-agent",
    version,
    about,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Settings file of `NAME=value` lines (the settings' environment variable names, e.g.
    /// `LIENTHONG_AGENT_INBOX=/var/spool/lienthong-facility-agent/inbox`); the command line and
    /// the environment win over it.
    #[arg(long, env = "LIENTHONG_AGENT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<AgentCommand>,
    #[command(flatten)]
    agent: AgentConfig,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// The settings file named by `--config` (or LIENTHONG_AGENT_CONFIG), found before the command
/// line is parsed because its values become the command line's defaults.
fn config_path() -> Option<PathBuf> {
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(value) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(value));
        }
    }
    std::env::var_os("LIENTHONG_AGENT_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// What was asked: a subcommand, or running the agent.
enum Invocation {
    Subcommand(AgentCommand),
    Run(Box<Cli>),
}

fn parse() -> Result<Invocation, settings_file::SettingsFileError> {
    let mut command = Cli::command();
    if let Some(path) = config_path() {
        let mut known = settings_file::known_names(&command);
        known.remove("LIENTHONG_AGENT_CONFIG");
        let settings = settings_file::load(&path, &known)?;
        command = settings_file::apply(command, &settings);
    }
    let matches = command.get_matches();
    // A subcommand needs none of the running agent's settings (no --inbox).
    Ok(if matches.subcommand().is_some() {
        Invocation::Subcommand(
            AgentCommand::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()),
        )
    } else {
        Invocation::Run(Box::new(
            Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()),
        ))
    })
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(Invocation::Run(cli)) => cli,
        Ok(Invocation::Subcommand(command)) => return subcommand(command),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // The outbox, reports and kept exports hold personal data.
    lienthong_runtime::private_files();
    lienthong_runtime::run_main(async move {
        let _telemetry = lienthong_telemetry::init(&cli.telemetry, "lienthong-facility-agent")?;
        let shutdown = lienthong_runtime::shutdown_token();
        lienthong_facility_agent::run(cli.agent, shutdown)
            .await
            .context("the facility agent stopped")?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

fn subcommand(command: AgentCommand) -> ExitCode {
    match command.run() {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
