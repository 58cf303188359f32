//! `lienthong topics apply|list`.

use crate::table::{Align, Table};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lienthong_kafka::KafkaArgs;
use lienthong_kafka::topics::{self, ReplicationOverride, TopicsSpec};

/// Topic commands.
#[derive(Debug, clap::Subcommand)]
pub enum TopicsCommand {
    /// Create missing topics, add partitions and set configs to match the spec; report changes.
    Apply(SpecArgs),
    /// Show the spec's topics as they are on the cluster.
    List(SpecArgs),
}

/// Which spec, with replication overrides for small clusters.
#[derive(Debug, clap::Args)]
pub struct SpecArgs {
    /// Topic spec file; the spec shipped with lienthong when omitted.
    #[arg(long, env = "LIENTHONG_TOPICS_SPEC")]
    spec: Option<PathBuf>,
    /// Replication factor for every topic (e.g. 1 on a single-broker development stack).
    #[arg(long, env = "LIENTHONG_TOPICS_REPLICATION_FACTOR")]
    replication_factor: Option<i32>,
    /// min.insync.replicas for every topic.
    #[arg(long, env = "LIENTHONG_TOPICS_MIN_INSYNC_REPLICAS")]
    min_insync_replicas: Option<i32>,
}

impl SpecArgs {
    fn load(&self) -> anyhow::Result<TopicsSpec> {
        let spec = match &self.spec {
            Some(path) => TopicsSpec::load(path)?,
            None => TopicsSpec::parse(
                topics::DEFAULT_SPEC,
                Path::new("deploy/topics.toml (built in)"),
            )?,
        };
        Ok(spec.with_override(ReplicationOverride {
            replication_factor: self.replication_factor,
            min_insync_replicas: self.min_insync_replicas,
        })?)
    }
}

pub async fn run(cmd: TopicsCommand, kafka: &KafkaArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        TopicsCommand::Apply(args) => {
            let spec = args.load()?;
            let changes = topics::apply(kafka, &spec).await?;
            if changes.is_empty() {
                println!("no changes: {} topics match the spec", spec.topics.len());
            } else {
                for change in &changes {
                    println!("{change}");
                }
                println!("{} change(s) applied", changes.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicsCommand::List(args) => {
            let spec = args.load()?;
            let names: Vec<String> = spec.topics.iter().map(|t| t.name.clone()).collect();
            let found = topics::describe(kafka, &names).await?;
            let mut table = Table::new(&[
                ("TOPIC", Align::Left),
                ("PARTITIONS", Align::Right),
                ("RF", Align::Right),
                ("RETENTION.MS", Align::Right),
                ("CLEANUP", Align::Left),
                ("ISR", Align::Right),
                ("STATUS", Align::Left),
            ]);
            let mut drift = false;
            for t in &spec.topics {
                match found.iter().find(|f| f.name == t.name) {
                    None => {
                        drift = true;
                        table.row([
                            t.name.as_str(),
                            "-",
                            "-",
                            "-",
                            "-",
                            "-",
                            "missing (run `lienthong topics apply`)",
                        ]);
                    }
                    Some(f) => {
                        let get = |k: &str| f.configs.get(k).map(String::as_str).unwrap_or("?");
                        let matches = f.partitions == t.partitions
                            && f.replication_factor == t.replication_factor
                            && t.configs().iter().all(|(k, v)| f.configs.get(k) == Some(v));
                        drift |= !matches;
                        table.row([
                            f.name.clone(),
                            f.partitions.to_string(),
                            f.replication_factor.to_string(),
                            get("retention.ms").to_owned(),
                            get("cleanup.policy").to_owned(),
                            get("min.insync.replicas").to_owned(),
                            if matches { "ok" } else { "differs from spec" }.to_owned(),
                        ]);
                    }
                }
            }
            table.print();
            Ok(if drift {
                crate::exit::code(crate::exit::DRIFT)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
