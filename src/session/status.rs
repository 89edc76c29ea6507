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
}
