//! Which files of the torrent are complete, piece by piece (for `--json`'s
//! `file_done`). Pure: fed verified piece numbers, returns finished files.

use crate::geometry::Geometry;
use crate::metainfo::Info;

/// A file still counted, with the pieces it still waits for.
struct Tracked {
    /// 1-based number among non-pad files (as `btc info` shows them).
    index: usize,
    path: String,
    offset: u64,
    length: u64,
    left: u32,
}

/// Counts down each file's pieces as they are verified.
pub struct FileTracker {
    files: Vec<Tracked>,
    geometry: Geometry,
    /// Files of length 0, reported at the first call.
    empty: Vec<(usize, String)>,
}

impl FileTracker {
    /// Tracks every non-pad file of `info`.
    pub fn new(info: &Info, geometry: Geometry) -> FileTracker {
        let mut files = Vec::new();
        let mut empty = Vec::new();
        for (i, f) in info.files.iter().filter(|f| !f.pad).enumerate() {
            let path = f.path.join("/");
            let Some((first, last)) = geometry.pieces_of(f.offset, f.length) else {
                empty.push((i + 1, path));
                continue;
            };
            files.push(Tracked {
                index: i + 1,
                path,
                offset: f.offset,
                length: f.length,
                left: last - first + 1,
            });
        }
        FileTracker {
            files,
            geometry,
            empty,
        }
    }

    /// Piece `piece` was verified (each piece once); returns the files it
    /// completed, as (number, path).
    pub fn on_piece(&mut self, piece: u32) -> Vec<(usize, String)> {
        let mut done = std::mem::take(&mut self.empty);
        if piece >= self.geometry.piece_count {
            return done;
        }
        let start = self.geometry.piece_offset(piece);
        let end = start + u64::from(self.geometry.piece_len(piece));
        // Files are sorted by offset: the first that ends after `start`.
        let from = self.files.partition_point(|f| f.offset + f.length <= start);
        for f in self.files.iter_mut().skip(from) {
            if f.offset >= end {
                break;
            }
            f.left = f.left.saturating_sub(1);
            if f.left == 0 {
                done.push((f.index, f.path.clone()));
            }
        }
        done
    }
}

/// Verified bytes of each non-pad file of `info` (in `btc info`'s order),
/// given the verified pieces.
pub fn file_done(info: &Info, geometry: &Geometry, have: &crate::bitfield::Bitfield) -> Vec<u64> {
    info.files
        .iter()
        .filter(|f| !f.pad)
        .map(|f| {
            let Some((first, last)) = geometry.pieces_of(f.offset, f.length) else {
                return 0;
            };
            let end = f.offset + f.length;
            (first..=last)
                .filter(|&i| have.get(i as usize))
                .map(|i| {
                    let start = geometry.piece_offset(i);
                    let stop = start + u64::from(geometry.piece_len(i));
                    stop.min(end) - start.max(f.offset)
                })
                .sum()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(lens: &[(u64, bool)], piece_length: u32) -> (Info, Geometry) {
        crate::metainfo::synthetic_info(lens, piece_length)
    }

    #[test]
    fn files_finish_when_their_last_piece_does() {
        // Pieces of 10: f0 = [0,15) spans pieces 0-1, f1 empty, a pad
        // [15,20), f2 = [20,45) spans pieces 2-4.
        let (info, g) = info(&[(15, false), (0, false), (5, true), (25, false)], 10);
        let mut t = FileTracker::new(&info, g);
        assert_eq!(t.on_piece(1), vec![(2, "f1".to_string())]);
        assert_eq!(t.on_piece(0), vec![(1, "f0".to_string())]);
        assert!(t.on_piece(4).is_empty());
        assert!(t.on_piece(2).is_empty());
        assert_eq!(t.on_piece(3), vec![(3, "f3".to_string())]);
        assert!(t.on_piece(99).is_empty());
    }

    #[test]
    fn a_file_counts_the_bytes_of_its_verified_pieces_only() {
        // Pieces of 10: f0 = [0,15), f1 = [15,40).
        let (info, g) = info(&[(15, false), (25, false)], 10);
        let mut have = crate::bitfield::Bitfield::new(4);
        assert_eq!(file_done(&info, &g, &have), vec![0, 0]);
        // Piece 1 = [10,20): 5 bytes of f0, 5 of f1.
        have.set(1);
        assert_eq!(file_done(&info, &g, &have), vec![5, 5]);
        for i in 0..4 {
            have.set(i);
        }
        assert_eq!(file_done(&info, &g, &have), vec![15, 25]);
    }
}
