//! Web seeds (BEP 19) served by a real nginx on loopback.

use crate::util::*;
use std::time::Instant;

const MIB: u64 = 1024 * 1024;

/// No peer anywhere: a folder torrent whose `url-list` names the server's
/// root, and a one-file torrent whose `url-list` names the file itself,
/// both downloaded from nginx alone.
#[test]
fn web_seed_alone_serves_folder_and_file() {
    let ctx = Ctx::new("webseed-alone", secs(180));
    let www = ctx.mkdir("www");
    let nginx = Nginx::start(&ctx, &www);

    let folder = Payload::nested("wsfolder", 1);
    let root = folder.write(&www, 161);
    let t = ctx.join("folder.torrent");
    btc_create(&ctx, &root, &t, &["--web-seed", &nginx.url("")]);
    let out = ctx.join("out");
    let start = Instant::now();
    let o = ctx.run_btc(
        &[
            s(&t),
            "-o",
            s(&out),
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
            "-v",
        ],
        secs(120),
    );
    o.assert_ok("folder from the web seed");
    assert_same_tree(&root, &out.join("wsfolder"));
    assert!(o.stderr.contains("using web seed"), "{}", o.stderr);
    eprintln!(
        "[webseed] folder ({} bytes) in {:?}",
        folder.total(),
        start.elapsed()
    );

    let file = Payload::single("ws file.bin", 9 * MIB + 5);
    let path = file.write(&www, 162);
    let t = ctx.join("file.torrent");
    btc_create(
        &ctx,
        &path,
        &t,
        &[
            "--web-seed",
            &nginx.url("ws%20file.bin"),
            "--piece-length",
            "65536",
        ],
    );
    let out = ctx.join("out-file");
    let start = Instant::now();
    ctx.run_btc(
        &[s(&t), "-o", s(&out), "--no-seed", "--no-dht", "--port", "0"],
        secs(120),
    )
    .assert_ok("file from the web seed");
    assert_same_file(&path, &out.join("ws file.bin"));
    eprintln!("[webseed] 9 MiB file in {:?}", start.elapsed());
}

/// A web seed whose copy is wrong everywhere: nothing it sends reaches the
/// disk, it is dropped after its pieces fail the hash check, and a peer
/// that turns up later completes the download byte for byte.
#[test]
fn corrupt_web_seed_is_dropped_and_a_peer_completes() {
    let ctx = Ctx::new("webseed-corrupt", secs(180));
    let seed_dir = ctx.mkdir("seed");
    let payload = Payload::single("bad.bin", 4 * MIB + 100);
    let good = payload.write(&seed_dir, 171);
    let www = ctx.mkdir("www");
    // Same name and length, other bytes.
    payload.write(&www, 172);
    let nginx = Nginx::start(&ctx, &www);
    let t = ctx.join("bad.torrent");
    btc_create(&ctx, &good, &t, &["--web-seed", &nginx.url("bad.bin")]);

    let out = ctx.join("out");
    let port = free_port();
    let p = port.to_string();
    let mut leecher = ctx.spawn(
        "leecher",
        ctx.btc(&[
            s(&t),
            "-o",
            s(&out),
            "--no-seed",
            "--no-dht",
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
        ]),
    );
    leecher.wait_output("keeps failing the hash check", secs(60));
    leecher.assert_running();
    let stderr = leecher.stderr();
    assert!(stderr.contains("failed its hash check"), "{stderr}");

    // A seeder that dials the leecher.
    let peer = format!("127.0.0.1:{port}");
    let _seeder = start_btc_seeder(
        &ctx,
        "seeder",
        &seed_dir,
        s(&t),
        free_port(),
        &["--no-dht", "--peer", &peer, "--bind", "127.0.0.1"],
    );
    leecher.expect_success(secs(120));
    assert_same_file(&good, &out.join("bad.bin"));
}

/// A magnet's `ws=`: the first run takes the metadata from a peer (x.pe);
/// the second, with the peer gone, starts from the remembered metadata and
/// gets every byte from the web seed.
#[test]
fn magnet_ws_with_remembered_metadata() {
    let ctx = Ctx::new("webseed-magnet", secs(180));
    let www = ctx.mkdir("www");
    let payload = Payload::nested("wsmagnet", 1);
    let root = payload.write(&www, 191);
    let nginx = Nginx::start(&ctx, &www);
    let t = ctx.join("m.torrent");
    btc_create(&ctx, &root, &t, &[]);
    let hash = transmission_hash(&ctx, &t);
    let p1 = free_port();
    let mut seeder = start_btc_seeder(&ctx, "seeder", &www, s(&t), p1, &["--no-dht"]);
    let ws = nginx.url("").replace(':', "%3A").replace('/', "%2F");
    let magnet = format!("magnet:?xt=urn:btih:{hash}&ws={ws}");
    let state = ctx.mkdir("state");
    let with_peer = format!("{magnet}&x.pe=127.0.0.1%3A{p1}");
    let out1 = ctx.join("out1");
    ctx.run_btc(
        &[
            &with_peer,
            "-o",
            s(&out1),
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
            "--state-dir",
            s(&state),
        ],
        secs(120),
    )
    .assert_ok("magnet with a peer and a web seed");
    assert_same_tree(&root, &out1.join("wsmagnet"));
    seeder.terminate(secs(5));

    let out2 = ctx.join("out2");
    let o = ctx.run_btc(
        &[
            &magnet,
            "-o",
            s(&out2),
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
            "--state-dir",
            s(&state),
            "-v",
        ],
        secs(120),
    );
    o.assert_ok("magnet with only a web seed");
    assert_same_tree(&root, &out2.join("wsmagnet"));
    assert!(
        o.stderr.contains("remembered") && o.stderr.contains("using web seed"),
        "{}",
        o.stderr
    );
}

/// v2 and hybrid torrents from a web seed alone: a hybrid's pad files are
/// zeros nobody fetches, a v2 piece is checked by its merkle root.
#[test]
fn web_seed_alone_serves_v2_and_hybrid_torrents() {
    let ctx = Ctx::new("webseed-v2", secs(180));
    let www = ctx.mkdir("www");
    let nginx = Nginx::start(&ctx, &www);
    let folder = Payload::nested("wsv2", 1);
    let root = folder.write(&www, 163);
    for format in ["v2", "hybrid"] {
        let t = ctx.join(format!("{format}.torrent"));
        btc_create(
            &ctx,
            &root,
            &t,
            &["--format", format, "--web-seed", &nginx.url("")],
        );
        let out = ctx.join(format!("out-{format}"));
        let o = ctx.run_btc(
            &[
                s(&t),
                "-o",
                s(&out),
                "--no-seed",
                "--no-dht",
                "--port",
                "0",
                "-v",
            ],
            secs(120),
        );
        o.assert_ok(&format!("{format} folder from the web seed"));
        assert_same_tree(&root, &out.join("wsv2"));
        assert!(o.stderr.contains("using web seed"), "{}", o.stderr);
        assert!(
            !out.join("wsv2/.pad").exists(),
            "{format}: pad files written"
        );
    }
}
