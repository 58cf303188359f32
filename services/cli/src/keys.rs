//! `lienthong keys`: pseudonym key material.

use std::process::ExitCode;

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

pub use lienthong_runtime::PseudonymKeyArgs;

pub fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Generate { key_id } => {
            let mut secret = [0u8; 32];
            rand::rng().fill_bytes(&mut secret);
            let text = format!("{key_id}:{}", hex::encode(secret));
            PatientKeyer::parse(&text)
                .map_err(|e| crate::exit::Refused(format!("--key-id: {e}")))?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
