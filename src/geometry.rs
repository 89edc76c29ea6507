//! Piece and block arithmetic: how long piece `i` is, how many 16 KiB blocks
//! it holds, how long the last one is. Pure; every other module asks here
//! instead of redoing the division.

use crate::peer::message::BLOCK_LEN;

/// The shape of a torrent's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Total content length in bytes (> 0).
    pub total_length: u64,
    /// Nominal piece length (> 0).
    pub piece_length: u32,
    /// Number of pieces.
    pub piece_count: u32,
}

impl Geometry {
    /// Geometry of `total_length` bytes cut into `piece_length` pieces.
    pub fn new(total_length: u64, piece_length: u32) -> Self {
        let piece_count = total_length.div_ceil(piece_length as u64) as u32;
        Geometry {
            total_length,
            piece_length,
            piece_count,
        }
    }

    /// Length of piece `i` (the last one may be short); 0 when out of range.
    pub fn piece_len(&self, i: u32) -> u32 {
        if i >= self.piece_count {
            return 0;
        }
        let start = i as u64 * self.piece_length as u64;
        (self.total_length - start).min(self.piece_length as u64) as u32
    }

    /// Byte offset of piece `i` in the concatenated content.
    pub fn piece_offset(&self, i: u32) -> u64 {
        i as u64 * self.piece_length as u64
    }

    /// First and last piece holding a byte of `length` bytes at content
    /// offset `offset` (a file); `None` when `length` is 0.
    pub fn pieces_of(&self, offset: u64, length: u64) -> Option<(u32, u32)> {
        let pl = u64::from(self.piece_length.max(1));
        let last_byte = offset.checked_add(length.checked_sub(1)?)?;
        let piece = |at: u64| u32::try_from(at / pl).unwrap_or(u32::MAX);
        Some((piece(offset), piece(last_byte)))
    }

    /// Number of blocks in piece `i`.
    pub fn block_count(&self, i: u32) -> u32 {
        self.piece_len(i).div_ceil(BLOCK_LEN)
    }

    /// Length of block `b` of piece `i`.
    pub fn block_len(&self, i: u32, b: u32) -> u32 {
        let pl = self.piece_len(i);
        let start = b * BLOCK_LEN;
        if start >= pl {
            0
        } else {
            (pl - start).min(BLOCK_LEN)
        }
    }

    /// Whether `[offset, offset+len)` lies inside piece `i` and `len > 0`.
    pub fn contains(&self, piece: u32, offset: u32, len: u32) -> bool {
        len > 0
            && piece < self.piece_count
            && (offset as u64 + len as u64) <= self.piece_len(piece) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_multiple() {
        let g = Geometry::new(4 * 32768, 32768);
        assert_eq!(g.piece_count, 4);
        assert_eq!(g.piece_len(3), 32768);
        assert_eq!(g.block_count(3), 2);
        assert_eq!(g.piece_len(4), 0);
    }

    #[test]
    fn short_last_piece_and_block() {
        let g = Geometry::new(32768 * 2 + 20000, 32768);
        assert_eq!(g.piece_count, 3);
        assert_eq!(g.piece_len(2), 20000);
        assert_eq!(g.block_count(2), 2);
        assert_eq!(g.block_len(2, 0), 16384);
        assert_eq!(g.block_len(2, 1), 20000 - 16384);
        assert_eq!(g.block_len(2, 2), 0);
        assert_eq!(g.piece_offset(2), 65536);
    }

    #[test]
    fn tiny_torrent() {
        let g = Geometry::new(1, 16384);
        assert_eq!(g.piece_count, 1);
        assert_eq!(g.piece_len(0), 1);
        assert_eq!(g.block_count(0), 1);
        assert_eq!(g.block_len(0, 0), 1);
    }

    #[test]
    fn range_checks() {
        let g = Geometry::new(50000, 32768);
        assert!(g.contains(0, 16384, 16384));
        assert!(!g.contains(0, 16385, 16384));
        assert!(g.contains(1, 0, 50000 - 32768));
        assert!(!g.contains(1, 0, 50000 - 32768 + 1));
        assert!(!g.contains(2, 0, 1));
        assert!(!g.contains(0, 0, 0));
        assert!(!g.contains(0, u32::MAX, 2));
    }
}
