//! How every lienthong binary starts and stops: its async main, the one shutdown path (a
//! `CancellationToken` cancelled at SIGTERM or Ctrl-C), draining owned tasks with a deadline,
//! and loading the pseudonym key at start-up.

pub mod keys;
pub mod private;
pub mod shutdown;

pub use keys::{KeyError, PseudonymKeyArgs};
pub use private::{private_dir, private_file, private_files};
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
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
