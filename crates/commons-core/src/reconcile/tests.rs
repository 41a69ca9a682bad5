//! Reconciliation: messages, item sets, and sessions between two sets.

use super::*;

#[test]
fn adding_ids_to_a_set_equals_building_it_whole() {
    let id = |i: u32| RecordId(*blake3::hash(&i.to_le_bytes()).as_bytes());
    let old: Vec<RecordId> = (0..500).map(id).collect();
    let new: Vec<RecordId> = (400..700).chain([3, 3]).map(id).collect();
    let merged = SortedItems::new(old.clone()).with(&new);
    let whole = SortedItems::new(old.into_iter().chain(new).collect());
    assert_eq!(merged.ids, whole.ids);
    assert_eq!(merged.prefix, whole.prefix);
    assert_eq!(SortedItems::default().with(&[]).len(), 0);
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
fn encoded_len_matches_bincode() {
    let m = Message {
        ranges: vec![
            Range {
                upper: Some(id(2)),
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
                upper: None,
                mode: Mode::Missing(vec![id(10)]),
            },
        ],
    };
    let config = bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian();
    let bytes = bincode::encode_to_vec(&m, config).expect("encodes");
    assert_eq!(bytes.len(), m.encoded_len());
    assert_eq!(m.check(&REQUEST_LIMITS), Ok(()));
}

#[test]
fn malformed_messages_are_refused() {
    let skip = |upper| Range {
        upper,
        mode: Mode::Skip,
    };
    let out_of_order = Message {
        ranges: vec![skip(Some(id(5))), skip(Some(id(4)))],
    };
    assert_eq!(
        out_of_order.check(&REQUEST_LIMITS),
        Err(MessageError::BoundsOutOfOrder(1))
    );
    let after_end = Message {
        ranges: vec![skip(None), skip(Some(id(4)))],
    };
    assert!(after_end.check(&REQUEST_LIMITS).is_err());
    let empty_first = Message {
        ranges: vec![skip(Some(MIN_ID))],
    };
    assert!(empty_first.check(&REQUEST_LIMITS).is_err());
    let outside = Message {
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
        ranges: vec![Range {
            upper: None,
            mode: Mode::Missing(vec![id(6), id(6)]),
        }],
    };
    assert!(unsorted.check(&REQUEST_LIMITS).is_err());
    let too_many = Message {
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
