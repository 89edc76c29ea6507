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

/// Checks a response's status and framing headers against the range asked
/// for, before any byte of its body is taken. `Err` says what is wrong.
///
/// - `206 Partial Content` must carry `Content-Range: bytes A-B/T` with
///   exactly the asked-for `A` and `B`, and `T` either `*` or the file's
///   length (a server with another version of the file must not feed us
///   bytes from the wrong place).
/// - `200 OK` (a server that ignores `Range`) is only taken when the whole
///   file is what was asked for.
/// - A `Content-Length`, when present, must be the number of bytes asked
///   for; a bigger one is never read, a smaller one would end short.
///
/// The status errors are reported apart ([`Framing::Status`]) because they
/// are a server's way of saying no rather than a lie.
pub fn check_framing(
    status: u16,
    content_range: Option<&str>,
    content_length: Option<u64>,
    part: &Part,
    file_len: u64,
) -> Result<(), Framing> {
    let whole_file = part.first == 0 && part.len == file_len;
    let want = match status {
        206 => {
            let Some(cr) = content_range else {
                return Err(Framing::Bad("206 without a Content-Range".into()));
            };
            let last = part.first + part.len - 1;
            let ok = parse_content_range(cr).is_some_and(|(a, b, t)| {
                a == part.first && b == last && t.is_none_or(|t| t == file_len)
            });
            if !ok {
                return Err(Framing::Bad(format!(
                    "Content-Range {cr:?} does not match the bytes {}-{last}/{file_len} asked for",
                    part.first
                )));
            }
            part.len
        }
        200 if whole_file => file_len,
        other => return Err(Framing::Status(other)),
    };
    match content_length {
        Some(n) if n != want => Err(Framing::Bad(format!(
            "Content-Length {n} for the {want} bytes asked for"
        ))),
        _ => Ok(()),
    }
}

/// Why [`check_framing`] refused a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// A status other than the two we can use.
    Status(u16),
    /// Headers that do not fit the request.
    Bad(String),
}

/// `bytes A-B/T` (T may be `*`) as `(A, B, T)`, with `A <= B`.
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.trim().split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (a <= b).then_some((a, b, total))
}

/// Whether a web seed may follow a redirect from `from` (the URL the
/// torrent named) to `to`. See [`super::MAX_REDIRECTS`] for the policy.
pub fn redirect_allowed(from: &reqwest::Url, to: &reqwest::Url) -> Result<(), &'static str> {
    if !matches!(to.scheme(), "http" | "https") {
        return Err("redirect to a scheme other than http(s)");
    }
    if is_private_host(to) && !is_private_host(from) {
        return Err("redirect from a public host into a private network");
    }
    Ok(())
}

/// A loopback, private, link-local or unspecified address literal, or a
/// `localhost` name.
fn is_private_host(u: &reqwest::Url) -> bool {
    use std::net::IpAddr;
    let Some(host) = u.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = bare.parse::<IpAddr>() else {
        let d = host.trim_end_matches('.').to_ascii_lowercase();
        return d == "localhost" || d.ends_with(".localhost");
    };
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(a) => {
            a.is_loopback()
                || a.is_unspecified()
                || (a.segments()[0] & 0xfe00) == 0xfc00
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
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
                    attr: Default::default(),
                }
            })
            .collect();
        let total = files.iter().map(|f| f.length).sum();
        Info {
            name: name.into(),
            piece_length: 32768,
            pieces: vec![[0; 20]; 1],
            v2_pieces: None,
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

    fn part(first: u64, len: u64) -> Part {
        Part {
            file: 0,
            first,
            len,
            pad: false,
        }
    }

    /// Responses whose headers do not fit the request are refused before
    /// a byte of their body is taken.
    #[test]
    fn framing_must_match_the_range_asked_for() {
        let p = part(100, 50);
        let ok = |cr: &str| check_framing(206, Some(cr), Some(50), &p, 1000);
        assert_eq!(ok("bytes 100-149/1000"), Ok(()));
        assert_eq!(ok("bytes 100-149/*"), Ok(()));
        assert_eq!(
            check_framing(206, Some("bytes 100-149/1000"), None, &p, 1000),
            Ok(())
        );
        // Another range, another file length, junk, no header.
        for cr in [
            "bytes 0-49/1000",
            "bytes 100-199/1000",
            "bytes 100-149/999",
            "bytes 149-100/1000",
            "100-149/1000",
            "bytes 100-149",
            "bytes x-y/z",
        ] {
            assert!(matches!(ok(cr), Err(Framing::Bad(_))), "{cr}");
        }
        assert!(matches!(
            check_framing(206, None, Some(50), &p, 1000),
            Err(Framing::Bad(_))
        ));
        // A declared length other than what was asked for: a gigabyte, or short.
        assert!(matches!(
            check_framing(206, Some("bytes 100-149/1000"), Some(1 << 30), &p, 1000),
            Err(Framing::Bad(m)) if m.contains("1073741824")
        ));
        assert!(matches!(
            check_framing(206, Some("bytes 100-149/1000"), Some(49), &p, 1000),
            Err(Framing::Bad(_))
        ));
        // 200 only for the whole file, with the file's length.
        assert_eq!(
            check_framing(200, None, Some(1000), &part(0, 1000), 1000),
            Ok(())
        );
        assert_eq!(check_framing(200, None, None, &part(0, 1000), 1000), Ok(()));
        assert!(matches!(
            check_framing(200, None, Some(2000), &part(0, 1000), 1000),
            Err(Framing::Bad(_))
        ));
        assert_eq!(
            check_framing(200, None, Some(1000), &p, 1000),
            Err(Framing::Status(200))
        );
        assert_eq!(
            check_framing(404, None, None, &p, 1000),
            Err(Framing::Status(404))
        );
    }

    /// Redirects stay on http(s) and never lead from a public host into a
    /// private network; between public hosts (mirrors) they are followed.
    #[test]
    fn redirects_never_enter_a_private_network_from_outside() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        let public = u("http://seed.example/files/a");
        assert!(redirect_allowed(&public, &u("https://mirror3.example/a")).is_ok());
        assert!(redirect_allowed(&public, &u("http://93.184.216.34/a")).is_ok());
        for private in [
            "http://127.0.0.1/a",
            "http://localhost:8080/a",
            "http://10.1.2.3/a",
            "http://192.168.1.1/admin",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/a",
            "http://[fe80::1]/a",
            "http://[::ffff:127.0.0.1]/a",
            "http://0.0.0.0/a",
        ] {
            assert!(redirect_allowed(&public, &u(private)).is_err(), "{private}");
        }
        assert!(redirect_allowed(&public, &u("ftp://seed.example/a")).is_err());
        // A web seed on the local network may redirect within it.
        let local = u("http://192.168.1.5/files/a");
        assert!(redirect_allowed(&local, &u("http://192.168.1.6/a")).is_ok());
        assert!(redirect_allowed(&u("http://127.0.0.1:80/a"), &u("http://127.0.0.2:81/a")).is_ok());
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
