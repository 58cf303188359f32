//! `lienthong tokens issue`: bearer tokens for facilities that do not use client certificates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Token commands.
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Print a signed bearer token (HS256) for a facility.
    Issue {
        /// Facility code the token speaks for.
        #[arg(long)]
        facility: String,
        /// The gateway's token key file (the same as its --token-key-file).
        #[arg(long, env = "LIENTHONG_GATEWAY_TOKEN_KEY_FILE")]
        key_file: PathBuf,
        /// Audience (the gateway's --token-audience).
        #[arg(long, default_value = "lienthong-gateway")]
        audience: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 30 * 24 * 3600)]
        ttl_secs: u64,
    },
}

pub fn run(cmd: TokensCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokensCommand::Issue {
            facility,
            key_file,
            audience,
            ttl_secs,
        } => {
            let secret = std::fs::read(&key_file)
                .with_context(|| format!("cannot read {}", key_file.display()))?;
            let token = lienthong_gateway::identity::issue_token(
                secret.trim_ascii(),
                &audience,
                &facility,
                ttl_secs,
            )
            .map_err(anyhow::Error::msg)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
