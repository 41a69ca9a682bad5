//! Records: `Charter`, `Patch` and `Validation`, their canonical bytes, ids and signatures.
//!
//! The wire and storage form of a record is one byte string:
//!
//! ```text
//! version (1 byte, = 1) | kind (1 byte) | bincode body (fixint, little-endian) | signature (64 bytes)
//! ```
//!
//! The id is BLAKE3 in derive-key mode ([`RECORD_ID_CONTEXT`]) over everything but the signature;
//! the author signs [`SIGNATURE_DOMAIN`] followed by the id, and verification uses
//! `verify_strict`. Decoding checks the size limit of the kind before it parses anything, rejects
//! trailing bytes, and re-encodes the value to make sure the bytes were the one canonical form.
//! A [`Record`] can only be made by signing or by [`Record::decode`], so holding one means the
//! bytes, the id and the signature have been checked.

use std::fmt;

use bincode::{Decode, Encode};
use serde::Serialize;

use crate::id::{BlobHash, LineageId, RecordId};
use crate::keys::{PublicKey, SecretKey};
pub use crate::rules::{InvalidRecord, check_path};

/// Most threads [`Record::decode_batch`] verifies on.
pub const MAX_VERIFY_THREADS: usize = 4;
/// Fewest records for which [`Record::decode_batch`] uses several threads: below it, starting
/// threads costs more than it saves (about 50 µs of verification per record).
const PARALLEL_VERIFY_MIN: usize = 32;

/// The only record format version this code reads and writes.
pub const FORMAT_VERSION: u8 = 1;
/// BLAKE3 derive-key context for record ids. Frozen: changing it changes every id.
pub const RECORD_ID_CONTEXT: &str = "commons 2026-11-22 record id v1";
/// Prefix of the message an author signs (followed by the 32-byte id).
pub const SIGNATURE_DOMAIN: &[u8] = b"commons/record-signature/v1\0";
const SIGNATURE_LEN: usize = 64;
const HEADER_LEN: usize = 2;

/// Largest charter, in bytes: a charter is a few names and up to 64 maintainers.
pub const MAX_CHARTER_BYTES: usize = 16 * 1024;
/// Largest patch, in bytes. Patches travel whole in one gossip message (limit 256 KiB), and file
/// contents travel separately as blobs, so 128 KiB of paths and hashes is plenty.
pub const MAX_PATCH_BYTES: usize = 128 * 1024;
/// Largest validation, in bytes: ids and a note.
pub const MAX_VALIDATION_BYTES: usize = 8 * 1024;
/// The largest record of any kind.
pub const MAX_RECORD_BYTES: usize = MAX_PATCH_BYTES;

/// Most maintainers a charter may name.
pub const MAX_MAINTAINERS: usize = 64;
/// Most parents a patch may name.
pub const MAX_PARENTS: usize = 64;
/// Most file changes in one patch.
pub const MAX_CHANGES: usize = 4096;
/// Longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest name of a commons, in bytes.
pub const MAX_NAME_BYTES: usize = 100;
/// Longest license expression, in bytes.
pub const MAX_LICENSE_BYTES: usize = 256;
/// Most heads and most exclusions a fork charter may name.
pub const MAX_FORK_HEADS: usize = 256;

/// The canonical encoding: bincode 2, fixed-width little-endian integers. Encoding has no limit
/// of its own: the size of the result is checked against the kind's limit after encoding.
fn canon() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian()
}

/// The canonical encoding with bincode's decode limit `LIMIT`, for reading.
///
/// bincode's limit is not a count of bytes on the wire: it counts what the decoder *claims*,
/// which is the width of every integer and byte string it reads (about the bytes read) plus, for
/// a list of structs, `len × size_of::<T>()` reserved before the list is read (and released as
/// its elements are). A patch of 128 KiB with 3 000 changes of short paths reserves about
/// 3 000 × 96 bytes, more than 128 KiB: a limit equal to the size limit refuses records that are
/// within it. So the limit of each kind is derived from its size limit, see [`decode_limit`].
fn canon_decode<const LIMIT: usize>() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian()
        .with_limit::<LIMIT>()
}

/// Fewest bytes one [`Change`] takes on the wire, whatever it holds: the path's length prefix
/// (the path itself may be empty on the wire; that rule is checked after parsing) and the tags
/// of the two options.
const MIN_WIRE_CHANGE: usize = 8 + 1 + 1;
/// Bytes of an id or key on the wire.
const WIRE_HASH: usize = 32;

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// The most bincode can reserve per byte of input, for a list of `T` whose elements take at least
/// `wire` bytes each: `len ≤ input / wire`, so `len × size_of::<T>() ≤ input × ⌈size / wire⌉`.
const fn reserve_per_byte(size: usize, wire: usize) -> usize {
    size.div_ceil(wire)
}

/// bincode's decode limit for a kind whose records are at most `max_bytes` long and whose lists of
/// structs reserve at most `per_byte` bytes per input byte.
///
/// While a record of `n ≤ max_bytes` bytes that parses is decoded, the claim is at most the bytes
/// read so far (≤ n) plus the reservation of the one list of structs being read (no list of
/// structs in a record holds another), which is at most `n × per_byte`. So every record within
/// its size limit that parses stays under `max_bytes × (1 + per_byte)`, and no input can make the
/// decoder allocate more than that before it fails.
pub const fn decode_limit(max_bytes: usize, per_byte: usize) -> usize {
    max_bytes * (1 + per_byte)
}

/// bincode's decode limit for charters: lists of keys (maintainers) and of ids (fork heads,
/// exclusions). 32 KiB.
pub const CHARTER_DECODE_LIMIT: usize = decode_limit(
    MAX_CHARTER_BYTES,
    max(
        reserve_per_byte(std::mem::size_of::<PublicKey>(), WIRE_HASH),
        reserve_per_byte(std::mem::size_of::<RecordId>(), WIRE_HASH),
    ),
);
/// bincode's decode limit for patches: lists of ids (parents) and of changes. About 1.4 MiB.
pub const PATCH_DECODE_LIMIT: usize = decode_limit(
    MAX_PATCH_BYTES,
    max(
        reserve_per_byte(std::mem::size_of::<RecordId>(), WIRE_HASH),
        reserve_per_byte(std::mem::size_of::<Change>(), MIN_WIRE_CHANGE),
    ),
);
/// bincode's decode limit for validations, which hold no list of structs. 8 KiB.
pub const VALIDATION_DECODE_LIMIT: usize = decode_limit(MAX_VALIDATION_BYTES, 0);

/// The kinds of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Founds a lineage.
    Charter = 0,
    /// A contribution.
    Patch = 1,
    /// A maintainer's verdict.
    Validation = 2,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Kind::Charter),
            1 => Some(Kind::Patch),
            2 => Some(Kind::Validation),
            _ => None,
        }
    }

    /// The size limit of this kind, in bytes.
    pub fn max_bytes(self) -> usize {
        match self {
            Kind::Charter => MAX_CHARTER_BYTES,
            Kind::Patch => MAX_PATCH_BYTES,
            Kind::Validation => MAX_VALIDATION_BYTES,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Charter => "charter",
            Kind::Patch => "patch",
            Kind::Validation => "validation",
        })
    }
}

/// Where a fork starts: the parent lineage, the heads of its accepted history, and the ancestors
/// of those heads that the parent had not accepted (usually none).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct ForkBase {
    /// The lineage forked from.
    pub parent: LineageId,
    /// Heads of the parent's accepted history, sorted, without duplicates.
    pub heads: Vec<RecordId>,
    /// Ancestors of `heads` that are not part of the base, sorted, without duplicates.
    pub excluded: Vec<RecordId>,
}

/// Founds a lineage. A fork is a charter with a parent.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct Charter {
    /// Human name of the commons.
    pub name: String,
    /// One paragraph about it.
    pub summary: String,
    /// SPDX license expression.
    pub license: String,
    /// Whose validations count, sorted, without duplicates.
    pub maintainers: Vec<PublicKey>,
    /// How many maintainers must accept (k of n).
    pub threshold: u16,
    /// Set for a fork.
    pub fork: Option<ForkBase>,
}

/// One file change: `before` and `after` are blob hashes, `None` meaning "no file".
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct Change {
    /// Relative path with `/` separators.
    pub path: String,
    /// The content the patch expects to replace.
    pub before: Option<BlobHash>,
    /// The content after the patch.
    pub after: Option<BlobHash>,
}

/// A contribution to a lineage.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct Patch {
    /// The lineage it is proposed to.
    pub lineage: LineageId,
    /// The patches it builds on, sorted, without duplicates.
    pub parents: Vec<RecordId>,
    /// File changes, sorted by path, one per path.
    pub changes: Vec<Change>,
    /// What and why.
    pub message: String,
}

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The patch belongs in the lineage.
    Accept,
    /// It does not.
    Reject,
}

/// A maintainer's verdict on a patch, counted in one lineage.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct Validation {
    /// The lineage whose maintainers this counts for.
    pub lineage: LineageId,
    /// The patch judged.
    pub patch: RecordId,
    /// Accept or reject.
    pub verdict: Verdict,
    /// Why.
    pub note: String,
}

/// The content of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Body {
    /// See [`Charter`].
    Charter(Charter),
    /// See [`Patch`].
    Patch(Patch),
    /// See [`Validation`].
    Validation(Validation),
}

impl Body {
    /// Which kind this is.
    pub fn kind(&self) -> Kind {
        match self {
            Body::Charter(_) => Kind::Charter,
            Body::Patch(_) => Kind::Patch,
            Body::Validation(_) => Kind::Validation,
        }
    }
}

#[derive(Encode)]
struct UnsignedRef<'a, B> {
    author: &'a PublicKey,
    timestamp: u64,
    body: &'a B,
}

#[derive(Decode)]
struct Unsigned<B> {
    author: PublicKey,
    timestamp: u64,
    body: B,
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the header and signature.
    #[error("record is truncated ({len} bytes)")]
    Truncated {
        /// Length given.
        len: usize,
    },
    /// The format version is not one this code knows.
    #[error(
        "unknown record format version {version} (this build reads version {FORMAT_VERSION}); upgrade commons"
    )]
    UnknownVersion {
        /// The version byte.
        version: u8,
    },
    /// The kind byte is not known.
    #[error("unknown record kind {kind}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// Bigger than the kind allows; nothing was parsed.
    #[error("{kind} record of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Kind claimed by the header.
        kind: Kind,
        /// Length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body did not parse.
    #[error("malformed {kind} record: {reason}")]
    Malformed {
        /// Kind claimed by the header.
        kind: Kind,
        /// What the parser said.
        reason: String,
    },
    /// Bytes left after the body.
    #[error("{kind} record has {extra} trailing bytes")]
    TrailingBytes {
        /// Kind claimed by the header.
        kind: Kind,
        /// How many.
        extra: usize,
    },
    /// The bytes parse, but are not the canonical encoding of what they parse to.
    #[error("{kind} record is not in canonical form")]
    NonCanonical {
        /// Kind claimed by the header.
        kind: Kind,
    },
    /// The value breaks a rule of its kind.
    #[error("invalid {kind} record: {reason}")]
    Invalid {
        /// Kind claimed by the header.
        kind: Kind,
        /// The broken rule.
        reason: InvalidRecord,
    },
    /// The signature does not verify against the author key and the id.
    #[error("bad signature on {kind} record {id} by {author}")]
    BadSignature {
        /// Kind claimed by the header.
        kind: Kind,
        /// The computed id.
        id: RecordId,
        /// The claimed author.
        author: PublicKey,
    },
}

/// Why a record could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The value breaks a rule of its kind.
    #[error("invalid {kind}: {reason}")]
    Invalid {
        /// The kind.
        kind: Kind,
        /// The broken rule.
        reason: InvalidRecord,
    },
    /// The encoding is over the size limit of the kind.
    #[error("{kind} of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The kind.
        kind: Kind,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The signed bytes are refused by the decoder: a record no node would accept. Only a bug in
    /// this crate can cause it; it is refused here rather than stored and sent.
    #[error("{kind} would not be accepted by the decoder ({reason}); this is a bug in commons")]
    Undecodable {
        /// The kind.
        kind: Kind,
        /// What the decoder said.
        reason: DecodeError,
    },
}

/// A record whose bytes, id and signature have been checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    id: RecordId,
    author: PublicKey,
    timestamp: u64,
    body: Body,
    bytes: Vec<u8>,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("kind", &self.body.kind())
            .field("author", &self.author)
            .finish()
    }
}

fn compute_id(signed_part: &[u8]) -> RecordId {
    let mut h = blake3::Hasher::new_derive_key(RECORD_ID_CONTEXT);
    h.update(signed_part);
    RecordId(*h.finalize().as_bytes())
}

fn signing_message(id: &RecordId) -> [u8; SIGNATURE_DOMAIN.len() + 32] {
    let mut m = [0u8; SIGNATURE_DOMAIN.len() + 32];
    m[..SIGNATURE_DOMAIN.len()].copy_from_slice(SIGNATURE_DOMAIN);
    m[SIGNATURE_DOMAIN.len()..].copy_from_slice(id.as_bytes());
    m
}

fn encode_unsigned(author: &PublicKey, timestamp: u64, body: &Body) -> Vec<u8> {
    fn encode<B: Encode>(
        author: &PublicKey,
        timestamp: u64,
        body: &B,
        out: &mut Vec<u8>,
    ) -> Result<usize, bincode::error::EncodeError> {
        let value = UnsignedRef {
            author,
            timestamp,
            body,
        };
        bincode::encode_into_std_write(value, out, canon())
    }
    let mut out = vec![FORMAT_VERSION, body.kind() as u8];
    let res = match body {
        Body::Charter(b) => encode(author, timestamp, b, &mut out),
        Body::Patch(b) => encode(author, timestamp, b, &mut out),
        Body::Validation(b) => encode(author, timestamp, b, &mut out),
    };
    // Encoding into a Vec without a limit cannot fail; should bincode ever fail anyway, return
    // something certainly too large for any kind, so the caller's size check refuses it.
    if res.is_err() {
        out.resize(MAX_RECORD_BYTES + 1, 0);
    }
    out
}

fn decode_body<B: Decode<()>, const LIMIT: usize>(
    kind: Kind,
    bytes: &[u8],
) -> Result<Unsigned<B>, DecodeError> {
    let (value, used): (Unsigned<B>, usize) =
        bincode::decode_from_slice(bytes, canon_decode::<LIMIT>()).map_err(|e| {
            DecodeError::Malformed {
                kind,
                reason: e.to_string(),
            }
        })?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            kind,
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

impl Record {
    /// Signs a new record. The body is checked first, and the signed bytes are then read back with
    /// the decoder every node uses (everything but the signature, which was just made), so a
    /// record this returns is one that [`Record::decode`] accepts: there is one definition of a
    /// valid record, the decoder's.
    pub fn sign(key: &SecretKey, timestamp: u64, body: Body) -> Result<Record, SignError> {
        let kind = body.kind();
        body.check()
            .map_err(|reason| SignError::Invalid { kind, reason })?;
        let author = key.public();
        let mut bytes = encode_unsigned(&author, timestamp, &body);
        let len = bytes.len() + SIGNATURE_LEN;
        if len > kind.max_bytes() {
            return Err(SignError::TooLarge {
                kind,
                len,
                max: kind.max_bytes(),
            });
        }
        let id = compute_id(&bytes);
        bytes.extend_from_slice(&key.sign(&signing_message(&id)));
        Self::decode_unverified(&bytes).map_err(|reason| SignError::Undecodable { kind, reason })
    }

    /// Decodes and verifies bytes: size limit of the kind first, then parse, trailing bytes,
    /// canonical form, the rules of the kind, and the signature (strict).
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        let record = Self::decode_unverified(bytes)?;
        record.verify_signature()?;
        Ok(record)
    }

    /// Reads back bytes that were verified by [`Record::decode`] (or made by [`Record::sign`])
    /// before the caller stored them: everything is checked again — size, canonical form, the
    /// rules of the kind, and the id the caller compares with its key — except the signature,
    /// which is what costs (about 50 µs a record). Only the store uses this, on its own pages;
    /// bytes from anywhere else go through [`Record::decode`].
    pub fn decode_stored(bytes: &[u8]) -> Result<Record, DecodeError> {
        Self::decode_unverified(bytes)
    }

    /// Everything [`Record::decode`] does except the signature check, so that callers can
    /// verify many signatures as a batch.
    pub(crate) fn decode_unverified(bytes: &[u8]) -> Result<Record, DecodeError> {
        if bytes.len() < HEADER_LEN + SIGNATURE_LEN {
            return Err(DecodeError::Truncated { len: bytes.len() });
        }
        if bytes[0] != FORMAT_VERSION {
            return Err(DecodeError::UnknownVersion { version: bytes[0] });
        }
        let kind = Kind::from_byte(bytes[1]).ok_or(DecodeError::UnknownKind { kind: bytes[1] })?;
        if bytes.len() > kind.max_bytes() {
            return Err(DecodeError::TooLarge {
                kind,
                len: bytes.len(),
                max: kind.max_bytes(),
            });
        }
        let (signed_part, _sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let encoded = &signed_part[HEADER_LEN..];
        let (author, timestamp, body) = match kind {
            Kind::Charter => {
                let u = decode_body::<Charter, CHARTER_DECODE_LIMIT>(kind, encoded)?;
                (u.author, u.timestamp, Body::Charter(u.body))
            }
            Kind::Patch => {
                let u = decode_body::<Patch, PATCH_DECODE_LIMIT>(kind, encoded)?;
                (u.author, u.timestamp, Body::Patch(u.body))
            }
            Kind::Validation => {
                let u = decode_body::<Validation, VALIDATION_DECODE_LIMIT>(kind, encoded)?;
                (u.author, u.timestamp, Body::Validation(u.body))
            }
        };
        if encode_unsigned(&author, timestamp, &body) != signed_part {
            return Err(DecodeError::NonCanonical { kind });
        }
        body.check()
            .map_err(|reason| DecodeError::Invalid { kind, reason })?;
        Ok(Record {
            id: compute_id(signed_part),
            author,
            timestamp,
            body,
            bytes: bytes.to_vec(),
        })
    }

    fn signature(&self) -> ed25519_dalek::Signature {
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(&self.bytes[self.bytes.len() - SIGNATURE_LEN..]);
        ed25519_dalek::Signature::from_bytes(&sig)
    }

    fn verify_signature(&self) -> Result<(), DecodeError> {
        self.author
            .verifying_key()
            .verify_strict(&signing_message(&self.id), &self.signature())
            .map_err(|_| DecodeError::BadSignature {
                kind: self.kind(),
                id: self.id,
                author: self.author,
            })
    }

    /// Decodes and verifies many records: exactly [`Record::decode`] on each, so a record's
    /// verdict never depends on what shares its batch. The result has one entry per input, in
    /// order.
    ///
    /// Signatures are checked with `verify_strict`, one by one, not with ed25519 batch
    /// verification: a signature whose R hides a torsion component (R = rB + T, T of order 2, 4
    /// or 8) is refused by `verify_strict` but passes a batch whenever ord(T) divides the weight
    /// the batch gives it, a fixed function of the batch's contents, so nodes that batch the
    /// same record differently would disagree about it (and strike the honest peer that
    /// forwarded it). Making a batch refuse exactly what `verify_strict` refuses needs a
    /// subgroup check of every R, which costs about as much as the strict check itself
    /// (docs/security.md). Large inputs are spread over up to [`MAX_VERIFY_THREADS`] threads.
    pub fn decode_batch(items: &[&[u8]]) -> Vec<Result<Record, DecodeError>> {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_VERIFY_THREADS);
        if threads < 2 || items.len() < PARALLEL_VERIFY_MIN {
            return items.iter().map(|b| Self::decode(b)).collect();
        }
        let per_thread = items.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let parts: Vec<_> = items
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || part.iter().map(|b| Self::decode(b)).collect::<Vec<_>>())
                })
                .collect();
            parts
                .into_iter()
                .zip(items.chunks(per_thread))
                .flat_map(|(handle, part)| {
                    // A verifying thread cannot panic on any input; should it anyway, its part
                    // is decoded again here rather than lost.
                    handle
                        .join()
                        .unwrap_or_else(|_| part.iter().map(|b| Self::decode(b)).collect())
                })
                .collect()
        })
    }

    /// The record's id.
    pub fn id(&self) -> RecordId {
        self.id
    }

    /// Who signed it.
    pub fn author(&self) -> PublicKey {
        self.author
    }

    /// When the author says it was made, in milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The content.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.body.kind()
    }

    /// The exact canonical bytes (what is stored, hashed and sent).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The charter, if this is one.
    pub fn as_charter(&self) -> Option<&Charter> {
        match &self.body {
            Body::Charter(c) => Some(c),
            _ => None,
        }
    }

    /// The patch, if this is one.
    pub fn as_patch(&self) -> Option<&Patch> {
        match &self.body {
            Body::Patch(p) => Some(p),
            _ => None,
        }
    }

    /// The validation, if this is one.
    pub fn as_validation(&self) -> Option<&Validation> {
        match &self.body {
            Body::Validation(v) => Some(v),
            _ => None,
        }
    }
}
