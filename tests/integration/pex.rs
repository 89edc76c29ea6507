//! Peer exchange (BEP 11) between real btc processes on loopback: a
//! leecher told of one slow seeder finds a fast one only through PEX.
//!
//! Layout: S1 (127.0.0.1, `--upload-limit 1M`), S2 (127.0.0.2, unlimited,
//! `--peer S1`), L (127.0.0.3, `--peer S1`). No tracker, no DHT. S2 dials
//! S1 and the two part at once as fellow seeds; S1 keeps offering S2's
//! listen address (from its extended handshake) in PEX for a while, so L
//! hears of S2 from S1 and takes most of the data from it. With S2 on uTP
//! alone, S1's PEX flags it 0x04 and L dials it over uTP first.

use crate::util::*;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// The `uploaded X UNIT` of btc's summary line, in bytes (approximately:
/// the line rounds to two decimals).
fn summary_uploaded_bytes(stdout: &str) -> Option<u64> {
    let line = stdout.lines().rev().find(|l| l.contains(", uploaded "))?;
    let rest = line.rsplit_once(", uploaded ")?.1;
    let mut it = rest.split_whitespace();
    let num: f64 = it.next()?.parse().ok()?;
    let mul = match it.next()?.trim_end_matches(')') {
        "B" => 1u64,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    Some((num * mul as f64) as u64)
}

/// The trio of the module doc, S2 with `s2_extra` added, run until L is
/// done: L's file is checked, and that L heard of S2 through PEX.
struct Trio {
    s1: Proc,
    _s2: Proc,
    /// Dropped last: it ends the processes and removes the folders.
    _ctx: Ctx,
    s2_addr: String,
    leecher_log: String,
    took: Duration,
    len: u64,
}

fn pex_trio(test: &str, s2_extra: &[&str], leecher_verbosity: &str) -> Trio {
    let ctx = Ctx::new(test, secs(150));
    let len = 24 * MIB;
    let payload = Payload::single("pex.bin", len);
    let dir1 = ctx.mkdir("seed1");
    let root = payload.write(&dir1, 11);
    let dir2 = ctx.mkdir("seed2");
    payload.write(&dir2, 11);
    let t = ctx.join("pex.torrent");
    btc_create(&ctx, &root, &t, &[]);
    let (p1, p2) = (free_port(), free_port());
    let s1_addr = format!("127.0.0.1:{p1}");
    let s2_addr = format!("127.0.0.2:{p2}");
    let mut s1 = start_btc_seeder(
        &ctx,
        "slow-seeder",
        &dir1,
        s(&t),
        p1,
        &[
            "--no-dht",
            "--bind",
            "127.0.0.1",
            "--upload-limit",
            "1M",
            "-vv",
        ],
    );
    let s2_args = [
        &["--no-dht", "--bind", "127.0.0.2", "--peer", &s1_addr][..],
        s2_extra,
    ]
    .concat();
    let s2 = start_btc_seeder(&ctx, "fast-seeder", &dir2, s(&t), p2, &s2_args);
    // S1 met S2 and parted with it (nothing to trade between seeds).
    s1.wait_output("we are both seeds", secs(30));
    let out = ctx.join("out");
    let (_, leecher_log, took) = leech(
        &ctx,
        "leecher",
        &[
            "-o",
            s(&out),
            s(&t),
            "--peer",
            &s1_addr,
            "--no-dht",
            "--bind",
            "127.0.0.3",
            "--port",
            "0",
            "--no-seed",
            leecher_verbosity,
        ],
        secs(60),
    );
    assert_same_file(&root, &out.join("pex.bin"));
    assert!(
        leecher_log.contains(&format!("dialing {s2_addr} (from PEX)")),
        "the leecher never heard of S2 through PEX:\n{leecher_log}"
    );
    Trio {
        s1,
        _s2: s2,
        _ctx: ctx,
        s2_addr,
        leecher_log,
        took,
        len,
    }
}

#[test]
fn leecher_finds_a_faster_seeder_through_pex() {
    // Bound whole: a pattern with `..` would drop the context (and stop
    // every process) at once.
    let trio = pex_trio("pex-faster-seeder", &[], "-v");
    let (mut s1, took, len) = (trio.s1, trio.took, trio.len);
    s1.terminate(secs(10));
    let up = summary_uploaded_bytes(&s1.stdout())
        .unwrap_or_else(|| panic!("no summary from S1:\n{}", s1.tails()));
    eprintln!(
        "[pex] leecher took {took:?}; the slow seeder sent {:.1} MiB of {} MiB",
        up as f64 / MIB as f64,
        len / MIB
    );
    assert!(
        up < len * 2 / 5,
        "the slow seeder sent {up} of {len} bytes: the fast one was not used"
    );
}

/// S2 speaks uTP only, so S1 flags it 0x04 in PEX; L dials it over uTP
/// first, never trying TCP (without the flag, L would try TCP, be refused,
/// and log the fallback).
#[test]
fn a_peer_pex_flags_as_utp_is_dialled_over_utp_first() {
    let trio = pex_trio("pex-utp-flag", &["--no-tcp"], "-vv");
    let (leecher_log, s2_addr) = (&trio.leecher_log, &trio.s2_addr);
    assert!(
        leecher_log.contains(&format!("connected to {s2_addr}: uTP")),
        "the leecher never reached S2 over uTP:\n{leecher_log}"
    );
    let fallback = format!("peer {s2_addr}: ");
    assert!(
        !leecher_log
            .lines()
            .any(|l| l.contains(&fallback) && l.contains("trying uTP")),
        "the leecher tried TCP before uTP:\n{leecher_log}"
    );
}
