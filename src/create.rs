//! Building a `.torrent` from files on disk.
//!
//! Synchronous on purpose: it is a batch job with nothing to wait on but the
//! disk, so plain `std::fs` and scoped threads beat an async runtime here. The
//! caller (the `create` subcommand) runs it on a blocking thread if it needs
//! to. The output is bencode with sorted keys, so the same files and options
//! always give the same bytes and the same info-hash.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use serde::Serialize;
use serde_bytes::ByteBuf;
use sha1::{Digest, Sha1};

mod v2;

use crate::metainfo::{MAX_FILES, MAX_PIECE_LENGTH, MAX_TOTAL_LENGTH};
use crate::storage::disk::HASH_READ_CHUNK;

/// Smallest piece length we pick or accept: the block size, below which
/// pieces only add hash overhead.
pub const MIN_PIECE_LENGTH: u32 = 16 * 1024;
/// Largest piece length the automatic choice goes to; bigger pieces make
/// peers wait too long before they can share anything.
pub const MAX_AUTO_PIECE_LENGTH: u32 = 16 * 1024 * 1024;

/// What to put in the torrent.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// A file (single-file torrent) or a folder (multi-file torrent).
    pub path: PathBuf,
    /// Announce URLs; each becomes its own tier.
    pub trackers: Vec<String>,
    /// Bytes per piece; `None` picks a power of two for ~1000–2000 pieces.
    pub piece_length: Option<u32>,
    /// Sets the BEP 27 private flag.
    pub private: bool,
    /// `comment`.
    pub comment: Option<String>,
    /// BEP 19 `url-list`.
    pub web_seeds: Vec<String>,
    /// `created by`; omitted when empty.
    pub created_by: String,
    /// `creation date`, seconds since the epoch; omitted when `None` so
    /// output can be reproducible.
    pub creation_date: Option<i64>,
    /// Which BitTorrent versions the torrent carries.
    pub format: Format,
}

/// The BitTorrent versions a new torrent carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// SHA-1 pieces (BEP 3): every client reads it, Transmission 3 too.
    V1,
    /// SHA-256 merkle trees per file (BEP 52) only.
    V2,
    /// Both halves over the same bytes, files aligned to pieces by pad
    /// files: the default, as in libtorrent and qBittorrent, so the torrent
    /// joins the v1 and the v2 swarm.
    #[default]
    Hybrid,
}

/// Why a torrent could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Reading the file system failed.
    #[error("reading {}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// All files together hold no bytes.
    #[error("nothing to share: the payload is 0 bytes")]
    EmptyPayload,
    /// Something that is neither a regular file nor a folder.
    #[error("{}: {what} is not supported", path.display())]
    Unsupported {
        /// The entry.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// A file name that cannot be written into a torrent.
    #[error("{}: file name is not allowed: {reason}", path.display())]
    BadName {
        /// The entry.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An explicit piece length that is not a power of two in range.
    #[error(
        "piece length {0} must be a power of two between 16 KiB and {max} MiB",
        max = MAX_PIECE_LENGTH >> 20
    )]
    BadPieceLength(u32),
    /// More files than a torrent may hold.
    #[error("more than {MAX_FILES} files")]
    TooManyFiles,
    /// More bytes than a torrent may hold.
    #[error("payload is over the 2^50 byte limit")]
    TooLarge,
}

/// One payload file: where it is and what it is called inside the torrent.
struct SourceFile {
    disk: PathBuf,
    /// Components below the torrent name (empty for a single-file torrent).
    rel: Vec<String>,
    length: u64,
    offset: u64,
}

#[derive(Serialize)]
struct TorrentOut<'a, I: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    announce: Option<&'a str>,
    #[serde(rename = "announce-list", skip_serializing_if = "Vec::is_empty")]
    announce_list: Vec<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
    #[serde(rename = "created by", skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
    #[serde(rename = "creation date", skip_serializing_if = "Option::is_none")]
    creation_date: Option<i64>,
    info: I,
    /// BEP 52: each file's piece layer, keyed by its `pieces root`.
    #[serde(rename = "piece layers", skip_serializing_if = "Option::is_none")]
    piece_layers: Option<std::collections::BTreeMap<ByteBuf, ByteBuf>>,
    #[serde(rename = "url-list", skip_serializing_if = "Vec::is_empty")]
    url_list: Vec<&'a str>,
}

#[derive(Serialize)]
struct InfoOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<Vec<FileOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<u64>,
    name: &'a str,
    #[serde(rename = "piece length")]
    piece_length: u32,
    #[serde(with = "serde_bytes")]
    pieces: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private: Option<u8>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    /// BEP 47 attributes: `p` for a pad file.
    #[serde(skip_serializing_if = "Option::is_none")]
    attr: Option<&'static str>,
    length: u64,
    path: Vec<&'a str>,
}

/// Builds the `.torrent` bytes for `opts.path`. `progress` is called on the
/// calling thread with the number of bytes hashed so far.
pub fn create_torrent(
    opts: &CreateOptions,
    progress: &dyn Fn(u64),
) -> Result<Vec<u8>, CreateError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CreateError::Io { path, source }
    };
    let meta = fs::metadata(&opts.path).map_err(io_err(&opts.path))?;
    // Canonicalize only to learn the name: `btc create .` should be named
    // after the folder, not ".".
    let canonical = fs::canonicalize(&opts.path).map_err(io_err(&opts.path))?;
    let name = file_name(&canonical)?;

    let mut files = Vec::new();
    let multi_file = meta.is_dir();
    if multi_file {
        walk(&opts.path, &mut Vec::new(), &mut files)?;
    } else if meta.is_file() {
        files.push(SourceFile {
            disk: opts.path.clone(),
            rel: Vec::new(),
            length: meta.len(),
            offset: 0,
        });
    } else {
        return Err(CreateError::Unsupported {
            path: opts.path.clone(),
            what: "a special file",
        });
    }

    let mut total: u64 = 0;
    for f in &mut files {
        f.offset = total;
        total = total
            .checked_add(f.length)
            .filter(|t| *t <= MAX_TOTAL_LENGTH)
            .ok_or(CreateError::TooLarge)?;
    }
    if total == 0 {
        return Err(CreateError::EmptyPayload);
    }

    let piece_length = match opts.piece_length {
        Some(pl) => {
            if !pl.is_power_of_two() || pl < MIN_PIECE_LENGTH || u64::from(pl) > MAX_PIECE_LENGTH {
                return Err(CreateError::BadPieceLength(pl));
            }
            pl
        }
        None => auto_piece_length(total),
    };

    if opts.format != Format::V1 {
        let built = v2::build(&files, multi_file, piece_length, opts.format, progress)?;
        let info = built.info(&name, piece_length, opts.private);
        return Ok(finish(opts, info, Some(built.layers.clone())));
    }
    let pieces = hash_pieces(&files, total, piece_length, progress)?;

    let info = InfoOut {
        files: multi_file.then(|| {
            files
                .iter()
                .map(|f| FileOut {
                    attr: None,
                    length: f.length,
                    path: f.rel.iter().map(String::as_str).collect(),
                })
                .collect()
        }),
        length: (!multi_file).then_some(total),
        name: &name,
        piece_length,
        pieces,
        private: opts.private.then_some(1),
    };
    Ok(finish(opts, info, None))
}

/// The whole `.torrent` around `info`: trackers, comment, dates, web seeds
/// and (v2) the piece layers.
fn finish<I: Serialize>(
    opts: &CreateOptions,
    info: I,
    piece_layers: Option<std::collections::BTreeMap<ByteBuf, ByteBuf>>,
) -> Vec<u8> {
    let trackers: Vec<&str> = opts
        .trackers
        .iter()
        .map(String::as_str)
        .filter(|t| !t.is_empty())
        .collect();
    let out = TorrentOut {
        announce: trackers.first().copied(),
        announce_list: if trackers.len() > 1 {
            trackers.iter().map(|t| vec![*t]).collect()
        } else {
            Vec::new()
        },
        comment: opts.comment.as_deref().filter(|c| !c.is_empty()),
        created_by: &opts.created_by,
        creation_date: opts.creation_date,
        info,
        piece_layers: piece_layers.filter(|l| !l.is_empty()),
        url_list: opts
            .web_seeds
            .iter()
            .map(String::as_str)
            .filter(|w| !w.is_empty())
            .collect(),
    };
    crate::bencode::encode(&out)
}

/// The smallest power of two that gives at most 2000 pieces (so between
/// 1000 and 2000 unless clamped), within [16 KiB, 16 MiB].
pub fn auto_piece_length(total: u64) -> u32 {
    let mut pl = MIN_PIECE_LENGTH;
    while pl < MAX_AUTO_PIECE_LENGTH && total.div_ceil(u64::from(pl)) > 2000 {
        pl *= 2;
    }
    pl
}

fn file_name(path: &Path) -> Result<String, CreateError> {
    let name = path.file_name().ok_or_else(|| CreateError::BadName {
        path: path.to_path_buf(),
        reason: "it has no name (file system root?)",
    })?;
    let name = name.to_str().ok_or_else(|| CreateError::BadName {
        path: path.to_path_buf(),
        reason: "it is not valid UTF-8",
    })?;
    if let Some(reason) = crate::metainfo::component_problem(name) {
        return Err(CreateError::BadName {
            path: path.to_path_buf(),
            reason,
        });
    }
    Ok(name.to_owned())
}

/// Depth-first walk with children sorted byte-wise by name, which orders the
/// files by their path components and makes the output deterministic.
/// Symlinks are followed to regular files; a symlink to a folder is refused,
/// because following it could loop or pull in files from anywhere.
fn walk(dir: &Path, rel: &mut Vec<String>, out: &mut Vec<SourceFile>) -> Result<(), CreateError> {
    let io_err = |source| CreateError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        entries.push((entry.file_name().as_encoded_bytes().to_vec(), entry.path()));
    }
    entries.sort();
    for (_, path) in entries {
        let name = file_name(&path)?;
        let lmeta = fs::symlink_metadata(&path).map_err(|source| CreateError::Io {
            path: path.clone(),
            source,
        })?;
        let meta = if lmeta.file_type().is_symlink() {
            fs::metadata(&path).map_err(|source| CreateError::Io {
                path: path.clone(),
                source,
            })?
        } else {
            lmeta.clone()
        };
        rel.push(name);
        if meta.is_dir() {
            if lmeta.file_type().is_symlink() {
                return Err(CreateError::Unsupported {
                    path,
                    what: "a symlink to a folder",
                });
            }
            walk(&path, rel, out)?;
        } else if meta.is_file() {
            if out.len() >= MAX_FILES {
                return Err(CreateError::TooManyFiles);
            }
            out.push(SourceFile {
                disk: path,
                rel: rel.clone(),
                length: meta.len(),
                offset: 0,
            });
        } else {
            return Err(CreateError::Unsupported {
                path,
                what: "a special file",
            });
        }
        rel.pop();
    }
    Ok(())
}

/// Hashes every piece on one worker per core. Workers take the next
/// [`HASH_BATCH_BYTES`] worth of pieces from a shared counter, so a worker
/// slowed down (a busy core, a slow read) does not leave the others idle at
/// the end, while each still reads runs of consecutive pieces (which the
/// kernel's readahead on its own file handle follows better than every
/// other piece). Workers report bytes read over a channel;
/// the calling thread turns that into `progress` calls, so `progress` need
/// not be thread-safe.
fn hash_pieces(
    files: &[SourceFile],
    total: u64,
    piece_length: u32,
    progress: &dyn Fn(u64),
) -> Result<Vec<u8>, CreateError> {
    let count = total.div_ceil(u64::from(piece_length));
    let workers = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
        .clamp(1, count);
    let batch = (HASH_BATCH_BYTES / u64::from(piece_length)).max(1);
    let next = AtomicU64::new(0);
    let (tx, rx) = mpsc::channel::<u64>();
    let results: Vec<Result<Vec<PieceHash>, CreateError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let tx = tx.clone();
                let next = &next;
                s.spawn(move || {
                    let mut reader = PieceReader::new(piece_length);
                    let mut done = Vec::new();
                    loop {
                        let first = next.fetch_add(batch, Ordering::Relaxed);
                        if first >= count {
                            return Ok(done);
                        }
                        for piece in first..(first + batch).min(count) {
                            let start = piece * u64::from(piece_length);
                            let len = (total - start).min(u64::from(piece_length));
                            match reader.hash(files, start, len) {
                                Ok(h) => done.push((piece, h)),
                                Err(e) => {
                                    // Stop the others early too.
                                    next.store(count, Ordering::Relaxed);
                                    return Err(e);
                                }
                            }
                            // The receiver only goes away if the caller is
                            // unwinding; nothing to do then.
                            let _ = tx.send(len);
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let mut done = 0u64;
        for n in rx {
            done += n;
            progress(done);
        }
        handles
            .into_iter()
            .map(|h| {
                // A worker only panics on a bug in this module; surface it as
                // an I/O-style error instead of tearing down the caller.
                h.join().unwrap_or_else(|_| {
                    Err(CreateError::Io {
                        path: PathBuf::new(),
                        source: io::Error::other("hashing thread panicked"),
                    })
                })
            })
            .collect()
    });
    let mut pieces = vec![0u8; count as usize * 20];
    for r in results {
        for (piece, h) in r? {
            let at = piece as usize * 20;
            pieces[at..at + 20].copy_from_slice(&h);
        }
    }
    Ok(pieces)
}

/// Bytes of consecutive pieces a hashing worker takes at a time (at least
/// one piece).
const HASH_BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// A piece's index and its SHA-1.
type PieceHash = (u64, [u8; 20]);

/// One worker's reading state: the file open last and a small buffer.
/// Each piece is hashed a chunk at a time, through the buffer (see
/// `HASH_READ_CHUNK` for why small).
struct PieceReader {
    open: Option<(usize, File)>,
    buf: Vec<u8>,
}

impl PieceReader {
    fn new(piece_length: u32) -> Self {
        PieceReader {
            open: None,
            buf: vec![0u8; HASH_READ_CHUNK.min(piece_length as usize)],
        }
    }

    /// SHA-1 of the `len` payload bytes at `start`, reading across file
    /// boundaries as needed.
    fn hash(
        &mut self,
        files: &[SourceFile],
        start: u64,
        len: u64,
    ) -> Result<[u8; 20], CreateError> {
        let mut hasher = Sha1::new();
        let mut filled = 0u64;
        while filled < len {
            let pos = start + filled;
            // The file holding byte `pos` (empty files hold none and are skipped).
            let idx = files.partition_point(|f| f.offset + f.length <= pos);
            let Some(f) = files.get(idx) else {
                return Err(CreateError::Io {
                    path: PathBuf::new(),
                    source: io::Error::other("piece past the end of the payload"),
                });
            };
            let in_file = pos - f.offset;
            let take = (f.length - in_file)
                .min(len - filled)
                .min(self.buf.len() as u64) as usize;
            let io_err = |source| CreateError::Io {
                path: f.disk.clone(),
                source,
            };
            let file = match &mut self.open {
                Some((i, file)) if *i == idx => file,
                _ => {
                    let file = File::open(&f.disk).map_err(io_err)?;
                    &mut self.open.insert((idx, file)).1
                }
            };
            file.read_exact_at(&mut self.buf[..take], in_file)
                .map_err(io_err)?;
            hasher.update(&self.buf[..take]);
            filled += take as u64;
        }
        Ok(hasher.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::Metainfo;
    use std::cell::Cell;

    fn content(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect()
    }

    fn opts(path: &Path) -> CreateOptions {
        CreateOptions {
            path: path.to_path_buf(),
            created_by: "btc test".into(),
            format: Format::V1,
            ..Default::default()
        }
    }

    /// libtorrent's golden hybrid and v2-only torrents, remade from the
    /// same payload: the same info dict, so the same v1 and v2 hashes.
    #[test]
    fn hybrid_and_v2_match_libtorrent_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("hybrid");
        for (p, data) in crate::metainfo::v2::tests::golden_payload() {
            let full = root.join(p);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, data).unwrap();
        }
        let golden = |name: &str| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata/torrents")
                .join(name);
            Metainfo::from_bytes(&fs::read(path).unwrap()).unwrap()
        };
        for (format, name) in [
            (Format::Hybrid, "hybrid-libtorrent.torrent"),
            (Format::V2, "v2-libtorrent.torrent"),
        ] {
            let mut o = opts(&root);
            o.piece_length = Some(32768);
            o.format = format;
            let ours = Metainfo::from_bytes(&create_torrent(&o, &|_| {}).unwrap()).unwrap();
            let theirs = golden(name);
            assert_eq!(ours.info_bytes, theirs.info_bytes, "{format:?}");
            assert_eq!(ours.info_hash, theirs.info_hash, "{format:?}");
            assert_eq!(ours.v2, theirs.v2, "{format:?}");
        }
    }

    #[test]
    fn a_single_file_hybrid_and_v2_parse_and_check_every_piece() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("one.bin");
        let data = content(100_000, 9);
        fs::write(&file, &data).unwrap();
        for format in [Format::Hybrid, Format::V2] {
            let mut o = opts(&file);
            o.piece_length = Some(16384);
            o.format = format;
            let m = Metainfo::from_bytes(&create_torrent(&o, &|_| {}).unwrap()).unwrap();
            assert!(m.v2.is_some());
            assert_eq!(m.info.files.iter().filter(|f| !f.pad).count(), 1);
            let mut aligned = data.clone();
            aligned.resize(m.info.total_length as usize, 0);
            for (i, piece) in aligned.chunks(16384).enumerate() {
                assert!(m.info.piece_matches(i, piece), "{format:?} piece {i}");
            }
        }
    }

    #[test]
    fn multi_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("payload");
        // Created out of order on purpose; the torrent must list them sorted.
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("z.bin", content(20_001, 1)),
            ("a/deep/er/x.txt", content(40_000, 2)),
            ("a/b.bin", content(5, 3)),
            ("a/empty", Vec::new()),
            ("B.txt", content(16_384, 4)),
            ("a/deep/y.txt", content(33_000, 5)),
        ];
        for (p, data) in &files {
            let full = root.join(p);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, data).unwrap();
        }
        let mut o = opts(&root);
        o.piece_length = Some(16 * 1024);
        o.trackers = vec!["http://a/announce".into(), "udp://b:1/announce".into()];
        o.web_seeds = vec!["http://seed/".into()];
        o.comment = Some("hello".into());
        o.private = true;
        o.creation_date = Some(1_700_000_000);
        let last = Cell::new(0u64);
        let bytes = create_torrent(&o, &|n| {
            assert!(n >= last.get());
            last.set(n);
        })
        .unwrap();
        let m = Metainfo::from_bytes(&bytes).unwrap();

        let order = [
            "B.txt",
            "a/b.bin",
            "a/deep/er/x.txt",
            "a/deep/y.txt",
            "a/empty",
            "z.bin",
        ];
        let got: Vec<String> = m.info.files.iter().map(|f| f.path.join("/")).collect();
        let want: Vec<String> = order.iter().map(|p| format!("payload/{p}")).collect();
        assert_eq!(got, want);
        let mut concat = Vec::new();
        for p in order {
            let data = &files.iter().find(|(q, _)| *q == p).unwrap().1;
            let f = m
                .info
                .files
                .iter()
                .find(|f| f.path.join("/") == format!("payload/{p}"))
                .unwrap();
            assert_eq!(f.length, data.len() as u64);
            assert_eq!(f.offset, concat.len() as u64);
            concat.extend_from_slice(data);
        }
        assert_eq!(last.get(), concat.len() as u64);
        assert_eq!(m.info.total_length, concat.len() as u64);
        assert!(m.info.multi_file);
        assert!(m.info.private);
        assert_eq!(m.info.name, "payload");
        let want_hashes: Vec<[u8; 20]> = concat
            .chunks(16 * 1024)
            .map(|c| Sha1::digest(c).into())
            .collect();
        assert_eq!(m.info.pieces, want_hashes);
        assert_eq!(m.announce.as_deref(), Some("http://a/announce"));
        assert_eq!(
            m.tracker_tiers(),
            vec![
                vec!["http://a/announce".to_string()],
                vec!["udp://b:1/announce".to_string()]
            ]
        );
        assert_eq!(m.url_list, vec!["http://seed/".to_string()]);
        assert_eq!(m.comment.as_deref(), Some("hello"));
        assert_eq!(m.created_by.as_deref(), Some("btc test"));
        assert_eq!(m.creation_date, Some(1_700_000_000));

        // Deterministic: same input, same bytes.
        assert_eq!(create_torrent(&o, &|_| {}).unwrap(), bytes);
    }

    #[test]
    fn single_file_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.bin");
        let data = content(100_000, 9);
        fs::write(&path, &data).unwrap();
        let mut o = opts(&path);
        o.trackers = vec!["http://only/announce".into()];
        let bytes = create_torrent(&o, &|_| {}).unwrap();
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert!(!m.info.multi_file);
        assert!(!m.info.private);
        assert_eq!(m.info.files[0].path, vec!["one.bin".to_string()]);
        assert_eq!(m.info.piece_length, MIN_PIECE_LENGTH);
        assert_eq!(m.announce.as_deref(), Some("http://only/announce"));
        assert!(m.announce_list.is_empty());
        assert_eq!(m.creation_date, None);
        let want: Vec<[u8; 20]> = data
            .chunks(16 * 1024)
            .map(|c| Sha1::digest(c).into())
            .collect();
        assert_eq!(m.info.pieces, want);
        // Keys are sorted and optional ones absent.
        assert!(!bytes.windows(7).any(|w| w == b"private"));
        assert!(!bytes.windows(8).any(|w| w == b"url-list"));
    }

    #[test]
    fn refuses_empty_payload_and_bad_piece_length() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("empty");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/zero"), b"").unwrap();
        assert!(matches!(
            create_torrent(&opts(&root), &|_| {}),
            Err(CreateError::EmptyPayload)
        ));
        fs::write(root.join("x"), b"data").unwrap();
        let mut o = opts(&root);
        o.piece_length = Some(20_000);
        assert!(matches!(
            create_torrent(&o, &|_| {}),
            Err(CreateError::BadPieceLength(20_000))
        ));
        o.piece_length = Some(1024);
        assert!(matches!(
            create_torrent(&o, &|_| {}),
            Err(CreateError::BadPieceLength(1024))
        ));
        assert!(matches!(
            create_torrent(&opts(&dir.path().join("missing")), &|_| {}),
            Err(CreateError::Io { .. })
        ));
        // A zero-length file next to data is fine and parses back.
        let m = Metainfo::from_bytes(&create_torrent(&opts(&root), &|_| {}).unwrap()).unwrap();
        assert_eq!(m.info.files.len(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn follows_file_symlinks_and_refuses_folder_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.bin");
        fs::write(&outside, b"outside").unwrap();
        let root = dir.path().join("p");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let m = Metainfo::from_bytes(&create_torrent(&opts(&root), &|_| {}).unwrap()).unwrap();
        assert_eq!(m.info.total_length, 7);
        std::os::unix::fs::symlink(dir.path(), root.join("loop")).unwrap();
        assert!(matches!(
            create_torrent(&opts(&root), &|_| {}),
            Err(CreateError::Unsupported { .. })
        ));
    }

    #[test]
    fn auto_piece_length_targets_one_to_two_thousand_pieces() {
        assert_eq!(auto_piece_length(1), MIN_PIECE_LENGTH);
        assert_eq!(auto_piece_length(1 << 40), MAX_AUTO_PIECE_LENGTH);
        for total in [100u64 << 20, 700 << 20, 4 << 30, 10 << 30] {
            let pl = auto_piece_length(total);
            assert!(pl.is_power_of_two());
            let n = total.div_ceil(u64::from(pl));
            assert!((1000..=2000).contains(&n), "{total}: {pl} -> {n}");
        }
    }

    /// The payload generator of `testdata/make-golden.sh`: SHA-1 of
    /// "{seed}:{i}" for i = 0, 1, 2, … concatenated.
    fn golden_payload(seed: &str, len: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(len + 20);
        let mut i = 0;
        while buf.len() < len {
            buf.extend_from_slice(&Sha1::digest(format!("{seed}:{i}").as_bytes()));
            i += 1;
        }
        buf.truncate(len);
        buf
    }

    #[test]
    fn same_info_hash_as_mktorrent() {
        // (seed, length, private, info-hash mktorrent gave; see testdata/README.md)
        let cases = [
            (
                "single",
                100_000,
                false,
                "85597bf454e16d09ac349215cf70a88b4ac42ec0",
            ),
            (
                "private",
                50_000,
                true,
                "00a56e7f9f9b273648b7ad2163709b508dbb599c",
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (seed, len, private, hash) in cases {
            let path = dir.path().join(format!("{seed}.bin"));
            fs::write(&path, golden_payload(seed, len)).unwrap();
            let mut o = opts(&path);
            o.piece_length = Some(32 * 1024);
            o.private = private;
            let m = Metainfo::from_bytes(&create_torrent(&o, &|_| {}).unwrap()).unwrap();
            assert_eq!(m.info_hash.to_hex(), hash, "{seed}");
        }
    }

    #[test]
    fn same_info_hash_as_mktorrent_for_a_folder() {
        // testdata/make-golden.sh's "multi" folder; 32 KiB pieces cross files.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("multi");
        for (rel, len, seed) in [
            ("a.txt", 10_000, "a"),
            ("sub/b.bin", 30_000, "b"),
            ("sub/deeper/c.bin", 5_000, "c"),
            ("z.dat", 20_001, "z"),
        ] {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, golden_payload(seed, len)).unwrap();
        }
        let mut o = opts(&root);
        o.piece_length = Some(32 * 1024);
        let m = Metainfo::from_bytes(&create_torrent(&o, &|_| {}).unwrap()).unwrap();
        assert_eq!(
            m.info_hash.to_hex(),
            "a5e9ac19452c380a671961148be5b5b0a8c20aff"
        );
    }
}
