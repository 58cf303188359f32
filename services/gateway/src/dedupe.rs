//! A bounded memory of accepted event_ids, so a retry is answered DUPLICATE without producing
//! again. Correctness does not depend on it: every sink dedupes by event_id too.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where an accepted event was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// SHA-256 of the event as its publisher sent it, so a reused event_id with other content
    /// is told from a retry.
    pub content: [u8; 32],
}

struct Inner {
    map: HashMap<String, (Instant, Location)>,
    order: VecDeque<(Instant, String)>,
}

/// Accepted event_ids within a time window, at most `capacity` of them.
pub struct DuplicateCache {
    inner: Mutex<Inner>,
    window: Duration,
    capacity: usize,
}

impl DuplicateCache {
    /// A cache remembering up to `capacity` ids for `window`.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            window,
            capacity: capacity.max(1),
        }
    }

    /// Where `event_id` was stored, if it was accepted within the window.
    pub fn get(&self, event_id: &str) -> Option<Location> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .map
            .get(event_id)
            .filter(|(at, _)| at.elapsed() < self.window)
            .map(|(_, l)| l.clone())
    }

    /// Remembers an accepted event.
    pub fn insert(&self, event_id: String, location: Location) {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Evict expired entries and, beyond capacity, the oldest: memory stays bounded.
        while let Some((at, id)) = inner.order.front().cloned() {
            if at.elapsed() >= self.window || inner.order.len() >= self.capacity {
                inner.order.pop_front();
                if inner.map.get(&id).is_some_and(|(t, _)| *t == at) {
                    inner.map.remove(&id);
                }
            } else {
                break;
            }
        }
        inner.order.push_back((now, event_id.clone()));
        inner.map.insert(event_id, (now, location));
    }

    /// Number of remembered ids.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(o: i64) -> Location {
        Location {
            topic: "t".into(),
            partition: 0,
            offset: o,
            content: [0; 32],
        }
    }

    #[test]
    fn remembers_within_capacity_and_window() {
        let c = DuplicateCache::new(Duration::from_secs(60), 2);
        c.insert("a".into(), loc(1));
        c.insert("b".into(), loc(2));
        assert_eq!(c.get("a"), Some(loc(1)));
        c.insert("c".into(), loc(3));
        assert_eq!(c.get("a"), None, "oldest evicted at capacity");
        assert_eq!(c.len(), 2);
        let short = DuplicateCache::new(Duration::from_millis(1), 10);
        short.insert("x".into(), loc(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.get("x"), None);
    }
}
