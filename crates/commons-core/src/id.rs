//! Content hashes: blob hashes, record ids and lineage ids.
//!
//! All three are 32-byte BLAKE3 outputs. They are distinct types so that a blob hash can never be
//! passed where a record id is expected. They print as lowercase hex and parse back from it.

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};

/// Why a hex id did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a 64-digit hex hash")]
pub struct ParseIdError {
    /// The text that was given.
    pub input: String,
}

fn parse_hex32(s: &str) -> Result<[u8; 32], ParseIdError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError {
        input: s.to_owned(),
    })?;
    Ok(out)
}

macro_rules! hash_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lowercase hex, 64 digits.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first `n` hex digits, for display.
            pub fn short(&self) -> String {
                let mut s = self.to_hex();
                s.truncate(12);
                s
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32(s).map(Self)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hash_newtype!(
    /// The plain BLAKE3 hash of a blob's bytes (the same as `b3sum` prints).
    BlobHash
);
hash_newtype!(
    /// The id of a record: BLAKE3 in derive-key mode over the record's signed bytes.
    RecordId
);
hash_newtype!(
    /// The id of a lineage: the id of the charter that founded it.
    LineageId
);
hash_newtype!(
    /// A hash over a lineage's canonical tree (see `tree::Accumulator`).
    StateRoot
);

impl BlobHash {
    /// Hash bytes held in memory. Streams go through `blake3::Hasher` directly.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

impl From<LineageId> for RecordId {
    fn from(l: LineageId) -> Self {
        RecordId(l.0)
    }
}

impl From<RecordId> for LineageId {
    fn from(r: RecordId) -> Self {
        LineageId(r.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = BlobHash::of(b"hello");
        assert_eq!(
            h.to_hex(),
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
        assert_eq!(h.to_hex().parse::<BlobHash>().unwrap(), h);
        assert!("zz".parse::<BlobHash>().is_err());
    }
}
