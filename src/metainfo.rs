//! `.torrent` files (BEP 3, 12, 19, 27): parsing and validation.
//!
//! Knows nothing of magnets or the network. The info-hash is the SHA-1 of the
//! info dictionary's exact bytes as they appear in the file.
//! STUB: the interface below is fixed; the bodies are being written.

use crate::id::InfoHash;
use bytes::Bytes;

/// A validated torrent.
#[derive(Debug, Clone)]
pub struct Metainfo {
    /// The parsed info dictionary.
    pub info: Info,
    /// SHA-1 of `info_bytes`.
    pub info_hash: InfoHash,
    /// The info dictionary exactly as it appeared (served over ut_metadata).
    pub info_bytes: Bytes,
    /// `announce`.
    pub announce: Option<String>,
    /// `announce-list` tiers (BEP 12), empty tiers dropped.
    pub announce_list: Vec<Vec<String>>,
    /// `creation date`, seconds since the epoch.
    pub creation_date: Option<i64>,
    /// `comment`.
    pub comment: Option<String>,
    /// `created by`.
    pub created_by: Option<String>,
    /// `encoding`.
    pub encoding: Option<String>,
    /// `url-list` (BEP 19 web seeds), kept for later use.
    pub url_list: Vec<String>,
}

/// A validated info dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Top-level file or folder name (`name.utf-8` preferred), validated as one safe path component.
    pub name: String,
    /// Bytes per piece (> 0).
    pub piece_length: u32,
    /// SHA-1 of every piece, in order.
    pub pieces: Vec<[u8; 20]>,
    /// BEP 27 private flag.
    pub private: bool,
    /// Files in torrent order. A single-file torrent has one entry whose path is `[name]`;
    /// a multi-file torrent's paths start with `name`. Offsets are cumulative.
    pub files: Vec<FileEntry>,
    /// Sum of all file lengths.
    pub total_length: u64,
    /// Whether the info dict had `files` (so the content is a folder).
    pub multi_file: bool,
}

/// One file of the torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative path components (first one is the torrent name); each is safe to join under the output folder.
    pub path: Vec<String>,
    /// Length in bytes.
    pub length: u64,
    /// Byte offset of the file's start within the torrent's concatenated content.
    pub offset: u64,
    /// Optional `md5sum`.
    pub md5sum: Option<String>,
}

/// Why a torrent was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    /// Not bencode, or not the expected shape.
    #[error(transparent)]
    Bencode(#[from] crate::bencode::BencodeError),
}

impl Metainfo {
    /// Parses and validates a whole `.torrent` file.
    pub fn from_bytes(_buf: &[u8]) -> Result<Metainfo, MetainfoError> {
        todo!()
    }

    /// Builds a `Metainfo` from a bare info dict fetched over ut_metadata (magnet path).
    pub fn from_info_bytes(_info: &[u8], _trackers: Vec<Vec<String>>) -> Result<Metainfo, MetainfoError> {
        todo!()
    }

    /// Tracker tiers: `announce-list` when present, else `[[announce]]`.
    pub fn tracker_tiers(&self) -> Vec<Vec<String>> {
        todo!()
    }
}
