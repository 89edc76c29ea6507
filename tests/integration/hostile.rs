//! Hostile peers against the real `btc` binary (issue 8): one test per
//! attack. Each runs btc as seeder and/or leecher on loopback, points a
//! scripted fake peer ([`crate::fake_peer`]) at it and asserts that
//! (a) an honest peer's transfer still completes with identical bytes,
//! (b) btc never panics, (c) the bad peer is dropped or banned where that
//! applies and (d) memory and CPU stay bounded under floods.
//!
//! Roles get their own loopback address, so per-IP rules can tell them
//! apart: 127.0.0.1 honest btc seeder, 127.0.0.2 (and .4, .5) fake peers,
//! 127.0.0.3 honest btc leecher.

use crate::fake_peer::*;
use crate::util::*;
use btc::geometry::Geometry;
use btc::id::InfoHash;
use btc::metainfo::Metainfo;
use btc::peer::extension::ExtendedHandshake;
use btc::peer::message::{BLOCK_LEN, BlockRef, Message};
use btc::peer::metadata::MetadataMessage;
use bytes::Bytes;
use std::fs;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// Peak RSS (VmHWM) a btc under a memory attack may reach: room to spare
/// over a quiet btc (~10-20 MiB), far below what the floods cost unchecked.
const RSS_BOUND_KIB: u64 = 100 * 1024;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------
// Torrents, processes and measurements

/// A payload written under `seed/` and its `.torrent`, parsed by btc's own
/// metainfo code (for the hash, geometry and info dict size).
struct Torrent {
    seed_dir: PathBuf,
    root: PathBuf,
    file: PathBuf,
    meta: Metainfo,
}

impl Torrent {
    fn make(ctx: &Ctx, payload: &Payload, seed: u64, piece_len: u64) -> Torrent {
        Torrent::make_as(ctx, payload, seed, piece_len, "v1")
    }

    /// [`Torrent::make`] in `format` (`btc create --format`).
    fn make_as(ctx: &Ctx, payload: &Payload, seed: u64, piece_len: u64, format: &str) -> Torrent {
        let seed_dir = ctx.mkdir("seed");
        let root = payload.write(&seed_dir, seed);
        let file = ctx.join(format!("{}.torrent", payload.name));
        let pl = piece_len.to_string();
        btc_create(
            ctx,
            &root,
            &file,
            &["--piece-length", &pl, "--format", format],
        );
        let meta = Metainfo::from_bytes(&fs::read(&file).unwrap()).expect("btc's own torrent");
        Torrent {
            seed_dir,
            root,
            file,
            meta,
        }
    }

    fn hash(&self) -> InfoHash {
        self.meta.info_hash
    }

    fn hex(&self) -> String {
        self.meta.info_hash.to_hex()
    }

    fn geometry(&self) -> Geometry {
        Geometry::new(self.meta.info.total_length, self.meta.info.piece_length)
    }

    fn pieces(&self) -> u32 {
        self.geometry().piece_count
    }

    /// Every block of the torrent, in order.
    fn blocks(&self) -> Vec<BlockRef> {
        let g = self.geometry();
        let mut v = Vec::new();
        for p in 0..g.piece_count {
            for b in 0..g.block_count(p) {
                v.push(BlockRef {
                    piece: p,
                    offset: b * BLOCK_LEN,
                    len: g.block_len(p, b),
                });
            }
        }
        v
    }

    /// A BITFIELD with every piece (spare bits clear).
    fn full_bitfield(&self) -> Bytes {
        let n = self.pieces() as usize;
        let mut b = vec![0xffu8; n.div_ceil(8)];
        if !n.is_multiple_of(8) {
            *b.last_mut().unwrap() = 0xff << (8 - n % 8);
        }
        Bytes::from(b)
    }

    /// The content of a single-file torrent.
    fn content(&self) -> Arc<Vec<u8>> {
        Arc::new(fs::read(&self.root).expect("single-file content"))
    }

    /// The bytes of block `r`, from `content`.
    fn block_of(&self, content: &[u8], r: &BlockRef) -> Option<Bytes> {
        let g = self.geometry();
        if !g.contains(r.piece, r.offset, r.len) {
            return None;
        }
        let start = (g.piece_offset(r.piece) + r.offset as u64) as usize;
        Some(Bytes::copy_from_slice(
            &content[start..start + r.len as usize],
        ))
    }
}

/// Panics if a btc's output shows a panic or a backtrace.
fn assert_no_panic(who: &str, output: &str) {
    // btc's panic hook turns a task's panic into one "internal error" line.
    assert!(
        !output.contains("panicked")
            && !output.contains("stack backtrace")
            && !output.contains("internal error"),
        "{who} panicked:\n{output}"
    );
}

/// The honest btc seeder of `t` on 127.0.0.1:`port`.
fn honest_seeder(ctx: &Ctx, t: &Torrent, port: u16, extra: &[&str]) -> Proc {
    let mut args = vec!["--no-dht", "--bind", "127.0.0.1", "-v"];
    args.extend_from_slice(extra);
    start_btc_seeder(ctx, "seeder", &t.seed_dir, s(&t.file), port, &args)
}

/// Like [`honest_seeder`], but with the open-file limit btc gets on a
/// typical desktop (soft 1024), whatever the test runner has.
fn honest_seeder_nofile(ctx: &Ctx, t: &Torrent, port: u16, nofile: u64) -> Proc {
    use std::os::unix::process::CommandExt;
    let p = port.to_string();
    let mut c = ctx.btc(&[
        "-o",
        s(&t.seed_dir),
        s(&t.file),
        "--port",
        &p,
        "--no-dht",
        "--bind",
        "127.0.0.1",
    ]);
    // SAFETY: only getrlimit/setrlimit (async-signal-safe syscalls) run
    // between fork and exec.
    unsafe {
        c.pre_exec(move || {
            set_soft_nofile(nofile);
            Ok(())
        });
    }
    let mut proc = ctx.spawn("seeder", c);
    proc.wait_output("seeding ", secs(60));
    let limits = fs::read_to_string(format!("/proc/{}/limits", proc.pid())).unwrap();
    let soft: Option<u64> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok());
    assert!(
        soft.is_some_and(|n| n <= nofile),
        "the seeder's open-file limit was not set:\n{limits}"
    );
    proc
}

#[repr(C)]
struct RLimit {
    cur: u64,
    max: u64,
}

unsafe extern "C" {
    fn getrlimit(resource: i32, rlim: *mut RLimit) -> i32;
    fn setrlimit(resource: i32, rlim: *const RLimit) -> i32;
}

const RLIMIT_NOFILE: i32 = 7;

fn set_soft_nofile(n: u64) {
    let mut l = RLimit { cur: 0, max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut l) == 0 {
            l.cur = n.min(l.max);
            setrlimit(RLIMIT_NOFILE, &l);
        }
    }
}

/// Downloads `t` with a btc leecher bound to `bind` from `peers` (in that
/// order), within `timeout`; asserts identical bytes and no panic. Returns
/// stderr and the time taken.
fn honest_leech(
    ctx: &Ctx,
    name: &str,
    t: &Torrent,
    peers: &[SocketAddr],
    bind: IpAddr,
    timeout: Duration,
) -> (String, Duration) {
    let out = ctx.join(format!("out-{name}"));
    let peer_args: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
    let bind = bind.to_string();
    let mut args = vec!["-o", s(&out), s(&t.file)];
    for p in &peer_args {
        args.extend(["--peer", p.as_str()]);
    }
    args.extend([
        "--no-seed",
        "--no-dht",
        "--port",
        "0",
        "--bind",
        bind.as_str(),
        "-v",
    ]);
    let (_, stderr, el) = leech(ctx, name, &args, timeout);
    assert_no_panic(name, &stderr);
    assert_same_tree(&t.root, &out.join(&t.meta.info.name));
    (stderr, el)
}

/// Peak resident set size of a live process, in KiB (`VmHWM`).
fn vm_hwm_kib(pid: u32) -> u64 {
    let st = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    st.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// CPU seconds (user + system) a live process has used.
fn cpu_secs(pid: u32) -> f64 {
    unsafe extern "C" {
        fn sysconf(name: i32) -> i64;
    }
    const SC_CLK_TCK: i32 = 2;
    let st = fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &st[st.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { sysconf(SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}

fn addr(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Joins a fake peer's thread, re-raising its panic.
fn join<T>(h: JoinHandle<T>, who: &str) -> T {
    h.join()
        .unwrap_or_else(|e| std::panic::resume_unwind(Box::new(format!("{who}: {e:?}"))))
}

// ---------------------------------------------------------------------------
// Fake seeders (btc dials them)

#[derive(Debug, Default)]
struct SeedStats {
    requests: usize,
    /// Most requests btc had outstanding at us at once.
    max_outstanding: usize,
    served: usize,
    closed: bool,
}

/// How a fake seeder answers requests.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// The right bytes.
    Honest,
    /// Bytes of the right length, all wrong.
    Junk,
}

/// A fake seeder: accepts btc's dial on `listener`, announces `reqq` and
/// every piece, unchokes, and answers requests (after gathering what
/// arrives within a few ms, so `max_outstanding` sees btc's pipeline). Sets
/// `asked` (if given) on btc's first request. Runs until btc closes, `stop`
/// is set or 60 s pass.
fn fake_seeder(
    listener: TcpListener,
    t: Arc<Torrent>,
    content: Arc<Vec<u8>>,
    reqq: Option<u32>,
    answer: Answer,
    asked: Option<Arc<AtomicBool>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<SeedStats> {
    thread::spawn(move || {
        let mut st = SeedStats::default();
        // Each fake its own peer id (a shared one would be a clash).
        let port = listener.local_addr().unwrap().port();
        let id = peer_id(format!("-FK0001-seed{port}").as_bytes());
        let Ok(mut p) = FakePeer::accept(&listener, t.hash(), id, secs(10)) else {
            return st;
        };
        let hs = ExtendedHandshake {
            reqq,
            ..ext_handshake(None)
        };
        let _ = p.send_ext_handshake(&hs);
        let _ = p.send(&Message::Bitfield(t.full_bitfield()));
        let _ = p.send(&Message::Unchoke);
        let mut queue: Vec<BlockRef> = Vec::new();
        let mut oldest = Instant::now();
        let end = Instant::now() + secs(60);
        while !stop.load(Ordering::SeqCst) && Instant::now() < end {
            let r = p.recv(ms(5));
            let quiet = matches!(r, Recv::Timeout);
            match r {
                Recv::Msg(Message::Request(r)) => {
                    if queue.is_empty() {
                        oldest = Instant::now();
                    }
                    st.requests += 1;
                    if let Some(a) = &asked {
                        a.store(true, Ordering::SeqCst);
                    }
                    queue.push(r);
                    st.max_outstanding = st.max_outstanding.max(queue.len());
                }
                Recv::Msg(Message::Cancel(r)) => queue.retain(|x| *x != r),
                Recv::Msg(_) => {}
                Recv::Closed => {
                    st.closed = true;
                    break;
                }
                Recv::Timeout => {}
            }
            // A liar answers at once, to win as many blocks as it can.
            let due = quiet || answer == Answer::Junk || oldest.elapsed() > ms(50);
            if due && !queue.is_empty() {
                for r in queue.drain(..) {
                    let Some(mut data) = t.block_of(&content, &r) else {
                        continue;
                    };
                    if answer == Answer::Junk {
                        data = Bytes::from(vec![0xa5; data.len()]);
                    }
                    let _ = p.send(&Message::Piece {
                        piece: r.piece,
                        offset: r.offset,
                        data,
                    });
                    st.served += 1;
                }
            }
        }
        st
    })
}

// ---------------------------------------------------------------------------
// The attacks

/// Models a peer whose extension handshake says `reqq` 1 (and another
/// saying 0): it then unchokes btc and has every piece. btc (leecher) must
/// not panic on the odd queue depth, must keep at most one request in
/// flight at the reqq-1 peer, and completes with an honest seeder around.
#[test]
fn hostile_reqq_one_does_not_panic() {
    let ctx = Ctx::new("hostile-reqq", secs(120));
    let t = Arc::new(Torrent::make(
        &ctx,
        &Payload::single("reqq.bin", 4 * MIB + 1234),
        8001,
        64 * KIB,
    ));
    let content = t.content();
    let sp = free_port();
    let _seeder = honest_seeder(&ctx, &t, sp, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    // The honest seeder is reached through a relay that opens once btc has
    // asked the reqq-1 peer for a block (or after 5 s): the odd queue
    // depths are in use before the honest seeder can finish the job.
    let asked = Arc::new(AtomicBool::new(false));
    let mut fakes = Vec::new();
    for (ip, reqq) in [(lo(2), 1), (lo(4), 0)] {
        let l = listen_on(ip);
        let a = l.local_addr().unwrap();
        let gate = (reqq == 1).then(|| asked.clone());
        fakes.push((
            reqq,
            a,
            fake_seeder(
                l,
                t.clone(),
                content.clone(),
                Some(reqq),
                Answer::Honest,
                gate,
                stop.clone(),
            ),
        ));
    }
    let rl = listen_on(lo(5));
    let relay_addr = rl.local_addr().unwrap();
    let relay = gated_relay(rl, addr(lo(1), sp), asked, secs(5), stop.clone());
    let peers = [fakes[0].1, fakes[1].1, relay_addr];
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        honest_leech(&ctx, "leecher", &t, &peers, lo(3), secs(30))
    }));
    stop.store(true, Ordering::SeqCst);
    let _ = relay.join();
    let mut stats = Vec::new();
    for (reqq, a, h) in fakes {
        let st = join(h, "fake seeder");
        eprintln!("[hostile-reqq] fake with reqq {reqq} at {a}: {st:?}");
        stats.push((reqq, st));
    }
    let (_, el) = r.unwrap_or_else(|e| std::panic::resume_unwind(e));
    eprintln!("[hostile-reqq] download completed in {el:?}");
    for (reqq, st) in stats {
        if reqq == 1 {
            assert!(
                st.requests > 0,
                "btc never asked the reqq-1 peer for a block, so the reqq path was not exercised"
            );
            assert!(
                st.max_outstanding <= 1,
                "btc kept {} requests outstanding at a peer that queues 1",
                st.max_outstanding
            );
        }
    }
}

/// Models a peer that, after a proper extension handshake, sends ~620 KB
/// of ut_metadata requests (about 20,000, each asking for a 16 KiB piece)
/// to a seeding btc and never reads: the answers must not pile up in
/// btc's memory, and an honest leecher is served meanwhile.
#[test]
fn hostile_metadata_request_flood_is_bounded() {
    let ctx = Ctx::new("hostile-metadata-flood", secs(120));
    // 1024 pieces: a ~20 KiB info dict, so metadata piece 0 is a full 16 KiB.
    let t = Torrent::make(
        &ctx,
        &Payload::single("metaflood.bin", 16 * MIB),
        8002,
        16 * KIB,
    );
    assert!(t.meta.info_bytes.len() > 16 * 1024);
    let sp = free_port();
    let seeder = honest_seeder(&ctx, &t, sp, &[]);
    let pid = seeder.pid();
    let before = vm_hwm_kib(pid);

    let opts = SockOpts::from(lo(2)).small_rcvbuf();
    let mut p = FakePeer::connect_with(&opts, addr(lo(1), sp), t.hash(), peer_id(b"-FK0002-meta"))
        .expect("the flooder's handshake");
    p.send_ext_handshake(&ext_handshake(Some(3))).unwrap();
    p.never_read();
    p.set_write_timeout(secs(10));
    let req = MetadataMessage::Request { piece: 0 }.encode();
    let one = Message::Extended {
        id: 1, // btc's LOCAL_UT_METADATA
        payload: Bytes::from(req),
    };
    let n = 620_000 / one.encoded_len();
    let flood: Vec<Message> = vec![one; n];
    let sent = p.send_all(&flood);
    eprintln!("[hostile-metadata-flood] {n} requests sent: {sent:?}");

    let (_, el) = honest_leech(&ctx, "leecher", &t, &[addr(lo(1), sp)], lo(3), secs(30));
    thread::sleep(secs(1));
    let peak = vm_hwm_kib(pid);
    eprintln!(
        "[hostile-metadata-flood] honest leecher done in {el:?}; seeder VmHWM {before} KiB before, {peak} KiB after"
    );
    assert_no_panic("seeder", &seeder.output());
    assert!(
        peak < RSS_BOUND_KIB,
        "seeding btc reached {} MiB peak RSS under a ut_metadata request flood (bound {} MiB)",
        peak / 1024,
        RSS_BOUND_KIB / 1024
    );
    drop(p);
}

/// Models 8 slow readers (more than btc's upload slots) that are unchoked
/// (they say INTERESTED) and then flood REQUESTs for every valid block
/// while never reading: the blocks btc reads for them must not pile up in
/// its memory, and they must not keep an honest leecher from being served
/// (within 30 s).
#[test]
fn hostile_request_flood_slow_reader_is_bounded() {
    let ctx = Ctx::new("hostile-request-flood", secs(120));
    let t = Arc::new(Torrent::make(
        &ctx,
        &Payload::single("reqflood.bin", 16 * MIB),
        8003,
        256 * KIB,
    ));
    let sp = free_port();
    let seeder = honest_seeder(&ctx, &t, sp, &[]);
    let pid = seeder.pid();
    let target = addr(lo(1), sp);
    // 8 slow readers over four addresses (127.0.0.10-13): more than the
    // upload slots, so they compete with the honest leecher for them.
    const FLOODERS: usize = 8;
    let unchoked = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..FLOODERS {
        let (t, unchoked) = (t.clone(), unchoked.clone());
        handles.push(thread::spawn(move || {
            let opts = SockOpts::from(lo(10 + (i % 4) as u8)).small_rcvbuf();
            let tag = format!("-FK0003-slow{i:02}");
            // btc may refuse some (per-address limits): that is fine.
            let mut p =
                FakePeer::connect_with(&opts, target, t.hash(), peer_id(tag.as_bytes())).ok()?;
            p.send(&Message::Interested).ok()?;
            if p.recv_until(secs(5), |m| matches!(m, Message::Unchoke))
                .is_some()
            {
                unchoked.fetch_add(1, Ordering::SeqCst);
            }
            p.never_read();
            p.set_write_timeout(secs(5));
            let blocks = t.blocks();
            let reqs: Vec<Message> = (0..20)
                .flat_map(|_| blocks.iter().map(|r| Message::Request(*r)))
                .collect();
            let _ = p.send_all(&reqs);
            Some(p)
        }));
    }
    let flooders: Vec<FakePeer> = handles
        .into_iter()
        .filter_map(|h| join(h, "slow reader"))
        .collect();
    let n_unchoked = unchoked.load(Ordering::SeqCst);
    eprintln!(
        "[hostile-request-flood] {} of {FLOODERS} slow readers connected, {n_unchoked} unchoked",
        flooders.len()
    );
    assert!(
        n_unchoked > 0,
        "no slow reader was unchoked: the attack did not happen"
    );
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        honest_leech(&ctx, "leecher", &t, &[target], lo(3), secs(30))
    }));
    thread::sleep(secs(1));
    let peak = vm_hwm_kib(pid);
    eprintln!(
        "[hostile-request-flood] seeder VmHWM {peak} KiB; honest leecher: {:?}",
        r.as_ref().map(|x| x.1)
    );
    assert_no_panic("seeder", &seeder.output());
    assert!(
        peak < RSS_BOUND_KIB,
        "seeding btc reached {} MiB peak RSS under slow-reader request floods (bound {} MiB)",
        peak / 1024,
        RSS_BOUND_KIB / 1024
    );
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
    drop(flooders);
}

/// Keeps `n` connections from `from` to `target` open until `stop`:
/// handshaken (then idle: nothing sent, whatever btc sends is drained) or
/// silent (TCP only, never a byte). Closed ones are reopened every 200 ms.
/// Returns (connection attempts, most open at once, handshakes answered).
fn hold_connections(
    target: SocketAddr,
    from: IpAddr,
    n: usize,
    handshake: Option<InfoHash>,
    stop: Arc<AtomicBool>,
    open_now: Arc<AtomicUsize>,
) -> JoinHandle<(usize, usize, usize)> {
    thread::spawn(move || {
        enum Conn {
            Idle(Box<FakePeer>),
            Silent(TcpStream),
        }
        fn alive(c: &mut Conn) -> bool {
            match c {
                Conn::Idle(p) => !p.is_closed_by_remote(ms(1)),
                Conn::Silent(s) => {
                    let _ = s.set_nonblocking(true);
                    let mut b = [0u8; 4096];
                    loop {
                        match s.read(&mut b) {
                            Ok(0) => return false,
                            Ok(_) => {}
                            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                            Err(_) => return false,
                        }
                    }
                }
            }
        }
        let mut opts = SockOpts::from(from);
        opts.connect_timeout = secs(2);
        opts.io_timeout = secs(2);
        let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
        let (mut attempts, mut max_open, mut answered) = (0, 0, 0);
        let end = Instant::now() + secs(90);
        let mut i = 0u32;
        while !stop.load(Ordering::SeqCst) && Instant::now() < end {
            for slot in conns.iter_mut() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Some(c) = slot
                    && !alive(c)
                {
                    *slot = None;
                }
                if slot.is_none() {
                    attempts += 1;
                    i += 1;
                    *slot = match handshake {
                        Some(ih) => {
                            let tag = format!("-FK0004-idle{i:07}");
                            FakePeer::connect_with(&opts, target, ih, peer_id(tag.as_bytes()))
                                .ok()
                                .map(|p| {
                                    answered += 1;
                                    Conn::Idle(Box::new(p))
                                })
                        }
                        None => tcp_connect(&opts, target).ok().map(Conn::Silent),
                    };
                }
            }
            let open = conns.iter().filter(|c| c.is_some()).count();
            open_now.store(open, Ordering::SeqCst);
            max_open = max_open.max(open);
            thread::sleep(ms(200));
        }
        (attempts, max_open, answered)
    })
}

/// Models a connection-slot exhaustion: 200 connections from one address
/// (127.0.0.2) that complete the handshake and then idle, then 1,000 from
/// another (127.0.0.4) that never even send a handshake, all reopened as
/// soon as btc closes them. A seeding btc with a desktop's open-file limit
/// (1024) must still serve an honest leecher from 127.0.0.3 promptly.
#[test]
fn hostile_idle_connections_do_not_hold_slots() {
    let ctx = Ctx::new("hostile-idle", secs(150));
    let t = Torrent::make(
        &ctx,
        &Payload::single("idle.bin", 4 * MIB + 77),
        8004,
        64 * KIB,
    );
    let sp = free_port();
    let seeder = honest_seeder_nofile(&ctx, &t, sp, 1024);
    let target = addr(lo(1), sp);
    let mut failures = Vec::new();
    for (phase, from, n, hs) in [
        ("handshaken idlers", lo(2), 200, Some(t.hash())),
        ("silent connections", lo(4), 1000, None),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let h = hold_connections(target, from, n, hs, stop.clone(), open.clone());
        // Let the first sweep open all of them.
        wait_for(secs(10), || {
            open.load(Ordering::SeqCst) > 0 || h.is_finished()
        });
        thread::sleep(secs(1));
        let before = open.load(Ordering::SeqCst);
        let fds = fs::read_dir(format!("/proc/{}/fd", seeder.pid())).map_or(0, |d| d.count());
        let start = Instant::now();
        let name = if hs.is_some() {
            "leecher-idle"
        } else {
            "leecher-silent"
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            honest_leech(&ctx, name, &t, &[target], lo(3), secs(20))
        }));
        let el = start.elapsed();
        stop.store(true, Ordering::SeqCst);
        let (attempts, max_open, answered) = join(h, "connection holder");
        eprintln!(
            "[hostile-idle] {phase}: {attempts} attempts, {before} open when the leecher started \
             (seeder had {fds} fds open), at most {max_open} open, {answered} handshakes answered; \
             leecher took {el:?}"
        );
        if let Err(e) = r {
            failures.push(format!(
                "{phase} from {from}: the honest leecher was not served within 20 s: {}",
                panic_text(&e)
            ));
        }
        assert!(
            attempts >= n,
            "{phase}: only {attempts} connection attempts"
        );
        if hs.is_none() {
            assert!(
                max_open >= n * 9 / 10,
                "{phase}: only {max_open} of {n} silent connections were open at once"
            );
        }
        seeder_alive(&seeder);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The message of a caught panic.
fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn seeder_alive(seeder: &Proc) {
    let st = fs::read_to_string(format!("/proc/{}/stat", seeder.pid())).unwrap_or_default();
    assert!(
        !st.is_empty() && !st.contains(") Z "),
        "the seeder died:\n{}",
        seeder.tails()
    );
    assert_no_panic("seeder", &seeder.output());
}

/// Forwards connections accepted on `listener` to `target`, each only once
/// `gate` is set (or `max_wait` passed): the honest seeder reaches the
/// leecher strictly after the fake peer has done its damage.
fn gated_relay(
    listener: TcpListener,
    target: SocketAddr,
    gate: Arc<AtomicBool>,
    max_wait: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let _ = listener.set_nonblocking(true);
        while !stop.load(Ordering::SeqCst) {
            let Ok((a, _)) = listener.accept() else {
                thread::sleep(ms(10));
                continue;
            };
            let (gate, stop) = (gate.clone(), stop.clone());
            thread::spawn(move || {
                let end = Instant::now() + max_wait;
                while !gate.load(Ordering::SeqCst) && Instant::now() < end {
                    thread::sleep(ms(10));
                }
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let _ = a.set_nonblocking(false);
                let Ok(b) = TcpStream::connect(target) else {
                    return;
                };
                let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
                let (mut a, mut b) = (a, b);
                let t = thread::spawn(move || {
                    let _ = std::io::copy(&mut a2, &mut b2);
                    let _ = b2.shutdown(std::net::Shutdown::Both);
                });
                let _ = std::io::copy(&mut b, &mut a);
                let _ = a.shutdown(std::net::Shutdown::Both);
                let _ = t.join();
            });
        }
    })
}

/// What a junk metadata peer did.
#[derive(Debug, Default)]
struct JunkStats {
    connections: usize,
    requests: usize,
    junk_sent: usize,
}

/// How a junk metadata peer answers ut_metadata requests.
#[derive(Clone, Copy, Debug)]
enum MetaAnswer {
    /// Junk of the right length, each after `delay`.
    Junk(Duration),
    /// Never.
    Silent,
}

/// A fake peer for magnets: accepts btc's dials on `listener` (again and
/// again), announces ut_metadata with `metadata_size` `size`, and answers
/// metadata requests as `answer` says. Sets `gate` on its first request.
fn junk_metadata_peer(
    listener: TcpListener,
    hash: InfoHash,
    size: u32,
    answer: MetaAnswer,
    gate: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<JunkStats> {
    thread::spawn(move || {
        let mut st = JunkStats::default();
        let end = Instant::now() + secs(60);
        while !stop.load(Ordering::SeqCst) && Instant::now() < end {
            let Ok(mut p) =
                FakePeer::accept(&listener, hash, peer_id(b"-FK0005-junkmeta"), ms(200))
            else {
                continue;
            };
            st.connections += 1;
            let hs = ExtendedHandshake {
                metadata_size: Some(size),
                ..ext_handshake(Some(7))
            };
            let _ = p.send_ext_handshake(&hs);
            let mut due: Vec<(Instant, u32)> = Vec::new();
            let mut last_keepalive = Instant::now();
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                match p.recv(ms(20)) {
                    Recv::Msg(Message::Extended { id: 7, payload }) => {
                        if let Ok(MetadataMessage::Request { piece }) =
                            MetadataMessage::decode(&payload)
                        {
                            st.requests += 1;
                            gate.store(true, Ordering::SeqCst);
                            if let MetaAnswer::Junk(d) = answer {
                                due.push((Instant::now() + d, piece));
                            }
                        }
                    }
                    Recv::Msg(_) | Recv::Timeout => {}
                    Recv::Closed => break,
                }
                // Stay "alive" for btc's idle timer, as a real peer would.
                if last_keepalive.elapsed() > secs(5) {
                    let _ = p.send(&Message::KeepAlive);
                    last_keepalive = Instant::now();
                }
                let now = Instant::now();
                let their = p.their_ext.as_ref().and_then(|e| e.ut_metadata);
                while let Some(i) = due.iter().position(|(t, _)| *t <= now) {
                    let (_, piece) = due.swap_remove(i);
                    let Some(their) = their else { continue };
                    let start = piece as usize * 16384;
                    let len = (size as usize).saturating_sub(start).min(16384);
                    let junk = MetadataMessage::Data {
                        piece,
                        total_size: size,
                        data: Bytes::from(vec![b'x'; len]),
                    };
                    if p.send_extended(their, &junk.encode()).is_ok() {
                        st.junk_sent += 1;
                    }
                }
            }
        }
        st
    })
}

/// Models a magnet download whose first peer advertises the metadata but
/// answers ut_metadata requests with slow junk (with the right
/// `metadata_size`, then with a wrong one), or not at all (wrong size).
/// The honest seeder, listed second and reached through a relay that
/// opens only once btc has asked the fake, must still deliver the
/// metadata and the data within 20 s.
#[test]
fn hostile_junk_metadata_peer_does_not_stall_magnet() {
    let ctx = Ctx::new("hostile-junk-metadata", secs(150));
    // Many files with long names: a ~65 KB info dict, 5 metadata pieces,
    // so junk and honest pieces mix in one assembly.
    let long = "n".repeat(120);
    let names: Vec<String> = (0..400)
        .map(|i| format!("d{}/f{i:04}-{long}.bin", i % 10))
        .collect();
    let files: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 1500)).collect();
    let t = Torrent::make(&ctx, &Payload::multi("junkmeta", &files), 8005, 16 * KIB);
    let real = t.meta.info_bytes.len() as u32;
    assert!(
        real > 4 * 16384,
        "info dict of {real} bytes: want 5 metadata pieces"
    );
    let sp = free_port();
    let _seeder = honest_seeder(&ctx, &t, sp, &[]);

    for (variant, size, answer) in [
        ("right size, slow junk", real, MetaAnswer::Junk(ms(700))),
        (
            "wrong size, slow junk",
            real + 10_000,
            MetaAnswer::Junk(ms(700)),
        ),
        ("wrong size, silent", real + 10_000, MetaAnswer::Silent),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(AtomicBool::new(false));
        let fl = listen_on(lo(2));
        let fake_addr = fl.local_addr().unwrap();
        let fake = junk_metadata_peer(fl, t.hash(), size, answer, gate.clone(), stop.clone());
        let rl = listen_on(lo(5));
        let relay_addr = rl.local_addr().unwrap();
        let relay = gated_relay(rl, addr(lo(1), sp), gate, secs(5), stop.clone());

        let tag: String = variant
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ')
            .collect::<String>()
            .replace(' ', "-");
        let out = ctx.join(format!("out-{tag}"));
        let state = ctx.mkdir(format!("state-{tag}"));
        let (fa, ra) = (fake_addr.to_string(), relay_addr.to_string());
        let hex = t.hex();
        let args = [
            hex.as_str(),
            "--peer",
            &fa,
            "--peer",
            &ra,
            "--no-seed",
            "--no-dht",
            "--port",
            "0",
            "--bind",
            "127.0.0.3",
            "-o",
            s(&out),
            "--state-dir",
            s(&state),
            "-v",
        ];
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            leech(&ctx, &format!("leecher-{tag}"), &args, secs(20))
        }));
        stop.store(true, Ordering::SeqCst);
        let st = join(fake, "junk metadata peer");
        let _ = relay.join();
        eprintln!("[hostile-junk-metadata] {variant}: fake {st:?}");
        let (_, stderr, el) = r.unwrap_or_else(|e| std::panic::resume_unwind(e));
        eprintln!("[hostile-junk-metadata] {variant}: done in {el:?}");
        assert_no_panic("leecher", &stderr);
        assert_same_tree(&t.root, &out.join("junkmeta"));
        assert!(
            st.requests > 0,
            "{variant}: btc never asked the junk peer for metadata: the attack did not happen"
        );
    }
}

/// Models a peer that sends wrong data for the blocks it is asked for (at
/// once, to win many), next to an honest seeder: with 1 MiB pieces (64
/// blocks) most pieces mix its junk with honest blocks and fail their
/// hash. The download completes with correct data, the liar (127.0.0.2)
/// is disconnected and its reconnect refused, and the honest seeder
/// (127.0.0.1) is never banned: no "banned 127.0.0.1" in the `-v` log,
/// and its address can still connect.
#[test]
fn hostile_corrupt_blocks_ban_the_liar_not_the_honest() {
    let ctx = Ctx::new("hostile-liar", secs(120));
    let t = Arc::new(Torrent::make(
        &ctx,
        &Payload::single("liar.bin", 64 * MIB + 4321),
        8006,
        1024 * KIB,
    ));
    let content = t.content();
    let sp = free_port();
    let _seeder = honest_seeder(&ctx, &t, sp, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let l = listen_on(lo(2));
    let liar_addr = l.local_addr().unwrap();
    let liar = fake_seeder(
        l,
        t.clone(),
        content,
        None,
        Answer::Junk,
        None,
        stop.clone(),
    );

    let lp = free_port();
    let lps = lp.to_string();
    let out = ctx.join("out");
    let (la, sa) = (liar_addr.to_string(), addr(lo(1), sp).to_string());
    let mut leecher = leech_beside_liar(&ctx, &t, &out, &la, &sa, &lps);
    let start = Instant::now();
    // Done, or the honest seeder banned (then it can never finish).
    wait_for(secs(30), || {
        let o = leecher.output();
        o.contains("seeding ") || o.contains("banned 127.0.0.1") || !leecher.is_running()
    });
    let so_far = leecher.output();
    if so_far.contains("banned 127.0.0.1") {
        stop.store(true, Ordering::SeqCst);
        panic!(
            "btc banned the honest seeder 127.0.0.1:\n{}",
            leecher.tails()
        );
    }
    leecher.wait_output("seeding ", secs(1));
    eprintln!(
        "[hostile-liar] leecher complete after {:?}",
        start.elapsed()
    );
    assert_same_tree(&t.root, &out.join("liar.bin"));
    // The liar's connection ends (ban, or at the latest once we are done).
    let liar_stats = wait_join(liar, secs(10), &stop);
    eprintln!("[hostile-liar] liar: {liar_stats:?}");
    assert!(
        liar_stats.served > 0,
        "btc never asked the liar for a block"
    );
    assert!(liar_stats.closed, "the liar was never disconnected");
    let refused = handshake_refused(
        lo(2),
        addr(lo(3), lp),
        t.hash(),
        peer_id(b"-FK0006-liar-again"),
        secs(5),
    );
    leecher.assert_running();
    let out_text = leecher.output();
    assert_no_panic("leecher", &out_text);
    let bans: Vec<&str> = out_text.lines().filter(|l| l.contains("banned")).collect();
    eprintln!("[hostile-liar] ban lines: {bans:?}");
    assert!(
        !out_text.contains("banned 127.0.0.1"),
        "btc banned the honest seeder:\n{out_text}"
    );
    assert!(
        refused,
        "btc accepted a new connection from the liar's address 127.0.0.2 after it sent corrupt data"
    );
    // And the honest side still gets in.
    assert!(
        !handshake_refused(
            lo(1),
            addr(lo(3), lp),
            t.hash(),
            peer_id(b"-FK0006-honest-ip"),
            secs(5)
        ),
        "btc refuses the honest seeder's address 127.0.0.1"
    );
}

/// A `-v` btc on 127.0.0.3:`port` downloading `t` into `out` from the
/// liar and the honest seeder (both given with `--peer`), DHT off.
fn leech_beside_liar(
    ctx: &Ctx,
    t: &Torrent,
    out: &Path,
    liar: &str,
    honest: &str,
    port: &str,
) -> Proc {
    ctx.spawn(
        "leecher",
        ctx.btc(&[
            "-o",
            s(out),
            s(&t.file),
            "--peer",
            liar,
            "--peer",
            honest,
            "--no-dht",
            "--port",
            port,
            "--bind",
            "127.0.0.3",
            "-v",
        ]),
    )
}

/// Waits (at most `timeout`) for a fake seeder to end, then stops it.
fn wait_join(h: JoinHandle<SeedStats>, timeout: Duration, stop: &AtomicBool) -> SeedStats {
    wait_for(timeout, || h.is_finished());
    stop.store(true, Ordering::SeqCst);
    join(h, "fake seeder")
}

/// Streams up to `limit` PIECE messages nobody asked for (every block in
/// turn, right bytes from `content` or junk) into `p`, stopping once btc
/// closes the connection. Returns how many were sent and whether btc
/// closed the connection (within 5 s of the last one).
fn stream_unrequested(
    p: &mut FakePeer,
    t: &Torrent,
    content: Option<&[u8]>,
    limit: usize,
) -> (usize, bool) {
    p.set_write_timeout(secs(5));
    let mut sent = 0;
    for r in t.blocks().iter().cycle().take(limit) {
        let data = match content {
            Some(c) => t.block_of(c, r).unwrap(),
            None => Bytes::from(vec![0x5a; r.len as usize]),
        };
        let m = Message::Piece {
            piece: r.piece,
            offset: r.offset,
            data,
        };
        if p.send(&m).is_err() {
            break;
        }
        sent += 1;
        if sent % 50 == 0 && p.peek_closed() {
            break;
        }
    }
    let closed = p.closed_at().is_some() || p.is_closed_by_remote(secs(5));
    (sent, closed)
}

/// Models peers that stream PIECE messages nobody asked for into a
/// downloading btc: one with the right bytes (127.0.0.2), one with junk
/// (127.0.0.4). btc drops them (the data is right at the end) and
/// disconnects each after a number of them (at most 1,000 here), while it
/// keeps running.
#[test]
fn hostile_unrequested_blocks_are_dropped() {
    let ctx = Ctx::new("hostile-unrequested", secs(120));
    let t = Torrent::make(
        &ctx,
        &Payload::single("unreq.bin", 8 * MIB + 99),
        8007,
        256 * KIB,
    );
    let content = t.content();
    let sp = free_port();
    let _seeder = honest_seeder(&ctx, &t, sp, &[]);
    let lp = free_port();
    let (lps, sa) = (lp.to_string(), addr(lo(1), sp).to_string());
    let out = ctx.join("out");
    let mut leecher = ctx.spawn(
        "leecher",
        ctx.btc(&[
            "-o",
            s(&out),
            s(&t.file),
            "--peer",
            &sa,
            "--no-dht",
            "--port",
            &lps,
            "--bind",
            "127.0.0.3",
            "-v",
        ]),
    );
    let target = addr(lo(3), lp);
    assert!(
        ctx.wait_listening(&mut leecher, &target.to_string(), secs(20)),
        "the leecher never listened\n{}",
        leecher.tails()
    );
    const LIMIT: usize = 1000;
    let mut results = Vec::new();
    for (from, what, bytes) in [(2, "right bytes", Some(&content[..])), (4, "junk", None)] {
        // Not seeds (no BITFIELD), so completion alone does not drop them.
        let tag = format!("-FK0007-unrequested{from}");
        let mut p = FakePeer::connect_from(lo(from), target, t.hash(), peer_id(tag.as_bytes()))
            .expect("the fake's handshake");
        let start = Instant::now();
        let (sent, closed) = stream_unrequested(&mut p, &t, bytes, LIMIT);
        eprintln!(
            "[hostile-unrequested] {what}: {sent} unrequested blocks sent in {:?}; closed by btc: {closed}",
            start.elapsed()
        );
        results.push((what, sent, closed));
    }
    leecher.wait_output("seeding ", secs(30));
    assert_same_tree(&t.root, &out.join("unreq.bin"));
    leecher.assert_running();
    assert_no_panic("leecher", &leecher.output());
    for (what, sent, closed) in results {
        assert!(
            closed,
            "btc kept the connection of a peer that sent {sent} blocks nobody asked for ({what})"
        );
    }
}

/// Models peer-id clashes: a fake claims the peer id of an honest peer
/// btc is connected to (from another address), then btc's own peer id.
/// Each claimant is dropped; the honest connection stays and keeps
/// downloading correct blocks.
#[test]
fn hostile_peer_id_clash_does_not_evict() {
    let ctx = Ctx::new("hostile-peer-id-clash", secs(120));
    let t = Arc::new(Torrent::make(
        &ctx,
        &Payload::single("clash.bin", 2 * MIB),
        8008,
        64 * KIB,
    ));
    let content = t.content();
    // The honest peer listens; the seeder dials it (so btc's side of that
    // connection is outgoing). Its id sorts below btc's "-BT…".
    let l = listen_on(lo(2));
    let honest_addr = l.local_addr().unwrap().to_string();
    let sp = free_port();
    let _seeder = honest_seeder(&ctx, &t, sp, &["--peer", &honest_addr]);
    let honest_id = peer_id(b"-AA0001-honestpeer");
    let mut a =
        FakePeer::accept(&l, t.hash(), honest_id, secs(20)).expect("btc dials the honest peer");
    let btc_id = a.their_id();
    a.send(&Message::Interested).unwrap();
    assert!(
        a.recv_until(secs(15), |m| matches!(m, Message::Unchoke))
            .is_some(),
        "the seeder never unchoked the honest peer"
    );
    let blocks = t.blocks();
    let fetch = |a: &mut FakePeer, i: usize, when: &str| {
        let r = blocks[i];
        a.send(&Message::Request(r))
            .unwrap_or_else(|e| panic!("honest peer {when}: request failed: {e}"));
        let got = a.recv_until(secs(10), |m| {
            matches!(m, Message::Piece { piece, offset, .. } if *piece == r.piece && *offset == r.offset)
        });
        match got {
            Some(Message::Piece { data, .. }) => {
                assert_eq!(Some(data), t.block_of(&content, &r), "block {i} {when}");
            }
            _ => panic!(
                "honest peer {when}: no block {i} (connection closed: {})",
                a.closed_at().is_some()
            ),
        }
    };
    fetch(&mut a, 0, "before any clash");

    // Same id as the honest peer, from another address.
    let target = addr(lo(1), sp);
    match FakePeer::connect_from(lo(4), target, t.hash(), honest_id) {
        Ok(mut b) => assert!(
            b.is_closed_by_remote(secs(5)),
            "btc kept a second connection claiming the honest peer's id"
        ),
        Err(e) => {
            eprintln!("[hostile-peer-id-clash] clone of the honest id refused at handshake: {e}")
        }
    }
    fetch(&mut a, 1, "after a clone of its id connected");

    // btc's own id.
    match FakePeer::connect_from(lo(5), target, t.hash(), btc_id) {
        Ok(mut b) => assert!(
            b.is_closed_by_remote(secs(5)),
            "btc kept a connection claiming its own peer id"
        ),
        Err(e) => eprintln!("[hostile-peer-id-clash] btc's own id refused at handshake: {e}"),
    }
    fetch(&mut a, 2, "after btc's own id was claimed");
    assert!(!a.peek_closed(), "the honest connection was closed");
}

/// Models a HAVE flood: 100,000 HAVEs (every piece but one, then
/// duplicates) into a seeding btc with 16,384 pieces, then one out-of-range
/// index. btc must spend little CPU (< 2 s), drop the peer on the bad
/// index, drop another that opens with index 2^32-1, not panic, and
/// keep serving an honest leecher.
#[test]
fn hostile_have_flood_is_cheap() {
    let ctx = Ctx::new("hostile-have-flood", secs(150));
    let t = Torrent::make(
        &ctx,
        &Payload::single("haves.bin", 256 * MIB),
        8009,
        16 * KIB,
    );
    let n = t.pieces();
    assert_eq!(n, 16384);
    let sp = free_port();
    let seeder = honest_seeder(&ctx, &t, sp, &[]);
    let pid = seeder.pid();
    let target = addr(lo(1), sp);

    let mut p = FakePeer::connect_from(lo(2), target, t.hash(), peer_id(b"-FK0009-haves"))
        .expect("the flooder's handshake");
    // Let btc's greeting (bitfield etc.) arrive first.
    let _ = p.recv_until(ms(500), |_| false);
    let mut haves: Vec<Message> = (0..n - 1).map(Message::Have).collect();
    let mut rng = Rng::new(9);
    while haves.len() < 100_000 {
        haves.push(Message::Have((rng.next_u64() % (n as u64 - 1)) as u32));
    }
    haves.push(Message::Have(n + 7));
    let cpu0 = cpu_secs(pid);
    let start = Instant::now();
    let _ = p.send_all(&haves);
    let closed = p.is_closed_by_remote(secs(15));
    let cpu = cpu_secs(pid) - cpu0;
    eprintln!(
        "[hostile-have-flood] 100,000 HAVEs + 1 out of range: {cpu:.2} s CPU, closed {closed} after {:?}",
        start.elapsed()
    );
    assert!(
        closed,
        "btc kept the peer after a HAVE for piece {} of {n}",
        n + 7
    );
    assert!(
        cpu < 2.0,
        "btc spent {cpu:.2} s of CPU on 100,000 HAVE messages"
    );

    let mut q = FakePeer::connect_from(lo(4), target, t.hash(), peer_id(b"-FK0009-have-max"))
        .expect("second flooder's handshake");
    q.send(&Message::Have(u32::MAX)).unwrap();
    assert!(
        q.is_closed_by_remote(secs(5)),
        "btc kept the peer after a HAVE for piece 2^32-1"
    );
    honest_leech(&ctx, "leecher", &t, &[target], lo(3), secs(30));
    assert_no_panic("seeder", &seeder.output());
}

/// Models frames built to make btc allocate: a length prefix of 2^31, a
/// BITFIELD of the wrong length, and a 20 MB extension message. Each
/// connection is closed promptly, btc's peak RSS stays bounded, and an
/// honest leecher is served afterwards.
#[test]
fn hostile_oversized_frames_are_refused() {
    let ctx = Ctx::new("hostile-oversized", secs(120));
    let t = Torrent::make(
        &ctx,
        &Payload::single("oversized.bin", 4 * MIB + 5),
        8010,
        64 * KIB,
    );
    let sp = free_port();
    let seeder = honest_seeder(&ctx, &t, sp, &[]);
    let pid = seeder.pid();
    let target = addr(lo(1), sp);
    // Each case from its own address, in case btc bans offenders' IPs.
    let connect = |from: u8, tag: &[u8]| {
        let p = FakePeer::connect_from(lo(from), target, t.hash(), peer_id(tag))
            .expect("the fake's handshake");
        p.set_write_timeout(secs(10));
        p
    };

    // 1. A length prefix of 2^31, then some of the promised bytes.
    let mut p = connect(2, b"-FK0010-len2pow31");
    let mut frame = vec![0x80, 0, 0, 0, 20, 1];
    frame.extend(vec![b'x'; 64 * 1024]);
    let _ = p.send_raw(&frame);
    assert!(
        p.is_closed_by_remote(secs(5)),
        "btc kept a peer announcing a 2 GiB frame"
    );

    // 2. A bitfield one byte too long, and one far too long.
    for (from, extra) in [(4, 1usize), (5, 1000)] {
        let mut p = connect(from, b"-FK0010-bitfield");
        let _ = p.recv_until(ms(300), |_| false);
        let len = (t.pieces() as usize).div_ceil(8) + extra;
        let _ = p.send(&Message::Bitfield(Bytes::from(vec![0xff; len])));
        assert!(
            p.is_closed_by_remote(secs(5)),
            "btc kept a peer whose bitfield is {extra} byte(s) too long"
        );
    }

    // 3. A 20 MB extension message, streamed in full.
    let mut p = connect(6, b"-FK0010-ext20mb");
    let _ = p.send_ext_handshake(&ext_handshake(Some(3)));
    let big = 20_000_000u32;
    let mut head = (big + 2).to_be_bytes().to_vec();
    head.extend([20, 1]);
    let mut sent_all = p.send_raw(&head).is_ok();
    let chunk = vec![b'd'; 1 << 20];
    let mut left = big as usize;
    while sent_all && left > 0 {
        let n = left.min(chunk.len());
        sent_all = p.send_raw(&chunk[..n]).is_ok();
        left -= n;
    }
    assert!(
        p.closed_at().is_some() || p.is_closed_by_remote(secs(5)),
        "btc kept a peer sending a 20 MB extension message"
    );
    eprintln!(
        "[hostile-oversized] 20 MB message: {} MB written before btc closed",
        (big as usize - left) / 1_000_000
    );

    let peak = vm_hwm_kib(pid);
    eprintln!("[hostile-oversized] seeder VmHWM {peak} KiB");
    honest_leech(&ctx, "leecher", &t, &[target], lo(3), secs(30));
    assert_no_panic("seeder", &seeder.output());
    assert!(
        peak < RSS_BOUND_KIB,
        "btc reached {} MiB peak RSS on oversized frames",
        peak / 1024
    );
}

/// A uTP header (BEP 29): `kind` (0 DATA, 1 FIN, 2 STATE, 3 RESET, 4 SYN),
/// version 1, no extension.
fn utp_header(kind: u8, conn_id: u16, seq: u16, ack: u16) -> Vec<u8> {
    let mut h = vec![(kind << 4) | 1, 0];
    h.extend_from_slice(&conn_id.to_be_bytes());
    h.extend_from_slice(&1_000u32.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes());
    h.extend_from_slice(&(1u32 << 20).to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&ack.to_be_bytes());
    h
}

/// Datagrams at btc's uTP port from 127.0.0.2: garbage, SYNs with fresh
/// connection ids (each would be a connection), DATA, STATE and RESET for
/// connections that do not exist, headers with broken extension chains.
/// An honest leecher that speaks only uTP (`--no-tcp`) from 127.0.0.3
/// still downloads everything; the seeder neither panics nor grows past
/// the memory bound.
#[test]
fn hostile_utp_datagram_flood_is_bounded() {
    let ctx = Ctx::new("hostile-utp", secs(150));
    let t = Torrent::make(
        &ctx,
        &Payload::single("utpflood.bin", 6 * MIB + 5),
        8005,
        64 * KIB,
    );
    let sp = free_port();
    let seeder = honest_seeder(&ctx, &t, sp, &[]);
    let target = addr(lo(1), sp);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        thread::spawn(move || {
            let sock = std::net::UdpSocket::bind(addr(lo(2), 0)).expect("bind 127.0.0.2");
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < secs(60) {
                let r = next();
                let id = r as u16;
                let datagram = match r % 6 {
                    0 => (0..(r >> 8) % 1500).map(|_| next() as u8).collect(),
                    1 => utp_header(4, id, 1, 0),
                    2 => [utp_header(0, id, (r >> 16) as u16, 0), vec![0x13; 600]].concat(),
                    3 => utp_header(2, id, 1, (r >> 16) as u16),
                    4 => utp_header(3, id, 1, 0),
                    // An extension chain that claims more than is there.
                    _ => {
                        let mut h = utp_header(2, id, 1, 0);
                        h[1] = 1;
                        h.extend_from_slice(&[1, 200, 0xff]);
                        h
                    }
                };
                if sock.send_to(&datagram, target).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                if sent.load(Ordering::Relaxed) % 64 == 0 {
                    // ~20k datagrams a second: a flood, not a CPU burner.
                    thread::sleep(ms(3));
                }
            }
        })
    };
    thread::sleep(secs(2));
    let out = ctx.join("out-utp");
    let target_s = target.to_string();
    let (_, stderr, took) = leech(
        &ctx,
        "leecher-utp",
        &[
            "-o",
            s(&out),
            s(&t.file),
            "--peer",
            &target_s,
            "--no-seed",
            "--no-dht",
            "--no-tcp",
            "--port",
            "0",
            "--bind",
            "127.0.0.3",
            "-v",
        ],
        secs(60),
    );
    stop.store(true, Ordering::SeqCst);
    flood.join().expect("flood thread");
    assert_no_panic("leecher-utp", &stderr);
    assert_same_tree(&t.root, &out.join(&t.meta.info.name));
    assert!(
        stderr.contains(&format!("connected to {target}: uTP, ")),
        "the leecher used uTP:\n{stderr}"
    );
    let n = sent.load(Ordering::SeqCst);
    let hwm = vm_hwm_kib(seeder.pid());
    eprintln!(
        "[hostile-utp] {n} hostile datagrams; honest uTP download took {took:?}; seeder peak RSS {hwm} KiB"
    );
    assert!(n >= 10_000, "only {n} datagrams were sent");
    assert!(hwm < RSS_BOUND_KIB, "seeder peak RSS {hwm} KiB");
    seeder_alive(&seeder);
}

/// A v2 seeder that sends one corrupt block (the first it serves) and is
/// honest otherwise; it rejects hash requests, as a client without block
/// hashes would. Counts what it served; `closed` once btc hangs up.
fn one_bad_block_v2_seeder(
    listener: TcpListener,
    t: Arc<Torrent>,
    content: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<SeedStats> {
    v2_fake_seeder(listener, t, content, stop, true)
}

/// The same, all blocks good when `!one_bad`.
fn v2_fake_seeder(
    listener: TcpListener,
    t: Arc<Torrent>,
    content: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    one_bad: bool,
) -> JoinHandle<SeedStats> {
    thread::spawn(move || {
        let mut st = SeedStats::default();
        let port = listener.local_addr().unwrap().port();
        let id = peer_id(format!("-FK0007-v2seed{port}").as_bytes());
        let Ok(mut p) = FakePeer::accept_v2(&listener, t.hash(), id, secs(10), true) else {
            return st;
        };
        let _ = p.send_ext_handshake(&ext_handshake(None));
        let _ = p.send(&Message::Bitfield(t.full_bitfield()));
        let _ = p.send(&Message::Unchoke);
        let end = Instant::now() + secs(60);
        while !stop.load(Ordering::SeqCst) && Instant::now() < end {
            match p.recv(ms(5)) {
                Recv::Msg(Message::Request(r)) => {
                    st.requests += 1;
                    let Some(mut data) = t.block_of(&content, &r) else {
                        continue;
                    };
                    if one_bad && st.served == 0 {
                        data = Bytes::from(vec![0xa5; data.len()]);
                    }
                    let _ = p.send(&Message::Piece {
                        piece: r.piece,
                        offset: r.offset,
                        data,
                    });
                    st.served += 1;
                }
                Recv::Msg(Message::HashRequest(r)) => {
                    let _ = p.send(&Message::HashReject(r));
                }
                Recv::Msg(_) | Recv::Timeout => {}
                Recv::Closed => {
                    st.closed = true;
                    break;
                }
            }
        }
        st
    })
}

/// Issue 22 item 3: in a v2 torrent (64 KiB pieces, 4 blocks each), a peer
/// that sends one bad block is banned after that one failed piece, on the
/// exact evidence of the piece's leaves (asked of the honest btc seeder,
/// which serves them from its data), the honest seeder untouched; the
/// failed piece is fetched again only in its bad block, and the data is
/// byte-identical.
#[test]
fn hostile_v2_bad_block_bans_its_sender_after_one_failure() {
    v2_bad_block("hostile-v2-liar", false, "v2", 64 * KIB);
}

/// The same in a hybrid torrent (v1 swarm, both peers upgrading to v2 with
/// the handshake bit): the piece fails SHA-1 and merkle both, and is
/// judged by its leaves all the same.
#[test]
fn hostile_hybrid_bad_block_bans_its_sender_after_one_failure() {
    v2_bad_block("hostile-hybrid-liar", false, "hybrid", 64 * KIB);
}

/// The same with a libtorrent 2.0 seeder as the honest peer: it answers
/// btc's request for the failed piece's leaves.
#[test]
fn hostile_v2_bad_block_blamed_with_leaves_from_libtorrent() {
    v2_bad_block("hostile-v2-liar-lt", true, "v2", 64 * KIB);
}

/// In a v2 torrent of 16 KiB pieces a piece is one leaf: its layer entry
/// says which block is bad, and no hash request is needed.
#[test]
fn hostile_v2_bad_block_in_a_one_block_piece_is_blamed_without_asking() {
    v2_bad_block("hostile-v2-liar-16k", false, "v2", 16 * KIB);
}

fn v2_bad_block(name: &str, libtorrent: bool, format: &str, piece_len: u64) {
    let ctx = Ctx::new(name, secs(120));
    let t = Arc::new(Torrent::make_as(
        &ctx,
        &Payload::single("v2liar.bin", 32 * MIB),
        8022,
        piece_len,
        format,
    ));
    let blocks = piece_len / u64::from(BLOCK_LEN);
    assert!(t.meta.v2.is_some(), "btc create --format {format}");
    assert_eq!(t.meta.info.is_v2_only(), format == "v2");
    let content = t.content();
    let sp = free_port();
    let _seeder = if libtorrent {
        let listen = addr(lo(1), sp).to_string();
        start_lt_seeder(&ctx, &t.file, &t.seed_dir, &listen)
    } else {
        honest_seeder(&ctx, &t, sp, &[])
    };
    let stop = Arc::new(AtomicBool::new(false));
    let l = listen_on(lo(2));
    let liar_addr = l.local_addr().unwrap();
    let liar = one_bad_block_v2_seeder(l, t.clone(), content, stop.clone());
    let out = ctx.join("out");
    let (la, sa) = (liar_addr.to_string(), addr(lo(1), sp).to_string());
    let lps = free_port().to_string();
    let mut leecher = leech_beside_liar(&ctx, &t, &out, &la, &sa, &lps);
    wait_for(secs(60), || {
        let o = leecher.output();
        o.contains("seeding ") || o.contains("banned 127.0.0.1") || !leecher.is_running()
    });
    leecher.wait_output("seeding ", secs(1));
    assert_same_tree(&t.root, &out.join("v2liar.bin"));
    let liar_stats = wait_join(liar, secs(10), &stop);
    eprintln!("[{name}] liar: {liar_stats:?}");
    let text = leecher.output();
    assert_no_panic("leecher", &text);
    assert!(
        liar_stats.served > 0,
        "btc never asked the liar for a block"
    );
    assert!(liar_stats.closed, "the liar was never disconnected");
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("failed its hash check"))
        .collect();
    let bans: Vec<&str> = text.lines().filter(|l| l.contains("banned")).collect();
    let blame: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("block hashes") || l.contains("blocks bad"))
        .collect();
    eprintln!("[{name}] failures: {failures:?}\nbans: {bans:?}\nblame: {blame:?}");
    assert_eq!(
        failures.len(),
        1,
        "one bad block, one failed piece:\n{text}"
    );
    assert!(
        !text.contains("banned 127.0.0.1"),
        "btc banned the honest seeder:\n{text}"
    );
    assert!(
        bans.len() == 1 && bans[0].contains("banned 127.0.0.2: it sent a corrupt block"),
        "the liar banned at once on the block's evidence:\n{text}"
    );
    // The leaves came from the honest seeder (the liar rejects hash
    // requests), or were not needed (one leaf), and only the bad block
    // was fetched again.
    assert_eq!(
        text.contains("block hashes received and checked"),
        blocks > 1,
        "leaves asked for iff a piece has several:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "1 of its {blocks} blocks bad, fetching only those again"
        )),
        "a whole-piece re-fetch:\n{text}"
    );
    assert!(
        !text.contains("fetching it again"),
        "a whole-piece re-fetch:\n{text}"
    );
}

/// When no peer sends the failed piece's leaves (both v2 seeders reject
/// hash requests), btc gives up on them after a few seconds, fetches the
/// piece again whole, and the smart ban still convicts the liar once the
/// piece passes; the honest seeder is not banned.
#[test]
fn hostile_v2_bad_block_without_leaves_falls_back_to_the_smart_ban() {
    let ctx = Ctx::new("hostile-v2-noleaves", secs(120));
    let t = Arc::new(Torrent::make_as(
        &ctx,
        &Payload::single("noleaves.bin", 16 * MIB),
        8023,
        64 * KIB,
        "v2",
    ));
    let content = t.content();
    let stop = Arc::new(AtomicBool::new(false));
    let (hl, ll) = (listen_on(lo(1)), listen_on(lo(2)));
    let (ha, la) = (hl.local_addr().unwrap(), ll.local_addr().unwrap());
    let honest = v2_fake_seeder(hl, t.clone(), content.clone(), stop.clone(), false);
    let liar = v2_fake_seeder(ll, t.clone(), content, stop.clone(), true);
    let out = ctx.join("out");
    let (has, las, lps) = (ha.to_string(), la.to_string(), free_port().to_string());
    let mut leecher = leech_beside_liar(&ctx, &t, &out, &las, &has, &lps);
    wait_for(secs(60), || {
        let o = leecher.output();
        o.contains("seeding ") || o.contains("banned 127.0.0.1") || !leecher.is_running()
    });
    leecher.wait_output("seeding ", secs(1));
    assert_same_tree(&t.root, &out.join("noleaves.bin"));
    stop.store(true, Ordering::SeqCst);
    let _ = wait_join(honest, secs(10), &stop);
    let _ = wait_join(liar, secs(10), &stop);
    let text = leecher.output();
    assert_no_panic("leecher", &text);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("piece") || l.contains("banned"))
        .collect();
    eprintln!("[hostile-v2-noleaves] {lines:?}");
    assert!(
        text.contains("asking a v2 peer for its block hashes")
            && text.contains("no peer sent its block hashes in time")
            && text.contains("fetching it again whole"),
        "no fallback to a whole-piece re-fetch:\n{text}"
    );
    assert!(
        text.contains("banned 127.0.0.2: it sent corrupt data"),
        "the smart ban did not convict the liar:\n{text}"
    );
    assert!(
        !text.contains("banned 127.0.0.1"),
        "btc banned the honest seeder:\n{text}"
    );
}
