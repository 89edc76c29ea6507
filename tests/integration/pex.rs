//! Peer exchange (BEP 11) between real btc processes on loopback: a
//! leecher told of one slow seeder finds a fast one only through PEX.
//!
//! Layout: S1 (127.0.0.1, `--upload-limit 1M`), S2 (127.0.0.2, unlimited,
//! `--peer S1`), L (127.0.0.3, `--peer S1`). No tracker, no DHT. S2 dials
//! S1 and the two part at once as fellow seeds; S1 keeps offering S2's
//! listen address (from its extended handshake) in PEX for a while, so L
//! hears of S2 from S1 and takes most of the data from it.

use crate::util::*;

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

#[test]
fn leecher_finds_a_faster_seeder_through_pex() {
    let ctx = Ctx::new("pex-faster-seeder", secs(150));
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
    let _s2 = start_btc_seeder(
        &ctx,
        "fast-seeder",
        &dir2,
        s(&t),
        p2,
        &["--no-dht", "--bind", "127.0.0.2", "--peer", &s1_addr],
    );
    // S1 met S2 and parted with it (nothing to trade between seeds).
    s1.wait_output("we are both seeds", secs(30));
    let out = ctx.join("out");
    let (_, stderr, took) = leech(
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
            "-v",
        ],
        secs(60),
    );
    assert_same_file(&root, &out.join("pex.bin"));
    assert!(
        stderr.contains(&format!("dialing {s2_addr} (from PEX)")),
        "the leecher never heard of S2 through PEX:\n{stderr}"
    );
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
