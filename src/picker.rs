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
mod tests;
