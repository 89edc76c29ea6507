//! The v2 half against libtorrent's torrents (goldens from
//! `testdata/make-golden.sh`) and against hand-built hostile ones.

use super::super::{Metainfo, MetainfoError};
use crate::merkle::{self, Hash};
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;

/// A torrent of `testdata/torrents/`.
fn golden(name: &str) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/torrents");
    std::fs::read(dir.join(name)).expect("reading a golden torrent")
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// `make-golden.sh`'s payload bytes: the SHA-1 counter stream of `seed`.
pub(crate) fn counter_stream(size: usize, seed: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut i = 0;
    while buf.len() < size {
        buf.extend_from_slice(&Sha1::digest(format!("{seed}:{i}").as_bytes()));
        i += 1;
    }
    buf.truncate(size);
    buf
}

/// The golden folder `hybrid/`: (path under it, bytes).
pub(crate) fn golden_payload() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("a.bin", counter_stream(100_000, "ha")),
        ("c.bin", counter_stream(70_000, "hc")),
        ("sub/b.bin", counter_stream(50_000, "hb")),
    ]
}

/// The golden payload as `m` lays it out: each file at its offset, zeros
/// in the padding, up to the whole length.
fn golden_aligned(m: &Metainfo) -> Vec<u8> {
    let mut aligned = Vec::new();
    for (f, (_, data)) in m.info.files.iter().filter(|f| !f.pad).zip(golden_payload()) {
        aligned.resize(f.offset as usize, 0);
        aligned.extend_from_slice(&data);
    }
    aligned.resize(m.info.total_length as usize, 0);
    aligned
}

#[test]
fn libtorrent_hybrid_has_the_v2_hash_libtorrent_reports_and_checked_layers() {
    let m = Metainfo::from_bytes(&golden("hybrid-libtorrent.torrent")).unwrap();
    let v2 = m.v2.expect("a hybrid has a v2 half");
    // torrent_info.info_hashes().v2
    assert_eq!(
        hex(&v2.info_hash),
        "d18f1695f4e0b252cf0ab7b4746b8d0d068b29d59b7ac25e0f704a3e424cc843"
    );
    let paths: Vec<String> = v2.files.iter().map(|f| f.path.join("/")).collect();
    assert_eq!(paths, ["hybrid/a.bin", "hybrid/c.bin", "hybrid/sub/b.bin"]);
    // Every root and layer entry is what our merkle code makes of the data.
    for (f, (_, data)) in v2.files.iter().zip(golden_payload()) {
        assert_eq!(f.length, data.len() as u64);
        assert_eq!(
            f.pieces_root,
            Some(merkle::file_root(&data)),
            "{:?}",
            f.path
        );
        let layer: Vec<Hash> = data
            .chunks(32768)
            .map(|p| merkle::piece_hash(p, 32768))
            .collect();
        assert_eq!(f.layer.as_ref(), Some(&layer), "{:?}", f.path);
    }
}

#[test]
fn a_v2_only_torrent_is_read_in_the_aligned_layout_and_checks_its_pieces() {
    let m = Metainfo::from_bytes(&golden("v2-libtorrent.torrent")).unwrap();
    // torrent_info.info_hashes().v2; the swarm's 20 bytes are its start.
    let v2 = "31bae93bbfbab6fc539c56a40cfc90174f39f46b922eb622e04b02597bbb57e0";
    assert_eq!(m.v2.as_ref().unwrap().hash_hex(), v2);
    assert_eq!(m.info_hash.to_hex(), v2[..40]);
    // The hybrid's v1 half spells out the same layout, pad files and all.
    let hybrid = Metainfo::from_bytes(&golden("hybrid-libtorrent.torrent")).unwrap();
    let shape = |m: &Metainfo| -> Vec<(u64, u64, bool)> {
        m.info
            .files
            .iter()
            .map(|f| (f.offset, f.length, f.pad))
            .collect()
    };
    assert_eq!(shape(&m), shape(&hybrid));
    assert_eq!(m.info.piece_count(), 9);
    // Every piece of the real data passes; a flipped byte or a byte of
    // padding that is not zero fails.
    let aligned = golden_aligned(&m);
    for (i, piece) in aligned.chunks(32768).enumerate() {
        assert!(m.info.piece_matches(i, piece), "piece {i}");
        let mut bad = piece.to_vec();
        bad[100] ^= 1;
        assert!(!m.info.piece_matches(i, &bad), "piece {i} with a bad byte");
    }
    let mut padded = aligned[3 * 32768..4 * 32768].to_vec();
    assert_eq!(padded.len(), 32768);
    padded[32767] = 1;
    assert!(!m.info.piece_matches(3, &padded));
    assert!(!m.info.piece_matches(9, &aligned[..32768]));
}

#[test]
fn regression_a_hybrid_piece_must_pass_the_merkle_check_as_well_as_sha1() {
    let m = Metainfo::from_bytes(&golden("hybrid-libtorrent.torrent")).unwrap();
    let aligned = golden_aligned(&m);
    for (i, piece) in aligned.chunks(32768).enumerate() {
        assert!(m.info.piece_matches(i, piece), "piece {i}");
    }
    // A hybrid whose SHA-1s are right but whose merkle layer disagrees
    // (here: the checks of another piece) is not trusted.
    let mut swapped = m.info.clone();
    let checks = swapped.v2_pieces.as_mut().unwrap();
    checks.swap(0, 1);
    assert!(!swapped.piece_matches(0, &aligned[..32768]));
    // And the SHA-1 still counts: a wrong one fails a right merkle hash.
    let mut bad_sha1 = m.info.clone();
    bad_sha1.pieces[0] = [0; 20];
    assert!(!bad_sha1.piece_matches(0, &aligned[..32768]));
}

#[test]
fn a_v2_only_torrent_without_its_piece_layers_is_refused_by_name_and_v2_hash() {
    let mut t = build(&[("a", 40_000), ("b", 10)], false);
    t.dict().remove(b"piece layers".as_slice());
    match parse(&t) {
        Err(MetainfoError::V2Only { name, hash }) => {
            assert_eq!(name, "t");
            assert_eq!(hash.len(), 64);
        }
        other => panic!("not refused for its missing layers: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Hand-built torrents

#[derive(Clone, Debug)]
enum B {
    I(i64),
    S(Vec<u8>),
    L(Vec<B>),
    D(BTreeMap<Vec<u8>, B>),
}

impl B {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            B::I(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            B::S(s) => {
                out.extend_from_slice(format!("{}:", s.len()).as_bytes());
                out.extend_from_slice(s);
            }
            B::L(l) => {
                out.push(b'l');
                l.iter().for_each(|b| b.encode(out));
                out.push(b'e');
            }
            B::D(d) => {
                out.push(b'd');
                for (k, v) in d {
                    B::S(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    fn dict(&mut self) -> &mut BTreeMap<Vec<u8>, B> {
        match self {
            B::D(d) => d,
            _ => panic!("not a dict"),
        }
    }

    fn at(&mut self, path: &[&str]) -> &mut B {
        let mut b = self;
        for k in path {
            b = b.dict().get_mut(k.as_bytes()).expect("no such key");
        }
        b
    }
}

fn s(x: &str) -> B {
    B::S(x.as_bytes().to_vec())
}

fn d(items: Vec<(&str, B)>) -> B {
    B::D(
        items
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    )
}

const PIECE: u32 = 16384;

/// A torrent named `t` of `files` (path under `t`, length): v2 with every
/// root and layer right; with `hybrid`, a v1 half too (pad files aligning
/// each file to a piece, zero SHA-1 hashes of the right count).
fn build(files: &[(&str, usize)], hybrid: bool) -> B {
    let mut tree = d(vec![]);
    let mut layers = d(vec![]);
    let mut v1 = Vec::new();
    let mut offset = 0u64;
    for (i, (path, len)) in files.iter().enumerate() {
        let data = counter_stream(*len, &format!("f{i}"));
        let mut props = d(vec![("length", B::I(*len as i64))]);
        if *len > 0 {
            let root = merkle::file_root(&data);
            props
                .dict()
                .insert(b"pieces root".to_vec(), B::S(root.to_vec()));
            if *len > PIECE as usize {
                let layer: Vec<u8> = data
                    .chunks(PIECE as usize)
                    .flat_map(|p| merkle::piece_hash(p, PIECE))
                    .collect();
                layers.dict().insert(root.to_vec(), B::S(layer));
            }
        }
        let mut node = &mut tree;
        for c in path.split('/') {
            node = node
                .dict()
                .entry(c.as_bytes().to_vec())
                .or_insert_with(|| d(vec![]));
        }
        node.dict().insert(Vec::new(), props);
        let parts: Vec<B> = path.split('/').map(s).collect();
        v1.push(d(vec![
            ("length", B::I(*len as i64)),
            ("path", B::L(parts)),
        ]));
        offset += *len as u64;
        let pad = offset.next_multiple_of(u64::from(PIECE)) - offset;
        if pad > 0 && i + 1 < files.len() {
            v1.push(d(vec![
                ("attr", s("p")),
                ("length", B::I(pad as i64)),
                ("path", B::L(vec![s(".pad"), s(&pad.to_string())])),
            ]));
            offset += pad;
        }
    }
    let mut info = d(vec![
        ("file tree", tree),
        ("meta version", B::I(2)),
        ("name", s("t")),
        ("piece length", B::I(i64::from(PIECE))),
    ]);
    if hybrid {
        let pieces = offset.div_ceil(u64::from(PIECE)) as usize;
        info.dict().insert(b"files".to_vec(), B::L(v1));
        info.dict()
            .insert(b"pieces".to_vec(), B::S(vec![0; 20 * pieces]));
    }
    d(vec![("info", info), ("piece layers", layers)])
}

fn parse(t: &B) -> Result<Metainfo, MetainfoError> {
    let mut bytes = Vec::new();
    t.encode(&mut bytes);
    Metainfo::from_bytes(&bytes)
}

/// The `BadV2` reason, or a panic naming what came instead.
fn reason(t: &B) -> String {
    match parse(t) {
        Err(MetainfoError::BadV2(r)) => r,
        other => panic!("not refused as bad v2 metadata: {other:?}"),
    }
}

const FILES: &[(&str, usize)] = &[("a", 40_000), ("dir/b", 20_000), ("dir/e", 0), ("z", 9_000)];

#[test]
fn a_built_hybrid_parses_with_its_empty_file_and_layers() {
    let m = parse(&build(FILES, true)).unwrap();
    let v2 = m.v2.unwrap();
    let got: Vec<(String, u64, bool, bool)> = v2
        .files
        .iter()
        .map(|f| {
            (
                f.path.join("/"),
                f.length,
                f.pieces_root.is_some(),
                f.layer.is_some(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("t/a".to_string(), 40_000, true, true),
            ("t/dir/b".to_string(), 20_000, true, true),
            ("t/dir/e".to_string(), 0, false, false),
            ("t/z".to_string(), 9_000, true, false),
        ]
    );
}

#[test]
fn a_single_file_v2_tree_is_the_name_itself() {
    let mut t = build(&[("t", 50_000)], true);
    // v1 single-file layout: `length` instead of `files`.
    let info = t.at(&["info"]).dict();
    info.remove(b"files".as_slice());
    info.insert(b"length".to_vec(), B::I(50_000));
    let m = parse(&t).unwrap();
    assert_eq!(m.v2.unwrap().files[0].path, ["t"]);
}

#[test]
fn regression_a_piece_layer_that_does_not_hash_to_its_root_is_refused() {
    let mut t = build(FILES, true);
    let layers = t.at(&["piece layers"]).dict();
    let Some((_, B::S(layer))) = layers.iter_mut().next() else {
        panic!("no layer")
    };
    layer[5] ^= 1;
    assert!(reason(&t).contains("does not hash to its pieces root"));
}

#[test]
fn regression_an_unknown_piece_layer_entry_is_refused() {
    let mut t = build(FILES, true);
    t.at(&["piece layers"])
        .dict()
        .insert(vec![7; 32], B::S(vec![0; 64]));
    assert!(reason(&t).contains("no file"));
}

#[test]
fn regression_a_layer_for_a_file_of_one_piece_is_refused() {
    let mut t = build(FILES, true);
    let B::S(root) = t.at(&["info", "file tree", "z", "", "pieces root"]).clone() else {
        panic!("no root")
    };
    t.at(&["piece layers"])
        .dict()
        .insert(root, B::S(vec![1; 32]));
    assert!(reason(&t).contains("one piece long"));
}

#[test]
fn regression_a_zero_root_and_a_short_root_are_refused() {
    let mut t = build(FILES, true);
    *t.at(&["info", "file tree", "z", "", "pieces root"]) = B::S(vec![0; 32]);
    assert!(reason(&t).contains("is zero"));
    *t.at(&["info", "file tree", "z", "", "pieces root"]) = B::S(vec![1; 31]);
    assert!(reason(&t).contains("not 32 bytes"));
}

#[test]
fn regression_a_piece_length_that_is_not_a_power_of_two_is_refused() {
    let mut t = build(FILES, true);
    *t.at(&["info", "piece length"]) = B::I(3 * 16384);
    assert!(reason(&t).contains("power of two"));
}

#[test]
fn regression_an_unknown_meta_version_is_refused() {
    let mut t = build(FILES, true);
    *t.at(&["info", "meta version"]) = B::I(3);
    assert!(matches!(
        parse(&t),
        Err(MetainfoError::UnknownMetaVersion(3))
    ));
}

#[test]
fn regression_halves_that_describe_different_data_are_refused() {
    // A v1 file one byte longer than its v2 twin.
    let mut t = build(FILES, true);
    let B::L(files) = t.at(&["info", "files"]) else {
        panic!("no files")
    };
    *files[0].at(&["length"]) = B::I(40_001);
    // One more byte still fits the last piece, so only the halves differ.
    assert!(reason(&t).contains("v1 and v2 halves differ"));
    // Same files, but the v1 half without its pad files: `dir/b` would
    // not start on a piece boundary.
    let mut t = build(FILES, true);
    let B::L(files) = t.at(&["info", "files"]) else {
        panic!("no files")
    };
    files.retain(|f| !matches!(f, B::D(f) if f.contains_key(b"attr".as_slice())));
    let total: u64 = FILES.iter().map(|f| f.1 as u64).sum();
    *t.at(&["info", "pieces"]) = B::S(vec![0; 20 * total.div_ceil(16384) as usize]);
    assert!(reason(&t).contains("piece boundary"));
}

#[test]
fn regression_a_symlink_out_of_the_folder_is_refused() {
    let mut t = build(FILES, true);
    let props = t.at(&["info", "file tree", "z", ""]).dict();
    props.insert(b"attr".to_vec(), s("l"));
    props.insert(b"symlink path".to_vec(), B::L(vec![s(".."), s("etc")]));
    // `..` is taken at parse (libtorrent writes a link's own text); the
    // link is refused when the files are laid out, never created.
    if let Ok(m) = parse(&t) {
        for f in &m.info.files {
            if let Some(target) = &f.attr.symlink {
                assert_eq!(crate::storage::disk::link_text(&f.path, target), None);
            }
        }
    }
}

#[test]
fn regression_a_path_that_is_a_file_and_a_folder_is_refused() {
    let mut t = build(FILES, true);
    t.at(&["info", "file tree", "a"])
        .dict()
        .insert(b"x".to_vec(), d(vec![("", d(vec![("length", B::I(0))]))]));
    assert!(matches!(parse(&t), Err(MetainfoError::FileIsFolder(_))));
}

#[test]
fn regression_a_tree_deeper_than_the_limit_is_refused() {
    let deep = vec!["d"; super::MAX_DEPTH + 2].join("/") + "/f";
    let t = build(&[(deep.as_str(), 10)], false);
    assert!(reason(&t).contains("deeper than"));
}

#[test]
fn regression_unsafe_names_in_the_tree_are_refused() {
    let t = build(&[("../x", 10), ("y", 10)], false);
    assert!(matches!(
        parse(&t),
        Err(MetainfoError::BadPathComponent { .. })
    ));
}
