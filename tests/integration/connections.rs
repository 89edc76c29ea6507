//! How btc handles its connections to peers, checked against the real
//! binary with scripted fake peers ([`crate::fake_peer`]): an interested
//! peer gets an empty upload slot at once, a peer that dialled us is not
//! dialled back at its listen address, and a dial still under way does not
//! hold up the exit.
//!
//! Roles get their own loopback address: 127.0.0.1 the btc seeder, .2, .4
//! and .5 fake peers, .6 a peer that never answers, .3 the btc leecher.

use crate::fake_peer::*;
use crate::util::*;
use btc::id::InfoHash;
use btc::metainfo::Metainfo;
use btc::peer::extension::ExtendedHandshake;
use btc::peer::message::Message;
use btc::peer::pex::PexMessage;
use std::fs;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// A 4 MiB single-file torrent under `seed/`, and its info-hash.
fn small_torrent(ctx: &Ctx, name: &str) -> (PathBuf, PathBuf, InfoHash) {
    let seed_dir = ctx.mkdir("seed");
    write_random_file(&seed_dir.join(name), 4 * MIB, 7);
    let file = ctx.join(format!("{name}.torrent"));
    btc_create(ctx, &seed_dir.join(name), &file, &[]);
    let meta = Metainfo::from_bytes(&fs::read(&file).unwrap()).expect("btc's own torrent");
    (seed_dir, file, meta.info_hash)
}

/// A btc seeding the torrent on 127.0.0.1:`port`.
fn seeder(ctx: &Ctx, dir: &Path, torrent: &Path, port: u16) -> Proc {
    start_btc_seeder(
        ctx,
        "seeder",
        dir,
        s(torrent),
        port,
        &["--no-dht", "--bind", "127.0.0.1", "-vv"],
    )
}

fn at(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Regression: a peer that turned interested just after an unchoke round
/// waited for the next round (one second later at the soonest) although
/// upload slots stood empty. Once a duplicate connection replaced a working
/// one, this held a whole download still for most of a second. Now an
/// interested peer is unchoked at once while a regular slot is free.
#[test]
fn regression_an_interested_peer_gets_an_empty_slot_at_once() {
    let ctx = Ctx::new("free-slot", secs(60));
    let (dir, torrent, hash) = small_torrent(&ctx, "slot.bin");
    let port = free_port();
    let _seeder = seeder(&ctx, &dir, &torrent, port);
    let btc = at(lo(1), port);

    // A's interest starts a round, which unchokes it.
    let mut a = FakePeer::connect_from(lo(2), btc, hash, peer_id(b"-FK0001-a")).unwrap();
    a.send(&Message::Interested).unwrap();
    let unchoked = a.recv_until(secs(10), |m| matches!(m, Message::Unchoke));
    assert!(
        unchoked.is_some(),
        "the first interested peer was never unchoked"
    );

    // B is interested right after that round; three of four slots are empty.
    let mut b = FakePeer::connect_from(lo(4), btc, hash, peer_id(b"-FK0001-b")).unwrap();
    let asked = Instant::now();
    b.send(&Message::Interested).unwrap();
    let unchoked = b.recv_until(secs(10), |m| matches!(m, Message::Unchoke));
    let waited = asked.elapsed();
    assert!(
        unchoked.is_some(),
        "the second interested peer was never unchoked"
    );
    eprintln!("[free-slot] B unchoked {waited:?} after saying it is interested");
    // The next round is a second after A's; at once means well before it.
    assert!(
        waited < Duration::from_millis(500),
        "B waited {waited:?} for an empty slot (the next round's time)"
    );
}

/// Regression: a peer that dialled a seeding btc, and told its listen port
/// in its extended handshake, was dialled back at that address when PEX
/// (or a tracker, or LSD) named it, opening a duplicate of a working
/// connection. A stranger named in the same PEX message is dialled, so the
/// test knows PEX dialling is at work.
#[test]
fn regression_a_connected_peer_is_not_dialled_at_its_listen_address() {
    let ctx = Ctx::new("no-dial-back", secs(60));
    let (dir, torrent, hash) = small_torrent(&ctx, "back.bin");
    let port = free_port();
    let _seeder = seeder(&ctx, &dir, &torrent, port);
    let btc = at(lo(1), port);

    // A: connected from 127.0.0.2, listening on 127.0.0.2:X.
    let a_listener = listen_on(lo(2));
    let a_listen = a_listener.local_addr().unwrap();
    let mut a = FakePeer::connect_from(lo(2), btc, hash, peer_id(b"-FK0001-a")).unwrap();
    a.send_ext_handshake(&ExtendedHandshake {
        listen_port: Some(a_listen.port()),
        ..ext_handshake(None)
    })
    .unwrap();
    // A stranger on 127.0.0.5 that nobody is connected to.
    let stranger = listen_on(lo(5));
    let stranger_addr = stranger.local_addr().unwrap();
    // Let btc take in A's handshake before it hears of A again.
    std::thread::sleep(Duration::from_millis(300));

    // B names both through PEX.
    let mut b = FakePeer::connect_from(lo(4), btc, hash, peer_id(b"-FK0001-b")).unwrap();
    b.send_ext_handshake(&ExtendedHandshake {
        ut_pex: Some(1),
        ..ext_handshake(None)
    })
    .unwrap();
    let _ = b.recv_until(secs(10), |m| matches!(m, Message::Extended { id: 0, .. }));
    let pex_id = b
        .their_ext
        .as_ref()
        .and_then(|e| e.ut_pex)
        .expect("btc offers ut_pex on a public torrent");
    let pex = PexMessage {
        added: vec![(a_listen, 0), (stranger_addr, 0)],
        dropped: vec![],
    };
    b.send_extended(pex_id, &pex.encode()).unwrap();

    assert!(
        accept_timeout(&stranger, secs(10)).is_ok(),
        "btc never dialled the stranger named by PEX, so PEX dialling was not exercised"
    );
    // Both addresses came in one message: they are dialled in the same
    // round, so two more seconds settle it.
    assert!(
        accept_timeout(&a_listener, secs(2)).is_err(),
        "btc dialled {a_listen}, the listen address of a peer connected to it"
    );
    // A is still connected and served.
    a.send(&Message::Interested).unwrap();
    assert!(
        a.recv_until(secs(10), |m| matches!(m, Message::Unchoke))
            .is_some(),
        "A's connection was lost"
    );
}

/// Regression: a dial still under way when a `--no-seed` download
/// completed held up the exit by a second (the shutdown's wait for peer
/// tasks), typically a uTP attempt at a peer that refused TCP. The peer at
/// 127.0.0.6 refuses TCP and never answers on its UDP port, so btc's uTP
/// dial is still waiting when the download from the seeder completes.
#[test]
fn regression_a_dial_under_way_does_not_delay_the_exit() {
    let ctx = Ctx::new("dial-exit", secs(60));
    let (dir, torrent, _) = small_torrent(&ctx, "exit.bin");
    let port = free_port();
    let _seeder = seeder(&ctx, &dir, &torrent, port);
    let silent = UdpSocket::bind(at(lo(6), 0)).unwrap();
    silent.set_read_timeout(Some(secs(10))).unwrap();
    let silent_addr = silent.local_addr().unwrap();

    let out = ctx.mkdir("out");
    let (seeder_arg, silent_arg) = (at(lo(1), port).to_string(), silent_addr.to_string());
    let args = [
        s(&torrent),
        "-o",
        s(&out),
        "--peer",
        &seeder_arg,
        "--peer",
        &silent_arg,
        "--no-seed",
        "--no-dht",
        "--bind",
        "127.0.0.3",
        "--port",
        "0",
        "--json",
        "-vv",
    ];
    let (stdout, stderr, _) = leech(&ctx, "leecher", &args, secs(30));
    assert_same_file(&dir.join("exit.bin"), &out.join("exit.bin"));

    // The uTP dial reached the silent peer and never failed: it was still
    // under way when the run ended.
    let mut buf = [0u8; 2048];
    assert!(
        silent.recv_from(&mut buf).is_ok(),
        "btc never tried uTP at {silent_addr}, so no dial was under way:\n{stderr}"
    );
    assert!(
        !stderr.contains(&format!("dialing {silent_addr}:")),
        "the dial of {silent_addr} ended before the download did, so it could not delay the exit:\n{stderr}"
    );

    let ts = |event: &str| -> f64 {
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == event)
            .and_then(|v| v["ts"].as_f64())
            .unwrap_or_else(|| panic!("no {event} event in:\n{stdout}"))
    };
    let lag = ts("stopped") - ts("complete");
    eprintln!("[dial-exit] stopped {lag:.3} s after complete");
    // The bug cost a full second; flushing 4 MiB and saving resume data
    // take milliseconds.
    assert!(
        lag < 0.6,
        "btc stopped {lag:.3} s after completing: something held up the exit"
    );
}
