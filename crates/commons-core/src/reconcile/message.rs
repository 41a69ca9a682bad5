//! Messages of a reconciliation session: ranges, their modes, the rules a message must keep, and
//! its compact wire encoding (`docs/protocol.md`, "Reconciliation").

use bincode::{Decode, Encode};

use super::{Bound, FINGERPRINT_BYTES, Fingerprint, MIN_ID, Span};
use crate::id::RecordId;

/// Derive-key context of a salted short id.
pub const SHORT_ID_CONTEXT: &str = "commons 2026-12-03 reconcile short id v1";

/// A 32-bit short id: the first 4 bytes (little-endian) of
/// `BLAKE3.derive_key(SHORT_ID_CONTEXT, salt as 8 LE bytes ‖ id)`. The salt is the session's
/// (picked at random by the initiator), so nobody can choose ids that collide in advance; a
/// chance collision makes one session miss an id, which the next session, with another salt,
/// finds.
pub fn short_id(salt: u64, id: &RecordId) -> u32 {
    let mut h = blake3::Hasher::new_derive_key(SHORT_ID_CONTEXT);
    h.update(&salt.to_le_bytes());
    h.update(id.as_bytes());
    let out = h.finalize();
    let b = out.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// What a range says about its span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Nothing more to do here.
    Skip,
    /// The sender's fingerprint of the span; compare and answer.
    Fingerprint(Fingerprint),
    /// Every id the sender holds in the span (strictly ascending); answer with `Missing`.
    IdList(Vec<RecordId>),
    /// Ids the sender holds in the span that the receiver lacks (strictly ascending); the span
    /// is done.
    Missing(Vec<RecordId>),
    /// The short ids ([`short_id`], with the message's salt) of every id the sender holds in
    /// the span, strictly ascending as numbers; answer with `Want` and/or `Missing`.
    ShortIds(Vec<u32>),
    /// Short ids (strictly ascending) of ids the receiver listed in this span with `ShortIds`
    /// that the sender lacks: answer with `Missing`, their whole ids.
    Want(Vec<u32>),
}

impl Mode {
    /// Entries carried (ids or short ids), which the caps count.
    pub fn entries(&self) -> usize {
        match self {
            Mode::IdList(l) | Mode::Missing(l) => l.len(),
            Mode::ShortIds(l) | Mode::Want(l) => l.len(),
            Mode::Skip | Mode::Fingerprint(_) => 0,
        }
    }
}

/// One range of a message: its span runs from the previous range's upper bound (or
/// [`MIN_ID`]) to `upper`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// Exclusive upper bound; `None` is the end of the id space.
    pub upper: Option<RecordId>,
    /// What the sender says about the span.
    pub mode: Mode,
}

impl Range {
    /// The upper bound.
    pub fn upper_bound(&self) -> Bound {
        Bound::from_wire(self.upper)
    }
}

/// One message of a session: consecutive ranges from [`MIN_ID`]; the space after the last one
/// is done. An empty message says there is nothing more to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The session's salt of short ids: picked by the initiator, echoed by the responder.
    pub salt: u64,
    /// The ranges, by ascending upper bound.
    pub ranges: Vec<Range>,
}

/// The caps of one direction's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most ranges.
    pub max_ranges: usize,
    /// Most ids and short ids, over all ranges.
    pub max_ids: usize,
}

/// Why a message breaks the protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// More ranges than the cap.
    #[error("{got} ranges, over the limit of {max}")]
    TooManyRanges {
        /// Ranges in the message.
        got: usize,
        /// The cap.
        max: usize,
    },
    /// More ids than the cap.
    #[error("{got} ids, over the limit of {max}")]
    TooManyIds {
        /// Ids in the message.
        got: usize,
        /// The cap.
        max: usize,
    },
    /// A range's upper bound is not above its lower bound (the previous upper bound).
    #[error("range {0} is empty or out of order")]
    BoundsOutOfOrder(usize),
    /// The ids of a range are not strictly ascending, or not inside its span.
    #[error("the ids of range {0} are out of order or outside the range")]
    IdsOutOfPlace(usize),
}

impl Message {
    /// Checks the message against the caps and the rules of bounds: upper bounds strictly
    /// ascending from [`MIN_ID`] (so no range is empty and `End` can only come last), the ids of
    /// each range strictly ascending and inside it, short ids strictly ascending. Linear in the
    /// message.
    pub fn check(&self, limits: &Limits) -> Result<(), MessageError> {
        if self.ranges.len() > limits.max_ranges {
            return Err(MessageError::TooManyRanges {
                got: self.ranges.len(),
                max: limits.max_ranges,
            });
        }
        let ids = self.id_count();
        if ids > limits.max_ids {
            return Err(MessageError::TooManyIds {
                got: ids,
                max: limits.max_ids,
            });
        }
        for (i, (span, mode)) in self.spans().enumerate() {
            if span.upper <= Bound::Id(span.lower) {
                return Err(MessageError::BoundsOutOfOrder(i));
            }
            let in_place = match mode {
                Mode::IdList(list) | Mode::Missing(list) => {
                    list.windows(2).all(|w| w[0] < w[1]) && list.iter().all(|id| span.contains(id))
                }
                Mode::ShortIds(list) | Mode::Want(list) => list.windows(2).all(|w| w[0] < w[1]),
                Mode::Skip | Mode::Fingerprint(_) => true,
            };
            if !in_place {
                return Err(MessageError::IdsOutOfPlace(i));
            }
        }
        Ok(())
    }

    /// Each range with its span. Meaningful after [`Message::check`]; before, a span may be
    /// empty or inverted.
    pub fn spans(&self) -> impl Iterator<Item = (Span, &Mode)> + '_ {
        let mut lower = Some(MIN_ID);
        self.ranges.iter().map(move |r| {
            let upper = r.upper_bound();
            // After `End` nothing is left; `check` refuses such a message, the placeholder
            // keeps this total.
            let span = Span {
                lower: lower.unwrap_or(RecordId([0xff; 32])),
                upper,
            };
            lower = r.upper;
            (span, &r.mode)
        })
    }

    /// Ids and short ids carried, over all ranges.
    pub fn id_count(&self) -> usize {
        self.ranges.iter().map(|r| r.mode.entries()).sum()
    }

    /// Whether the message asks the receiver something; a message of only `Skip` and
    /// `Missing` needs no reply.
    pub fn needs_answer(&self) -> bool {
        self.ranges
            .iter()
            .any(|r| !matches!(r.mode, Mode::Skip | Mode::Missing(_)))
    }

    /// Length of the message in the sync protocol (its compact form behind bincode's 8-byte
    /// length), without the envelope of the request or response around it.
    pub fn encoded_len(&self) -> usize {
        8 + self.compact_len()
    }
}

// ----- the compact encoding -----

/// Tag of an `End` bound.
const END: u8 = 0xff;
const ID_BYTES: usize = 32;
const SHORT_BYTES: usize = 4;

fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Bytes of a bound without its trailing zero bytes: the bound is those bytes padded with
/// zeros, and bounds are picked short ([`super::separator`]).
fn bound_bytes(id: &RecordId) -> &[u8] {
    let b = id.as_bytes();
    let len = b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    &b[..len]
}

impl Message {
    /// Length of [`Message::to_compact`].
    pub fn compact_len(&self) -> usize {
        let mut len = 8 + varint_len(self.ranges.len() as u64);
        for r in &self.ranges {
            len += 1 + r.upper.as_ref().map_or(0, |u| bound_bytes(u).len());
            len += 1 + match &r.mode {
                Mode::Skip => 0,
                Mode::Fingerprint(_) => FINGERPRINT_BYTES,
                Mode::IdList(l) | Mode::Missing(l) => {
                    varint_len(l.len() as u64) + ID_BYTES * l.len()
                }
                Mode::ShortIds(l) | Mode::Want(l) => {
                    varint_len(l.len() as u64) + SHORT_BYTES * l.len()
                }
            };
        }
        len
    }

    /// The compact form: `salt` (8 bytes LE), the number of ranges (LEB128), then each range:
    /// its bound (`0xff` for the end of the id space, else a length 0–32 and the bound's bytes
    /// without trailing zeros) and its mode (a tag byte, then a fingerprint, or a LEB128 count
    /// and that many 32-byte ids or 4-byte LE short ids).
    pub fn to_compact(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.compact_len());
        out.extend_from_slice(&self.salt.to_le_bytes());
        put_varint(&mut out, self.ranges.len() as u64);
        for r in &self.ranges {
            match &r.upper {
                None => out.push(END),
                Some(u) => {
                    let b = bound_bytes(u);
                    out.push(b.len() as u8);
                    out.extend_from_slice(b);
                }
            }
            match &r.mode {
                Mode::Skip => out.push(0),
                Mode::Fingerprint(fp) => {
                    out.push(1);
                    out.extend_from_slice(&fp.0);
                }
                Mode::IdList(l) | Mode::Missing(l) => {
                    out.push(if matches!(r.mode, Mode::IdList(_)) {
                        2
                    } else {
                        3
                    });
                    put_varint(&mut out, l.len() as u64);
                    for id in l {
                        out.extend_from_slice(id.as_bytes());
                    }
                }
                Mode::ShortIds(l) | Mode::Want(l) => {
                    out.push(if matches!(r.mode, Mode::ShortIds(_)) {
                        4
                    } else {
                        5
                    });
                    put_varint(&mut out, l.len() as u64);
                    for s in l {
                        out.extend_from_slice(&s.to_le_bytes());
                    }
                }
            }
        }
        out
    }

    /// Parses the compact form. Every count is checked against the bytes left before anything
    /// is allocated; non-canonical forms (a varint longer than needed, a bound with a trailing
    /// zero byte, bytes after the last range) are refused, so each message has one encoding.
    pub fn from_compact(bytes: &[u8]) -> Result<Message, &'static str> {
        let mut r = Reader { bytes, at: 0 };
        let salt = u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| "salt")?);
        let count = r.count(2)?;
        let mut ranges = Vec::with_capacity(count);
        for _ in 0..count {
            let upper = match r.byte()? {
                END => None,
                len if usize::from(len) <= ID_BYTES => {
                    let b = r.take(usize::from(len))?;
                    if b.last() == Some(&0) {
                        return Err("a bound with a trailing zero byte");
                    }
                    let mut id = [0u8; ID_BYTES];
                    id[..b.len()].copy_from_slice(b);
                    Some(RecordId(id))
                }
                _ => return Err("a bound longer than an id"),
            };
            let mode = match r.byte()? {
                0 => Mode::Skip,
                1 => {
                    let mut fp = [0u8; FINGERPRINT_BYTES];
                    fp.copy_from_slice(r.take(FINGERPRINT_BYTES)?);
                    Mode::Fingerprint(Fingerprint(fp))
                }
                tag @ (2 | 3) => {
                    let n = r.count(ID_BYTES)?;
                    let ids = (0..n)
                        .map(|_| {
                            let mut id = [0u8; ID_BYTES];
                            id.copy_from_slice(r.take(ID_BYTES)?);
                            Ok(RecordId(id))
                        })
                        .collect::<Result<Vec<_>, &'static str>>()?;
                    if tag == 2 {
                        Mode::IdList(ids)
                    } else {
                        Mode::Missing(ids)
                    }
                }
                tag @ (4 | 5) => {
                    let n = r.count(SHORT_BYTES)?;
                    let shorts = (0..n)
                        .map(|_| {
                            let b = r.take(SHORT_BYTES)?;
                            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        })
                        .collect::<Result<Vec<_>, &'static str>>()?;
                    if tag == 4 {
                        Mode::ShortIds(shorts)
                    } else {
                        Mode::Want(shorts)
                    }
                }
                _ => return Err("an unknown range mode"),
            };
            ranges.push(Range { upper, mode });
        }
        if r.at != bytes.len() {
            return Err("bytes after the last range");
        }
        Ok(Message { salt, ranges })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(n).ok_or("truncated")?;
        let b = self.bytes.get(self.at..end).ok_or("truncated")?;
        self.at = end;
        Ok(b)
    }

    fn byte(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    /// A canonical LEB128 count of elements of at least `size` bytes each, no more than the
    /// bytes left can hold.
    fn count(&mut self, size: usize) -> Result<usize, &'static str> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err("a varint over 64 bits");
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    return Err("a varint longer than needed");
                }
                let left = (self.bytes.len() - self.at) / size.max(1);
                return usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= left)
                    .ok_or("a count over the bytes left");
            }
        }
        Err("a varint over 64 bits")
    }
}

impl Encode for Message {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.to_compact().encode(encoder)
    }
}

impl<C> Decode<C> for Message {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let bytes = Vec::<u8>::decode(decoder)?;
        Message::from_compact(&bytes).map_err(bincode::error::DecodeError::Other)
    }
}
bincode::impl_borrow_decode!(Message);
