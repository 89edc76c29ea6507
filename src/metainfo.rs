//! `.torrent` files (BEP 3, 12, 19, 27): parsing and validation.
//!
//! Knows nothing of magnets or the network. The info-hash is the SHA-1 of the
//! info dictionary's exact bytes as they appear in the file: re-serializing
//! would silently change the hash of any torrent whose creator wrote unsorted
//! keys or unknown fields, and we would then join the wrong swarm.
//!
//! Everything that later becomes a file name on disk is validated here, once,
//! so the storage layer can join paths without re-checking them.

use crate::bencode::{ByteBuf, Value, WithRawBytes};
use crate::id::InfoHash;
use crate::merkle;
use bytes::Bytes;
use serde::Deserialize;
use sha1::{Digest, Sha1};

pub mod v2;
pub use v2::{V2File, V2Info, V2Piece};

/// Largest piece length accepted: 64 MiB. Real torrents stop at 16–64 MiB;
/// anything bigger is either an attack on our memory (a piece is buffered
/// whole while it downloads, and the start-up check holds one per thread)
/// or junk. `btc create` refuses to make bigger pieces too.
pub const MAX_PIECE_LENGTH: u64 = 64 * 1024 * 1024;
/// Largest total size accepted (1 PiB): beyond any real payload, and keeps all
/// offset arithmetic far away from `u64` overflow.
pub const MAX_TOTAL_LENGTH: u64 = 1 << 50;
/// Most files accepted in one torrent, so a tiny hostile file cannot make us
/// allocate and validate millions of paths.
pub const MAX_FILES: usize = 1_000_000;

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
    /// The BitTorrent v2 half of a hybrid torrent (BEP 52), checked
    /// against the v1 half; `None` for a v1 torrent.
    pub v2: Option<V2Info>,
}

/// A validated info dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Top-level file or folder name (`name.utf-8` preferred), validated as one safe path component.
    pub name: String,
    /// Bytes per piece (> 0).
    pub piece_length: u32,
    /// SHA-1 of every piece, in order (empty for a v2-only torrent).
    pub pieces: Vec<[u8; 20]>,
    /// Piece checks by SHA-256 merkle hash (BEP 52), one per piece: all a
    /// v2-only torrent has, and a hybrid's second check beside `pieces`
    /// (when its `.torrent` carries the piece layers); `None` for v1.
    pub v2_pieces: Option<Vec<V2Piece>>,
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
    /// A BEP 47 pad file (`attr` contains `p`): zeros that only align the
    /// next file to a piece boundary. Never written to disk or fetched.
    pub pad: bool,
    /// Its other BEP 47 attributes.
    pub attr: FileAttr,
}

/// The `symlink path` of the symlink at `path`: plain names, or `..` to
/// go up (libtorrent writes the link's own text, `../bin/x` for a link in
/// a folder). Where it points is decided when the files are laid out: a
/// target that leaves the torrent's folder is not created then.
fn symlink_target(v: Option<&Value>, path: &[String]) -> Result<Vec<String>, MetainfoError> {
    let Some(Value::List(items)) = v else {
        return Err(MetainfoError::Attr(format!(
            "symlink {:?} has no symlink path",
            path.join("/")
        )));
    };
    let mut target = Vec::with_capacity(items.len());
    for item in items {
        let Value::Bytes(b) = item else {
            return Err(MetainfoError::Attr(
                "a symlink path is not a list of strings".into(),
            ));
        };
        let c = String::from_utf8_lossy(b.0).into_owned();
        if c != ".." {
            check_component(&c)?;
        }
        target.push(c);
    }
    if target.is_empty() {
        return Err(MetainfoError::Attr(format!(
            "symlink {:?} has an empty target",
            path.join("/")
        )));
    }
    Ok(target)
}

/// A file's BEP 47 attributes other than padding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileAttr {
    /// `x`: made executable once written.
    pub executable: bool,
    /// `h`: hidden (on Linux a dot-name already is; kept for `btc info`).
    pub hidden: bool,
    /// `l`: a symlink (no data of its own) to this path: components
    /// relative to the torrent's folder, plain names or `..` (see
    /// `symlink_target`).
    pub symlink: Option<Vec<String>>,
}

impl FileAttr {
    /// The attributes of a file dict (`attr`, `symlink path`); `path` names
    /// the file in errors.
    pub(crate) fn parse(fd: Dict, path: &[String]) -> Result<FileAttr, MetainfoError> {
        let attr = get_bytes(fd, "attr")?.unwrap_or_default();
        let symlink = if attr.contains(&b'l') {
            Some(symlink_target(get(fd, "symlink path"), path)?)
        } else {
            None
        };
        Ok(FileAttr {
            executable: attr.contains(&b'x'),
            hidden: attr.contains(&b'h'),
            symlink,
        })
    }
}

/// Why a torrent was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    /// Not bencode, or not the expected shape.
    #[error(transparent)]
    Bencode(#[from] crate::bencode::BencodeError),
    /// A required key is absent.
    #[error("missing `{0}`")]
    Missing(&'static str),
    /// A key holds the wrong kind of value.
    #[error("`{field}` must be {expected}")]
    WrongType {
        /// The key.
        field: &'static str,
        /// What it should have been.
        expected: &'static str,
    },
    /// An integer that must not be negative is.
    #[error("`{field}` is negative ({value})")]
    Negative {
        /// The key.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// `piece length` is 0.
    #[error("piece length 0")]
    PieceLengthZero,
    /// `piece length` is over [`MAX_PIECE_LENGTH`].
    #[error("piece length {0} is over the {limit} MiB limit", limit = MAX_PIECE_LENGTH >> 20)]
    PieceLengthTooLarge(u64),
    /// `pieces` is not a whole number of SHA-1 hashes.
    #[error("pieces is {0} bytes, not a multiple of 20")]
    PiecesNotMultipleOf20(usize),
    /// The number of hashes does not fit the content length.
    #[error(
        "{actual} piece hashes, but {total_length} bytes in {piece_length}-byte pieces need {expected}"
    )]
    PieceCountMismatch {
        /// Hashes present.
        actual: usize,
        /// Hashes needed.
        expected: u64,
        /// Total content length.
        total_length: u64,
        /// Piece length.
        piece_length: u32,
    },
    /// The content is zero bytes long.
    #[error("total length 0 (empty torrent)")]
    EmptyTorrent,
    /// The content is over [`MAX_TOTAL_LENGTH`].
    #[error("total length is over the 2^50 byte limit")]
    TooLarge,
    /// More than [`MAX_FILES`] files.
    #[error("{0} files is over the limit of 1000000")]
    TooManyFiles(usize),
    /// The info dict has both `length` and `files`.
    #[error("info has both `length` and `files`")]
    BothLengthAndFiles,
    /// The info dict has neither `length` nor `files`.
    #[error("info has neither `length` nor `files`")]
    NeitherLengthNorFiles,
    /// The torrent name is not one safe path component.
    #[error("name {name:?} is not allowed: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file path component could escape or confuse the output folder.
    #[error("file path component {component:?} is not allowed: {reason}")]
    BadPathComponent {
        /// The component.
        component: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file's `path` list has no components.
    #[error("file {0} has an empty path")]
    EmptyPath(usize),
    /// Two files share a path.
    #[error("duplicate file path {0:?}")]
    DuplicatePath(String),
    /// A path is a file and also a folder holding another file.
    #[error("{0:?} is both a file and a folder")]
    FileIsFolder(String),
    /// A file's BEP 47 attributes are malformed (a symlink without a
    /// target, or with data).
    #[error("invalid file attributes (BEP 47): {0}")]
    Attr(String),
    /// The v2 half (BEP 52) is malformed or disagrees with the v1 half.
    #[error("invalid v2 metadata: {0}")]
    BadV2(String),
    /// A `meta version` other than 2.
    #[error("meta version {0} is not one btc knows (2 is BitTorrent v2)")]
    UnknownMetaVersion(i64),
    /// A BitTorrent v2-only torrent without the piece layers btc needs to
    /// check its pieces: they have to come from peers (BEP 52 hash
    /// requests), so the download goes by its v2 info-hash, as a magnet.
    #[error(
        "{name:?} is a BitTorrent v2-only torrent (v2 info-hash {hash}) without its piece layers; they have to come from peers"
    )]
    V2Only {
        /// The torrent's name.
        name: String,
        /// Its v2 info-hash, 64 hex digits.
        hash: String,
    },
}

/// The top level of a `.torrent`, borrowed from the input. Everything but
/// `info` is optional metadata, so a wrong type there is ignored rather than
/// fatal: we can still download without a comment or a tracker list.
#[derive(Deserialize)]
#[serde(bound(deserialize = "'a: 'de"))]
struct RawTorrent<'a> {
    #[serde(borrow)]
    info: Option<WithRawBytes<Value<'a>, ByteBuf<'a>>>,
    #[serde(borrow)]
    announce: Option<Value<'a>>,
    #[serde(borrow, rename = "announce-list")]
    announce_list: Option<Value<'a>>,
    #[serde(borrow, rename = "creation date")]
    creation_date: Option<Value<'a>>,
    #[serde(borrow)]
    comment: Option<Value<'a>>,
    #[serde(borrow, rename = "created by")]
    created_by: Option<Value<'a>>,
    #[serde(borrow)]
    encoding: Option<Value<'a>>,
    #[serde(borrow, rename = "url-list")]
    url_list: Option<Value<'a>>,
    #[serde(borrow, rename = "piece layers")]
    piece_layers: Option<Value<'a>>,
}

impl Metainfo {
    /// Parses and validates a whole `.torrent` file.
    pub fn from_bytes(buf: &[u8]) -> Result<Metainfo, MetainfoError> {
        let raw: RawTorrent = crate::bencode::decode(buf)?;
        let info_raw = raw.info.ok_or(MetainfoError::Missing("info"))?;
        let (info, v2) = parse_info_v1_v2(
            &info_raw.data,
            info_raw.raw_bytes.0,
            raw.piece_layers.as_ref(),
        )?;
        let info_bytes = Bytes::copy_from_slice(info_raw.raw_bytes.0);
        let announce = raw
            .announce
            .as_ref()
            .and_then(lossy)
            .filter(|s| !s.is_empty());
        let announce_list = raw
            .announce_list
            .as_ref()
            .map(parse_tiers)
            .unwrap_or_default();
        let url_list = match &raw.url_list {
            Some(Value::Bytes(b)) => vec![String::from_utf8_lossy(b.0).into_owned()],
            Some(Value::List(l)) => l.iter().filter_map(lossy).collect(),
            _ => Vec::new(),
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
        Ok(Metainfo {
            info_hash: swarm_hash(&info, v2.as_ref(), &info_bytes),
            info,
            info_bytes,
            announce,
            announce_list,
            creation_date: match raw.creation_date {
                Some(Value::Integer(i)) => Some(i),
                _ => None,
            },
            comment: raw.comment.as_ref().and_then(lossy),
            created_by: raw.created_by.as_ref().and_then(lossy),
            encoding: raw.encoding.as_ref().and_then(lossy),
            url_list,
            v2,
        })
    }

    /// Builds a `Metainfo` from a bare info dict fetched over ut_metadata (magnet path).
    ///
    /// The trackers come from the magnet link; empty URLs and tiers are dropped
    /// as in `announce-list`. The caller must still check that the returned
    /// `info_hash` is the one it asked peers for.
    pub fn from_info_bytes(
        info: &[u8],
        trackers: Vec<Vec<String>>,
    ) -> Result<Metainfo, MetainfoError> {
        Self::from_info_bytes_with_layers(info, trackers, &[])
    }

    /// [`Metainfo::from_info_bytes`] for a v2 info dict whose piece layers
    /// came apart from it (fetched from peers): `layers` holds them by
    /// file root, and each is checked against its root as a `.torrent`'s
    /// `piece layers` would be.
    pub fn from_info_bytes_with_layers(
        info: &[u8],
        trackers: Vec<Vec<String>>,
        layers: &[(merkle::Hash, Vec<merkle::Hash>)],
    ) -> Result<Metainfo, MetainfoError> {
        let value: Value = crate::bencode::decode(info)?;
        let encoded = encode_layers(layers);
        let layers_value: Option<Value> = match &encoded {
            Some(b) => Some(crate::bencode::decode(b)?),
            None => None,
        };
        let (parsed, v2) = parse_info_v1_v2(&value, info, layers_value.as_ref())?;
        let announce_list: Vec<Vec<String>> = trackers
            .into_iter()
            .map(|tier| {
                tier.into_iter()
                    .filter(|u| !u.is_empty())
                    .collect::<Vec<_>>()
            })
            .filter(|tier| !tier.is_empty())
            .collect();
        let info_bytes = Bytes::copy_from_slice(info);
        Ok(Metainfo {
            info_hash: swarm_hash(&parsed, v2.as_ref(), &info_bytes),
            info: parsed,
            info_bytes,
            announce: announce_list.first().and_then(|t| t.first()).cloned(),
            announce_list,
            creation_date: None,
            comment: None,
            created_by: None,
            encoding: None,
            url_list: Vec::new(),
            v2,
        })
    }

    /// The tracker tiers of a `.torrent` that may not parse as a whole (a
    /// v2 one without piece layers): `announce-list`, else `announce`.
    pub fn tracker_tiers_of(buf: &[u8]) -> Vec<Vec<String>> {
        let Ok(raw) = crate::bencode::decode::<RawTorrent>(buf) else {
            return Vec::new();
        };
        let tiers = raw
            .announce_list
            .as_ref()
            .map(parse_tiers)
            .unwrap_or_default();
        if !tiers.is_empty() {
            return tiers;
        }
        raw.announce
            .as_ref()
            .and_then(lossy)
            .filter(|s| !s.is_empty())
            .map(|a| vec![vec![a]])
            .unwrap_or_default()
    }

    /// Tracker tiers: `announce-list` when present, else `[[announce]]`.
    ///
    /// BEP 12 says a client that understands `announce-list` ignores
    /// `announce`, so the two are never merged.
    pub fn tracker_tiers(&self) -> Vec<Vec<String>> {
        if !self.announce_list.is_empty() {
            return self.announce_list.clone();
        }
        match &self.announce {
            Some(a) => vec![vec![a.clone()]],
            None => Vec::new(),
        }
    }

    /// SHA-1 of piece `index`, or `None` past the end.
    pub fn piece_hash(&self, index: usize) -> Option<&[u8; 20]> {
        self.info.pieces.get(index)
    }
}

impl Info {
    /// Number of pieces.
    pub fn piece_count(&self) -> usize {
        match &self.v2_pieces {
            Some(v2) if self.pieces.is_empty() => v2.len(),
            _ => self.pieces.len(),
        }
    }

    /// Whether this is a v2-only torrent (no SHA-1 piece hashes).
    pub fn is_v2_only(&self) -> bool {
        self.pieces.is_empty() && self.v2_pieces.is_some()
    }

    /// Whether `data` is piece `index`: its SHA-1 and, where known, its
    /// merkle hash (the pad bytes that align the next file must then be
    /// zero). `false` past the end.
    pub fn piece_matches(&self, index: usize, data: &[u8]) -> bool {
        let v1 = || {
            self.pieces
                .get(index)
                .is_some_and(|h| Sha1::digest(data).as_slice() == h)
        };
        let v2 = |v2: &[V2Piece]| {
            v2.get(index)
                .is_some_and(|p| p.matches(data, self.piece_length))
        };
        match &self.v2_pieces {
            None => v1(),
            Some(checks) if self.pieces.is_empty() => v2(checks),
            Some(checks) => v1() && v2(checks),
        }
    }

    /// Length of piece `index`: `piece_length`, except the last piece, which
    /// holds what is left. `None` past the end.
    pub fn piece_len(&self, index: usize) -> Option<u32> {
        if index >= self.piece_count() {
            return None;
        }
        let start = index as u64 * u64::from(self.piece_length);
        let left = self.total_length.saturating_sub(start);
        Some(left.min(u64::from(self.piece_length)) as u32)
    }
}

/// The 20-byte hash the swarm knows the torrent by: the SHA-1 of the info
/// bytes, or for a v2-only torrent the v2 info-hash cut to 20 bytes (what
/// BEP 52 peers put in the handshake and announce to trackers and the DHT).
/// `layers` as a bencoded `piece layers` dict (keys in order); `None`
/// when empty.
fn encode_layers(layers: &[(merkle::Hash, Vec<merkle::Hash>)]) -> Option<Vec<u8>> {
    if layers.is_empty() {
        return None;
    }
    let mut sorted: Vec<_> = layers.iter().collect();
    sorted.sort_by_key(|(root, _)| *root);
    let mut out = b"d".to_vec();
    for (root, layer) in sorted {
        out.extend_from_slice(format!("{}:", root.len()).as_bytes());
        out.extend_from_slice(root);
        out.extend_from_slice(format!("{}:", layer.len() * 32).as_bytes());
        for h in layer {
            out.extend_from_slice(h);
        }
    }
    out.push(b'e');
    Some(out)
}

/// The v2 files of an info dict and its piece length, without requiring
/// piece layers (they may have to come from peers). `None` for anything
/// but a valid v2 or hybrid dict.
pub fn v2_files(info: &[u8]) -> Option<(V2Info, u32)> {
    let value: Value = crate::bencode::decode(info).ok()?;
    let Value::Dict(d) = &value else {
        return None;
    };
    if get_int(d, "meta version").ok()? != Some(2) {
        return None;
    }
    let name = get_text(d, "name", "name.utf-8").ok()??;
    if component_problem(&name).is_some() {
        return None;
    }
    let v2 = v2::parse(d, info, &name, None).ok()?;
    let pl = u32::try_from(get_u64(d, "piece length").ok()??).ok()?;
    Some((v2, pl))
}

fn swarm_hash(info: &Info, v2: Option<&V2Info>, info_bytes: &[u8]) -> InfoHash {
    match v2 {
        Some(v2) if info.is_v2_only() => {
            let mut out = [0u8; 20];
            out.copy_from_slice(&v2.info_hash[..20]);
            InfoHash(out)
        }
        _ => sha1_hash(info_bytes),
    }
}

fn sha1_hash(bytes: &[u8]) -> InfoHash {
    let digest = Sha1::digest(bytes);
    let mut out = [0u8; 20];
    out.copy_from_slice(&digest);
    InfoHash(out)
}

/// A byte string as text; non-UTF-8 bytes become U+FFFD rather than an error,
/// because old torrents in legacy encodings are still worth downloading.
fn lossy(v: &Value) -> Option<String> {
    match v {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b.0).into_owned()),
        _ => None,
    }
}

/// BEP 12 tiers, tolerating junk: non-list tiers and non-string URLs are
/// skipped, and a tier left empty is dropped.
fn parse_tiers(v: &Value) -> Vec<Vec<String>> {
    let Value::List(tiers) = v else {
        return Vec::new();
    };
    tiers
        .iter()
        .filter_map(|tier| match tier {
            Value::List(urls) => Some(
                urls.iter()
                    .filter_map(lossy)
                    .filter(|u| !u.is_empty())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .filter(|tier| !tier.is_empty())
        .collect()
}

type Dict<'a, 'b> = &'b std::collections::HashMap<ByteBuf<'a>, Value<'a>>;

fn get<'a, 'b>(d: Dict<'a, 'b>, key: &str) -> Option<&'b Value<'a>> {
    d.get(key.as_bytes())
}

fn get_int(d: Dict, key: &'static str) -> Result<Option<i64>, MetainfoError> {
    match get(d, key) {
        None => Ok(None),
        Some(Value::Integer(i)) => Ok(Some(*i)),
        Some(_) => Err(MetainfoError::WrongType {
            field: key,
            expected: "an integer",
        }),
    }
}

fn get_u64(d: Dict, key: &'static str) -> Result<Option<u64>, MetainfoError> {
    match get_int(d, key)? {
        None => Ok(None),
        Some(i) => u64::try_from(i)
            .map(Some)
            .map_err(|_| MetainfoError::Negative {
                field: key,
                value: i,
            }),
    }
}

fn get_bytes<'a>(d: Dict<'a, '_>, key: &'static str) -> Result<Option<&'a [u8]>, MetainfoError> {
    match get(d, key) {
        None => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(b.0)),
        Some(_) => Err(MetainfoError::WrongType {
            field: key,
            expected: "a byte string",
        }),
    }
}

/// A text field, preferring the `.utf-8` twin when present and well-formed:
/// some creators put a legacy encoding in the plain key and UTF-8 in the twin.
fn get_text(d: Dict, key: &'static str, utf8_key: &str) -> Result<Option<String>, MetainfoError> {
    if let Some(Value::Bytes(b)) = get(d, utf8_key)
        && let Ok(s) = std::str::from_utf8(b.0)
    {
        return Ok(Some(s.to_owned()));
    }
    Ok(get_bytes(d, key)?.map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// A path list (`path` or `path.utf-8`) as strings; `None` if it is not a
/// list of byte strings.
fn path_list(v: &Value) -> Option<Vec<String>> {
    let Value::List(items) = v else {
        return None;
    };
    items.iter().map(lossy).collect()
}

/// Why one path component is unsafe to join under the output folder, if it is.
/// Shared with `create` so we never write a torrent we would refuse to read.
pub(crate) fn component_problem(c: &str) -> Option<&'static str> {
    if c.is_empty() {
        Some("empty")
    } else if c == "." || c == ".." {
        Some("it refers to a folder, not a name")
    } else if c.contains('/') || c.contains('\\') {
        Some("it contains a path separator")
    } else if c.contains('\0') {
        Some("it contains NUL")
    } else if c.len() >= 2 && c.as_bytes()[1] == b':' && c.as_bytes()[0].is_ascii_alphabetic() {
        Some("it is an absolute Windows path")
    } else {
        None
    }
}

fn check_component(c: &str) -> Result<(), MetainfoError> {
    match component_problem(c) {
        Some(reason) => Err(MetainfoError::BadPathComponent {
            component: c.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The v1 half of `v` and, when `meta version` is 2, the v2 half, checked
/// against each other. A v2-only torrent is refused with its name and v2
/// hash ([`MetainfoError::V2Only`]).
fn parse_info_v1_v2(
    v: &Value,
    info_bytes: &[u8],
    layers: Option<&Value>,
) -> Result<(Info, Option<V2Info>), MetainfoError> {
    let Value::Dict(d) = v else {
        return Err(MetainfoError::WrongType {
            field: "info",
            expected: "a dictionary",
        });
    };
    match get_int(d, "meta version")? {
        None | Some(1) => return Ok((parse_info(v)?, None)),
        Some(2) => {}
        Some(other) => return Err(MetainfoError::UnknownMetaVersion(other)),
    }
    let name = get_text(d, "name", "name.utf-8")?.ok_or(MetainfoError::Missing("name"))?;
    if let Some(reason) = component_problem(&name) {
        return Err(MetainfoError::BadName { name, reason });
    }
    let v2 = v2::parse(d, info_bytes, &name, layers)?;
    if get(d, "pieces").is_none() {
        let piece_length = get_u64(d, "piece length")?.unwrap_or(0) as u32;
        let private = matches!(get(d, "private"), Some(Value::Integer(1)));
        let info = v2::aligned_info(&v2, name, piece_length, private)?;
        return Ok((info, Some(v2)));
    }
    let mut info = parse_info(v)?;
    v2::check_hybrid(&info.files, &v2, info.piece_length)?;
    info.v2_pieces = v2::hybrid_checks(&info, &v2);
    Ok((info, Some(v2)))
}

fn parse_info(v: &Value) -> Result<Info, MetainfoError> {
    let Value::Dict(d) = v else {
        return Err(MetainfoError::WrongType {
            field: "info",
            expected: "a dictionary",
        });
    };

    let piece_length = get_u64(d, "piece length")?.ok_or(MetainfoError::Missing("piece length"))?;
    if piece_length == 0 {
        return Err(MetainfoError::PieceLengthZero);
    }
    if piece_length > MAX_PIECE_LENGTH {
        return Err(MetainfoError::PieceLengthTooLarge(piece_length));
    }
    // Checked against MAX_PIECE_LENGTH just above, so it fits.
    let piece_length = piece_length as u32;

    let pieces_raw = get_bytes(d, "pieces")?.ok_or(MetainfoError::Missing("pieces"))?;
    if pieces_raw.len() % 20 != 0 {
        return Err(MetainfoError::PiecesNotMultipleOf20(pieces_raw.len()));
    }
    let pieces: Vec<[u8; 20]> = pieces_raw
        .chunks_exact(20)
        .map(|c| {
            let mut h = [0u8; 20];
            h.copy_from_slice(c);
            h
        })
        .collect();

    let private = matches!(get(d, "private"), Some(Value::Integer(1)));

    let name = get_text(d, "name", "name.utf-8")?.ok_or(MetainfoError::Missing("name"))?;
    if let Some(reason) = component_problem(&name) {
        return Err(MetainfoError::BadName { name, reason });
    }

    let length = get_u64(d, "length")?;
    let files_v = get(d, "files");
    let (files, multi_file) = match (length, files_v) {
        (Some(_), Some(_)) => return Err(MetainfoError::BothLengthAndFiles),
        (None, None) => return Err(MetainfoError::NeitherLengthNorFiles),
        (Some(length), None) => {
            if length > MAX_TOTAL_LENGTH {
                return Err(MetainfoError::TooLarge);
            }
            let md5sum = get_bytes(d, "md5sum")
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(b).into_owned());
            let entry = FileEntry {
                path: vec![name.clone()],
                length,
                offset: 0,
                md5sum,
                pad: false,
                attr: Default::default(),
            };
            (vec![entry], false)
        }
        (None, Some(files_v)) => (parse_files(&name, files_v)?, true),
    };

    let total_length = files.last().map(|f| f.offset + f.length).unwrap_or(0);
    if total_length == 0 {
        return Err(MetainfoError::EmptyTorrent);
    }
    let expected = total_length.div_ceil(u64::from(piece_length));
    if expected != pieces.len() as u64 {
        return Err(MetainfoError::PieceCountMismatch {
            actual: pieces.len(),
            expected,
            total_length,
            piece_length,
        });
    }

    Ok(Info {
        name,
        piece_length,
        pieces,
        v2_pieces: None,
        private,
        files,
        total_length,
        multi_file,
    })
}

fn parse_files(name: &str, files_v: &Value) -> Result<Vec<FileEntry>, MetainfoError> {
    let Value::List(list) = files_v else {
        return Err(MetainfoError::WrongType {
            field: "files",
            expected: "a list",
        });
    };
    if list.len() > MAX_FILES {
        return Err(MetainfoError::TooManyFiles(list.len()));
    }
    let mut files = Vec::with_capacity(list.len());
    let mut offset: u64 = 0;
    for (index, f) in list.iter().enumerate() {
        let Value::Dict(fd) = f else {
            return Err(MetainfoError::WrongType {
                field: "files",
                expected: "a list of dictionaries",
            });
        };
        let length = get_u64(fd, "length")?.ok_or(MetainfoError::Missing("length"))?;
        let utf8 = get(fd, "path.utf-8").and_then(path_list);
        let rel = match utf8 {
            Some(p) => p,
            None => {
                let p = get(fd, "path").ok_or(MetainfoError::Missing("path"))?;
                path_list(p).ok_or(MetainfoError::WrongType {
                    field: "path",
                    expected: "a list of byte strings",
                })?
            }
        };
        if rel.is_empty() {
            return Err(MetainfoError::EmptyPath(index));
        }
        for c in &rel {
            check_component(c)?;
        }
        let md5sum = match get(fd, "md5sum") {
            Some(v) => lossy(v),
            None => None,
        };
        let pad = get_bytes(fd, "attr")
            .ok()
            .flatten()
            .is_some_and(|a| a.contains(&b'p'));
        let mut path = Vec::with_capacity(rel.len() + 1);
        path.push(name.to_owned());
        path.extend(rel);
        let attr = if pad {
            FileAttr::default()
        } else {
            FileAttr::parse(fd, &path)?
        };
        if attr.symlink.is_some() && length != 0 {
            return Err(MetainfoError::Attr(format!(
                "symlink {:?} has {length} bytes of data",
                path.join("/")
            )));
        }
        files.push(FileEntry {
            path,
            length,
            offset,
            md5sum,
            pad,
            attr,
        });
        offset = offset
            .checked_add(length)
            .filter(|t| *t <= MAX_TOTAL_LENGTH)
            .ok_or(MetainfoError::TooLarge)?;
    }
    check_unique(&files)?;
    Ok(files)
}

/// Refuses duplicate paths and a path that is a file and a folder at once:
/// either would make two files share bytes on disk, or fail half-way through
/// a download when the folder cannot be created.
/// Pad files are exempt: they never touch the disk, and libtorrent names
/// them by their size, so two of one size share a path.
///
/// Sorted, a path is directly followed by the paths it is a prefix of, so
/// comparing neighbours finds both; hashing every prefix of every path
/// instead took time quadratic in the path depth (seconds for a 60 KB
/// torrent with one deep path).
fn check_unique(files: &[FileEntry]) -> Result<(), MetainfoError> {
    let mut paths: Vec<&[String]> = files
        .iter()
        .filter(|f| !f.pad)
        .map(|f| &f.path[..])
        .collect();
    paths.sort_unstable();
    for pair in paths.windows(2) {
        if let [a, b] = pair
            && b.starts_with(a)
        {
            return Err(if a.len() == b.len() {
                MetainfoError::DuplicatePath(a.join("/"))
            } else {
                MetainfoError::FileIsFolder(a.join("/"))
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// A multi-file `Info` of the given (length, pad) files named `f0`, `f1`…
/// with zero piece hashes, and its geometry: for tests and fuzz targets of
/// code that maps files to pieces.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub fn synthetic_info(
    files: &[(u64, bool)],
    piece_length: u32,
) -> (Info, crate::geometry::Geometry) {
    let mut entries = Vec::with_capacity(files.len());
    let mut offset = 0u64;
    for (i, (length, pad)) in files.iter().enumerate() {
        entries.push(FileEntry {
            path: vec![format!("f{i}")],
            length: *length,
            offset,
            md5sum: None,
            pad: *pad,
            attr: Default::default(),
        });
        offset += length;
    }
    let g = crate::geometry::Geometry::new(offset, piece_length);
    let info = Info {
        name: "t".into(),
        piece_length,
        pieces: vec![[0; 20]; g.piece_count as usize],
        v2_pieces: None,
        private: false,
        files: entries,
        total_length: offset,
        multi_file: true,
    };
    (info, g)
}
