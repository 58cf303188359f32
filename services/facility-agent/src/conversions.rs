//! How many exports and event batches the agent converts at once, across the inbox and the
//! local intakes. A conversion holds its input and the parsed tables, several times the
//! input's size (about seven times measured), so without a bound a HIS posting many large
//! exports in parallel could take all the memory of the server the agent shares with it, and
//! stop delivery of everything already queued. Conversions also run on blocking threads, so the sender and the status
//! answer while a large export is parsed.
//!
//! Callers that wait on an answer (HTTP, gRPC) wait a bounded time for a turn, then are told
//! to retry; the inbox waits as long as it takes (its files stay where they are meanwhile).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The agent's conversion turns, shared by every intake.
#[derive(Debug, Clone)]
pub struct Conversions {
    turns: Arc<Semaphore>,
    at_once: usize,
    wait: Duration,
}

/// No conversion turn came free within the wait.
#[derive(Debug, thiserror::Error)]
#[error(
    "the facility agent is converting {at_once} other request(s) or export(s) and none finished within {waited:?}; nothing of this request was queued: send it again in a few seconds (or raise --conversions if the server has memory to spare)"
)]
pub struct Busy {
    /// Conversions allowed at once.
    pub at_once: usize,
    /// How long this request waited.
    pub waited: Duration,
}

/// A conversion turn: held while the input is read and converted.
#[derive(Debug)]
pub struct Turn {
    // Given back to the semaphore when dropped.
    _permit: OwnedSemaphorePermit,
}

impl Conversions {
    /// `at_once` conversions at a time (at least one); answering callers wait `wait` at most.
    pub fn new(at_once: usize, wait: Duration) -> Self {
        let at_once = at_once.max(1);
        Self {
            turns: Arc::new(Semaphore::new(at_once)),
            at_once,
            wait,
        }
    }

    /// A turn for a caller waiting on an answer, or [`Busy`] after the configured wait.
    pub async fn admit(&self) -> Result<Turn, Busy> {
        match tokio::time::timeout(self.wait, Arc::clone(&self.turns).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Turn { _permit: permit }),
            // The semaphore is never closed; a closed one is treated as busy.
            Ok(Err(_)) | Err(_) => {
                metrics::counter!(crate::metrics::INTAKE_BUSY.name).increment(1);
                Err(Busy {
                    at_once: self.at_once,
                    waited: self.wait,
                })
            }
        }
    }

    /// A turn for the inbox, which can wait as long as it takes.
    pub async fn queue(&self) -> Turn {
        loop {
            if let Ok(permit) = Arc::clone(&self.turns).acquire_owned().await {
                return Turn { _permit: permit };
            }
        }
    }
}

impl Turn {
    /// Runs `work` on a blocking thread, holding this turn until it is done.
    pub async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<T> {
        tokio::task::spawn_blocking(move || {
            let _turn = self;
            work()
        })
        .await
        .map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_caller_waits_for_a_turn_and_is_told_to_retry_when_none_comes() {
        let conversions = Conversions::new(1, Duration::from_millis(100));
        let held = conversions.admit().await.expect("the only turn");
        let busy = conversions.admit().await.expect_err("no turn free");
        let message = busy.to_string();
        assert!(
            message.contains("converting 1 other")
                && message.contains("nothing of this request was queued")
                && message.contains("send it again"),
            "{message}"
        );
        // A turn given back within the wait is taken by the one waiting.
        let waiting = tokio::spawn({
            let conversions = conversions.clone();
            async move { conversions.admit().await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(waiting.await.expect("joined"));
    }

    #[tokio::test]
    async fn work_runs_off_the_async_threads_and_holds_its_turn_until_done() {
        let conversions = Conversions::new(1, Duration::from_millis(50));
        let turn = conversions.queue().await;
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (finish_tx, finish_rx) = std::sync::mpsc::channel::<()>();
        let work = tokio::spawn(turn.run(move || {
            started_tx.send(()).expect("started");
            finish_rx.recv().expect("told to finish");
            7
        }));
        tokio::task::spawn_blocking(move || started_rx.recv().expect("work started"))
            .await
            .expect("joined");
        assert!(
            conversions.admit().await.is_err(),
            "the turn is held while the work runs"
        );
        finish_tx.send(()).expect("finish");
        assert_eq!(work.await.expect("joined").expect("ran"), 7);
        assert!(conversions.admit().await.is_ok(), "and given back after");
    }
}
