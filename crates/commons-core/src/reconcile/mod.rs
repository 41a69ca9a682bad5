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
//!   ids when it holds at most [`LEAF_SIZE`]). Inner bounds are the shortest [`separator`]s
//!   between neighbouring ids, a few bytes on the wire instead of 32. For each range received,
//!   the receiver answers:
//!   - a matching fingerprint with `Skip`;
//!   - a fingerprint of a span in which it holds no id with an empty `IdList`, and of one in
//!     which it holds at most [`LEAF_SIZE`] with `ShortIds`: 4-byte ids salted with the
//!     session's salt ([`short_id`]);
//!   - any other fingerprint by splitting its own ids in the span into [`BRANCHING`] equal
//!     parts, one `Fingerprint` each;
//!   - `ShortIds` with `Want` (the short ids it lacks, if it learns, see [`Config::learn`])
//!     or `Missing` (its ids the peer did not list, if it tells, [`Config::tell_missing`]);
//!   - `Want` with `Missing`, the whole ids asked for;
//!   - an `IdList` by learning which of those ids it lacks and answering `Missing`, the ids it
//!     holds in the span that the sender lacks (or `Skip` when there are none, or when
//!     configured not to tell);
//!   - `Missing` by learning those ids; it needs no answer.
//! - When a reply would exceed the message limits ([`Limits`]), the rest of the space is answered
//!   by one fingerprint over `[here, end)`, which the other side treats like any other: work is
//!   deferred to later rounds, never dropped. Every message therefore has a size cap.
//!
//! With `d` differences among `n` ids, each message descends `log_16` of the way, so a session
//! takes about `(log_16(n / 32) + 3) / 2` round trips and `O(d · 16 · log_16 n)` fingerprints:
//! 10 differences among 100 000 ids cost 3 round trips and about 7 KB.
//!
//! The state machine ([`Reconciler`]) takes messages in and gives messages out; the network and
//! the clock belong to the caller, which also bounds the session's duration. It reads the local
//! set through the [`Items`] trait; [`SortedItems`] is the in-memory implementation.

use std::collections::BTreeSet;

use bincode::{Decode, Encode};

use crate::id::RecordId;

mod items;
mod message;
pub use items::SortedItems;
pub use message::{Limits, Message, MessageError, Mode, Range, SHORT_ID_CONTEXT, short_id};

/// Derive-key context of the hash of one id (the summand of a fingerprint).
pub const ITEM_CONTEXT: &str = "commons 2026-11-22 reconcile item v1";
/// Derive-key context of the hash of a span's (sum, count).
pub const FINGERPRINT_CONTEXT: &str = "commons 2026-11-22 reconcile fingerprint v1";

/// Sub-spans a mismatching span is split into. 16 (negentropy's choice) descends four bits of
/// the set size per round trip: 100 000 ids are reached in about five messages.
pub const BRANCHING: usize = 16;
/// Most ids a side holds in a mismatching span before it lists them (as short ids) rather than
/// splitting. At least [`BRANCHING`], so every part of a split holds an id; 32 short ids
/// (128 bytes) cost less than the 16 fingerprints of a split, and save a round trip.
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
    /// Whether to answer an `IdList` or `ShortIds` with the ids the sender lacks. A side whose
    /// peer will not act on them (the node's initiator: its stateless responder only serves)
    /// saves those bytes and rounds.
    pub tell_missing: bool,
    /// Whether to ask (`Want`) for ids the peer listed by short id that this side lacks. A
    /// stateless responder, which forgets what it learns, does not. When a side both tells and
    /// learns and has both to say about a span, it sends its whole ids there (`IdList`).
    pub learn: bool,
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
            learn: true,
            max_rounds: MAX_ROUNDS,
        }
    }

    /// The node's initiator: it learns what it lacks and tells nothing (its peer serves
    /// statelessly; the peer catches up from this node by its own sessions).
    pub const fn pull() -> Self {
        Config {
            tell_missing: false,
            ..Config::initiator()
        }
    }

    /// The node's responder: it answers every message afresh, tells what the initiator lacks
    /// and asks for nothing (it would forget what it learned).
    pub const fn serve() -> Self {
        Config {
            learn: false,
            ..Config::responder()
        }
    }

    /// The side that answers (its messages go in responses).
    pub const fn responder() -> Self {
        Config {
            send: RESPONSE_LIMITS,
            receive: REQUEST_LIMITS,
            tell_missing: true,
            learn: true,
            max_rounds: MAX_ROUNDS,
        }
    }
}

/// One side of a session: feed it the peer's messages, send what it returns, and read what it
/// learned. It keeps no state about spans between messages (everything needed travels in the
/// messages, the salt of short ids included), so a responder may use a fresh `Reconciler` for
/// every message.
#[derive(Clone, Debug)]
pub struct Reconciler {
    config: Config,
    salt: u64,
    need: BTreeSet<RecordId>,
    have: BTreeSet<RecordId>,
    rounds: u32,
}

/// Most ids a side looks at to answer a `ShortIds` or `Want` range beyond what the peer listed:
/// a span the peer lists short (it holds at most [`LEAF_SIZE`] there) in which this side holds
/// many more is answered as a mismatching fingerprint instead, so a message costs at most a
/// bounded number of hashes per range.
const SHORT_SCAN_SLACK: u64 = 4 * LEAF_SIZE;

impl Reconciler {
    /// A side with this configuration; its short ids use salt 0 until [`Reconciler::with_salt`].
    pub fn new(config: Config) -> Self {
        Reconciler {
            config,
            salt: 0,
            need: BTreeSet::new(),
            have: BTreeSet::new(),
            rounds: 0,
        }
    }

    /// The salt of the session's short ids (the initiator picks it at random; a responder
    /// echoes the salt of each message it answers).
    pub fn with_salt(mut self, salt: u64) -> Self {
        self.salt = salt;
        self
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
        Message {
            salt: self.salt,
            ranges: out.ranges,
        }
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
        let salt = message.salt;
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
            deferred = match mode {
                Mode::Skip => {
                    out.push(span.upper, Mode::Skip);
                    None
                }
                Mode::Missing(list) => {
                    self.learn_needed(items, list);
                    out.push(span.upper, Mode::Skip);
                    None
                }
                Mode::Fingerprint(fp) => {
                    if items.fingerprint(&span) == *fp {
                        out.push(span.upper, Mode::Skip);
                        None
                    } else {
                        mismatch(items, &span, salt, &mut out)
                    }
                }
                Mode::IdList(theirs) => {
                    self.learn_needed(items, theirs);
                    self.answer_id_list(items, &span, theirs, &mut out)
                }
                Mode::ShortIds(theirs) => {
                    self.answer_short_ids(items, &span, salt, theirs, &mut out)
                }
                Mode::Want(wanted) => self.answer_want(items, &span, salt, wanted, &mut out),
            };
        }
        if let Some(at) = deferred {
            let rest = Span {
                lower: at,
                upper: Bound::End,
            };
            out.push(Bound::End, Mode::Fingerprint(items.fingerprint(&rest)));
        }
        Ok(out.finish(salt))
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
        let listed = |id: &RecordId| theirs.binary_search(id).is_ok();
        self.tell_missing_ids(items, span, theirs.len(), listed, out)
    }

    /// Sends `Missing`: the ids held in the span that the peer did not list (`listed` says
    /// which it did, of `listed_len` entries). When they do not all fit, sends those that do
    /// and returns where the deferred rest starts.
    fn tell_missing_ids(
        &mut self,
        items: &impl Items,
        span: &Span,
        listed_len: usize,
        listed: impl Fn(&RecordId) -> bool,
        out: &mut Writer,
    ) -> Option<RecordId> {
        if !out.room(1, 1) {
            return Some(span.lower);
        }
        let room = out.room_for_ids();
        // Of `room + listed_len + 1` ids of ours, at most `listed_len` are theirs too: if that
        // many come back, more than `room` are missing on their side.
        let limit = room.saturating_add(listed_len).saturating_add(1);
        let missing: Vec<RecordId> = items
            .ids(span, limit)
            .into_iter()
            .filter(|id| !listed(id))
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

    /// Answers `ShortIds`: asks (`Want`) for the listed ids this side lacks, if it learns, and
    /// sends (`Missing`) its ids the peer did not list, if it tells; when it has both to say,
    /// it sends its whole ids instead (`IdList`), from which the peer learns and answers.
    fn answer_short_ids(
        &mut self,
        items: &impl Items,
        span: &Span,
        salt: u64,
        theirs: &[u32],
        out: &mut Writer,
    ) -> Option<RecordId> {
        let count = items.count(span);
        if count > theirs.len() as u64 + SHORT_SCAN_SLACK {
            // Far more ids here than the peer: what it lacks is found a page at a time, as for
            // an `IdList`; a side that also learns splits the span instead.
            if self.config.tell_missing && !self.config.learn {
                let listed = |id: &RecordId| theirs.binary_search(&short_id(salt, id)).is_ok();
                return self.tell_missing_ids(items, span, theirs.len(), listed, out);
            }
            return mismatch(items, span, salt, out);
        }
        let mine = items.ids(span, count as usize);
        let mut my_shorts: Vec<u32> = mine.iter().map(|id| short_id(salt, id)).collect();
        let missing: Vec<RecordId> = if self.config.tell_missing {
            mine.iter()
                .zip(&my_shorts)
                .filter(|(_, s)| theirs.binary_search(s).is_err())
                .map(|(id, _)| *id)
                .collect()
        } else {
            Vec::new()
        };
        my_shorts.sort_unstable();
        let want: Vec<u32> = if self.config.learn {
            theirs
                .iter()
                .filter(|s| my_shorts.binary_search(s).is_err())
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        let mode = match (want.is_empty(), missing.is_empty()) {
            (true, true) => Mode::Skip,
            (false, true) => Mode::Want(want),
            (true, false) => Mode::Missing(missing),
            (false, false) => Mode::IdList(mine),
        };
        if !out.room(1, mode.entries()) {
            return Some(span.lower);
        }
        if let Mode::Missing(l) = &mode {
            self.have.extend(l.iter().copied());
        }
        out.push(span.upper, mode);
        None
    }

    /// Answers `Want` with the whole ids of the span whose short ids were asked for. A span that
    /// now holds far more ids than a leaf (records arrived meanwhile, or the peer is not honest) is
    /// answered with its fingerprint instead, and the session goes on from there.
    fn answer_want(
        &mut self,
        items: &impl Items,
        span: &Span,
        salt: u64,
        wanted: &[u32],
        out: &mut Writer,
    ) -> Option<RecordId> {
        let count = items.count(span);
        if count > LEAF_SIZE + SHORT_SCAN_SLACK {
            if !out.room(1, 0) {
                return Some(span.lower);
            }
            out.push(span.upper, Mode::Fingerprint(items.fingerprint(span)));
            return None;
        }
        let found: Vec<RecordId> = items
            .ids(span, count as usize)
            .into_iter()
            .filter(|id| wanted.binary_search(&short_id(salt, id)).is_ok())
            .collect();
        if !out.room(1, found.len()) {
            return Some(span.lower);
        }
        self.have.extend(found.iter().copied());
        let mode = if found.is_empty() {
            Mode::Skip
        } else {
            Mode::Missing(found)
        };
        out.push(span.upper, mode);
        None
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

/// Answers a span whose fingerprint differs: this side's short ids if it holds at most
/// [`LEAF_SIZE`] ids there, else a split into [`BRANCHING`] fingerprints. Returns where the rest
/// is deferred if the reply is full.
fn mismatch(items: &impl Items, span: &Span, salt: u64, out: &mut Writer) -> Option<RecordId> {
    let count = items.count(span);
    if count == 0 {
        // Nothing here: the peer's answer is every id it holds in the span, whole.
        if !out.room(1, 0) {
            return Some(span.lower);
        }
        out.push(span.upper, Mode::IdList(Vec::new()));
    } else if count <= LEAF_SIZE {
        if !out.room(1, count as usize) {
            return Some(span.lower);
        }
        let mut shorts: Vec<u32> = items
            .ids(span, count as usize)
            .iter()
            .map(|id| short_id(salt, id))
            .collect();
        shorts.sort_unstable();
        shorts.dedup();
        out.push(span.upper, Mode::ShortIds(shorts));
    } else {
        if !out.room(BRANCHING, 0) {
            return Some(span.lower);
        }
        split(items, span, count, out);
    }
    None
}

/// The shortest bound between two neighbouring ids `prev < next`: `next` cut after the first
/// byte where they differ, padded with zeros. It is above `prev` and at most `next`, so it
/// splits the set exactly where `next` would, and its wire form is a few bytes, not 32.
pub fn separator(prev: &RecordId, next: &RecordId) -> RecordId {
    let (p, n) = (prev.as_bytes(), next.as_bytes());
    let differ = p.iter().zip(n).position(|(a, b)| a != b).unwrap_or(31);
    let mut out = [0u8; 32];
    out[..=differ].copy_from_slice(&n[..=differ]);
    RecordId(out)
}

/// Splits the items of a span (`count` of them, more than [`BRANCHING`]) into [`BRANCHING`]
/// parts of equal count and sends each one's fingerprint. Inner bounds are the shortest
/// [`separator`]s between neighbouring ids.
fn split(items: &impl Items, span: &Span, count: u64, out: &mut Writer) {
    let parts = BRANCHING as u64;
    let mut lower = span.lower;
    for i in 1..=parts {
        let upper = if i == parts {
            span.upper
        } else {
            let at = i * count / parts;
            match (items.nth(span, at - 1), items.nth(span, at)) {
                (Some(prev), Some(next)) => Bound::Id(separator(&prev, &next)),
                _ => span.upper,
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
        self.ids += mode.entries();
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
    fn finish(mut self, salt: u64) -> Option<Message> {
        while self.ranges.last().is_some_and(|r| r.mode == Mode::Skip) {
            self.ranges.pop();
        }
        (!self.ranges.is_empty()).then_some(Message {
            salt,
            ranges: self.ranges,
        })
    }
}

#[cfg(test)]
mod tests;
