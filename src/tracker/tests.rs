//! Real-tracker tests against `opentracker` (Debian's build: whitelist mode),
//! plus tiny in-process HTTP servers for the hostile cases. The binary must be
//! installed; these tests fail loudly rather than skip when it is missing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use super::*;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OPENTRACKER: &str = "/usr/bin/opentracker";

/// A running opentracker, killed (by PID) when dropped.
struct OpenTracker {
    child: Child,
    http_port: u16,
    udp_port: u16,
    _dir: tempfile::TempDir,
}

impl OpenTracker {
    /// Starts opentracker on fresh localhost ports, whitelisting `hashes`.
    /// Command: `opentracker -i 127.0.0.1 -p <tcp> -P <udp> -d <dir> -w whitelist.txt`.
    /// The whitelist path is relative because opentracker chroots into `-d`
    /// when run as root (and then drops to `nobody`, hence the 0755 dir).
    fn start(hashes: &[InfoHash]) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod tempdir");
        let list: String = hashes.iter().map(|h| format!("{}\n", h.to_hex())).collect();
        std::fs::write(dir.path().join("whitelist.txt"), list).expect("write whitelist");
        let http_port = free_tcp_port();
        let udp_port = free_udp_port();
        let child = Command::new(OPENTRACKER)
            .args(["-i", "127.0.0.1", "-p", &http_port.to_string()])
            .args(["-P", &udp_port.to_string(), "-d"])
            .arg(dir.path())
            .args(["-w", "whitelist.txt"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {OPENTRACKER} (apt install opentracker): {e}")
            });
        let mut t = OpenTracker {
            child,
            http_port,
            udp_port,
            _dir: dir,
        };
        // Ready means listening *and* the whitelist loaded: opentracker reads
        // it in a worker thread, so early announces are "not authorized".
        // (A `stopped` announce is not checked against the whitelist, so the
        // probe is a `started`, undone by a `stopped` once it succeeds.)
        let start = std::time::Instant::now();
        loop {
            if hashes.is_empty() || raw_announce(http_port, &hashes[0], Event::Started) {
                raw_announce(http_port, &hashes[0], Event::Stopped);
                break;
            }
            if let Ok(Some(status)) = t.child.try_wait() {
                panic!("opentracker exited at start: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "opentracker did not listen on {http_port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t
    }

    fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.http_port)
    }

    fn udp_url(&self) -> String {
        format!("udp://127.0.0.1:{}/announce", self.udp_port)
    }
}

impl Drop for OpenTracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One blocking announce as a fixed probe peer; true when the tracker did
/// not refuse it.
fn raw_announce(port: u16, hash: &InfoHash, event: Event) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect((LOCAL, port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = AnnounceRequest {
        info_hash: *hash,
        peer_id: PeerId(*b"-BT0100-readinessxyz"),
        port: 1,
        uploaded: 0,
        downloaded: 0,
        left: 1,
        event,
        numwant: Some(0),
        key: 0,
        tracker_id: None,
        also_at: Vec::new(),
    };
    let path = announce::http_url("/announce", &req);
    let head = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut resp = Vec::new();
    if s.write_all(head.as_bytes()).is_err() || s.read_to_end(&mut resp).is_err() {
        return false;
    }
    let text = String::from_utf8_lossy(&resp);
    text.starts_with("HTTP/1.") && text.contains(" 200 ") && !text.contains("failure reason")
}

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind((LOCAL, 0)).expect("bind tcp");
    l.local_addr().expect("addr").port()
}

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind((LOCAL, 0)).expect("bind udp");
    s.local_addr().expect("addr").port()
}

fn random_hash() -> InfoHash {
    InfoHash(rand::random())
}

/// One announcer under test with its channels.
struct Running {
    handle: JoinHandle<()>,
    shutdown: CancellationToken,
    peers: crate::mailbox::Receiver<Vec<SocketAddr>>,
    totals: watch::Sender<TransferTotals>,
    stats: Arc<TrackerStats>,
    /// The port mapping's external port, as the session would set it.
    external_port: Arc<crate::portmap::ExternalPort>,
}

const STOP_TIMEOUT: Duration = Duration::from_secs(2);

fn start_announcer(info_hash: InfoHash, port: u16, left: u64, tiers: Vec<Vec<String>>) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("btc=debug")
        .try_init();
    let (totals, totals_rx) = watch::channel(TransferTotals {
        uploaded: 0,
        downloaded: 0,
        left,
    });
    let (peers_tx, peers) = crate::mailbox::channel(16);
    let stats = Arc::new(TrackerStats::default());
    let shutdown = CancellationToken::new();
    let external_port = Arc::new(crate::portmap::ExternalPort::default());
    let cfg = AnnounceConfig {
        external_port: external_port.clone(),
        info_hash,
        peer_id: PeerId::generate(),
        port,
        bind: Some(LOCAL),
        tiers,
        numwant: 50,
        stop_timeout: STOP_TIMEOUT,
        pace: None,
        also_at: Vec::new(),
        http_client: None,
        reannounce: None,
    };
    let handle = spawn_announcer(cfg, totals_rx, peers_tx, stats.clone(), shutdown.clone());
    Running {
        handle,
        shutdown,
        peers,
        totals,
        stats,
        external_port,
    }
}

impl Running {
    /// Waits until `want` shows up among received peers.
    async fn wait_for_peer(&mut self, want: SocketAddr, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.peers.recv()).await {
                Ok(Some(batch)) if batch.contains(&want) => return,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("peer channel closed before {want} arrived"),
                Err(_) => panic!("{want} not received within {within:?}"),
            }
        }
    }

    /// Fires shutdown and checks the handle completes within the stop bound.
    async fn stop(self) {
        self.shutdown.cancel();
        let started = Instant::now();
        timeout(STOP_TIMEOUT + Duration::from_secs(1), self.handle)
            .await
            .expect("announcer did not finish within stop_timeout")
            .expect("announcer task panicked");
        assert!(started.elapsed() <= STOP_TIMEOUT + Duration::from_secs(1));
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(LOCAL, port)
}

/// A raw HTTP announce from a third peer, to observe the tracker's state.
async fn probe(url: &str, info_hash: InfoHash) -> AnnounceResponse {
    let client = http::build_client(Some(LOCAL)).unwrap();
    let req = AnnounceRequest {
        info_hash,
        peer_id: PeerId::generate(),
        port: 1,
        uploaded: 0,
        downloaded: 0,
        left: 1,
        event: Event::None,
        numwant: Some(50),
        key: 1,
        tracker_id: None,
        also_at: Vec::new(),
    };
    http::announce(&client, url, &req)
        .await
        .expect("probe announce")
}

async fn peers_meet(use_udp: bool) {
    let ih = random_hash();
    let ot = OpenTracker::start(&[ih]);
    let url = if use_udp { ot.udp_url() } else { ot.http_url() };
    let (pa, pb) = (free_tcp_port(), free_tcp_port());
    let mut a = start_announcer(ih, pa, 100, vec![vec![url.clone()]]);
    // opentracker lists the announcer itself, which tells us A is registered.
    a.wait_for_peer(addr(pa), Duration::from_secs(5)).await;
    let mut b = start_announcer(ih, pb, 100, vec![vec![url]]);
    b.wait_for_peer(addr(pa), Duration::from_secs(5)).await;
    assert_eq!(b.stats.trackers_total(), 1);
    assert_eq!(b.stats.trackers_ok(), 1);
    assert!(b.stats.peers_received() >= 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn http_announcers_find_each_other() {
    timeout(Duration::from_secs(30), peers_meet(false))
        .await
        .expect("test timed out");
}

#[tokio::test]
async fn udp_announcers_find_each_other() {
    timeout(Duration::from_secs(30), peers_meet(true))
        .await
        .expect("test timed out");
}

/// A port the router mapped to another number is announced at once, not
/// at the next interval (opentracker asks for 30 minutes).
#[tokio::test]
async fn a_new_external_port_is_announced_at_once() {
    timeout(Duration::from_secs(30), async {
        let ih = random_hash();
        let ot = OpenTracker::start(&[ih]);
        let (pa, pe) = (free_tcp_port(), free_tcp_port());
        let mut a = start_announcer(ih, pa, 100, vec![vec![ot.http_url()]]);
        a.wait_for_peer(addr(pa), Duration::from_secs(5)).await;
        a.external_port.set(pe);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = probe(&ot.http_url(), ih).await;
            if r.peers.contains(&addr(pe)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "external port not announced: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        a.stop().await;
    })
    .await
    .expect("test timed out");
}

/// `completed` goes out as soon as `left` hits 0 (the tracker counts a seeder)
/// and `stopped` removes us from the swarm at shutdown.
async fn completed_then_stopped(use_udp: bool) {
    let ih = random_hash();
    let ot = OpenTracker::start(&[ih]);
    let url = if use_udp { ot.udp_url() } else { ot.http_url() };
    let pa = free_tcp_port();
    let mut a = start_announcer(ih, pa, 100, vec![vec![url]]);
    a.wait_for_peer(addr(pa), Duration::from_secs(5)).await;
    assert_eq!(probe(&ot.http_url(), ih).await.complete, Some(0));

    a.totals.send_replace(TransferTotals {
        uploaded: 0,
        downloaded: 100,
        left: 0,
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = probe(&ot.http_url(), ih).await;
        if r.complete == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "completed not seen: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    a.stop().await;
    let r = probe(&ot.http_url(), ih).await;
    assert_eq!(r.complete, Some(0), "stopped not seen: {r:?}");
    assert!(!r.peers.contains(&addr(pa)), "stopped not seen: {r:?}");
}

#[tokio::test]
async fn http_completed_and_stopped_reach_tracker() {
    timeout(Duration::from_secs(30), completed_then_stopped(false))
        .await
        .expect("test timed out");
}

#[tokio::test]
async fn udp_completed_and_stopped_reach_tracker() {
    timeout(Duration::from_secs(30), completed_then_stopped(true))
        .await
        .expect("test timed out");
}

/// A TCP listener that accepts and then never says a word.
async fn silent_http() -> (String, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let url = format!("http://{}/announce", l.local_addr().unwrap());
    let h = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (url, h)
}

#[tokio::test]
async fn dead_trackers_do_not_delay_live_ones() {
    timeout(Duration::from_secs(30), async {
        let ih = random_hash();
        let ot = OpenTracker::start(&[ih]);
        let pa = free_tcp_port();
        let mut a = start_announcer(ih, pa, 100, vec![vec![ot.http_url()]]);
        a.wait_for_peer(addr(pa), Duration::from_secs(5)).await;

        let (silent_url, silent) = silent_http().await;
        // Bound but never answering: no ICMP, so only timeouts would tell.
        let silent_udp = std::net::UdpSocket::bind((LOCAL, 0)).unwrap();
        let tiers = vec![
            vec![format!("http://127.0.0.1:{}/announce", free_tcp_port())],
            vec![format!("udp://127.0.0.1:{}", free_udp_port())],
            vec![silent_url],
            vec![format!("udp://{}", silent_udp.local_addr().unwrap())],
            vec!["wss://tracker.example/announce".into()],
            vec![ot.udp_url(), ot.http_url()],
        ];
        let started = Instant::now();
        let mut b = start_announcer(ih, free_tcp_port(), 100, tiers);
        b.wait_for_peer(addr(pa), Duration::from_secs(2)).await;
        let took = started.elapsed();
        eprintln!("peers from the live tracker after {took:?} despite 4 dead ones");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert_eq!(b.stats.trackers_total(), 6);
        b.stop().await;
        a.stop().await;
        silent.abort();
    })
    .await
    .expect("test timed out");
}

/// Serves `head` then `body` to every connection; `repeat_body` streams the
/// body forever (until the client hangs up).
async fn canned_http(head: &'static str, body: &'static [u8], repeat_body: bool) -> String {
    let l = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let url = format!("http://{}/announce", l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 65536 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    if s.write_all(body).await.is_err() || !repeat_body {
                        return;
                    }
                }
            });
        }
    });
    url
}

fn plain_request() -> AnnounceRequest {
    AnnounceRequest {
        info_hash: random_hash(),
        peer_id: PeerId::generate(),
        port: 6881,
        uploaded: 0,
        downloaded: 0,
        left: 1,
        event: Event::Started,
        numwant: Some(10),
        key: 7,
        tracker_id: None,
        also_at: Vec::new(),
    }
}

#[tokio::test]
async fn failure_reason_is_reported() {
    timeout(Duration::from_secs(20), async {
        let body: &'static [u8] = b"d14:failure reason11:not allowede";
        let url = canned_http(
            "HTTP/1.1 200 OK\r\nContent-Length: 33\r\nConnection: close\r\n\r\n",
            body,
            false,
        )
        .await;
        let client = http::build_client(Some(LOCAL)).unwrap();
        let r = http::announce(&client, &url, &plain_request()).await;
        assert_eq!(r, Err(TrackerError::Failure("not allowed".into())));

        // The announcer keeps the tracker counted as failing.
        let run = start_announcer(random_hash(), 1, 1, vec![vec![url]]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(run.stats.trackers_total(), 1);
        assert_eq!(run.stats.trackers_ok(), 0);
        run.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    timeout(Duration::from_secs(20), async {
        static CHUNK: [u8; 65536] = [b'x'; 65536];
        let client = http::build_client(Some(LOCAL)).unwrap();
        // Endless body without a length: must be cut off at the cap.
        let url = canned_http("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", &CHUNK, true).await;
        let started = Instant::now();
        let r = http::announce(&client, &url, &plain_request()).await;
        assert_eq!(
            r,
            Err(TrackerError::BodyTooLarge {
                limit: http::MAX_BODY
            })
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        // A declared length over the cap is refused before reading.
        let url = canned_http(
            "HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\nConnection: close\r\n\r\n",
            b"d",
            false,
        )
        .await;
        let r = http::announce(&client, &url, &plain_request()).await;
        assert_eq!(
            r,
            Err(TrackerError::BodyTooLarge {
                limit: http::MAX_BODY
            })
        );
    })
    .await
    .expect("test timed out");
}

/// A tracker redirecting to itself forever: the announce fails after
/// MAX_REDIRECTS hops, quickly, with an error that says so.
#[tokio::test]
async fn redirect_loops_are_cut() {
    timeout(Duration::from_secs(20), async {
        let url = canned_http(
            "HTTP/1.1 302 Found\r\nLocation: /announce?again=1\r\nContent-Length: 0\r\n\r\n",
            b"",
            false,
        )
        .await;
        let client = http::build_client(Some(LOCAL)).unwrap();
        let started = Instant::now();
        let r = http::announce(&client, &url, &plain_request()).await;
        match r {
            Err(TrackerError::Http { reason, .. }) => {
                assert!(reason.contains("redirects"), "{reason}")
            }
            other => panic!("expected a redirect error, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    })
    .await
    .expect("test timed out");
}

#[test]
fn completed_only_after_finishing_a_download() {
    let mut st = LoopState::default();
    let seeding = TransferTotals::default();
    st.observe(&seeding);
    assert_eq!(st.next_event(&seeding), Event::Started);
    st.started_ok = true;
    // Started complete: never `completed`.
    assert_eq!(st.next_event(&seeding), Event::None);

    let mut st = LoopState::default();
    let leeching = TransferTotals {
        left: 5,
        ..TransferTotals::default()
    };
    st.observe(&leeching);
    st.started_ok = true;
    assert_eq!(st.next_event(&leeching), Event::None);
    let done = TransferTotals {
        downloaded: 5,
        ..TransferTotals::default()
    };
    st.observe(&done);
    assert_eq!(st.next_event(&done), Event::Completed);
    st.completed_sent = true;
    assert_eq!(st.next_event(&done), Event::None);
}

/// An in-process BEP 15 tracker: answers every connect (after first sending a
/// decoy with a wrong transaction id) and answers announces with one peer, or
/// with an error packet when `refuse` is set. Counts connects.
async fn fake_udp_tracker(refuse: bool) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let sock = tokio::net::UdpSocket::bind((LOCAL, 0)).await.unwrap();
    let url = format!("udp://{}/announce", sock.local_addr().unwrap());
    let connects = Arc::new(AtomicUsize::new(0));
    let counter = connects.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let p = &buf[..n];
            if n == 16 && p[..8] == announce::UDP_PROTOCOL_ID.to_be_bytes() {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut decoy = [0u8; 16];
                decoy[4..8].copy_from_slice(
                    &(!u32::from_be_bytes([p[12], p[13], p[14], p[15]])).to_be_bytes(),
                );
                let _ = sock.send_to(&decoy, from).await;
                let mut r = [0u8; 16];
                r[4..8].copy_from_slice(&p[12..16]);
                r[8..16].copy_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
                let _ = sock.send_to(&r, from).await;
            } else if n >= 98 && p[8..12] == 1u32.to_be_bytes() {
                assert_eq!(p[..8], 0x1234_5678_9abc_def0u64.to_be_bytes());
                // BEP 41: the URL's path follows as URLData.
                assert_eq!(&p[98..], b"\x02\x09/announce", "BEP 41 URL data");
                let mut r = Vec::new();
                if refuse {
                    r.extend_from_slice(&3u32.to_be_bytes());
                    r.extend_from_slice(&p[12..16]);
                    r.extend_from_slice(b"go away");
                } else {
                    r.extend_from_slice(&1u32.to_be_bytes());
                    r.extend_from_slice(&p[12..16]);
                    r.extend_from_slice(&[0, 0, 0, 60, 0, 0, 0, 1, 0, 0, 0, 0]);
                    r.extend_from_slice(&[10, 1, 2, 3, 0x1a, 0xe1]);
                }
                let _ = sock.send_to(&r, from).await;
            }
        }
    });
    (url, connects)
}

#[tokio::test]
async fn udp_reuses_connection_id_and_ignores_stray_transactions() {
    use std::sync::atomic::Ordering;
    timeout(Duration::from_secs(10), async {
        let (url, connects) = fake_udp_tracker(false).await;
        let mut t = udp::UdpTracker::new(&url, Some(LOCAL)).unwrap();
        let want: SocketAddr = "10.1.2.3:6881".parse().unwrap();
        for _ in 0..3 {
            let r = t.announce(&plain_request()).await.unwrap();
            assert_eq!(r.peers, vec![want]);
            assert_eq!(r.interval, Some(Duration::from_secs(60)));
        }
        assert_eq!(
            connects.load(Ordering::SeqCst),
            1,
            "connection id not reused"
        );

        let (url, _) = fake_udp_tracker(true).await;
        let mut t = udp::UdpTracker::new(&url, Some(LOCAL)).unwrap();
        assert_eq!(
            t.announce(&plain_request()).await,
            Err(TrackerError::Failure("go away".into()))
        );
    })
    .await
    .expect("test timed out");
}

/// The `key` is chosen once per announcer and stays the same in every
/// announce, so a tracker can tell us apart from others behind one NAT and
/// follow us across address changes.
#[tokio::test]
async fn the_key_stays_the_same_across_announces() {
    timeout(Duration::from_secs(20), async {
        let l = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let url = format!("http://{}/announce", l.local_addr().unwrap());
        let (seen_tx, mut seen) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let seen_tx = seen_tx.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 65536 {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&got)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let _ = seen_tx.send(line);
                    let body = b"d8:intervali1800e5:peers0:e";
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(body).await;
                });
            }
        });
        let a = start_announcer(random_hash(), free_tcp_port(), 100, vec![vec![url]]);
        let first = seen.recv().await.unwrap();
        a.totals.send_replace(TransferTotals {
            uploaded: 0,
            downloaded: 100,
            left: 0,
        });
        let second = seen.recv().await.unwrap();
        a.stop().await;
        let third = seen.recv().await.unwrap();
        let key = |line: &str| {
            line.split(['?', '&', ' '])
                .find_map(|p| p.strip_prefix("key="))
                .map(str::to_string)
                .unwrap_or_else(|| panic!("no key in {line}"))
        };
        assert!(first.contains("event=started"), "{first}");
        assert!(second.contains("event=completed"), "{second}");
        assert!(third.contains("event=stopped"), "{third}");
        assert_eq!(key(&first), key(&second));
        assert_eq!(key(&first), key(&third));
    })
    .await
    .expect("test timed out");
}

/// Scrape over HTTP and UDP against opentracker: a seeder it knows shows.
#[tokio::test]
async fn scrape_counts_a_seeder_over_http_and_udp() {
    timeout(Duration::from_secs(30), async {
        let ih = random_hash();
        let ot = OpenTracker::start(&[ih]);
        let pa = free_tcp_port();
        let a = start_announcer(ih, pa, 0, vec![vec![ot.http_url()]]);
        let deadline = Instant::now() + Duration::from_secs(10);
        for url in [ot.http_url(), ot.udp_url()] {
            loop {
                let st = scrape(&url, &ih, Some(LOCAL), Duration::from_secs(5))
                    .await
                    .unwrap_or_else(|e| panic!("scrape {url}: {e}"));
                if st.seeders == 1 {
                    assert_eq!(st.leechers, 0);
                    break;
                }
                assert!(Instant::now() < deadline, "{url}: seeder not seen: {st:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let unknown = scrape(
            &ot.http_url(),
            &random_hash(),
            Some(LOCAL),
            Duration::from_secs(5),
        )
        .await;
        assert!(
            unknown.is_err() || unknown == Ok(scrape::ScrapeStats::default()),
            "{unknown:?}"
        );
        a.stop().await;
    })
    .await
    .expect("test timed out");
}

#[test]
fn bad_udp_urls_are_refused() {
    assert!(matches!(
        udp::UdpTracker::new("udp://tracker.example/announce", None),
        Err(TrackerError::BadUrl { .. })
    ));
    assert!(matches!(
        udp::UdpTracker::new("udp:///x", None),
        Err(TrackerError::BadUrl { .. })
    ));
    assert!(udp::UdpTracker::new("udp://[::1]:6969", None).is_ok());
}
