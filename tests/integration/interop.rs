//! btc with real clients: aria2c, libtorrent (python3-libtorrent) and
//! transmission, in both directions, plus metadata exchange by magnet.
//! A missing client fails the test (CI installs them all).

use crate::util::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

fn uri_escape(u: &str) -> String {
    u.replace('%', "%25")
        .replace(':', "%3A")
        .replace('/', "%2F")
        .replace('?', "%3F")
        .replace('&', "%26")
        .replace('=', "%3D")
}

/// Runs a btc leecher with `-v` to completion, asserts exit 0, returns its
/// stderr.
fn btc_leech(ctx: &Ctx, args: &[&str], timeout: Duration) -> String {
    let args = [args, &["-v"]].concat();
    leech(ctx, "btc-leecher", &args, timeout).1
}

/// btc downloads `torrent` into `out` from the one peer at `peer` alone
/// (no DHT, no seeding afterwards).
fn btc_leech_from(ctx: &Ctx, out: &Path, torrent: &Path, peer: &str) -> String {
    let args = [
        "-o",
        s(out),
        s(torrent),
        "--peer",
        peer,
        "--no-seed",
        "--no-dht",
        "--port",
        "0",
    ];
    btc_leech(ctx, &args, secs(120))
}

fn lt_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(PYTHON);
    c.arg("-u").arg(py_script("lt.py")).args(args);
    c
}

fn aria2_common() -> Vec<&'static str> {
    vec![
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        "--summary-interval=1",
        "--console-log-level=notice",
        "--file-allocation=none",
        "--check-certificate=false",
        "--auto-save-interval=0",
        "--bt-save-metadata=false",
        "--rpc-save-upload-metadata=false",
    ]
}

#[test]
fn aria2c_seeds_btc_downloads() {
    require_tool("aria2c");
    let ctx = Ctx::new("interop-aria2c-seeds", secs(240));
    let payload = Payload::nested("fromaria", 2);
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, 1001);
    let t = ctx.join("fromaria.torrent");
    btc_create(&ctx, &root, &t, &["--piece-length", "65536"]);
    let p = free_port();
    let mut c = Command::new("aria2c");
    c.args(aria2_common())
        .arg("--seed-ratio=0.0")
        .arg("-V")
        .arg(format!("--listen-port={p}"))
        .arg("-d")
        .arg(&seed_dir)
        .arg(&t);
    let mut aria = ctx.spawn("aria2c-seeder", c);
    aria.wait_output("SEED(", secs(60));
    let out = ctx.join("out");
    let peer = format!("127.0.0.1:{p}");
    btc_leech(
        &ctx,
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
    assert_same_tree(&root, &out.join("fromaria"));
    aria.assert_running();
}

#[test]
fn btc_seeds_aria2c_downloads() {
    require_tool("aria2c");
    let ctx = Ctx::new("interop-aria2c-leeches", secs(240));
    let payload = Payload::nested("toaria", 2);
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, 1002);
    // aria2c finds btc through opentracker (the announce URL of the torrent).
    let t = ctx.join("toaria.torrent");
    let _tracker = torrent_behind_tracker(
        &ctx,
        &root,
        &t,
        &["--piece-length", "65536"],
        Some(Opentracker::http),
    );
    let p1 = free_port();
    let _seeder = start_btc_seeder(&ctx, "btc-seeder", &seed_dir, s(&t), p1, &["--no-dht"]);
    let out = ctx.mkdir("out");
    let p2 = free_port();
    let mut c = Command::new("aria2c");
    c.args(aria2_common())
        .arg("--seed-time=0")
        .arg(format!("--listen-port={p2}"))
        .arg("--bt-stop-timeout=100")
        .arg("-d")
        .arg(&out)
        .arg(&t);
    let start = Instant::now();
    let mut aria = ctx.spawn("aria2c-leecher", c);
    aria.expect_success(secs(150));
    eprintln!("[aria2c] downloaded from btc in {:?}", start.elapsed());
    assert_same_tree(&root, &out.join("toaria"));
}

#[test]
fn btc_seeds_aria2c_fetches_by_magnet() {
    require_tool("aria2c");
    let ctx = Ctx::new("interop-aria2c-magnet", secs(240));
    let payload = Payload::single("ariamagnet.bin", 7 * MIB + 77);
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, 1007);
    let t = ctx.join("ariamagnet.torrent");
    btc_create(&ctx, &root, &t, &[]);
    let hash = transmission_hash(&ctx, &t);
    let tracker = Opentracker::start(&ctx, &[&hash]);
    let p1 = free_port();
    let http = tracker.http();
    let _seeder = start_btc_seeder(
        &ctx,
        "btc-seeder",
        &seed_dir,
        s(&t),
        p1,
        &["--no-dht", "--tracker", &http],
    );
    let out = ctx.mkdir("out");
    let magnet = format!("magnet:?xt=urn:btih:{hash}&tr={}", uri_escape(&http));
    let mut c = Command::new("aria2c");
    c.args(aria2_common())
        .arg("--seed-time=0")
        .arg(format!("--listen-port={}", free_port()))
        .arg("--bt-stop-timeout=100")
        .arg("-d")
        .arg(&out)
        .arg(&magnet);
    let start = Instant::now();
    let mut aria = ctx.spawn("aria2c-magnet", c);
    aria.expect_success(secs(150));
    eprintln!("[aria2c] magnet fetch from btc in {:?}", start.elapsed());
    assert_same_tree(&root, &out.join("ariamagnet.bin"));
}

/// libtorrent 2.0's default torrent is a v1+v2 hybrid whose files are
/// aligned by BEP 47 pad files. btc downloads one from a libtorrent seeder,
/// and one from an nginx web seed that holds only the real files; no pad
/// file reaches the disk either way.
#[test]
fn libtorrent_hybrid_with_pad_files() {
    require_tool(PYTHON);
    let ctx = Ctx::new("interop-lt-pad-files", secs(240));
    let payload = Payload::nested("padded", 1);
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, 1009);
    let nginx = Nginx::start(&ctx, &seed_dir);
    let make = |name: &str, extra: &[&str]| {
        let t = ctx.join(name);
        let mut args = vec!["create", "--path", s(&root), "--out", s(&t)];
        args.extend_from_slice(extra);
        ctx.run("lt-create", lt_cmd(&args), secs(60))
            .assert_ok("lt.py create");
        t
    };
    let t_peer = make("peer.torrent", &[]);
    let web = nginx.url("");
    let t_web = make("web.torrent", &["--web-seed", &web]);
    let info = ctx.run_btc(&["info", s(&t_web)], secs(30));
    info.assert_ok("btc info");
    assert!(info.stdout.contains("pad files"), "{}", info.stdout);

    let p = free_port();
    let listen = format!("127.0.0.2:{p}");
    let mut lt = ctx.spawn(
        "libtorrent-seeder",
        lt_cmd(&[
            "seed",
            "--torrent",
            s(&t_peer),
            "--save",
            s(&seed_dir),
            "--listen",
            &listen,
        ]),
    );
    lt.wait_output("SEEDING", secs(60));
    for (t, out, extra) in [
        (
            &t_peer,
            ctx.join("out-peer"),
            vec!["--peer", listen.as_str()],
        ),
        (&t_web, ctx.join("out-web"), vec![]),
    ] {
        let mut args = vec!["-o", s(&out), s(t), "--no-seed", "--no-dht", "--port", "0"];
        args.extend(extra);
        btc_leech(&ctx, &args, secs(120));
        assert_same_tree(&root, &out.join("padded"));
        assert!(!out.join("padded/.pad").exists(), "pad files written");
    }
}

/// BitTorrent v2 only (BEP 52): libtorrent makes and seeds a v2-only
/// torrent of nested files; btc downloads it (pieces checked by their
/// SHA-256 merkle hashes, the swarm found by the v2 hash cut to 20 bytes),
/// then seeds it from a fresh start (the start-up check is a merkle check
/// too) to a libtorrent leecher given the same `.torrent`.
#[test]
fn libtorrent_v2_only_torrent_both_ways() {
    v2_only_both_ways("interop-lt-v2-only", Payload::nested("v2only", 1), None);
}

/// `btc create --format v2` and `--format hybrid`: libtorrent checks every
/// piece of each against the data before it seeds (both hashes of the
/// hybrid), and the transfers go both ways as above.
#[test]
fn btc_created_v2_and_hybrid_torrents_with_libtorrent() {
    for format in ["v2", "hybrid"] {
        v2_only_both_ways(
            &format!("interop-btc-create-{format}"),
            Payload::nested("v2only", 1),
            Some(format),
        );
    }
}

/// The same with one file, whose size is not a whole number of pieces
/// (libtorrent counts its last piece whole, padding and all).
#[test]
fn libtorrent_v2_only_single_file_both_ways() {
    v2_only_both_ways(
        "interop-lt-v2-only-single",
        Payload::single("v2only", 3 * MIB + 1234),
        None,
    );
}

/// The torrent made by libtorrent (v2-only), or by `btc create --format
/// FORMAT` (`v2` or `hybrid`).
fn v2_only_both_ways(test: &str, payload: Payload, btc_format: Option<&str>) {
    require_tool(PYTHON);
    let ctx = Ctx::new(test, secs(240));
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, 1013);
    let t = ctx.join("v2only.torrent");
    match btc_format {
        None => ctx
            .run(
                "lt-create",
                lt_cmd(&["create", "--path", s(&root), "--out", s(&t), "--v2-only"]),
                secs(60),
            )
            .assert_ok("lt.py create --v2-only"),
        Some(format) => ctx
            .run_btc(
                &["create", s(&root), "-o", s(&t), "--format", format],
                secs(60),
            )
            .assert_ok("btc create --format"),
    };
    let (v1, v2) = libtorrent_hashes(&ctx, &t);
    let v1_only_zeros = v1.bytes().all(|b| b == b'0');
    assert_eq!(
        v1_only_zeros,
        btc_format != Some("hybrid"),
        "v1 hash {v1} for {btc_format:?}"
    );
    if btc_format == Some("hybrid") {
        let got = btc_info_hash(&ctx, s(&t));
        assert_eq!(
            got, v1,
            "btc and libtorrent disagree on the hybrid's v1 hash"
        );
    }
    let info = ctx.run_btc(&["info", s(&t)], secs(30));
    info.assert_ok("btc info");
    assert!(
        info.stdout.contains(&format!("Info-hash v2: {v2}")),
        "{}",
        info.stdout
    );

    // libtorrent seeds, btc downloads.
    let listen = format!("127.0.0.2:{}", free_port());
    let mut lt = start_lt_seeder(&ctx, &t, &seed_dir, &listen);
    let out = ctx.join("out");
    btc_leech_from(&ctx, &out, &t, &listen);
    assert_same_tree(&root, &out.join("v2only"));
    assert!(!out.join("v2only/.pad").exists(), "pad files written");
    lt.assert_running();
    drop(lt);

    // btc seeds what it downloaded (checked again at start), libtorrent
    // downloads it with the .torrent.
    let p = free_port();
    let seeder = start_btc_seeder(&ctx, "btc-v2-seeder", &out, s(&t), p, &["--no-dht", "-vv"]);
    let out2 = ctx.mkdir("out-lt");
    let mut fetch = ctx.spawn(
        "libtorrent-fetch-v2",
        lt_cmd(&[
            "fetch",
            "--torrent",
            s(&t),
            "--save",
            s(&out2),
            "--listen",
            &format!("127.0.0.3:{}", free_port()),
            "--peer",
            &format!("127.0.0.1:{p}"),
            "--timeout",
            "120",
        ]),
    );
    let status = fetch.wait_timeout(secs(150));
    assert!(
        status.is_some_and(|s| s.success()),
        "libtorrent did not fetch from btc:\n{}\n{}",
        fetch.tails(),
        seeder.tails()
    );
    assert_same_tree(&root, &out2.join("v2only"));
}

#[test]
fn libtorrent_seeds_btc_downloads() {
    require_tool(PYTHON);
    require_tool("mktorrent");
    let ctx = Ctx::new("interop-libtorrent-seeds", secs(240));
    let payload = Payload::nested("fromlt", 2);
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, 1003);
    // A torrent made by mktorrent, not by btc.
    let t = ctx.join("fromlt.torrent");
    let mut c = Command::new("mktorrent");
    c.args(["-l", "16", "-o"])
        .arg(&t)
        .arg("fromlt")
        .current_dir(&seed_dir);
    ctx.run("mktorrent", c, secs(60)).assert_ok("mktorrent");
    let p = free_port();
    let listen = format!("127.0.0.2:{p}");
    let mut lt = start_lt_seeder(&ctx, &t, &seed_dir, &listen);
    let out = ctx.join("out");
    btc_leech_from(&ctx, &out, &t, &listen);
    assert_same_tree(&root, &out.join("fromlt"));
    lt.assert_running();
}

#[test]
fn btc_seeds_libtorrent_fetches_metadata_and_data_by_magnet() {
    require_tool(PYTHON);
    let ctx = Ctx::new("interop-libtorrent-magnet", secs(240));
    let payload = Payload::single("tolt.bin", 9 * MIB + 4321);
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, 1004);
    let t = ctx.join("tolt.torrent");
    btc_create(&ctx, &root, &t, &[]);
    let hash = transmission_hash(&ctx, &t);
    let p1 = free_port();
    let _seeder = start_btc_seeder(&ctx, "btc-seeder", &seed_dir, s(&t), p1, &["--no-dht"]);
    let out = ctx.mkdir("out");
    let listen = format!("127.0.0.2:{}", free_port());
    let peer = format!("127.0.0.1:{p1}");
    let magnet = format!("magnet:?xt=urn:btih:{hash}");
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
            "120",
        ]),
    );
    lt.expect_success(secs(150));
    let log = lt.stdout();
    assert!(
        log.contains("METADATA"),
        "libtorrent never got the metadata:\n{log}"
    );
    eprintln!(
        "[libtorrent] {}",
        log.lines()
            .filter(|l| l.starts_with("METADATA") || l.starts_with("DONE"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    assert_same_tree(&root, &out.join("tolt.bin"));
}

#[test]
fn btc_fetches_metadata_from_libtorrent_behind_opentracker() {
    require_tool(PYTHON);
    let ctx = Ctx::new("interop-libtorrent-tracker-magnet", secs(240));
    let payload = Payload::nested("ltmagnet", 1);
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, 1005);
    let t = ctx.join("ltmagnet.torrent");
    btc_create(&ctx, &root, &t, &["--piece-length", "32768"]);
    let hash = transmission_hash(&ctx, &t);
    let tracker = Opentracker::start(&ctx, &[&hash]);
    let listen = format!("127.0.0.2:{}", free_port());
    let http = tracker.http();
    let mut lt = ctx.spawn(
        "libtorrent-seeder",
        lt_cmd(&[
            "seed",
            "--torrent",
            s(&t),
            "--save",
            s(&seed_dir),
            "--listen",
            &listen,
            "--tracker",
            &http,
        ]),
    );
    lt.wait_output("SEEDING", secs(60));
    // Give libtorrent's announce a moment to reach the tracker.
    std::thread::sleep(Duration::from_millis(1500));
    let magnet = format!("magnet:?xt=urn:btih:{hash}&tr={}", uri_escape(&http));
    let out = ctx.join("out");
    let state = ctx.mkdir("state");
    let stderr = btc_leech(
        &ctx,
        &[
            &magnet,
            "-o",
            s(&out),
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
            "--state-dir",
            s(&state),
        ],
        secs(120),
    );
    assert!(
        stderr.contains("metadata received"),
        "no metadata fetch logged:\n{stderr}"
    );
    eprintln!(
        "[lt+tracker] metadata at {:?} ms, first piece at {:?} ms",
        ms_after_start(&stderr, "metadata complete"),
        ms_after_start(&stderr, "first piece verified")
    );
    assert_same_tree(&root, &out.join("ltmagnet"));
    lt.assert_running();
}

/// A transmission-daemon in its own config dir, RPC and peer port on
/// loopback, DHT/LPD/PEX/uTP off.
struct Transmission {
    proc: Proc,
    rpc: String,
    peer_port: u16,
}

impl Transmission {
    /// `encryption`: 0 prefer plaintext, 1 prefer encryption, 2 require it.
    fn start(ctx: &Ctx, download_dir: &Path, encryption: u8) -> Transmission {
        require_tool("transmission-daemon");
        require_tool("transmission-remote");
        let conf = ctx.mkdir("transmission-config");
        let rpc_port = free_port();
        let peer_port = free_port();
        let settings = format!(
            r#"{{
    "dht-enabled": false,
    "lpd-enabled": false,
    "pex-enabled": false,
    "utp-enabled": false,
    "port-forwarding-enabled": false,
    "peer-port": {peer_port},
    "peer-port-random-on-start": false,
    "bind-address-ipv4": "127.0.0.1",
    "rpc-enabled": true,
    "rpc-port": {rpc_port},
    "rpc-bind-address": "127.0.0.1",
    "rpc-authentication-required": false,
    "rpc-whitelist-enabled": false,
    "rpc-host-whitelist-enabled": false,
    "download-dir": "{dl}",
    "incomplete-dir-enabled": false,
    "encryption": {encryption},
    "start-added-torrents": true,
    "ratio-limit-enabled": false,
    "idle-seeding-limit-enabled": false,
    "speed-limit-up-enabled": false,
    "speed-limit-down-enabled": false,
    "message-level": 2
}}
"#,
            dl = download_dir.display()
        );
        fs::write(conf.join("settings.json"), settings).unwrap();
        let mut c = Command::new("transmission-daemon");
        c.arg("-f").arg("-g").arg(&conf);
        let mut proc = ctx.spawn("transmission-daemon", c);
        let rpc = format!("127.0.0.1:{rpc_port}");
        let ok = ctx.wait_listening(&mut proc, &rpc, secs(20));
        assert!(ok, "transmission-daemon did not start\n{}", proc.tails());
        Transmission {
            proc,
            rpc,
            peer_port,
        }
    }

    fn remote(&self, ctx: &Ctx, args: &[&str]) -> Output {
        let mut c = Command::new("transmission-remote");
        c.arg(&self.rpc).args(args);
        let out = ctx.run("transmission-remote", c, secs(30));
        out.assert_ok("transmission-remote");
        out
    }
}

/// A Transmission seeder (`encryption`: 0 prefer plaintext, 1 prefer
/// encryption, 2 require it) of a nested payload `name` made by
/// `transmission-create`, and a btc leecher told its address; checks every
/// file and that Transmission is still running; returns btc's log.
fn transmission_seeds_btc_fetches(test: &str, name: &str, seed: u64, encryption: u8) -> String {
    require_tool("transmission-create");
    let ctx = Ctx::new(test, secs(240));
    let payload = Payload::nested(name, 2);
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, seed);
    let t = ctx.join(format!("{name}.torrent"));
    let mut c = Command::new("transmission-create");
    c.args(["-s", "32", "-o"]).arg(&t).arg(&root);
    ctx.run("transmission-create", c, secs(60))
        .assert_ok("transmission-create");
    let mut tr = Transmission::start(&ctx, &seed_dir, encryption);
    tr.remote(&ctx, &["-a", s(&t), "-w", s(&seed_dir)]);
    tr.remote(&ctx, &["-t", "all", "-v"]);
    ctx.wait_for("transmission to verify and seed", secs(60), || {
        let info = tr.remote(&ctx, &["-t", "all", "-i"]).stdout;
        info.contains("Percent Done: 100%")
            && (info.contains("State: Seeding") || info.contains("State: Idle"))
    });
    let out = ctx.join("out");
    let peer = format!("127.0.0.1:{}", tr.peer_port);
    let log = btc_leech(
        &ctx,
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
    assert_same_tree(&root, &out.join(name));
    tr.proc.assert_running();
    log
}

#[test]
fn transmission_seeds_btc_downloads() {
    transmission_seeds_btc_fetches("interop-transmission-seeds", "fromtr", 1006, 0);
}

/// A libtorrent seeder (`lt.py seed` with `lt_args`) of a nested payload
/// named `name`, and a btc leecher (`--peer` it, plus `btc_args`) that
/// downloads everything; asserts the bytes and that btc's `-v` log says
/// it was "connected to <seeder>: <how>".
fn libtorrent_seeds_btc_fetches(
    ctx_name: &str,
    name: &str,
    seed: u64,
    lt_args: &[&str],
    btc_args: &[&str],
    how: &str,
) {
    require_tool(PYTHON);
    let ctx = Ctx::new(ctx_name, secs(240));
    let payload = Payload::nested(name, 2);
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, seed);
    let t = ctx.join(format!("{name}.torrent"));
    btc_create(&ctx, &root, &t, &["--piece-length", "65536"]);
    let listen = format!("127.0.0.2:{}", free_port());
    let seed_args = [
        &[
            "seed",
            "--torrent",
            s(&t),
            "--save",
            s(&seed_dir),
            "--listen",
            &listen,
        ][..],
        lt_args,
    ]
    .concat();
    let mut lt = ctx.spawn("libtorrent-seeder", lt_cmd(&seed_args));
    lt.wait_output("SEEDING", secs(60));
    let out = ctx.join("out");
    let leech_args = [
        &[
            "-o",
            s(&out),
            s(&t),
            "--peer",
            &listen,
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
        ][..],
        btc_args,
    ]
    .concat();
    let log = btc_leech(&ctx, &leech_args, secs(120));
    assert!(
        log.contains(&format!("connected to {listen}: {how}")),
        "-v names how the peer is connected:\n{log}"
    );
    assert_same_tree(&root, &out.join(name));
    lt.assert_running();
}

/// A libtorrent seeder that only speaks RC4-encrypted MSE (policies
/// forced, level rc4); btc under `--encryption require` downloads from it.
#[test]
fn libtorrent_requiring_encryption_seeds_btc_downloads() {
    libtorrent_seeds_btc_fetches(
        "interop-libtorrent-rc4",
        "ltrc4",
        1011,
        &["--encryption", "require"],
        &["--encryption", "require"],
        "TCP, RC4-encrypted (from --peer)",
    );
}

/// Incoming MSE: a libtorrent leecher that requires RC4 fetches by magnet
/// from a btc seeder running two torrents (the encrypted handshake names
/// its torrent only by `HASH('req2', info-hash)`); a plaintext-only one is
/// refused by a btc that requires encryption, with a log line saying so.
#[test]
fn libtorrent_requiring_encryption_fetches_from_btc() {
    require_tool(PYTHON);
    let ctx = Ctx::new("interop-rc4-incoming", secs(240));
    let seed_dir = ctx.mkdir("seed");
    let other = Payload::single("other.bin", MIB).write(&seed_dir, 1014);
    let root = Payload::single("torc4.bin", 5 * MIB + 77).write(&seed_dir, 1015);
    let (t_other, t) = (ctx.join("other.torrent"), ctx.join("torc4.torrent"));
    btc_create(&ctx, &other, &t_other, &[]);
    btc_create(&ctx, &root, &t, &[]);
    let p = free_port();
    let mut seeder = ctx.spawn(
        "btc-seeder",
        ctx.btc(&[
            "-o",
            s(&seed_dir),
            s(&t_other),
            s(&t),
            "--port",
            &p.to_string(),
            "--bind",
            "127.0.0.1",
            "--no-dht",
            "-v",
        ]),
    );
    seeder.wait_output("seeding torc4.bin", secs(60));
    let peer = format!("127.0.0.1:{p}");
    let magnet = format!("magnet:?xt=urn:btih:{}", btc_info_hash(&ctx, s(&t)));
    let fetch = |name: &str, encryption: &str, out: &Path, timeout: &str| {
        let listen = format!(
            "127.0.0.{}:{}",
            if encryption == "require" { 2 } else { 3 },
            free_port()
        );
        ctx.spawn(
            name,
            lt_cmd(&[
                "fetch",
                "--magnet",
                &magnet,
                "--save",
                s(out),
                "--listen",
                &listen,
                "--peer",
                &peer,
                "--timeout",
                timeout,
                "--encryption",
                encryption,
            ]),
        )
    };
    let out = ctx.mkdir("out");
    let mut lt = fetch("libtorrent-rc4", "require", &out, "120");
    lt.expect_success(secs(150));
    assert_same_file(&root, &out.join("torc4.bin"));
    seeder.assert_running();
    let log = seeder.stderr();
    assert!(
        log.contains(": TCP, RC4-encrypted, for "),
        "-v names how the peer came in:\n{log}"
    );
    drop(seeder);

    // The same seeder, requiring encryption, against a plaintext-only peer.
    let mut strict = ctx.spawn(
        "btc-seeder-require",
        ctx.btc(&[
            "-o",
            s(&seed_dir),
            s(&t),
            "--port",
            &p.to_string(),
            "--bind",
            "127.0.0.1",
            "--no-dht",
            "--encryption",
            "require",
            "-v",
        ]),
    );
    strict.wait_output("seeding torc4.bin", secs(60));
    let plain_out = ctx.mkdir("plain-out");
    let mut plain = fetch("libtorrent-plaintext", "plaintext", &plain_out, "8");
    let log = strict.wait_output("and --encryption require", secs(30));
    assert!(log.contains("refused: a plaintext handshake"), "{log}");
    let status = plain.wait_timeout(secs(30)).expect("the fetch gives up");
    assert!(!status.success(), "a plaintext-only peer got the data");
}

/// `--encryption require` against a libtorrent that speaks no MSE: no
/// download, and a log line that says why.
#[test]
fn btc_requiring_encryption_refuses_a_plaintext_peer() {
    require_tool(PYTHON);
    let ctx = Ctx::new("interop-require-vs-plaintext", secs(240));
    let payload = Payload::nested("ltplain", 1);
    let seed_dir = ctx.mkdir("seed");
    let root = payload.write(&seed_dir, 1012);
    let t = ctx.join("ltplain.torrent");
    btc_create(&ctx, &root, &t, &["--piece-length", "65536"]);
    let listen = format!("127.0.0.2:{}", free_port());
    let mut lt = ctx.spawn(
        "libtorrent-seeder",
        lt_cmd(&[
            "seed",
            "--torrent",
            s(&t),
            "--save",
            s(&seed_dir),
            "--listen",
            &listen,
            "--encryption",
            "plaintext",
        ]),
    );
    lt.wait_output("SEEDING", secs(60));
    let out = ctx.join("out");
    let mut btc = ctx.spawn(
        "btc-leecher",
        ctx.btc(&[
            "-o",
            s(&out),
            s(&t),
            "--peer",
            &listen,
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
            "--encryption",
            "require",
            "-v",
        ]),
    );
    let log = btc.wait_output("--encryption require", secs(60));
    assert!(
        log.contains(&format!(
            "peer {listen}: refused over TCP: no RC4 encryption handshake"
        )),
        "{log}"
    );
    assert!(btc.is_running(), "still waiting for a usable peer");
    btc.kill_hard();
    // Files may exist (created sparse at start), but hold no payload.
    let mut stack = vec![out];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else if p.is_file() {
            let data = fs::read(&p).unwrap();
            assert!(data.iter().all(|&b| b == 0), "{} has data", p.display());
        }
    }
    lt.assert_running();
}

/// Transmission with encryption required seeds; btc with the default
/// `--encryption prefer` offers RC4 and plaintext, and Transmission picks
/// RC4.
#[test]
fn transmission_requiring_encryption_seeds_btc_downloads() {
    let log = transmission_seeds_btc_fetches("interop-transmission-rc4", "trrc4", 1013, 2);
    assert!(
        log.contains("TCP, RC4-encrypted (from --peer)"),
        "btc's log names no RC4 connection:\n{log}"
    );
}

/// uTP (BEP 29) with a libtorrent seeder whose TCP is off both ways (it
/// closes incoming TCP connections unread): btc, dialling TCP first, falls
/// back to uTP on the same port number and downloads everything.
#[test]
fn libtorrent_over_utp_only_seeds_btc_downloads() {
    libtorrent_seeds_btc_fetches(
        "interop-utp-seed",
        "ltutp",
        1021,
        &["--transport", "utp"],
        &[],
        "uTP, plaintext (from --peer)",
    );
}

/// The other way: a libtorrent leecher with TCP off fetches metadata and
/// data by magnet from a btc seeder, over uTP into btc's port.
#[test]
fn libtorrent_over_utp_only_fetches_from_btc() {
    require_tool(PYTHON);
    let ctx = Ctx::new("interop-utp-fetch", secs(240));
    let seed_dir = ctx.mkdir("seed");
    let root = Payload::single("toutp.bin", 6 * MIB + 99).write(&seed_dir, 1022);
    let t = ctx.join("toutp.torrent");
    btc_create(&ctx, &root, &t, &[]);
    let p = free_port();
    let mut seeder = ctx.spawn(
        "btc-seeder",
        ctx.btc(&[
            "-o",
            s(&seed_dir),
            s(&t),
            "--port",
            &p.to_string(),
            "--bind",
            "127.0.0.1",
            "--no-dht",
            "-v",
        ]),
    );
    seeder.wait_output("seeding toutp.bin", secs(60));
    let magnet = format!("magnet:?xt=urn:btih:{}", btc_info_hash(&ctx, s(&t)));
    let out = ctx.mkdir("out");
    let mut lt = ctx.spawn(
        "libtorrent-utp",
        lt_cmd(&[
            "fetch",
            "--magnet",
            &magnet,
            "--save",
            s(&out),
            "--listen",
            &format!("127.0.0.2:{}", free_port()),
            "--peer",
            &format!("127.0.0.1:{p}"),
            "--timeout",
            "120",
            "--transport",
            "utp",
        ]),
    );
    lt.expect_success(secs(150));
    assert_same_file(&root, &out.join("toutp.bin"));
    seeder.assert_running();
    let log = seeder.stderr();
    assert!(
        log.contains(": uTP, plaintext, for "),
        "-v says the peer came in over uTP:\n{log}"
    );
}
