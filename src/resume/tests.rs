use super::*;

const IH: InfoHash = InfoHash([7; 20]);

fn expect(files: usize, pieces: usize) -> Expect {
    Expect {
        info_hash: IH,
        files,
        pieces,
    }
}

fn sample() -> ResumeData {
    let mut have = Bitfield::new(11);
    for i in [0, 3, 10] {
        have.set(i);
    }
    ResumeData {
        info_hash: IH,
        output: PathBuf::from("/home/me/Downloads/ü"),
        files: vec![
            Some(FileStamp {
                size: 30_000,
                mtime_ns: 1_700_000_000_123_456_789,
            }),
            None,
            Some(FileStamp {
                size: 0,
                mtime_ns: -5,
            }),
        ],
        have,
    }
}

/// Files of 30,000 + a 2,768-byte pad + 0 + 70,000 bytes in 16 KiB pieces.
fn files() -> Vec<FileEntry> {
    let mut off = 0;
    [
        (30_000u64, false),
        (2_768, true),
        (0, false),
        (70_000, false),
    ]
    .iter()
    .map(|&(length, pad)| {
        let f = FileEntry {
            path: vec!["t".into(), format!("f{off}")],
            length,
            offset: off,
            md5sum: None,
            pad,
            attr: Default::default(),
        };
        off += length;
        f
    })
    .collect()
}

#[test]
fn round_trip() {
    let r = sample();
    let bytes = encode(&r);
    assert!(bytes.len() <= max_len(&expect(3, 11)));
    assert_eq!(decode(&bytes, &expect(3, 11)), Ok(r));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = encode(&sample());
    for n in 0..bytes.len() {
        assert!(decode(&bytes[..n], &expect(3, 11)).is_err(), "{n} bytes");
    }
}

#[test]
fn corruption_never_panics() {
    let bytes = encode(&sample());
    for i in 0..bytes.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= x;
            // Some flips still decode (a byte of the path, a bit of the
            // bitfield); what matters is that none panics and what decodes
            // has the expected shape.
            if let Ok(r) = decode(&b, &expect(3, 11)) {
                assert_eq!(r.files.len(), 3);
                assert_eq!(r.have.len(), 11);
            }
        }
        let mut b = bytes.clone();
        b.remove(i);
        let _ = decode(&b, &expect(3, 11));
    }
}

#[test]
fn wrong_shape_is_refused() {
    let bytes = encode(&sample());
    assert!(matches!(
        decode(&bytes, &expect(3, 17)),
        Err(ResumeError::Bitfield { .. })
    ));
    // 8 pieces take one byte, not two.
    assert!(matches!(
        decode(&bytes, &expect(3, 8)),
        Err(ResumeError::Bitfield { .. })
    ));
    assert!(matches!(
        decode(&bytes, &expect(4, 11)),
        Err(ResumeError::FileCount { got: 3, want: 4 })
    ));
    // Fewer files than written: over the value cap, refused before decoding.
    assert!(decode(&bytes, &expect(1, 11)).is_err());
    let other = Expect {
        info_hash: InfoHash([8; 20]),
        ..expect(3, 11)
    };
    assert_eq!(decode(&bytes, &other), Err(ResumeError::InfoHash));
}

#[test]
fn spare_bits_and_bad_entries_are_refused() {
    let mut r = sample();
    r.have = Bitfield::new(11);
    let mut bytes = encode(&r);
    // Set a spare bit of `4:have2:\0\0`.
    let at = bytes.windows(8).position(|w| w == b"4:have2:").unwrap();
    bytes[at + 9] = 0x01;
    assert!(matches!(
        decode(&bytes, &expect(3, 11)),
        Err(ResumeError::Bitfield { .. })
    ));
    let half = b"d5:filesld4:sizei1eee4:have0:9:info-hash20:\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x076:output2:/x7:versioni1ee";
    assert_eq!(
        decode(half, &expect(1, 0)),
        Err(ResumeError::BadFile(0)),
        "size without mtime"
    );
    let relative = b"d5:filesle4:have0:9:info-hash20:\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x076:output1:x7:versioni1ee";
    assert_eq!(decode(relative, &expect(0, 0)), Err(ResumeError::Output));
    let v2 = b"d5:filesle4:have0:9:info-hash20:\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x076:output2:/x7:versioni2ee";
    assert_eq!(decode(v2, &expect(0, 0)), Err(ResumeError::Version(2)));
}

#[test]
fn oversized_input_is_refused_unread() {
    let mut bytes = encode(&sample());
    bytes.resize(max_len(&expect(3, 11)) + 1, b'x');
    assert!(matches!(
        decode(&bytes, &expect(3, 11)),
        Err(ResumeError::Bencode(_))
    ));
}

fn stamp(size: u64, t: i64) -> Option<FileStamp> {
    Some(FileStamp { size, mtime_ns: t })
}

#[test]
fn only_pieces_of_unchanged_files_are_trusted() {
    let files = files();
    // 102,768 bytes in 16 KiB pieces: 7 pieces. File 0 is pieces 0..=1,
    // the pad ends piece 1 ... file 3 starts at 32,768 (piece 2).
    let saved = ResumeData {
        info_hash: IH,
        output: "/o".into(),
        files: vec![stamp(30_000, 1), None, stamp(0, 2), stamp(70_000, 3)],
        have: Bitfield::full(7),
    };
    let same = saved.files.clone();
    assert_eq!(trusted(&saved, &same, &files, 16384).count(), 7);

    // The last file changed: only the first file's pieces stay trusted.
    let mut now = same.clone();
    now[3] = stamp(70_000, 4);
    let t = trusted(&saved, &now, &files, 16384);
    assert_eq!(t.iter_ones().collect::<Vec<_>>(), vec![0, 1]);

    // The first one missing now; pads and empty files never matter.
    let mut now = same.clone();
    now[0] = None;
    now[1] = stamp(9, 9);
    now[2] = None;
    let t = trusted(&saved, &now, &files, 16384);
    assert_eq!(t.iter_ones().collect::<Vec<_>>(), vec![2, 3, 4, 5, 6]);

    // A file missing when saved is never trusted.
    let mut gone = saved.clone();
    gone.files[3] = None;
    assert_eq!(
        trusted(&gone, &same, &files, 16384)
            .iter_ones()
            .collect::<Vec<_>>(),
        vec![0, 1]
    );
}

#[test]
fn a_piece_shared_by_two_files_needs_both() {
    // Two 10,000-byte files in 16 KiB pieces: piece 0 spans both.
    let files = vec![
        FileEntry {
            path: vec!["a".into()],
            length: 10_000,
            offset: 0,
            md5sum: None,
            pad: false,
            attr: Default::default(),
        },
        FileEntry {
            path: vec!["b".into()],
            length: 10_000,
            offset: 10_000,
            md5sum: None,
            pad: false,
            attr: Default::default(),
        },
    ];
    let saved = ResumeData {
        info_hash: IH,
        output: "/o".into(),
        files: vec![stamp(10_000, 1), stamp(10_000, 1)],
        have: Bitfield::full(2),
    };
    let now = vec![stamp(10_000, 1), stamp(10_000, 2)];
    assert_eq!(trusted(&saved, &now, &files, 16384).count(), 0);
}

#[test]
fn the_fuzz_seed_decodes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/state_files/seed-resume"
    );
    let r = decode(&std::fs::read(path).unwrap(), &expect(2, 10)).unwrap();
    assert_eq!(r.have.iter_ones().collect::<Vec<_>>(), vec![0, 2, 5, 9]);
    assert_eq!(r.output, PathBuf::from("/home/user/Downloads"));
}
