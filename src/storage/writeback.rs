//! Write-behind: which written ranges to let go from the page cache.
//!
//! A download writes each verified piece once and (while it downloads)
//! rarely reads it back, yet left to itself the kernel keeps every written
//! page cached and dirty until its 30 s expiry or the dirty limit, so a
//! 2 GiB download holds 2 GiB of page cache, evicting the user's working
//! set, and each page written is a fresh one the kernel must find and, on a
//! VM that returns free memory to its host, fault in again. btc instead
//! hands each written range to the disk at once (`POSIX_FADV_DONTNEED` on
//! dirty pages starts their writeback without waiting for it) and, once a
//! range has aged out of the last [`WRITE_BEHIND_BUDGET`] bytes written,
//! advises it again, which drops its now clean pages: the pages written
//! next reuse them. Measured on the 2-core test VM (2 GiB written in 1 MiB
//! `pwrite`s into ext4 on virtio, then `fdatasync`): 2.0-6.3 s of system
//! time as the kernel caches it, 0.62-0.98 s with this scheme and a 16-256
//! MiB window; a 2 GiB download by btc went from 7.9-10.4 CPU-s to 2.6-3.2.
//!
//! The most recent pieces stay cached (they are the ones other peers ask
//! for first); dirty pages and pages still being written are never dropped
//! (the kernel skips them), so no data can be lost by this: it is advice.
//!
//! Pure bookkeeping; [`super::disk::Storage`] makes the calls.

use std::collections::VecDeque;

/// Bytes of recently written data per torrent left in the page cache.
pub const WRITE_BEHIND_BUDGET: u64 = 32 << 20;

/// Ranges remembered at most (a torrent of many tiny files writes many
/// small ranges per piece); past it the oldest age out early.
const MAX_RANGES: usize = 4096;

/// Writes that continue one another are handed to the disk together once
/// they reach this much: with 16 KiB pieces, an `fadvise` per piece sent
/// the disk one small request each (the virtio kicks alone took 7% of the
/// download's CPU).
const KICK_BYTES: u64 = 1 << 20;

/// A remembered range grows by the writes that continue it up to this
/// size, so a torrent of small pieces ages out in few, large ranges.
const MAX_MERGED: u64 = 4 << 20;

/// Part of one file, in that file's offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRange {
    /// Index of the file in the torrent's storage.
    pub file: usize,
    pub offset: u64,
    pub len: u64,
}

/// What to tell the kernel after a write.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Advice {
    /// Ranges to hand to the disk now (their writeback starts).
    pub start: Vec<FileRange>,
    /// Ranges that aged out of the budget: to drop from the cache.
    pub drop: Vec<FileRange>,
}

impl FileRange {
    /// Whether `next` starts where this range ends, in the same file.
    fn continued_by(&self, next: &FileRange) -> bool {
        self.file == next.file && self.offset + self.len == next.offset
    }
}

/// Ranges written lately, oldest first, and their total.
#[derive(Debug)]
pub struct WriteBehind {
    recent: VecDeque<FileRange>,
    held: u64,
    budget: u64,
    /// Written, not yet handed to the disk: under [`KICK_BYTES`] of
    /// writes that continue one another.
    kick: Option<FileRange>,
}

impl WriteBehind {
    pub fn new(budget: u64) -> Self {
        WriteBehind {
            recent: VecDeque::new(),
            held: 0,
            budget,
            kick: None,
        }
    }

    /// Records `range` as just written. Returns what to hand to the disk
    /// now (a run of writes that continue one another once it reaches
    /// `KICK_BYTES`, or the run before when this write starts another)
    /// and the oldest ranges that no longer fit in the budget: the ones to
    /// drop from the cache now. A range larger than the whole budget goes
    /// at once.
    pub fn written(&mut self, range: FileRange) -> Advice {
        let mut advice = Advice::default();
        if range.len == 0 {
            return advice;
        }
        match &mut self.kick {
            Some(k) if k.continued_by(&range) => k.len += range.len,
            Some(k) => {
                advice.start.push(*k);
                *k = range;
            }
            None => self.kick = Some(range),
        }
        if self.kick.is_some_and(|k| k.len >= KICK_BYTES) {
            advice.start.extend(self.kick.take());
        }
        match self.recent.back_mut() {
            Some(b) if b.continued_by(&range) && b.len + range.len <= MAX_MERGED => {
                b.len += range.len;
            }
            _ => self.recent.push_back(range),
        }
        self.held += range.len;
        while self.held > self.budget || self.recent.len() > MAX_RANGES {
            let Some(old) = self.recent.pop_front() else {
                break;
            };
            self.held -= old.len;
            advice.drop.push(old);
        }
        advice
    }

    /// Bytes recorded and not yet returned.
    pub fn held(&self) -> u64 {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(file: usize, offset: u64, len: u64) -> FileRange {
        FileRange { file, offset, len }
    }

    #[test]
    fn ranges_age_out_oldest_first_once_past_the_budget() {
        let mut w = WriteBehind::new(10);
        assert!(w.written(r(0, 0, 4)).drop.is_empty());
        assert!(w.written(r(1, 0, 4)).drop.is_empty());
        assert_eq!(w.held(), 8);
        // 12 > 10: the first range goes.
        assert_eq!(w.written(r(0, 4, 4)).drop, vec![r(0, 0, 4)]);
        assert_eq!(w.held(), 8);
        // Exactly at the budget: nothing goes.
        assert!(w.written(r(2, 0, 2)).drop.is_empty());
        assert_eq!(w.held(), 10);
        // A range bigger than the budget pushes out everything, itself too.
        let aged = w.written(r(3, 0, 25)).drop;
        assert_eq!(aged, vec![r(1, 0, 4), r(0, 4, 4), r(2, 0, 2), r(3, 0, 25)]);
        assert_eq!(w.held(), 0);
    }

    /// Regression: a torrent of 16 KiB pieces sent the disk one request
    /// per piece (an `fadvise` each). Writes that continue one another now
    /// go to the disk in 1 MiB runs and age out in ranges of up to 4 MiB.
    #[test]
    fn regression_small_consecutive_writes_are_advised_together() {
        let mut w = WriteBehind::new(32 << 20);
        let piece = 16 << 10;
        let mut started = Vec::new();
        for i in 0..256u64 {
            started.extend(w.written(r(0, i * piece, piece)).start);
        }
        // 4 MiB written: four 1 MiB runs handed to the disk.
        assert_eq!(started.len(), 4);
        assert_eq!(started[0], r(0, 0, 1 << 20));
        assert_eq!(started[3], r(0, 3 << 20, 1 << 20));
        assert_eq!(w.recent.len(), 1, "one remembered range of 4 MiB");
        // A write elsewhere hands over the run it interrupts.
        let a = w.written(r(0, 100 << 20, piece));
        assert!(a.start.is_empty(), "nothing pending: the run was complete");
        let b = w.written(r(1, 0, piece));
        assert_eq!(b.start, vec![r(0, 100 << 20, piece)]);
        // A write of 1 MiB or more goes at once.
        let c = w.written(r(2, 0, 1 << 20));
        assert_eq!(c.start, vec![r(1, 0, piece), r(2, 0, 1 << 20)]);
    }

    #[test]
    fn empty_ranges_are_not_recorded() {
        let mut w = WriteBehind::new(1);
        assert_eq!(w.written(r(0, 5, 0)), Advice::default());
        assert_eq!(w.held(), 0);
    }

    #[test]
    fn many_small_ranges_are_bounded_in_count() {
        let mut w = WriteBehind::new(u64::MAX);
        let mut aged = 0;
        // Gaps between the writes: none continues another.
        for i in 0..(MAX_RANGES as u64 + 10) {
            aged += w.written(r(0, 2 * i, 1)).drop.len();
        }
        assert_eq!(aged, 10);
        assert_eq!(w.held(), MAX_RANGES as u64);
    }
}
