//! Block-level blame for a v2 piece that failed its hash check: which of
//! its 16 KiB blocks are bad, and who sent them. Pure: no sockets, no
//! clocks (instants come in), no torrent state.
//!
//! The piece layer proves a piece's root only. To say which block is bad
//! we need the piece's leaves (the SHA-256 of each block): a piece of one
//! data block needs none (its check says it all); otherwise they are asked
//! from a v2 peer with a BEP 52 hash request for the piece's leaves
//! ([`leaf_request`]), and trusted only once they hash up to the piece's
//! layer entry ([`check_leaves`]). Each block whose SHA-256 differs from
//! its leaf (or whose padding is not zeros) is bad ([`blame`]): its sender
//! sent bad data, for certain, and only the bad blocks need fetching again.
//!
//! [`LeafAsks`] tracks the pieces waiting for their leaves: whom to ask
//! (a peer that has the piece, one that did not send any of it first), a
//! timeout per request ([`ASK_TIMEOUT`]) and a deadline after which the
//! piece is given up on ([`GIVE_UP`], or [`GIVE_UP_UNASKED`] while no peer
//! is being asked), and the caller falls back to a whole-piece re-fetch.

use super::hashes::{HashRequest, TreeShape};
use crate::merkle::{self, BLOCK, Hash};
use crate::picker::PeerKey;
use std::time::{Duration, Instant};

/// A request for leaves unanswered this long goes to another peer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// A piece waiting this long for its leaves is fetched again whole.
pub const GIVE_UP: Duration = Duration::from_secs(30);
/// The same when no peer is being asked for them (no v2 peer has the
/// piece, or every one asked refused).
pub const GIVE_UP_UNASKED: Duration = Duration::from_secs(5);
/// Peers that sent blocks of the piece are asked only after this long,
/// so one that did not is asked first (a liar could answer with the true
/// leaves, but it gains nothing by it; a peer that did not touch the piece
/// is simply the likelier to have it whole).
pub const PREFER_OTHERS: Duration = Duration::from_secs(2);
/// Pieces waiting for their leaves at most; more fall back at once.
pub const MAX_WAITING: usize = 16;

/// Where a piece lies in its file's merkle tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceSpot {
    /// The file's `pieces root`.
    pub root: Hash,
    /// The file's length in bytes.
    pub file_len: u64,
    /// The piece's index in the file.
    pub index: u32,
}

/// The request for the leaves of the piece at `spot` (pieces of
/// `piece_length`): base layer 0, from the piece's first leaf, one node
/// per leaf under the piece (fewer for a file shorter than a piece: its
/// padded leaf row), no uncles (the nodes hash up to the piece's layer
/// entry, which we have). `None` when the piece has one leaf (nothing to
/// ask) or does not fit its file.
pub fn leaf_request(spot: &PieceSpot, piece_length: u32) -> Option<HashRequest> {
    let shape = TreeShape::of_file(spot.file_len)?;
    let per_piece = merkle::blocks_per_piece(piece_length) as u64;
    let length = per_piece.min(shape.leaves);
    let index = u64::from(spot.index).checked_mul(per_piece)?;
    if length < 2 || index + length > shape.leaves {
        return None;
    }
    let r = HashRequest {
        pieces_root: spot.root,
        base_layer: 0,
        index: u32::try_from(index).ok()?,
        length: u32::try_from(length).ok()?,
        proof_layers: 0,
    };
    (r.check().is_ok() && shape.fits(&r)).then_some(r)
}

/// The leaves of an answer to `req` (nodes first, uncles ignored), if
/// they hash up to `piece_hash`, the piece's layer entry (the file's root
/// for a file of one piece or less).
pub fn check_leaves(req: &HashRequest, hashes: &[Hash], piece_hash: &Hash) -> Option<Vec<Hash>> {
    let n = req.length as usize;
    let nodes = hashes.get(..n)?;
    (merkle::root_of_row(nodes, n, merkle::ZERO)? == *piece_hash).then(|| nodes.to_vec())
}

/// The leaf a piece of one data block should have, from the piece's own
/// check: its `hash` (the file's root when `whole_file`, else the root of
/// the block padded with zero leaves to `piece_length`) and the block
/// `data` received. When `data` matches, its own leaf; when it does not,
/// [`merkle::ZERO`], which no block hashes to.
pub fn one_leaf(hash: &Hash, whole_file: bool, piece_length: u32, data: &[u8]) -> Hash {
    let got = merkle::leaf(data);
    let matches = if whole_file {
        got == *hash
    } else {
        merkle::piece_hash(data, piece_length) == *hash
    };
    if matches { got } else { merkle::ZERO }
}

/// Which blocks of a failed piece are bad, and who sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Bad blocks, by index in the piece, ascending.
    pub bad: Vec<u32>,
    /// Their senders, each once, in block order (a block nobody sent,
    /// sender 0, blames nobody).
    pub liars: Vec<PeerKey>,
}

/// Compares each 16 KiB block of `buf` (a piece whose first `data_len`
/// bytes are file data, the rest padding) with its leaf in `leaves`: a
/// block is bad when its data's SHA-256 is not its leaf, or its padding
/// is not zeros. `senders[b]` sent block `b`. `None` when a data block
/// has no leaf (the leaves are not this piece's).
pub fn blame(leaves: &[Hash], data_len: usize, buf: &[u8], senders: &[PeerKey]) -> Option<Verdict> {
    let mut bad = Vec::new();
    let mut liars = Vec::new();
    for (b, block) in buf.chunks(BLOCK).enumerate() {
        let start = b * BLOCK;
        let split = data_len.saturating_sub(start).min(block.len());
        let (data, pad) = block.split_at(split);
        let data_ok = data.is_empty() || merkle::leaf(data) == *leaves.get(b)?;
        if data_ok && pad.iter().all(|&x| x == 0) {
            continue;
        }
        bad.push(b as u32);
        if let Some(&k) = senders.get(b)
            && k != 0
            && !liars.contains(&k)
        {
            liars.push(k);
        }
    }
    Some(Verdict { bad, liars })
}

/// The answer to a leaf request, as [`LeafAsks::on_hashes`] sees it.
#[derive(Debug)]
pub enum LeafAnswer<T> {
    /// Not a request of ours to that peer (late, or the layer fetch's).
    NotOurs,
    /// The leaves proved out: the piece and what was kept with it.
    Proven {
        /// The piece.
        piece: u32,
        /// Its leaves (padding included).
        leaves: Vec<Hash>,
        /// What [`LeafAsks::add`] was given.
        payload: T,
    },
    /// They do not hash up to the piece's entry: the peer lied; the piece
    /// is asked of someone else.
    Bad,
}

#[derive(Debug)]
struct Waiting<T> {
    piece: u32,
    req: HashRequest,
    piece_hash: Hash,
    contributors: Vec<PeerKey>,
    asked: Option<(PeerKey, Instant)>,
    /// Peers that rejected, timed out or lied: not asked again.
    tried: Vec<PeerKey>,
    since: Instant,
    payload: T,
}

/// Failed pieces waiting for their leaves, each with a payload (the
/// piece's data and senders, kept by the caller's choice).
#[derive(Debug)]
pub struct LeafAsks<T> {
    waiting: Vec<Waiting<T>>,
}

impl<T> Default for LeafAsks<T> {
    fn default() -> Self {
        LeafAsks {
            waiting: Vec::new(),
        }
    }
}

impl<T> LeafAsks<T> {
    /// Waits for the leaves of `piece` (`req`, to check against
    /// `piece_hash`); `contributors` sent its blocks. `Err` gives the
    /// payload back when [`MAX_WAITING`] pieces wait or `piece` already
    /// does.
    pub fn add(
        &mut self,
        piece: u32,
        req: HashRequest,
        piece_hash: Hash,
        contributors: Vec<PeerKey>,
        now: Instant,
        payload: T,
    ) -> Result<(), T> {
        if self.waiting.len() >= MAX_WAITING || self.waiting.iter().any(|w| w.piece == piece) {
            return Err(payload);
        }
        self.waiting.push(Waiting {
            piece,
            req,
            piece_hash,
            contributors,
            asked: None,
            tried: Vec::new(),
            since: now,
            payload,
        });
        Ok(())
    }

    /// Pieces waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    fn expire_asks(&mut self, now: Instant) {
        for w in &mut self.waiting {
            if let Some((p, at)) = w.asked
                && now.saturating_duration_since(at) >= ASK_TIMEOUT
            {
                w.asked = None;
                w.tried.push(p);
            }
        }
    }

    /// The next leaf request for `peer`, which has the pieces `has` says.
    pub fn next_request(
        &mut self,
        peer: PeerKey,
        has: impl Fn(u32) -> bool,
        now: Instant,
    ) -> Option<HashRequest> {
        self.expire_asks(now);
        let w = self.waiting.iter_mut().find(|w| {
            w.asked.is_none()
                && !w.tried.contains(&peer)
                && has(w.piece)
                && (!w.contributors.contains(&peer)
                    || now.saturating_duration_since(w.since) >= PREFER_OTHERS)
        })?;
        w.asked = Some((peer, now));
        Some(w.req)
    }

    /// Whether `req` to `peer` is still awaited.
    pub fn is_pending(&mut self, peer: PeerKey, req: &HashRequest, now: Instant) -> bool {
        self.expire_asks(now);
        self.waiting
            .iter()
            .any(|w| w.req == *req && matches!(w.asked, Some((p, _)) if p == peer))
    }

    /// `peer` answered `req` with `hashes`.
    pub fn on_hashes(
        &mut self,
        peer: PeerKey,
        req: &HashRequest,
        hashes: &[Hash],
    ) -> LeafAnswer<T> {
        let Some(i) = self
            .waiting
            .iter()
            .position(|w| w.req == *req && matches!(w.asked, Some((p, _)) if p == peer))
        else {
            return LeafAnswer::NotOurs;
        };
        let w = &mut self.waiting[i];
        let Some(leaves) = check_leaves(req, hashes, &w.piece_hash) else {
            w.asked = None;
            w.tried.push(peer);
            return LeafAnswer::Bad;
        };
        let w = self.waiting.swap_remove(i);
        LeafAnswer::Proven {
            piece: w.piece,
            leaves,
            payload: w.payload,
        }
    }

    /// `peer` rejected `req`: someone else is asked.
    pub fn on_reject(&mut self, peer: PeerKey, req: &HashRequest) {
        for w in &mut self.waiting {
            if w.req == *req && matches!(w.asked, Some((p, _)) if p == peer) {
                w.asked = None;
                w.tried.push(peer);
            }
        }
    }

    /// `peer` left: what it was asked goes to others.
    pub fn peer_gone(&mut self, peer: PeerKey) {
        for w in &mut self.waiting {
            if matches!(w.asked, Some((p, _)) if p == peer) {
                w.asked = None;
            }
        }
    }

    /// The pieces given up on (past [`GIVE_UP`], or [`GIVE_UP_UNASKED`]
    /// with nobody being asked), removed.
    pub fn expire(&mut self, now: Instant) -> Vec<(u32, T)> {
        self.expire_asks(now);
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() {
            let w = &self.waiting[i];
            let age = now.saturating_duration_since(w.since);
            if age >= GIVE_UP || (w.asked.is_none() && age >= GIVE_UP_UNASKED) {
                let w = self.waiting.swap_remove(i);
                out.push((w.piece, w.payload));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Drops every waiting piece, giving the payloads back.
    pub fn drain(&mut self) -> Vec<(u32, T)> {
        self.waiting
            .drain(..)
            .map(|w| (w.piece, w.payload))
            .collect()
    }
}

#[cfg(test)]
mod tests;
