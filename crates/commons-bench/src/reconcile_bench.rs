//! "Difference cost": what catching up costs when two nodes hold nearly the same records.
//!
//! Two in-memory sets of `opts.records` record ids (100 000 by default) differ by 10 ids, 5 on
//! each side. A reconciliation session runs to its end in this process, with the node's
//! configuration (a pull-only initiator, `Config::pull`, and a stateless responder,
//! `Config::serve`) and the core state machine; every message is encoded
//! with the sync protocol's real codec (`commons_net::wire::encode`) and counted with its 4-byte
//! frame header. The reference, measured in the same run, is what the node did before: the whole
//! id list, as `ListIds` requests and `Ids` pages of 4096 ids. Targets: at most 10 000 bytes
//! and 5 % of the reference, in at most 3 round trips.

use std::collections::BTreeSet;
use std::time::Instant;

use commons_core::reconcile::{Config, Message, Reconciler, SortedItems};
use commons_core::{LineageId, RecordId};
use commons_net::wire::{
    self, MAX_LIST_IDS, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, SyncRequest, SyncResponse,
};

use crate::{Opts, Row};

/// The scenario's name in the table.
const SCENARIO: &str = "reconcile";
/// Ids only one side holds, per side.
const ONE_SIDED: usize = 5;
/// Bytes of the frame header before each message.
const FRAME_HEADER: usize = 4;
/// The target ratio against the whole id list.
const TARGET_RATIO: f64 = 0.05;
/// The target in bytes, frames included (negentropy's class: 10 differences among 100 000 ids
/// in 10 KB).
const TARGET_BYTES: usize = 10_000;
/// The target in round trips.
const TARGET_ROUND_TRIPS: u32 = 3;
/// The family named in the requests (any value: the bytes do not depend on it).
const FAMILY: LineageId = LineageId([7; 32]);

/// Deterministic pseudo-random ids (xorshift from `seed`).
fn ids(seed: u64, n: usize) -> Vec<RecordId> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            let mut b = [0u8; 32];
            for chunk in b.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            RecordId(b)
        })
        .collect()
}

fn request_bytes(request: &SyncRequest) -> anyhow::Result<usize> {
    Ok(wire::encode(request, MAX_REQUEST_BYTES)?.len() + FRAME_HEADER)
}

fn response_bytes(response: &SyncResponse) -> anyhow::Result<usize> {
    Ok(wire::encode(response, MAX_RESPONSE_BYTES)?.len() + FRAME_HEADER)
}

/// What one session cost.
struct Session {
    bytes: usize,
    round_trips: u32,
    initiator_need: BTreeSet<RecordId>,
    responder_need: BTreeSet<RecordId>,
    millis: f64,
}

/// Runs a session to its end between `a` (initiator) and `b`, counting wire bytes.
fn session(
    a: &SortedItems,
    b: &SortedItems,
    initiator: Config,
    responder: Config,
) -> anyhow::Result<Session> {
    let started = Instant::now();
    let mut ini = Reconciler::new(initiator).with_salt(0x5eed_5a17);
    let mut resp = Reconciler::new(responder);
    let mut bytes = 0;
    let mut round_trips = 0u32;
    let mut next: Option<Message> = Some(ini.initiate(a));
    while let Some(message) = next.take() {
        let reply = resp.receive(b, &message)?;
        bytes += request_bytes(&SyncRequest::Reconcile {
            family: FAMILY,
            round: round_trips,
            message,
        })?;
        round_trips += 1;
        let reply = reply.unwrap_or_default();
        bytes += response_bytes(&SyncResponse::Reconcile(reply.clone()))?;
        if reply.ranges.is_empty() {
            break;
        }
        next = ini.receive(a, &reply)?;
    }
    Ok(Session {
        bytes,
        round_trips,
        initiator_need: ini.need().clone(),
        responder_need: resp.need().clone(),
        millis: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// The reference: the whole id list of `b`, paged as the node used to fetch it.
fn id_list_bytes(b: &SortedItems) -> anyhow::Result<usize> {
    let mut bytes = 0;
    let mut after = None;
    loop {
        let (ids, more) = b.page(after, MAX_LIST_IDS as usize);
        bytes += request_bytes(&SyncRequest::ListIds {
            family: FAMILY,
            after,
            limit: MAX_LIST_IDS,
        })?;
        after = ids.last().copied();
        bytes += response_bytes(&SyncResponse::Ids { ids, more })?;
        if !more {
            break;
        }
    }
    Ok(bytes)
}

/// Runs the scenario.
pub fn run(opts: &Opts) -> anyhow::Result<Vec<Row>> {
    let n = opts.records.max(2 * ONE_SIDED);
    opts.progress(format!(
        "reconcile: two sets of {n} ids, {ONE_SIDED} + {ONE_SIDED} differences"
    ));
    let all = ids(opts.seed, n + ONE_SIDED);
    let common = &all[..n - ONE_SIDED];
    let only_a = &all[n - ONE_SIDED..n];
    let only_b = &all[n..];
    let a = SortedItems::new(common.iter().chain(only_a).copied().collect());
    let b = SortedItems::new(common.iter().chain(only_b).copied().collect());
    let want_a: BTreeSet<RecordId> = only_b.iter().copied().collect();
    let want_b: BTreeSet<RecordId> = only_a.iter().copied().collect();

    let reference = id_list_bytes(&b)?;
    let node = session(&a, &b, Config::pull(), Config::serve())?;
    anyhow::ensure!(
        node.initiator_need == want_a,
        "the session did not find exactly the missing ids"
    );
    let both = session(&a, &b, Config::initiator(), Config::responder())?;
    anyhow::ensure!(
        both.initiator_need == want_a && both.responder_need == want_b,
        "the two-way session did not find exactly the missing ids"
    );

    let ratio = node.bytes as f64 / reference as f64;
    Ok(vec![
        Row::info(
            SCENARIO,
            format!("bytes to find {ONE_SIDED} missing ids among {n} (node session)"),
            node.bytes as f64,
            "B",
        )
        .against("the whole id list (ListIds pages)", reference as f64, "B")
        .target(
            format!("≤ {TARGET_BYTES} B and ≤ {TARGET_RATIO}×"),
            node.bytes <= TARGET_BYTES && ratio <= TARGET_RATIO,
        )
        .note(format!("{:.1} ms in process", node.millis)),
        Row::info(
            SCENARIO,
            "round trips (node session)",
            f64::from(node.round_trips),
            "",
        )
        .target(
            format!("≤ {TARGET_ROUND_TRIPS}"),
            node.round_trips <= TARGET_ROUND_TRIPS,
        ),
        Row::info(
            SCENARIO,
            "bytes, both sides learning (two-way session)",
            both.bytes as f64,
            "B",
        )
        .against("the whole id list (ListIds pages)", reference as f64, "B")
        .note(format!("{} round trips", both.round_trips)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_meets_its_targets() {
        let opts = Opts {
            records: 20_000,
            quiet: true,
            ..Opts::default()
        };
        let rows = run(&opts).expect("runs");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].pass, Some(true), "{:?}", rows[0]);
        assert_eq!(rows[1].pass, Some(true), "{:?}", rows[1]);
    }
}
