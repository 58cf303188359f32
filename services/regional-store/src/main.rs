//! `lienthong-regional-store`: per-province materialized views and the clinician query API.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use lienthong_kafka::KafkaArgs;
use lienthong_regional_store::config::RegionalConfig;
use lienthong_registry::RegistryArgs;
use lienthong_runtime::PseudonymKeyArgs;
use lienthong_telemetry::TelemetryArgs;

// Many small allocations per event on every hop: mimalloc spends far less time in them
// than the system allocator (measured in the benchmarks, which use the same allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The lienthong regional store.
#[derive(Debug, Parser)]
#[command(
    name = "lienthong-regional-store",
    version,
    long_version = lienthong_kafka::build::long_version(env!("CARGO_PKG_VERSION")),
    about
)]
struct Cli {
    #[command(flatten)]
    regional: RegionalConfig,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    key: PseudonymKeyArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    /// Instead of serving: rebuild this region's store from the topics beside the live one,
    /// which keeps serving and swaps the rebuild in within seconds (a stopped store at its
    /// next start).
    #[arg(long, value_name = "REGION")]
    rebuild: Option<String>,
}

fn main() -> ExitCode {
    lienthong_regional_store::memory::disable_transparent_huge_pages();
    let cli = Cli::parse();
    // The stores hold every patient's documents of their regions.
    lienthong_runtime::private_files();
    lienthong_runtime::run_main(async move {
        let _telemetry = lienthong_telemetry::init(&cli.telemetry, "lienthong-regional-store")?;
        if let Some(region) = &cli.rebuild {
            let codec = std::sync::Arc::new(lienthong_registry::WireCodec::new(&cli.registry)?);
            cli.kafka.probe().await?;
            let docs = lienthong_regional_store::rebuild::rebuild(
                &cli.regional,
                region,
                &cli.kafka,
                codec,
            )
            .await?;
            println!(
                "region {region} rebuilt: {docs} documents; {}",
                lienthong_regional_store::rebuild::SWAPPED_IN
            );
            return anyhow::Ok(ExitCode::SUCCESS);
        }
        let keyer = cli.key.load()?;
        let listen = cli.regional.listen();
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let shutdown = lienthong_runtime::shutdown_token();
        lienthong_regional_store::server::run(
            cli.regional,
            cli.kafka,
            cli.registry,
            keyer,
            listener,
            shutdown,
        )
        .await?;
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
