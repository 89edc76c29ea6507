//! Which block to ask which peer for next, and assembly of received blocks
//! into whole pieces.
//!
//! Policy: finish pieces already started before starting new ones (keeps the
//! number of half-done pieces, and so memory, small); start new pieces
//! rarest-first, except the first few which are random so a fresh swarm does
//! not all chase the same rare piece and we get something to share quickly;
//! once every missing block is already requested (endgame), hand out
//! duplicate requests and tell the caller whom to cancel when a copy lands.
//!
//! Pure and synchronous: time comes in as `now`, randomness from a seeded
//! RNG, peers are opaque keys. The session owns one `Picker` behind a lock.

use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::peer::message::{BLOCK_LEN, BlockRef};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// Opaque id of a connected peer.
pub type PeerKey = u64;

/// Pieces picked at random before switching to rarest-first.
const RANDOM_FIRST_PIECES: usize = 4;

/// Buckets of the availability histogram of missing pieces; pieces seen
/// by this many peers or more share the last one (it bounds the
/// histogram whatever peers announce).
const AVAIL_BUCKETS: usize = 256;

/// Hasher of the map of started pieces: piece indices are ours (only
/// pieces we started are keys), so a multiplicative hash is safe, and the
/// map is looked up for every block (SipHash on it was 5% of a download
/// of 16 KiB pieces).
#[derive(Default)]
struct PieceHasher(u64);

impl Hasher for PieceHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type PieceMap<V> = HashMap<u32, V, BuildHasherDefault<PieceHasher>>;

/// A request this old may be duplicated to another peer even outside endgame.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound on memory held by pieces being assembled or waiting for
/// their hash check and write. When the disk falls behind, new pieces are
/// not started, so a slow disk slows the network instead of growing memory.
const MAX_PENDING_BYTES: u64 = 32 * 1024 * 1024;

/// Where the in-flight budget starts (it grows on demand, see
/// [`Picker::pick`]): on loopback from one seeder, a 4 MiB budget moved
/// a 2 GiB torrent as fast as 32 MiB did, at 12 MiB peak RSS instead of
/// 41 MiB.
const START_PENDING_BYTES: u64 = 4 * 1024 * 1024;

/// Pieces in flight at least, whatever their size. With the piece length
/// capped at 64 MiB by the metainfo parser, the budget is never exceeded
/// by more than one piece.
const MIN_PENDING_PIECES: usize = 1;

/// Pieces the budget starts with at least (within the cap): one being
/// assembled while the one before is hashed and written.
const START_PENDING_PIECES: usize = 2;

/// A peer whose requests in flight (with those just picked) are fewer than
/// this while the budget keeps new pieces from starting is starved by the
/// budget: its pipe is about to run dry.
const STARVED_DEPTH: usize = 32;

/// The in-flight budget in pieces for pieces of `piece_length` bytes:
/// `(start, cap)`. The cap is [`MAX_PENDING_BYTES`] worth (at least
/// [`MIN_PENDING_PIECES`]); the start is [`START_PENDING_BYTES`] worth, at
/// least [`START_PENDING_PIECES`], never above the cap.
fn pending_budget(piece_length: u32) -> (usize, usize) {
    let per = |bytes: u64| (bytes / u64::from(piece_length.max(1))) as usize;
    let cap = per(MAX_PENDING_BYTES).max(MIN_PENDING_PIECES);
    let start = per(START_PENDING_BYTES).max(START_PENDING_PIECES).min(cap);
    (start, cap)
}

/// The budget, in pieces of `piece_len` bytes, after it kept a new piece
/// from starting while a peer had `depth` requests in flight (with those
/// just picked) and its pipeline wants `target_bytes` in flight (the
/// peer's bandwidth-delay product, see `peer::state::pipeline`): one more
/// (up to `cap`) when the peer is starved ([`STARVED_DEPTH`]) or its
/// pipeline is deeper than the whole budget can ever hold, and the disk
/// kept up (at most one
/// piece waiting for its hash and write); unchanged otherwise. So the
/// budget follows what the network needs, not a slow disk, and a peer that
/// merely tops up a full pipe close by does not creep it up to its cap.
fn grown_budget(
    budget: usize,
    cap: usize,
    depth: usize,
    target_bytes: u64,
    piece_len: u64,
    verifying: usize,
) -> usize {
    let holds = budget as u64 * piece_len;
    if (depth < STARVED_DEPTH || target_bytes > holds) && verifying <= 1 {
        (budget + 1).min(cap)
    } else {
        budget
    }
}

#[derive(Debug, Clone)]
enum BlockState {
    Free,
    Requested { by: Vec<PeerKey>, at: Instant },
    Received,
}

struct Partial {
    blocks: Vec<BlockState>,
    received: u32,
    /// Blocks `Free`; the piece is in [`Picker::open`] while above 0.
    free: u32,
    /// The piece's bytes; empty until its first block arrives.
    buf: Vec<u8>,
    contributors: Vec<PeerKey>,
    /// Who delivered each block (0: nobody yet), to pin a bad piece on
    /// the peer that sent the bad block.
    senders: Vec<PeerKey>,
}

/// What became of a received block.
#[derive(Debug, PartialEq, Eq)]
pub enum BlockOutcome {
    /// Not something we are waiting for (already have it, or out of range).
    Unwanted,
    /// Stored; `cancel` lists other peers with the same block in flight.
    Stored {
        /// Peers to send CANCEL to.
        cancel: Vec<PeerKey>,
    },
    /// Stored and the piece is whole: verify `data`, then call
    /// [`Picker::piece_verified`] or [`Picker::piece_failed`].
    Complete {
        /// The piece index.
        piece: u32,
        /// The assembled piece (return it with [`Picker::recycle`]).
        data: Vec<u8>,
        /// Every peer that sent a block of it.
        contributors: Vec<PeerKey>,
        /// The peer that sent each block, in block order.
        senders: Vec<PeerKey>,
        /// Peers to send CANCEL to.
        cancel: Vec<PeerKey>,
    },
}

/// Piece selection and assembly for one torrent.
pub struct Picker {
    geometry: Geometry,
    have: Bitfield,
    verifying: Bitfield,
    availability: Vec<u32>,
    /// How many missing pieces each availability has (the last bucket
    /// counts all from [`AVAIL_BUCKETS`] - 1 up): its lowest non-empty
    /// bucket bounds the rarest piece a peer can offer, so the
    /// rarest-first scan stops at the first piece that rare.
    avail_hist: Vec<u32>,
    pending: PieceMap<Partial>,
    /// Started pieces with a `Free` block: what step 1 of [`Picker::pick`]
    /// looks at. With small pieces most started pieces are all requested,
    /// and sorting every started piece at every pick cost more than the
    /// rest of the picker.
    open: BTreeSet<u32>,
    /// No request can be stale before this (the oldest request's time
    /// plus [`REQUEST_TIMEOUT`], or earlier); `None`: nothing requested.
    /// Spares a scan of every requested block at every pick.
    stale_due: Option<Instant>,
    /// The piece last started by rarest-first: the next scan starts after
    /// it, so among equally rare pieces consecutive ones are fetched
    /// (small pieces reach the disk in long runs, and the scan is short).
    last_started: Option<usize>,
    pool: Vec<Vec<u8>>,
    rng: SmallRng,
    /// Pieces `pending` + `verifying` may number now: starts small and
    /// grows while it starves peers (see [`grown_budget`]).
    max_pending: usize,
    /// What `max_pending` may grow to.
    cap_pending: usize,
    /// Pieces `verifying` may number before no new piece starts: where
    /// `max_pending` starts, whatever it grew to. A deep pipeline grows the
    /// budget for requests, which cost no memory until their blocks arrive
    /// (see [`Partial::buf`]); a disk or hasher that falls behind must slow
    /// the network, not fill the grown budget with whole pieces.
    max_verifying: usize,
    /// `Some` in sequential mode: these pieces first (each file's first
    /// and last), then the lowest missing index.
    sequential: Option<Vec<u32>>,
    /// In sequential mode, how far the prefix of `sequential` and of the
    /// index order are all had: scans start there, so picking stays cheap
    /// on torrents of many pieces.
    seq_cursor: (usize, usize),
    /// File selection: only these pieces are fetched (`None`: all), and
    /// how many of them are still missing.
    wanted: Option<(Bitfield, usize)>,
    /// Failed pieces (still `verifying`) waiting for their leaf hashes:
    /// not counted against the budget, whose memory the caller bounds.
    blaming: std::collections::HashSet<u32>,
}

impl Picker {
    /// A picker for `geometry` that already has the pieces in `have`.
    pub fn new(geometry: Geometry, have: Bitfield, seed: u64) -> Self {
        let n = geometry.piece_count as usize;
        let (max_pending, cap_pending) = pending_budget(geometry.piece_length);
        let mut avail_hist = vec![0; AVAIL_BUCKETS];
        avail_hist[0] = (n - have.count().min(n)) as u32;
        Picker {
            geometry,
            have,
            verifying: Bitfield::new(n),
            availability: vec![0; n],
            avail_hist,
            pending: PieceMap::default(),
            open: BTreeSet::new(),
            stale_due: None,
            last_started: None,
            pool: Vec::new(),
            rng: SmallRng::seed_from_u64(seed),
            max_pending,
            cap_pending,
            max_verifying: max_pending,
            blaming: Default::default(),
            sequential: None,
            seq_cursor: (0, 0),
            wanted: None,
        }
    }

    /// Fetch only the pieces in `wanted` (file selection): completion, the
    /// progress total and interest all follow it.
    pub fn set_wanted(&mut self, wanted: Bitfield) {
        let missing = wanted.iter_ones().filter(|&i| !self.have.get(i)).count();
        self.wanted = Some((wanted, missing));
    }

    fn is_wanted(&self, i: usize) -> bool {
        self.wanted.as_ref().is_none_or(|(w, _)| w.get(i))
    }

    /// Bytes of the pieces to fetch (with a selection, of the wanted ones).
    pub fn bytes_wanted(&self) -> u64 {
        let g = &self.geometry;
        match &self.wanted {
            None => g.total_length,
            Some((w, _)) => w
                .iter_ones()
                .map(|i| u64::from(g.piece_len(i as u32)))
                .sum(),
        }
    }

    /// Sequential mode (`--sequential`, streaming): new pieces in index
    /// order, after `first` (each file's first and last piece, which
    /// players read before the rest). Started pieces are finished lowest
    /// index first.
    pub fn set_sequential(&mut self, first: Vec<u32>) {
        self.sequential = Some(first);
    }

    /// Verified pieces.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// The torrent's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// True when every piece is verified.
    pub fn is_complete(&self) -> bool {
        match &self.wanted {
            Some((_, missing)) => *missing == 0,
            None => self.have.is_full(),
        }
    }

    /// Bytes of verified pieces.
    pub fn bytes_have(&self) -> u64 {
        let g = &self.geometry;
        if let Some((w, _)) = &self.wanted {
            return w
                .iter_ones()
                .filter(|&i| self.have.get(i))
                .map(|i| u64::from(g.piece_len(i as u32)))
                .sum();
        }
        let last = g.piece_count - 1;
        let full = self.have.count() as u64 * g.piece_length as u64;
        if self.have.get(last as usize) {
            full - g.piece_length as u64 + g.piece_len(last) as u64
        } else {
            full
        }
    }

    /// Whether `peer_has` holds any piece we still lack.
    pub fn is_interesting(&self, peer_has: &Bitfield) -> bool {
        if self.is_complete() {
            return false;
        }
        if peer_has.is_full() && self.wanted.is_none() {
            return true;
        }
        peer_has
            .iter_ones()
            .any(|i| !self.have.get(i) && self.is_wanted(i))
    }

    /// Sets piece `i`'s availability to `to`, keeping the histogram of
    /// missing pieces in step.
    fn set_availability(&mut self, i: usize, to: u32) {
        let Some(a) = self.availability.get_mut(i) else {
            return;
        };
        let from = std::mem::replace(a, to);
        if !self.have.get(i) {
            let bucket = |a: u32| (a as usize).min(AVAIL_BUCKETS - 1);
            let h = &mut self.avail_hist;
            h[bucket(from)] = h[bucket(from)].saturating_sub(1);
            h[bucket(to)] += 1;
        }
    }

    /// No missing piece is rarer than this.
    fn rarest_bound(&self) -> u32 {
        self.avail_hist.iter().position(|&c| c > 0).unwrap_or(0) as u32
    }

    /// A peer announced its whole bitfield.
    pub fn add_availability(&mut self, peer_has: &Bitfield) {
        for i in peer_has.iter_ones() {
            if let Some(&a) = self.availability.get(i) {
                self.set_availability(i, a.saturating_add(1));
            }
        }
    }

    /// A peer announced one piece.
    pub fn add_have(&mut self, piece: u32) {
        if let Some(&a) = self.availability.get(piece as usize) {
            self.set_availability(piece as usize, a.saturating_add(1));
        }
    }

    /// A peer left: forget its pieces and free the blocks only it had in flight.
    pub fn peer_gone(&mut self, peer: PeerKey, peer_has: &Bitfield) {
        for i in peer_has.iter_ones() {
            if let Some(&a) = self.availability.get(i) {
                self.set_availability(i, a.saturating_sub(1));
            }
        }
        self.release(peer, None);
    }

    /// Forgets `peer`'s requests (all, or just `only`): it choked us, was
    /// snubbed, or cancelled.
    pub fn release(&mut self, peer: PeerKey, only: Option<&[BlockRef]>) {
        let release_one = |p: &mut Partial, b: usize| {
            if let BlockState::Requested { by, .. } = &mut p.blocks[b] {
                by.retain(|&k| k != peer);
                if by.is_empty() {
                    p.blocks[b] = BlockState::Free;
                    p.free += 1;
                }
            }
        };
        match only {
            Some(list) => {
                for r in list {
                    if let Some(p) = self.pending.get_mut(&r.piece) {
                        let b = (r.offset / BLOCK_LEN) as usize;
                        if b < p.blocks.len() {
                            release_one(p, b);
                            if p.free > 0 {
                                self.open.insert(r.piece);
                            }
                        }
                    }
                }
            }
            None => {
                for (&piece, p) in self.pending.iter_mut() {
                    for b in 0..p.blocks.len() {
                        release_one(p, b);
                    }
                    if p.free > 0 {
                        self.open.insert(piece);
                    }
                }
            }
        }
    }

    /// Up to `want` new block requests for `peer`, which has `peer_has` and
    /// already has `in_flight` requests outstanding (never duplicated to it).
    pub fn pick(
        &mut self,
        peer: PeerKey,
        peer_has: &Bitfield,
        want: usize,
        in_flight: &[BlockRef],
        now: Instant,
    ) -> Vec<BlockRef> {
        let mut out = Vec::with_capacity(want);
        if want == 0 || self.is_complete() {
            return out;
        }
        // 1. Free blocks of pieces already started.
        let mut started: Vec<u32> = self
            .open
            .iter()
            .copied()
            .filter(|&p| peer_has.get(p as usize))
            .collect();
        // In index order already (sequential mode's order).
        if self.sequential.is_none() {
            // Ties by index: the order must not depend on the map's hasher (the
            // swarm simulator replays a seed exactly).
            started.sort_unstable_by_key(|p| (std::cmp::Reverse(self.pending[p].received), *p));
        }
        for piece in started {
            self.take_free(peer, piece, want, now, &mut out);
            if out.len() >= want {
                return out;
            }
        }
        // 2. New pieces, rarest first, within the budget (which grows
        // when it is what starves this peer).
        while out.len() < want {
            // Pieces waiting for their leaves hold no hasher or disk.
            let verifying = self.verifying.count().saturating_sub(self.blaming.len());
            if verifying >= self.max_verifying {
                break;
            }
            if self.pending.len() + verifying >= self.max_pending {
                let grown = grown_budget(
                    self.max_pending,
                    self.cap_pending,
                    in_flight.len() + out.len(),
                    (in_flight.len() + want) as u64 * u64::from(BLOCK_LEN),
                    u64::from(self.geometry.piece_length),
                    verifying,
                );
                if grown == self.max_pending {
                    break;
                }
                self.max_pending = grown;
            }
            let Some(piece) = self.choose_new_piece(peer_has) else {
                break;
            };
            self.start_piece(piece);
            self.take_free(peer, piece, want, now, &mut out);
        }
        if out.len() >= want {
            return out;
        }
        // 3. Endgame (nothing free left anywhere we can get) or stale requests:
        // duplicate blocks others have in flight, least-duplicated first.
        let endgame = self.all_missing_started();
        if !endgame && self.stale_due.is_none_or(|due| now < due) {
            return out;
        }
        let mut candidates: Vec<(usize, BlockRef)> = Vec::new();
        let mut oldest: Option<Instant> = None;
        for (&piece, p) in &self.pending {
            let has = peer_has.get(piece as usize);
            for (b, st) in p.blocks.iter().enumerate() {
                if let BlockState::Requested { by, at } = st {
                    oldest = Some(oldest.map_or(*at, |o| o.min(*at)));
                    let stale = now.saturating_duration_since(*at) >= REQUEST_TIMEOUT;
                    if has && (endgame || stale) && !by.contains(&peer) {
                        let r = self.block_ref(piece, b as u32);
                        if !in_flight.contains(&r) && !out.contains(&r) {
                            candidates.push((by.len(), r));
                        }
                    }
                }
            }
        }
        self.stale_due = oldest.map(|at| at + REQUEST_TIMEOUT);
        candidates.sort_unstable_by_key(|(n, r)| (*n, r.piece, r.offset));
        for (_, r) in candidates.into_iter().take(want - out.len()) {
            if let Some(p) = self.pending.get_mut(&r.piece)
                && let BlockState::Requested { by, .. } =
                    &mut p.blocks[(r.offset / BLOCK_LEN) as usize]
            {
                by.push(peer);
            }
            out.push(r);
        }
        out
    }

    fn all_missing_started(&self) -> bool {
        let missing = match &self.wanted {
            // Only wanted pieces are ever started, so all verifying ones are.
            Some((_, m)) => m.saturating_sub(self.verifying.count()),
            None => self.geometry.piece_count as usize - self.have.count() - self.verifying.count(),
        };
        self.pending.len() >= missing && self.open.is_empty()
    }

    fn block_ref(&self, piece: u32, b: u32) -> BlockRef {
        BlockRef {
            piece,
            offset: b * BLOCK_LEN,
            len: self.geometry.block_len(piece, b),
        }
    }

    fn take_free(
        &mut self,
        peer: PeerKey,
        piece: u32,
        want: usize,
        now: Instant,
        out: &mut Vec<BlockRef>,
    ) {
        let g = self.geometry;
        let Some(p) = self.pending.get_mut(&piece) else {
            return;
        };
        let before = out.len();
        for (b, st) in p.blocks.iter_mut().enumerate() {
            if out.len() >= want || p.free == 0 {
                break;
            }
            if matches!(st, BlockState::Free) {
                *st = BlockState::Requested {
                    by: vec![peer],
                    at: now,
                };
                p.free -= 1;
                out.push(BlockRef {
                    piece,
                    offset: b as u32 * BLOCK_LEN,
                    len: g.block_len(piece, b as u32),
                });
            }
        }
        if p.free == 0 {
            self.open.remove(&piece);
        }
        if out.len() > before {
            let due = now + REQUEST_TIMEOUT;
            self.stale_due = Some(self.stale_due.map_or(due, |d| d.min(due)));
        }
    }

    fn choose_new_piece(&mut self, peer_has: &Bitfield) -> Option<u32> {
        let n = self.geometry.piece_count as usize;
        let eligible = |i: usize, s: &Self| {
            s.is_wanted(i)
                && peer_has.get(i)
                && !s.have.get(i)
                && !s.verifying.get(i)
                && !s.pending.contains_key(&(i as u32))
        };
        if let Some(first) = &self.sequential {
            let (mut a, mut b) = self.seq_cursor;
            while first.get(a).is_some_and(|&p| self.have.get(p as usize)) {
                a += 1;
            }
            while b < n && self.have.get(b) {
                b += 1;
            }
            let found = first
                .iter()
                .skip(a)
                .map(|&p| p as usize)
                .chain(b..n)
                .find(|&i| eligible(i, self))
                .map(|i| i as u32);
            self.seq_cursor = (a, b);
            return found;
        }
        let random = self.rng.random_range(0..n);
        if self.have.count() < RANDOM_FIRST_PIECES {
            let found = (0..n)
                .map(|k| (random + k) % n)
                .find(|&i| eligible(i, self));
            self.last_started = found;
            return found.map(|i| i as u32);
        }
        // Ties go to the piece after the last one started (random at
        // first): no piece the peer has is rarer than `floor`, so the
        // first that rare ends the scan.
        let start = self.last_started.map_or(random, |l| (l + 1) % n);
        let floor = self.rarest_bound().max(1);
        let mut best: Option<(u32, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if eligible(i, self) {
                let a = self.availability[i];
                if best.is_none_or(|(ba, _)| a < ba) {
                    best = Some((a, i));
                    if a <= floor {
                        break;
                    }
                }
            }
        }
        self.last_started = best.map(|(_, i)| i);
        best.map(|(_, i)| i as u32)
    }

    fn start_piece(&mut self, piece: u32) {
        let blocks = self.geometry.block_count(piece);
        if blocks > 0 {
            self.open.insert(piece);
        }
        self.pending.insert(
            piece,
            Partial {
                blocks: vec![BlockState::Free; blocks as usize],
                received: 0,
                free: blocks,
                buf: Vec::new(),
                contributors: Vec::new(),
                senders: vec![0; self.geometry.block_count(piece) as usize],
            },
        );
    }

    /// A block arrived from `peer`.
    pub fn on_block(
        &mut self,
        peer: PeerKey,
        piece: u32,
        offset: u32,
        data: &[u8],
    ) -> BlockOutcome {
        let g = self.geometry;
        let Some(p) = self.pending.get_mut(&piece) else {
            return BlockOutcome::Unwanted;
        };
        if !offset.is_multiple_of(BLOCK_LEN) {
            return BlockOutcome::Unwanted;
        }
        let b = (offset / BLOCK_LEN) as usize;
        if b >= p.blocks.len() || data.len() != g.block_len(piece, b as u32) as usize {
            return BlockOutcome::Unwanted;
        }
        let cancel = match std::mem::replace(&mut p.blocks[b], BlockState::Received) {
            BlockState::Received => return BlockOutcome::Unwanted,
            BlockState::Free => {
                p.free -= 1;
                if p.free == 0 {
                    self.open.remove(&piece);
                }
                Vec::new()
            }
            BlockState::Requested { by, .. } => by.into_iter().filter(|&k| k != peer).collect(),
        };
        if p.buf.is_empty() {
            // The buffer is taken when the first block arrives, not when the
            // piece is requested: a deep pipeline then costs requests, not
            // memory, and only pieces with data in them hold a buffer.
            let len = g.piece_len(piece) as usize;
            p.buf = match self.pool.pop() {
                Some(mut buf) => {
                    buf.resize(len, 0);
                    buf
                }
                // Zeroed by the allocator: fresh pages stay untouched (and
                // out of the resident set) until blocks are written in.
                None => vec![0; len],
            };
        }
        p.buf[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        p.received += 1;
        if let Some(s) = p.senders.get_mut(b) {
            *s = peer;
        }
        if !p.contributors.contains(&peer) {
            p.contributors.push(peer);
        }
        if p.received as usize == p.blocks.len()
            && let Some(p) = self.pending.remove(&piece)
        {
            self.verifying.set(piece as usize);
            BlockOutcome::Complete {
                piece,
                data: p.buf,
                contributors: p.contributors,
                senders: p.senders,
                cancel,
            }
        } else {
            BlockOutcome::Stored { cancel }
        }
    }

    /// The piece hashed correctly and is on disk.
    pub fn piece_verified(&mut self, piece: u32) {
        self.verifying.clear(piece as usize);
        self.blaming.remove(&piece);
        let new = self.have.set(piece as usize);
        if new && let Some(&a) = self.availability.get(piece as usize) {
            let h = &mut self.avail_hist[(a as usize).min(AVAIL_BUCKETS - 1)];
            *h = h.saturating_sub(1);
        }
        if let Some((w, missing)) = &mut self.wanted
            && new
            && w.get(piece as usize)
        {
            *missing = missing.saturating_sub(1);
        }
    }

    /// The piece failed its hash: it will be picked again.
    pub fn piece_failed(&mut self, piece: u32) {
        self.verifying.clear(piece as usize);
        self.blaming.remove(&piece);
    }

    /// The piece failed and waits for its leaf hashes (v2 block-level
    /// blame) before [`Picker::refetch_blocks`] or
    /// [`Picker::piece_failed`]: it stays out of every pick, but no
    /// longer counts against the budget, so a slow answer does not stall
    /// new pieces.
    pub fn piece_awaits_hashes(&mut self, piece: u32) {
        if self.verifying.get(piece as usize) {
            self.blaming.insert(piece);
        }
    }

    /// The piece failed its hash and the blocks `bad` were found to be
    /// the bad ones (v2 block-level blame): it goes back to being
    /// assembled in `buf`, its other blocks kept as received (with their
    /// senders, who become its contributors), only the bad ones fetched
    /// again. Anything inconsistent (no bad block in range, a wrong-sized
    /// buffer, a piece not being verified) makes it a plain
    /// [`Picker::piece_failed`], and `buf` is recycled.
    pub fn refetch_blocks(&mut self, piece: u32, buf: Vec<u8>, senders: &[PeerKey], bad: &[u32]) {
        let n = self.geometry.block_count(piece) as usize;
        let mut bad: Vec<usize> = bad.iter().map(|&b| b as usize).filter(|&b| b < n).collect();
        bad.sort_unstable();
        bad.dedup();
        let fits = self.verifying.get(piece as usize)
            && !self.pending.contains_key(&piece)
            && buf.len() == self.geometry.piece_len(piece) as usize
            && senders.len() == n
            && !bad.is_empty();
        self.verifying.clear(piece as usize);
        self.blaming.remove(&piece);
        if !fits {
            self.recycle(buf);
            return;
        }
        let mut blocks = vec![BlockState::Received; n];
        let mut senders = senders.to_vec();
        for &b in &bad {
            blocks[b] = BlockState::Free;
            senders[b] = 0;
        }
        let mut contributors: Vec<PeerKey> = Vec::new();
        for &k in &senders {
            if k != 0 && !contributors.contains(&k) {
                contributors.push(k);
            }
        }
        let received = blocks
            .iter()
            .filter(|b| matches!(b, BlockState::Received))
            .count() as u32;
        self.open.insert(piece);
        self.pending.insert(
            piece,
            Partial {
                blocks,
                received,
                free: bad.len() as u32,
                buf,
                contributors,
                senders,
            },
        );
    }

    /// Returns a piece buffer for reuse, sparing an allocation per piece.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < self.max_pending {
            self.pool.push(buf);
        }
    }

    /// Number of pieces being assembled.
    pub fn pending_pieces(&self) -> usize {
        self.pending.len()
    }

    /// Pieces that may be assembled or verified at once now.
    pub fn pending_budget(&self) -> usize {
        self.max_pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_for(g: &Geometry, r: &BlockRef) -> Vec<u8> {
        assert!(g.contains(r.piece, r.offset, r.len));
        vec![r.piece as u8; r.len as usize]
    }

    #[test]
    fn downloads_everything_exactly_once_from_one_peer() {
        let g = Geometry::new(10 * 32768 + 100, 32768);
        let mut p = Picker::new(g, Bitfield::new(g.piece_count as usize), 1);
        let all = Bitfield::full(g.piece_count as usize);
        p.add_availability(&all);
        let now = Instant::now();
        let mut seen = std::collections::HashSet::new();
        let mut done = Vec::new();
        loop {
            let reqs = p.pick(1, &all, 7, &[], now);
            if reqs.is_empty() {
                break;
            }
            for r in reqs {
                assert!(seen.insert(r), "duplicate request {r:?}");
                if let BlockOutcome::Complete { piece, data, .. } =
                    p.on_block(1, r.piece, r.offset, &data_for(&g, &r))
                {
                    assert_eq!(data.len(), g.piece_len(piece) as usize);
                    assert!(data.iter().all(|&b| b == piece as u8));
                    p.piece_verified(piece);
                    p.recycle(data);
                    done.push(piece);
                }
            }
        }
        assert!(p.is_complete());
        assert_eq!(done.len(), g.piece_count as usize);
        assert_eq!(p.bytes_have(), g.total_length);
        let blocks: u32 = (0..g.piece_count).map(|i| g.block_count(i)).sum();
        assert_eq!(seen.len() as u32, blocks);
    }

    #[test]
    fn rarest_first_after_random_start() {
        let g = Geometry::new(10 * 16384, 16384);
        let mut have = Bitfield::new(10);
        for i in 0..4 {
            have.set(i);
        }
        let mut p = Picker::new(g, have, 7);
        let all = Bitfield::full(10);
        p.add_availability(&all);
        p.add_availability(&all);
        // Piece 8 is only on one peer: it is the rarest.
        let mut only8 = Bitfield::new(10);
        only8.set(8);
        for i in 0..10 {
            if i != 8 {
                p.add_have(i);
            }
        }
        let r = p.pick(1, &all, 1, &[], Instant::now());
        assert_eq!(r[0].piece, 8);
        let _ = only8;
    }

    #[test]
    fn sequential_takes_file_ends_first_then_index_order() {
        let g = Geometry::new(10 * 16384, 16384);
        let mut p = Picker::new(g, Bitfield::new(10), 7);
        p.set_sequential(vec![0, 9, 0, 4]);
        let mut has = Bitfield::full(10);
        has.clear(1);
        let all = Bitfield::full(10);
        p.add_availability(&all);
        let t = Instant::now();
        // One block per piece: the order pieces are started in.
        let order: Vec<u32> = (0..9)
            .map(|_| p.pick(1, &has, 1, &[], t)[0].piece)
            .collect();
        assert_eq!(order, vec![0, 9, 4, 2, 3, 5, 6, 7, 8]);
        // Piece 1 comes from a peer that has it.
        assert_eq!(p.pick(2, &all, 1, &[], t)[0].piece, 1);
    }

    #[test]
    fn selection_fetches_only_wanted_pieces_and_completes_on_them() {
        let g = Geometry::new(6 * 16384, 16384);
        let mut have = Bitfield::new(6);
        have.set(5);
        let mut p = Picker::new(g, have, 3);
        let mut wanted = Bitfield::new(6);
        for i in [1, 2, 5] {
            wanted.set(i);
        }
        p.set_wanted(wanted);
        assert_eq!(p.bytes_wanted(), 3 * 16384);
        let all = Bitfield::full(6);
        let mut only0 = Bitfield::new(6);
        only0.set(0);
        assert!(p.is_interesting(&all));
        assert!(!p.is_interesting(&only0), "piece 0 is not wanted");
        let t = Instant::now();
        let mut got = Vec::new();
        loop {
            let r = p.pick(1, &all, 1, &[], t);
            let Some(b) = r.first() else { break };
            got.push(b.piece);
            let data = data_for(&g, b);
            if let BlockOutcome::Complete { piece, .. } = p.on_block(1, b.piece, b.offset, &data) {
                p.piece_verified(piece);
            }
        }
        got.sort();
        assert_eq!(got, vec![1, 2]);
        assert!(p.is_complete());
        assert!(!p.is_interesting(&all));
    }

    #[test]
    fn only_picks_what_the_peer_has() {
        let g = Geometry::new(4 * 16384, 16384);
        let mut p = Picker::new(g, Bitfield::new(4), 3);
        let mut two = Bitfield::new(4);
        two.set(2);
        p.add_availability(&two);
        let r = p.pick(1, &two, 10, &[], Instant::now());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].piece, 2);
        assert!(
            p.pick(1, &Bitfield::new(4), 10, &[], Instant::now())
                .is_empty()
        );
    }

    #[test]
    fn endgame_duplicates_and_cancels() {
        let g = Geometry::new(2 * 16384, 16384);
        let mut p = Picker::new(g, Bitfield::new(2), 5);
        let all = Bitfield::full(2);
        let now = Instant::now();
        let a = p.pick(1, &all, 10, &[], now);
        assert_eq!(a.len(), 2);
        // Peer 2 arrives when everything is requested: endgame duplicates.
        let b = p.pick(2, &all, 10, &[], now);
        assert_eq!(b.len(), 2);
        // Peer 1 delivers piece a[0]: peer 2 must be told to cancel.
        match p.on_block(1, a[0].piece, 0, &data_for(&g, &a[0])) {
            BlockOutcome::Complete {
                cancel,
                contributors,
                ..
            } => {
                assert_eq!(cancel, vec![2]);
                assert_eq!(contributors, vec![1]);
            }
            o => panic!("{o:?}"),
        }
        // Peer 2's copy of the same block is now unwanted.
        assert_eq!(
            p.on_block(2, a[0].piece, 0, &data_for(&g, &a[0])),
            BlockOutcome::Unwanted
        );
    }

    #[test]
    fn released_blocks_go_to_others_and_stale_ones_are_duplicated() {
        let g = Geometry::new(8 * 16384, 16384);
        let mut p = Picker::new(g, Bitfield::new(8), 9);
        let mut one = Bitfield::new(8);
        one.set(0);
        let t0 = Instant::now();
        let a = p.pick(1, &one, 5, &[], t0);
        assert_eq!(a.len(), 1);
        assert!(p.pick(2, &one, 5, &[], t0).is_empty() || p.all_missing_started());
        p.release(1, None);
        let b = p.pick(2, &one, 5, &[], t0);
        assert_eq!(b, a);
        // Peer 3 may duplicate it once the request is stale.
        let c = p.pick(3, &one, 5, &[], t0 + REQUEST_TIMEOUT);
        assert_eq!(c, a);
    }

    #[test]
    fn pieces_awaiting_verification_count_against_the_memory_budget() {
        // 64 pieces of 4 MiB: the budget starts at 2 pieces (may grow to 8).
        let g = Geometry::new(64 * 4 * 1024 * 1024, 4 * 1024 * 1024);
        let mut p = Picker::new(g, Bitfield::new(64), 11);
        let all = Bitfield::full(64);
        let now = Instant::now();
        let mut completed = Vec::new();
        // One peer fetches whole pieces; nothing is ever verified, so the
        // disk is behind and the budget does not grow.
        loop {
            let reqs = p.pick(1, &all, 256, &[], now);
            if reqs.is_empty() {
                break;
            }
            for r in reqs {
                if let BlockOutcome::Complete { piece, .. } =
                    p.on_block(1, r.piece, r.offset, &data_for(&g, &r))
                {
                    completed.push(piece);
                }
            }
        }
        assert_eq!(completed.len(), 2);
        assert_eq!(p.pending_budget(), 2);
        assert!(p.pick(1, &all, 10, &[], now).is_empty());
        // Verification frees room for one more piece.
        p.piece_verified(completed[0]);
        assert!(!p.pick(1, &all, 10, &[], now).is_empty());
    }

    #[test]
    fn a_piece_awaiting_its_leaf_hashes_does_not_hold_the_budget_nor_get_picked() {
        // As above: two whole pieces wait, nothing more starts.
        let g = Geometry::new(8 * 4 * 1024 * 1024, 4 * 1024 * 1024);
        let mut p = Picker::new(g, Bitfield::new(8), 11);
        let all = Bitfield::full(8);
        let now = Instant::now();
        let mut completed = Vec::new();
        loop {
            let reqs = p.pick(1, &all, 256, &[], now);
            if reqs.is_empty() {
                break;
            }
            for r in reqs {
                if let BlockOutcome::Complete { piece, .. } =
                    p.on_block(1, r.piece, r.offset, &data_for(&g, &r))
                {
                    completed.push(piece);
                }
            }
        }
        assert_eq!(completed.len(), 2);
        assert!(p.pick(1, &all, 10, &[], now).is_empty());
        // One failed and waits for its leaves: a new piece starts, never it.
        p.piece_awaits_hashes(completed[0]);
        let more = p.pick(1, &all, 10, &[], now);
        assert!(!more.is_empty());
        assert!(more.iter().all(|r| !completed.contains(&r.piece)));
        // A plain failure ends the wait: it is picked again.
        p.piece_failed(completed[0]);
        assert!(p.blaming.is_empty());
    }

    #[test]
    fn regression_a_grown_budget_holds_no_more_pieces_awaiting_the_disk_than_it_started_with() {
        // 64 pieces of 1 MiB: the budget starts at 4 pieces. A deep
        // pipeline grew it to 12, and the disk stops keeping up: pieces
        // that completed wait for their hash and write. No new piece starts
        // once 4 wait (a 2 GiB download peaked at 8 whole pieces waiting,
        // 24 MiB RSS, where 4 kept its speed).
        let g = Geometry::new(64 << 20, 1 << 20);
        let mut p = Picker::new(g, Bitfield::new(64), 13);
        let all = Bitfield::full(64);
        let now = Instant::now();
        p.max_pending = 12;
        let mut waiting = 0;
        loop {
            let reqs = p.pick(1, &all, 64, &[], now);
            if reqs.is_empty() {
                break;
            }
            for r in reqs {
                if let BlockOutcome::Complete { .. } =
                    p.on_block(1, r.piece, r.offset, &data_for(&g, &r))
                {
                    waiting += 1;
                }
            }
        }
        assert_eq!(waiting, 4);
        assert_eq!(p.pending_pieces(), 0);
    }

    #[test]
    fn regression_a_requested_piece_holds_no_buffer_until_a_block_arrives() {
        // A deep pipeline starts many pieces; only those with data in them
        // take memory.
        let g = Geometry::new(64 << 20, 1 << 20);
        let mut p = Picker::new(g, Bitfield::new(64), 14);
        let all = Bitfield::full(64);
        let reqs = p.pick(1, &all, 256, &[], Instant::now());
        assert_eq!(p.pending_pieces(), 4);
        assert!(p.pending.values().all(|x| x.buf.capacity() == 0));
        let r = reqs[0];
        p.on_block(1, r.piece, r.offset, &data_for(&g, &r));
        let with_data: Vec<u32> = p
            .pending
            .iter()
            .filter(|(_, x)| x.buf.capacity() > 0)
            .map(|(&i, _)| i)
            .collect();
        assert_eq!(with_data, vec![r.piece]);
    }

    #[test]
    fn budget_grows_when_it_starves_a_peer_and_stops_at_the_cap() {
        // 64 pieces of 4 MiB (256 blocks each): budget 2, cap 8.
        let g = Geometry::new(64 * 4 * 1024 * 1024, 4 * 1024 * 1024);
        let mut p = Picker::new(g, Bitfield::new(64), 12);
        let all = Bitfield::full(64);
        let now = Instant::now();
        let first = p.pick(1, &all, 512, &[], now);
        assert_eq!(first.len(), 512);
        assert_eq!(p.pending_pieces(), 2);
        // A peer that wants more than the started pieces hold is starved:
        // the budget grows by one piece.
        let reqs = p.pick(3, &all, 10, &[], now);
        assert_eq!(p.pending_budget(), 3);
        assert_eq!(p.pending_pieces(), 3);
        assert!(reqs.iter().all(|r| !first.contains(r)));
        // Growth stops at the cap, 32 MiB worth.
        for k in 4..40 {
            p.pick(k, &all, 256, &[], now);
        }
        assert_eq!(p.pending_budget(), 8);
        assert_eq!(p.pending_pieces(), 8);
    }

    #[test]
    fn budget_start_and_cap_by_piece_length() {
        assert_eq!(pending_budget(16 * 1024), (256, 2048));
        assert_eq!(pending_budget(1 << 20), (4, 32));
        assert_eq!(pending_budget(2 << 20), (2, 16));
        assert_eq!(pending_budget(16 << 20), (2, 2));
        assert_eq!(pending_budget(64 << 20), (1, 1));
        // Grows when the pipe is shallow, or wants more than the budget
        // less a piece holds, and the disk keeps up; never past the cap.
        const MB: u64 = 1 << 20;
        assert_eq!(grown_budget(2, 16, 0, MB, MB, 0), 3);
        assert_eq!(grown_budget(2, 16, 31, MB, MB, 1), 3);
        assert_eq!(grown_budget(2, 16, 32, MB, MB, 0), 2);
        assert_eq!(grown_budget(4, 16, 500, 4 * MB + 1, MB, 0), 5);
        assert_eq!(grown_budget(4, 16, 500, 4 * MB, MB, 0), 4);
        assert_eq!(grown_budget(2, 16, 0, MB, MB, 2), 2);
        assert_eq!(grown_budget(16, 16, 0, MB, MB, 0), 16);
    }

    #[test]
    fn rarest_first_takes_the_rarest_piece_the_peer_has_whatever_the_scan_start() {
        // Availabilities from 1 to 5 at random; the scan may stop early at
        // the rarest bound, but must still find a piece as rare as any.
        let n = 500;
        let g = Geometry::new(n as u64 * 16384, 16384);
        let mut rng = SmallRng::seed_from_u64(99);
        let mut have = Bitfield::new(n);
        for i in 0..n {
            if rng.random_range(0..4) == 0 {
                have.set(i);
            }
        }
        let mut p = Picker::new(g, have.clone(), 5);
        for _ in 0..5 {
            let mut bf = Bitfield::new(n);
            for i in 0..n {
                if rng.random_range(0..3) > 0 {
                    bf.set(i);
                }
            }
            p.add_availability(&bf);
        }
        let mut peer = Bitfield::new(n);
        for i in 0..n {
            if rng.random_range(0..2) == 0 {
                peer.set(i);
            }
        }
        p.add_availability(&peer);
        let now = Instant::now();
        for _ in 0..40 {
            let eligible: Vec<usize> = (0..n)
                .filter(|&i| peer.get(i) && !p.have.get(i) && !p.pending.contains_key(&(i as u32)))
                .collect();
            let rarest = eligible.iter().map(|&i| p.availability[i]).min().unwrap();
            let r = p.pick(1, &peer, 1, &[], now);
            assert_eq!(p.availability[r[0].piece as usize], rarest);
            let BlockOutcome::Complete { piece, .. } =
                p.on_block(1, r[0].piece, 0, &data_for(&g, &r[0]))
            else {
                panic!("one-block pieces complete at once")
            };
            p.piece_verified(piece);
        }
    }

    #[test]
    fn among_equally_rare_pieces_the_next_one_follows_the_last() {
        // Two seeds: every piece equally rare. After the random start,
        // pieces come in index order (runs on disk), wrapping at the end.
        let n = 64;
        let g = Geometry::new(n as u64 * 16384, 16384);
        let mut p = Picker::new(g, Bitfield::new(n), 21);
        let all = Bitfield::full(n);
        p.add_availability(&all);
        p.add_availability(&all);
        let now = Instant::now();
        let mut order = Vec::new();
        while let Some(r) = p.pick(1, &all, 1, &[], now).first().copied() {
            if let BlockOutcome::Complete { piece, .. } =
                p.on_block(1, r.piece, 0, &data_for(&g, &r))
            {
                p.piece_verified(piece);
                order.push(piece);
            }
        }
        assert_eq!(order.len(), n);
        let next = |a: u32, b: u32| b == (a + 1) % n as u32;
        let follows = order.windows(2).filter(|w| next(w[0], w[1])).count();
        // Only the random first pieces (and the jumps past them) break runs.
        assert!(follows >= n - 2 * RANDOM_FIRST_PIECES - 2, "{order:?}");
        // A rarer piece still comes first.
        let mut p = Picker::new(g, Bitfield::new(n), 21);
        p.add_availability(&all);
        p.add_availability(&all);
        for i in 0..n {
            if i != 40 {
                p.add_have(i as u32);
            }
        }
        for _ in 0..RANDOM_FIRST_PIECES {
            let r = p.pick(1, &all, 1, &[], now)[0];
            p.on_block(1, r.piece, 0, &data_for(&g, &r));
            p.piece_verified(r.piece);
        }
        if !p.have.get(40) {
            assert_eq!(p.pick(1, &all, 1, &[], now)[0].piece, 40);
        }
    }

    #[test]
    fn a_stale_request_is_duplicated_while_newer_ones_are_not() {
        let g = Geometry::new(8 * 16384, 16384);
        let mut p = Picker::new(g, Bitfield::new(8), 9);
        let all = Bitfield::full(8);
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let x = p.pick(1, &all, 1, &[], t0)[0];
        let y = p.pick(1, &all, 1, &[], t0 + 10 * sec)[0];
        // Budget full of requested pieces: nothing new for peer 2.
        p.max_pending = 2;
        p.cap_pending = 2;
        assert!(p.pick(2, &all, 4, &[], t0 + 20 * sec).is_empty());
        assert_eq!(p.pick(2, &all, 4, &[], t0 + 31 * sec), vec![x]);
        // Peer 3 at 41 s: both are stale now.
        let mut got = p.pick(3, &all, 4, &[], t0 + 41 * sec);
        got.sort_unstable_by_key(|r| r.piece);
        let mut want = vec![x, y];
        want.sort_unstable_by_key(|r| r.piece);
        assert_eq!(got, want);
        // A block released by all its requesters is free again, at once.
        p.on_block(1, x.piece, 0, &data_for(&g, &x));
        p.release(1, None);
        p.release(3, None);
        assert_eq!(p.pick(4, &all, 4, &[], t0 + 42 * sec), vec![y]);
        assert!(p.open.is_empty());
    }

    #[test]
    fn failed_piece_is_fetched_again() {
        let g = Geometry::new(16384, 16384);
        let mut p = Picker::new(g, Bitfield::new(1), 2);
        let all = Bitfield::full(1);
        let r = p.pick(1, &all, 5, &[], Instant::now());
        let BlockOutcome::Complete { piece, .. } = p.on_block(1, 0, 0, &data_for(&g, &r[0])) else {
            panic!()
        };
        assert!(p.pick(2, &all, 5, &[], Instant::now()).is_empty());
        p.piece_failed(piece);
        assert_eq!(p.pick(2, &all, 5, &[], Instant::now()), r);
    }

    #[test]
    fn rejects_wrong_sizes_and_offsets() {
        let g = Geometry::new(2 * 16384, 32768);
        let mut p = Picker::new(g, Bitfield::new(1), 2);
        let all = Bitfield::full(1);
        p.pick(1, &all, 1, &[], Instant::now());
        assert_eq!(p.on_block(1, 0, 1, &[0; 16384]), BlockOutcome::Unwanted);
        assert_eq!(p.on_block(1, 0, 0, &[0; 100]), BlockOutcome::Unwanted);
        assert_eq!(p.on_block(1, 5, 0, &[0; 16384]), BlockOutcome::Unwanted);
        assert!(matches!(
            p.on_block(1, 0, 16384, &[0; 16384]),
            BlockOutcome::Stored { .. }
        ));
    }

    #[test]
    fn a_blamed_piece_is_fetched_again_only_in_its_bad_blocks() {
        let g = Geometry::new(2 * 4 * 16384, 4 * 16384);
        let mut p = Picker::new(g, Bitfield::new(2), 1);
        let all = Bitfield::full(2);
        p.add_availability(&all);
        let now = Instant::now();
        let reqs = p.pick(1, &all, 4, &[], now);
        assert!(reqs.iter().all(|r| r.piece == reqs[0].piece) && reqs.len() == 4);
        let piece = reqs[0].piece;
        let mut complete = None;
        for (i, r) in reqs.iter().enumerate() {
            // Peer 1 sends blocks 0 and 1, peer 2 (the liar) 2, peer 3 block 3.
            let from = [1, 1, 2, 3][i];
            let data = vec![i as u8 + 1; 16384];
            if let BlockOutcome::Complete { data, senders, .. } =
                p.on_block(from, r.piece, r.offset, &data)
            {
                complete = Some((data, senders));
            }
        }
        let (buf, senders) = complete.unwrap();
        assert_eq!(senders, vec![1, 1, 2, 3]);
        p.refetch_blocks(piece, buf, &senders, &[2]);
        assert_eq!(p.pending_pieces(), 1);
        // Only block 2 is asked again, before any new piece.
        let again = p.pick(4, &all, 1, &[], now);
        assert_eq!(
            again,
            vec![BlockRef {
                piece,
                offset: 2 * 16384,
                len: 16384
            }]
        );
        match p.on_block(4, piece, 2 * 16384, &[9; 16384]) {
            BlockOutcome::Complete {
                data,
                contributors,
                senders,
                ..
            } => {
                assert_eq!(&data[..16384], &[1; 16384][..], "kept");
                assert_eq!(&data[2 * 16384..3 * 16384], &[9; 16384][..]);
                assert_eq!(&data[3 * 16384..], &[4; 16384][..]);
                assert_eq!(senders, vec![1, 1, 4, 3]);
                assert_eq!(contributors, vec![1, 3, 4]);
            }
            other => panic!("{other:?}"),
        }
        // Not being verified (or no bad block): a plain failure.
        p.piece_verified(piece);
        p.refetch_blocks(piece, vec![0; 4 * 16384], &[1; 4], &[1]);
        p.refetch_blocks(1 - piece, vec![0; 4 * 16384], &[1; 4], &[]);
        assert_eq!(p.pending_pieces(), 0);
    }
}
