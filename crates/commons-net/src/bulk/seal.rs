//! The sealing of a sealed bulk connection: AES-256-GCM, a fresh key per ticket, one key per
//! direction, nonces counted.
//!
//! The ticket's 32-byte key travels inside the libp2p connection (noise: encrypted and
//! authenticated by both peers' keys), so only the two peers know it. From it each direction
//! derives its own AES-256 key with BLAKE3's key derivation ([`Direction`] names the context),
//! so the two directions never share a (key, nonce) pair. Each message sealed in a direction
//! takes the next nonce of that direction, a 64-bit counter from 0; the receiver counts the
//! same way, so a frame replayed, dropped, reordered or moved from another connection fails to
//! open. A key serves one connection (a ticket is single use), so a nonce is never reused.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};

/// Bytes of a ticket's key.
pub const KEY_BYTES: usize = 32;
/// Bytes of the tag after each sealed message.
pub const TAG_BYTES: usize = 16;

/// Which way the messages sealed with a key go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Receiver to server: requests.
    Request,
    /// Server to receiver: answers.
    Answer,
}

impl Direction {
    fn context(self) -> &'static str {
        match self {
            Direction::Request => "commons bulk 2026-12 request key",
            Direction::Answer => "commons bulk 2026-12 answer key",
        }
    }
}

/// A message did not open (wrong key, altered, replayed or out of order), or the direction ran
/// out of nonces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a sealed bulk message does not open")]
pub struct Unsealable;

/// One direction of a sealed connection: its key and the next nonce.
pub struct Seal {
    key: LessSafeKey,
    next: u64,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Seal").field("next", &self.next).finish()
    }
}

impl Seal {
    /// The seal of `direction` for a ticket's key.
    pub fn new(ticket_key: &[u8; KEY_BYTES], direction: Direction) -> Seal {
        let derived = blake3::derive_key(direction.context(), ticket_key);
        let key = UnboundKey::new(&AES_256_GCM, &derived)
            // A 32-byte key is always a valid AES-256 key.
            .map(LessSafeKey::new)
            .unwrap_or_else(|_| unreachable!("AES-256 takes 32-byte keys"));
        Seal { key, next: 0 }
    }

    fn nonce(&mut self) -> Result<Nonce, Unsealable> {
        let n = self.next;
        self.next = n.checked_add(1).ok_or(Unsealable)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[NONCE_LEN - 8..].copy_from_slice(&n.to_be_bytes());
        Ok(Nonce::assume_unique_for_key(nonce))
    }

    /// Encrypts `data` in place; returns the tag to send after it.
    pub fn seal(&mut self, data: &mut [u8]) -> Result<[u8; TAG_BYTES], Unsealable> {
        let nonce = self.nonce()?;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), data)
            .map_err(|_| Unsealable)?;
        let mut out = [0u8; TAG_BYTES];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `data` in place if `tag` proves it is the next message of this direction.
    pub fn open(&mut self, data: &mut [u8], tag: &[u8; TAG_BYTES]) -> Result<(), Unsealable> {
        let nonce = self.nonce()?;
        self.key
            .open_in_place_separate_tag(nonce, Aad::empty(), Tag::from(*tag), data, 0..)
            .map(|_| ())
            .map_err(|_| Unsealable)
    }
}

/// A fresh random key for a ticket, or `None` when the system has no randomness to give.
pub fn fresh_key() -> Option<[u8; KEY_BYTES]> {
    let mut key = [0u8; KEY_BYTES];
    getrandom::getrandom(&mut key).ok()?;
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_open_in_order_with_the_same_key_only() {
        let key = [7u8; KEY_BYTES];
        let (mut tx, mut rx) = (
            Seal::new(&key, Direction::Answer),
            Seal::new(&key, Direction::Answer),
        );
        let mut a = b"first message".to_vec();
        let mut b = b"second message".to_vec();
        let ta = tx.seal(&mut a).unwrap();
        let tb = tx.seal(&mut b).unwrap();
        assert_ne!(&a[..], b"first message", "the bytes are encrypted");
        rx.open(&mut a, &ta).unwrap();
        assert_eq!(&a[..], b"first message");
        rx.open(&mut b, &tb).unwrap();
        assert_eq!(&b[..], b"second message");

        // Out of order: the second message does not open as the first.
        let (mut tx, mut rx) = (
            Seal::new(&key, Direction::Answer),
            Seal::new(&key, Direction::Answer),
        );
        let mut a = b"one".to_vec();
        let mut b = b"two".to_vec();
        let _ = tx.seal(&mut a).unwrap();
        let tb = tx.seal(&mut b).unwrap();
        assert_eq!(rx.open(&mut b, &tb), Err(Unsealable));

        // The other direction's key, another ticket's key, a flipped bit: refused.
        let mut m = b"hello".to_vec();
        let t = Seal::new(&key, Direction::Request).seal(&mut m).unwrap();
        let mut other = m.clone();
        assert!(
            Seal::new(&key, Direction::Answer)
                .open(&mut other, &t)
                .is_err()
        );
        let mut other = m.clone();
        assert!(
            Seal::new(&[8u8; KEY_BYTES], Direction::Request)
                .open(&mut other, &t)
                .is_err()
        );
        let mut flipped = m.clone();
        flipped[0] ^= 1;
        assert!(
            Seal::new(&key, Direction::Request)
                .open(&mut flipped, &t)
                .is_err()
        );
        Seal::new(&key, Direction::Request)
            .open(&mut m, &t)
            .unwrap();
        assert_eq!(&m[..], b"hello");
    }

    #[test]
    fn fresh_keys_differ() {
        assert_ne!(fresh_key().unwrap(), fresh_key().unwrap());
    }
}
