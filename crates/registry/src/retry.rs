//! Transient failures of registry calls are tried again before a caller sees them.
//!
//! Every call this crate makes is idempotent: reads, compatibility settings, compatibility
//! checks, and registration (the registry answers the existing id for a schema it already
//! holds). So a call whose answer never arrived (a pooled connection the registry closed, a
//! registry that stalled past the timeout under load), or that the registry failed itself
//! (5xx, as when a lock in its storage timed out), can be made again safely. A refusal of the
//! request (4xx) is never tried again.

use std::future::Future;
use std::time::Duration;

/// How many times a call is made in all before its transport failure is returned.
pub const ATTEMPTS: u32 = 3;

/// Runs `attempt` until it succeeds, fails in a way `transient` does not call transient, or
/// has been made [`ATTEMPTS`] times; waits 100 ms, then 200 ms, between attempts.
pub async fn transient_failures<T, E, F, Fut>(
    what: &str,
    mut attempt: F,
    transient: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut made = 0u32;
    loop {
        made += 1;
        match attempt().await {
            Err(e) if made < ATTEMPTS && transient(&e) => {
                tracing::debug!(what, attempt = made, error = %e, "registry call failed; trying again");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(made))).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Runs `transient_failures` over an attempt that fails `failures` times with `error`
    /// before it succeeds; its outcome and how many attempts were made.
    async fn attempts(failures: u32, error: &str) -> (Result<u32, String>, u32) {
        let made = Cell::new(0);
        let out = transient_failures(
            "test",
            || {
                made.set(made.get() + 1);
                let n = made.get();
                let error = error.to_owned();
                async move { if n <= failures { Err(error) } else { Ok(n) } }
            },
            |e: &String| !e.starts_with("HTTP 4"),
        )
        .await;
        (out, made.get())
    }

    #[tokio::test]
    async fn a_transient_failure_is_tried_again_until_it_succeeds() {
        assert_eq!(attempts(2, "timed out").await, (Ok(3), 3));
    }

    #[tokio::test]
    async fn a_transient_failure_is_returned_after_the_last_attempt() {
        assert_eq!(
            attempts(ATTEMPTS, "timed out").await,
            (Err("timed out".into()), ATTEMPTS)
        );
    }

    #[tokio::test]
    async fn a_refusal_is_not_tried_again() {
        assert_eq!(attempts(1, "HTTP 422").await, (Err("HTTP 422".into()), 1));
    }
}
