//! Author and node keys (ed25519) and their `did:key` form.
//!
//! A [`PublicKey`] is checked when it is made: it must be a valid curve point and not of small
//! order, so a weak key can never sign a record that verifies.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// The multicodec prefix of an ed25519 public key (0xed, as an unsigned varint).
const ED25519_MULTICODEC: [u8; 2] = [0xed, 0x01];

/// Why a key did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not of the form `did:key:z…`.
    #[error("`{0}` is not a did:key (expected `did:key:z6Mk…`)")]
    NotDidKey(String),
    /// The multibase or multicodec part is wrong.
    #[error("`{0}` is not an ed25519 did:key")]
    NotEd25519(String),
    /// The 32 bytes are not a usable ed25519 public key.
    #[error("the bytes are not a valid ed25519 public key (invalid or weak point)")]
    InvalidPoint,
}

/// Checked keys remembered per thread. Decompressing a point costs about as much as a third of a
/// signature check, and a commons has few authors, so records of one author share the work. A
/// peer sending many distinct keys only makes the cache start over.
const KEY_CACHE: usize = 1024;

thread_local! {
    static CHECKED_KEYS: RefCell<HashMap<[u8; 32], VerifyingKey>> = RefCell::new(HashMap::new());
}

/// The decompressed point of `bytes` if it is a valid point not of small order.
fn checked_point(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    if let Some(vk) = CHECKED_KEYS.with_borrow(|m| m.get(bytes).copied()) {
        return Some(vk);
    }
    let vk = VerifyingKey::from_bytes(bytes)
        .ok()
        .filter(|vk| !vk.is_weak())?;
    CHECKED_KEYS.with_borrow_mut(|m| {
        if m.len() >= KEY_CACHE {
            m.clear();
        }
        m.insert(*bytes, vk);
    });
    Some(vk)
}

/// An ed25519 public key that is a valid, non-weak point. It identifies an author or a node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Checks the bytes: a valid point, not of small order.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        checked_point(&bytes).ok_or(KeyError::InvalidPoint)?;
        Ok(Self(bytes))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn verifying_key(&self) -> VerifyingKey {
        // The bytes were checked at construction.
        checked_point(&self.0).expect("PublicKey holds a checked point")
    }

    /// `did:key:z6Mk…`: multibase base58btc of the multicodec-prefixed key.
    pub fn to_did(&self) -> String {
        let mut buf = Vec::with_capacity(34);
        buf.extend_from_slice(&ED25519_MULTICODEC);
        buf.extend_from_slice(&self.0);
        format!("did:key:z{}", bs58::encode(buf).into_string())
    }

    /// A short form for tables: the last 8 characters of the did.
    pub fn short(&self) -> String {
        let d = self.to_did();
        format!("…{}", &d[d.len() - 8..])
    }
}

impl<C> Decode<C> for PublicKey {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let bytes = <[u8; 32]>::decode(decoder)?;
        PublicKey::from_bytes(bytes)
            .map_err(|_| bincode::error::DecodeError::Other("invalid ed25519 public key"))
    }
}
bincode::impl_borrow_decode!(PublicKey);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_did())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("did:key:z")
            .ok_or_else(|| KeyError::NotDidKey(s.to_owned()))?;
        let raw = bs58::decode(rest)
            .into_vec()
            .map_err(|_| KeyError::NotEd25519(s.to_owned()))?;
        if raw.len() != 34 || raw[..2] != ED25519_MULTICODEC {
            return Err(KeyError::NotEd25519(s.to_owned()));
        }
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&raw[2..]);
        PublicKey::from_bytes(bytes)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_did())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A secret ed25519 key. It never prints its secret.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte seed, for writing to a key file.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        // A key derived from a seed is never a small-order point.
        PublicKey(self.0.verifying_key().to_bytes())
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public: {})", self.public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_round_trip() {
        let k = SecretKey::from_seed([7; 32]).public();
        let did = k.to_did();
        assert!(did.starts_with("did:key:z6Mk"), "{did}");
        assert_eq!(did.parse::<PublicKey>().unwrap(), k);
    }

    #[test]
    fn bad_dids_are_refused() {
        assert!(matches!(
            "hello".parse::<PublicKey>(),
            Err(KeyError::NotDidKey(_))
        ));
        assert!(matches!(
            "did:key:z111".parse::<PublicKey>(),
            Err(KeyError::NotEd25519(_))
        ));
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point (y = 1) has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::from_bytes(identity), Err(KeyError::InvalidPoint));
    }

    #[test]
    fn debug_hides_the_secret() {
        let k = SecretKey::from_seed([9; 32]);
        assert!(!format!("{k:?}").contains("0909"));
    }
}
