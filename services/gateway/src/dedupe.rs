//! A bounded memory of accepted event_ids, so a retry is answered DUPLICATE without producing
//! again. Correctness does not depend on it: every sink dedupes by event_id too.
//!
//! Ids are kept as the 128 bits of their UUID (validation makes every accepted `event_id` the
//! UUID of its document version) and topics as shared names, so an entry allocates nothing of
//! its own and a lookup hashes 16 bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where an accepted event was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Topic (shared with every other entry of that topic).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// SHA-256 of the event as its publisher sent it, so a reused event_id with other content
    /// is told from a retry.
    pub content: [u8; 32],
}

/// An event_id as the cache keeps it; None for a text that is no UUID (never accepted).
fn id_bits(event_id: &str) -> Option<u128> {
    uuid::Uuid::parse_str(event_id).ok().map(|u| u.as_u128())
}

struct Inner {
    map: HashMap<u128, (Instant, Location)>,
    order: VecDeque<(Instant, u128)>,
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
        let id = id_bits(event_id)?;
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .map
            .get(&id)
            .filter(|(at, _)| at.elapsed() < self.window)
            .map(|(_, l)| l.clone())
    }

    /// Remembers an accepted event (an id that is no UUID cannot have been accepted, and is
    /// not remembered).
    pub fn insert(&self, event_id: &str, location: Location) {
        let Some(id) = id_bits(event_id) else {
            return;
        };
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Evict expired entries and, beyond capacity, the oldest: memory stays bounded.
        while let Some(&(at, old)) = inner.order.front() {
            if at.elapsed() >= self.window || inner.order.len() >= self.capacity {
                inner.order.pop_front();
                if inner.map.get(&old).is_some_and(|(t, _)| *t == at) {
                    inner.map.remove(&old);
                }
            } else {
                break;
            }
        }
        inner.order.push_back((now, id));
        inner.map.insert(id, (now, location));
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

    fn id(n: u8) -> String {
        uuid::Uuid::from_u128(u128::from(n)).to_string()
    }

    #[test]
    fn remembers_within_capacity_and_window() {
        let c = DuplicateCache::new(Duration::from_secs(60), 2);
        c.insert(&id(1), loc(1));
        c.insert(&id(2), loc(2));
        assert_eq!(c.get(&id(1)), Some(loc(1)));
        c.insert(&id(3), loc(3));
        assert_eq!(c.get(&id(1)), None, "oldest evicted at capacity");
        assert_eq!(c.len(), 2);
        let short = DuplicateCache::new(Duration::from_millis(1), 10);
        short.insert(&id(9), loc(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.get(&id(9)), None);
    }

    #[test]
    fn an_id_is_found_however_its_uuid_is_written_and_no_uuid_is_never_found() {
        let c = DuplicateCache::new(Duration::from_secs(60), 10);
        let lower = "3944d0ca-ea10-50c3-8915-7a20c0f9a446";
        c.insert(lower, loc(7));
        assert_eq!(c.get(&lower.to_uppercase()), Some(loc(7)));
        c.insert("not-a-uuid", loc(8));
        assert_eq!(c.get("not-a-uuid"), None);
        assert_eq!(c.len(), 1);
    }
}
