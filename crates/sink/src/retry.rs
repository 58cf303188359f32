//! Retrying a batch step until it succeeds or the service stops.

use std::future::Future;

use lienthong_kafka::consumption::BatchBackoff;
use tokio_util::sync::CancellationToken;

/// The failures of one step so far: each is logged as `what`, counted in `retries` (a counter
/// without labels) and followed by a [`BatchBackoff`] wait.
#[derive(Debug)]
pub struct Retrying {
    what: &'static str,
    retries: &'static str,
    backoff: BatchBackoff,
}

impl Retrying {
    /// A step not failed yet.
    pub fn new(what: &'static str, retries: &'static str) -> Self {
        Self {
            what,
            retries,
            backoff: BatchBackoff::default(),
        }
    }

    /// Records a failure (log and counter); `wait` before the next attempt.
    pub fn failed(&mut self, error: &dyn std::fmt::Display) {
        metrics::counter!(self.retries).increment(1);
        tracing::warn!(error = %error, retry_in = ?self.backoff.next_wait(), "{}; retrying", self.what);
    }

    /// Waits before the next attempt; false when `shutdown` came first (stop trying: the step
    /// is left for the next start).
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        self.backoff.wait(shutdown).await
    }
}

/// Runs `attempt` until it succeeds (see [`Retrying`]). None when `shutdown` came first.
pub async fn retry<T, E, F, Fut>(
    what: &'static str,
    retries: &'static str,
    shutdown: &CancellationToken,
    attempt: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_unless(what, retries, shutdown, attempt, |_| false)
        .await
        .unwrap_or_default()
}

/// Runs `attempt` until it succeeds, as [`retry`] does, except that a failure `lasting` says
/// will not heal by waiting is returned at once. Ok(None) when `shutdown` came first.
pub async fn retry_unless<T, E, F, Fut>(
    what: &'static str,
    retries: &'static str,
    shutdown: &CancellationToken,
    mut attempt: F,
    lasting: impl Fn(&E) -> bool,
) -> Result<Option<T>, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut retrying = Retrying::new(what, retries);
    loop {
        match attempt().await {
            Ok(t) => return Ok(Some(t)),
            Err(e) if lasting(&e) => return Err(e),
            Err(e) => retrying.failed(&e),
        }
        if !retrying.wait(shutdown).await {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_and_gives_up_at_shutdown() {
        let shutdown = CancellationToken::new();
        let failures = std::cell::Cell::new(3u32);
        let got = retry(
            "step failed",
            "lienthong_test_retries_total",
            &shutdown,
            || {
                let left = failures.get();
                failures.set(left.saturating_sub(1));
                async move { if left > 0 { Err("not yet") } else { Ok(7) } }
            },
        )
        .await;
        assert_eq!(got, Some(7));
        shutdown.cancel();
        let never: Option<()> = retry(
            "step failed",
            "lienthong_test_retries_total",
            &shutdown,
            || async { Err::<(), _>("down") },
        )
        .await;
        assert_eq!(never, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lasting_failure_is_returned_at_once() {
        let shutdown = CancellationToken::new();
        let attempts = std::cell::Cell::new(0u32);
        let got: Result<Option<()>, &str> = retry_unless(
            "step failed",
            "lienthong_test_retries_total",
            &shutdown,
            || {
                let n = attempts.get() + 1;
                attempts.set(n);
                async move { Err(if n < 3 { "transient" } else { "disk full" }) }
            },
            |e| *e == "disk full",
        )
        .await;
        assert_eq!(got, Err("disk full"));
        assert_eq!(attempts.get(), 3);
    }
}
