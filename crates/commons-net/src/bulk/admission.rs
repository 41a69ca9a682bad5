//! Which connections to the bulk port may wait for their token: a state machine without I/O.
//!
//! Anyone who can reach the port can connect, so the connections that have not yet presented a
//! token are capped, in all and per source address. A new connection is never turned away:
//! when a cap is reached the *oldest* waiting connection (of the same address if that address
//! is at its cap) is closed instead. An honest receiver sends its token in the first packet, a
//! round trip after connecting; an attacker who keeps the slots full evicts its own idle
//! connections long before it could evict one that is about to present a valid token.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// Connections waiting for their token, all sources together.
pub const MAX_WAITING: usize = 64;
/// Connections waiting for their token from one IP address.
pub const MAX_WAITING_PER_SOURCE: usize = 8;
/// Handshake tasks alive at once: those waiting, and those evicted whose socket is not closed
/// yet. The accept loop pauses at this many, which bounds the descriptors they hold; it never
/// pauses for a connection that is merely slow (eviction makes room at each arrival).
pub const MAX_ALIVE: usize = 2 * MAX_WAITING;

/// The connections waiting for their token.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    per_source: usize,
    next: u64,
    /// Arrival order: id → source.
    order: BTreeMap<u64, IpAddr>,
    by_source: HashMap<IpAddr, BTreeSet<u64>>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(MAX_WAITING, MAX_WAITING_PER_SOURCE)
    }
}

impl Admission {
    /// At most `max` waiting in all and `per_source` per address (both at least 1).
    pub fn new(max: usize, per_source: usize) -> Admission {
        Admission {
            max: max.max(1),
            per_source: per_source.max(1),
            next: 0,
            order: BTreeMap::new(),
            by_source: HashMap::new(),
        }
    }

    /// A connection from `source` arrived: its id, and the id of the connection to close to make
    /// room for it, if any.
    pub fn arrive(&mut self, source: IpAddr) -> (u64, Option<u64>) {
        let evict = match self.by_source.get(&source) {
            Some(ids) if ids.len() >= self.per_source => ids.first().copied(),
            _ if self.order.len() >= self.max => self.order.keys().next().copied(),
            _ => None,
        };
        if let Some(old) = evict {
            self.leave(old);
        }
        let id = self.next;
        self.next += 1;
        self.order.insert(id, source);
        self.by_source.entry(source).or_default().insert(id);
        (id, evict)
    }

    /// Connection `id` presented its token, was closed or was evicted; `false` if it was not
    /// waiting (already gone).
    pub fn leave(&mut self, id: u64) -> bool {
        let Some(source) = self.order.remove(&id) else {
            return false;
        };
        if let Some(ids) = self.by_source.get_mut(&source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&source);
            }
        }
        true
    }

    /// Connections waiting now.
    pub fn waiting(&self) -> usize {
        self.order.len()
    }

    /// Connections waiting now from `source`.
    pub fn waiting_from(&self, source: &IpAddr) -> usize {
        self.by_source.get(source).map_or(0, BTreeSet::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_source_at_its_cap_evicts_its_own_oldest() {
        let mut a = Admission::new(10, 3);
        let ids: Vec<u64> = (0..3).map(|_| a.arrive(ip(1)).0).collect();
        let other = a.arrive(ip(2)).0;
        let (fourth, evicted) = a.arrive(ip(1));
        assert_eq!(evicted, Some(ids[0]), "the oldest of the same source");
        assert_eq!(a.waiting_from(&ip(1)), 3);
        assert_eq!(a.waiting(), 4);
        // The other source's connection was not touched.
        assert!(a.leave(other));
        assert!(!a.leave(ids[0]), "already evicted");
        assert!(a.leave(fourth));
        assert_eq!(a.waiting(), 2);
    }

    #[test]
    fn the_total_cap_evicts_the_oldest_of_all() {
        let mut a = Admission::new(4, 4);
        let first = a.arrive(ip(1)).0;
        for n in 2..=4 {
            assert_eq!(a.arrive(ip(n)).1, None);
        }
        let (_, evicted) = a.arrive(ip(5));
        assert_eq!(evicted, Some(first));
        assert_eq!(a.waiting(), 4);
        assert_eq!(a.waiting_from(&ip(1)), 0);
    }

    #[test]
    fn a_flood_stays_bounded_and_a_prompt_newcomer_is_never_the_one_evicted() {
        let mut a = Admission::default();
        for i in 0..10_000u32 {
            let (_, _) = a.arrive(ip((i % 3) as u8));
            assert!(a.waiting() <= MAX_WAITING);
            assert!(a.waiting_from(&ip((i % 3) as u8)) <= MAX_WAITING_PER_SOURCE);
        }
        // An honest receiver arrives from a flooding source and presents its token before the
        // next connection of the flood: it was waiting all along.
        let (honest, _) = a.arrive(ip(0));
        let (_, evicted) = a.arrive(ip(1));
        assert_ne!(evicted, Some(honest));
        assert!(a.leave(honest));
    }
}
