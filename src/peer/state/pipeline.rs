//! The request pipeline to one peer: which blocks are in flight, oldest
//! first, and how many to keep in flight.
//!
//! A peer can only send what we asked for, so the requests in flight are
//! our receive window: to fill a link of rate `R` and round trip `T` we
//! need `R × T` bytes of requests outstanding (the bandwidth-delay
//! product), and a fixed depth caps the rate at `depth / T` (3 MiB in
//! flight is 30 MB/s at 100 ms). The depth here follows the delay each
//! block took, the way delay-based congestion control (TCP Vegas, LEDBAT)
//! sizes a window: the fastest round trip seen is the path's base delay,
//! and once per round trip the smallest extra delay of the blocks that
//! came back in it decides. Little more than the base says the pipe could
//! hold more (the depth doubles every round trip until the first queue
//! shows, like TCP's slow start, then grows by an eighth); a queue that
//! never drained in a whole round trip says we ask for more than the link
//! carries (the depth drops to what the measured rate needs). The
//! depth settles where the peer's queue holds a quarter to three quarters
//! of a round trip (see [`band`]): a full pipe with a margin on a long fat
//! link, a few megabytes on a loopback, instead of a depth that is too
//! small far away and wastes memory close by.

use crate::peer::message::BlockRef;
use std::time::{Duration, Instant};

/// Requests kept in flight to a peer that is not snubbed, however slow.
pub const MIN_DEPTH: usize = 32;
/// Queueing delay under which one more request is kept in flight: at least
/// this long, or a quarter of the base round trip if that is longer.
const GROW_BELOW: Duration = Duration::from_millis(3);
/// The queueing delay band the depth settles in for a path of `base`
/// round trip: grow below the first, shrink above the second. A quarter
/// to three quarters of the round trip (1.25 to 1.75 times the
/// bandwidth-delay product in flight: full, with a margin for jitter),
/// but never narrower than [`GROW_BELOW`] and twice it, where the round
/// trip is too short to measure against the peer's own jitter.
fn band(base: Duration) -> (Duration, Duration) {
    let grow_below = GROW_BELOW.max(base / 4);
    (grow_below, (grow_below * 2).max(base / 2 + grow_below))
}

/// The base delay is the smallest round trip of the last [`BASE_WINDOWS`]
/// windows of this length, so a path that really got longer is learnt.
const BASE_WINDOW: Duration = Duration::from_secs(60);
const BASE_WINDOWS: usize = 5;

/// Blocks requested from one peer and not yet received, in request order,
/// with the depth the pipeline aims for.
#[derive(Debug)]
pub struct Pipeline {
    /// `refs[head..]` are in flight, oldest first; `refs[..head]` are
    /// answered and dropped in one go once they are half the vector.
    refs: Vec<BlockRef>,
    /// When each of `refs` was queued to be sent.
    sent: Vec<Instant>,
    head: usize,
    /// The requests to keep in flight, before the peer's `reqq` caps it.
    depth: usize,
    /// Smallest round trip per [`BASE_WINDOW`], newest last.
    base: [Option<Duration>; BASE_WINDOWS],
    /// When the newest window of `base` started.
    base_since: Option<Instant>,
    /// Doubling the depth every round trip until the first queue shows.
    slow_start: bool,
    /// The current round trip's end, when the depth is decided again.
    epoch_end: Option<Instant>,
    /// The smallest queueing delay seen in the current round trip.
    epoch_queue: Option<Duration>,
    /// The pipeline was at least half full at some point of it.
    epoch_full: bool,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            refs: Vec::new(),
            sent: Vec::new(),
            head: 0,
            depth: MIN_DEPTH,
            base: [None; BASE_WINDOWS],
            base_since: None,
            slow_start: true,
            epoch_end: None,
            epoch_queue: None,
            epoch_full: false,
        }
    }
}

impl Pipeline {
    /// The requests in flight, oldest first.
    pub fn as_slice(&self) -> &[BlockRef] {
        &self.refs[self.head..]
    }

    pub fn len(&self) -> usize {
        self.refs.len() - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The requests to keep in flight, at most `cap` (the peer's `reqq`).
    pub fn target(&self, cap: usize) -> usize {
        self.depth.min(cap)
    }

    /// The base round trip measured so far, if any block came back yet.
    pub fn base_rtt(&self) -> Option<Duration> {
        self.base.iter().flatten().min().copied()
    }

    /// A request was queued to be sent.
    pub fn push(&mut self, r: BlockRef, now: Instant) {
        self.refs.push(r);
        self.sent.push(now);
    }

    /// The block `matches` picks arrived: drops it from the pipeline and
    /// adjusts the depth from its round trip. `false` if it was not in
    /// flight.
    pub fn arrived(
        &mut self,
        matches: impl Fn(&BlockRef) -> bool,
        now: Instant,
        cap: usize,
    ) -> bool {
        // Peers answer in order, so this is nearly always the first one.
        let Some(i) = self.as_slice().iter().position(matches) else {
            return false;
        };
        let outstanding = self.len();
        let sent = self.remove_at(self.head + i);
        self.learn(now.saturating_duration_since(sent), outstanding, now, cap);
        true
    }

    /// Drops `r` without a delay sample (cancelled, rejected). `false` if
    /// it was not in flight.
    pub fn remove(&mut self, r: &BlockRef) -> bool {
        match self.as_slice().iter().position(|x| x == r) {
            Some(i) => {
                self.remove_at(self.head + i);
                true
            }
            None => false,
        }
    }

    /// Empties the pipeline (choked, snubbed), returning what was in it.
    pub fn take(&mut self) -> Vec<BlockRef> {
        let taken = self.as_slice().to_vec();
        self.clear();
        taken
    }

    pub fn clear(&mut self) {
        self.refs.clear();
        self.sent.clear();
        self.head = 0;
    }

    fn remove_at(&mut self, i: usize) -> Instant {
        let sent = self.sent[i];
        if i == self.head {
            self.head += 1;
            if self.head == self.refs.len() {
                self.clear();
            } else if self.head * 2 >= self.refs.len() && self.head >= 64 {
                self.refs.drain(..self.head);
                self.sent.drain(..self.head);
                self.head = 0;
            }
        } else {
            self.refs.remove(i);
            self.sent.remove(i);
        }
        sent
    }

    /// One round-trip sample, taken when `outstanding` requests (this one
    /// included) were in flight.
    fn learn(&mut self, rtt: Duration, outstanding: usize, now: Instant, cap: usize) {
        match self.base_since {
            Some(since) if now.saturating_duration_since(since) < BASE_WINDOW => {}
            Some(_) => {
                self.base.rotate_left(1);
                self.base[BASE_WINDOWS - 1] = None;
                self.base_since = Some(now);
            }
            None => self.base_since = Some(now),
        }
        let newest = &mut self.base[BASE_WINDOWS - 1];
        *newest = Some(newest.map_or(rtt, |b| b.min(rtt)));
        let base = self.base_rtt().unwrap_or(rtt);
        let queued = rtt.saturating_sub(base);
        self.epoch_queue = Some(self.epoch_queue.map_or(queued, |q| q.min(queued)));
        // Only a full pipe proves anything: a half-empty one (nothing to
        // pick, or just unchoked) is fast because it is empty.
        self.epoch_full |= outstanding * 2 >= self.depth;
        match self.epoch_end {
            Some(end) if now < end => return,
            Some(_) => {}
            None => {
                self.epoch_end = Some(now + rtt);
                return;
            }
        }
        // One decision per round trip, on the epoch's smallest queueing
        // delay: a burst queues behind itself, but if the queue never
        // drained in a whole round trip, it is standing.
        let queued = self.epoch_queue.take().unwrap_or_default();
        let (grow_below, shrink_above) = band(base);
        if queued < grow_below {
            if self.epoch_full {
                let step = if self.slow_start {
                    self.depth
                } else {
                    (self.depth / 8).max(1)
                };
                self.depth += step;
            }
        } else {
            self.slow_start = false;
            if queued > shrink_above {
                // The peer delivered `depth` blocks per `base + queued`;
                // at that rate, the middle of the band needs this many
                // (Little's law), so a standing queue drains in one trip.
                let mid = (grow_below + shrink_above) / 2;
                let scale = (base + mid).as_secs_f64() / (base + queued).as_secs_f64();
                self.depth = (self.depth as f64 * scale) as usize;
            }
        }
        self.depth = self.depth.clamp(MIN_DEPTH, cap.max(MIN_DEPTH));
        self.epoch_full = false;
        self.epoch_end = Some(now + rtt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 2048;

    fn block(i: u32) -> BlockRef {
        BlockRef {
            piece: i / 64,
            offset: (i % 64) * 16384,
            len: 16384,
        }
    }

    /// A peer behind a link of `rate` bytes/s and round trip `rtt`, driven
    /// for `secs` simulated seconds: requests leave at once, the peer sends
    /// blocks back to back at `rate`, each arrives `rtt` after its request
    /// at the earliest. Returns the bytes received.
    fn simulate(p: &mut Pipeline, rtt: Duration, rate: f64, secs: u64) -> u64 {
        simulate_from(p, Instant::now(), rtt, rate, secs).0
    }

    /// [`simulate`] from `start`, returning the bytes and the end instant.
    fn simulate_from(
        p: &mut Pipeline,
        start: Instant,
        rtt: Duration,
        rate: f64,
        secs: u64,
    ) -> (u64, Instant) {
        p.clear();
        let per_block = Duration::from_secs_f64(16384.0 / rate);
        let mut now = start;
        let mut next = 0u32;
        let mut link_free = start;
        // Requests in flight with their arrival times, oldest first.
        let mut arrivals: std::collections::VecDeque<(BlockRef, Instant)> = Default::default();
        let mut got = 0u64;
        while now < start + Duration::from_secs(secs) {
            while p.len() < p.target(CAP) {
                let r = block(next);
                next += 1;
                p.push(r, now);
                // Served when it reaches the peer and the link is free.
                let at_peer = now + rtt / 2;
                let leaves = link_free.max(at_peer) + per_block;
                link_free = leaves;
                arrivals.push_back((r, leaves + rtt / 2));
            }
            let (r, at) = arrivals.pop_front().expect("pipeline is never empty");
            now = at;
            assert!(p.arrived(|x| *x == r, now, CAP));
            got += 16384;
        }
        (got, now)
    }

    #[test]
    fn a_long_fat_link_is_filled() {
        for rtt_ms in [20u64, 100, 300] {
            let rtt = Duration::from_millis(rtt_ms);
            let rate = 100e6 / 8.0; // 100 Mbit/s
            let mut p = Pipeline::default();
            let secs = 30;
            let got = simulate(&mut p, rtt, rate, secs);
            let fill = got as f64 / (rate * secs as f64);
            assert!(
                fill > 0.9,
                "rtt {rtt_ms} ms: {:.0}% of the link",
                fill * 100.0
            );
            // Not far more than the path holds: at most ~2.5 BDP + a margin.
            let bdp = (rate * rtt.as_secs_f64() / 16384.0) as usize;
            assert!(
                p.target(CAP) <= bdp * 5 / 2 + 64,
                "rtt {rtt_ms} ms: depth {} for a BDP of {bdp}",
                p.target(CAP)
            );
        }
    }

    #[test]
    fn a_close_fast_peer_keeps_a_small_pipeline() {
        // Loopback-like: 0.2 ms, 1 GB/s. The depth stays a few MiB.
        let mut p = Pipeline::default();
        let got = simulate(&mut p, Duration::from_micros(200), 1e9, 2);
        assert!(got as f64 > 0.9 * 2e9, "{got}");
        assert!(p.target(CAP) * 16384 <= 8 << 20, "depth {}", p.target(CAP));
    }

    #[test]
    fn the_peer_s_reqq_caps_the_depth() {
        let mut p = Pipeline::default();
        simulate(&mut p, Duration::from_millis(300), 1e9, 5);
        assert_eq!(p.target(250), 250);
        assert!(p.target(CAP) <= CAP);
    }

    #[test]
    fn a_queue_that_grows_shrinks_the_depth() {
        let mut p = Pipeline::default();
        // Ramp up on a fast, long link...
        simulate(&mut p, Duration::from_millis(100), 50e6, 10);
        let high = p.target(CAP);
        // ...then the same path at a tenth of the rate: requests queue.
        simulate(&mut p, Duration::from_millis(100), 5e6, 20);
        let low = p.target(CAP);
        assert!(low < high / 3, "depth {high} -> {low}");
        let bdp = (5e6 * 0.1 / 16384.0) as usize;
        assert!(low <= bdp * 3 + MIN_DEPTH, "depth {low} for a BDP of {bdp}");
    }

    #[test]
    fn blocks_leave_in_any_order_and_the_slice_stays_in_request_order() {
        let mut p = Pipeline::default();
        let now = Instant::now();
        for i in 0..200 {
            p.push(block(i), now);
        }
        assert!(p.arrived(|r| *r == block(5), now, CAP));
        assert!(p.remove(&block(7)));
        assert!(!p.remove(&block(7)));
        for i in 0..100 {
            if i != 5 && i != 7 {
                assert!(p.arrived(|r| *r == block(i), now, CAP));
            }
        }
        let left: Vec<BlockRef> = (100..200).map(block).collect();
        assert_eq!(p.as_slice(), &left[..]);
        assert_eq!(p.take(), left);
        assert!(p.is_empty());
        assert!(!p.arrived(|r| *r == block(150), now, CAP));
    }

    #[test]
    fn a_half_empty_pipeline_does_not_grow() {
        // One request at a time, answered at once: nothing proves the
        // path could carry more, so the depth stays at its floor.
        let mut p = Pipeline::default();
        let mut now = Instant::now();
        for i in 0..1000 {
            p.push(block(i), now);
            now += Duration::from_millis(1);
            assert!(p.arrived(|r| *r == block(i), now, CAP));
        }
        assert_eq!(p.target(CAP), MIN_DEPTH);
    }

    #[test]
    fn the_base_delay_follows_a_path_that_got_longer() {
        let mut p = Pipeline::default();
        let (_, t) = simulate_from(&mut p, Instant::now(), Duration::from_millis(10), 10e6, 5);
        assert!(p.base_rtt().unwrap() < Duration::from_millis(15));
        simulate_from(&mut p, t, Duration::from_millis(200), 10e6, 400);
        assert!(
            p.base_rtt().unwrap() >= Duration::from_millis(200),
            "{:?}",
            p.base_rtt()
        );
    }
}
