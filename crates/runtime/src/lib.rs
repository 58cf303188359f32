//! How every lienthong binary starts and stops: its async main, the one shutdown path (a
//! `CancellationToken` cancelled at SIGTERM or Ctrl-C), draining owned tasks with a deadline,
//! loading the pseudonym key at start-up, and reading secrets only from private files.

pub mod keys;
pub mod private;
pub mod secrets;
pub mod shutdown;

pub use keys::{KeyError, PseudonymKeyArgs};
pub use private::{drop_dir, private_dir, private_file, private_files};
pub use secrets::{SecretFileError, check_private, read_secret};
pub use shutdown::{Overrun, drain, shutdown_signal, shutdown_token, with_deadline};

/// Runs a binary's async main on a multi-threaded Tokio runtime; an error is printed once,
/// with its causes (`{:#}`), and turns into a failing exit code.
pub fn run_main<F, E>(main: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<std::process::ExitCode, E>>,
    E: std::fmt::Display,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(code) => code,
        Err(e) => {
            // Causes can quote what a server or a file held: shown, never obeyed by the
            // terminal.
            eprintln!(
                "error: {}",
                lienthong_core::printable::printable_lines(&format!("{e:#}"))
            );
            std::process::ExitCode::FAILURE
        }
    }
}

/// Settings of type `T` (a clap `Args` group) as the environment gives them, with the defaults
/// of its flags: what a test or a tool embedding lienthong reads without a command line.
pub fn settings_from_env<T: clap::Args + clap::FromArgMatches>() -> Result<T, clap::Error> {
    let command = T::augment_args(clap::Command::new("lienthong").no_binary_name(true));
    let matches = command.try_get_matches_from(std::iter::empty::<String>())?;
    T::from_arg_matches(&matches)
}
