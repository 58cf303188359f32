//! `lienthong-deidentifier`: document topics → de-identified analytics topics.

use std::process::ExitCode;

use clap::Parser;
use lienthong_deidentifier::DeidentifierConfig;
use lienthong_kafka::KafkaArgs;
use lienthong_registry::RegistryArgs;
use lienthong_telemetry::TelemetryArgs;

// Many small allocations per event: mimalloc spends far less time in them than the system
// allocator (as in every lienthong service).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The lienthong de-identification service.
#[derive(Debug, Parser)]
#[command(
    name = "lienthong-deidentifier",
    version,
    long_version = lienthong_kafka::build::long_version(env!("CARGO_PKG_VERSION")),
    about
)]
struct Cli {
    #[command(flatten)]
    service: DeidentifierConfig,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lienthong_runtime::run_main(async move {
        let _telemetry = lienthong_telemetry::init(&cli.telemetry, "lienthong-deidentifier")?;
        let shutdown = lienthong_runtime::shutdown_token();
        let grace = std::time::Duration::from_secs(30);
        let service =
            lienthong_deidentifier::run(cli.service, cli.kafka, cli.registry, shutdown.clone());
        // Time to commit (or abort) the open transaction; an unfinished batch is read again.
        lienthong_runtime::with_deadline(service, &shutdown, grace).await??;
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
