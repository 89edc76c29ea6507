//! A snapshot of a running torrent, published for the UI. Plain data.

use crate::id::InfoHash;
use std::time::Duration;

/// What the session is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Opening sockets.
    #[default]
    Starting,
    /// Hashing existing data.
    Checking {
        /// Pieces examined.
        done: u32,
        /// Pieces in all.
        total: u32,
    },
    /// Waiting for a download slot (`--max-active`).
    Queued,
    /// Only the hash is known and no peer has offered metadata yet.
    FindingPeers,
    /// Fetching the info dictionary.
    FetchingMetadata,
    /// Downloading pieces.
    Downloading,
    /// Complete; uploading.
    Seeding,
    /// Shutting down.
    Stopping,
}

/// Live numbers for the progress display.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Torrent name (the hash until the metadata is known).
    pub name: String,
    /// Info-hash.
    pub info_hash: InfoHash,
    /// Phase.
    pub phase: Phase,
    /// Verified bytes.
    pub have: u64,
    /// Content size (0 until known).
    pub total: u64,
    /// Payload bytes received this run.
    pub downloaded: u64,
    /// Payload bytes sent this run.
    pub uploaded: u64,
    /// Receive rate, bytes/s.
    pub down_rate: u64,
    /// Send rate, bytes/s.
    pub up_rate: u64,
    /// Connected peers.
    pub peers_connected: usize,
    /// Of which seeds.
    pub seeds_connected: usize,
    /// Of which over uTP.
    pub peers_utp: usize,
    /// Of which RC4-encrypted.
    pub peers_encrypted: usize,
    /// Candidate addresses known.
    pub peers_known: usize,
    /// Web seeds being fetched from.
    pub web_seeds: usize,
    /// Trackers whose last announce worked.
    pub trackers_ok: usize,
    /// Trackers in all.
    pub trackers_total: usize,
    /// Peers found through the DHT.
    pub dht_peers: usize,
    /// DHT routing table size.
    pub dht_nodes: usize,
    /// ut_metadata pieces (have, total).
    pub metadata_progress: (usize, usize),
    /// Pieces found on disk at start.
    pub resumed_pieces: usize,
    /// Bytes of those pieces.
    pub resumed_bytes: u64,
    /// Time from start until the metadata was complete (magnet only).
    pub metadata_at: Option<Duration>,
    /// Time from start until the first piece was verified.
    pub first_piece_at: Option<Duration>,
    /// Time from start until the download completed (in this run).
    pub download_time: Option<Duration>,
    /// Peers and web seeds that sent us data this run.
    pub peers_used: usize,
    /// Downloading is paused by a disk error (and retries on its own).
    pub disk_paused: bool,
    /// `--interface`'s device is down or has no address: nothing is sent
    /// until it is back.
    pub blocked: bool,
}

/// Events the session reports as they happen.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// The info dictionary is known (at once for a .torrent).
    Metadata {
        /// Torrent name.
        name: String,
        /// Content size in bytes.
        size: u64,
        /// Piece count.
        pieces: u32,
        /// Piece length in bytes.
        piece_length: u32,
        /// (path, length) of each file, pad files left out, numbered from 1
        /// in this order as `btc info` does.
        files: Vec<(String, u64)>,
        /// A hybrid torrent's v2 info-hash, 64 hex digits.
        info_hash_v2: Option<String>,
    },
    /// A piece failed its hash check and will be fetched again.
    PieceFailed {
        /// The piece.
        piece: u32,
    },
    /// Every piece of a file is verified on disk.
    FileDone {
        /// 1-based file number (pad files skipped).
        index: usize,
        /// Path inside the torrent.
        path: String,
    },
    /// The last piece was verified.
    Complete {
        /// Time from start.
        elapsed: Duration,
        /// Payload bytes downloaded this run.
        downloaded: u64,
    },
    /// Writing to the disk failed; the torrent is paused and retries.
    DiskError {
        /// What failed, on one line.
        message: String,
    },
    /// Something the user should know, that the torrent goes on after
    /// (nothing can find peers for it).
    Warning {
        /// What is wrong, on one line.
        message: String,
    },
    /// A peer connection was admitted.
    PeerConnected {
        /// Its address.
        addr: std::net::SocketAddr,
        /// How it runs, and where its address came from.
        link: crate::peer::transport::Link,
        /// Whether we dialled it.
        outgoing: bool,
    },
    /// A peer connection ended.
    PeerDisconnected {
        /// Its address.
        addr: std::net::SocketAddr,
    },
}

/// Transfer rates over a sliding window of byte-counter samples, so the
/// first estimate appears a fraction of a second after data starts to flow
/// (a fixed one-second bucket showed `0 B/s` for the whole first second).
#[derive(Debug, Default)]
pub struct RateWindow {
    samples: std::collections::VecDeque<(std::time::Instant, u64, u64)>,
}

impl RateWindow {
    /// How far back the rate looks.
    pub const SPAN: Duration = Duration::from_secs(5);
    /// The shortest span a rate is computed over.
    pub const MIN_SPAN: Duration = Duration::from_millis(200);

    /// Records the counters at `now`; returns (down, up) in bytes/s, or
    /// `None` until the samples span [`Self::MIN_SPAN`].
    pub fn sample(&mut self, now: std::time::Instant, down: u64, up: u64) -> Option<(u64, u64)> {
        self.samples.push_back((now, down, up));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _, _)| now.saturating_duration_since(*t) >= Self::SPAN)
        {
            self.samples.pop_front();
        }
        let (t0, d0, u0) = *self.samples.front()?;
        let dt = now.saturating_duration_since(t0);
        if dt < Self::MIN_SPAN {
            return None;
        }
        let per_sec = |a: u64, b: u64| (b.saturating_sub(a) as f64 / dt.as_secs_f64()) as u64;
        Some((per_sec(d0, down), per_sec(u0, up)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn first_rate_appears_within_a_tick_and_follows_the_window() {
        let t0 = Instant::now();
        let mut w = RateWindow::default();
        assert_eq!(w.sample(t0, 0, 0), None);
        // 250 ms later 1 MiB arrived: 4 MiB/s at once, not 0.
        let r = w.sample(t0 + Duration::from_millis(250), 1 << 20, 0);
        assert_eq!(r, Some((4 << 20, 0)));
        // Steady 1 MiB/s for ten seconds: the window forgets the burst.
        let mut down = 1 << 20;
        let mut last = None;
        for i in 1..=40 {
            down += 256 << 10;
            last = w.sample(t0 + Duration::from_millis(250 + 250 * i), down, 7);
        }
        let (d, u) = last.unwrap();
        assert!((d as i64 - (1 << 20)).abs() < 1 << 14, "{d}");
        assert_eq!(u, 0);
        // Counters never go back, but a restart of them must not panic.
        assert!(w.sample(t0 + Duration::from_secs(11), 0, 0).is_some());
    }
}
