//! The blob scheduler: which wanted blobs are downloaded next, and when a failed one is tried
//! again. No I/O and no clock: the driver (`downloader.rs`) passes time and events in, so the
//! bounds and the fairness are unit-tested without sockets.
//!
//! Records are stored as soon as they verify; the blobs their patches create and that are not
//! here are *wanted* ([`BlobQueue::want`]), each in the **lane** of the peer that sent the record
//! and the lineage it belongs to. Downloads run as **jobs** of up to [`JOB_BLOBS`] blobs of one
//! lane. Fairness is two-level round robin: sources (peers, and this node's own requests) take
//! turns, and within a source its lineages take turns. A source runs at most
//! [`JOBS_PER_SOURCE`] jobs and the node [`MAX_JOBS`], so a peer that sends records naming
//! content nobody gives, or that stops answering, costs its own lane: the others keep going.
//!
//! A blob that a job could not fetch is tried again after a pause that doubles from
//! [`FIRST_RETRY`] up to [`MAX_RETRY`] (at once when a peer connects, which may hold it); after
//! [`MAX_ATTEMPTS`] it is **given up** for [`crate::refused::REFUSED_TTL`], during which wanting
//! it again does nothing. Memory: at most [`MAX_QUEUED`] blobs are held (about 150 bytes each);
//! the store keeps the full list, and the driver refills from it when there is room.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use commons_core::{BlobHash, LineageId};
use commons_net::PeerId;

use crate::refused::Refused;

/// Blobs held by the scheduler at most (the rest wait in the store's list).
pub const MAX_QUEUED: usize = 65_536;
/// Blobs one source may have queued at most: one peer cannot fill the queue by itself.
pub const MAX_PER_SOURCE: usize = 16_384;
/// Jobs running at once in the node.
pub const MAX_JOBS: usize = 4;
/// Jobs of one source running at once.
pub const JOBS_PER_SOURCE: usize = 2;
/// Blobs per job (small ones travel many per request).
pub const JOB_BLOBS: usize = 64;
/// Attempts at a blob before it is given up for a while.
pub const MAX_ATTEMPTS: u32 = 6;
/// Pause after the first failed attempt; it doubles after each.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest pause between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// A connecting peer makes the given-up blobs worth trying again, at most this often (a peer
/// that reconnects again and again does not make the node ask for everything each time).
pub const FORGIVE_EVERY: Duration = Duration::from_secs(60);

/// How failed blobs are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts before a blob is given up for a while ([`MAX_ATTEMPTS`]).
    pub attempts: u32,
    /// The first pause ([`FIRST_RETRY`]).
    pub first: Duration,
    /// The longest pause ([`MAX_RETRY`]).
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: MAX_ATTEMPTS,
            first: FIRST_RETRY,
            max: MAX_RETRY,
        }
    }
}

/// Who asked for a blob: the peer that sent the record naming it (`None`: this node, from its
/// own list).
pub type Source = Option<PeerId>;

/// What [`BlobQueue::want`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Queued.
    Queued,
    /// Already queued or running.
    Already,
    /// Given up recently: not queued.
    GivenUp,
    /// No room (in the node or for this source): not queued; the store's list keeps it.
    Full,
}

/// Blobs of one lane to fetch together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The peer to ask first (then every connected peer).
    pub source: Source,
    /// The lineage that wants them.
    pub lineage: LineageId,
    /// The blobs.
    pub blobs: Vec<BlobHash>,
}

/// Counters for `node status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Blobs queued (ready, waiting for a retry, or in a running job).
    pub queued: u64,
    /// Of those, waiting for a retry.
    pub waiting: u64,
    /// Jobs running.
    pub jobs: u64,
    /// Blobs given up, still remembered.
    pub given_up: u64,
    /// Attempts that failed, since start.
    pub failed_attempts: u64,
}

#[derive(Debug)]
struct Entry {
    lineage: LineageId,
    attempts: u32,
}

#[derive(Debug, Default)]
struct Lane {
    ready: VecDeque<BlobHash>,
    /// When each waiting blob may be tried again.
    waiting: BTreeSet<(Instant, BlobHash)>,
}

impl Lane {
    fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.waiting.is_empty()
    }
}

#[derive(Debug, Default)]
struct SourceQueue {
    lanes: BTreeMap<LineageId, Lane>,
    /// The lineage that had the last turn.
    last: Option<LineageId>,
    running: usize,
    queued: usize,
}

/// The scheduler's state. See the module documentation.
#[derive(Debug, Default)]
pub struct BlobQueue {
    entries: HashMap<BlobHash, Entry>,
    sources: BTreeMap<Source, SourceQueue>,
    /// The source that had the last turn.
    last: Option<Source>,
    jobs: usize,
    given_up: Refused<BlobHash>,
    failed_attempts: u64,
    retry: Retry,
    /// When the given-up blobs were last forgiven.
    forgiven: Option<Instant>,
}

/// The items of `map` after `last` (all of them if it is `None` or gone), then those up to it.
fn turn_order<K: Ord + Copy, V>(map: &BTreeMap<K, V>, last: Option<K>) -> Vec<K> {
    let keys: Vec<K> = map.keys().copied().collect();
    let start = last.map_or(0, |l| keys.partition_point(|k| *k <= l));
    keys[start..]
        .iter()
        .chain(&keys[..start])
        .copied()
        .collect()
}

impl BlobQueue {
    /// A queue that tries failed blobs again as `retry` says.
    pub fn new(retry: Retry) -> BlobQueue {
        BlobQueue {
            retry,
            ..BlobQueue::default()
        }
    }

    /// Queues `hash` for `lineage`, in the lane of `source`.
    pub fn want(
        &mut self,
        hash: BlobHash,
        source: Source,
        lineage: LineageId,
        now: Instant,
    ) -> Wanted {
        if self.entries.contains_key(&hash) {
            return Wanted::Already;
        }
        if self.given_up.contains(&hash, now) {
            return Wanted::GivenUp;
        }
        let queued = self.sources.get(&source).map_or(0, |s| s.queued);
        if self.entries.len() >= MAX_QUEUED || queued >= MAX_PER_SOURCE {
            return Wanted::Full;
        }
        self.entries.insert(
            hash,
            Entry {
                lineage,
                attempts: 0,
            },
        );
        let s = self.sources.entry(source).or_default();
        s.queued += 1;
        s.lanes.entry(lineage).or_default().ready.push_back(hash);
        Wanted::Queued
    }

    /// Whether the store's list should be read for more: the queue is less than half full.
    pub fn has_room(&self) -> bool {
        self.entries.len() < MAX_QUEUED / 2
    }

    /// Whether `hash` is queued or running.
    pub fn contains(&self, hash: &BlobHash) -> bool {
        self.entries.contains_key(hash)
    }

    /// The next job to start at `now`, if a slot is free and some lane has blobs ready.
    pub fn next_job(&mut self, now: Instant) -> Option<Job> {
        if self.jobs >= MAX_JOBS {
            return None;
        }
        for source in turn_order(&self.sources, self.last) {
            let s = self.sources.get_mut(&source)?;
            if s.running >= JOBS_PER_SOURCE {
                continue;
            }
            for lineage in turn_order(&s.lanes, s.last) {
                let Some(lane) = s.lanes.get_mut(&lineage) else {
                    continue;
                };
                while let Some(&(at, hash)) = lane.waiting.first()
                    && at <= now
                {
                    lane.waiting.pop_first();
                    lane.ready.push_back(hash);
                }
                if lane.ready.is_empty() {
                    continue;
                }
                let n = lane.ready.len().min(JOB_BLOBS);
                let blobs: Vec<BlobHash> = lane.ready.drain(..n).collect();
                s.running += 1;
                s.last = Some(lineage);
                self.last = Some(source);
                self.jobs += 1;
                return Some(Job {
                    source,
                    lineage,
                    blobs,
                });
            }
        }
        None
    }

    /// A job ended: the blobs in `fetched` are here, the others are tried again later (or
    /// given up after [`MAX_ATTEMPTS`]).
    pub fn finish(&mut self, job: &Job, fetched: &BTreeSet<BlobHash>, now: Instant) {
        self.jobs = self.jobs.saturating_sub(1);
        let Some(s) = self.sources.get_mut(&job.source) else {
            return;
        };
        s.running = s.running.saturating_sub(1);
        for hash in &job.blobs {
            let Some(entry) = self.entries.get_mut(hash) else {
                continue;
            };
            if fetched.contains(hash) {
                self.entries.remove(hash);
                s.queued = s.queued.saturating_sub(1);
                continue;
            }
            self.failed_attempts += 1;
            entry.attempts += 1;
            if entry.attempts >= self.retry.attempts {
                self.entries.remove(hash);
                s.queued = s.queued.saturating_sub(1);
                self.given_up.remember(*hash, now);
                continue;
            }
            let pause = self
                .retry
                .first
                .saturating_mul(1 << (entry.attempts - 1).min(16))
                .min(self.retry.max);
            s.lanes
                .entry(entry.lineage)
                .or_default()
                .waiting
                .insert((now + pause, *hash));
        }
        s.lanes.retain(|_, lane| !lane.is_empty());
        if s.lanes.is_empty() && s.running == 0 {
            self.sources.remove(&job.source);
        }
    }

    /// A peer connected: it may hold what others did not give, so every blob waiting for a
    /// retry is ready now, and the given-up blobs are forgotten (at most every
    /// [`FORGIVE_EVERY`]). Returns whether they were: the caller then reads the store's list
    /// again, which brings them back.
    pub fn peer_connected(&mut self, now: Instant) -> bool {
        for s in self.sources.values_mut() {
            for lane in s.lanes.values_mut() {
                while let Some((_, hash)) = lane.waiting.pop_first() {
                    lane.ready.push_back(hash);
                }
            }
        }
        if self.given_up.is_empty()
            || self
                .forgiven
                .is_some_and(|t| now.saturating_duration_since(t) < FORGIVE_EVERY)
        {
            return false;
        }
        self.forgiven = Some(now);
        self.given_up.clear();
        true
    }

    /// When the earliest waiting blob that could start then may be tried again: `None` while
    /// every job slot is taken, and sources at their own limit do not count (the end of a job
    /// is what the driver waits for then), so a due retry never makes the driver spin.
    pub fn next_wakeup(&self) -> Option<Instant> {
        if self.jobs >= MAX_JOBS {
            return None;
        }
        self.sources
            .values()
            .filter(|s| s.running < JOBS_PER_SOURCE)
            .flat_map(|s| s.lanes.values())
            .filter_map(|lane| lane.waiting.first().map(|(at, _)| *at))
            .min()
    }

    /// The counters.
    pub fn stats(&mut self, now: Instant) -> QueueStats {
        // Expires what is due before counting.
        let _ = self.given_up.contains(&BlobHash([0; 32]), now);
        QueueStats {
            queued: self.entries.len() as u64,
            waiting: self
                .sources
                .values()
                .flat_map(|s| s.lanes.values())
                .map(|lane| lane.waiting.len() as u64)
                .sum(),
            jobs: self.jobs as u64,
            given_up: self.given_up.len() as u64,
            failed_attempts: self.failed_attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u32) -> BlobHash {
        BlobHash::of(&n.to_be_bytes())
    }

    fn lineage(n: u8) -> LineageId {
        LineageId([n; 32])
    }

    fn fetched(hashes: &[BlobHash]) -> BTreeSet<BlobHash> {
        hashes.iter().copied().collect()
    }

    #[test]
    fn a_withholding_peer_costs_its_own_lane_not_everyones() {
        let now = Instant::now();
        let mut q = BlobQueue::default();
        let (hostile, honest) = (Some(PeerId::random()), Some(PeerId::random()));
        for n in 0..10_000 {
            assert_eq!(q.want(hash(n), hostile, lineage(1), now), Wanted::Queued);
        }
        // The hostile peer's jobs start first and never end (it stops answering).
        let stuck: Vec<Job> = std::iter::from_fn(|| q.next_job(now)).collect();
        assert_eq!(
            stuck.len(),
            JOBS_PER_SOURCE,
            "one source, its own share of the slots"
        );
        assert!(stuck.iter().all(|j| j.blobs.len() == JOB_BLOBS));
        // An honest peer's blob, wanted afterwards, starts at once.
        q.want(hash(1_000_000), honest, lineage(1), now);
        let job = q.next_job(now).expect("a slot is free for the honest peer");
        assert_eq!(job.source, honest);
        assert_eq!(job.blobs, [hash(1_000_000)]);
        // And this node's own requests too, while the two hostile jobs still hang.
        q.want(hash(2_000_000), None, lineage(2), now);
        assert_eq!(q.next_job(now).expect("own").source, None);
        assert_eq!(q.next_job(now), None, "{MAX_JOBS} jobs in all");
    }

    #[test]
    fn sources_and_their_lineages_take_turns() {
        let now = Instant::now();
        let mut q = BlobQueue::default();
        let (a, b) = (Some(PeerId::random()), Some(PeerId::random()));
        // `a` brings many blobs of three lineages; `b` a few of one.
        for n in 0..(JOB_BLOBS as u32 * 30) {
            q.want(hash(n), a, lineage((n % 3) as u8), now);
        }
        for n in 0..(JOB_BLOBS as u32 * 2) {
            q.want(hash(100_000 + n), b, lineage(9), now);
        }
        let mut order = Vec::new();
        for _ in 0..6 {
            let job = q.next_job(now).expect("job");
            order.push((job.source == a, job.lineage));
            q.finish(&job, &fetched(&job.blobs), now);
        }
        let sources: Vec<bool> = order.iter().map(|(is_a, _)| *is_a).collect();
        assert!(
            sources.windows(2).take(3).all(|w| w[0] != w[1]),
            "sources alternate while both have blobs: {order:?}"
        );
        let lineages_of_a: BTreeSet<LineageId> = order
            .iter()
            .filter(|(is_a, _)| *is_a)
            .map(|(_, l)| *l)
            .collect();
        assert_eq!(lineages_of_a.len(), 3, "a's lineages take turns: {order:?}");
    }

    #[test]
    fn failed_blobs_back_off_then_are_given_up_for_a_while() {
        let t0 = Instant::now();
        let mut q = BlobQueue::default();
        let peer = Some(PeerId::random());
        q.want(hash(1), peer, lineage(1), t0);
        let mut now = t0;
        let mut pauses = Vec::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let job = q.next_job(now).expect("ready");
            q.finish(&job, &BTreeSet::new(), now);
            if attempt == MAX_ATTEMPTS {
                break;
            }
            assert_eq!(q.next_job(now), None, "not again at once");
            let wake = q.next_wakeup().expect("waiting");
            pauses.push(wake - now);
            assert_eq!(q.next_job(wake - Duration::from_millis(1)), None);
            now = wake;
        }
        assert_eq!(pauses[0], FIRST_RETRY);
        assert!(pauses.windows(2).all(|w| w[1] == (w[0] * 2).min(MAX_RETRY)));
        let stats = q.stats(now);
        assert_eq!((stats.queued, stats.given_up), (0, 1), "{stats:?}");
        assert_eq!(stats.failed_attempts, u64::from(MAX_ATTEMPTS));
        assert_eq!(q.want(hash(1), peer, lineage(1), now), Wanted::GivenUp);
        let later = now + crate::refused::REFUSED_TTL;
        assert_eq!(q.want(hash(1), peer, lineage(1), later), Wanted::Queued);
    }

    #[test]
    fn no_wakeup_is_due_while_the_blob_could_not_start() {
        let now = Instant::now();
        let mut q = BlobQueue::default();
        let peer = Some(PeerId::random());
        // One blob fails and waits; the same source then has both its jobs running.
        q.want(hash(0), peer, lineage(1), now);
        let job = q.next_job(now).expect("job");
        q.finish(&job, &BTreeSet::new(), now);
        for n in 1..=(JOB_BLOBS as u32 * JOBS_PER_SOURCE as u32) {
            q.want(hash(n), peer, lineage(1), now);
        }
        let running: Vec<Job> = std::iter::from_fn(|| q.next_job(now)).collect();
        assert_eq!(running.len(), JOBS_PER_SOURCE);
        let later = now + MAX_RETRY;
        assert_eq!(q.next_job(later), None, "the source is at its limit");
        assert_eq!(q.next_wakeup(), None, "so nothing to wake up for");
        q.finish(&running[0], &fetched(&running[0].blobs), later);
        assert!(q.next_wakeup().is_some_and(|t| t <= later));
        assert_eq!(q.next_job(later).expect("retried").blobs, [hash(0)]);
    }

    #[test]
    fn a_connecting_peer_makes_waiting_blobs_ready() {
        let now = Instant::now();
        let mut q = BlobQueue::default();
        q.want(hash(1), None, lineage(1), now);
        let job = q.next_job(now).expect("job");
        q.finish(&job, &BTreeSet::new(), now);
        assert_eq!(q.next_job(now), None);
        assert!(!q.peer_connected(now), "nothing given up to forgive");
        assert_eq!(q.next_job(now).expect("ready again").blobs, [hash(1)]);
    }

    #[test]
    fn given_up_blobs_are_forgiven_by_a_connection_at_most_once_a_minute() {
        let t0 = Instant::now();
        let mut q = BlobQueue::new(Retry {
            attempts: 1,
            ..Retry::default()
        });
        let give_up = |q: &mut BlobQueue, n: u32, now: Instant| {
            assert_eq!(q.want(hash(n), None, lineage(1), now), Wanted::Queued);
            let job = q.next_job(now).expect("job");
            q.finish(&job, &BTreeSet::new(), now);
            assert_eq!(q.want(hash(n), None, lineage(1), now), Wanted::GivenUp);
        };
        give_up(&mut q, 1, t0);
        assert!(q.peer_connected(t0), "forgiven");
        assert_eq!(q.want(hash(1), None, lineage(1), t0), Wanted::Queued);
        let job = q.next_job(t0).expect("job");
        q.finish(&job, &BTreeSet::new(), t0);
        let soon = t0 + FORGIVE_EVERY / 2;
        assert!(!q.peer_connected(soon), "not again so soon");
        assert_eq!(q.want(hash(1), None, lineage(1), soon), Wanted::GivenUp);
        assert!(q.peer_connected(t0 + FORGIVE_EVERY));
        give_up(&mut q, 2, t0 + FORGIVE_EVERY);
    }

    #[test]
    fn the_queue_is_bounded_in_all_and_per_source() {
        let now = Instant::now();
        let mut q = BlobQueue::default();
        let flooder = Some(PeerId::random());
        let mut n = 0u32;
        while q.want(hash(n), flooder, lineage(1), now) == Wanted::Queued {
            n += 1;
        }
        assert_eq!(
            n as usize, MAX_PER_SOURCE,
            "one source fills its share only"
        );
        assert_eq!(
            q.want(hash(n), Some(PeerId::random()), lineage(1), now),
            Wanted::Queued,
            "another source still has room"
        );
        assert_eq!(q.want(hash(0), None, lineage(1), now), Wanted::Already);
        for s in 0..10u32 {
            let peer = Some(PeerId::random());
            for i in 0..MAX_PER_SOURCE as u32 {
                q.want(hash(10_000_000 * (s + 1) + i), peer, lineage(1), now);
            }
        }
        assert_eq!(q.stats(now).queued as usize, MAX_QUEUED);
        assert!(!q.has_room());
    }

    #[test]
    fn a_finished_job_frees_its_slots_and_lanes() {
        let now = Instant::now();
        let mut q = BlobQueue::default();
        let peer = Some(PeerId::random());
        for n in 0..10 {
            q.want(hash(n), peer, lineage(1), now);
        }
        let job = q.next_job(now).expect("job");
        assert_eq!(job.blobs.len(), 10);
        q.finish(&job, &fetched(&job.blobs), now);
        assert_eq!(q.stats(now), QueueStats::default());
        assert!(q.sources.is_empty(), "no empty lane left behind");
        assert!(!q.contains(&hash(3)));
    }
}
