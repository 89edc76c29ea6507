//! Floods of made-up peer addresses, checked against the real binary: a
//! PEX flood is dialled at its source's trickle (4 dials a second, a burst
//! of 8) while the honest seeder named by `--peer` serves the download,
//! and an LSD flood of one host announcing a new port each time is one
//! address book entry with the host's back-off, so it costs a dial now and
//! then, not one per port. A DHT node that answers every `get_peers` with
//! made-up peers (127.2.0.0/16) does not keep out the honest seeder found
//! through the real node.
//!
//! Roles get their own loopback address: 127.0.0.1 the btc seeder, 127.0.0.3
//! the PEX test's leecher, 127.0.0.10 and up fake peers, 127.1.0.0/16 the
//! addresses PEX names (nothing listens there: TCP is refused at once),
//! 127.0.0.5 the LSD flooder.

use crate::fake_peer::*;
use crate::util::*;
use btc::id::InfoHash;
use btc::lsd::{GROUP_V4, announce_packets};
use btc::metainfo::Metainfo;
use btc::peer::extension::ExtendedHandshake;
use btc::peer::message::Message;
use btc::peer::pex::{MAX_PEX_PEERS, PexMessage};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

const MIB: u64 = 1024 * 1024;

/// The seeder's upload limit: the download takes about `size / 1 MiB`
/// seconds, long enough for a flood to land while it runs.
const SLOW: &str = "1M";

/// A `size`-byte single-file torrent under `seed/`, and its info-hash.
fn torrent(ctx: &Ctx, name: &str, size: u64, seed: u64) -> (PathBuf, PathBuf, InfoHash) {
    let seed_dir = ctx.mkdir("seed");
    write_random_file(&seed_dir.join(name), size, seed);
    let file = ctx.join(format!("{name}.torrent"));
    btc_create(ctx, &seed_dir.join(name), &file, &[]);
    let meta = Metainfo::from_bytes(&fs::read(&file).unwrap()).expect("btc's own torrent");
    (seed_dir, file, meta.info_hash)
}

/// The `-v` lines of dials of candidates from `source` ("PEX", "LSD"):
/// `info: dialing ADDR (from SOURCE)`.
fn dials_from<'a>(log: &'a str, source: &str) -> Vec<&'a str> {
    let tail = format!(" (from {source})");
    log.lines()
        .filter(|l| l.starts_with("info: dialing ") && l.ends_with(&tail))
        .collect()
}

/// Regression: before candidates were paced by source, a PEX message of 50
/// made-up addresses was dialled all at once, as fast as the half-open
/// slots turned over; a few such peers had btc dial hundreds of dead
/// addresses in a second. Now PEX may start 4 dials a second (a burst of
/// 8) whatever it names, and the honest seeder (`--peer`) is dialled
/// first and serves the whole download.
///
/// Five fake peers each send the leecher one PEX message of 50 addresses
/// where nothing listens (250 in all); the leecher runs `--no-utp`, so each
/// such dial fails at once (refused) and frees its slot: only the pacing
/// can hold the dials back.
#[test]
fn regression_a_pex_flood_trickles_and_the_honest_seeder_finishes() {
    let ctx = Ctx::new("pex-flood", secs(120));
    let (dir, torrent, hash) = torrent(&ctx, "flood.bin", 8 * MIB, 31);
    let seed_port = free_port();
    let _seeder = start_btc_seeder(
        &ctx,
        "seeder",
        &dir,
        s(&torrent),
        seed_port,
        &["--no-dht", "--bind", "127.0.0.1", "--upload-limit", SLOW],
    );

    let out = ctx.mkdir("out");
    let leech_port = free_port();
    let (seeder_arg, port_arg) = (
        SocketAddr::new(lo(1), seed_port).to_string(),
        leech_port.to_string(),
    );
    let started = Instant::now();
    let mut leecher = ctx.spawn(
        "leecher",
        ctx.btc(&[
            s(&torrent),
            "-o",
            s(&out),
            "--peer",
            &seeder_arg,
            "--no-seed",
            "--no-dht",
            "--no-utp",
            "--bind",
            "127.0.0.3",
            "--port",
            &port_arg,
            "-v",
        ]),
    );
    let btc = SocketAddr::new(lo(3), leech_port);

    // The addresses PEX names: 127.1.P.1 ... 127.1.P.50 for fake peer P,
    // on a port nothing listens on.
    let dead_port = free_port();
    let named = |p: u8| -> Vec<(SocketAddr, u8)> {
        (1..=MAX_PEX_PEERS as u8)
            .map(|i| {
                (
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 1, p, i)), dead_port),
                    0,
                )
            })
            .collect()
    };

    // Each fake peer connects, says it speaks ut_pex, waits for btc's
    // extended handshake (btc takes PEX only once it offered it) and sends
    // its one message: 50 added, the most a message may carry, and the
    // first from that peer (one per 20 s is taken).
    let mut fakes = Vec::new();
    let mut flood_at = None;
    for p in 0..5u8 {
        let from = lo(10 + p);
        let id = peer_id(format!("-FK0001-flood{p}").as_bytes());
        let mut fake = None;
        // The leecher may still be starting to listen.
        ctx.wait_for("the leecher to take a fake peer", secs(20), || {
            fake = FakePeer::connect_from(from, btc, hash, id).ok();
            fake.is_some()
        });
        let mut fake = fake.unwrap();
        fake.send_ext_handshake(&ExtendedHandshake {
            ut_pex: Some(1),
            ..ext_handshake(None)
        })
        .unwrap();
        let _ = fake.recv_until(secs(10), |m| matches!(m, Message::Extended { id: 0, .. }));
        let pex_id = fake
            .their_ext
            .as_ref()
            .and_then(|e| e.ut_pex)
            .expect("btc offers ut_pex on a public torrent");
        let pex = PexMessage {
            added: named(p),
            dropped: vec![],
        };
        flood_at.get_or_insert_with(Instant::now);
        fake.send_extended(pex_id, &pex.encode()).unwrap();
        fakes.push(fake);
    }
    let flood_at = flood_at.unwrap();
    eprintln!(
        "[pex-flood] 250 addresses sent {:?} after the leecher started",
        flood_at - started
    );
    assert!(
        leecher.is_running(),
        "the leecher finished before the flood landed: slow the seeder further\n{}",
        leecher.tails()
    );

    leecher.expect_success(secs(90));
    let window = flood_at.elapsed().as_secs_f64();
    assert_same_file(&dir.join("flood.bin"), &out.join("flood.bin"));

    let log = leecher.stderr();
    let dials = dials_from(&log, "PEX");
    // The pacer's bucket: at most 8 at once, then 4 a second, over the
    // time from the first PEX message to the exit; 4 for rounding.
    let bound = 8 + (4.0 * window).ceil() as usize + 4;
    eprintln!(
        "[pex-flood] {} PEX dials in {window:.1} s (bound {bound}); download took {:?}",
        dials.len(),
        started.elapsed()
    );
    assert!(
        !dials.is_empty(),
        "no PEX address was dialled, so PEX dialling was not exercised:\n{log}"
    );
    assert!(
        dials.len() <= bound,
        "{} dials of PEX addresses in {window:.1} s, more than PEX's budget of {bound}:\n{}",
        dials.len(),
        dials.join("\n")
    );
    // The honest seeder was dialled as named by --peer.
    assert!(
        log.contains(&format!("dialing {seeder_arg} (from --peer)")),
        "{log}"
    );
    drop(fakes);
}

/// Regression: before one LSD entry was kept per sending host, every
/// announce naming a new port made a new address book entry, each dialled
/// at once: a host on the local network announcing a new port a second
/// had btc dial it once a second for as long as it kept on. One entry per
/// host (7230f21) was not enough: the new port's entry started afresh,
/// without the back-off of the failed one it replaced, and was dialled at
/// once all the same (14 dials in 10 s here, as before). Now a new port
/// replaces the host's entry and keeps its back-off: the first dial
/// fails, and the next may come 30 s later, whatever ports are named.
///
/// The flooder (127.0.0.5, inside the test's namespace) announces the
/// leecher's torrent to the BEP 14 group every 200 ms with a new port each
/// time; btc's LSD service takes 5 datagrams from one sender at once, then
/// one a second, so about one new port a second reaches the torrent. The
/// leecher runs `--no-utp`, so a dial of a port where nothing listens
/// fails at once (refused) and nothing but the entry's rules holds the
/// next one back. It downloads from the real seeder meanwhile.
#[test]
fn regression_an_lsd_port_flood_is_one_entry() {
    let ctx = Ctx::offline("lsd-flood", secs(120));
    ctx.netns.as_ref().expect("a namespace").enable_multicast();
    let (dir, torrent, hash) = torrent(&ctx, "lsd-flood.bin", 10 * MIB, 41);
    let seed_port = free_port();
    let _seeder = start_btc_seeder(
        &ctx,
        "seeder",
        &dir,
        s(&torrent),
        seed_port,
        &["--no-dht", "--no-lsd", "--upload-limit", SLOW],
    );

    // The announces, made by btc's own encoder: one per port, ports on
    // which nothing listens inside the namespace.
    let flooder = Ipv4Addr::new(127, 0, 0, 5);
    let announces = 60;
    let ports: Vec<u16> = (0..announces).map(|_| free_port()).collect();
    let packets: Vec<String> = ports
        .iter()
        .map(|&p| {
            let pkt = announce_packets(GROUP_V4.into(), p, &[hash], "floodcookie");
            assert_eq!(pkt.len(), 1);
            pkt[0].iter().map(|b| format!("{b:02x}")).collect()
        })
        .collect();
    let packets_file = ctx.join("announces.hex");
    fs::write(&packets_file, packets.join("\n")).unwrap();

    let out = ctx.mkdir("out");
    let leech_port = free_port().to_string();
    let seeder_arg = SocketAddr::new(lo(1), seed_port).to_string();
    let started = Instant::now();
    let mut leecher = ctx.spawn(
        "leecher",
        ctx.btc(&[
            s(&torrent),
            "-o",
            s(&out),
            "--peer",
            &seeder_arg,
            "--no-seed",
            "--no-dht",
            "--no-utp",
            "--port",
            &leech_port,
            "-v",
        ]),
    );
    // LSD hands a peer only to a torrent already added: wait until the
    // leecher's torrent runs (its first dial, of the seeder).
    ctx.wait_for("the leecher to start", secs(20), || {
        leecher.stderr().contains(&format!("dialing {seeder_arg}"))
    });

    // A plain UDP socket in the namespace, bound to the flooder's address
    // (the announces' source: the one btc dials), sending to the group.
    let script = r#"
import socket, sys, time
src, path, gap = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
n = 0
for line in open(path):
    line = line.strip()
    if line:
        s.sendto(bytes.fromhex(line), ("239.192.152.143", 6771))
        n += 1
        time.sleep(gap)
print("sent", n, flush=True)
"#;
    let mut cmd = ctx.command(PYTHON);
    cmd.arg("-c")
        .arg(script)
        .arg(flooder.to_string())
        .arg(s(&packets_file))
        .arg("0.2");
    let flood_at = Instant::now();
    let mut sender = ctx.spawn("lsd-flooder", cmd);

    leecher.expect_success(secs(90));
    let window = flood_at.elapsed().as_secs_f64();
    sender.terminate(secs(2));
    assert_same_file(&dir.join("lsd-flood.bin"), &out.join("lsd-flood.bin"));

    let log = leecher.stderr();
    let prefix = format!("{flooder}:");
    let heard = log
        .lines()
        .filter(|l| l.contains(&format!("LSD: peer {prefix}")))
        .count();
    let dials: Vec<&str> = dials_from(&log, "LSD")
        .into_iter()
        .filter(|l| l.contains(&format!("dialing {prefix}")))
        .collect();
    eprintln!(
        "[lsd-flood] {heard} announces with a new port heard from {flooder} in {window:.1} s, {} dials of it; started {:?} before the flood",
        dials.len(),
        flood_at - started
    );
    // The flood reached the torrent: the LSD service takes 5 at once,
    // then one a second.
    assert!(
        heard >= 6,
        "only {heard} announces from {flooder} reached the torrent, too few to tell:\n{log}"
    );
    assert!(
        !dials.is_empty(),
        "{flooder} was never dialled, so LSD dialling was not exercised:\n{log}"
    );
    // One entry with the host's back-off: a dial, then none for 30 s
    // (60 s after a second failure); one more for an announce racing the
    // first dial's end.
    let bound = 2 + (window / 30.0) as usize;
    assert!(
        dials.len() <= bound,
        "{} dials of {flooder} (one per new port?) in {window:.1} s, more than {bound}:\n{}",
        dials.len(),
        dials.join("\n")
    );
}

/// A DHT node that answers every `get_peers` with 150 made-up peers (new
/// ones each time, where nothing listens) beside the real node where the
/// honest seeder announced: the flood reaches btc's candidates, is dialled
/// at the DHT's trickle, and the bare hash still resolves and downloads
/// from the honest seeder.
#[test]
fn a_dht_values_flood_does_not_keep_the_seeder_out() {
    let (flood, log) = leech_beside_a_dht_flood("dht-flood", "values");
    let answers = flood.matches("GET_PEERS").count();
    let dead_dials = dials_from(&log, "DHT")
        .iter()
        .filter(|l| l.contains("dialing 127.2."))
        .count();
    eprintln!(
        "[dht-flood] the hostile node answered {answers} get_peers, \
         btc dialled {dead_dials} of its addresses"
    );
    assert!(answers > 0, "the hostile node was never asked");
    assert!(
        dead_dials > 0,
        "the flood never reached the candidates (the test proves nothing)\n{log}"
    );
}

/// A hostile DHT node that answers every `get_peers` and `find_node` with
/// 8 new made-up nodes whose ids are closer to the target than any real
/// node's, and a made-up token: the lookup spends queries on them (they
/// never answer), yet the bare hash still resolves through the real node
/// and downloads from the honest seeder.
#[test]
fn a_dht_nodes_flood_does_not_keep_the_seeder_out() {
    let (flood, _log) = leech_beside_a_dht_flood("dht-nodes-flood", "nodes");
    let answers = flood.matches("GET_PEERS").count();
    let wasted = flood.matches("FAKE_QUERIED").count();
    eprintln!(
        "[dht-nodes-flood] the hostile node answered {answers} get_peers; \
         {wasted} queries went to its made-up nodes"
    );
    assert!(answers > 0, "the hostile node was never asked");
    assert!(
        wasted > 0,
        "no query reached the made-up nodes (the test proves nothing)"
    );
}

/// Starts `dht_flood.py` in `mode` beside a real `btc dht` node where an
/// honest (upload-capped) seeder announced, then a leecher given only the
/// bare hash and both nodes: the download must complete byte-identical.
/// Returns what the hostile node printed and the leecher's `-v` log.
fn leech_beside_a_dht_flood(name: &str, mode: &str) -> (String, String) {
    let ctx = Ctx::new(name, secs(150));
    let (dir, file, hash) = torrent(&ctx, "dflood.bin", 4 * MIB, 37);
    let (_node, _seeder, d) = dht_node_and_seeder(&ctx, &dir, &file, &["--upload-limit", SLOW]);
    let boot = format!("127.0.0.1:{d}");
    let h = free_port();
    let dead = free_port();
    let mut c = std::process::Command::new(PYTHON);
    c.arg("-u").arg(py_script("dht_flood.py")).args([
        h.to_string(),
        dead.to_string(),
        "150".into(),
        mode.into(),
    ]);
    let mut flood = ctx.spawn("dht-flood", c);
    flood.wait_output("LISTENING", secs(10));
    // The seeder's announce reaches the real node first.
    std::thread::sleep(std::time::Duration::from_secs(3));

    let out = ctx.mkdir("out");
    let hostile = format!("127.0.0.1:{h}");
    let started = Instant::now();
    let log = leech(
        &ctx,
        "leecher",
        &[
            &hash.to_hex(),
            "-o",
            s(&out),
            "--dht-bootstrap",
            &hostile,
            "--dht-bootstrap",
            &boot,
            "--state-dir",
            s(&ctx.mkdir("state-leecher")),
            "--no-seed",
            "--no-utp",
            "--bind",
            "127.0.0.3",
            "--port",
            "0",
            "-v",
        ],
        secs(120),
    )
    .1;
    eprintln!("[{name}] done in {:?}", started.elapsed());
    assert_same_file(&dir.join("dflood.bin"), &out.join("dflood.bin"));
    (flood.stdout(), log)
}
