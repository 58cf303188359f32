//! A bounded memory of accepted event_ids, so a retry is answered DUPLICATE without producing
//! again. Correctness does not depend on it: every sink dedupes by event_id too.
//!
//! An event_id being published right now is claimed by the request publishing it: another
//! request carrying it meanwhile (a client that timed out and retried), or a later copy in the
//! same request, waits for that outcome instead of producing a second copy, and one carrying
//! other content is told of the conflict at once.
//!
//! Ids are kept as the 128 bits of their UUID (validation makes every accepted `event_id` the
//! UUID of its document version) and topics as shared names, so an entry allocates nothing of
//! its own and a lookup hashes 16 bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use tokio::sync::oneshot;

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
    // Ids being published now: the content claimed and the publication's outcome.
    publishing: HashMap<u128, ([u8; 32], Outcome)>,
}

/// Where a publication in progress stored its event; None when it stored nothing.
pub type Outcome = Shared<BoxFuture<'static, Option<Location>>>;

/// What the cache knows of an event_id a request is about to publish.
pub enum Seen<'a> {
    /// Accepted within the window.
    Stored(Location),
    /// Being published by another request with `content`.
    Publishing {
        /// SHA-256 of the event that request carries.
        content: [u8; 32],
        /// Where it ends up.
        outcome: Outcome,
    },
    /// Neither: the caller publishes it, and settles the claim with where it was stored.
    New(Claim<'a>),
}

/// A request's claim to publish an event_id. Dropped unsettled (a failure, a cancelled
/// request), it tells those waiting that nothing was stored.
pub struct Claim<'a> {
    cache: &'a DuplicateCache,
    id: Option<u128>,
    settle: Option<oneshot::Sender<Option<Location>>>,
}

impl Claim<'_> {
    /// The event is stored at `location`: remembered, and the waiting requests told.
    pub fn stored(mut self, location: Location) {
        if let Some(id) = self.id {
            self.cache.remember(id, location.clone());
        }
        self.release(Some(location));
    }

    fn release(&mut self, outcome: Option<Location>) {
        if let Some(id) = self.id {
            self.cache.lock().publishing.remove(&id);
        }
        if let Some(settle) = self.settle.take() {
            // Nobody waiting is no error.
            let _ = settle.send(outcome);
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.settle.is_some() {
            self.release(None);
        }
    }
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
                publishing: HashMap::new(),
            }),
            window,
            capacity: capacity.max(1),
        }
    }

    /// Where `event_id` was stored, if it was accepted within the window.
    #[cfg(test)]
    fn get(&self, event_id: &str) -> Option<Location> {
        let id = id_bits(event_id)?;
        self.stored(&self.lock(), id)
    }

    fn stored(&self, inner: &Inner, id: u128) -> Option<Location> {
        inner
            .map
            .get(&id)
            .filter(|(at, _)| at.elapsed() < self.window)
            .map(|(_, l)| l.clone())
    }

    /// What is known of `event_id`, carrying `content`, before publishing it; claims it when
    /// nothing is.
    pub fn claim(&self, event_id: &str, content: [u8; 32]) -> Seen<'_> {
        let Some(id) = id_bits(event_id) else {
            return Seen::New(Claim {
                cache: self,
                id: None,
                settle: None,
            });
        };
        let mut inner = self.lock();
        if let Some(location) = self.stored(&inner, id) {
            return Seen::Stored(location);
        }
        if let Some((content, outcome)) = inner.publishing.get(&id) {
            return Seen::Publishing {
                content: *content,
                outcome: outcome.clone(),
            };
        }
        let (settle, settled) = oneshot::channel();
        let outcome = settled.map(|o| o.ok().flatten()).boxed().shared();
        inner.publishing.insert(id, (content, outcome));
        Seen::New(Claim {
            cache: self,
            id: Some(id),
            settle: Some(settle),
        })
    }

    /// Remembers an accepted event (an id that is no UUID cannot have been accepted, and is
    /// not remembered), as a settled claim does.
    #[cfg(test)]
    fn insert(&self, event_id: &str, location: Location) {
        if let Some(id) = id_bits(event_id) {
            self.remember(id, location);
        }
    }

    fn remember(&self, id: u128, location: Location) {
        let now = Instant::now();
        let mut inner = self.lock();
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of remembered ids.
    pub fn len(&self) -> usize {
        self.lock().map.len()
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

    #[tokio::test]
    async fn a_request_meeting_an_id_being_published_learns_where_it_was_stored() {
        let c = DuplicateCache::new(Duration::from_secs(60), 10);
        let Seen::New(claim) = c.claim(&id(1), [1; 32]) else {
            panic!("nothing known of a new id")
        };
        let Seen::Publishing { content, outcome } = c.claim(&id(1), [1; 32]) else {
            panic!("the id is being published")
        };
        assert_eq!(content, [1; 32]);
        claim.stored(loc(5));
        assert_eq!(outcome.await, Some(loc(5)));
        assert!(matches!(c.claim(&id(1), [1; 32]), Seen::Stored(l) if l == loc(5)));
        assert!(c.lock().publishing.is_empty());
    }

    #[tokio::test]
    async fn a_claim_dropped_unsettled_tells_the_waiting_nothing_was_stored() {
        let c = DuplicateCache::new(Duration::from_secs(60), 10);
        let Seen::New(claim) = c.claim(&id(2), [2; 32]) else {
            panic!("nothing known of a new id")
        };
        let Seen::Publishing { outcome, .. } = c.claim(&id(2), [9; 32]) else {
            panic!("the id is being published")
        };
        drop(claim);
        assert_eq!(outcome.await, None);
        assert!(
            matches!(c.claim(&id(2), [2; 32]), Seen::New(_)),
            "free to be published again"
        );
        assert_eq!(c.get(&id(2)), None);
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
