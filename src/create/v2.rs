//! `btc create --format v2|hybrid`: the BEP 52 half of a new torrent.
//!
//! Every non-empty file starts on a piece boundary (a hybrid's v1 half
//! says so with BEP 47 pad files after each one, the last included, as
//! libtorrent writes them), so each piece holds bytes of one file only.
//! One read of each piece gives both hashes: the SHA-256 leaves of its
//! 16 KiB blocks for the file's merkle tree and, for a hybrid, its SHA-1
//! over the data and the zero padding after it.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use serde::Serialize;
use serde_bytes::ByteBuf;
use sha1::{Digest, Sha1};

use super::{CreateError, FileOut, Format, SourceFile};
use crate::merkle::{self, Hash};
use crate::metainfo::MAX_TOTAL_LENGTH;

/// One piece: which file, where in it, how many bytes of it.
#[derive(Clone, Copy)]
struct PieceSpan {
    file: usize,
    start: u64,
    len: u32,
}

/// What hashing left to write.
pub(super) struct Built {
    /// Per file: its `pieces root` (`None` when empty) and layer.
    roots: Vec<Option<Hash>>,
    /// `piece layers`, keyed by root.
    pub(super) layers: BTreeMap<ByteBuf, ByteBuf>,
    /// The v1 half's SHA-1s (hybrid only).
    sha1: Option<Vec<u8>>,
    /// The v1 half's file list with its pad files (hybrid multi-file).
    v1_files: Option<Vec<(Vec<String>, u64, bool)>>,
    /// The v1 half's total length (hybrid single file).
    v1_length: Option<u64>,
    files: Vec<(Vec<String>, u64)>,
    multi_file: bool,
}

/// Reads and hashes every piece of `files` (on one worker per core), for
/// `format` (v2 or hybrid).
pub(super) fn build(
    files: &[SourceFile],
    multi_file: bool,
    piece_length: u32,
    format: Format,
    progress: &dyn Fn(u64),
) -> Result<Built, CreateError> {
    let pl = u64::from(piece_length);
    let hybrid = format == Format::Hybrid;
    // The aligned layout: pieces per file, and the v1 half's files.
    let mut spans = Vec::new();
    let mut v1_files = Vec::new();
    let mut offset = 0u64;
    for (i, f) in files.iter().enumerate() {
        v1_files.push((f.rel.clone(), f.length, false));
        for k in 0..f.length.div_ceil(pl) {
            let start = k * pl;
            spans.push(PieceSpan {
                file: i,
                start,
                len: (f.length - start).min(pl) as u32,
            });
        }
        offset += f.length;
        let pad = offset.next_multiple_of(pl) - offset;
        if multi_file && pad > 0 {
            v1_files.push((vec![".pad".into(), pad.to_string()], pad, true));
            offset += pad;
        }
        if offset > MAX_TOTAL_LENGTH {
            return Err(CreateError::TooLarge);
        }
    }
    let hashed = hash_spans(
        files,
        &spans,
        piece_length,
        hybrid && multi_file,
        hybrid,
        progress,
    )?;
    // Per file: the root from its pieces' hashes.
    let mut roots = vec![None; files.len()];
    let mut layers = BTreeMap::new();
    let mut at = 0;
    for (i, f) in files.iter().enumerate() {
        let n = f.length.div_ceil(pl) as usize;
        let mine = &hashed[at..at + n];
        at += n;
        roots[i] = match mine {
            [] => None,
            [(_, root)] if f.length <= pl => Some(*root),
            _ => {
                let layer: Vec<Hash> = mine.iter().map(|(_, h)| *h).collect();
                let root = merkle::root_from_layer(&layer, f.length, piece_length);
                if let Some(root) = root {
                    layers.insert(ByteBuf::from(root.to_vec()), ByteBuf::from(layer.concat()));
                }
                root
            }
        };
    }
    let sha1 = hybrid.then(|| hashed.iter().flat_map(|(s, _)| *s).collect());
    Ok(Built {
        roots,
        layers,
        sha1,
        v1_files: (hybrid && multi_file).then_some(v1_files),
        v1_length: (hybrid && !multi_file).then(|| files.first().map_or(0, |f| f.length)),
        files: files.iter().map(|f| (f.rel.clone(), f.length)).collect(),
        multi_file,
    })
}

/// A piece's index, SHA-1 (zero when not wanted) and merkle hash.
type Hashed = (usize, [u8; 20], Hash);

/// Per piece, in order: its SHA-1 (with `sha1`; over the data, and with
/// `padded` the zeros up to a whole piece), and its merkle hash (the
/// piece's layer entry, or for a file of one piece or less the file's
/// root).
fn hash_spans(
    files: &[SourceFile],
    spans: &[PieceSpan],
    piece_length: u32,
    padded: bool,
    sha1: bool,
    progress: &dyn Fn(u64),
) -> Result<Vec<([u8; 20], Hash)>, CreateError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, spans.len().max(1));
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<u64>();
    let mut out = vec![([0u8; 20], merkle::ZERO); spans.len()];
    let results: Vec<Result<Vec<Hashed>, CreateError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let tx = tx.clone();
                let next = &next;
                s.spawn(move || {
                    let mut buf = vec![0u8; piece_length as usize];
                    let zeros = vec![0u8; if padded { piece_length as usize } else { 0 }];
                    let mut open: Option<(usize, File)> = None;
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(span) = spans.get(i) else {
                            return Ok(done);
                        };
                        let f = &files[span.file];
                        let io_err = |source| CreateError::Io {
                            path: f.disk.clone(),
                            source,
                        };
                        let file = match &mut open {
                            Some((j, file)) if *j == span.file => file,
                            _ => {
                                &mut open
                                    .insert((span.file, File::open(&f.disk).map_err(io_err)?))
                                    .1
                            }
                        };
                        let data = &mut buf[..span.len as usize];
                        if let Err(e) = file.read_exact_at(data, span.start) {
                            next.store(spans.len(), Ordering::Relaxed);
                            return Err(io_err(e));
                        }
                        let data = &buf[..span.len as usize];
                        let v2 = if f.length <= u64::from(piece_length) {
                            merkle::file_root(data)
                        } else {
                            merkle::piece_hash(data, piece_length)
                        };
                        let v1 = if sha1 {
                            let mut h = Sha1::new();
                            h.update(data);
                            if padded {
                                h.update(&zeros[..(piece_length - span.len) as usize]);
                            }
                            h.finalize().into()
                        } else {
                            [0; 20]
                        };
                        done.push((i, v1, v2));
                        let _ = tx.send(u64::from(span.len));
                    }
                })
            })
            .collect();
        drop(tx);
        let mut total = 0;
        for n in rx {
            total += n;
            progress(total);
        }
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(CreateError::Io {
                        path: std::path::PathBuf::new(),
                        source: std::io::Error::other("hashing thread panicked"),
                    })
                })
            })
            .collect()
    });
    for r in results {
        for (i, v1, v2) in r? {
            out[i] = (v1, v2);
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct FileProps {
    length: u64,
    #[serde(rename = "pieces root", skip_serializing_if = "Option::is_none")]
    pieces_root: Option<ByteBuf>,
}

/// A node of the `file tree`: a folder of named nodes, or a file (its
/// properties under the empty key).
#[derive(Serialize)]
#[serde(untagged)]
enum TreeNode {
    Folder(BTreeMap<String, TreeNode>),
    File(BTreeMap<&'static str, FileProps>),
}

#[derive(Serialize)]
pub(super) struct InfoOut<'a> {
    #[serde(rename = "file tree")]
    file_tree: BTreeMap<String, TreeNode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<Vec<FileOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<u64>,
    #[serde(rename = "meta version")]
    meta_version: u8,
    name: &'a str,
    #[serde(rename = "piece length")]
    piece_length: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pieces: Option<ByteBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private: Option<u8>,
}

impl Built {
    /// The info dict: the v2 `file tree` and, for a hybrid, the v1 half.
    pub(super) fn info<'a>(
        &'a self,
        name: &'a str,
        piece_length: u32,
        private: bool,
    ) -> InfoOut<'a> {
        let mut tree: BTreeMap<String, TreeNode> = BTreeMap::new();
        for ((rel, length), root) in self.files.iter().zip(&self.roots) {
            // A single file is named by the torrent's name at the top.
            let path: Vec<&str> = if self.multi_file {
                rel.iter().map(String::as_str).collect()
            } else {
                vec![name]
            };
            let props = FileProps {
                length: *length,
                pieces_root: root.map(|r| ByteBuf::from(r.to_vec())),
            };
            insert(&mut tree, &path, props);
        }
        InfoOut {
            file_tree: tree,
            files: self.v1_files.as_ref().map(|list| {
                list.iter()
                    .map(|(path, length, pad)| FileOut {
                        attr: pad.then_some("p"),
                        length: *length,
                        path: path.iter().map(String::as_str).collect(),
                    })
                    .collect()
            }),
            length: self.v1_length,
            meta_version: 2,
            name,
            piece_length,
            pieces: self.sha1.clone().map(ByteBuf::from),
            private: private.then_some(1),
        }
    }
}

/// Puts a file's properties at `path` in `tree`.
fn insert(tree: &mut BTreeMap<String, TreeNode>, path: &[&str], props: FileProps) {
    let Some((last, dirs)) = path.split_last() else {
        return;
    };
    let mut node = tree;
    for d in dirs {
        let entry = node
            .entry((*d).to_string())
            .or_insert_with(|| TreeNode::Folder(BTreeMap::new()));
        node = match entry {
            TreeNode::Folder(children) => children,
            // `walk` never yields a path that is a file and a folder.
            TreeNode::File(_) => return,
        };
    }
    node.insert(
        (*last).to_string(),
        TreeNode::File(BTreeMap::from([("", props)])),
    );
}
