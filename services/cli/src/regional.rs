//! `lienthong regional`: operating the regional stores.

use std::process::ExitCode;
use std::sync::Arc;

use lienthong_kafka::KafkaArgs;
use lienthong_regional_store::config::RegionalConfig;
use lienthong_registry::{RegistryArgs, WireCodec};

/// Regional store commands.
#[derive(Debug, clap::Subcommand)]
pub enum RegionalCommand {
    /// Replay the topics from the beginning into a fresh store beside the live one
    /// (`<data-dir>/region-<code>.rebuild`); the live store keeps serving, and the store
    /// swaps the rebuilt one in at its next start.
    Rebuild {
        /// Region (2025 province code) to rebuild.
        #[arg(long)]
        region: String,
        #[command(flatten)]
        config: Box<RegionalConfig>,
    },
}

/// Runs a regional command.
pub async fn run(
    cmd: RegionalCommand,
    kafka: &KafkaArgs,
    registry: &RegistryArgs,
) -> anyhow::Result<ExitCode> {
    match cmd {
        RegionalCommand::Rebuild { region, config } => {
            kafka.probe()?;
            let codec = Arc::new(WireCodec::new(registry)?);
            let docs =
                lienthong_regional_store::rebuild::rebuild(&config, &region, kafka, codec).await?;
            println!(
                "region {region} rebuilt in {}: {docs} documents; a running store swaps it in within seconds, a stopped one at its next start",
                config.data_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
