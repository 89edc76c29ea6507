//! btc <-> btc on loopback: direct peers, opentracker (HTTP and UDP), resume
//! after SIGKILL, magnet by DHT, magnet by tracker, re-running a finished
//! magnet.

use crate::util::*;
use std::path::PathBuf;
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
    let t = ctx.join("tracked.torrent");
    let announce: Option<fn(&Opentracker) -> String> =
        if udp { None } else { Some(Opentracker::http) };
    let tracker = torrent_behind_tracker(&ctx, &root, &t, &["--piece-length", "65536"], announce);
    let mut extra_args: Vec<String> = vec!["--no-dht".into(), "--port".into()];
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
    let (_node, _seeder, d) = dht_node_and_seeder(&ctx, &seed_dir, &t, &[]);
    let boot = format!("127.0.0.1:{d}");
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

#[test]
fn damaged_pieces_on_disk_are_refetched() {
    let ctx = Ctx::new("swarm-damaged", secs(240));
    let piece = 65536u64;
    let payload = Payload::single("damaged.bin", 6 * MIB + 1000);
    let (seed_dir, root, t, _) =
        make_torrent(&ctx, &payload, 31, &["--piece-length", &piece.to_string()]);
    // The leecher starts from a copy with three damaged pieces (first, a
    // middle one, the short last one).
    let out = ctx.mkdir("out");
    let target = out.join("damaged.bin");
    let mut bytes = std::fs::read(&root).unwrap();
    let pieces = (bytes.len() as u64).div_ceil(piece);
    for idx in [0, pieces / 2, pieces - 1] {
        let at = (idx * piece + 7) as usize;
        bytes[at] ^= 0xff;
    }
    std::fs::write(&target, &bytes).unwrap();
    let p1 = free_port();
    let _seeder = start_btc_seeder(&ctx, "seeder", &seed_dir, s(&t), p1, &["--no-dht"]);
    let peer = format!("127.0.0.1:{p1}");
    let (stdout, stderr, _) = leech(
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
            "-v",
        ],
        secs(120),
    );
    assert_same_tree(&root, &target);
    assert_eq!(
        resumed_pieces(&stderr),
        Some(pieces - 3),
        "expected all but the 3 damaged pieces to be kept:\n{stderr}"
    );
    let got = summary_downloaded_bytes(&stdout).unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    assert!(
        got <= 4 * piece,
        "re-downloaded {got} bytes for 3 damaged pieces"
    );
}

#[test]
fn three_leechers_at_once_through_the_tracker() {
    let ctx = Ctx::new("swarm-three-leechers", secs(240));
    let payload = Payload::nested("crowd", 2);
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, 55);
    let t = ctx.join("crowd.torrent");
    let _tracker = torrent_behind_tracker(
        &ctx,
        &root,
        &t,
        &["--piece-length", "32768"],
        Some(Opentracker::udp),
    );
    let p1 = free_port();
    let _seeder = start_btc_seeder(&ctx, "seeder", &seed_dir, s(&t), p1, &["--no-dht"]);
    // Distinct source addresses, as separate machines would have.
    let mut leechers = vec![];
    for i in 0..3 {
        let out = ctx.join(format!("out{i}"));
        let bind = format!("127.0.0.{}", i + 2);
        let port = free_port().to_string();
        let p = ctx.spawn(
            &format!("leecher{i}"),
            ctx.btc(&[
                "-o",
                s(&out),
                s(&t),
                "--no-seed",
                "--no-dht",
                "--bind",
                &bind,
                "--port",
                &port,
            ]),
        );
        leechers.push((p, out));
    }
    for (p, out) in &mut leechers {
        p.expect_success(secs(120));
        assert_same_tree(&root, &out.join("crowd"));
    }
}

#[test]
fn seed_time_limit_and_sigterm_stop_promptly() {
    let ctx = Ctx::new("swarm-seed-limits", secs(180));
    let payload = Payload::single("limits.bin", 2 * MIB + 3);
    let (seed_dir, root, t, _) = make_torrent(&ctx, &payload, 61, &[]);
    let p1 = free_port();
    let mut seeder = start_btc_seeder(&ctx, "seeder", &seed_dir, s(&t), p1, &["--no-dht"]);
    // A leecher that seeds for 2 s after completing, then exits 0 by itself.
    let out = ctx.join("out");
    let peer = format!("127.0.0.1:{p1}");
    let start = Instant::now();
    let mut l = ctx.spawn(
        "leecher",
        ctx.btc(&[
            "-o",
            s(&out),
            s(&t),
            "--peer",
            &peer,
            "--seed-time",
            "2",
            "--no-dht",
            "--port",
            "0",
        ]),
    );
    l.expect_success(secs(60));
    let el = start.elapsed();
    assert!(
        el >= Duration::from_secs(2),
        "--seed-time 2 exited after {el:?}"
    );
    assert!(el < Duration::from_secs(30), "--seed-time 2 took {el:?}");
    assert_same_tree(&root, &out.join("limits.bin"));

    // SIGTERM (like Ctrl-C) stops the seeder within ~2 s, cleanly.
    seeder.assert_running();
    let start = Instant::now();
    signal(seeder.pid(), SIGTERM);
    let status = seeder.wait_timeout(secs(5));
    let el = start.elapsed();
    let status = status.unwrap_or_else(|| panic!("seeder still running 5 s after SIGTERM"));
    assert!(
        el <= Duration::from_millis(3000),
        "SIGTERM took {el:?} to stop the seeder"
    );
    assert_eq!(status.code(), Some(143), "seeder: {status}");
    assert!(!seeder.stderr().contains("panicked"), "{}", seeder.stderr());
}

/// A btc started without `--bind` listens on IPv6 and IPv4 at once: one
/// leecher reaches it over ::1, another over 127.0.0.1.
#[test]
fn default_listener_takes_ipv6_and_ipv4() {
    let ctx = Ctx::new("swarm-dual-stack", secs(120));
    let payload = Payload::single("dual.bin", 3 * MIB + 11);
    let (seed_dir, root, t, _) = make_torrent(&ctx, &payload, 181, &[]);
    let p1 = free_port();
    let seeder = start_btc_seeder(&ctx, "seeder", &seed_dir, s(&t), p1, &["--no-dht", "-v"]);
    assert!(
        seeder.stderr().contains(&format!("listening on [::]:{p1}")),
        "{}",
        seeder.stderr()
    );
    for (name, peer) in [
        ("v6", format!("[::1]:{p1}")),
        ("v4", format!("127.0.0.1:{p1}")),
    ] {
        let out = ctx.join(format!("out-{name}"));
        leech(
            &ctx,
            name,
            &[
                s(&t),
                "-o",
                s(&out),
                "--peer",
                &peer,
                "--no-seed",
                "--no-dht",
                "--port",
                "0",
            ],
            secs(60),
        );
        assert_same_tree(&root, &out.join("dual.bin"));
    }
}

#[test]
fn torrent_by_http_url() {
    require_tool(PYTHON);
    let ctx = Ctx::new("swarm-http-url", secs(180));
    let payload = Payload::single("byurl.bin", 3 * MIB + 9);
    let (seed_dir, root, t, _) = make_torrent(&ctx, &payload, 71, &[]);
    let web = ctx.mkdir("web");
    std::fs::copy(&t, web.join("byurl.torrent")).unwrap();
    let hp = free_port();
    let mut c = std::process::Command::new(PYTHON);
    c.args(["-m", "http.server", "--bind", "127.0.0.1", &hp.to_string()])
        .current_dir(&web);
    let mut http = ctx.spawn("http-server", c);
    let addr = format!("127.0.0.1:{hp}");
    assert!(
        ctx.wait_listening(&mut http, &addr, secs(20)),
        "the http server did not start\n{}",
        http.tails()
    );
    let p1 = free_port();
    let _seeder = start_btc_seeder(&ctx, "seeder", &seed_dir, s(&t), p1, &["--no-dht"]);
    let out = ctx.join("out");
    let peer = format!("127.0.0.1:{p1}");
    let url = format!("http://127.0.0.1:{hp}/byurl.torrent");
    leech(
        &ctx,
        "leecher",
        &[
            "-o",
            s(&out),
            &url,
            "--peer",
            &peer,
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
        ],
        secs(120),
    );
    assert_same_tree(&root, &out.join("byurl.bin"));

    // A 404 and an unreachable host are one-line errors.
    for bad in [
        format!("http://127.0.0.1:{hp}/missing.torrent"),
        format!("http://127.0.0.1:{}/x.torrent", free_port()),
    ] {
        let o = ctx.run_btc(
            &[
                "-o",
                s(&ctx.join("out-bad")),
                &bad,
                "--no-dht",
                "--port",
                "0",
            ],
            secs(60),
        );
        assert!(!o.ok(), "{bad} accepted");
        let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with("error: "),
            "{bad}: not a one-line error:\n{}",
            o.stderr
        );
        assert_eq!(count_entries(&ctx.join("out-bad")), 0);
    }
}

#[test]
fn magnet_with_x_pe_peer_and_base32_hash() {
    let ctx = Ctx::new("swarm-magnet-xpe", secs(180));
    let payload = Payload::nested("xpe", 1);
    let (seed_dir, root, t, hash) = make_torrent(&ctx, &payload, 131, &[]);
    let p1 = free_port();
    let _seeder = start_btc_seeder(&ctx, "seeder", &seed_dir, s(&t), p1, &["--no-dht"]);
    // The peer comes only from the magnet's x.pe.
    let magnet = format!("magnet:?xt=urn:btih:{hash}&x.pe=127.0.0.1%3A{p1}");
    let out = ctx.join("out");
    leech(
        &ctx,
        "leecher-xpe",
        &[
            &magnet,
            "-o",
            s(&out),
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
            "--state-dir",
            s(&ctx.mkdir("st1")),
        ],
        secs(120),
    );
    assert_same_tree(&root, &out.join("xpe"));
    // A bare base32 info-hash with --peer.
    let b32 = base32_of_hex(&hash);
    let out2 = ctx.join("out2");
    let peer = format!("127.0.0.1:{p1}");
    leech(
        &ctx,
        "leecher-b32",
        &[
            &b32,
            "--peer",
            &peer,
            "-o",
            s(&out2),
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
            "--state-dir",
            s(&ctx.mkdir("st2")),
        ],
        secs(120),
    );
    assert_same_tree(&root, &out2.join("xpe"));
}

fn base32_of_hex(h: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bytes: Vec<u8> = (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect();
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0);
    for x in bytes {
        buf = (buf << 8) | x as u32;
        bits += 8;
        while bits >= 5 {
            out.push(A[((buf >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// A machine with no network (a namespace with only loopback, see Netns)

/// btc starts while its DHT bootstrap name does not resolve, as on a laptop
/// whose network is not up yet. Once the name resolves, btc joins the DHT
/// on its own, finds the seeder by the bare info-hash, and downloads.
#[test]
fn dht_joins_once_the_bootstrap_name_resolves() {
    let ctx = Ctx::offline("offline-late-dns", secs(180));
    let payload = Payload::nested("latedns", 1);
    let (seed_dir, root, t, hash) = make_torrent(&ctx, &payload, 141, &[]);
    let (_node, _seeder, d) = dht_node_and_seeder(&ctx, &seed_dir, &t, &[]);
    let host = "dht-boot.btc-test";
    let named = format!("{host}:{d}");
    let out = ctx.join("out");
    let port = free_port().to_string();
    let mut leecher = ctx.spawn(
        "leecher",
        ctx.btc(&[
            &hash,
            "--dht-bootstrap",
            &named,
            "--no-seed",
            // The DHT must find the seeder: LSD now works inside the
            // namespace too (announces leave from the --bind address).
            "--no-lsd",
            "--state-dir",
            s(&ctx.mkdir("state2")),
            "-o",
            s(&out),
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "-v",
        ]),
    );
    // Offline: nothing to find, and btc neither gives up nor crashes.
    std::thread::sleep(secs(3));
    leecher.assert_running();
    assert!(
        !leecher.stderr().contains("metadata received"),
        "{}",
        leecher.stderr()
    );
    let online = Instant::now();
    ctx.netns.as_ref().unwrap().add_host(host, "127.0.0.1");
    leecher.expect_success(secs(120));
    let el = online.elapsed();
    assert_same_tree(&root, &out.join("latedns"));
    let stderr = leecher.stderr();
    assert!(
        stderr.contains("restarted the DHT node"),
        "no DHT restart logged:\n{stderr}"
    );
    eprintln!("[offline] name resolvable -> download complete after {el:?}");
}

/// No network at all: the default DHT routers do not resolve and two of
/// the three trackers cannot be reached, yet the local tracker works, a
/// bare info-hash with `--peer` works (metadata included), nothing about
/// the DHT is printed, and Ctrl-C while seeding stops btc at once.
#[test]
fn no_network_at_all_trackers_and_peers_still_work() {
    let ctx = Ctx::offline("offline-no-network", secs(180));
    let payload = Payload::single("offline.bin", 5 * MIB + 17);
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, 151);
    let t = ctx.join("offline.torrent");
    let tracker = torrent_behind_tracker(&ctx, &root, &t, &[], Some(Opentracker::http));
    let p1 = free_port();
    let _seeder = start_btc_seeder(&ctx, "seeder", &seed_dir, s(&t), p1, &["--no-dht"]);
    let dead = [
        "udp://192.0.2.1:6969/announce",
        "http://tracker.btc-test.invalid/announce",
    ];
    // Peers from the local tracker only; the DHT uses its default routers.
    let out = ctx.join("out");
    let (_, stderr, el) = leech(
        &ctx,
        "leecher-tracker",
        &[
            s(&t),
            "-o",
            s(&out),
            "--tracker",
            dead[0],
            "--tracker",
            dead[1],
            "--no-seed",
            "--port",
            "0",
            "--state-dir",
            s(&ctx.mkdir("st1")),
        ],
        secs(60),
    );
    assert_same_tree(&root, &out.join("offline.bin"));
    assert!(
        !stderr.to_lowercase().contains("dht"),
        "the DHT should retry quietly:\n{stderr}"
    );
    eprintln!("[offline] via the local tracker in {el:?}");

    // The bare info-hash and `--peer`, so metadata too; then seed until
    // SIGINT.
    let hash = transmission_hash(&ctx, &t);
    let out2 = ctx.join("out2");
    let peer = format!("127.0.0.1:{p1}");
    let mut l = ctx.spawn(
        "leecher-peer",
        ctx.btc(&[
            &hash,
            "-o",
            s(&out2),
            "--peer",
            &peer,
            "--port",
            "0",
            "--state-dir",
            s(&ctx.mkdir("st2")),
        ]),
    );
    l.wait_output("seeding ", secs(60));
    assert_same_tree(&root, &out2.join("offline.bin"));
    let start = Instant::now();
    signal(l.pid(), SIGINT);
    let status = l
        .wait_timeout(secs(5))
        .unwrap_or_else(|| panic!("still running 5 s after SIGINT\n{}", l.tails()));
    let stop = start.elapsed();
    assert_eq!(status.code(), Some(130), "{status}\n{}", l.tails());
    assert!(stop <= Duration::from_secs(3), "SIGINT took {stop:?}");
    assert!(
        !l.stderr().to_lowercase().contains("dht"),
        "the DHT should retry quietly:\n{}",
        l.stderr()
    );
    eprintln!("[offline] via --peer, then stopped {stop:?} after SIGINT");
    drop(tracker);
}

/// A `btc dht` node bound to ::1 only (its IPv6 node, BEP 32).
fn start_btc_dht6(ctx: &Ctx) -> (Proc, String) {
    let d = free_port();
    let node = start_btc_dht_on(ctx, "::1", d);
    assert!(node.stdout().contains(&format!("listening on [::1]:{d}")));
    (node, format!("[::1]:{d}"))
}

/// BEP 32: with only IPv6 addresses (every btc bound to ::1, so no IPv4
/// DHT node runs at all), a bare info-hash resolves through the IPv6 DHT:
/// the seeder announces to the IPv6 node, the leecher finds it there,
/// fetches the metadata and the data.
#[test]
fn bare_hash_over_the_ipv6_dht_alone() {
    let ctx = Ctx::new("swarm-dht6-hash", secs(240));
    let payload = Payload::nested("dht6payload", 1);
    let (seed_dir, root, t, hash) = make_torrent(&ctx, &payload, 61, &[]);
    let (_node, boot) = start_btc_dht6(&ctx);
    let _seeder = start_btc_seeder(
        &ctx,
        "seeder",
        &seed_dir,
        s(&t),
        free_port(),
        &[
            "--dht-bootstrap",
            &boot,
            "--state-dir",
            s(&ctx.mkdir("state-seeder")),
            "--bind",
            "::1",
            "--no-lsd",
            "-v",
        ],
    );
    let out = ctx.join("out");
    let state = ctx.mkdir("state-leecher");
    let (_, stderr, el) = leech(
        &ctx,
        "leecher",
        &[
            &hash,
            "--dht-bootstrap",
            &boot,
            "--no-seed",
            "--no-lsd",
            "--state-dir",
            s(&state),
            "-o",
            s(&out),
            "--port",
            "0",
            "--bind",
            "::1",
            "-v",
        ],
        secs(150),
    );
    assert_same_tree(&root, &out.join("dht6payload"));
    assert!(stderr.contains("metadata received"), "{stderr}");
    // The leecher kept the IPv6 nodes it learned for its next start.
    let saved = std::fs::read_to_string(state.join("dht6.state")).unwrap_or_default();
    assert!(saved.contains("[::1]:"), "dht6.state: {saved:?}");
    eprintln!("[dht6] bare hash over the IPv6 DHT in {el:?}");
}

/// libtorrent's DHT on IPv6 and ours speak to each other: a libtorrent
/// seeder bound to ::1 bootstraps from a `btc dht` IPv6 node and announces
/// there (our server side: tokens, storage); a btc leecher bound to ::1
/// finds it from a magnet through lookups that reach libtorrent's node
/// (our client side) and downloads from it.
#[test]
fn magnet_over_the_ipv6_dht_from_a_libtorrent_seeder() {
    let ctx = Ctx::new("swarm-dht6-lt", secs(240));
    let payload = Payload::nested("dht6lt", 1);
    let (seed_dir, root, t, hash) = make_torrent(&ctx, &payload, 62, &[]);
    let (_node, boot) = start_btc_dht6(&ctx);
    let listen = format!("[::1]:{}", free_port());
    let _lt_seeder = start_lt_seeder_with(&ctx, &t, &seed_dir, &listen, &["--dht-node", &boot]);
    let out = ctx.join("out");
    let magnet = format!("magnet:?xt=urn:btih:{hash}&dn=dht6lt");
    let (_, stderr, el) = leech(
        &ctx,
        "leecher",
        &[
            &magnet,
            "--dht-bootstrap",
            &boot,
            "--no-seed",
            "--no-lsd",
            "--state-dir",
            s(&ctx.mkdir("state-leecher")),
            "-o",
            s(&out),
            "--port",
            "0",
            "--bind",
            "::1",
            "-v",
        ],
        secs(150),
    );
    assert_same_tree(&root, &out.join("dht6lt"));
    assert!(stderr.contains("metadata received"), "{stderr}");
    eprintln!("[dht6] magnet from a libtorrent seeder over the IPv6 DHT in {el:?}");
}
