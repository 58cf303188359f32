//! `lienthong keys`: pseudonym key material.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use lienthong_core::PatientKeyer;
use rand::RngCore;

/// Key commands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Print a new random pseudonym key as `<key-id>:<hex>` (store it as a secret, never in git).
    Generate {
        /// Identifier of the key, carried in every event so keys can rotate.
        #[arg(long, default_value = "k1")]
        key_id: String,
    },
}

/// Flags that locate the pseudonym key (env or file; never a literal on the command line).
#[derive(Debug, Clone, clap::Args)]
pub struct PseudonymKeyArgs {
    /// File holding `<key-id>:<hex secret>`.
    #[arg(long = "pseudonym-key-file", env = "LIENTHONG_PSEUDONYM_KEY_FILE")]
    pub file: Option<PathBuf>,
}

impl PseudonymKeyArgs {
    /// Loads the key from LIENTHONG_PSEUDONYM_KEY or the key file.
    pub fn load(&self) -> anyhow::Result<PatientKeyer> {
        let text = match (std::env::var("LIENTHONG_PSEUDONYM_KEY").ok().filter(|v| !v.is_empty()), &self.file) {
            (Some(_), Some(_)) => anyhow::bail!("both LIENTHONG_PSEUDONYM_KEY and a key file are set; keep one"),
            (Some(v), None) => v,
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read pseudonym key file {}", path.display()))?,
            (None, None) => String::new(),
        };
        Ok(PatientKeyer::parse(&text)?)
    }
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Generate { key_id } => {
            let mut secret = [0u8; 32];
            rand::rng().fill_bytes(&mut secret);
            let text = format!("{key_id}:{}", hex::encode(secret));
            PatientKeyer::parse(&text)?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
