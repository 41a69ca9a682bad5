//! Keys remembered for a while, in bounded memory: in the node, blobs that no peer gave after
//! every attempt (`blob_queue.rs`), so that they are not asked for again at every turn.
//!
//! [`Refused`] remembers a key for [`REFUSED_TTL`] (then it is tried again: the content may have
//! appeared), at most [`MAX_REFUSED`] keys (the oldest forgotten first). No I/O and no clock:
//! time comes in as an argument, so the bounds are unit-tested.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Most entries remembered: 16 384 × about 150 bytes, about 2.5 MiB at most.
pub const MAX_REFUSED: usize = 16_384;
/// How long an entry is left out of catch-up after its content could not be fetched.
pub const REFUSED_TTL: Duration = Duration::from_secs(10 * 60);

/// Keys refused for missing content, with when.
#[derive(Debug)]
pub struct Refused<K> {
    /// When each key was last remembered, and the sequence number of that entry.
    at: HashMap<K, (Instant, u64)>,
    /// Entries in the order remembered; one whose number no longer matches `at` is stale.
    order: VecDeque<(u64, K)>,
    next: u64,
}

impl<K> Default for Refused<K> {
    fn default() -> Self {
        Refused {
            at: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }
}

impl<K: Hash + Eq + Clone> Refused<K> {
    /// Remembers `key` as refused at `now`.
    pub fn remember(&mut self, key: K, now: Instant) {
        self.expire(now);
        let seq = self.next;
        self.next += 1;
        self.at.insert(key.clone(), (now, seq));
        self.order.push_back((seq, key));
        while self.at.len() > MAX_REFUSED {
            self.pop_oldest();
        }
        // Stale entries (keys remembered again) are dropped once they outnumber the live ones.
        if self.order.len() > 2 * MAX_REFUSED {
            let at = &self.at;
            self.order
                .retain(|(seq, key)| at.get(key).is_some_and(|(_, s)| s == seq));
        }
    }

    /// Whether `key` was refused less than [`REFUSED_TTL`] before `now`.
    pub fn contains(&mut self, key: &K, now: Instant) -> bool {
        self.expire(now);
        self.at.contains_key(key)
    }

    /// Forgets every key.
    pub fn clear(&mut self) {
        self.at.clear();
        self.order.clear();
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    fn is_live(&self, seq: u64, key: &K) -> bool {
        self.at.get(key).is_some_and(|(_, s)| *s == seq)
    }

    fn pop_oldest(&mut self) {
        while let Some((seq, key)) = self.order.pop_front() {
            if self.is_live(seq, &key) {
                self.at.remove(&key);
                return;
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((seq, key)) = self.order.front() {
            let Some(&(t, live)) = self.at.get(key) else {
                self.order.pop_front();
                continue;
            };
            if live != *seq {
                self.order.pop_front();
                continue;
            }
            if now.saturating_duration_since(t) < REFUSED_TTL {
                return;
            }
            let key = key.clone();
            self.order.pop_front();
            self.at.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> u32 {
        n
    }

    #[test]
    fn an_id_is_remembered_until_it_expires() {
        let t0 = Instant::now();
        let mut r = Refused::default();
        r.remember(id(1), t0);
        assert!(r.contains(&id(1), t0 + REFUSED_TTL - Duration::from_secs(1)));
        assert!(!r.contains(&id(2), t0));
        assert!(!r.contains(&id(1), t0 + REFUSED_TTL));
        assert!(r.is_empty());
    }

    #[test]
    fn remembering_again_extends() {
        let t0 = Instant::now();
        let mut r = Refused::default();
        r.remember(id(1), t0);
        r.remember(id(1), t0 + REFUSED_TTL / 2);
        assert!(r.contains(&id(1), t0 + REFUSED_TTL));
        assert!(!r.contains(&id(1), t0 + REFUSED_TTL / 2 + REFUSED_TTL));
    }

    #[test]
    fn the_oldest_are_forgotten_past_the_bound() {
        let t0 = Instant::now();
        let mut r = Refused::default();
        for n in 0..(MAX_REFUSED as u32 + 10) {
            r.remember(id(n), t0 + Duration::from_millis(u64::from(n)));
        }
        assert_eq!(r.len(), MAX_REFUSED);
        let now = t0 + Duration::from_secs(30);
        assert!(!r.contains(&id(0), now), "the oldest went first");
        assert!(r.contains(&id(MAX_REFUSED as u32 + 9), now));
        // Re-remembering the same id does not grow the queue without bound.
        for _ in 0..(3 * MAX_REFUSED) {
            r.remember(id(5_000_000), now);
        }
        assert!(r.order.len() <= 2 * MAX_REFUSED + 1);
    }
}
