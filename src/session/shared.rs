//! State shared by the session's control loop and every peer task.
//!
//! Lock discipline: one `std::sync::Mutex<State>`, held only for short,
//! non-awaiting sections (a pick, a block copy, a table update). Nothing
//! blocking happens under it: hashing and disk I/O run on the blocking pool
//! and take the lock again only to record their result.

use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::id::{InfoHash, PeerId};
use crate::metainfo::Metainfo;
use crate::peer::metadata::MetadataAssembler;
use crate::picker::{PeerKey, Picker};
use crate::storage::disk::Storage;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::task::TaskTracker;

use tokio_util::sync::CancellationToken;

/// Trust at or below which an IP is banned. A peer gains one point per
/// verified piece it helped with (up to [`MAX_TRUST`]) and loses two per
/// failed piece it helped with, as libtorrent does: a liar sinks fast, an
/// honest peer that shared a few pieces with a liar does not. The smart ban
/// in [`crate::session::verify`] bans a proven liar at once.
pub const BAN_TRUST: i32 = -7;
/// Trust a peer can bank.
pub const MAX_TRUST: i32 = 20;
/// Hash-failure strikes at which a web seed is dropped.
pub const BAN_STRIKES: u32 = 4;
/// Failed pieces whose per-block senders are remembered for the smart ban.
pub const MAX_SUSPECT_PIECES: usize = 256;
/// A connection older than this that moved no payload for as long may be
/// closed to make room for a new one when every slot is taken.
pub const EVICT_AFTER: Duration = Duration::from_secs(60);

/// Everything known once the info dictionary is.
pub struct TorrentData {
    /// The torrent.
    pub meta: Metainfo,
    /// Piece geometry.
    pub geometry: Geometry,
    /// The files on disk.
    pub storage: Storage,
}

pub use crate::peer::state::PeerCommand;

/// The session's view of one connected peer.
pub struct PeerEntry {
    /// Remote address.
    pub addr: SocketAddr,
    /// Remote peer id.
    pub peer_id: PeerId,
    /// Whether it is interested in us.
    pub interested: bool,
    /// Whether we choke it.
    pub choked: bool,
    /// Bytes/s it sends us (payload).
    pub down_rate: u64,
    /// Bytes/s we send it (payload).
    pub up_rate: u64,
    /// Whether it has every piece.
    pub seed: bool,
    /// Whether we dialled it.
    pub outgoing: bool,
    /// TCP or uTP, encrypted or not.
    pub link: crate::peer::transport::Link,
    /// Command channel to its task.
    pub tx: mpsc::Sender<PeerCommand>,
    /// When it connected.
    pub connected_at: Instant,
    /// When payload last moved either way, or it was last interested: a
    /// peer idle in both senses for long can be evicted for a newcomer.
    pub last_useful: Instant,
    /// The port it says it listens on (BEP 10 `p`).
    pub listen_port: Option<u16>,
}

impl PeerEntry {
    /// Where others can reach it: the address we dialled, or its IP with
    /// the port it announced (an incoming connection's port is ephemeral).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        if self.outgoing {
            Some(self.addr)
        } else {
            self.listen_port.map(|p| SocketAddr::new(self.addr.ip(), p))
        }
    }

    /// Its BEP 11 flags in our PEX messages: a seed, reachable (we
    /// dialled it), speaking uTP, taking encryption (it did with us).
    pub fn pex_flags(&self) -> u8 {
        use crate::peer::pex::{FLAG_ENCRYPTION, FLAG_REACHABLE, FLAG_SEED, FLAG_UTP};
        use crate::peer::transport::Transport;
        let mut f = 0;
        if self.seed {
            f |= FLAG_SEED;
        }
        if self.outgoing {
            f |= FLAG_REACHABLE;
        }
        if self.link.transport == Transport::Utp {
            f |= FLAG_UTP;
        }
        if self.link.encrypted {
            f |= FLAG_ENCRYPTION;
        }
        f
    }
}

/// How long a seed we parted with because we seed too stays in our PEX
/// messages: it is alive and useful to every leecher, just not to us.
pub const PEX_REMEMBER_SEEDS: Duration = Duration::from_secs(600);
/// Such seeds remembered at most.
pub const MAX_PEX_SEEDS: usize = 50;
/// Batches of PEX-learnt addresses waiting for the torrent's loop; more
/// are dropped rather than block a peer task.
pub const PEX_QUEUE: usize = 64;

/// How long a disk error pauses downloading before writes are tried again.
pub const DISK_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// Distinct sources remembered for the summary.
pub const MAX_SOURCES: usize = 65_536;

/// Who sent a block, for the summary: a peer by its peer id (one that
/// reconnects, or connected both ways at once, is still one peer), a web
/// seed by its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A peer.
    Peer(PeerId),
    /// A web seed (or any source that is not a peer connection).
    Other(PeerKey),
}

/// Mutable state behind the lock.
#[derive(Default)]
pub struct State {
    /// Piece picker; `None` until the metadata is known.
    pub picker: Option<Picker>,
    /// Connected peers.
    pub peers: HashMap<PeerKey, PeerEntry>,
    /// Verified pieces in the order they were verified; peer tasks keep an
    /// index into it to know which HAVEs they still owe their peer.
    pub verified_log: Vec<u32>,
    /// Trust per IP (see [`BAN_TRUST`]).
    pub trust: HashMap<IpAddr, i32>,
    /// For failed pieces: who sent which block, and the block's SHA-1, to
    /// compare once the piece passes from other peers (smart ban).
    pub suspects: HashMap<u32, Vec<Suspect>>,
    /// IPs we refuse to talk to.
    pub banned: HashSet<IpAddr>,
    /// Fetches the info dict from peers while only the hash is known.
    pub assembler: Option<MetadataAssembler>,
    /// Hash-failure strikes of each running web seed, by its key.
    pub web_seed_strikes: HashMap<PeerKey, u32>,
    /// Peers and web seeds that sent at least one wanted block (for the
    /// summary's "from N peers"; stops growing at [`MAX_SOURCES`]).
    pub sources: HashSet<Source>,
    /// Seeds that left because we seed too: listen address, BEP 11 flags,
    /// when they left. Still offered in PEX for [`PEX_REMEMBER_SEEDS`].
    pub pex_seeds: std::collections::VecDeque<(SocketAddr, u8, Instant)>,
}

/// One block of a piece that failed its hash check.
#[derive(Debug, Clone)]
pub struct Suspect {
    /// Who sent it.
    pub ip: IpAddr,
    /// Its index in the piece.
    pub block: u32,
    /// SHA-1 of the bytes it sent.
    pub hash: [u8; 20],
}

/// Connection limits of one torrent.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connected peers at most.
    pub max_peers: usize,
    /// Connections from one IP at most.
    pub max_per_ip: usize,
}

/// The connection budget of the whole process, which every torrent draws
/// from: `--max-peers` is a process total, so a thousand torrents cannot
/// open a thousand times a torrent's share of sockets.
#[derive(Debug)]
pub struct ConnBudget {
    /// Connected peers at most, across all torrents.
    pub max: usize,
    /// Connected peers now.
    pub open: AtomicUsize,
    /// Dials under way now, across all torrents.
    pub dialing: AtomicUsize,
}

impl ConnBudget {
    /// An empty budget of `max` connections.
    pub fn new(max: usize) -> Self {
        ConnBudget {
            max,
            open: AtomicUsize::new(0),
            dialing: AtomicUsize::new(0),
        }
    }

    /// Connections (open or being dialled) that may still start.
    pub fn room(&self) -> usize {
        self.max.saturating_sub(
            self.open.load(Ordering::Relaxed) + self.dialing.load(Ordering::Relaxed),
        )
    }

    /// Whether every connection of the budget is open.
    pub fn is_full(&self) -> bool {
        self.open.load(Ordering::Relaxed) >= self.max
    }
}

/// Transfer counters, lock-free so the hot path can bump them cheaply.
#[derive(Default)]
pub struct Counters {
    /// Payload bytes received from peers (including wasted).
    pub downloaded: AtomicU64,
    /// Payload bytes sent to peers.
    pub uploaded: AtomicU64,
    /// Bytes of pieces that failed their hash.
    pub wasted: AtomicU64,
}

/// Addresses one PEX message added, with their flags.
pub type PexBatch = Vec<(SocketAddr, u8)>;

/// Shared by the session and all peer tasks of one torrent.
pub struct Shared {
    /// The torrent's info-hash.
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: PeerId,
    /// Our TCP listen port (sent in the extension handshake).
    pub listen_port: u16,
    /// Whether we run a DHT node (reserved bit + PORT message).
    pub dht_port: Option<u16>,
    /// Set once the metadata is known (immediately for a .torrent).
    pub data: OnceLock<Arc<TorrentData>>,
    /// Locked state.
    state: Mutex<State>,
    /// Counters.
    pub counters: Counters,
    /// Bumped whenever a piece is verified; peer tasks send HAVEs on change.
    pub pieces_verified: watch::Sender<u64>,
    /// Signalled when the metadata becomes known.
    pub metadata_ready: Notify,
    /// Signals the control loop that the unchoke set should be recomputed.
    pub rechoke: Notify,
    /// Cancels everything of this torrent.
    pub shutdown: CancellationToken,
    /// Verified info dicts from the metadata exchange, for the session;
    /// made only for a torrent that waits for its metadata (see
    /// [`Shared::metadata_channel`]).
    metadata_tx: OnceLock<mpsc::Sender<Bytes>>,
    /// Piece verify-and-write tasks, awaited at shutdown so no write is lost.
    pub disk_tasks: TaskTracker,
    /// Completed pieces waiting for those tasks (see `verify`).
    pub verify_queue: Mutex<super::verify::VerifyQueue>,
    /// Peer, dial and web seed tasks, awaited briefly at shutdown.
    pub tasks: TaskTracker,
    /// A storage failure that must end the run.
    pub fatal: Mutex<Option<String>>,
    /// `--json`'s event channel, set once by the session when listened to.
    pub events: OnceLock<mpsc::Sender<super::status::SessionEvent>>,
    /// Set while a disk error pauses downloading: until when.
    pub disk_pause: Mutex<Option<std::time::Instant>>,
    /// Process-wide rate limits, set once by the session before any peer.
    pub rate_limits: OnceLock<crate::ratelimit::RateLimits>,
    /// Connection limits.
    pub limits: Limits,
    /// The process-wide connection budget (set by the session; unset in
    /// unit tests, which then have only `limits`).
    pub budget: OnceLock<Arc<ConnBudget>>,
    /// Where peers found outside the torrent's own discovery (LSD) go:
    /// its candidate address book (set when discovery starts).
    pub discovered: OnceLock<crate::mailbox::Sender<Vec<SocketAddr>>>,
    /// `--encryption` (set by the session; `prefer` in unit tests).
    pub encryption: OnceLock<crate::mse::Encryption>,
    /// Woken when a peer joins, so an idle seeding torrent's loop, which
    /// runs no timer, starts ticking again.
    pub peer_joined: Notify,
    /// This very `Shared`, for trait methods that must spawn work holding it.
    pub this: std::sync::Weak<Shared>,
    /// Addresses learnt through PEX, to the torrent's address book: made
    /// when a peer first sends some (see [`Shared::pex_sender`]), so a
    /// torrent nobody talks PEX with pays for no channel.
    pex_tx: OnceLock<mpsc::Sender<PexBatch>>,
    /// The receiving end of `pex_tx` until the torrent's loop takes it.
    pex_rx: Mutex<Option<mpsc::Receiver<PexBatch>>>,
    /// BEP 52 hash exchange: trees served, layers fetched (see `layers`).
    pub hashx: super::layers::HashX,
    /// A hybrid's two swarms (v1 hash, truncated v2 hash), once known.
    pub hybrid: OnceLock<(InfoHash, InfoHash)>,
}

impl Shared {
    /// Creates the shared state, without a metadata channel (a torrent
    /// whose metadata is known pays for none; see
    /// [`Shared::metadata_channel`]).
    pub fn create(
        info_hash: InfoHash,
        peer_id: PeerId,
        listen_port: u16,
        dht_port: Option<u16>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Shared {
            info_hash,
            peer_id,
            listen_port,
            dht_port,
            data: OnceLock::new(),
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            pieces_verified: watch::channel(0).0,
            metadata_ready: Notify::new(),
            rechoke: Notify::new(),
            shutdown,
            metadata_tx: OnceLock::new(),
            disk_tasks: TaskTracker::new(),
            verify_queue: Mutex::default(),
            tasks: TaskTracker::new(),
            fatal: Mutex::new(None),
            rate_limits: OnceLock::new(),
            disk_pause: Mutex::new(None),
            events: OnceLock::new(),
            limits,
            budget: OnceLock::new(),
            encryption: OnceLock::new(),
            discovered: OnceLock::new(),
            peer_joined: Notify::new(),
            this: this.clone(),
            pex_tx: OnceLock::new(),
            pex_rx: Mutex::new(None),
            hashx: Default::default(),
            hybrid: OnceLock::new(),
        })
    }

    /// A hybrid's other swarm: of its two hashes, the one the torrent was
    /// not started with.
    pub fn other_swarm(&self) -> Option<InfoHash> {
        self.hybrid
            .get()
            .map(|&(v1, v2)| if self.info_hash == v1 { v2 } else { v1 })
    }

    /// The receiving end of the info dicts peers assemble (made on the
    /// first call; a later call gets a receiver nobody sends to).
    pub fn metadata_channel(&self) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(1);
        let _ = self.metadata_tx.set(tx);
        rx
    }

    /// Where peers put the addresses they learn through PEX (the channel
    /// is made on first use; see [`Shared::take_pex_rx`]).
    pub fn pex_sender(&self) -> &mpsc::Sender<PexBatch> {
        self.pex_tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(PEX_QUEUE);
            *self.pex_rx.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
            tx
        })
    }

    /// The receiving end of the PEX channel, once made, for the torrent's
    /// loop (the first call after it was made gets it).
    pub fn take_pex_rx(&self) -> Option<mpsc::Receiver<PexBatch>> {
        self.pex_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// A peer task assembled an info dict matching the info-hash.
    pub fn metadata_found(&self, info: Bytes) {
        if let Some(tx) = self.metadata_tx.get() {
            let _ = tx.try_send(info);
        }
    }

    /// A write to disk failed (disk full, I/O error, a vanished folder):
    /// no new blocks are requested for [`DISK_RETRY`], then downloading
    /// resumes and the write is tried again. Verified pieces stay; the
    /// piece that could not be written was never counted.
    pub fn pause_disk(&self, why: String) {
        let until = std::time::Instant::now() + DISK_RETRY;
        let first = {
            let mut p = self.disk_pause.lock().unwrap_or_else(|e| e.into_inner());
            let first = p.is_none();
            *p = Some(until);
            first
        };
        if first {
            tracing::warn!(
                "download paused: {why}; retrying in {} s",
                DISK_RETRY.as_secs()
            );
            self.emit(super::status::SessionEvent::DiskError { message: why });
        }
    }

    /// Whether a disk error pauses downloading now, for the display (no
    /// side effect, unlike [`Shared::disk_paused`]).
    pub fn disk_pause_active(&self) -> bool {
        let p = self.disk_pause.lock().unwrap_or_else(|e| e.into_inner());
        p.is_some_and(|until| std::time::Instant::now() < until)
    }

    /// Whether downloading is paused by a disk error right now.
    pub fn disk_paused(&self) -> bool {
        let mut p = self.disk_pause.lock().unwrap_or_else(|e| e.into_inner());
        match *p {
            Some(until) if std::time::Instant::now() < until => true,
            Some(_) => {
                *p = None;
                tracing::warn!("retrying the download after the disk error");
                false
            }
            None => false,
        }
    }

    /// Ends the run because of an unrecoverable local error.
    pub fn fail(&self, msg: String) {
        let mut f = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(msg);
        }
        self.shutdown.cancel();
    }

    /// Locks the state. A poisoned lock (a panic elsewhere) is taken over:
    /// the picker's invariants hold between calls, never mid-call.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The torrent data, once known.
    pub fn data(&self) -> Option<&Arc<TorrentData>> {
        self.data.get()
    }

    /// Installs the metadata and the picker (with `have` from the disk check).
    /// With `sequential`, pieces are fetched in order after those listed.
    /// With `wanted`, only those pieces are fetched (file selection).
    pub fn install(
        &self,
        data: Arc<TorrentData>,
        have: Bitfield,
        sequential: Option<Vec<u32>>,
        wanted: Option<Bitfield>,
    ) {
        let seed = rand::random();
        let mut picker = Picker::new(data.geometry, have.clone(), seed);
        if let Some(w) = wanted {
            picker.set_wanted(w);
        }
        if let Some(first) = sequential {
            picker.set_sequential(first);
        }
        {
            let mut st = self.lock();
            // Peers connected before the metadata owe HAVEs for what the
            // disk check found; later peers get it all in their BITFIELD.
            st.verified_log = have.iter_ones().map(|i| i as u32).collect();
            st.picker = Some(picker);
        }
        let _ = self.data.set(data);
        self.metadata_ready.notify_waiters();
        self.pieces_verified.send_modify(|v| *v += 1);
    }

    /// Reports an event to `--json`, if anyone listens. A full queue drops
    /// it rather than stall the torrent.
    pub fn emit(&self, event: super::status::SessionEvent) {
        if let Some(tx) = self.events.get() {
            let _ = tx.try_send(event);
        }
    }

    /// Bytes of verified data and the total, or `None` before metadata.
    pub fn progress(&self) -> Option<(u64, u64)> {
        let data = self.data()?;
        let st = self.lock();
        Some(match st.picker.as_ref() {
            Some(p) => (p.bytes_have(), p.bytes_wanted()),
            None => (0, data.geometry.total_length),
        })
    }

    /// Whether every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.lock().picker.as_ref().is_some_and(|p| p.is_complete())
    }

    /// A piece that peers in `contributors` helped with failed its hash:
    /// web seeds get strikes, peers lose trust. Returns the peer IPs that
    /// just crossed the ban line (their connections are closed).
    pub fn strike(&self, st: &mut State, contributors: &[PeerKey]) -> Vec<IpAddr> {
        let mut newly_banned = Vec::new();
        for k in contributors {
            if let Some(s) = st.web_seed_strikes.get_mut(k) {
                // A web seed's task sees its strikes and stops itself.
                *s += if contributors.len() == 1 { 2 } else { 1 };
                continue;
            }
            let Some(ip) = st.peers.get(k).map(|p| p.addr.ip()) else {
                continue;
            };
            let t = st.trust.entry(ip).or_insert(0);
            *t = t.saturating_sub(2);
            if *t <= BAN_TRUST && st.banned.insert(ip) {
                newly_banned.push(ip);
            }
        }
        for ip in &newly_banned {
            Self::ban(st, *ip);
        }
        newly_banned
    }

    /// A piece that peers in `contributors` helped with passed.
    pub fn reward(st: &mut State, contributors: &[PeerKey]) {
        for k in contributors {
            if let Some(ip) = st.peers.get(k).map(|p| p.addr.ip()) {
                let t = st.trust.entry(ip).or_insert(0);
                *t = (*t + 1).min(MAX_TRUST);
            }
        }
    }

    /// Bans `ip` and closes its connections.
    pub fn ban(st: &mut State, ip: IpAddr) {
        st.banned.insert(ip);
        for p in st.peers.values() {
            if p.addr.ip() == ip {
                let _ = p.tx.try_send(PeerCommand::Close);
            }
        }
    }

    /// Bumps a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Two connections to the same peer (same peer id), typically because both
/// sides dialled at once: keep the one opened by the side with the lower
/// peer id. Both sides apply the same rule, so they keep the same TCP
/// connection instead of each dropping the other's. Says whether the new
/// connection replaces the old one.
pub fn keep_new_connection(
    ours: &PeerId,
    theirs: &PeerId,
    new_outgoing: bool,
    old_outgoing: bool,
) -> bool {
    let new_opened_by_lower = new_outgoing == (ours.0 < theirs.0);
    new_opened_by_lower && new_outgoing != old_outgoing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_peer(shared: &Shared, key: PeerKey, addr: &str) -> mpsc::Receiver<PeerCommand> {
        let (tx, rx) = mpsc::channel(4);
        let now = Instant::now();
        shared.lock().peers.insert(
            key,
            PeerEntry {
                addr: addr.parse().unwrap(),
                peer_id: PeerId([key as u8; 20]),
                interested: false,
                choked: true,
                down_rate: 0,
                up_rate: 0,
                seed: true,
                outgoing: true,
                link: Default::default(),
                tx,
                connected_at: now,
                last_useful: now,
                listen_port: None,
            },
        );
        rx
    }

    fn shared() -> Arc<Shared> {
        let limits = Limits {
            max_peers: 80,
            max_per_ip: 1,
        };
        let token = CancellationToken::new();
        Shared::create(InfoHash([1; 20]), PeerId([2; 20]), 1, None, limits, token)
    }

    #[test]
    fn sole_source_of_bad_pieces_is_banned_and_closed() {
        let shared = shared();
        let mut bad = add_peer(&shared, 1, "10.0.0.1:1000");
        let mut good = add_peer(&shared, 2, "10.0.0.2:1000");
        let mut st = shared.lock();
        for _ in 0..3 {
            assert!(shared.strike(&mut st, &[1]).is_empty(), "not yet");
        }
        let banned = shared.strike(&mut st, &[1]);
        assert_eq!(banned, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(st.banned.contains(&"10.0.0.1".parse().unwrap()));
        drop(st);
        assert!(matches!(bad.try_recv(), Ok(PeerCommand::Close)));
        assert!(good.try_recv().is_err(), "innocent peers stay connected");
    }

    #[test]
    fn regression_honest_peer_sharing_pieces_with_a_liar_is_not_banned() {
        let shared = shared();
        let _liar = add_peer(&shared, 1, "10.0.0.1:1000");
        let _honest = add_peer(&shared, 2, "10.0.0.2:1000");
        let mut st = shared.lock();
        // Every piece the liar touches fails; the honest peer shares half
        // of them and completes as many good ones on its own.
        let mut banned = Vec::new();
        for _ in 0..10 {
            banned.extend(shared.strike(&mut st, &[1, 2]));
            Shared::reward(&mut st, &[2]);
            banned.extend(shared.strike(&mut st, &[1]));
            Shared::reward(&mut st, &[2]);
        }
        assert_eq!(banned, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(!st.banned.contains(&"10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn both_sides_keep_the_same_duplicate() {
        let (low, high) = (PeerId([1; 20]), PeerId([2; 20]));
        // Low dialled high (conn A), high dialled low (conn B), and each
        // side registered its own dial first. Low keeps A, rejects B:
        assert!(!keep_new_connection(&low, &high, false, true));
        // High sees A arrive after B: A (opened by low) replaces B.
        assert!(keep_new_connection(&high, &low, false, true));
        // The other order of arrival gives the same result.
        assert!(keep_new_connection(&low, &high, true, false));
        assert!(!keep_new_connection(&high, &low, true, false));
        // Two connections in the same direction: the first one stays.
        assert!(!keep_new_connection(&low, &high, true, true));
        assert!(!keep_new_connection(&high, &low, false, false));
    }
}
