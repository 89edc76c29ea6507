//! LEDBAT congestion control (RFC 6817, as BEP 29 and libtorrent use it):
//! the window grows while the one-way queueing delay our packets see stays
//! under a 100 ms target and shrinks as it rises past it, so uTP yields to
//! TCP and to interactive traffic on the same link instead of filling its
//! queue. Loss halves the window; a timeout drops it to one packet.
//!
//! Pure: the caller feeds delay samples (the peer's `ts_diff`), acked
//! bytes and instants.

use std::time::{Duration, Instant};

/// The queueing delay LEDBAT aims at.
pub const TARGET_US: u32 = 100_000;

/// How long one base-delay bucket lasts; the base is the least delay seen
/// over the current and the previous bucket, so a route change is
/// forgotten within two minutes (as RFC 6817's BASE_HISTORY suggests).
const BUCKET: Duration = Duration::from_secs(60);

/// The most bytes the window may reach (the peer's receive window and our
/// send buffer bound it far below this in practice).
const MAX_WINDOW: f64 = 16.0 * 1024.0 * 1024.0;

/// The window in packets a new connection starts with.
const INITIAL_PACKETS: f64 = 4.0;

/// The most the window grows per round trip when there is no queueing
/// delay, in bytes, if a packet is smaller (libtorrent's `utp_gain_factor`).
const GAIN_BYTES: f64 = 3000.0;

/// `a` is before `b` on the wrapping 32-bit microsecond clock.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// One connection's congestion window.
#[derive(Debug, Clone)]
pub struct Ledbat {
    mss: f64,
    cwnd: f64,
    ssthresh: f64,
    slow_start: bool,
    /// Least delay sample in the current bucket and when it began.
    bucket_min: Option<u32>,
    bucket_start: Option<Instant>,
    /// Least delay sample of the previous bucket.
    prev_min: Option<u32>,
    /// Latest queueing delay above the base, in microseconds.
    queueing_us: u32,
}

impl Ledbat {
    /// A window for packets of `mss` payload bytes.
    pub fn new(mss: usize) -> Ledbat {
        let mss = mss.max(1) as f64;
        Ledbat {
            mss,
            cwnd: INITIAL_PACKETS * mss,
            ssthresh: MAX_WINDOW,
            slow_start: true,
            bucket_min: None,
            bucket_start: None,
            prev_min: None,
            queueing_us: 0,
        }
    }

    /// Bytes that may be in flight.
    pub fn window(&self) -> usize {
        self.cwnd as usize
    }

    /// Whether the window is still growing exponentially.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// The latest queueing delay estimate, in microseconds.
    pub fn queueing_delay_us(&self) -> u32 {
        self.queueing_us
    }

    /// Takes a one-way delay sample (the peer's receive clock minus our
    /// send clock; the clocks' offset cancels against the base).
    pub fn on_delay_sample(&mut self, sample: u32, now: Instant) {
        let expired = self
            .bucket_start
            .is_none_or(|s| now.saturating_duration_since(s) >= BUCKET);
        if expired {
            self.prev_min = self.bucket_min;
            self.bucket_min = Some(sample);
            self.bucket_start = Some(now);
        } else if self.bucket_min.is_none_or(|m| before(sample, m)) {
            self.bucket_min = Some(sample);
        }
        let base = match (self.prev_min, self.bucket_min) {
            (Some(p), Some(c)) if before(p, c) => p,
            (_, Some(c)) => c,
            (p, None) => p.unwrap_or(sample),
        };
        let q = sample.wrapping_sub(base) as i32;
        self.queueing_us = q.clamp(0, 10 * TARGET_US as i32) as u32;
    }

    /// Grows (or, with the delay over target, shrinks) the window for
    /// `acked` newly acknowledged bytes; `flight` is what was in flight
    /// before the ACK. A window the sender is not filling does not grow.
    pub fn on_ack(&mut self, acked: usize, flight: usize) {
        if acked == 0 {
            return;
        }
        let acked = acked as f64;
        let limited = (flight as f64) + self.mss >= self.cwnd;
        let off_target =
            ((TARGET_US as f64 - self.queueing_us as f64) / TARGET_US as f64).clamp(-1.0, 1.0);
        if self.slow_start {
            if self.queueing_us > TARGET_US / 2 {
                self.slow_start = false;
                self.ssthresh = self.cwnd;
            } else if limited {
                self.cwnd += acked;
                if self.cwnd >= self.ssthresh {
                    self.slow_start = false;
                }
            }
        }
        if !self.slow_start {
            if self.queueing_us > TARGET_US {
                // Over target, shrink multiplicatively (as LEDBAT++ does):
                // over a round trip the window loses the share the delay
                // is over target, at most half. RFC 6817's linear decrease
                // (one packet per round trip) took minutes to give a large
                // window back to a TCP flow that filled the queue.
                let over = (self.queueing_us - TARGET_US) as f64 / TARGET_US as f64;
                self.cwnd -= over.min(0.5) * acked.min(self.cwnd);
            } else if limited {
                self.cwnd += self.mss.max(GAIN_BYTES) * off_target * (acked / self.cwnd).min(1.0);
            }
        }
        self.cwnd = self.cwnd.clamp(self.mss, MAX_WINDOW);
    }

    /// A packet was lost: halve the window (the caller does this at most
    /// once per window of packets).
    pub fn on_loss(&mut self) {
        self.cwnd = (self.cwnd / 2.0).max(self.mss);
        self.ssthresh = self.cwnd;
        self.slow_start = false;
    }

    /// The retransmission timer fired: start over from one packet, growing
    /// fast up to half the old window.
    pub fn on_timeout(&mut self) {
        self.ssthresh = (self.cwnd / 2.0).max(2.0 * self.mss);
        self.cwnd = self.mss;
        self.slow_start = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1000;

    /// Feeds a round trip's worth of ACKs with the given delay sample.
    fn round(c: &mut Ledbat, delay: u32, now: Instant) {
        let w = c.window();
        c.on_delay_sample(delay, now);
        for _ in 0..(w / MSS).max(1) {
            c.on_ack(MSS, c.window());
        }
    }

    #[test]
    fn slow_start_doubles_until_the_delay_rises() {
        let now = Instant::now();
        let mut c = Ledbat::new(MSS);
        assert_eq!(c.window(), 4 * MSS);
        c.on_delay_sample(5_000, now);
        round(&mut c, 5_000, now);
        assert_eq!(c.window(), 8 * MSS);
        assert!(c.in_slow_start());
        // Queueing delay of 60 ms (over half the target): slow start ends.
        round(&mut c, 65_000, now);
        assert!(!c.in_slow_start());
    }

    /// Below target the window creeps up; above it, it shrinks: LEDBAT
    /// settles where the queue holds about 100 ms.
    #[test]
    fn the_window_follows_the_delay_target() {
        let now = Instant::now();
        let mut c = Ledbat::new(MSS);
        c.on_delay_sample(1_000, now);
        c.on_loss(); // leave slow start
        let start = c.window();
        for _ in 0..20 {
            round(&mut c, 1_000, now);
        }
        let grown = c.window();
        assert!(grown > start, "{grown} > {start}");
        for _ in 0..20 {
            round(&mut c, 1_000 + 2 * TARGET_US, now);
        }
        assert!(c.window() < grown, "{} < {grown}", c.window());
        assert_eq!(c.queueing_delay_us(), 2 * TARGET_US);
    }

    /// A queue twice the target (a TCP flow filling the bottleneck) halves
    /// the window every round trip: a 2 MB window is down to a few packets
    /// within ten round trips, not the minutes a one-packet-per-round-trip
    /// decrease took.
    #[test]
    fn regression_a_standing_queue_over_target_shrinks_the_window_fast() {
        let now = Instant::now();
        let mut c = Ledbat::new(MSS);
        c.on_delay_sample(1_000, now);
        while c.window() < 2_000 * MSS {
            round(&mut c, 1_000, now);
        }
        c.on_loss(); // leave slow start, at 1 MB
        let big = c.window();
        for _ in 0..10 {
            round(&mut c, 1_000 + 3 * TARGET_US, now);
        }
        assert!(c.window() <= big / 256 + MSS, "{} from {big}", c.window());
        // Just over target, the cut is as small as the excess.
        let mut d = Ledbat::new(MSS);
        d.on_delay_sample(1_000, now);
        d.on_loss();
        let w = 100 * MSS;
        d.cwnd = w as f64;
        round(&mut d, 1_000 + TARGET_US + TARGET_US / 10, now);
        assert!(
            d.window() >= w * 85 / 100 && d.window() < w,
            "{}",
            d.window()
        );
    }

    #[test]
    fn loss_halves_and_timeout_restarts_from_one_packet() {
        let mut c = Ledbat::new(MSS);
        c.on_loss();
        assert_eq!(c.window(), 2 * MSS);
        for _ in 0..5 {
            c.on_loss();
        }
        assert_eq!(c.window(), MSS, "never below one packet");
        c.on_timeout();
        assert_eq!(c.window(), MSS);
        assert!(c.in_slow_start());
    }

    /// A sender that is not using its window (the application has nothing
    /// to send) does not inflate it.
    #[test]
    fn an_idle_window_does_not_grow() {
        let now = Instant::now();
        let mut c = Ledbat::new(MSS);
        c.on_delay_sample(1_000, now);
        for _ in 0..100 {
            c.on_ack(MSS, MSS);
        }
        assert_eq!(c.window(), 4 * MSS);
    }

    /// The base delay is the least sample of the last two minutes, on a
    /// clock that wraps; an older, lower base is forgotten.
    #[test]
    fn the_base_delay_wraps_and_expires() {
        let t0 = Instant::now();
        let mut c = Ledbat::new(MSS);
        c.on_delay_sample(u32::MAX - 10, t0);
        c.on_delay_sample(20, t0); // 31 µs later on the wrapped clock
        assert_eq!(c.queueing_delay_us(), 31);
        c.on_delay_sample(u32::MAX - 10, t0);
        assert_eq!(c.queueing_delay_us(), 0);
        // Two buckets later the old base is gone.
        c.on_delay_sample(50_000, t0 + BUCKET);
        c.on_delay_sample(50_000, t0 + 2 * BUCKET);
        assert_eq!(c.queueing_delay_us(), 0);
    }
}
