//! Backpressure: bounded in-flight events and bytes across all callers (and, in
//! `lienthong_grpc::FacilityRateLimit`, a token bucket per facility). Both answer with how long
//! to wait instead of queueing without bound.

use std::sync::Arc;

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
}
