//! Transport failures of registry calls are tried again before a caller sees them.
//!
//! Every call this crate makes is idempotent: reads, compatibility settings, compatibility
//! checks, and registration (the registry answers the existing id for a schema it already
//! holds). So a call whose answer never arrived (a pooled connection the registry closed, a
//! registry that stalled past the timeout under load) can be made again safely; a refusal the
//! registry did answer is never retried here.

use std::future::Future;
use std::time::Duration;

/// How many times a call is made in all before its transport failure is returned.
pub const ATTEMPTS: u32 = 3;

/// Runs `attempt` until it succeeds, fails in a way `transient` does not call transport, or
/// has been made [`ATTEMPTS`] times; waits 100 ms, then 200 ms, between attempts.
pub async fn transport_failures<T, E, F, Fut>(
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
                tracing::debug!(what, attempt = made, error = %e, "registry call failed in transport; trying again");
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

    #[tokio::test]
    async fn a_transient_failure_is_tried_again_until_it_succeeds() {
        let calls = Cell::new(0);
        let out: Result<u32, String> = transport_failures(
            "test",
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 3 {
                        Err("timed out".into())
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| true,
        )
        .await;
        assert_eq!(out, Ok(3));
    }

    #[tokio::test]
    async fn a_transient_failure_is_returned_after_the_last_attempt() {
        let calls = Cell::new(0);
        let out: Result<(), String> = transport_failures(
            "test",
            || {
                calls.set(calls.get() + 1);
                async { Err("timed out".into()) }
            },
            |_| true,
        )
        .await;
        assert_eq!(out, Err("timed out".into()));
        assert_eq!(calls.get(), ATTEMPTS);
    }

    #[tokio::test]
    async fn an_answered_refusal_is_not_tried_again() {
        let calls = Cell::new(0);
        let out: Result<(), String> = transport_failures(
            "test",
            || {
                calls.set(calls.get() + 1);
                async { Err("HTTP 422".into()) }
            },
            |e: &String| !e.starts_with("HTTP"),
        )
        .await;
        assert!(out.is_err());
        assert_eq!(calls.get(), 1);
    }
}
