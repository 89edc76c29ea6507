//! Maps byte ranges of the torrent's concatenated content onto files.
//! Pure: a piece that straddles three files becomes three spans.

/// Part of a read or write that falls in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Index into the torrent's file list.
    pub file: usize,
    /// Offset inside that file.
    pub file_offset: u64,
    /// Offset inside the caller's buffer.
    pub buf_offset: usize,
    /// Bytes in this span.
    pub len: usize,
}

/// File start offsets and lengths, sorted by offset.
#[derive(Debug, Clone)]
pub struct Layout {
    starts: Vec<u64>,
    lengths: Vec<u64>,
}

impl Layout {
    /// Builds a layout from file lengths in torrent order.
    pub fn new(lengths: impl IntoIterator<Item = u64>) -> Self {
        let lengths: Vec<u64> = lengths.into_iter().collect();
        let mut starts = Vec::with_capacity(lengths.len());
        let mut off = 0u64;
        for l in &lengths {
            starts.push(off);
            off += l;
        }
        Layout { starts, lengths }
    }

    /// Total content length.
    pub fn total(&self) -> u64 {
        self.starts
            .last()
            .map_or(0, |s| s + self.lengths.last().unwrap_or(&0))
    }

    /// Spans covering `[offset, offset+len)`; zero-length files are skipped.
    /// Ranges past the end are truncated (callers check ranges first).
    pub fn spans(&self, offset: u64, len: usize) -> Vec<Span> {
        let mut out = Vec::new();
        // First file whose end is past `offset`.
        let mut i = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let mut pos = offset;
        let end = offset + len as u64;
        while pos < end && i < self.starts.len() {
            let fstart = self.starts[i];
            let fend = fstart + self.lengths[i];
            if fend > pos {
                let take = fend.min(end) - pos;
                out.push(Span {
                    file: i,
                    file_offset: pos - fstart,
                    buf_offset: (pos - offset) as usize,
                    len: take as usize,
                });
                pos += take;
            }
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_file() {
        let l = Layout::new([100]);
        assert_eq!(
            l.spans(10, 20),
            vec![Span {
                file: 0,
                file_offset: 10,
                buf_offset: 0,
                len: 20
            }]
        );
        assert_eq!(l.total(), 100);
    }

    #[test]
    fn straddles_files_and_skips_empty_ones() {
        let l = Layout::new([10, 0, 5, 20]);
        let s = l.spans(8, 10);
        assert_eq!(
            s,
            vec![
                Span {
                    file: 0,
                    file_offset: 8,
                    buf_offset: 0,
                    len: 2
                },
                Span {
                    file: 2,
                    file_offset: 0,
                    buf_offset: 2,
                    len: 5
                },
                Span {
                    file: 3,
                    file_offset: 0,
                    buf_offset: 7,
                    len: 3
                },
            ]
        );
        assert_eq!(s.iter().map(|s| s.len).sum::<usize>(), 10);
    }

    #[test]
    fn starts_exactly_at_a_file_boundary() {
        let l = Layout::new([10, 10]);
        assert_eq!(l.spans(10, 10)[0].file, 1);
        assert_eq!(l.spans(10, 10)[0].file_offset, 0);
        assert!(l.spans(20, 5).is_empty());
    }
}
