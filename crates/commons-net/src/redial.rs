//! Keeping bootstrap peers: a bootstrap address that cannot be reached when the node starts, or
//! whose connection drops later, is dialled again, with a backoff that doubles from
//! [`FIRST_RETRY`] to [`MAX_RETRY`] and starts over once a connection is made.
//!
//! A state machine without I/O: the network task reports dials, connections and failures, passes
//! the time in, and dials what [`Redial::due`] returns. Without it, one refused or lost first
//! dial (the peer was still starting, a busy machine dropped the handshake, the link blinked)
//! left a node without a known peer for good unless the DHT or mDNS found one.

use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, multiaddr};

/// The wait after the first failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two dials of one address.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// Where one bootstrap address stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootState {
    /// A dial is under way.
    Dialing(ConnectionId),
    /// Connected to its peer.
    Connected,
    /// Not connected; dialled again at the instant given.
    Waiting(Instant),
}

/// One bootstrap address and its state.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The address, as configured.
    pub addr: Multiaddr,
    /// Its peer, once known (from a `/p2p/` suffix or from the first connection).
    pub peer: Option<PeerId>,
    /// Where it stands.
    pub state: BootState,
    /// Dials that failed since the last connection.
    pub failures: u32,
    backoff: Duration,
}

/// The bootstrap addresses of a node and their states.
#[derive(Debug, Default)]
pub struct Redial {
    boots: Vec<Boot>,
}

impl Redial {
    /// Bootstrap addresses not dialled yet: all are due at `now`.
    pub fn new(addrs: &[Multiaddr], now: Instant) -> Redial {
        let boots = addrs
            .iter()
            .map(|addr| Boot {
                addr: addr.clone(),
                peer: match addr.iter().last() {
                    Some(multiaddr::Protocol::P2p(peer)) => Some(peer),
                    _ => None,
                },
                state: BootState::Waiting(now),
                failures: 0,
                backoff: FIRST_RETRY,
            })
            .collect();
        Redial { boots }
    }

    /// The addresses to dial at `now`, by index; report each with [`Redial::dialed`].
    pub fn due(&self, now: Instant) -> Vec<(usize, Multiaddr)> {
        self.boots
            .iter()
            .enumerate()
            .filter(|(_, b)| matches!(b.state, BootState::Waiting(at) if at <= now))
            .map(|(i, b)| (i, b.addr.clone()))
            .collect()
    }

    /// The dial of address `i` started as connection `conn`, or could not start (`None`).
    pub fn dialed(&mut self, i: usize, conn: Option<ConnectionId>, now: Instant) {
        let Some(b) = self.boots.get_mut(i) else {
            return;
        };
        match conn {
            Some(c) => b.state = BootState::Dialing(c),
            None => b.fail(now),
        }
    }

    /// A connection to `peer` is up (`conn` is its id; it may be an inbound one).
    pub fn on_connected(&mut self, conn: ConnectionId, peer: PeerId) {
        for b in &mut self.boots {
            let ours = b.state == BootState::Dialing(conn);
            if ours || b.peer == Some(peer) {
                if ours && b.peer.is_none() {
                    b.peer = Some(peer);
                }
                b.state = BootState::Connected;
                b.failures = 0;
                b.backoff = FIRST_RETRY;
            }
        }
    }

    /// The dial that was connection `conn` failed.
    pub fn on_dial_failed(&mut self, conn: ConnectionId, now: Instant) {
        for b in &mut self.boots {
            if b.state == BootState::Dialing(conn) {
                b.fail(now);
            }
        }
    }

    /// The last connection to `peer` closed: its addresses are dialled again after
    /// [`FIRST_RETRY`].
    pub fn on_disconnected(&mut self, peer: PeerId, now: Instant) {
        for b in &mut self.boots {
            if b.peer == Some(peer) && b.state == BootState::Connected {
                b.state = BootState::Waiting(now + b.backoff);
            }
        }
    }

    /// Every bootstrap address and its state.
    pub fn boots(&self) -> &[Boot] {
        &self.boots
    }
}

impl Boot {
    fn fail(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.state = BootState::Waiting(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    fn addr(p: Option<PeerId>) -> Multiaddr {
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        match p {
            Some(p) => a.with(multiaddr::Protocol::P2p(p)),
            None => a,
        }
    }

    #[test]
    fn a_failed_first_dial_is_retried_with_a_doubling_backoff_up_to_the_cap() {
        let t0 = Instant::now();
        let p = peer();
        let mut r = Redial::new(&[addr(Some(p))], t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for n in 0..10 {
            let due = r.due(now);
            assert_eq!(due.len(), 1, "due at attempt {n}");
            let conn = ConnectionId::new_unchecked(n);
            r.dialed(0, Some(conn), now);
            assert!(r.due(now + MAX_RETRY * 2).is_empty(), "not while dialling");
            r.on_dial_failed(conn, now);
            let BootState::Waiting(at) = r.boots()[0].state else {
                panic!("waiting after a failure");
            };
            assert!(r.due(at - Duration::from_millis(1)).is_empty());
            waits.push(at - now);
            now = at;
        }
        assert_eq!(waits[0], FIRST_RETRY);
        assert_eq!(waits[1], FIRST_RETRY * 2);
        assert_eq!(*waits.last().unwrap(), MAX_RETRY);
        assert_eq!(r.boots()[0].failures, 10);
    }

    #[test]
    fn a_connection_resets_the_backoff_and_a_drop_brings_a_dial_back() {
        let t0 = Instant::now();
        let p = peer();
        let mut r = Redial::new(&[addr(Some(p))], t0);
        for n in 0..4 {
            let conn = ConnectionId::new_unchecked(n);
            r.dialed(0, Some(conn), t0);
            r.on_dial_failed(conn, t0);
        }
        let conn = ConnectionId::new_unchecked(9);
        r.dialed(0, Some(conn), t0);
        r.on_connected(conn, p);
        assert_eq!(r.boots()[0].state, BootState::Connected);
        assert_eq!(r.boots()[0].failures, 0);
        assert!(r.due(t0 + MAX_RETRY * 10).is_empty(), "connected: no dial");
        r.on_disconnected(p, t0);
        assert!(r.due(t0).is_empty());
        assert_eq!(
            r.due(t0 + FIRST_RETRY).len(),
            1,
            "dialled again after the first wait"
        );
    }

    #[test]
    fn an_address_without_a_peer_id_learns_it_from_its_connection() {
        let t0 = Instant::now();
        let p = peer();
        let mut r = Redial::new(&[addr(None)], t0);
        let conn = ConnectionId::new_unchecked(1);
        r.dialed(0, Some(conn), t0);
        r.on_connected(ConnectionId::new_unchecked(2), p);
        assert_eq!(
            r.boots()[0].state,
            BootState::Dialing(conn),
            "another connection of an unknown peer is not ours"
        );
        r.on_connected(conn, p);
        assert_eq!(r.boots()[0].peer, Some(p));
        r.on_disconnected(p, t0);
        assert_eq!(r.due(t0 + FIRST_RETRY).len(), 1);
    }

    #[test]
    fn an_inbound_connection_from_the_bootstrap_peer_counts_and_a_dial_that_cannot_start_waits() {
        let t0 = Instant::now();
        let (p, q) = (peer(), peer());
        let mut r = Redial::new(&[addr(Some(p)), addr(Some(q))], t0);
        r.dialed(0, None, t0);
        assert_eq!(r.boots()[0].failures, 1);
        assert_eq!(r.due(t0).len(), 1, "only the other one is due");
        r.on_connected(ConnectionId::new_unchecked(7), p);
        assert_eq!(r.boots()[0].state, BootState::Connected);
        r.on_disconnected(q, t0);
        assert_eq!(
            r.boots()[1].state,
            BootState::Waiting(t0),
            "not connected: unchanged"
        );
    }
}
