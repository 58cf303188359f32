//! A token bucket per calling facility: how many events it may publish, or patient records it
//! may read, per second, with a burst. Answers how long to wait instead of queueing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token bucket per facility (units per second with a burst).
pub struct FacilityRateLimit {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl FacilityRateLimit {
    /// `rate` units/s (0 disables), `burst` units.
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
