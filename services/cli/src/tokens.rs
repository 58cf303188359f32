//! `lienthong tokens issue`: bearer tokens for facilities that do not use client certificates.

use std::path::PathBuf;
use std::process::ExitCode;

/// Token commands.
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Print a signed bearer token (HS256) for a facility.
    Issue {
        /// Facility code the token speaks for.
        #[arg(long)]
        facility: String,
        /// The token key file (the same as the services' --token-key-file).
        #[arg(long, env = "LIENTHONG_TOKEN_KEY_FILE")]
        key_file: PathBuf,
        /// Audience (the --token-audience of the services the token is for).
        #[arg(long, default_value = lienthong_grpc::DEFAULT_AUDIENCE)]
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
            let secret = lienthong_grpc::read_token_secret(&key_file)?;
            let token = lienthong_grpc::issue_token(&secret, &audience, &facility, ttl_secs)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
