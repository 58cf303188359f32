//! `lienthong-gateway`: the ingest gateway binary.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lienthong_gateway::GatewayConfig;
use lienthong_gateway::keys::PseudonymKeyArgs;
use lienthong_kafka::KafkaArgs;
use lienthong_registry::RegistryArgs;
use lienthong_telemetry::TelemetryArgs;
use tokio_util::sync::CancellationToken;

// Many small allocations per event on every hop: mimalloc spends far less time in them
// than the system allocator (measured in the benchmarks, which use the same allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The lienthong ingest gateway.
#[derive(Debug, Parser)]
#[command(name = "lienthong-gateway", version, about)]
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
    lienthong_telemetry::init(&cli.telemetry)?;
    let keyer = cli.key.load()?;
    let listener = tokio::net::TcpListener::bind(cli.gateway.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.gateway.listen))?;
    let shutdown = CancellationToken::new();
    let grace = Duration::from_secs(cli.gateway.shutdown_grace_secs);
    let signal = shutdown.clone();
    tokio::spawn(async move {
        lienthong_telemetry::shutdown_signal().await;
        tracing::info!("shutdown signal: draining");
        signal.cancel();
    });
    let server = lienthong_gateway::run(
        cli.gateway,
        cli.kafka,
        cli.registry,
        keyer,
        listener,
        shutdown.clone(),
    );
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r?,
        // After the signal, give the drain its deadline, then stop regardless.
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace + Duration::from_secs(5)).await } => {
            anyhow::bail!("drain did not finish within {grace:?}; stopping");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    lienthong_telemetry::run_main(async { serve(Cli::parse()).await.map(|()| ExitCode::SUCCESS) })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
