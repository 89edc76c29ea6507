//! BEP 52 hash exchange: the HASH REQUEST (21), HASHES (22) and HASH
//! REJECT (23) messages, and the merkle arithmetic both ends of them need.
//! Pure: no sockets, no clocks, no torrent state.
//!
//! A request names a file by its `pieces root` and asks for `length`
//! consecutive nodes of one layer of that file's tree (`base_layer`, 0 is
//! the 16 KiB leaves), starting at `index`, plus the uncle hashes of the
//! `proof_layers` layers above it. As libtorrent counts them, the answer
//! carries `proof_layers + 1 - log2(length)` uncles: the sibling of the
//! subtree root the nodes hash up to, then of each ancestor, so the most
//! a request may ask for (`proof_layers` one less than the layers above
//! `base_layer`) reaches the root. A v2 client
//! fetching a piece layer asks with `base_layer` = the piece layer and
//! proofs up to the root, and trusts nothing until the nodes and uncles
//! hash up to the root it got from the info dictionary.
//!
//! Parsing is strict: `length` a power of two no larger than
//! [`MAX_HASHES`], `index` a multiple of `length`, `proof_layers` and
//! `base_layer` below [`MAX_LAYERS`], and a HASHES message carrying
//! exactly the hashes its header implies.

use crate::merkle::{self, Hash};
use bytes::BufMut;

/// Most nodes one request may ask for (libtorrent's limit as well: a piece
/// of 128 MiB has 8192 leaves).
pub const MAX_HASHES: u32 = 8192;

/// Layers a tree may have: 2^63 leaves is far beyond any torrent.
pub const MAX_LAYERS: u32 = 64;

/// Payload bytes of a request header: root, then four 32-bit integers.
pub const HEADER_LEN: usize = 32 + 16;

/// The header shared by the three messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashRequest {
    /// The file's merkle root (`pieces root`).
    pub pieces_root: Hash,
    /// The layer of the nodes asked for; 0 is the leaves (16 KiB blocks).
    pub base_layer: u32,
    /// The first node, counted in its layer.
    pub index: u32,
    /// Nodes asked for: a power of two.
    pub length: u32,
    /// Layers above `base_layer` whose uncles are wanted.
    pub proof_layers: u32,
}

/// A header that breaks the rules above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashMessageError {
    /// The payload is not a header (plus whole hashes for HASHES).
    #[error("{name} payload of {got} bytes")]
    BadLength {
        /// Message name.
        name: &'static str,
        /// Payload length.
        got: usize,
    },
    /// `length` is zero, not a power of two, or above [`MAX_HASHES`].
    #[error("hash request for {0} hashes")]
    BadCount(u32),
    /// `index` is not a multiple of `length`.
    #[error("hash request index {index} not aligned to its length {length}")]
    Unaligned {
        /// The index.
        index: u32,
        /// The length.
        length: u32,
    },
    /// `base_layer` or `proof_layers` beyond any tree.
    #[error("hash request for layer {base} with {proof} proof layers")]
    BadLayers {
        /// The base layer.
        base: u32,
        /// The proof layers.
        proof: u32,
    },
    /// A HASHES message whose hash count is not what its header implies.
    #[error("hashes message with {got} hashes, {expected} expected")]
    WrongCount {
        /// From the header.
        expected: usize,
        /// In the payload.
        got: usize,
    },
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl HashRequest {
    /// Uncle hashes a HASHES answer carries after the `length` nodes:
    /// `proof_layers + 1 - log2(length)` (libtorrent's count), none if
    /// that is negative.
    pub fn uncles(&self) -> u32 {
        (self.proof_layers + 1).saturating_sub(self.length.max(1).trailing_zeros())
    }

    /// Hashes in the answer: the nodes, then the uncles.
    pub fn answer_len(&self) -> usize {
        self.length as usize + self.uncles() as usize
    }

    /// Checks the rules every header must follow, whatever the file.
    pub fn check(&self) -> Result<(), HashMessageError> {
        if self.length == 0 || !self.length.is_power_of_two() || self.length > MAX_HASHES {
            return Err(HashMessageError::BadCount(self.length));
        }
        if !self.index.is_multiple_of(self.length) {
            return Err(HashMessageError::Unaligned {
                index: self.index,
                length: self.length,
            });
        }
        if self.base_layer >= MAX_LAYERS
            || self.proof_layers >= MAX_LAYERS
            || self.base_layer + self.proof_layers >= MAX_LAYERS
        {
            return Err(HashMessageError::BadLayers {
                base: self.base_layer,
                proof: self.proof_layers,
            });
        }
        Ok(())
    }

    /// Parses and checks a 48-byte header.
    pub fn decode(name: &'static str, p: &[u8]) -> Result<HashRequest, HashMessageError> {
        if p.len() != HEADER_LEN {
            return Err(HashMessageError::BadLength { name, got: p.len() });
        }
        Self::decode_prefix(p)
    }

    fn decode_prefix(p: &[u8]) -> Result<HashRequest, HashMessageError> {
        let mut pieces_root = [0u8; 32];
        pieces_root.copy_from_slice(&p[..32]);
        let r = HashRequest {
            pieces_root,
            base_layer: be32(&p[32..36]),
            index: be32(&p[36..40]),
            length: be32(&p[40..44]),
            proof_layers: be32(&p[44..48]),
        };
        r.check()?;
        Ok(r)
    }

    /// Appends the 48-byte header.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_slice(&self.pieces_root);
        dst.put_u32(self.base_layer);
        dst.put_u32(self.index);
        dst.put_u32(self.length);
        dst.put_u32(self.proof_layers);
    }
}

/// Parses a HASHES payload: the header, then exactly
/// [`HashRequest::answer_len`] hashes.
pub fn decode_hashes(p: &[u8]) -> Result<(HashRequest, Vec<Hash>), HashMessageError> {
    if p.len() < HEADER_LEN || !(p.len() - HEADER_LEN).is_multiple_of(32) {
        return Err(HashMessageError::BadLength {
            name: "hashes",
            got: p.len(),
        });
    }
    let req = HashRequest::decode_prefix(&p[..HEADER_LEN])?;
    let got = (p.len() - HEADER_LEN) / 32;
    if got != req.answer_len() {
        return Err(HashMessageError::WrongCount {
            expected: req.answer_len(),
            got,
        });
    }
    let hashes = p[HEADER_LEN..]
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect();
    Ok((req, hashes))
}

/// The shape of one file's tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeShape {
    /// Leaves padded to a power of two.
    pub leaves: u64,
    /// Layers, the leaves and the root included.
    pub layers: u32,
}

impl TreeShape {
    /// The tree of a file of `length` bytes (`None` for an empty file).
    pub fn of_file(length: u64) -> Option<TreeShape> {
        if length == 0 {
            return None;
        }
        let leaves = length.div_ceil(merkle::BLOCK as u64).next_power_of_two();
        Some(TreeShape {
            leaves,
            layers: leaves.trailing_zeros() + 1,
        })
    }

    /// Nodes in `layer` (padding included).
    pub fn width(&self, layer: u32) -> u64 {
        self.leaves >> layer.min(63)
    }

    /// Whether `r` fits this tree (libtorrent's rule): its nodes inside
    /// their layer, below the root, and its proof no higher than the
    /// root's children.
    pub fn fits(&self, r: &HashRequest) -> bool {
        let top = self.layers - 1;
        r.base_layer < top
            && u64::from(r.index) + u64::from(r.length) <= self.width(r.base_layer)
            && r.proof_layers < top - r.base_layer
    }

    /// The request for `length` nodes of `layer` from `index`, with the
    /// uncles up to the root.
    pub fn request(&self, root: Hash, layer: u32, index: u32, length: u32) -> HashRequest {
        HashRequest {
            pieces_root: root,
            base_layer: layer,
            index,
            length,
            proof_layers: self.layers.saturating_sub(layer + 2),
        }
    }
}

/// Checks a HASHES answer against the file's `root`: the nodes hash up,
/// with the uncles, to exactly the root. Only a request whose proof
/// reaches the root can be checked; anything else is `false`.
pub fn verify(shape: &TreeShape, root: &Hash, req: &HashRequest, hashes: &[Hash]) -> bool {
    if req.check().is_err() || !shape.fits(req) || hashes.len() != req.answer_len() {
        return false;
    }
    let (nodes, uncles) = hashes.split_at(req.length as usize);
    // The nodes hash up to one subtree root (no padding inside: `length`
    // is a power of two and the nodes are all there).
    let Some(mut node) = merkle::root_of_row(nodes, nodes.len(), merkle::ZERO) else {
        return false;
    };
    let mut pos = u64::from(req.index >> req.length.trailing_zeros());
    for u in uncles {
        node = if pos & 1 == 0 {
            merkle::parent(&node, u)
        } else {
            merkle::parent(u, &node)
        };
        pos >>= 1;
    }
    // The proof reaches the root when the subtree plus uncles cover it.
    let top = req.base_layer + req.length.trailing_zeros() + uncles.len() as u32;
    top + 1 == shape.layers && pos == 0 && node == *root
}

/// One file's tree from its piece layer up, for answering requests: every
/// row kept without its padding, with the root of an all-padding subtree
/// per row.
#[derive(Debug, Clone)]
pub struct LayerTree {
    root: Hash,
    shape: TreeShape,
    /// The layer number of `rows[0]` (the piece layer).
    base: u32,
    rows: Vec<Vec<Hash>>,
    pads: Vec<Hash>,
}

impl LayerTree {
    /// The tree of a file of `length` bytes above its piece layer `layer`
    /// for pieces of `piece_length`. `None` if the layer does not hash up
    /// to `root`.
    pub fn new(layer: &[Hash], length: u64, piece_length: u32, root: &Hash) -> Option<LayerTree> {
        let shape = TreeShape::of_file(length)?;
        let base = merkle::blocks_per_piece(piece_length).trailing_zeros();
        if base >= shape.layers || layer.is_empty() {
            return None;
        }
        let mut rows = vec![layer.to_vec()];
        let mut pads = vec![merkle::zero_root(base)];
        for _ in base + 1..shape.layers {
            let below = rows.last()?;
            let pad = *pads.last()?;
            let next: Vec<Hash> = below
                .chunks(2)
                .map(|p| merkle::parent(&p[0], p.get(1).unwrap_or(&pad)))
                .collect();
            rows.push(next);
            pads.push(merkle::parent(&pad, &pad));
        }
        let top = rows.last()?;
        if top.len() != 1 || top[0] != *root {
            return None;
        }
        Some(LayerTree {
            root: *root,
            shape,
            base,
            rows,
            pads,
        })
    }

    /// The tree's shape.
    pub fn shape(&self) -> TreeShape {
        self.shape
    }

    /// Node `index` of `layer` (at or above the piece layer; padding
    /// past the row's end), `None` below the piece layer.
    pub fn node(&self, layer: u32, index: u64) -> Option<Hash> {
        let k = layer.checked_sub(self.base)? as usize;
        let row = self.rows.get(k)?;
        Some(match usize::try_from(index).ok().and_then(|i| row.get(i)) {
            Some(h) => *h,
            None => self.pads[k],
        })
    }

    /// The file's root.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The answer to `r`: its nodes then its uncles, or `None` when the
    /// request is for another file, does not fit the tree or asks below
    /// the piece layer (we keep no block hashes).
    pub fn answer(&self, r: &HashRequest) -> Option<Vec<Hash>> {
        if r.pieces_root != self.root
            || r.check().is_err()
            || !self.shape.fits(r)
            || r.base_layer < self.base
        {
            return None;
        }
        let mut out = Vec::with_capacity(r.answer_len());
        for i in 0..u64::from(r.length) {
            out.push(self.node(r.base_layer, u64::from(r.index) + i)?);
        }
        let skip = r.length.trailing_zeros();
        let mut pos = u64::from(r.index) >> skip;
        let first = r.base_layer + skip;
        for layer in first..first + r.uncles() {
            out.push(self.node(layer, pos ^ 1)?);
            pos >>= 1;
        }
        Some(out)
    }
}

/// The answer to `r`, a request below the piece layer, from the `leaves`
/// of the one piece its nodes fall under: that piece is number `piece` of
/// its file, its subtree is `width` leaves wide (the leaves per piece, or
/// for a file shorter than a piece its padded leaf row), and the nodes at
/// the piece's layer and above come from `above(layer, index)` (the
/// file's [`LayerTree`], or its root). `None` when the request does not
/// fit the tree, is not below the piece layer, spans more than the piece,
/// or the leaves do not hash up to the piece's node (data that changed on
/// disk is not vouched for).
pub fn answer_from_piece(
    r: &HashRequest,
    shape: &TreeShape,
    width: u64,
    piece: u64,
    leaves: &[Hash],
    above: impl Fn(u32, u64) -> Option<Hash>,
) -> Option<Vec<Hash>> {
    if r.check().is_err()
        || !shape.fits(r)
        || !width.is_power_of_two()
        || leaves.len() as u64 > width
        || width > shape.leaves
    {
        return None;
    }
    let h = width.trailing_zeros();
    if r.base_layer >= h {
        return None;
    }
    let mut row: Vec<Hash> = leaves.to_vec();
    row.resize(usize::try_from(width).ok()?, merkle::ZERO);
    let mut rows = vec![row];
    while rows.last()?.len() > 1 {
        let next = rows
            .last()?
            .chunks(2)
            .map(|p| merkle::parent(&p[0], &p[1]))
            .collect();
        rows.push(next);
    }
    if above(h, piece)? != rows[h as usize][0] {
        return None;
    }
    let node = |layer: u32, index: u64| -> Option<Hash> {
        if layer < h {
            let first = piece << (h - layer);
            let k = usize::try_from(index.checked_sub(first)?).ok()?;
            rows.get(layer as usize)?.get(k).copied()
        } else {
            above(layer, index)
        }
    };
    let mut out = Vec::with_capacity(r.answer_len());
    for i in 0..u64::from(r.length) {
        out.push(node(r.base_layer, u64::from(r.index) + i)?);
    }
    let skip = r.length.trailing_zeros();
    let mut pos = u64::from(r.index) >> skip;
    let first = r.base_layer + skip;
    for layer in first..first + r.uncles() {
        out.push(node(layer, pos ^ 1)?);
        pos >>= 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
