//! Resume data against the real binary: a finished download restarts
//! without hashing, a changed file is hashed (and repaired) again,
//! `--check` hashes everything, and SIGKILL at any moment never makes a
//! later start trust data that is not there.

use crate::util::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// The numbers of `-v`'s `resume: T of N pieces trusted without hashing
/// (H of them on disk), U to hash` line: (T, N, H, U).
fn resume_line(stderr: &str) -> Option<(u64, u64, u64, u64)> {
    let l = stderr.lines().find(|l| l.contains("resume: "))?;
    let nums: Vec<u64> = l
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums[..] {
        [t, n, h, u] => Some((t, n, h, u)),
        _ => None,
    }
}

/// Common leecher arguments: `-o OUT --state-dir STATE TORRENT --no-seed
/// --no-dht --port 0 -v`, plus `--peer PEER` when given.
fn args<'a>(out: &'a Path, state: &'a Path, t: &'a Path, peer: Option<&'a str>) -> Vec<&'a str> {
    let mut a = vec![
        "-o",
        s(out),
        "--state-dir",
        s(state),
        s(t),
        "--no-seed",
        "--no-dht",
        "--port",
        "0",
        "-v",
    ];
    if let Some(p) = peer {
        a.extend(["--peer", p]);
    }
    a
}

/// A multi-file payload, its torrent, and a btc seeding it: (root, torrent,
/// seeder, seeder address).
fn seeded(ctx: &Ctx, seed: u64) -> (PathBuf, PathBuf, Proc, String) {
    let payload = Payload::multi(
        "multi",
        &[
            ("a.bin", 3 * MIB + 123),
            ("sub/b.bin", 5 * MIB),
            ("c.bin", 100_000),
        ],
    );
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, seed);
    let t = ctx.join("multi.torrent");
    btc_create(ctx, &root, &t, &["--piece-length", "65536"]);
    let p = free_port();
    let seeder = start_btc_seeder(ctx, "seeder", &seed_dir, s(&t), p, &["--no-dht"]);
    (root, t, seeder, format!("127.0.0.1:{p}"))
}

#[test]
fn resume_trusts_unchanged_files() {
    let ctx = Ctx::new("resume-trust", secs(120));
    let (root, t, mut seeder, peer) = seeded(&ctx, 901);
    let (out, state) = (ctx.join("out"), ctx.mkdir("state"));
    leech(
        &ctx,
        "leecher",
        &args(&out, &state, &t, Some(&peer)),
        secs(60),
    );
    assert_same_tree(&root, &out.join("multi"));
    seeder.kill_hard();

    // No peer anywhere: only the resume data can make this complete.
    let start = Instant::now();
    let o = ctx.run_btc(&args(&out, &state, &t, None), secs(30));
    let el = start.elapsed();
    o.assert_ok("second run");
    let (trusted, n, on_disk, to_hash) = resume_line(&o.stderr)
        .unwrap_or_else(|| panic!("no 'resume:' line on stderr:\n{}", o.stderr));
    assert_eq!(n, (8 * MIB + 100_123).div_ceil(65536));
    assert_eq!((trusted, on_disk, to_hash), (n, n, 0), "{}", o.stderr);
    assert!(
        !o.stderr.contains("hashing all"),
        "the second run hashed:\n{}",
        o.stderr
    );
    assert!(
        el < Duration::from_secs(5),
        "the second run took {el:?}:\n{}",
        o.stderr
    );
    assert_same_tree(&root, &out.join("multi"));
    eprintln!("[resume-trust] {n} pieces trusted; second run took {el:?}");
}

#[test]
fn resume_rehashes_a_changed_file() {
    let ctx = Ctx::new("resume-changed", secs(120));
    let (root, t, _seeder, peer) = seeded(&ctx, 902);
    let (out, state) = (ctx.join("out"), ctx.mkdir("state"));
    leech(
        &ctx,
        "leecher",
        &args(&out, &state, &t, Some(&peer)),
        secs(60),
    );
    let n = (8 * MIB + 100_123).div_ceil(65536);

    // Damage the middle of b.bin in place: same size, new mtime.
    let b = out.join("multi/sub/b.bin");
    let len = fs::metadata(&b).unwrap().len();
    std::thread::sleep(Duration::from_millis(20));
    fs::OpenOptions::new()
        .write(true)
        .open(&b)
        .unwrap()
        .write_all_at(b"not the torrent's bytes", len / 2)
        .unwrap();
    assert_eq!(fs::metadata(&b).unwrap().len(), len);

    let (stdout, stderr, _) = leech(
        &ctx,
        "leecher-2",
        &args(&out, &state, &t, Some(&peer)),
        secs(60),
    );
    assert_same_tree(&root, &out.join("multi"));
    let (trusted, total, on_disk, to_hash) =
        resume_line(&stderr).unwrap_or_else(|| panic!("no 'resume:' line:\n{stderr}"));
    assert_eq!(total, n);
    // b.bin (5 MiB from offset 3 MiB + 123) touches 81 of the pieces.
    assert_eq!(to_hash, 81, "{stderr}");
    assert_eq!((trusted, on_disk), (n - 81, n - 81), "{stderr}");
    let resumed = resumed_pieces(&stderr).unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        resumed == n - 1 || resumed == n - 2,
        "the damaged piece was not found: {resumed} of {n} on disk\n{stderr}"
    );
    let got = summary_downloaded_bytes(&stdout).unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        got > 0 && got <= 3 * 65536,
        "re-downloaded {got} bytes for one damaged piece"
    );

    // --check hashes everything though the resume data vouches for it all.
    let o = ctx.run_btc(
        &[args(&out, &state, &t, None), vec!["--check"]].concat(),
        secs(60),
    );
    o.assert_ok("--check run");
    assert!(
        o.stderr.contains(&format!(
            "--check: ignoring resume data, hashing all {n} pieces"
        )),
        "{}",
        o.stderr
    );
    assert!(resume_line(&o.stderr).is_none(), "{}", o.stderr);
    assert_eq!(resumed_pieces(&o.stderr), Some(n), "{}", o.stderr);
}

/// A libtorrent seeder capped at `rate` bytes/s, loopback included.
fn slow_lt_seeder(ctx: &Ctx, t: &Path, dir: &Path, rate: u64) -> (Proc, String) {
    let listen = format!("127.0.0.2:{}", free_port());
    let mut c = Command::new(PYTHON);
    c.arg("-u").arg(py_script("lt.py")).args([
        "seed",
        "--torrent",
        s(t),
        "--save",
        s(dir),
        "--listen",
        &listen,
        "--upload-limit",
        &rate.to_string(),
    ]);
    let mut lt = ctx.spawn("libtorrent-seeder", c);
    lt.wait_output("SEEDING", secs(60));
    (lt, listen)
}

#[test]
fn resume_kill_loop() {
    require_tool(PYTHON);
    let ctx = Ctx::new("resume-kill-loop", secs(150));
    let payload = Payload::multi(
        "killed",
        &[
            ("one.bin", 9 * MIB + 5),
            ("two/two.bin", 7 * MIB),
            ("three.bin", 4 * MIB + 77_777),
        ],
    );
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, 903);
    let t = ctx.join("killed.torrent");
    btc_create(&ctx, &root, &t, &["--piece-length", "65536"]);
    let n = payload.total().div_ceil(65536);
    // ~20 MiB at 768 KiB/s: the kills below land while data is arriving.
    let (mut lt, peer) = slow_lt_seeder(&ctx, &t, &seed_dir, 3 * MIB / 4);
    let (out, state) = (ctx.join("out"), ctx.mkdir("state"));
    let leech_args = args(&out, &state, &t, Some(&peer));

    // SIGKILL at random moments: mostly within a second or so, sometimes
    // after a periodic save (every 5 s) so a later start has data to trust.
    let mut rng = Rng::new(0x5eed);
    let mut kills = 0;
    for round in 0..10 {
        let wait_ms = if round % 3 == 2 {
            5_200 + rng.next_u64() % 1_500
        } else {
            200 + rng.next_u64() % 1_300
        };
        let mut p = ctx.spawn("leecher", ctx.btc(&leech_args));
        std::thread::sleep(Duration::from_millis(wait_ms));
        if !p.is_running() {
            eprintln!("[resume-kill-loop] round {round}: finished before the kill");
            break;
        }
        p.kill_hard();
        kills += 1;
        let e = p.stderr();
        assert!(
            !e.lines().any(|l| l.starts_with("error")),
            "round {round}:\n{e}"
        );
        eprintln!(
            "[resume-kill-loop] round {round}: killed after {wait_ms} ms; {:?}",
            resume_line(&e)
        );
    }
    assert!(kills >= 6, "only {kills} kills: the download was too fast");

    let (_, stderr, el) = leech(&ctx, "leecher-last", &leech_args, secs(60));
    assert_same_tree(&root, &out.join("killed"));
    eprintln!(
        "[resume-kill-loop] {kills} kills, then finished in {el:?}; {:?}",
        resume_line(&stderr)
    );
    lt.kill_hard();

    // Everything the resume data says is there, is.
    let o = ctx.run_btc(
        &[args(&out, &state, &t, None), vec!["--check"]].concat(),
        secs(60),
    );
    o.assert_ok("--check run");
    assert_eq!(resumed_pieces(&o.stderr), Some(n), "{}", o.stderr);
    assert_same_tree(&root, &out.join("killed"));
}
