//! Resume data: what a run knew about its files when it stopped, so the
//! next start can skip hashing what did not change. No I/O.
//!
//! One bencoded dictionary per torrent:
//! - `version`: [`VERSION`];
//! - `info-hash`: the torrent's 20-byte info-hash;
//! - `output`: the absolute output folder the data belongs to (raw bytes);
//! - `files`: one dictionary per torrent file, in torrent order:
//!   `{size, mtime}` (bytes, nanoseconds since the epoch) when the file
//!   existed, `{}` for pad files and files that were missing;
//! - `have`: the bitfield of verified pieces (wire order).
//!
//! The bitfield is taken *before* the files are examined: every piece in it
//! was on disk when the sizes and times were read. A piece is trusted at
//! the next start when every file it touches still has the same size and
//! modification time ([`trusted`]); the rest are hashed as usual.
//!
//! Known limit: file times come from the kernel's coarse clock (a tick of
//! a few milliseconds). Another program rewriting a file in place, size
//! unchanged, within the same tick as a save goes unnoticed; `--check`
//! hashes everything. btc's own writes cannot fool it: a piece written in
//! that tick is not in the saved set, so at worst it is fetched again.
//!
//! The file is outside data (it may be truncated, stale, or planted):
//! [`decode`] caps its length and value count from what the torrent
//! allows before anything is allocated, and never panics.

use crate::bencode::{self, Limits};
use crate::bitfield::Bitfield;
use crate::id::InfoHash;
use crate::metainfo::FileEntry;
use serde::{Deserialize, Serialize};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// Format version written and accepted.
pub const VERSION: i64 = 1;

/// Longest output folder path accepted (Linux `PATH_MAX`).
pub const MAX_OUTPUT_LEN: usize = 4096;

/// What is known of one file: enough to notice that it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Length in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// One torrent's resume data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeData {
    /// The torrent's info-hash.
    pub info_hash: InfoHash,
    /// The absolute output folder.
    pub output: PathBuf,
    /// Per torrent file: its stamp, `None` for pad files and missing files.
    pub files: Vec<Option<FileStamp>>,
    /// Pieces verified and on disk when the stamps were taken.
    pub have: Bitfield,
}

/// What the torrent being started expects of its resume data.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Its info-hash.
    pub info_hash: InfoHash,
    /// Number of files (pad files included).
    pub files: usize,
    /// Number of pieces.
    pub pieces: usize,
}

/// Why resume data was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// Not bencode of the expected shape, or over the size caps.
    #[error("{0}")]
    Bencode(String),
    /// Written by another version of the format.
    #[error("format version {0}, expected {VERSION}")]
    Version(i64),
    /// Belongs to another torrent.
    #[error("it is for another torrent")]
    InfoHash,
    /// The file list does not match the torrent's.
    #[error("{got} files, the torrent has {want}")]
    FileCount {
        /// Entries in the data.
        got: usize,
        /// Files in the torrent.
        want: usize,
    },
    /// A file entry with a size but no time, a negative size, or the like.
    #[error("file {0}: malformed entry")]
    BadFile(usize),
    /// The bitfield does not fit the torrent's piece count.
    #[error("bitfield of {got} bytes does not hold exactly {pieces} pieces")]
    Bitfield {
        /// Bytes in the data.
        got: usize,
        /// Pieces in the torrent.
        pieces: usize,
    },
    /// An empty or overlong output folder.
    #[error("bad output folder")]
    Output,
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    version: i64,
    #[serde(rename = "info-hash", with = "serde_bytes")]
    info_hash: &'a [u8],
    #[serde(with = "serde_bytes")]
    output: &'a [u8],
    files: Vec<WireFile>,
    #[serde(with = "serde_bytes")]
    have: &'a [u8],
}

#[derive(Serialize, Deserialize, Default)]
struct WireFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtime: Option<i64>,
}

/// The encoded form.
pub fn encode(r: &ResumeData) -> Vec<u8> {
    let files = r
        .files
        .iter()
        .map(|f| match f {
            Some(s) => WireFile {
                size: Some(i64::try_from(s.size).unwrap_or(i64::MAX)),
                mtime: Some(s.mtime_ns),
            },
            None => WireFile::default(),
        })
        .collect();
    bencode::encode(&Wire {
        version: VERSION,
        info_hash: &r.info_hash.0,
        output: r.output.as_os_str().as_bytes(),
        files,
        have: r.have.as_bytes(),
    })
}

/// The largest encoding a torrent of this shape can have: longer input is
/// refused unread.
pub fn max_len(expect: &Expect) -> usize {
    // Per file at most `d4:sizei<20 digits>e5:mtimei<20 digits>ee`.
    const PER_FILE: usize = 64;
    512usize
        .saturating_add(MAX_OUTPUT_LEN)
        .saturating_add(expect.files.saturating_mul(PER_FILE))
        .saturating_add(expect.pieces.div_ceil(8))
}

/// Decodes resume data for the torrent described by `expect`.
pub fn decode(buf: &[u8], expect: &Expect) -> Result<ResumeData, ResumeError> {
    let limits = Limits {
        max_len: max_len(expect),
        // The top dict, its 5 keys and values, and per file a dict with up
        // to 2 keys and values.
        max_items: expect.files.saturating_mul(5).saturating_add(16),
    };
    let w: Wire = bencode::decode_limited(buf, limits).map_err(|e| ResumeError::Bencode(e.0))?;
    if w.version != VERSION {
        return Err(ResumeError::Version(w.version));
    }
    if w.info_hash != expect.info_hash.0 {
        return Err(ResumeError::InfoHash);
    }
    if w.output.is_empty() || w.output.len() > MAX_OUTPUT_LEN || w.output[0] != b'/' {
        return Err(ResumeError::Output);
    }
    if w.files.len() != expect.files {
        return Err(ResumeError::FileCount {
            got: w.files.len(),
            want: expect.files,
        });
    }
    let files = w
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| match (f.size, f.mtime) {
            (None, None) => Ok(None),
            (Some(size), Some(mtime_ns)) => u64::try_from(size)
                .map(|size| Some(FileStamp { size, mtime_ns }))
                .map_err(|_| ResumeError::BadFile(i)),
            _ => Err(ResumeError::BadFile(i)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let have = Bitfield::from_wire(w.have, expect.pieces).ok_or(ResumeError::Bitfield {
        got: w.have.len(),
        pieces: expect.pieces,
    })?;
    Ok(ResumeData {
        info_hash: expect.info_hash,
        output: PathBuf::from(std::ffi::OsString::from_vec(w.output.to_vec())),
        files,
        have,
    })
}

/// The pieces that need no hashing: those whose every (non-pad, non-empty)
/// file has the same stamp in `saved` and `now`. Of these, the ones in
/// `saved.have` are on disk; the others are missing. A file with no stamp
/// on either side (missing then or now) counts as changed.
///
/// `files` are the torrent's files and `now` their current stamps, in the
/// same order as `saved.files` (the caller decoded with matching counts).
pub fn trusted(
    saved: &ResumeData,
    now: &[Option<FileStamp>],
    files: &[FileEntry],
    piece_length: u32,
) -> Bitfield {
    let pieces = saved.have.len();
    let mut untrusted = vec![false; pieces];
    let plen = u64::from(piece_length.max(1));
    for (i, f) in files.iter().enumerate() {
        if f.pad || f.length == 0 {
            continue;
        }
        let same = match (saved.files.get(i), now.get(i)) {
            (Some(Some(a)), Some(Some(b))) => a == b,
            _ => false,
        };
        if same {
            continue;
        }
        let first = f.offset / plen;
        let last = (f.offset.saturating_add(f.length) - 1) / plen;
        for p in first..=last {
            match usize::try_from(p).ok().and_then(|p| untrusted.get_mut(p)) {
                Some(u) => *u = true,
                None => break,
            }
        }
    }
    let mut out = Bitfield::new(pieces);
    for (p, u) in untrusted.iter().enumerate() {
        if !u {
            out.set(p);
        }
    }
    out
}

#[cfg(test)]
mod tests;
