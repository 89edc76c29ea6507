//! BitTorrent v2 (BEP 52) merkle trees: SHA-256 over 16 KiB blocks.
//!
//! A v2 torrent names each file's data by the root of a binary hash tree
//! whose leaves are the SHA-256 of its 16 KiB blocks (the last may be
//! shorter). The leaf row is padded to a power of two with zero hashes (32
//! zero bytes, not the hash of anything), so a subtree of padding has a
//! fixed root per height. The `piece layers` of a `.torrent` hold, per file
//! longer than one piece, the row of the tree at piece height: one hash per
//! piece, which checks each piece on its own. Pure functions, no I/O.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Bytes under one leaf.
pub const BLOCK: usize = 16 * 1024;

/// The leaf that pads a row: 32 zero bytes (BEP 52).
pub const ZERO: Hash = [0; 32];

/// Levels a tree may have at most: 2^50 bytes is 2^36 blocks, so 37 rows.
const MAX_HEIGHT: u32 = 40;

/// SHA-256 of `data`: a leaf, for up to [`BLOCK`] bytes.
pub fn leaf(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// The parent of two nodes.
pub fn parent(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of a subtree of `2^height` zero leaves.
pub fn zero_root(height: u32) -> Hash {
    let mut h = ZERO;
    for _ in 0..height.min(MAX_HEIGHT) {
        h = parent(&h, &h);
    }
    h
}

/// The root of `row` padded on the right with `pad` up to `width` nodes
/// (`width` a power of two, at least `row.len()`; `pad` the root of an
/// all-padding subtree of the row's height). `None` if `width` is not a
/// power of two or `row` does not fit in it.
pub fn root_of_row(row: &[Hash], width: usize, pad: Hash) -> Option<Hash> {
    if !width.is_power_of_two() || row.len() > width {
        return None;
    }
    let mut level: Vec<Hash> = row.to_vec();
    let mut pad = pad;
    let mut width = width;
    while width > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            let right = pair.get(1).unwrap_or(&pad);
            next.push(parent(&pair[0], right));
        }
        pad = parent(&pad, &pad);
        width /= 2;
        level = next;
    }
    Some(level.first().copied().unwrap_or(pad))
}

/// Blocks per piece of `piece_length` bytes (a power of two ≥ [`BLOCK`]).
pub fn blocks_per_piece(piece_length: u32) -> usize {
    (piece_length as usize / BLOCK).max(1)
}

/// The leaves of `data`: one per 16 KiB block.
pub fn leaves(data: &[u8]) -> Vec<Hash> {
    data.chunks(BLOCK).map(leaf).collect()
}

/// The hash of one piece of a file, as its `piece layers` entry holds it:
/// the root of the piece's blocks, padded with zero leaves to a whole
/// piece (only the file's last piece can be short).
pub fn piece_hash(data: &[u8], piece_length: u32) -> Hash {
    let width = blocks_per_piece(piece_length);
    // A piece never has more blocks than its width; `root_of_row` checks.
    root_of_row(&leaves(data), width, ZERO).unwrap_or(ZERO)
}

/// The `pieces root` of a file of `length` bytes from its piece layer
/// (one hash per piece of `piece_length`): the layer padded to a power of
/// two with zero-piece roots, hashed up. `None` if the layer's length is
/// not the file's piece count.
pub fn root_from_layer(layer: &[Hash], length: u64, piece_length: u32) -> Option<Hash> {
    let pieces = length.div_ceil(u64::from(piece_length));
    if layer.len() as u64 != pieces || layer.is_empty() {
        return None;
    }
    let height = blocks_per_piece(piece_length).trailing_zeros();
    root_of_row(layer, layer.len().next_power_of_two(), zero_root(height))
}

/// The `pieces root` of a whole file's data: its leaves padded with zero
/// leaves to a power of two (a file of one piece or less has no layer in
/// the `.torrent`; this is what checks it).
pub fn file_root(data: &[u8]) -> Hash {
    let leaves = leaves(data);
    let width = leaves.len().max(1).next_power_of_two();
    root_of_row(&leaves, width, ZERO).unwrap_or(ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn one_block_is_its_own_root() {
        let d = data(1000);
        assert_eq!(file_root(&d), leaf(&d));
    }

    #[test]
    fn three_blocks_pad_with_one_zero_leaf() {
        let d = data(2 * BLOCK + 5);
        let l = leaves(&d);
        let want = parent(&parent(&l[0], &l[1]), &parent(&l[2], &ZERO));
        assert_eq!(file_root(&d), want);
    }

    #[test]
    fn the_layer_pads_with_roots_of_zero_pieces() {
        // 3 pieces of 32 KiB (2 blocks each): the layer pads to 4 with the
        // root of two zero leaves, not with a zero hash.
        let d = data(2 * 32768 + 100);
        let layer: Vec<Hash> = d.chunks(32768).map(|p| piece_hash(p, 32768)).collect();
        let zero_piece = parent(&ZERO, &ZERO);
        let want = parent(
            &parent(&layer[0], &layer[1]),
            &parent(&layer[2], &zero_piece),
        );
        assert_eq!(root_from_layer(&layer, d.len() as u64, 32768), Some(want));
        // And it is the root of the blocks padded with zero leaves.
        assert_eq!(file_root(&d), want);
    }

    #[test]
    fn a_layer_of_the_wrong_length_has_no_root() {
        let layer = vec![ZERO; 2];
        assert_eq!(root_from_layer(&layer, 3 * 32768, 32768), None);
        assert_eq!(root_from_layer(&[], 0, 32768), None);
    }

    #[test]
    fn rows_that_do_not_fit_are_refused() {
        assert_eq!(root_of_row(&[ZERO; 3], 2, ZERO), None);
        assert_eq!(root_of_row(&[ZERO; 3], 3, ZERO), None);
        assert_eq!(root_of_row(&[], 4, ZERO), Some(zero_root(2)));
    }
}
