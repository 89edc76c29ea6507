//! btc <-> btc on loopback: direct peers, opentracker (HTTP and UDP), resume
//! after SIGKILL, magnet by DHT, magnet by tracker, re-running a finished
//! magnet.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// Writes `payload` under `SEED/`, makes a torrent of it with `btc create`.
/// Returns (seed dir, content root, torrent, info-hash).
fn make_torrent(
    ctx: &Ctx,
    payload: &Payload,
    seed: u64,
    extra: &[&str],
) -> (PathBuf, PathBuf, PathBuf, String) {
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, seed);
    let t = ctx.join(format!("{}.torrent", payload.name));
    btc_create(ctx, &root, &t, extra);
    let hash = transmission_hash(ctx, &t);
    (seed_dir, root, t, hash)
}

/// Runs a leecher to completion (`--no-seed`), asserts exit 0 and returns
/// (stdout, stderr, elapsed).
fn leech(ctx: &Ctx, name: &str, args: &[&str], timeout: Duration) -> (String, String, Duration) {
    let start = Instant::now();
    let mut p = ctx.spawn(name, ctx.btc(args));
    p.expect_success(timeout);
    let el = start.elapsed();
    eprintln!(
        "[{}] {name} finished in {el:?}: {}",
        ctx.name,
        p.stdout().trim()
    );
    (p.stdout(), p.stderr(), el)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn direct(name: &str, payload: Payload, extra_create: &[&str]) {
    let ctx = Ctx::new(name, secs(240));
    let (seed_dir, root, t, _) = make_torrent(&ctx, &payload, 42, extra_create);
    let p1 = free_port();
    let _seeder = start_btc_seeder(&ctx, "seeder", &seed_dir, s(&t), p1, &["--no-dht"]);
    let out = ctx.join("out");
    let peer = format!("127.0.0.1:{p1}");
    let (stdout, _, _) = leech(
        &ctx,
        "leecher",
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
        secs(120),
    );
    assert_same_tree(&root, &out.join(&payload.name));
    let got = summary_downloaded_bytes(&stdout)
        .unwrap_or_else(|| panic!("no 'downloaded …' summary line in stdout:\n{stdout}"));
    // Rounded to two decimals in the summary.
    assert!(
        got as f64 >= payload.total() as f64 * 0.98,
        "summary says {got} bytes downloaded of {}",
        payload.total()
    );
}

#[test]
fn single_file_direct_peer() {
    direct(
        "swarm-single",
        Payload::single("single.bin", 5 * MIB + 12_345),
        &[],
    );
}

#[test]
fn multi_file_direct_peer() {
    // 32 KiB pieces: many pieces cross the odd-sized file boundaries.
    direct(
        "swarm-multi",
        Payload::nested("nested", 1),
        &["--piece-length", "32768"],
    );
}

fn via_tracker(name: &str, udp: bool) {
    let ctx = Ctx::new(name, secs(240));
    let payload = Payload::nested("tracked", 1);
    // The torrent has no announce URL: the hash is whitelisted first, then
    // both sides get the tracker (HTTP: in the torrent; UDP: --tracker).
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, 77);
    let probe = ctx.join("probe.torrent");
    btc_create(&ctx, &root, &probe, &["--piece-length", "65536"]);
    let hash = transmission_hash(&ctx, &probe);
    let tracker = Opentracker::start(&ctx, &[&hash]);
    let t = ctx.join("tracked.torrent");
    let mut extra_args: Vec<String> = vec!["--no-dht".into(), "--port".into()];
    if udp {
        btc_create(&ctx, &root, &t, &["--piece-length", "65536"]);
    } else {
        btc_create(
            &ctx,
            &root,
            &t,
            &["--piece-length", "65536", "--tracker", &tracker.http()],
        );
    }
    assert_eq!(
        transmission_hash(&ctx, &t),
        hash,
        "announce must not change the hash"
    );
    let p1 = free_port();
    extra_args.push(p1.to_string());
    if udp {
        extra_args.push("--tracker".into());
        extra_args.push(tracker.udp());
    }
    let seeder_extra: Vec<&str> = extra_args.iter().map(String::as_str).collect();
    let mut seeder = ctx.spawn("seeder", {
        let mut a = vec!["-o", s(&seed_dir), s(&t)];
        a.extend_from_slice(&seeder_extra);
        ctx.btc(&a)
    });
    seeder.wait_output("seeding ", secs(60));
    let out = ctx.join("out");
    let mut args = vec!["-o", s(&out), s(&t), "--no-seed", "--no-dht", "--port", "0"];
    let u = tracker.udp();
    if udp {
        args.extend_from_slice(&["--tracker", &u]);
    }
    leech(&ctx, "leecher", &args, secs(120));
    assert_same_tree(&root, &out.join("tracked"));
    seeder.assert_running();
}

#[test]
fn through_opentracker_http() {
    via_tracker("swarm-opentracker-http", false);
}

#[test]
fn through_opentracker_udp() {
    via_tracker("swarm-opentracker-udp", true);
}

#[test]
fn resume_after_sigkill() {
    let ctx = Ctx::new("swarm-resume", secs(300));
    let size = 160 * MIB + 777;
    let payload = Payload::single("big.bin", size);
    let (seed_dir, root, t, _) = make_torrent(&ctx, &payload, 5, &["--piece-length", "262144"]);
    let p1 = free_port();
    let _seeder = start_btc_seeder(&ctx, "seeder", &seed_dir, s(&t), p1, &["--no-dht"]);
    let out = ctx.join("out");
    let peer = format!("127.0.0.1:{p1}");
    let args = [
        "-o",
        s(&out),
        s(&t),
        "--peer",
        &peer,
        "--no-seed",
        "--no-dht",
        "--port",
        "0",
        "-v",
    ];
    let target = out.join("big.bin");

    // First run: SIGKILL as soon as a few MiB are really on disk.
    let mut first = ctx.spawn("leecher-1", ctx.btc(&args));
    let start = Instant::now();
    let mut written = 0;
    while start.elapsed() < secs(120) {
        written = tree_allocated(&target);
        if written >= 8 * MIB || !first.is_running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        first.is_running(),
        "the first leecher finished before it could be killed (download too fast?)\n{}",
        first.tails()
    );
    first.kill_hard();
    let on_disk = tree_allocated(&target);
    eprintln!(
        "[resume] killed after {:?} with {written} bytes seen, {on_disk} allocated",
        start.elapsed()
    );
    assert!(
        written >= 8 * MIB,
        "nothing was written in time\n{}",
        first.tails()
    );

    // Second run resumes: reports pieces on disk, downloads less than all.
    let (stdout, stderr, el) = leech(&ctx, "leecher-2", &args, secs(180));
    assert_same_tree(&root, &target);
    let resumed = resumed_pieces(&stderr)
        .unwrap_or_else(|| panic!("no 'N pieces already on disk' line on stderr:\n{stderr}"));
    assert!(resumed > 0, "second run found no pieces on disk:\n{stderr}");
    let got =
        summary_downloaded_bytes(&stdout).unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    assert!(
        got < size - resumed * 262144 / 2,
        "second run downloaded {got} of {size} bytes though {resumed} pieces were on disk"
    );
    eprintln!("[resume] second run: {resumed} pieces on disk, {got} bytes fetched in {el:?}");
}

#[test]
fn magnet_by_bare_hash_over_local_dht() {
    let ctx = Ctx::new("swarm-dht-hash", secs(240));
    let payload = Payload::nested("dhtpayload", 1);
    let (seed_dir, root, t, hash) = make_torrent(&ctx, &payload, 99, &[]);
    let d = free_port();
    let _node = start_btc_dht(&ctx, d);
    let boot = format!("127.0.0.1:{d}");
    let p1 = free_port();
    let s1 = ctx.mkdir("state1");
    let _seeder = start_btc_seeder(
        &ctx,
        "seeder",
        &seed_dir,
        s(&t),
        p1,
        &[
            "--dht-bootstrap",
            &boot,
            "--state-dir",
            s(&s1),
            "--bind",
            "127.0.0.1",
        ],
    );
    let s2 = ctx.mkdir("state2");
    let out = ctx.join("out");
    let p2 = free_port().to_string();
    let (_, stderr, el) = leech(
        &ctx,
        "leecher",
        &[
            &hash,
            "--dht-bootstrap",
            &boot,
            "--no-seed",
            "--state-dir",
            s(&s2),
            "-o",
            s(&out),
            "--port",
            &p2,
            "--bind",
            "127.0.0.1",
            "-v",
        ],
        secs(150),
    );
    assert_same_tree(&root, &out.join("dhtpayload"));
    assert!(
        stderr.contains("metadata received"),
        "no metadata fetch logged:\n{stderr}"
    );
    eprintln!(
        "[dht] bare hash download took {el:?}; metadata at {:?} ms, first piece at {:?} ms",
        ms_after_start(&stderr, "metadata complete"),
        ms_after_start(&stderr, "first piece verified")
    );
}

#[test]
fn magnet_with_opentracker_then_rerun_without_peers() {
    let ctx = Ctx::new("swarm-magnet-tr", secs(240));
    let payload = Payload::nested("magnetpayload", 1);
    let (seed_dir, root, t, hash) = make_torrent(&ctx, &payload, 123, &[]);
    let mut tracker = Opentracker::start(&ctx, &[&hash]);
    let p1 = free_port();
    let http = tracker.http();
    let mut seeder = start_btc_seeder(
        &ctx,
        "seeder",
        &seed_dir,
        s(&t),
        p1,
        &["--no-dht", "--tracker", &http],
    );
    let magnet = format!(
        "magnet:?xt=urn:btih:{hash}&dn=magnetpayload&tr={}",
        http.replace(':', "%3A").replace('/', "%2F")
    );
    let state = ctx.mkdir("state");
    let out = ctx.join("out");
    let args = [
        magnet.as_str(),
        "--no-dht",
        "--no-seed",
        "--state-dir",
        s(&state),
        "-o",
        s(&out),
        "--port",
        "0",
        "-v",
    ];
    let (_, stderr, el) = leech(&ctx, "leecher-1", &args, secs(120));
    assert_same_tree(&root, &out.join("magnetpayload"));
    assert!(
        stderr.contains("metadata received"),
        "no metadata fetch logged:\n{stderr}"
    );
    eprintln!(
        "[magnet tr] download took {el:?}; metadata at {:?} ms, first piece at {:?} ms",
        ms_after_start(&stderr, "metadata complete"),
        ms_after_start(&stderr, "first piece verified")
    );

    // With the seeder and the tracker gone, running the same magnet again
    // can only succeed from the remembered metadata and the data on disk.
    seeder.terminate(secs(5));
    tracker.proc.terminate(secs(5));
    let (stdout, stderr, el) = leech(&ctx, "leecher-2", &args, secs(60));
    assert!(
        !stderr.contains("metadata received"),
        "metadata fetched again:\n{stderr}"
    );
    assert!(
        stderr.contains("metadata remembered"),
        "remembered metadata not used:\n{stderr}"
    );
    assert!(
        summary_downloaded_bytes(&stdout).is_none_or(|b| b == 0),
        "data downloaded again: {stdout}"
    );
    assert!(
        stdout.contains("complete"),
        "no completion summary: {stdout}"
    );
    assert_same_tree(&root, &out.join("magnetpayload"));
    eprintln!("[magnet tr] re-run took {el:?}");

    // btc info on the magnet now knows the files from the state dir.
    let info = ctx.run_btc(&["info", &magnet, "--state-dir", s(&state)], secs(30));
    info.assert_ok("btc info magnet");
    assert!(info.stdout.contains(&hash), "{}", info.stdout);
}
