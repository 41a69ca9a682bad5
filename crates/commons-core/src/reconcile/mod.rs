//! Range-based set reconciliation of record ids (after Meyer's "Range-Based Set Reconciliation"
//! and negentropy), as a state machine that does no I/O.
//!
//! Two nodes each hold a set of record ids (32 bytes, ordered bytewise) and want to learn which
//! ids the other holds that they lack, at a cost that grows with the difference, not the sets.
//!
//! - A **span** `[lower, upper)` is a stretch of the id space; a [`Message`] is a list of
//!   [`Range`]s that cover consecutive spans from the all-zero id, each naming only its upper
//!   bound (the lower bound is the previous range's upper bound). Spans after the last range are
//!   done.
//! - A span is summarised by a [`Fingerprint`]: every id is hashed with BLAKE3 in derive-key mode
//!   ([`ITEM_CONTEXT`]); the hashes are summed mod 2^256 and the sum and the count are hashed
//!   again ([`FINGERPRINT_CONTEXT`]) and cut to 16 bytes. Sums make the fingerprint of a span
//!   computable from prefix sums in O(1) ([`SortedItems`]); hashing each id first means a peer
//!   cannot make two different sets sum alike by choosing ids, as it could with XOR or sums of
//!   the raw ids; the final hash over the count makes the result non-linear.
//! - The initiator sends the fingerprints of [`BRANCHING`] sub-spans of the whole space (or its
//!   ids when it holds at most [`LEAF_SIZE`]). For each range received, the receiver answers:
//!   - a matching fingerprint with `Skip`;
//!   - a fingerprint of a span in which it holds at most [`LEAF_SIZE`] ids with `IdList`, its
//!     ids in that span;
//!   - any other fingerprint by splitting its own ids in the span into [`BRANCHING`] equal
//!     parts, one `Fingerprint` each;
//!   - an `IdList` by learning which of those ids it lacks and answering `Missing`, the ids it
//!     holds in the span that the sender lacks (or `Skip` when there are none, or when
//!     configured not to tell, see [`Config::tell_missing`]);
//!   - `Missing` by learning those ids; it needs no answer.
//! - When a reply would exceed the message limits ([`Limits`]), the rest of the space is answered
//!   by one fingerprint over `[here, end)`, which the other side treats like any other: work is
//!   deferred to later rounds, never dropped. Every message therefore has a size cap.
//!
//! With `d` differences among `n` ids, each round trip descends `log_16` of the way, so a session
//! takes about `log_16(n / 32) + 2` round trips and `O(d · 16 · log_16 n)` fingerprints.
//!
//! The state machine ([`Reconciler`]) takes messages in and gives messages out; the network and
//! the clock belong to the caller, which also bounds the session's duration. It reads the local
//! set through the [`Items`] trait; [`SortedItems`] is the in-memory implementation.

use std::collections::BTreeSet;

use bincode::{Decode, Encode};

use crate::id::RecordId;

mod items;
pub use items::SortedItems;

/// Derive-key context of the hash of one id (the summand of a fingerprint).
pub const ITEM_CONTEXT: &str = "commons 2026-11-22 reconcile item v1";
/// Derive-key context of the hash of a span's (sum, count).
pub const FINGERPRINT_CONTEXT: &str = "commons 2026-11-22 reconcile fingerprint v1";

/// Sub-spans a mismatching span is split into. 16 (negentropy's choice) descends four bits of
/// the set size per round trip: 100 000 ids are reached in about five messages.
pub const BRANCHING: usize = 16;
/// Most ids a side holds in a mismatching span before it sends them rather than splitting. At
/// least [`BRANCHING`], so every part of a split holds an id; 32 ids (1 KiB) cost about as much
/// as the 16 fingerprints a split would send, and save a round trip.
pub const LEAF_SIZE: u64 = 32;
/// Most ranges in one message. Enough for a split of [`BRANCHING`] parts of 15 mismatching
/// ranges at once; about 14 KiB of fingerprints and bounds at most.
pub const MAX_RANGES: usize = 256;
/// Most ids in one message from the initiator. 32 KiB of ids plus [`MAX_RANGES`] ranges stays
/// under the sync protocol's 64 KiB request cap.
pub const MAX_REQUEST_IDS: usize = 1024;
/// Most ids in one message from the responder: 512 KiB, far under the 4 MiB response cap, so a
/// node that lacks a whole family learns 16 384 ids per round trip.
pub const MAX_RESPONSE_IDS: usize = 16_384;
/// Most messages one side accepts in a session. A session needs about `log_16(n) + 2` rounds
/// plus one per [`MAX_RESPONSE_IDS`] ids missing, so 128 covers a million ids sent whole;
/// beyond it the session stops, and what was learned so far stands.
pub const MAX_ROUNDS: u32 = 128;
/// Bytes of a fingerprint. 128 bits: a chance collision is negligible, and a forged one costs
/// a second preimage of BLAKE3 truncated to 128 bits.
pub const FINGERPRINT_BYTES: usize = 16;

/// The summary of a span: see the module documentation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Fingerprint(pub [u8; FINGERPRINT_BYTES]);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({})", hex::encode(&self.0[..6]))
    }
}

/// The sum (mod 2^256) and count of the item hashes of a set of ids. Sums of disjoint sets add,
/// so a prefix-sum table gives any span's accumulator by one subtraction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accumulator {
    /// Little-endian 64-bit limbs of the sum.
    sum: [u64; 4],
    count: u64,
}

impl Accumulator {
    /// The accumulator of one id.
    pub fn of(id: &RecordId) -> Self {
        let h = blake3::derive_key(ITEM_CONTEXT, id.as_bytes());
        let mut sum = [0u64; 4];
        for (limb, chunk) in sum.iter_mut().zip(h.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *limb = u64::from_le_bytes(b);
        }
        Accumulator { sum, count: 1 }
    }

    /// Adds another accumulator (the union of disjoint sets).
    pub fn add(&mut self, other: &Accumulator) {
        let mut carry = false;
        for (a, b) in self.sum.iter_mut().zip(other.sum) {
            let (s1, c1) = a.overflowing_add(b);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            *a = s2;
            carry = c1 || c2;
        }
        self.count = self.count.wrapping_add(other.count);
    }

    /// Subtracts an accumulator of a subset.
    pub fn sub(&mut self, other: &Accumulator) {
        let mut borrow = false;
        for (a, b) in self.sum.iter_mut().zip(other.sum) {
            let (s1, b1) = a.overflowing_sub(b);
            let (s2, b2) = s1.overflowing_sub(u64::from(borrow));
            *a = s2;
            borrow = b1 || b2;
        }
        self.count = self.count.wrapping_sub(other.count);
    }

    /// Number of ids summed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The fingerprint: `derive_key(FINGERPRINT_CONTEXT, sum as 32 LE bytes ‖ count as LE u64)`,
    /// first 16 bytes.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut input = [0u8; 40];
        for (chunk, limb) in input.chunks_exact_mut(8).zip(self.sum) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        input[32..].copy_from_slice(&self.count.to_le_bytes());
        let h = blake3::derive_key(FINGERPRINT_CONTEXT, &input);
        let mut fp = [0u8; FINGERPRINT_BYTES];
        fp.copy_from_slice(&h[..FINGERPRINT_BYTES]);
        Fingerprint(fp)
    }
}

/// An upper bound: an id (exclusive) or the end of the id space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bound {
    /// Every id strictly below this one.
    Id(RecordId),
    /// Every id.
    End,
}

impl Bound {
    /// Whether `id` is below the bound.
    pub fn above(&self, id: &RecordId) -> bool {
        match self {
            Bound::Id(u) => id < u,
            Bound::End => true,
        }
    }

    fn from_wire(upper: Option<RecordId>) -> Bound {
        upper.map_or(Bound::End, Bound::Id)
    }

    fn to_wire(self) -> Option<RecordId> {
        match self {
            Bound::Id(u) => Some(u),
            Bound::End => None,
        }
    }
}

/// The smallest id: where the first range of every message starts.
pub const MIN_ID: RecordId = RecordId([0; 32]);

/// A stretch of the id space: `lower` (inclusive) to `upper` (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First id in the span.
    pub lower: RecordId,
    /// Where the span ends.
    pub upper: Bound,
}

impl Span {
    /// The whole id space.
    pub const ALL: Span = Span {
        lower: MIN_ID,
        upper: Bound::End,
    };

    /// Whether `id` is in the span.
    pub fn contains(&self, id: &RecordId) -> bool {
        *id >= self.lower && self.upper.above(id)
    }
}

/// What a range says about its span.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
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
}

/// One range of a message: its span runs from the previous range's upper bound (or
/// [`MIN_ID`]) to `upper`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Message {
    /// The ranges, by ascending upper bound.
    pub ranges: Vec<Range>,
}

/// The caps of one direction's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most ranges.
    pub max_ranges: usize,
    /// Most ids, over all `IdList` and `Missing` ranges.
    pub max_ids: usize,
}

/// The caps of messages from the initiator (they travel in sync requests).
pub const REQUEST_LIMITS: Limits = Limits {
    max_ranges: MAX_RANGES,
    max_ids: MAX_REQUEST_IDS,
};
/// The caps of messages from the responder (they travel in sync responses).
pub const RESPONSE_LIMITS: Limits = Limits {
    max_ranges: MAX_RANGES,
    max_ids: MAX_RESPONSE_IDS,
};

// A split must fit one message with room for the deferral range, and a leaf's ids must fit the
// smaller id cap, or a message could make no progress.
const _: () = assert!(LEAF_SIZE as usize >= BRANCHING);
const _: () = assert!(MAX_RANGES >= BRANCHING + 2);
const _: () = assert!(MAX_REQUEST_IDS >= LEAF_SIZE as usize);

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

/// Why a session cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// The peer's message breaks the protocol.
    #[error("invalid reconciliation message: {0}")]
    Invalid(#[from] MessageError),
    /// The session went on for more than [`Config::max_rounds`] messages.
    #[error("reconciliation did not finish within {0} rounds")]
    TooManyRounds(u32),
}

/// Bytes of a message in the sync protocol's encoding (bincode, fixed-width integers).
const VEC_LEN_BYTES: usize = 8;
const ENUM_TAG_BYTES: usize = 4;
const OPTION_TAG_BYTES: usize = 1;
const ID_BYTES: usize = 32;

impl Message {
    /// Checks the message against the caps and the rules of bounds: upper bounds strictly
    /// ascending from [`MIN_ID`] (so no range is empty and `End` can only come last), the ids of
    /// each range strictly ascending and inside it. Iterative, linear in the message.
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
            if let Mode::IdList(list) | Mode::Missing(list) = mode {
                let ascending = list.windows(2).all(|w| w[0] < w[1]);
                if !ascending || !list.iter().all(|id| span.contains(id)) {
                    return Err(MessageError::IdsOutOfPlace(i));
                }
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

    /// Ids carried, over all ranges.
    pub fn id_count(&self) -> usize {
        self.ranges
            .iter()
            .map(|r| match &r.mode {
                Mode::IdList(l) | Mode::Missing(l) => l.len(),
                _ => 0,
            })
            .sum()
    }

    /// Whether the message asks the receiver something (a fingerprint or an id list); a message
    /// of only `Skip` and `Missing` needs no reply.
    pub fn needs_answer(&self) -> bool {
        self.ranges
            .iter()
            .any(|r| matches!(r.mode, Mode::Fingerprint(_) | Mode::IdList(_)))
    }

    /// Length of the message in the sync protocol's encoding (bincode 2, fixed-width
    /// little-endian integers), without the envelope of the request or response around it.
    pub fn encoded_len(&self) -> usize {
        VEC_LEN_BYTES
            + self
                .ranges
                .iter()
                .map(|r| {
                    let bound = OPTION_TAG_BYTES + if r.upper.is_some() { ID_BYTES } else { 0 };
                    let body = match &r.mode {
                        Mode::Skip => 0,
                        Mode::Fingerprint(_) => FINGERPRINT_BYTES,
                        Mode::IdList(l) | Mode::Missing(l) => VEC_LEN_BYTES + ID_BYTES * l.len(),
                    };
                    bound + ENUM_TAG_BYTES + body
                })
                .sum::<usize>()
    }
}

/// A set of ids as the reconciler sees it. Spans are `[lower, upper)`; implementations answer
/// from their own sorted view of the set.
pub trait Items {
    /// Number of ids in the span.
    fn count(&self, span: &Span) -> u64;
    /// Fingerprint of the ids in the span.
    fn fingerprint(&self, span: &Span) -> Fingerprint;
    /// The first `limit` ids of the span, ascending.
    fn ids(&self, span: &Span, limit: usize) -> Vec<RecordId>;
    /// The `n`-th id of the span (from 0), if the span holds that many.
    fn nth(&self, span: &Span, n: u64) -> Option<RecordId>;
    /// Whether the set holds `id`.
    fn contains(&self, id: &RecordId) -> bool;
}

/// How one side of a session behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Caps of the messages this side sends.
    pub send: Limits,
    /// Caps of the messages this side accepts.
    pub receive: Limits,
    /// Whether to answer an `IdList` with the ids the sender lacks. A side whose peer will not
    /// act on them (a stateless responder that only serves) saves those bytes and rounds.
    pub tell_missing: bool,
    /// Most messages accepted in the session.
    pub max_rounds: u32,
}

impl Config {
    /// The side that starts the session (its messages go in requests).
    pub const fn initiator() -> Self {
        Config {
            send: REQUEST_LIMITS,
            receive: RESPONSE_LIMITS,
            tell_missing: true,
            max_rounds: MAX_ROUNDS,
        }
    }

    /// The side that answers (its messages go in responses).
    pub const fn responder() -> Self {
        Config {
            send: RESPONSE_LIMITS,
            receive: REQUEST_LIMITS,
            tell_missing: true,
            max_rounds: MAX_ROUNDS,
        }
    }
}

/// One side of a session: feed it the peer's messages, send what it returns, and read what it
/// learned. It keeps no state about spans between messages (everything needed travels in the
/// messages), so a responder may use a fresh `Reconciler` for every message.
#[derive(Clone, Debug)]
pub struct Reconciler {
    config: Config,
    need: BTreeSet<RecordId>,
    have: BTreeSet<RecordId>,
    rounds: u32,
}

impl Reconciler {
    /// A side with this configuration.
    pub fn new(config: Config) -> Self {
        Reconciler {
            config,
            need: BTreeSet::new(),
            have: BTreeSet::new(),
            rounds: 0,
        }
    }

    /// The first message of a session: the ids of the whole space if there are at most
    /// [`LEAF_SIZE`], else the fingerprints of [`BRANCHING`] parts of it.
    pub fn initiate(&mut self, items: &impl Items) -> Message {
        let mut out = Writer::new(self.config.send);
        let count = items.count(&Span::ALL);
        if count <= LEAF_SIZE {
            out.push(
                Bound::End,
                Mode::IdList(items.ids(&Span::ALL, LEAF_SIZE as usize)),
            );
        } else {
            split(items, &Span::ALL, count, &mut out);
        }
        Message { ranges: out.ranges }
    }

    /// Takes the peer's message; returns the reply, or `None` when nothing is left to say (the
    /// session is over on this side once the peer needs no answer either).
    pub fn receive(
        &mut self,
        items: &impl Items,
        message: &Message,
    ) -> Result<Option<Message>, ReconcileError> {
        message.check(&self.config.receive)?;
        self.rounds += 1;
        if self.rounds > self.config.max_rounds {
            return Err(ReconcileError::TooManyRounds(self.config.max_rounds));
        }
        let mut out = Writer::new(self.config.send);
        // Where the rest of the space is deferred to a fingerprint, once the reply is full.
        let mut deferred: Option<RecordId> = None;
        for (span, mode) in message.spans() {
            if deferred.is_some() {
                // Ids the peer told are still worth learning; the rest waits for a later round.
                if let Mode::IdList(list) | Mode::Missing(list) = mode {
                    self.learn_needed(items, list);
                }
                continue;
            }
            match mode {
                Mode::Skip => out.push(span.upper, Mode::Skip),
                Mode::Missing(list) => {
                    self.learn_needed(items, list);
                    out.push(span.upper, Mode::Skip);
                }
                Mode::Fingerprint(fp) => {
                    if items.fingerprint(&span) == *fp {
                        out.push(span.upper, Mode::Skip);
                        continue;
                    }
                    let count = items.count(&span);
                    if count <= LEAF_SIZE {
                        if !out.room(1, count as usize) {
                            deferred = Some(span.lower);
                            continue;
                        }
                        out.push(span.upper, Mode::IdList(items.ids(&span, count as usize)));
                    } else {
                        if !out.room(BRANCHING, 0) {
                            deferred = Some(span.lower);
                            continue;
                        }
                        split(items, &span, count, &mut out);
                    }
                }
                Mode::IdList(theirs) => {
                    self.learn_needed(items, theirs);
                    if let Some(at) = self.answer_id_list(items, &span, theirs, &mut out) {
                        deferred = Some(at);
                    }
                }
            }
        }
        if let Some(at) = deferred {
            let rest = Span {
                lower: at,
                upper: Bound::End,
            };
            out.push(Bound::End, Mode::Fingerprint(items.fingerprint(&rest)));
        }
        Ok(out.finish())
    }

    /// Answers an `IdList` with `Missing` (the ids held in the span that the peer lacks). When
    /// they do not all fit, sends those that do and returns where the deferred rest starts.
    fn answer_id_list(
        &mut self,
        items: &impl Items,
        span: &Span,
        theirs: &[RecordId],
        out: &mut Writer,
    ) -> Option<RecordId> {
        if !self.config.tell_missing {
            out.push(span.upper, Mode::Skip);
            return None;
        }
        if !out.room(1, 1) {
            return Some(span.lower);
        }
        let room = out.room_for_ids();
        // Of `room + theirs.len() + 1` ids of ours, at most `theirs.len()` are theirs too: if
        // that many come back, more than `room` are missing on their side.
        let limit = room.saturating_add(theirs.len()).saturating_add(1);
        let missing: Vec<RecordId> = items
            .ids(span, limit)
            .into_iter()
            .filter(|id| theirs.binary_search(id).is_err())
            .collect();
        self.have.extend(missing.iter().copied());
        if missing.len() <= room {
            let mode = if missing.is_empty() {
                Mode::Skip
            } else {
                Mode::Missing(missing)
            };
            out.push(span.upper, mode);
            return None;
        }
        // `missing` is complete below `missing[room]`: send that part, defer the rest.
        let at = missing[room];
        let mut first = missing;
        first.truncate(room);
        out.push(Bound::Id(at), Mode::Missing(first));
        Some(at)
    }

    fn learn_needed(&mut self, items: &impl Items, theirs: &[RecordId]) {
        self.need
            .extend(theirs.iter().filter(|id| !items.contains(id)).copied());
    }

    /// Ids the peer holds that this side lacks, as learned so far.
    pub fn need(&self) -> &BTreeSet<RecordId> {
        &self.need
    }

    /// Ids this side holds that the peer lacks, as learned so far (only from the peer's id
    /// lists; the side that sent the list learns the same through `Missing`).
    pub fn have(&self) -> &BTreeSet<RecordId> {
        &self.have
    }

    /// Messages received so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The ids needed, ascending.
    pub fn into_need(self) -> Vec<RecordId> {
        self.need.into_iter().collect()
    }
}

/// Splits the items of a span (`count` of them, more than [`BRANCHING`]) into [`BRANCHING`]
/// parts of equal count and sends each one's fingerprint.
fn split(items: &impl Items, span: &Span, count: u64, out: &mut Writer) {
    let parts = BRANCHING as u64;
    let mut lower = span.lower;
    for i in 1..=parts {
        let upper = if i == parts {
            span.upper
        } else {
            match items.nth(span, i * count / parts) {
                Some(id) => Bound::Id(id),
                None => span.upper,
            }
        };
        let part = Span { lower, upper };
        out.push(upper, Mode::Fingerprint(items.fingerprint(&part)));
        match upper {
            Bound::Id(id) => lower = id,
            Bound::End => break,
        }
        if upper == span.upper {
            break;
        }
    }
}

/// Builds a reply within its caps, merging consecutive skips.
struct Writer {
    ranges: Vec<Range>,
    ids: usize,
    limits: Limits,
}

impl Writer {
    fn new(limits: Limits) -> Self {
        Writer {
            ranges: Vec::new(),
            ids: 0,
            limits,
        }
    }

    fn push(&mut self, upper: Bound, mode: Mode) {
        if let (Mode::Skip, Some(last)) = (&mode, self.ranges.last_mut())
            && last.mode == Mode::Skip
        {
            last.upper = upper.to_wire();
            return;
        }
        if let Mode::IdList(l) | Mode::Missing(l) = &mode {
            self.ids += l.len();
        }
        self.ranges.push(Range {
            upper: upper.to_wire(),
            mode,
        });
    }

    /// Whether `ranges` more ranges and `ids` more ids fit, keeping one range for the deferral
    /// and one for a skip before it.
    fn room(&self, ranges: usize, ids: usize) -> bool {
        self.ranges.len() + ranges + 2 <= self.limits.max_ranges
            && self.ids + ids <= self.limits.max_ids
    }

    fn room_for_ids(&self) -> usize {
        self.limits.max_ids.saturating_sub(self.ids)
    }

    /// The message, without trailing skips; `None` if nothing is left.
    fn finish(mut self) -> Option<Message> {
        while self.ranges.last().is_some_and(|r| r.mode == Mode::Skip) {
            self.ranges.pop();
        }
        (!self.ranges.is_empty()).then_some(Message {
            ranges: self.ranges,
        })
    }
}

#[cfg(test)]
mod tests;
