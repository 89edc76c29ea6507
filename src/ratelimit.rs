//! Process-wide rate limits (`--download-limit`, `--upload-limit`): one
//! token bucket per direction, shared by every connection and web seed,
//! applied where bytes meet the socket so any stream type is covered.
//!
//! The bucket may go into debt: a read takes whatever the socket has, then
//! the debt is paid back by waiting before the next one. That keeps the
//! average exact without splitting reads, and costs one clock read and one
//! uncontended lock per socket operation.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Parses a rate such as `500K`, `2M`, `1.5G` or `300000` into bytes per
/// second. Suffixes are binary (`2M` = 2 MiB/s) and may be followed by
/// `B`, `iB` and `/s`. `0` means no limit.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix("ib"))
        .or_else(|| t.strip_suffix('B'))
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let bad = || format!("`{text}` is not a rate (examples: 0, 500K, 2M, 1.5G)");
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// A token bucket over synthetic instants (pure; see [`RateLimiter`]).
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    /// A bucket for `rate` bytes/s (at least 1). It holds at most an eighth
    /// of a second's worth (16 KiB at least), so a pause does not turn into
    /// a long burst above the limit.
    pub fn new(rate: u64) -> Bucket {
        let rate = rate.max(1) as f64;
        let burst = (rate / 8.0).max(16384.0);
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// A bucket of `rate` tokens a second holding at most `burst`, for
    /// pacing events (announces) rather than bytes.
    pub fn with_burst(rate: f64, burst: f64) -> Bucket {
        let rate = rate.max(f64::MIN_POSITIVE);
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    /// How long to wait before using the link again (zero when not in debt).
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Accounts `n` bytes moved at `now` (the bucket may go into debt).
    pub fn take(&mut self, n: usize, now: Instant) {
        self.refill(now);
        self.tokens -= n as f64;
    }

    /// Changes the rate (at least 1 byte/s) from now on, with the burst
    /// [`Bucket::new`] would give it; tokens above the new burst go.
    pub fn set_rate(&mut self, rate: u64) {
        let rate = rate.max(1) as f64;
        self.rate = rate;
        self.burst = (rate / 8.0).max(16384.0);
        self.tokens = self.tokens.min(self.burst);
    }

    /// Bytes a single write may carry: a burst's worth.
    pub fn chunk(&self) -> usize {
        self.burst as usize
    }

    /// Gives back `n` bytes taken but not moved (a write that carried less
    /// than it reserved), never past a full burst.
    pub fn refund(&mut self, n: usize) {
        self.tokens = (self.tokens + n as f64).min(self.burst);
    }
}

/// A rate that limits nothing, for a limiter that must exist (a limit set
/// at run time must reach the connections already open) while no limit
/// is set: 1 TiB/s.
pub const UNLIMITED: u64 = 1 << 40;

/// A [`Bucket`] shared by many tasks, on tokio's clock (so tests can pause it).
///
/// A limiter may have a parent (one torrent's limit under the process's):
/// bytes count in both, and a wait lasts until both have paid for them.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: Mutex<Bucket>,
    parent: Option<Arc<RateLimiter>>,
}

impl RateLimiter {
    /// A limiter for `rate` bytes/s, or `None` for 0 (no limit).
    pub fn new(rate: u64) -> Option<Arc<RateLimiter>> {
        (rate > 0).then(|| RateLimiter::under(rate, None))
    }

    /// A limiter for `rate` bytes/s whose bytes also count in `parent`.
    pub fn under(rate: u64, parent: Option<Arc<RateLimiter>>) -> Arc<RateLimiter> {
        Arc::new(RateLimiter {
            bucket: Mutex::new(Bucket::new(rate)),
            parent,
        })
    }

    /// A pace of `rate` events a second after a first `burst` of them.
    pub fn pace(rate: f64, burst: f64) -> Arc<RateLimiter> {
        Arc::new(RateLimiter {
            bucket: Mutex::new(Bucket::with_burst(rate, burst)),
            parent: None,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Bucket, Instant) -> T) -> T {
        let now = tokio::time::Instant::now().into_std();
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut b, now)
    }

    /// See [`Bucket::set_rate`]: a limit changed at run time (the daemon's
    /// RPC) applies to every connection that already shares this limiter.
    /// The parent's rate is its own.
    pub fn set_rate(&self, rate: u64) {
        self.with(|b, _| b.set_rate(rate));
    }

    /// See [`Bucket::wait`] (the longer of this one's and the parent's).
    pub fn wait(&self) -> Duration {
        let own = self.with(|b, now| b.wait(now));
        self.parent.as_ref().map_or(own, |p| own.max(p.wait()))
    }

    /// See [`Bucket::take`].
    pub fn take(&self, n: usize) {
        self.with(|b, now| b.take(n, now));
        if let Some(p) = &self.parent {
            p.take(n);
        }
    }

    /// Reserves `n` bytes about to be sent: they are accounted now, and the
    /// caller sends them once the returned wait is over (when the bucket
    /// has paid for them and for every reservation made before).
    pub fn reserve(&self, n: usize) -> Duration {
        let own = self.with(|b, now| {
            b.take(n, now);
            b.wait(now)
        });
        self.parent.as_ref().map_or(own, |p| own.max(p.reserve(n)))
    }

    /// See [`Bucket::refund`].
    pub fn refund(&self, n: usize) {
        if n > 0 {
            self.with(|b, _| b.refund(n));
            if let Some(p) = &self.parent {
                p.refund(n);
            }
        }
    }

    /// Accounts `n` bytes already received, then waits out any debt.
    pub async fn consume(&self, n: usize) {
        self.take(n);
        let w = self.wait();
        if !w.is_zero() {
            tokio::time::sleep(w).await;
        }
    }

    fn chunk(&self) -> usize {
        let own = self.with(|b, _| b.chunk());
        self.parent.as_ref().map_or(own, |p| own.min(p.chunk()))
    }
}

/// The limiters a connection obeys; `None` = unlimited.
#[derive(Debug, Clone, Default)]
pub struct RateLimits {
    /// Bytes we receive.
    pub down: Option<Arc<RateLimiter>>,
    /// Bytes we send.
    pub up: Option<Arc<RateLimiter>>,
}

impl RateLimits {
    /// Limits for the given rates in bytes/s (0 = none).
    pub fn new(down: u64, up: u64) -> RateLimits {
        RateLimits {
            down: RateLimiter::new(down),
            up: RateLimiter::new(up),
        }
    }
}

/// A stream that reads and writes no faster than its [`RateLimits`] allow.
///
/// A write reserves its bytes in the shared upload bucket before it waits,
/// so writers take turns in the order they asked. (Waiting for the debt to
/// clear and then racing for the bucket let the connection that was
/// already sending win every race: the timer woke it first each time, and
/// a peer that connected later got nothing for as long as the first one
/// kept asking.)
///
/// Reads take turns the same way, but a read cannot reserve before it
/// knows how much arrived (an idle connection would hold its reservation
/// for nothing): while the download bucket is in debt, a read takes what
/// the socket has (up to `HELD_MAX`) into a buffer of its own, reserves
/// exactly that, and hands it over when its turn comes. Without it, the
/// connection whose timer fired first read a whole burst every time the
/// debt cleared, and a peer that connected later starved.
pub struct Throttled<S> {
    inner: Pin<Box<S>>,
    limits: RateLimits,
    read_sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    write_sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Upload bytes reserved for the write under way (0: none).
    reserved: usize,
    /// Bytes read while the download bucket was in debt, paid for, and
    /// waiting for their turn (`held[held_at..]`).
    held: Vec<u8>,
    held_at: usize,
}

/// Bytes one read takes into its own buffer while waiting for its turn.
const HELD_MAX: usize = 64 * 1024;

impl<S> Throttled<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limits: RateLimits) -> Throttled<S> {
        Throttled {
            inner: Box::pin(inner),
            limits,
            read_sleep: None,
            write_sleep: None,
            reserved: 0,
            held: Vec::new(),
            held_at: 0,
        }
    }
}

impl<S> Drop for Throttled<S> {
    fn drop(&mut self) {
        // A write reserved but never made: its turn goes to the others.
        if let Some(l) = &self.limits.up {
            l.refund(self.reserved);
        }
    }
}

use std::future::Future;

impl<S: AsyncRead> AsyncRead for Throttled<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let Some(l) = me.limits.down.clone() else {
            return me.inner.as_mut().poll_read(cx, buf);
        };
        if me.held_at == me.held.len() {
            if l.wait().is_zero() {
                // Out of debt: nobody is waiting for a turn.
                let before = buf.filled().len();
                ready!(me.inner.as_mut().poll_read(cx, buf))?;
                l.take(buf.filled().len().saturating_sub(before));
                return Poll::Ready(Ok(()));
            }
            // In debt: take what arrived, pay for it, wait for the turn.
            me.held.resize(HELD_MAX.min(l.chunk()).max(1), 0);
            let mut rb = ReadBuf::new(&mut me.held);
            let polled = me.inner.as_mut().poll_read(cx, &mut rb);
            let n = rb.filled().len();
            me.held.truncate(n);
            me.held_at = 0;
            ready!(polled)?;
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            let wait = l.reserve(n);
            if !wait.is_zero() {
                me.read_sleep = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        if let Some(s) = me.read_sleep.as_mut() {
            ready!(s.as_mut().poll(cx));
            me.read_sleep = None;
        }
        let n = (me.held.len() - me.held_at).min(buf.remaining());
        buf.put_slice(&me.held[me.held_at..me.held_at + n]);
        me.held_at += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite> AsyncWrite for Throttled<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let Some(l) = me.limits.up.clone() else {
            return me.inner.as_mut().poll_write(cx, buf);
        };
        if buf.is_empty() {
            return me.inner.as_mut().poll_write(cx, buf);
        }
        if me.reserved == 0 {
            let n = buf.len().min(l.chunk());
            let wait = l.reserve(n);
            me.reserved = n;
            if !wait.is_zero() {
                me.write_sleep = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        if let Some(s) = me.write_sleep.as_mut() {
            ready!(s.as_mut().poll(cx));
            me.write_sleep = None;
        }
        let n = buf.len().min(me.reserved);
        let result = ready!(me.inner.as_mut().poll_write(cx, &buf[..n]));
        let reserved = std::mem::take(&mut me.reserved);
        let written = *result.as_ref().unwrap_or(&0);
        l.refund(reserved - written);
        Poll::Ready(result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().inner.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().inner.as_mut().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
