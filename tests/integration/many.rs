//! Many torrents in one btc process: sources of every kind, one port for
//! all of them, the download queue, a bad source among good ones, and
//! Ctrl-C stopping them all.

use crate::util::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

fn lt_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(PYTHON);
    c.arg("-u").arg(py_script("lt.py")).args(args);
    c
}

/// Writes `count` single-file payloads `NAME-i.bin` of `len` bytes into
/// `dir` and makes their torrents; returns (data path, torrent path).
fn payloads(ctx: &Ctx, dir: &Path, name: &str, count: usize, len: u64) -> Vec<(PathBuf, PathBuf)> {
    (0..count)
        .map(|i| {
            let data = Payload::single(&format!("{name}-{i}.bin"), len + i as u64 * 1000)
                .write(dir, 5000 + i as u64);
            let t = ctx.join(format!("{name}-{i}.torrent"));
            btc_create(ctx, &data, &t, &["--piece-length", "65536"]);
            (data, t)
        })
        .collect()
}

/// Starts one btc seeding every torrent of `all` from `dir` on
/// 127.0.0.1:`port` (plus `extra` flags) and waits until all seed.
fn seed_all(ctx: &Ctx, dir: &Path, all: &[(PathBuf, PathBuf)], port: u16, extra: &[&str]) -> Proc {
    let port = port.to_string();
    let mut args = vec![
        "-o",
        s(dir),
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--no-dht",
    ];
    args.extend_from_slice(extra);
    args.extend(all.iter().map(|(_, t)| s(t)));
    let seeder = ctx.spawn("btc-seeder", ctx.btc(&args));
    ctx.wait_for("every torrent seeding", secs(60), || {
        seeder.stderr().matches("seeding ").count() >= all.len()
    });
    seeder
}

/// A leecher's arguments: `-o OUT --peer PEER` from 127.0.0.2, no DHT,
/// then `extra`, then `sources`.
fn leecher_args<'a>(
    out: &'a Path,
    peer: &'a str,
    extra: &[&'a str],
    sources: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "-o",
        s(out),
        "--peer",
        peer,
        "--bind",
        "127.0.0.2",
        "--port",
        "0",
        "--no-dht",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(sources);
    args
}

/// Parses `--json` output into events.
fn json_events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Three sources of three kinds (a .torrent file, a magnet link and a bare
/// info-hash) in one process, fetched from a libtorrent seeder and a btc
/// seeder that itself seeds two torrents on one port; the same torrent
/// given twice runs once.
#[test]
fn three_kinds_of_source_in_one_process() {
    require_tool(PYTHON);
    let ctx = Ctx::new("many-three-kinds", secs(240));
    let seed_dir = ctx.mkdir("seed");
    let all = payloads(&ctx, &seed_dir, "kind", 3, 3 * MIB);
    let (a, b, c) = (&all[0], &all[1], &all[2]);
    // libtorrent seeds A and B; btc seeds B and C, both on one port.
    let lt_listen = format!("127.0.0.2:{}", free_port());
    let mut lt = ctx.spawn(
        "libtorrent-seeder",
        lt_cmd(&[
            "seed",
            "--torrent",
            s(&a.1),
            "--torrent",
            s(&b.1),
            "--save",
            s(&seed_dir),
            "--listen",
            &lt_listen,
        ]),
    );
    lt.wait_output("SEEDING", secs(60));
    let p = free_port();
    let mut seeder = seed_all(&ctx, &seed_dir, &all[1..], p, &[]);
    let hash_b = btc_info_hash(&ctx, s(&b.1));
    let hash_c = btc_info_hash(&ctx, s(&c.1));
    let magnet_b = format!("magnet:?xt=urn:btih:{hash_b}");
    let out = ctx.mkdir("out");
    let btc_peer = format!("127.0.0.1:{p}");
    let (stdout, stderr, _) = leech(
        &ctx,
        "btc-leecher",
        &[
            "-o",
            s(&out),
            s(&a.1),
            &magnet_b,
            &hash_c,
            // The same torrent again, as a magnet: it runs once.
            &format!("magnet:?xt=urn:btih:{}", btc_info_hash(&ctx, s(&a.1))),
            "--peer",
            &lt_listen,
            "--peer",
            &btc_peer,
            "--bind",
            "127.0.0.3",
            "--port",
            "0",
            "--no-dht",
            "--no-seed",
            "-v",
        ],
        secs(150),
    );
    for (data, _) in &all {
        assert_same_file(data, &out.join(data.file_name().unwrap()));
    }
    let listening = stderr.matches("listening on").count();
    assert_eq!(listening, 1, "one listener for all torrents:\n{stderr}");
    let summaries = stdout
        .lines()
        .filter(|l| l.starts_with("downloaded "))
        .count();
    assert_eq!(
        summaries, 3,
        "three torrents, the repeat run once:\n{stdout}"
    );
    lt.assert_running();
    seeder.assert_running();
}

/// A btc seeding 50 torrents on one port serves whichever one a real
/// client (libtorrent, fetching by magnet) asks for.
#[test]
fn one_port_serves_fifty_torrents() {
    require_tool(PYTHON);
    let ctx = Ctx::new("many-fifty-seeded", secs(300));
    let seed_dir = ctx.mkdir("seed");
    let all = payloads(&ctx, &seed_dir, "fifty", 50, 64 * 1024);
    let list = ctx.join("sources.txt");
    let text: String = all
        .iter()
        .map(|(_, t)| format!("{}\n", t.display()))
        .collect();
    std::fs::write(&list, format!("# fifty torrents\n{text}")).unwrap();
    let p = free_port();
    let mut seeder = ctx.spawn(
        "btc-seeder",
        ctx.btc(&[
            "-o",
            s(&seed_dir),
            "-i",
            s(&list),
            "--port",
            &p.to_string(),
            "--bind",
            "127.0.0.1",
            "--no-dht",
        ]),
    );
    // Every torrent reaches seeding.
    ctx.wait_for("all fifty seeding", secs(120), || {
        seeder.stderr().matches("seeding fifty-").count() >= 50
    });
    let peer = format!("127.0.0.1:{p}");
    for pick in [7usize, 42] {
        let (data, t) = &all[pick];
        let out = ctx.mkdir(format!("lt-out-{pick}"));
        let magnet = format!("magnet:?xt=urn:btih:{}", btc_info_hash(&ctx, s(t)));
        let listen = format!("127.0.0.{}:{}", 2 + pick % 50, free_port());
        let mut lt = ctx.spawn(
            "libtorrent-fetch",
            lt_cmd(&[
                "fetch",
                "--magnet",
                &magnet,
                "--save",
                s(&out),
                "--listen",
                &listen,
                "--peer",
                &peer,
                "--timeout",
                "90",
            ]),
        );
        lt.expect_success(secs(120));
        assert_same_file(data, &out.join(data.file_name().unwrap()));
    }
    seeder.assert_running();
}

/// `--max-active 2`: two of four torrents download at once; the other two
/// wait (their phase says `queued`) and start only when a slot frees.
#[test]
fn max_active_runs_the_rest_after() {
    let ctx = Ctx::new("many-max-active", secs(240));
    let seed_dir = ctx.mkdir("seed");
    let all = payloads(&ctx, &seed_dir, "queue", 4, 3 * MIB);
    let p = free_port();
    // Slow enough that a download takes a few seconds.
    let mut seeder = seed_all(&ctx, &seed_dir, &all, p, &["--upload-limit", "2M"]);
    let out = ctx.mkdir("out");
    let peer = format!("127.0.0.1:{p}");
    let sources: Vec<&str> = all.iter().map(|(_, t)| s(t)).collect();
    let extra = ["--no-seed", "--json", "--max-active", "2"];
    let args = leecher_args(&out, &peer, &extra, &sources);
    let (stdout, _, _) = leech(&ctx, "btc-leecher", &args, secs(150));
    for (data, _) in &all {
        assert_same_file(data, &out.join(data.file_name().unwrap()));
    }
    let events = json_events(&stdout);
    // Info-hash -> position, from each torrent's `started` (given in order).
    let hashes: Vec<String> = all.iter().map(|(_, t)| btc_info_hash(&ctx, s(t))).collect();
    let ts = |e: &serde_json::Value| e["ts"].as_f64().unwrap();
    let mut completed: HashMap<String, f64> = HashMap::new();
    let mut first_downloading: HashMap<String, f64> = HashMap::new();
    let mut queued: HashMap<String, usize> = HashMap::new();
    for e in &events {
        let ih = e["info_hash"].as_str().unwrap_or_default().to_string();
        match e["event"].as_str() {
            Some("complete") => {
                completed.insert(ih, ts(e));
            }
            Some("progress") => match e["phase"].as_str() {
                Some("queued") => *queued.entry(ih).or_default() += 1,
                Some("downloading") => {
                    first_downloading.entry(ih).or_insert(ts(e));
                }
                _ => {}
            },
            _ => {}
        }
    }
    assert_eq!(completed.len(), 4, "every torrent completes:\n{stdout}");
    let first_done = hashes[..2]
        .iter()
        .map(|h| completed[h])
        .fold(f64::MAX, f64::min);
    let t0 = events.first().map(ts).unwrap_or_default();
    for (i, h) in hashes.iter().enumerate() {
        eprintln!(
            "[many-max-active] torrent {}: queued in {} progress lines, downloading from {:?} s, complete at {:.2} s",
            i + 1,
            queued.get(h).copied().unwrap_or(0),
            first_downloading.get(h).map(|t| t - t0),
            completed[h] - t0
        );
    }
    for h in &hashes[2..] {
        assert!(queued.get(h).copied().unwrap_or(0) > 0, "{h} was queued");
        if let Some(&t) = first_downloading.get(h) {
            assert!(
                t >= first_done,
                "{h} downloaded at {t} before a slot was free at {first_done}"
            );
        }
    }
    seeder.assert_running();
}

/// One source that cannot be read among good ones: its one-line error is
/// printed, the others complete, and the exit status says it failed.
#[test]
fn one_bad_source_fails_alone() {
    let ctx = Ctx::new("many-bad-source", secs(180));
    let seed_dir = ctx.mkdir("seed");
    let all = payloads(&ctx, &seed_dir, "good", 2, MIB);
    let p = free_port();
    let mut seeder = seed_all(&ctx, &seed_dir, &all, p, &[]);
    let garbage = ctx.join("garbage.torrent");
    std::fs::write(&garbage, b"d4:infoi3ee").unwrap();
    let out = ctx.mkdir("out");
    let peer = format!("127.0.0.1:{p}");
    let sources = [s(&all[0].1), s(&garbage), s(&all[1].1)];
    let args = leecher_args(&out, &peer, &["--no-seed"], &sources);
    let mut leecher = ctx.spawn("btc-leecher", ctx.btc(&args));
    let status = leecher.wait_timeout(secs(120)).expect("the run ends");
    assert_eq!(status.code(), Some(1), "{}", leecher.tails());
    let err = leecher.stderr();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("error: ") && l.contains("garbage.torrent"))
        .collect();
    assert_eq!(lines.len(), 1, "one line for the bad source:\n{err}");
    for (data, _) in &all {
        assert_same_file(data, &out.join(data.file_name().unwrap()));
    }
    seeder.assert_running();
}

/// Ctrl-C stops every torrent of the process within 2 s, mid-download.
#[test]
fn ctrl_c_stops_them_all() {
    let ctx = Ctx::new("many-ctrl-c", secs(180));
    let seed_dir = ctx.mkdir("seed");
    let all = payloads(&ctx, &seed_dir, "stop", 3, 8 * MIB);
    let p = free_port();
    let mut seeder = seed_all(&ctx, &seed_dir, &all, p, &["--upload-limit", "1M"]);
    let out = ctx.mkdir("out");
    let peer = format!("127.0.0.1:{p}");
    let sources: Vec<&str> = all.iter().map(|(_, t)| s(t)).collect();
    let args = leecher_args(&out, &peer, &["--json"], &sources);
    let mut leecher = ctx.spawn("btc-leecher", ctx.btc(&args));
    // All three are downloading (each has received something).
    ctx.wait_for("all three downloading", secs(60), || {
        let mut busy = std::collections::HashSet::new();
        for e in json_events(&leecher.stdout()) {
            if e["event"] == "progress" && e["downloaded"].as_u64().unwrap_or(0) > 0 {
                busy.insert(e["info_hash"].as_str().unwrap_or_default().to_string());
            }
        }
        busy.len() == 3
    });
    let t0 = Instant::now();
    signal(leecher.pid(), 2);
    let status = leecher.wait_timeout(secs(10)).expect("it stops");
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(130), "{}", leecher.tails());
    eprintln!("[many-ctrl-c] three torrents stopped {took:?} after SIGINT");
    assert!(took < Duration::from_secs(2), "stopped in {took:?}");
    let stopped = json_events(&leecher.stdout())
        .into_iter()
        .filter(|e| e["event"] == "stopped")
        .count();
    assert_eq!(stopped, 3, "each torrent says it stopped");
    seeder.assert_running();
}
