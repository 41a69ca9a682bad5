//! Reconciliation: messages, item sets, and sessions between two sets.

use super::*;

/// Every query on a set built by additions (through the delta, and past its merge into the
/// base) answers as on the same set built whole.
#[test]
fn adding_ids_to_a_set_equals_building_it_whole() {
    let id = |i: u32| RecordId(*blake3::hash(&i.to_le_bytes()).as_bytes());
    let mut all: Vec<RecordId> = (0..500).map(id).collect();
    let mut set = SortedItems::new(all.clone());
    assert_eq!(SortedItems::default().with(&[]).len(), 0);
    let mut next = 500u32;
    // Steps of various sizes, duplicates and known ids included: the delta fills, merges, and
    // fills again.
    for step in [1u32, 3, 300, 1, 2000, 2500, 7, 900, 1] {
        let mut new: Vec<RecordId> = (next..next + step).map(id).collect();
        new.extend([id(3), id(next)]);
        next += step;
        all.extend(new.iter().copied());
        set = set.with(&new);
        let whole = SortedItems::new(all.clone());
        assert_eq!(set, whole);
        assert_eq!(set.len(), whole.len());
        let sorted = whole.page(None, usize::MAX).0;
        let spans = [
            Span::ALL,
            Span {
                lower: sorted[17],
                upper: Bound::Id(sorted[sorted.len() / 2]),
            },
            Span {
                lower: sorted[sorted.len() / 3],
                upper: Bound::End,
            },
            Span {
                lower: id(1),
                upper: Bound::Id(id(2)),
            },
        ];
        for span in spans {
            assert_eq!(set.count(&span), whole.count(&span));
            assert_eq!(set.fingerprint(&span), whole.fingerprint(&span));
            assert_eq!(set.ids(&span, 50), whole.ids(&span, 50));
            let c = whole.count(&span);
            for n in [0, 1, c / 3, c / 2, c.saturating_sub(1), c, c + 5] {
                assert_eq!(set.nth(&span, n), whole.nth(&span, n), "nth {n} of {c}");
            }
        }
        for after in [
            None,
            Some(sorted[0]),
            Some(sorted[sorted.len() - 2]),
            Some(id(u32::MAX)),
        ] {
            for limit in [0, 1, 10, usize::MAX] {
                assert_eq!(set.page(after, limit), whole.page(after, limit));
            }
        }
        assert!(set.contains(&id(next - 1)) && !set.contains(&id(next + 1)));
    }
    assert!(next as usize > 500 + super::items::DELTA_MAX);
}

fn id(b: u8) -> RecordId {
    RecordId([b; 32])
}

#[test]
fn accumulators_add_and_subtract() {
    let mut a = Accumulator::of(&id(1));
    let b = Accumulator::of(&id(2));
    a.add(&b);
    assert_eq!(a.count(), 2);
    a.sub(&b);
    assert_eq!(a, Accumulator::of(&id(1)));
    // Order does not matter.
    let mut x = Accumulator::of(&id(2));
    x.add(&Accumulator::of(&id(1)));
    let mut y = Accumulator::of(&id(1));
    y.add(&Accumulator::of(&id(2)));
    assert_eq!(x.fingerprint(), y.fingerprint());
    assert_ne!(x.fingerprint(), Accumulator::of(&id(1)).fingerprint());
}

#[test]
fn sorted_items_answer_spans() {
    let items = SortedItems::new(vec![id(5), id(1), id(3), id(3)]);
    assert_eq!(items.len(), 3);
    let span = Span {
        lower: id(2),
        upper: Bound::Id(id(5)),
    };
    assert_eq!(items.count(&span), 1);
    assert_eq!(items.ids(&span, 10), vec![id(3)]);
    assert_eq!(items.nth(&Span::ALL, 2), Some(id(5)));
    assert_eq!(items.nth(&Span::ALL, 3), None);
    let only = SortedItems::new(vec![id(3)]);
    assert_eq!(items.fingerprint(&span), only.fingerprint(&Span::ALL));
}

#[test]
fn the_compact_encoding_round_trips_and_its_length_is_known() {
    let m = Message {
        salt: 0x0123_4567_89ab_cdef,
        ranges: vec![
            Range {
                upper: Some(separator(&id(1), &id(2))),
                mode: Mode::Skip,
            },
            Range {
                upper: Some(id(3)),
                mode: Mode::Fingerprint(Fingerprint([7; FINGERPRINT_BYTES])),
            },
            Range {
                upper: Some(id(9)),
                mode: Mode::IdList(vec![id(4), id(5)]),
            },
            Range {
                upper: Some(id(10)),
                mode: Mode::ShortIds(vec![1, 7, u32::MAX]),
            },
            Range {
                upper: Some(id(11)),
                mode: Mode::Want(vec![9]),
            },
            Range {
                upper: None,
                mode: Mode::Missing(vec![id(12)]),
            },
        ],
    };
    let config = bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian();
    let bytes = bincode::encode_to_vec(&m, config).expect("encodes");
    assert_eq!(bytes.len(), m.encoded_len());
    let (back, _): (Message, usize) = bincode::decode_from_slice(&bytes, config).expect("decodes");
    assert_eq!(back, m);
    assert_eq!(m.check(&REQUEST_LIMITS), Ok(()));
    // A separator of neighbours that differ in the first byte takes one byte on the wire.
    assert_eq!(m.to_compact()[9..11], [1, 2]);
}

#[test]
fn separators_split_where_the_next_id_does_and_are_short() {
    let mut prev = [0u8; 32];
    prev[..3].copy_from_slice(&[5, 9, 200]);
    prev[31] = 1;
    let mut next = [0u8; 32];
    next[..3].copy_from_slice(&[5, 10, 0]);
    next[20] = 3;
    let (prev, next) = (RecordId(prev), RecordId(next));
    let s = separator(&prev, &next);
    assert!(prev < s && s <= next);
    let mut want = [0u8; 32];
    want[..2].copy_from_slice(&[5, 10]);
    assert_eq!(s, RecordId(want));
    // Ids that differ only in the last byte give the next id itself.
    let mut a = [7u8; 32];
    a[31] = 1;
    let b = [7u8; 32];
    assert_eq!(separator(&RecordId(a), &RecordId(b)), RecordId(b));
}

#[test]
fn non_canonical_or_truncated_compact_forms_are_refused() {
    let good = Message {
        salt: 1,
        ranges: vec![Range {
            upper: Some(id(3)),
            mode: Mode::ShortIds(vec![1, 2]),
        }],
    }
    .to_compact();
    assert!(Message::from_compact(&good).is_ok());
    for cut in 0..good.len() {
        assert!(Message::from_compact(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(
        Message::from_compact(&trailing).is_err(),
        "bytes after the last range"
    );
    // A bound of id(3) padded with one zero byte: not the canonical form.
    let mut padded = good[..9].to_vec();
    padded.push(33);
    assert!(
        Message::from_compact(&padded).is_err(),
        "bound longer than an id"
    );
    // A count far over the bytes left is refused before anything is allocated.
    let mut huge = 7u64.to_le_bytes().to_vec();
    huge.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(Message::from_compact(&huge).is_err());
    // An over-long varint (0 written in two bytes).
    let mut long = 7u64.to_le_bytes().to_vec();
    long.extend([0x80, 0x00]);
    assert!(Message::from_compact(&long).is_err());
    // Short ids out of order break the rules of a message.
    let unsorted = Message {
        salt: 1,
        ranges: vec![Range {
            upper: None,
            mode: Mode::Want(vec![5, 5]),
        }],
    };
    assert!(unsorted.check(&REQUEST_LIMITS).is_err());
}

#[test]
fn malformed_messages_are_refused() {
    let skip = |upper| Range {
        upper,
        mode: Mode::Skip,
    };
    let out_of_order = Message {
        salt: 0,
        ranges: vec![skip(Some(id(5))), skip(Some(id(4)))],
    };
    assert_eq!(
        out_of_order.check(&REQUEST_LIMITS),
        Err(MessageError::BoundsOutOfOrder(1))
    );
    let after_end = Message {
        salt: 0,
        ranges: vec![skip(None), skip(Some(id(4)))],
    };
    assert!(after_end.check(&REQUEST_LIMITS).is_err());
    let empty_first = Message {
        salt: 0,
        ranges: vec![skip(Some(MIN_ID))],
    };
    assert!(empty_first.check(&REQUEST_LIMITS).is_err());
    let outside = Message {
        salt: 0,
        ranges: vec![Range {
            upper: Some(id(5)),
            mode: Mode::IdList(vec![id(6)]),
        }],
    };
    assert_eq!(
        outside.check(&REQUEST_LIMITS),
        Err(MessageError::IdsOutOfPlace(0))
    );
    let unsorted = Message {
        salt: 0,
        ranges: vec![Range {
            upper: None,
            mode: Mode::Missing(vec![id(6), id(6)]),
        }],
    };
    assert!(unsorted.check(&REQUEST_LIMITS).is_err());
    let too_many = Message {
        salt: 0,
        ranges: (1..=255u8)
            .chain(std::iter::once(255))
            .map(|b| skip(Some(id(b))))
            .chain(std::iter::once(skip(None)))
            .collect(),
    };
    assert!(matches!(
        too_many.check(&REQUEST_LIMITS),
        Err(MessageError::TooManyRanges { .. })
    ));
    let ids = Message {
        salt: 0,
        ranges: vec![Range {
            upper: None,
            mode: Mode::IdList(
                (0..=MAX_REQUEST_IDS as u32)
                    .map(|i| {
                        let mut b = [0u8; 32];
                        b[..4].copy_from_slice(&i.to_be_bytes());
                        RecordId(b)
                    })
                    .collect(),
            ),
        }],
    };
    assert!(matches!(
        ids.check(&REQUEST_LIMITS),
        Err(MessageError::TooManyIds { .. })
    ));
    // The receiver refuses it too.
    let mut r = Reconciler::new(Config::responder());
    assert!(r.receive(&SortedItems::default(), &ids).is_err());
}

#[test]
fn sessions_stop_after_the_round_limit() {
    let mut r = Reconciler::new(Config {
        max_rounds: 1,
        ..Config::responder()
    });
    let items = SortedItems::new(vec![id(1)]);
    let m = Message::default();
    assert_eq!(r.receive(&items, &m), Ok(None));
    assert_eq!(r.receive(&items, &m), Err(ReconcileError::TooManyRounds(1)));
}
