use super::*;
use crate::metainfo::FileEntry;

fn info(files: &[(&[&str], u64)], piece_length: u32, content: &[u8]) -> Info {
    let mut off = 0;
    let files: Vec<FileEntry> = files
        .iter()
        .map(|(p, l)| {
            let e = FileEntry {
                path: p.iter().map(|s| s.to_string()).collect(),
                length: *l,
                offset: off,
                md5sum: None,
                pad: p.contains(&".pad"),
                attr: Default::default(),
            };
            off += l;
            e
        })
        .collect();
    let pieces = content
        .chunks(piece_length as usize)
        .map(|c| {
            let mut h = [0u8; 20];
            h.copy_from_slice(&Sha1::digest(c));
            h
        })
        .collect();
    Info {
        name: files[0].path[0].clone(),
        piece_length,
        pieces,
        v2_pieces: None,
        private: false,
        files,
        total_length: off,
        multi_file: true,
    }
}

/// Every piece: what a start without resume data checks.
fn all(g: &Geometry) -> Bitfield {
    Bitfield::full(g.piece_count as usize)
}

#[test]
fn write_read_check_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let info = info(
        &[
            (&["t", "a"], 30_000),
            (&["t", "empty"], 0),
            (&["t", "sub", "b"], 70_000),
        ],
        32768,
        &content,
    );
    let g = Geometry::new(info.total_length, info.piece_length);
    let st = Storage::new(dir.path(), &info).unwrap();
    let progress = AtomicU32::new(0);
    assert_eq!(
        st.check_existing(&g, &info, &all(&g), 2, &progress).count(),
        0
    );
    st.prepare(&Bitfield::new(g.piece_count as usize), false)
        .unwrap();
    assert!(dir.path().join("t/empty").exists());
    // Write pieces 0 and 2 only.
    for i in [0u32, 2] {
        let off = g.piece_offset(i) as usize;
        st.write(off as u64, &content[off..off + g.piece_len(i) as usize])
            .unwrap();
    }
    st.sync().unwrap();
    let progress = AtomicU32::new(0);
    let have = st.check_existing(&g, &info, &all(&g), 2, &progress);
    assert_eq!(have.iter_ones().collect::<Vec<_>>(), vec![0, 2]);
    assert_eq!(progress.load(Ordering::Relaxed), g.piece_count);
    // A read straddling the a -> empty -> sub/b boundary inside piece 0.
    let mut buf = vec![0u8; 5000];
    st.read(27_000, &mut buf).unwrap();
    assert!(buf[..] == content[27_000..32_000]);
    assert!(std::fs::read(dir.path().join("t/a")).unwrap()[..] == content[..30_000]);

    // Only the pieces asked for are hashed; the rest count as done.
    let progress = AtomicU32::new(0);
    let mut only = Bitfield::new(g.piece_count as usize);
    only.set(1);
    only.set(2);
    let have = st.check_existing(&g, &info, &only, 2, &progress);
    assert_eq!(have.iter_ones().collect::<Vec<_>>(), vec![2]);
    assert_eq!(progress.load(Ordering::Relaxed), g.piece_count);

    // Stamps: sizes as on disk, and a rewrite moves the time.
    let before = st.stamps();
    assert_eq!(before.len(), 3);
    assert_eq!(before[0].map(|s| s.size), Some(30_000));
    assert_eq!(before[1].map(|s| s.size), Some(0));
    assert_eq!(before[2].map(|s| s.size), Some(70_000));
    std::thread::sleep(std::time::Duration::from_millis(20));
    st.write(0, &content[..10]).unwrap();
    let after = st.stamps();
    assert_ne!(before[0], after[0]);
    assert_eq!(before[2], after[2]);
}

#[test]
fn refuses_escaping_paths() {
    let dir = tempfile::tempdir().unwrap();
    let mut i = info(&[(&["t", "a"], 10)], 16384, &[0u8; 10]);
    i.files[0].path = vec!["t".into(), "../x".into()];
    assert!(matches!(
        Storage::new(dir.path(), &i),
        Err(StorageError::UnsafePath(_))
    ));
    i.files[0].path = vec!["/etc".into()];
    assert!(Storage::new(dir.path(), &i).is_err());
}

/// BEP 47 pad files: never created or written, read as zeros, and the
/// pieces they fill verify from the real files alone.
#[test]
fn pad_files_stay_virtual() {
    let dir = tempfile::tempdir().unwrap();
    let mut content: Vec<u8> = (0..65536u32).map(|i| (i % 249) as u8 + 1).collect();
    content[20_000..32_768].fill(0);
    let info = info(
        &[
            (&["t", "a"], 20_000),
            (&["t", ".pad", "12768"], 12_768),
            (&["t", "b"], 32_768),
        ],
        32768,
        &content,
    );
    let g = Geometry::new(info.total_length, info.piece_length);
    let st = Storage::new(dir.path(), &info).unwrap();
    st.prepare(&Bitfield::new(g.piece_count as usize), false)
        .unwrap();
    assert!(!dir.path().join("t/.pad").exists());
    // A piece whose pad bytes came in as garbage is stored as zeros.
    let mut piece0 = content[..32_768].to_vec();
    piece0[25_000] = 7;
    st.write(0, &piece0).unwrap();
    st.write(32_768, &content[32_768..]).unwrap();
    assert!(!dir.path().join("t/.pad").exists());
    let mut buf = vec![1u8; 32_768];
    st.read(0, &mut buf).unwrap();
    assert!(buf[..] == content[..32_768]);
    let have = st.check_existing(&g, &info, &all(&g), 1, &AtomicU32::new(0));
    assert_eq!(have.count(), 2);
}

/// Content, torrent and storage for the tests below: `files` under `root`.
fn setup(root: &Path, files: &[(&[&str], u64)]) -> (Vec<u8>, Info, Geometry, Storage) {
    let total: u64 = files.iter().map(|f| f.1).sum();
    let content: Vec<u8> = (0..total).map(|i| (i * 13 % 251) as u8 + 1).collect();
    let info = info(files, 16384, &content);
    let g = Geometry::new(info.total_length, info.piece_length);
    let st = Storage::new(root, &info).unwrap();
    (content, info, g, st)
}

fn none(g: &Geometry) -> Bitfield {
    Bitfield::new(g.piece_count as usize)
}

/// A symlinked folder inside the output folder (the torrent's own top
/// folder here) is never written through: prepare and write refuse,
/// naming it, and nothing appears at its target.
#[test]
fn symlinked_folder_below_output_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("t")).unwrap();
    let (content, _info, g, st) = setup(&out, &[(&["t", "sub", "a"], 20_000)]);
    match st.prepare(&none(&g), true) {
        Err(StorageError::Symlink(p)) => assert_eq!(p, out.join("t")),
        other => panic!("expected a symlink refusal, got {other:?}"),
    }
    assert!(matches!(
        st.write(0, &content[..16384]),
        Err(StorageError::Symlink(_))
    ));
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    let msg = st.prepare(&none(&g), false).unwrap_err().to_string();
    assert!(
        msg.contains("symlink") && msg.contains(&out.join("t").display().to_string()),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}

/// A symlink where a torrent file goes, pointing at a file outside:
/// the outside file is neither overwritten (even with --overwrite) nor
/// read (its bytes, here the torrent's own, are not trusted as pieces
/// to seed).
#[test]
fn symlinked_file_below_output_is_neither_written_nor_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("t")).unwrap();
    let (content, info, g, st) = setup(&out, &[(&["t", "a"], 40_000)]);
    let victim = dir.path().join("victim");
    std::fs::write(&victim, &content).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("t/a")).unwrap();
    let have = st.check_existing(&g, &info, &all(&g), 2, &AtomicU32::new(0));
    assert_eq!(have.count(), 0, "pieces were read through a symlink");
    assert!(matches!(
        st.prepare(&have, true),
        Err(StorageError::Symlink(p)) if p == out.join("t/a")
    ));
    assert!(matches!(
        st.write(0, &[0u8; 16384]),
        Err(StorageError::Symlink(_))
    ));
    let mut buf = vec![0u8; 100];
    assert!(st.read(0, &mut buf).is_err());
    assert_eq!(std::fs::read(&victim).unwrap(), content);
}

/// The output folder itself may be a symlink (the user's own `-o`):
/// it is followed.
#[test]
fn output_folder_symlink_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (content, _info, g, st) = setup(&link, &[(&["t", "a"], 20_000)]);
    st.prepare(&none(&g), false).unwrap();
    st.write(0, &content[..16384]).unwrap();
    st.sync().unwrap();
    assert_eq!(
        std::fs::read(real.join("t/a")).unwrap()[..16384],
        content[..16384]
    );
}

/// A FIFO where a file goes is refused at once, not opened and hung on.
#[test]
fn fifo_in_place_of_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("t")).unwrap();
    let (_content, _info, g, st) = setup(dir.path(), &[(&["t", "a"], 100)]);
    let parent = rustix::fs::open(
        dir.path().join("t"),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        &parent,
        "a",
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    assert!(matches!(
        st.prepare(&none(&g), true),
        Err(StorageError::NotAFile(_))
    ));
    let mut buf = [0u8; 10];
    assert!(matches!(
        st.read(0, &mut buf),
        Err(StorageError::NotAFile(_))
    ));
}

/// A file at the torrent's path that btc did not make and whose data
/// passes no piece check (a torrent named `.bashrc` run in `~`) is
/// refused, byte for byte untouched; `--overwrite` replaces it.
#[test]
fn foreign_file_is_refused_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let (content, info, g, st) = setup(dir.path(), &[(&[".bashrc"], 30_000)]);
    let mine = b"export PATH=$HOME/bin:$PATH\n".repeat(100);
    std::fs::write(dir.path().join(".bashrc"), &mine).unwrap();
    let have = st.check_existing(&g, &info, &all(&g), 2, &AtomicU32::new(0));
    let err = st.prepare(&have, false).unwrap_err();
    assert!(matches!(&err, StorageError::NotOurs(p) if p == &dir.path().join(".bashrc")));
    assert!(err.to_string().contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(dir.path().join(".bashrc")).unwrap(), mine);
    // Same length as the torrent's file, other bytes: still refused.
    std::fs::write(dir.path().join(".bashrc"), vec![7u8; 30_000]).unwrap();
    assert!(matches!(
        st.prepare(&have, false),
        Err(StorageError::NotOurs(_))
    ));
    // --overwrite: truncated, sized, and written over.
    std::fs::write(dir.path().join(".bashrc"), vec![7u8; 50_000]).unwrap();
    st.prepare(&have, true).unwrap();
    let on_disk = std::fs::read(dir.path().join(".bashrc")).unwrap();
    assert_eq!(on_disk.len(), 30_000);
    assert!(on_disk.iter().all(|&b| b == 0));
    st.write(0, &content).unwrap();
    assert_eq!(std::fs::read(dir.path().join(".bashrc")).unwrap(), content);
}

/// Files btc made itself are resumed without --overwrite: one with a
/// verified piece, one preallocated and still all zeros (interrupted
/// before its first piece), an empty one, and one with its first piece
/// verified but the rest unwritten.
#[test]
fn own_partial_files_resume_without_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let files: &[(&[&str], u64)] = &[
        (&["t", "a"], 40_000),
        (&["t", "b"], 24_000),
        (&["t", "c"], 30_000),
    ];
    let (content, info, g, st) = setup(dir.path(), files);
    st.prepare(&none(&g), false).unwrap();
    st.write(0, &content[..16384]).unwrap();
    st.sync().unwrap();
    drop(st);
    // Run 2: a resumes (verified piece), b and c are btc's zeros.
    let st = Storage::new(dir.path(), &info).unwrap();
    let have = st.check_existing(&g, &info, &all(&g), 2, &AtomicU32::new(0));
    assert_eq!(have.iter_ones().collect::<Vec<_>>(), vec![0]);
    st.prepare(&have, false).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("t/a")).unwrap()[..16384],
        content[..16384]
    );
    // An empty file (created, crashed before sizing) is fine too.
    std::fs::write(dir.path().join("t/c"), b"").unwrap();
    st.prepare(&have, false).unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("t/c")).unwrap().len(),
        30_000
    );
    // But foreign bytes in b (no verified piece there) are refused.
    std::fs::write(dir.path().join("t/b"), vec![1u8; 24_000]).unwrap();
    assert!(matches!(
        st.prepare(&have, false),
        Err(StorageError::NotOurs(p)) if p == dir.path().join("t/b")
    ));
}

/// Zero detection skips holes and reads data extents.
#[test]
fn all_zeros_sees_data_in_a_sparse_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.set_len(10 << 20).unwrap();
    assert!(beneath::is_all_zeros(&f, 10 << 20, &p).unwrap());
    f.write_all_at(&[0u8; 5000], 3 << 20).unwrap();
    assert!(beneath::is_all_zeros(&f, 10 << 20, &p).unwrap());
    f.write_all_at(&[9], (7 << 20) + 1).unwrap();
    assert!(!beneath::is_all_zeros(&f, 10 << 20, &p).unwrap());
}

/// With more files than handles, every path (check, prepare, write,
/// read, sync) keeps the cache within its budget, and reads back what
/// was written.
#[test]
fn handle_cache_stays_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
    let files: Vec<(Vec<&str>, u64)> = names
        .iter()
        .map(|n| (vec!["t", n.as_str()], 100 + (n.len() as u64)))
        .collect();
    let refs: Vec<(&[&str], u64)> = files.iter().map(|(p, l)| (p.as_slice(), *l)).collect();
    let (content, info, g, st) = setup(dir.path(), &refs);
    st.set_open_files(8);
    let within = |st: &Storage| assert!(st.lock_handles().open.len() <= 8);
    st.check_existing(&g, &info, &all(&g), 2, &AtomicU32::new(0));
    within(&st);
    st.prepare(&none(&g), false).unwrap();
    within(&st);
    st.write(0, &content).unwrap();
    within(&st);
    st.sync().unwrap();
    assert!(st.lock_handles().dirty.is_empty());
    let mut back = vec![0u8; content.len()];
    st.read(0, &mut back).unwrap();
    within(&st);
    assert!(back == content);
    let have = st.check_existing(&g, &info, &all(&g), 2, &AtomicU32::new(0));
    assert_eq!(have.count(), g.piece_count as usize);
    within(&st);
}

/// The child half of `running_out_of_descriptors_shrinks_and_retries`:
/// only meaningful in a process of its own, whose descriptor limit it
/// lowers.
#[test]
#[ignore = "run by running_out_of_descriptors_shrinks_and_retries in a child process"]
fn fd_starved_child() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    if std::env::var_os("BTC_FD_STARVED_CHILD").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..60).map(|i| format!("f{i:02}")).collect();
    let files: Vec<(Vec<&str>, u64)> = names
        .iter()
        .map(|n| (vec!["t", "d", n.as_str()], 3000))
        .collect();
    let refs: Vec<(&[&str], u64)> = files.iter().map(|(p, l)| (p.as_slice(), *l)).collect();
    let (content, info, g, st) = setup(dir.path(), &refs);
    // A budget far above what the limit allows: only the reactive path
    // (EMFILE -> close handles -> retry) can keep this working.
    st.set_open_files(1000);
    let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let old = getrlimit(Resource::Nofile);
    let mut low = old;
    low.current = Some(open_now + 5);
    setrlimit(Resource::Nofile, low).unwrap();
    let r = (|| -> Result<(Bitfield, Vec<u8>), StorageError> {
        st.prepare(&none(&g), false)?;
        st.write(0, &content)?;
        st.sync()?;
        let mut back = vec![0u8; content.len()];
        st.read(0, &mut back)?;
        let have = st.check_existing(&g, &info, &all(&g), 2, &AtomicU32::new(0));
        Ok((have, back))
    })();
    let cap = st.lock_handles().cap;
    drop(st);
    setrlimit(Resource::Nofile, old).unwrap();
    let (have, back) = r.unwrap();
    assert!(back == content);
    assert_eq!(have.count(), g.piece_count as usize);
    assert!(cap < 10, "the cache did not shrink: cap {cap}");
    println!("fd-starved-child-ok cap={cap}");
}

/// Running out of descriptors (EMFILE) shrinks the handle cache and
/// retries: prepare, write, sync, read and check all succeed in a
/// process allowed only 5 descriptors more than it had.
#[test]
fn running_out_of_descriptors_shrinks_and_retries() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "storage::disk::tests::fd_starved_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("BTC_FD_STARVED_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("fd-starved-child-ok"),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With a selection, the unselected file is never created; the bytes of it
/// that share a piece with a selected file go to the parts file, so that
/// piece reads back whole and passes the check after a restart.
#[test]
fn unselected_files_live_only_in_the_parts_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Pieces of 16 KiB: a = [0, 20000) pieces 0-1; b = [20000, 60000)
    // pieces 1-3; c = [60000, 70000) pieces 3-4.
    let files: &[(&[&str], u64)] = &[
        (&["t", "a"], 20_000),
        (&["t", "b"], 40_000),
        (&["t", "c"], 10_000),
    ];
    let (content, info, g, mut st) = setup(root, files);
    st.select(&[true, false, true], ".btc-parts-test");
    st.prepare(&none(&g), false).unwrap();
    for p in [0u32, 1, 3, 4] {
        let off = g.piece_offset(p);
        let len = g.piece_len(p) as usize;
        st.write(off, &content[off as usize..off as usize + len])
            .unwrap();
    }
    st.sync().unwrap();
    assert!(root.join("t/a").exists() && root.join("t/c").exists());
    assert!(
        !root.join("t/b").exists(),
        "the unselected file was created"
    );
    // Pieces 1 and 3 are shared: one slot each in the parts file, which
    // ends where b's bytes of piece 3 end in the second slot.
    let parts = std::fs::metadata(root.join(".btc-parts-test")).unwrap();
    assert_eq!(parts.len(), 16384 + (60_000 - 3 * 16384));
    let mut buf = vec![0u8; g.piece_len(3) as usize];
    st.read(g.piece_offset(3), &mut buf).unwrap();
    assert_eq!(&buf[..], &content[3 * 16384..4 * 16384]);
    // Piece 2 lies wholly in the unselected file: it has no slot.
    assert!(st.read(g.piece_offset(2), &mut buf).is_err());
    // A restart finds exactly the written pieces.
    let (_, _, _, mut again) = setup(root, files);
    again.select(&[true, false, true], ".btc-parts-test");
    let have = again.check_existing(&g, &info, &all(&g), 1, &AtomicU32::new(0));
    assert_eq!(have.iter_ones().collect::<Vec<_>>(), vec![0, 1, 3, 4]);
    assert_eq!(again.stamps()[1], None);
}

/// Bytes of `path` in the page cache, as util-linux's `fincore` counts them.
fn resident_bytes(path: &Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (util-linux) runs");
    assert!(out.status.success(), "fincore failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Written data does not pile up in the page cache: once a range has aged
/// out of the write-behind window it is dropped (when clean; the flush in
/// the middle makes the first 40 MiB clean, so the drops are certain).
/// Needs a real filesystem: tmpfs pages are the file and are never dropped,
/// so the folder is made under `target/`, not in `/tmp`.
#[test]
fn written_pieces_age_out_of_the_page_cache() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let piece = 1usize << 20;
    let pieces = 80;
    let content: Vec<u8> = (0..piece * pieces)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let info = info(
        &[(&["big.bin"], content.len() as u64)],
        piece as u32,
        &content,
    );
    let g = Geometry::new(info.total_length, info.piece_length);
    let st = Storage::new(dir.path(), &info).unwrap();
    st.prepare(&Bitfield::new(g.piece_count as usize), false)
        .unwrap();
    let write = |i: usize| {
        st.write((i * piece) as u64, &content[i * piece..(i + 1) * piece])
            .unwrap()
    };
    (0..40).for_each(write);
    st.sync().unwrap();
    (40..80).for_each(write);
    st.sync().unwrap();
    let file = dir.path().join("big.bin");
    let resident = resident_bytes(&file);
    // Pieces 40..80 each pushed out one of the clean pieces 8..48 (those
    // past piece 40 possibly still dirty when their turn came): at least
    // pieces 8..40, 32 MiB, must have left. Without write-behind all
    // 80 MiB stay.
    let budget = WRITE_BEHIND_BUDGET;
    assert!(
        resident <= (pieces * piece) as u64 - budget,
        "{resident} bytes still cached of {}",
        pieces * piece
    );
    // And the data is all there.
    assert!(std::fs::read(&file).unwrap() == content);
}

/// Found on 50,000 seeding torrents: each kept a descriptor open after
/// its start-up check (prepare opened every file for writing), so the
/// process ran out of `ulimit -n`. A complete torrent whose files are
/// whole opens none of them for writing, a few pieces are hashed on the
/// calling thread, and `close_files` leaves nothing open.
#[test]
fn regression_complete_torrent_keeps_no_file_open() {
    let dir = tempfile::tempdir().unwrap();
    let (content, info, g, st) = setup(dir.path(), &[(&["t", "a"], 20_000), (&["t", "b"], 30_000)]);
    st.prepare(&none(&g), false).unwrap();
    st.write(0, &content).unwrap();
    st.sync().unwrap();
    st.close_files();
    assert_eq!(st.open_files(), 0);
    let st = Storage::new(dir.path(), &info).unwrap();
    let have = st.check_existing(&g, &info, &all(&g), 2, &AtomicU32::new(0));
    assert!(have.is_full());
    // The check read them; the start-up closes what it read.
    st.close_files();
    st.prepare(&have, false).unwrap();
    assert_eq!(
        st.open_files(),
        0,
        "a complete torrent's whole files are not opened for writing"
    );
    // Serving reads reopens read-only; closing when idle drops them.
    let mut back = vec![0u8; content.len()];
    st.read(0, &mut back).unwrap();
    assert!(back == content);
    assert!(st.open_files() > 0);
    st.close_files();
    assert_eq!(st.open_files(), 0);
    // An incomplete torrent still sizes (and so opens) its files.
    let mut partial = have.clone();
    partial.clear(partial.len() - 1);
    let st = Storage::new(dir.path(), &info).unwrap();
    st.prepare(&partial, false).unwrap();
    assert_eq!(st.open_files(), 2);
}

#[test]
fn a_bep47_symlink_points_within_the_torrent_folder_or_is_not_made() {
    let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        link_text(&v(&["t", "latest"]), &v(&["bin", "tool.sh"])).as_deref(),
        Some("bin/tool.sh")
    );
    assert_eq!(
        link_text(&v(&["t", "data", "up"]), &v(&["bin", "tool.sh"])).as_deref(),
        Some("../bin/tool.sh")
    );
    assert_eq!(
        link_text(&v(&["t", "a", "b", "l"]), &v(&["a", "..", "c"])).as_deref(),
        Some("../../c")
    );
    // Out of the torrent's folder, the folder itself, a single file.
    assert_eq!(
        link_text(&v(&["t", "up"]), &v(&["..", "etc", "passwd"])),
        None
    );
    assert_eq!(link_text(&v(&["t", "self"]), &v(&["a", ".."])), None);
    assert_eq!(link_text(&v(&["t"]), &v(&["x"])), None);
    assert_eq!(link_text(&v(&["t", "l"]), &v(&["/etc"])), None);
}

/// `write_run` writes pieces that follow one another in one `pwritev`
/// within a file, and piece by piece where the run crosses files or pad
/// files: the bytes on disk are the same either way.
#[test]
fn a_run_of_pieces_lands_as_written_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut content: Vec<u8> = (0..200_000u32).map(|i| (i * 11 % 247) as u8 + 1).collect();
    content[100_000..114_688].fill(0);
    let info = info(
        &[
            (&["t", "a"], 100_000),
            (&["t", ".pad", "14688"], 14_688),
            (&["t", "b"], 85_312),
        ],
        16384,
        &content,
    );
    let g = Geometry::new(info.total_length, info.piece_length);
    let st = Storage::new(dir.path(), &info).unwrap();
    st.prepare(&Bitfield::new(g.piece_count as usize), false)
        .unwrap();
    let piece = |i: u32| {
        let at = g.piece_offset(i) as usize;
        &content[at..at + g.piece_len(i) as usize]
    };
    // Pieces 0-4 are inside file a (one pwritev); 5-9 cross into the pad
    // and b; 10-12 (the short last one too) inside b.
    let runs: [&[u32]; 3] = [&[0, 1, 2, 3, 4], &[5, 6, 7, 8, 9], &[10, 11, 12]];
    for run in runs {
        let bufs: Vec<&[u8]> = run.iter().map(|&i| piece(i)).collect();
        st.write_run(g.piece_offset(run[0]), &bufs).unwrap();
    }
    assert!(!dir.path().join("t/.pad").exists());
    assert!(std::fs::read(dir.path().join("t/a")).unwrap()[..] == content[..100_000]);
    assert!(std::fs::read(dir.path().join("t/b")).unwrap()[..] == content[114_688..]);
    let have = st.check_existing(&g, &info, &all(&g), 1, &AtomicU32::new(0));
    assert_eq!(have.count(), g.piece_count as usize);
}

/// More buffers than one `pwritev` takes, some empty: all of them land
/// in order.
#[test]
fn vectored_write_takes_more_buffers_than_iov_max() {
    let dir = tempfile::tempdir().unwrap();
    let f = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("f"))
        .unwrap();
    let chunks: Vec<Vec<u8>> = (0..MAX_IOVECS * 2 + 7)
        .map(|i| vec![(i % 251) as u8; i % 5])
        .collect();
    let bufs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    write_all_vectored_at(&f, &bufs, 3).unwrap();
    let mut want = vec![0u8; 3];
    want.extend(chunks.concat());
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), want);
}
