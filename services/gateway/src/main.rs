//! `lienthong-gateway`: the ingest gateway binary.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lienthong_gateway::GatewayConfig;
use lienthong_kafka::KafkaArgs;
use lienthong_registry::RegistryArgs;
use lienthong_runtime::PseudonymKeyArgs;
use lienthong_telemetry::TelemetryArgs;

// Many small allocations per event on every hop: mimalloc spends far less time in them
// than the system allocator (measured in the benchmarks, which use the same allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The lienthong ingest gateway.
#[derive(Debug, Parser)]
#[command(
    name = "lienthong-gateway",
    version,
    long_version = lienthong_kafka::build::long_version(env!("CARGO_PKG_VERSION")),
    about
)]
struct Cli {
    #[command(flatten)]
    gateway: GatewayConfig,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    key: PseudonymKeyArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let _telemetry = lienthong_telemetry::init(&cli.telemetry, "lienthong-gateway")?;
    let keyer = cli.key.load()?;
    let listen = cli.gateway.listen();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let shutdown = lienthong_runtime::shutdown_token();
    let grace = Duration::from_secs(cli.gateway.shutdown_grace_secs);
    let server = lienthong_gateway::run(
        cli.gateway,
        cli.kafka,
        cli.registry,
        keyer,
        listener,
        shutdown.clone(),
    );
    // The drain's own deadline, plus a margin for the producer flush that follows it.
    lienthong_runtime::with_deadline(server, &shutdown, grace + Duration::from_secs(5)).await??;
    Ok(())
}

fn main() -> ExitCode {
    lienthong_runtime::run_main(async { serve(Cli::parse()).await.map(|()| ExitCode::SUCCESS) })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
