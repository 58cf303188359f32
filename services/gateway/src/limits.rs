//! Backpressure: bounded in-flight events and bytes across all callers, and a token bucket per
//! facility. Both answer with how long to wait instead of queueing without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits held while a request's events are being produced.
pub struct InFlightPermit {
    _events: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

/// Bounds on what is being produced at once.
pub struct InFlight {
    events: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_events: usize,
}

impl InFlight {
    /// At most `events` events and `bytes` bytes at once.
    pub fn new(events: usize, bytes: usize) -> Self {
        Self {
            events: Arc::new(Semaphore::new(events)),
            bytes: Arc::new(Semaphore::new(bytes)),
            max_events: events,
        }
    }

    /// Takes room for a request, or None when the gateway is full.
    pub fn try_acquire(&self, events: usize, bytes: usize) -> Option<InFlightPermit> {
        let e = Arc::clone(&self.events)
            .try_acquire_many_owned(u32::try_from(events).ok()?)
            .ok()?;
        let b = Arc::clone(&self.bytes)
            .try_acquire_many_owned(u32::try_from(bytes).ok()?)
            .ok()?;
        Some(InFlightPermit {
            _events: e,
            _bytes: b,
        })
    }

    /// Events in flight now.
    pub fn in_flight(&self) -> usize {
        self.max_events - self.events.available_permits()
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token bucket per facility (events per second with a burst).
pub struct FacilityRateLimit {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl FacilityRateLimit {
    /// `rate` events/s (0 disables), `burst` events.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n` tokens for `facility`, or says how long until they would be available.
    pub fn try_take(&self, facility: &str, n: usize) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let n = n as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // ~13,000 facilities: one small entry each is a bounded map.
        let b = buckets.entry(facility.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            last: Instant::now(),
        });
        let now = Instant::now();
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= n {
            b.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((n - b.tokens) / self.rate).min(60.0),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_is_bounded_and_released() {
        let f = InFlight::new(10, 1000);
        let a = f.try_acquire(8, 100).expect("room");
        assert!(f.try_acquire(3, 10).is_none());
        assert_eq!(f.in_flight(), 8);
        drop(a);
        assert!(f.try_acquire(10, 1000).is_some());
        assert!(f.try_acquire(1, 1001).is_none());
    }

    #[test]
    fn rate_limit_allows_burst_then_asks_to_wait() {
        let r = FacilityRateLimit::new(10.0, 20.0);
        assert!(r.try_take("01001", 20).is_ok());
        let wait = r.try_take("01001", 5).expect_err("over the limit");
        assert!(
            wait > Duration::from_millis(300) && wait < Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(r.try_take("01002", 5).is_ok(), "buckets are per facility");
        assert!(
            FacilityRateLimit::new(0.0, 1.0)
                .try_take("x", 1_000_000)
                .is_ok()
        );
    }
}
