//! Storage against the real binary: nothing is written outside `-o` or
//! over the user's files, and file handles are a budget (10,000 files
//! under `ulimit -n 256`).

use crate::util::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// The one `error:` line of a failed run, asserted to be alone.
fn one_error_line(o: &Output) -> String {
    let errors: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{}", o.stderr);
    errors[0].to_string()
}

/// Runs `btc T -o OUT EXTRA` with no peer at all, expecting it to refuse
/// before any network work.
fn refused(ctx: &Ctx, t: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![s(t), "-o", s(out), "--no-seed", "--no-dht", "--port", "0"];
    args.extend_from_slice(extra);
    let o = ctx.run_btc(&args, secs(30));
    assert!(!o.ok(), "btc accepted the download:\n{}", o.stderr);
    one_error_line(&o)
}

/// A symlink inside `-o` where the torrent's folder goes (pointing out of
/// it), and one where a file goes (pointing at a file outside): btc
/// refuses with one line naming the link, even with --overwrite, and
/// nothing outside changes.
#[test]
fn storage_symlink_inside_output_is_refused() {
    let ctx = Ctx::new("storage-symlink", secs(120));
    let src = ctx.mkdir("src");
    let root = Payload::nested("sym", 1).write(&src, 401);
    let t = ctx.join("sym.torrent");
    btc_create(&ctx, &root, &t, &[]);

    let out = ctx.mkdir("out");
    let outside = ctx.mkdir("outside");
    std::os::unix::fs::symlink(&outside, out.join("sym")).unwrap();
    let line = refused(&ctx, &t, &out, &[]);
    assert!(
        line.contains("symlink") && line.contains(s(&out.join("sym"))),
        "{line}"
    );
    assert_eq!(
        count_entries(&outside),
        0,
        "something was written through the link"
    );

    let out2 = ctx.mkdir("out2");
    fs::create_dir_all(out2.join("sym")).unwrap();
    let victim = ctx.join("victim.txt");
    fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, out2.join("sym/README.txt")).unwrap();
    let line = refused(&ctx, &t, &out2, &["--overwrite"]);
    assert!(
        line.contains("symlink") && line.contains("README.txt"),
        "{line}"
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    eprintln!("[storage-symlink] {line}");
}

/// A torrent named `.bashrc` run in a home folder that has one: refused
/// with one line, the file untouched; with --overwrite it downloads.
#[test]
fn storage_foreign_file_needs_overwrite() {
    let ctx = Ctx::new("storage-foreign", secs(120));
    let seed_dir = ctx.mkdir("seed");
    let file = Payload::single(".bashrc", 300_000).write(&seed_dir, 402);
    let t = ctx.join("bashrc.torrent");
    btc_create(&ctx, &file, &t, &[]);
    let home = ctx.mkdir("home");
    let mine = "alias ll='ls -l'\n".repeat(200);
    fs::write(home.join(".bashrc"), &mine).unwrap();

    let line = refused(&ctx, &t, &home, &[]);
    assert!(
        line.contains("refusing to overwrite")
            && line.contains(s(&home.join(".bashrc")))
            && line.contains("--overwrite"),
        "{line}"
    );
    assert_eq!(fs::read_to_string(home.join(".bashrc")).unwrap(), mine);
    eprintln!("[storage-foreign] {line}");

    let p = free_port();
    let _seeder = start_btc_seeder(&ctx, "seeder", &seed_dir, s(&t), p, &["--no-dht"]);
    let peer = format!("127.0.0.1:{p}");
    leech(
        &ctx,
        "leecher",
        &[
            s(&t),
            "-o",
            s(&home),
            "--peer",
            &peer,
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
            "--overwrite",
        ],
        secs(60),
    );
    assert_same_file(&file, &home.join(".bashrc"));
}

/// `btc ARGS` started by `sh` under `ulimit -n NOFILE` (the same process:
/// `exec`), with the harness's private state and home.
fn btc_limited(ctx: &Ctx, nofile: u32, args: &[&str]) -> Command {
    let mut c = ctx.command("sh");
    c.arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(BTC)
        .args(args)
        .arg("--no-port-mapping")
        .env_remove("RUST_LOG")
        .env("XDG_STATE_HOME", ctx.join("xdg-state"))
        .env("HOME", ctx.path());
    c
}

/// Open descriptors of `pid` now.
fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The soft "Max open files" of `pid`.
fn nofile_limit(pid: u32) -> Option<u64> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Asserts that the `want` tree (folders of small files, as written by
/// the 10,000-file test) is at `got` byte for byte and that `got` holds
/// nothing else. (`assert_same_tree` allocates 2 MiB per file: slow for
/// 10,000 of them.)
fn assert_same_small_tree(want: &Path, got: &Path) {
    assert_eq!(
        count_entries(want),
        count_entries(got),
        "entry counts differ"
    );
    let mut files = 0;
    for d in fs::read_dir(want).unwrap() {
        let d = d.unwrap().path();
        let rel = d.strip_prefix(want).unwrap();
        for f in fs::read_dir(&d).unwrap() {
            let f = f.unwrap().path();
            let other = got.join(rel).join(f.file_name().unwrap());
            let (a, b) = (fs::read(&f).unwrap(), fs::read(&other));
            assert!(
                b.as_ref().is_ok_and(|b| *b == a),
                "{} differs",
                other.display()
            );
            files += 1;
        }
    }
    assert_eq!(files, 10_000);
}

/// A torrent of 10,000 tiny files (16 KiB pieces span ~100 files each),
/// seeded by one btc and downloaded by another, both under
/// `ulimit -n 256`: the download completes byte for byte. A second
/// download under `ulimit -n 40` completes too.
#[test]
fn storage_ten_thousand_files_under_ulimit_256() {
    let ctx = Ctx::new("storage-10k-files", secs(600));
    let seed_dir = ctx.mkdir("seed");
    let root = seed_dir.join("many");
    let mut total = 0u64;
    let mut rng = Rng::new(403);
    for d in 0..100 {
        let dir = root.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            let len = 1 + (rng.next_u64() % 300) as usize;
            let mut bytes = vec![0u8; len];
            rng.fill(&mut bytes);
            fs::write(dir.join(format!("f{f:03}.bin")), &bytes).unwrap();
            total += len as u64;
        }
    }
    let t0 = Instant::now();
    let t = ctx.join("many.torrent");
    btc_create(&ctx, &root, &t, &[]);
    eprintln!("[storage-10k-files] btc create: {:?}", t0.elapsed());
    let t0 = Instant::now();

    let sp = free_port();
    let spp = sp.to_string();
    let mut seeder = ctx.spawn(
        "seeder",
        btc_limited(
            &ctx,
            256,
            &["-o", s(&seed_dir), s(&t), "--port", &spp, "--no-dht"],
        ),
    );
    seeder.wait_output("seeding ", secs(180));
    assert_eq!(nofile_limit(seeder.pid()), Some(256));
    eprintln!(
        "[storage-10k-files] seeder checked its data: {:?}",
        t0.elapsed()
    );

    let out = ctx.join("out");
    let peer = format!("127.0.0.1:{sp}");
    let start = Instant::now();
    let mut leecher = ctx.spawn(
        "leecher",
        btc_limited(
            &ctx,
            256,
            &[
                "-o",
                s(&out),
                s(&t),
                "--peer",
                &peer,
                "--no-seed",
                "--no-dht",
                "--port",
                "0",
            ],
        ),
    );
    let (mut peak_leecher, mut peak_seeder) = (0, 0);
    let mut limit_seen = None;
    while leecher.is_running() && start.elapsed() < secs(300) {
        // The latest reading: the first ones may be of `sh` before `ulimit`.
        limit_seen = nofile_limit(leecher.pid()).or(limit_seen);
        peak_leecher = peak_leecher.max(fd_count(leecher.pid()));
        peak_seeder = peak_seeder.max(fd_count(seeder.pid()));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    leecher.expect_success(secs(10));
    let el = start.elapsed();
    assert_eq!(
        limit_seen,
        Some(256),
        "the leecher did not run under the limit"
    );
    let t0 = Instant::now();
    assert_same_small_tree(&root, &out.join("many"));
    eprintln!("[storage-10k-files] compared: {:?}", t0.elapsed());
    seeder.assert_running();
    let err = format!("{}{}", leecher.stderr(), seeder.stderr());
    assert!(
        !err.lines().any(|l| l.starts_with("error")) && !err.contains("serving a block"),
        "{err}"
    );
    eprintln!(
        "[storage-10k-files] 10000 files, {total} bytes in {el:?}; peak descriptors: leecher {peak_leecher}, seeder {peak_seeder} (limit 256)"
    );

    // Far tighter: 40 descriptors in all, under a third of the old fixed
    // 128-handle cache.
    let out2 = ctx.join("out2");
    let start = Instant::now();
    let mut tight = ctx.spawn(
        "leecher-40",
        btc_limited(
            &ctx,
            40,
            &[
                "-o",
                s(&out2),
                s(&t),
                "--peer",
                &peer,
                "--no-seed",
                "--no-dht",
                "--port",
                "0",
            ],
        ),
    );
    tight.expect_success(secs(300));
    assert_same_small_tree(&root, &out2.join("many"));
    eprintln!(
        "[storage-10k-files] under ulimit -n 40: done in {:?}",
        start.elapsed()
    );
}
