//! BEP 52 hash exchange with libtorrent: btc fetches a v2-only torrent's
//! metadata and piece layers from a libtorrent seeder by a `urn:btmh`
//! magnet, by a bare 64-hex v2 info-hash and from a `.torrent` without
//! its `piece layers`, and libtorrent fetches a
//! v2-only torrent by magnet from a btc seeder (whose piece layers it can
//! only get from btc's answers to its hash requests).

use crate::util::*;
use std::path::Path;
use std::process::Command;

fn lt_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(PYTHON);
    c.arg("-u").arg(py_script("lt.py")).args(args);
    c
}

/// btc downloads `source` (a magnet or bare hash) into `out` from the one
/// peer at `peer`, and exits.
fn btc_fetch(ctx: &Ctx, name: &str, out: &Path, source: &str, peer: &str) -> String {
    let args = [
        "-o",
        s(out),
        source,
        "--peer",
        peer,
        "--no-seed",
        "--no-dht",
        "--port",
        "0",
        "-v",
    ];
    leech(ctx, name, &args, secs(120)).1
}

/// A v2-only torrent made by libtorrent (32 KiB pieces): one file of 700
/// pieces, so its layer comes in two requests of 512 hashes, beside small
/// files of one piece or less and a few pieces.
fn v2_torrent(ctx: &Ctx) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let seed_dir = ctx.mkdir("seed");
    let payload = Payload::multi(
        "v2mag",
        &[
            ("big.bin", 700 * 32 * 1024 - 999),
            ("small/one.txt", 1234),
            ("small/three.bin", 3 * 32 * 1024 + 5),
        ],
    );
    let root = payload.write(&seed_dir, 2201);
    let t = ctx.join("v2mag.torrent");
    ctx.run(
        "lt-create",
        lt_cmd(&["create", "--path", s(&root), "--out", s(&t), "--v2-only"]),
        secs(60),
    )
    .assert_ok("lt.py create --v2-only");
    let (_, v2) = libtorrent_hashes(ctx, &t);
    assert_eq!(v2.len(), 64, "libtorrent's v2 hash: {v2}");
    (root, t, v2)
}

#[test]
fn btc_fetches_v2_metadata_and_piece_layers_from_libtorrent() {
    require_tool(PYTHON);
    let ctx = Ctx::new("hashx-lt-seeds-btmh", secs(300));
    let (root, t, v2) = v2_torrent(&ctx);
    let seed_dir = root.parent().unwrap().to_path_buf();
    let listen = format!("127.0.0.2:{}", free_port());
    let mut lt = start_lt_seeder(&ctx, &t, &seed_dir, &listen);

    // The magnet alone: metadata by BEP 9 checked against SHA-256, then
    // the piece layers by hash requests.
    let out = ctx.join("out-magnet");
    let magnet = format!("magnet:?xt=urn:btmh:1220{v2}");
    let log = btc_fetch(&ctx, "btc-btmh", &out, &magnet, &listen);
    assert_same_tree(&root, &out.join("v2mag"));
    assert!(
        log.contains("piece layers complete"),
        "the layers did not come by hash exchange:\n{log}"
    );
    assert!(!out.join("v2mag/.pad").exists(), "pad files written");

    // The bare 64-hex v2 info-hash.
    let out = ctx.join("out-bare");
    let log = btc_fetch(&ctx, "btc-bare-v2", &out, &v2, &listen);
    assert_same_tree(&root, &out.join("v2mag"));
    assert!(log.contains("piece layers complete"), "{log}");

    // The .torrent without its `piece layers` (libtorrent re-encodes the
    // rest; the info dict, canonical, keeps its bytes and hash).
    let bare_t = ctx.join("no-layers.torrent");
    let mut c = Command::new(PYTHON);
    c.arg("-c")
        .arg(
            "import sys, libtorrent as lt\n\
             d = lt.bdecode(open(sys.argv[1], 'rb').read())\n\
             del d[b'piece layers']\n\
             open(sys.argv[2], 'wb').write(lt.bencode(d))",
        )
        .arg(&t)
        .arg(&bare_t);
    ctx.run("strip-layers", c, secs(30))
        .assert_ok("strip piece layers");
    let (_, v2_again) = libtorrent_hashes(&ctx, &bare_t);
    assert_eq!(v2_again, v2, "stripping the layers changed the info dict");
    let out = ctx.join("out-no-layers");
    let log = btc_fetch(&ctx, "btc-no-layers", &out, s(&bare_t), &listen);
    assert_same_tree(&root, &out.join("v2mag"));
    assert!(log.contains("piece layers complete"), "{log}");
    lt.assert_running();
}

/// libtorrent fetches the v2 magnet of `v2` from the btc seeder on local
/// port `port` into `out`; panics with both sides' logs if it fails.
fn lt_fetches_v2_magnet(ctx: &Ctx, name: &str, v2: &str, out: &Path, port: u16, seeder: &Proc) {
    let mut fetch = ctx.spawn(
        name,
        lt_cmd(&[
            "fetch",
            "--magnet",
            &format!("magnet:?xt=urn:btmh:1220{v2}"),
            "--save",
            s(out),
            "--listen",
            &format!("127.0.0.3:{}", free_port()),
            "--peer",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "120",
        ]),
    );
    let status = fetch.wait_timeout(secs(150));
    assert!(
        status.is_some_and(|s| s.success()),
        "libtorrent did not fetch magnet:?xt=urn:btmh:1220{v2} from btc:\n{}\n{}",
        fetch.tails(),
        seeder.tails()
    );
}

#[test]
fn libtorrent_fetches_a_v2_magnet_from_btc() {
    require_tool(PYTHON);
    let ctx = Ctx::new("hashx-btc-seeds-btmh", secs(300));
    let (root, t, v2) = v2_torrent(&ctx);
    let seed_dir = root.parent().unwrap().to_path_buf();
    let p = free_port();
    let seeder = start_btc_seeder(
        &ctx,
        "btc-v2-seeder",
        &seed_dir,
        s(&t),
        p,
        &["--no-dht", "-vv"],
    );
    let out = ctx.mkdir("out-lt");
    lt_fetches_v2_magnet(&ctx, "libtorrent-fetch-btmh", &v2, &out, p, &seeder);
    assert_same_tree(&root, &out.join("v2mag"));
    // Its layers came from btc: btc answered its hash requests.
    assert!(
        seeder.stderr().contains("answered a hash request")
            || seeder.stdout().contains("answered a hash request"),
        "no HASHES sent by btc:\n{}",
        seeder.tails()
    );
}

/// A hybrid torrent (v1 and v2 in one info dict) made by libtorrent, as
/// libtorrent and qBittorrent make them by default: its root, its
/// .torrent, and its v1 and v2 info-hashes (40 and 64 hex).
fn hybrid_torrent(ctx: &Ctx) -> (std::path::PathBuf, std::path::PathBuf, String, String) {
    let seed_dir = ctx.mkdir("seed");
    let payload = Payload::multi(
        "hybrid",
        &[("big.bin", 90 * 32 * 1024 + 77), ("small/one.txt", 1234)],
    );
    let root = payload.write(&seed_dir, 2207);
    let t = ctx.join("hybrid.torrent");
    ctx.run(
        "lt-create-hybrid",
        lt_cmd(&["create", "--path", s(&root), "--out", s(&t)]),
        secs(60),
    )
    .assert_ok("lt.py create (hybrid)");
    let (v1, v2) = libtorrent_hashes(ctx, &t);
    assert_eq!((v1.len(), v2.len()), (40, 64), "not a hybrid: {v1} {v2}");
    (root, t, v1, v2)
}

#[test]
fn a_hybrid_torrent_finds_its_seeder_in_the_v2_swarm_alone() {
    require_tool(PYTHON);
    require_tool("opentracker");
    let ctx = Ctx::new("hashx-hybrid-v2-swarm", secs(300));
    let (root, t, v1, v2) = hybrid_torrent(&ctx);
    let v2_swarm = &v2[..40];
    // The tracker tracks the v2 swarm only: every announce of the v1 hash
    // is refused, so a client in the v1 swarm alone finds nobody.
    let tracker = Opentracker::start(&ctx, &[v2_swarm]);
    let seed_dir = root.parent().unwrap().to_path_buf();
    let listen = format!("127.0.0.2:{}", free_port());
    let mut lt = start_lt_seeder_with(
        &ctx,
        &t,
        &seed_dir,
        &listen,
        &["--tracker", &tracker.http()],
    );
    // Give libtorrent's announces a moment to reach the tracker.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = ctx.join("out");
    let args = [
        "-o",
        s(&out),
        s(&t),
        "--tracker",
        &tracker.http(),
        "--no-seed",
        "--no-dht",
        "--no-lsd",
        "--port",
        "0",
        "-v",
    ];
    let log = leech(&ctx, "btc-hybrid", &args, secs(120)).1;
    assert_same_tree(&root, &out.join("hybrid"));
    assert!(
        log.contains(&format!(
            "hybrid torrent: in the swarms of {v1} (v1) and {v2_swarm} (v2)"
        )),
        "btc did not join both swarms:\n{log}"
    );
    assert!(
        log.contains(&format!("connected to {listen}")),
        "the seeder was not reached:\n{log}"
    );
    lt.assert_running();
}

#[test]
fn libtorrent_fetches_a_hybrid_by_its_v2_hash_from_btc() {
    require_tool(PYTHON);
    let ctx = Ctx::new("hashx-hybrid-btc-seeds", secs(300));
    let (root, t, v1, v2) = hybrid_torrent(&ctx);
    let seed_dir = root.parent().unwrap().to_path_buf();
    let p = free_port();
    let seeder = start_btc_seeder(
        &ctx,
        "btc-hybrid-seeder",
        &seed_dir,
        s(&t),
        p,
        &["--no-dht", "-v"],
    );
    // libtorrent knows the v2 hash only: it handshakes in the v2 swarm,
    // gets the info dict by BEP 9 (checked by SHA-256) and the piece
    // layers by hash requests.
    let out = ctx.mkdir("out-lt");
    lt_fetches_v2_magnet(&ctx, "libtorrent-fetch-hybrid-btmh", &v2, &out, p, &seeder);
    assert_same_tree(&root, &out.join("hybrid"));
    let log = format!("{}{}", seeder.stdout(), seeder.stderr());
    assert!(
        log.contains(&format!("for {v1} in its other swarm {}", &v2[..40])),
        "libtorrent did not come in by the v2 swarm:\n{}",
        seeder.tails()
    );
}

#[test]
fn bep47_symlinks_and_executables_come_out_as_libtorrent_made_them() {
    use std::os::unix::fs::PermissionsExt;
    require_tool(PYTHON);
    let ctx = Ctx::new("hashx-bep47-attrs", secs(300));
    let seed_dir = ctx.mkdir("seed");
    let root = seed_dir.join("attrs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    let tool = root.join("bin/tool.sh");
    std::fs::write(&tool, b"#!/bin/sh\necho hello from a torrent\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = Payload::single("a.bin", 70 * 1024 + 3).write(&root.join("data"), 2209);
    std::os::unix::fs::symlink("bin/tool.sh", root.join("latest")).unwrap();
    std::os::unix::fs::symlink("../bin/tool.sh", root.join("data/up")).unwrap();
    let t = ctx.join("attrs.torrent");
    ctx.run(
        "lt-create-symlinks",
        lt_cmd(&["create", "--path", s(&root), "--out", s(&t), "--symlinks"]),
        secs(60),
    )
    .assert_ok("lt.py create --symlinks");
    // `btc info` shows what each file becomes.
    let info = ctx.run_btc(&["info", s(&t)], secs(30));
    info.assert_ok("btc info");
    assert!(
        info.stdout.contains("attrs/bin/tool.sh (executable)")
            && info
                .stdout
                .contains("attrs/latest -> bin/tool.sh (symlink)"),
        "{}",
        info.stdout
    );
    let listen = format!("127.0.0.2:{}", free_port());
    let mut lt = start_lt_seeder(&ctx, &t, &seed_dir, &listen);
    let out = ctx.join("out");
    let log = btc_fetch(&ctx, "btc-attrs", &out, s(&t), &listen);
    let got = out.join("attrs");
    assert_same_file(&tool, &got.join("bin/tool.sh"));
    assert_same_file(&data, &got.join("data/a.bin"));
    let mode = std::fs::metadata(got.join("bin/tool.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o100, 0o100, "tool.sh is not executable: {mode:o}");
    let plain = std::fs::metadata(got.join("data/a.bin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(plain & 0o111, 0, "a.bin was made executable: {plain:o}");
    let read = std::fs::read_link(got.join("latest")).expect("latest is not a symlink");
    assert_eq!(read, std::path::Path::new("bin/tool.sh"));
    // It resolves, inside the download, to the file.
    assert_same_file(&tool, &got.join("latest"));
    // libtorrent stores `data/up`'s own text, `../bin/tool.sh`; BEP 47
    // reads it from the torrent's folder, where it leaves the folder: not
    // created, and said so.
    assert!(
        std::fs::symlink_metadata(got.join("data/up")).is_err(),
        "data/up was created"
    );
    assert!(
        log.contains("not creating the symlink") && log.contains("data/up"),
        "{log}"
    );
    lt.assert_running();
}

/// v2 and hybrid torrents take the same paths as v1 ones: between two
/// btc over uTP only, RC4 required, one file selected; then `--stream`
/// of that file to stdout.
#[test]
fn v2_and_hybrid_over_utp_with_encryption_selection_and_streaming() {
    let ctx = Ctx::new("hashx-v2-paths", secs(300));
    for format in ["v2", "hybrid"] {
        let seed_dir = ctx.mkdir(format!("seed-{format}"));
        let payload = Payload::multi(
            "paths",
            &[
                ("a.txt", 300 * 1024 + 1),
                ("b.mkv", 3 * 1024 * 1024 + 123),
                ("c.srt", 100 * 1024 + 7),
            ],
        );
        let root = payload.write(&seed_dir, 2213);
        let t = ctx.join(format!("paths-{format}.torrent"));
        btc_create(
            &ctx,
            &root,
            &t,
            &["--format", format, "--piece-length", "65536"],
        );
        let port = free_port();
        let _seeder = start_btc_seeder(
            &ctx,
            &format!("seeder-{format}"),
            &seed_dir,
            s(&t),
            port,
            &["--no-dht", "--bind", "127.0.0.1", "--encryption", "require"],
        );
        let peer = format!("127.0.0.1:{port}");
        let out = ctx.join(format!("out-{format}"));
        let common = [
            "--peer",
            &peer,
            "--no-dht",
            "--port",
            "0",
            "--no-tcp",
            "--encryption",
            "require",
            "-v",
        ];
        let mut args = vec!["-o", s(&out), s(&t), "--no-seed", "--select", "2"];
        args.extend_from_slice(&common);
        let log = leech(&ctx, &format!("select-{format}"), &args, secs(120)).1;
        assert_same_file(&root.join("b.mkv"), &out.join("paths/b.mkv"));
        assert!(
            !out.join("paths/a.txt").exists() && !out.join("paths/c.srt").exists(),
            "{format}: unselected files written"
        );
        assert!(log.contains("uTP, RC4-encrypted"), "{format}: {log}");

        let out = ctx.join(format!("out-stream-{format}"));
        let mut args = vec!["-o", s(&out), s(&t), "--stream", "2"];
        args.extend_from_slice(&common);
        let mut p = ctx.spawn(&format!("stream-{format}"), ctx.btc(&args));
        p.expect_success(secs(120));
        let want = std::fs::read(root.join("b.mkv")).unwrap();
        assert!(
            p.stdout_bytes() == want,
            "{format}: stdout differs from b.mkv"
        );
    }
}
