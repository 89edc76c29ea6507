//! btc over an emulated long fat link: the link emulator
//! (`examples/linkemu.rs`, a userspace relay that delays each direction)
//! between a real seeder and the real binary. Speed itself is measured by
//! `scripts/bench.sh wan`; these tests check what does not depend on the
//! machine's speed: the emulator delays as told, and btc's request
//! pipeline grows past any fixed depth to fill a far peer's link.

use crate::util::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// The link emulator, built beside btc by `cargo test` (as an example).
fn linkemu() -> PathBuf {
    let path = std::path::Path::new(BTC)
        .parent()
        .expect("btc's folder")
        .join("examples/linkemu");
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds it (cargo build --release --example linkemu)",
        path.display()
    );
    path
}

/// Starts the emulator relaying TCP (and with `udp`, UDP too, through
/// the same bottleneck) from free ports to `target`; returns it and the
/// TCP and UDP addresses to dial.
fn start_relay(ctx: &Ctx, target: &str, udp: bool, extra: &[&str]) -> (Proc, String, String) {
    let mut c = Command::new(linkemu());
    c.args(["--tcp", &format!("127.0.0.1:0={target}")]);
    if udp {
        c.args(["--udp", &format!("127.0.0.1:0={target}")]);
    }
    c.args(extra);
    let mut p = ctx.spawn("linkemu", c);
    let out = p.wait_output(if udp { "udp " } else { "tcp " }, secs(10));
    let find = |prefix: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|a| a.trim().to_string())
            .unwrap_or_default()
    };
    (p, find("tcp "), find("udp "))
}

/// The emulator delays each direction by half the round trip: an echo
/// through a 400 ms relay takes at least 400 ms, and the bytes come back
/// unchanged. (If it did not delay, the test below would prove nothing.)
#[test]
fn linkemu_delays_each_direction_by_half_the_round_trip() {
    let ctx = Ctx::new("wan-linkemu-delay", secs(30));
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = echo.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = echo.accept() {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    let (_relay, addr, _) = start_relay(&ctx, &target, false, &["--rtt-ms", "400"]);
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(secs(10))).unwrap();
    let start = Instant::now();
    c.write_all(b"ping through a long link\n").unwrap();
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line).unwrap();
    let rtt = start.elapsed();
    assert_eq!(line, "ping through a long link\n");
    assert!(rtt >= Duration::from_millis(395), "round trip {rtt:?}");
    assert!(rtt < secs(5), "round trip {rtt:?}");
}

/// A libtorrent seeder 300 ms away. Before the pipeline followed the
/// bandwidth-delay product, btc kept at most 512 requests (and in practice
/// ~4 MiB) in flight whatever the round trip, so a far peer could never
/// give more than ~14 MB/s; now the depth doubles every round trip until
/// the peer's queue shows, so it must pass 512 here (the seeder, on
/// loopback behind the relay, is never the bottleneck). The data is
/// checked whole.
#[test]
fn regression_a_far_peer_gets_a_pipeline_deeper_than_any_fixed_one() {
    require_tool(PYTHON);
    let ctx = Ctx::new("wan-deep-pipeline", secs(180));
    let seed_dir = ctx.mkdir("seed");
    let file = seed_dir.join("far.bin");
    write_random_file(&file, 96 * MIB, 25);
    let t = ctx.join("far.torrent");
    btc_create(&ctx, &file, &t, &["--piece-length", "262144"]);
    let listen = format!("127.0.0.2:{}", free_port());
    let mut seeder = start_lt_seeder(&ctx, &t, &seed_dir, &listen);
    let (_relay, relay, _) = start_relay(&ctx, &listen, false, &["--rtt-ms", "300"]);
    let out = ctx.join("out");
    let (_, stderr, took) = leech(
        &ctx,
        "btc-leecher",
        &[
            "-o",
            s(&out),
            s(&t),
            "--peer",
            &relay,
            "--no-seed",
            "--no-dht",
            "--no-utp",
            "--port",
            "0",
            "--bind",
            "127.0.0.3",
            "-vv",
        ],
        secs(150),
    );
    assert_same_file(&file, &out.join("far.bin"));
    let line = stderr
        .lines()
        .find(|l| l.contains("request pipeline") && l.contains(&relay))
        .unwrap_or_else(|| panic!("no pipeline line for {relay} in:\n{stderr}"));
    let depth: usize = line
        .split("request pipeline ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no depth in {line:?}"));
    assert!(depth > 512, "pipeline {depth} deep after {took:?}: {line}");
    let rtt_ms: f64 = line
        .split("base round trip ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no round trip in {line:?}"));
    assert!(
        rtt_ms >= 300.0,
        "base round trip {rtt_ms} ms through a 300 ms link"
    );
    seeder.assert_running();
}

/// uTP exists to yield: a uTP download sharing a 40 Mbit/s bottleneck
/// (40 ms round trip, a 300 ms router queue) with a TCP download must
/// leave the TCP flow most of the link. With RFC 6817's one packet per
/// round trip decrease, the uTP window took minutes to shrink once a TCP
/// flow filled the queue, and TCP got about half (55% of its rate alone,
/// measured); LEDBAT++'s multiplicative decrease gives it back in a few
/// round trips (85%). Rates are compared within the test, against the
/// same TCP download alone through the same link.
#[test]
fn regression_utp_yields_the_bottleneck_to_tcp() {
    let ctx = Ctx::new("wan-ledbat-yields", secs(180));
    let seed_dir = ctx.mkdir("seed");
    let (big, small) = (seed_dir.join("big.bin"), seed_dir.join("small.bin"));
    write_random_file(&big, 96 * MIB, 26);
    write_random_file(&small, 12 * MIB, 27);
    let (tb, ts) = (ctx.join("big.torrent"), ctx.join("small.torrent"));
    btc_create(&ctx, &big, &tb, &[]);
    btc_create(&ctx, &small, &ts, &[]);
    let port = free_port();
    let _seeder = start_btc_seeder(
        &ctx,
        "seeder",
        &seed_dir,
        s(&tb),
        port,
        &[
            s(&ts),
            "--bind",
            "127.0.0.1",
            "--no-dht",
            "--max-peers-per-ip",
            "8",
        ],
    );
    let (_relay, tcp, udp) = start_relay(
        &ctx,
        &format!("127.0.0.1:{port}"),
        true,
        &["--rtt-ms", "40", "--rate", "40mbit", "--queue-ms", "300"],
    );
    // The TCP download through the link, timed from start to exit.
    let tcp_fetch = |name: &str| -> Duration {
        let out = ctx.join(name);
        let (_, _, took) = leech(
            &ctx,
            name,
            &[
                "-o",
                s(&out),
                s(&ts),
                "--peer",
                &tcp,
                "--no-seed",
                "--no-dht",
                "--no-utp",
                "--port",
                "0",
                "--bind",
                "127.0.0.3",
            ],
            secs(60),
        );
        assert_same_file(&small, &out.join("small.bin"));
        took
    };
    let alone = tcp_fetch("tcp-alone");
    let out = ctx.join("utp");
    let mut utp = ctx.spawn(
        "utp-leecher",
        ctx.btc(&[
            "-o",
            s(&out),
            s(&tb),
            "--peer",
            &udp,
            "--no-seed",
            "--no-dht",
            "--no-tcp",
            "--port",
            "0",
            "--bind",
            "127.0.0.2",
        ]),
    );
    // Let uTP take the link, window and all.
    std::thread::sleep(secs(5));
    utp.assert_running();
    let shared = tcp_fetch("tcp-beside-utp");
    utp.assert_running();
    let share = alone.as_secs_f64() / shared.as_secs_f64();
    eprintln!(
        "[ledbat] TCP alone {alone:?}, beside uTP {shared:?}: {:.0}% of its rate",
        share * 100.0
    );
    assert!(
        share >= 0.7,
        "TCP beside uTP got {:.0}% of its rate alone ({alone:?} alone, {shared:?} beside uTP)",
        share * 100.0
    );
}
