//! The user's controls: rate limits, the display in logs, exit statuses,
//! completions and the man page.

use crate::util::*;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// `btc -o OUT TORRENT --peer PEER --no-dht --port 0 EXTRA…`: a leecher of
/// one known peer.
fn leecher_args<'a>(
    out: &'a std::path::Path,
    torrent: &'a std::path::Path,
    peer: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut a = vec![
        "-o",
        s(out),
        s(torrent),
        "--peer",
        peer,
        "--no-dht",
        "--port",
        "0",
    ];
    a.extend_from_slice(extra);
    a
}

/// A btc seeder of `len` random bytes; returns (seeder, torrent, content, peer).
fn seeder(
    ctx: &Ctx,
    len: u64,
    extra: &[&str],
) -> (Proc, std::path::PathBuf, std::path::PathBuf, String) {
    let seed_dir = ctx.mkdir("seed");
    let root = Payload::single("limited.bin", len).write(&seed_dir, 9);
    let t = ctx.join("limited.torrent");
    btc_create(ctx, &root, &t, &[]);
    let port = free_port();
    let mut args = vec!["--no-dht", "--bind", "127.0.0.1"];
    args.extend_from_slice(extra);
    let p = start_btc_seeder(ctx, "seeder", &seed_dir, s(&t), port, &args);
    (p, t, root, format!("127.0.0.1:{port}"))
}

/// `--download-limit 2M` on a 20 MiB download takes 9-12 s (unlimited it
/// takes well under a second on loopback), and `--upload-limit 2M` on the
/// seeder holds a free leecher to the same.
#[test]
fn rate_limits_hold_for_download_and_upload() {
    let ctx = Ctx::new("control-rate-limits", secs(150));
    for (name, seeder_args, leecher_limit) in [
        ("download", vec![], Some("2M")),
        ("upload", vec!["--upload-limit", "2M"], None),
    ] {
        let (mut seed, t, root, peer) = seeder(&ctx, 20 * MIB, &seeder_args);
        let out = ctx.join(format!("out-{name}"));
        let mut args = vec![
            "-o",
            s(&out),
            s(&t),
            "--peer",
            &peer,
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
        ];
        if let Some(l) = leecher_limit {
            args.extend(["--download-limit", l]);
        }
        let (_, _, took) = leech(&ctx, &format!("leecher-{name}"), &args, secs(40));
        assert_same_file(&root, &out.join("limited.bin"));
        let t = took.as_secs_f64();
        eprintln!("[rate-limit] {name} limit 2 MiB/s: 20 MiB in {t:.2} s");
        assert!(
            (9.0..=12.0).contains(&t),
            "{name} limit: 20 MiB at 2 MiB/s took {t:.2} s"
        );
        seed.terminate(secs(5));
        let _ = std::fs::remove_dir_all(ctx.join("seed"));
    }
    // A bad rate is a usage error, not a silent "no limit".
    let out = ctx.run_btc(&["--download-limit", "fast", "x.torrent"], secs(10));
    assert!(!out.ok());
    assert!(out.stderr.contains("not a rate"), "{}", out.stderr);
}

/// When stderr is not a terminal (a log file), btc prints the torrent's
/// name with a progress line every few seconds and a completion summary.
#[test]
fn plain_output_names_the_torrent_and_sums_up() {
    let ctx = Ctx::new("control-plain-output", secs(120));
    let (_seed, t, root, peer) = seeder(&ctx, 12 * MIB, &["--upload-limit", "1M"]);
    let out = ctx.join("out");
    let (stdout, stderr, _) = leech(
        &ctx,
        "leecher",
        &leecher_args(&out, &t, &peer, &["--no-seed"]),
        secs(60),
    );
    assert_same_file(&root, &out.join("limited.bin"));
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("limited.bin: ") && l.contains('%'))
        .collect();
    assert!(!progress.is_empty(), "no progress line in:\n{stderr}");
    assert!(
        progress.iter().all(|l| !l.contains("↓0 B/s")),
        "a progress line shows no rate while data flows:\n{stderr}"
    );
    // One line sums the download up (a second, `complete: …` on stderr,
    // said the same).
    let done: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.contains("limited.bin") && !l.contains('%'))
        .filter(|l| l.starts_with("downloaded ") || l.starts_with("complete"))
        .collect();
    assert_eq!(done.len(), 1, "one summary line:\n{stdout}\n{stderr}");
    assert!(
        done[0].starts_with("downloaded limited.bin: 12.00 MiB in ")
            && done[0].contains("/s average, from 1 peer, uploaded "),
        "{}",
        done[0]
    );
    let got = summary_downloaded_bytes(&stdout);
    assert!(
        got.is_some_and(|b| b.abs_diff(12 * MIB) < MIB / 100),
        "{got:?}"
    );
}

/// SIGTERM during a download: a clean stop within 2 s and status 143
/// (SIGINT gives 130), so scripts can tell an interrupted download.
#[test]
fn sigterm_mid_download_exits_143() {
    let ctx = Ctx::new("control-sigterm", secs(150));
    let (_seed, t, root, peer) = seeder(&ctx, 8 * MIB, &["--upload-limit", "512K"]);
    for (sig, code) in [(SIGTERM, 143), (SIGINT, 130)] {
        let out = ctx.join(format!("out-{code}"));
        let state = ctx.mkdir(format!("state-{code}"));
        let mut p = ctx.spawn(
            "leecher",
            ctx.btc(&leecher_args(
                &out,
                &t,
                &peer,
                &["--no-seed", "--state-dir", s(&state)],
            )),
        );
        p.wait_output("limited.bin: ", secs(30));
        let start = Instant::now();
        signal(p.pid(), sig);
        let status = p
            .wait_timeout(secs(5))
            .unwrap_or_else(|| panic!("still running 5 s after signal {sig}"));
        let took = start.elapsed();
        assert_eq!(status.code(), Some(code), "{}", p.tails());
        assert!(
            took <= Duration::from_secs(2),
            "signal {sig}: stopped after {took:?}"
        );
    }
    // The resume data saved at the SIGTERM is trusted by the next run: the
    // pieces it had are not hashed again, and the download completes.
    let out = ctx.join("out-143");
    let state = ctx.join("state-143");
    let (_, stderr, _) = leech(
        &ctx,
        "resumed",
        &leecher_args(
            &out,
            &t,
            &peer,
            &["--no-seed", "-v", "--state-dir", s(&state)],
        ),
        secs(60),
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("resume: ") && l.contains("trusted"))
        .unwrap_or_else(|| panic!("no resume line:\n{stderr}"));
    let trusted: u64 = line
        .split("resume: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable: {line}"));
    assert!(trusted > 0, "nothing trusted after SIGTERM: {line}");
    assert_same_file(&root, &out.join("limited.bin"));
}

/// `btc completions SHELL` and `btc man` print usable files.
#[test]
fn completions_and_man_page() {
    let ctx = Ctx::new("control-completions", secs(60));
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = ctx.run_btc(&["completions", shell], secs(10));
        out.assert_ok(shell);
        assert!(
            out.stdout.contains("download-limit"),
            "{shell}: no flags in the completions"
        );
    }
    let out = ctx.run_btc(&["completions", "bash"], secs(10));
    let f = ctx.join("btc.bash");
    std::fs::write(&f, &out.stdout).unwrap();
    let check = ctx.run(
        "bash -n",
        {
            let mut c = std::process::Command::new("bash");
            c.arg("-n").arg(&f);
            c
        },
        secs(10),
    );
    check.assert_ok("bash -n on the completions");
    let man = ctx.run_btc(&["man"], secs(10));
    man.assert_ok("man");
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH btc 1"),
        "{}",
        man.stdout
    );
    assert!(
        man.stdout.contains("upload\\-limit"),
        "man page lacks the flags"
    );
}

/// `--json`: every stdout line is a JSON object with `event`, `ts` and
/// `info_hash`; the events come in order; nothing else is on stdout.
#[test]
fn json_lines_tell_the_whole_story_in_order() {
    let ctx = Ctx::new("control-json", secs(120));
    let seed_dir = ctx.mkdir("seed");
    let payload = Payload::nested("jsoned", 1);
    let root = payload.write(&seed_dir, 5);
    let t = ctx.join("jsoned.torrent");
    btc_create(&ctx, &root, &t, &[]);
    let hash = btc_info_hash(&ctx, s(&t));
    let port = free_port();
    let _seed = start_btc_seeder(
        &ctx,
        "seeder",
        &seed_dir,
        s(&t),
        port,
        &["--no-dht", "--bind", "127.0.0.1", "--upload-limit", "1M"],
    );
    let out = ctx.join("out");
    let peer = format!("127.0.0.1:{port}");
    let (stdout, _, took) = leech(
        &ctx,
        "leecher",
        &leecher_args(&out, &t, &peer, &["--no-seed", "--json"]),
        secs(60),
    );
    assert_same_tree(&root, &out.join("jsoned"));
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let mut last_ts = 0.0;
    for e in &events {
        assert_eq!(e["info_hash"], hash.as_str(), "{e}");
        let ts = e["ts"].as_f64().unwrap();
        assert!(ts >= last_ts, "time goes back: {e}");
        last_ts = ts;
    }
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("no {n} event in {names:?}"))
    };
    assert_eq!(names[0], "started");
    assert!(pos("started") < pos("metadata"));
    assert!(pos("metadata") < pos("complete"));
    assert!(pos("complete") < pos("stopped"));
    assert_eq!(*names.last().unwrap(), "stopped");
    let meta = &events[pos("metadata")];
    assert_eq!(meta["name"], "jsoned");
    assert_eq!(meta["size"], payload.total());
    assert_eq!(meta["files"].as_array().unwrap().len(), payload.files.len());
    let done: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "file_done")
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    let mut sorted = done.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (1..=payload.files.len() as u64).collect::<Vec<_>>(),
        "{names:?}"
    );
    assert!(pos("complete") > names.iter().rposition(|x| *x == "file_done").unwrap());
    // Progress at least once a second while it ran.
    let progress = names.iter().filter(|n| **n == "progress").count();
    assert!(
        progress as f64 >= took.as_secs_f64() - 2.0,
        "{progress} progress events in {took:?}"
    );
    assert!(names.contains(&"peer"), "{names:?}");
    let stopped = &events[pos("stopped")];
    assert_eq!(stopped["complete"], true);
}

/// `-q`: a successful run prints nothing at all, even with a dead tracker
/// that would otherwise warn.
#[test]
fn quiet_prints_nothing_but_errors() {
    let ctx = Ctx::new("control-quiet", secs(90));
    let (_seed, t, root, peer) = seeder(&ctx, 3 * MIB, &[]);
    let out = ctx.join("out");
    let dead = format!("http://127.0.0.1:{}/announce", free_port());
    let (stdout, stderr, _) = leech(
        &ctx,
        "leecher",
        &[
            "-q",
            "-o",
            s(&out),
            s(&t),
            "--peer",
            &peer,
            "--tracker",
            &dead,
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
        ],
        secs(60),
    );
    assert_same_file(&root, &out.join("limited.bin"));
    assert_eq!(stdout, "", "stdout with -q");
    assert_eq!(stderr, "", "stderr with -q");
}

/// `--sequential`: stopped halfway, the file's first half is already all
/// there (with rarest-first it would be full of holes).
#[test]
fn sequential_fills_the_file_from_the_front() {
    let ctx = Ctx::new("control-sequential", secs(120));
    let (_seed, t, root, peer) = seeder(&ctx, 16 * MIB, &["--upload-limit", "4M"]);
    let out = ctx.join("out");
    let mut p = ctx.spawn(
        "leecher",
        ctx.btc(&leecher_args(
            &out,
            &t,
            &peer,
            &["--no-seed", "--json", "--sequential"],
        )),
    );
    let mut have = 0u64;
    ctx.wait_for("half the data", secs(60), || {
        have = p
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "progress")
            .filter_map(|e| e["have"].as_u64())
            .max()
            .unwrap_or(0);
        have >= 8 * MIB
    });
    signal(p.pid(), SIGTERM);
    p.wait_timeout(secs(5)).expect("stopped");
    let want = std::fs::read(&root).unwrap();
    let got = std::fs::read(out.join("limited.bin")).unwrap();
    let prefix = (have / 2) as usize;
    assert!(
        got.len() >= prefix && got[..prefix] == want[..prefix],
        "the first {prefix} bytes are not all there after {have} bytes verified"
    );
}

/// `--stream 2`: the second file's bytes on stdout, in order, the first of
/// them long before the download is over; exit 0 at the end of the file.
/// A reader that goes away (EPIPE) is a clean exit too.
#[test]
fn stream_writes_one_file_in_order_then_exits() {
    let ctx = Ctx::new("control-stream", secs(150));
    let seed_dir = ctx.mkdir("seed");
    let payload = Payload::multi(
        "show",
        &[("a.txt", MIB), ("b.mkv", 6 * MIB + 123), ("c.srt", MIB)],
    );
    let root = payload.write(&seed_dir, 77);
    let t = ctx.join("show.torrent");
    btc_create(&ctx, &root, &t, &[]);
    let port = free_port();
    let _seed = start_btc_seeder(
        &ctx,
        "seeder",
        &seed_dir,
        s(&t),
        port,
        &["--no-dht", "--bind", "127.0.0.1", "--upload-limit", "2M"],
    );
    let peer = format!("127.0.0.1:{port}");
    let out = ctx.join("out");
    let start = Instant::now();
    let mut p = ctx.spawn(
        "streamer",
        ctx.btc(&leecher_args(&out, &t, &peer, &["--stream", "2"])),
    );
    let mut first_byte = None;
    while p.is_running() && start.elapsed() < secs(60) {
        if first_byte.is_none() && !p.stdout_bytes().is_empty() {
            first_byte = Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = p
        .wait_timeout(secs(10))
        .expect("the streamer exits at the end of the file");
    let total = start.elapsed();
    assert!(status.success(), "{status}\n{}", p.tails());
    let want = std::fs::read(root.join("b.mkv")).unwrap();
    let got = p.stdout_bytes();
    assert_eq!(got.len(), want.len(), "stdout length");
    assert!(got == want, "stdout differs from the file");
    let first = first_byte.expect("no byte seen before exit");
    eprintln!("[stream] first byte after {first:?}, whole file after {total:?}");
    assert!(
        first + Duration::from_secs(1) < total,
        "first byte at {first:?} is not well before the end ({total:?})"
    );

    // EPIPE: the reader takes a little and leaves.
    let out2 = ctx.join("out2");
    let script = format!(
        "set -o pipefail; '{BTC}' -o '{}' '{}' --peer {peer} --no-dht --no-port-mapping --port 0 --stream 2 | head -c 1000 > /dev/null",
        s(&out2),
        s(&t)
    );
    let mut sh = std::process::Command::new("bash");
    sh.arg("-c").arg(&script);
    let r = ctx.run("stream-to-head", sh, secs(40));
    r.assert_ok("btc --stream | head -c 1000");
}

/// Unmounts a test's tmpfs even if the test fails.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A disk that fills up mid-download pauses the torrent with one line
/// naming the file and the cause (and a JSON `error` that is not fatal);
/// once space is freed the download resumes on its own and completes with
/// the right data, no restart needed.
#[test]
fn disk_full_pauses_then_resumes_on_its_own() {
    assert!(is_root(), "needs root (as CI runs) to mount a small tmpfs");
    let ctx = Ctx::new("control-disk-full", secs(150));
    let (_seed, t, root, peer) = seeder(&ctx, 6 * MIB, &[]);
    let out = ctx.mkdir("small-disk");
    let mount = |opts: &str| {
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "mount -o {opts} failed");
    };
    mount("size=2m");
    let _unmount = Mount(out.clone());
    let mut p = ctx.spawn(
        "leecher",
        ctx.btc(&leecher_args(&out, &t, &peer, &["--no-seed", "--json"])),
    );
    let line = p.wait_output("download paused: ", secs(60));
    let warn = line
        .lines()
        .find(|l| l.contains("download paused: "))
        .unwrap()
        .to_string();
    assert!(
        warn.contains("limited.bin") && warn.contains("No space left"),
        "{warn}"
    );
    let err = p
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "error")
        .unwrap_or_else(|| panic!("no JSON error event:\n{}", p.stdout()));
    assert_eq!(err["fatal"], false);
    p.assert_running();
    ctx.wait_for("a progress event saying paused", secs(10), || {
        p.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|e| e["event"] == "progress" && e["paused"] == true)
    });
    // Free space: the download must go on without a restart.
    mount("remount,size=32m");
    p.expect_success(secs(90));
    assert_same_file(&root, &out.join("limited.bin"));
    assert!(
        p.stderr().contains("retrying the download"),
        "{}",
        p.stderr()
    );
}

/// `btc info`'s numbered file list: (number, path inside the torrent).
fn numbered_files(ctx: &Ctx, torrent: &std::path::Path) -> Vec<(usize, String)> {
    let out = ctx.run_btc(&["info", s(torrent)], secs(20));
    out.assert_ok("info");
    out.stdout
        .lines()
        .skip_while(|l| !l.starts_with("Files"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            let n = it.next().unwrap().parse().unwrap();
            // Size is two words ("1.21 KiB"), then the path.
            let path = l.split_once("B  ").unwrap().1.trim().to_string();
            (n, path)
        })
        .collect()
}

/// `--select 2,5`: only those files appear in `-o` (plus one hidden parts
/// file for the pieces they share with their neighbours), byte-identical;
/// a rerun without peers finds them complete; and the selective download
/// seeds what it has to a leecher selecting the same files.
#[test]
fn select_downloads_only_the_chosen_files_and_seeds_them() {
    let ctx = Ctx::new("control-select", secs(150));
    let seed_dir = ctx.mkdir("seed");
    let payload = Payload::nested("picked", 1);
    let root = payload.write(&seed_dir, 3);
    let t = ctx.join("picked.torrent");
    btc_create(&ctx, &root, &t, &["--piece-length", "32768"]);
    let files = numbered_files(&ctx, &t);
    assert_eq!(files.len(), payload.files.len(), "{files:?}");
    let chosen: Vec<&(usize, String)> = files.iter().filter(|(n, _)| *n == 2 || *n == 5).collect();
    let port = free_port();
    let _seed = start_btc_seeder(
        &ctx,
        "seeder",
        &seed_dir,
        s(&t),
        port,
        &["--no-dht", "--bind", "127.0.0.1"],
    );
    let peer = format!("127.0.0.1:{port}");
    let out = ctx.join("out");
    let state = ctx.mkdir("state");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "-o",
            s(&out),
            s(&t),
            "--no-dht",
            "--state-dir",
            s(&state),
            "--select",
            "2,5",
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |name: &str, extra: &[&str]| {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        leech(&ctx, name, &a, secs(60))
    };
    run("leecher", &["--peer", &peer, "--no-seed", "--port", "0"]);
    let mut on_disk: Vec<String> = walk_files(&out);
    on_disk.sort();
    let mut want: Vec<String> = chosen.iter().map(|(_, p)| p.clone()).collect();
    want.push(format!(".btc-parts-{}", btc_info_hash(&ctx, s(&t))));
    want.sort();
    assert_eq!(on_disk, want, "only the chosen files and the parts file");
    for (_, p) in &chosen {
        let rel = p.strip_prefix("picked/").unwrap();
        assert_same_file(&root.join(rel), &out.join(p));
    }
    // No peers: what is on disk (parts file included) is complete.
    run("rerun", &["--no-seed", "--port", "0"]);
    // It seeds what it has to a leecher that wants the same files.
    let port2 = free_port();
    let p2 = port2.to_string();
    let a = args(&["--port", &p2, "--bind", "127.0.0.2"]);
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    let mut partial_seeder = ctx.spawn("partial-seeder", ctx.btc(&a));
    partial_seeder.wait_output("seeding", secs(60));
    let out2 = ctx.join("out2");
    let peer2 = format!("127.0.0.2:{port2}");
    leech(
        &ctx,
        "second-leecher",
        &leecher_args(&out2, &t, &peer2, &["--no-seed", "--select", "2,5"]),
        secs(60),
    );
    for (_, p) in &chosen {
        assert_same_file(&out.join(p), &out2.join(p));
    }
    // A magnet: the selection applies once the metadata arrives.
    let hash = btc_info_hash(&ctx, s(&t));
    let magnet = format!("magnet:?xt=urn:btih:{hash}&x.pe=127.0.0.1%3A{port}");
    let out3 = ctx.join("out3");
    let state3 = ctx.mkdir("state3");
    leech(
        &ctx,
        "magnet-leecher",
        &[
            "-o",
            s(&out3),
            &magnet,
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
            "--state-dir",
            s(&state3),
            "--exclude",
            "1,3-4,6-8",
        ],
        secs(60),
    );
    let mut on_disk3 = walk_files(&out3);
    on_disk3.sort();
    assert_eq!(
        on_disk3, want,
        "the magnet download holds only the chosen files"
    );
    for (_, p) in &chosen {
        assert_same_file(&out.join(p), &out3.join(p));
    }
}

/// Every file under `dir`, as paths relative to it.
fn walk_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// A second Ctrl-C ends the process at once, without waiting for the
/// clean stop: here the tracker answers the first announce and then never
/// answers `stopped`, so the clean stop would wait for it (2 s at most).
#[test]
fn second_ctrl_c_exits_at_once() {
    use std::io::{Read, Write};
    let ctx = Ctx::new("control-second-sigint", secs(90));
    let (_seed, t, _, peer) = seeder(&ctx, 8 * MIB, &["--upload-limit", "512K"]);
    let tracker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/announce", tracker.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (n, conn) in tracker.incoming().enumerate() {
            let Ok(mut c) = conn else { break };
            if n == 0 {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let body = b"d8:intervali1800e5:peers0:e";
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(head.as_bytes());
                let _ = c.write_all(body);
            } else {
                held.push(c); // never answered
            }
        }
    });
    let out = ctx.join("out");
    let mut p = ctx.spawn(
        "leecher",
        ctx.btc(&leecher_args(
            &out,
            &t,
            &peer,
            &["--no-seed", "--tracker", &url],
        )),
    );
    p.wait_output("limited.bin: ", secs(30));
    signal(p.pid(), SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        p.is_running(),
        "the clean stop should still wait for the tracker"
    );
    let second = Instant::now();
    signal(p.pid(), SIGINT);
    let status = p
        .wait_timeout(secs(5))
        .expect("exits after the second Ctrl-C");
    let took = second.elapsed();
    assert_eq!(status.code(), Some(130), "{}", p.tails());
    assert!(
        took < Duration::from_millis(700),
        "second Ctrl-C took {took:?}"
    );
    assert!(p.stderr().contains("interrupted twice"), "{}", p.stderr());
}
