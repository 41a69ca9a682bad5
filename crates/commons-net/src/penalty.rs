//! Strikes and bans: the bookkeeping behind "a peer that sends invalid records is penalised".
//!
//! A peer gets a strike for each invalid gossip message, each bad sync response and each report
//! from the node. At the threshold it is banned for a while: the network task disconnects it and
//! refuses its connections until the ban expires. This module does no I/O; time comes in as an
//! argument.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Most peers whose strikes are remembered. Beyond it the peer struck longest ago is forgotten,
/// so a flood of fresh peer ids costs bounded memory (each is banned long before it matters).
pub const MAX_TRACKED_PEERS: usize = 4096;
/// Most peers banned at once. Beyond it the ban that would expire first is lifted early.
pub const MAX_BANS: usize = 4096;
/// Strikes older than this are forgotten: an honest peer with an occasional bug is not banned
/// for faults spread over days.
pub const STRIKE_MEMORY: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Clone, Copy)]
struct Strikes {
    count: u32,
    last: Instant,
}

/// What a strike led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strike {
    /// Counted; the peer now has this many recent strikes.
    Counted(u32),
    /// The peer reached the threshold and is now banned until the given instant.
    Banned(Instant),
    /// The peer was already banned.
    AlreadyBanned,
}

/// Strikes and bans of peers.
#[derive(Debug)]
pub struct Penalties {
    strikes: HashMap<PeerId, Strikes>,
    bans: HashMap<PeerId, Instant>,
    threshold: u32,
    ban_duration: Duration,
}

impl Penalties {
    /// Bans a peer at `threshold` strikes (at least 1), for `ban_duration`.
    pub fn new(threshold: u32, ban_duration: Duration) -> Self {
        Penalties {
            strikes: HashMap::new(),
            bans: HashMap::new(),
            threshold: threshold.max(1),
            ban_duration,
        }
    }

    /// Counts one strike against `peer`.
    pub fn strike(&mut self, peer: PeerId, now: Instant) -> Strike {
        if self.bans.contains_key(&peer) {
            return Strike::AlreadyBanned;
        }
        if !self.strikes.contains_key(&peer) && self.strikes.len() >= MAX_TRACKED_PEERS {
            self.forget_oldest_strikes();
        }
        let s = self.strikes.entry(peer).or_insert(Strikes {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(s.last) > STRIKE_MEMORY {
            s.count = 0;
        }
        s.count += 1;
        s.last = now;
        if s.count < self.threshold {
            return Strike::Counted(s.count);
        }
        Strike::Banned(self.ban(peer, now))
    }

    /// Bans a peer now, whatever its strikes, and returns when the ban ends.
    pub fn ban(&mut self, peer: PeerId, now: Instant) -> Instant {
        self.strikes.remove(&peer);
        if !self.bans.contains_key(&peer) && self.bans.len() >= MAX_BANS {
            self.lift_first_expiring();
        }
        let until = now + self.ban_duration;
        self.bans.insert(peer, until);
        until
    }

    /// Recent strikes of a peer.
    pub fn strikes(&self, peer: &PeerId) -> u32 {
        self.strikes.get(peer).map_or(0, |s| s.count)
    }

    /// Whether a peer is banned.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.bans.contains_key(peer)
    }

    /// The banned peers.
    pub fn banned(&self) -> impl Iterator<Item = &PeerId> {
        self.bans.keys()
    }

    /// Removes and returns the bans that have expired at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let lifted: Vec<PeerId> = self
            .bans
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &lifted {
            self.bans.remove(p);
        }
        lifted
    }

    fn forget_oldest_strikes(&mut self) {
        if let Some(oldest) = self
            .strikes
            .iter()
            .min_by_key(|(_, s)| s.last)
            .map(|(p, _)| *p)
        {
            self.strikes.remove(&oldest);
        }
    }

    fn lift_first_expiring(&mut self) {
        if let Some(first) = self.bans.iter().min_by_key(|(_, u)| **u).map(|(p, _)| *p) {
            self.bans.remove(&first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_at_the_threshold_and_lifts_after_the_duration() {
        let mut p = Penalties::new(3, Duration::from_secs(10));
        let peer = PeerId::random();
        let t0 = Instant::now();
        assert_eq!(p.strike(peer, t0), Strike::Counted(1));
        assert_eq!(p.strike(peer, t0), Strike::Counted(2));
        assert_eq!(
            p.strike(peer, t0),
            Strike::Banned(t0 + Duration::from_secs(10))
        );
        assert!(p.is_banned(&peer));
        assert_eq!(p.strike(peer, t0), Strike::AlreadyBanned);
        assert!(p.expire(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(p.expire(t0 + Duration::from_secs(10)), vec![peer]);
        assert!(!p.is_banned(&peer));
        assert_eq!(p.strikes(&peer), 0);
    }

    #[test]
    fn old_strikes_are_forgotten() {
        let mut p = Penalties::new(2, Duration::from_secs(10));
        let peer = PeerId::random();
        let t0 = Instant::now();
        assert_eq!(p.strike(peer, t0), Strike::Counted(1));
        let later = t0 + STRIKE_MEMORY + Duration::from_secs(1);
        assert_eq!(p.strike(peer, later), Strike::Counted(1));
    }

    #[test]
    fn memory_is_bounded() {
        let mut p = Penalties::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_PEERS + 10) {
            p.strike(PeerId::random(), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(p.strikes.len(), MAX_TRACKED_PEERS);
    }
}
