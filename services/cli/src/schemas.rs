//! `lienthong schemas register|check|list`.

use crate::table::{Align, Table};
use std::path::PathBuf;
use std::process::ExitCode;

use lienthong_registry::{RegistryArgs, RegistryClient, SchemaSet};

/// Schema commands.
#[derive(Debug, clap::Subcommand)]
pub enum SchemasCommand {
    /// Register every .proto of the contract (imports as references), BACKWARD compatibility.
    Register(ProtoDirArgs),
    /// Check that the .proto files are compatible with what is registered; exit 3 if not.
    Check(ProtoDirArgs),
    /// Check that every subject's latest version is this contract's file (what producers frame
    /// with); exit 5 if one is missing or another version came later.
    Verify(ProtoDirArgs),
    /// List subjects with their versions and compatibility level.
    List,
}

/// Where the .proto files come from.
#[derive(Debug, clap::Args)]
pub struct ProtoDirArgs {
    /// Proto root holding lienthong/v1/*.proto; the contract built into this binary when omitted.
    #[arg(long, env = "LIENTHONG_PROTO_DIR")]
    proto_dir: Option<PathBuf>,
}

impl ProtoDirArgs {
    fn load(&self) -> anyhow::Result<SchemaSet> {
        Ok(match &self.proto_dir {
            Some(dir) => SchemaSet::from_dir(dir)?,
            None => SchemaSet::built_in(),
        })
    }
}

pub async fn run(cmd: SchemasCommand, registry: &RegistryArgs) -> anyhow::Result<ExitCode> {
    let client = RegistryClient::new(registry)?;
    match cmd {
        SchemasCommand::Register(args) => {
            let registered = args.load()?.register(&client).await?;
            let mut table = Table::new(&[
                ("SUBJECT", Align::Left),
                ("VERSION", Align::Right),
                ("ID", Align::Right),
                ("", Align::Left),
            ]);
            for r in &registered {
                table.row([
                    r.subject.clone(),
                    r.version.to_string(),
                    r.id.to_string(),
                    if r.created { "registered" } else { "unchanged" }.to_owned(),
                ]);
            }
            table.print();
            Ok(ExitCode::SUCCESS)
        }
        SchemasCommand::Check(args) => {
            let mut ok = true;
            for (subject, result) in args.load()?.check(&client).await? {
                if result.compatible {
                    println!("{subject}: compatible");
                } else {
                    ok = false;
                    println!("{subject}: INCOMPATIBLE");
                    for m in &result.messages {
                        println!("  - {m}");
                    }
                }
            }
            if !ok {
                eprintln!(
                    "error: incompatible schema change; keep field numbers and types, add new fields instead"
                );
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                crate::exit::code(crate::exit::REFUSED)
            })
        }
        SchemasCommand::Verify(args) => {
            let standing = args.load()?.standing(&client).await?;
            let mut table = Table::new(&[
                ("SUBJECT", Align::Left),
                ("THIS CONTRACT", Align::Right),
                ("LATEST", Align::Right),
                ("", Align::Left),
            ]);
            let version = |v: Option<u32>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            for s in &standing {
                let state = match (s.holds, s.latest) {
                    _ if s.is_current() => "current",
                    (None, _) => "not registered",
                    (Some(_), _) => "a later version is registered",
                };
                table.row([
                    s.subject.clone(),
                    version(s.holds),
                    version(s.latest),
                    state.to_owned(),
                ]);
            }
            table.print();
            if standing.iter().all(|s| s.is_current()) {
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!(
                "the registry differs from this contract: `lienthong schemas register` registers what is missing; a later version was registered from another copy of the contract (another release, or tests run against this registry)"
            );
            Ok(crate::exit::code(crate::exit::DRIFT))
        }
        SchemasCommand::List => {
            let mut table = Table::new(&[
                ("SUBJECT", Align::Left),
                ("COMPATIBILITY", Align::Left),
                ("VERSIONS (schema ids)", Align::Left),
            ]);
            for subject in client.subjects().await? {
                let compat = client
                    .compatibility(&subject)
                    .await?
                    .unwrap_or_else(|| "(global)".into());
                let mut versions = Vec::new();
                for v in client.versions(&subject).await? {
                    versions.push(format!(
                        "{v} (id {})",
                        client.version_id(&subject, v).await?
                    ));
                }
                table.row([subject, compat, versions.join(", ")]);
            }
            table.print();
            Ok(ExitCode::SUCCESS)
        }
    }
}
