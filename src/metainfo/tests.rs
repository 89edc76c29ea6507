use super::*;

macro_rules! golden {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/torrents/",
            $name
        ))
    };
}

macro_rules! bad {
    ($name:literal) => {
        Metainfo::from_bytes(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/torrents/bad/",
            $name
        )))
        .unwrap_err()
    };
}

fn hash(s: &str) -> InfoHash {
    InfoHash::parse(s).unwrap()
}

fn paths(m: &Metainfo) -> Vec<(String, u64, u64)> {
    m.info
        .files
        .iter()
        .map(|f| (f.path.join("/"), f.length, f.offset))
        .collect()
}

#[test]
fn single_file_mktorrent() {
    let m = Metainfo::from_bytes(golden!("single.torrent")).unwrap();
    assert_eq!(
        m.info_hash,
        hash("85597bf454e16d09ac349215cf70a88b4ac42ec0")
    );
    assert_eq!(m.info.name, "single.bin");
    assert!(!m.info.multi_file);
    assert!(!m.info.private);
    assert_eq!(m.info.piece_length, 32768);
    assert_eq!(m.info.piece_count(), 4);
    assert_eq!(m.info.total_length, 100_000);
    assert_eq!(paths(&m), vec![("single.bin".into(), 100_000, 0)]);
    assert_eq!(
        m.announce.as_deref(),
        Some("http://tracker.example/announce")
    );
    assert_eq!(m.comment.as_deref(), Some("single file golden"));
    assert_eq!(m.creation_date, None);
    assert!(m.created_by.as_deref().unwrap().starts_with("mktorrent"));
    assert_eq!(
        m.tracker_tiers(),
        vec![vec!["http://tracker.example/announce".to_string()]]
    );
    assert_eq!(m.info.piece_len(3), Some(100_000 - 3 * 32768));
    assert_eq!(m.info.piece_len(4), None);
    assert!(m.piece_hash(3).is_some());
    assert!(m.piece_hash(4).is_none());
}

#[test]
fn multi_file_transmission() {
    let m = Metainfo::from_bytes(golden!("multi.torrent")).unwrap();
    assert_eq!(
        m.info_hash,
        hash("758e7262710c866ff80e74a0cd6f73eb99a84fe0")
    );
    assert_eq!(m.info.name, "multi");
    assert!(m.info.multi_file);
    assert_eq!(m.info.piece_length, 16384);
    assert_eq!(m.info.piece_count(), 4);
    assert_eq!(m.info.total_length, 65_001);
    assert_eq!(
        paths(&m),
        vec![
            ("multi/a.txt".into(), 10_000, 0),
            ("multi/sub/b.bin".into(), 30_000, 10_000),
            ("multi/sub/deeper/c.bin".into(), 5_000, 40_000),
            ("multi/z.dat".into(), 20_001, 45_000),
        ]
    );
    assert_eq!(m.encoding.as_deref(), Some("UTF-8"));
    assert_eq!(m.comment.as_deref(), Some("multi file golden"));
    assert!(m.creation_date.is_some());
    // The raw info dict is kept byte for byte and hashes to the info-hash.
    let again = Metainfo::from_info_bytes(&m.info_bytes, m.tracker_tiers()).unwrap();
    assert_eq!(again.info_hash, m.info_hash);
    assert_eq!(again.info, m.info);
    assert_eq!(again.tracker_tiers(), m.tracker_tiers());
}

#[test]
fn announce_list_tiers() {
    let m = Metainfo::from_bytes(golden!("tiers.torrent")).unwrap();
    assert_eq!(
        m.info_hash,
        hash("676d45bffa6e7525fed18dcee1f8efc62b7b40d6")
    );
    assert_eq!(m.info.piece_count(), 2);
    assert_eq!(
        m.tracker_tiers(),
        vec![
            vec![
                "http://a.example/announce".to_string(),
                "http://b.example/announce".to_string()
            ],
            vec!["udp://c.example:6969/announce".to_string()],
        ]
    );
}

#[test]
fn private_flag() {
    let m = Metainfo::from_bytes(golden!("private.torrent")).unwrap();
    assert_eq!(
        m.info_hash,
        hash("00a56e7f9f9b273648b7ad2163709b508dbb599c")
    );
    assert!(m.info.private);
    assert_eq!(m.info.piece_count(), 2);
    assert_eq!(m.info.name, "private.bin");
}

#[test]
fn url_list_web_seeds() {
    let m = Metainfo::from_bytes(golden!("webseed.torrent")).unwrap();
    assert_eq!(
        m.info_hash,
        hash("565b993edd0205e060abb9a12fdf7532d3b4d4a2")
    );
    assert_eq!(m.info.piece_count(), 3);
    assert_eq!(
        m.url_list,
        vec![
            "http://seed1.example/files/".to_string(),
            "http://seed2.example/files/".to_string()
        ]
    );
}

#[test]
fn utf8_names() {
    let m = Metainfo::from_bytes(golden!("utf8.torrent")).unwrap();
    assert_eq!(
        m.info_hash,
        hash("c5d77d9fa18935b27f584177f804da1a7191fe17")
    );
    assert_eq!(m.info.name, "Ünïcödé");
    assert_eq!(m.info.piece_count(), 3);
    assert_eq!(
        paths(&m),
        vec![
            ("Ünïcödé/Ελληνικά/ñandú.bin".into(), 23_456, 0),
            ("Ünïcödé/日本語.txt".into(), 12_345, 23_456),
        ]
    );
}

#[test]
fn hostile_torrents_name_the_problem() {
    use MetainfoError as E;
    assert!(matches!(bad!("truncated.torrent"), E::Bencode(_)));
    assert!(matches!(bad!("not-bencode.torrent"), E::Bencode(_)));
    assert!(matches!(bad!("deep-nesting.torrent"), E::Bencode(_)));
    assert!(matches!(
        bad!("pieces-not-multiple-of-20.torrent"),
        E::PiecesNotMultipleOf20(23)
    ));
    assert!(matches!(
        bad!("dotdot-path.torrent"),
        E::BadPathComponent { component, .. } if component == ".."
    ));
    assert!(matches!(
        bad!("absolute-path.torrent"),
        E::BadPathComponent { component, .. } if component == "/etc/passwd"
    ));
    assert!(matches!(
        bad!("empty-path-component.torrent"),
        E::BadPathComponent { component, .. } if component.is_empty()
    ));
    assert!(matches!(bad!("empty-path-list.torrent"), E::EmptyPath(0)));
    assert!(matches!(
        bad!("piece-length-zero.torrent"),
        E::PieceLengthZero
    ));
    assert!(matches!(
        bad!("piece-length-huge.torrent"),
        E::PieceLengthTooLarge(_)
    ));
    assert!(matches!(
        bad!("piece-length-128mib.torrent"),
        E::PieceLengthTooLarge(134_217_728)
    ));
    assert!(matches!(bad!("zero-total-length.torrent"), E::EmptyTorrent));
    assert!(matches!(bad!("duplicate-paths.torrent"), E::DuplicatePath(p) if p == "folder/a.txt"));
    assert!(matches!(bad!("file-and-folder.torrent"), E::FileIsFolder(p) if p == "folder/a"));
    assert!(matches!(
        bad!("piece-count-mismatch.torrent"),
        E::PieceCountMismatch {
            actual: 2,
            expected: 3,
            ..
        }
    ));
    assert!(matches!(
        bad!("negative-length.torrent"),
        E::Negative {
            field: "length",
            value: -5
        }
    ));
    assert!(matches!(bad!("dotdot-name.torrent"), E::BadName { .. }));
    assert!(matches!(
        bad!("both-length-and-files.torrent"),
        E::BothLengthAndFiles
    ));
    assert!(matches!(
        bad!("neither-length-nor-files.torrent"),
        E::NeitherLengthNorFiles
    ));
    assert!(matches!(bad!("missing-info.torrent"), E::Missing("info")));
}

/// Pieces over 64 MiB are refused (each is buffered whole), with the limit
/// named; exactly 64 MiB is still a torrent.
#[test]
fn piece_length_is_capped_at_64_mib() {
    assert_eq!(
        bad!("piece-length-128mib.torrent").to_string(),
        "piece length 134217728 is over the 64 MiB limit"
    );
    let at_cap = format!(
        "d6:lengthi100e4:name1:x12:piece lengthi{}e6:pieces20:{}e",
        64 << 20,
        "a".repeat(20)
    );
    let m = Metainfo::from_bytes(&wrap(&at_cap)).unwrap();
    assert_eq!(m.info.piece_length, 64 << 20);
}

#[test]
fn error_messages_are_specific() {
    assert_eq!(
        bad!("piece-length-zero.torrent").to_string(),
        "piece length 0"
    );
    assert!(
        bad!("dotdot-path.torrent")
            .to_string()
            .starts_with("file path component \"..\" is not allowed")
    );
}

/// Builds a small single-file torrent by hand around an info dict body.
fn wrap(info: &str) -> Vec<u8> {
    format!("d4:info{info}e").into_bytes()
}

#[test]
fn utf8_twin_keys_are_preferred() {
    let pieces = "x".repeat(20);
    let info = format!(
        "d6:lengthi5e4:name3:old10:name.utf-83:new12:piece lengthi16384e6:pieces20:{pieces}e"
    );
    let m = Metainfo::from_bytes(&wrap(&info)).unwrap();
    assert_eq!(m.info.name, "new");
    assert_eq!(m.info.files[0].path, vec!["new".to_string()]);
    assert_eq!(&m.info_bytes[..], info.as_bytes());
}

#[test]
fn zero_length_files_inside_multi_file_are_allowed() {
    let pieces = "x".repeat(20);
    let info = format!(
        "d5:filesld6:lengthi0e4:pathl5:emptyeed6:lengthi7e6:md5sum3:abc4:pathl4:dataeee\
         4:name1:d12:piece lengthi16384e6:pieces20:{pieces}e"
    );
    let m = Metainfo::from_bytes(&wrap(&info)).unwrap();
    assert_eq!(m.info.files.len(), 2);
    assert_eq!(m.info.files[1].offset, 0);
    assert_eq!(m.info.files[1].md5sum.as_deref(), Some("abc"));
    assert_eq!(m.info.total_length, 7);
}

#[test]
fn empty_tiers_and_urls_are_dropped() {
    let pieces = "x".repeat(20);
    let info = format!("d6:lengthi5e4:name1:n12:piece lengthi16384e6:pieces20:{pieces}e");
    let buf = format!(
        "d8:announce1:a13:announce-listll0:el1:bi3eel0:1:cee4:info{info}8:url-list5:http:e"
    );
    let m = Metainfo::from_bytes(buf.as_bytes()).unwrap();
    assert_eq!(
        m.announce_list,
        vec![vec!["b".to_string()], vec!["c".to_string()]]
    );
    assert_eq!(m.url_list, vec!["http:".to_string()]);
}

#[test]
fn backslash_nul_and_drive_letters_are_refused() {
    for bad in ["a\\b", "a\0b", "C:", "."] {
        let pieces = "x".repeat(20);
        let info = format!(
            "d5:filesld6:lengthi5e4:pathl{}:{}eee4:name1:d12:piece lengthi16384e6:pieces20:{pieces}e",
            bad.len(),
            bad
        );
        assert!(
            matches!(
                Metainfo::from_bytes(&wrap(&info)),
                Err(MetainfoError::BadPathComponent { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn info_must_be_whole_in_from_info_bytes() {
    assert!(matches!(
        Metainfo::from_info_bytes(b"d4:name", vec![]),
        Err(MetainfoError::Bencode(_))
    ));
    assert!(matches!(
        Metainfo::from_info_bytes(b"i3e", vec![]),
        Err(MetainfoError::WrongType { field: "info", .. })
    ));
}

#[test]
fn info_hash_is_over_raw_bytes_even_when_unsorted_with_unknown_keys() {
    let pieces = "x".repeat(20);
    // Keys out of order plus an unknown key: re-serializing would change the hash.
    let info = format!(
        "d4:name1:n6:lengthi5e12:zzzz_unknownli1ei2ee12:piece lengthi16384e6:pieces20:{pieces}e"
    );
    let buf = format!("d7:unknowni9e4:info{info}e");
    let m = Metainfo::from_bytes(buf.as_bytes()).unwrap();
    let want: [u8; 20] = Sha1::digest(info.as_bytes()).into();
    assert_eq!(m.info_hash, InfoHash(want));
    assert_eq!(&m.info_bytes[..], info.as_bytes());
    assert_eq!(m.info.name, "n");
    assert!(m.tracker_tiers().is_empty());
}

#[test]
fn wrong_types_are_named() {
    let info = "d6:lengthi5e4:namei3e12:piece lengthi16384e6:pieces20:xxxxxxxxxxxxxxxxxxxxe";
    assert!(matches!(
        Metainfo::from_bytes(&wrap(info)),
        Err(MetainfoError::WrongType { field: "name", .. })
    ));
    let info = "d6:lengthi5e4:name1:n12:piece length1:x6:pieces20:xxxxxxxxxxxxxxxxxxxxe";
    assert!(matches!(
        Metainfo::from_bytes(&wrap(info)),
        Err(MetainfoError::WrongType {
            field: "piece length",
            ..
        })
    ));
    let info = "d5:filesi1e4:name1:n12:piece lengthi16384e6:pieces20:xxxxxxxxxxxxxxxxxxxxe";
    assert!(matches!(
        Metainfo::from_bytes(&wrap(info)),
        Err(MetainfoError::WrongType { field: "files", .. })
    ));
}

#[test]
fn truncated_says_so() {
    assert!(bad!("truncated.torrent").to_string().contains("truncated"));
}

#[test]
fn multi_file_mktorrent() {
    let m = Metainfo::from_bytes(golden!("multi-mktorrent.torrent")).unwrap();
    assert_eq!(
        m.info_hash,
        hash("a5e9ac19452c380a671961148be5b5b0a8c20aff")
    );
    assert_eq!(m.info.name, "multi");
    assert_eq!(m.info.piece_length, 32768);
    assert_eq!(m.info.piece_count(), 2);
    let t = Metainfo::from_bytes(golden!("multi.torrent")).unwrap();
    // Same payload as Transmission's multi.torrent, so the same file layout.
    assert_eq!(m.info.files, t.info.files);
}

/// libtorrent 2.0's hybrid torrent: the v1 info-hash covers the whole info
/// dict (with its v2 `file tree`), and BEP 47 pad files are marked.
#[test]
fn hybrid_with_pad_files_libtorrent() {
    let m = Metainfo::from_bytes(golden!("hybrid-libtorrent.torrent")).unwrap();
    // As libtorrent reports it (torrent_info.info_hashes().v1).
    assert_eq!(
        m.info_hash,
        hash("974735ffc2ea5426ee8ff5f5444ec8bcddae3683")
    );
    let pads: Vec<(String, bool)> = m
        .info
        .files
        .iter()
        .map(|f| (f.path.join("/"), f.pad))
        .collect();
    assert_eq!(
        pads,
        vec![
            ("hybrid/a.bin".to_string(), false),
            ("hybrid/.pad/31072".to_string(), true),
            ("hybrid/c.bin".to_string(), false),
            ("hybrid/.pad/28304".to_string(), true),
            ("hybrid/sub/b.bin".to_string(), false),
            ("hybrid/.pad/15536".to_string(), true),
        ]
    );
    // Every real file starts on a piece boundary.
    for f in m.info.files.iter().filter(|f| !f.pad) {
        assert_eq!(f.offset % u64::from(m.info.piece_length), 0, "{:?}", f.path);
    }
}

/// libtorrent names pad files by size, so two may share a path; real files
/// still may not.
#[test]
fn pad_files_may_share_a_path() {
    let pieces = "x".repeat(20);
    let file = |attr: &str, name: &str| {
        let attr = if attr.is_empty() {
            String::new()
        } else {
            format!("4:attr{}:{attr}", attr.len())
        };
        format!("d{attr}6:lengthi2e4:pathl{}:{name}ee", name.len())
    };
    let info = |files: String| {
        format!("d5:filesl{files}e4:name1:d12:piece lengthi16384e6:pieces20:{pieces}e")
    };
    let padded = info(format!(
        "{}{}{}{}",
        file("", "a"),
        file("p", ".pad"),
        file("", "b"),
        file("p", ".pad")
    ));
    let m = Metainfo::from_bytes(&wrap(&padded)).unwrap();
    let flags: Vec<bool> = m.info.files.iter().map(|f| f.pad).collect();
    assert_eq!(flags, vec![false, true, false, true]);
    let twins = info(format!("{}{}", file("x", "a"), file("", "a")));
    assert!(matches!(
        Metainfo::from_bytes(&wrap(&twins)),
        Err(MetainfoError::DuplicatePath(_))
    ));
}

/// Checking that no file is also a folder hashed every prefix of every
/// path: quadratic in the depth, 2 s for a 60 KB torrent with one
/// 20,000-level path and a minute for 300 KB.
#[test]
fn regression_metainfo_deep_path_is_checked_in_linear_time() {
    let mut info = b"d5:filesld6:lengthi1e4:pathl".to_vec();
    info.extend(b"1:a".repeat(100_000));
    info.extend_from_slice(
        b"eed6:lengthi1e4:pathl1:aeee4:name1:x12:piece lengthi16384e6:pieces20:",
    );
    info.extend_from_slice(&[0u8; 20]);
    info.push(b'e');
    let t = std::time::Instant::now();
    // x/a is a file, and the first folder of the deep path.
    let r = Metainfo::from_info_bytes(&info, vec![]);
    assert!(
        matches!(&r, Err(MetainfoError::FileIsFolder(p)) if p == "x/a"),
        "{:?}",
        r.err()
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}

/// BEP 47 in a v1 file list: `x` makes a file executable, `l` with a
/// `symlink path` makes a symlink (no data); a symlink without a target,
/// with a `/` in a component, or with data is refused.
#[test]
fn bep47_executable_and_symlink_attributes() {
    let pieces = "x".repeat(20);
    let info = |files: &str| {
        format!("d5:filesl{files}e4:name1:d12:piece lengthi16384e6:pieces20:{pieces}e")
    };
    let ok = info(
        "d4:attr1:x6:lengthi2e4:pathl3:runeed4:attr1:l6:lengthi0e4:pathl4:linke12:symlink pathl2:..1:d3:runee",
    );
    let m = Metainfo::from_bytes(&wrap(&ok)).unwrap();
    assert!(m.info.files[0].attr.executable);
    assert_eq!(m.info.files[0].attr.symlink, None);
    assert_eq!(
        m.info.files[1].attr.symlink,
        Some(vec!["..".to_string(), "d".into(), "run".into()])
    );
    for bad in [
        "d4:attr1:l6:lengthi0e4:pathl4:linkee",
        "d4:attr1:l6:lengthi0e4:pathl4:linke12:symlink pathlee",
        "d4:attr1:l6:lengthi0e4:pathl4:linke12:symlink pathl4:a/bee",
        "d4:attr1:l6:lengthi5e4:pathl4:linke12:symlink pathl1:aee",
    ] {
        assert!(
            Metainfo::from_bytes(&wrap(&info(bad))).is_err(),
            "took {bad}"
        );
    }
}
