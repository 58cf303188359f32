//! `lienthong-warehouse-loader`: Kafka → PostgreSQL national warehouse.

use std::process::ExitCode;

use clap::Parser;
use lienthong_kafka::KafkaArgs;
use lienthong_registry::RegistryArgs;
use lienthong_telemetry::TelemetryArgs;
use lienthong_warehouse_loader::LoaderConfig;

// Many small allocations per event on every hop: mimalloc spends far less time in them
// than the system allocator (measured in the benchmarks, which use the same allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The lienthong warehouse loader.
#[derive(Debug, Parser)]
#[command(
    name = "lienthong-warehouse-loader",
    version,
    long_version = lienthong_kafka::build::long_version(env!("CARGO_PKG_VERSION")),
    about
)]
struct Cli {
    #[command(flatten)]
    loader: LoaderConfig,
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
        let _telemetry = lienthong_telemetry::init(&cli.telemetry, "lienthong-warehouse-loader")?;
        let shutdown = lienthong_runtime::shutdown_token();
        let grace = std::time::Duration::from_secs(30);
        let loader =
            lienthong_warehouse_loader::run(cli.loader, cli.kafka, cli.registry, shutdown.clone());
        // Time to finish (or roll back) the open batch; an unfinished one is read again.
        lienthong_runtime::with_deadline(loader, &shutdown, grace).await??;
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
