//! Local policy on gossip, applied after a record verifies and before it is forwarded: the
//! block list (authors and peers this node refuses) and rate limits per sending peer and per
//! author. No I/O and no clock: time comes in as an argument, so the bounds are unit-tested.
//!
//! A record refused here is *ignored* in gossipsub terms: not forwarded, not handed to the
//! node, and its sender is not struck for it (blocking is this node's choice, and an honest relay
//! forwards a busy author's records in good faith), except for a peer over its own rate, which
//! gets one strike per [`RATE_STRIKE_EVERY`] while it stays over.
//!
//! Rates are token buckets: a sender may send a burst of `burst` records, refilled at `per_sec`.
//! Buckets are kept for at most [`MAX_BUCKETS`] senders of each kind; when full, the buckets that
//! are full again (idle senders, who lose nothing by being forgotten) are dropped first, then
//! the one with the most tokens.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use commons_core::PublicKey;
use libp2p::PeerId;

/// Buckets kept per kind of sender (peers, authors): about 64 bytes each.
pub const MAX_BUCKETS: usize = 65_536;
/// Records a peer may send in one burst.
pub const PEER_BURST: f64 = 20_000.0;
/// Records per second a peer may send on average.
pub const PEER_PER_SEC: f64 = 1_000.0;
/// Records of one author a node takes in one burst (a founding with a long history publishes
/// many at once; what is refused here still arrives by catch-up).
pub const AUTHOR_BURST: f64 = 10_000.0;
/// Records per second of one author on average.
pub const AUTHOR_PER_SEC: f64 = 100.0;
/// Requests that make this node read a whole family (`ListIds`, `Reconcile`) a peer may send
/// in one burst. A catch-up of a family costs a session of a few rounds, plus a page per 4096
/// ids when listing.
pub const REQUEST_BURST: f64 = 128.0;
/// Such requests per second a peer may send on average.
pub const REQUEST_PER_SEC: f64 = 16.0;
/// A peer over its rate gets at most one strike per this long.
pub const RATE_STRIKE_EVERY: Duration = Duration::from_secs(60);
/// Entries of the block list at most (each kind).
pub const MAX_BLOCKED: usize = 65_536;

/// A rate: a burst, and a refill per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens when full.
    pub burst: f64,
    /// Tokens added per second.
    pub per_sec: f64,
}

/// The rates of a [`Policy`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Per sending peer.
    pub peer: Rate,
    /// Per author.
    pub author: Rate,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            peer: Rate {
                burst: PEER_BURST,
                per_sec: PEER_PER_SEC,
            },
            author: Rate {
                burst: AUTHOR_BURST,
                per_sec: AUTHOR_PER_SEC,
            },
        }
    }
}

/// The verdict of the policy on a verified gossip record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Take it.
    Pass,
    /// Its author is blocked here.
    BlockedAuthor,
    /// Its sender is blocked here.
    BlockedPeer,
    /// Its sender is over its rate; `strike` says whether to strike it now.
    PeerRate {
        /// Whether this refusal costs the peer a strike.
        strike: bool,
    },
    /// Its author is over their rate.
    AuthorRate,
}

impl Verdict {
    /// The kind of refusal, as counted in `node status` (`None` for [`Verdict::Pass`]).
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            Verdict::Pass => None,
            Verdict::BlockedAuthor => Some("blocked author"),
            Verdict::BlockedPeer => Some("blocked peer"),
            Verdict::PeerRate { .. } => Some("peer over its rate"),
            Verdict::AuthorRate => Some("author over their rate"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    struck: Option<Instant>,
}

/// Token buckets for one kind of sender, in bounded memory.
#[derive(Debug)]
struct Buckets<K> {
    rate: Rate,
    map: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    fn new(rate: Rate) -> Self {
        Buckets {
            rate,
            map: HashMap::new(),
        }
    }

    fn level(&self, b: &Bucket, now: Instant) -> f64 {
        let secs = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + secs * self.rate.per_sec).min(self.rate.burst)
    }

    /// Takes a token for `key`; returns the bucket if there was none to take.
    fn take(&mut self, key: K, now: Instant) -> Option<&mut Bucket> {
        if !self.map.contains_key(&key) && self.map.len() >= MAX_BUCKETS {
            self.make_room(now);
        }
        let rate = self.rate;
        let bucket = self.map.entry(key).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
            struck: None,
        });
        let secs = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + secs * rate.per_sec).min(rate.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return None;
        }
        Some(bucket)
    }

    fn make_room(&mut self, now: Instant) {
        let burst = self.rate.burst;
        let full: Vec<K> = self
            .map
            .iter()
            .filter(|(_, b)| self.level(b, now) >= burst)
            .map(|(k, _)| *k)
            .collect();
        for k in full {
            self.map.remove(&k);
        }
        if self.map.len() >= MAX_BUCKETS
            && let Some(k) = self
                .map
                .iter()
                .max_by(|a, b| self.level(a.1, now).total_cmp(&self.level(b.1, now)))
                .map(|(k, _)| *k)
        {
            self.map.remove(&k);
        }
    }
}

/// Adds (`on`) or removes `key` in a block list of at most [`MAX_BLOCKED`] entries; false if
/// it is full.
fn set_entry<K: Hash + Eq>(set: &mut HashSet<K>, key: K, on: bool) -> bool {
    if !on {
        set.remove(&key);
        return true;
    }
    if set.len() >= MAX_BLOCKED && !set.contains(&key) {
        return false;
    }
    set.insert(key);
    true
}

/// The block list and the rate limits. See the module documentation.
#[derive(Debug)]
pub struct Policy {
    authors: HashSet<PublicKey>,
    peers: HashSet<PeerId>,
    per_peer: Buckets<PeerId>,
    per_author: Buckets<PublicKey>,
    requests: Buckets<PeerId>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(Rates::default())
    }
}

impl Policy {
    /// A policy with no one blocked and the given rates.
    pub fn new(rates: Rates) -> Self {
        Policy {
            authors: HashSet::new(),
            peers: HashSet::new(),
            per_peer: Buckets::new(rates.peer),
            per_author: Buckets::new(rates.author),
            requests: Buckets::new(Rate {
                burst: REQUEST_BURST,
                per_sec: REQUEST_PER_SEC,
            }),
        }
    }

    /// Whether `peer` may make one more request that reads a whole family (its own budget:
    /// see [`REQUEST_BURST`]).
    pub fn request(&mut self, peer: PeerId, now: Instant) -> bool {
        self.requests.take(peer, now).is_none()
    }

    /// Blocks (`on`) or unblocks an author. Returns false if the list is full.
    pub fn block_author(&mut self, author: PublicKey, on: bool) -> bool {
        set_entry(&mut self.authors, author, on)
    }

    /// Blocks (`on`) or unblocks a peer. Returns false if the list is full.
    pub fn block_peer(&mut self, peer: PeerId, on: bool) -> bool {
        set_entry(&mut self.peers, peer, on)
    }

    /// Whether `peer` is blocked.
    pub fn is_blocked_peer(&self, peer: &PeerId) -> bool {
        self.peers.contains(peer)
    }

    /// Whether `author` is blocked.
    pub fn is_blocked_author(&self, author: &PublicKey) -> bool {
        self.authors.contains(author)
    }

    /// The verdict on a verified record by `author`, received from `peer` at `now`. A record
    /// refused for a block costs no token.
    pub fn check(&mut self, peer: PeerId, author: PublicKey, now: Instant) -> Verdict {
        if self.peers.contains(&peer) {
            return Verdict::BlockedPeer;
        }
        if self.authors.contains(&author) {
            return Verdict::BlockedAuthor;
        }
        if let Some(bucket) = self.per_peer.take(peer, now) {
            let strike = bucket
                .struck
                .is_none_or(|t| now.saturating_duration_since(t) >= RATE_STRIKE_EVERY);
            if strike {
                bucket.struck = Some(now);
            }
            return Verdict::PeerRate { strike };
        }
        if self.per_author.take(author, now).is_some() {
            return Verdict::AuthorRate;
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commons_core::SecretKey;

    fn author(n: u8) -> PublicKey {
        SecretKey::from_seed([n; 32]).public()
    }

    fn small() -> Rates {
        Rates {
            peer: Rate {
                burst: 100.0,
                per_sec: 10.0,
            },
            author: Rate {
                burst: 20.0,
                per_sec: 2.0,
            },
        }
    }

    #[test]
    fn blocked_authors_and_peers_are_refused_until_unblocked() {
        let now = Instant::now();
        let mut p = Policy::default();
        let (peer, other) = (PeerId::random(), PeerId::random());
        assert!(p.block_author(author(1), true));
        assert!(p.block_peer(peer, true));
        assert_eq!(p.check(other, author(1), now), Verdict::BlockedAuthor);
        assert_eq!(p.check(peer, author(2), now), Verdict::BlockedPeer);
        assert_eq!(p.check(other, author(2), now), Verdict::Pass);
        p.block_author(author(1), false);
        p.block_peer(peer, false);
        assert_eq!(p.check(other, author(1), now), Verdict::Pass);
        assert_eq!(p.check(peer, author(2), now), Verdict::Pass);
    }

    #[test]
    fn an_author_over_their_rate_is_refused_then_refilled() {
        let t0 = Instant::now();
        let mut p = Policy::new(small());
        let peer = PeerId::random();
        let passed = (0..50)
            .filter(|_| p.check(peer, author(1), t0) == Verdict::Pass)
            .count();
        assert_eq!(passed, 20, "the burst");
        assert_eq!(p.check(peer, author(1), t0), Verdict::AuthorRate);
        assert_eq!(
            p.check(peer, author(2), t0),
            Verdict::Pass,
            "others unaffected"
        );
        let later = t0 + Duration::from_secs(1);
        let passed = (0..10)
            .filter(|_| p.check(peer, author(1), later) == Verdict::Pass)
            .count();
        assert_eq!(passed, 2, "refilled at 2 per second");
    }

    #[test]
    fn a_peer_over_its_rate_is_struck_once_a_minute() {
        let t0 = Instant::now();
        let mut p = Policy::new(small());
        let peer = PeerId::random();
        let mut verdicts = Vec::new();
        for i in 0..200u32 {
            verdicts.push(p.check(peer, author((i % 200) as u8), t0));
        }
        let strikes = verdicts
            .iter()
            .filter(|v| **v == Verdict::PeerRate { strike: true })
            .count();
        let refused = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::PeerRate { .. }))
            .count();
        assert_eq!((refused, strikes), (100, 1), "{verdicts:?}");
        // A minute later the bucket is full again (100 tokens); past them, a new strike.
        let later = t0 + RATE_STRIKE_EVERY;
        for _ in 0..100 {
            assert!(!matches!(
                p.check(peer, author(9), later),
                Verdict::PeerRate { .. }
            ));
        }
        assert_eq!(
            p.check(peer, author(9), later),
            Verdict::PeerRate { strike: true },
            "a minute later, another strike"
        );
    }

    #[test]
    fn each_peer_has_its_own_request_budget() {
        let t0 = Instant::now();
        let mut p = Policy::default();
        let (greedy, other) = (PeerId::random(), PeerId::random());
        let granted = (0..1000).filter(|_| p.request(greedy, t0)).count();
        assert_eq!(granted, REQUEST_BURST as usize);
        assert!(p.request(other, t0), "another peer's budget is untouched");
        let later = t0 + Duration::from_secs(1);
        let granted = (0..1000).filter(|_| p.request(greedy, later)).count();
        assert_eq!(granted, REQUEST_PER_SEC as usize);
    }

    #[test]
    fn buckets_stay_bounded_under_many_senders() {
        let now = Instant::now();
        let mut p = Policy::new(small());
        // Every sender spends its whole burst, so none is idle.
        for i in 0..(MAX_BUCKETS as u64 + 100) {
            let peer = PeerId::random();
            let _ = i;
            p.check(peer, author(1), now);
            assert!(p.per_peer.map.len() <= MAX_BUCKETS);
        }
    }
}
