//! One torrent's actor: from its start to its stop.
//!
//! [`run`] installs the metadata (at once for a `.torrent`, after the
//! exchange for a magnet), waits for a download slot when there is
//! something to download, starts peer discovery, dials peers, runs the
//! choker, watches for completion and seed limits, and shuts its part down
//! in order: peers, pending disk writes, flush, trackers told `stopped`.
//! What the process shares (listener, peer id, DHT, budgets) is the
//! [`Session`]'s. The per-peer work happens in [`crate::peer::conn`]; the
//! actor only makes decisions that need a view of every peer.
//!
//! Its parts: `actor` (the state and one handler per event), `install`
//! (the disk check, web seeds, remembered metadata), `discovery`
//! (trackers, DHT, PEX, LSD), `dial` (candidates and outgoing
//! connections) and `choke` (the unchoke rounds).

mod actor;
mod choke;
mod dial;
mod discovery;
mod install;

pub use install::{load_cached_info, save_cached_info};

use super::{Session, status, stream};
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;
use anyhow::Result;
use status::Status;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// What to download.
pub enum Source {
    /// A parsed `.torrent`.
    Torrent(Box<Metainfo>),
    /// A magnet link or bare info-hash: metadata comes from peers.
    Magnet(Magnet),
}

/// One torrent's settings, validated by the CLI.
pub struct Options {
    /// What the user asked for; its fields read through `Options` (Deref).
    pub config: std::sync::Arc<crate::config::Config>,
    /// Where fetched metadata and resume data are kept, as resolved.
    pub state_dir: Option<PathBuf>,
    /// Where discrete events go for `--json` (`None`: nobody listens).
    pub events: Option<mpsc::Sender<status::SessionEvent>>,
    /// Its place in the download queue (taken when it was added, so the
    /// queue keeps the order the sources were given in).
    pub ticket: Option<super::queue::Ticket>,
    /// Commands from whoever manages the torrent at run time (the daemon's
    /// `session::manager`); `None` for the one-shot CLI.
    pub commands: Option<mpsc::Receiver<Command>>,
    /// This torrent's own limiters (under the session's), instead of the
    /// session's alone.
    pub limits: Option<crate::ratelimit::RateLimits>,
}

/// What the owner of a running torrent can ask of its actor. Stopping is
/// the torrent's cancellation token (it must work in every phase, also
/// while the start-up check runs); these are what only the actor knows.
pub enum Command {
    /// Ends the torrent the orderly way (peers, writes, resume data,
    /// trackers told `stopped`), as a process stop does.
    Stop,
    /// What the status does not carry: per-file progress, the peers.
    Snapshot(tokio::sync::oneshot::Sender<Snapshot>),
    /// Announce to every tracker now (Transmission's `torrent-reannounce`).
    Reannounce,
}

/// A running torrent's detail, answered to [`Command::Snapshot`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Verified bytes of each non-pad file, in `btc info`'s order (empty
    /// before the metadata).
    pub file_done: Vec<u64>,
    /// The connected peers.
    pub peers: Vec<PeerView>,
    /// Candidate addresses known.
    pub peers_known: usize,
}

/// One connected peer, as a snapshot shows it.
#[derive(Debug, Clone)]
pub struct PeerView {
    /// Its address.
    pub addr: SocketAddr,
    /// Bytes/s it sends us.
    pub down_rate: u64,
    /// Bytes/s we send it.
    pub up_rate: u64,
    /// Whether it has every piece.
    pub seed: bool,
    /// Over uTP (else TCP).
    pub utp: bool,
    /// RC4-encrypted.
    pub encrypted: bool,
    /// Whether we dialled it.
    pub outgoing: bool,
    /// Whether it is interested in us.
    pub interested: bool,
    /// Whether we choke it.
    pub choked: bool,
    /// Its client, from the peer id (`-TR3000-` style), or empty.
    pub client: String,
}

impl std::ops::Deref for Options {
    type Target = crate::config::Config;

    fn deref(&self) -> &crate::config::Config {
        &self.config
    }
}

/// What happened, for the final summary.
#[derive(Debug, Clone)]
pub struct Report {
    /// Torrent name.
    pub name: String,
    /// Content size.
    pub total: u64,
    /// Payload bytes downloaded this run.
    pub downloaded: u64,
    /// Payload bytes uploaded this run.
    pub uploaded: u64,
    /// Time from start to completion, if the download completed in this run.
    pub download_time: Option<Duration>,
    /// Whether all pieces are verified at exit.
    pub complete: bool,
    /// Peers and web seeds that sent us data this run.
    pub peers_used: usize,
    /// How `--stream` ended, if it did.
    pub stream: Option<std::result::Result<stream::StreamEnd, String>>,
}

/// Runs one torrent until it is done (per the seed policy) or `shutdown`
/// fires. An error after the start still stops everything in order.
pub async fn run(
    session: Arc<Session>,
    source: Source,
    opts: Options,
    status_tx: watch::Sender<Status>,
    shutdown: CancellationToken,
) -> Result<Report> {
    // The start and the stop are boxed: their state exists only while
    // they run, not in every idle torrent's task for the whole run (they
    // were most of its 6 KiB).
    let info_hash = match &source {
        Source::Torrent(m) => m.info_hash,
        Source::Magnet(m) => m.info_hash,
    };
    // Incoming peers for it wait while it waits for its turn.
    let expected = session.expect(info_hash);
    // A turn to get ready, before anything is built (a process stopping
    // meanwhile lets it through: the stop is then orderly, as before).
    let turn = tokio::select! {
        t = session.starting.clone().acquire_owned() => t.ok(),
        _ = shutdown.cancelled() => None,
    };
    let mut torrent = Box::pin(actor::Torrent::start(
        session,
        source,
        opts,
        (status_tx, expected, turn),
        shutdown,
    ))
    .await?;
    let ended = torrent.run().await;
    Box::pin(torrent.stop(ended)).await
}

/// Which seed limit (`--seed-time`, `--seed-ratio`) is reached after
/// seeding for `seeded` with `up` bytes sent of `total`, if one is.
fn seed_limit(
    (seed_time, seed_ratio): (Option<Duration>, Option<f64>),
    seeded: Duration,
    up: u64,
    total: u64,
) -> Option<&'static str> {
    if seed_time.is_some_and(|t| seeded >= t) {
        return Some("seed time reached");
    }
    match seed_ratio {
        Some(r) if total > 0 && up as f64 / total as f64 >= r => Some("seed ratio reached"),
        _ => None,
    }
}

/// The Azureus-style client tag of a peer id (`-TR3000-` → `TR3000`), or
/// an empty string.
fn client_name(id: &[u8; 20]) -> String {
    match id {
        [b'-', tag @ .., b'-', _, _, _, _, _, _, _, _, _, _, _, _]
            if tag.iter().all(u8::is_ascii_alphanumeric) =>
        {
            String::from_utf8_lossy(tag).into_owned()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_stops_at_the_first_limit_reached() {
        let s = Duration::from_secs;
        assert_eq!(seed_limit((None, None), s(1_000_000), 1 << 40, 1), None);
        assert_eq!(
            seed_limit((Some(s(60)), None), s(60), 0, 100),
            Some("seed time reached")
        );
        assert_eq!(seed_limit((Some(s(60)), None), s(59), 0, 100), None);
        assert_eq!(
            seed_limit((None, Some(2.0)), s(1), 200, 100),
            Some("seed ratio reached")
        );
        assert_eq!(seed_limit((None, Some(2.0)), s(1), 199, 100), None);
        // The size is not known yet (a magnet): no ratio.
        assert_eq!(seed_limit((None, Some(0.0)), s(1), 0, 0), None);
    }

    #[test]
    fn a_client_name_is_read_from_an_azureus_style_peer_id() {
        assert_eq!(client_name(b"-TR3000-abcdefghijkl"), "TR3000");
        assert_eq!(client_name(b"-bt0100-abcdefghijkl"), "bt0100");
        assert_eq!(client_name(b"M7-2-0--abcdefghijkl"), "");
        assert_eq!(client_name(&[0xff; 20]), "");
    }
}
