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
