//! The `lienthong` command for operators and analysts.

mod acls;
mod agent;
mod demo;
mod dlq;
mod exit;
mod facilities;
mod keys;
mod publish;
mod regional;
mod schemas;
mod tail;
mod tokens;
mod topics;
mod xml;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lienthong_kafka::KafkaArgs;
use lienthong_registry::RegistryArgs;
use lienthong_telemetry::TelemetryArgs;

/// lienthong: the health-event backbone's operator and analyst tool.
#[derive(Debug, Parser)]
#[command(
    name = "lienthong",
    version,
    long_version = lienthong_kafka::build::long_version(env!("CARGO_PKG_VERSION")),
    about
)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update the Kafka topics from the topic spec.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Grant each Kafka principal what the ACL spec says, and show drift.
    #[command(subcommand)]
    Acls(acls::AclsCommand),
    /// Show this build's version and the security features it was built with.
    Version,
    /// Register and check the event schemas in the schema registry.
    #[command(subcommand)]
    Schemas(schemas::SchemasCommand),
    /// Print a topic's messages as JSON, decoded through the schema registry.
    Tail(tail::TailArgs),
    /// Publish events to the gateway (from a JSON Lines file, or synthetic ones).
    Publish(publish::PublishArgs),
    /// The facility directory: check a file, print the synthetic data's.
    #[command(subcommand)]
    Facilities(facilities::FacilitiesCommand),
    /// Bearer tokens for facilities.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Publish synthetic events and read them back: a first end-to-end check of a stack.
    Demo(demo::DemoArgs),
    /// Dead letters: list, show, replay.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Pseudonym keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Regional stores: rebuild from the topics.
    #[command(subcommand)]
    Regional(regional::RegionalCommand),
    /// The facility agent: status, retry of rejected events.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// MoH XML exports (QĐ 130/4750/3176): convert to events.
    #[command(subcommand)]
    Xml(xml::XmlCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return if e.use_stderr() {
                exit::code(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    lienthong_runtime::run_main(async {
        let outcome = async {
        lienthong_telemetry::init(&cli.telemetry)?;
        match cli.command {
            Command::Topics(cmd) => topics::run(cmd, &cli.kafka).await,
            Command::Acls(cmd) => acls::run(cmd, &cli.kafka),
            Command::Version => {
                println!("lienthong {}", env!("CARGO_PKG_VERSION"));
                println!(
                    "{}",
                    lienthong_kafka::build::ClientFeatures::of_this_build().summary()
                );
                println!("registry: HTTPS (rustls), private CA with --registry-tls-ca");
                println!("gateway and regional query API: TLS and mutual TLS (rustls)");
                println!(
                    "postgresql (warehouse loader): TLS verify-full (OpenSSL), private CA with --pg-tls-ca"
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Schemas(cmd) => schemas::run(cmd, &cli.registry).await,
            Command::Tail(args) => tail::run(args, &cli.kafka, &cli.registry).await,
            Command::Demo(args) => demo::run(args, &cli.kafka, &cli.registry).await,
            Command::Keys(cmd) => keys::run(cmd),
            Command::Dlq(cmd) => dlq::run(cmd, &cli.kafka, &cli.registry).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Tokens(cmd) => tokens::run(cmd),
            Command::Facilities(cmd) => facilities::run(cmd),
            Command::Regional(cmd) => regional::run(cmd, &cli.kafka, &cli.registry).await,
            Command::Xml(cmd) => xml::run(cmd),
            Command::Agent(cmd) => agent::run(cmd),
        }
        }
        .await;
        // An error is printed once, with its causes; its exit code says retry or fix.
        Ok::<_, anyhow::Error>(outcome.unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            exit::code(exit::of_error(&e))
        }))
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
