//! The `lienthong` command for operators and analysts.

mod acls;
mod agent;
mod analytics;
mod audit;
mod demo;
mod dlq;
mod exit;
mod facilities;
mod keys;
mod publish;
mod regional;
mod schemas;
mod table;
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
    #[command(flatten, next_help_heading = "Logging")]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update the Kafka topics from the topic spec.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
        #[command(flatten, next_help_heading = "Kafka connection")]
        kafka: KafkaArgs,
    },
    /// Grant each Kafka principal what the ACL spec says, and show drift.
    Acls {
        #[command(subcommand)]
        command: acls::AclsCommand,
        #[command(flatten, next_help_heading = "Kafka connection")]
        kafka: KafkaArgs,
    },
    /// Show this build's version and the security features it was built with.
    Version,
    /// Register and check the event schemas in the schema registry.
    Schemas {
        #[command(subcommand)]
        command: schemas::SchemasCommand,
        #[command(flatten, next_help_heading = "Schema registry")]
        registry: RegistryArgs,
    },
    /// Print a topic's messages as JSON, decoded through the schema registry.
    Tail {
        #[command(flatten)]
        args: tail::TailArgs,
        #[command(flatten, next_help_heading = "Kafka connection")]
        kafka: KafkaArgs,
        #[command(flatten, next_help_heading = "Schema registry")]
        registry: RegistryArgs,
    },
    /// Publish events to the gateway (from a JSON Lines file, or synthetic ones).
    Publish(publish::PublishArgs),
    /// The facility directory: check a file, print the synthetic data's.
    #[command(subcommand)]
    Facilities(facilities::FacilitiesCommand),
    /// Bearer tokens for facilities.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Publish synthetic events and read them back: a first end-to-end check of a stack.
    Demo {
        #[command(flatten)]
        args: demo::DemoArgs,
        #[command(flatten, next_help_heading = "Kafka connection")]
        kafka: KafkaArgs,
        #[command(flatten, next_help_heading = "Schema registry")]
        registry: RegistryArgs,
    },
    /// Dead letters: list, show, replay.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
        #[command(flatten, next_help_heading = "Kafka connection")]
        kafka: KafkaArgs,
        #[command(flatten, next_help_heading = "Schema registry")]
        registry: RegistryArgs,
    },
    /// Pseudonym keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Regional stores: query a patient's record and the facility lists, acknowledge a
    /// referral, rebuild a store from the topics.
    #[command(subcommand)]
    Regional(regional::RegionalCommand),
    /// The facility agent: status, retry of rejected events.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// MoH XML exports (QĐ 130/4750/3176): convert to events.
    #[command(subcommand)]
    Xml(xml::XmlCommand),
    /// The access audit: who accessed a patient's record (for a privacy officer).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// De-identified analytics: the re-identification risk being measured.
    #[command(subcommand)]
    Analytics(analytics::AnalyticsCommand),
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
        let _telemetry = lienthong_telemetry::init(&cli.telemetry, "lienthong")?;
        match cli.command {
            Command::Topics { command, kafka } => topics::run(command, &kafka).await,
            Command::Acls { command, kafka } => acls::run(command, &kafka),
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
            Command::Schemas { command, registry } => schemas::run(command, &registry).await,
            Command::Tail {
                args,
                kafka,
                registry,
            } => tail::run(args, &kafka, &registry).await,
            Command::Demo {
                args,
                kafka,
                registry,
            } => demo::run(args, &kafka, &registry).await,
            Command::Keys(cmd) => keys::run(cmd),
            Command::Dlq {
                command,
                kafka,
                registry,
            } => dlq::run(command, &kafka, &registry).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Tokens(cmd) => tokens::run(cmd).await,
            Command::Facilities(cmd) => facilities::run(cmd),
            Command::Regional(cmd) => regional::run(cmd).await,
            Command::Xml(cmd) => xml::run(cmd),
            Command::Agent(cmd) => agent::run(cmd),
            Command::Audit(cmd) => audit::run(cmd).await,
            Command::Analytics(cmd) => analytics::run(cmd).await,
        }
        }
        .await;
        // An error is printed once, with its causes; its exit code says retry or fix.
        Ok::<_, anyhow::Error>(outcome.unwrap_or_else(|e| {
            // Causes can quote what a server answered: shown, never obeyed by the terminal.
            eprintln!(
                "error: {}",
                lienthong_core::printable::printable_lines(&format!("{e:#}"))
            );
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

    /// The long help of `lienthong <path…>`.
    fn help(path: &[&str]) -> String {
        use clap::CommandFactory;
        let mut cmd = super::Cli::command();
        cmd.build();
        let mut sub = &mut cmd;
        for name in path {
            sub = sub
                .find_subcommand_mut(name)
                .unwrap_or_else(|| panic!("no subcommand {name}"));
        }
        sub.render_long_help().to_string()
    }

    #[test]
    fn each_subcommand_shows_only_the_flags_it_uses() {
        let kafka = "--kafka-bootstrap";
        let registry = "--registry-url";
        for path in [
            &["tokens", "issue"][..],
            &["publish"],
            &["xml", "convert"],
            &["facilities", "check"],
            &["keys", "generate"],
            &["agent", "status"],
            &["regional", "record"],
            &["regional", "acknowledge"],
            &["version"],
        ] {
            let text = help(path);
            assert!(
                !text.contains(kafka) && !text.contains(registry),
                "lienthong {} lists Kafka or registry flags:\n{text}",
                path.join(" ")
            );
        }
        for path in [&["topics", "list"][..], &["acls", "apply"]] {
            let text = help(path);
            assert!(
                text.contains(kafka) && !text.contains(registry),
                "{path:?}:\n{text}"
            );
        }
        for path in [&["schemas", "register"][..], &["schemas", "list"]] {
            let text = help(path);
            assert!(
                !text.contains(kafka) && text.contains(registry),
                "{path:?}:\n{text}"
            );
        }
        for path in [
            &["tail"][..],
            &["dlq", "list"],
            &["demo"],
            &["regional", "rebuild"],
        ] {
            let text = help(path);
            assert!(
                text.contains(kafka) && text.contains(registry),
                "{path:?}:\n{text}"
            );
        }
        // Logging applies everywhere; no command takes the SASL password itself.
        assert!(help(&["tokens", "issue"]).contains("--log-format"));
        assert!(!help(&["tail"]).contains("--kafka-sasl-password "));
    }
}
