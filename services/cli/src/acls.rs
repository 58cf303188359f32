//! `lienthong acls apply|list`.

use crate::table::{Align, Table};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lienthong_kafka::KafkaArgs;
use lienthong_kafka::acls::{self, AclSpec};

/// ACL commands.
#[derive(Debug, clap::Subcommand)]
pub enum AclsCommand {
    /// Grant what the spec grants and remove what it does not, for the principals it names.
    Apply(AclSpecArgs),
    /// Show the spec's grants and how the cluster differs; exit code 5 when it does.
    List(AclSpecArgs),
}

/// Which spec.
#[derive(Debug, clap::Args)]
pub struct AclSpecArgs {
    /// ACL spec file; the spec shipped with lienthong (deploy/acls.toml) when omitted.
    #[arg(long, env = "LIENTHONG_ACLS_SPEC")]
    spec: Option<PathBuf>,
}

impl AclSpecArgs {
    fn load(&self) -> anyhow::Result<AclSpec> {
        Ok(match &self.spec {
            Some(path) => AclSpec::load(path)?,
            None => AclSpec::parse(acls::DEFAULT_SPEC, Path::new("deploy/acls.toml (built in)"))?,
        })
    }
}

pub fn run(cmd: AclsCommand, kafka: &KafkaArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        AclsCommand::Apply(args) => {
            let spec = args.load()?;
            let changes = acls::apply(kafka, &spec)?;
            for b in &changes.missing {
                println!("granted {b}");
            }
            for b in &changes.extra {
                println!("removed {b}");
            }
            if changes.is_empty() {
                println!(
                    "no changes: {} grants for {} principals match the spec",
                    spec.bindings().len(),
                    spec.principals.len()
                );
            } else {
                println!(
                    "{} change(s) applied",
                    changes.missing.len() + changes.extra.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AclsCommand::List(args) => {
            let spec = args.load()?;
            let found = acls::describe(kafka)?;
            let drift = acls::drift(&spec, &found);
            let mut table = Table::new(&[("STATUS", Align::Left), ("GRANT", Align::Left)]);
            for b in spec.bindings() {
                let status = if drift.missing.contains(&b) {
                    "missing"
                } else {
                    "ok"
                };
                table.row([status.to_owned(), b.to_string()]);
            }
            for b in &drift.extra {
                table.row(["extra".to_owned(), b.to_string()]);
            }
            table.print();
            if drift.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "the cluster differs from the spec ({} missing, {} extra); run `lienthong acls apply`",
                    drift.missing.len(),
                    drift.extra.len()
                );
                Ok(crate::exit::code(crate::exit::DRIFT))
            }
        }
    }
}
