//! The BitTorrent v2 half of a `.torrent` (BEP 52): the `file tree`, each
//! file's `pieces root`, and the `piece layers` that check every piece.
//!
//! Parsed and checked as strictly as the v1 half: path components are
//! sanitised the same way, depth, file count and size are bounded, and
//! every piece layer must hash up to its file's root before it is kept.
//! For a hybrid torrent the v1 and v2 halves must describe the same files
//! in the same order, each v2 file starting on a piece boundary of the v1
//! layout (libtorrent and qBittorrent align them with pad files), or the
//! torrent is refused: a hybrid whose halves disagree would download one
//! thing and seed another.

use super::{
    Dict, FileEntry, Info, MAX_FILES, MAX_PIECE_LENGTH, MAX_TOTAL_LENGTH, MetainfoError,
    check_component, check_unique, get, get_bytes, get_u64,
};
use crate::bencode::Value;
use crate::merkle::{self, Hash};
use sha2::{Digest, Sha256};

/// Folders a file may sit in at most: far deeper than any real tree, and
/// keeps the walk's recursion shallow (the bencode decoder's own limit of
/// 64 levels, the tree's enclosing dicts included, comes a little later).
pub const MAX_DEPTH: usize = 48;

/// The v2 metadata of a v2-only or hybrid torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Info {
    /// SHA-256 of the info dictionary's exact bytes. Trackers, the DHT and
    /// the handshake use its first 20 bytes.
    pub info_hash: [u8; 32],
    /// The files in `file tree` order (by path, byte-wise), each path
    /// starting with the torrent's name as in the v1 half.
    pub files: Vec<V2File>,
}

/// One file of the `file tree`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2File {
    /// Path components, the torrent's name first.
    pub path: Vec<String>,
    /// Bytes.
    pub length: u64,
    /// The merkle root of the file's 16 KiB blocks; `None` for an empty
    /// file.
    pub pieces_root: Option<Hash>,
    /// BEP 47 attributes (`x` executable, `h` hidden, `l` symlink with
    /// its target).
    pub attr: crate::metainfo::FileAttr,
    /// The file's piece layer from `piece layers`, checked against
    /// `pieces_root`: one hash per piece. `None` for a file of one piece or
    /// less (its root is its only piece hash), or when the `.torrent` left
    /// it out (it then has to come from peers).
    pub layer: Option<Vec<Hash>>,
}

impl V2File {
    /// The checks of this file's pieces of `piece_length`, in order: its
    /// root for a file of one piece or less, else its layer's entries.
    /// Empty for an empty file; `None` when the layer is missing.
    pub fn piece_checks(&self, piece_length: u32) -> Option<Vec<V2Piece>> {
        let pl = u64::from(piece_length);
        let Some(root) = self.pieces_root else {
            return Some(Vec::new());
        };
        if self.length <= pl {
            return Some(vec![V2Piece {
                hash: root,
                data_len: self.length as u32,
                whole_file: true,
            }]);
        }
        let layer = self.layer.as_ref()?;
        Some(
            layer
                .iter()
                .enumerate()
                .map(|(k, h)| V2Piece {
                    hash: *h,
                    data_len: (self.length - k as u64 * pl).min(pl) as u32,
                    whole_file: false,
                })
                .collect(),
        )
    }
}

impl V2Info {
    /// The v2 info-hash as 64 hex digits.
    pub fn hash_hex(&self) -> String {
        self.info_hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// How one piece of a v2-only torrent is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Piece {
    /// The piece's layer entry, or the file's `pieces root` for a file of
    /// one piece or less.
    pub hash: Hash,
    /// Bytes of file data at the piece's start; the rest, up to the next
    /// file's piece boundary, is padding (zeros, never on disk).
    pub data_len: u32,
    /// `hash` is the root of the whole (short) file: its leaves are padded
    /// to a power of two, not to a whole piece.
    pub whole_file: bool,
}

impl V2Piece {
    /// Whether `data` (the piece as the aligned layout has it) is this piece.
    pub fn matches(&self, data: &[u8], piece_length: u32) -> bool {
        let n = (self.data_len as usize).min(data.len());
        let (file, pad) = data.split_at(n);
        if n != self.data_len as usize || pad.iter().any(|&b| b != 0) {
            return false;
        }
        let got = if self.whole_file {
            merkle::file_root(file)
        } else {
            merkle::piece_hash(file, piece_length)
        };
        got == self.hash
    }
}

/// The v1-shaped [`Info`] btc downloads a v2-only torrent by: its files in
/// tree order, each non-empty one followed by a pad file up to the next
/// piece boundary, the last one included (the layout BEP 52 numbers pieces
/// in, the one libtorrent's hybrids spell out in their v1 half), and a
/// [`V2Piece`] check per piece. Fails when a file longer than a piece has
/// no piece layer.
pub fn aligned_info(
    v2: &V2Info,
    name: String,
    piece_length: u32,
    private: bool,
) -> Result<Info, MetainfoError> {
    let pl = u64::from(piece_length);
    let mut files = Vec::with_capacity(v2.files.len() * 2);
    let mut checks = Vec::new();
    let mut offset = 0u64;
    for f in &v2.files {
        files.push(FileEntry {
            path: f.path.clone(),
            length: f.length,
            offset,
            md5sum: None,
            pad: false,
            attr: f.attr.clone(),
        });
        offset += f.length;
        if f.pieces_root.is_none() {
            continue;
        }
        let Some(mine) = f.piece_checks(piece_length) else {
            return Err(MetainfoError::V2Only {
                name,
                hash: v2.hash_hex(),
            });
        };
        checks.extend(mine);
        // The last file is padded too: peers (libtorrent) count the last
        // piece as a whole one and ask for whole blocks of it.
        let pad = offset.next_multiple_of(pl) - offset;
        if pad > 0 {
            files.push(FileEntry {
                path: vec![name.clone(), ".pad".into(), pad.to_string()],
                length: pad,
                offset,
                md5sum: None,
                pad: true,
                attr: Default::default(),
            });
            offset += pad;
        }
    }
    let total_length = offset;
    if total_length > MAX_TOTAL_LENGTH {
        return Err(MetainfoError::TooLarge);
    }
    if total_length == 0 {
        return Err(MetainfoError::EmptyTorrent);
    }
    // The geometry's piece count must match the checks.
    if total_length.div_ceil(pl) != checks.len() as u64 {
        return Err(bad("the file tree does not fill whole pieces"));
    }
    check_unique(&files)?;
    let multi_file = !(v2.files.len() == 1 && v2.files[0].path.len() == 1);
    Ok(Info {
        name,
        piece_length,
        pieces: Vec::new(),
        v2_pieces: Some(checks),
        private,
        files,
        total_length,
        multi_file,
    })
}

/// A hybrid's merkle checks, one per piece of its v1 layout (which
/// [`check_hybrid`] found aligned), so a piece must pass SHA-1 and SHA-256
/// both: a hybrid whose halves hash different data cannot slip through on
/// the weaker one. `None` when a file longer than a piece has no layer
/// (the SHA-1 then decides alone).
pub fn hybrid_checks(v1: &Info, v2: &V2Info) -> Option<Vec<V2Piece>> {
    let pl = u64::from(v1.piece_length);
    let count = v1.pieces.len();
    // Pieces no file starts in hold only padding: zeros, checked as such.
    let mut checks = vec![
        V2Piece {
            hash: merkle::piece_hash(&[], v1.piece_length),
            data_len: 0,
            whole_file: false,
        };
        count
    ];
    let starts = v1.files.iter().filter(|f| !f.pad).map(|f| f.offset);
    for (f, start) in v2.files.iter().zip(starts) {
        let first = (start / pl) as usize;
        for (k, check) in f.piece_checks(v1.piece_length)?.into_iter().enumerate() {
            *checks.get_mut(first + k)? = check;
        }
    }
    Some(checks)
}

fn bad(reason: impl Into<String>) -> MetainfoError {
    MetainfoError::BadV2(reason.into())
}

/// The v2 half of `info` (a dict whose `meta version` is 2), with
/// `layers`, the top-level `piece layers` if the file has them.
/// `single_name` is the torrent's `name`.
pub fn parse(
    info: Dict,
    info_bytes: &[u8],
    name: &str,
    layers: Option<&Value>,
) -> Result<V2Info, MetainfoError> {
    let piece_length =
        get_u64(info, "piece length")?.ok_or(MetainfoError::Missing("piece length"))?;
    if piece_length < merkle::BLOCK as u64 || !piece_length.is_power_of_two() {
        return Err(bad(format!(
            "piece length {piece_length} is not a power of two of at least 16 KiB"
        )));
    }
    if piece_length > MAX_PIECE_LENGTH {
        return Err(MetainfoError::PieceLengthTooLarge(piece_length));
    }
    let tree = get(info, "file tree").ok_or(MetainfoError::Missing("file tree"))?;
    let Value::Dict(top) = tree else {
        return Err(MetainfoError::WrongType {
            field: "file tree",
            expected: "a dictionary",
        });
    };
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut path = Vec::new();
    walk(top, &mut path, &mut files, &mut total)?;
    if files.is_empty() {
        return Err(bad("the file tree holds no file"));
    }
    // One file at the top whose name is the torrent's: a single-file
    // torrent. Otherwise every path lives under the torrent's folder.
    let single = files.len() == 1 && files[0].path.len() == 1;
    if !single {
        for f in &mut files {
            f.path.insert(0, name.to_owned());
        }
    }
    attach_layers(&mut files, layers, piece_length as u32)?;
    Ok(V2Info {
        info_hash: Sha256::digest(info_bytes).into(),
        files,
    })
}

/// Depth-first through one folder of the tree, in byte order of the names
/// (the order BEP 52 files are laid out in).
fn walk(
    dir: Dict,
    path: &mut Vec<String>,
    files: &mut Vec<V2File>,
    total: &mut u64,
) -> Result<(), MetainfoError> {
    if path.len() > MAX_DEPTH {
        return Err(bad(format!(
            "the file tree is deeper than {MAX_DEPTH} folders"
        )));
    }
    let mut names: Vec<&[u8]> = dir.keys().map(|k| k.0).collect();
    names.sort_unstable();
    for raw in names {
        let Some(Value::Dict(node)) = dir.get(raw) else {
            return Err(bad("a file tree entry is not a dictionary"));
        };
        if raw.is_empty() {
            return Err(bad("a folder holds file properties (an empty name)"));
        }
        let name = std::str::from_utf8(raw)
            .map_err(|_| bad("a file tree name is not UTF-8"))?
            .to_owned();
        check_component(&name)?;
        path.push(name);
        match get(node, "") {
            Some(props) => {
                if node.len() != 1 {
                    return Err(MetainfoError::FileIsFolder(path.join("/")));
                }
                let Value::Dict(props) = props else {
                    return Err(bad("file properties are not a dictionary"));
                };
                if files.len() >= MAX_FILES {
                    return Err(MetainfoError::TooManyFiles(files.len() + 1));
                }
                let file = parse_file(props, path.clone())?;
                *total = total
                    .checked_add(file.length)
                    .filter(|t| *t <= MAX_TOTAL_LENGTH)
                    .ok_or(MetainfoError::TooLarge)?;
                files.push(file);
            }
            None if node.is_empty() => {
                return Err(bad(format!("{:?} is an empty folder", path.join("/"))));
            }
            None => walk(node, path, files, total)?,
        }
        path.pop();
    }
    Ok(())
}

fn parse_file(props: Dict, path: Vec<String>) -> Result<V2File, MetainfoError> {
    let attr = crate::metainfo::FileAttr::parse(props, &path)?;
    // A symlink (BEP 47) has no data: libtorrent writes no length for it.
    let length = match get_u64(props, "length")? {
        Some(n) => n,
        None if attr.symlink.is_some() => 0,
        None => return Err(MetainfoError::Missing("length")),
    };
    if attr.symlink.is_some() && length != 0 {
        return Err(bad(format!(
            "symlink {:?} has {length} bytes of data",
            path.join("/")
        )));
    }
    let pieces_root = match get_bytes(props, "pieces root")? {
        None if length == 0 => None,
        None => return Err(MetainfoError::Missing("pieces root")),
        Some(_) if length == 0 => {
            return Err(bad(format!(
                "empty file {:?} has a pieces root",
                path.join("/")
            )));
        }
        Some(r) => {
            let root: Hash = r.try_into().map_err(|_| {
                bad(format!(
                    "pieces root of {:?} is not 32 bytes",
                    path.join("/")
                ))
            })?;
            if root == merkle::ZERO {
                return Err(bad(format!("pieces root of {:?} is zero", path.join("/"))));
            }
            Some(root)
        }
    };
    Ok(V2File {
        path,
        length,
        pieces_root,
        attr,
        layer: None,
    })
}

/// Checks `piece layers` against the files and keeps each file's layer.
fn attach_layers(
    files: &mut [V2File],
    layers: Option<&Value>,
    piece_length: u32,
) -> Result<(), MetainfoError> {
    let Some(layers) = layers else {
        return Ok(());
    };
    let Value::Dict(layers) = layers else {
        return Err(MetainfoError::WrongType {
            field: "piece layers",
            expected: "a dictionary",
        });
    };
    // An entry must belong to a file of the tree: an unknown one is junk
    // that would otherwise sit in memory for nothing.
    let roots: std::collections::HashSet<&[u8]> = files
        .iter()
        .filter_map(|f| f.pieces_root.as_ref().map(|r| &r[..]))
        .collect();
    if layers.keys().any(|k| !roots.contains(k.0)) {
        return Err(bad("piece layers has an entry for no file of the tree"));
    }
    for f in files.iter_mut() {
        let Some(root) = f.pieces_root else { continue };
        let Some(entry) = layers.get(&root[..]) else {
            continue;
        };
        if f.length <= u64::from(piece_length) {
            return Err(bad(format!(
                "{:?} is one piece long but has a piece layer",
                f.path.join("/")
            )));
        }
        let Value::Bytes(b) = entry else {
            return Err(bad("a piece layer is not a byte string"));
        };
        if b.0.len() % 32 != 0 {
            return Err(bad(format!(
                "the piece layer of {:?} is not a whole number of hashes",
                f.path.join("/")
            )));
        }
        let layer: Vec<Hash> =
            b.0.chunks_exact(32)
                .map(|c| c.try_into().unwrap_or(merkle::ZERO))
                .collect();
        if merkle::root_from_layer(&layer, f.length, piece_length) != Some(root) {
            return Err(bad(format!(
                "the piece layer of {:?} does not hash to its pieces root",
                f.path.join("/")
            )));
        }
        f.layer = Some(layer);
    }
    Ok(())
}

/// Refuses a hybrid whose v1 `files` (pad files aside) are not the v2
/// files in the same order with the same lengths, or whose v2 files do not
/// each start on a piece boundary of the v1 layout.
pub fn check_hybrid(v1: &[FileEntry], v2: &V2Info, piece_length: u32) -> Result<(), MetainfoError> {
    let mismatch = |why: String| bad(format!("the v1 and v2 halves differ: {why}"));
    let real: Vec<&FileEntry> = v1.iter().filter(|f| !f.pad).collect();
    if real.len() != v2.files.len() {
        return Err(mismatch(format!(
            "{} files in v1, {} in v2",
            real.len(),
            v2.files.len()
        )));
    }
    for (a, b) in real.iter().zip(&v2.files) {
        if a.path != b.path || a.length != b.length {
            return Err(mismatch(format!(
                "{:?} ({} bytes) against {:?} ({} bytes)",
                a.path.join("/"),
                a.length,
                b.path.join("/"),
                b.length
            )));
        }
        if b.length > 0 && !a.offset.is_multiple_of(u64::from(piece_length)) {
            return Err(mismatch(format!(
                "{:?} does not start on a piece boundary",
                a.path.join("/")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
