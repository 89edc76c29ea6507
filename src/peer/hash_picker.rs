//! The hash picker: fetches the piece layers a v2 torrent's info dict
//! does not carry (a magnet's BEP 9 metadata, or a `.torrent` without
//! `piece layers`) from peers, with BEP 52 hash requests. Sans-IO: the
//! session feeds it peers, answers and instants.
//!
//! Each file longer than one piece needs its layer. It is asked for in
//! chunks of at most [`CHUNK`] hashes at the piece layer, each with the
//! uncles up to the file's root, and a chunk is kept only once its hashes
//! and uncles hash up to the `pieces root` of the info dict (which the
//! info-hash vouches for): a lying peer can waste one request, never
//! plant a hash. A chunk rejected, timed out ([`TIMEOUT`]) or answered
//! with a bad proof goes back to the pool, and the peer that failed it is
//! not asked for it again for [`RETRY_AFTER`] (another peer is, at once).
//! When every chunk is in, [`HashPicker::layers`] gives each file's layer.

use super::hashes::{self, HashRequest, TreeShape};
use crate::merkle::{self, Hash};
use crate::metainfo::v2::V2File;
use crate::picker::PeerKey;
use std::time::{Duration, Instant};

/// Hashes asked for in one request (libtorrent's span too).
pub const CHUNK: u32 = 512;
/// A request unanswered this long goes to another peer.
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// A peer that failed a chunk is asked for it again after this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Chunk {
    /// Not asked for; `failed` is the last peer that failed it, and when.
    Free { failed: Option<(PeerKey, Instant)> },
    /// Asked from `peer` at `at`.
    Asked { peer: PeerKey, at: Instant },
    /// Verified nodes.
    Done(Vec<Hash>),
}

#[derive(Debug, Clone)]
struct Want {
    root: Hash,
    shape: TreeShape,
    /// The piece layer's number in the tree.
    layer: u32,
    /// Hashes per request for this file.
    chunk: u32,
    /// Pieces of the file: the layer's real length.
    pieces: usize,
    chunks: Vec<Chunk>,
}

/// Piece layers being fetched.
#[derive(Debug, Clone)]
pub struct HashPicker {
    wants: Vec<Want>,
}

impl HashPicker {
    /// A picker for the layers `files` miss, in pieces of `piece_length`
    /// (a power of two ≥ 16 KiB, checked by the metainfo parser).
    pub fn new(files: &[V2File], piece_length: u32) -> HashPicker {
        let layer = merkle::blocks_per_piece(piece_length).trailing_zeros();
        let wants = files
            .iter()
            .filter(|f| f.layer.is_none() && f.length > u64::from(piece_length))
            .filter_map(|f| {
                let root = f.pieces_root?;
                let shape = TreeShape::of_file(f.length)?;
                let width = shape.width(layer);
                let chunk = CHUNK.min(u32::try_from(width).ok()?);
                let pieces = usize::try_from(f.length.div_ceil(u64::from(piece_length))).ok()?;
                let n = pieces.div_ceil(chunk as usize);
                Some(Want {
                    root,
                    shape,
                    layer,
                    chunk,
                    pieces,
                    chunks: vec![Chunk::Free { failed: None }; n],
                })
            })
            .collect();
        HashPicker { wants }
    }

    /// Whether every layer is in.
    pub fn is_done(&self) -> bool {
        self.wants
            .iter()
            .all(|w| w.chunks.iter().all(|c| matches!(c, Chunk::Done(_))))
    }

    /// `(chunks verified, chunks in all)`, for the status line.
    pub fn progress(&self) -> (usize, usize) {
        let all = self.wants.iter().map(|w| w.chunks.len()).sum();
        let done = self
            .wants
            .iter()
            .flat_map(|w| &w.chunks)
            .filter(|c| matches!(c, Chunk::Done(_)))
            .count();
        (done, all)
    }

    fn expire(&mut self, now: Instant) {
        for c in self.wants.iter_mut().flat_map(|w| w.chunks.iter_mut()) {
            if let Chunk::Asked { peer, at } = *c
                && now.saturating_duration_since(at) >= TIMEOUT
            {
                *c = Chunk::Free {
                    failed: Some((peer, now)),
                };
            }
        }
    }

    /// The next request for `peer`, if a chunk is free for it.
    pub fn next_request(&mut self, peer: PeerKey, now: Instant) -> Option<HashRequest> {
        self.expire(now);
        for w in &mut self.wants {
            for (k, c) in w.chunks.iter_mut().enumerate() {
                let Chunk::Free { failed } = *c else {
                    continue;
                };
                if failed.is_some_and(|(p, at)| {
                    p == peer && now.saturating_duration_since(at) < RETRY_AFTER
                }) {
                    continue;
                }
                *c = Chunk::Asked { peer, at: now };
                let index = k as u32 * w.chunk;
                return Some(w.shape.request(w.root, w.layer, index, w.chunk));
            }
        }
        None
    }

    fn find(&self, req: &HashRequest) -> Option<(&Want, usize)> {
        let w = self.wants.iter().find(|w| {
            w.root == req.pieces_root
                && w.layer == req.base_layer
                && w.chunk == req.length
                && req.index.is_multiple_of(w.chunk)
        })?;
        let k = (req.index / w.chunk) as usize;
        (k < w.chunks.len()).then_some((w, k))
    }

    /// Whether `req`, asked from `peer`, is still awaited from it.
    pub fn is_pending(&mut self, peer: PeerKey, req: &HashRequest, now: Instant) -> bool {
        self.expire(now);
        self.find(req)
            .is_some_and(|(w, k)| matches!(w.chunks[k], Chunk::Asked { peer: p, .. } if p == peer))
    }

    fn slot(&mut self, req: &HashRequest) -> Option<&mut Chunk> {
        let (w, k) = self.find(req)?;
        let root = w.root;
        let w = self.wants.iter_mut().find(|w| w.root == root)?;
        w.chunks.get_mut(k)
    }

    /// Hashes from `peer` for `req`: kept if they prove out against the
    /// file's root. `Err` when they do not (the peer lied); an answer for
    /// a chunk already verified or not asked for is ignored.
    pub fn on_hashes(
        &mut self,
        peer: PeerKey,
        req: &HashRequest,
        hashes: &[Hash],
        now: Instant,
    ) -> Result<(), String> {
        let Some((w, _)) = self.find(req) else {
            return Ok(());
        };
        let ok = hashes::verify(&w.shape, &w.root, req, hashes)
            && w.shape.request(w.root, w.layer, req.index, req.length) == *req;
        let nodes = hashes[..(req.length as usize).min(hashes.len())].to_vec();
        let Some(slot) = self.slot(req) else {
            return Ok(());
        };
        if matches!(slot, Chunk::Done(_)) {
            return Ok(());
        }
        if !ok {
            *slot = Chunk::Free {
                failed: Some((peer, now)),
            };
            return Err("hashes whose proof does not reach the file's root".into());
        }
        *slot = Chunk::Done(nodes);
        Ok(())
    }

    /// `peer` rejected `req`, or left with it: someone else gets it.
    pub fn on_reject(&mut self, peer: PeerKey, req: &HashRequest, now: Instant) {
        if let Some(slot) = self.slot(req)
            && matches!(slot, Chunk::Asked { peer: p, .. } if *p == peer)
        {
            *slot = Chunk::Free {
                failed: Some((peer, now)),
            };
        }
    }

    /// `peer` is gone: its requests are free again.
    pub fn on_peer_gone(&mut self, peer: PeerKey) {
        for c in self.wants.iter_mut().flat_map(|w| w.chunks.iter_mut()) {
            if matches!(c, Chunk::Asked { peer: p, .. } if *p == peer) {
                *c = Chunk::Free { failed: None };
            }
        }
    }

    /// Once done: each file's piece layer by its root, checked again as a
    /// whole against the root.
    pub fn layers(&self) -> Option<Vec<(Hash, Vec<Hash>)>> {
        let mut out = Vec::with_capacity(self.wants.len());
        for w in &self.wants {
            let mut layer = Vec::with_capacity(w.pieces);
            for c in &w.chunks {
                let Chunk::Done(nodes) = c else {
                    return None;
                };
                layer.extend_from_slice(nodes);
            }
            layer.truncate(w.pieces);
            let height = w.layer;
            let width = usize::try_from(w.shape.width(height)).ok()?;
            if merkle::root_of_row(&layer, width, merkle::zero_root(height)) != Some(w.root) {
                return None;
            }
            out.push((w.root, layer));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests;
