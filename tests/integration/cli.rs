//! The command line: bad input gives one clear error line and a non-zero
//! exit; `info` and `create` agree with real tools.

use crate::util::*;
use std::fs;
use std::process::Command;

/// Asserts a failed run with exactly one `error: ...` line on stderr.
fn assert_one_line_error(out: &Output, what: &str) -> String {
    assert!(
        !out.ok(),
        "{what}: expected failure, got success\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: expected exit code 1 (not a crash or signal), got {:?}\n{}",
        out.status,
        out.stderr
    );
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one stderr line, got:\n{}",
        out.stderr
    );
    assert!(
        lines[0].starts_with("error: "),
        "{what}: stderr does not start with 'error: ': {}",
        lines[0]
    );
    assert!(
        !out.stderr.contains("panicked"),
        "{what}: panic: {}",
        out.stderr
    );
    assert_no_repeated_cause(lines[0], what);
    lines[0].to_string()
}

/// An error chain names each cause once: no `: `-separated segment equals
/// or contains a later one (`…not hex: info-hash … not hex` did).
fn assert_no_repeated_cause(line: &str, what: &str) {
    let segments: Vec<&str> = line
        .trim_start_matches("error: ")
        .split(": ")
        .map(str::trim)
        .collect();
    for (i, a) in segments.iter().enumerate() {
        for b in &segments[i + 1..] {
            assert!(
                b.len() < 8 || !a.contains(b),
                "{what}: the cause `{b}` is printed twice: {line}"
            );
        }
    }
}

#[test]
fn error_chain_names_each_cause_once() {
    let ctx = Ctx::new("cli-error-chain", secs(120));
    let file = ctx.join("plain-file");
    fs::write(&file, "x").unwrap();
    let torrent = ctx.join("t.torrent");
    let payload = ctx.join("payload");
    fs::write(&payload, vec![7u8; 100_000]).unwrap();
    ctx.run_btc(
        &[
            "create",
            payload.to_str().unwrap(),
            "-o",
            torrent.to_str().unwrap(),
        ],
        secs(30),
    )
    .assert_ok("create");
    let closed = format!("http://127.0.0.1:{}/x.torrent", free_port());
    let under_file = file.join("sub");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "create of a missing path",
            vec!["create", "/nonexistent/btc-test", "-o", "x.torrent"],
        ),
        (
            "magnet with a bad hash",
            vec!["magnet:?xt=urn:btih:zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"],
        ),
        (
            "info-hash with a bad digit",
            vec!["info", "g000000000000000000000000000000000000000"],
        ),
        (
            "unreachable torrent URL",
            vec![&closed, "--no-dht", "--port", "0"],
        ),
        (
            "output under a plain file",
            vec![
                torrent.to_str().unwrap(),
                "-o",
                under_file.to_str().unwrap(),
                "--no-dht",
                "--port",
                "0",
            ],
        ),
    ];
    for (what, args) in cases {
        let out = ctx.run_btc(&args, secs(30));
        assert_one_line_error(&out, what);
    }
}

#[test]
fn unknown_option_prints_usage_and_fails() {
    let ctx = Ctx::new("cli-unknown-option", secs(60));
    let out = ctx.run_btc(&["--definitely-not-an-option", "x.torrent"], secs(20));
    assert!(!out.ok(), "unknown option accepted: {out:?}");
    assert!(
        out.stderr.contains("--definitely-not-an-option"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.to_lowercase().contains("usage"),
        "no usage: {}",
        out.stderr
    );

    let out = ctx.run_btc(&[], secs(20));
    assert!(!out.ok(), "no SOURCE accepted: {out:?}");
    assert!(
        out.stderr.to_lowercase().contains("usage"),
        "no usage: {}",
        out.stderr
    );

    let out = ctx.run_btc(
        &["create", "/nonexistent", "--piece-length", "abc", "-o", "x"],
        secs(20),
    );
    assert!(!out.ok(), "bad --piece-length accepted: {out:?}");

    let out = ctx.run_btc(&["--port", "70000", "x.torrent"], secs(20));
    assert!(!out.ok(), "port 70000 accepted: {out:?}");

    let out = ctx.run_btc(&["--peer", "not-an-address", "x.torrent"], secs(20));
    assert!(!out.ok(), "bad --peer accepted: {out:?}");
}

#[test]
fn missing_file_is_one_line_error() {
    let ctx = Ctx::new("cli-missing-file", secs(60));
    let out_dir = ctx.join("out");
    let missing = ctx.join("does-not-exist.torrent");
    let out = ctx.run_btc(
        &[
            "-o",
            out_dir.to_str().unwrap(),
            missing.to_str().unwrap(),
            "--no-dht",
            "--port",
            "0",
        ],
        secs(30),
    );
    let line = assert_one_line_error(&out, "missing file");
    assert!(
        line.contains("does-not-exist"),
        "error does not name the file: {line}"
    );
    assert_eq!(count_entries(&out_dir), 0, "output dir has content");

    let out = ctx.run_btc(&["info", missing.to_str().unwrap()], secs(30));
    assert_one_line_error(&out, "info on a missing file");
}

#[test]
fn non_torrent_file_is_one_line_error() {
    let ctx = Ctx::new("cli-non-torrent", secs(60));
    let f = ctx.join("notes.torrent");
    fs::write(&f, "this is just some text, not bencode\n").unwrap();
    let bin = ctx.join("random.torrent");
    write_random_file(&bin, 4096, 7);
    for src in [&f, &bin] {
        let out_dir = ctx.join("out");
        let out = ctx.run_btc(
            &[
                "-o",
                out_dir.to_str().unwrap(),
                src.to_str().unwrap(),
                "--no-dht",
                "--port",
                "0",
            ],
            secs(30),
        );
        assert_one_line_error(&out, "non-torrent file");
        assert_eq!(count_entries(&out_dir), 0, "output dir has content");
        let out = ctx.run_btc(&["info", src.to_str().unwrap()], secs(30));
        assert_one_line_error(&out, "info on a non-torrent file");
    }
}

/// Among several sources, each one that cannot be read gets one error
/// line that names it exactly once (`error: F: F is not a valid torrent`
/// named a bad file twice), and the run fails.
#[test]
fn bad_sources_among_several_are_named_once() {
    let ctx = Ctx::new("cli-bad-sources", secs(60));
    let garbage = ctx.join("garbage.torrent");
    fs::write(&garbage, b"d4:infoi3ee").unwrap();
    let missing = ctx.join("missing.torrent");
    let url = format!("http://127.0.0.1:{}/closed.torrent", free_port());
    let magnet = "magnet:?dn=no-hash";
    let sources = [s(&garbage), s(&missing), &url, magnet];
    let out_dir = ctx.join("out");
    let mut args = vec!["-o", s(&out_dir), "--no-dht", "--no-lsd", "--port", "0"];
    args.extend(sources);
    let out = ctx.run_btc(&args, secs(45));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    for source in sources {
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: ") && l.contains(source))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "one error line for {source}:\n{}",
            out.stderr
        );
        assert_eq!(
            lines[0].matches(source).count(),
            1,
            "{source} is named once: {}",
            lines[0]
        );
        assert_no_repeated_cause(lines[0], source);
    }
    let bad = out
        .stderr
        .lines()
        .find(|l| l.contains("garbage.torrent"))
        .unwrap();
    assert!(
        bad.starts_with(&format!("error: {}: not a valid torrent: ", s(&garbage))),
        "{bad}"
    );
    assert_eq!(count_entries(&out_dir), 0, "output dir has content");
}

/// A magnet with no tracker, run with the DHT and LSD off and no `--peer`:
/// nothing can ever find a peer, which btc says once (it said `finding
/// peers` and waited in silence), then goes on waiting for incoming
/// connections. With `--json` the same is a non-fatal `error` event.
#[test]
fn a_magnet_nothing_can_find_peers_for_says_so() {
    let ctx = Ctx::new("cli-no-discovery", secs(90));
    let hex = "8a52f40a1c36d37fa4a3bc6a5ad4a4a6b2f95c11";
    let magnet = format!("magnet:?xt=urn:btih:{hex}&dn=lonely");
    let out = ctx.join("out");
    let args = [
        "-o",
        s(&out),
        &magnet,
        "--no-dht",
        "--no-lsd",
        "--port",
        "0",
    ];
    let want = "warning: lonely: nothing can find peers for this torrent \
                (no trackers, DHT and LSD off): waiting for incoming connections; \
                use --peer to name one";
    let mut p = ctx.spawn("btc-alone", ctx.btc(&args));
    p.wait_output(want, secs(30));
    // It keeps running: an incoming peer may still come.
    std::thread::sleep(std::time::Duration::from_secs(1));
    p.assert_running();
    assert_eq!(p.stderr().matches("nothing can find peers").count(), 1);
    p.kill_hard();

    let mut args = args.to_vec();
    args.push("--json");
    let mut p = ctx.spawn("btc-alone-json", ctx.btc(&args));
    ctx.wait_for("the JSON warning", secs(30), || {
        p.stdout().contains("nothing can find peers")
    });
    let stdout = p.stdout();
    let event = stdout
        .lines()
        .find(|l| l.contains("nothing can find peers"))
        .unwrap_or_else(|| panic!("no event in:\n{stdout}"));
    let v: serde_json::Value = serde_json::from_str(event).unwrap();
    assert_eq!(v["event"], "error", "{event}");
    assert_eq!(v["fatal"], false, "{event}");
    assert_eq!(v["info_hash"], hex, "{event}");
    p.assert_running();
    p.kill_hard();

    // With a way to find peers (here a tracker, even one that never
    // answers) nothing is said.
    let tracked = format!("{magnet}&tr=udp%3A%2F%2F127.0.0.1%3A{}", free_port());
    let mut p = ctx.spawn(
        "btc-tracked",
        ctx.btc(&[
            "-o",
            s(&out),
            &tracked,
            "--no-dht",
            "--no-lsd",
            "--port",
            "0",
        ]),
    );
    p.wait_output("finding peers", secs(30));
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        !p.stderr().contains("nothing can find peers"),
        "{}",
        p.stderr()
    );
    p.kill_hard();
}

#[test]
fn hostile_torrents_are_rejected_and_create_nothing() {
    let ctx = Ctx::new("cli-hostile", secs(180));
    let bad = testdata("torrents/bad");
    let mut names: Vec<_> = fs::read_dir(&bad)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "torrent"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 10,
        "expected the hostile torrents in {}",
        bad.display()
    );
    for (i, t) in names.iter().enumerate() {
        // The output folder is two levels deep so that an escape through
        // `..` would land inside `jail`, where we look for it.
        let jail = ctx.mkdir(format!("jail{i}"));
        let out_dir = jail.join("inner/out");
        let out = ctx.run_btc(
            &[
                "-o",
                out_dir.to_str().unwrap(),
                t.to_str().unwrap(),
                "--no-dht",
                "--port",
                "0",
                "--no-seed",
            ],
            secs(30),
        );
        let what = format!("hostile {}", t.file_name().unwrap().to_string_lossy());
        assert_one_line_error(&out, &what);
        let files: Vec<_> = walk(&jail).into_iter().filter(|p| !p.is_dir()).collect();
        assert!(files.is_empty(), "{what}: files created: {files:?}");
        assert_eq!(count_entries(&out_dir), 0, "{what}: output dir has content");
        let out = ctx.run_btc(&["info", t.to_str().unwrap()], secs(30));
        assert_one_line_error(&out, &format!("info on {what}"));
    }
    // A known escape name must never appear anywhere near the test.
    assert!(!ctx.path().join("escape.txt").exists());
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            out.push(path.clone());
            if path.is_dir() {
                out.extend(walk(&path));
            }
        }
    }
    out
}

#[test]
fn info_shows_the_same_hash_as_transmission_and_libtorrent() {
    let ctx = Ctx::new("cli-info-golden", secs(120));
    let dir = testdata("torrents");
    let mut n = 0;
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|e| e != "torrent") {
            continue;
        }
        // transmission 3.00 cannot read v1+v2 hybrids or v2-only torrents;
        // libtorrent can.
        let name = p.file_name().unwrap().to_str().unwrap();
        let v2 = name.contains("hybrid") || name.starts_with("v2-");
        let (want, want_v2) = if v2 {
            libtorrent_hashes(&ctx, &p)
        } else {
            (transmission_hash(&ctx, &p), String::new())
        };
        let out = ctx.run_btc(&["info", p.to_str().unwrap()], secs(30));
        if want.bytes().all(|b| b == b'0') {
            // v2-only: known by its v2 hash, cut to 20 bytes in the swarm;
            // the magnet names the v2 hash alone.
            out.assert_ok("btc info of a v2-only torrent");
            for line in [
                format!("Info-hash:   {}\n", &want_v2[..40]),
                format!("Info-hash v2: {want_v2}\n"),
                format!("Magnet:      magnet:?xt=urn:btmh:1220{want_v2}&"),
            ] {
                assert!(
                    out.stdout.contains(&line),
                    "no {line:?} in btc info {}:\n{}",
                    p.display(),
                    out.stdout
                );
            }
            n += 1;
            continue;
        }
        let got = btc_info_hash(&ctx, p.to_str().unwrap());
        assert_eq!(got, want, "info-hash of {}", p.display());
        let magnet = if v2 {
            assert!(
                out.stdout.contains(&format!("Info-hash v2: {want_v2}")),
                "no v2 info-hash {want_v2} in btc info {}:\n{}",
                p.display(),
                out.stdout
            );
            format!("magnet:?xt=urn:btih:{want}&xt=urn:btmh:1220{want_v2}")
        } else {
            format!("magnet:?xt=urn:btih:{want}")
        };
        assert!(
            out.stdout.contains(&magnet),
            "no magnet link {magnet} in btc info {}:\n{}",
            p.display(),
            out.stdout
        );
        n += 1;
    }
    assert!(n >= 5, "expected golden torrents in {}", dir.display());
}

#[test]
fn create_then_info_round_trip_and_transmission_agrees() {
    let ctx = Ctx::new("cli-create-roundtrip", secs(180));
    let payload = Payload::nested("tree", 1);
    let root = payload.write(&ctx.mkdir("data"), 11);
    let t = ctx.join("tree.torrent");
    btc_create(
        &ctx,
        &root,
        &t,
        &[
            "--tracker",
            "http://127.0.0.1:1/announce",
            "--tracker",
            "udp://127.0.0.1:2/announce",
            "--piece-length",
            "32768",
            "--comment",
            "made by the test",
            "--web-seed",
            "http://127.0.0.1:3/files/",
        ],
    );
    let want_hash = transmission_hash(&ctx, &t);
    let out = ctx.run_btc(&["info", t.to_str().unwrap()], secs(30));
    out.assert_ok("btc info");
    let text = &out.stdout;
    for needle in [
        "Name:        tree\n".to_string(),
        format!("Info-hash:   {want_hash}\n"),
        format!("({} bytes)", payload.total()),
        "(32768 bytes)".to_string(),
        "Comment:     made by the test".to_string(),
        "http://127.0.0.1:1/announce".to_string(),
        "udp://127.0.0.1:2/announce".to_string(),
        "http://127.0.0.1:3/files/".to_string(),
        format!("Files ({}):", payload.files.len()),
        "tree/a/b/c/four.dat".to_string(),
        "Private:     no".to_string(),
    ] {
        assert!(text.contains(&needle), "btc info lacks {needle:?}:\n{text}");
    }

    // transmission-show reads the same files, sizes and piece size.
    let mut c = Command::new("transmission-show");
    c.arg(&t);
    let show = ctx.run("transmission-show", c, secs(30));
    show.assert_ok("transmission-show");
    assert!(
        show.stdout.contains("Piece Size: 32.00 KiB"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("made by the test"), "{}", show.stdout);
    for (p, _) in &payload.files {
        assert!(
            show.stdout.contains(&format!("tree/{p}")),
            "no {p}:\n{}",
            show.stdout
        );
    }

    // A single file, private, default piece length.
    let single = Payload::single("one.bin", 3 * 1024 * 1024 + 5);
    let f = single.write(&ctx.mkdir("data1"), 12);
    let t1 = ctx.join("one.torrent");
    btc_create(&ctx, &f, &t1, &["--private"]);
    let h1 = transmission_hash(&ctx, &t1);
    assert_eq!(btc_info_hash(&ctx, t1.to_str().unwrap()), h1);
    let out = ctx.run_btc(&["info", t1.to_str().unwrap()], secs(30));
    assert!(out.stdout.contains("Private:     yes"), "{}", out.stdout);
    let mut c = Command::new("transmission-show");
    c.arg(&t1);
    let show = ctx.run("transmission-show", c, secs(30));
    assert!(show.stdout.contains("Private torrent"), "{}", show.stdout);
}

/// `btc create` without `--format` makes a hybrid, as libtorrent and
/// qBittorrent do: libtorrent reads both of its info-hashes as `btc info`
/// prints them, and `btc info` counts the data without the pad files.
/// `--format v1` is still there for Transmission 3, which reads it.
#[test]
fn create_makes_a_hybrid_by_default_and_v1_on_request() {
    let ctx = Ctx::new("cli-create-default-hybrid", secs(180));
    let payload = Payload::nested("both", 1);
    let root = payload.write(&ctx.mkdir("data"), 31);
    let t = ctx.join("both.torrent");
    let (path, out) = (root.to_str().unwrap(), t.to_str().unwrap());
    ctx.run_btc(&["create", path, "-o", out, "-q"], secs(120))
        .assert_ok("btc create");
    let info = ctx.run_btc(&["info", out], secs(30));
    info.assert_ok("btc info");
    let text = &info.stdout;
    assert!(text.contains("Format:      hybrid"), "{text}");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in btc info:\n{text}"))
            .trim()
            .to_string()
    };
    let (v1, v2) = libtorrent_hashes(&ctx, &t);
    assert_eq!(field("Info-hash:"), v1, "{text}");
    assert_eq!(field("Info-hash v2:"), v2, "{text}");
    assert!(
        text.contains(&format!("({} bytes, and ", payload.total())),
        "the size should count the data, not the pad files:\n{text}"
    );

    let t1 = ctx.join("v1.torrent");
    let out1 = t1.to_str().unwrap();
    ctx.run_btc(
        &["create", path, "-o", out1, "--format", "v1", "-q"],
        secs(120),
    )
    .assert_ok("btc create --format v1");
    assert_eq!(btc_info_hash(&ctx, out1), transmission_hash(&ctx, &t1));
    let info1 = ctx.run_btc(&["info", out1], secs(30));
    assert!(
        info1.stdout.contains("Format:      v1 "),
        "{}",
        info1.stdout
    );
}

#[test]
fn create_reproduces_mktorrent_info_hash() {
    require_tool("mktorrent");
    let ctx = Ctx::new("cli-create-mktorrent", secs(180));
    let payload = Payload::nested("same", 1);
    let data = ctx.mkdir("data");
    let root = payload.write(&data, 21);
    let mk = ctx.join("mk.torrent");
    let mut c = Command::new("mktorrent");
    c.args(["-d", "-l", "15", "-a", "http://127.0.0.1:9/announce", "-o"])
        .arg(&mk)
        .arg("same")
        .current_dir(&data);
    ctx.run("mktorrent", c, secs(60)).assert_ok("mktorrent");
    let ours = ctx.join("ours.torrent");
    btc_create(
        &ctx,
        &root,
        &ours,
        &[
            "--piece-length",
            "32768",
            "--tracker",
            "http://127.0.0.1:9/announce",
        ],
    );
    assert_eq!(
        transmission_hash(&ctx, &ours),
        transmission_hash(&ctx, &mk),
        "btc create and mktorrent disagree on the same folder"
    );
}

#[test]
fn magnets_and_hashes() {
    let ctx = Ctx::new("cli-magnets", secs(60));
    let hex = "758e7262710c866ff80e74a0cd6f73eb99a84fe0";
    let magnet = format!("magnet:?xt=urn:btih:{hex}&dn=multi&tr=udp%3A%2F%2F127.0.0.1%3A1");
    assert_eq!(btc_info_hash(&ctx, &magnet), hex);
    assert_eq!(btc_info_hash(&ctx, hex), hex);
    assert_eq!(btc_info_hash(&ctx, &hex.to_uppercase()), hex);
    // The same 20 bytes in base32 (RFC 4648).
    let b32 = base32(&hex_bytes(hex));
    assert_eq!(b32.len(), 32);
    assert_eq!(btc_info_hash(&ctx, &b32), hex);
    let out = ctx.run_btc(&["info", &magnet], secs(30));
    assert!(out.stdout.contains("udp://127.0.0.1:1"), "{}", out.stdout);

    let out_dir = ctx.join("out");
    let o = out_dir.to_str().unwrap();
    let v2 =
        "magnet:?xt=urn:btmh:1220caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e";
    // A v2 magnet is taken: its swarm is the v2 hash's first 20 bytes (the
    // download itself is tested in hashx.rs); one whose btmh is not
    // SHA-256 is refused on one line.
    let out = ctx.run_btc(&["info", v2], secs(30));
    out.assert_ok("btc info of a v2 magnet");
    assert!(
        out.stdout
            .contains("caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa"),
        "{}",
        out.stdout
    );
    let bad_v2 = "magnet:?xt=urn:btmh:1120caf1e1c30e81cb361b9ee167c4aa64228a7f";
    let out = ctx.run_btc(&["-o", o, bad_v2, "--no-dht", "--port", "0"], secs(30));
    let line = assert_one_line_error(&out, "urn:btmh magnet");
    let l = line.to_lowercase();
    assert!(
        l.contains("btmh") && l.contains("sha-256"),
        "error does not say the btmh is not SHA-256: {line}"
    );

    for bad in [
        "magnet:?dn=no-hash",
        "magnet:?xt=urn:btih:1234",
        "magnet:?xt=urn:btih:zz8e7262710c866ff80e74a0cd6f73eb99a84fe0",
        "0123456789abcdef",
    ] {
        let out = ctx.run_btc(&["-o", o, bad, "--no-dht", "--port", "0"], secs(30));
        assert_one_line_error(&out, bad);
        let out = ctx.run_btc(&["info", bad], secs(30));
        assert_one_line_error(&out, &format!("info {bad}"));
    }
    assert_eq!(count_entries(&out_dir), 0, "output dir has content");
}

fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

fn base32(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0);
    for &x in b {
        buf = (buf << 8) | x as u32;
        bits += 8;
        while bits >= 5 {
            out.push(A[((buf >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(A[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// `--json`'s `metadata` event names a hybrid torrent's v2 info-hash
/// beside the v1 `info_hash` (libtorrent's hashes of the golden hybrid),
/// and so do the `progress` lines after it.
#[test]
fn json_metadata_of_a_hybrid_carries_both_info_hashes() {
    let ctx = Ctx::new("cli-json-hybrid", secs(60));
    let t = testdata("torrents/hybrid-libtorrent.torrent");
    let (v1, v2) = libtorrent_hashes(&ctx, &t);
    let out = ctx.mkdir("out");
    let args = [
        "--json",
        "--no-dht",
        "--no-lsd",
        "--port",
        "0",
        "-o",
        s(&out),
        s(&t),
    ];
    let mut btc = ctx.spawn("btc-json-hybrid", ctx.btc(&args));
    btc.wait_output("\"event\":\"metadata\"", secs(30));
    // The progress lines after it carry both hashes too.
    let ok = wait_for(secs(10), || {
        let text = btc.stdout();
        let after = text.split("\"event\":\"metadata\"").nth(1).unwrap_or("");
        after.contains("\"event\":\"progress\"")
    });
    btc.terminate(secs(10));
    let text = btc.stdout();
    assert!(ok, "no progress line after the metadata:\n{text}");
    let mut lines = text
        .lines()
        .skip_while(|l| !l.contains("\"event\":\"metadata\""));
    let line = lines.next().expect("a metadata line");
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(v["info_hash"], v1.as_str(), "{line}");
    assert_eq!(v["info_hash_v2"], v2.as_str(), "{line}");
    let progress = lines
        .find(|l| l.contains("\"event\":\"progress\""))
        .expect("a progress line");
    let p: serde_json::Value = serde_json::from_str(progress).expect("a JSON line");
    assert_eq!(p["info_hash"], v1.as_str(), "{progress}");
    assert_eq!(p["info_hash_v2"], v2.as_str(), "{progress}");
}
