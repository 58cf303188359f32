//! The one shutdown scheme: a root token cancelled at SIGTERM (what Kubernetes sends) or
//! Ctrl-C; each service's tasks live in a `JoinSet` that is drained with a deadline, after
//! which what is left is aborted, so a stuck task cannot hold a pod past its grace period.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Resolves at SIGTERM or Ctrl-C: the start of a graceful shutdown.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A token cancelled at SIGTERM or Ctrl-C: the one shutdown path of a service's tasks.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let signal = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown_signal() => {
                tracing::info!("shutdown signal: finishing in-flight work");
                signal.cancel();
            }
            // Cancelled by its owner: nothing left to listen for.
            () = signal.cancelled() => {}
        }
    });
    token
}

/// Waits for every task of `tasks` until `deadline`, logging each failure under `what`, then
/// aborts those still running. Returns how many were aborted.
pub async fn drain<E: std::fmt::Display + 'static>(
    tasks: &mut JoinSet<Result<(), E>>,
    what: &str,
    deadline: Duration,
) -> usize {
    let all_done = async {
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "{what} failed"),
                Err(e) if e.is_cancelled() => {}
                Err(e) => tracing::error!(error = %e, "{what} panicked"),
            }
        }
    };
    if tokio::time::timeout(deadline, all_done).await.is_ok() {
        return 0;
    }
    let left = tasks.len();
    tracing::warn!(
        left,
        seconds = deadline.as_secs_f64(),
        "{what}: not finished at the shutdown deadline; aborting"
    );
    tasks.shutdown().await;
    left
}

/// A service that had not stopped `grace` after the shutdown signal.
#[derive(Debug, thiserror::Error)]
#[error("did not stop within {grace:?} of the shutdown signal; stopping regardless")]
pub struct Overrun {
    /// The deadline it had.
    pub grace: Duration,
}

/// Runs `service` to its end, but no longer than `grace` after `shutdown` is cancelled: a
/// drain that hangs (a broker or database gone) cannot hold the process past its deadline.
pub async fn with_deadline<T>(
    service: impl std::future::Future<Output = T>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Result<T, Overrun> {
    tokio::pin!(service);
    tokio::select! {
        out = &mut service => Ok(out),
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            Err(Overrun { grace })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_service_that_outlives_its_deadline_is_cut_off() {
        let shutdown = CancellationToken::new();
        let quick = with_deadline(async { 7 }, &shutdown, Duration::from_secs(1)).await;
        assert_eq!(quick.ok(), Some(7));
        shutdown.cancel();
        let stuck = with_deadline(
            std::future::pending::<()>(),
            &shutdown,
            Duration::from_secs(1),
        );
        assert!(stuck.await.is_err());
    }

    #[tokio::test]
    async fn drain_waits_for_finished_work_and_aborts_what_is_stuck() {
        let mut tasks: JoinSet<Result<(), String>> = JoinSet::new();
        tasks.spawn(async { Ok(()) });
        tasks.spawn(async { Err("a failure is logged, not fatal".to_owned()) });
        assert_eq!(drain(&mut tasks, "task", Duration::from_secs(5)).await, 0);

        tasks.spawn(async { Ok(()) });
        tasks.spawn(std::future::pending());
        let aborted = drain(&mut tasks, "task", Duration::from_millis(100)).await;
        assert_eq!(aborted, 1);
        assert!(tasks.is_empty());
    }
}
