//! Signatures `verify_strict` refuses but other ed25519 verifiers may accept, for the tests that
//! check every node gives a record the same verdict whatever shares its batch.
//!
//! The cases are those of "Taming the many EdDSAs" (Chalkias, Garillot, Nikolaenko, 2020),
//! built here on real records: a nonce point R hiding a torsion component (R = rB + T, T of
//! order 2, 4 or 8: cofactorless verification refuses it, cofactored and batch verification may
//! not), an R of small order, R and A encoded non-canonically (y ≥ p), a scalar s ≥ ℓ, and an
//! author key with a torsion component (A = aB + T), which `verify_strict` accepts for some
//! messages and refuses for others. [`strict`] and [`dalek_batch`] give the library's own
//! verdicts, so a test can compare the node's verdict with them.

use commons_core::record::SIGNATURE_DOMAIN;
use commons_core::{Body, Record, RecordId, SecretKey};
use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};

/// A torsion point of exactly this order (1, 2, 4 or 8).
pub fn torsion(order: u8) -> EdwardsPoint {
    *EIGHT_TORSION
        .iter()
        .find(|t| point_order(t) == order)
        .expect("the eight torsion points have every order dividing 8")
}

fn point_order(t: &EdwardsPoint) -> u8 {
    let mut p = *t;
    for k in 0..4u8 {
        if p.compress() == EdwardsPoint::default().compress() {
            return 1 << k;
        }
        p = p + p;
    }
    16
}

/// The message an author signs for a record of this id.
pub fn message(id: &RecordId) -> Vec<u8> {
    let mut m = SIGNATURE_DOMAIN.to_vec();
    m.extend_from_slice(id.as_bytes());
    m
}

fn challenge(r: &[u8; 32], a: &[u8; 32], m: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(m);
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// A deterministic nonce scalar from a number (these signatures are for tests only).
fn nonce(n: u64) -> Scalar {
    let mut wide = [0u8; 64];
    wide[..8].copy_from_slice(&n.to_le_bytes());
    wide[8] = 0x5a;
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// The bytes of `record` with its signature replaced by (R, s).
fn resigned(record: &Record, r: [u8; 32], s: [u8; 32]) -> Vec<u8> {
    let mut b = record.bytes().to_vec();
    let n = b.len();
    b[n - 64..n - 32].copy_from_slice(&r);
    b[n - 32..].copy_from_slice(&s);
    b
}

/// `record` (signed by the key of `seed`) signed again with nonce point R = rB + T, where T has
/// `order`: the equation holds up to T, which `verify_strict` refuses for any T ≠ 0.
pub fn mixed_order_r(record: &Record, seed: [u8; 32], order: u8, n: u64) -> Vec<u8> {
    let a = ed25519_dalek::SigningKey::from_bytes(&seed).to_scalar();
    let author = *record.author().as_bytes();
    let r = nonce(n);
    let big_r = (EdwardsPoint::mul_base(&r) + torsion(order))
        .compress()
        .to_bytes();
    let k = challenge(&big_r, &author, &message(&record.id()));
    let s = r + k * a;
    resigned(record, big_r, s.to_bytes())
}

/// `record` signed again with s + ℓ: the same equation, but s is not canonical.
pub fn non_canonical_s(record: &Record) -> Vec<u8> {
    let b = record.bytes();
    let sig = &b[b.len() - 64..];
    let mut s = [0u8; 32];
    s.copy_from_slice(&sig[32..]);
    // s + ℓ, as a 256-bit little-endian integer (s < ℓ < 2^253, so it does not overflow).
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(s[i]) + u16::from(L[i]) + carry;
        s[i] = v as u8;
        carry = v >> 8;
    }
    let mut r = [0u8; 32];
    r.copy_from_slice(&sig[..32]);
    resigned(record, r, s)
}

/// `record` with R replaced by a point of small order and s chosen so that the cofactorless
/// equation cannot hold for an honest key: refused by every strict verifier.
pub fn small_order_r(record: &Record, order: u8) -> Vec<u8> {
    let r = torsion(order).compress().to_bytes();
    resigned(record, r, [0u8; 32])
}

/// `record` with R replaced by a non-canonical encoding (y = 1 + p, which reads as the
/// identity): refused by `verify_strict`, whose recomputed R never has these bytes.
pub fn non_canonical_r(record: &Record) -> Vec<u8> {
    // y = 1 (the identity) encoded as 1 + p: 0xee ff … ff 7f.
    let mut r = [0xffu8; 32];
    r[0] = 0xee;
    r[31] = 0x7f;
    let b = record.bytes();
    let mut s = [0u8; 32];
    s.copy_from_slice(&b[b.len() - 32..]);
    resigned(record, r, s)
}

/// A record of `body` signed by an author key A = aB + T (T of `order`), as the key's owner
/// could sign it: s = r + k·a with R = rB − kT, so that sB − kA = R exactly. `verify_strict`
/// accepts such a signature (it refuses only small-order keys), and so must every node, in or
/// out of a batch.
pub fn mixed_order_author(body: Body, timestamp: u64, order: u8) -> Vec<u8> {
    // A record signed by an honest key gives the layout; the author is replaced.
    let seed = [0x42; 32];
    let a = ed25519_dalek::SigningKey::from_bytes(&seed).to_scalar();
    let t = torsion(order);
    let big_a = (EdwardsPoint::mul_base(&a) + t).compress().to_bytes();
    let template = Record::sign(&SecretKey::from_seed(seed), timestamp, body).expect("signs");
    let mut b = template.bytes().to_vec();
    // The author is the first field of the body, right after version and kind.
    assert_eq!(&b[2..34], template.author().as_bytes());
    b[2..34].copy_from_slice(&big_a);
    let len = b.len();
    let m = message(&record_id(&b[..len - 64]));
    // R = rB − kT needs k = H(R ‖ A ‖ M), which depends on R: for each nonce, try the eight
    // candidates R = rB − jT and keep one whose k is j modulo the order of T.
    let mut n = 0;
    loop {
        let r = nonce(n);
        n += 1;
        for j in 0..8u8 {
            let big_r = (EdwardsPoint::mul_base(&r) - multiple(&t, j))
                .compress()
                .to_bytes();
            let k = challenge(&big_r, &big_a, &m);
            if multiple(&t, k.to_bytes()[0] & 7) == multiple(&t, j) {
                let s = r + k * a;
                b[len - 64..len - 32].copy_from_slice(&big_r);
                b[len - 32..].copy_from_slice(&s.to_bytes());
                return b;
            }
        }
    }
}

fn multiple(t: &EdwardsPoint, j: u8) -> EdwardsPoint {
    (0..j).fold(EdwardsPoint::default(), |acc, _| acc + t)
}

/// The record id of the signed part of a record's bytes.
pub fn record_id(signed_part: &[u8]) -> RecordId {
    let mut h = blake3::Hasher::new_derive_key(commons_core::record::RECORD_ID_CONTEXT);
    h.update(signed_part);
    RecordId(*h.finalize().as_bytes())
}

fn parts(
    bytes: &[u8],
) -> Option<(
    ed25519_dalek::VerifyingKey,
    ed25519_dalek::Signature,
    Vec<u8>,
)> {
    let n = bytes.len();
    let key: [u8; 32] = bytes.get(2..34)?.try_into().ok()?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).ok()?;
    let sig: [u8; 64] = bytes.get(n - 64..)?.try_into().ok()?;
    let id = record_id(&bytes[..n - 64]);
    Some((
        key,
        ed25519_dalek::Signature::from_bytes(&sig),
        message(&id),
    ))
}

/// ed25519-dalek's `verify_strict` verdict on a record's signature (nothing else checked).
pub fn strict(bytes: &[u8]) -> bool {
    parts(bytes).is_some_and(|(k, s, m)| k.verify_strict(&m, &s).is_ok())
}

/// ed25519-dalek's batch verdict on these records' signatures together.
pub fn dalek_batch(records: &[&[u8]]) -> bool {
    let Some(all) = records.iter().map(|b| parts(b)).collect::<Option<Vec<_>>>() else {
        return false;
    };
    let keys: Vec<_> = all.iter().map(|(k, _, _)| *k).collect();
    let sigs: Vec<_> = all.iter().map(|(_, s, _)| *s).collect();
    let msgs: Vec<&[u8]> = all.iter().map(|(_, _, m)| m.as_slice()).collect();
    ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok()
}
