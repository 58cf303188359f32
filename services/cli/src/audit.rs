//! `lienthong audit`: answering a patient's request to know who accessed their record, from
//! the warehouse's access table (`restricted.accesses`), as a privacy officer.

use std::process::ExitCode;

use lienthong_core::PersonId;
use lienthong_runtime::PseudonymKeyArgs;
use lienthong_warehouse_loader::PgSettings;
use lienthong_warehouse_loader::accesses::{AccessRow, accesses_of};

use crate::regional::Format;
use crate::table::{Align, Table};

/// Access audit commands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Every access decision about one patient's record (allowed, refused, break-the-glass),
    /// oldest first: who (facility and individual), when, how, why and what was decided.
    Accesses {
        /// The patient's citizen ID (or old ID card / passport number), as on SO_CCCD; its
        /// pseudonymous key is computed here, the ID itself is sent nowhere.
        #[arg(long)]
        citizen_id: String,
        /// Output format: a table for people, a JSON array for scripts.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[command(flatten, next_help_heading = "Pseudonym key")]
        key: PseudonymKeyArgs,
        #[command(
            flatten,
            next_help_heading = "Warehouse database (a privacy officer's role)"
        )]
        pg: PgSettings,
    },
}

/// Runs an audit command.
pub async fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Accesses {
            citizen_id,
            format,
            key,
            pg,
        } => {
            let person =
                // Refused as given (3), as the regional store refuses a malformed ID.
                PersonId::parse(&citizen_id)
                    .map_err(|e| crate::exit::Refused(format!("--citizen-id: {e}")))?;
            let keyer = key.load()?;
            let keys: Vec<String> = keyer
                .all_keys_for(&person)
                .into_iter()
                .map(|k| k.value)
                .collect();
            let client = pg.connect().await?;
            let accesses = accesses_of(&client, &keys).await.map_err(|e| {
                let denied = e.as_db_error().is_some_and(|d| {
                    d.code() == &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE
                });
                if denied {
                    anyhow::anyhow!(
                        "{}: this role may not read restricted.accesses; connect as a privacy \
                         officer (a member of the loader's --privacy-role, lienthong_privacy by \
                         default) with --pg-dsn and --pg-password-file",
                        pg.redacted()
                    )
                } else {
                    anyhow::Error::new(e).context("reading restricted.accesses")
                }
            })?;
            show(format, &accesses)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn show(format: Format, accesses: &[AccessRow]) -> anyhow::Result<()> {
    // Vietnam time: the answer is for a patient.
    let at = |a: &AccessRow| {
        a.at.to_offset(lienthong_core::datetime::VIETNAM)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    match format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = accesses
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "at": at(a),
                        "caller_facility": a.caller_facility,
                        "caller_individual": a.caller_individual,
                        "auth_method": a.auth_method,
                        "method": a.method,
                        "purpose": a.purpose,
                        "decision": a.decision,
                        "reason": a.reason,
                        "results": a.results,
                        "request_id": a.request_id,
                        "client_address": a.client_address,
                        "audit_id": a.audit_id,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Table => {
            let mut t = Table::new(&[
                ("AT", Align::Left),
                ("FACILITY", Align::Left),
                ("INDIVIDUAL", Align::Left),
                ("METHOD", Align::Left),
                ("PURPOSE", Align::Left),
                ("DECISION", Align::Left),
                ("REASON", Align::Left),
            ]);
            for a in accesses {
                t.row([
                    at(a),
                    a.caller_facility.clone(),
                    a.caller_individual.clone(),
                    a.method.clone(),
                    a.purpose
                        .trim_start_matches("PURPOSE_OF_USE_")
                        .to_lowercase(),
                    a.decision.clone(),
                    a.reason.clone(),
                ]);
            }
            t.print();
            eprintln!("{} access(es)", t.len());
        }
    }
    Ok(())
}
