//! What to ask a web seed (BEP 19) for: file URLs, contiguous runs of
//! blocks, and the HTTP byte ranges that cover them. Pure: no I/O.
//!
//! A web seed is a plain HTTP server holding the torrent's files. It knows
//! nothing of pieces, so blocks the picker hands out are merged into runs
//! of consecutive bytes, and a run that crosses a file boundary becomes one
//! range request per file. The bytes of a run arrive in order, which lets
//! the caller cut them back into blocks as they stream in.

use crate::geometry::Geometry;
use crate::metainfo::Info;
use crate::peer::message::BlockRef;
use crate::storage::layout::Layout;
use crate::tracker::announce::percent_encode_into;

/// Consecutive blocks, fetched as one stream of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Offset of the first byte in the torrent's concatenated content.
    pub offset: u64,
    /// Total bytes.
    pub len: u64,
    /// The blocks, in content order.
    pub blocks: Vec<BlockRef>,
}

/// One HTTP range request: bytes `first..first+len` of file `file`; or,
/// for a BEP 47 pad file, which no server holds, that many zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Index into the torrent's file list.
    pub file: usize,
    /// First byte wanted, inside the file.
    pub first: u64,
    /// Bytes wanted (> 0).
    pub len: u64,
    /// The file is padding: make the zeros, do not fetch them.
    pub pad: bool,
}

impl Part {
    /// The `Range` header value (RFC 9110: both ends inclusive).
    pub fn range_header(&self) -> String {
        format!("bytes={}-{}", self.first, self.first + self.len - 1)
    }
}

/// The URL of file `file` of `info` on the web seed `base` (BEP 19): a
/// single-file torrent's URL names the file itself unless it ends in `/`;
/// otherwise the torrent's path (name first) is appended, each component
/// percent-encoded.
pub fn file_url(base: &str, info: &Info, file: usize) -> String {
    if !info.multi_file && !base.ends_with('/') {
        return base.to_string();
    }
    let mut url = base.to_string();
    if !url.ends_with('/') {
        url.push('/');
    }
    let components: &[String] = match info.files.get(file) {
        Some(f) if info.multi_file => &f.path,
        _ => std::slice::from_ref(&info.name),
    };
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            url.push('/');
        }
        percent_encode_into(&mut url, c.as_bytes());
    }
    url
}

/// Groups `blocks` into runs of consecutive bytes (across piece boundaries
/// too), in content order.
pub fn runs(blocks: &[BlockRef], geometry: &Geometry) -> Vec<Run> {
    let start = |b: &BlockRef| geometry.piece_offset(b.piece) + b.offset as u64;
    let mut sorted = blocks.to_vec();
    sorted.sort_unstable_by_key(start);
    let mut out: Vec<Run> = Vec::new();
    for b in sorted {
        let at = start(&b);
        match out.last_mut() {
            Some(run) if run.offset + run.len == at => {
                run.len += b.len as u64;
                run.blocks.push(b);
            }
            _ => out.push(Run {
                offset: at,
                len: b.len as u64,
                blocks: vec![b],
            }),
        }
    }
    out
}

/// The range requests that fetch `run` (a layout of `info`'s files), in
/// order; empty files are skipped.
pub fn parts(run: &Run, layout: &Layout, info: &Info) -> Vec<Part> {
    let Ok(len) = usize::try_from(run.len) else {
        return Vec::new();
    };
    layout
        .spans(run.offset, len)
        .into_iter()
        .map(|s| Part {
            file: s.file,
            first: s.file_offset,
            len: s.len as u64,
            pad: info.files.get(s.file).is_some_and(|f| f.pad),
        })
        .collect()
}

/// Cuts the byte stream of a run back into its blocks. Holds at most one
/// partial block; whole blocks inside a chunk are passed on without a copy.
#[derive(Debug)]
pub struct Cutter<'a> {
    blocks: &'a [BlockRef],
    next: usize,
    buf: Vec<u8>,
}

impl<'a> Cutter<'a> {
    /// A cutter for `run`'s blocks.
    pub fn new(run: &'a Run) -> Self {
        Cutter {
            blocks: &run.blocks,
            next: 0,
            buf: Vec::new(),
        }
    }

    /// Feeds the next bytes of the run; calls `emit` for each block that
    /// is now whole. Bytes past the run's end are ignored.
    pub fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(BlockRef, &[u8])) {
        while !bytes.is_empty() && self.next < self.blocks.len() {
            let block = self.blocks[self.next];
            let len = block.len as usize;
            if self.buf.is_empty() && bytes.len() >= len {
                emit(block, &bytes[..len]);
                bytes = &bytes[len..];
                self.next += 1;
                continue;
            }
            let take = (len - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == len {
                emit(block, &self.buf);
                self.buf.clear();
                self.next += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::FileEntry;

    fn info(name: &str, files: &[(&[&str], u64)], multi: bool) -> Info {
        let mut offset = 0;
        let files: Vec<FileEntry> = files
            .iter()
            .map(|(p, l)| {
                offset += l;
                FileEntry {
                    path: p.iter().map(|s| s.to_string()).collect(),
                    length: *l,
                    offset: offset - l,
                    md5sum: None,
                    pad: p.contains(&".pad"),
                }
            })
            .collect();
        let total = files.iter().map(|f| f.length).sum();
        Info {
            name: name.into(),
            piece_length: 32768,
            pieces: vec![[0; 20]; 1],
            private: false,
            files,
            total_length: total,
            multi_file: multi,
        }
    }

    #[test]
    fn urls_follow_bep_19() {
        let single = info("a b.iso", &[(&["a b.iso"], 10)], false);
        assert_eq!(
            file_url("http://h/x/file.iso", &single, 0),
            "http://h/x/file.iso"
        );
        assert_eq!(file_url("http://h/x/", &single, 0), "http://h/x/a%20b.iso");
        let multi = info(
            "dir",
            &[(&["dir", "sub", "ä#?.txt"], 1), (&["dir", "b"], 2)],
            true,
        );
        assert_eq!(
            file_url("http://h/seed", &multi, 0),
            "http://h/seed/dir/sub/%C3%A4%23%3F.txt"
        );
        assert_eq!(file_url("http://h/seed/", &multi, 1), "http://h/seed/dir/b");
    }

    #[test]
    fn runs_merge_consecutive_blocks_across_pieces() {
        let g = Geometry::new(4 * 32768, 32768);
        let b = |piece, offset| BlockRef {
            piece,
            offset,
            len: 16384,
        };
        let got = runs(&[b(1, 0), b(0, 16384), b(3, 0), b(1, 16384)], &g);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].offset, 16384);
        assert_eq!(got[0].len, 3 * 16384);
        assert_eq!(got[0].blocks, vec![b(0, 16384), b(1, 0), b(1, 16384)]);
        assert_eq!(got[1].offset, 3 * 32768);
        assert_eq!(got[1].blocks, vec![b(3, 0)]);
        assert!(runs(&[], &g).is_empty());
    }

    #[test]
    fn parts_split_at_file_boundaries_and_skip_empty_files() {
        let files: &[(&[&str], u64)] = &[
            (&["t", "a"], 10),
            (&["t", "e"], 0),
            (&["t", ".pad", "20"], 20),
            (&["t", "b"], 5),
        ];
        let info = info("t", files, true);
        let layout = Layout::new([10, 0, 20, 5]);
        let run = Run {
            offset: 5,
            len: 27,
            blocks: Vec::new(),
        };
        let got = parts(&run, &layout, &info);
        assert_eq!(
            got,
            vec![
                Part {
                    file: 0,
                    first: 5,
                    len: 5,
                    pad: false
                },
                Part {
                    file: 2,
                    first: 0,
                    len: 20,
                    pad: true
                },
                Part {
                    file: 3,
                    first: 0,
                    len: 2,
                    pad: false
                },
            ]
        );
        assert_eq!(got[0].range_header(), "bytes=5-9");
    }

    #[test]
    fn cutter_rebuilds_blocks_from_any_chunking() {
        let g = Geometry::new(3 * 16384 + 100, 16384);
        let blocks: Vec<BlockRef> = (0..4)
            .map(|p| BlockRef {
                piece: p,
                offset: 0,
                len: g.block_len(p, 0),
            })
            .collect();
        let run = &runs(&blocks, &g)[0];
        let bytes: Vec<u8> = (0..run.len).map(|i| (i % 251) as u8).collect();
        for chunk in [1, 7, 16384, 16385, 40000, bytes.len()] {
            let mut cutter = Cutter::new(run);
            let mut got: Vec<(BlockRef, Vec<u8>)> = Vec::new();
            for c in bytes.chunks(chunk) {
                cutter.push(c, |b, d| got.push((b, d.to_vec())));
            }
            // Extra bytes after the run are ignored.
            cutter.push(&[1, 2, 3], |b, d| got.push((b, d.to_vec())));
            assert_eq!(got.len(), 4, "chunk {chunk}");
            let mut at = 0;
            for (b, d) in &got {
                assert_eq!(d.len(), b.len as usize);
                assert_eq!(d[..], bytes[at..at + d.len()]);
                at += d.len();
            }
        }
    }
}
