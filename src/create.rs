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
mod tests;
