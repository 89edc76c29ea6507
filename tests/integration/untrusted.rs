//! Trackers and web seeds are untrusted: a tiny scripted HTTP server on
//! loopback answers the real `btc` with a gigabyte body, a peer flood, a
//! redirect loop, a wrong `Content-Range`, a lying `Content-Length`, an
//! endless body or one byte a second; a `.torrent` URL whose body never
//! ends; a UDP tracker that answers with other transaction ids. Each test asserts that btc stays bounded in memory
//! (VmHWM), prints a warning naming the limit it hit, and still completes
//! the download from an honest source byte for byte.

use crate::util::*;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// Peak resident memory (VmHWM) allowed for a btc under attack. An idle
/// btc peaks around 10-20 MiB; any of these attacks, if buffered, would
/// take it far past this.
const MAX_HWM: u64 = 100 * MIB;

/// What one connection may be sent at most, and for how long: the server
/// stays bounded even if btc does not.
const MAX_SENT_PER_CONN: u64 = 1 << 30;
const MAX_CONN_TIME: Duration = Duration::from_secs(60);

/// A writer that counts bytes and stops at the per-connection bounds or
/// when the server is dropped.
struct Out<'a> {
    stream: TcpStream,
    sent: &'a AtomicU64,
    here: u64,
    stop: &'a AtomicBool,
    started: Instant,
}

impl Out<'_> {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.stop.load(Ordering::Relaxed)
            || self.here >= MAX_SENT_PER_CONN
            || self.started.elapsed() > MAX_CONN_TIME
        {
            return Err(io::Error::other("server bound reached"));
        }
        self.stream.write_all(bytes)?;
        self.here += bytes.len() as u64;
        self.sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// `chunk` over and over until the client hangs up or a bound is hit.
    fn endless(&mut self, chunk: &[u8]) {
        while self.send(chunk).is_ok() {}
    }
}

type Answer = Arc<dyn Fn(&str, &mut Out<'_>) -> io::Result<()> + Send + Sync>;

/// A scripted HTTP/1.1 server on 127.0.0.1: every request head goes to
/// `answer`, which writes the raw response. Stopped (and its threads
/// ended) on drop.
struct Script {
    port: u16,
    hits: Arc<AtomicUsize>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Script {
    fn start(answer: Answer) -> Script {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, se, st) = (hits.clone(), sent.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut conns = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (h, se, st, answer) =
                            (h.clone(), se.clone(), st.clone(), answer.clone());
                        conns.push(thread::spawn(move || {
                            serve_one(s, &h, &se, &st, &answer);
                        }));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Script {
            port,
            hits,
            sent,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(
    mut s: TcpStream,
    hits: &AtomicUsize,
    sent: &AtomicU64,
    stop: &AtomicBool,
    answer: &Answer,
) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    // Keep-alive: answer every request on the connection.
    loop {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(1) if head.len() < 65536 => head.push(b[0]),
                _ => return,
            }
        }
        hits.fetch_add(1, Ordering::Relaxed);
        let Ok(stream) = s.try_clone() else { return };
        let mut out = Out {
            stream,
            sent,
            here: 0,
            stop,
            started: Instant::now(),
        };
        if answer(&String::from_utf8_lossy(&head), &mut out).is_err() {
            return;
        }
    }
}

/// `Range: bytes=A-B` of a request head.
fn range(head: &str) -> Option<(u64, u64)> {
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("range:"))?;
    let spec = line.split_once('=')?.1.trim();
    let (a, b) = spec.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Highest resident memory of process `pid` so far, in bytes.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Polls VmHWM until `proc` exits (or `timeout`); the last value read
/// (VmHWM only grows).
fn watch_hwm(proc: &mut Proc, timeout: Duration) -> u64 {
    let end = Instant::now() + timeout;
    let mut last = 0;
    while proc.is_running() && Instant::now() < end {
        if let Some(v) = vm_hwm(proc.pid()) {
            last = v;
        }
        thread::sleep(Duration::from_millis(20));
    }
    last
}

/// One download: a single-file payload in `seed_dir`, its torrent, the
/// leecher's output folder and listen port.
struct Case {
    seed_dir: PathBuf,
    file: PathBuf,
    t: PathBuf,
    out: PathBuf,
    port: u16,
}

/// Writes a `len`-byte payload and its torrent (with `create_extra` flags).
fn case(ctx: &Ctx, name: &str, len: u64, seed: u64, create_extra: &[&str]) -> Case {
    let seed_dir = ctx.mkdir("seed");
    let file = Payload::single(name, len).write(&seed_dir, seed);
    let t = ctx.join(format!("{name}.torrent"));
    let mut args = vec!["--piece-length", "65536"];
    args.extend_from_slice(create_extra);
    btc_create(ctx, &file, &t, &args);
    Case {
        seed_dir,
        file,
        t,
        out: ctx.join("out"),
        port: free_port(),
    }
}

/// A leecher on a known port: `btc T -o out --no-seed ... EXTRA`.
fn start_leecher(ctx: &Ctx, t: &Path, out: &Path, port: u16, extra: &[&str]) -> Proc {
    let p = port.to_string();
    let mut args = vec![
        s(t),
        "-o",
        s(out),
        "--no-seed",
        "--no-dht",
        "--port",
        &p,
        "--bind",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    ctx.spawn("leecher", ctx.btc(&args))
}

/// The common ending: once the leecher has printed `warning` (the attack
/// was met and cut), its memory is checked, an honest btc seeder dials it,
/// and the download must complete byte for byte, memory still bounded.
fn honest_seeder_completes(ctx: &Ctx, c: &Case, leecher: &mut Proc, warning: &str) -> u64 {
    let Case {
        seed_dir,
        file,
        t,
        out,
        port: leech_port,
    } = c;
    let text = leecher.wait_output(warning, secs(60));
    let line = text.lines().find(|l| l.contains(warning)).unwrap_or("");
    eprintln!("[{}] warning: {line}", ctx.name);
    leecher.assert_running();
    // Memory right after the attack, while the leecher surely runs.
    let after_attack = vm_hwm(leecher.pid()).unwrap_or(0);
    assert!(after_attack > 0, "no VmHWM for the leecher");
    let peer = format!("127.0.0.1:{leech_port}");
    let _seeder = start_btc_seeder(
        ctx,
        "seeder",
        seed_dir,
        s(t),
        free_port(),
        &["--no-dht", "--peer", &peer, "--bind", "127.0.0.1"],
    );
    let hwm = watch_hwm(leecher, secs(120)).max(after_attack);
    leecher.expect_success(secs(10));
    assert_same_file(file, &out.join(file.file_name().unwrap()));
    assert!(
        hwm < MAX_HWM,
        "leecher peaked at {hwm} bytes resident (limit {MAX_HWM})"
    );
    eprintln!(
        "[{}] leecher VmHWM {:.1} MiB",
        ctx.name,
        hwm as f64 / MIB as f64
    );
    hwm
}

/// A tracker that streams an endless body (no length): btc reads at most
/// the 2 MiB cap, warns, and gets the data from a peer.
#[test]
fn untrusted_tracker_endless_body_is_cut() {
    let ctx = Ctx::new("untrusted-tracker-body", secs(180));
    let server = Script::start(Arc::new(|_, out| {
        out.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")?;
        out.endless(&[b'x'; 65536]);
        Err(io::Error::other("done"))
    }));
    let c = case(&ctx, "tb.bin", 3 * MIB + 7, 301, &[]);
    let url = server.url("announce");
    let mut leecher = start_leecher(&ctx, &c.t, &c.out, c.port, &["--tracker", &url]);
    honest_seeder_completes(&ctx, &c, &mut leecher, "over the 2097152-byte limit");
    assert!(server.hits() >= 1);
    // The server got to send more than the cap: btc read, counted and cut
    // (it did not merely refuse a declared length).
    assert!(server.sent() > 2 * MIB, "sent only {}", server.sent());
}

/// A tracker answering with ~349,000 peers (all on closed loopback ports):
/// btc keeps 10,000, warns, and completes from the honest peer.
#[test]
fn untrusted_tracker_peer_flood_is_capped() {
    let ctx = Ctx::new("untrusted-tracker-flood", secs(180));
    let n: u32 = 349_000;
    let mut body = format!("d8:intervali1800e5:peers{}:", n * 6).into_bytes();
    for i in 0..n {
        // 127.200.0.0 and up, port 1: loopback, nothing listens there.
        let [_, a, b, c] = (i + (200 << 16)).to_be_bytes();
        body.extend_from_slice(&[127, a, b, c, 0, 1]);
    }
    body.push(b'e');
    assert!(body.len() < 2 * 1024 * 1024, "must fit under the body cap");
    let body = Arc::new(body);
    let server = Script::start(Arc::new(move |_, out| {
        out.send(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )?;
        out.send(&body)?;
        Err(io::Error::other("done"))
    }));
    let c = case(&ctx, "tf.bin", 3 * MIB + 11, 302, &[]);
    let url = server.url("announce");
    let mut leecher = start_leecher(&ctx, &c.t, &c.out, c.port, &["--tracker", &url]);
    honest_seeder_completes(
        &ctx,
        &c,
        &mut leecher,
        "tracker sent more than 10000 peers; ignoring 339000 of them",
    );
}

/// A tracker redirecting to itself forever: btc gives up after the
/// redirect limit, warns, and completes from the peer.
#[test]
fn untrusted_tracker_redirect_loop_is_cut() {
    let ctx = Ctx::new("untrusted-tracker-redirect", secs(180));
    let server = Script::start(Arc::new(|_, out| {
        out.send(b"HTTP/1.1 302 Found\r\nLocation: /announce?again\r\nContent-Length: 0\r\n\r\n")
    }));
    let c = case(&ctx, "tr.bin", 2 * MIB + 3, 303, &[]);
    let url = server.url("announce");
    let mut leecher = start_leecher(&ctx, &c.t, &c.out, c.port, &["--tracker", &url]);
    honest_seeder_completes(&ctx, &c, &mut leecher, "more than 5 redirects");
    // 1 request + 5 redirects followed, then refused; retries may add more.
    assert!(server.hits() >= 6, "hits {}", server.hits());
}

/// A web seed answering every range with the file's first bytes under a
/// `Content-Range` that says so: refused before any byte is taken, and
/// the peer completes the download.
#[test]
fn untrusted_webseed_wrong_content_range_is_refused() {
    let ctx = Ctx::new("untrusted-webseed-range", secs(180));
    let total = 3 * MIB + 5;
    let server = Script::start(Arc::new(move |head, out| {
        let (a, b) = range(head).unwrap_or((0, 0));
        let len = b - a + 1;
        // Always from offset 0: the wrong place, honestly labelled.
        out.send(
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-{}/{total}\r\nContent-Length: {len}\r\n\r\n",
                len - 1
            )
            .as_bytes(),
        )?;
        out.send(&vec![0u8; len as usize])
    }));
    let url = server.url("wr.bin");
    let c = case(&ctx, "wr.bin", total, 304, &["--web-seed", &url]);
    let mut leecher = start_leecher(&ctx, &c.t, &c.out, c.port, &[]);
    honest_seeder_completes(&ctx, &c, &mut leecher, "does not match the bytes");
    assert!(server.hits() >= 1);
}

/// A web seed that declares a gigabyte for a small range and then streams
/// it: refused on the header, never read; the peer completes.
#[test]
fn untrusted_webseed_gigabyte_length_is_refused() {
    let ctx = Ctx::new("untrusted-webseed-huge", secs(180));
    let file_len = 3 * MIB + 9;
    let server = Script::start(Arc::new(move |head, out| {
        let (a, b) = range(head).unwrap_or((0, 0));
        out.send(
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{file_len}\r\nContent-Length: 1073741824\r\n\r\n"
            )
            .as_bytes(),
        )?;
        out.endless(&[7u8; 65536]);
        Err(io::Error::other("done"))
    }));
    let url = server.url("wh.bin");
    let c = case(&ctx, "wh.bin", file_len, 305, &["--web-seed", &url]);
    let mut leecher = start_leecher(&ctx, &c.t, &c.out, c.port, &[]);
    honest_seeder_completes(&ctx, &c, &mut leecher, "Content-Length 1073741824");
}

/// A web seed redirecting to itself forever: cut at the redirect limit
/// with a warning; the peer completes.
#[test]
fn untrusted_webseed_redirect_loop_is_cut() {
    let ctx = Ctx::new("untrusted-webseed-redirect", secs(180));
    let server = Script::start(Arc::new(|_, out| {
        out.send(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /wl.bin?again\r\nContent-Length: 0\r\n\r\n")
    }));
    let url = server.url("wl.bin");
    let c = case(&ctx, "wl.bin", 2 * MIB + 1, 306, &["--web-seed", &url]);
    let mut leecher = start_leecher(&ctx, &c.t, &c.out, c.port, &[]);
    honest_seeder_completes(&ctx, &c, &mut leecher, "more than 5 redirects");
    assert!(server.hits() >= 6, "hits {}", server.hits());
}

/// A web seed that sends the right bytes for each range and then goes on
/// forever (no Content-Length, the right Content-Range): btc takes exactly
/// the bytes asked for, warns once, drops the connection, and completes
/// from this web seed alone, with bounded memory.
#[test]
fn untrusted_webseed_endless_body_is_cut() {
    let ctx = Ctx::new("untrusted-webseed-endless", secs(180));
    let seed_dir = ctx.mkdir("seed");
    let file = Payload::single("we.bin", 6 * MIB + 13).write(&seed_dir, 307);
    let data = Arc::new(std::fs::read(&file).unwrap());
    let served = data.clone();
    let server = Script::start(Arc::new(move |head, out| {
        let total = served.len() as u64;
        let (a, b) = range(head).unwrap_or((0, total - 1));
        let b = b.min(total - 1);
        out.send(
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{total}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )?;
        // The right bytes and the start of the junk in one write, so the
        // overflow reaches btc in the same read.
        let mut first = served[a as usize..=b as usize].to_vec();
        first.extend_from_slice(&[0xEE; 65536]);
        out.send(&first)?;
        out.endless(&[0xEE; 65536]);
        Err(io::Error::other("done"))
    }));
    let t = ctx.join("we.torrent");
    btc_create(
        &ctx,
        &file,
        &t,
        &[
            "--piece-length",
            "65536",
            "--web-seed",
            &server.url("we.bin"),
        ],
    );
    let out = ctx.join("out");
    let mut leecher = start_leecher(&ctx, &t, &out, free_port(), &[]);
    let hwm = watch_hwm(&mut leecher, secs(120));
    leecher.expect_success(secs(10));
    assert_same_file(&file, &out.join("we.bin"));
    let stderr = leecher.stderr();
    assert!(
        stderr.contains("sent more than the") && stderr.contains("cut there"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("sent more than the").count(),
        1,
        "warned more than once:\n{stderr}"
    );
    assert!(!stderr.contains("failed its hash check"), "{stderr}");
    assert!(hwm > 0 && hwm < MAX_HWM, "leecher peaked at {hwm} bytes");
    eprintln!(
        "[{}] {} requests, server pushed {:.1} MiB, leecher VmHWM {:.1} MiB",
        ctx.name,
        server.hits(),
        server.sent() as f64 / MIB as f64,
        hwm as f64 / MIB as f64
    );
}

/// A web seed that sends the right bytes, one a second: it never stalls
/// long enough to be dropped, so the blocks it was given must not be held
/// hostage. The honest seeder gets the download done long before the web
/// seed could have sent a piece, byte for byte, memory bounded.
#[test]
fn untrusted_webseed_one_byte_a_second_holds_nothing_back() {
    let ctx = Ctx::new("untrusted-webseed-slow", secs(180));
    let seed_dir = ctx.mkdir("seed");
    let file = Payload::single("ws.bin", 3 * MIB + 17).write(&seed_dir, 308);
    let data = Arc::new(std::fs::read(&file).unwrap());
    let served = data.clone();
    let server = Script::start(Arc::new(move |head, out| {
        let total = served.len() as u64;
        let (a, b) = range(head).unwrap_or((0, total - 1));
        let b = b.min(total - 1);
        out.send(
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{total}\r\nContent-Length: {}\r\n\r\n",
                b - a + 1
            )
            .as_bytes(),
        )?;
        for i in a..=b {
            out.send(&served[i as usize..=i as usize])?;
            thread::sleep(Duration::from_secs(1));
        }
        Ok(())
    }));
    let t = ctx.join("ws.torrent");
    btc_create(
        &ctx,
        &file,
        &t,
        &[
            "--piece-length",
            "65536",
            "--web-seed",
            &server.url("ws.bin"),
        ],
    );
    let out = ctx.join("out");
    let port = free_port();
    let mut leecher = start_leecher(&ctx, &t, &out, port, &[]);
    // The web seed has its first blocks before any peer is there.
    let asked = wait_for(secs(30), || server.hits() >= 1);
    assert!(asked, "the web seed was never asked\n{}", leecher.tails());
    // Memory while the web seed holds its blocks (the download may then
    // end too fast for a poll to see it running).
    let holding = vm_hwm(leecher.pid()).unwrap_or(0);
    assert!(holding > 0, "no VmHWM for the leecher");
    let peer = format!("127.0.0.1:{port}");
    let _seeder = start_btc_seeder(
        &ctx,
        "seeder",
        &seed_dir,
        s(&t),
        free_port(),
        &["--no-dht", "--peer", &peer, "--bind", "127.0.0.1"],
    );
    let started = Instant::now();
    let hwm = watch_hwm(&mut leecher, secs(90)).max(holding);
    leecher.expect_success(secs(10));
    let took = started.elapsed();
    assert_same_file(&file, &out.join("ws.bin"));
    assert!(hwm < MAX_HWM, "leecher peaked at {hwm} bytes");
    // A 64 KiB piece at a byte a second takes 18 hours: whatever the web
    // seed held was fetched from the peer too.
    assert!(server.sent() < 64 * 1024, "sent {}", server.sent());
    eprintln!(
        "[{}] done {:.1} s after the seeder came; the web seed sent {} bytes",
        ctx.name,
        took.as_secs_f64(),
        server.sent()
    );
}

/// A `.torrent` URL whose body never ends: btc reads up to its 64 MiB
/// cap, stops with one error line naming the source and the limit, and
/// exits non-zero, memory bounded.
#[test]
fn untrusted_torrent_url_endless_body_is_cut() {
    let ctx = Ctx::new("untrusted-torrent-url-endless", secs(180));
    let server = Script::start(Arc::new(|_, out| {
        out.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-bittorrent\r\nConnection: close\r\n\r\n")?;
        out.send(b"d8:announce")?;
        out.endless(&[b'9'; 65536]);
        Err(io::Error::other("done"))
    }));
    let url = server.url("endless.torrent");
    let out = ctx.join("out");
    let mut btc = ctx.spawn("btc-url", ctx.btc(&[&url, "-o", s(&out), "--no-dht"]));
    let hwm = watch_hwm(&mut btc, secs(90));
    let status = btc.wait_timeout(secs(10)).expect("btc did not exit");
    assert!(!status.success(), "btc took an endless .torrent");
    let stderr = btc.stderr();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&url) && errors[0].contains("larger than 67108864 bytes"),
        "{stderr}"
    );
    assert!(hwm > 0 && hwm < MAX_HWM, "btc peaked at {hwm} bytes");
    // btc read and counted past the cap (no length was declared).
    assert!(server.sent() > 64 * MIB, "sent only {}", server.sent());
}

/// A UDP tracker that answers every packet with a datagram of another
/// transaction id (and a burst of junk): btc ignores them all, keeps its
/// retry schedule, and completes from the honest peer.
#[test]
fn untrusted_udp_tracker_wrong_transaction_ids_are_ignored() {
    let ctx = Ctx::new("untrusted-udp-tid", secs(180));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let (st, rq) = (stop.clone(), requests.clone());
    let server = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !st.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if n < 16 {
                continue;
            }
            rq.fetch_add(1, Ordering::Relaxed);
            let tid = u32::from_be_bytes(buf[12..16].try_into().unwrap());
            // A connect answer (action 0) with the wrong transaction id,
            // then an announce answer (action 1) with it too, then junk.
            let mut connect = vec![0, 0, 0, 0];
            connect.extend_from_slice(&tid.wrapping_add(1).to_be_bytes());
            connect.extend_from_slice(&[0x41; 8]);
            let _ = sock.send_to(&connect, from);
            let mut announce = vec![0, 0, 0, 1];
            announce.extend_from_slice(&tid.wrapping_sub(1).to_be_bytes());
            announce.extend_from_slice(&[0, 0, 7, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
            announce.extend_from_slice(&[127, 0, 0, 9, 0, 1]);
            let _ = sock.send_to(&announce, from);
            for k in 0..50u8 {
                let _ = sock.send_to(&[k; 37], from);
            }
        }
    });
    let c = case(&ctx, "ut.bin", 2 * MIB + 21, 309, &[]);
    let url = format!("udp://127.0.0.1:{port}/announce");
    let mut leecher = start_leecher(&ctx, &c.t, &c.out, c.port, &["--tracker", &url, "-vv"]);
    honest_seeder_completes(&ctx, &c, &mut leecher, "stale transaction id");
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    assert!(requests.load(Ordering::Relaxed) >= 1);
    let stderr = leecher.stderr();
    // Nothing from the forged answers was taken as a peer.
    assert!(!stderr.contains("127.0.0.9:1"), "a forged peer was used");
}
