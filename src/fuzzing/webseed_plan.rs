//! The `webseed_plan` fuzz target: web seed (BEP 19) range plans over any
//! file layout.

use arbitrary::{Arbitrary, Unstructured};

use crate::geometry::Geometry;
use crate::metainfo::{FileEntry, Info};
use crate::peer::message::{BLOCK_LEN, BlockRef};
use crate::storage::layout::Layout;
use crate::webseed::plan;

/// A torrent shape for the web seed planner.
#[derive(Debug, Arbitrary)]
struct Shape {
    /// File lengths and pad flags.
    files: Vec<(u16, bool)>,
    /// Piece length in 1 KiB steps.
    piece_kib: u8,
    /// Which blocks are picked: a bit per block, cycled.
    picks: Vec<u8>,
    /// How the server cuts the response body into chunks.
    chunks: Vec<u16>,
    /// Bytes the server sends past the end.
    extra: u8,
}

/// (j) web seed planning: fuzzer-chosen torrents and picked blocks become
/// runs, file URLs and HTTP ranges, and the server's body, cut into
/// fuzzer-chosen chunks, is cut back into exactly the picked blocks.
pub fn webseed_plan(data: &[u8]) {
    let Ok(shape) = Shape::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let piece_length = (u32::from(shape.piece_kib) % 40 + 1) * 1024;
    let mut files = Vec::new();
    let mut offset = 0u64;
    for (i, (len, pad)) in shape.files.iter().take(8).enumerate() {
        // Up to 8 files of up to 20 KiB: runs cross files, blocks and
        // pieces, and stay small enough to cut byte by byte quickly.
        let length = u64::from(*len % (20 * 1024));
        files.push(FileEntry {
            path: vec!["t".into(), format!("f {i}%/ä")],
            length,
            offset,
            md5sum: None,
            pad: *pad,
            attr: Default::default(),
        });
        offset += length;
    }
    let total = offset;
    if total == 0 {
        return;
    }
    let g = Geometry::new(total, piece_length);
    let info = Info {
        name: "t".into(),
        piece_length,
        pieces: vec![[0; 20]; g.piece_count as usize],
        v2_pieces: None,
        private: false,
        files,
        total_length: total,
        multi_file: true,
    };
    let layout = Layout::new(info.files.iter().map(|f| f.length));
    assert_eq!(layout.total(), total);
    let mut blocks = Vec::new();
    let mut bit = 0usize;
    for piece in 0..g.piece_count {
        for b in 0..g.block_count(piece) {
            let byte = shape.picks.get((bit / 8) % shape.picks.len().max(1));
            if byte.is_some_and(|x| x & (1 << (bit % 8)) != 0) {
                blocks.push(BlockRef {
                    piece,
                    offset: b * BLOCK_LEN,
                    len: g.block_len(piece, b),
                });
            }
            bit += 1;
        }
    }
    let runs = plan::runs(&blocks, &g);
    assert_eq!(
        runs.iter().map(|r| r.blocks.len()).sum::<usize>(),
        blocks.len()
    );
    let content = |at: u64| (at % 253) as u8;
    let mut chunk_i = 0;
    for run in &runs {
        let start = |b: &BlockRef| g.piece_offset(b.piece) + u64::from(b.offset);
        assert_eq!(
            run.blocks.iter().map(|b| u64::from(b.len)).sum::<u64>(),
            run.len
        );
        assert_eq!(run.blocks.first().map(start), Some(run.offset));
        let parts = plan::parts(run, &layout, &info);
        assert_eq!(parts.iter().map(|p| p.len).sum::<u64>(), run.len);
        for p in &parts {
            let f = &info.files[p.file];
            assert!(p.len > 0 && p.first + p.len <= f.length);
            assert_eq!(p.pad, f.pad);
            let _ = plan::file_url("http://h/d/", &info, p.file);
            assert!(p.range_header().starts_with("bytes="));
        }
        // The server's body, in chunks, plus junk past the end.
        let mut body: Vec<u8> = (run.offset..run.offset + run.len).map(content).collect();
        body.extend(std::iter::repeat_n(0xAB, usize::from(shape.extra)));
        let mut cutter = plan::Cutter::new(run);
        let mut out: Vec<BlockRef> = Vec::new();
        let mut rest = &body[..];
        while !rest.is_empty() {
            let n = shape
                .chunks
                .get(chunk_i % shape.chunks.len().max(1))
                .map_or(rest.len(), |c| usize::from(*c) + 1)
                .min(rest.len());
            chunk_i += 1;
            cutter.push(&rest[..n], |b, bytes| {
                assert_eq!(bytes.len(), b.len as usize);
                let at = start(&b);
                assert!(bytes.iter().zip(at..).all(|(x, i)| *x == content(i)));
                out.push(b);
            });
            rest = &rest[n..];
        }
        assert_eq!(out, run.blocks);
    }
}
